"""Render README.md's results block from the pipeline's own report (``table1.tsv``, ``shape.tsv``).

The block lies between the lines ``<!-- results:begin -->`` and ``<!-- results:end -->``; everything else in
the README is left as it is. The rendering is :func:`mvhand.post.report.readme_results`.

Example (after a default run)::

    python tools/readme_results.py --write   # rewrite the block from results/report/
    python tools/readme_results.py --check   # exit 1 and print a diff if the block is not what it renders
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.io_utils import InputError, atomic_write
from mvhand.post.report import readme_results_from, splice_block

log = logging.getLogger("readme_results")
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the README's results block")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if the block differs")
    ap.add_argument(
        "--report-dir",
        type=Path,
        default=ROOT / "results" / "report",
        help="the report stage's output folder",
    )
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    try:
        old = args.readme.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(args.readme, "not found", "pass --readme") from None
    new = splice_block(old, readme_results_from(args.report_dir), args.readme)
    if args.check:
        if new == old:
            log.info("%s: results block matches %s", args.readme, args.report_dir)
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), str(args.readme), "rendered"
            )
        )
        log.error(
            "%s: results block differs from %s (run tools/readme_results.py --write)",
            args.readme,
            args.report_dir,
        )
        return 1
    if new != old:
        with atomic_write(args.readme) as fh:
            fh.write(new)
    log.info(
        "%s: results block %s from %s",
        args.readme,
        "rewritten" if new != old else "unchanged",
        args.report_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "readme_results"))
