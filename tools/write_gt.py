"""Build a ground-truth archive (spec/formats.md §6.5) from annotated challenge tars.

Every tar of the input folders contributes landmarks + MANO pose (pose track) and its betas (shape
track). The evaluator scores the pose phase on the sequences of ``gt_landmarks`` (taking their betas
from ``gt_shape``) and the shape phase on *every* sequence of ``gt_shape`` (spec/formats.md §6.6). So one archive built
from pose_test + shape_test serves both phases only if shape submissions cover both splits; otherwise
build one archive per phase (one ``--input-dir`` each).

Example::

    python tools/write_gt.py --input-dir resources/data/umetrack/test_annotations/pose_test \
        --input-dir resources/data/umetrack/test_annotations/shape_test \
        --dataset umetrack --mano-dir resources/mano --output resources/data/umetrack/gt.tar.gz
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.constants import DATASETS
from mvhand.formats.submission import DEFAULT_EVERY_N, build_ground_truth, write_gt_archive
from mvhand.io_utils import InputError

log = logging.getLogger("write_gt")


def _tars(input_dirs: list[Path]) -> list[Path]:
    tars: list[Path] = []
    for d in input_dirs:
        if not d.is_dir():
            raise InputError(d, "input folder not found", "pass a split folder of <sequence>.tar files")
        found = sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(".tar"))
        if not found:
            raise InputError(d, "no .tar files in the input folder")
        tars.extend(found)
    names = [p.name.split(".", 1)[0] for p in tars]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(None, f"sequence names occur in more than one input folder: {dup[:5]}")
    return tars


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--input-dir", type=Path, action="append", required=True, help="split folder of tars; repeatable"
    )
    ap.add_argument("--dataset", choices=DATASETS, required=True)
    ap.add_argument(
        "--mano-dir", type=Path, required=True, help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl"
    )
    ap.add_argument("--output", type=Path, required=True, help="gt.tar.gz to write")
    ap.add_argument(
        "--every-n-frames",
        type=int,
        default=None,
        help=f"keep sample index i with i %% N == 0 (default: {DEFAULT_EVERY_N})",
    )
    args = ap.parse_args(argv)
    tars = _tars(args.input_dir)
    log.info("%d sequences of %s", len(tars), args.dataset)
    gt = build_ground_truth(tars, args.dataset, every_n=args.every_n_frames)
    write_gt_archive(args.output, {args.dataset: gt}, args.mano_dir)
    log.info(
        "wrote %s: %d hand instances, %d sequences with shape",
        args.output,
        len(gt.landmarks),
        len(gt.shapes),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "write_gt"))
