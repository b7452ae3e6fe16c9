"""``cemnet plot RUN_DIR``: training curves and learned kernels as PNG files (needs matplotlib)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from cemnet.nn import SpectralConv2d
from cemnet.training import TrainConfig
from cemnet.training.checkpoint import load_model, read_header
from cemnet.training.step import lr_factor


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'cemnet[plot]'") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def step_learning_rates(run: Path, rows: list[dict[str, float]]) -> tuple[list[float], list[float]] | None:
    """``(epoch positions, learning rates)`` of every step of the epochs in ``rows`` (metrics.csv).

    The schedule is a function of the step (:func:`cemnet.training.step.lr_factor`),
    so it is recomputed from the settings saved in ``RUN/last.safetensors``
    and the images per epoch that metrics.csv records; ``None`` where there
    is no such checkpoint.
    """
    last = run / "last.safetensors"
    if not last.is_file():
        return None
    saved = read_header(last)["meta"].get("config")
    if not saved:
        return None
    config = TrainConfig(**{key: value for key, value in saved.items() if key in TrainConfig.__dataclass_fields__})
    recipe = config.recipe()
    images = round(rows[0]["images_per_second"] * rows[0]["epoch_seconds"])  # images seen in an epoch
    steps_per_epoch = -(-images // config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, round(recipe.warmup_epochs * steps_per_epoch)
    steps = range(len(rows) * steps_per_epoch)
    return ([step / steps_per_epoch for step in steps],  # where each step starts
            [recipe.lr * lr_factor(step, recipe, total, warmup) for step in steps])


def plot_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Loss and accuracy per epoch from ``RUN/metrics.csv``, and the learning rate of every step, as one PNG."""
    run = Path(run)
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: is {run} a folder written by `cemnet train`?")
    with metrics.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{metrics} has no epochs yet")
    rows = [{key: float(value) for key, value in row.items()} for row in rows]
    column = {key: [row[key] for row in rows] for key in rows[0]}
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split in ("train", "test"):
        axes[0].plot(column["epoch"], column[f"{split}_loss"], marker="o", label=split)
        axes[1].plot(column["epoch"], [100 * a for a in column[f"{split}_accuracy"]], marker="o", label=split)
    per_step = step_learning_rates(run, rows)
    if per_step is not None:
        axes[2].plot(*per_step, label="every step")
    axes[2].plot(column["epoch"], column["lr"], "o", label="end of each epoch (metrics.csv)")
    for axis, title in zip(axes, ("cross-entropy loss", "accuracy (%)", "learning rate")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
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
    """First-layer kernels (input channel 0) and their magnitude spectra (zero-padded to ``size``).

    Each row shares one colour scale, drawn beside it, so that kernels and
    spectra can be compared in magnitude: the kernels on a scale symmetric
    about zero (white is zero), the spectra from zero.
    """
    checkpoint = Path(checkpoint)
    model, meta = load_model(checkpoint)
    kernels = first_kernels(model)[:, 0]  # (C_out, K, K)
    spectra = torch.fft.fftshift(torch.fft.fft2(kernels, s=(size, size)).abs(), dim=(-2, -1))
    count = min(len(kernels), 16)
    kernel_limit = kernels[:count].abs().max().item() or 1.0
    spectrum_limit = spectra[:count].max().item() or 1.0
    plt = _pyplot()
    figure, axes = plt.subplots(2, count, figsize=(1.3 * count + 2, 3.4), squeeze=False)
    for index in range(count):
        kernel_image = axes[0, index].imshow(kernels[index].numpy(), cmap="RdBu_r", vmin=-kernel_limit,
                                             vmax=kernel_limit)
        spectrum_image = axes[1, index].imshow(spectra[index].numpy(), cmap="magma", vmin=0, vmax=spectrum_limit)
        axes[0, index].set_title(str(index), fontsize=8)
        for row in (0, 1):
            axes[row, index].set_axis_off()
    figure.colorbar(kernel_image, ax=axes[0, :].tolist(), fraction=0.02, pad=0.02, label="weight")
    figure.colorbar(spectrum_image, ax=axes[1, :].tolist(), fraction=0.02, pad=0.02, label="|spectrum|")
    axes[0, 0].text(-0.6, 0.5, "kernel", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.6, 0.5, "|spectrum|", transform=axes[1, 0].transAxes, rotation=90, va="center")
    figure.suptitle(f"{meta['model']}, epoch {meta.get('epoch', '?')}: first-layer kernels (input channel 0) "
                    f"and magnitude spectra, centred")
    out = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}-kernels.png")
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
