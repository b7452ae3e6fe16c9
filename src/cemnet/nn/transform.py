"""The way into the frequency domain: the first layer of every CEMNet and FCNN."""

from __future__ import annotations

import torch

from cemnet import spectral
from cemnet.nn._base import _SpectralModule


class ToFrequency(_SpectralModule):
    """``fft2`` (``rfft2`` if ``half``) of a real ``(B, C, H, W)`` batch, on the grid of the input's size.

    Args:
        half: keep the half spectrum (:mod:`cemnet.spectral`). Default: ``False``.

    Shape:
        real ``(B, C, H, W)`` -> complex ``(B, C, H, W)`` (``W // 2 + 1`` columns if ``half``).
    """

    def __init__(self, half: bool = False) -> None:
        super().__init__()
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spectral.to_frequency(x, self.half)
