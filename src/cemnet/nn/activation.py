"""True nonlinearities between frequency layers (beyond the paper, whose "Leaky ReLU" is multiplicative noise).

Between two pools the paper's CEMNet is a linear map of its input spectrum:
its approximated Leaky ReLU (:class:`~cemnet.nn.SpectralLeakyReLU`) only
multiplies by noise. These layers put a real nonlinearity there:

* :class:`SpatialLeakyReLU`: the CNN's own activation, through the spatial
  domain (an inverse and a forward transform per layer);
* :class:`SplitLeakyReLU`: a Leaky ReLU on the real and on the imaginary
  part of every coefficient, no transform (what TFDMNet, the paper authors'
  follow-up, applies after its frequency layers);
* ``SpectralMaxPool2d(negative_slope=...)``: the Leaky ReLU inside the pool's
  existing round trip, at no extra transform.
"""

from __future__ import annotations

import torch

from cemnet.nn import functional as SF
from cemnet.nn._base import _GridModule, _SpectralModule
from cemnet.spectral import SpectralGrid


class SpatialLeakyReLU(_GridModule):
    """``fft2(leaky_relu(ifft2(x)))``: the CNN's Leaky ReLU, applied to the spatial signal of a spectrum.

    For the spectrum of a real signal this is exactly the spectrum of
    ``F.leaky_relu`` of that signal (full spectra: the real part of the
    inverse transform, as every CEMNet round trip takes it).

    Args:
        negative_slope: the slope for negative inputs (0: a ReLU).
        input_size: ``H`` or ``(H, W)`` of the signal.
        half: the spectra are half spectra. Default: ``False``.

    Shape:
        complex ``(B, C, H, F)`` -> the same.
    """

    def __init__(self, negative_slope: float, input_size: int | tuple[int, int], *, half: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.grid = SpectralGrid.of(input_size, half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x, grid=self.grid)
        return SF.spatial_leaky_relu(x, self.negative_slope, self.grid)


class SplitLeakyReLU(_SpectralModule):
    """A Leaky ReLU on the real and on the imaginary part of each coefficient, separately; no transform.

    Args:
        negative_slope: the slope for negative inputs (0: a ReLU).

    Shape:
        complex ``(B, C, H, F)`` -> the same.
    """

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x)
        return SF.split_leaky_relu(x, self.negative_slope)
