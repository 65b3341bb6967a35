"""Challenge metrics (spec/formats.md §7) and the local evaluator (spec/formats.md §6.6).

Pure maths first (per-landmark errors, MPJPE, PCK curve, normalised AUC, per-sequence and
aggregate metrics), then the evaluator that reads a ground-truth archive and a submission archive.

Precision follows the reference (spec/formats.md §7.6): every per-sequence metric is computed in **float32 torch**
(landmarks are scaled to millimetres *before* the subtraction, like the toolkit), the aggregation
over sequences is float64 NumPy.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.io_utils import InputError

__all__ = [
    "LANDMARKS_TO_EVAL",
    "FINGERTIP_LANDMARKS",
    "PCK_THRESHOLDS_MM",
    "MAX_LANDMARK_ERROR_MM",
    "POSE_METRIC_NAMES",
    "PHASES",
    "per_landmark_errors",
    "mpjpe",
    "pck_curve",
    "normalized_auc",
    "pck_auc",
    "pose_metrics_from_landmarks",
    "compute_pose_metrics",
    "aggregate_pose_metrics",
    "mpvpe",
    "compute_shape_metrics",
    "aggregate_shape_metrics",
    "evaluate_archives",
    "evaluate_archives_detailed",
]

log = logging.getLogger(__name__)

#: Canonical landmark indices that are scored: all 20 minus the wrist (index 5). spec/formats.md §7.1
#: Canonical fingertip indices (thumb, index, middle, ring, pinky) = first five of LANDMARKS_TO_EVAL.
FINGERTIP_LANDMARKS: tuple[int, ...] = (0, 1, 2, 3, 4)
MAX_LANDMARK_ERROR_MM = 50.0
#: PCK thresholds in mm: 0, 0.5, …, 50 (float32, like the reference's ``torch.linspace``).
PCK_THRESHOLDS_MM: torch.Tensor = torch.linspace(0.0, MAX_LANDMARK_ERROR_MM, 101)
POSE_METRIC_NAMES: tuple[str, ...] = ("MPJPE", "PCK_AUC", "FINGERTIP_PCK_AUC")
PHASES: tuple[str, ...] = ("pose_estimation", "shape_estimation")
M_TO_MM = 1000.0

# ------------------------------------------------------------------------------------------------
# Pure maths (float32 torch)
# ------------------------------------------------------------------------------------------------


def _f32(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)


def per_landmark_errors(pred: Any, gt: Any) -> torch.Tensor:
    """Euclidean error per landmark, in millimetres.

    Both inputs are scaled by 1000 (m → mm) in float32 *before* the subtraction, as the reference
    does, so the result is bit-compatible with it.

    Args:
        pred: (..., L, 3) predicted points in metres (array-like or tensor).
        gt: (..., L, 3) ground-truth points in metres.

    Returns:
        (..., L) float32 tensor of errors in mm.
    """
    p = _f32(pred) * M_TO_MM
    g = _f32(gt) * M_TO_MM
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != ground-truth shape {tuple(g.shape)}")
    return torch.sqrt(torch.sum(torch.square(p - g), dim=-1))


def mpjpe(errors: Any) -> float:
    """Mean of all errors (float32 ``torch.mean``), e.g. (N, 19) per-landmark errors in mm → mm."""
    e = _f32(errors)
    if e.numel() == 0:
        raise ValueError("mpjpe of an empty error set")
    return float(torch.mean(e).item())


def pck_curve(errors: Any, thresholds: Any = None) -> torch.Tensor:
    """Percentage of errors ≤ each threshold (inclusive), in percent.

    Args:
        errors: errors of any shape (all pooled), mm.
        thresholds: (T,) thresholds in mm; default :data:`PCK_THRESHOLDS_MM` (0…50 in 0.5 steps).

    Returns:
        (T,) float32 tensor in [0, 100].
    """
    e = _f32(errors).reshape(-1)
    if e.numel() == 0:
        raise ValueError("PCK of an empty error set")
    thr = PCK_THRESHOLDS_MM if thresholds is None else _f32(thresholds).reshape(-1)
    count = torch.tensor(float(e.numel()), dtype=torch.float32)
    hits = (e[None, :] <= thr[:, None]).to(torch.float32).sum(dim=-1)
    return hits / count * 100.0


def normalized_auc(x: Any, y: Any, y_max: float = 1.0) -> float:
    """Trapezoidal area under ``y(x)`` divided by ``(x[-1] - x[0]) * y_max`` (float32, reference).

    With ``y`` in percent and the reference's ``y_max = 1`` the result lies in [0, 100] (spec/formats.md §7.2).

    Args:
        x: (T,) abscissae (mm).
        y: (T,) ordinates (percent).
        y_max: normaliser of the ordinate.
    """
    xt = _f32(x).reshape(-1)
    yt = _f32(y).reshape(-1)
    area = ((xt[1:] - xt[:-1]) * ((yt[1:] + yt[:-1]) * 0.5)).sum()
    return float((area / ((xt[-1] - xt[0]) * y_max)).item())


def pck_auc(errors: Any, thresholds: Any = None) -> float:
    """Normalised PCK AUC over [0, 50] mm, in [0, 100] (spec/formats.md §7.2).

    Args:
        errors: errors of any shape (pooled), mm.
        thresholds: optional thresholds (mm), default :data:`PCK_THRESHOLDS_MM`.
    """
    thr = PCK_THRESHOLDS_MM if thresholds is None else _f32(thresholds).reshape(-1)
    return normalized_auc(thr, pck_curve(errors, thr))


def pose_metrics_from_landmarks(pred_landmarks: Any, gt_landmarks: Any) -> dict[str, float]:
    """Pose-track metrics of one sequence from canonical landmarks (spec/formats.md §7.2).

    Args:
        pred_landmarks: (N, 20, 3) predicted canonical landmarks, metres.
        gt_landmarks: (N, 20, 3) ground-truth canonical landmarks, metres.

    Returns:
        ``{"MPJPE": mm, "PCK_AUC": 0-100, "FINGERTIP_PCK_AUC": 0-100}`` over the 19 evaluated
        landmarks (fingertips: the 5 tips).
    """
    p = _f32(pred_landmarks)
    g = _f32(gt_landmarks)
    if p.ndim != 3 or p.shape[-2:] != (20, 3) or p.shape != g.shape:
        raise ValueError(
            f"expected two (N, 20, 3) landmark arrays, got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    idx = list(LANDMARKS_TO_EVAL)
    err = per_landmark_errors(p[:, idx], g[:, idx])  # (N, 19) mm
    tips = err[:, : len(FINGERTIP_LANDMARKS)]
    return {"MPJPE": mpjpe(err), "PCK_AUC": pck_auc(err), "FINGERTIP_PCK_AUC": pck_auc(tips)}


def _predicted_landmarks(
    mano_model: Any, mano_theta: Any, wrist_xform: Any, hand_side: Any, betas: Any
) -> torch.Tensor:
    """MANO landmarks (N, 20, 3) m for instances of mixed hand sides (left/right layer per instance)."""
    theta = _f32(mano_theta)
    xform = _f32(wrist_xform)
    beta = _f32(betas)
    side = np.asarray(hand_side).reshape(-1).astype(np.int64)
    n = theta.shape[0]
    out = torch.empty((n, 20, 3), dtype=torch.float32)
    for s in (0, 1):
        sel = np.nonzero(side == s)[0]
        if sel.size == 0:
            continue
        ii = torch.as_tensor(sel)
        with torch.no_grad():
            lm = mano_model.landmarks_from_wrist_xform(theta[ii], xform[ii], beta[ii], s)
        out[ii] = _f32(lm)
    return out


def compute_pose_metrics(
    mano_model: Any,
    mano_theta: Any,
    wrist_xform: Any,
    hand_side: Any,
    betas: Any,
    gt_landmarks: Any,
) -> dict[str, float]:
    """Pose-track metrics of one sequence from predicted MANO parameters (spec/formats.md §7.2).

    Args:
        mano_model: object with ``landmarks_from_wrist_xform(theta (B,15), wrist_xform (B,6),
            betas (B,10), side) -> (B,20,3)`` (``mvhand.geometry.mano.ManoModel``).
        mano_theta: (N, 15) predicted PCA pose.
        wrist_xform: (N, 6) predicted axis-angle (rad) + translation (m).
        hand_side: (N,) 0 left / 1 right (selects the MANO layer).
        betas: (10,) or (N, 10) **ground-truth** betas of the sequence.
        gt_landmarks: (N, 20, 3) canonical UmeTrack landmarks, metres.

    Returns:
        ``{"MPJPE", "PCK_AUC", "FINGERTIP_PCK_AUC"}`` (mm, percent-AUC).
    """
    theta = _f32(mano_theta)
    n = theta.shape[0]
    beta = _f32(betas)
    if beta.ndim == 1:
        beta = beta[None].expand(n, -1)
    pred = _predicted_landmarks(mano_model, theta, wrist_xform, hand_side, beta)
    return pose_metrics_from_landmarks(pred, gt_landmarks)


def aggregate_pose_metrics(
    per_sequence: Sequence[dict[str, float]], weights: Sequence[int]
) -> dict[str, float]:
    """Instance-weighted float64 average of per-sequence pose metrics (spec/formats.md §7.3).

    Args:
        per_sequence: one metrics dict per sequence.
        weights: number of GT hand instances of each sequence.
    """
    if not per_sequence:
        raise ValueError("no sequence to aggregate")
    w = np.asarray(weights, dtype=np.float64)
    return {
        k: float(np.average(np.asarray([m[k] for m in per_sequence], dtype=np.float64), weights=w))
        for k in per_sequence[0]
    }


def mpvpe(pred_vertices: Any, gt_vertices: Any) -> float:
    """Mean per-vertex position error in mm (vertices in metres, scaled in float32 first).

    Args:
        pred_vertices: (..., V, 3) metres.
        gt_vertices: (..., V, 3) metres.
    """
    return mpjpe(per_landmark_errors(pred_vertices, gt_vertices))


def compute_shape_metrics(mano_model: Any, pred_betas: Any, gt_betas: Any) -> dict[str, float]:
    """Shape-track metric of one sequence (spec/formats.md §7.5).

    Both shapes are posed with the **left** layer, θ_pca = 0 (MANO mean pose) and a zero wrist
    transform; ``hand_side`` is ignored.

    Args:
        mano_model: object with ``shape_vertices(betas (B,10)) -> (B,778,3)`` metres.
        pred_betas: (N, 10) predicted betas (N = 1 per sequence in the challenge).
        gt_betas: (N, 10) ground-truth betas.

    Returns:
        ``{"MPVPE": mm}``.
    """
    pb = _f32(pred_betas).reshape(-1, 10)
    gb = _f32(gt_betas).reshape(-1, 10)
    if pb.shape != gb.shape:
        raise ValueError(f"{pb.shape[0]} predicted shape entries for {gb.shape[0]} ground-truth entries")
    with torch.no_grad():
        vp = _f32(mano_model.shape_vertices(pb))
        vg = _f32(mano_model.shape_vertices(gb))
    return {"MPVPE": mpvpe(vp, vg)}


def aggregate_shape_metrics(per_sequence: Sequence[dict[str, float]]) -> dict[str, float]:
    """Plain (unweighted) float64 mean of per-sequence MPVPE (spec/formats.md §7.5)."""
    if not per_sequence:
        raise ValueError("no sequence to aggregate")
    return {"MPVPE": float(np.mean([m["MPVPE"] for m in per_sequence]))}


# ------------------------------------------------------------------------------------------------
# Evaluator (spec/formats.md §6.6): GT archive + submission archive → official result structure
# ------------------------------------------------------------------------------------------------


def _group_stable(entries: Sequence[Any]) -> dict[str, list[Any]]:
    """Group entries by sequence (first-appearance order), each stably sorted by frame_id (spec/formats.md §6.3)."""
    groups: dict[str, list[Any]] = {}
    for e in entries:
        groups.setdefault(e.sequence_name, []).append(e)
    for g in groups.values():
        g.sort(key=lambda e: getattr(e, "frame_id", 0))
    return groups


def _warn_extra(pred: dict[str, list[Any]], gt: dict[str, list[Any]], src: str) -> None:
    extra = [s for s in pred if s not in gt]
    if extra:
        log.warning(
            "%s: %d sequences not in the ground truth are ignored (e.g. %s)", src, len(extra), extra[:3]
        )


def _load_mano_from_gt(gt_files: dict[str, bytes], gt_tar: str, tmp: str) -> Any:
    mano_files = {
        n: gt_files[f"mano/{n}"] for n in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl") if f"mano/{n}" in gt_files
    }
    for need in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl"):
        if need not in mano_files:
            raise InputError(
                gt_tar,
                f"no mano/{need} in the ground-truth archive",
                "rebuild it with tools/write_gt.py --mano-dir",
            )
    d = Path(tmp, "mano")
    d.mkdir()
    for name, data in mano_files.items():
        (d / name).write_bytes(data)
    from mvhand.geometry.mano import ManoModel

    try:
        return ManoModel.from_dir(d)  # read with the allow-list of mano_pickle: nothing in the archive runs
    except InputError as exc:  # name the archive member, not the temporary copy
        member = f"{gt_tar}:mano/{Path(exc.path or '').name}"
        raise InputError(
            member, exc.problem, "rebuild the archive with tools/write_gt.py from the official MANO files"
        ) from exc


def _check_pose_group(
    seq: str, pred: list[Any], gt_lm: list[Any], gt_pose: list[Any] | None, src: str
) -> None:
    """Clear errors where the reference would crash or silently compare mismatched instances."""
    from mvhand.formats.submission import N_THETA, N_XFORM

    if len(pred) != len(gt_lm):
        raise InputError(
            src,
            f"sequence {seq}: {len(pred)} entries, the ground truth has {len(gt_lm)} hand instances",
            "include exactly the hands with crop cameras (expected_pose_instances)",
        )
    for p, g in zip(pred, gt_lm, strict=True):
        if p.frame_id != g.frame_id:
            raise InputError(
                src,
                f"sequence {seq}: entry for frame {p.frame_id} lines up with GT frame {g.frame_id}",
                "one entry per GT instance, sorted by frame",
            )
        if np.size(p.mano_theta) != N_THETA or np.size(p.wrist_xform) != N_XFORM:
            raise InputError(
                src, f"sequence {seq} frame {p.frame_id}: mano_theta needs 15 values and wrist_xform 6"
            )
        if not (np.all(np.isfinite(p.mano_theta)) and np.all(np.isfinite(p.wrist_xform))):
            raise InputError(
                src,
                f"sequence {seq} frame {p.frame_id} hand {p.hand_side}: NaN/inf values",
                "replace non-finite predictions",
            )
        if p.hand_side not in (0, 1):
            raise InputError(src, f"sequence {seq} frame {p.frame_id}: hand_side {p.hand_side} is not 0 or 1")
    if gt_pose is not None and len(gt_pose) == len(pred):
        for p, g in zip(pred, gt_pose, strict=True):
            if p.hand_side != g.hand_side:
                raise InputError(
                    src,
                    f"sequence {seq} frame {p.frame_id}: hand_side {p.hand_side} where the ground truth has {g.hand_side}",
                    "list the left hand before the right hand within a frame",
                )


def _evaluate_pose(
    ds: str,
    pred_entries: list[Any],
    gt_files: dict[str, bytes],
    gt_tar: str,
    src: str,
    mano: Callable[[], Any],
):
    from mvhand.formats.submission import parse_landmark_entries, parse_pose_results, parse_shape_results

    lm_name, shape_name, pose_name = (f"gt_{k}_{ds}.json" for k in ("landmarks", "shape", "pose"))
    for name in (lm_name, shape_name):
        if name not in gt_files:
            raise InputError(
                gt_tar, f"no {name} in the ground-truth archive", "rebuild it with tools/write_gt.py"
            )
    gt_lm = _group_stable(parse_landmark_entries(gt_files[lm_name], f"{gt_tar}:{lm_name}"))
    gt_shape = _group_stable(parse_shape_results(gt_files[shape_name], f"{gt_tar}:{shape_name}"))
    gt_pose = (
        _group_stable(parse_pose_results(gt_files[pose_name], f"{gt_tar}:{pose_name}"))
        if pose_name in gt_files
        else {}
    )
    pred = _group_stable(pred_entries)
    _warn_extra(pred, gt_lm, src)
    per_seq: dict[str, dict[str, float]] = {}
    for seq, lms in gt_lm.items():
        if seq not in pred:
            raise InputError(
                src, f"sequence {seq} of the ground truth has no entries", "predict every test sequence"
            )
        if seq not in gt_shape:
            raise InputError(gt_tar, f"sequence {seq} missing from {shape_name}")
        _check_pose_group(seq, pred[seq], lms, gt_pose.get(seq), src)
        p = pred[seq]
        m = compute_pose_metrics(
            mano(),
            np.stack([e.mano_theta for e in p]),
            np.stack([e.wrist_xform for e in p]),
            np.asarray([e.hand_side for e in p]),
            np.asarray(gt_shape[seq][0].mano_beta),
            np.stack([e.landmarks for e in lms]),
        )
        per_seq[seq] = {**m, "n_instances": len(lms)}
        log.info("%s %s: %s", ds, seq, m)
    if not per_seq:
        raise InputError(gt_tar, f"{lm_name} has no entries")
    agg = aggregate_pose_metrics(
        [{k: v[k] for k in POSE_METRIC_NAMES} for v in per_seq.values()],
        [v["n_instances"] for v in per_seq.values()],
    )
    return agg, per_seq


def _evaluate_shape(
    ds: str,
    pred_entries: list[Any],
    gt_files: dict[str, bytes],
    gt_tar: str,
    src: str,
    mano: Callable[[], Any],
):
    from mvhand.formats.submission import N_BETA, parse_shape_results

    shape_name = f"gt_shape_{ds}.json"
    if shape_name not in gt_files:
        raise InputError(
            gt_tar, f"no {shape_name} in the ground-truth archive", "rebuild it with tools/write_gt.py"
        )
    gt_shape = _group_stable(parse_shape_results(gt_files[shape_name], f"{gt_tar}:{shape_name}"))
    pred = _group_stable(pred_entries)
    _warn_extra(pred, gt_shape, src)
    per_seq: dict[str, dict[str, float]] = {}
    for seq, g in gt_shape.items():
        if seq not in pred:
            raise InputError(
                src, f"sequence {seq} of the ground truth has no entry", "predict every shape-test sequence"
            )
        p = pred[seq]
        if len(p) != len(g):
            raise InputError(
                src,
                f"sequence {seq}: {len(p)} entries, expected {len(g)}",
                "write exactly one entry per sequence",
            )
        for e in p:
            if np.size(e.mano_beta) != N_BETA or not np.all(np.isfinite(e.mano_beta)):
                raise InputError(src, f"sequence {seq}: mano_beta must be 10 finite values")
        m = compute_shape_metrics(
            mano(), np.stack([e.mano_beta for e in p]), np.stack([e.mano_beta for e in g])
        )
        per_seq[seq] = {**m, "n_instances": len(g)}
        log.info("%s %s: %s", ds, seq, m)
    if not per_seq:
        raise InputError(gt_tar, f"{shape_name} has no entries")
    return aggregate_shape_metrics(list(per_seq.values())), per_seq


def evaluate_archives_detailed(
    gt_tar: str | os.PathLike,
    submission_tar: str | os.PathLike,
    phase: str,
    mano_model: Any = None,
) -> tuple[dict, dict[str, dict[str, dict[str, float]]]]:
    """Evaluate a submission archive against a GT archive (spec/formats.md §6.6) and keep per-sequence values.

    Args:
        gt_tar: GT archive (any tar compression) with ``gt_*_<ds>.json`` and ``mano/`` at its root.
        submission_tar: submission archive with ``result_<track>_<ds>.json`` at its root.
        phase: ``"pose_estimation"`` or ``"shape_estimation"``.
        mano_model: optional pre-built MANO model (default: built from the archive's ``mano/``).

    Returns:
        ``(result, per_sequence)``: ``result`` is the official structure (see
        :func:`evaluate_archives`); ``per_sequence`` maps ``"<ds>_test"`` → sequence → metrics plus
        ``n_instances``.

    Raises:
        InputError: unknown phase, unreadable archives, missing files/sequences, count mismatches,
            NaN/inf predictions.
    """
    from mvhand.formats.submission import (
        DATASETS,
        parse_pose_results,
        parse_shape_results,
        read_gt_archive,
        read_tar_root_files,
        tar_member_names,
    )

    if phase not in PHASES:
        raise InputError(None, f"unknown phase {phase!r}", f"use one of {', '.join(PHASES)}")
    track = "pose" if phase == "pose_estimation" else "shape"
    gt_tar, submission_tar = str(gt_tar), str(submission_tar)
    result_names = {f"result_{track}_{ds}.json" for ds in DATASETS}
    sub_files = read_tar_root_files(submission_tar, result_names.__contains__)  # only what is scored
    present = [ds for ds in DATASETS if f"result_{track}_{ds}.json" in sub_files]
    if not present:
        raise InputError(
            submission_tar,
            f"no result_{track}_{{umetrack,hot3d}}.json at the archive root "
            f"(members: {sorted(tar_member_names(submission_tar))[:8]})",
            "pack the result files at the archive root with pack_submission",
        )
    gt_files = read_gt_archive(gt_tar)
    result: list[dict] = []
    details: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mvhand_eval_") as tmp:
        cache: dict[str, Any] = {} if mano_model is None else {"m": mano_model}

        def mano() -> Any:
            if "m" not in cache:
                cache["m"] = _load_mano_from_gt(gt_files, gt_tar, tmp)
            return cache["m"]

        for ds in DATASETS:
            name = f"result_{track}_{ds}.json"
            if name not in sub_files:
                log.info("%s: no %s, skipping", ds, name)
                continue
            src = f"{submission_tar}:{name}"
            if track == "pose":
                agg, per_seq = _evaluate_pose(
                    ds, parse_pose_results(sub_files[name], src), gt_files, gt_tar, src, mano
                )
            else:
                agg, per_seq = _evaluate_shape(
                    ds, parse_shape_results(sub_files[name], src), gt_files, gt_tar, src, mano
                )
            result.append({f"{ds}_test": agg})
            details[f"{ds}_test"] = per_seq
    return {"result": result}, details


def evaluate_archives(
    gt_tar: str | os.PathLike, submission_tar: str | os.PathLike, phase: str, mano_model: Any = None
) -> dict:
    """Evaluate like the challenge server (spec/formats.md §6.6).

    Returns:
        ``{"result": [{"umetrack_test": {"MPJPE", "PCK_AUC", "FINGERTIP_PCK_AUC"}}, {"hot3d_test": {...}}]}``
        for ``pose_estimation`` and ``{"result": [{"umetrack_test": {"MPVPE"}}, ...]}`` for
        ``shape_estimation``; a dataset whose result file is absent is skipped. Values are Python
        floats (mm / 0–100).
    """
    return evaluate_archives_detailed(gt_tar, submission_tar, phase, mano_model)[0]
