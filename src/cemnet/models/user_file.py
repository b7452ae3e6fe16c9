"""A model of your own, named ``path/to/file.py:function``: the function returns a CNN, cemnet converts it.

``cemnet train|eval|ops|bench --model FILE.py:FUNCTION`` and
``create_model("FILE.py:FUNCTION", **options)`` load the file as a module,
call the function with no arguments, and hand the CNN it returns to
:func:`cemnet.from_cnn` with the options (``as_cnn=True`` keeps the CNN
itself, so both twins can be trained on the same plan). A run records the
file's SHA-256 (:func:`file_digest`), so that ``--resume`` and ``eval``
refuse a file that changed since.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cemnet.models._registry import ModelInfo, register_resolver
from cemnet.models.reader import from_cnn, read_plan


def is_model_file(name: str) -> bool:
    """Whether a model name is ``FILE.py:FUNCTION`` rather than a preset."""
    path, sep, function = name.rpartition(":")
    return bool(sep and function and path.endswith(".py"))


def _split(name: str) -> tuple[Path, str]:
    path, _, function = name.rpartition(":")
    return Path(path).expanduser(), function


def file_digest(name: str) -> str:
    """SHA-256 of the file of a ``FILE.py:FUNCTION`` model."""
    path, _ = _split(name)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ValueError(f"--model {name}: cannot read {path} ({error.strerror or error})") from None


def load_cnn(name: str) -> nn.Module:
    """Call the function of a ``FILE.py:FUNCTION`` model; what it returns must be an ``nn.Module``.

    Raises:
        ValueError: the file is missing or does not import, the function is
            missing or raises, or it returns something else (one line each).
    """
    path, function = _split(name)
    if not path.is_file():
        raise ValueError(f"--model {name}: the file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"cemnet_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"--model {name}: importing {path} failed ({type(error).__name__}: {error})") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    build = getattr(module, function, None)
    if not callable(build):
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__)
        raise ValueError(f"--model {name}: {path} has no function {function!r} (its functions: {found})")
    try:
        model = build()
    except Exception as error:
        raise ValueError(f"--model {name}: {function}() raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {name}: {function}() returned an object of type {type(model).__name__}, not a torch.nn.Module")
    return model


def factory(name: str) -> Callable[..., nn.Module]:
    """The model factory of a ``FILE.py:FUNCTION`` name: its keywords are the options of ``from_cnn``, and ``as_cnn``."""

    def build(*, as_cnn: bool = False, **options) -> nn.Module:
        with torch.device("cpu"):  # the user's code and the plan's replay compute, even when shapes are asked for
            model = load_cnn(name)
            if as_cnn:
                model.spec = read_plan(model)[0]  # what cemnet reads of every model: its input shape and classes
                return model
            return from_cnn(model, **options)

    # Its options, as the registry reads them (`cemnet models`, create_model's check): as_cnn and from_cnn's own.
    keywords = [p for p in inspect.signature(from_cnn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    build.__signature__ = inspect.Signature(
        [inspect.Parameter("as_cnn", inspect.Parameter.KEYWORD_ONLY, default=False), *keywords])
    build.__doc__ = f"Your CNN from {name}, converted by cemnet.from_cnn (as_cnn=true: the CNN itself)."
    return build


def _resolve(name: str) -> ModelInfo | None:
    """A ``FILE.py:FUNCTION`` model is its own twin: ``as_cnn=True`` gives the CNN, the default its CEMNet."""
    if not is_model_file(name):
        return None
    build = factory(name)
    return ModelInfo(name, build, None, name, build.__doc__)


register_resolver(_resolve)
