"""How much of a CEMNet's CPU advantage is the CNN's dropout? Both twins with PyTorch's and a uniform-mask dropout.

Usage: python benchmarks/dropout_masks.py [MODEL] [-O key=value ...] [--batch-size 100] [--repeats 41]

PyTorch draws the CPU Bernoulli masks of ``nn.Dropout`` in parallel with MKL
only on Intel processors; on others (AMD, Arm) it draws them serially in
double precision, which makes a CNN's dropout several times slower per
number than the CEMNet's Gaussian noise. This script times, in
turn every repetition, the CEMNet preset (options ``-O``) and its CNN twin,
each with ``dropout_mask="bernoulli"`` (``nn.Dropout``, the default) and with
``dropout_mask="uniform"`` (:class:`cemnet.bench.fair_twins.UniformMaskDropout`, the same
law from one float32 uniform per number), and prints the ratios: how much of
a CEMNet's advantage is the CNN's dropout (docs/performance.md).
"""

import argparse

from _interleaved import add_step_arguments, print_steps

from cemnet.bench import training_step
from cemnet.models import model_info
from cemnet.runtime import resolve_device
from cemnet.timing import time_interleaved

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
add_step_arguments(parser)
args = parser.parse_args()

device = resolve_device(args.device)
twin = model_info(args.model).twin
options = dict(args.options)
variants = {  # label -> (preset, options)
    f"{args.model} bernoulli": (args.model, {**options, "dropout_mask": "bernoulli"}),
    f"{args.model} uniform": (args.model, {**options, "dropout_mask": "uniform"}),
    f"{twin} bernoulli": (twin, {"dropout_mask": "bernoulli"}),
    f"{twin} uniform": (twin, {"dropout_mask": "uniform"}),
}
steps = [training_step(name, args.batch_size, device, opts)[2] for name, opts in variants.values()]
timings = dict(zip(variants, time_interleaved(steps, args.repeats, args.warmup, device)))

comparisons = (
    (f"{args.model} bernoulli", f"{twin} bernoulli"),  # what `cemnet bench` reports
    (f"{args.model} uniform", f"{twin} uniform"),  # both twins without PyTorch's Bernoulli draws
    (f"{twin} uniform", f"{twin} bernoulli"),  # what the CNN's Bernoulli dropout costs it
)
print_steps(args, twin, device, timings, comparisons, width=52)
