"""Does this checkout train exactly like another? A digest of every preset's weights after 20 seeded steps.

Usage: python scripts/weights_digest.py [--src DIR] [--kernels torch|native] [--models NAME ...] [--threads 2]

For each preset, runs ``cemnet train --epochs 1 --limit-train 2000`` (20 steps
of batch 100, seed 0: forward, loss, backward, clipping, RMSProp, schedule and
Weight Fixation exactly as a user's run) in a fresh process whose ``cemnet``
is imported from ``--src`` (default: this checkout's ``src``), then prints the
SHA-256 of the weights file's tensors (name, shape, dtype and bytes), one line
per preset. Two checkouts that print the same lines trained bit-identical
weights. The command line used is the one every cemnet version has, so the
script can be pointed at an older checkout: ``git worktree add /tmp/old REV``,
then ``--src /tmp/old/src``.

``--kernels`` picks the CPU kernels in both environment spellings
(``CEMNET_KERNELS``, and ``CEMNET_NATIVE`` of older versions). Data come from
``$CEMNET_DATA``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

PRESETS = ("lenet5", "cemnet-mnist", "vgg-small", "cemnet-small", "vgg-large", "cemnet-large", "fcnn-mnist",
           "fcnn-small")
HALF_SPECTRUM = ("cemnet-mnist", "cemnet-small")  # also digested with -O half_spectrum=true


def digest(weights: Path) -> str:
    hasher = hashlib.sha256()
    with safe_open(str(weights), framework="pt") as handle:
        for key in sorted(handle.keys()):
            tensor = handle.get_tensor(key).contiguous()
            hasher.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            hasher.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--kernels", default="torch", choices=["torch", "native"])
    parser.add_argument("--models", nargs="+", default=list(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src, "OMP_NUM_THREADS": str(args.threads),
           "CEMNET_KERNELS": args.kernels, "CEMNET_NATIVE": "0" if args.kernels == "torch" else "1"}
    runs = [(name, []) for name in args.models] + [(name, ["-O", "half_spectrum=true"])
                                                   for name in args.models if name in HALF_SPECTRUM]
    print(f"src {args.src}, kernels {args.kernels}, {args.threads} threads", flush=True)
    for name, options in runs:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "cemnet", "train", "--model", name, *options, "--epochs", "1",
                       "--limit-train", "2000", "--limit-test", "200", "--bn-recalibration", "500", "--seed", "0",
                       "--no-progress", "--no-download", "--out", out]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name} {' '.join(options)}: failed\n{done.stderr[-2000:]}", flush=True)
                continue
            print(f"{name:<14} {' '.join(options):<22} {digest(Path(out) / 'last.safetensors')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
