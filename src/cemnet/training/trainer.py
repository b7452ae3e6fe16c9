"""Training with the paper's recipe (Sec. 4.2-4.3), top to bottom: :func:`fit` (any model, any data) and :func:`train`.

:func:`train` (``cemnet train``) reads its data set and builds its model from
a :class:`TrainConfig`, then runs :func:`fit`, the one training path; from
Python, :func:`fit` takes your model and your data directly.

Order of a run: process (device, kernels, torchrun) -> run folder (locked)
-> data -> model and training step -> resume -> epochs (steps, then
batch-norm recalibration, evaluation, a metrics row, checkpoints) -> summary.

With ``torchrun`` the run is data-parallel (DDP): the global batch is split
over the ranks, metrics are summed over them, and only rank 0 writes.
Ctrl-C or SIGTERM, on any rank, stops every rank at the same step boundary
and saves ``last``; ``--resume`` continues bit for bit.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cemnet import runtime
from cemnet.data import iterate_batches, open_dataset
from cemnet.models import count_parameters, create_model
from cemnet.training import checkpoint as ckpt
from cemnet.training.config import TrainConfig
from cemnet.training.distributed import World, init_distributed
from cemnet.training.evaluation import evaluate, recalibrate_batch_norm
from cemnet.training.graphs import GraphedStep
from cemnet.training.run_folder import RunFolder
from cemnet.training.step import TrainingStep

# Settings a resumed run may change: where and how it computes, not what it computes.
RESUMABLE_CHANGES = ("device", "kernels", "data_dir", "download", "progress", "stop_after", "out", "cuda_graphs")
STATE_ENTRIES = {"optimizer": dict, "schedule": dict, "rng": list, "epoch": int, "step": int,
                 "best_accuracy": float, "partial": list}  # what a resume reads from a checkpoint's training state
DIVERGED_LOSS_FACTOR = 100  # a mean training loss above 100 x the loss of guessing is divergence, finite or not
READ_EVERY_CUDA = 25  # on a GPU the running metrics (and the interrupt flag of DDP ranks) are read every 25 steps


class TrainingDiverged(RuntimeError):
    """The loss became NaN, infinite or absurdly large; the last good checkpoint is left as it was."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (Ctrl-C: SIGINT, or SIGTERM), after saving ``last`` unless ``problem`` says why not."""

    def __init__(self, signum: int, problem: str | None = None) -> None:
        super().__init__(problem or signal.Signals(signum).name)
        self.signum, self.problem = signum, problem


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config.model`` on ``config.dataset``; returns the last epoch's metrics, the run folder and the model.

    Reads the data set (:func:`cemnet.data.open_dataset`, normalised with
    its statistics, on the device), builds the model (seeded), and runs
    :func:`fit`. Writes to ``config.out`` (:mod:`cemnet.training.run_folder`):
    ``metrics.csv`` (one row per epoch), ``last`` and ``best`` checkpoints
    (best by test accuracy: the paper has no validation split), and
    TensorBoard events when ``tensorboard`` is installed.

    Args:
        config: the run's settings.
        resume: continue the run in ``config.out`` (its settings must be this config's).
        overwrite: delete a run that ``config.out`` already holds, instead of refusing.

    Raises:
        TrainingDiverged: the loss became NaN, infinite or absurdly large.
        cemnet.data.DataError: the data set is missing or corrupt.
        cemnet.training.run_folder.RunFolderError: the run folder is in use, holds another run, or cannot be written.
        ValueError: ``resume`` with settings that differ from the run's.
        Interrupted: after Ctrl-C or SIGTERM, once ``last`` has been saved.
    """
    if config.model is None:
        raise ValueError("train() builds config.model; for a model built in Python, call fit(model, ...)")
    return _fit(None, None, None, config, resume, overwrite)


def fit(model: nn.Module, train_data: Any, test_data: Any, config: TrainConfig | None = None, *,
        resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train any model on any data with cemnet's recipe, run folder, checkpoints, metrics and exact resume.

    The same path as ``cemnet train`` (:func:`train` runs through it): the
    recipe of ``config.preset``, the learning-rate schedule, Weight Fixation
    of frequency layers, batch-norm recalibration and evaluation after each
    epoch, ``metrics.csv``, the ``last`` and ``best`` checkpoints, Ctrl-C
    saving ``last``, ``resume=True`` continuing bit for bit.

    Args:
        model: a CEMNet preset, a :func:`cemnet.from_cnn` twin, a CNN: any
            module from ``(B, C, H, W)`` images to logits.
        train_data, test_data: each a ``torch.utils.data.Dataset`` of
            ``(image, label)`` pairs, a ``DataLoader`` of ``(images, labels)``
            batches, or an ``(images, labels)`` pair of tensors. They are read
            once, in order, into tensors on the device (cemnet's data sets
            are small enough to live there); the batches of each epoch are then
            drawn from ``config.seed``, so a resume sees the same order. Images
            are used as given: normalise them yourself.
        config: the run's settings (``TrainConfig(model=None, out=...)``; its
            ``model`` and ``dataset`` are not read). Default: the paper's
            recipe, 5 epochs, into ``runs/python``.
        resume, overwrite: as for :func:`train`.

    Returns:
        the last epoch's metrics, ``best_test_accuracy``, ``out``, ``epochs_run`` and ``model``.

    Checkpoints of a model built in Python record its class name; rebuild the
    model yourself and load them with :func:`cemnet.training.checkpoint.load_weights`.
    """
    config = config or TrainConfig(model=None)
    return _fit(model, train_data, test_data, config, resume, overwrite)


def _fit(model: nn.Module | None, train_data: Any, test_data: Any, config: TrainConfig, resume: bool,
         overwrite: bool) -> dict[str, Any]:
    """The one training path: ``model`` and the data given (:func:`fit`) or read from ``config`` (:func:`train`)."""
    with runtime.using_kernels(config.kernels):
        device, world = init_distributed(runtime.resolve_device(config.device))
        folder = RunFolder(config.out, resume, overwrite) if world.main else None
        try:
            last = Path(config.out) / "last.safetensors"
            if resume and last.is_file():  # before the data are read: a changed --dataset is a changed setting
                meta = ckpt.read_header(last)["meta"]
                if config.model is not None:
                    ckpt.check_model_description(last, meta)
                _check_same_settings(last, meta.get("config"), config)
            kernels = runtime.kernels_in_use(device)
            extra_meta: dict[str, Any] = {}
            if model is None:  # train(): the configured data set, normalised, and the preset built seeded
                dataset = open_dataset(config.dataset, config.data_dir, config.download, channels=config.channels,
                                       image_size=config.image_size, test_fraction=config.test_fraction)
                train_x, train_y = _on_device_split(dataset, "train", config.limit_train, device)
                test_x, test_y = _on_device_split(dataset, "test", config.limit_test, device)
                extra_meta["normalization"] = {"mean": list(dataset.info.mean), "std": list(dataset.info.std)}
                torch.manual_seed(config.seed)  # identical initial weights on every rank
                model = create_model(config.model, **config.model_options)
            else:
                train_x, train_y = _as_tensors(train_data, config.limit_train, device, "train_data")
                test_x, test_y = _as_tensors(test_data, config.limit_test, device, "test_data")
            run = _Run(config, model.to(device), device, world, kernels, len(train_y), folder, resume, extra_meta,
                       num_classes=int(max(train_y.max(), test_y.max())) + 1)
            run.announce(len(train_y), len(test_y))
            with _signals_requested() as interrupt:
                for epoch in range(run.start_epoch, run.last_epoch):
                    seconds = run.train_epoch(epoch, train_x, train_y, interrupt)
                    run.end_epoch(epoch, seconds, train_x, test_x, test_y)
            run.close()
            return run.summary
        finally:
            if folder is not None:
                folder.close()


class _Run:
    """The state of one training run: model, step, position, logs, and how each epoch goes."""

    def __init__(self, config: TrainConfig, model: nn.Module, device: torch.device, world: World, kernels: str,
                 train_size: int, folder: RunFolder | None, resume: bool, extra_meta: dict[str, Any],
                 num_classes: int) -> None:
        self.config, self.device, self.world, self.kernels, self.folder = config, device, world, kernels, folder
        self.extra_meta = extra_meta
        if config.batch_size % world.size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.size} processes")
        self.local_batch = config.batch_size // world.size
        self.out = Path(config.out)
        shard = -(-train_size // world.size)  # samples per rank, padded as iterate_batches does
        self.steps_per_epoch = -(-shard // self.local_batch)
        recipe = config.recipe()
        self.model = model
        torch.manual_seed(config.seed + world.rank)  # noise and dropout draws differ per rank, as the data do
        network = nn.parallel.DistributedDataParallel(self.model) if world.size > 1 else None
        self.graphs = self._graphs_possible(recipe)
        self.step = TrainingStep(self.model, recipe, config.epochs * self.steps_per_epoch,
                                 round(recipe.warmup_epochs * self.steps_per_epoch), network=network,
                                 capturable=self.graphs)
        self.run_step = None  # the step as it runs: the graphed one is made at the first batch
        # Reading the metrics synchronises with the device: every step on the CPU (free), every few on a GPU.
        self.read_every = 1 if device.type == "cpu" else READ_EVERY_CUDA
        self.start_epoch, self.start_step, self.best_accuracy = 0, 0, -1.0
        self.partial = [0.0, 0.0, 0.0, 0.0]  # this rank's loss sum, correct, seen, seconds of an interrupted epoch
        spec = getattr(model, "spec", None)
        self.diverged_loss = DIVERGED_LOSS_FACTOR * math.log(spec.num_classes if spec is not None else num_classes)
        if resume:
            self._resume()
        stop = config.epochs if config.stop_after is None else self.start_epoch + config.stop_after
        self.last_epoch = min(config.epochs, stop)
        self.summary: dict[str, Any] = {"out": str(self.out), "epochs_run": self.start_epoch, "model": self.model}
        self.writer = None

    def _graphs_possible(self, recipe) -> bool:
        """Whether the step will be a CUDA graph; where they were asked for and cannot be, one line says why."""
        if not (self.config.cuda_graphs and self.device.type == "cuda"):
            return False
        reason = None
        if self.world.size > 1:
            reason = "a step under torchrun runs eager (DDP's gradient hooks are not recorded here)"
        elif recipe.keras_momentum:
            reason = "the authors-code recipe's Keras RMSprop is not capturable"
        if reason and self.world.main:
            print(f"note: CUDA graphs off: {reason}")
        return reason is None

    def _resume(self) -> None:
        last = self.out / "last.safetensors"
        if not last.is_file():
            if self.world.main:
                print(f"nothing to resume in {self.out}: starting from scratch")
            return
        header = ckpt.load_weights(last, self.model)
        state = ckpt.load_state(last, STATE_ENTRIES)
        state_path = ckpt.state_file(last)
        if not (0 <= state["epoch"] <= self.config.epochs and 0 <= state["step"] <= self.steps_per_epoch
                and state["rng"] and state["partial"]):
            raise ckpt.CheckpointError(f"the training state of {last} is at epoch {state['epoch']}, step "
                                       f"{state['step']}, outside this run's {self.config.epochs} epochs of "
                                       f"{self.steps_per_epoch} steps, or has no random or partial state")
        _check_state_structure(state_path, state)
        try:
            self.step.load_state_dict(state)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as error:
            raise ckpt.CheckpointError(f"training state {state_path} does not fit this run's optimizer or schedule "
                                       f"({type(error).__name__}: {str(error)[:200]})") from None
        rank = min(self.world.rank, len(state["rng"]) - 1)
        _set_rng_state(state["rng"][rank], self.device)
        self.start_epoch, self.start_step, self.best_accuracy = state["epoch"], state["step"], state["best_accuracy"]
        partial = state["partial"]  # one list per rank; a single flat list in schema 3
        self.partial = list(partial[rank] if partial and isinstance(partial[0], list) else partial)
        if self.folder is not None:
            self.folder.keep_rows_through(self.start_epoch)
        trained_with = header["meta"].get("kernels")
        if trained_with is not None and trained_with != self.kernels and self.world.main:
            print(f"note: {self.out} was trained with the {trained_with} kernels and resumes with the {self.kernels} "
                  f"kernels: its noise draws now differ from an uninterrupted run's")

    def announce(self, train_size: int, test_size: int) -> None:
        if not self.world.main:
            return
        config = self.config
        print(f"{config.model or type(self.model).__name__}: {count_parameters(self.model):,} parameters on "
              f"{self.device}, {self.world.size} process(es), {self.kernels} kernels; {config.dataset or 'your data'}: "
              f"{train_size:,} train / {test_size:,} test "
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
        batches = _on_device(iterate_batches(len(train_y), self.local_batch, True, order, world.rank, world.size),
                             self.device)
        skip, partial = (self.start_step, self.partial) if epoch == self.start_epoch else (0, [0.0] * 4)
        totals = torch.tensor(partial[:3], dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        started = time.perf_counter() - partial[3]
        show = world.main and config.progress
        bar = tqdm(batches[skip:], desc=f"epoch {epoch + 1}/{config.epochs}", initial=skip, total=len(batches),
                   leave=False, disable=None if show else True)  # None: tqdm draws only on a terminal
        for step, index in enumerate(bar, start=skip):
            x, y = train_x[index], train_y[index]
            loss, logits = self._run(x, y)
            totals[0] += loss.detach().double() * len(y)
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
            if (step + 1) % self.read_every and step + 1 < len(batches):
                continue
            loss_sum, correct, seen = totals.tolist()
            if not math.isfinite(loss_sum):
                raise TrainingDiverged(f"the loss became {loss.item()} by epoch {epoch + 1}, step {step + 1}; "
                                       f"{self._what_is_kept()}; try a lower --lr or the authors-code preset "
                                       f"(warm-up and gradient clipping)")
            if show:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                img_s=f"{seen * world.size / (time.perf_counter() - started):.0f}")
            if world.any(interrupt["signal"] is not None, self.device):  # every rank stops at the same step
                signum = interrupt["signal"] or signal.SIGINT
                try:
                    self._save("last", epoch, step + 1, {}, [loss_sum, correct, seen, time.perf_counter() - started])
                except ckpt.CheckpointError as error:
                    raise Interrupted(signum, f"interrupted, and {error}") from None
                if world.main:
                    print(f"\ninterrupted: saved {self.out / 'last.safetensors'}; continue with --resume")
                raise Interrupted(signum)
        bar.close()
        self.totals = totals.tolist()
        return time.perf_counter() - started

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step: the CUDA graph where there is one (recorded at the first batch), else eager."""
        if self.run_step is None:
            self.run_step = GraphedStep(self.step, x, y) if self.graphs else self.step
        if self.run_step is self.step:
            return self.step(x, y)
        try:
            return self.run_step(x, y)
        except RuntimeError as error:  # recording failed: nothing of this step ran
            if self.run_step.graph is not None:
                raise
            print(f"note: CUDA graphs off: the step could not be recorded ({str(error).splitlines()[0][:200]}); "
                  f"eager from here")
            self.run_step = self.step
            return self.step(x, y)

    def _what_is_kept(self) -> str:
        if (self.out / "last.safetensors").exists():
            return f"the last good checkpoint in {self.out} is unchanged"
        return "no checkpoint had been saved yet"

    def end_epoch(self, epoch: int, seconds: float, train_x: torch.Tensor, test_x: torch.Tensor,
                  test_y: torch.Tensor) -> None:
        """Batch-norm recalibration, evaluation, the metrics row and the checkpoints of a finished epoch."""
        world = self.world
        loss_sum, correct, seen = world.sum(self.totals, self.device)
        if loss_sum / seen > self.diverged_loss:
            raise TrainingDiverged(f"the mean training loss of epoch {epoch + 1} is {loss_sum / seen:.3g} (guessing "
                                   f"gives {self.diverged_loss / DIVERGED_LOSS_FACTOR:.3g}): training diverged; "
                                   f"{self._what_is_kept()}; try a lower --lr")
        world.sync_buffers(self.model)
        recalibrate_batch_norm(self.model, train_x[: self.config.bn_recalibration])  # same images on every rank
        test = evaluate(self.model, test_x, test_y, world=world)
        row = {
            "epoch": epoch + 1, "lr": self.step.lr, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "test_loss": test["loss"], "test_accuracy": test["accuracy"], "epoch_seconds": seconds,
            "images_per_second": seen / seconds,
        }
        if world.main:
            self._log(row)  # before the checkpoints: a resume drops rows beyond `last`, never loses one
        if test["accuracy"] > self.best_accuracy:
            self.best_accuracy = test["accuracy"]
            self._save("best", epoch + 1, 0, row, [0.0] * 4)
        self._save("last", epoch + 1, 0, row, [0.0] * 4)
        self.summary = {**row, "best_test_accuracy": self.best_accuracy, "out": str(self.out),
                        "epochs_run": epoch + 1, "model": self.model}

    def _log(self, row: dict[str, Any]) -> None:
        self.folder.write_row(row)
        if self.writer is not None:
            for key, value in row.items():
                self.writer.add_scalar(key, value, row["epoch"])
        print(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_accuracy']:.4f}  test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.4f}  "
              f"{row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s", flush=True)

    def _save(self, name: str, epoch: int, step: int, metrics: dict[str, Any], partial: list[float]) -> None:
        # Every rank's noise stream and partial sums, for an exact resume.
        ranks = self.world.gather({"rng": _rng_state(self.device), "partial": partial})
        if not self.world.main:
            return
        config = self.config
        meta = {"model": config.model or f"python:{type(self.model).__name__}", "model_options": config.model_options,
                "dataset": config.dataset, "epoch": epoch, "step": step, "metrics": metrics, "kernels": self.kernels,
                "config": asdict(config), **self.extra_meta}
        state = {**self.step.state_dict(), "rng": [rank["rng"] for rank in ranks], "epoch": epoch, "step": step,
                 "best_accuracy": self.best_accuracy, "partial": [list(rank["partial"]) for rank in ranks]}
        ckpt.save_checkpoint(self.out, name, self.model, meta, state)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _check_state_structure(path: Path, state: dict[str, Any]) -> None:
    """Refuse a training state whose entries do not have the structure a save writes, naming what is wrong."""
    reference = torch.get_rng_state()
    problems = []
    for index, rng in enumerate(state["rng"]):
        cpu = rng.get("cpu") if isinstance(rng, dict) else None
        cuda = rng.get("cuda") if isinstance(rng, dict) else None
        if not (isinstance(cpu, torch.Tensor) and cpu.dtype == torch.uint8 and cpu.shape == reference.shape) or (
                cuda is not None and not (isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8)):
            problems.append(f"its random state {index} is not a generator state")
    schedule = state["schedule"]
    if not (isinstance(schedule.get("last_epoch"), int) and isinstance(schedule.get("lr_lambdas"), list)
            and isinstance(schedule.get("base_lrs"), list)):
        problems.append("its schedule lacks last_epoch, lr_lambdas or base_lrs")
    optimizer = state["optimizer"]
    groups = optimizer.get("param_groups")
    if not (isinstance(optimizer.get("state"), dict) and isinstance(groups, list) and groups
            and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups)):
        problems.append("its optimizer state has no parameter groups")
    partial = state["partial"]
    rows = partial if partial and isinstance(partial[0], list) else [partial]
    if not all(len(row) == 4 and all(isinstance(value, (int, float)) for value in row) for row in rows):
        problems.append("its partial-epoch sums are not four numbers")
    if problems:
        raise ckpt.CheckpointError(f"training state {path} is malformed: {'; '.join(problems)} (nothing was changed)")


def _check_same_settings(path: Path, saved: dict[str, Any] | None, config: TrainConfig) -> None:
    """Refuse a resume whose settings differ from the run's in anything but :data:`RESUMABLE_CHANGES`."""
    if saved is None:
        return
    current = asdict(config)

    def shown(value: Any) -> str:
        return "not set" if value is None else repr(value)

    changed = [f"{name}={shown(saved[name])} (asked: {shown(current[name])})" for name in (f.name for f in fields(
        TrainConfig)) if name not in RESUMABLE_CHANGES and name in saved and saved[name] != current[name]]
    if changed:
        raise ValueError(f"--resume: {path.parent} was trained with {', '.join(changed)}; resume with the run's own "
                         f"settings (leave those options out), or start a new run with another --out")


@contextmanager
def _signals_requested():
    """Turn the first Ctrl-C or SIGTERM into a flag, so the loop can stop at a step boundary and save."""
    flag: dict[str, int | None] = {"signal": None}
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in handled}

    def handler(signum, frame):
        if flag["signal"] is not None:  # a second signal stops at once
            signal.signal(signum, previous[signum])
            raise Interrupted(signum)
        flag["signal"] = signum

    try:
        for signum in handled:
            signal.signal(signum, handler)
    except ValueError:  # not the main thread: no handler, signals behave as usual
        pass
    try:
        yield flag
    finally:
        for signum in handled:
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous[signum])


def _on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """An epoch's index batches moved to the device in one copy (views of one tensor there)."""
    order = torch.cat(batches).to(device)
    return list(order.split([len(batch) for batch in batches]))


def _on_device_split(dataset, split: str, limit: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of a data set, normalised, on the device: the data sets are small enough to live there."""
    images, labels = dataset.split(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return dataset.normalize(images).to(device), labels.to(device)


def _as_tensors(data: Any, limit: int | None, device: torch.device, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` tensors of a Dataset, a DataLoader or a pair of tensors, read once in order."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
    elif isinstance(data, torch.utils.data.DataLoader):
        batches = list(data)
        images, labels = torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])
    elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        count = len(data) if limit is None else min(limit, len(data))
        items = [data[index] for index in range(count)]
        images = torch.stack([torch.as_tensor(item[0]) for item in items])
        labels = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise ValueError(f"{name} must be a Dataset of (image, label) pairs, a DataLoader of (images, labels) "
                         f"batches, or an (images, labels) pair of tensors; got {type(data).__name__}")
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"{name}: expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images.float().to(device), labels.long().to(device)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
