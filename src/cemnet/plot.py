"""``cemnet plot RUN_DIR``: training curves and learned kernels as PNG files (needs matplotlib)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from cemnet.nn import SpectralConv2d
from cemnet.training.checkpoint import load_model


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'cemnet[plot]'") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Loss, accuracy and learning rate per epoch from ``RUN/metrics.csv``, as one PNG."""
    run = Path(run)
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: is {run} a folder written by `cemnet train`?")
    with metrics.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{metrics} has no epochs yet")
    column = {key: [float(row[key]) for row in rows] for key in rows[0]}
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split in ("train", "test"):
        axes[0].plot(column["epoch"], column[f"{split}_loss"], marker="o", label=split)
        axes[1].plot(column["epoch"], [100 * a for a in column[f"{split}_accuracy"]], marker="o", label=split)
    axes[2].plot(column["epoch"], column["lr"], marker="o")
    for axis, title in zip(axes, ("cross-entropy loss", "accuracy (%)", "learning rate (end of epoch)")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    axes[2].set_yscale("log")
    figure.suptitle(run.name)
    figure.tight_layout()
    out = Path(out) if out else run / "curves.png"
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def first_kernels(model: nn.Module) -> torch.Tensor:
    """The real ``(C_out, C_in, K, K)`` kernels of the first convolution of a CNN or CEMNet."""
    for module in model.modules():
        if isinstance(module, SpectralConv2d):
            return module.spatial_kernel()
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().clone()
    raise ValueError(f"{type(model).__name__} has no convolution")


def plot_kernels(checkpoint: str | Path, out: str | Path | None = None, size: int = 32) -> Path:
    """First-layer kernels (input channel 0) and their magnitude spectra (zero-padded to ``size``)."""
    checkpoint = Path(checkpoint)
    model, meta = load_model(checkpoint)
    kernels = first_kernels(model)[:, 0]  # (C_out, K, K)
    spectra = torch.fft.fftshift(torch.fft.fft2(kernels, s=(size, size)).abs(), dim=(-2, -1))
    count = min(len(kernels), 16)
    plt = _pyplot()
    figure, axes = plt.subplots(2, count, figsize=(1.3 * count + 1, 3.2), squeeze=False)
    for index in range(count):
        limit = kernels[index].abs().max().item() or 1.0
        axes[0, index].imshow(kernels[index].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)  # white is zero
        axes[1, index].imshow(spectra[index].numpy(), cmap="magma")
        axes[0, index].set_title(str(index), fontsize=8)
        for row in (0, 1):
            axes[row, index].set_axis_off()
    axes[0, 0].text(-0.6, 0.5, "kernel", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.6, 0.5, "|spectrum|", transform=axes[1, 0].transAxes, rotation=90, va="center")
    figure.suptitle(f"{meta['model']}, epoch {meta['epoch']}: first-layer kernels and magnitude spectra")
    figure.tight_layout()
    out = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}-kernels.png")
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
