"""Pooling of spectra: max pooling through the spatial domain, and FCNN's truncation of the spectrum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cemnet.spectral import SpectralGrid


def spectral_max_pool2d(x: torch.Tensor, kernel_size: int = 2, grid: SpectralGrid | None = None,
                        negative_slope: float | None = None) -> torch.Tensor:
    """Max pooling of the spatial signal: inverse FFT, real part, ``max_pool2d``, FFT; see :class:`cemnet.nn.SpectralMaxPool2d`.

    Shape: ``(B, C, H, columns)`` on ``grid`` -> the same kind of spectrum on
    ``grid.pooled(k)``. ``grid`` defaults to the full grid of ``x``.
    ``negative_slope``: a Leaky ReLU in the spatial domain as well.
    """
    grid = grid or SpectralGrid(*x.shape[-2:])
    pooled = block_max_pool2d(grid.to_spatial(x), kernel_size)
    if negative_slope is not None:  # after the max, on a quarter of the values: Leaky ReLU is increasing, so they commute
        pooled = F.leaky_relu(pooled, negative_slope)
    return grid.pooled(kernel_size).to_frequency(pooled)


def block_max_pool2d(x: torch.Tensor, kernel_size: int = 2) -> torch.Tensor:
    """``F.max_pool2d(x, k)`` (stride ``k``, no padding), faster on CPU when no gradient is needed.

    PyTorch's CPU kernel for contiguous maps visits each window on its own;
    two ``torch.maximum`` over strided views (the columns of each 2 x 2
    window, then its rows, whose inner loops are contiguous) give the same
    values, NaN included. With autograd this is ``F.max_pool2d`` itself:
    locating the maxima for the backward with element-wise ops cost as much
    as the faster forward saved, so training steps are unchanged and
    inference gains. Other kernel sizes and devices use ``F.max_pool2d``.

    Shape: real ``(B, C, H, W)`` or ``(C, H, W)`` -> ``(..., H // k, W // k)``.
    """
    if kernel_size != 2 or x.device.type != "cpu" or x.dim() not in (3, 4) or (
        torch.is_grad_enabled() and x.requires_grad
    ):
        return F.max_pool2d(x, kernel_size)
    height, width = x.shape[-2:]
    windows = x[..., : height // 2 * 2, : width // 2 * 2]
    columns = torch.maximum(windows[..., 0::2], windows[..., 1::2])
    return torch.maximum(columns[..., 0::2, :], columns[..., 1::2, :])


def kept_frequencies(size: int, kept: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Indices of the ``kept`` lowest frequencies of a length-``size`` spectrum, in ``fft`` order of length ``kept``.

    Frequency ``k`` of the short spectrum (``torch.fft.fftfreq(kept) * kept``:
    ``0, 1, ..., -2, -1``) is read from index ``k mod size`` of the long one,
    so the result is a spectrum of the ``kept``-point grid in the usual order.
    """
    frequencies = torch.fft.fftfreq(kept, 1.0 / kept, device=device).round().long()
    return frequencies.remainder(size)


def spectral_truncate2d(x: torch.Tensor, kernel_size: int = 2) -> torch.Tensor:
    """Pooling by truncating the spectrum; see :class:`cemnet.nn.SpectralTruncation2d`.

    Shape: complex ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)``, the lowest
    frequencies of each axis (:func:`kept_frequencies`).
    """
    height, width = x.shape[-2:]
    rows = kept_frequencies(height, height // kernel_size, x.device)
    columns = kept_frequencies(width, width // kernel_size, x.device)
    return x.index_select(-2, rows).index_select(-1, columns)
