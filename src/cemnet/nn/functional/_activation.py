"""True nonlinearities for spectra: a Leaky ReLU through the spatial domain, and one on each part of the spectrum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cemnet.spectral import SpectralGrid


def spatial_leaky_relu(x: torch.Tensor, negative_slope: float, grid: SpectralGrid) -> torch.Tensor:
    """The spectrum of the Leaky ReLU of the spatial signal; see :class:`cemnet.nn.SpatialLeakyReLU`.

    Shape: complex ``(B, C, H, columns)`` on ``grid`` -> the same.
    """
    return grid.to_frequency(F.leaky_relu(grid.to_spatial(x), negative_slope))


def split_leaky_relu(x: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """A Leaky ReLU on the real and on the imaginary part, each on its own; see :class:`cemnet.nn.SplitLeakyReLU`."""
    return torch.complex(F.leaky_relu(x.real, negative_slope), F.leaky_relu(x.imag, negative_slope))
