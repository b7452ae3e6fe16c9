"""Where a training step's time goes: torch.profiler over one step of a preset after warm-up.

Usage: python benchmarks/profile_step.py MODEL [-O key=value ...] [--batch-size 100] [--rows 20]
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from cemnet.bench import training_step
from cemnet.cli import parse_option

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
parser.add_argument("--batch-size", type=int, default=100)
parser.add_argument("--rows", type=int, default=20)
args = parser.parse_args()

_, _, step = training_step(args.model, args.batch_size, torch.device("cpu"), dict(args.options))
for _ in range(2):  # warm-up
    step()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
