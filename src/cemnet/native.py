"""CPU kernels compiled on first use: the spectral noise factors and the spectral batch norm.

Two of the CEMNets' layers cost far more on the CPU as PyTorch operations
than they need to (docs/performance.md, items 17 and 18), and
``csrc/kernels.cpp`` computes them directly:

* the noise factors ``(1 + a z1) (1 + b z2)`` of the approximated Leaky ReLU
  and dropout (and the keep masks of :class:`cemnet.nn.UniformMaskDropout`).
  PyTorch draws CPU Gaussians serially from one Mersenne Twister, two per
  activation number here; the kernel takes the Box-Muller pair of a
  counter-based generator (Threefry-2x32-20) instead: no state, so the
  numbers are computed in vectorised blocks on all of PyTorch's intra-op
  threads, and they depend on the key and their position only (not on the
  thread count). Each key is drawn from PyTorch's default generator, so
  ``torch.manual_seed`` still decides every number;
* the batch norm of the real and imaginary parts, whose statistics and
  affine maps are one pass each instead of about thirty PyTorch operations.

:mod:`cemnet.nn.functional` uses them for float32 CPU tensors. They are
built with ``torch.utils.cpp_extension`` (a C++ compiler and ninja, a
dependency of this package) once per source, flags and PyTorch build, about
10 s, and cached in ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``). The environment variable ``CEMNET_NATIVE``
decides: ``auto`` (default) builds them and falls back to PyTorch's
operations with a warning when that fails, ``0`` never builds them, ``1``
makes a failed build an error. A seeded run draws different (equally
distributed) noise with and without them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

NATIVE_ENV = "CEMNET_NATIVE"
SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
_SETTINGS = {"auto": "auto", "": "auto", "0": "off", "off": "off", "1": "require", "on": "require"}


def native_setting() -> str:
    """``"auto"``, ``"off"`` or ``"require"``, from ``CEMNET_NATIVE`` (unset: ``"auto"``)."""
    value = os.environ.get(NATIVE_ENV, "auto").strip().lower()
    if value not in _SETTINGS:
        raise ValueError(f"{NATIVE_ENV} must be 'auto', '0' or '1', got {value!r}")
    return _SETTINGS[value]


def build_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags for this machine and this PyTorch.

    ``-ffast-math`` lets GCC call glibc's vector ``logf``/``cosf`` (libmvec
    declares them only under it); it is a compile flag only, since linking a
    shared library with it would add ``crtfastmath.o`` and flush denormals to
    zero in the whole process.
    """
    compile_flags, link_flags = ["-O3", "-ffast-math"], []
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for is OpenMP inlined from PyTorch's headers: without the flag it runs serially. Not
        # linked with it: the OpenMP symbols then resolve to PyTorch's own runtime, so the kernel runs on
        # PyTorch's threads (a second runtime's threads would compete with them for the cores).
        compile_flags.append("-fopenmp")
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        compile_flags += ["-mavx2", "-mfma"]
        if sys.platform.startswith("linux"):
            link_flags.append("-lmvec")
    return compile_flags, link_flags


@functools.cache
def kernels() -> ModuleType | None:
    """The compiled module (``noise_factor``, ``keep_mask``, ``channel_sums``, ...), or ``None`` where it is off or
    failed to build."""
    setting = native_setting()
    if setting == "off":
        return None
    try:
        return _build()
    except Exception as error:  # a missing compiler or ninja, a failed compilation, a failed load
        if setting == "require":
            raise RuntimeError(f"{NATIVE_ENV}=1 but the native kernels could not be built: {error}") from error
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        warnings.warn(
            f"cemnet: the native CPU kernels could not be built ({type(error).__name__}: {first_line}); "
            f"the layers use PyTorch's generator and operations instead (set {NATIVE_ENV}=0 to skip the build)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _build() -> ModuleType:
    # Imported here: it is slow to import, and only a build or a load needs it.
    from torch.utils import cpp_extension

    compile_flags, link_flags = build_flags()
    identity = "\n".join([SOURCE.read_text(), *compile_flags, *link_flags, torch.__version__, sys.version])
    name = f"cemnet_kernels_{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    directory = Path(root) / name
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_lock(directory / "lock")
    if not any(path.suffix in (".so", ".pyd") for path in directory.iterdir()):  # nothing built here yet
        print(f"cemnet: compiling the native CPU kernels into {directory} (once, about 10 s)", file=sys.stderr)
    with _ninja_on_path():
        return cpp_extension.load(
            name, [str(SOURCE)], extra_cflags=compile_flags, extra_ldflags=link_flags, build_directory=str(directory)
        )


# A build takes about 10 s; torch.utils.cpp_extension waits without end on the lock file of a
# build that was killed (SIGKILL, out of memory), so an older lock is taken for a dead one.
STALE_LOCK_S = 600


def _remove_stale_lock(lock: Path) -> None:
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        warnings.warn(f"cemnet: removing the build lock {lock}, {age:.0f} s old (a killed build?)", RuntimeWarning,
                      stacklevel=4)
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def _ninja_on_path():
    """``torch.utils.cpp_extension`` runs ``ninja`` from ``PATH``; the ``ninja`` package's may not be on it."""
    original = os.environ.get("PATH", "")
    try:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, original])
    except ImportError:
        pass
    try:
        yield
    finally:
        os.environ["PATH"] = original
