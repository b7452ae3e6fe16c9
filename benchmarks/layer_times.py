"""Which layers of a preset cost what? Forward and forward + backward times of each, alone on its real input size.

Usage: python benchmarks/layer_times.py MODEL [-O key=value ...] [--batch-size 100] [--repeats 10]

Each top-level layer of ``model.features`` (and the head) is run on a random
input of the shape it sees in the network, in training mode, after warm-up;
the backward asks for the gradients of the input and the layer's parameters.
Run a CEMNet preset and then its CNN twin to see which layers cost what.
"""

import argparse

import torch

from cemnet.models import create_model, parse_option
from cemnet.timing import time_call

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
parser.add_argument("--batch-size", type=int, default=100)
parser.add_argument("--repeats", type=int, default=10)
args = parser.parse_args()

def time_layer(layer: torch.nn.Module, inputs: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Median seconds of forward and of forward + backward, and the layer's output."""
    inputs = inputs.detach().requires_grad_()
    out = layer(inputs)
    upstream = torch.randn_like(out)
    wrt = [inputs, *layer.parameters()]
    forward = time_call(lambda: layer(inputs), args.repeats, 2).median
    both = time_call(lambda: torch.autograd.grad(layer(inputs), wrt, upstream), args.repeats, 2).median
    return forward, both, out.detach()


model = create_model(args.model, **dict(args.options)).train()
spec = model.spec
x = torch.randn(args.batch_size, spec.in_channels, spec.image_size, spec.image_size)
layers = [*model.features, model.head if hasattr(model, "head") else model.classifier]
print(f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads; milliseconds")
print("| layer | input | forward | forward + backward |")
print("|---|---|---|---|")
total = 0.0
for layer in layers:
    shape = tuple(x.shape)
    forward, both, x = time_layer(layer, x)
    total += both
    print(f"| {type(layer).__name__} | {shape} | {1e3 * forward:.2f} | {1e3 * both:.2f} |")
print(f"| total | | | {1e3 * total:.1f} |")
