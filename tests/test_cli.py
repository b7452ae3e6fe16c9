import json
import os
import subprocess
import sys

import pytest

from cemnet.cli import build_parser, main
from cemnet.models import parse_option


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cemnet", *args], capture_output=True, text=True, timeout=300)


def test_wrong_data_dir_gives_one_clear_message_and_exit_2(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path / "nowhere"), "--no-download", "--epochs", "1",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing train-images-idx3-ubyte.gz" in result.stderr
    assert "6bbc9ace898e44ae57da46a324031adb" in result.stderr
    assert str(tmp_path / "nowhere" / "mnist") in result.stderr


def test_every_subcommand_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description and len(text) > 100, name
    assert "--resume" in commands["train"].format_help()


def test_models_lists_presets_with_parameter_counts(capsys):
    assert main(["models", "cemnet-*"]) == 0
    out = capsys.readouterr().out
    assert "cemnet-mnist" in out and "257,954" in out and "lenet5" in out  # lenet5 is the twin column
    assert not any(line.startswith("vgg-small") for line in out.splitlines())


def test_train_then_eval_a_checkpoint(data_dir, tmp_path, capsys):
    args = ["--data-dir", str(data_dir), "--no-download"]
    assert main(["train", "--model", "lenet5", "--epochs", "1", "--limit-train", "500", "--limit-test", "300",
                 "--out", str(tmp_path), "--no-progress", "-O", "dropout=false", *args]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(tmp_path / "best.safetensors"), *args]) == 0
    out = capsys.readouterr().out
    assert "10000 images" in out and "error rate" in out
    assert out.count(": 0.") + out.count(": 1.0") >= 10  # one line per class


def test_eval_of_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    result = run_cli("eval", "--checkpoint", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is corrupt or truncated" in result.stderr


def test_parse_option():
    assert parse_option("weight_fixation=false") == ("weight_fixation", False)
    assert parse_option("leaky_sigma=0.0833") == ("leaky_sigma", 0.0833)
    assert parse_option("storage=spatial") == ("storage", "spatial")
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_option("novalue")


def test_bench_options_reach_each_twin(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "cemnet-mnist", "--batch-size", "4", "--repeats", "1", "--warmup", "0",
                 "--no-memory", "-O", "half_spectrum=true", "-T", "block_pool=true", "--out", str(out)]) == 0
    assert "cemnet-mnist (half_spectrum=True) / lenet5 (block_pool=True)" in capsys.readouterr().out
    (pair,) = json.loads(out.read_text())["pairs"]
    assert pair["cemnet"]["options"] == {"half_spectrum": True} and pair["cnn"]["options"] == {"block_pool": True}


def test_nothing_is_compiled_before_a_layer_computes(tmp_path):
    """`import cemnet`, `cemnet models`, `cemnet ops` and `--help` build no native kernels (they compute nothing)."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "CEMNET_KERNELS": "native"}
    for command in (["-c", "import cemnet, cemnet.nn, cemnet.training, cemnet.bench"], ["-m", "cemnet", "models"],
                    ["-m", "cemnet", "ops", "--model", "cemnet-large"], ["-m", "cemnet", "train", "--help"]):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "compiling" not in done.stderr
    assert not (tmp_path / "ext").exists()
