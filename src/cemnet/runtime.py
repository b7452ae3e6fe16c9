"""Where a process computes: the device, and which kernels run the CEMNets' noise and batch norm on the CPU.

Kernels
-------
One setting per process, ``"auto"`` (default), ``"native"`` or ``"torch"``,
from :func:`set_kernels` or the environment variable ``CEMNET_KERNELS``:

* ``"native"``: the C++ kernels of :mod:`cemnet._native` for float32 tensors on
  the CPU (built on first use, about a minute, then cached); a failed build
  is an error;
* ``"torch"``: PyTorch's operations everywhere;
* ``"auto"``: native where they build, else PyTorch's, with one warning.

The two draw different (equally distributed) noise for the same seed, and
sum batch-norm statistics in different precisions, so a run records which
it used (:func:`kernels_in_use`); on other devices than the CPU every
setting means PyTorch's operations. Layers read the setting when they are
built or moved (:mod:`cemnet.nn`), and nothing is compiled before a layer
first computes with it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

KERNEL_SETTINGS = ("auto", "native", "torch")
KERNELS_ENV = "CEMNET_KERNELS"

_setting: str | None = None  # set_kernels(); None: the environment decides
_native_failure: str | None = None  # why the native kernels are unavailable to this process ("auto" only)


def kernel_setting() -> str:
    """This process's setting: :func:`set_kernels`'s, else ``$CEMNET_KERNELS``, else ``"auto"``."""
    if _setting is not None:
        return _setting
    value = os.environ.get(KERNELS_ENV, "").strip().lower() or "auto"
    if value not in KERNEL_SETTINGS:
        raise ValueError(f"{KERNELS_ENV} must be one of {list(KERNEL_SETTINGS)}, got {value!r}")
    return value


def set_kernels(setting: str | None) -> None:
    """Choose the kernels of layers built or moved from now on (``None``: back to ``$CEMNET_KERNELS``)."""
    global _setting
    if setting is not None and setting not in KERNEL_SETTINGS:
        raise ValueError(f"kernels must be one of {list(KERNEL_SETTINGS)}, got {setting!r}")
    _setting = setting


@contextmanager
def using_kernels(setting: str | None) -> Iterator[None]:
    """:func:`set_kernels` for the layers built or moved inside the ``with`` block (``None``: leave it as it is)."""
    previous = _setting
    if setting is not None:
        set_kernels(setting)
    try:
        yield
    finally:
        set_kernels(previous)


def native_kernels() -> ModuleType | None:
    """The loaded native kernels (building them on the first call), or ``None`` where PyTorch's are used.

    ``None`` under ``"torch"``, and under ``"auto"`` when the build failed
    (said once, on stderr). Under ``"native"`` a failed build raises.

    Raises:
        cemnet._native.NativeBuildError: the setting is ``"native"`` and the kernels cannot be built.
    """
    global _native_failure
    setting = kernel_setting()
    if setting == "torch" or (setting == "auto" and _native_failure is not None):
        return None
    from cemnet import _native

    try:
        return _native.kernels()
    except _native.NativeBuildError as error:
        if setting == "native":
            raise _native.NativeBuildError(f"{KERNELS_ENV}=native but the native kernels cannot be built: "
                                           f"{error}") from None
        _native_failure = str(error)
        print(f"cemnet: warning: the native CPU kernels could not be built ({error}); using PyTorch's operations "
              f"(set {KERNELS_ENV}=torch to skip the build)", file=sys.stderr, flush=True)
        return None


def kernels_in_use(device: torch.device) -> str:
    """``"native"`` or ``"torch"``: what a run on ``device`` computes its noise and batch norm with.

    For a CPU run this builds the native kernels now (where the setting asks
    for them), so that the answer is true and the first step does not pause.
    """
    if device.type != "cpu":
        return "torch"
    return "native" if native_kernels() is not None else "torch"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; other names as ``torch.device`` reads them.

    Raises:
        ValueError: an unknown device name, or CUDA asked for where there is none.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} was requested but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {str(device)!r}")
    return device
