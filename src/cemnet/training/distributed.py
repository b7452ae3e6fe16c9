"""Data-parallel runs under ``torchrun``: the process group, sums over the ranks, shared statistics."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class World:
    """This process's place among the ``torchrun`` ranks (rank 0 of 1 without DDP)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over the ranks (identity without DDP)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object of CPU tensors), in rank order: ``[value]`` without DDP."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is set on any rank (the same answer on every rank; ``flag`` itself without DDP)."""
        if self.size == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's batch-norm statistics (DDP syncs them only before a forward)."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)


def init_distributed(device: torch.device) -> tuple[torch.device, World]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns the device this process computes on (its own GPU, ``LOCAL_RANK``,
    on a CUDA machine: NCCL refuses two ranks on one device) and its place.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, World()
    _end_with_the_launcher()
    if device.type == "cuda":
        local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"process {local_rank} on this machine has no CUDA device of its own ({count} found): "
                             f"start at most {count} per machine (torchrun --nproc-per-node) or use --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, World(dist.get_rank(), dist.get_world_size())


def _end_with_the_launcher() -> None:
    """Ask Linux for SIGTERM when the process that started this one (``torchrun``) dies, however it dies.

    Without it the workers of a killed launcher train on as orphans. SIGTERM
    ends a run as Ctrl-C does: every rank stops at the same step and saves.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
