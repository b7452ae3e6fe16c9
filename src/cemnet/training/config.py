"""What a run depends on: the optimizer recipes and the run's configuration, each default stated once here.

Recipes (``--preset``):

* ``paper``: RMSProp, lr 0.004 with cosine decay per step to 1e-7, batch 100,
  no augmentation. The paper trains in TensorFlow 2.5 and does not give
  RMSProp's other constants; cemnet uses Keras's defaults, rho 0.9,
  eps 1e-7, no momentum. Without momentum Keras's update is PyTorch's (both
  add eps outside the square root), so this recipe runs PyTorch's RMSprop.
* ``authors-code``: the authors' public code (TensorFlow 2.5 Keras): RMSprop
  with momentum 0.9 computed as Keras computes it (eps inside the square root,
  the learning rate inside the momentum buffer: :class:`cemnet.training.step.KerasRMSprop`),
  one epoch of linear warm-up, each gradient tensor clipped to norm 15
  (Keras's ``clipnorm``), and Weight Fixation keeping a real kernel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from cemnet.data import DATASETS, dataset_info, folder_path, is_folder, scan_folder
from cemnet.models import create_model, model_info, user_file
from cemnet.runtime import KERNEL_SETTINGS


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule constants of a preset."""

    lr: float = 0.004
    min_lr: float = 1e-7
    rho: float = 0.9
    eps: float = 1e-7
    momentum: float = 0.0
    keras_momentum: bool = False  # momentum as Keras computes it (KerasRMSprop), not as PyTorch's RMSprop does
    warmup_epochs: float = 0.0
    clip_norm: float | None = None
    clip_per_tensor: bool = False  # clip each gradient tensor to clip_norm (Keras's clipnorm), not their global norm
    real_kernel: bool = False


