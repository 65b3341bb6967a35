#!/usr/bin/env python
"""Evaluation report: Table 1 (ablation), shape track, online latency, PCK curves, per-sequence MPJPE,
trajectory before/after Neural Smooth, training curves → ``<out-dir>/report.md`` + PNGs, and the tables as
``table1.tsv``, ``shape.tsv`` and ``scores.json``.

Example::

    python workflow/scripts/report.py --gt results/evaluate/gt.tar.gz --mano-dir resources/mano \
        --candidate baseline-raw=results/submission/baseline-raw/pose_submission.tar.gz \
        --candidate full-neural=results/submission/full-neural/pose_submission.tar.gz \
        --raw results/predict/full/umetrack/pose_test.parquet \
        --smoothed results/smooth/full/neural/umetrack/pose_test.parquet --out-dir results/report
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.io_utils import InputError

log = logging.getLogger("report")


def _pairs(values, what):
    out = {}
    for v in values or []:
        k, sep, path = v.partition("=")
        if not sep:
            raise InputError(None, f"{what} must look like NAME=PATH, got {v!r}")
        out[k] = Path(path)
    return out


def _read_json(path: Path, what: str):
    """A JSON file written by an earlier stage, with errors that name it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"{what} not found", "run the stage that writes it first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            path, f"{what} is not valid JSON ({exc})", "delete it and re-run the stage that wrote it"
        ) from exc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, type=Path, help="GT archive (both datasets)")
    p.add_argument("--mano-dir", required=True, type=Path)
    p.add_argument("--candidate", action="append", required=True, metavar="NAME=POSE_SUBMISSION")
    p.add_argument("--shape-metrics", type=Path, help="evaluate.py output of the shape phase")
    p.add_argument(
        "--online-stats", action="append", metavar="DS=JSON", help="neural_smooth --method online stats"
    )
    p.add_argument("--raw", type=Path, help="prediction table before smoothing (trajectory plot)")
    p.add_argument("--smoothed", type=Path, help="the same table after Neural Smooth")
    p.add_argument("--training-curve", action="append", metavar="NAME=PNG")
    p.add_argument("--out-dir", required=True, type=Path)
    args = p.parse_args(argv)

    import numpy as np
    import pandas as pd

    from mvhand.formats.submission import parse_landmark_entries, read_gt_archive
    from mvhand.geometry.mano import ManoModel
    from mvhand.post import report as rp

    mano = ManoModel.from_dir(args.mano_dir)
    cands = _pairs(args.candidate, "--candidate")
    order = [c for c in rp.CANDIDATE_LABELS if c in cands] + [
        c for c in cands if c not in rp.CANDIDATE_LABELS
    ]
    scores = []
    for name in order:
        log.info("scoring %s (%s)", name, cands[name])
        scores.append(rp.score_candidate(name, args.gt, cands[name], mano))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    shape = _read_json(args.shape_metrics, "shape metrics (evaluate.py)") if args.shape_metrics else None
    online = {
        k: _read_json(v, "online smoothing stats (neural_smooth.py)")
        for k, v in _pairs(args.online_stats, "--online-stats").items()
    }
    traj_png, caption = None, ""
    if args.raw and args.smoothed:
        raw, smoothed = pd.read_parquet(args.raw), pd.read_parquet(args.smoothed)
        gt_files = read_gt_archive(args.gt)
        # GT entries carry no hand side: recover it from the frame's instance order (left before right)
        gt_lm = {}
        for name, data in gt_files.items():
            if not name.startswith("gt_landmarks_"):
                continue
            entries = parse_landmark_entries(data)
            sides = raw[["sequence_name", "frame_id", "hand_side"]].drop_duplicates()
            side_lists = sides.groupby(["sequence_name", "frame_id"])["hand_side"].apply(sorted).to_dict()
            seen: dict = {}
            for e in entries:
                key = (e.sequence_name, e.frame_id)
                k = seen.get(key, 0)
                seen[key] = k + 1
                sl = side_lists.get(key, [])
                if k < len(sl):
                    gt_lm[(e.sequence_name, e.frame_id, sl[k])] = np.asarray(e.landmarks)
        which = rp.plot_trajectory(
            raw, smoothed, gt_lm, args.out_dir / "trajectory.png", args.raw.parent.name
        )
        traj_png = "trajectory.png"
        caption = f"Longest hand track of {args.raw}: {which}. Dots: per-frame network output; line: after Neural Smooth; dashed: ground truth."
    curves = {}
    for name, png in _pairs(args.training_curve, "--training-curve").items():
        if png.is_file():
            dst = args.out_dir / f"loss_{name}.png"
            shutil.copyfile(png, dst)
            curves[name] = dst.name
    path = rp.write_report(args.out_dir, scores, shape, online, traj_png, caption, curves)
    log.info("wrote %s", path)
    print(rp.table1(scores))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "report"))
