"""The one door to cemnet's C++ kernels: functions that take and return CPU tensors.

Two of the CEMNets' layers cost far more on the CPU as PyTorch operations
than they need to, and ``csrc/kernels.cpp`` computes them directly:

* the noise factors ``(1 + a z1) (1 + b z2)`` of the approximated Leaky ReLU
  and dropout, from a counter-based generator (Threefry-2x32-20) on all of
  PyTorch's intra-op threads, keyed from PyTorch's default generator, so
  ``torch.manual_seed`` still decides every number (and, for a dropout of the
  same law, keep masks);
* the batch norm of the real and imaginary parts: statistics and affine maps
  in one pass each instead of about thirty PyTorch operations.

Which process uses them is :mod:`cemnet.runtime`'s setting; the layers of
:mod:`cemnet.nn` call the functions below. The C++ functions check the
dtype, the layout and the sizes of every array they receive themselves.

Building: on first use, once per source, flags, PyTorch and Python, with
``torch.utils.cpp_extension`` (a C++ compiler and ninja) in a child process
and a private build folder, then moved into ``$TORCH_EXTENSIONS_DIR`` (default
PyTorch's extension cache) in one atomic rename. No lock is shared between
builds, so a build killed half-way leaves nothing that another waits for;
two processes that build at once both succeed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

SOURCES = Path(__file__).with_name("csrc")
KERNELS_SOURCE = SOURCES / "kernels.cpp"
BUILD_TIMEOUT_S = 900  # a compiler that has not finished by then is stuck; a leftover build folder is that old


class NativeBuildError(RuntimeError):
    """The native kernels could not be built or loaded; the message says why, in one line."""


def build_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags for this machine and this PyTorch.

    ``-ffast-math`` lets GCC call glibc's vector ``logf``/``cosf`` (libmvec
    declares them only under it); it is a compile flag only, since linking a
    shared library with it would add ``crtfastmath.o`` and flush denormals to
    zero in the whole process.
    """
    compile_flags, link_flags = ["-O3", "-ffast-math", f"-I{SOURCES}"], []
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


def build_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR``, else PyTorch's default extension cache."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    from torch.utils import cpp_extension  # slow to import: only where a path is needed

    return Path(cpp_extension.get_default_build_root())


