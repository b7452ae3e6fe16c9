"""Stateless frequency-domain operations; the layers in :mod:`cemnet.nn` are thin wrappers.

All activations are complex spectra ``(B, C, H, W)`` (or ``(B, C, H, W // 2 + 1)``
for the half-spectrum variant) as described in :mod:`cemnet.spectral`. See the
matching layer for the maths and the shapes.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cemnet import native
from cemnet.spectral import CONJUGATIONS, check_choice, to_frequency, to_spatial


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
    size: tuple[int, int] | None = None,
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
        size: the signal size ``(H, W)`` of a half spectrum (for the bias).

    Returns:
        complex ``(B, C_out, H, F)``.
    """
    batch, c_in, height, width = x.shape
    conj = check_choice("conj", conj, CONJUGATIONS)
    if c_in == 1:
        # One input channel (a grayscale first layer): no sum over C_in, so a broadcast
        # product beats the matrix layout below (2x forward + backward on MNIST's first layer).
        spectrum = from_frequency_major(weight) if not weight.is_complex() else weight  # (C_out, 1, H, F)
        # Contiguous, so the product comes out contiguous: with the frequency-major view it
        # would be channels-last, and every later layer would pay a transposing copy.
        spectrum = spectrum.transpose(0, 1).contiguous()
        out = x.conj() * spectrum if conj == "input" else x * spectrum.conj()
        return _add_bias(out, bias, size)
    if weight.is_complex():
        weight = frequency_major(weight)
    matrices = weight.reshape(height * width, 2 * c_in, weight.shape[-1])  # (H F, 2 C_in, C_out): [Wr; Wi]
    return _add_bias(_SpectralProduct.apply(x, matrices, conj == "input"), bias, size)


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
    ~10x slower on CPU): the left factor of :func:`_left_factor` times the
    frequency-major weight ``[Wr; Wi]``. Autograd would keep the left factor,
    twice the input's size, for the weight's gradient; this function keeps
    the input and rebuilds the factor in the backward (one stack), one
    input-sized tensor less per layer (a step's peak memory up to 7 % lower,
    docs/performance.md item 16), and assembles the input's gradient in four passes
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


