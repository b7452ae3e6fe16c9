"""FCNN's method (Pratt et al., ECML PKDD 2017), reconstructed on the layer plan of the paper's CNNs.

The CEMNet paper compares with FCNN ("Fourier Convolutional Neural
Networks") but quotes its numbers without running it, and FCNN's layer list,
code and training settings were not published in a form we could read.
What is known of its *method* (docs/results.md, "FCNN") is built here on the
layer plan of each table's CNN (:data:`cemnet.models.convnets.LENET5`,
``VGG_SMALL``): the same convolution widths and kernel sizes, the same pool
positions, the same hidden widths. It is a reconstruction of the method, not
FCNN's own architecture, and its results are ours, not FCNN's.

What the sources fix:

* the input is transformed once (``fft2``) and never transformed back;
* kernels are learned directly in the frequency domain: a complex weight per
  frequency, input and output channel (far more parameters than a ``K x K``
  kernel);
* a convolution is the Hadamard product of spectra summed over the input
  channels;
* pooling truncates the spectrum;
* dense layers act on the Fourier-domain data.

What the sources leave open, and the choice made here:

* **Which coefficients truncation keeps**: the lowest frequencies of each
  axis, ``0, 1, ..., -1`` of the smaller grid
  (:class:`~cemnet.nn.SpectralTruncation2d`), so that the result is again an
  ordinary ``fft2``-ordered spectrum and the next layer needs no special
  case; the same halving as the CNN's 2x2 max pool.
* **Nonlinearity**: none in the convolutional part. A pointwise activation
  of the spatial signal has no element-wise counterpart on its spectrum,
  and the method allows no inverse transform, so the convolutional part is
  a linear map of the input spectrum; the dense layers carry the
  nonlinearity (the CNN's Leaky ReLU 0.2).
* **How complex values reach the dense layers**: real and imaginary parts
  side by side, ``view_as_real(x).flatten(1)`` (``2 C H W`` features), into
  one MLP. A real linear map of ``[Re, Im]`` is the most general real-linear
  function of a complex vector, so nothing is lost; CEMNet's two-branch
  head is CEMNet's own contribution and is not given to its baseline.
* **Initialisation**: each frequency weight is the spectrum of a He-normal
  ``K x K`` kernel, centred, as for CEMNet and the CNN, so that at
  initialisation every layer is exactly the CNN twin's circular
  convolution; after that the weights are free (no Weight Fixation).
* **Bias**: each Fourier convolution has a learnable DC bias, as the CNN's
  convolutions have when no batch norm follows them.
* **Batch norm and dropout**: in the dense layers, where the CNN's MLP has
  them (``batch_norm`` / ``dropout`` switch them off); none in the
  convolutional part.
* **Training**: the same recipe as every other row (``cemnet train``).
"""

from __future__ import annotations

import torch
from torch import nn

from cemnet import nn as cnn
from cemnet.models._registry import register_model
from cemnet.models.convnets import LENET5, VGG_SMALL, NetSpec, check_images


class FCNN(nn.Module):
    """FCNN's method on the layer plan of a :class:`NetSpec` (see the module docstring).

    ``fft2`` -> [``SpectralConv2d`` (free complex weights, bias)] per conv ->
    :class:`~cemnet.nn.SpectralTruncation2d` per stage -> real and imaginary
    parts flattened -> the CNN's MLP -> ``Linear`` to the classes.

    Args:
        spec: the architecture (its ``batch_norm`` and ``dropout`` apply to the dense layers).

    Shape:
        real ``(B, C, S, S)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = [cnn.ToFrequency()]
        channels, size = spec.in_channels, spec.image_size
        for widths in spec.stages:
            for width in widths:
                layers.append(
                    cnn.SpectralConv2d(channels, width, spec.kernel_size, size, conj="weight", storage="free", bias=True)
                )
                channels = width
            layers.append(cnn.SpectralTruncation2d(2))
            size //= 2
        self.features = nn.Sequential(*layers)
        in_features = 2 * spec.features  # real and imaginary parts of every coefficient
        self.classifier = nn.Sequential(
            cnn.mlp_branch(in_features, spec.hidden, spec.negative_slope, spec.dropout, spec.batch_norm),
            nn.Linear(spec.hidden[-1] if spec.hidden else in_features, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.spec, type(self).__name__)
        spectrum = self.features(x)  # complex (B, C, h, w)
        return self.classifier(torch.view_as_real(spectrum).flatten(1))  # (B, C h w 2) real features


@register_model(dataset="mnist", twin="lenet5")
def fcnn_mnist(*, batch_norm: bool = True, dropout: bool = True) -> FCNN:
    """FCNN's method, reconstructed on lenet5's layer plan (not FCNN's own architecture)."""
    return FCNN(LENET5.ablate(batch_norm, dropout))


@register_model(dataset="cifar10", twin="vgg-small")
def fcnn_small(*, batch_norm: bool = True, dropout: bool = True) -> FCNN:
    """FCNN's method, reconstructed on vgg-small's layer plan (not FCNN's own architecture)."""
    return FCNN(VGG_SMALL.ablate(batch_norm, dropout))
