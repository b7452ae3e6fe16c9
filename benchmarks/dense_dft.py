"""Where do small maps transform faster as a matrix product than as an FFT? Forward + backward of each, per size.

Usage: python benchmarks/dense_dft.py [--threads 2]

Prints, per map size, the time of ``rfft2`` and ``irfft2`` (with their backward)
through ``torch.fft`` and through the dense matrix of ``cemnet.spectral``, interleaved
in one process. ``spectral.DENSE_DFT_MAX_POINTS`` is set from this table.
"""

import argparse

import torch

from cemnet.spectral import SpectralGrid
from cemnet.timing import paired_ratio, time_pair

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=torch.get_num_threads())
args = parser.parse_args()
torch.set_num_threads(args.threads)

print(f"{args.threads} threads, torch {torch.__version__}; milliseconds, forward + backward")
print("| maps | rfft2: FFT | dense | dense / FFT | irfft2: FFT | dense | dense / FFT |")
print("|---|---|---|---|---|---|---|")
def row(batch: int, channels: int, side: int) -> str:
    x = torch.randn(batch, channels, side, side, requires_grad=True)
    grids = {dense: SpectralGrid(side, side, half=True, dense=dense) for dense in (False, True)}
    spectrum = grids[False].to_frequency(x.detach()).requires_grad_()
    up_spectrum, up_signal = torch.randn_like(spectrum), torch.randn_like(x)

    def forward(dense):
        return lambda: torch.autograd.grad(grids[dense].to_frequency(x), x, up_spectrum)

    def inverse(dense):
        return lambda: torch.autograd.grad(grids[dense].to_spatial(spectrum), spectrum, up_signal)

    cells = []
    for make in (forward, inverse):
        fft, dense = time_pair(make(False), make(True), repeats=10, warmup=2)
        cells += [f"{1e3 * fft.median:.2f}", f"{1e3 * dense.median:.2f}", f"{paired_ratio(dense, fft).median:.2f}x"]
    return f"| {batch}x{channels} of {side}x{side} | " + " | ".join(cells) + " |"


for shape in [(100, 512, 2), (100, 512, 4), (100, 256, 7), (100, 256, 8), (100, 128, 14), (100, 128, 16)]:
    print(row(*shape))