def _add_bias(out: torch.Tensor, bias: torch.Tensor | None, size: tuple[int, int] | None) -> torch.Tensor:
    if bias is not None:
        # A constant spatial offset b is the spectrum b * H * W at frequency (0, 0).
        points = size[0] * size[1] if size is not None else out.shape[-2] * out.shape[-1]
        out[:, :, 0, 0] += bias * points
    return out


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Independent linear maps of consecutive feature blocks; see :class:`cemnet.nn.GroupedLinear`.

    Args:
        x: real ``(*, G * I)``: ``G`` blocks of ``I`` features.
        weight: ``(G, O, I)``, block ``g`` mapped as ``nn.Linear`` with ``weight[g]`` would.
        bias: ``(G, O)`` or ``None``.

    Returns:
        ``(*, G * O)``, the blocks' outputs in the same order.
    """
    groups, out_features, in_features = weight.shape
    leading = x.shape[:-1]
    blocks = x.reshape(-1, groups, in_features).transpose(0, 1)  # (G, N, I), a strided view BLAS reads as is
    # One batched product for all groups: (G, N, I) @ (G, I, O).
    if bias is None:
        out = torch.bmm(blocks, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), blocks, weight.transpose(1, 2))
    return out.transpose(0, 1).reshape(*leading, groups * out_features)


def spectral_batch_norm(
    x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None, weight: torch.Tensor,
    bias: torch.Tensor, training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
) -> torch.Tensor:
    """Batch norm of the real and imaginary parts with separate statistics (paper Eq. 12-15).

    The same numbers as ``F.batch_norm`` applied to ``x.real`` and ``x.imag``
    with the two columns of each parameter, computed on the interleaved
    memory without splitting it, in whatever dense layout ``x`` has (a
    channels-last spectrum needs no transposing copy): every per-channel quantity is
    expanded to one row shaped like a single example, so each pass over the
    batch is one long contiguous loop (PyTorch's kernels on the two strided
    parts were 1.5-4x slower, docs/performance.md). The output keeps the
    input's memory layout. For float32 CPU tensors the sums and the affine
    maps are the native kernels of :mod:`cemnet.native` where they are built
    (in evaluation, only where no gradient is asked for).

    Args:
        x: complex ``(B, C, H, W)``.
        running_mean, running_var: ``(C, 2)`` (real, imaginary) or ``None``;
            updated in place when ``training``, as ``F.batch_norm`` does
            (the variance with Bessel's correction).
        weight, bias: ``(C, 2)``.
        training: normalise with the batch statistics, else with the running ones.
        momentum: weight of the batch statistics in the running update.
    """
    if training:
        out, mean, var = spectral_batch_norm_with_stats(x, weight, bias, eps)
        if running_mean is not None and running_var is not None:
            # Per-part views of the (C, 2) buffers, updated in place.
            update_running_stats(running_mean.unbind(1), running_var.unbind(1), mean, var, x.numel() // x.shape[1],
                                 momentum)
        return out
    if running_mean is None or running_var is None:
        raise ValueError("evaluation needs running statistics")
    layout, rows = _as_rows(x)
    scale = weight * torch.rsqrt(running_var + eps)
    coefficients = torch.stack((scale, torch.addcmul(bias, running_mean, scale, value=-1)))
    # The native map has no autograd: only where nothing asks for a gradient (inference under no_grad).
    differentiable = rows.requires_grad or coefficients.requires_grad
    kernel = None if differentiable else _native_kernel_for_rows(rows)
    if kernel is not None:
        return layout.restore(layout.native_affine(kernel, rows, coefficients))
    scale_row, shift_row = layout.broadcast(coefficients)
    return layout.restore(torch.addcmul(shift_row, rows, scale_row))


def spectral_batch_norm_with_stats(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode :func:`spectral_batch_norm` without running statistics.

    Returns:
        the normalised complex ``(B, C, H, W)`` output, and the batch mean and
        (biased) variance, ``(C, 2)`` each, without gradient.
    """
    return _SpectralBatchNorm.apply(x, weight, bias, eps)


@torch.no_grad()
def update_running_stats(
    running_means: Sequence[torch.Tensor], running_vars: Sequence[torch.Tensor], mean: torch.Tensor,
    var: torch.Tensor, count: int, momentum: float,
) -> None:
    """``F.batch_norm``'s running update from the ``(C, 2)`` batch statistics of :func:`spectral_batch_norm`.

    ``running_means`` / ``running_vars`` are the real and the imaginary
    part's ``(C,)`` buffers (two tensors each, as
    :class:`cemnet.nn.SpectralBatchNorm2d` keeps them, or the two columns of
    a ``(C, 2)`` buffer); the variance is updated with Bessel's correction
    over ``count`` numbers per channel.
    """
    var = var * (count / max(count - 1, 1))
    for index, (running_mean, running_var) in enumerate(zip(running_means, running_vars)):
        running_mean.lerp_(mean[:, index], momentum)
        running_var.lerp_(var[:, index], momentum)


class _RowLayout:
    """How the numbers of a complex ``(B, C, H, W)`` tensor lie in memory, as ``(B, numel)`` rows.

    Built once per shape and strides of ``view_as_real(x)``, ``(B, C, H, W, 2)``
    (:func:`_row_layout`). The order of the dimensions is the tensor's own when
    it is dense with the batch outermost, so that no layout costs a
    transposing copy; otherwise the standard order. Per-channel ``(C, 2)``
    quantities are summed from, and expanded to, rows of one example's
    numbers in that order.
    """

    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
        part = len(shape) - 1  # the real/imaginary pairs stay innermost
        order = [0, *sorted(range(1, part), key=lambda dim: -strides[dim]), part]
        if not _dense_in_order(shape, strides, order):
            order = list(range(len(shape)))
        self.order = None if order == sorted(order) else order  # None: no permute needed
        self.inverse = sorted(range(len(order)), key=order.__getitem__)
        self.memory_shape = tuple(shape[dim] for dim in order)
        self.example = self.memory_shape[1:]  # one example's (..., 2) in memory order
        channel_axis = order.index(1) - 1
        self.per_channel_count = math.prod(self.example) // (shape[1] * 2)  # positions per channel and part
        self.summed_axes = tuple(axis + 1 for axis in range(len(self.example) - 1) if axis != channel_axis)
        self.value_view = tuple(size if axis == channel_axis else 1 for axis, size in enumerate(self.example[:-1]))
        # One example as (outer, C, inner) blocks in memory, inner ending with the part: for the native kernel.
        self.blocks = (math.prod(self.example[:channel_axis]), shape[1], math.prod(self.example[channel_axis + 1:]))

    def rows(self, parts: torch.Tensor) -> torch.Tensor:
        """``view_as_real`` of a tensor of this shape (any layout) -> ``(B, numel)`` rows in this order."""
        if self.order is not None:
            parts = parts.permute(self.order)
        return parts.reshape(self.memory_shape[0], -1)  # a view when the layout is this one

    def restore(self, rows: torch.Tensor) -> torch.Tensor:
        """``(B, numel)`` rows in this order -> the complex ``(B, C, H, W)`` tensor they hold."""
        parts = rows.view(self.memory_shape)
        return torch.view_as_complex(parts if self.order is None else parts.permute(self.inverse))

    def per_channel(self, rows: torch.Tensor) -> torch.Tensor:
        """``(K, numel)`` rows -> ``(K, C, 2)``: the sums over each channel's positions, per part."""
        return rows.view(rows.shape[0], *self.example).sum(self.summed_axes)

    def native_sums(self, kernel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(2, C, 2)`` float64 sums of contiguous ``(B, numel)`` rows ``x`` and ``x * y`` (the native kernel)."""
        sums = torch.empty(2, self.blocks[1], 2, dtype=torch.float64)
        kernel.channel_sums(x.data_ptr(), y.data_ptr(), x.shape[0], *self.blocks, sums.data_ptr())
        return sums

    def native_affine(self, kernel, x: torch.Tensor, coefficients: torch.Tensor, y: torch.Tensor | None = None):
        """``a x + b (+ g y)`` on contiguous rows, ``coefficients`` the stacked ``(2 or 3, C, 2)`` a, b (, g)."""
        out = torch.empty_like(x)
        kernel.channel_affine(out.data_ptr(), x.data_ptr(), 0 if y is None else y.data_ptr(), x.shape[0],
                              *self.blocks, coefficients.contiguous().data_ptr())
        return out

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """``(K, C, 2)`` -> contiguous ``(K, numel)`` rows that broadcast over the batch."""
        # Expanded as complex numbers: the copy's inner loop then runs over positions, not over pairs.
        count = values.shape[0]
        pairs = torch.view_as_complex(values.contiguous()).view(count, *self.value_view)
        return torch.view_as_real(pairs.expand(count, *self.example[:-1]).contiguous()).view(count, -1)


def _dense_in_order(shape, strides, order) -> bool:
    expected = 1
    for dim in reversed(order):
        if shape[dim] != 1 and strides[dim] != expected:
            return False
        expected *= shape[dim]
    return True


@functools.lru_cache(maxsize=256)
def _row_layout(shape: torch.Size, strides: tuple[int, ...]) -> _RowLayout:
    return _RowLayout(tuple(shape), strides)


def _as_rows(x: torch.Tensor) -> tuple[_RowLayout, torch.Tensor]:
    """The layout of a complex ``(B, C, H, W)`` tensor and its numbers as ``(B, numel)`` rows in it."""
    parts = torch.view_as_real(x)
    layout = _row_layout(parts.shape, parts.stride())
    return layout, layout.rows(parts)


# One-pass statistics (sums of x and x^2) lose about mean^2 / var * 6e-8 of the
# variance in float32; below this ratio that is nothing, above it the layer
# centres first (two passes, as PyTorch's own).
ONE_PASS_MAX_MEAN_RATIO = 1.0


class _SpectralBatchNorm(torch.autograd.Function):
    """Training-mode :func:`spectral_batch_norm` on complex tensors, so that no
    ``view_as_real`` backward forces its gradient into the contiguous layout.

    On CPU the statistics take one pass (sums of ``x`` and ``x^2``) unless
    some channel's mean is large next to its spread
    (:data:`ONE_PASS_MAX_MEAN_RATIO`); then, on other devices and under
    ``torch.compile``, the input is centred first. Forward and backward work on
    ``x - offset`` with a per-channel ``offset`` (0 once centred, else the
    mean), so that both cases are one affine map of saved rows. Per-channel
    values travel stacked, so that each step is one operation whatever their
    number (at MNIST's sizes the layer's cost is mostly per operation).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        layout, flat = _as_rows(x)
        count = flat.shape[0] * layout.per_channel_count
        kernel = _native_kernel_for_rows(flat)
        # The choice reads the statistics: on a GPU that would be a host sync per layer, and
        # torch.compile would break its graph there.
        one_pass = flat.device.type == "cpu" and not torch.compiler.is_compiling()
        if one_pass:
            if kernel is not None:  # float64 sums: the one-pass variance loses nothing that float32 keeps
                mean, mean_square = layout.native_sums(kernel, flat, flat).div_(count)
                var = torch.addcmul(mean_square, mean, mean, value=-1).to(flat.dtype)
                mean = mean.to(flat.dtype)
            else:
                mean, mean_square = layout.per_channel(torch.stack((flat.sum(0), flat.square().sum(0)))).div_(count)
                var = torch.addcmul(mean_square, mean, mean, value=-1)
            one_pass = bool((mean.square() <= ONE_PASS_MAX_MEAN_RATIO * var).all())
        else:
            mean = layout.per_channel(flat.sum(0)[None])[0].div_(count)
        saved, offset = flat, mean
        if not one_pass:
            saved, offset = flat - layout.broadcast(mean[None]), torch.zeros_like(mean)
            var = layout.per_channel(saved.square().sum(0)[None])[0].div_(count)
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        coefficients = torch.stack((scale, torch.addcmul(bias, offset, scale, value=-1)))
        if kernel is not None:
            out = layout.native_affine(kernel, saved, coefficients)
        else:
            scale_row, shift_row = layout.broadcast(coefficients)
            out = torch.addcmul(shift_row, saved, scale_row)
        ctx.layout = layout
        ctx.save_for_backward(saved, offset, scale, invstd)
        ctx.mark_non_differentiable(mean, var)
        return layout.restore(out), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _mean_grad, _var_grad):
        saved, offset, scale, invstd = ctx.saved_tensors
        layout = ctx.layout
        grad = layout.rows(torch.view_as_real(grad))
        count = grad.shape[0] * layout.per_channel_count
        kernel = _native_kernel_for_rows(saved)
        if kernel is not None:
            grad = grad.contiguous()
            grad_bias, grad_dot = layout.native_sums(kernel, grad, saved).to(grad.dtype)
        else:
            grad_bias, grad_dot = layout.per_channel(torch.stack((grad.sum(0), (grad * saved).sum(0))))
        # sum of grad * (x - mean) * invstd: the gradient of the weight
        grad_weight = torch.addcmul(grad_dot, offset, grad_bias, value=-1).mul_(invstd)
        # d input = w invstd (grad - mean(grad) - xhat mean(grad xhat)), as one affine map of grad and saved.
        slope = scale * invstd * grad_weight / -count
        shift = torch.addcmul(scale * grad_bias / -count, offset, slope, value=-1)
        coefficients = torch.stack((slope, shift, scale))
        if kernel is not None:
            grad_input = layout.native_affine(kernel, saved, coefficients, grad)
        else:
            slope_row, shift_row, scale_row = layout.broadcast(coefficients)
            grad_input = torch.addcmul(shift_row, saved, slope_row).addcmul_(grad, scale_row)
        return layout.restore(grad_input), grad_weight, grad_bias, None


def multiplicative_noise(x: torch.Tensor, sigma: float | Sequence[float], training: bool = True) -> torch.Tensor:
    """Multiply real and imaginary parts by independent ``N(1, sigma)`` draws.

    The approximated dropout and Leaky ReLU of the paper (Sec. 3.1.3-3.1.4).
    Several sigmas apply consecutive noise layers in one product: the factor
    is the product of one independent draw per sigma (:func:`noise_factor`),
    so autograd keeps one factor instead of one per layer.
    Identity when ``training`` is false or every sigma is zero.
    """
    sigmas = [float(s) for s in ((sigma,) if isinstance(sigma, (int, float)) else sigma) if s != 0]
    if not training or not sigmas:
        return x
    parts = torch.view_as_real(x)  # (B, C, H, W, 2): real and imaginary planes
    # The factor is drawn whole, so forward and backward are one product each.
    return torch.view_as_complex(parts * noise_factor(parts, sigmas))


def noise_factor(like: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """``prod_k N(1, sigma_k)``, independent draws shaped like ``like`` (no autograd history).

    On the CPU in float32 the native kernel (:mod:`cemnet.native`) computes
    each pair of factors ``(1 + a z1)(1 + b z2)`` in one pass on all threads,
    with one key per pair drawn from PyTorch's default generator. Elsewhere
    (other devices and dtypes, ``torch.compile``, ``CEMNET_NATIVE=0``, or no
    compiler) each sigma is one :func:`normal_like` draw, in order, so a
    seeded run draws what the layers would draw one by one. Both give the
    same law; they give different numbers for the same seed.
    """
    kernel = _native_kernel_for(like)
    if kernel is None:
        factor = normal_like(like, 1.0, sigmas[0])
        for extra in sigmas[1:]:
            factor.mul_(normal_like(like, 1.0, extra))
        return factor
    factor = torch.empty_like(like)  # dense, so its numel numbers start at data_ptr
    for start in range(0, len(sigmas), 2):
        a, b = (*sigmas[start:start + 2], 0.0)[:2]
        kernel.noise_factor(factor.data_ptr(), factor.numel(), a, b, _native_key(), start > 0)
    return factor


def _native_kernel_for(like: torch.Tensor):
    """The native kernel module where it applies to ``like`` (float32 on the CPU, eager), else ``None``."""
    if like.device.type != "cpu" or like.dtype != torch.float32 or torch.compiler.is_compiling():
        return None
    return native.kernels()


def _native_kernel_for_rows(rows: torch.Tensor):
    """:func:`_native_kernel_for` batch-norm rows, which the kernels read as contiguous ``(B, numel)`` memory."""
    return _native_kernel_for(rows) if rows.is_contiguous() else None


def _native_key() -> int:
    """A kernel key: 63 bits from PyTorch's default generator, so that ``torch.manual_seed`` decides the draws."""
    return int(torch.empty((), dtype=torch.int64).random_())


# Below this many numbers the helper threads cost more than they save: drawing
# N(1, sigma) and multiplying, 2 threads, 2026-11-26, parallel / serial time:
# 0.5M numbers 1.11x, 2M 1.06x, 3.5M 0.92x, 3.7M 0.85x, 7M 0.72x.
PARALLEL_NORMAL_MIN_NUMEL = 3_000_000
_normal_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _normal_workers(count: int) -> ThreadPoolExecutor:
    global _normal_pool
    # A pool inherited through fork() has no threads left: make a new one per process.
    if _normal_pool is None or _normal_pool[0] != os.getpid() or _normal_pool[1] < count:
        _normal_pool = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="cemnet-normal"))
    return _normal_pool[2]


