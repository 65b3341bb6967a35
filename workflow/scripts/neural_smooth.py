#!/usr/bin/env python
"""Temporal post-processing of a prediction table: Neural Smooth (offline / online) or a filter baseline.

Example (what the ``neural_smooth`` rule runs)::

    python workflow/scripts/neural_smooth.py --predictions results/predict/full/umetrack/pose_test.parquet \
        --mano-dir resources/mano --method neural --out results/smooth/full/neural/umetrack/pose_test.parquet

Methods: ``raw`` (copy), ``neural`` (offline Neural Smooth), ``online`` (causal sliding window),
``one_euro`` and ``savgol`` (filter baselines). Writes the smoothed table (same schema as the input,
``mpjpe_mm`` dropped) and, beside it, ``<out>.json`` with timing (and online per-frame latency).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from mvhand.cli import default_of, run
from mvhand.formats.predictions import check_view_columns, read_prediction_table, require_columns
from mvhand.io_utils import InputError, atomic_path, atomic_write
from mvhand.post import smoothing as sm

log = logging.getLogger("neural_smooth")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, type=Path, help="prediction Parquet (predict stage)")
    p.add_argument(
        "--mano-dir", required=True, type=Path, help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl"
    )
    p.add_argument("--out", required=True, type=Path, help="smoothed prediction Parquet")
    p.add_argument("--method", choices=["raw", "neural", "online", "one_euro", "savgol"], default="neural")
    neural, online = sm.NeuralSmoothConfig, sm.OnlineSmoothConfig  # one source of truth for the defaults
    p.add_argument(
        "--solver", choices=["gn", "adamw"], default=neural.solver, help="Gauss-Newton/LM or AdamW+cosine"
    )
    p.add_argument("--iterations", type=int, default=neural.iterations, help="solver iterations (offline)")
    p.add_argument("--lr", type=float, default=neural.lr, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=neural.weight_decay, help="AdamW weight decay")
    p.add_argument("--w-pose", type=float, default=neural.w_pose)
    p.add_argument("--w-orient", type=float, default=neural.w_orient)
    p.add_argument("--w-position", type=float, default=neural.w_position)
    p.add_argument("--w-2d", type=float, default=neural.w_2d)
    p.add_argument(
        "--w-depth", type=float, default=neural.w_depth,
        help="beyond the report: weight of a squared pull (m^2) of the root's depth, along the viewing direction, "
        "to the network's (0 = the report's loss)",
    )  # fmt: skip
    p.add_argument(
        "--position-unit", type=float, default=neural.position_unit, help="metres per AdamW unit of position"
    )
    for term in ("pose", "orient", "position", "2d"):
        p.add_argument(
            f"--eps-{term}", type=float, default=getattr(neural, f"eps_{term}"),
            help=f"Gauss-Newton: L1 of the {term} term smoothed as sqrt(r^2 + eps^2)",
        )  # fmt: skip
    p.add_argument(
        "--lm-damping", type=float, default=neural.lm_damping, help="initial Levenberg-Marquardt damping"
    )
    p.add_argument(
        "--tol", type=float, default=neural.tol, help="stop when the loss drops by less than tol (relative)"
    )
    p.add_argument(
        "--chunk-frames", type=int, default=neural.chunk_frames, help="frames per Gauss-Newton chunk"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=neural.workers,
        help="processes solving Gauss-Newton chunks in parallel",
    )
    p.add_argument(
        "--min-conf",
        type=float,
        default=neural.min_conf,
        help="2D keypoints below this confidence are ignored",
    )
    p.add_argument(
        "--max-gap",
        type=int,
        default=default_of(sm.problem_from_predictions, "max_gap"),
        help="frame-id step that still counts as consecutive",
    )
    p.add_argument("--online-window", type=int, default=online.window)
    p.add_argument("--online-free", type=int, default=online.free)
    p.add_argument("--online-iterations", type=int, default=online.iterations)
    p.add_argument("--fps", type=float, default=default_of(sm.one_euro, "fps"))
    p.add_argument("--one-euro-min-cutoff", type=float, default=default_of(sm.one_euro, "min_cutoff"))
    p.add_argument("--one-euro-beta", type=float, default=default_of(sm.one_euro, "beta"))
    p.add_argument("--savgol-window", type=int, default=default_of(sm.savitzky_golay, "window"))
    p.add_argument("--savgol-polyorder", type=int, default=default_of(sm.savitzky_golay, "polyorder"))
    p.add_argument("--device", default=neural.device, help="cpu, cuda or auto")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (1: more threads on busy cores spin-wait and were measured 12x slower)",
    )  # fmt: skip
    return p.parse_args(argv)


_FIX_TABLE = "re-run the predict stage (a table written by hand must follow docs/model.md)"


def _finite(traj: sm.Trajectory) -> np.ndarray:
    """``(N,)`` True where pose, rotation and root are all finite."""
    return (
        np.all(np.isfinite(traj.pose), -1)
        & np.all(np.isfinite(traj.rot), (-1, -2))
        & np.all(np.isfinite(traj.root), -1)
    )


def _report_nonfinite(source: Path, finite_in: np.ndarray, finite_out: np.ndarray, stats: dict) -> None:
    """Log (and record in the stats) exactly how many non-finite input instances got values, and how many not."""
    bad = ~finite_in
    filled, unfilled = int((bad & finite_out).sum()), int((bad & ~finite_out).sum())
    stats["nonfinite_inputs"], stats["filled"], stats["nonfinite_outputs"] = int(bad.sum()), filled, unfilled
    if bad.any():
        log.warning(
            "%s: %d of %d instances have non-finite predictions: %d now have values estimated from neighbouring "
            "frames, %d stay non-finite (their track has no finite frame, or too few frames, or the method does "
            "not fill); packaging copies the nearest frame for those, up to submission.max_filled",
            source, int(bad.sum()), len(bad), filled, unfilled,
        )  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(max(args.threads, 1))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    df = sm.sort_predictions(
        read_prediction_table(args.predictions)
    )  # keys checked: one row per frame and hand
    require_columns(df, sm.PREDICTION_COLUMNS, str(args.predictions))
    check_view_columns(df, str(args.predictions))
    log.info("%s: %d hand instances, method %s", args.predictions, len(df), args.method)

    from mvhand.geometry.mano import ManoModel

    mano = ManoModel.from_dir(args.mano_dir).to(device)
    base = sm.NeuralSmoothConfig(
        solver=args.solver, iterations=args.iterations, lr=args.lr, weight_decay=args.weight_decay,
        w_pose=args.w_pose, w_orient=args.w_orient, w_position=args.w_position, w_2d=args.w_2d,
        w_depth=args.w_depth, position_unit=args.position_unit, eps_pose=args.eps_pose, eps_orient=args.eps_orient,
        eps_position=args.eps_position, eps_2d=args.eps_2d, lm_damping=args.lm_damping, tol=args.tol,
        chunk_frames=args.chunk_frames, workers=args.workers, min_conf=args.min_conf, device=device,
    )  # fmt: skip
    stats: dict = {"method": args.method, "instances": len(df)}
    t0 = time.perf_counter()
    try:
        problem = sm.problem_from_predictions(df, max_gap=args.max_gap)
    except ValueError as exc:
        raise InputError(args.predictions, f"malformed prediction table ({exc})", _FIX_TABLE) from exc
    finite_in = _finite(problem.init)
    if len(df) and not finite_in.any():
        raise InputError(
            args.predictions,
            f"none of the {len(df)} hand instances has a finite prediction (all NaN/inf)",
            "the model produced no usable output: check the train log (loss, val MPJPE), retrain, re-run predict",
        )
    stats["segments"] = int(problem.segment.max() + 1) if len(df) else 0
    if args.method == "raw":
        traj = problem.init
    elif args.method == "neural":
        history: list = []
        traj = sm.neural_smooth(problem, mano, base, progress=True, history=history)
        if history:
            stats["loss_first"], stats["loss_last"] = history[0], history[-1]
        stats["solver"] = base.solver
    elif args.method == "online":
        cfg = sm.OnlineSmoothConfig(args.online_window, args.online_free, args.online_iterations, base)
        traj, lat = sm.online_neural_smooth(problem, mano, cfg, progress=True)
        streams = int(problem.segment.max() + 1) if len(df) else 0
        stats["online"] = {
            "window": cfg.window, "free": cfg.free, "iterations": cfg.iterations, "parallel_streams": streams,
            "step_latency_ms_median": float(np.median(lat) * 1e3) if len(lat) else None,
            "step_latency_ms_p95": float(np.percentile(lat, 95) * 1e3) if len(lat) else None,
        }  # fmt: skip
    elif args.method == "one_euro":
        traj = sm.one_euro(
            problem.init, problem.segment, args.fps, args.one_euro_min_cutoff, args.one_euro_beta
        )
    else:
        traj = sm.savitzky_golay(problem.init, problem.segment, args.savgol_window, args.savgol_polyorder)
    stats["seconds"] = time.perf_counter() - t0
    _report_nonfinite(args.predictions, finite_in, _finite(traj), stats)
    out = sm.apply_trajectory(df, traj, problem, mano)
    with atomic_path(args.out) as tmp:
        out.to_parquet(tmp, index=False)
    with atomic_write(args.out.with_suffix(".json")) as fh:
        json.dump(stats, fh, indent=2)
    log.info("wrote %s in %.1f s", args.out, stats["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "neural_smooth"))
