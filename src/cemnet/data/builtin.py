"""MNIST, Fashion-MNIST and CIFAR-10 read from their official files, without torchvision.

Where the files live
--------------------
``data_dir / NAME / FILE``, with ``data_dir`` taken from (first match) the
``--data-dir`` option, the ``CEMNET_DATA`` environment variable, or
``~/.cache/cemnet`` (``$XDG_CACHE_HOME/cemnet``). ``NAME`` is ``mnist``,
``fashion-mnist`` or ``cifar10``. MNIST-style files may be gzip-compressed or
not; CIFAR-10 may be the folder ``cifar-10-batches-py`` or the official
``cifar-10-python.tar.gz``.

Integrity
---------
Each file is checked by the md5 of its *decompressed* content (the official
MNIST digests), or of the archive where only that is published. A missing or
corrupt file, offline, raises :class:`DataError`, whose message names the
file, its expected md5 and the folder to put it in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """A data set file is missing or corrupt; the message says what to put where."""


@dataclass(frozen=True)
class DataFile:
    """One official file: its name, the md5 of its decompressed content and/or of the archive."""

    name: str
    md5: str | None = None
    archive_md5: str | None = None

    @property
    def expected(self) -> str:
        return self.md5 or self.archive_md5 or "unknown"


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set looks like and where its files come from."""

    name: str
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirrors: tuple[str, ...]
    train: tuple[DataFile, ...]
    test: tuple[DataFile, ...]
    classes: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), (0.1307,), (0.3081,),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        train=(
            DataFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
            DataFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
        ),
        test=(
            DataFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
            DataFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
        ),
        classes=tuple(str(digit) for digit in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), (0.2860,), (0.3530,),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Only the digests of the official .gz archives are published.
        train=(
            DataFile("train-images-idx3-ubyte.gz", archive_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            DataFile("train-labels-idx1-ubyte.gz", archive_md5="25c81989df183df01b3e8a0aad5dffbe"),
        ),
        test=(
            DataFile("t10k-images-idx3-ubyte.gz", archive_md5="bef4ecab320f06d8554ea6380940ec79"),
            DataFile("t10k-labels-idx1-ubyte.gz", archive_md5="bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("https://www.cs.toronto.edu/~kriz/",),
        train=(
            DataFile("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            DataFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            DataFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            DataFile("data_batch_4", "634d18415352ddfa80567beed471001a"),
            DataFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test=(DataFile("test_batch", "40351d587109b95175f43aff81a1287e"),),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = DataFile("cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a")


def default_data_dir() -> Path:
    """``$CEMNET_DATA``, else ``$XDG_CACHE_HOME/cemnet``, else ``~/.cache/cemnet``."""
    if os.environ.get("CEMNET_DATA"):
        return Path(os.environ["CEMNET_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cemnet"


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


# ---------------------------------------------------------------------------- file formats


def _decompressed(raw: bytes) -> bytes:
    """The content of a file that may be gzip-compressed. Raises ValueError for a broken archive."""
    try:
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"cannot decompress it ({error})") from None


def parse_idx(content: bytes) -> np.ndarray:
    """Parse an (uncompressed) IDX file: zero, zero, dtype code, ndim, big-endian dims, data."""
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file (bad magic number)")
    ndim = content[3]
    try:
        dims = struct.unpack(f">{ndim}i", content[4 : 4 + 4 * ndim])
    except struct.error:
        raise ValueError(f"the IDX header of {ndim} dimensions is truncated") from None
    data = np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims} ({int(np.prod(dims))} bytes), file holds {data.size}")
    return data.reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: the CIFAR batches need nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def parse_cifar_batch(content: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` from one CIFAR-10 python batch.

    Raises ValueError for anything that is not such a batch.
    """
    try:
        batch = _ArrayUnpickler(io.BytesIO(content), encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64).reshape(-1)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as error:
        raise ValueError(f"not a CIFAR-10 python batch ({error})") from None
    return images, labels


# ---------------------------------------------------------------------------- finding and checking files


def _md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def _found(folder: Path, file: DataFile) -> Path | None:
    """The file as it lies in ``folder``: its official name, or that name without ``.gz`` (decompressed)."""
    return next((folder / n for n in (file.name, file.name.removesuffix(".gz")) if (folder / n).is_file()), None)


def _problem(info: DatasetInfo, file: DataFile, folder: Path, what: str) -> DataError:
    if info.name == "cifar10":
        where = (f"put the official {CIFAR_ARCHIVE.name} (md5 {CIFAR_ARCHIVE.archive_md5}), or the folder "
                 f"{CIFAR_FOLDER}/ it unpacks to, in {folder.parent if folder.name == CIFAR_FOLDER else folder}/")
    else:
        where = f"put the official file (gzip-compressed or not) in {folder}/"
    digest = (f"md5 of the decompressed content {file.md5}" if file.md5 else
              f"md5 of the official {file.name} {file.archive_md5}")
    name = (_found(folder, file) or folder / file.name).name
    return DataError(f"{info.name}: {what} {name} ({digest}): {where}, or point --data-dir / CEMNET_DATA at the "
                     f"folder that holds {info.name}/. Official mirrors: {', '.join(info.mirrors)}")


def read_checked(folder: Path, file: DataFile, info: DatasetInfo) -> bytes:
    """The decompressed content of ``file`` found in ``folder``, its md5 verified."""
    path = _found(folder, file)
    if path is None:
        raise _problem(info, file, folder, "missing")
    raw = path.read_bytes()
    try:
        content = _decompressed(raw)
    except ValueError as error:
        raise _problem(info, file, folder, f"{error}:") from None
    if file.md5 is not None and _md5(content) == file.md5:
        return content
    if file.archive_md5 is not None and _md5(raw) == file.archive_md5:
        return content
    if file.md5 is None and raw is content:
        # Only archive digests are published (Fashion-MNIST): an uncompressed
        # copy can only be checked by its IDX structure, when it is parsed.
        return content
    raise _problem(info, file, folder, f"corrupt (md5 {_md5(content)})")


def _failing_files(info: DatasetInfo, folder: Path) -> list[str]:
    """The names of a data set's files that are missing or fail their check: what a download must fetch."""
    failing = []
    for file in info.train + info.test:
        try:
            read_checked(folder, file, info)
        except DataError:
            failing.append(file.name)
    return failing


def _download(info: DatasetInfo, names: list[str], folder: Path, timeout: float) -> str | None:
    """Fetch ``names`` from the first mirror that answers; returns why one could not be fetched, or ``None``.

    The folder is created only once a mirror answers, so a failed download leaves nothing behind.
    """
    failure = None
    for name in names:
        for mirror in info.mirrors:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                    folder.mkdir(parents=True, exist_ok=True)
                    partial = folder / (name + ".part")
                    try:
                        with partial.open("wb") as out:
                            shutil.copyfileobj(response, out)
                        partial.replace(folder / name)
                    finally:
                        partial.unlink(missing_ok=True)
                break
            except OSError as error:
                failure = f"{mirror}{name}: {getattr(error, 'reason', None) or error}"
        else:
            return failure
    return None


# ---------------------------------------------------------------------------- public API


def _load_mnist_style(info: DatasetInfo, folder: Path, files: tuple[DataFile, ...]) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = files
    arrays = []
    for file in (images_file, labels_file):
        try:
            arrays.append(parse_idx(read_checked(folder, file, info)))
        except ValueError as error:
            raise _problem(info, file, folder, f"{error}:") from None
    images, labels = arrays
    if images.ndim != 3 or images.shape[1:] != info.shape[1:]:
        raise _problem(info, images_file, folder, f"images of shape {images.shape[1:]}, not {info.shape[1:]}, in")
    return images[:, None], _checked_labels(info, folder, labels_file, labels.astype(np.int64), len(images))


def _checked_labels(info: DatasetInfo, folder: Path, file: DataFile, labels: np.ndarray, count: int) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != count:
        raise _problem(info, file, folder, f"{labels.size} labels for {count} images in")
    if labels.size and not 0 <= labels.min() <= labels.max() < len(info.classes):
        raise _problem(info, file, folder, f"labels outside 0..{len(info.classes) - 1} in")
    return labels


def _load_cifar(info: DatasetInfo, folder: Path, files: tuple[DataFile, ...]) -> tuple[np.ndarray, np.ndarray]:
    batches = folder / CIFAR_FOLDER
    archive = folder / CIFAR_ARCHIVE.name
    if not batches.is_dir() and archive.is_file():
        raw = archive.read_bytes()
        if _md5(raw) != CIFAR_ARCHIVE.archive_md5:
            raise _problem(info, CIFAR_ARCHIVE, folder, f"corrupt (md5 {_md5(raw)})")
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            contents = [tar.extractfile(f"{CIFAR_FOLDER}/{file.name}").read() for file in files]
    else:
        contents = [read_checked(batches, file, info) for file in files]
    parts = []
    for file, content in zip(files, contents):
        try:
            images, labels = parse_cifar_batch(content)
        except ValueError as error:
            raise _problem(info, file, batches, f"{error}:") from None
        parts.append((images, _checked_labels(info, batches, file, labels, len(images))))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cache_key(name: str, split: str, folder: Path) -> tuple:
    """Where the files are and when they last changed: a reload is needed only if this changes."""
    stamps = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())) if folder.is_dir() else ()
    return name, split, str(folder.resolve()), stamps


_LOADED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = False,
    timeout: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split, as stored: uint8 ``(N, C, H, W)`` and int64 ``(N,)``.

    The last split read is kept in memory (until its files change); treat the
    returned tensors as read-only.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        split: ``"train"`` or ``"test"``.
        data_dir: the folder holding ``NAME/``; default :func:`default_data_dir`.
        download: fetch missing files from the official mirrors first (each
            request gives up after ``timeout`` seconds).

    Raises:
        DataError: a file is missing or corrupt (after the download, if any).
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = info.train if split == "train" else info.test
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = folder / name
    key = _cache_key(name, split, folder)
    if key in _LOADED:  # a process that trains several models (reproduce, tests) reads and checks once
        return _LOADED[key]
    loader = _load_cifar if name == "cifar10" else _load_mnist_style
    try:
        images, labels = loader(info, folder, files)
    except DataError as error:
        if not download:
            raise DataError(f"{error} (no download was tried)") from None
        names = [CIFAR_ARCHIVE.name] if name == "cifar10" else _failing_files(info, folder)
        failure = _download(info, names, folder, timeout)
        if failure is not None:
            raise DataError(f"{error} (the download failed: {failure})") from None
        images, labels = loader(info, folder, files)
        key = _cache_key(name, split, folder)
    while len(_LOADED) >= 2:  # keep a train and a test split: CIFAR-10's training set alone is 150 MB
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
    return _LOADED[key]


def normalize(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 images -> float32, scaled to [0, 1] and standardised per channel with a built-in data set's statistics."""
    info = dataset_info(name)
    return standardize(images, info.mean, info.std)


def standardize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images -> float32, scaled to [0, 1], minus ``mean`` and over ``std`` per channel."""
    mean_ = torch.tensor(mean).view(1, -1, 1, 1)
    std_ = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_) / std_


def iterate_batches(
    num_samples: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
    even_shards: bool = True,
) -> list[torch.Tensor]:
    """Index tensors of the batches of one epoch, this rank's shard only.

    The order is dealt out round-robin to the ranks. With ``even_shards`` (for
    training, where every rank must take the same number of steps) it is first
    padded by wrapping, as ``DistributedSampler`` does; without it (for
    evaluation, where sums are reduced) every sample is seen exactly once.
    """
    order = torch.randperm(num_samples, generator=generator) if shuffle else torch.arange(num_samples)
    if world_size > 1:
        total = -(-num_samples // world_size) * world_size if even_shards else num_samples
        order = torch.cat([order, order[: total - num_samples]])[rank::world_size]
    return list(order.split(batch_size))
