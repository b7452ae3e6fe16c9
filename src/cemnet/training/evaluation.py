"""Evaluation: accuracy and loss on a test set, and batch-norm statistics re-estimated before it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cemnet.data import iterate_batches
from cemnet.training.distributed import World


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> None:
    """Replace every batch norm's running statistics by their average over ``images`` in eval mode.

    The paper puts dropout (p = 0.5) before the next layer's batch norm. In
    training that batch norm sees dropout-scaled activations, at evaluation it
    does not, so its running variance is wrong at test time ("variance shift",
    Li et al., CVPR 2019; docs/results.md measures what it costs lenet5).
    Recomputing the statistics with dropout and noise off removes the shift. It does not
    touch the training trajectory (training uses batch statistics), so it is
    applied to CNNs and CEMNets alike.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    saved_momentum = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
        bn.train()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size].to(device))
    for bn, momentum in zip(norms, saved_momentum):
        bn.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
    world: World | None = None, num_classes: int = 10,
) -> dict[str, Any]:
    """Loss, accuracy and per-class accuracy of ``model`` on normalised images (eval mode)."""
    world = world or World()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, torch.zeros(num_classes, dtype=torch.float64)
    seen = torch.zeros(num_classes, dtype=torch.float64)
    for index in iterate_batches(len(labels), batch_size, False, rank=world.rank, world_size=world.size,
                                 even_shards=False):
        index = index.to(images.device)
        x, y = images[index].to(device), labels[index].to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hits = (logits.argmax(1) == y).double().cpu()
        correct.index_add_(0, y.cpu(), hits)
        seen.index_add_(0, y.cpu(), torch.ones_like(hits))
    totals = world.sum([loss_sum, *correct.tolist(), *seen.tolist()], device)
    loss_sum, correct, seen = totals[0], totals[1 : 1 + num_classes], totals[1 + num_classes :]
    model.train(was_training)
    count = sum(seen)
    return {
        "loss": loss_sum / count,
        "accuracy": sum(correct) / count,
        "per_class": [c / s if s else float("nan") for c, s in zip(correct, seen)],
        "count": int(count),
    }
