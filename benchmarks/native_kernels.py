"""What do the native CPU kernels save? Their pieces alone and each twin's step, with them and without, in one process.

Usage: python benchmarks/native_kernels.py [MODEL] [-O key=value ...] [--batch-size 100] [--repeats 41]

First times, with the native kernels (:mod:`cemnet._native`) and with
PyTorch's generator and operations, the pieces the kernels compute as one
training step of the CEMNet preset (options ``-O``) meets them (shapes
recorded from one step): each noise factor, drawn after a parallel PyTorch
operation as inside a step, and each spectral batch norm, forward and
backward. Then times, in turn every repetition, the CEMNet's step with each
kernel setting, its CNN twin with ``nn.Dropout`` (what ``cemnet bench``
compares with) and the twin with the uniform-mask dropout of each setting,
and prints the ratios: what the kernels save the CEMNet, and the CEMNet
against a CNN whose dropout draws from the same generator.
"""

import argparse

import torch
from _interleaved import add_step_arguments, print_steps, ratio_line

from cemnet import _native, runtime
from cemnet import nn as cnn
from cemnet.bench import training_step
from cemnet.models import model_info
from cemnet.nn import functional as SF
from cemnet.nn.functional import _noise
from cemnet.timing import time_interleaved

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
add_step_arguments(parser)
args = parser.parse_args()

device = runtime.resolve_device(args.device)
if device.type != "cpu":
    raise SystemExit("the native kernels are CPU kernels: run this on the CPU")
try:
    _native.kernels()
except _native.NativeBuildError as error:
    raise SystemExit(f"the native kernels cannot be built here ({error}); nothing to compare") from None
twin = model_info(args.model).twin
options = dict(args.options)


def native_over_torch(label, call):
    """Time ``call(kernels)`` with both implementations, interleaved; print the ratio and both medians."""
    with_native, with_torch = time_interleaved([lambda: call(SF.NATIVE), lambda: call(SF.TORCH_CPU)], args.repeats,
                                               args.warmup, device)
    print(ratio_line(f"{label}: native / PyTorch", with_native, with_torch, width=64)
          + f", {with_native.median * 1e3:.2f} / {with_torch.median * 1e3:.2f} ms")


# One step, recording the shapes the kernels see.
draws, norms = [], []  # (shape, sigmas) of each noise factor; the input shape of each spectral batch norm
drawing = _noise.noise_factor


def recording(like, sigmas, *, kernels=None):
    draws.append((tuple(like.shape), tuple(sigmas)))
    return drawing(like, sigmas, kernels=kernels)


_noise.noise_factor = recording
model, _, step = training_step(args.model, args.batch_size, device, options)
hooks = [module.register_forward_pre_hook(lambda module, inputs: norms.append(tuple(inputs[0].shape)))
         for module in model.modules() if isinstance(module, cnn.SpectralBatchNorm2d)]
step()
_noise.noise_factor = drawing
for hook in hooks:
    hook.remove()

print(f"the pieces of one {args.model} step alone, {args.repeats} repetitions:")
busy = torch.randn(2_000_000)
for shape, sigmas in draws:
    like = torch.empty(shape)

    def draw(kernels, like=like, sigmas=sigmas):
        busy.mul_(1.0)  # leaves PyTorch's OpenMP worker spinning, as the layers before a noise layer do
        SF.noise_factor(like, sigmas, kernels=kernels)

    native_over_torch(f"noise factor {shape} sigmas {sigmas}", draw)
for shape in norms:
    x = torch.randn(shape, dtype=torch.complex64, requires_grad=True)
    weight, bias = torch.randn(shape[1], 2, requires_grad=True), torch.randn(shape[1], 2, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.complex64)

    def normalise(kernels, x=x, weight=weight, bias=bias, grad=grad):
        out = SF.spectral_batch_norm_with_stats(x, weight, bias, kernels=kernels)[0]
        torch.autograd.grad(out, (x, weight, bias), grad)

    native_over_torch(f"batch norm {shape}, forward + backward", normalise)

variants = {  # label -> (preset, options, kernel setting the step's layers are built under)
    f"{args.model} native": (args.model, options, "native"),
    f"{args.model} torch": (args.model, options, "torch"),
    f"{twin} bernoulli": (twin, {}, "native"),  # nn.Dropout draws with PyTorch's generator either way
    f"{twin} uniform native": (twin, {"dropout_mask": "uniform"}, "native"),
    f"{twin} uniform torch": (twin, {"dropout_mask": "uniform"}, "torch"),
}
steps = []
for name, opts, setting in variants.values():
    with runtime.using_kernels(setting):
        steps.append(training_step(name, args.batch_size, device, opts)[2])
timings = dict(zip(variants, time_interleaved(steps, args.repeats, args.warmup, device)))

comparisons = (
    (f"{args.model} native", f"{twin} bernoulli"),  # what `cemnet bench` reports
    (f"{args.model} torch", f"{twin} bernoulli"),  # the same without the kernels
    (f"{args.model} native", f"{args.model} torch"),  # what the kernels save the CEMNet
    (f"{args.model} native", f"{twin} uniform native"),  # both twins drawing from the kernels' generator
    (f"{twin} uniform native", f"{twin} bernoulli"),  # what the kernels' generator would save the CNN
)
print_steps(args, twin, device, timings, comparisons, width=56)
