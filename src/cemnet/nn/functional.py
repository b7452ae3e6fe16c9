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
    batch, c_in, height, width = x.shape
    c_out = weight.shape[0]
    # Complex products as one real batched matrix product per frequency, with the
    # real and imaginary parts side by side: [Re X, Im X] @ M = [Re Y, Im Y].
    # PyTorch's complex bmm on CPU is ~10x slower than this real one.
    inputs = torch.view_as_real(x).permute(2, 3, 0, 4, 1).reshape(height * width, batch, 2 * c_in)
    parts = torch.view_as_real(weight).permute(4, 2, 3, 1, 0).reshape(2, height * width, c_in, c_out)
    w_re, w_im = parts[0], parts[1]  # (HW, C_in, C_out) each
    if check_choice("conj", conj, CONJUGATIONS) == "input":
        # conj(X) W: Re Y = Xr Wr + Xi Wi, Im Y = Xr Wi - Xi Wr
        blocks = torch.cat([torch.cat([w_re, w_im], 2), torch.cat([w_im, -w_re], 2)], 1)
    else:
        # X conj(W): Re Y = Xr Wr + Xi Wi, Im Y = Xi Wr - Xr Wi
        blocks = torch.cat([torch.cat([w_re, -w_im], 2), torch.cat([w_im, w_re], 2)], 1)
    out = torch.bmm(inputs, blocks)  # (HW, B, 2 C_out)
    out = out.reshape(height, width, batch, 2, c_out).permute(2, 4, 0, 1, 3)  # (B, C_out, H, W, 2)
    out = torch.view_as_complex(out.contiguous())
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
