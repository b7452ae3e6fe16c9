"""One training step of a recipe, the only definition of it: forward, loss, backward, clipping, optimizer,
schedule, Weight Fixation. ``cemnet train`` runs it and ``cemnet bench`` times it."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cemnet.nn import apply_weight_fixation
from cemnet.training.config import Recipe


def make_optimizer(model: nn.Module, recipe: Recipe, capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's RMSProp; ``capturable`` keeps its step count on the device, for CUDA graphs."""
    return torch.optim.RMSprop(model.parameters(), lr=recipe.lr, alpha=recipe.rho, eps=recipe.eps,
                               momentum=recipe.momentum, capturable=capturable)


def lr_factor(step: int, recipe: Recipe, total_steps: int, warmup_steps: int) -> float:
    """The learning rate of ``step`` over the peak: linear warm-up from ~0, then cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    floor = recipe.min_lr / recipe.lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`lr_factor` per step, as a PyTorch scheduler (its state goes into checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe, total_steps, warmup_steps))


class TrainingStep:
    """A model, its optimizer and schedule, and the step that trains it on one batch.

    Args:
        model: the model (the module whose weights are saved and fixed).
        recipe: optimizer and schedule constants.
        total_steps: steps of the whole run (the schedule's length).
        warmup_steps: steps of linear warm-up.
        network: what the forward runs, when it is not ``model`` itself (a DDP wrapper).
        capturable: keep the optimizer's state on the device (CUDA graphs).

    Calling it on ``(x, y)`` runs the forward on ``network``, the cross-entropy
    loss, the backward, gradient clipping (when the recipe clips), the
    optimizer and schedule steps and Weight Fixation of every
    ``storage="frequency"`` layer, and returns the loss and the logits
    without reading them (no host synchronisation).
    """

    def __init__(self, model: nn.Module, recipe: Recipe, total_steps: int, warmup_steps: int = 0, *,
                 network: nn.Module | None = None, capturable: bool = False) -> None:
        self.model, self.network, self.recipe = model, network or model, recipe
        self.optimizer = make_optimizer(model, recipe, capturable)
        self.schedule = make_schedule(self.optimizer, recipe, total_steps, warmup_steps)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_norm)
        self.optimizer.step()
        self.schedule.step()
        apply_weight_fixation(self.model, self.recipe.real_kernel)
        return loss, logits

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
