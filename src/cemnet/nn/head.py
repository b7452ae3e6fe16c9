"""The end of a CEMNet: the two-branch head (paper Sec. 3.2), and the real layers it is built from."""

from __future__ import annotations

import math

import torch
from torch import nn

from cemnet.nn import functional as SF
from cemnet.nn._base import _SpectralModule


class TwoBranchHead(_SpectralModule):
    """The end of CEMNet (paper Sec. 3.2): one real MLP branch per part, concatenated.

    The real and imaginary parts are flattened separately; each goes through
    ``[Linear, BatchNorm1d, LeakyReLU, Dropout] x len(hidden)``; the two results
    are concatenated and a final ``Linear`` gives the logits. The dropout is
    ordinary (Bernoulli) dropout, as the paper describes; the authors' code
    uses Gaussian ``N(1, p/2)`` noise there (docs/deviations.md).

    The two branches run side by side as one grouped MLP
    (:func:`mlp_branch` with ``groups=2``): each of its layers computes both
    branches in one operation (:class:`GroupedLinear`; batch norm and dropout
    are per feature anyway), half the operations and parameter tensors of two
    separate MLPs, with the same numbers.

    Args:
        in_features: ``C * H * F`` of the last spectrum (per part).
        hidden: widths of the hidden layers of each branch, e.g. ``(120, 84)``.
        num_classes: number of logits.
        negative_slope: of the Leaky ReLU. Default: 0.2.
        dropout: rate of the dropout in each branch; 0 disables it. Default: 0.5.
        batch_norm: use ``BatchNorm1d`` in the branches (and no bias in their
            linear layers). Default: ``True``.

    Shape:
        complex ``(B, C, H, F)`` -> real ``(B, num_classes)``.

    Attributes:
        branches: the grouped MLP, ``(B, 2 * in_features)`` -> ``(B, 2 * hidden[-1])``;
            group 0 is the real branch, group 1 the imaginary one.
        classifier: the final ``nn.Linear`` on the concatenated branch outputs
            (PyTorch's default initialisation, as every linear layer here).
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int, negative_slope: float = 0.2,
                 dropout: float = 0.5, batch_norm: bool = True) -> None:
        super().__init__()
        self.in_features, self.hidden, self.num_classes = in_features, tuple(hidden), num_classes
        self.negative_slope, self.dropout, self.batch_norm = negative_slope, dropout, batch_norm
        self.branches = mlp_branch(in_features, hidden, negative_slope, dropout, batch_norm, groups=2)
        self.classifier = nn.Linear(2 * (hidden[-1] if hidden else in_features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x)
        if x[0].numel() != self.in_features:
            raise ValueError(f"TwoBranchHead expected {self.in_features} numbers per part and example, got "
                             f"{x[0].numel()} (input shape {tuple(x.shape)})")
        # (B, C, H, F, 2) -> (B, 2, C H F): every real part, then every imaginary part.
        features = torch.view_as_real(x.resolve_conj()).movedim(-1, 1).reshape(x.shape[0], -1)
        return self.classifier(self.branches(features))


class GroupedLinear(nn.Module):
    """``groups`` independent ``nn.Linear`` layers side by side, as one batched product.

    The input features are ``groups`` consecutive blocks; block ``g`` goes
    through its own ``Linear(in_features // groups, out_features // groups)``
    and the outputs are concatenated in the same order (a block-diagonal
    linear map). The same numbers as the separate layers, in one batched
    product forward and two backward whatever the number of groups
    (:func:`cemnet.nn.functional.grouped_linear`).

    Args:
        in_features, out_features: totals over the groups, both divisible by ``groups``.
        groups: number of blocks.
        bias: learnable bias per output feature. Default: ``True``.

    Shape:
        ``(*, in_features)`` -> ``(*, out_features)``.

    Attributes:
        weight: ``(groups, out_features // groups, in_features // groups)``; each
            block initialised as ``nn.Linear`` initialises its weight.
        bias: ``(groups, out_features // groups)``, or ``None``.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        if groups < 1 or in_features % groups or out_features % groups:
            raise ValueError(f"in_features ({in_features}) and out_features ({out_features}) must be divisible "
                             f"by groups ({groups})")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(groups, out_features // groups, in_features // groups, **factory))
        self.bias = nn.Parameter(torch.empty(groups, out_features // groups, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialisation, block by block (fan-in in_features // groups).
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        for block in self.weight:
            nn.init.kaiming_uniform_(block, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"GroupedLinear expected {self.in_features} input features, got {x.shape[-1]}")
        return SF.grouped_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
                f"bias={self.bias is not None}")


def mlp_branch(in_features: int, hidden: tuple[int, ...], negative_slope: float, dropout: float, batch_norm: bool,
               groups: int = 1, bias: bool | None = None) -> nn.Sequential:
    """``[Linear, BatchNorm1d?, LeakyReLU, Dropout?]`` for each width in ``hidden``.

    Shared by the CEMNet head branches, the CNN twins' classifier and FCNN's
    dense layers. With ``groups > 1``, that many such MLPs side by side on
    consecutive blocks of ``in_features`` features each (:class:`GroupedLinear`,
    and batch norm over all ``groups * width`` features, which is per feature
    as for separate ones): ``(B, groups * in_features)`` -> ``(B, groups * hidden[-1])``.
    The linear layers have biases where there is no batch norm, unless ``bias`` says otherwise.
    """
    bias = not batch_norm if bias is None else bias
    layers: list[nn.Module] = []
    for width in hidden:
        if groups == 1:
            layers.append(nn.Linear(in_features, width, bias=bias))
        else:
            layers.append(GroupedLinear(groups * in_features, groups * width, groups, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm1d(groups * width))
        layers.append(nn.LeakyReLU(negative_slope))
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers)
