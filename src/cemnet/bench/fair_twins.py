"""Layers that let ``cemnet bench`` compare a CEMNet with its CNN twin layer for layer, not library for library.

Two of a CNN's layers cost more on some CPUs for reasons unrelated to the
frequency domain, and ``cemnet bench`` can swap them, by the options
``block_pool`` and ``dropout_mask`` of either twin (``-O`` / ``-T``):

* ``block_pool=true``: every ``nn.MaxPool2d(2)`` becomes :class:`BlockMaxPool2d`,
  the same function in the code the CEMNets' spectral pooling uses;
* ``dropout_mask=uniform``: every ``nn.Dropout`` becomes
  :class:`UniformMaskDropout`, the same law drawn from the generator of the
  CEMNets' noise. PyTorch draws the CPU Bernoulli masks of ``nn.Dropout``
  with Intel's MKL, in parallel, only on Intel processors; elsewhere it draws
  them serially in double precision.

The models are otherwise the registry's presets; nothing here is a training option.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cemnet.nn import functional as SF
from cemnet.nn.functional import kernels_for

FAIRNESS_OPTIONS = ("block_pool", "dropout_mask")
DROPOUT_MASKS = ("bernoulli", "uniform")


class BlockMaxPool2d(nn.Module):
    """``nn.MaxPool2d(k)`` (stride ``k``) computed by :func:`cemnet.nn.functional.block_max_pool2d`.

    The same function; on CPU, for ``k = 2`` and without autograd, faster.

    Shape:
        real ``(B, C, H, W)`` -> ``(B, C, H // k, W // k)``.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.block_max_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class UniformMaskDropout(nn.Dropout):
    """``nn.Dropout`` whose keep mask is drawn as ``uniform >= p``: the same law, a vendor-neutral cost.

    Every number is kept with probability ``1 - p`` (up to the ``2^-24``
    resolution of a float32 uniform) and scaled by ``1 / (1 - p)``,
    independently, as by ``nn.Dropout``; identity in eval mode. The uniforms
    come from the kernels of the CEMNets' noise (the native kernels on the
    CPU where they are used, else PyTorch's generator), chosen when the layer
    is built or moved; the draws differ from ``nn.Dropout``'s.

    Shape:
        any; the output has the input's shape.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        self.kernels = kernels_for(torch.empty(0).device)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self.kernels = kernels_for(fn(torch.empty(0)).device)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:  # F.dropout's result, without dividing by zero
            return x.mul_(0.0) if self.inplace else x * 0.0
        factor = self.kernels.keep_mask(x, self.p)  # 0 or 1 / (1 - p): one product forward and one backward
        return x.mul_(factor) if self.inplace else x * factor


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model options, fairness options)`` of a twin's ``-O``/``-T`` overrides."""
    fairness = {key: value for key, value in options.items() if key in FAIRNESS_OPTIONS}
    return {key: value for key, value in options.items() if key not in FAIRNESS_OPTIONS}, fairness


def make_fair(model: nn.Module, block_pool: bool = False, dropout_mask: str = "bernoulli") -> nn.Module:
    """Swap ``model``'s max pools and dropouts in place, as the options ask (module docstring); returns it."""
    if dropout_mask not in DROPOUT_MASKS:
        raise ValueError(f"dropout_mask must be one of {list(DROPOUT_MASKS)}, got {dropout_mask!r}")
    for name, module in list(model.named_modules()):
        replacement = None
        if block_pool and isinstance(module, nn.MaxPool2d) and module.kernel_size in (2, (2, 2)) and module.stride in (
                2, (2, 2)):
            replacement = BlockMaxPool2d(2)
        elif dropout_mask == "uniform" and type(module) is nn.Dropout:
            replacement = UniformMaskDropout(module.p)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, replacement)
    return model
