"""CUDA graphs: a step recorded once and replayed without the host's cost of launching its kernels.

An eager CEMNet step on a GPU is bound by the host (its kernels are small and
many: about three times a CNN's); a graph replays all of them in one launch.
A recorded function must not synchronise with the host and must work on the
same tensors every time: inputs are copied into fixed tensors first, and
random numbers are fresh at every replay (PyTorch's CUDA generator is
graph-safe).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cemnet.training.step import TrainingStep

# Eager runs of a step before it is recorded: they create the optimizer state, the cuFFT plans and the
# cuBLAS workspaces outside the graph.
GRAPH_WARMUP = 3


def require_cuda_for_graphs(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}")


def _on_side_stream(fn: Callable[[], object], device: torch.device) -> object:
    """``fn()`` on a side stream, as PyTorch's recipe for whole-network capture asks of the runs before it."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        result = fn()
    torch.cuda.current_stream(device).wait_stream(side)
    return result


def _record(fn: Callable[[], object]) -> tuple[torch.cuda.CUDAGraph, object]:
    """Record ``fn`` (which launches nothing while recorded); returns the graph and ``fn``'s outputs."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


def capture_cuda_graph(fn: Callable[[], object], device: torch.device,
                       warmup: int = GRAPH_WARMUP) -> Callable[[], None]:
    """Record ``fn`` as a CUDA graph after ``warmup`` eager runs; returns the graph's replay.

    Raises:
        ValueError: when ``device`` is not a CUDA device.
    """
    require_cuda_for_graphs(device)
    for _ in range(warmup):
        _on_side_stream(fn, device)
    graph, _ = _record(fn)

    def replay() -> None:
        graph.replay()

    # The graph reads and writes the tensors that fn holds (a batch, the optimizer's state): the replay
    # keeps fn, or they would be freed and their memory reused while the graph still points at it.
    replay.recorded = fn
    return replay


class GraphedStep:
    """A :class:`~cemnet.training.step.TrainingStep` run as a CUDA graph, step for step the same training.

    Every batch is copied into fixed input tensors. The first ``warmup`` calls
    are real training steps run eagerly on a side stream; the next call
    records the step (which runs nothing) and replays it, and every later
    call replays it, drawing fresh random numbers. A batch of another size
    (a short last batch) runs eagerly. The step must be ``capturable`` (its
    optimizer state and schedule on the device).

    Args:
        step: the training step.
        x, y: one batch, whose shapes and dtypes the graph is recorded for.
        warmup: eager steps before the recording.
    """

    def __init__(self, step: TrainingStep, x: torch.Tensor, y: torch.Tensor, warmup: int = GRAPH_WARMUP) -> None:
        require_cuda_for_graphs(x.device)
        self.step, self.warmup = step, warmup
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.eager_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape != self.x.shape or y.shape != self.y.shape:
            return self.step(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            return _on_side_stream(lambda: self.step(self.x, self.y), self.x.device)
        if self.graph is None:
            self.graph, self.outputs = _record(lambda: self.step(self.x, self.y))
        self.graph.replay()
        return self.outputs
