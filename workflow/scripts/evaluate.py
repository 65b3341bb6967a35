"""Evaluate a submission archive against a ground-truth archive like the challenge server (spec/formats.md §6.6).

Prints and writes ``{"result": [{"umetrack_test": {...}}, {"hot3d_test": {...}}]}``.

Example::

    python workflow/scripts/evaluate.py --gt resources/data/umetrack/gt.tar.gz \
        --submission results/submission/pose_submission.tar.gz --phase pose_estimation \
        --out results/eval/pose_metrics.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.io_utils import atomic_write
from mvhand.post.metrics import PHASES, evaluate_archives

log = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", type=Path, required=True, help="ground-truth archive (tools/write_gt.py)")
    ap.add_argument(
        "--submission", type=Path, required=True, help="submission archive (result_*.json at the root)"
    )
    ap.add_argument("--phase", choices=PHASES, required=True)
    ap.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    args = ap.parse_args(argv)
    result = evaluate_archives(args.gt, args.submission, args.phase)
    text = json.dumps(result, indent=4)
    with atomic_write(args.out) as fh:
        fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "evaluate"))
