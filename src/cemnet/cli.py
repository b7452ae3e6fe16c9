"""The ``cemnet`` command line: ``cemnet train|eval|models ...`` (``cemnet -h`` lists all).

Every failure a user can cause ends in one line on stderr, ``cemnet: error:
WHAT (WHAT TO DO)``, and a documented exit code (:data:`EXIT_CODES`); ``--debug``
adds the traceback. Options are checked where they are parsed.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cemnet.data import DATASETS, DataError, is_folder
from cemnet.models import parse_option
from cemnet.runtime import KERNEL_SETTINGS
from cemnet.training.checkpoint import CheckpointError
from cemnet.training.config import PRESETS, TrainConfig, default, default_out

EXIT_USAGE = 2  # a bad option, missing or corrupt data or checkpoint, a run folder in use: the message says what to do
EXIT_DIVERGED = 3  # the loss became NaN or infinite, or training made no progress
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C (SIGTERM: 128 + 15), after `last` was saved
EXIT_CODES = {0: "success", 1: "a bug in cemnet (the traceback is printed)", EXIT_USAGE: "a problem with the input",
              EXIT_DIVERGED: "training diverged", EXIT_INTERRUPTED: "interrupted (Ctrl-C; 143 for SIGTERM)"}


# ---------------------------------------------------------------------------- option types


def _number(kind: type, minimum: float, inclusive: bool, what: str) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


POSITIVE_INT = _number(int, 1, True, "a whole number of at least 1")
COUNT = _number(int, 0, True, "a whole number of at least 0")
POSITIVE = _number(float, 0.0, False, "a finite number greater than 0")
NON_NEGATIVE = _number(float, 0.0, True, "a finite number of at least 0")


def _dataset(text: str) -> str:
    if text in DATASETS or is_folder(text):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {sorted(DATASETS)} or folder:PATH, got {text!r}")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    value = COUNT(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1}, got {text!r}")
    return value


def _device(text: str) -> str:
    from cemnet.runtime import resolve_device

    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line that points at ``--help``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- subcommands


TRAIN_OPTIONS = ("model", "dataset", "channels", "image_size", "test_fraction", "epochs", "batch_size", "preset", "lr",
                 "warmup_epochs", "seed", "device", "kernels", "data_dir", "out", "limit_train", "limit_test",
                 "stop_after", "bn_recalibration")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the options given, else (``--resume``) the run's own, else the defaults."""
    from cemnet.training.checkpoint import read_header

    given = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
    given.update(download=args.download, progress=not args.no_progress, cuda_graphs=not args.no_cuda_graphs)
    options = model_options(args)
    if options:
        given["model_options"] = options
    base: dict[str, Any] = {}
    last = Path(given.get("out") or default_out(given.get("model", default("model")))) / "last.safetensors"
    if args.resume and last.is_file():
        saved = read_header(last)["meta"].get("config") or {}
        base = {key: value for key, value in saved.items() if key in TrainConfig.__dataclass_fields__}
        given.setdefault("out", str(last.parent))
    return TrainConfig(**{**base, **given})


