"""Write docs/api.md from the docstrings of cemnet's public API.

Usage: python docs/build_api.py   (tests/test_docs.py checks that api.md is current)
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

MODULES = [
    "cemnet.spectral", "cemnet.nn.functional", "cemnet.nn.layers", "cemnet.models._registry",
    "cemnet.models.convnets", "cemnet.data", "cemnet.train", "cemnet.checkpoint", "cemnet.ops",
    "cemnet.convert", "cemnet.reproduce", "cemnet.bench", "cemnet.timing", "cemnet.native", "cemnet.plot",
]


def _public(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    members = []
    for name in names:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__ and obj.__doc__:
            members.append((name, obj))
    return members


def render() -> str:
    lines = ["# API reference", "", "Generated from the docstrings by `python docs/build_api.py`; do not edit.", ""]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", inspect.cleandoc(module.__doc__ or ""), ""]
        for name, obj in _public(module):
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = "(...)"
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### {kind} `{name}{signature}`", "", inspect.cleandoc(obj.__doc__), ""]
            if inspect.isclass(obj):
                for method_name, method in vars(obj).items():
                    if method_name.startswith("_") or not callable(getattr(obj, method_name)):
                        continue
                    doc = inspect.getdoc(getattr(obj, method_name))
                    if doc and not isinstance(method, property):
                        lines += [f"* `{name}.{method_name}`: {doc.splitlines()[0]}"]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render())
    print(f"wrote {target}")
