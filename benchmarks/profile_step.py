"""Where does a training step's time go? torch.profiler over one step of a preset after warm-up.

Usage: python benchmarks/profile_step.py MODEL [-O key=value ...] [--batch-size 100] [--rows 20] [--device auto]

On CUDA the profile also records the GPU's kernels and the table is sorted by
their self time (a step there is bound by how many kernels it launches, not
by their arithmetic: docs/performance.md, "On a GPU").
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from cemnet.bench import training_step
from cemnet.models import parse_option
from cemnet.runtime import resolve_device

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
parser.add_argument("--batch-size", type=int, default=100)
parser.add_argument("--rows", type=int, default=20)
parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
args = parser.parse_args()

device = resolve_device(args.device)
cuda = device.type == "cuda"
_, _, step = training_step(args.model, args.batch_size, device, dict(args.options))
for _ in range(3):  # warm-up (on CUDA also cuFFT plans and cuBLAS handles)
    step()
if cuda:
    torch.cuda.synchronize(device)
with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
    step()
    if cuda:
        torch.cuda.synchronize(device)
averages = prof.key_averages()
sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
print(averages.table(sort_by=sort_by, row_limit=args.rows, max_name_column_width=40))
if cuda:
    launches = sum(event.count for event in averages if event.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    print(f"kernel launches in the step: {launches}")
