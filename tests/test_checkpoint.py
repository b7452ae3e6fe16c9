
import pytest
import torch
from torch import nn

from cemnet.training import checkpoint as ckpt


def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_round_trip(tmp_path):
    model = _model()
    ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 2}, {"epoch": 2, "optimizer": {"x": torch.ones(2)}})
    other = _model()
    header = ckpt.load_weights(tmp_path / "last.safetensors", other)
    assert header["meta"] == {"epoch": 2}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    state = ckpt.load_state(tmp_path / "last.safetensors")
    assert state["epoch"] == 2 and torch.equal(state["optimizer"]["x"], torch.ones(2))
    assert len(list(tmp_path.glob("last.*.state.pt"))) == 1


def test_truncated_weights_give_a_clear_error(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, "last", _model(), {})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_weights(path, _model())


def test_garbage_state_gives_a_clear_error(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, "last", _model(), {}, {"epoch": 1})
    next(tmp_path.glob("last.*.state.pt")).write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="is corrupt: it does not match the checksum"):
        ckpt.load_state(path)


def test_missing_and_mismatched_checkpoints(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_weights(tmp_path / "none.safetensors", _model())
    path = ckpt.save_checkpoint(tmp_path, "last", _model(), {})
    with pytest.raises(ckpt.CheckpointError, match="does not fit the model"):
        ckpt.load_weights(path, nn.Linear(3, 5))


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 1}, {"epoch": 1})
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(ckpt.CheckpointError, match=r"cannot write .*last.safetensors \(No space left on device; [0-9.]+ MiB free there\); the previous"):
        ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 2}, {"epoch": 2})
    assert path.read_bytes() == before
    assert ckpt.load_state(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


