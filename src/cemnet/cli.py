"""The ``cemnet`` command line: ``cemnet train|eval|models ...`` (``cemnet -h`` lists all)."""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path
from typing import Any, Callable

from cemnet.checkpoint import CheckpointError
from cemnet.data import DATASETS, DataError

EXIT_DATA = 2  # missing/corrupt data or checkpoint: the message says what to do
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a Python literal value (``true``/``false`` accepted)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    lowered = {"true": "True", "false": "False", "none": "None"}.get(raw.lower(), raw)
    try:
        return key, ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        return key, raw


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding mnist/, fashion-mnist/, cifar10/ "
                        "(default: $CEMNET_DATA or ~/.cache/cemnet)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never try to download missing data files")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-option", "-O", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                        help="preset override, e.g. -O weight_fixation=false -O storage=spatial (repeatable)")


# ---------------------------------------------------------------------------- subcommands


def cmd_train(args: argparse.Namespace) -> int:
    from cemnet.train import TrainConfig, train

    config = TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
        preset=args.preset, lr=args.lr, warmup_epochs=args.warmup_epochs, seed=args.seed,
        device=args.device, data_dir=args.data_dir, out=args.out, download=args.download,
        limit_train=args.limit_train, limit_test=args.limit_test, progress=not args.no_progress,
        stop_after=args.stop_after, bn_recalibration=args.bn_recalibration, model_options=dict(args.model_option),
    )
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if "test_accuracy" in summary:
        print(f"test accuracy {summary['test_accuracy']:.4f} (error {100 * (1 - summary['test_accuracy']):.2f}%), "
              f"best {summary['best_test_accuracy']:.4f}; checkpoints and metrics.csv in {summary['out']}")
    else:
        print(f"nothing to do: {summary['out']} already holds {summary['epochs_run']} epochs")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cemnet.checkpoint import load_model
    from cemnet.data import dataset_info, load_dataset, normalize
    from cemnet.train import evaluate, resolve_device

    model, meta = load_model(args.checkpoint)
    dataset = args.dataset or meta["dataset"]
    model.to(resolve_device(args.device))
    images, labels = load_dataset(dataset, "test", args.data_dir, download=args.download)
    result = evaluate(model, normalize(images, dataset), labels, batch_size=args.batch_size)
    print(f"{meta['model']} on {dataset} test ({result['count']} images): accuracy {result['accuracy']:.4f}, "
          f"error rate {100 * (1 - result['accuracy']):.2f}%, loss {result['loss']:.4f}")
    for name, accuracy in zip(dataset_info(dataset).classes, result["per_class"]):
        print(f"  {name:>12}: {accuracy:.4f}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cemnet.models import count_parameters, create_model, list_models, model_info

    print(f"{'name':<14} {'data':<8} {'twin of':<10} {'parameters':>12}  description")
    for name in list_models(args.pattern):
        info = model_info(name)
        parameters = count_parameters(create_model(name))
        print(f"{name:<14} {info.dataset:<8} {info.twin or '':<10} {parameters:>12,}  {info.summary}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from cemnet.models import create_model
    from cemnet.ops import count_ops

    counts = count_ops(create_model(args.model, **dict(args.model_option)), rule=args.rule)
    print(f"{args.model}: operations per image (conventions: `python -m pydoc cemnet.ops`, docs/ops.md)")
    print(counts.table())
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from cemnet.checkpoint import load_model, save_checkpoint
    from cemnet.convert import to_frequency
    from cemnet.timing import time_pair

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
        spatial_s, frequency_s = spatial.median, frequency.median
    out = Path(args.out)
    save_checkpoint(out.parent, out.name.removesuffix(".safetensors"), converted, {**meta, "converted": True})
    print(f"wrote {out}: {args.model} with its convolutions in the frequency domain")
    print(f"largest logit difference on 100 random images: {difference:.2e}")
    print(f"inference, batch 100, {torch.get_num_threads()} threads: CNN {1e3 * spatial_s:.1f} ms, "
          f"frequency {1e3 * frequency_s:.1f} ms ({frequency_s / spatial_s:.2f}x)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from cemnet.bench import format_table, run_bench, write_json
    from cemnet.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_bench(tuple(args.models), args.batch_size, resolve_device(args.device), args.repeats, args.warmup,
                       dict(args.model_option), memory=not args.no_memory, twin_options=dict(args.twin_option),
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
    print(reproduce(args.table, epochs=args.epochs, out=args.out, seeds=args.seeds, data_dir=args.data_dir,
                    device=args.device,
                    download=args.download, progress=not args.no_progress, limit_train=args.limit_train,
                    limit_test=args.limit_test))
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cemnet", description="CNNs trained in the frequency domain (CEMNet).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    train = command("train", cmd_train, "train a model preset with the paper's recipe")
    train.add_argument("--model", default="cemnet-mnist", help="a preset from `cemnet models` (default: cemnet-mnist)")
    train.add_argument("--dataset", choices=sorted(DATASETS), help="default: the data set the preset is built for")
    train.add_argument("--epochs", type=int, default=5, help="default: 5 (the paper trains 800)")
    train.add_argument("--batch-size", type=int, default=100, help="global batch size (default: 100)")
    train.add_argument("--lr", type=float, help="peak learning rate (default: the preset's, 0.004)")
    train.add_argument("--warmup-epochs", type=float, help="linear warm-up length (default: the preset's)")
    train.add_argument("--preset", default="paper", choices=["paper", "authors-code"],
                       help="optimizer recipe: the paper's, or the authors' public code's (default: paper)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="run folder for checkpoints and metrics (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors exactly")
    train.add_argument("--limit-train", type=int, metavar="N", help="use only the first N training images")
    train.add_argument("--limit-test", type=int, metavar="N", help="use only the first N test images")
    train.add_argument("--stop-after", type=int, metavar="K",
                       help="stop this invocation after K epochs (resume later with --resume)")
    train.add_argument("--bn-recalibration", type=int, default=5000, metavar="N",
                       help="re-estimate batch-norm statistics on N training images before each evaluation "
                            "(removes the dropout variance shift; 0 disables; default: 5000)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    _add_model_options(train)
    _add_common(train)

    evaluate = command("eval", cmd_eval, "evaluate a checkpoint: accuracy, error rate, per-class accuracy")
    evaluate.add_argument("--checkpoint", required=True, help="a .safetensors file written by `cemnet train`")
    evaluate.add_argument("--dataset", choices=sorted(DATASETS), help="default: the one it was trained on")
    evaluate.add_argument("--batch-size", type=int, default=500)
    _add_common(evaluate)

    ops = command("ops", cmd_ops, "count forward and backward operations per image, layer by layer")
    ops.add_argument("--model", required=True, help="a preset from `cemnet models`")
    ops.add_argument("--rule", default="paper", choices=["paper", "autograd"],
                     help="backward rule: the paper's (backward = forward, plus Weight Fixation) or full autograd")
    _add_model_options(ops)

    repro = command("reproduce", cmd_reproduce, "train every row of the paper's Table 1 (MNIST) or 2 (CIFAR-10)")
    repro.add_argument("table", choices=["table1", "table2"])
    repro.add_argument("--epochs", type=int, default=800, help="epochs per row (default: the paper's 800; "
                       "on a CPU use a handful)")
    repro.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="train seeds 0..N-1 of every row and report mean ± std of the error (default: 1); "
                            "finished seeds are read back, not retrained")
    repro.add_argument("--out", default="runs/reproduce", help="folder for the runs and the table")
    repro.add_argument("--limit-train", type=int, metavar="N", help="use only the first N training images")
    repro.add_argument("--limit-test", type=int, metavar="N", help="use only the first N test images")
    repro.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_common(repro)

    convert = command("convert", cmd_convert, "turn a trained CNN checkpoint into its exact frequency-domain twin")
    convert.add_argument("--checkpoint", required=True, help="a CNN checkpoint written by `cemnet train`")
    convert.add_argument("--model", required=True, help="the preset it holds (lenet5, vgg-small, vgg-large)")
    convert.add_argument("--out", required=True, help="path of the converted .safetensors")

    bench = command("bench", cmd_bench, "time each CEMNet preset against its CNN twin (training step, "
                    "inference, memory)")
    bench.add_argument("--models", nargs="+", default=["cemnet-mnist", "cemnet-small", "cemnet-large"],
                       help="CEMNet presets; each is compared with its twin (default: all three)")
    bench.add_argument("--batch-size", type=int, default=100)
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions (default: 5)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default: 2)")
    bench.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bench.add_argument("--cuda-graphs", action="store_true",
                       help="time CUDA-graph replays of each step and inference, both twins (CUDA only)")
    bench.add_argument("--out", help="also write the results as JSON here")
    bench.add_argument("--twin-option", "-T", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                       help="override of the CNN twins' presets, e.g. -T block_pool=true (repeatable)")
    _add_model_options(bench)

    plot = command("plot", cmd_plot, "PNG training curves of a run, and its learned kernels with their spectra")
    plot.add_argument("run", help="a run folder written by `cemnet train` (holds metrics.csv)")
    plot.add_argument("--checkpoint", help="checkpoint whose kernels to draw (default: RUN/best.safetensors)")

    models = command("models", cmd_models, "list the model presets with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*", help="glob over the names (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cemnet.train import TrainingDiverged

    try:
        return args.handler(args)
    except (DataError, CheckpointError, FileNotFoundError, ModuleNotFoundError) as error:
        print(f"cemnet: error: {error}", file=sys.stderr)
        return EXIT_DATA
    except TrainingDiverged as error:
        print(f"cemnet: error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ValueError as error:  # bad options: the message names what was expected
        print(f"cemnet: error: {error}", file=sys.stderr)
        return EXIT_DATA


if __name__ == "__main__":
    sys.exit(main())
