from pathlib import Path

import pytest
import torch

from cemnet import runtime
from cemnet.bench import BERNOULLI_NOTE, format_table, run_bench, step_peak_memory
from cemnet.cli import main
from cemnet.training.graphs import capture_cuda_graph


def test_bench_reports_both_twins_and_their_ratios():
    report = run_bench(("cemnet-mnist",), batch_size=8, repeats=2, warmup=1, memory=False)
    (pair,) = report["pairs"]
    assert pair["cemnet"]["model"] == "cemnet-mnist" and pair["cnn"]["model"] == "lenet5"
    for side in ("cemnet", "cnn"):
        assert pair[side]["train_step_s"] > 0 and pair[side]["inference_s"] > 0
    assert pair["ratio"]["train_step_s"] > 0 and pair["ratio_iqr"]["train_step_s"] >= 0
    assert report["machine"]["torch"] == torch.__version__
    assert report["machine"]["kernels"] == runtime.kernels_in_use(torch.device("cpu"))
    table = format_table(report)
    assert "cemnet-mnist / lenet5" in table and "n/a" in table and f"{report['machine']['kernels']} kernels" in table


def test_bench_passes_twin_options_to_the_cnn_only():
    report = run_bench(("cemnet-mnist",), batch_size=4, repeats=1, warmup=0, memory=False,
                       twin_options={"block_pool": True})
    (pair,) = report["pairs"]
    assert pair["cnn"]["options"] == {"block_pool": True} and pair["cemnet"]["options"] == {}
    assert "cemnet-mnist / lenet5 (block_pool=True)" in format_table(report)


def test_cpu_step_memory_counts_the_step_tensors():
    small = step_peak_memory("lenet5", 4, torch.device("cpu"), {})
    large = step_peak_memory("lenet5", 400, torch.device("cpu"), {})
    first_activation = 400 * 6 * 28 * 28 * 4  # conv1's float32 output, kept for backward
    assert 0 < small < first_activation < large
    assert large < 100 * first_activation  # the step's tensors, not the process's code pages


def test_table_notes_the_cnns_serial_dropout_off_intel_cpus():
    report = run_bench(("cemnet-mnist",), batch_size=4, repeats=1, warmup=0, memory=False)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "vendor_id" in cpuinfo:  # the vendor PyTorch's choice depends on
        assert report["machine"]["cpu_vendor"] in cpuinfo
    for vendor, device, twin_options, noted in (
        ("AuthenticAMD", "cpu", {}, True),
        ("GenuineIntel", "cpu", {}, False),  # MKL's parallel Bernoulli path
        ("AuthenticAMD", "cuda", {}, False),
        ("AuthenticAMD", "cpu", {"dropout_mask": "uniform"}, False),  # already compared without it
        (None, "cpu", {}, False),  # vendor unknown: say nothing
    ):
        report["machine"].update(cpu_vendor=vendor, device=device)
        report["pairs"][0]["cnn"]["options"] = twin_options
        assert (BERNOULLI_NOTE in format_table(report)) is noted


def test_cuda_graphs_are_refused_off_cuda(capsys):
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, got cpu"):
        capture_cuda_graph(lambda: None, torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        run_bench(("cemnet-mnist",), device=torch.device("cpu"), cuda_graphs=True)
    assert main(["bench", "--device", "cpu", "--cuda-graphs", "--models", "cemnet-mnist"]) != 0
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err