def load_extension(sources: Sequence[Path], prefix: str) -> ModuleType:
    """Build (once) and import a pybind11 extension of ``sources``; the name carries a hash of all it depends on.

    Raises:
        NativeBuildError: no compiler, no ninja, a failed compilation or a failed import.
    """
    compile_flags, link_flags = build_flags()
    identity = "\n".join([*(source.read_text() for source in sources), *(path.read_text() for path in
                          sorted(SOURCES.glob("*.h"))), *compile_flags, *link_flags, torch.__version__, sys.version])
    name = f"{prefix}_{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    root = build_root()
    library = root / f"{name}.so"
    if not library.is_file():
        _build(name, sources, compile_flags, link_flags, root, library)
    try:
        loader = importlib.machinery.ExtensionFileLoader(name, str(library))
        spec = importlib.util.spec_from_file_location(name, library, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError as error:
        raise NativeBuildError(f"{library} does not load ({error})") from None
    return module


def _build(name: str, sources: Sequence[Path], compile_flags: list[str], link_flags: list[str], root: Path,
           library: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    print(f"cemnet: compiling the native CPU kernels into {library} (once, under a minute)", file=sys.stderr,
          flush=True)
    environment = dict(os.environ)
    try:  # cpp_extension runs `ninja` from PATH; the ninja package's binary may not be on it
        import ninja

        environment["PATH"] = os.pathsep.join([ninja.BIN_DIR, environment.get("PATH", "")])
    except ImportError:
        pass
    build = Path(tempfile.mkdtemp(prefix=f".build-{name}-{os.getpid()}-", dir=root))
    script = ("import json, sys; from torch.utils.cpp_extension import load; a = json.loads(sys.argv[1]); "
              "load(a['name'], a['sources'], extra_cflags=a['cflags'], extra_ldflags=a['ldflags'], "
              "build_directory=a['build'])")
    arguments = json.dumps({"name": name, "sources": [str(s) for s in sources], "cflags": compile_flags,
                            "ldflags": link_flags, "build": str(build)})
    try:
        try:
            done = subprocess.run([sys.executable, "-c", script, arguments], env=environment, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NativeBuildError(f"the compiler did not finish within {BUILD_TIMEOUT_S} s") from None
        built = build / f"{name}.so"
        if done.returncode != 0 or not built.is_file():
            raise NativeBuildError(_first_error(done.stderr + done.stdout))
        os.replace(built, library)  # atomic: another process sees the whole library or none
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _first_error(output: str) -> str:
    """The line of a failed build's output that says what failed (the compiler's first error if any)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("error:", "Error", "not found", "No such file"):
        for line in lines:
            if marker in line:
                return line[:300]
    return (lines[-1] if lines else "the build failed without a message")[:300]


def _remove_abandoned_builds(root: Path) -> None:
    """Remove the private folders of killed builds: their process is gone, or they are older than any build takes."""
    for folder in root.glob(".build-*"):
        try:
            pid = int(folder.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
            alive = True
        except (ValueError, IndexError, ProcessLookupError):
            alive = False
        except PermissionError:  # another user's live process
            alive = True
        try:
            if not alive or time.time() - folder.stat().st_mtime > BUILD_TIMEOUT_S:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            pass


@functools.cache
def kernels() -> ModuleType:
    """The compiled kernels of this process (built on the first call). Raises :class:`NativeBuildError`."""
    return load_extension([KERNELS_SOURCE], "cemnet_kernels")


# ---------------------------------------------------------------------------- tensors in, tensors out


def _cpu_float32(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        raise ValueError(f"the native kernels take float32 CPU tensors; {name} is {tensor.dtype} on {tensor.device} "
                         f"(move the module with .to(device), or use PyTorch's kernels: CEMNET_KERNELS=torch)")
    return tensor


def _memory(tensor: torch.Tensor):
    """A dense tensor's numbers in memory order, as a writable NumPy view (no copy)."""
    return tensor.detach().as_strided((tensor.numel(),), (1,)).numpy()


def key() -> int:
    """A kernel key: 63 bits from PyTorch's default generator, so that ``torch.manual_seed`` decides the draws."""
    return int(torch.empty((), dtype=torch.int64).random_())


def noise_factor(like: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """``prod_k N(1, sigma_k)`` shaped (and laid out) like ``like``: each pair of sigmas from one key."""
    factor = torch.empty_like(_cpu_float32(like, "the input"))  # dense, so its numbers start at data_ptr
    memory = _memory(factor)
    for start in range(0, len(sigmas), 2):
        a, b = (*sigmas[start:start + 2], 0.0)[:2]
        kernels().noise_factor(memory, a, b, key(), start > 0)
    return factor


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """``1 / (1 - p)`` where a 24-bit uniform is at least ``p``, else 0, shaped like ``like``."""
    mask = torch.empty_like(_cpu_float32(like, "the input"))
    kernels().keep_mask(_memory(mask), p, key())
    return mask


def channel_sums(x: torch.Tensor, y: torch.Tensor, blocks: tuple[int, int, int]) -> torch.Tensor:
    """``(2, C, 2)`` float64 sums of ``(B, numel)`` rows ``x`` and of ``x * y`` per channel and part.

    ``blocks`` is ``(outer, C, inner)``: how one example's numbers lie in memory.
    """
    x, y = (_cpu_float32(t, name).detach().contiguous() for t, name in ((x, "x"), (y, "y")))
    return torch.from_numpy(kernels().channel_sums(x.numpy(), y.numpy(), *blocks))


def channel_affine(x: torch.Tensor, coefficients: torch.Tensor, blocks: tuple[int, int, int],
                   y: torch.Tensor | None = None) -> torch.Tensor:
    """``a x + b (+ g y)`` on ``(B, numel)`` rows, the ``(2 or 3, C, 2)`` coefficients stacked ``a, b (, g)``."""
    x = _cpu_float32(x, "x").detach().contiguous()
    out = torch.empty_like(x)
    y_array = None if y is None else _cpu_float32(y, "y").detach().contiguous().numpy()
    coefficients = _cpu_float32(coefficients, "coefficients").detach().contiguous()
    kernels().channel_affine(out.numpy(), x.numpy(), y_array, coefficients.numpy(), *blocks)
    return out
