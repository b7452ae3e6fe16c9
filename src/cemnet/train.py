"""Training and evaluation with the paper's recipe (Sec. 4.2-4.3).

Reads top to bottom: configuration -> recipe (optimizer, schedule) ->
distributed setup -> data -> model -> resume -> loop -> checkpoints.

Recipes (``--preset``):

* ``paper``: RMSProp, lr 0.004 with cosine decay per step to 1e-7, batch 100,
  no augmentation. The paper trains in TensorFlow 2.5 and does not give
  RMSProp's other constants, so the Keras defaults are used: rho 0.9,
  eps 1e-7, no momentum. (Keras adds eps inside the square root, PyTorch
  outside; with eps 1e-7 the difference only matters for gradients ~1e-4.)
* ``authors-code``: the authors' public code: rho 0.9, momentum 0.9, eps 1e-7,
  one epoch of linear warm-up, gradient-norm clipping at 15, and Weight
  Fixation keeping a real kernel.

Weight Fixation runs after every optimizer step for ``storage="frequency"``
layers. With ``torchrun`` the run is data-parallel (DDP): the global batch is
split over the ranks, metrics are summed over them, and only rank 0 writes.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cemnet import checkpoint as ckpt
from cemnet.data import iterate_batches, load_dataset, normalize
from cemnet.models import count_parameters, create_model, model_info
from cemnet.nn import apply_weight_fixation

# ---------------------------------------------------------------------------- configuration


@dataclass
class Recipe:
    """Optimizer and schedule constants of a preset."""

    lr: float = 0.004
    min_lr: float = 1e-7
    rho: float = 0.9
    eps: float = 1e-7
    momentum: float = 0.0
    warmup_epochs: float = 0.0
    clip_norm: float | None = None
    real_kernel: bool = False


PRESETS = {
    "paper": Recipe(),
    "authors-code": Recipe(momentum=0.9, warmup_epochs=1.0, clip_norm=15.0, real_kernel=True),
}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint.

    ``lr`` and ``warmup_epochs`` left at ``None`` take the preset's values.
    ``limit_train``/``limit_test`` keep the first N samples (quick runs, tests).
    ``bn_recalibration`` re-estimates the batch-norm statistics on that many
    training images (in eval mode) before each evaluation; 0 keeps the running
    averages. See :func:`recalibrate_batch_norm` for why.
    ``stop_after`` ends this invocation after that many epochs (a time slice
    on a pre-emptible machine); ``--resume`` continues where it stopped.
    ``model_options`` are overrides for :func:`cemnet.models.create_model`.
    """

    model: str = "cemnet-mnist"
    dataset: str | None = None
    epochs: int = 5
    batch_size: int = 100
    preset: str = "paper"
    lr: float | None = None
    warmup_epochs: float | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    out: str | None = None
    download: bool = True
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True
    stop_after: int | None = None
    bn_recalibration: int = 5000
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        self.dataset = self.dataset or model_info(self.model).dataset
        self.out = self.out or str(Path("runs") / self.model)

    def recipe(self) -> Recipe:
        recipe = PRESETS[self.preset]
        overrides = {"lr": self.lr, "warmup_epochs": self.warmup_epochs}
        return Recipe(**{**asdict(recipe), **{k: v for k, v in overrides.items() if v is not None}})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available")
    return device


# ---------------------------------------------------------------------------- recipe


