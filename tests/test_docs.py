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


# Words that narrate how the project was made rather than what it is: the repository speaks of cemnet only.
NARRATION = re.compile(r"\bsessions?\b|\blent\b|device time|time (?:was )?left|\bBUDGET=|\bissue #?\d+|\bitems? \d+"
                       r"|farm-studio|development (?:history|step)", re.IGNORECASE)
ISO_DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def tracked_text_files() -> list[Path]:
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
        names = listed.stdout.split() if listed.returncode == 0 else []
    except FileNotFoundError:  # no git: the project's own folders
        names = []
    if not names:
        names = [str(p.relative_to(ROOT)) for folder in ("src", "docs", "tests", "benchmarks", "scripts", ".ci")
                 for p in (ROOT / folder).rglob("*")] + ["README.md", "Makefile", "pyproject.toml"]
    return [ROOT / name for name in names if (ROOT / name).is_file()
            and (ROOT / name).suffix in (".py", ".md", ".cpp", ".h", ".sh", ".toml", ".txt", "")
            and name != "tests/test_docs.py"]


def narration(text: str) -> list[str]:
    return [match.group(0) for match in NARRATION.finditer(text)]


def test_nothing_narrates_how_the_project_was_made():
    found = {str(path.relative_to(ROOT)): narration(path.read_text(errors="ignore")) for path in tracked_text_files()}
    assert {name: words for name, words in found.items() if words} == {}


def test_no_dated_measurement_in_code_or_its_comments():
    """Measurements live in docs/ with their command, machine and date; code says why, not how fast it was once."""
    code = [path for path in tracked_text_files() if path.suffix in (".py", ".cpp", ".h", ".sh")
            and not path.is_relative_to(ROOT / "tests")]
    assert [str(path.relative_to(ROOT)) for path in code if ISO_DATE.search(path.read_text())] == []


def test_the_narration_check_can_fail():
    assert narration("measured in session 9 (issue 17) on device time, with no time left") == [
        "session", "issue 17", "device time", "time left"]
    assert narration("docs/performance.md, items 17 and 18") == ["items 17"]
    assert ISO_DATE.search("x = 1  # 2026-11-26: 3.2 ms")
