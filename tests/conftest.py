"""Shared fixtures: deterministic seeds and the data directory of real MNIST/CIFAR-10."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
