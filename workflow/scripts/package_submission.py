#!/usr/bin/env python
"""Pack prediction tables into the challenge's submission archives (spec/formats.md §6).

Example::

    python workflow/scripts/package_submission.py \
        --pose-predictions umetrack=results/smooth/full/neural/umetrack/pose_test.parquet \
        --pose-tars umetrack=resources/data/umetrack/pose_test \
        --shape-predictions umetrack=results/predict/full/umetrack/shape_test.parquet \
        --shape-tars umetrack=resources/data/umetrack/shape_test \
        --shape-predictions umetrack=results/predict/full/umetrack/pose_test.parquet \
        --shape-tars umetrack=resources/data/umetrack/pose_test \
        --out-pose results/submission/full-neural/pose_submission.tar.gz \
        --out-shape results/submission/full-neural/shape_submission.tar.gz

Every result file is validated against the instances the evaluator expects before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.constants import DATASETS
from mvhand.io_utils import InputError
from mvhand.post.packaging import MAX_FILLED_FRACTION, package_submissions

log = logging.getLogger("package_submission")


def _pairs(values: list[str] | None, what: str) -> dict[str, list[str]]:
    """``["umetrack=a", "umetrack=b", "hot3d=c"]`` → ``{"umetrack": ["a", "b"], "hot3d": ["c"]}``."""
    out: dict[str, list[str]] = {}
    for v in values or []:
        ds, sep, path = v.partition("=")
        if not sep or ds not in DATASETS:
            raise InputError(None, f"{what} must look like umetrack=PATH or hot3d=PATH, got {v!r}")
        out.setdefault(ds, []).append(path)
    return out


def _tars(folders: list[str], keep: set[str] | None) -> list[Path]:
    tars = sorted(t for folder in folders for t in Path(folder).glob("*.tar"))
    if keep is not None:
        tars = [t for t in tars if t.name.split(".")[0] in keep]
    if not tars:
        raise InputError(", ".join(folders), "no *.tar files (after the --sequences filter)",
                         "point --pose-tars/--shape-tars at the split folder")  # fmt: skip
    return tars


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pose-predictions", action="append", required=True, metavar="DS=PARQUET")
    p.add_argument("--pose-tars", action="append", required=True, metavar="DS=SPLIT_DIR")
    p.add_argument("--shape-predictions", action="append", metavar="DS=PARQUET")
    p.add_argument("--shape-tars", action="append", metavar="DS=SPLIT_DIR")
    p.add_argument("--out-pose", required=True, type=Path)
    p.add_argument("--out-shape", type=Path)
    p.add_argument("--sequences", type=Path, help="keep only these sequences (one name per line; val split)")
    p.add_argument(
        "--max-filled",
        type=float,
        default=MAX_FILLED_FRACTION,
        metavar="FRACTION",
        help="largest fraction of expected pose instances without a finite prediction that may be copied "
        f"from the nearest frame (default {MAX_FILLED_FRACTION}; more fails)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.max_filled <= 1.0:
        raise InputError(None, f"--max-filled {args.max_filled} is not a fraction", "pass a value in [0, 1]")
    keep = None
    if args.sequences:
        keep = {ln.strip() for ln in args.sequences.read_text().splitlines() if ln.strip()}
    pose_pred = {ds: v[0] for ds, v in _pairs(args.pose_predictions, "--pose-predictions").items()}
    pose_tars = {ds: _tars(d, keep) for ds, d in _pairs(args.pose_tars, "--pose-tars").items()}
    shape_pred = _pairs(args.shape_predictions, "--shape-predictions")
    shape_tars = {ds: _tars(d, keep) for ds, d in _pairs(args.shape_tars, "--shape-tars").items()}
    for ds in pose_pred:
        if ds not in pose_tars:
            raise InputError(None, f"--pose-tars is missing {ds}=<split dir>")
    written = package_submissions(
        pose_pred,
        pose_tars,
        args.out_pose,
        shape_pred or None,
        shape_tars or None,
        args.out_shape,
        args.max_filled,
    )
    for track, path in written.items():
        log.info("wrote %s submission %s", track, path)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "package_submission"))
