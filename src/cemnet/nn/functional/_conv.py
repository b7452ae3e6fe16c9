"""Element-wise multiplication layers: the spectral product of :class:`cemnet.nn.SpectralConv2d` and its layouts."""

from __future__ import annotations

import torch

from cemnet.spectral import CONJUGATIONS, SpectralGrid, check_choice


def check_spectrum(x: torch.Tensor, name: str = "input") -> None:
    """Raise a ValueError unless ``x`` is a complex 4-D ``(B, C, H, W)`` tensor."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4D (B, C, H, W) {name} (got {x.dim()}D {name} of shape {tuple(x.shape)})")
    if not x.is_complex():
        raise ValueError(f"expected a complex frequency-domain {name} (got dtype {x.dtype}); use cemnet.spectral.to_frequency")


def frequency_major(weight: torch.Tensor) -> torch.Tensor:
    """A complex ``(C_out, C_in, H, F)`` weight as the real ``(H, F, 2, C_in, C_out)`` layout of the products.

    The result is a view; ``.contiguous()`` it to store it. ``(H, F, 2, C_in, C_out)``
    reshaped to ``(H * F, 2 C_in, C_out)`` is, per frequency, the real matrix
    ``[Re W; Im W]`` that :func:`spectral_conv2d` multiplies by.
    """
    return torch.view_as_real(weight).permute(2, 3, 4, 1, 0)


def from_frequency_major(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`frequency_major`: real ``(H, F, 2, C_in, C_out)`` -> complex ``(C_out, C_in, H, F)``."""
    return torch.complex(weight[:, :, 0], weight[:, :, 1]).permute(3, 2, 0, 1)


def spectral_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, conj: str = "input",
    grid: SpectralGrid | None = None,
) -> torch.Tensor:
    """Element-wise multiplication layer; see :class:`cemnet.nn.SpectralConv2d`.

    Args:
        x: complex ``(B, C_in, H, F)``, a full (``F = W``) or half (``F = W // 2 + 1``) spectrum.
        weight: the spectrum of the padded kernel, either complex ``(C_out, C_in, H, F)``
            or already in the real frequency-major layout ``(H, F, 2, C_in, C_out)``
            of :func:`frequency_major` (how frequency-stored layers keep it, so
            that no weight is transposed per step).
        bias: real ``(C_out,)`` spatial bias or ``None``; it only touches the DC term.
        conj: ``"input"`` (paper, Eq. 4) or ``"weight"`` (exact ``conv2d``).
        grid: the spectra's grid (the bias needs the signal's size); default the full grid of ``x``.

    Returns:
        complex ``(B, C_out, H, F)``.
    """
    batch, c_in, height, width = x.shape
    conj = check_choice("conj", conj, CONJUGATIONS)
    if c_in == 1:
        # One input channel (a grayscale first layer): no sum over C_in, so a broadcast
        # product beats the matrix layout below (benchmarks/layer_times.py times both on MNIST's first layer).
        spectrum = from_frequency_major(weight) if not weight.is_complex() else weight  # (C_out, 1, H, F)
        # Contiguous, so the product comes out contiguous: with the frequency-major view it
        # would be channels-last, and every later layer would pay a transposing copy.
        spectrum = spectrum.transpose(0, 1).contiguous()
        out = x.conj() * spectrum if conj == "input" else x * spectrum.conj()
        return _add_bias(out, bias, grid)
    if weight.is_complex():
        weight = frequency_major(weight)
    matrices = weight.reshape(height * width, 2 * c_in, weight.shape[-1])  # (H F, 2 C_in, C_out): [Wr; Wi]
    return _add_bias(_SpectralProduct.apply(x, matrices, conj == "input"), bias, grid)


def _left_factor(x: torch.Tensor, conj_input: bool) -> torch.Tensor:
    """Complex ``(B, C_in, H, F)`` -> the real ``(H F, 2 B, 2 C_in)`` left factor of the product.

    Both conventions have Re Y = [Xr, Xi] @ [Wr; Wi]; Im Y is [-Xi, Xr] @ [Wr; Wi]
    for conj(X) W and [Xi, -Xr] @ [Wr; Wi] for X conj(W). The two left factors
    become rows (b, Re) and (b, Im) of one matrix, built by a single stack.
    """
    batch, c_in, height, width = x.shape
    parts = torch.view_as_real(x).permute(2, 3, 0, 4, 1)  # (H, F, B, 2, C_in)
    real, imag = parts[:, :, :, 0], parts[:, :, :, 1]
    second = [-imag, real] if conj_input else [imag, -real]
    return torch.stack([real, imag, *second], 3).view(height * width, 2 * batch, 2 * c_in)


