"""Does torch.compile pay off? A CEMNet and its CNN twin, each eager and compiled, interleaved in one process.

Usage: python benchmarks/compile_step.py [MODEL] [-O key=value ...] [-T key=value ...] [--batch-size 100]
       [--repeats 41] [--device cpu]

``torch.compile`` wraps each model's ``forward`` (the loss, backward,
optimizer and Weight Fixation stay eager; AOTAutograd compiles the forward's
backward). The first compiled step includes the compilation and is reported
apart; the timed steps of the four variants then run in turn every
repetition. The CNN is compiled too, so that the CEMNet / CNN ratio compares
like with like.
"""

import argparse
import time

import torch
from _interleaved import add_step_arguments, ratio_line

from cemnet.bench import training_step
from cemnet.models import model_info, parse_option
from cemnet.runtime import resolve_device
from cemnet.timing import time_interleaved

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
add_step_arguments(parser)
parser.add_argument("-T", dest="twin_options", action="append", type=parse_option, default=[])
args = parser.parse_args()

device = resolve_device(args.device)
twin = model_info(args.model).twin
steps = {}
for name, options in ((args.model, dict(args.options)), (twin, dict(args.twin_options))):
    for compiled in (False, True):
        torch.manual_seed(0)
        model, _, step = training_step(name, args.batch_size, device, options)
        if compiled:
            model.forward = torch.compile(model.forward)
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            print(f"{name}: first compiled step {time.perf_counter() - started:.1f} s")
        steps[f"{name} {'compiled' if compiled else 'eager'}"] = step
timings = dict(zip(steps, time_interleaved(list(steps.values()), args.repeats, args.warmup, device)))

print(f"{args.model} {dict(args.options)} vs {twin} {dict(args.twin_options)}, batch {args.batch_size}, {device}, "
      f"{torch.get_num_threads()} threads, {args.repeats} interleaved repetitions")
print("step medians: " + ", ".join(f"{label} {timing.median * 1e3:.2f} ms" for label, timing in timings.items()))
for numerator, denominator in (
    (f"{args.model} compiled", f"{args.model} eager"),
    (f"{twin} compiled", f"{twin} eager"),
    (f"{args.model} eager", f"{twin} eager"),  # what `cemnet bench` reports
    (f"{args.model} compiled", f"{twin} compiled"),
):
    print(ratio_line(f"{numerator} / {denominator}", timings[numerator], timings[denominator], width=52))