PRESETS = {
    "paper": Recipe(),
    "authors-code": Recipe(momentum=0.9, keras_momentum=True, warmup_epochs=1.0, clip_norm=15.0, clip_per_tensor=True,
                           real_kernel=True),
}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint.

    Attributes:
        model: a preset of :func:`cemnet.models.list_models`, ``FILE.py:FUNCTION``
            (a function returning your CNN: :mod:`cemnet.models.user_file`), or
            ``None`` for a model built in Python and handed to
            :func:`cemnet.training.fit` (its checkpoints then hold weights
            that only your code can rebuild a model for).
        model_sha256: for ``FILE.py:FUNCTION``, the file's SHA-256 when the run
            began; a run whose file changed since is refused.
        dataset: default the data set the preset is built for (for your own
            model, the one whose images its input shape takes); or
            ``folder:PATH``, your images (:mod:`cemnet.data.folder`): a
            preset then takes the folder's channels, image size and classes.
        channels, image_size: for ``folder:PATH``, the mode the images are
            converted to (1 or 3; default the mode most files have, or your
            model's) and the side they are resized to (default the model's).
        test_fraction: for a folder without ``test/``, the share of each class held out for testing.
        epochs: epochs of the whole run (the paper trains 800).
        batch_size: global batch size (split over the processes under torchrun).
        preset: the optimizer recipe, a key of :data:`PRESETS`.
        lr, warmup_epochs: override the recipe's peak learning rate and warm-up.
        seed: initial weights, data order, noise and dropout.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        kernels: the CPU kernels, ``auto``, ``native`` or ``torch`` (:mod:`cemnet.runtime`);
            default the process's setting (``$CEMNET_KERNELS``, else ``auto``).
        data_dir: the folder holding the data sets (default :func:`cemnet.data.default_data_dir`).
        out: the run folder (default ``runs/MODEL``).
        download: fetch missing data files from the official mirrors.
        limit_train, limit_test: keep the first N images (quick runs, tests).
        progress: draw a progress bar on a terminal.
        stop_after: end this invocation after that many epochs (a time slice on
            a pre-emptible machine); ``--resume`` continues where it stopped.
        bn_recalibration: re-estimate the batch-norm statistics on that many
            training images (in eval mode) before each evaluation; 0 keeps the
            running averages (:func:`cemnet.training.recalibrate_batch_norm`).
        cuda_graphs: on CUDA, record the training step once as a CUDA graph and
            replay it (:class:`cemnet.training.graphs.GraphedStep`); eager where
            that is not possible, with a line saying why.
        model_options: overrides for :func:`cemnet.models.create_model`.
    """

    model: str | None = "cemnet-mnist"
    model_sha256: str | None = None
    dataset: str | None = None
    channels: int | None = None
    image_size: int | None = None
    test_fraction: float = 0.2
    epochs: int = 5
    batch_size: int = 100
    preset: str = "paper"
    lr: float | None = None
    warmup_epochs: float | None = None
    seed: int = 0
    device: str = "auto"
    kernels: str | None = None
    data_dir: str | None = None
    out: str | None = None
    download: bool = True
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True
    stop_after: int | None = None
    bn_recalibration: int = 5000
    cuda_graphs: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.kernels is not None and self.kernels not in KERNEL_SETTINGS:
            raise ValueError(f"kernels must be one of {list(KERNEL_SETTINGS)}, got {self.kernels!r}")
        for name in ("epochs", "batch_size", "limit_train", "limit_test", "stop_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.bn_recalibration < 0:
            raise ValueError(f"bn-recalibration must be 0 (off) or a number of images, got {self.bn_recalibration}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_epochs is not None and not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup-epochs must be a number of epochs >= 0, got {self.warmup_epochs}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer from 0 to 2**32 - 1, got {self.seed}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image-size must be at least 1, got {self.image_size}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test-fraction must be between 0 and 1, got {self.test_fraction}")
        if self.model is None:  # a model built in Python (cemnet.training.fit): nothing to check it against
            self.out = self.out or "runs/python"
            return
        if user_file.is_model_file(self.model):
            self.model_sha256 = self._check_model_file()
        if self.dataset is not None and is_folder(self.dataset):
            self._fit_model_to_folder()
        elif user_file.is_model_file(self.model):
            self._check_model_shape()
        else:
            built_for = model_info(self.model).dataset
            self.dataset = self.dataset or built_for
            if dataset_info(self.dataset).shape != dataset_info(built_for).shape:
                raise ValueError(f"{self.model} is built for {built_for} images {dataset_info(built_for).shape}; "
                                 f"{self.dataset} images are {dataset_info(self.dataset).shape}: choose a model for "
                                 f"{self.dataset} (cemnet models)")
        self.out = self.out or str(default_out(self.model))

    def _check_model_file(self) -> str:
        """Your own model: its file's SHA-256, refused when it changed since the run began."""
        digest = user_file.file_digest(self.model)
        if self.model_sha256 is not None and self.model_sha256 != digest:
            raise ValueError(f"--model {self.model}: the file changed since this run was trained (SHA-256 "
                             f"{self.model_sha256[:12]}... then, {digest[:12]}... now); restore it, or start a new "
                             f"run with another --out")
        return digest

    def _fit_model_to_folder(self) -> None:
        """A folder of images: a preset takes its channels, side and classes; your own model must fit them."""
        scan = scan_folder(folder_path(self.dataset), self.test_fraction)
        with torch.device("meta"):  # shapes only
            spec = create_model(self.model, **self.model_options).spec
        if user_file.is_model_file(self.model):
            self.channels = self.channels or spec.in_channels
            self.image_size = self.image_size or spec.image_size
            wanted = (self.channels, self.image_size, len(scan.classes))
            built = (spec.in_channels, spec.image_size, spec.num_classes)
            if wanted != built:
                raise ValueError(f"{self.model} takes {built[0]}-channel {built[1]}x{built[1]} images and "
                                 f"{built[2]} classes; {self.dataset} gives {wanted[0]}-channel "
                                 f"{wanted[1]}x{wanted[1]} images and {wanted[2]} classes")
            return
        self.channels = self.channels or scan.channels
        self.image_size = self.image_size or spec.image_size
        sized = {"in_channels": self.channels, "image_size": self.image_size, "num_classes": len(scan.classes)}
        self.model_options = {**self.model_options, **sized}
        try:
            with torch.device("meta"):
                create_model(self.model, **self.model_options)
        except ValueError as error:
            raise ValueError(f"{self.model} on {self.dataset}: {error}") from None

    def _check_model_shape(self) -> None:
        """Your own model on a built-in data set: the data set whose images it takes."""
        with torch.device("meta"):
            spec = create_model(self.model, **self.model_options).spec
        shape = (spec.in_channels, spec.image_size, spec.image_size)
        fitting = [name for name in DATASETS if dataset_info(name).shape == shape]
        self.dataset = self.dataset or (fitting[0] if fitting else None)
        if self.dataset is None or dataset_info(self.dataset).shape != shape:
            raise ValueError(f"{self.model} takes images of shape {shape}; "
                             + (f"{self.dataset} images are {dataset_info(self.dataset).shape}" if self.dataset
                                else f"none of {list(DATASETS)} has them"))

    def recipe(self) -> Recipe:
        """The preset's recipe with this run's ``lr`` and ``warmup_epochs``."""
        overrides = {"lr": self.lr, "warmup_epochs": self.warmup_epochs}
        return Recipe(**{**asdict(PRESETS[self.preset]), **{k: v for k, v in overrides.items() if v is not None}})


def default_out(model: str | None) -> Path:
    """The run folder of a model when ``--out`` is not given: ``runs/MODEL`` (``runs/FILE-FUNCTION`` for your own)."""
    if model is None:
        return Path("runs") / "python"
    if user_file.is_model_file(model):
        path, _, function = model.rpartition(":")
        return Path("runs") / f"{Path(path).stem}-{function}"
    return Path("runs") / model


def default(name: str) -> Any:
    """The default of a :class:`TrainConfig` field (for the command line, which states no defaults of its own)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)
