"""A preset's training step in this checkout against the same step at another commit, in one process.

Usage: python benchmarks/compare_commits.py REV [MODEL] [-O key=value ...] [--batch-size 100] [--repeats 41]
       [--device cpu]

On this project's shared VM a step's speed drifts by tens of percent within a
minute, so two versions timed in two runs cannot be compared. This script
unpacks the package at ``REV`` (``git archive REV src/cemnet``) into a
temporary folder as ``cemnet_at_rev``, its imports renamed, so both versions
load side by side; every repetition then runs the old step, the new step and
the CNN twin's step (from this checkout) in turn, and the script prints the
median of the per-repetition ratios with their quartiles. The same options
go to both versions, so ``REV`` must know them. This is how
docs/performance.md measures what one change does to a step.
"""

import argparse
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from _interleaved import add_step_arguments, ratio_line

from cemnet import bench
from cemnet.models import model_info
from cemnet.timing import time_interleaved
from cemnet.train import resolve_device

OLD_NAME = "cemnet_at_rev"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("rev", help="a git revision of this repository, e.g. HEAD~1 or a commit hash")
add_step_arguments(parser)
args = parser.parse_args()


def unpack_old_package(rev: str, folder: Path) -> None:
    """``src/cemnet`` at ``rev`` as the package ``OLD_NAME`` in ``folder``, importing itself under that name."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", rev, "src/cemnet"], cwd=root, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    package = folder / OLD_NAME
    (folder / "src" / "cemnet").rename(package)
    for source in package.rglob("*.py"):
        text = re.sub(r"\b(from|import) cemnet\b", rf"\1 {OLD_NAME}", source.read_text())
        source.write_text(text)


options = dict(args.options)
device = resolve_device(args.device)
twin = model_info(args.model).twin
with tempfile.TemporaryDirectory() as folder:
    unpack_old_package(args.rev, Path(folder))
    sys.path.insert(0, folder)
    old_bench = importlib.import_module(f"{OLD_NAME}.bench")
    steps = [
        old_bench.training_step(args.model, args.batch_size, device, options)[2],
        bench.training_step(args.model, args.batch_size, device, options)[2],
        bench.training_step(twin, args.batch_size, device, {})[2],
    ]
    old, new, cnn = time_interleaved(steps, args.repeats, args.warmup, device)

described = f"{args.model} {options}" if options else args.model
print(f"{described} vs {twin}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
      f"{args.repeats} interleaved repetitions")
print(f"step medians: {args.rev} {old.median * 1e3:.2f} ms, this checkout {new.median * 1e3:.2f} ms, "
      f"{twin} {cnn.median * 1e3:.2f} ms")
print(ratio_line(f"this checkout / {args.rev}", new, old))
print(ratio_line(f"{args.rev} / {twin}", old, cnn))
print(ratio_line(f"this checkout / {twin}", new, cnn))
