"""The model preset registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import argparse
import ast
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """A registered preset: its factory and what it is trained on."""

    name: str
    factory: Callable[..., nn.Module]
    dataset: str | None  # None: a model of your own, for whatever data fit its input shape
    twin: str | None
    summary: str

    @property
    def options(self) -> list[str]:
        """The keyword overrides the factory accepts."""
        return list(inspect.signature(self.factory).parameters)

    @property
    def defaults(self) -> dict[str, Any]:
        """Each option with its default."""
        return {name: p.default for name, p in inspect.signature(self.factory).parameters.items()}


_MODELS: dict[str, ModelInfo] = {}


def register_model(dataset: str, twin: str | None = None, name: str | None = None) -> Callable:
    """Decorator: register a factory under ``name``, default its function name with ``_`` spelled ``-``.

    Args:
        dataset: the data set the preset is built for (``"mnist"``, ``"cifar10"``).
        twin: the registered name of the model it mirrors layer for layer.
        name: the registered name, when it is not the function's.
    """

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        registered = name or factory.__name__.replace("_", "-")
        if registered in _MODELS:
            raise ValueError(f"model {registered!r} is registered twice")
        summary = (inspect.getdoc(factory) or "").split("\n")[0]
        _MODELS[registered] = ModelInfo(registered, factory, dataset, twin, summary)
        return factory

    return decorate


_RESOLVERS: list[Callable[[str], ModelInfo | None]] = []


def register_resolver(resolve: Callable[[str], ModelInfo | None]) -> None:
    """Add a way to name models beyond the presets: ``resolve(name)`` gives a :class:`ModelInfo`, or ``None``.

    :mod:`cemnet.models.user_file` registers ``FILE.py:FUNCTION`` names this way.
    """
    _RESOLVERS.append(resolve)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a preset, or of a name a resolver knows (``FILE.py:FUNCTION``).

    Unknown names raise with the known ones.
    """
    if name in _MODELS:
        return _MODELS[name]
    for resolve in _RESOLVERS:
        info = resolve(name)
        if info is not None:
            return info
    raise ValueError(f"unknown model {name!r}; expected one of {list_models()}, or FILE.py:FUNCTION (a function "
                     f"that returns your CNN)")


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered preset. ``None`` overrides are dropped (they mean "default").

    Raises:
        ValueError: for an unknown name or an override the preset does not take.
    """
    info = model_info(name)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(overrides) - set(info.options))
    if unknown:
        raise ValueError(f"model {name!r} does not take {unknown}; its options are {info.options}")
    return info.factory(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered presets matching a glob pattern."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def count_parameters(model: nn.Module) -> int:
    """Trainable real numbers (a complex weight counts twice: it is stored as two reals)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parse_option(text: str) -> tuple[str, Any]:
    """A preset override written ``key=value`` (``-O`` on the command line): the value as a Python literal.

    ``true``/``false``/``none`` in any case read as ``True``/``False``/``None``;
    a value that is no literal stays a string (``storage=frequency``).

    Raises:
        argparse.ArgumentTypeError: the text is not ``key=value``.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    lowered = {"true": "True", "false": "False", "none": "None"}.get(raw.lower(), raw)
    try:
        return key, ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        return key, raw
