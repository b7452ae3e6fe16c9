"""Pooling of spectra: max pooling through the spatial domain (CEMNet), truncation of the spectrum (FCNN)."""

from __future__ import annotations

import torch

from cemnet.nn import functional as SF
from cemnet.nn._base import _SpectralModule
from cemnet.spectral import SpectralGrid


class SpectralMaxPool2d(_SpectralModule):
    """Max pooling through the spatial domain (paper Sec. 3.1.5).

    Inverse FFT, real part, ``max_pool2d``, FFT. For the spectrum of a real
    signal this equals ``fft2(max_pool2d(x))`` exactly.

    Args:
        kernel_size: window and stride ``k``. Default: 2.
        input_size: ``H`` or ``(H, W)``, the spatial size of the incoming
            signals; needed for half spectra (``W`` cannot be told from
            ``W // 2 + 1``), checked for full ones. Default: taken from the input.
        half: the inputs are half spectra. Default: ``False``.
        negative_slope: apply a Leaky ReLU of this slope to the spatial signal
            too, inside the round trip the pool makes anyway (a true
            nonlinearity at no extra transform). Default: ``None`` (the paper).

    Shape:
        complex ``(B, C, H, F)`` -> complex ``(B, C, H // k, F')``: full spectra
        ``F = W``, ``F' = W // k``; half spectra ``F = W // 2 + 1``, ``F' = W // k // 2 + 1``.
    """

    def __init__(self, kernel_size: int = 2, input_size: int | tuple[int, int] | None = None, *,
                 half: bool = False, negative_slope: float | None = None) -> None:
        super().__init__()
        if half and input_size is None:
            raise ValueError("a half-spectrum SpectralMaxPool2d needs the signal's input_size")
        self.kernel_size, self.negative_slope = kernel_size, negative_slope
        self.grid = None if input_size is None else SpectralGrid.of(input_size, half)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None if self.grid is None else self.grid.size

    @property
    def half(self) -> bool:
        return self.grid is not None and self.grid.half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x, grid=self.grid)
        return SF.spectral_max_pool2d(x, self.kernel_size, self.grid, self.negative_slope)


class SpectralTruncation2d(_SpectralModule):
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
        self._check_spectrum(x)
        return SF.spectral_truncate2d(x, self.kernel_size)
