"""Wall-clock timing with warm-up: CUDA events on GPU, ``perf_counter`` on CPU."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repetitions."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range, robust to the odd slow repetition."""
        if len(self.samples) < 4:
            return max(self.samples) - min(self.samples)
        quartiles = statistics.quantiles(self.samples, n=4)
        return quartiles[2] - quartiles[0]


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 3, device: torch.device | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls."""
    cuda = device is not None and device.type == "cuda"
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
    return Timing(tuple(samples))
