"""The package's floors run one way: every import in ``src/cemnet`` goes down, never up or sideways.

spectral math and the runtime <- nn <- models <- {ops, convert} <- training
<- {bench, reproduce, plot} <- cli; ``data`` stands apart (it imports nothing
of cemnet, and only training and what stands above it read data). The rule
is read from the code itself (``ast``), function-level imports included, so
it holds by itself: a new import against it fails here.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cemnet"

FLOORS = {  # room -> floor; a room may import rooms of lower floors (and itself)
    "cemnet.spectral": 0, "cemnet._native": 0, "cemnet.timing": 0,
    "cemnet.runtime": 1,
    "cemnet.nn": 2,
    "cemnet.models": 3,
    "cemnet.ops": 4, "cemnet.convert": 4,
    "cemnet.training": 5,
    "cemnet.bench": 6, "cemnet.reproduce": 6, "cemnet.plot": 6,
    "cemnet.cli": 7,
    "cemnet.__main__": 8,
}
APART = "cemnet.data"  # imports no room; imported only from the training floor up
FACE_MAY_IMPORT = {"cemnet.spectral", "cemnet.nn", "cemnet.models"}  # what `import cemnet` loads


def room(module: str) -> str:
    """The room of a module: ``cemnet.nn.functional._norm`` is in ``cemnet.nn``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every import statement in a source file, relative ones resolved."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base == "cemnet" else base) for alias in node.names]
    return [(line, name) for line, name in found if name == "cemnet" or name.startswith("cemnet.")]


def violations(sources: dict[str, Path]) -> list[str]:
    """Every import against the floors, as ``file:line: A imports B``."""
    problems = []
    for module, path in sorted(sources.items()):
        source = "cemnet" if module == "cemnet" else room(module)
        for line, name in imports(path, module):
            target = room(name)
            where = f"{path.relative_to(path.parents[len(module.split('.')) - (path.name != '__init__.py')])}:{line}"
            if target == source:
                continue
            if source == "cemnet":
                allowed = target in FACE_MAY_IMPORT
            elif source == APART:
                allowed = False
            elif target == APART:
                allowed = FLOORS[source] >= FLOORS["cemnet.training"]
            elif target == "cemnet":
                allowed = False  # the face imports rooms; rooms import rooms
            else:
                allowed = FLOORS[target] < FLOORS[source]
            if not allowed:
                problems.append(f"{where}: {source} imports {target}")
    return problems


def package_sources() -> dict[str, Path]:
    sources = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return sources


def test_every_module_has_a_floor():
    rooms = {room(module) for module in package_sources()} - {"cemnet"}
    assert rooms <= set(FLOORS) | {APART}, f"rooms without a floor: {sorted(rooms - set(FLOORS) - {APART})}"


def test_imports_follow_the_floors():
    assert violations(package_sources()) == []


@pytest.mark.parametrize("room_name,line,forbidden", [
    ("nn/conv.py", "from cemnet.training import train", "cemnet.nn imports cemnet.training"),
    ("models/convnets.py", "from cemnet.data import load_dataset", "cemnet.models imports cemnet.data"),
    ("spectral.py", "import cemnet.nn", "cemnet.spectral imports cemnet.nn"),
    ("training/step.py", "from cemnet.cli import main", "cemnet.training imports cemnet.cli"),
    ("data/builtin.py", "from cemnet import runtime", "cemnet.data imports cemnet.runtime"),
    ("nn/norm.py", "from ..models import create_model", "cemnet.nn imports cemnet.models"),
])
def test_a_forbidden_import_is_reported(tmp_path, room_name, line, forbidden):
    """The check can fail: the same tree with one import against the floors is caught, with its place."""
    sources = package_sources()
    original = PACKAGE / room_name
    planted = tmp_path / "cemnet" / room_name
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(original.read_text() + f"\n\ndef _planted():\n    {line}\n")
    module = next(name for name, path in sources.items() if path == original)
    sources[module] = planted
    assert [problem for problem in violations(sources) if forbidden in problem]
