"""What does each piece of a spectral max pool cost, PyTorch's way and cemnet's, on the maps of the paper's models?

Usage: python benchmarks/pooling.py [--repeats 15]

For each map shape, interleaved in one process (milliseconds, median):

* the 2 x 2 max pool without autograd (inference): ``F.max_pool2d`` against
  ``cemnet.nn.functional.block_max_pool2d``;
* the half-spectrum transform with its backward: ``torch.fft.rfft2`` (whose
  backward runs a complex ``ifft2`` on a zero-padded spectrum) against
  ``cemnet.spectral.SpectralGrid.to_frequency`` (one half-size ``irfft2``).
"""

import argparse

import torch
import torch.nn.functional as F

from cemnet.nn.functional import block_max_pool2d
from cemnet.spectral import SpectralGrid
from cemnet.timing import paired_ratio, time_pair

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--repeats", type=int, default=15)
args = parser.parse_args()

SHAPES = {  # the maps entering each pool: cemnet-mnist / lenet5, then cemnet-small / vgg-small
    "mnist 1": (100, 6, 28, 28), "mnist 2": (100, 16, 14, 14),
    "cifar 1": (100, 64, 32, 32), "cifar 2": (100, 128, 16, 16), "cifar 3": (100, 256, 8, 8),
}


def compare(theirs, ours) -> str:
    """``theirs ms | ours ms | ours / theirs`` for two interleaved calls."""
    a, b = time_pair(theirs, ours, repeats=args.repeats, warmup=2)
    return f"{1e3 * a.median:.2f} | {1e3 * b.median:.2f} | {paired_ratio(b, a).median:.2f}x"


def row(shape: tuple[int, int, int, int]) -> str:
    x = torch.randn(shape)
    with torch.no_grad():
        pool = compare(lambda: F.max_pool2d(x, 2), lambda: block_max_pool2d(x, 2))
    x.requires_grad_()
    upstream = torch.randn(*shape[:3], shape[3] // 2 + 1, dtype=torch.complex64)
    transform = compare(lambda: torch.autograd.grad(torch.fft.rfft2(x), x, upstream),
                        lambda: torch.autograd.grad(SpectralGrid(*x.shape[-2:], half=True, dense=False).to_frequency(x), x, upstream))
    return f"{pool} | {transform}"


print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; milliseconds (median), PyTorch | cemnet | ratio")
print("| maps | max pool, inference: torch | cemnet | ratio | rfft2 forward + backward: torch | cemnet | ratio |")
print("|---|---|---|---|---|---|---|")
for name, shape in SHAPES.items():
    print(f"| {name}: {'x'.join(map(str, shape))} | {row(shape)} |")
