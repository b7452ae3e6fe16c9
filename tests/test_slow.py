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
