import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_current():
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "api.md").read_text() == module.render(), "run: python docs/build_api.py"


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
