"""Stateless frequency-domain operations; the layers in :mod:`cemnet.nn` are thin wrappers.

All activations are complex full spectra ``(B, C, H, W)`` as described in
:mod:`cemnet.spectral`. See the matching layer for the maths and the shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cemnet.spectral import CONJUGATIONS, check_choice, to_frequency, to_spatial


def check_spectrum(x: torch.Tensor, name: str = "input") -> None:
    """Raise a ValueError unless ``x`` is a complex 4-D ``(B, C, H, W)`` tensor."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4D (B, C, H, W) {name} (got {x.dim()}D {name} of shape {tuple(x.shape)})")
    if not x.is_complex():
        raise ValueError(f"expected a complex frequency-domain {name} (got dtype {x.dtype}); use cemnet.spectral.to_frequency")


def spectral_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, conj: str = "input"
) -> torch.Tensor:
    """Element-wise multiplication layer; see :class:`cemnet.nn.SpectralConv2d`.

    Args:
        x: complex ``(B, C_in, H, W)``.
        weight: complex ``(C_out, C_in, H, W)``, the spectrum of the padded kernel.
        bias: real ``(C_out,)`` spatial bias or ``None``; it only touches the DC term.
        conj: ``"input"`` (paper, Eq. 4) or ``"weight"`` (exact ``conv2d``).

    Returns:
        complex ``(B, C_out, H, W)``.
    """
    if check_choice("conj", conj, CONJUGATIONS) == "input":
        x = x.conj()
    else:
        weight = weight.conj()
    # A batched matrix product per frequency: (HW, B, C_in) @ (HW, C_in, C_out).
    out = torch.einsum("bihw,oihw->bohw", x, weight)
    if bias is not None:
        # A constant spatial offset b is the spectrum b * H * W at frequency (0, 0).
        height, width = x.shape[-2:]
        out[:, :, 0, 0] += bias * (height * width)
    return out


def multiplicative_noise(x: torch.Tensor, sigma: float, training: bool = True) -> torch.Tensor:
    """Multiply real and imaginary parts by independent ``N(1, sigma)`` draws.

    The approximated dropout and Leaky ReLU of the paper (Sec. 3.1.3-3.1.4).
    Identity when ``training`` is false or ``sigma`` is zero.
    """
    if not training or sigma == 0:
        return x
    parts = torch.view_as_real(x)  # (B, C, H, W, 2): real and imaginary planes
    noise = torch.randn_like(parts).mul_(sigma).add_(1.0)
    return torch.view_as_complex(parts * noise)


def spectral_max_pool2d(x: torch.Tensor, kernel_size: int = 2, stride: int | None = None) -> torch.Tensor:
    """Max pooling of the spatial signal: inverse FFT, real part, ``max_pool2d``, FFT.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)`` for ``stride = k``.
    """
    return to_frequency(F.max_pool2d(to_spatial(x), kernel_size, stride))
