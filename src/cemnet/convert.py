"""Run a trained CNN exactly in the frequency domain.

:func:`to_frequency` replaces every stride-1 "same" ``nn.Conv2d`` of a model by
an :class:`~cemnet.nn.FFTConv2d` holding the same kernel: the convolution
becomes an element-wise product of spectra of maps zero-padded to
``H + K - 1``, which gives the linear (zero-padded) convolution rather than the
circular one. Everything else (batch norm, activations, pooling, FC layers)
is kept, so the logits are the CNN's up to floating-point rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cemnet.nn import FFTConv2d


def _conv_input_sizes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sizes


def to_frequency(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose convolutions run as products of spectra.

    Args:
        model: a CNN with stride-1, zero-padded "same" convolutions (every
            registry CNN).
        example: one input batch to find each convolution's input size;
            default ``model.spec``'s image shape.

    Returns:
        a new module, same parameters (copied), same logits.
    """
    if example is None:
        spec = model.spec
        example = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size,
                              dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
    sizes = _conv_input_sizes(model, example)
    if not sizes:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d to convert")
    converted = copy.deepcopy(model)
    for name, size in sizes.items():
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name)
        setattr(parent, child, FFTConv2d.from_conv2d(getattr(parent, child), size))
    return converted
