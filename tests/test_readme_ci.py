"""CI must run exactly the README's commands."""

import subprocess
import sys
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


def test_constraints_pin_torch():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
