"""Shared fixtures: deterministic seeds and the data directory of real MNIST/CIFAR-10."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cemnet import _native, runtime

DOUBLE = {"dtype": torch.float64}


def assert_rel_close(actual, expected, rel=1e-10):
    """Relative exactness: the error is measured against the size of the expected tensor."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-30))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def native_kernels_or_skip():
    """The compiled native kernels, or a skip where they cannot be built here (no compiler, no ninja)."""
    if runtime.kernel_setting() == "torch":
        pytest.skip(f"{runtime.KERNELS_ENV}=torch: the native kernels are not used")
    try:
        return _native.kernels()
    except _native.NativeBuildError as error:
        pytest.skip(f"the native kernels cannot be built here: {error}")


@pytest.fixture(params=["native", "torch"])
def kernels(request) -> str:
    """Run a test whose layers are built under each kernel setting (native skipped where it cannot be built)."""
    if request.param == "native":
        native_kernels_or_skip()
    with runtime.using_kernels(request.param):
        yield request.param


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


@pytest.fixture
def cifar_dir() -> Path:
    path = shared_data_dir()
    if path is None or not (path / "cifar10").is_dir():
        pytest.skip("real CIFAR-10 not found: set CEMNET_DATA to a folder holding cifar10/")
    return path
