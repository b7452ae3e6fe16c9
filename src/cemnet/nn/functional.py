"""Stateless frequency-domain operations; the layers in :mod:`cemnet.nn` are thin wrappers.

All activations are complex spectra ``(B, C, H, W)`` (or ``(B, C, H, W // 2 + 1)``
for the half-spectrum variant) as described in :mod:`cemnet.spectral`. See the
matching layer for the maths and the shapes.
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
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, conj: str = "input",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Element-wise multiplication layer; see :class:`cemnet.nn.SpectralConv2d`.

    Args:
        x: complex ``(B, C_in, H, F)``, a full (``F = W``) or half (``F = W // 2 + 1``) spectrum.
        weight: complex ``(C_out, C_in, H, F)``, the spectrum of the padded kernel.
        bias: real ``(C_out,)`` spatial bias or ``None``; it only touches the DC term.
        conj: ``"input"`` (paper, Eq. 4) or ``"weight"`` (exact ``conv2d``).
        size: the signal size ``(H, W)`` of a half spectrum (for the bias).

    Returns:
        complex ``(B, C_out, H, F)``.
    """
    batch, c_in, height, width = x.shape
    c_out = weight.shape[0]
    # The complex products as ONE real batched matrix product per frequency (PyTorch's
    # complex bmm is ~10x slower on CPU). Both conventions have Re Y = Xr Wr + Xi Wi;
    # the imaginary part is [-Xi, Xr] @ [Wr; Wi] for conj(X) W and [Xi, -Xr] @ [Wr; Wi]
    # for X conj(W). Stacking the two left factors along the batch shares one weight
    # operand [Wr; Wi], a mere reshape of the stored weight.
    parts = torch.view_as_real(x).permute(2, 3, 4, 0, 1)  # (H, W, 2, B, C_in)
    real, imag = parts[:, :, 0], parts[:, :, 1]
    second = torch.cat([-imag, real], -1) if check_choice("conj", conj, CONJUGATIONS) == "input" else torch.cat(
        [imag, -real], -1)
    inputs = torch.stack([torch.cat([real, imag], -1), second], 2)  # (H, W, 2, B, 2 C_in)
    inputs = inputs.reshape(height * width, 2 * batch, 2 * c_in)
    weights = torch.view_as_real(weight).permute(2, 3, 4, 1, 0).reshape(height * width, 2 * c_in, c_out)
    out = torch.bmm(inputs, weights).reshape(height, width, 2, batch, c_out)  # (H, W, [Re, Im], B, C_out)
    out = torch.view_as_complex(out.permute(3, 4, 0, 1, 2).contiguous())  # (B, C_out, H, F)
    if bias is not None:
        # A constant spatial offset b is the spectrum b * H * W at frequency (0, 0).
        points = size[0] * size[1] if size is not None else height * width
        out[:, :, 0, 0] += bias * points
    return out


def multiplicative_noise(x: torch.Tensor, sigma: float, training: bool = True) -> torch.Tensor:
    """Multiply real and imaginary parts by independent ``N(1, sigma)`` draws.

    The approximated dropout and Leaky ReLU of the paper (Sec. 3.1.3-3.1.4).
    Identity when ``training`` is false or ``sigma`` is zero.
    """
    if not training or sigma == 0:
        return x
    parts = torch.view_as_real(x)  # (B, C, H, W, 2): real and imaginary planes
    # parts * (1 + sigma * n) in one fused pass
    return torch.view_as_complex(torch.addcmul(parts, parts, torch.randn_like(parts), value=sigma))


def spectral_max_pool2d(
    x: torch.Tensor, kernel_size: int = 2, stride: int | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Max pooling of the spatial signal: inverse FFT, real part, ``max_pool2d``, FFT.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)`` for ``stride = k``. For a
    half spectrum pass the signal ``size``; the result is a half spectrum too.
    """
    pooled = F.max_pool2d(to_spatial(x, size), kernel_size, stride)
    return to_frequency(pooled, half=size is not None)
