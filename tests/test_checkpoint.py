import json

import pytest
import torch
from torch import nn

from cemnet import checkpoint as ckpt


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
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
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
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 2}, {"epoch": 2})
    assert path.read_bytes() == before
    assert ckpt.load_state(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


@pytest.mark.parametrize("version", [1, 2])
def test_older_weights_are_migrated_and_refuse_to_resume(tmp_path, version, two_branch_layout):
    from safetensors.torch import save_file

    from cemnet.models import create_model
    from cemnet.nn import SpectralConv2d

    model = create_model("cemnet-mnist").eval()
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, SpectralConv2d) and version == 1:  # the version-1 layout (C_out, C_in, H, W, 2)
            weights[f"{name}.weight"] = weights[f"{name}.weight"].permute(4, 3, 0, 1, 2).contiguous()
    weights = two_branch_layout(weights, model.head)  # two MLPs up to version 2
    meta = {"model": "cemnet-mnist", "model_options": {}}
    header = {"format": "cemnet", "version": str(version), "token": "0", "meta": json.dumps(meta)}
    save_file(weights, str(tmp_path / "old.safetensors"), metadata=header)
    (tmp_path / "old.0.state.pt").write_bytes(b"")
    loaded, _ = ckpt.load_model(tmp_path / "old.safetensors")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded.eval()(x), model(x))
    with pytest.raises(ckpt.CheckpointError, match="cannot resume"):
        ckpt.load_state(tmp_path / "old.safetensors")
