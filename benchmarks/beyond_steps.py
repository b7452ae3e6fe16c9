"""Step-time ratios of the "beyond the paper" rows: each cemnet-small variant against vgg-small, in one process.

Usage: python benchmarks/beyond_steps.py [--repeats 7] [--batch-size 100] [--out docs/bench-beyond.json]

For every CEMNet row of ``cemnet reproduce beyond`` (the table's own options),
:func:`cemnet.bench.bench_pair` interleaves its training step with vgg-small's
(the trainer's step: forward, loss, backward, RMSProp, schedule, Weight
Fixation) and reports the median of the per-repetition ratios. Memory is
not measured here (``cemnet bench`` does).
"""

import argparse
import json

import torch

from cemnet.bench import bench_pair, machine
from cemnet.reproduce import TABLES

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--batch-size", type=int, default=100)
parser.add_argument("--out", default="docs/bench-beyond.json")
args = parser.parse_args()

rows = [row for row in TABLES["beyond"] if row.model == "cemnet-small"]
results = {}
print(f"train step, CEMNet / vgg-small, batch {args.batch_size}, {torch.get_num_threads()} threads, "
      f"{args.repeats} interleaved repetitions")
for row in rows:
    pair = bench_pair("cemnet-small", args.batch_size, torch.device("cpu"), args.repeats, 2, row.options,
                      memory=False)
    results[row.slug] = {"options": row.options, "step_ratio": pair["ratio"]["train_step_s"],
                         "step_ratio_iqr": pair["ratio_iqr"]["train_step_s"],
                         "cemnet_step_s": pair["cemnet"]["train_step_s"], "cnn_step_s": pair["cnn"]["train_step_s"]}
    print(f"  {row.slug:<24} {pair['ratio']['train_step_s']:.2f}x ± {pair['ratio_iqr']['train_step_s']:.2f}")
with open(args.out, "w") as handle:
    json.dump({"machine": machine(), "batch_size": args.batch_size, "repeats": args.repeats, "rows": results},
              handle, indent=1)
print(f"wrote {args.out}")
