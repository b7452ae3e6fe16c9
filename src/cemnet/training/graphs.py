"""CUDA graphs: a step recorded once and replayed without the launches' host cost."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Eager runs of a step before it is recorded as a CUDA graph: they create the
# optimizer state, the cuFFT plans and the cuBLAS workspaces outside the graph.
GRAPH_WARMUP = 3


def capture_cuda_graph(fn: Callable[[], object], device: torch.device,
                       warmup: int = GRAPH_WARMUP) -> Callable[[], None]:
    """Record ``fn`` as a CUDA graph; returns the graph's replay.

    ``fn`` runs ``warmup`` times on a side stream first (PyTorch's recipe for
    whole-network capture), then once under capture, which launches nothing.
    Each replay repeats the recorded kernels on the same memory, with fresh
    random numbers (PyTorch's CUDA generator is graph-safe) and without the
    Python and launch cost of the eager call. ``fn`` must not synchronise
    with the host (no ``.item()``, no data-dependent Python branches) and
    must work on the same tensors every time (copy new inputs into them).

    Raises:
        ValueError: when ``device`` is not a CUDA device.
    """
    require_cuda_for_graphs(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()

    def replay() -> None:
        graph.replay()

    # The graph reads and writes the tensors that fn holds (a batch, the optimizer's state): the replay
    # keeps fn, or they would be freed and their memory reused while the graph still points at it.
    replay.recorded = fn
    return replay


def require_cuda_for_graphs(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
