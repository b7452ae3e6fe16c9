"""``cemnet bench``: each CEMNet preset against its CNN twin, in one process, same batch and threads.

For every pair it measures, after warm-up:

* a training step: the trainer's own (:class:`cemnet.training.TrainingStep`:
  forward, loss, backward, RMSProp step, schedule and Weight Fixation);
* inference: an eval-mode forward without autograd;
* the peak tensor memory of a training step above what the model, its
  optimizer state and the batch already hold (:func:`step_peak_memory`);

and reports medians with their interquartile range, images per second, and
the CEMNet / CNN ratio of each. The two twins' steps are interleaved and the
ratio is the median of the per-repetition ratios (:func:`cemnet.timing.time_pair`),
which cancels most of a shared machine's drift. Performance is never asserted
in tests: the ratios printed here are the measurement.

On CUDA, ``cuda_graphs=True`` records each step and each inference once as
a CUDA graph (:func:`capture_cuda_graph`) and times the graphs' replays, for
both twins: a CEMNet step launches several times the CNN's kernels, and a
graph removes what the launches cost on the host. The memory column still
measures eager steps.

The CNN twins can be run with pooling and dropout layers that compute the
same functions as the CEMNets' code (:mod:`cemnet.bench.fair_twins`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from cemnet import runtime
from cemnet.bench.fair_twins import make_fair, split_options
from cemnet.models import create_model, model_info
from cemnet.timing import Timing, paired_ratio, time_pair
from cemnet.training import PRESETS, TrainingStep
from cemnet.training.graphs import capture_cuda_graph, require_cuda_for_graphs

PAIRS = ("cemnet-mnist", "cemnet-small", "cemnet-large")


def training_step(name: str, batch_size: int, device: torch.device, options: dict[str, Any],
                  cuda_graph: bool = False):
    """A preset, a fixed random batch, and a closure running one training step of the paper's recipe on it.

    The step is :class:`cemnet.training.TrainingStep`, the trainer's own
    (here with a schedule of 1,000 steps). ``options`` are the preset's
    overrides plus the fairness options of :mod:`cemnet.bench.fair_twins`.
    With ``cuda_graph`` the closure replays a CUDA graph of the step
    (:func:`cemnet.training.graphs.capture_cuda_graph`; the optimizer is made
    ``capturable``), after warm-up steps that already trained the model.
    """
    model_options, fairness = split_options(options)
    model = make_fair(create_model(name, **model_options), **fairness).to(device).train()
    step = TrainingStep(model, PRESETS["paper"], total_steps=1000, capturable=cuda_graph)
    spec = model.spec
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, spec.in_channels, spec.image_size, spec.image_size, generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (batch_size,), generator=generator).to(device)

    def run() -> None:
        step(x, y)

    return model, x, capture_cuda_graph(run, device) if cuda_graph else run


def step_peak_memory(name: str, batch_size: int, device: torch.device, options: dict[str, Any]) -> int:
    """Peak bytes of tensor memory a training step allocates beyond what exists before it.

    The step measured is the second one: the first creates the optimizer's
    state, which belongs to the model's footprint rather than to a step. CUDA
    reads the caching allocator's statistics; CPU replays the allocations and
    frees PyTorch's profiler records for its CPU allocator and takes the peak
    of their running sum. Scratch memory that libraries allocate themselves
    (oneDNN, pocketfft, cuFFT plans) is in neither count. The process's peak
    resident set is no substitute: it is dominated by the library code pages a
    first step touches, not by the step's tensors.
    """
    _, _, step = training_step(name, batch_size, device, options)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    allocations = sorted((event["ts"], event["args"]["Bytes"]) for event in events if event.get("name") == "[memory]")
    # Frees of blocks allocated before the step carry no size, so the sum counts only the step's own tensors.
    return max(itertools.accumulate((size for _, size in allocations), initial=0))


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's start/stop lines, which its C++ side writes straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _summary(name: str, options: dict[str, Any], batch_size: int, train: Timing, infer: Timing,
             memory: int | None) -> dict[str, Any]:
    return {
        "model": name, "options": options,
        "train_step_s": train.median, "train_step_iqr_s": train.spread,
        "inference_s": infer.median, "inference_iqr_s": infer.spread,
        "train_images_per_s": batch_size / train.median, "inference_images_per_s": batch_size / infer.median,
        "step_peak_bytes": memory,
    }


def bench_pair(name: str, batch_size: int = 100, device: torch.device | None = None, repeats: int = 5,
               warmup: int = 2, options: dict[str, Any] | None = None, memory: bool = True,
               twin_options: dict[str, Any] | None = None, cuda_graphs: bool = False) -> dict[str, Any]:
    """A CEMNet preset and its CNN twin, their steps interleaved; see the module docstring.

    ``options`` and ``twin_options`` override the presets of the CEMNet and
    of the CNN. ``ratio`` holds the medians of the per-repetition CEMNet / CNN
    ratios (``ratio_iqr`` their interquartile ranges) and the ratio of peak memories.
    """
    device = device or torch.device("cpu")
    if cuda_graphs:
        require_cuda_for_graphs(device)  # before building any model
    options, twin_options = options or {}, twin_options or {}
    twin = model_info(name).twin
    if twin is None:
        raise ValueError(f"{name!r} has no CNN twin to compare with")
    if twin == name:  # your own model (FILE.py:FUNCTION): its CNN is the same name, as_cnn
        twin_options = {"as_cnn": True, **twin_options}
    cemnet, x_cemnet, step_cemnet = training_step(name, batch_size, device, options, cuda_graphs)
    cnn, x_cnn, step_cnn = training_step(twin, batch_size, device, twin_options, cuda_graphs)
    train = time_pair(step_cemnet, step_cnn, repeats, warmup, device)
    cemnet.eval()
    cnn.eval()
    with torch.no_grad():
        forwards = [lambda: cemnet(x_cemnet), lambda: cnn(x_cnn)]
        if cuda_graphs:
            forwards = [capture_cuda_graph(forward, device) for forward in forwards]
        infer = time_pair(*forwards, repeats, warmup, device)
    memories = [step_peak_memory(n, batch_size, device, o) if memory else None
                for n, o in ((name, options), (twin, twin_options))]
    ratio = {"train_step_s": paired_ratio(*train), "inference_s": paired_ratio(*infer)}
    result = {
        "cemnet": _summary(name, options, batch_size, train[0], infer[0], memories[0]),
        "cnn": _summary(twin, twin_options, batch_size, train[1], infer[1], memories[1]),
        "ratio": {key: timing.median for key, timing in ratio.items()},
        "ratio_iqr": {key: timing.spread for key, timing in ratio.items()},
    }
    if memory:
        result["ratio"]["step_peak_bytes"] = memories[0] / memories[1]
    return result


def machine() -> dict[str, Any]:
    """What the numbers were measured on (``cpu_vendor``: ``/proc/cpuinfo``'s ``vendor_id``, or ``None``)."""
    cpuinfo = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                cpuinfo.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {
        "date": date.today().isoformat(), "cpu": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": cpuinfo.get("vendor_id"), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_bench(pairs: tuple[str, ...] = PAIRS, batch_size: int = 100, device: torch.device | None = None,
              repeats: int = 5, warmup: int = 2, options: dict[str, Any] | None = None,
              memory: bool = True, twin_options: dict[str, Any] | None = None,
              cuda_graphs: bool = False) -> dict[str, Any]:
    """Benchmark each CEMNet in ``pairs`` and its twin (:func:`bench_pair`); returns the JSON-ready results."""
    device = device or torch.device("cpu")
    results = [bench_pair(name, batch_size, device, repeats, warmup, options, memory, twin_options, cuda_graphs)
               for name in pairs]
    info = {**machine(), "device": str(device), "batch_size": batch_size, "cuda_graphs": cuda_graphs,
            "kernels": runtime.kernels_in_use(device)}
    return {"machine": info, "pairs": results}


def format_table(report: dict[str, Any]) -> str:
    """The results as a markdown table (milliseconds, MiB, CEMNet / CNN ratios)."""
    info = report["machine"]
    lines = [
        f"{info['date']}, {info['cpu']}, {info['threads']} threads, torch {info['torch']}, device {info['device']}, "
        f"batch {info['batch_size']}" + (", CUDA graphs (memory: eager steps)" if info.get("cuda_graphs") else "")
        + (f", {info['kernels']} kernels" if "kernels" in info else ""),
        "",
        "| CEMNet / CNN | train step ms (median ± IQR) | ratio ± IQR | inference ms | ratio ± IQR | step memory MiB "
        "| ratio | train img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in report["pairs"]:
        a, b, r, q = pair["cemnet"], pair["cnn"], pair["ratio"], pair["ratio_iqr"]
        memory = "n/a | n/a"
        if a["step_peak_bytes"] is not None:
            memory = f"{a['step_peak_bytes'] / 2**20:.0f} / {b['step_peak_bytes'] / 2**20:.0f} | {r['step_peak_bytes']:.2f}x"
        lines.append(
            f"| {_label(a)} / {_label(b)} | {1e3 * a['train_step_s']:.1f} ± {1e3 * a['train_step_iqr_s']:.1f} / "
            f"{1e3 * b['train_step_s']:.1f} ± {1e3 * b['train_step_iqr_s']:.1f} | "
            f"{r['train_step_s']:.2f}x ± {q['train_step_s']:.2f} | {1e3 * a['inference_s']:.1f} / {1e3 * b['inference_s']:.1f} | "
            f"{r['inference_s']:.2f}x ± {q['inference_s']:.2f} | {memory} | "
            f"{a['train_images_per_s']:.0f} / {b['train_images_per_s']:.0f} |"
        )
    if _bernoulli_fallback(report):
        lines += ["", BERNOULLI_NOTE]
    return "\n".join(lines)


BERNOULLI_NOTE = (
    "Note: on a CPU that is not Intel's, PyTorch draws nn.Dropout's masks serially (its parallel MKL path is "
    "Intel-only), which slows the CNNs; -O dropout_mask=uniform -T dropout_mask=uniform compares the twins "
    "without it, their masks drawn by the generator of the CEMNets' noise (docs/performance.md, "
    "\"Dropout on CPUs that are not Intel's\")."
)


def _bernoulli_fallback(report: dict[str, Any]) -> bool:
    """Whether a CNN of the report ran ``nn.Dropout`` on a CPU other than Intel's (PyTorch's serial Bernoulli)."""
    info = report["machine"]
    if not info.get("device", "").startswith("cpu") or info.get("cpu_vendor") in (None, "GenuineIntel"):
        return False
    return any(pair["cnn"]["options"].get("dropout_mask", "bernoulli") == "bernoulli" for pair in report["pairs"])


def _label(summary: dict[str, Any]) -> str:
    """A model's name with its preset overrides, e.g. ``lenet5 (block_pool=True)``."""
    options = ", ".join(f"{key}={value}" for key, value in summary["options"].items())
    return f"{summary['model']} ({options})" if options else summary["model"]


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
