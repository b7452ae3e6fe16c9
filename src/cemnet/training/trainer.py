"""``cemnet train``: a model preset trained with the paper's recipe (Sec. 4.2-4.3), top to bottom.

Order of a run: process (device, kernels, torchrun) -> data -> model and
training step -> resume -> epochs (steps, then batch-norm recalibration,
evaluation, checkpoints, a metrics row) -> summary.

With ``torchrun`` the run is data-parallel (DDP): the global batch is split
over the ranks, metrics are summed over them, and only rank 0 writes.
"""

from __future__ import annotations

import csv
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cemnet import runtime
from cemnet.data import iterate_batches, load_dataset, normalize
from cemnet.models import count_parameters, create_model
from cemnet.training import checkpoint as ckpt
from cemnet.training.config import TrainConfig
from cemnet.training.distributed import World, init_distributed
from cemnet.training.evaluation import evaluate, recalibrate_batch_norm
from cemnet.training.step import TrainingStep

METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds",
                   "images_per_second"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


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
    with runtime.using_kernels(config.kernels):
        device, world = init_distributed(runtime.resolve_device(config.device))
        kernels = runtime.kernels_in_use(device)
        train_x, train_y = _load_split(config, "train", config.limit_train, device)
        test_x, test_y = _load_split(config, "test", config.limit_test, device)
        run = _Run(config, device, world, kernels, len(train_y), resume)
        run.announce(len(train_y), len(test_y))
        with _interrupt_requested() as interrupt:
            for epoch in range(run.start_epoch, run.last_epoch):
                seconds = run.train_epoch(epoch, train_x, train_y, interrupt)
                run.end_epoch(epoch, seconds, train_x, test_x, test_y)
        run.close()
        return run.summary


