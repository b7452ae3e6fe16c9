import pytest

from cemnet.models import create_model
from cemnet.training.checkpoint import save_checkpoint

pytest.importorskip("matplotlib")

from cemnet.plot import plot_curves, plot_kernels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_curves_and_kernels_are_valid_pngs(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,epoch_seconds,images_per_second\n"
        "1,0.002,0.5,0.85,0.3,0.9,10,6000\n2,1e-07,0.3,0.9,0.2,0.95,10,6000\n"
    )
    curves = plot_curves(tmp_path)
    assert curves.read_bytes()[:8] == PNG_MAGIC and curves.stat().st_size > 10_000
    for name in ("cemnet-mnist", "lenet5"):
        path = save_checkpoint(tmp_path, name, create_model(name), {"model": name, "model_options": {}, "epoch": 1})
        kernels = plot_kernels(path)
        assert kernels.read_bytes()[:8] == PNG_MAGIC and kernels.stat().st_size > 10_000


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv not found"):
        plot_curves(tmp_path)
