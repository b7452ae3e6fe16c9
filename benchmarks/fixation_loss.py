"""How much of each update does Weight Fixation throw away? Per frequency conv layer, over training steps.

Usage: python benchmarks/fixation_loss.py [--models cemnet-small cemnet-large] [--steps 300]
       [--fixations true gradient] [-O key=value ...] [--out docs/fixation-loss.json]

Trains each model with the paper's recipe on the first ``steps * batch`` CIFAR-10
training images (a fixed subset, seed 0, data from ``$CEMNET_DATA``), with
Weight Fixation on every stage (``fixed_stages`` = all stages) so that every frequency
conv layer has a number. Around each ``optimizer.step()`` (its pre- and
post-hooks) it reads, per layer, the update ``u = W_after - W_before`` (the
weight before the step is on its support) and the fraction of it that the
projection back to the ``K x K`` support removes, ``|u - P(u)| / |u|``
(Frobenius norms of the frequency weight; by Parseval the same in space).
With ``weight_fixation=gradient`` the gradient is already on the support and
what remains is the part that RMSProp's element-wise scaling moves off it.

Writes the per-step fractions to ``--out`` (JSON) and a plot beside it (PNG:
one panel per model and fixation, one line per layer, smoothed).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import torch

from cemnet.data import load_dataset, normalize
from cemnet.models import create_model, parse_option
from cemnet.nn import SpectralConv2d
from cemnet.nn import functional as SF
from cemnet.training.config import PRESETS
from cemnet.training.step import TrainingStep


def removed_fractions(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
                      batch_size: int) -> dict[str, list[float]]:
    """Per fixed layer (by name), the fraction of each step's update that the projection removes."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SpectralConv2d) and m.storage == "frequency"}
    step = TrainingStep(model, PRESETS["paper"], total_steps=steps)
    before: dict[str, torch.Tensor] = {}
    fractions: dict[str, list[float]] = {name: [] for name in layers}

    def remember(optimizer, args, kwargs):
        before.update({name: layer.weight.detach().clone() for name, layer in layers.items()})

    def measure(optimizer, args, kwargs):
        for name, layer in layers.items():
            update = layer.weight.detach() - before[name]
            kept = SF.project_frequency_major(update, *layer._projector())
            fractions[name].append(((update - kept).norm() / update.norm().clamp_min(1e-30)).item())

    step.optimizer.register_step_pre_hook(remember)
    step.optimizer.register_step_post_hook(measure)
    model.train()
    for index in range(steps):
        batch = slice(index * batch_size, (index + 1) * batch_size)
        step(images[batch], labels[batch])
    return fractions


def smooth(values: list[float], window: int = 10) -> list[float]:
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(model, fixation) for model in results for fixation in results[model]]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for axis, (model, fixation) in zip(axes[0], panels):
        layers = results[model][fixation]["fractions"]
        colours = plt.cm.viridis(torch.linspace(0, 0.95, len(layers)).tolist())
        for colour, (name, values) in zip(colours, layers.items()):
            axis.plot(smooth(values), color=colour, label=name.replace("features.", "layer "), linewidth=1.2)
        axis.set_title(f"{model}, weight_fixation={fixation}")
        axis.set_xlabel("step (batch 100)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=2, title="SpectralConv2d", title_fontsize=7)
    axes[0][0].set_ylabel("fraction of the update removed |u - P(u)| / |u|\n(moving mean of 10 steps)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cemnet-small", "cemnet-large"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--fixations", nargs="+", type=lambda text: parse_option(f"x={text}")[1],
                        default=[True, "gradient"])
    parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
    parser.add_argument("--out", default="docs/fixation-loss.json")
    args = parser.parse_args()

    images, labels = load_dataset("cifar10", "train")
    count = args.steps * args.batch_size
    images, labels = normalize(images[:count], "cifar10"), labels[:count]
    results: dict = {}
    for name in args.models:
        for fixation in args.fixations:
            torch.manual_seed(0)
            stages = len(create_model(name).spec.stages)
            model = create_model(name, weight_fixation=fixation, fixed_stages=stages, **dict(args.options))
            start = time.perf_counter()
            fractions = removed_fractions(model, images, labels, args.steps, args.batch_size)
            seconds = time.perf_counter() - start
            results.setdefault(name, {})[str(fixation).lower()] = {"seconds": seconds, "fractions": fractions}
            print(f"{name}, weight_fixation={fixation}: {args.steps} steps in {seconds:.0f} s; mean fraction removed "
                  "per layer (first 30 steps -> last 30):")
            for layer, values in fractions.items():
                print(f"  {layer:<14} {sum(values[:30]) / 30:.3f} -> {sum(values[-30:]) / 30:.3f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out)
    out.write_text(json.dumps({
        "command": "python benchmarks/fixation_loss.py " + " ".join(
            ["--models", *args.models, "--steps", str(args.steps), "--fixations",
             *[str(f).lower() for f in args.fixations], *[f"-O {k}={v}" for k, v in args.options]]),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "date": date.today().isoformat(), "commit": commit, "steps": args.steps, "batch_size": args.batch_size,
        "results": results,
    }, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