def normal_like(x: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Independent ``N(mean, std)`` draws shaped like ``x``, in ``x``'s memory layout (no autograd history).

    The draws fill memory in order, so a product with a channels-last ``x``
    runs in memory order too (``normal_`` into a strided view is many times
    slower than into contiguous memory).

    PyTorch draws CPU Gaussians on one core, and without the native kernel
    (:func:`noise_factor`) the noise layers draw one per activation and
    sigma. Large CPU tensors (at least :data:`PARALLEL_NORMAL_MIN_NUMEL`
    numbers) are therefore split into
    ``torch.get_num_threads()`` chunks, each filled by its own generator on its
    own thread. The first chunk uses the default generator and the others are
    seeded from it, so ``torch.manual_seed`` still makes a run reproducible (for
    a given thread count) and checkpoints that save the default generator still
    resume exactly. The law is unchanged: every number is an independent draw.
    """
    out = torch.empty_like(x)  # dense, with x's strides when x is dense
    if torch.compiler.is_compiling():  # one traceable operation: the compiler draws in its own loop
        return out.normal_(mean, std)
    memory = out.as_strided((out.numel(),), (1,))  # all of a dense tensor's numbers, in memory order
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads < 2 or x.numel() < PARALLEL_NORMAL_MIN_NUMEL:
        memory.normal_(mean, std)
        return out
    first, *rest = memory.chunk(threads)
    seeds = torch.randint(2**62, (len(rest),)).tolist()
    workers = _normal_workers(len(rest))
    futures = [
        workers.submit(chunk.normal_, mean, std, generator=torch.Generator().manual_seed(seed))
        for chunk, seed in zip(rest, seeds)
    ]
    first.normal_(mean, std)
    for future in futures:
        future.result()
    return out


def uniform_mask_dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``F.dropout`` with its keep mask drawn as ``uniform >= p``; see :class:`cemnet.nn.UniformMaskDropout`.

    The same law: every number is kept with probability ``1 - p`` (up to the
    ``2^-24`` resolution of a float32 uniform) and scaled by ``1 / (1 - p)``,
    independently; identity when not ``training``. Any shape and layout. The
    uniforms come from the native kernel where :func:`noise_factor` uses it
    (float32 on the CPU), else from PyTorch's generator.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:  # F.dropout's result, without dividing by zero
        return x.mul_(0.0) if inplace else x * 0.0
    # The factor 0 or 1 / (1 - p) per number, so that forward and backward are one product each, as
    # for F.dropout: from the native kernel's generator where it applies (the one the CEMNets' noise
    # uses), else one float32 uniform from PyTorch's, thresholded in place.
    kernel = _native_kernel_for(x)
    if kernel is None:
        factor = torch.empty_like(x).uniform_().ge_(p).mul_(1.0 / (1.0 - p))
    else:
        factor = torch.empty_like(x)  # dense
        kernel.keep_mask(factor.data_ptr(), factor.numel(), p, _native_key())
    return x.mul_(factor) if inplace else x * factor


def spectral_max_pool2d(
    x: torch.Tensor, kernel_size: int = 2, stride: int | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Max pooling of the spatial signal: inverse FFT, real part, ``max_pool2d``, FFT.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)`` for ``stride = k``. For a
    half spectrum pass the signal ``size``; the result is a half spectrum too.
    """
    signal = to_spatial(x, size)
    if stride in (None, kernel_size):
        pooled = block_max_pool2d(signal, kernel_size)
    else:
        pooled = F.max_pool2d(signal, kernel_size, stride)
    return to_frequency(pooled, half=size is not None)


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


def block_max_pool2d(x: torch.Tensor, kernel_size: int = 2) -> torch.Tensor:
    """``F.max_pool2d(x, k)`` (stride ``k``, no padding), 4-6x faster on CPU when no gradient is needed.

    PyTorch's CPU kernel for contiguous maps visits each window on its own;
    two ``torch.maximum`` over strided views (the columns of each 2 x 2
    window, then its rows, whose inner loops are contiguous) give the same
    values, NaN included. With autograd this is ``F.max_pool2d`` itself:
    locating the maxima for the backward with element-wise ops cost as much
    as the faster forward saved (docs/performance.md), so training steps are
    unchanged and inference gains. Other kernel sizes and devices use
    ``F.max_pool2d``.

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
