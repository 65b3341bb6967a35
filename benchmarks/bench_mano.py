"""Landmark-only MANO path vs smplx's full MANO forward, batch 1000, forward (+ backward).

Both run on the same synthetic MANO-format model and the same random parameters (requires_grad on
PCA pose, global orient, translation and betas); the loss is the sum of the 21 joint + tip outputs.
Writes the ``mano_landmarks`` section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/bench_mano.py [--batch 1000] [--repeats 15] [--mano-dir DIR]``
(``--mano-dir`` defaults to a temporary synthetic model).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import update_section  # noqa: E402
from mvhand.mano import MANO_PARENTS, MANO_TIP_VERTEX_IDS, MANO_TO_CANONICAL, ManoModel  # noqa: E402

log = logging.getLogger("bench_mano")


def write_random_mano(out_dir: Path, seed: int = 0) -> None:
    """Write a well-formed random MANO_RIGHT.pkl / MANO_LEFT.pkl (official shapes) into ``out_dir``."""
    rng = np.random.default_rng(seed)
    nv, nj = 778, 16
    joints = rng.normal(0, 0.04, (nj, 3))
    owner = rng.integers(0, nj, nv)
    v = joints[owner] + rng.normal(0, 0.008, (nv, 3))
    jreg = np.zeros((nj, nv))
    for j in range(nj):
        ids = np.flatnonzero(owner == j)[:12]
        jreg[j, ids] = 1.0 / max(len(ids), 1)
    w = np.zeros((nv, nj))
    w[np.arange(nv), owner] = 1.0
    w[np.arange(nv), rng.integers(0, nj, nv)] += 0.3
    w /= w.sum(1, keepdims=True)
    kt = np.stack([np.array([2**32 - 1, *MANO_PARENTS[1:]], dtype=np.uint32), np.arange(nj, dtype=np.uint32)])
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    right = {
        "v_template": v,
        "f": rng.integers(0, nv, (1538, 3)).astype(np.uint32),
        "shapedirs": rng.normal(0, 0.005, (nv, 3, 10)),
        "posedirs": rng.normal(0, 1e-3, (nv, 3, 135)),
        "J_regressor": jreg,
        "weights": w,
        "kintree_table": kt,
        "hands_components": q.T,
        "hands_mean": rng.normal(0, 0.15, 45),
    }
    left = dict(right, v_template=v * [-1, 1, 1], shapedirs=right["shapedirs"] * [[-1], [1], [1]])
    for name, data in (("MANO_RIGHT.pkl", right), ("MANO_LEFT.pkl", left)):
        with open(out_dir / name, "wb") as fh:
            pickle.dump(data, fh, protocol=2)


@dataclass
class PairTiming:
    """Medians (ms) of interleaved repeats: wall clock and process CPU time, for functions a and b."""

    wall_a: float
    wall_b: float
    cpu_a: float
    cpu_b: float
    repeats: int


def time_pair(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int, budget_s: float
) -> PairTiming:
    """Interleaved timings of two functions, so that load from other processes hits both alike.

    Stops early (after ≥ 3 repeats) once ``budget_s`` of wall time is spent.
    """
    fn_a(), fn_b()  # warm-up
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    for _ in range(repeats):
        for i, fn in enumerate((fn_a, fn_b)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[i].append((time.process_time() - c0) * 1e3)
            wall[i].append((time.perf_counter() - w0) * 1e3)
        if len(wall[0]) >= 3 and time.perf_counter() - start > budget_s:
            break
    med = statistics.median
    return PairTiming(med(wall[0]), med(wall[1]), med(cpu[0]), med(cpu[1]), len(wall[0]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--mano-dir", type=Path, default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 = robust timings on a shared, loaded machine)",
    )
    ap.add_argument("--no-report", action="store_true", help="print only, do not write docs/benchmarks.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    torch.set_num_threads(args.threads)
    import smplx

    with tempfile.TemporaryDirectory() as tmp:
        mano_dir = args.mano_dir
        if mano_dir is None:
            mano_dir = Path(tmp)
            write_random_mano(mano_dir)
        model = ManoModel.from_dir(mano_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = smplx.create(
                str(Path(mano_dir) / "MANO_RIGHT.pkl"),
                "mano",
                use_pca=True,
                num_pca_comps=15,
                is_rhand=True,
                flat_hand_mean=False,
            )
    layer = model.right
    B = args.batch
    g = torch.Generator().manual_seed(0)
    base = {
        "pose_pca": torch.randn(B, 15, generator=g),
        "global_orient": torch.randn(B, 3, generator=g),
        "transl": torch.randn(B, 3, generator=g) * 0.2,
        "betas": torch.randn(B, 10, generator=g),
    }
    params = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    tips = list(MANO_TIP_VERTEX_IDS)

    def fast() -> torch.Tensor:
        return layer.landmarks(**params)

    def full() -> torch.Tensor:
        out = ref(
            betas=params["betas"],
            global_orient=params["global_orient"],
            hand_pose=params["pose_pca"],
            transl=params["transl"],
        )
        return torch.cat([out.joints, out.vertices[:, tips]], dim=1)

    def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for p in params.values():
                p.grad = None
            fn().sum().backward()

        return run

    def fwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                fn()

        return run

    with torch.no_grad():
        diff = (fast() - full()[:, list(MANO_TO_CANONICAL)]).abs().max().item()
    grads = []
    for fn in (fast, lambda: full()[:, list(MANO_TO_CANONICAL)]):
        for p in params.values():
            p.grad = None
        fn().sum().backward()
        grads.append([p.grad.clone() for p in params.values()])
    grad_diff = max(
        ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(*grads, strict=True)
    )
    rows = []
    for label, wrap, budget in (("forward + backward", fwd_bwd, 30.0), ("forward only (no_grad)", fwd, 12.0)):
        t = time_pair(wrap(full), wrap(fast), args.repeats, budget)
        rows.append((label, t))
        log.info(
            "%s: wall smplx %.1f ms / landmark-only %.2f ms = %.1fx; CPU %.1f / %.2f ms = %.1fx",
            label,
            t.wall_a,
            t.wall_b,
            t.wall_a / t.wall_b,
            t.cpu_a,
            t.cpu_b,
            t.cpu_a / t.cpu_b,
        )
    log.info("max |landmark difference| = %.2e m; max relative gradient difference = %.1e", diff, grad_diff)

    body = (
        f"Batch {B}, float32, CPU, {args.threads} torch thread(s); medians over interleaved repeats after one "
        "warm-up, wall clock and process CPU time (`time.process_time`). Reference: "
        "`smplx.create(..., 'mano', use_pca=True, num_pca_comps=15, flat_hand_mean=False)` full forward "
        "(778 vertices) + the 5 tip vertices; mvhand: `ManoLayer.landmarks` (joints from precomputed "
        "templates/shape directions, shape/pose blend and skinning for the 5 tips only; component-major "
        "tensors with the batch last and two autograd Functions with hand-written backward passes, "
        "`_Rodrigues` and `_LandmarkLBS`). "
        "requires_grad on pose, orient, transl and betas; loss = sum of the 21 joint + tip outputs. "
        "Model: random well-formed MANO-format arrays (timings do not depend on the values).\n\n"
        "| mode | smplx full (ms) | landmark-only (ms) | **speed-up** | smplx CPU (ms) | landmark-only CPU (ms) "
        "| CPU speed-up | repeats |\n|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {m} | {t.wall_a:.1f} | {t.wall_b:.2f} | **{t.wall_a / t.wall_b:.1f}×** | {t.cpu_a:.1f} | "
            f"{t.cpu_b:.2f} | {t.cpu_a / t.cpu_b:.1f}× | {t.repeats} |\n"
            for m, t in rows
        )
        + f"\nMax landmark difference between the two paths: {diff:.1e} m (test tolerance 1e-5 m); max "
        f"gradient difference (per input, relative to its largest gradient entry): {grad_diff:.1e}.\n"
        + f"\n1-min load average at the end of the run: {os.getloadavg()[0]:.1f} (shared machine; absolute "
        "times grow with load, the interleaved ratio much less).\n"
    )
    if not args.no_report:
        update_section(
            "mano_landmarks", "MANO landmark-only path vs smplx", "python benchmarks/bench_mano.py", body
        )
    print(body)


if __name__ == "__main__":
    main()