def cmd_train(args: argparse.Namespace) -> int:
    from cemnet.training import train

    summary = train(train_config(args), resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if "test_accuracy" in summary:
        print(f"test accuracy {summary['test_accuracy']:.4f} (error {100 * (1 - summary['test_accuracy']):.2f}%), "
              f"best {summary['best_test_accuracy']:.4f}; checkpoints and metrics.csv in {summary['out']}")
    else:
        print(f"nothing to do: {summary['out']} already holds {summary['epochs_run']} epochs")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cemnet.data import open_dataset
    from cemnet.runtime import resolve_device
    from cemnet.training import evaluate
    from cemnet.training.checkpoint import load_model

    model, meta = load_model(args.checkpoint)
    config = meta.get("config") or {}
    dataset_name = args.dataset or meta["dataset"]
    data_dir = args.data_dir or config.get("data_dir")  # the folder the run was trained from
    model.to(resolve_device(args.device or "auto"))
    # A folder's images as the run saw them: its mode, side, split and training statistics.
    dataset = open_dataset(dataset_name, data_dir, args.download, channels=config.get("channels"),
                           image_size=config.get("image_size"), test_fraction=config.get("test_fraction", 0.2),
                           statistics=meta.get("normalization") if dataset_name == meta["dataset"] else None)
    images, labels = dataset.split("test")
    result = evaluate(model, dataset.normalize(images), labels, batch_size=args.batch_size)
    print(f"{meta['model']} on {dataset_name} test ({result['count']} images): accuracy {result['accuracy']:.4f}, "
          f"error rate {100 * (1 - result['accuracy']):.2f}%, loss {result['loss']:.4f}")
    print(f"  {'class':>12}  accuracy")
    for name, accuracy in zip(dataset.info.classes, result["per_class"]):
        print(f"  {name:>12}: {accuracy:.4f}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from cemnet.models import (
        OPTION_CHOICES,
        count_parameters,
        create_model,
        list_models,
        model_info,
    )

    print(f"{'name':<14} {'data':<8} {'twin of':<10} {'parameters':>12}  description")
    for name in list_models(args.pattern):
        info = model_info(name)
        with torch.device("meta"):  # parameter counts need shapes only
            parameters = count_parameters(create_model(name))
        print(f"{name:<14} {info.dataset:<8} {info.twin or '':<10} {parameters:>12,}  {info.summary}")
        defaults = ", ".join(f"{option}={default!r}" for option, default in info.defaults.items())
        print(f"{'':<49}options (-O name=value): {defaults}")
    print("option values:")
    for option, choices in OPTION_CHOICES.items():
        print(f"  {option}: {choices}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    import torch

    from cemnet.models import create_model
    from cemnet.ops import count_ops

    with torch.device("meta"):  # shapes only: nothing is computed, allocated or compiled
        model = create_model(args.model, **model_options(args))
    counts = count_ops(model, rule=args.rule)
    print(f"{args.model}: operations per image (conventions: docs/ops.md)")
    print(counts.table())
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from cemnet.convert import to_frequency
    from cemnet.timing import time_pair
    from cemnet.training.checkpoint import load_model, save_checkpoint

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must name a .safetensors file, got {str(out)!r}")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists (a run's checkpoint there would lose its training state); choose another "
                         f"--out, or pass --overwrite to replace it")
    model, meta = load_model(args.checkpoint)
    if meta["model"] != args.model or meta.get("converted"):
        raise ValueError(f"{args.checkpoint} holds a {'converted ' if meta.get('converted') else ''}"
                         f"{meta['model']!r}, not a {args.model!r} CNN")
    model.eval()
    converted = to_frequency(model).eval()
    spec = model.spec
    images = torch.randn(100, spec.in_channels, spec.image_size, spec.image_size)
    with torch.no_grad():
        difference = (model(images) - converted(images)).abs().max().item()
        spatial, frequency = time_pair(lambda: model(images), lambda: converted(images))
    written = save_checkpoint(out.parent, out.name.removesuffix(".safetensors"), converted, {**meta, "converted": True})
    print(f"wrote {written}: {args.model} with its convolutions in the frequency domain")
    print(f"largest logit difference on 100 random images: {difference:.2e}")
    print(f"inference, batch 100, {torch.get_num_threads()} threads: CNN {1e3 * spatial.median:.1f} ms, "
          f"frequency {1e3 * frequency.median:.1f} ms ({frequency.median / spatial.median:.2f}x)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from cemnet.bench import format_table, run_bench, write_json
    from cemnet.runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_bench(tuple(args.models), args.batch_size, resolve_device(args.device), args.repeats, args.warmup,
                       model_options(args), memory=not args.no_memory, twin_options=dict(args.twin_option),
                       cuda_graphs=args.cuda_graphs)
    print(format_table(report))
    if args.out:
        write_json(report, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from cemnet.plot import plot_curves, plot_kernels

    run = Path(args.run)
    print(f"wrote {plot_curves(run)}")
    checkpoint = Path(args.checkpoint) if args.checkpoint else run / "best.safetensors"
    if checkpoint.is_file():
        print(f"wrote {plot_kernels(checkpoint)}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from cemnet.reproduce import reproduce

    if args.epochs < 800:
        print(f"note: the paper trains 800 epochs per row; this run uses {args.epochs}")
    print(reproduce(args.table, epochs=args.epochs, out=args.out, seeds=args.seeds, rows=args.rows,
                    data_dir=args.data_dir, device=args.device or "auto", download=args.download,
                    progress=not args.no_progress, limit_train=args.limit_train, limit_test=args.limit_test))
    return 0


# ---------------------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser,
                data_dir_default: str = "$CEMNET_DATA or ~/.cache/cemnet") -> None:
    parser.add_argument("--data-dir", help=f"folder holding mnist/, fashion-mnist/, cifar10/ (default: "
                        f"{data_dir_default}; docs/user-guide.md, \"Data\")")
    parser.add_argument("--device", type=_device, help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--kernels", choices=KERNEL_SETTINGS, help="CPU kernels of the noise and batch norm: "
                        "native (C++), torch, or auto (native where they build; default: $CEMNET_KERNELS or auto)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never try to download missing data files")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-option", "-O", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                        help="preset override, e.g. -O weight_fixation=false -O storage=spatial (repeatable)")
    parser.add_argument("--as-cnn", action="store_true",
                        help="with --model FILE.py:FUNCTION, the CNN itself instead of its CEMNet twin")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The -O overrides, and ``as_cnn`` when --as-cnn was given."""
    options = dict(args.model_option)
    if getattr(args, "as_cnn", False):
        options["as_cnn"] = True
    return options


def _add_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit-train", type=POSITIVE_INT, metavar="N", help="use only the first N training images")
    parser.add_argument("--limit-test", type=POSITIVE_INT, metavar="N", help="use only the first N test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (per-epoch lines only)")


def _train_parser(train: argparse.ArgumentParser) -> None:
    train.add_argument("--model", help=f"a preset from `cemnet models` (default: {default('model')}), or "
                                       "FILE.py:FUNCTION, a function returning your CNN (converted unless --as-cnn)")
    train.add_argument("--dataset", type=_dataset, metavar="DATASET",
                       help=f"{', '.join(sorted(DATASETS))} or folder:PATH (your images: PATH/train/<class>/, "
                            f"PATH/test/<class>/, or PATH/<class>/); default: the data set the preset is built for")
    train.add_argument("--channels", type=int, choices=[1, 3],
                       help="folder:PATH: convert the images to grayscale (1) or RGB (3); default the mode most have")
    train.add_argument("--image-size", type=POSITIVE_INT, metavar="S",
                       help="folder:PATH: resize and centre-crop the images to S x S; default the model's")
    train.add_argument("--test-fraction", type=_fraction, metavar="F",
                       help="folder:PATH without test/: the share of each class held out for testing (default 0.2)")
    train.add_argument("--epochs", type=POSITIVE_INT,
                       help=f"epochs of the whole run (default: {default('epochs')}; the paper trains 800)")
    train.add_argument("--batch-size", type=POSITIVE_INT,
                       help=f"global batch size (default: {default('batch_size')})")
    train.add_argument("--lr", type=POSITIVE, help="peak learning rate (default: the preset's, 0.004)")
    train.add_argument("--warmup-epochs", type=NON_NEGATIVE, help="linear warm-up length (default: the preset's)")
    train.add_argument("--preset", choices=sorted(PRESETS),
                       help=f"optimizer recipe: the paper's, or the authors' public code's (default: "
                            f"{default('preset')})")
    train.add_argument("--seed", type=_seed,
                       help=f"initial weights, data order, noise and dropout (default: {default('seed')})")
    train.add_argument("--out", help="run folder for checkpoints and metrics (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in OUT exactly, with its own settings (options that change what is "
                            "computed are refused)")
    train.add_argument("--overwrite", action="store_true", help="delete a run that OUT already holds and start anew")
    train.add_argument("--no-cuda-graphs", action="store_true",
                       help="on CUDA, run every step eagerly instead of replaying it as a CUDA graph")
    train.add_argument("--stop-after", type=POSITIVE_INT, metavar="K",
                       help="stop this invocation after K epochs (resume later with --resume)")
    train.add_argument("--bn-recalibration", type=COUNT, metavar="N",
                       help="re-estimate batch-norm statistics on N training images before each evaluation "
                            f"(removes the dropout variance shift; 0 disables; default: {default('bn_recalibration')})")
    _add_limits(train)
    _add_model_options(train)
    _add_common(train)


def _eval_parser(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--checkpoint", required=True, help="a .safetensors file written by `cemnet train`")
    evaluate.add_argument("--dataset", type=_dataset, metavar="DATASET",
                          help="default: the one it was trained on")
    evaluate.add_argument("--batch-size", type=POSITIVE_INT, default=500, help="images per forward (default: 500)")
    _add_common(evaluate, "the folder the run was trained from, else $CEMNET_DATA or ~/.cache/cemnet")


def _reproduce_parser(repro: argparse.ArgumentParser) -> None:
    repro.add_argument("table", choices=["table1", "table2", "beyond", "fixation"],
                       help="the paper's Table 1 (MNIST) or 2 (CIFAR-10); beyond the paper, the nonlinearity and "
                            "spatial-stage options (beyond) or the Weight Fixation variants (fixation)")
    repro.add_argument("--epochs", type=POSITIVE_INT, default=800,
                       help="epochs per row (default: the paper's 800; on a CPU use a handful)")
    repro.add_argument("--seeds", type=POSITIVE_INT, default=1, metavar="N",
                       help="train seeds 0..N-1 of every row and report mean ± std of the error (default: 1); "
                            "finished seeds are read back, not retrained")
    repro.add_argument("--rows", nargs="+", metavar="ROW", help="train only these rows (their names in the "
                       "table's JSON, e.g. lenet5 cemnet fcnn); the others are reported as not run")
    repro.add_argument("--out", default="runs/reproduce", help="folder for the runs and the table")
    _add_limits(repro)
    _add_common(repro)


def _bench_parser(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--models", nargs="+", default=["cemnet-mnist", "cemnet-small", "cemnet-large"],
                       help="CEMNet presets; each is compared with its twin (default: all three)")
    bench.add_argument("--batch-size", type=POSITIVE_INT, default=100, help="images per step (default: 100)")
    bench.add_argument("--repeats", type=POSITIVE_INT, default=5, help="timed repetitions (default: 5)")
    bench.add_argument("--warmup", type=COUNT, default=2, help="untimed repetitions first (default: 2)")
    bench.add_argument("--threads", type=POSITIVE_INT, help="torch threads (default: torch's choice)")
    bench.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    bench.add_argument("--kernels", choices=KERNEL_SETTINGS, help="CPU kernels of the CEMNets' noise and batch norm "
                       "(default: $CEMNET_KERNELS or auto)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bench.add_argument("--cuda-graphs", action="store_true",
                       help="time CUDA-graph replays of each step and inference, both twins (CUDA only)")
    bench.add_argument("--out", help="also write the results as JSON here")
    bench.add_argument("--twin-option", "-T", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                       help="override of the CNN twins' presets, e.g. -T dropout_mask=uniform (repeatable)")
    _add_model_options(bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cemnet", description="CNNs trained in the frequency domain (CEMNet).",
                     epilog="exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()))
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not just its line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    _train_parser(command("train", cmd_train, "train a model preset with the paper's recipe"))
    _eval_parser(command("eval", cmd_eval, "evaluate a checkpoint: accuracy, error rate, per-class accuracy"))
    ops = command("ops", cmd_ops, "count forward and backward operations per image, layer by layer")
    ops.add_argument("--model", required=True, help="a preset from `cemnet models`, or FILE.py:FUNCTION")
    ops.add_argument("--rule", default="paper", choices=["paper", "autograd"],
                     help="backward rule: the paper's (backward = forward, plus Weight Fixation) or full autograd")
    _add_model_options(ops)
    _reproduce_parser(command("reproduce", cmd_reproduce, "train every row of a table: the paper's Tables 1-2, or "
                              "the comparisons beyond the paper"))
    convert = command("convert", cmd_convert, "turn a trained CNN checkpoint into its exact frequency-domain twin")
    convert.add_argument("--checkpoint", required=True, help="a CNN checkpoint written by `cemnet train`")
    convert.add_argument("--model", required=True, help="the preset it holds (lenet5, vgg-small, vgg-large)")
    convert.add_argument("--out", required=True, help="path of the converted .safetensors (a new file)")
    convert.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _bench_parser(command("bench", cmd_bench, "time each CEMNet preset against its CNN twin (training step, "
                          "inference, memory)"))
    plot = command("plot", cmd_plot, "PNG training curves of a run, and its learned kernels with their spectra")
    plot.add_argument("run", help="a run folder written by `cemnet train` (holds metrics.csv)")
    plot.add_argument("--checkpoint", help="checkpoint whose kernels to draw (default: RUN/best.safetensors)")
    models = command("models", cmd_models, "list the model presets with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*", help="glob over the names (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (:data:`EXIT_CODES`)."""
    args = build_parser().parse_args(argv)
    from cemnet import runtime
    from cemnet.training import TrainingDiverged
    from cemnet.training.trainer import Interrupted

    try:
        runtime.set_kernels(getattr(args, "kernels", None))  # this invocation's layers compute with these
        return args.handler(args)
    except (DataError, CheckpointError, ValueError, OSError, ModuleNotFoundError) as error:
        return _fail(args, error, EXIT_USAGE)
    except TrainingDiverged as error:
        return _fail(args, error, EXIT_DIVERGED)
    except Interrupted as interrupted:
        if interrupted.problem:
            print(f"cemnet: error: {interrupted.problem}", file=sys.stderr)
        return 128 + interrupted.signum
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    if args.debug:
        traceback.print_exc()
    message = str(error).strip() or type(error).__name__
    print(f"cemnet: error: {message}", file=sys.stderr)
    return code
