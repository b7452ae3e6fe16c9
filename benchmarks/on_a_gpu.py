"""What does a GPU change? One run on a CUDA machine: its tests, the benchmarks, graphed training, Table 2 rows.

Usage: python benchmarks/on_a_gpu.py --data-dir DATA [--minutes 12] [--epochs 100] [--out runs/gpu]

Made for a GPU that is available for a short, fixed time: every stage has a
time limit and writes what it measured to ``OUT/on-a-gpu.json`` as soon as
it ends, so that an interrupted run still leaves its numbers. In order:

1. ``pytest tests/test_cuda.py`` (the GPU against the CPU, graphed training);
2. ``cemnet bench --device cuda --cuda-graphs`` for the half-spectrum and the
   faithful models (CEMNet / CNN step ratios, CUDA graphs for both twins),
   and the half-spectrum models eager with their step memory;
3. rows of the paper's Table 2 (CIFAR-10), in this order: the small CNN, the
   small CEMNet, its three ablations, FCNN's reconstruction, the large CNN and
   CEMNet; then the rows beyond the paper (``cemnet reproduce beyond`` and
   ``fixation``: the true nonlinearities, the spatial first stage and the
   Weight Fixation variants, for the small and the large CEMNet); each
   ``cemnet train --epochs EPOCHS`` (its step replayed as a CUDA graph),
   until the time is up. A row still training then is stopped with
   SIGTERM, which saves it; the JSON says how many epochs each row ran. The
   images per second of the graphed training come from the rows' metrics.

``--device cpu --limit-train 200 --minutes 3 --epochs 1`` runs the same
stages on a CPU in a few minutes, to check the script itself.
"""

import argparse
import csv
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROWS = [  # (row, model, options): the order in which Table 2's rows are trained
    ("vgg-small", "vgg-small", []),
    ("small-cemnet", "cemnet-small", []),
    ("small-wf-bn-dropout", "cemnet-small", ["-O", "weight_fixation=false", "-O", "batch_norm=false",
                                             "-O", "dropout=false"]),
    ("small-bn-dropout", "cemnet-small", ["-O", "batch_norm=false", "-O", "dropout=false"]),
    ("small-dropout", "cemnet-small", ["-O", "dropout=false"]),
    ("fcnn", "fcnn-small", []),
    ("vgg-large", "vgg-large", []),
    ("large-cemnet", "cemnet-large", []),
    # Beyond the paper: the same options as `cemnet reproduce beyond` and `fixation`, at this script's epochs.
    *[(f"{size}-half{suffix}", f"cemnet-{size}", ["-O", "half_spectrum=true", *options])
      for size in ("small", "large")
      for suffix, options in (("", []), ("-at-pools", ["-O", "nonlinearity=at-pools"]),
                              ("-every-layer", ["-O", "nonlinearity=every-layer"]),
                              ("-split", ["-O", "nonlinearity=split"]),
                              ("-spatial-1", ["-O", "spatial_stages=1"]),
                              ("-fix-all", ["-O", "fixed_stages=5"]),
                              ("-free", ["-O", "weight_fixation=false"]),
                              ("-gradient", ["-O", "weight_fixation=gradient"]),
                              ("-spatial-storage", ["-O", "storage=spatial"]))],
]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True, help="the folder holding cifar10/ (and mnist/ for the tests)")
parser.add_argument("--minutes", type=float, default=12.0, help="wall-clock time for all stages (default: 12)")
parser.add_argument("--epochs", type=int, default=100, help="epochs per Table 2 row (default: 100)")
parser.add_argument("--out", default="runs/gpu", help="folder for the runs and on-a-gpu.json")
parser.add_argument("--device", default="cuda")
parser.add_argument("--limit-train", type=int, help="fewer training images (a check of the script)")
args = parser.parse_args()

deadline = time.monotonic() + 60 * args.minutes
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
report = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "machine": {
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "torch": torch.__version__,
    "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}}


def save() -> None:
    (out / "on-a-gpu.json").write_text(json.dumps(report, indent=2))


def left() -> float:
    return deadline - time.monotonic()


def run(name: str, command: list[str], limit: float) -> dict:
    """Run a stage for at most ``limit`` seconds (SIGTERM at the limit: cemnet saves and stops)."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=max(limit, 1))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate()
    seconds = round(time.monotonic() - started, 1)
    print(f"== {name}: exit {process.returncode}, {seconds} s", flush=True)
    return {"command": " ".join(command), "exit": process.returncode, "seconds": seconds,
            "tail": output.splitlines()[-15:]}


cemnet = [sys.executable, "-m", "cemnet"]
report["tests"] = run("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                      min(240, left() * 0.25))
save()
graphs = ["--cuda-graphs", "--no-memory"] if args.device.startswith("cuda") else ["--no-memory"]
report["bench"] = {}
for label, options in (("half, graphs", ["-O", "half_spectrum=true", *graphs]), ("faithful, graphs", graphs),
                       ("half, eager, memory", ["-O", "half_spectrum=true"])):
    target = out / f"bench-{label.replace(', ', '-')}.json"
    stage = run(f"bench {label}", [*cemnet, "bench", "--device", args.device, "--repeats", "15", "--warmup", "3",
                                   *options, "--out", str(target)], min(150, left() * 0.2))
    stage["result"] = json.loads(target.read_text()) if target.is_file() else None
    report["bench"][label] = stage
    save()

report["table2"] = {}
limit = ["--limit-train", str(args.limit_train), "--limit-test", str(args.limit_train)] if args.limit_train else []
for row, model, options in ROWS:
    if left() < 30:
        report["table2"][row] = {"model": model, "options": options, "not run": "the run's minutes were spent"}
        continue
    folder = out / "table2" / row
    stage = run(f"table 2: {row}", [*cemnet, "train", "--model", model, *options, "--epochs", str(args.epochs),
                                    "--device", args.device, "--data-dir", args.data_dir, "--out", str(folder),
                                    "--overwrite", "--no-progress", *limit], left() - 10)
    metrics = folder / "metrics.csv"
    rows = list(csv.DictReader(metrics.open())) if metrics.is_file() else []
    if rows:
        stage.update(epochs_run=len(rows), epochs_planned=args.epochs,
                     test_error=100 * (1 - float(rows[-1]["test_accuracy"])),
                     best_test_error=100 * (1 - max(float(r["test_accuracy"]) for r in rows)),
                     images_per_second=sorted(float(r["images_per_second"]) for r in rows)[len(rows) // 2],
                     training_seconds=sum(float(r["epoch_seconds"]) for r in rows))
    report["table2"][row] = {"model": model, "options": options, **stage}
    save()
print(f"wrote {out / 'on-a-gpu.json'}")
