"""The paper's networks (Sec. 4): CNNs and the CEMNets that mirror them layer for layer.

One :class:`NetSpec` describes an architecture; :class:`ConvNet` builds the
spatial CNN from it and :class:`CEMNet` the frequency-domain twin:

=====================================  ==========================================
CNN (spatial)                          CEMNet (frequency)
=====================================  ==========================================
input                                  ``fft2``
``Conv2d(K, padding=K//2)``            :class:`~cemnet.nn.SpectralConv2d`
``BatchNorm2d``                        :class:`~cemnet.nn.SpectralBatchNorm2d`
``LeakyReLU(0.2)``                     :class:`~cemnet.nn.SpectralLeakyReLU`
``Dropout(p)``                         :class:`~cemnet.nn.SpectralDropout`
``MaxPool2d(2)``                       :class:`~cemnet.nn.SpectralMaxPool2d`
flatten, MLP, ``Linear``               :class:`~cemnet.nn.TwoBranchHead`
=====================================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from cemnet import nn as cnn
from cemnet.models._registry import register_model
from cemnet.spectral import SpectralGrid


@dataclass(frozen=True)
class NetSpec:
    """An architecture shared by a CNN and its CEMNet twin.

    Attributes:
        in_channels: channels of the input images.
        image_size: side of the square input images.
        stages: conv widths per stage; every stage ends with a 2x2 max pool.
        kernel_size: side of every conv kernel ("same" padding).
        hidden: widths of the hidden fully connected layers.
        num_classes: number of logits.
        negative_slope: of every Leaky ReLU (paper: 0.2).
        dropout: rate ``p`` after every conv and FC layer (paper: 0.5); 0 disables it.
        batch_norm: batch norm after every conv and FC layer.
    """

    in_channels: int
    image_size: int
    stages: tuple[tuple[int, ...], ...]
    kernel_size: int
    hidden: tuple[int, ...]
    num_classes: int = 10
    negative_slope: float = 0.2
    dropout: float = 0.5
    batch_norm: bool = True

    @property
    def feature_size(self) -> int:
        """Side of the feature maps after the last pool."""
        return self.image_size // 2 ** len(self.stages)

    @property
    def features(self) -> int:
        """Flattened features after the last pool (per part, for a CEMNet)."""
        return self.stages[-1][-1] * self.feature_size**2

    def ablate(self, batch_norm: bool, dropout: bool) -> NetSpec:
        """The same architecture without batch norm and/or dropout."""
        return replace(self, batch_norm=self.batch_norm and batch_norm, dropout=self.dropout if dropout else 0.0)


def check_images(x: torch.Tensor, spec: NetSpec, model: str) -> None:
    """Raise a ValueError unless ``x`` is a real ``(B, C, H, W)`` batch of the spec's shape."""
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected or x.is_complex():
        raise ValueError(
            f"{model} expects real images of shape (B, {', '.join(map(str, expected))}), "
            f"got {'complex ' if x.is_complex() else ''}shape {tuple(x.shape)}"
        )


