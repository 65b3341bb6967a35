"""Write one benchmark's results into its own section of ``docs/benchmarks.md``.

Each benchmark script owns the text between ``<!-- BEGIN <name> -->`` and ``<!-- END <name> -->``;
re-running a script replaces only its section, so the file collects all results with the command that
reproduced each one.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from mvhand.io_utils import atomic_write

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every section below is written by a script in `benchmarks/`; the command that reproduces it is\n"
    "given in the section. Speed-ups compare mvhand's implementation with a straightforward reference\n"
    "implementation timed in the same run on the same inputs.\n"
)


def machine_line() -> str:
    """One line describing where the numbers were measured."""
    import torch  # here, not at module level: benchmark scripts run worker processes that re-import them

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {dev}, torch {torch.__version__}, {torch.get_num_threads()} torch threads."
    )


def update_section(name: str, title: str, command: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``docs/benchmarks.md``.

    Args:
        name: section id (e.g. ``"crop_warp"``).
        title: section heading.
        command: shell command that reproduces the numbers.
        body: Markdown with the results (tables, notes).
    """
    text = doc.read_text() if doc.exists() else HEADER
    section = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Reproduce: `{command}`\n\n{machine_line()}\n\n{body.strip()}\n<!-- END {name} -->"
    )
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with atomic_write(doc) as fh:
        fh.write(text)
