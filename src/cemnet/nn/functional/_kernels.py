"""The primitives that the noise and batch-norm math is written in, in PyTorch's operations and in C++.

A layer picks one implementation when it is built or moved
(:func:`kernels_for`), from its device and :mod:`cemnet.runtime`'s setting,
and hands it to its functional twin; the functional code is the same math
either way. The native implementation computes float32 CPU tensors with
:mod:`cemnet._native` and leaves everything else to PyTorch's operations:
other dtypes and code being traced by ``torch.compile``. The C++ has no
backward: the functional code calls it only inside autograd functions of
its own, or where no gradient is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from cemnet import _native, runtime


class TorchKernels:
    """The primitives in PyTorch's operations.

    Args:
        one_pass: batch-norm statistics from one pass over the data (sums of
            ``x`` and ``x^2``), with a centred second pass only where a mean is
            large next to its spread. That choice reads the statistics: right
            on the CPU, a host synchronisation per layer on a GPU, so other
            devices always take two passes.
    """

    name = "torch"

    def __init__(self, one_pass: bool) -> None:
        self.one_pass = one_pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(one_pass={self.one_pass})"

    def noise_factor(self, like: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
        """``prod_k N(1, sigma_k)``, independent draws shaped like ``like``, one :func:`normal_like` per sigma, in order."""
        factor = normal_like(like, 1.0, sigmas[0])
        for extra in sigmas[1:]:
            factor.mul_(normal_like(like, 1.0, extra))
        return factor

    def keep_mask(self, like: torch.Tensor, p: float) -> torch.Tensor:
        """``1 / (1 - p)`` where a float32 uniform is at least ``p``, else 0."""
        return torch.empty_like(like).uniform_().ge_(p).mul_(1.0 / (1.0 - p))

    def channel_moments(self, layout, rows: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel and part ``(C, 2)`` mean and biased variance of ``(B, numel)`` rows, in one pass."""
        mean, mean_square = layout.per_channel(torch.stack((rows.sum(0), rows.square().sum(0)))).div_(count)
        return mean, torch.addcmul(mean_square, mean, mean, value=-1)

    def channel_sums(self, layout, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel and part ``(C, 2)`` sums of ``x`` and of ``x * y``."""
        return tuple(layout.per_channel(torch.stack((x.sum(0), (x * y).sum(0)))))

    def channel_affine(self, layout, x: torch.Tensor, coefficients: torch.Tensor,
                       y: torch.Tensor | None = None) -> torch.Tensor:
        """``a x + b (+ g y)`` on rows, the ``(2 or 3, C, 2)`` coefficients stacked ``a, b (, g)``."""
        if y is None:
            scale_row, shift_row = layout.broadcast(coefficients)
            return torch.addcmul(shift_row, x, scale_row)
        slope_row, shift_row, scale_row = layout.broadcast(coefficients)
        return torch.addcmul(shift_row, x, slope_row).addcmul_(y, scale_row)


class NativeKernels(TorchKernels):
    """The primitives in C++ (:mod:`cemnet._native`) for float32 CPU tensors; PyTorch's for the rest.

    The noise is drawn from another generator than PyTorch's (a pair of
    sigmas per key), so a seeded run draws other numbers than with
    :class:`TorchKernels`; the statistics are summed in float64.
    """

    name = "native"

    def __init__(self) -> None:
        super().__init__(one_pass=True)

    @staticmethod
    def _applies(*tensors: torch.Tensor) -> bool:
        # compile traces PyTorch's operations (checked while tracing, not in the compiled code);
        # a process whose build failed under "auto" has no native kernels.
        return (all(t.dtype == torch.float32 for t in tensors) and not torch.compiler.is_compiling()
                and runtime.native_kernels() is not None)

    def noise_factor(self, like, sigmas):
        return _native.noise_factor(like, sigmas) if self._applies(like) else super().noise_factor(like, sigmas)

    def keep_mask(self, like, p):
        return _native.keep_mask(like, p) if self._applies(like) else super().keep_mask(like, p)

    def channel_moments(self, layout, rows, count):
        if not self._applies(rows):
            return super().channel_moments(layout, rows, count)
        # float64 sums: the one-pass variance loses nothing that float32 keeps
        mean, mean_square = _native.channel_sums(rows, rows, layout.blocks).div_(count)
        return mean.to(rows.dtype), torch.addcmul(mean_square, mean, mean, value=-1).to(rows.dtype)

    def channel_sums(self, layout, x, y):
        if not self._applies(x, y):
            return super().channel_sums(layout, x, y)
        return tuple(_native.channel_sums(x, y, layout.blocks).to(x.dtype))

    def channel_affine(self, layout, x, coefficients, y=None):
        if not self._applies(*((x, coefficients) if y is None else (x, coefficients, y))):
            return super().channel_affine(layout, x, coefficients, y)
        return _native.channel_affine(x, coefficients, layout.blocks, y)


TORCH_CPU = TorchKernels(one_pass=True)
TORCH = TorchKernels(one_pass=False)
NATIVE = NativeKernels()


def kernels_for(device: torch.device) -> TorchKernels:
    """The implementation for layers on ``device`` under :func:`cemnet.runtime.kernel_setting` (builds nothing)."""
    if device.type != "cpu":
        return TORCH
    return TORCH_CPU if runtime.kernel_setting() == "torch" else NATIVE


# Below this many numbers the helper threads cost more than they save (benchmarks/draws.py).
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

    PyTorch draws CPU Gaussians on one core. Large CPU tensors (at least
    :data:`PARALLEL_NORMAL_MIN_NUMEL` numbers) are therefore split into
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
