"""Shared fixtures: deterministic seeds and the data directory of real MNIST/CIFAR-10."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cemnet import native


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["native", "torch"])
def native_backend(request, monkeypatch) -> str:
    """Run a test with the native CPU kernels (skipped where they are not built) and with PyTorch's operations."""
    if request.param == "torch":
        monkeypatch.setattr(native, "kernels", lambda: None)
    elif native.kernels() is None:
        pytest.skip(f"the native kernels are off or could not be built ({native.NATIVE_ENV}, compiler, ninja)")
    return request.param


def shared_data_dir() -> Path | None:
    """``$CEMNET_DATA`` if set, else ``../shared/data`` next to the checkout, if present."""
    env = os.environ.get("CEMNET_DATA")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None or not (path / "mnist").is_dir():
        pytest.skip("real MNIST not found: set CEMNET_DATA to a folder holding mnist/")
    return path


def _as_two_branch_layout(state: dict, head) -> dict:
    """A state dict with ``head`` (a TwoBranchHead) in the layout of checkpoint schema <= 2.

    The grouped MLP ``{prefix}branches.*`` becomes two MLPs, ``{prefix}real.*``
    and ``{prefix}imag.*``: grouped weights unstacked, batch-norm vectors
    split in halves, the batch counter copied.
    """
    from cemnet.nn import GroupedLinear

    out = {}
    for key, value in state.items():
        prefix, found, name = key.partition("branches.")
        if not found:
            out[key] = value.clone()
            continue
        if isinstance(head.branches[int(name.split(".")[0])], GroupedLinear):
            parts = value.unbind(0)
        else:
            parts = (value, value) if name.endswith("num_batches_tracked") else value.chunk(2)
        out[f"{prefix}real.{name}"], out[f"{prefix}imag.{name}"] = (part.clone() for part in parts)
    return out


@pytest.fixture
def two_branch_layout():
    """:func:`_as_two_branch_layout`: how checkpoints before schema 3 stored the head."""
    return _as_two_branch_layout
