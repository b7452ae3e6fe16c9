"""How far apart are PyTorch's and Keras's RMSprop with momentum on cemnet-mnist? Their step ratio after 30 steps.

Usage: python scripts/rmsprop_regime.py [--data-dir DIR] [--steps 30]

Trains ``cemnet-mnist`` with the ``authors-code`` recipe but PyTorch's
RMSprop (``keras_momentum=False``: eps outside the square root) for a few
steps of real MNIST, then prints, for each element-wise layer, the share of
weights whose gradient's running mean square is below eps and the ratio of
PyTorch's step to Keras's for the same gradient and state,
``sqrt(s + eps) / (sqrt(s) + eps)`` (median and quartiles).
"""

import argparse
from dataclasses import replace

import torch

from cemnet.data import load_dataset, normalize
from cemnet.models import create_model
from cemnet.nn import SpectralConv2d
from cemnet.training import PRESETS, TrainingStep

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir")
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()

torch.manual_seed(0)
model = create_model("cemnet-mnist")
recipe = replace(PRESETS["authors-code"], keras_momentum=False)
step = TrainingStep(model, recipe, total_steps=600 * 20, warmup_steps=600)
images, labels = load_dataset("mnist", "train", args.data_dir)
x = normalize(images[: 100 * args.steps], "mnist")
for i in range(args.steps):
    step(x[i * 100:(i + 1) * 100], labels[i * 100:(i + 1) * 100])
for name, module in model.named_modules():
    if isinstance(module, SpectralConv2d):
        s = step.optimizer.state[module.weight]["square_avg"].flatten().double()
        ratio = (s + recipe.eps).sqrt() / (s.sqrt() + recipe.eps)
        print(f"{name}: mean square below eps for {(s < recipe.eps).double().mean().item():.0%} of the weights; "
              f"PyTorch's step / Keras's: median {ratio.median().item():.2f}, quartiles "
              f"{ratio.quantile(0.25).item():.2f}-{ratio.quantile(0.75).item():.2f}")
