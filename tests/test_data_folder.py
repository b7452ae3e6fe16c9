"""cemnet.data.folder: your own images as a data set, through `cemnet train --dataset folder:PATH` and `fit`."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cemnet
from cemnet.cli import EXIT_USAGE, main
from cemnet.data import folder, open_dataset, scan_folder
from cemnet.training import TrainConfig, fit

QUICK = ["--model", "cemnet-mnist", "--image-size", "16", "--epochs", "2", "--batch-size", "10",
         "--bn-recalibration", "20", "--no-progress"]


def _image(path, mode, size, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_folder(root, classes=("cat", "dog", "owl"), per_class=12, test=True, modes=("RGB",)):
    """A small image folder: mixed sizes, and the modes asked for, cycled over the files."""
    count = 0
    for split in ("train", "test") if test else ("",):
        for label, name in enumerate(classes):
            for index in range(per_class if split != "test" else per_class // 3):
                size = (20 + 3 * (index % 4), 18 + 5 * (index % 3))
                suffix = ".png" if index % 3 else (".bmp" if index % 2 else ".jpg")
                mode = modes[count % len(modes)]
                if mode != "RGB" and suffix != ".png":
                    suffix = ".png"  # RGBA, P and 16-bit images live in PNGs
                _image(root / split / name / f"{index}{suffix}", mode, size, seed=count)
                count += 1
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "_cache_folder", lambda: tmp_path / "cache")
    folder._DECODED.clear()


def test_a_folder_is_scanned_decoded_and_normalised(tmp_path, capsys):
    root = make_folder(tmp_path / "images", modes=("RGB", "RGBA", "P", "L", "I;16"))
    scan = scan_folder(root)
    assert scan.classes == ("cat", "dog", "owl") and len(scan.train) == 36 and len(scan.test) == 12
    assert scan.channels == 3  # most files are colour
    dataset = open_dataset(f"folder:{root}", image_size=16)
    images, labels = dataset.split("train")
    assert images.shape == (36, 3, 16, 16) and images.dtype == torch.uint8 and labels.tolist()[:3] == [0, 0, 0]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "images in" in warnings[0] and "converted to RGB" in warnings[0]
    normalised = dataset.normalize(images).double()
    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)


def test_decoding_happens_once_per_folder_content(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images", per_class=3)
    first = open_dataset(f"folder:{root}", image_size=8).split("train")[0]
    folder._DECODED.clear()  # a new process: only the cache file remains

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "_decode", no_decoding)
    assert torch.equal(open_dataset(f"folder:{root}", image_size=8).split("train")[0], first)
    _image(root / "train" / "cat" / "new.png", "RGB", (20, 20), seed=99)  # a changed folder is read again
    with pytest.raises(AssertionError, match="decoded again"):
        open_dataset(f"folder:{root}", image_size=8)


def test_without_test_folder_each_class_is_split_by_a_seed(tmp_path):
    root = make_folder(tmp_path / "flat", per_class=10, test=False)
    scan = scan_folder(root, test_fraction=0.3)
    assert len(scan.test) == 9 and len(scan.train) == 21
    assert {scan.labels[i] for i in scan.test} == {0, 1, 2}
    assert scan_folder(root, test_fraction=0.3).test == scan.test  # the same split every time


def test_train_resume_exactly_and_evaluate_on_a_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "images")
    whole, split = tmp_path / "whole", tmp_path / "split"
    data = ["--dataset", f"folder:{root}"]
    assert main(["train", *QUICK, *data, "--out", str(whole)]) == 0
    assert main(["train", *QUICK, *data, "--out", str(split), "--stop-after", "1"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--no-progress"]) == 0
    weights = [load_file(str(run / "last.safetensors")) for run in (split, whole)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(whole / "best.safetensors")]) == 0
    out = capsys.readouterr().out
    assert f"on folder:{root} test (12 images)" in out and "owl:" in out


def _bad_folder(tmp_path, case):
    root = tmp_path / case
    if case == "missing":
        return root
    if case == "no-images":
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "notes.txt").write_text("no images here")
        return root
    make_folder(root, per_class=3)
    if case == "broken":
        (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    elif case == "extra-test-class":
        _image(root / "test" / "emu" / "0.png", "RGB", (20, 20), seed=1)
    elif case == "empty-class":
        (root / "train" / "yak").mkdir()
    elif case == "one-class":
        for name in ("dog", "owl"):
            for split in ("train", "test"):
                for path in (root / split / name).iterdir():
                    path.unlink()
                (root / split / name).rmdir()
    return root


@pytest.mark.parametrize("case,message", [
    ("missing", "no such folder"),
    ("no-images", "holds no image"),
    ("broken", "cannot decode the image"),
    ("extra-test-class", "test/ holds classes that train/ lacks: ['emu']"),
    ("empty-class", "the class folder"),
    ("one-class", "only one class (cat); a classifier needs at least two"),
])
def test_bad_folders_are_one_line_and_write_nothing(tmp_path, capsys, case, message):
    root = _bad_folder(tmp_path, case)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--dataset", f"folder:{root}", "--out", str(out)]) == EXIT_USAGE
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("cemnet: error: ") and message in lines[0]
    if case == "broken":
        assert "broken.png" in lines[0]
    assert not out.exists()


def test_a_side_the_pools_do_not_divide_is_refused_naming_what_fits(tmp_path, capsys):
    root = make_folder(tmp_path / "images", per_class=3)
    assert main(["train", "--model", "cemnet-small", "--dataset", f"folder:{root}", "--image-size", "48",
                 "--out", str(tmp_path / "run")]) == EXIT_USAGE
    assert "48 is not (sides that fit nearby: 32 or 64; --image-size)" in capsys.readouterr().err


def test_fit_trains_a_from_cnn_twin_on_a_tensor_dataset(tmp_path):
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 4))
    twin = cemnet.from_cnn(cnn, half_spectrum=True)
    x, y = torch.randn(60, 3, 16, 16), torch.randint(0, 4, (60,))
    train_data = torch.utils.data.TensorDataset(x[:40], y[:40])
    test_data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[40:], y[40:]), batch_size=7)
    config = TrainConfig(model=None, epochs=2, batch_size=10, out=str(tmp_path / "run"), progress=False,
                         bn_recalibration=0)
    summary = fit(twin, train_data, test_data, config)
    assert summary["epochs_run"] == 2 and (tmp_path / "run" / "last.safetensors").is_file()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and float(rows[2].split(",")[2]) < float(rows[1].split(",")[2])  # the loss falls
    with pytest.raises(ValueError, match="must be a Dataset"):
        fit(twin, [1, 2, 3], test_data, TrainConfig(model=None, out=str(tmp_path / "other"), progress=False))
