"""Data sets, without torchvision: the official MNIST, Fashion-MNIST and CIFAR-10 files, and folders of your images.

=======================  =====================================================
module                   what it reads
=======================  =====================================================
``cemnet.data.builtin``  ``mnist``, ``fashion-mnist``, ``cifar10`` from their official files (md5-checked)
``cemnet.data.folder``   ``folder:PATH``: class folders of PNG/JPEG/BMP images (Pillow)
=======================  =====================================================

:func:`open_dataset` is the one door: it gives a :class:`Dataset` whose
:attr:`~Dataset.info` says the images' shape, classes and per-channel
statistics, and whose :meth:`~Dataset.split` gives uint8 images and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cemnet.data import folder
from cemnet.data.builtin import (
    DATASETS,
    DataError,
    DataFile,
    DatasetInfo,
    dataset_info,
    default_data_dir,
    iterate_batches,
    load_dataset,
    normalize,
    parse_cifar_batch,
    parse_idx,
    read_checked,
    standardize,
)
from cemnet.data.folder import folder_path, is_folder, scan_folder


@dataclass
class Dataset:
    """A data set opened for training or evaluation.

    Attributes:
        info: shape ``(C, S, S)``, class names, and the per-channel mean and
            std that :meth:`normalize` uses (a folder's: of its training
            images, unless given).
    """

    name: str
    info: DatasetInfo
    data_dir: str | Path | None = None
    download: bool = False
    scan: folder.FolderScan | None = None

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(N, C, S, S)`` and int64 labels ``(N,)`` of ``"train"`` or ``"test"``."""
        if self.scan is None:
            return load_dataset(self.name, split, self.data_dir, download=self.download)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        images = folder.decode_folder(self.scan, self.info.shape[0], self.info.shape[1])
        index = np.asarray(self.scan.train if split == "train" else self.scan.test, dtype=np.int64)
        labels = np.asarray(self.scan.labels, dtype=np.int64)[index]
        return torch.from_numpy(images[index]), torch.from_numpy(labels)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32, scaled to [0, 1] and standardised per channel with :attr:`info`'s statistics."""
        return standardize(images, self.info.mean, self.info.std)


def open_dataset(name: str, data_dir: str | Path | None = None, download: bool = False, *,
                 channels: int | None = None, image_size: int | None = None, test_fraction: float = 0.2,
                 seed: int = 0, statistics: dict[str, list[float]] | None = None) -> Dataset:
    """A built-in data set, or ``folder:PATH`` (:mod:`cemnet.data.folder`).

    For a folder: ``channels`` (1 or 3; default the mode most files have),
    ``image_size`` (required: the side the images are resized and cropped to),
    ``test_fraction`` and ``seed`` (the split, without ``test/``), and
    ``statistics`` (``{"mean": [...], "std": [...]}``; default computed on the
    training images, which decodes them). Built-in data sets take none of these.

    Raises:
        DataError: the data are missing, corrupt or unusable (one line naming what).
    """
    if not is_folder(name):
        return Dataset(name, dataset_info(name), data_dir, download)
    scan = scan_folder(folder.folder_path(name), test_fraction, seed)
    channels = channels or scan.channels
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image_size is None or image_size < 1:
        raise ValueError(f"{name}: give the image size (a positive side), got {image_size}")
    info = DatasetInfo(name, (channels, image_size, image_size), (0.0,) * channels, (1.0,) * channels, (), (), (),
                       scan.classes)
    dataset = Dataset(name, info, scan=scan)
    if statistics is None:
        train = dataset.split("train")[0].double() / 255.0
        statistics = {"mean": train.mean(dim=(0, 2, 3)).tolist(),
                      "std": train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()}
    dataset.info = replace(info, mean=tuple(statistics["mean"]), std=tuple(statistics["std"]))
    return dataset


__all__ = [
    "DATASETS",
    "DataError",
    "DataFile",
    "Dataset",
    "DatasetInfo",
    "dataset_info",
    "default_data_dir",
    "folder_path",
    "is_folder",
    "iterate_batches",
    "load_dataset",
    "normalize",
    "open_dataset",
    "parse_cifar_batch",
    "parse_idx",
    "read_checked",
    "scan_folder",
    "standardize",
]