class ConvNet(nn.Module):
    """The spatial CNN of a :class:`NetSpec`: conv-BN-LeakyReLU-dropout blocks, pools, MLP.

    Args:
        spec: the architecture.

    Shape:
        real ``(B, C, S, S)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        channels = spec.in_channels
        for widths in spec.stages:
            for width in widths:
                layers.append(
                    nn.Conv2d(channels, width, spec.kernel_size, padding=spec.kernel_size // 2, bias=not spec.batch_norm)
                )
                if spec.batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.LeakyReLU(spec.negative_slope))
                if spec.dropout:
                    layers.append(nn.Dropout(spec.dropout))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            cnn.mlp_branch(spec.features, spec.hidden, spec.negative_slope, spec.dropout, spec.batch_norm),
            nn.Linear(spec.hidden[-1] if spec.hidden else spec.features, spec.num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convs (as the paper initialises its kernels); PyTorch defaults elsewhere."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.spec, type(self).__name__)
        return self.classifier(self.features(x))


# The approximated Leaky ReLU's sigma, p / 4 with the paper's p = 0.5 (Sec. 3.1.4); it does not follow the
# dropout rate, so the noise stays when dropout is ablated.
LEAKY_SIGMA = 0.5 / 4


class CEMNet(nn.Module):
    """The frequency-domain twin of a :class:`NetSpec` (paper Sec. 3.2, Algorithm 1).

    Args:
        spec: the architecture.
        conj: ``"input"`` (paper) or ``"weight"`` (every conv exactly a circular ``conv2d``).
        storage: ``"frequency"`` (the paper: full spectra + Weight Fixation),
            ``"spatial"`` (real ``K x K`` kernels, transformed in every forward)
            or ``"free"`` (frequency weights without fixation: the "-WF" rows).
        fixation: how ``"frequency"`` layers keep their support, ``"weights"``
            (the paper) or ``"gradient"`` (see :class:`~cemnet.nn.SpectralConv2d`).
        fixed_stages: with ``storage="frequency"``, Weight Fixation covers the
            first ``fixed_stages`` stages and the rest are ``"free"`` (the paper
            fixes the first 3 of 5 CIFAR blocks); ``None`` fixes all.
        leaky_sigma: standard deviation of the approximated Leaky ReLU.
            Default: :data:`LEAKY_SIGMA` (the authors' code uses ``0.5 / 6``).
        noise_in_eval: keep the Leaky ReLU noise at evaluation (authors' code).
        half_spectrum: the fast variant on ``rfft2`` half spectra (see
            :mod:`cemnet.spectral`); the head then sees ``W // 2 + 1`` columns.

    Shape:
        real ``(B, C, S, S)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, spec: NetSpec, *, conj: str = "input", storage: str = "frequency", fixation: str = "weights",
                 fixed_stages: int | None = None, leaky_sigma: float = LEAKY_SIGMA, noise_in_eval: bool = False,
                 half_spectrum: bool = False) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = [cnn.ToFrequency(half_spectrum)]
        grid = SpectralGrid.of(spec.image_size, half_spectrum)
        channels = spec.in_channels
        for index, widths in enumerate(spec.stages):
            fixed = fixed_stages is None or index < fixed_stages
            stage_storage = "free" if storage == "frequency" and not fixed else storage
            for width in widths:
                layers.append(cnn.SpectralConv2d(channels, width, spec.kernel_size, grid.size, conj=conj,
                                                 storage=stage_storage, fixation=fixation, bias=not spec.batch_norm,
                                                 half=grid.half))
                if spec.batch_norm:
                    layers.append(cnn.SpectralBatchNorm2d(width))
                layers.append(cnn.SpectralLeakyReLU(sigma=leaky_sigma, active_in_eval=noise_in_eval))
                if spec.dropout:
                    layers.append(cnn.SpectralDropout(spec.dropout))
                channels = width
            layers.append(cnn.SpectralMaxPool2d(2, grid.size, half=grid.half))
            grid = grid.pooled(2)
        self.features = cnn.SpectralSequential(*layers)
        self.head = cnn.TwoBranchHead(channels * grid.height * grid.columns, spec.hidden, spec.num_classes,
                                      spec.negative_slope, spec.dropout, spec.batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.spec, type(self).__name__)
        return self.head(self.features(x))


LENET5 = NetSpec(in_channels=1, image_size=28, stages=((6,), (16,)), kernel_size=5, hidden=(120, 84))
VGG_SMALL = NetSpec(
    in_channels=3, image_size=32, stages=((64,), (128,), (256,), (512,), (512,)), kernel_size=3, hidden=(512,)
)
VGG_LARGE = replace(VGG_SMALL, stages=((64, 64), (128, 128), (256, 256), (512, 512, 512), (512, 512, 512)))


# The options that take one of a few values, as `cemnet models` lists them (the rest are numbers or booleans).
OPTION_CHOICES = {
    "weight_fixation": "True (the paper: project the weights after each step), 'gradient' (also project the "
                       "gradients before it), False (frequency weights left free)",
    "fixed_stages": "the number of leading stages under Weight Fixation, the rest left free (the paper: 3 of 5 "
                    "CIFAR blocks, both of LeNet-5's)",
    "storage": "'frequency' (the paper's spectra) or 'spatial' (K x K kernels, transformed in every forward)",
    "conj": "'input' (the paper) or 'weight' (every conv exactly a circular conv2d)",
}


def _cemnet_preset(spec: NetSpec, fixed_stages: int | None, summary: str):
    """A registry factory for the CEMNet of ``spec``; its keywords are the preset options."""
    paper_fixed_stages = fixed_stages

    def factory(*, weight_fixation: bool | str = True, fixed_stages: int = paper_fixed_stages,
                batch_norm: bool = True, dropout: bool = True, conj: str = "input", storage: str = "frequency",
                leaky_sigma: float = LEAKY_SIGMA, noise_in_eval: bool = False, half_spectrum: bool = False) -> CEMNet:
        storage, fixation = fixation_storage(weight_fixation, storage)
        if not (isinstance(fixed_stages, int) and 0 <= fixed_stages <= len(spec.stages)):
            raise ValueError(f"fixed_stages must be a number of stages from 0 to {len(spec.stages)}, "
                             f"got {fixed_stages!r}")
        return CEMNet(spec.ablate(batch_norm, dropout), conj=conj, storage=storage, fixation=fixation,
                      fixed_stages=fixed_stages, leaky_sigma=leaky_sigma, noise_in_eval=noise_in_eval,
                      half_spectrum=half_spectrum)

    factory.__doc__ = summary
    return factory


def fixation_storage(weight_fixation: bool | str, storage: str) -> tuple[str, str]:
    """The layers' ``(storage, fixation)`` of the model options ``weight_fixation`` and ``storage``.

    ``weight_fixation``: ``True`` (the paper: project the weights after each
    step), ``"gradient"`` (also project the gradients before it), ``False``
    (frequency weights left free: the "-WF" rows).
    """
    choices = (True, False, "gradient")
    if weight_fixation not in choices or not isinstance(weight_fixation, (bool, str)):
        raise ValueError(f"weight_fixation must be one of {list(choices)}, got {weight_fixation!r}")
    if storage not in ("frequency", "spatial"):
        raise ValueError(f"storage must be 'frequency' or 'spatial' (weight_fixation=false gives the frequency "
                         f"storage without fixation), got {storage!r}")
    if weight_fixation is not True and storage != "frequency":
        raise ValueError(f"weight_fixation={weight_fixation!r} applies to frequency weights; it contradicts "
                         f"storage={storage!r}")
    if weight_fixation is False:
        return "free", "weights"
    return storage, "gradient" if weight_fixation == "gradient" else "weights"


@register_model(dataset="mnist")
def lenet5(*, batch_norm: bool = True, dropout: bool = True) -> ConvNet:
    """Modified LeNet-5 CNN (paper Sec. 4.2): 6@5x5 and 16@5x5 "same" convs, FC 784-120-84-10."""
    return ConvNet(LENET5.ablate(batch_norm, dropout))


@register_model(dataset="cifar10")
def vgg_small(*, batch_norm: bool = True, dropout: bool = True) -> ConvNet:
    """Small VGG CNN (paper Sec. 4.3): one 3x3 conv per block, widths 64-512, FC 512."""
    return ConvNet(VGG_SMALL.ablate(batch_norm, dropout))


@register_model(dataset="cifar10")
def vgg_large(*, batch_norm: bool = True, dropout: bool = True) -> ConvNet:
    """Large VGG CNN (paper Sec. 4.3): 2,2,2,3,3 3x3 convs per block, widths 64-512, FC 512."""
    return ConvNet(VGG_LARGE.ablate(batch_norm, dropout))


register_model(dataset="mnist", twin="lenet5", name="cemnet-mnist")(
    _cemnet_preset(LENET5, len(LENET5.stages), "CEMNet twin of lenet5 (paper Table 1): Weight Fixation on every layer.")
)
register_model(dataset="cifar10", twin="vgg-small", name="cemnet-small")(
    _cemnet_preset(VGG_SMALL, 3, "Small CEMNet, twin of vgg-small (paper Table 2): Weight Fixation on the first 3 blocks.")
)
register_model(dataset="cifar10", twin="vgg-large", name="cemnet-large")(
    _cemnet_preset(VGG_LARGE, 3, "Large CEMNet, twin of vgg-large (paper Table 2): Weight Fixation on the first 3 blocks.")
)
