"""CI must run exactly the README's commands."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cmd(what: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_commands.py"), what],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py install" in ci and "readme_commands.py test" in ci
    main, install, test = _cmd("main"), _cmd("install"), _cmd("test")
    assert main.startswith(install) and main.endswith("snakemake --cores all")
    assert "pip install -c constraints.txt" in install  # torch stays pinned
    assert "pytest" in test


def test_ci_checks_formatting_and_lint_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    tests_at = ci.index('eval "$test_cmd"')
    for check in ("snakefmt --check Snakefile workflow/", "ruff check .", "ruff format --check ."):
        assert -1 < ci.find(check) < tests_at, f".ci/run must run `{check}` before the tests"
    # the checkers come from the dev extra, which the README's install command installs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = {
        re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()
        for req in project["project"]["optional-dependencies"]["dev"]
    }
    assert {"snakefmt", "ruff"} <= dev
    assert "[dev]" in _cmd("install")
    # Python in the .smk files and in src/ wraps at the same width
    assert project["tool"]["snakefmt"]["line_length"] == project["tool"]["ruff"]["line-length"]


def test_constraints_pin_torch():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
