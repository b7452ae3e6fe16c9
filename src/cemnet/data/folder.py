"""Your own images: a folder of class folders, read with Pillow (``--dataset folder:PATH``).

Layout
------
``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>``; or, without
``test/``, ``PATH/<class>/<image>`` (or ``PATH/train/<class>/``), split into
training and test images by a seeded draw per class (``test_fraction`` of
each class, at least one image, goes to the test split). PNG, JPEG and BMP.

Images
------
Every image is converted to one mode, grayscale or RGB (``channels``;
default the mode most files have; palette, RGBA and 16-bit images are
converted, and one warning line counts them), its shorter side resized to
``image_size`` (bilinear) and centre-cropped to a square. The decoded images
are kept as uint8 ``(N, C, S, S)`` in a cache file keyed by the folder's
content (the list of files with their sizes and modification times), the
mode and the size: a second epoch, or a second run, decodes nothing, and a
changed folder is read again. The cache lives in
``$XDG_CACHE_HOME/cemnet/folders`` (``~/.cache/cemnet/folders``); where
that cannot be written, images are decoded once per process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cemnet.data.builtin import DataError

PREFIX = "folder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def is_folder(name: str) -> bool:
    """Whether a data set name is ``folder:PATH`` (with a path)."""
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


def folder_path(name: str) -> str:
    """The ``PATH`` of a ``folder:PATH`` data set name."""
    return name[len(PREFIX):]


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds, before any image is decoded.

    Attributes:
        root: the folder.
        classes: class names, sorted (the labels are their indices).
        files: every image, sorted by path; ``labels[i]`` is the class of ``files[i]``.
        train, test: indices into ``files`` of each split.
        channels: 1 or 3, the mode most files have.
        content: SHA-256 of the file list with sizes and modification times.
    """

    root: Path
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]
    train: tuple[int, ...]
    test: tuple[int, ...]
    channels: int
    content: str


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(folder: Path, what: str) -> dict[str, list[Path]]:
    classes = {p.name: _images(p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(f"{what}: the class folder {folder / empty[0]} holds no image (PNG, JPEG or BMP); add "
                        f"images or remove it")
    return classes


def scan_folder(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> FolderScan:
    """List the images and classes of a folder (see the module docstring); nothing is decoded.

    Raises:
        DataError: no such folder, no images, fewer than two classes, a class
            with no image, or test classes that the training classes lack.
    """
    root = Path(path).expanduser()
    what = f"{PREFIX}{path}"
    if not root.is_dir():
        raise DataError(f"{what}: no such folder")
    train_root = root / "train" if (root / "train").is_dir() else root
    train = _class_folders(train_root, what)
    if not train:
        raise DataError(f"{what}: no class folders with images; expected {root}/train/<class>/<image> (and "
                        f"test/<class>/), or {root}/<class>/<image>")
    if len(train) < 2:
        raise DataError(f"{what}: only one class ({next(iter(train))}); a classifier needs at least two")
    test = _class_folders(root / "test", what) if (root / "test").is_dir() else None
    if test is not None and set(test) - set(train):
        raise DataError(f"{what}: test/ holds classes that train/ lacks: {sorted(set(test) - set(train))}")
    if not 0 < test_fraction < 1:
        raise DataError(f"{what}: the test fraction must be between 0 and 1, got {test_fraction}")
    classes = tuple(sorted(train))
    files, labels, train_index, test_index = [], [], [], []
    generator = torch.Generator().manual_seed(seed)
    for label, name in enumerate(classes):
        own = train[name]
        if test is None:  # a seeded split of each class, so every class is in both splits
            order = torch.randperm(len(own), generator=generator).tolist()
            held = set(order[: max(1, round(test_fraction * len(own)))]) if len(own) > 1 else set()
            split = [(file, i in held) for i, file in enumerate(own)]
        else:
            split = [(file, False) for file in own] + [(file, True) for file in test.get(name, [])]
        for file, is_test in split:
            (test_index if is_test else train_index).append(len(files))
            files.append(file)
            labels.append(label)
    stamps = hashlib.sha256()
    modes = Counter()
    from PIL import Image, UnidentifiedImageError

    for file in files:
        stat = file.stat()
        stamps.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        try:
            with Image.open(file) as image:
                modes[1 if image.mode in GRAY_MODES else 3] += 1
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{what}: cannot decode the image {file} ({error})") from None
    return FolderScan(root, classes, tuple(files), tuple(labels), tuple(train_index), tuple(test_index),
                      modes.most_common(1)[0][0], stamps.hexdigest())


def _decode(file: Path, channels: int, size: int) -> tuple[np.ndarray, bool]:
    """One image as uint8 ``(C, size, size)``, and whether its mode had to be converted beyond gray/RGB."""
    from PIL import Image

    with Image.open(file) as image:
        image.load()
        converted = image.mode not in ("L", "RGB")
        if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit: keep the top 8 bits, not a clipped copy
            image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
        image = image.convert("L" if channels == 1 else "RGB")
        width, height = image.size
        scale = size / min(width, height)
        resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                               Image.Resampling.BILINEAR)
        left, top = (resized.size[0] - size) // 2, (resized.size[1] - size) // 2
        pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return (pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)), converted


def _cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "cemnet" / "folders"


_DECODED: dict[str, np.ndarray] = {}


def decode_folder(scan: FolderScan, channels: int, image_size: int) -> np.ndarray:
    """Every image of a scan, decoded, as uint8 ``(N, C, S, S)`` in ``scan.files`` order (cached; see the module).

    Raises:
        DataError: an image cannot be decoded (its path is named).
    """
    key = hashlib.sha256(f"{scan.root.resolve()}|{scan.content}|{channels}|{image_size}".encode()).hexdigest()[:32]
    if key in _DECODED:
        return _DECODED[key]
    cached = _cache_folder() / f"{key}.npy"
    if cached.is_file():
        try:
            images = np.load(cached)
            if images.shape == (len(scan.files), channels, image_size, image_size):
                _DECODED[key] = images
                return images
        except (OSError, ValueError):
            pass  # a damaged cache file is decoded again
    from PIL import UnidentifiedImageError

    images = np.empty((len(scan.files), channels, image_size, image_size), dtype=np.uint8)
    converted = 0
    for index, file in enumerate(scan.files):
        try:
            images[index], changed = _decode(file, channels, image_size)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataError(f"{PREFIX}{scan.root}: cannot decode the image {file} ({error})") from None
        converted += changed
    if converted:
        print(f"cemnet: warning: {converted} of {len(scan.files)} images in {scan.root} were converted to "
              f"{'grayscale' if channels == 1 else 'RGB'} from another mode (palette, alpha, 16-bit, ...)",
              file=sys.stderr)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npy")
        np.save(temporary, images)
        os.replace(temporary, cached)
    except OSError:
        pass  # no writable cache: decoded once per process
    _DECODED.clear()  # one folder at a time in memory
    _DECODED[key] = images
    return images
