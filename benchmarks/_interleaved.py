"""What the scripts that time several training steps in one process share: arguments and ratio lines."""

import argparse

import torch

from cemnet.models import parse_option
from cemnet.timing import Timing, paired_ratio


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """``[MODEL] [-O key=value ...] [--batch-size] [--repeats] [--warmup] [--device]``."""
    parser.add_argument("model", nargs="?", default="cemnet-mnist")
    parser.add_argument("-O", dest="options", action="append", type=parse_option, default=[])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (CUDA steps are timed with CUDA events)")


def ratio_line(label: str, numerator: Timing, denominator: Timing, width: int = 40) -> str:
    """``label  1.234x (quartiles 1.100-1.300)``: the median of the per-repetition ratios."""
    ratio = paired_ratio(numerator, denominator)
    low, high = ratio.quartiles
    return f"  {label:<{width}} {ratio.median:.3f}x (quartiles {low:.3f}-{high:.3f})"


def print_steps(args: argparse.Namespace, twin: str, device: torch.device, timings: dict[str, Timing],
                comparisons: tuple[tuple[str, str], ...], width: int) -> None:
    """The run's settings, every step's median, and a ratio line per ``(numerator, denominator)`` label pair."""
    options = dict(args.options)
    described = f"{args.model} {options}" if options else args.model
    print(f"{described} vs {twin}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repetitions")
    print("step medians: " + ", ".join(f"{label} {timing.median * 1e3:.2f} ms" for label, timing in timings.items()))
    for numerator, denominator in comparisons:
        print(ratio_line(f"{numerator} / {denominator}", timings[numerator], timings[denominator], width=width))
