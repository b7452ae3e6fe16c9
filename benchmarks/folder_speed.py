"""Does a folder of images train as fast as CIFAR-10? Decoding once, then an epoch of each, in one process.

Usage: python benchmarks/folder_speed.py FOLDER [--model cemnet-small] [-O key=value ...]

FOLDER is a folder of 32x32 RGB images, e.g. ``python scripts/cifar_folder.py FOLDER``
(CIFAR-10's test images as PNGs: 8,000 train / 2,000 test). The script times
opening ``folder:FOLDER`` with an empty cache (every image decoded), then
again from the cache file as a new process would, then trains one epoch of
the model on the folder and one on CIFAR-10 limited to the same numbers of
training and test images (``cemnet.training.train``, batch-norm
recalibration and evaluation included), and prints the epochs' images per
second and their ratio. Data from ``$CEMNET_DATA``.
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

from cemnet.data import folder, open_dataset
from cemnet.models import parse_option
from cemnet.training import TrainConfig, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folder")
parser.add_argument("--model", default="cemnet-small")
parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
args = parser.parse_args()

with tempfile.TemporaryDirectory() as scratch:
    folder._cache_folder = lambda: Path(scratch) / "cache"  # an empty cache: the first open decodes every image
    started = time.perf_counter()
    dataset = open_dataset(f"folder:{args.folder}", image_size=32)
    decode = time.perf_counter() - started
    folder._DECODED.clear()  # as a new process: only the cache file remains
    started = time.perf_counter()
    open_dataset(f"folder:{args.folder}", image_size=32)
    cached = time.perf_counter() - started
    train_count, test_count = len(dataset.scan.train), len(dataset.scan.test)
    print(f"{args.folder}: {train_count} train / {test_count} test images; first open (decoding) {decode:.1f} s, "
          f"from the cache {cached:.2f} s")
    speeds = {}
    for name in (f"folder:{args.folder}", "cifar10"):
        out = Path(scratch) / name.replace("/", "_").replace(":", "_")
        limits = {} if name.startswith("folder:") else {"limit_train": train_count, "limit_test": test_count}
        train(TrainConfig(model=args.model, dataset=name, epochs=1, out=str(out), progress=False,
                          model_options=dict(args.options), **limits))
        with (out / "metrics.csv").open() as handle:
            row = next(csv.DictReader(handle))
        speeds[name] = float(row["images_per_second"])
    folder_speed, cifar_speed = speeds.values()
    print(f"training epoch: folder {folder_speed:.0f} img/s, cifar10 {cifar_speed:.0f} img/s, "
          f"ratio {folder_speed / cifar_speed:.2f}")
