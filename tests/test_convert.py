import pytest
import torch
from torch import nn

from cemnet.convert import to_frequency
from cemnet.models import create_model
from cemnet.nn import FFTConv2d


def _trained_looking(name, dtype):
    """A CNN with non-trivial batch-norm statistics, in eval mode (logits are then deterministic)."""
    model = create_model(name).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(module.running_mean)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["lenet5", "vgg-small"])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_converted_cnn_gives_the_same_logits(name, dtype, tolerance):
    model = _trained_looking(name, dtype)
    converted = to_frequency(model).eval()
    assert not any(isinstance(m, nn.Conv2d) for m in converted.modules())
    assert sum(isinstance(m, FFTConv2d) for m in converted.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in model.modules())
    spec = model.spec
    x = torch.randn(6, spec.in_channels, spec.image_size, spec.image_size, dtype=dtype)
    with torch.no_grad():
        difference = (model(x) - converted(x)).abs().max().item()
    assert difference <= tolerance


def test_fft_conv_is_the_zero_padded_conv_not_the_circular_one():
    conv = nn.Conv2d(2, 3, 5, padding=2, dtype=torch.float64)
    layer = FFTConv2d.from_conv2d(conv, (9, 7))
    x = torch.randn(2, 2, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-12)
    circular = nn.Conv2d(2, 3, 5, padding=2, padding_mode="circular", dtype=torch.float64)
    circular.load_state_dict(conv.state_dict())
    assert not torch.allclose(layer(x), circular(x))
    with pytest.raises(ValueError, match="zero padding"):
        FFTConv2d.from_conv2d(circular, 8)
    with pytest.raises(ValueError, match=r"expected \(B, C, 9, 7\)"):
        layer(torch.randn(2, 2, 8, 8, dtype=torch.float64))


def test_gradients_flow_through_the_converted_model():
    converted = to_frequency(create_model("lenet5"))
    converted(torch.randn(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in converted.parameters())


def test_convert_cli_round_trip(data_dir, tmp_path, capsys):
    from cemnet.cli import main

    args = ["--data-dir", str(data_dir), "--no-download"]
    assert main(["train", "--model", "lenet5", "--epochs", "1", "--limit-train", "300", "--limit-test", "500",
                 "--out", str(tmp_path), "--no-progress", *args]) == 0
    assert main(["convert", "--checkpoint", str(tmp_path / "best.safetensors"), "--model", "lenet5",
                 "--out", str(tmp_path / "freq.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "largest logit difference" in out and "frequency" in out
    assert main(["eval", "--checkpoint", str(tmp_path / "best.safetensors"), *args]) == 0
    spatial = capsys.readouterr().out.splitlines()[0]
    assert main(["eval", "--checkpoint", str(tmp_path / "freq.safetensors"), *args]) == 0
    assert capsys.readouterr().out.splitlines()[0].split("loss")[0] == spatial.split("loss")[0]
    assert main(["convert", "--checkpoint", str(tmp_path / "best.safetensors"), "--model", "vgg-small",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
