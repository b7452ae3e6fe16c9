"""The grouped linear map of :class:`cemnet.nn.GroupedLinear` (the two-branch head's layers)."""

from __future__ import annotations

import torch


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
