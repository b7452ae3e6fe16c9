"""Batch norm of the real and imaginary parts (paper Eq. 12-15): :class:`cemnet.nn.SpectralBatchNorm2d`'s math."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from cemnet.nn.functional._kernels import TORCH, TorchKernels, kernels_for


def spectral_batch_norm(
    x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None, weight: torch.Tensor,
    bias: torch.Tensor, training: bool = True, momentum: float = 0.1, eps: float = 1e-5, *,
    kernels: TorchKernels | None = None,
) -> torch.Tensor:
    """Batch norm of the real and imaginary parts with separate statistics (paper Eq. 12-15).

    The same numbers as ``F.batch_norm`` applied to ``x.real`` and ``x.imag``
    with the two columns of each parameter, computed on the interleaved
    memory without splitting it, in whatever dense layout ``x`` has (a
    channels-last spectrum needs no transposing copy): every per-channel quantity is
    expanded to one row shaped like a single example, so each pass over the
    batch is one long contiguous loop. The output keeps the input's memory
    layout.

    Args:
        x: complex ``(B, C, H, W)``.
        running_mean, running_var: ``(C, 2)`` (real, imaginary) or ``None``;
            updated in place when ``training``, as ``F.batch_norm`` does
            (the variance with Bessel's correction).
        weight, bias: ``(C, 2)``.
        training: normalise with the batch statistics, else with the running ones.
        momentum: weight of the batch statistics in the running update.
        kernels: the primitives to compute with (:mod:`cemnet.nn.functional._kernels`);
            default those of ``x``'s device under :mod:`cemnet.runtime`'s setting.
    """
    kernels = kernels or kernels_for(x.device)
    if training:
        out, mean, var = spectral_batch_norm_with_stats(x, weight, bias, eps, kernels=kernels)
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
    if rows.requires_grad or coefficients.requires_grad:  # PyTorch's operations, which autograd follows
        kernels = TORCH
    return layout.restore(kernels.channel_affine(layout, rows, coefficients))


def spectral_batch_norm_with_stats(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5, *,
    kernels: TorchKernels | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode :func:`spectral_batch_norm` without running statistics.

    Returns:
        the normalised complex ``(B, C, H, W)`` output, and the batch mean and
        (biased) variance, ``(C, 2)`` each, without gradient.
    """
    return _SpectralBatchNorm.apply(x, weight, bias, eps, kernels or kernels_for(x.device))


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


#X (sums of x and x^2) lose about mean^2 / var * 6e-8 of the
# variance in float32; below this ratio that is nothing, above it the layer
# centres first (two passes, as PyTorch's own).
ONE_PASS_MAX_MEAN_RATIO = 1.0


# One-pass statistics (sums of x and x^2) lose about mean^2 / var * 6e-8 of the
# variance in float32; below this ratio that is nothing, above it the layer
# centres first (two passes, as PyTorch's own).
ONE_PASS_MAX_MEAN_RATIO = 1.0


class _SpectralBatchNorm(torch.autograd.Function):
    """Training-mode :func:`spectral_batch_norm` on complex tensors, so that no
    ``view_as_real`` backward forces its gradient into the contiguous layout.

    With ``kernels.one_pass`` (CPU) the statistics take one pass (sums of
    ``x`` and ``x^2``) unless some channel's mean is large next to its spread
    (:data:`ONE_PASS_MAX_MEAN_RATIO`); then, on other devices and under
    ``torch.compile`` (whose graph would break on the data-dependent choice),
    the input is centred first. Forward and backward work on
    ``x - offset`` with a per-channel ``offset`` (0 once centred, else the
    mean), so that both cases are one affine map of saved rows. Per-channel
    values travel stacked, so that each step is one operation whatever their
    number (at MNIST's sizes the layer's cost is mostly per operation).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, kernels):
        layout, flat = _as_rows(x)
        count = flat.shape[0] * layout.per_channel_count
        one_pass = kernels.one_pass and not torch.compiler.is_compiling()
        if one_pass:
            mean, var = kernels.channel_moments(layout, flat, count)
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
        out = kernels.channel_affine(layout, saved, coefficients)
        ctx.layout, ctx.kernels = layout, kernels
        ctx.save_for_backward(saved, offset, scale, invstd)
        ctx.mark_non_differentiable(mean, var)
        return layout.restore(out), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _mean_grad, _var_grad):
        saved, offset, scale, invstd = ctx.saved_tensors
        layout, kernels = ctx.layout, ctx.kernels
        grad = layout.rows(torch.view_as_real(grad))
        count = grad.shape[0] * layout.per_channel_count
        grad_bias, grad_dot = kernels.channel_sums(layout, grad, saved)
        # sum of grad * (x - mean) * invstd: the gradient of the weight
        grad_weight = torch.addcmul(grad_dot, offset, grad_bias, value=-1).mul_(invstd)
        # d input = w invstd (grad - mean(grad) - xhat mean(grad xhat)), as one affine map of grad and saved.
        slope = scale * invstd * grad_weight / -count
        shift = torch.addcmul(scale * grad_bias / -count, offset, slope, value=-1)
        grad_input = kernels.channel_affine(layout, saved, torch.stack((slope, shift, scale)), grad)
        return layout.restore(grad_input), grad_weight, grad_bias, None, None
