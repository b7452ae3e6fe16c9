import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_builds_from_the_docstrings(tmp_path):
    """``make docs`` (pdoc, the modules the Makefile names): a page per module, with what its docstrings describe."""
    import pdoc

    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "pdoc" in line and " -o " in line)
    modules = [word for word in line.split() if word.startswith("cemnet")]
    pdoc.pdoc(*modules, output_directory=tmp_path)
    pages = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.html")}
    assert {f"{module.replace('.', '/')}.html" for module in modules} | {"cemnet/nn.html", "cemnet/spectral.html"} <= pages
    nn = (tmp_path / "cemnet" / "nn.html").read_text()
    assert "SpectralConv2d" in nn and "Weight Fixation" in nn and "SpectralBatchNorm2d" in nn
    assert "TrainingStep" in (tmp_path / "cemnet" / "training.html").read_text()
    assert not any("_native" in page for page in pages)  # the C++ door is private


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    commands = [line.split("#")[0].strip() for line in lines[1:3]]
    assert commands == ["make train", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_cli_subcommand_is_in_the_user_guide():
    from cemnet.cli import build_parser

    guide = (ROOT / "docs" / "user-guide.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [name for name in commands if not re.search(rf"cemnet {name}\b", guide)]
    assert not missing
