"""How fast can this CPU draw Gaussians? PyTorch's serial generator, a helper thread, and the native kernel.

Usage: python benchmarks/draws.py [--sizes 500000 1000000 2000000] [--repeats 41]
       OMP_WAIT_POLICY=passive python benchmarks/draws.py   # PyTorch's OpenMP workers sleep when idle

For each size: ``normal_`` drawn in two halves, one on a helper thread with
its own generator, against one serial ``normal_``, alone and right after a
parallel PyTorch operation (which leaves PyTorch's OpenMP worker spinning on
the second core); then the native kernel's noise factor per number, on all
intra-op threads and on one.
"""

import argparse
from concurrent.futures import ThreadPoolExecutor

import torch

from cemnet import _native
from cemnet.timing import paired_ratio, time_interleaved

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--sizes", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
parser.add_argument("--repeats", type=int, default=41)
args = parser.parse_args()

helper = ThreadPoolExecutor(1)
generator = torch.Generator().manual_seed(1)
busy = torch.randn(2_000_000)


def in_two_halves(x: torch.Tensor) -> None:
    first, second = x.chunk(2)
    drawn = helper.submit(second.normal_, generator=generator)
    first.normal_()
    drawn.result()


print(f"{torch.get_num_threads()} threads; two halves (helper thread) / serial normal_, median of per-repetition ratios:")
for size in args.sizes:
    x = torch.empty(size)
    alone = time_interleaved([lambda x=x: in_two_halves(x), lambda x=x: x.normal_()], args.repeats)
    after = time_interleaved([lambda x=x: (busy.mul_(1.0), in_two_halves(x)), lambda x=x: (busy.mul_(1.0), x.normal_())],
                             args.repeats)
    print(f"  {size:>9,} numbers: alone {paired_ratio(*alone).median:.2f}x, "
          f"after a parallel operation {paired_ratio(*after).median:.2f}x")

try:
    kernels = _native.kernels()
except _native.NativeBuildError as error:
    raise SystemExit(f"the native kernels cannot be built here ({error})") from None
out = torch.empty(max(args.sizes))
threads = torch.get_num_threads()
for count in sorted({threads, 1}, reverse=True):
    torch.set_num_threads(count)
    (timing,) = time_interleaved([lambda: kernels.noise_factor(out.numpy(), 0.125, 0.25, 5, False)],
                                 args.repeats)
    print(f"native noise factor, {count} thread(s): {timing.median / out.numel() * 1e9:.2f} ns per number")
torch.set_num_threads(threads)
