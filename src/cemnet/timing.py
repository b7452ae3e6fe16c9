"""Wall-clock timing with warm-up: CUDA events on GPU, ``perf_counter`` on CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repetitions."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartiles (the smallest and largest sample below four samples)."""
        if len(self.samples) < 4:
            return min(self.samples), max(self.samples)
        quartiles = statistics.quantiles(self.samples, n=4)
        return quartiles[0], quartiles[2]

    @property
    def spread(self) -> float:
        """Interquartile range, robust to the odd slow repetition."""
        low, high = self.quartiles
        return high - low


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
    return time_interleaved([fn], repeats, warmup, device)[0]


def time_pair(
    first: Callable[[], object], second: Callable[[], object], repeats: int = 10, warmup: int = 3,
    device: torch.device | None = None,
) -> tuple[Timing, Timing]:
    """Time two calls *interleaved*: first, second, first, second, ...

    On a shared machine the speed drifts by tens of percent over a minute;
    alternating the two makes both see the same drift, so the ratio of the
    i-th samples (:func:`paired_ratio`) is far steadier than the ratio of two
    medians taken one after the other.
    """
    first_timing, second_timing = time_interleaved([first, second], repeats, warmup, device)
    return first_timing, second_timing


def time_interleaved(
    calls: Sequence[Callable[[], object]], repeats: int = 10, warmup: int = 3, device: torch.device | None = None
) -> list[Timing]:
    """:func:`time_pair` for any number of calls: each repetition runs every call once, in order."""
    for _ in range(warmup):
        for fn in calls:
            fn()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for fn, times in zip(calls, samples):
            times.append(_seconds(fn, device))
    return [Timing(tuple(times)) for times in samples]


def paired_ratio(numerator: Timing, denominator: Timing) -> Timing:
    """The per-repetition ratios of two :func:`time_pair` timings (median and IQR as for seconds)."""
    return Timing(tuple(a / b for a, b in zip(numerator.samples, denominator.samples)))
