"""cemnet.models.user_file: `--model FILE.py:FUNCTION` trains, resumes, evaluates and counts your own CNN."""

import textwrap

import pytest
from safetensors.torch import load_file

from cemnet.cli import EXIT_USAGE, main
from cemnet.models import create_model, model_info
from cemnet.nn import SpectralConv2d

OWN_CNN = textwrap.dedent('''
    import torch
    from torch import nn


    def own_cnn():
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10),
        )


    def broken():
        raise RuntimeError("boom")


    def not_a_model():
        return 3
''')
QUICK = ["--epochs", "2", "--limit-train", "200", "--limit-test", "100", "--batch-size", "50", "--bn-recalibration",
         "100", "--no-progress", "--no-download"]


@pytest.fixture
def own(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(OWN_CNN)
    return f"{path}:own_cnn"


def test_your_own_cnn_is_its_own_twin(own):
    info = model_info(own)
    assert info.twin == own and info.dataset is None and "as_cnn" in info.options
    twin, cnn = create_model(own, half_spectrum=True), create_model(own, as_cnn=True)
    assert sum(isinstance(m, SpectralConv2d) for m in twin.modules()) == 2
    assert cnn.spec == twin.spec  # both twins on the same plan


def test_train_resume_exactly_and_evaluate_your_own_cnn(own, cifar_dir, tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ["train", "--model", own, "--dataset", "cifar10", "--data-dir", str(cifar_dir), *QUICK]
    assert main([*args, "--out", str(whole)]) == 0
    assert main([*args, "--out", str(split), "--stop-after", "1"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--data-dir", str(cifar_dir), "--no-progress"]) == 0
    rows = [(split / "metrics.csv").read_text().splitlines(), (whole / "metrics.csv").read_text().splitlines()]
    assert [row.split(",")[:6] for row in rows[0]] == [row.split(",")[:6] for row in rows[1]]
    losses = [float(row.split(",")[2]) for row in rows[1][1:]]
    assert losses[1] < losses[0]  # it learns
    weights = [load_file(str(folder / "last.safetensors")) for folder in (split, whole)]
    assert all((weights[0][key] == weights[1][key]).all() for key in weights[1])  # resumed exactly
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(whole / "best.safetensors"), "--data-dir", str(cifar_dir)]) == 0
    assert f"{own} on cifar10 test" in capsys.readouterr().out


def test_a_changed_file_is_refused_by_resume_and_eval(own, cifar_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", own, "--data-dir", str(cifar_dir), *QUICK, "--out", str(run),
                 "--stop-after", "1"]) == 0
    path = own.rpartition(":")[0]
    with open(path, "a") as handle:
        handle.write("# edited\n")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(cifar_dir)]) == EXIT_USAGE
    assert "the file changed since this run was trained" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run / "last.safetensors"), "--data-dir", str(cifar_dir)]) == EXIT_USAGE
    assert "whose file changed since it was trained" in capsys.readouterr().err


@pytest.mark.parametrize("function,message", [
    ("nothing", "has no function 'nothing' (its functions: ['broken', 'not_a_model', 'own_cnn'])"),
    ("broken", "broken() raised RuntimeError: boom"),
    ("not_a_model", "not_a_model() returned an object of type int, not a torch.nn.Module"),
])
def test_a_bad_function_is_one_line(own, tmp_path, capsys, function, message):
    path = own.rpartition(":")[0]
    assert main(["ops", "--model", f"{path}:{function}"]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert main(["train", "--model", str(tmp_path / "missing.py:f"), "--out", str(tmp_path / "r")]) == EXIT_USAGE
    assert "missing.py" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_ops_counts_both_twins(own, capsys):
    assert main(["ops", "--model", own]) == 0
    frequency = capsys.readouterr().out
    assert main(["ops", "--model", own, "--as-cnn"]) == 0
    spatial = capsys.readouterr().out
    assert "SpectralConv2d" in frequency and "Conv2d" in spatial and "SpectralConv2d" not in spatial
