"""What the native CPU noise kernel changes: each twin's step with it and with PyTorch's generator, in one process.

Usage: python benchmarks/noise_kernel.py [MODEL] [-O key=value ...] [--batch-size 100] [--repeats 41]

First times the noise factors alone, as the CEMNet's training step draws
them (the shapes and sigmas recorded from one step), each draw after a
parallel PyTorch operation as inside a step, with the kernel and with
PyTorch's generator. Then times, in turn every repetition, the CEMNet preset (options ``-O``) with its
noise from :mod:`cemnet.native` and from PyTorch's generator, its CNN twin
with ``nn.Dropout`` (what ``cemnet bench`` compares with) and the twin with
``dropout_mask="uniform"`` from each generator, and prints the ratios: what
the kernel saves the CEMNet, and the CEMNet against a CNN whose dropout draws
from the same generator (docs/performance.md, item 17).
"""

import argparse

import torch
from _interleaved import add_step_arguments, ratio_line

from cemnet import native
from cemnet.bench import training_step
from cemnet.models import model_info
from cemnet.nn import functional as SF
from cemnet.timing import time_interleaved
from cemnet.train import resolve_device

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
add_step_arguments(parser)
args = parser.parse_args()

device = resolve_device(args.device)
if device.type != "cpu":
    raise SystemExit("the native kernel is a CPU kernel: run this on the CPU")
kernel = native.noise_kernel()
if kernel is None:
    raise SystemExit(f"the native kernel is off or could not be built ({native.NATIVE_ENV}); nothing to compare")
twin = model_info(args.model).twin
options = dict(args.options)


def with_kernel(step, module):
    def run():
        native.noise_kernel = lambda: module  # what cemnet.nn.functional asks for on every draw
        return step()

    return run


draws = []  # (shape, sigmas) of each noise factor of one CEMNet step
drawing = SF.noise_factor


def recording(like, sigmas):
    draws.append((tuple(like.shape), tuple(sigmas)))
    return drawing(like, sigmas)


SF.noise_factor = recording  # the layers look it up on every call
training_step(args.model, args.batch_size, device, options)[2]()
SF.noise_factor = drawing
busy = torch.randn(2_000_000)
print(f"noise factors of one {args.model} step alone, each after a parallel operation, {args.repeats} repetitions:")
for shape, sigmas in draws:
    like = torch.empty(shape)

    def draw(like=like, sigmas=sigmas):
        busy.mul_(1.0)  # leaves PyTorch's OpenMP worker spinning, as the layers before a noise layer do
        SF.noise_factor(like, sigmas)

    native_time, torch_time = time_interleaved([with_kernel(draw, kernel), with_kernel(draw, None)], args.repeats,
                                               args.warmup, device)
    print(ratio_line(f"{shape} sigmas {sigmas}: native / PyTorch's", native_time, torch_time, width=56)
          + f", {native_time.median * 1e3:.2f} / {torch_time.median * 1e3:.2f} ms")

variants = {  # label -> (preset, options, noise kernel or None for PyTorch's generator)
    f"{args.model} native": (args.model, options, kernel),
    f"{args.model} torch": (args.model, options, None),
    f"{twin} bernoulli": (twin, {}, kernel),  # nn.Dropout draws with PyTorch's generator either way
    f"{twin} uniform native": (twin, {"dropout_mask": "uniform"}, kernel),
    f"{twin} uniform torch": (twin, {"dropout_mask": "uniform"}, None),
}

steps = [with_kernel(training_step(name, args.batch_size, device, opts)[2], module)
         for name, opts, module in variants.values()]
timings = dict(zip(variants, time_interleaved(steps, args.repeats, args.warmup, device)))

described = f"{args.model} {options}" if options else args.model
print(f"{described} vs {twin}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
      f"{args.repeats} interleaved repetitions")
print("step medians: " + ", ".join(f"{label} {timing.median * 1e3:.2f} ms" for label, timing in timings.items()))
comparisons = (
    (f"{args.model} native", f"{twin} bernoulli"),  # what `cemnet bench` reports
    (f"{args.model} torch", f"{twin} bernoulli"),  # the same without the kernel
    (f"{args.model} native", f"{args.model} torch"),  # what the kernel saves the CEMNet
    (f"{args.model} native", f"{twin} uniform native"),  # both twins drawing from the kernel's generator
    (f"{twin} uniform native", f"{twin} bernoulli"),  # what the kernel would save the CNN
)
for numerator, denominator in comparisons:
    print(ratio_line(f"{numerator} / {denominator}", timings[numerator], timings[denominator], width=56))
