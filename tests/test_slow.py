"""Long runs on real data: `make slow` (pytest -m slow). Minutes each on 2 CPU cores."""

import pytest

from cemnet.training import TrainConfig, train

pytestmark = pytest.mark.slow


def test_cemnet_mnist_five_epochs_reaches_98_5_percent(data_dir, tmp_path):
    summary = train(TrainConfig(model="cemnet-mnist", epochs=5, data_dir=str(data_dir), out=str(tmp_path),
                                progress=False, download=False))
    assert summary["test_accuracy"] >= 0.985


def test_lenet5_five_epochs(data_dir, tmp_path):
    summary = train(TrainConfig(model="lenet5", epochs=5, data_dir=str(data_dir), out=str(tmp_path),
                                progress=False, download=False))
    assert summary["test_accuracy"] >= 0.985


def test_cemnet_train_keeps_the_weights_it_trained_before_fixation_became_the_layers(cifar_dir):
    """20 seeded steps of each preset, as `scripts/weights_digest.py` prints them (torch kernels, one thread).

    The digests were printed by the code before Weight Fixation moved into the
    layers (and before the layer plan), on a 2-core AMD EPYC VM with torch
    2.13.0+cpu; another CPU's vector units may round differently.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "weights_digest.py"
    out = subprocess.run([sys.executable, str(script), "--models", "cemnet-mnist", "cemnet-small", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    digests = {" ".join(line.split()[:-1]): line.split()[-1] for line in out.splitlines()[1:] if line.strip()}
    assert digests == {
        "cemnet-mnist": "70564082063f4f4d", "cemnet-small": "7394e4e0fc0e9052",
        "cemnet-mnist -O half_spectrum=true": "a103aed9ebde0613",
        "cemnet-small -O half_spectrum=true": "59e99ba92f616224",
    }