class _Run:
    """The state of one training run: model, step, position, logs, and how each epoch goes."""

    def __init__(self, config: TrainConfig, device: torch.device, world: World, kernels: str, train_size: int,
                 resume: bool) -> None:
        self.config, self.device, self.world, self.kernels = config, device, world, kernels
        if config.batch_size % world.size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.size} processes")
        self.local_batch = config.batch_size // world.size
        self.out = Path(config.out)
        shard = -(-train_size // world.size)  # samples per rank, padded as iterate_batches does
        self.steps_per_epoch = -(-shard // self.local_batch)
        recipe = config.recipe()
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = create_model(config.model, **config.model_options).to(device)
        torch.manual_seed(config.seed + world.rank)  # noise and dropout draws differ per rank, as the data do
        network = nn.parallel.DistributedDataParallel(self.model) if world.size > 1 else None
        self.step = TrainingStep(self.model, recipe, config.epochs * self.steps_per_epoch,
                                 round(recipe.warmup_epochs * self.steps_per_epoch), network=network)
        self.start_epoch, self.start_step, self.best_accuracy = 0, 0, -1.0
        self.partial = [0.0, 0.0, 0.0, 0.0]  # loss sum, correct, seen, seconds of an interrupted epoch
        if resume:
            self._resume()
        stop = config.epochs if config.stop_after is None else self.start_epoch + config.stop_after
        self.last_epoch = min(config.epochs, stop)
        self.summary: dict[str, Any] = {"out": str(self.out), "epochs_run": self.start_epoch, "model": self.model}
        self.writer = None

    def _resume(self) -> None:
        last = self.out / "last.safetensors"
        if not last.is_file():
            if self.world.main:
                print(f"nothing to resume in {self.out}: starting from scratch")
            return
        header = ckpt.load_weights(last, self.model)
        state = ckpt.load_state(last)
        self.step.load_state_dict(state)
        _set_rng_state(state["rng"][min(self.world.rank, len(state["rng"]) - 1)], self.device)
        self.start_epoch, self.start_step, self.best_accuracy = state["epoch"], state["step"], state["best_accuracy"]
        self.partial = state["partial"]
        trained_with = header["meta"].get("kernels")
        if trained_with is not None and trained_with != self.kernels and self.world.main:
            print(f"note: {self.out} was trained with the {trained_with} kernels and resumes with the {self.kernels} "
                  f"kernels: its noise draws now differ from an uninterrupted run's")

    def announce(self, train_size: int, test_size: int) -> None:
        if not self.world.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        config = self.config
        print(f"{config.model}: {count_parameters(self.model):,} parameters on {self.device}, {self.world.size} "
              f"process(es), {self.kernels} kernels; {config.dataset}: {train_size:,} train / {test_size:,} test "
              f"images; preset {config.preset}, {config.epochs} epochs of {self.steps_per_epoch} steps, batch "
              f"{config.batch_size}", flush=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        except ImportError:  # TensorBoard is optional; metrics.csv is always written
            pass

    def train_epoch(self, epoch: int, train_x: torch.Tensor, train_y: torch.Tensor, interrupt: dict) -> float:
        """One epoch's steps (from the saved position after a resume); returns its training seconds."""
        config, world = self.config, self.world
        self.step.network.train()
        order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # same shards after a resume
        batches = iterate_batches(len(train_y), self.local_batch, True, order, world.rank, world.size)
        skip, partial = (self.start_step, self.partial) if epoch == self.start_epoch else (0, [0.0] * 4)
        totals = torch.tensor(partial[:3], dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        started = time.perf_counter() - partial[3]
        show = world.main and config.progress
        bar = tqdm(batches[skip:], desc=f"epoch {epoch + 1}/{config.epochs}", initial=skip, total=len(batches),
                   leave=False, disable=None if show else True)  # None: tqdm draws only on a terminal
        for step, index in enumerate(bar, start=skip):
            index = index.to(self.device)
            x, y = train_x[index], train_y[index]
            loss, logits = self.step(x, y)
            totals[0] += loss.detach().double() * len(y)
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
            loss_sum, correct, seen = totals.tolist()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopping. The last good "
                    f"checkpoint in {self.out} is unchanged; try a lower --lr or the authors-code preset (warm-up "
                    f"and gradient clipping).")
            if show:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                img_s=f"{seen * world.size / (time.perf_counter() - started):.0f}")
            if interrupt["stop"]:
                self._save("last", epoch, step + 1, {}, [loss_sum, correct, seen, time.perf_counter() - started])
                if world.main:
                    print(f"\ninterrupted: saved {self.out / 'last.safetensors'}; continue with --resume")
                raise KeyboardInterrupt
        bar.close()
        self.totals = totals.tolist()
        return time.perf_counter() - started

    def end_epoch(self, epoch: int, seconds: float, train_x: torch.Tensor, test_x: torch.Tensor,
                  test_y: torch.Tensor) -> None:
        """Batch-norm recalibration, evaluation, checkpoints and the metrics row of a finished epoch."""
        world = self.world
        world.sync_buffers(self.model)
        recalibrate_batch_norm(self.model, train_x[: self.config.bn_recalibration])  # same images on every rank
        loss_sum, correct, seen = world.sum(self.totals, self.device)
        test = evaluate(self.model, test_x, test_y, world=world)
        row = {
            "epoch": epoch + 1, "lr": self.step.lr, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "test_loss": test["loss"], "test_accuracy": test["accuracy"], "epoch_seconds": seconds,
            "images_per_second": seen / seconds,
        }
        if test["accuracy"] > self.best_accuracy:
            self.best_accuracy = test["accuracy"]
            self._save("best", epoch + 1, 0, row, [0.0] * 4)
        self._save("last", epoch + 1, 0, row, [0.0] * 4)
        if world.main:
            self._log(row)
        self.summary = {**row, "best_test_accuracy": self.best_accuracy, "out": str(self.out),
                        "epochs_run": epoch + 1, "model": self.model}

    def _log(self, row: dict[str, Any]) -> None:
        metrics_file = self.out / "metrics.csv"
        new_file = not metrics_file.exists() or row["epoch"] == 1
        with metrics_file.open("w" if new_file else "a", newline="") as handle:
            table = csv.DictWriter(handle, METRICS_COLUMNS)
            if new_file:
                table.writeheader()
            table.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                self.writer.add_scalar(key, value, row["epoch"])
        print(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_accuracy']:.4f}  test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.4f}  "
              f"{row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s", flush=True)

    def _save(self, name: str, epoch: int, step: int, metrics: dict[str, Any], partial: list[float]) -> None:
        rng_states = self.world.gather(_rng_state(self.device))  # every rank's noise stream, for an exact resume
        if not self.world.main:
            return
        config = self.config
        meta = {"model": config.model, "model_options": config.model_options, "dataset": config.dataset,
                "epoch": epoch, "step": step, "metrics": metrics, "kernels": self.kernels, "config": asdict(config)}
        state = {**self.step.state_dict(), "rng": rng_states, "epoch": epoch, "step": step,
                 "best_accuracy": self.best_accuracy, "partial": partial}
        ckpt.save_checkpoint(self.out, name, self.model, meta, state)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


def _load_split(config: TrainConfig, split: str, limit: int | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A split, normalised, on the device: the data sets are small enough to live there (no loader, no copies)."""
    images, labels = load_dataset(config.dataset, split, config.data_dir, download=config.download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return normalize(images, config.dataset).to(device), labels.to(device)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
