"""Frequency-domain layers of CEMNet.

Every layer here takes and returns complex full spectra ``(B, C, H, W)``
(``torch.fft.fft2`` of a real tensor, see :mod:`cemnet.spectral`), except
:class:`TwoBranchHead`, which ends the network with real logits (through the
real :class:`GroupedLinear`), :class:`ToFrequency`, which transforms real
maps, :class:`FFTConv2d` and :class:`BlockMaxPool2d`, which take and
return real spatial maps, and :class:`UniformMaskDropout`, a dropout for
any real tensor.

Complex weights are stored as real tensors with a dimension of two for the
real and imaginary parts, frequency-major ``(H, W, 2, C_in, C_out)``: the
layout the batched products read (see :func:`cemnet.nn.functional.frequency_major`).
Real storage keeps ``Module.to(dtype)``, ``.double()``, DDP and safetensors
working unchanged, and it is exactly the paper's two-branch storage: an
optimizer sees the real and imaginary parts as separate real numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cemnet import spectral
from cemnet.nn import functional as SF

STORAGES = ("spatial", "frequency", "free")
DROPOUT_MASKS = ("bernoulli", "uniform")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_input(x: torch.Tensor, channels: int, size: tuple[int, int] | None, layer: str) -> None:
    SF.check_spectrum(x)
    if x.shape[1] != channels:
        raise ValueError(f"{layer} expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if size is not None and tuple(x.shape[-2:]) != size:
        raise ValueError(f"{layer} expected spatial size {size}, got {tuple(x.shape[-2:])} (input shape {tuple(x.shape)})")


class SpectralConv2d(nn.Module):
    r"""The paper's element-wise multiplication layer (Sec. 3.1.1, Eq. 4 and 6).

    .. math::
        Y_{o} = \sum_{i} \overline{X_i} \cdot W_{o,i} \quad(\text{conj="input"}), \qquad
        Y_{o} = \sum_{i} X_i \cdot \overline{W_{o,i}} \quad(\text{conj="weight"})

    where :math:`W = \mathrm{fft2}(\mathrm{pad}(w))` is the spectrum of a ``K x K``
    kernel padded to the input size. ``conj="weight"`` with the default centred
    anchor is exactly ``F.conv2d`` with circular ``K // 2`` padding;
    ``conj="input"`` (the paper) is that result index-reversed in space.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``K``, the side of the spatial kernel (its support).
        input_size: ``H`` or ``(H, W)`` of the spectra the layer will see.
        conj: ``"input"`` (paper, Eq. 4) or ``"weight"`` (exact CNN). Default: ``"input"``.
        storage: how the weight is stored. ``"spatial"``: a real ``(C_out, C_in, K, K)``
            kernel, transformed on every forward; the support is exact by
            construction. ``"frequency"``: the full complex spectrum, brought
            back onto the support by :meth:`fix_weights` after each optimizer
            step (Weight Fixation). ``"free"``: the full spectrum and no
            fixation (the paper's "-WF" ablation). Default: ``"spatial"``.
        bias: add a learnable spatial bias (a DC offset). Default: ``False``.
        anchor: ``"corner"`` (paper) or ``"center"``. Default: ``"corner"`` for
            ``conj="input"``, ``"center"`` for ``conj="weight"``.
        half: work on half spectra ``(.., H, W // 2 + 1)`` (``rfft2``), the fast
            variant of :mod:`cemnet.spectral`. Default: ``False`` (the paper).

    A kernel larger than the input (3x3 on the 2x2 maps of the last VGG block)
    is folded onto the grid, as a circular convolution would; its support is
    then ``min(K, H) x min(K, W)``.

    Shape:
        - Input: complex ``(B, C_in, H, W)``.
        - Output: complex ``(B, C_out, H, W)``.

    Attributes:
        weight: real ``(C_out, C_in, K, K)`` for ``"spatial"``; for the frequency
            storages the real and imaginary parts, frequency-major
            ``(H, W, 2, C_in, C_out)`` (``W // 2 + 1`` for half spectra), the
            layout the batched products read without a transpose;
            :meth:`spectrum` gives the complex ``(C_out, C_in, H, W)`` view.
            Initialised He-normal in space (std ``sqrt(2 / (C_in K^2))``), then
            transformed.
        bias: real ``(C_out,)`` or ``None``.

    Examples::

        >>> layer = SpectralConv2d(3, 8, 3, 32, conj="weight")
        >>> x = torch.fft.fft2(torch.randn(4, 3, 32, 32))
        >>> layer(x).shape
        torch.Size([4, 8, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        input_size: int | tuple[int, int],
        *,
        conj: str = "input",
        storage: str = "spatial",
        bias: bool = False,
        anchor: str | None = None,
        half: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = int(kernel_size)
        self.input_size = _pair(input_size)
        self.conj = spectral.check_choice("conj", conj, spectral.CONJUGATIONS)
        self.storage = spectral.check_choice("storage", storage, STORAGES)
        if anchor is None:
            anchor = "corner" if conj == "input" else "center"
        self.anchor = spectral.check_choice("anchor", anchor, spectral.ANCHORS)
        self.half = half
        if min(in_channels, out_channels, self.kernel_size) < 1:
            raise ValueError(
                f"in_channels, out_channels and kernel_size must be positive, "
                f"got {in_channels}, {out_channels}, {kernel_size}"
            )
        if storage == "spatial":
            shape = (out_channels, in_channels, self.kernel_size, self.kernel_size)
        else:
            shape = (*self.spectrum_size, 2, in_channels, out_channels)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    @property
    def spectrum_size(self) -> tuple[int, int]:
        """``(H, W)``, or ``(H, W // 2 + 1)`` for half spectra: the last two dims of inputs and weights."""
        height, width = self.input_size
        return (height, width // 2 + 1) if self.half else (height, width)

    @property
    def _signal_size(self) -> tuple[int, int] | None:
        return self.input_size if self.half else None

    def reset_parameters(self) -> None:
        """He-normal spatial kernel (the paper's ``he_normal``), transformed for frequency storage."""
        kernel = torch.empty(
            self.out_channels, self.in_channels, self.kernel_size, self.kernel_size,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        nn.init.kaiming_normal_(kernel, mode="fan_in", nonlinearity="relu")
        self.set_spatial_kernel(kernel)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @torch.no_grad()
    def set_spatial_kernel(self, kernel: torch.Tensor) -> None:
        """Load a real ``(C_out, C_in, K, K)`` kernel into the weight, whatever the storage."""
        expected = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        if tuple(kernel.shape) != expected:
            raise ValueError(f"expected a kernel of shape {expected}, got {tuple(kernel.shape)}")
        kernel = kernel.to(self.weight.dtype)
        if self.storage == "spatial":
            self.weight.copy_(kernel)
        else:
            spectrum = spectral.kernel_spectrum(kernel, self.input_size, self.anchor, self.half)
            self.weight.copy_(SF.frequency_major(spectrum))

    def spectrum(self) -> torch.Tensor:
        """The complex ``(C_out, C_in, *spectrum_size)`` frequency weight that :meth:`forward` applies."""
        if self.storage == "spatial":
            return spectral.kernel_spectrum(self.weight, self.input_size, self.anchor, self.half)
        return SF.from_frequency_major(self.weight)

    def spatial_kernel(self) -> torch.Tensor:
        """The real ``(C_out, C_in, K, K)`` kernel that the weight represents.

        For ``"spatial"`` storage this is the weight itself. For ``"frequency"``
        storage after Weight Fixation it is exact: the layer computes precisely
        the convolution with this kernel (up to the imaginary part, which is
        zero unless an optimizer step has not been fixed yet). For ``"free"``
        storage the full-size filter generally has no ``K x K`` support; the
        result is then the real part of its restriction to the support, i.e.
        what Weight Fixation would keep, *not* what the layer computes.
        """
        if self.storage == "spatial":
            return self.weight.detach().clone()
        with torch.no_grad():
            kernel = spectral.spectrum_to_kernel(self.spectrum(), self.kernel_size, self.anchor, self._signal_size)
            return kernel.real.clone()

    @torch.no_grad()
    def fix_weights(self, real_kernel: bool = False) -> None:
        """Weight Fixation (paper Eq. 6): project the frequency weight onto the ``K x K`` support.

        Call after every optimizer step for ``storage="frequency"``; see
        :func:`apply_weight_fixation`. ``real_kernel=True`` also drops the
        imaginary part of the spatial kernel (the authors' MNIST code).

        Raises:
            ValueError: for ``"spatial"`` (always on the support, nothing to do)
            and ``"free"`` (the ablation without fixation) storage.
        """
        if self.storage != "frequency":
            raise ValueError(f"Weight Fixation applies to storage 'frequency', this layer has storage {self.storage!r}")
        # spectral.project_to_support as two thin GEMMs on the frequency-major weight.
        up, down = spectral.support_projector(
            self.input_size, self.kernel_size, self.anchor, real_kernel and not self.half, self.half,
            self.weight.dtype, self.weight.device,
        )
        flat = self.weight.view(-1, self.in_channels * self.out_channels)  # (H * F * 2, C_in * C_out)
        self.weight.copy_((up @ (down @ flat)).view_as(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, self.spectrum_size, type(self).__name__)
        weight = self.spectrum() if self.storage == "spatial" else self.weight  # frequency-major: no transpose
        return SF.spectral_conv2d(x, weight, self.bias, self.conj, self._signal_size)

    @classmethod
    def from_conv2d(
        cls, conv: nn.Conv2d, input_size: int | tuple[int, int], *, storage: str = "spatial"
    ) -> "SpectralConv2d":
        """The exact frequency twin of a stride-1, odd-kernel ``nn.Conv2d``.

        The result (``conj="weight"``, centred anchor) equals ``conv`` applied
        with **circular** ``K // 2`` padding. A zero-padded convolution needs
        the linear-convolution padding of :mod:`cemnet.convert` instead.
        """
        k_h, k_w = conv.kernel_size
        if (
            k_h != k_w or k_h % 2 == 0 or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.groups != 1 or conv.padding != (k_h // 2, k_w // 2)
        ):
            raise ValueError(
                "from_conv2d needs a square odd kernel, stride 1, dilation 1, groups 1 and "
                f"padding K//2; got kernel {conv.kernel_size}, stride {conv.stride}, "
                f"dilation {conv.dilation}, groups {conv.groups}, padding {conv.padding}"
            )
        layer = cls(
            conv.in_channels, conv.out_channels, k_h, input_size, conj="weight", storage=storage,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
        )
        layer.set_spatial_kernel(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"input_size={self.input_size}, conj={self.conj!r}, storage={self.storage!r}"
        )
        if self.anchor != ("corner" if self.conj == "input" else "center"):
            text += f", anchor={self.anchor!r}"
        if self.half:
            text += ", half=True"
        if self.bias is not None:
            text += ", bias=True"
        return text


def apply_weight_fixation(model: nn.Module, real_kernel: bool = False) -> int:
    """Apply :meth:`SpectralConv2d.fix_weights` to every ``storage="frequency"`` layer.

    Call right after ``optimizer.step()``. Returns the number of layers fixed.
    """
    fixed = 0
    for module in model.modules():
        if isinstance(module, SpectralConv2d) and module.storage == "frequency":
            module.fix_weights(real_kernel)
            fixed += 1
    return fixed


class SpectralBatchNorm2d(nn.Module):
    """Batch norm of the real and imaginary parts, with separate statistics (paper Eq. 12-15).

    Args:
        num_features: ``C``.
        eps, momentum: as for ``nn.BatchNorm2d``.

    Shape:
        complex ``(B, C, H, W)`` -> complex ``(B, C, H, W)``.

    Attributes:
        real, imag: two ``nn.BatchNorm2d`` holding each part's parameters,
            statistics and settings. The layer computes both parts at once
            (:func:`cemnet.nn.functional.spectral_batch_norm`) but takes its
            mode and ``momentum`` from them, so that utilities which switch
            batch-norm modules (:func:`cemnet.train.recalibrate_batch_norm`
            sets them to training mode with ``momentum=None`` inside an
            eval-mode model) act on it as on any batch norm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, device=None, dtype=None) -> None:
        super().__init__()
        self.real = nn.BatchNorm2d(num_features, eps, momentum, device=device, dtype=dtype)
        self.imag = nn.BatchNorm2d(num_features, eps, momentum, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.real.reset_parameters()
        self.imag.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.real.num_features, None, type(self).__name__)
        real, imag = self.real, self.imag
        weight, bias = torch.stack((real.weight, imag.weight), 1), torch.stack((real.bias, imag.bias), 1)
        if not real.training:
            running_mean = torch.stack((real.running_mean, imag.running_mean), 1)
            running_var = torch.stack((real.running_var, imag.running_var), 1)
            return SF.spectral_batch_norm(x, running_mean, running_var, weight, bias, False, eps=real.eps)
        real.num_batches_tracked.add_(1)
        imag.num_batches_tracked.add_(1)
        momentum = real.momentum
        if momentum is None:  # nn.BatchNorm2d's cumulative average
            momentum = 1.0 / float(real.num_batches_tracked)
        # The functional form, with the running update on the two modules' own buffers.
        out, mean, var = SF.spectral_batch_norm_with_stats(x, weight, bias, real.eps)
        SF.update_running_stats((real.running_mean, imag.running_mean), (real.running_var, imag.running_var),
                                mean, var, x.numel() // x.shape[1], momentum)
        return out


class _MultiplicativeNoise(nn.Module):
    """Shared body of the approximated dropout and Leaky ReLU: ``N(1, sigma)`` per part."""

    def __init__(self, sigma: float, active_in_eval: bool = False) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be non-negative, got {sigma}")
        self.sigma = float(sigma)
        self.active_in_eval = active_in_eval

    @property
    def active(self) -> bool:
        return self.training or self.active_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.multiplicative_noise(x, self.sigma, self.active)


class SpectralDropout(_MultiplicativeNoise):
    """Approximated dropout (paper Sec. 3.1.3): multiply by ``N(1, p/2)`` in training.

    Real and imaginary parts get independent draws, fresh on every forward;
    the layer is the identity in eval mode.

    Args:
        p: the dropout rate it imitates; ``sigma = p / 2``. Default: 0.5.

    Shape:
        complex ``(B, C, H, W)`` (any shape) -> same shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        super().__init__(p / 2)
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SpectralLeakyReLU(_MultiplicativeNoise):
    """Approximated Leaky ReLU (paper Sec. 3.1.4): multiply by ``N(1, sigma)``.

    Followed by :class:`SpectralDropout`, the combined factor is the *product*
    of the two independent draws. The paper's Eq. 22-23 describe instead the
    product of the two densities, which is not the law of any factor these
    layers draw; cemnet implements the draws (see docs/deviations.md).

    Args:
        p: rate that sets the default ``sigma = p / 4``. Default: 0.5.
        sigma: explicit standard deviation (the authors' code uses ``p / 6``).
        active_in_eval: keep the noise at evaluation, as the authors' code
            does. Default: ``False`` (identity in eval mode, the paper).
    """

    def __init__(self, p: float = 0.5, sigma: float | None = None, active_in_eval: bool = False) -> None:
        super().__init__(p / 4 if sigma is None else sigma, active_in_eval)
        self.p = p

    def extra_repr(self) -> str:
        text = f"sigma={self.sigma:g}"
        return text + ", active_in_eval=True" if self.active_in_eval else text


class UniformMaskDropout(nn.Dropout):
    """``nn.Dropout`` whose keep mask is drawn as ``uniform >= p``: the same law, a vendor-neutral cost.

    PyTorch draws the CPU Bernoulli mask of ``nn.Dropout`` with Intel's MKL,
    in parallel, only on Intel processors; elsewhere (AMD, Arm) it draws it
    serially in double precision, about 17 ns per number on this project's
    AMD EPYC VM against about 7 ns for one float32 uniform
    (docs/performance.md, "The CNN's dropout on this CPU"). This layer thresholds one
    uniform per number instead, drawn by the generator that draws the
    CEMNets' noise (:mod:`cemnet.native` on the CPU where it is built, else
    PyTorch's), so that comparing the twins compares their layers, not their
    random number generators. Every number is kept
    with probability ``1 - p`` and scaled by ``1 / (1 - p)`` as by
    ``nn.Dropout`` (:func:`cemnet.nn.functional.uniform_mask_dropout`); the
    draws themselves differ, so seeded runs differ from ``nn.Dropout``'s.

    Args:
        p: probability of zeroing a number. Default: 0.5.
        inplace: multiply the input in place. Default: ``False``.

    Shape:
        any; the output has the input's shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.uniform_mask_dropout(x, self.p, self.training, self.inplace)


def dropout_layer(p: float, mask: str = "bernoulli") -> nn.Module:
    """``nn.Dropout(p)`` (``mask="bernoulli"``, PyTorch's) or :class:`UniformMaskDropout` (``"uniform"``)."""
    mask = spectral.check_choice("dropout_mask", mask, DROPOUT_MASKS)
    return nn.Dropout(p) if mask == "bernoulli" else UniformMaskDropout(p)


class SpectralSequential(nn.Sequential):
    """``nn.Sequential`` that applies each run of consecutive noise layers as one product.

    A :class:`SpectralLeakyReLU` followed by a :class:`SpectralDropout` then
    costs one multiplication forward and one backward, and autograd keeps one
    factor instead of two (the faithful ``cemnet-mnist`` step then needs
    25.7 instead of 31.7 MiB, docs/performance.md). The factor has the law
    of the layers' factors multiplied; with PyTorch's generator the draws
    are those of the layers run one by one, in the same order, while the
    native kernel draws a pair of factors from one key (see
    :func:`cemnet.nn.functional.noise_factor`).
    A noise layer with forward hooks is run on its own, so its hooks fire.
    Children and ``state_dict`` keys are those of ``nn.Sequential``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigmas: list[float] = []
        for module in self:
            if isinstance(module, _MultiplicativeNoise) and not (module._forward_hooks or module._forward_pre_hooks):
                if module.active:
                    sigmas.append(module.sigma)
                continue
            x = SF.multiplicative_noise(x, sigmas)
            sigmas = []
            x = module(x)
        return SF.multiplicative_noise(x, sigmas)


class SpectralMaxPool2d(nn.Module):
    """Max pooling through the spatial domain (paper Sec. 3.1.5).

    Inverse FFT, real part, ``max_pool2d``, FFT. For the spectrum of a real
    signal this equals ``fft2(max_pool2d(x))`` exactly.

    Args:
        kernel_size: window and stride ``k``. Default: 2.
        input_size: the signal size ``(H, W)`` when the input is a half spectrum
            (``W`` cannot be told from ``W // 2 + 1``); ``None`` for full spectra.

    Shape:
        complex ``(B, C, H, W)`` -> complex ``(B, C, H // k, W // k)`` (half
        spectra: ``(B, C, H, W // 2 + 1)`` -> ``(B, C, H // k, W // k // 2 + 1)``).
    """

    def __init__(self, kernel_size: int = 2, input_size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.input_size = None if input_size is None else _pair(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SF.check_spectrum(x)
        return SF.spectral_max_pool2d(x, self.kernel_size, size=self.input_size)

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}"
        return text + f", input_size={self.input_size} (half spectrum)" if self.input_size else text


class SpectralTruncation2d(nn.Module):
    """Pooling by truncating the spectrum: keep the lowest ``1 / k`` of the frequencies of each axis.

    FCNN's Fourier pooling (Pratt et al., 2017), as reconstructed in
    :mod:`cemnet.models.fcnn`: no inverse transform, no comparison; the
    output is the spectrum of the ``(H // k, W // k)`` grid whose frequencies
    ``0, 1, ..., -1`` are those of the input
    (:func:`cemnet.nn.functional.spectral_truncate2d`). For the spectrum of a
    real signal it is the spectrum of a low-pass filtered, subsampled signal
    (up to the scale ``k^2`` of the unnormalised transform).

    Args:
        kernel_size: the factor ``k`` by which each axis shrinks. Default: 2.

    Shape:
        complex ``(B, C, H, W)`` -> complex ``(B, C, H // k, W // k)``.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be positive, got {kernel_size}")
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SF.check_spectrum(x)
        return SF.spectral_truncate2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class BlockMaxPool2d(nn.Module):
    """``nn.MaxPool2d(k)`` (stride ``k``) computed by :func:`cemnet.nn.functional.block_max_pool2d`.

    The same function; on CPU, for ``k = 2`` and without autograd, 4-6x
    faster. A spatial layer, for CNNs (the CNN presets' option ``block_pool``).

    Shape:
        real ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)``.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.block_max_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class TwoBranchHead(nn.Module):
    """The end of CEMNet (paper Sec. 3.2): one real MLP branch per part, concatenated.

    The real and imaginary parts are flattened separately; each goes through
    ``[Linear, BatchNorm1d, LeakyReLU, Dropout] x len(hidden)``; the two results
    are concatenated and a final ``Linear`` gives the logits.

    The two branches run side by side as one grouped MLP
    (:func:`mlp_branch` with ``groups=2``): each of its layers computes both
    branches in one operation (:class:`GroupedLinear`; batch norm and dropout
    are per feature anyway), half the operations and parameter tensors of two
    separate MLPs, with the same numbers (docs/performance.md, item 15).

    Args:
        in_features: ``C * H * W`` of the last spectrum (per part).
        hidden: widths of the hidden layers of each branch, e.g. ``(120, 84)``.
        num_classes: number of logits.
        negative_slope: of the Leaky ReLU. Default: 0.2.
        dropout: rate of the ordinary dropout in each branch; 0 disables it.
        batch_norm: use ``BatchNorm1d`` in the branches. Default: ``True``.
        dropout_mask: ``"bernoulli"`` (``nn.Dropout``) or ``"uniform"``
            (:class:`UniformMaskDropout`, the same law). Default: ``"bernoulli"``.

    Shape:
        complex ``(B, C, H, W)`` -> real ``(B, num_classes)``.

    Attributes:
        branches: the grouped MLP, ``(B, 2 * in_features)`` -> ``(B, 2 * hidden[-1])``;
            group 0 is the real branch, group 1 the imaginary one.
        classifier: the final ``nn.Linear`` on the concatenated branch outputs.
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        num_classes: int,
        negative_slope: float = 0.2,
        dropout: float = 0.5,
        batch_norm: bool = True,
        dropout_mask: str = "bernoulli",
    ) -> None:
        super().__init__()
        self.branches = mlp_branch(in_features, hidden, negative_slope, dropout, batch_norm, 2, dropout_mask)
        self.classifier = nn.Linear(2 * (hidden[-1] if hidden else in_features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SF.check_spectrum(x)
        # (B, C, H, W, 2) -> (B, 2, C H W): every real part, then every imaginary part.
        features = torch.view_as_real(x.resolve_conj()).movedim(-1, 1).reshape(x.shape[0], -1)
        return self.classifier(self.branches(features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of schema version 2 and older hold two MLPs, ``real.*`` and ``imag.*``,
        # with the same layer indices as ``branches``: stack the weights, join the rest.
        for key in [key for key in state_dict if key.startswith(prefix + "real.")]:
            name = key[len(prefix + "real."):]
            real, imag = state_dict.pop(key), state_dict.pop(prefix + "imag." + name, None)
            if imag is None:
                state_dict[key] = real  # left for the strict check to report
                continue
            if isinstance(self.branches._modules.get(name.split(".", 1)[0]), GroupedLinear):
                joined = torch.stack((real, imag))
            elif name.endswith("num_batches_tracked"):
                joined = real
            else:
                joined = torch.cat((real, imag))
            state_dict[prefix + "branches." + name] = joined
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GroupedLinear(nn.Module):
    """``groups`` independent ``nn.Linear`` layers side by side, as one batched product.

    The input features are ``groups`` consecutive blocks; block ``g`` goes
    through its own ``Linear(in_features // groups, out_features // groups)``
    and the outputs are concatenated in the same order (a block-diagonal
    linear map). The same numbers as the separate layers, in one batched
    product forward and two backward whatever the number of groups
    (:func:`cemnet.nn.functional.grouped_linear`).

    Args:
        in_features, out_features: totals over the groups, both divisible by ``groups``.
        groups: number of blocks.
        bias: learnable bias per output feature. Default: ``True``.

    Shape:
        ``(*, in_features)`` -> ``(*, out_features)``.

    Attributes:
        weight: ``(groups, out_features // groups, in_features // groups)``; each
            block initialised as ``nn.Linear`` initialises its weight.
        bias: ``(groups, out_features // groups)``, or ``None``.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        if groups < 1 or in_features % groups or out_features % groups:
            raise ValueError(f"in_features ({in_features}) and out_features ({out_features}) must be divisible "
                             f"by groups ({groups})")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(groups, out_features // groups, in_features // groups, **factory))
        self.bias = nn.Parameter(torch.empty(groups, out_features // groups, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialisation, block by block (fan-in in_features // groups).
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        for block in self.weight:
            nn.init.kaiming_uniform_(block, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"GroupedLinear expected {self.in_features} input features, got {x.shape[-1]}")
        return SF.grouped_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
                f"bias={self.bias is not None}")


def mlp_branch(
    in_features: int, hidden: tuple[int, ...], negative_slope: float, dropout: float, batch_norm: bool,
    groups: int = 1, dropout_mask: str = "bernoulli",
) -> nn.Sequential:
    """``[Linear, BatchNorm1d?, LeakyReLU, Dropout?]`` for each width in ``hidden``.

    Shared by the CEMNet head branches and the CNN twins' classifier. With
    ``groups > 1``, that many such MLPs side by side on consecutive blocks of
    ``in_features`` features each (:class:`GroupedLinear`, and batch norm over
    all ``groups * width`` features, which is per feature as for separate ones):
    ``(B, groups * in_features)`` -> ``(B, groups * hidden[-1])``.
    ``dropout_mask`` picks the dropout layer (:func:`dropout_layer`).
    """
    layers: list[nn.Module] = []
    for width in hidden:
        if groups == 1:
            layers.append(nn.Linear(in_features, width, bias=not batch_norm))
        else:
            layers.append(GroupedLinear(groups * in_features, groups * width, groups, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(groups * width))
        layers.append(nn.LeakyReLU(negative_slope))
        if dropout:
            layers.append(dropout_layer(dropout, dropout_mask))
        in_features = width
    return nn.Sequential(*layers)


class FFTConv2d(nn.Module):
    """A zero-padded ``nn.Conv2d`` computed as a product of spectra: spatial in, spatial out.

    The input is zero-padded by ``K // 2`` on each side to ``(H + K - 1, W + K - 1)``,
    where the circular convolution of :class:`SpectralConv2d` (exact convention,
    corner anchor) no longer wraps around; the top-left ``H x W`` window of its
    inverse transform is the ordinary "same" convolution. This is how a trained
    CNN runs exactly in the frequency domain (:func:`cemnet.convert.to_frequency`).

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (odd ``K``).
        input_size: ``H`` or ``(H, W)`` of the spatial input.
        bias: learnable bias. Default: ``True``.

    Shape:
        real ``(B, C_in, H, W)`` -> real ``(B, C_out, H, W)``.

    Attributes:
        spectral: the :class:`SpectralConv2d` on the padded size that holds the kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size: int | tuple[int, int],
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"FFTConv2d needs an odd kernel_size for 'same' padding, got {kernel_size}")
        self.input_size = _pair(input_size)
        padded = (self.input_size[0] + kernel_size - 1, self.input_size[1] + kernel_size - 1)
        # Inputs and outputs are real, so the half spectrum is exact here: no variant involved.
        self.spectral = SpectralConv2d(
            in_channels, out_channels, kernel_size, padded, conj="weight", anchor="corner", storage="spatial",
            bias=bias, half=True, device=device, dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"FFTConv2d expected (B, C, {self.input_size[0]}, {self.input_size[1]}), got {tuple(x.shape)}")
        pad = self.spectral.kernel_size // 2
        spectrum = spectral.to_frequency(nn.functional.pad(x, (pad, pad, pad, pad)), half=True)
        out = spectral.to_spatial(self.spectral(spectrum), self.spectral.input_size)  # (B, C_out, H+K-1, W+K-1)
        return out[..., : self.input_size[0], : self.input_size[1]]

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, input_size: int | tuple[int, int]) -> "FFTConv2d":
        """The frequency-domain equivalent of a stride-1, zero-padded "same" ``nn.Conv2d``."""
        k = conv.kernel_size[0]
        if (conv.kernel_size != (k, k) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or conv.padding != (k // 2, k // 2) or conv.padding_mode != "zeros"):
            raise ValueError(
                "FFTConv2d.from_conv2d needs a square odd kernel, stride 1, dilation 1, groups 1 and zero "
                f"padding K//2; got kernel {conv.kernel_size}, stride {conv.stride}, padding {conv.padding} "
                f"({conv.padding_mode})"
            )
        layer = cls(conv.in_channels, conv.out_channels, k, input_size, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        layer.spectral.set_spatial_kernel(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.spectral.bias.copy_(conv.bias)
        return layer

    def extra_repr(self) -> str:
        s = self.spectral
        return f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, input_size={self.input_size}"


class ToFrequency(nn.Module):
    """``fft2`` (``rfft2`` if ``half``) of a real ``(B, C, H, W)`` batch: the entry of every CEMNet."""

    def __init__(self, half: bool = False) -> None:
        super().__init__()
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spectral.to_frequency(x, self.half)

    def extra_repr(self) -> str:
        return "half=True" if self.half else ""


__all__ = [
    "BlockMaxPool2d",
    "FFTConv2d",
    "GroupedLinear",
    "SpectralConv2d",
    "SpectralBatchNorm2d",
    "SpectralDropout",
    "SpectralLeakyReLU",
    "SpectralMaxPool2d",
    "SpectralSequential",
    "SpectralTruncation2d",
    "TwoBranchHead",
    "ToFrequency",
    "UniformMaskDropout",
    "apply_weight_fixation",
    "dropout_layer",
    "mlp_branch",
]