class _SpectralProduct(torch.autograd.Function):
    """The multi-channel products of :func:`spectral_conv2d` as ONE real batched matrix product per frequency.

    ``(H F, 2 B, 2 C_in) @ (H F, 2 C_in, C_out)`` (PyTorch's complex ``bmm`` is
    many times slower on CPU): the left factor of :func:`_left_factor` times the
    frequency-major weight ``[Wr; Wi]``. Autograd would keep the left factor,
    twice the input's size, for the weight's gradient; this function keeps
    the input and rebuilds the factor in the backward (one stack), one
    input-sized tensor less per layer (docs/design.md, "Memory"), and assembles the input's gradient in four passes
    where the stack's own backward took about seven. The backward is made of
    differentiable operations on the saved inputs, so it can be
    differentiated again.

    Shapes: ``x`` complex ``(B, C_in, H, F)``, ``matrices`` real
    ``(H F, 2 C_in, C_out)`` -> complex ``(B, C_out, H, F)``.
    """

    @staticmethod
    def forward(ctx, x, matrices, conj_input):
        batch, _, height, width = x.shape
        ctx.save_for_backward(x, matrices)
        ctx.conj_input = conj_input
        product = torch.bmm(_left_factor(x, conj_input), matrices)
        product = product.view(height, width, batch, 2, matrices.shape[-1])  # rows (b, [Re, Im])
        # Copied into a complex tensor of its own (not a view), which later code may modify in place.
        out = x.new_empty(batch, matrices.shape[-1], height, width)  # (B, C_out, H, F)
        torch.view_as_real(out).copy_(product.permute(2, 4, 0, 1, 3))
        return out

    @staticmethod
    def backward(ctx, grad):
        x, matrices = ctx.saved_tensors
        batch, c_in, height, width = x.shape
        # (B, C_out, H, F) complex -> (H F, 2 B, C_out) with rows (b, [Re, Im]), as the product's output
        grad_rows = torch.view_as_real(grad).permute(2, 3, 0, 4, 1).reshape(height * width, 2 * batch, -1)
        grad_x = grad_matrices = None
        if ctx.needs_input_grad[1]:
            grad_matrices = torch.bmm(_left_factor(x, ctx.conj_input).transpose(1, 2), grad_rows)
        if ctx.needs_input_grad[0]:
            # The gradient of the stack [Xr, Xi, second]: each part collects its two columns' share.
            grad_factor = torch.bmm(grad_rows, matrices.transpose(1, 2)).view(height, width, batch, 4, c_in)
            sign = 1.0 if ctx.conj_input else -1.0  # second = [-Xi, Xr] (conj input) or [Xi, -Xr]
            real = torch.add(grad_factor[:, :, :, 0], grad_factor[:, :, :, 3], alpha=sign)
            imag = torch.add(grad_factor[:, :, :, 1], grad_factor[:, :, :, 2], alpha=-sign)
            grad_x = torch.view_as_complex(torch.stack((real, imag), 4).permute(2, 3, 0, 1, 4).contiguous())
        return grad_x, grad_matrices, None


def _add_bias(out: torch.Tensor, bias: torch.Tensor | None, grid: SpectralGrid | None) -> torch.Tensor:
    if bias is not None:
        # A constant spatial offset b is the spectrum b * H * W at frequency (0, 0).
        points = grid.points if grid is not None else out.shape[-2] * out.shape[-1]
        out[:, :, 0, 0] += bias * points
    return out


def project_frequency_major(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Weight Fixation of a real frequency-major ``(H, F, 2, C_in, C_out)`` tensor (a weight or its gradient).

    ``up`` and ``down`` are :func:`cemnet.spectral.support_projector`'s matrices;
    the projection is two thin GEMMs on the ``(H * F * 2, C_in * C_out)`` view, no transpose.
    """
    return (up @ (down @ weight.reshape(up.shape[0], -1))).view_as(weight)


class _ProjectGradient(torch.autograd.Function):
    """Identity forward; the backward projects the incoming gradient onto the ``K x K`` support."""

    @staticmethod
    def forward(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        return weight.view_as(weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, ctx.up, ctx.down = inputs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return project_frequency_major(grad, ctx.up, ctx.down), None, None


def project_gradient(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``weight`` itself, whose gradient arrives projected onto the ``K x K`` support (see :func:`project_frequency_major`).

    The gradient of the loss restricted to kernels on their support: an optimizer that
    receives it never accumulates, in its state, the part that Weight Fixation would discard.
    """
    return _ProjectGradient.apply(weight, up, down)
