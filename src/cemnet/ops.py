"""Analytic operation counts per image, with the conventions of the paper's Tables 1 and 2.

The paper counts "operations" without defining them. The conventions below are
the ones under which its CNN figures come out exactly and its CEMNet figures
within a few percent; ``docs/ops.md`` shows the comparison.

CNNs (multiply-accumulates)
    ``Conv2d``: ``H_out * W_out * C_in * C_out * K^2``; ``Linear``: ``in * out``.
    Batch norm, activations, dropout and pooling are not counted: with them the
    paper's CNN figures no longer fit. ``vgg-small`` gives 68,097,024 (the
    paper's 68.10M) exactly. The paper's ``vgg-large`` figure, 275.45M, is the
    convolutions alone (275,447,808); with the FC layers it is 275,715,072. Its
    LeNet-5 figure, 692,160, is everything but the final 84 -> 10 layer (693,000
    with it).

CEMNets (real multiplications, the paper's Sec. 3.2 unit)
    * element-wise multiplication layer: 4 per complex multiply-accumulate,
      ``4 * H * W * C_in * C_out``;
    * FFT or inverse FFT of an ``H x W`` map: ``(N / 2) * log2(N)`` with
      ``N = H * W``, the complex butterflies of a radix-2 FFT, one operation
      each. This is the cost model that fits the paper; a strict count of real
      multiplications would be 4x that (2x using the real-input symmetry);
    * max pooling: the inverse FFT at the input size and the FFT at the output
      size (comparisons are free, and so is a Leaky ReLU inside the round trip);
    * a Leaky ReLU through the spatial domain (``nonlinearity="every-layer"``):
      an inverse and a forward FFT per channel; the split Leaky ReLU is free;
    * frequency batch norm: 2 per complex element (one folded scale per part);
    * approximated dropout and Leaky ReLU: 0, since forward figures are for
      inference, where they are the identity;
    * the two-branch head: the multiply-accumulates of its FC layers (both
      branches and the classifier), batch norm in it not counted, as for CNNs.

Backward rule
    The paper gives backward = forward for its CNNs: one gradient product per
    layer. cemnet applies the same rule to every layer and adds what only
    frequency training has: for the layers under Weight Fixation, the
    frequency-weight gradient of Eq. 5 (``4 * H * W * C_in * C_out``) and the
    fixation transforms themselves (an inverse and a forward FFT per kernel,
    once per step, i.e. divided by the batch size; twice for
    ``weight_fixation="gradient"``, which projects the gradient too). The rule is inferred, not
    published: it is the simplest we found that lands within 5 % of all three
    of the paper's CEMNet backward figures. A full autograd count (input *and*
    weight gradients of every layer) is about twice the forward; see
    ``rule="autograd"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from cemnet.nn import (
    GroupedLinear,
    SpatialLeakyReLU,
    SpectralBatchNorm2d,
    SpectralConv2d,
    SpectralMaxPool2d,
    ToFrequency,
)

RULES = ("paper", "autograd")


def fft_ops(height: int, width: int) -> int:
    """Operations of one 2-D FFT of an ``H x W`` map: ``(N / 2) log2 N`` butterflies."""
    points = height * width
    return round(points / 2 * math.log2(points)) if points > 1 else 0


@dataclass
class LayerOps:
    """One row of the breakdown: a layer, its output shape and its per-image counts."""

    name: str
    kind: str
    output: tuple[int, ...]
    forward: int
    backward: int


@dataclass
class OpCount:
    """Per-image totals and the per-layer breakdown of :func:`count_ops`."""

    rows: list[LayerOps] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)  # layer types the conventions count as 0

    @property
    def forward(self) -> int:
        return sum(row.forward for row in self.rows)

    @property
    def backward(self) -> int:
        return sum(row.backward for row in self.rows)

    def table(self) -> str:
        """A plain-text table of the breakdown with totals."""
        lines = [f"{'layer':<28} {'type':<20} {'output':<18} {'forward':>14} {'backward':>14}"]
        for row in self.rows:
            shape = "x".join(map(str, row.output))
            lines.append(f"{row.name:<28} {row.kind:<20} {shape:<18} {row.forward:>14,} {row.backward:>14,}")
        lines.append(f"{'total':<68} {self.forward:>14,} {self.backward:>14,}")
        if self.uncounted:
            lines.append(f"not listed, 0 under these conventions: {', '.join(self.uncounted)} (batch norm, "
                         f"activations, dropout and pooling of CNNs are left out as the paper's CNN figures leave "
                         f"them out; the CEMNets' noise layers are the identity at inference; truncation is a copy)")
        return "\n".join(lines)


def _layer_cost(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """Forward operations per image of one layer (0 for what the conventions leave out)."""
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        return output.shape[2] * output.shape[3] * module.in_channels * module.out_channels * k_h * k_w // module.groups
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    if isinstance(module, GroupedLinear):  # the head's two branches: each block its own Linear
        return module.in_features * module.out_features // module.groups
    if isinstance(module, SpectralConv2d):
        height, width = module.input_size
        return 4 * height * width * module.in_channels * module.out_channels
    if isinstance(module, ToFrequency):
        return inputs.shape[1] * fft_ops(*inputs.shape[2:])
    if isinstance(module, SpectralMaxPool2d):  # its Leaky ReLU (nonlinearity="at-pools"), if any, rides on this round trip
        return inputs.shape[1] * (fft_ops(*inputs.shape[2:]) + fft_ops(*output.shape[2:]))
    if isinstance(module, SpatialLeakyReLU):  # the round trip of nonlinearity="every-layer"
        return 2 * inputs.shape[1] * fft_ops(*module.input_size)
    if isinstance(module, SpectralBatchNorm2d):
        return 2 * output[0].numel()
    return 0


def _extra_backward(module: nn.Module, forward: int, rule: str, batch_size: int) -> int:
    """What the backward rule adds to ``forward`` for one layer."""
    has_weights = isinstance(module, (nn.Conv2d, nn.Linear, GroupedLinear, SpectralConv2d))
    if rule == "autograd":
        extra = forward if has_weights else 0  # weight gradient on top of the input gradient
    else:
        extra = forward if isinstance(module, SpectralConv2d) and module.storage == "frequency" else 0
    if isinstance(module, SpectralConv2d) and module.storage == "frequency":
        kernels = module.in_channels * module.out_channels
        # Weight Fixation, once per step; fixation="gradient" projects the gradient as well (twice the transforms).
        projections = 2 if module.fixation == "gradient" else 1
        extra += projections * 2 * kernels * fft_ops(*module.input_size) // batch_size
    return extra


def count_ops(model: nn.Module, image_shape: tuple[int, int, int] | None = None, rule: str = "paper",
              batch_size: int = 100) -> OpCount:
    """Count forward and backward operations per image of ``model``.

    The layers' shapes come from one forward pass of a zero image in eval
    mode, on the model's device. Build the model on the meta device
    (``with torch.device("meta"): model = create_model(name)``) and that pass
    computes shapes only: no arithmetic, no allocation, nothing compiled.

    Args:
        model: a registry model (CNN, CEMNet or FCNN) or any module built from
            ``nn.Conv2d``, ``nn.Linear`` and the :mod:`cemnet.nn` layers.
        image_shape: ``(C, H, W)`` of one image; default from ``model.spec``.
        rule: backward rule, ``"paper"`` or ``"autograd"`` (module docstring).
        batch_size: images per optimizer step, over which Weight Fixation is amortised.

    Returns:
        :class:`OpCount` with integer totals and one row per counted layer.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
    if image_shape is None:
        spec = model.spec
        image_shape = (spec.in_channels, spec.image_size, spec.image_size)
    device = next(model.parameters()).device
    names = {module: name for name, module in model.named_modules()}
    result = OpCount()

    def record(module, args, output):
        forward = _layer_cost(module, args[0], output)
        if forward:
            backward = forward + _extra_backward(module, forward, rule, batch_size)
            result.rows.append(LayerOps(names[module], type(module).__name__, tuple(output.shape[1:]), forward, backward))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    counted = {row.kind for row in result.rows}
    leaves = {type(module).__name__ for module in model.modules() if not list(module.children())}
    # A spectral batch norm is counted as a whole; its two inner BatchNorm2d are not separate layers.
    inner = {"BatchNorm2d"} if any(isinstance(m, SpectralBatchNorm2d) for m in model.modules()) else set()
    result.uncounted = sorted(leaves - counted - inner)
    return result