def make_optimizer(model: nn.Module, recipe: Recipe, capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's RMSProp; ``capturable`` keeps its step count on the device, for CUDA graphs."""
    return torch.optim.RMSprop(
        model.parameters(), lr=recipe.lr, alpha=recipe.rho, eps=recipe.eps, momentum=recipe.momentum,
        capturable=capturable,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0, then cosine decay from ``lr`` to ``min_lr``, per step."""
    floor = recipe.min_lr / recipe.lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------- distributed


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over the ranks (identity without DDP)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's batch-norm statistics (DDP syncs them only before a forward)."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)


def init_distributed(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> None:
    """Replace every batch norm's running statistics by their average over ``images`` in eval mode.

    The paper puts dropout (p = 0.5) before the next layer's batch norm. In
    training that batch norm sees dropout-scaled activations, at evaluation it
    does not, so its running variance is wrong at test time ("variance shift",
    Li et al., CVPR 2019): after 5 epochs lenet5 scored 85.5 % on the MNIST test
    set with the running averages and 99.0 % once they were recomputed. Recomputing
    the statistics with dropout and noise off removes the shift. It does not
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


# ---------------------------------------------------------------------------- the run


@contextmanager
def _interrupt_requested():
    """Turn the first Ctrl-C into a flag, so the loop can stop at a step boundary and save."""
    flag = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag["stop"]:  # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        pass
    try:
        yield flag
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, previous)


def _load_split(config: TrainConfig, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_dataset(config.dataset, split, config.data_dir, download=config.download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return normalize(images, config.dataset), labels


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``config.model``; returns the last epoch's metrics, the run folder and the model.

    Writes to ``config.out``: ``metrics.csv`` (one row per epoch), ``last`` and
    ``best`` checkpoints (best by test accuracy: the paper has no validation
    split), and TensorBoard events when ``tensorboard`` is installed.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        cemnet.data.DataError: the data set is missing or corrupt.
        KeyboardInterrupt: after Ctrl-C, once ``last`` has been saved.
    """
    # Setup --------------------------------------------------------------------
    device = resolve_device(config.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One GPU per process: NCCL refuses two ranks on one device.
        local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"process {local_rank} on this machine has no CUDA device of its own ({count} found): "
                             f"start at most {count} per machine (torchrun --nproc-per-node) or use --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    world = init_distributed(device)
    if config.batch_size % world.size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.size} processes")
    local_batch = config.batch_size // world.size
    out = Path(config.out)
    recipe = config.recipe()

    # Data ----------------------------------------------------------------------
    # The data sets are small enough to live on the device: no loader workers, no per-step copies.
    train_x, train_y = (t.to(device) for t in _load_split(config, "train", config.limit_train))
    test_x, test_y = (t.to(device) for t in _load_split(config, "test", config.limit_test))
    shard = -(-len(train_y) // world.size)  # samples per rank, padded as iterate_batches does
    steps_per_epoch = -(-shard // local_batch)

    # Model and optimizer --------------------------------------------------------
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = create_model(config.model, **config.model_options).to(device)
    torch.manual_seed(config.seed + world.rank)  # noise and dropout draws differ per rank, as the data do
    optimizer = make_optimizer(model, recipe)
    schedule = make_schedule(
        optimizer, recipe, config.epochs * steps_per_epoch, round(recipe.warmup_epochs * steps_per_epoch)
    )
    start_epoch, start_step, best_accuracy = 0, 0, -1.0
    partial = [0.0, 0.0, 0.0, 0.0]  # loss sum, correct, seen, seconds of an interrupted epoch
    if resume and (out / "last.safetensors").is_file():
        ckpt.load_weights(out / "last.safetensors", model)
        state = ckpt.load_state(out / "last.safetensors")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"][min(world.rank, len(state["rng"]) - 1)], device)
        start_epoch, start_step, best_accuracy = state["epoch"], state["step"], state["best_accuracy"]
        partial = state["partial"]
    elif resume and world.main:
        print(f"nothing to resume in {out}: starting from scratch")
    network = nn.parallel.DistributedDataParallel(model) if world.size > 1 else model

    def save(name: str, epoch: int, step: int, metrics: dict[str, Any], partial: list[float]) -> None:
        rng_states = [_rng_state(device)]
        if world.size > 1:  # every rank's noise stream is needed for an exact resume
            rng_states = [None] * world.size
            dist.all_gather_object(rng_states, _rng_state(device))
            rng_states = [{k: v.cpu() for k, v in s.items()} for s in rng_states]
        if not world.main:
            return
        meta = {"model": config.model, "model_options": config.model_options, "dataset": config.dataset,
                "epoch": epoch, "step": step, "metrics": metrics, "config": asdict(config)}
        state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": rng_states,
                 "epoch": epoch, "step": step, "best_accuracy": best_accuracy, "partial": partial}
        ckpt.save_checkpoint(out, name, model, meta, state)

    # Logging ------------------------------------------------------------------------
    writer = None
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        print(
            f"{config.model}: {count_parameters(model):,} parameters on {device}, {world.size} process(es); "
            f"{config.dataset}: {len(train_y):,} train / {len(test_y):,} test images; "
            f"preset {config.preset}, {config.epochs} epochs of {steps_per_epoch} steps, batch {config.batch_size}"
        )
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # TensorBoard is optional; metrics.csv is always written
            pass
    metrics_file = out / "metrics.csv"
    columns = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds",
               "images_per_second"]

    # Train --------------------------------------------------------------------------
    summary: dict[str, Any] = {"out": str(out), "epochs_run": start_epoch, "model": model}
    with _interrupt_requested() as interrupt:
        last_epoch = config.epochs if config.stop_after is None else min(config.epochs, start_epoch + config.stop_after)
        for epoch in range(start_epoch, last_epoch):
            network.train()
            order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # same shards after a resume
            batches = iterate_batches(len(train_y), local_batch, True, order, world.rank, world.size)
            skip, (loss_sum, correct, seen, before) = (start_step, partial) if epoch == start_epoch else (0, [0.0] * 4)
            started = time.perf_counter() - before
            bar = tqdm(batches[skip:], desc=f"epoch {epoch + 1}/{config.epochs}", initial=skip,
                       total=len(batches), leave=False,
                       # None: tqdm draws only on a terminal, so logs get the per-epoch lines alone
                       disable=None if world.main and config.progress else True)
            for step, index in enumerate(bar, start=skip):
                index = index.to(device)
                x, y = train_x[index], train_y[index]
                logits = network(x)
                loss = F.cross_entropy(logits, y)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopping. The last "
                        f"good checkpoint in {out} is unchanged; try a lower --lr or the authors-code preset "
                        f"(warm-up and gradient clipping)."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.clip_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
                optimizer.step()
                schedule.step()
                apply_weight_fixation(model, recipe.real_kernel)

                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                if world.main and config.progress:
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                    img_s=f"{seen * world.size / elapsed:.0f}")
                if interrupt["stop"]:
                    save("last", epoch, step + 1, {}, [loss_sum, correct, seen, time.perf_counter() - started])
                    if world.main:
                        print(f"\ninterrupted: saved {out / 'last.safetensors'}; continue with --resume")
                    raise KeyboardInterrupt
            bar.close()

            seconds = time.perf_counter() - started
            world.sync_buffers(model)
            recalibrate_batch_norm(model, train_x[: config.bn_recalibration])  # same images on every rank
            loss_sum, correct, seen = world.sum([loss_sum, correct, seen], device)
            test = evaluate(model, test_x, test_y, world=world)
            row = {
                "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "test_loss": test["loss"], "test_accuracy": test["accuracy"],
                "epoch_seconds": seconds, "images_per_second": seen / seconds,
            }
            if test["accuracy"] > best_accuracy:
                best_accuracy = test["accuracy"]
                save("best", epoch + 1, 0, row, [0.0] * 4)
            save("last", epoch + 1, 0, row, [0.0] * 4)
            if world.main:
                new_file = not metrics_file.exists() or epoch == 0
                with metrics_file.open("w" if new_file else "a", newline="") as handle:
                    table = csv.DictWriter(handle, columns)
                    if new_file:
                        table.writeheader()
                    table.writerow(row)
                if writer is not None:
                    for key, value in row.items():
                        writer.add_scalar(key, value, epoch + 1)
                print(
                    f"epoch {epoch + 1:>3}/{config.epochs}  train loss {row['train_loss']:.4f} "
                    f"acc {row['train_accuracy']:.4f}  test loss {row['test_loss']:.4f} "
                    f"acc {row['test_accuracy']:.4f}  {seconds:.1f}s  {row['images_per_second']:.0f} img/s",
                    flush=True,
                )
            summary = {**row, "best_test_accuracy": best_accuracy, "out": str(out), "epochs_run": epoch + 1,
                       "model": model}
    if writer is not None:
        writer.close()
    return summary
