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


class KerasRMSprop(torch.optim.Optimizer):
    r"""RMSprop with momentum as TensorFlow's Keras computes it (``ApplyRMSProp``).

    .. math::
        s \leftarrow \rho s + (1 - \rho) g^2, \qquad
        m \leftarrow \mu m + \eta \, g / \sqrt{s + \epsilon}, \qquad
        w \leftarrow w - m

    PyTorch's RMSprop instead adds ``eps`` outside the square root and
    multiplies the whole buffer by the current learning rate
    (``m <- mu m + g / (sqrt(s) + eps)``, ``w <- w - lr m``): with a
    schedule, Keras's buffer keeps each step's own learning rate, and with
    ``eps = 1e-7`` a weight whose mean square is near ``1e-7`` moves about
    twice as far under PyTorch's. The authors' code trains with Keras's.
    """

    def __init__(self, params, lr: float, rho: float = 0.9, momentum: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["square_avg"] = torch.zeros_like(param)
                    state["momentum_buffer"] = torch.zeros_like(param)
                square_avg, buffer = state["square_avg"], state["momentum_buffer"]
                square_avg.mul_(group["rho"]).addcmul_(param.grad, param.grad, value=1 - group["rho"])
                buffer.mul_(group["momentum"]).addcdiv_(param.grad, square_avg.add(group["eps"]).sqrt_(),
                                                        value=group["lr"])
                param.sub_(buffer)


def make_optimizer(model: nn.Module, recipe: Recipe, capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's RMSProp; ``capturable`` keeps PyTorch's step count on the device, for CUDA graphs."""
    if recipe.keras_momentum:
        return KerasRMSprop(model.parameters(), lr=recipe.lr, rho=recipe.rho, momentum=recipe.momentum,
                            eps=recipe.eps)
    return torch.optim.RMSprop(model.parameters(), lr=recipe.lr, alpha=recipe.rho, eps=recipe.eps,
                               momentum=recipe.momentum, capturable=capturable)


def clip_gradients(model: nn.Module, recipe: Recipe) -> None:
    """The recipe's clipping: the global norm of all gradients, or each gradient tensor's own (Keras's ``clipnorm``)."""
    if recipe.clip_norm is None:
        return
    if recipe.clip_per_tensor:
        for param in model.parameters():
            if param.grad is not None:
                nn.utils.clip_grad_norm_([param], recipe.clip_norm)
    else:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)


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


class DeviceSchedule:
    """:func:`lr_factor` per step with the learning rate a tensor on the device, for steps recorded as CUDA graphs.

    The whole schedule is a table computed once (the same Python arithmetic as
    :func:`make_schedule`); the optimizer's learning rate is a tensor that
    :meth:`step` overwrites from the table at a step counter on the device,
    so a replayed graph moves along the schedule without the host. Its state
    is saved in ``LambdaLR``'s keys, so either kind of schedule resumes the other's run.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int, warmup_steps: int,
                 device: torch.device) -> None:
        rates = [recipe.lr * lr_factor(step, recipe, total_steps, warmup_steps) for step in range(total_steps + 1)]
        self.base_lr = recipe.lr
        self.table = torch.tensor(rates, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.lr = torch.tensor(rates[0], dtype=torch.float32, device=device)
        self.optimizer = optimizer
        self.attach()

    def attach(self) -> None:
        """Make the optimizer read this schedule's learning-rate tensor (again, after it loaded a state)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        self.count += 1
        self.lr.copy_(self.table[self.count.clamp(max=len(self.table) - 1)])

    def state_dict(self) -> dict[str, Any]:
        step = int(self.count)
        return {"last_epoch": step, "_step_count": step + 1, "base_lrs": [self.base_lr],
                "_last_lr": [float(self.table[min(step, len(self.table) - 1)])], "lr_lambdas": [None]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count.fill_(state["last_epoch"])
        self.lr.copy_(self.table[self.count.clamp(max=len(self.table) - 1)])
        self.attach()


class TrainingStep:
    """A model, its optimizer and schedule, and the step that trains it on one batch.

    Args:
        model: the model (the module whose weights are saved and fixed).
        recipe: optimizer and schedule constants.
        total_steps: steps of the whole run (the schedule's length).
        warmup_steps: steps of linear warm-up.
        network: what the forward runs, when it is not ``model`` itself (a DDP wrapper).
        capturable: keep the optimizer's state and the schedule on the device
            (:class:`DeviceSchedule`), so that the step can be recorded as a CUDA graph.

    Calling it on ``(x, y)`` runs the forward on ``network``, the cross-entropy
    loss, the backward, gradient clipping (when the recipe clips), the
    optimizer and schedule steps and Weight Fixation of every
    ``storage="frequency"`` layer, and returns the loss and the logits
    without reading them (no host synchronisation).
    """

    def __init__(self, model: nn.Module, recipe: Recipe, total_steps: int, warmup_steps: int = 0, *,
                 network: nn.Module | None = None, capturable: bool = False) -> None:
        self.model, self.network, self.recipe = model, network or model, recipe
        device = next(model.parameters()).device
        self.optimizer = make_optimizer(model, recipe, capturable and device.type == "cuda")
        if capturable:
            self.schedule = DeviceSchedule(self.optimizer, recipe, total_steps, warmup_steps, device)
        else:
            self.schedule = make_schedule(self.optimizer, recipe, total_steps, warmup_steps)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(self.model, self.recipe)
        self.optimizer.step()
        self.schedule.step()
        apply_weight_fixation(self.model, self.recipe.real_kernel)
        return loss, logits

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a plain number, whichever schedule kept it
            group["lr"] = float(group["lr"])
        return {"optimizer": optimizer, "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
