"""Write CIFAR-10 images as a folder of PNGs, the layout `--dataset folder:PATH` reads.

Usage: python scripts/cifar_folder.py OUT [--split test] [--per-class N] [--test-fraction 0.2] [--data-dir DIR]

Writes ``OUT/train/<class>/<index>.png`` and ``OUT/test/<class>/<index>.png``:
the first ``per-class`` images of each class of the chosen CIFAR-10 split
(default: all of the test split, 1,000 per class), the last
``test-fraction`` of each class under ``test/``. Data from ``--data-dir``,
else ``$CEMNET_DATA``.
"""

import argparse
from pathlib import Path

from PIL import Image

from cemnet.data import dataset_info, load_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("--split", default="test", choices=["train", "test"])
parser.add_argument("--per-class", type=int, default=None)
parser.add_argument("--test-fraction", type=float, default=0.2)
parser.add_argument("--data-dir")
args = parser.parse_args()

images, labels = load_dataset("cifar10", args.split, args.data_dir)
classes = dataset_info("cifar10").classes
for label, name in enumerate(classes):
    indices = (labels == label).nonzero().flatten().tolist()[: args.per_class]
    held = len(indices) - round(args.test_fraction * len(indices))
    for rank, index in enumerate(indices):
        folder = Path(args.out) / ("train" if rank < held else "test") / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index].permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
print(f"wrote {len(classes)} classes of CIFAR-10's {args.split} images to {args.out}")
