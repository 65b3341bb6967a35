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
import pandas as pd

from mvhand import smoothing as sm
from mvhand.cli import run
from mvhand.io_utils import InputError, atomic_path, atomic_write

log = logging.getLogger("neural_smooth")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, type=Path, help="prediction Parquet (predict stage)")
    p.add_argument(
        "--mano-dir", required=True, type=Path, help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl"
    )
    p.add_argument("--out", required=True, type=Path, help="smoothed prediction Parquet")
    p.add_argument("--method", choices=["raw", "neural", "online", "one_euro", "savgol"], default="neural")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--w-pose", type=float, default=0.5)
    p.add_argument("--w-orient", type=float, default=0.5)
    p.add_argument("--w-position", type=float, default=0.5)
    p.add_argument("--w-2d", type=float, default=1.0)
    p.add_argument("--position-unit", type=float, default=0.01, help="metres per optimiser unit of position")
    p.add_argument(
        "--min-conf", type=float, default=0.0, help="2D keypoints below this confidence are ignored"
    )
    p.add_argument("--max-gap", type=int, default=1, help="frame-id step that still counts as consecutive")
    p.add_argument("--online-window", type=int, default=8)
    p.add_argument("--online-free", type=int, default=2)
    p.add_argument("--online-iterations", type=int, default=5)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--one-euro-min-cutoff", type=float, default=4.0)
    p.add_argument("--one-euro-beta", type=float, default=0.5)
    p.add_argument("--savgol-window", type=int, default=9)
    p.add_argument("--savgol-polyorder", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if not args.predictions.is_file():
        raise InputError(args.predictions, "prediction table not found", "run the predict stage first")
    try:
        df = pd.read_parquet(args.predictions)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(
            args.predictions, f"cannot read Parquet ({exc})", "delete it and re-run predict"
        ) from exc
    df = sm.sort_predictions(df)
    log.info("%s: %d hand instances, method %s", args.predictions, len(df), args.method)

    from mvhand.mano import ManoModel

    mano = ManoModel.from_dir(args.mano_dir).to(device)
    base = sm.NeuralSmoothConfig(
        iterations=args.iterations, lr=args.lr, weight_decay=args.weight_decay, w_pose=args.w_pose,
        w_orient=args.w_orient, w_position=args.w_position, w_2d=args.w_2d, position_unit=args.position_unit,
        min_conf=args.min_conf, device=device,
    )  # fmt: skip
    stats: dict = {"method": args.method, "instances": len(df)}
    t0 = time.perf_counter()
    problem = sm.problem_from_predictions(df, max_gap=args.max_gap)
    stats["segments"] = int(problem.segment.max() + 1) if len(df) else 0
    if args.method == "raw":
        traj = problem.init
    elif args.method == "neural":
        history: list = []
        traj = sm.neural_smooth(problem, mano, base, progress=True, history=history)
        if history:
            stats["loss_first"], stats["loss_last"] = history[0], history[-1]
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
    out = sm.apply_trajectory(df, traj, problem, mano)
    with atomic_path(args.out) as tmp:
        out.to_parquet(tmp, index=False)
    with atomic_write(args.out.with_suffix(".json")) as fh:
        json.dump(stats, fh, indent=2)
    log.info("wrote %s in %.1f s", args.out, stats["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "neural_smooth"))
