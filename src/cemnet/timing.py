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


def _seconds(fn: Callable[[], object], device: torch.device | None) -> float:
    if device is not None and device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 3, device: torch.device | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls."""
    return time_pair(fn, None, repeats, warmup, device)[0]


def time_pair(
    first: Callable[[], object], second: Callable[[], object] | None, repeats: int = 10, warmup: int = 3,
    device: torch.device | None = None,
) -> tuple[Timing, Timing | None]:
    """Time two calls *interleaved*: first, second, first, second, ...

    On a shared machine the speed drifts by tens of percent over a minute;
    alternating the two makes both see the same drift, so the ratio of the
    i-th samples (:func:`paired_ratio`) is far steadier than the ratio of two
    medians taken one after the other.
    """
    calls = [first] if second is None else [first, second]
    for _ in range(warmup):
        for fn in calls:
            fn()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for fn, times in zip(calls, samples):
            times.append(_seconds(fn, device))
    timings = [Timing(tuple(times)) for times in samples]
    return timings[0], (timings[1] if second is not None else None)


def paired_ratio(numerator: Timing, denominator: Timing) -> Timing:
    """The per-repetition ratios of two :func:`time_pair` timings (median and IQR as for seconds)."""
    return Timing(tuple(a / b for a, b in zip(numerator.samples, denominator.samples)))
