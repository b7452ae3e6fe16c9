"""The benchmark scripts run (smallest settings): a script that crashes would silently lose its numbers.

``compile_step.py`` is left out (a minute of compilation); ``dense_dft.py`` is
left out as it has no small setting.
"""

import subprocess
import sys
from pathlib import Path

from conftest import native_kernels_or_skip

ROOT = Path(__file__).resolve().parent.parent


def run_script(*arguments: str) -> str:
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_layer_times_lists_every_layer():
    out = run_script("benchmarks/layer_times.py", "cemnet-mnist", "-O", "half_spectrum=true", "--batch-size", "2",
                     "--repeats", "1")
    assert "SpectralBatchNorm2d" in out and "TwoBranchHead" in out and "total" in out


def test_profile_step_prints_a_profile():
    out = run_script("benchmarks/profile_step.py", "lenet5", "--batch-size", "2", "--rows", "3", "--device", "cpu")
    assert "Self CPU time total" in out


def test_pooling_benchmark_runs():
    out = run_script("benchmarks/pooling.py", "--repeats", "1")
    assert "| mnist 1: 100x6x28x28 |" in out and out.count("x |") >= 10  # ratio columns filled


def test_dropout_masks_benchmark_prints_the_three_ratios():
    out = run_script("benchmarks/dropout_masks.py", "cemnet-mnist", "-O", "half_spectrum=true", "--batch-size", "2",
                     "--repeats", "2", "--warmup", "0")
    assert "cemnet-mnist uniform / lenet5 uniform" in out and "lenet5 uniform / lenet5 bernoulli" in out


def test_native_kernels_benchmark_prints_the_pieces_and_step_ratios():
    native_kernels_or_skip()
    out = run_script("benchmarks/native_kernels.py", "cemnet-mnist", "-O", "half_spectrum=true", "--batch-size", "2",
                     "--repeats", "2", "--warmup", "0")
    assert "cemnet-mnist native / cemnet-mnist torch" in out and "lenet5 uniform native / lenet5 bernoulli" in out
    assert "noise factor (2, 6, 28, 15, 2) sigmas (0.125, 0.25): native / PyTorch" in out  # the first block's noise
    assert "batch norm (2, 16, 14, 8), forward + backward: native / PyTorch" in out  # the second block's norm
    assert out.count("x (quartiles") == 2 + 2 + 5  # two noise blocks, two batch norms, five step ratios


def test_draws_benchmark_prints_the_helper_thread_ratios_and_the_kernel():
    out = run_script("benchmarks/draws.py", "--sizes", "20000", "--repeats", "2")
    assert "20,000 numbers: alone" in out and "after a parallel operation" in out
    assert "native noise factor, 1 thread(s):" in out or "cannot be built" in out


def test_fixation_loss_measures_every_fixed_layer(tmp_path, cifar_dir):
    out = tmp_path / "loss.json"
    printed = run_script("benchmarks/fixation_loss.py", "--models", "cemnet-small", "--steps", "2", "--batch-size",
                         "4", "-O", "half_spectrum=true", "--out", str(out))
    import json

    result = json.loads(out.read_text())["results"]["cemnet-small"]
    assert set(result) == {"true", "gradient"} and len(result["true"]["fractions"]) == 5  # every block fixed
    assert all(0 <= value <= 1 for values in result["true"]["fractions"].values() for value in values)
    assert out.with_suffix(".png").is_file() and "features.1" in printed


def test_beyond_steps_prints_a_ratio_per_row(tmp_path):
    out = run_script("benchmarks/beyond_steps.py", "--repeats", "1", "--batch-size", "2", "--out",
                     str(tmp_path / "beyond.json"))
    assert out.count("x ±") == 6 and "small-half-every-layer" in out


def test_folder_speed_compares_a_folder_with_cifar10(tmp_path, cifar_dir):
    run_script("scripts/cifar_folder.py", str(tmp_path / "images"), "--per-class", "5")
    out = run_script("benchmarks/folder_speed.py", str(tmp_path / "images"), "-O", "half_spectrum=true")
    assert "first open (decoding)" in out and "ratio" in out
