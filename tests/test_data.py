import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from cemnet import data
from cemnet.data import (
    DataError,
    iterate_batches,
    load_dataset,
    normalize,
    parse_cifar_batch,
    parse_idx,
)


def test_real_mnist_loads_and_is_verified(data_dir):
    images, labels = load_dataset("mnist", "test", data_dir)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and set(labels.tolist()) == set(range(10))
    train_images, _ = load_dataset("mnist", "train", data_dir)
    assert train_images.shape == (60_000, 1, 28, 28)


def test_decompressed_files_are_accepted(data_dir, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(gzip.decompress((data_dir / "mnist" / f"{name}.gz").read_bytes()))
    images, labels = load_dataset("mnist", "test", tmp_path)
    reference, _ = load_dataset("mnist", "test", data_dir)
    assert torch.equal(images, reference) and len(labels) == 10_000


def test_missing_files_name_the_file_md5_and_folder(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("mnist", "test", tmp_path)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "2646ac647ad5339dbf082846283269ea" in message
    assert str(tmp_path / "mnist") in message


def test_corrupt_file_is_refused(data_dir, tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    content = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    content[100] ^= 0xFF
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"corrupt \(md5 [0-9a-f]{32}\)"):
        load_dataset("mnist", "test", tmp_path)


def test_truncated_gzip_is_refused(data_dir, tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    raw = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").chmod(0o644)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", "test", tmp_path)


def test_environment_variable_sets_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("CEMNET_DATA", str(tmp_path))
    assert data.default_data_dir() == tmp_path


def test_parse_idx():
    content = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(6)
    assert parse_idx(content).shape == (2, 3, 1)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01")
    with pytest.raises(ValueError, match="holds 5"):
        parse_idx(content[:-1])


def _cifar_batch(n):
    rng = np.random.default_rng(0)
    return {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def test_cifar_reader_on_a_small_batch_in_the_official_layout():
    batch = _cifar_batch(7)
    images, labels = parse_cifar_batch(pickle.dumps(batch, protocol=2))
    assert images.shape == (7, 3, 32, 32) and labels.tolist() == batch[b"labels"]
    # R, G, B planes of 32x32, row-major.
    assert images[3, 1, 2, 5] == batch[b"data"][3, 1024 + 2 * 32 + 5]


def test_cifar_reader_refuses_arbitrary_objects():
    with pytest.raises(ValueError, match="refusing to unpickle shutil.rmtree"):
        parse_cifar_batch(pickle.dumps({b"data": shutil.rmtree}))


def test_real_cifar_test_split(data_dir):
    if not (data_dir / "cifar10").is_dir():
        pytest.skip("CIFAR-10 not present")
    images, labels = load_dataset("cifar10", "test", data_dir)
    assert images.shape == (10_000, 3, 32, 32) and labels.bincount().tolist() == [1000] * 10


def test_cifar_archive_with_wrong_md5_is_refused(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "test", tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; expected one of"):
        load_dataset("svhn")


def test_normalize_standardises():
    images = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(normalize(images, "mnist"), torch.full((2, 1, 4, 4), (1 - 0.1307) / 0.3081))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_batches_shard_the_epoch(world_size):
    generator = torch.Generator().manual_seed(0)
    shards = [iterate_batches(10, 2, True, generator.manual_seed(0), rank, world_size) for rank in range(world_size)]
    seen = torch.cat([torch.cat(batches) for batches in shards])
    assert set(seen.tolist()) == set(range(10))
    assert len({len(torch.cat(batches)) for batches in shards}) == 1  # every rank takes as many samples
    exact = [torch.cat(iterate_batches(10, 2, False, None, r, world_size, even_shards=False)) for r in range(world_size)]
    assert sorted(torch.cat(exact).tolist()) == list(range(10))


def _idx(array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_fashion_mnist_reader(tmp_path):
    """Only archive digests are published for Fashion-MNIST: uncompressed files are
    checked by their IDX structure, gzip files by the official archive md5."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx(images))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(5)))
    loaded, labels = load_dataset("fashion-mnist", "test", tmp_path)
    assert loaded.shape == (5, 1, 28, 28) and torch.equal(loaded[:, 0], torch.from_numpy(images).to(torch.uint8))
    assert labels.tolist() == [0, 1, 2, 3, 4]
    (folder / "t10k-labels-idx1-ubyte").unlink()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(5))))
    with pytest.raises(DataError, match="bb300cfdad3c16e7a12a480ee83cd310"):  # not the official archive
        load_dataset("fashion-mnist", "test", tmp_path)
