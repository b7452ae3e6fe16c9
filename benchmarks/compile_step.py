"""Does torch.compile speed up a CEMNet training step? Eager vs compiled, same process.

Usage: python benchmarks/compile_step.py [MODEL] [-O key=value ...] [--device auto]
"""

import argparse
import time

import torch

from cemnet.bench import training_step
from cemnet.cli import parse_option
from cemnet.timing import time_call
from cemnet.train import resolve_device

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", nargs="?", default="cemnet-mnist")
parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
args = parser.parse_args()
device = resolve_device(args.device)

for compiled in (False, True):
    torch.manual_seed(0)
    model, x, step = training_step(args.model, 100, device, dict(args.options))
    if compiled:
        model.forward = torch.compile(model.forward)  # the optimizer and Weight Fixation stay eager
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first = time.perf_counter() - started
    print(f"{'compiled' if compiled else 'eager':>8}: first step {first:.1f} s, "
          f"median step {1e3 * time_call(step, 7, 2, device).median:.1f} ms")
