"""The element-wise multiplication layer (the paper's convolution), its Weight Fixation, and an exact FFT ``Conv2d``."""

from __future__ import annotations

import torch
from torch import nn

from cemnet import spectral
from cemnet.nn import functional as SF
from cemnet.nn._base import _GridModule
from cemnet.spectral import SpectralGrid

STORAGES = ("spatial", "frequency", "free")
# How a storage="frequency" layer keeps its kernel on the K x K support: "weights" (the paper) projects the weight
# after each optimizer step; "gradient" also projects the gradient before it, so the optimizer's state never
# holds the part of an update that the projection would discard.
FIXATIONS = ("weights", "gradient")


class SpectralConv2d(_GridModule):
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
        input_size: ``H`` or ``(H, W)``, the spatial size of the signals whose spectra come in.
        conj: ``"input"`` (paper, Eq. 4) or ``"weight"`` (exact CNN). Default: ``"input"``.
        storage: how the weight is stored. ``"spatial"``: a real ``(C_out, C_in, K, K)``
            kernel, transformed on every forward; the support is exact by
            construction. ``"frequency"``: the full complex spectrum, brought
            back onto the support by :meth:`fix_weights` after each optimizer
            step (Weight Fixation). ``"free"``: the full spectrum and no
            fixation (the paper's "-WF" ablation). Default: ``"spatial"``.
        fixation: with ``storage="frequency"``, ``"weights"`` (the paper:
            project the weight after each step) or ``"gradient"`` (also
            project its gradient in the backward, so that an optimizer's state
            holds only what stays on the support). Default: ``"weights"``.
        bias: add a learnable spatial bias (a DC offset). Default: ``False``.
        anchor: ``"corner"`` (paper) or ``"center"``. Default: ``"corner"`` for
            ``conj="input"``, ``"center"`` for ``conj="weight"``.
        half: work on half spectra (``rfft2``), the fast variant of
            :mod:`cemnet.spectral`. Default: ``False`` (the paper).

    **Weight Fixation in any training loop.** A ``storage="frequency"`` layer
    remembers the version of its weight that it last projected (PyTorch's
    in-place version counter): when an optimizer has changed the weight since,
    the next eager forward, or ``state_dict()``, projects it first. A plain PyTorch,
    Lightning or accelerate loop that calls ``optimizer.step()`` and then the
    model therefore trains with fixation; ``cemnet train`` projects right after
    each step (:func:`apply_weight_fixation`), so its forwards find nothing to
    do. A weight loaded with ``load_state_dict`` counts as projected: a
    checkpoint holds what the layer computed with.

    A kernel larger than the input (3x3 on the 2x2 maps of the last VGG block)
    is folded onto the grid, as a circular convolution would; its support is
    then ``min(K, H) x min(K, W)``.

    Shape:
        - Input: complex ``(B, C_in, H, F)`` on :attr:`grid` (``F = W``, or ``W // 2 + 1`` for half spectra).
        - Output: complex ``(B, C_out, H, F)``.

    Attributes:
        grid: the :class:`~cemnet.spectral.SpectralGrid` of inputs and outputs.
        weight: real ``(C_out, C_in, K, K)`` for ``"spatial"``; for the frequency
            storages the real and imaginary parts, frequency-major
            ``(H, F, 2, C_in, C_out)``, the layout the batched products read
            without a transpose; :meth:`spectrum` gives the complex
            ``(C_out, C_in, H, F)`` view. Initialised He-normal in space
            (std ``sqrt(2 / (C_in K^2))``, untruncated), then transformed.
        bias: real ``(C_out,)`` or ``None``.

    Examples::

        >>> layer = SpectralConv2d(3, 8, 3, 32, conj="weight")
        >>> x = torch.fft.fft2(torch.randn(4, 3, 32, 32))
        >>> layer(x).shape
        torch.Size([4, 8, 32, 32])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, input_size: int | tuple[int, int], *,
        conj: str = "input", storage: str = "spatial", fixation: str = "weights", bias: bool = False,
        anchor: str | None = None, half: bool = False, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        if min(in_channels, out_channels, kernel_size) < 1:
            raise ValueError(f"in_channels, out_channels and kernel_size must be positive, "
                             f"got {in_channels}, {out_channels}, {kernel_size}")
        super().__init__(device)
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, int(kernel_size)
        self.grid = SpectralGrid.of(input_size, half)
        self.conj = spectral.check_choice("conj", conj, spectral.CONJUGATIONS)
        self.storage = spectral.check_choice("storage", storage, STORAGES)
        self.fixation = spectral.check_choice("fixation", fixation, FIXATIONS)
        self.anchor = spectral.check_choice("anchor", anchor or self._default_anchor(), spectral.ANCHORS)
        if storage == "spatial":
            shape = (out_channels, in_channels, self.kernel_size, self.kernel_size)
        else:
            shape = (*self.grid.shape, 2, in_channels, out_channels)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._fixed_version = -1  # the weight's version counter when it was last on its support
        self._configure()  # again, now that the weight exists: its support projector
        if self.storage == "frequency":
            self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module._fix_if_changed())
            self.register_load_state_dict_post_hook(lambda module, keys: module._mark_fixed())
        self.reset_parameters()

    def _configure(self) -> None:
        super()._configure()
        weight = getattr(self, "weight", None)  # None while the base class configures, before the weight exists
        self._support = self._projector() if weight is not None and self.storage == "frequency" else None

    def _default_anchor(self) -> str:
        return "corner" if self.conj == "input" else "center"

    def reset_parameters(self) -> None:
        """He-normal spatial kernel (the paper's ``he_normal``), transformed for frequency storage."""
        kernel = torch.empty(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size,
                             device=self.weight.device, dtype=self.weight.dtype)
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
            self.weight.copy_(SF.frequency_major(spectral.kernel_spectrum(kernel, self.grid, self.anchor)))
        self._mark_fixed()

    def spectrum(self) -> torch.Tensor:
        """The complex ``(C_out, C_in, H, F)`` frequency weight that :meth:`forward` applies."""
        if self.storage == "spatial":
            return spectral.kernel_spectrum(self.weight, self.grid, self.anchor)
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
            return spectral.spectrum_to_kernel(self.spectrum(), self.kernel_size, self.grid, self.anchor).real.clone()

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
        projector = self._projector(real_kernel) if real_kernel else self._support
        self.weight.copy_(SF.project_frequency_major(self.weight, *projector))
        self._mark_fixed()

    def _projector(self, real_kernel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """spectral.project_to_support as two thin matrices for the frequency-major weight (cached per grid)."""
        return spectral.support_projector(self.grid, self.kernel_size, self.anchor, real_kernel and not self.grid.half,
                                          self.weight.dtype, self.weight.device)

    def _mark_fixed(self) -> None:
        self._fixed_version = self.weight._version

    def _fix_if_changed(self) -> None:
        """Weight Fixation when the weight changed in place (an optimizer step) since it was last on its support."""
        if self.weight._version != self._fixed_version:
            self.fix_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x, self.in_channels, self.grid)
        if self.storage == "spatial":
            weight = self.spectrum()
        else:
            weight = self.weight  # frequency-major: no transpose
            if self.storage == "frequency":
                # A traced forward (torch.compile) sees no real version counter: there fixation is the loop's
                # apply_weight_fixation, or the next eager forward's.
                if not torch.compiler.is_compiling():
                    self._fix_if_changed()
                if self.fixation == "gradient":
                    weight = SF.project_gradient(weight, *self._support)
        return SF.spectral_conv2d(x, weight, self.bias, self.conj, self.grid)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, input_size: int | tuple[int, int], *,
                    storage: str = "spatial") -> SpectralConv2d:
        """The exact frequency twin of a stride-1, odd-kernel ``nn.Conv2d``.

        The result (``conj="weight"``, centred anchor) equals ``conv`` applied
        with **circular** ``K // 2`` padding. A zero-padded convolution needs
        the linear-convolution padding of :class:`FFTConv2d` instead.
        """
        _check_same_conv(conv, circular_allowed=True)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], input_size, conj="weight",
                    storage=storage, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        layer.set_spatial_kernel(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text.replace(f", anchor={self.anchor!r}", "") if self.anchor == self._default_anchor() else text


def _check_same_conv(conv: nn.Conv2d, circular_allowed: bool) -> None:
    """Raise unless ``conv`` is a square odd-kernel, stride-1, "same" ``Conv2d`` (zero padding unless circular allowed)."""
    k = conv.kernel_size[0]
    padding_ok = conv.padding_mode == "zeros" or (circular_allowed and conv.padding_mode == "circular")
    if (conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.groups != 1 or conv.padding != (k // 2, k // 2) or not padding_ok):
        raise ValueError(
            "expected a square odd kernel, stride 1, dilation 1, groups 1 and "
            f"{'zero or circular padding' if circular_allowed else 'zero padding'} K//2; got kernel {conv.kernel_size}, stride "
            f"{conv.stride}, dilation {conv.dilation}, groups {conv.groups}, padding {conv.padding} ({conv.padding_mode})"
        )


def apply_weight_fixation(model: nn.Module, real_kernel: bool = False) -> int:
    """Apply :meth:`SpectralConv2d.fix_weights` to every ``storage="frequency"`` layer.

    Call right after ``optimizer.step()`` to fix at once (and with
    ``real_kernel``); without it, each layer fixes itself in its next forward.
    Returns the number of layers fixed.
    """
    fixed = 0
    for module in model.modules():
        if isinstance(module, SpectralConv2d) and module.storage == "frequency":
            module.fix_weights(real_kernel)
            fixed += 1
    return fixed


class FFTConv2d(nn.Module):
    """A zero-padded ``nn.Conv2d`` computed as a product of spectra: spatial in, spatial out.

    The input is zero-padded by ``K // 2`` on each side to ``(H + K - 1, W + K - 1)``,
    where the circular convolution of :class:`SpectralConv2d` (exact convention,
    corner anchor) no longer wraps around; the top-left ``H x W`` window of its
    inverse transform is the ordinary "same" convolution. This is how a trained
    CNN runs exactly in the frequency domain (:func:`cemnet.convert.to_frequency`).
    Inputs and outputs are real, so the half spectrum is exact here: no variant involved.

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (odd ``K``).
        input_size: ``H`` or ``(H, W)`` of the spatial input.
        bias: learnable bias. Default: ``True``.

    Shape:
        real ``(B, C_in, H, W)`` -> real ``(B, C_out, H, W)``.

    Attributes:
        spectral: the :class:`SpectralConv2d` on the padded grid that holds the kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size: int | tuple[int, int],
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"FFTConv2d needs an odd kernel_size for 'same' padding, got {kernel_size}")
        self.input_size = SpectralGrid.of(input_size).size
        padded = (self.input_size[0] + kernel_size - 1, self.input_size[1] + kernel_size - 1)
        self.spectral = SpectralConv2d(in_channels, out_channels, kernel_size, padded, conj="weight", anchor="corner",
                                       storage="spatial", bias=bias, half=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"FFTConv2d expected (B, C, {self.input_size[0]}, {self.input_size[1]}), got {tuple(x.shape)}")
        pad = self.spectral.kernel_size // 2
        grid = self.spectral.grid
        spectrum = grid.to_frequency(nn.functional.pad(x, (pad, pad, pad, pad)))
        out = grid.to_spatial(self.spectral(spectrum))  # (B, C_out, H + K - 1, W + K - 1)
        return out[..., : self.input_size[0], : self.input_size[1]]

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, input_size: int | tuple[int, int]) -> FFTConv2d:
        """The frequency-domain equivalent of a stride-1, zero-padded "same" ``nn.Conv2d``."""
        _check_same_conv(conv, circular_allowed=False)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], input_size, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        layer.spectral.set_spatial_kernel(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.spectral.bias.copy_(conv.bias)
        return layer

    def extra_repr(self) -> str:
        s = self.spectral
        return f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, input_size={self.input_size}"
