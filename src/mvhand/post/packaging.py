"""Turn prediction tables into validated challenge submissions (spec/formats.md §6.1–6.4).

Pose track: one entry per hand instance the evaluator expects (every hand with a non-empty crop dict in
``hand_crops.json``; left before right; HOT3D every 10th frame), taken from the (smoothed) prediction
table. Shape track: one entry per sequence, the per-coordinate median of the per-frame predicted betas.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mvhand.formats.predictions import check_prediction_keys, read_prediction_table
from mvhand.formats.sequence import sequence_name
from mvhand.formats.submission import (
    PoseEntry,
    ShapeEntry,
    expected_pose_instances,
    pack_submission,
    pose_result_name,
    shape_result_name,
    validate_pose_results,
    validate_shape_results,
    write_pose_results,
    write_shape_results,
)
from mvhand.io_utils import InputError

__all__ = [
    "MAX_FILLED_FRACTION",
    "pose_entries_from_predictions",
    "shape_entries_from_predictions",
    "package_submissions",
]

log = logging.getLogger(__name__)

#: Default cap on the fraction of expected pose instances that may be filled from a neighbouring frame.
MAX_FILLED_FRACTION = 0.1


def _finite_rows(df: pd.DataFrame) -> np.ndarray:
    theta = np.stack(df["mano_theta"].to_numpy()) if len(df) else np.zeros((0, 15))
    wrist = np.stack(df["wrist_xform"].to_numpy()) if len(df) else np.zeros((0, 6))
    return np.all(np.isfinite(theta), -1) & np.all(np.isfinite(wrist), -1)


def pose_entries_from_predictions(
    df: pd.DataFrame,
    expected: Sequence[tuple[str, int, int]],
    source: str = "<predictions>",
    max_filled: float = MAX_FILLED_FRACTION,
) -> list[PoseEntry]:
    """Pose-track entries for exactly the ``expected`` instances, in their order.

    A missing or non-finite prediction is filled from the nearest frame of the same sequence and hand
    that has a finite one (counted and logged), up to ``max_filled`` of the expected instances; more
    means the predictions are broken (or belong to another split), which is an error, as is an instance
    whose hand has no finite prediction at all.

    Args:
        df: prediction table with ``sequence_name, frame_id, hand_side, mano_theta (15), wrist_xform (6)``.
        expected: ``(sequence_name, frame_id, hand_side)`` in evaluator order
            (:func:`mvhand.formats.submission.expected_pose_instances`).
        source: name of the table for error messages.
        max_filled: largest fraction (0–1) of ``expected`` that may be filled.
    """
    for col in ("mano_theta", "wrist_xform"):
        if col not in df.columns:
            raise InputError(
                source, f"prediction table lacks column {col!r}", "re-run predict / neural_smooth"
            )
    df = check_prediction_keys(df, source)
    good = df[_finite_rows(df)]
    by_hand: dict[tuple[str, int], pd.DataFrame] = {
        (str(s), int(h)): g.sort_values("frame_id")
        for (s, h), g in good.groupby(["sequence_name", "hand_side"])
    }
    entries: list[PoseEntry] = []
    filled = 0
    for seq, frame, side in expected:
        g = by_hand.get((seq, side))
        if g is None or g.empty:
            raise InputError(
                source,
                f"no finite prediction for sequence {seq!r} hand {side} (needed for frame {frame})",
                "check that predict ran on the same split the submission is built for",
            )
        frames = g["frame_id"].to_numpy()
        j = int(np.argmin(np.abs(frames - frame)))
        filled += int(frames[j] != frame)
        row = g.iloc[j]
        entries.append(
            PoseEntry(seq, int(frame), np.asarray(row["mano_theta"]), np.asarray(row["wrist_xform"]), side)
        )
    if filled > max_filled * len(expected):
        raise InputError(
            source,
            f"{filled} of {len(expected)} expected instances ({filled / len(expected):.0%}) have no finite "
            f"prediction and would be copied from the nearest frame (allowed: {max_filled:.0%})",
            "look for NaN or missing rows in the predict / neural_smooth logs and re-run them; to submit anyway "
            "raise --max-filled (config: submission.max_filled)",
        )
    if filled:
        log.warning(
            "%s: %d of %d expected instances filled from the nearest frame", source, filled, len(expected)
        )
    return entries


def shape_entries_from_predictions(
    df: pd.DataFrame, sequences: Sequence[str], source: str = "<predictions>"
) -> list[ShapeEntry]:
    """One shape entry per sequence: the per-coordinate median of the finite predicted betas.

    Args:
        df: prediction table with ``sequence_name`` and ``mano_beta_pred (10)``.
        sequences: sequences to emit, in order (a sequence without predictions is an error).
    """
    if "mano_beta_pred" not in df.columns:
        raise InputError(source, "prediction table lacks column 'mano_beta_pred'", "re-run predict")
    out = []
    for seq in sequences:
        rows = df.loc[df["sequence_name"] == seq, "mano_beta_pred"]
        betas = np.stack(rows.to_numpy()) if len(rows) else np.zeros((0, 10))
        betas = betas[np.all(np.isfinite(betas), -1)]
        if len(betas) == 0:
            raise InputError(source, f"no finite beta prediction for sequence {seq!r}", "re-run predict")
        out.append(ShapeEntry(seq, np.median(betas, axis=0), 0))
    return out


def package_submissions(
    pose_predictions: Mapping[str, str | os.PathLike],
    pose_tars: Mapping[str, Sequence[str | os.PathLike]],
    out_pose: str | os.PathLike,
    shape_predictions: Mapping[str, Sequence[str | os.PathLike]] | None = None,
    shape_tars: Mapping[str, Sequence[str | os.PathLike]] | None = None,
    out_shape: str | os.PathLike | None = None,
    max_filled: float = MAX_FILLED_FRACTION,
) -> dict[str, Path]:
    """Build, validate and pack ``pose_submission.tar.gz`` (and ``shape_submission.tar.gz``).

    Every result file of both tracks is built and validated before the first archive is written, so bad
    input never leaves one track's archive behind.

    Args:
        pose_predictions: dataset → prediction Parquet of its pose-test split.
        pose_tars: dataset → the pose-test tars (define the expected instances).
        out_pose: output archive of the pose track.
        shape_predictions: dataset → prediction Parquet files whose sequences the shape file covers
            (the shape-test split, and also the pose-test split when the GT archive lists those
            sequences' shapes, as a single organiser-style archive does, spec/formats.md §6.6).
        shape_tars: dataset → tars of those sequences; ``out_shape``: output archive (optional).
        max_filled: largest fraction of expected pose instances filled from a neighbouring frame
            (:func:`pose_entries_from_predictions`).

    Returns:
        the written archive paths by track.
    """
    if shape_predictions and (shape_tars is None or out_shape is None):
        raise ValueError("shape_tars and out_shape are required with shape_predictions")
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mvhand_pack_") as tmp:
        pose_files = []
        for ds, pred_path in pose_predictions.items():
            tars = sorted(pose_tars[ds], key=sequence_name)
            expected = expected_pose_instances(tars, ds)
            df = read_prediction_table(pred_path)
            entries = pose_entries_from_predictions(df, expected, str(pred_path), max_filled)
            validate_pose_results(entries, expected, source=str(pred_path))
            pose_files.append(write_pose_results(Path(tmp) / pose_result_name(ds), entries))
            log.info("%s: %d pose entries from %s", ds, len(entries), pred_path)
        shape_files = []
        for ds, pred_paths in (shape_predictions or {}).items():
            seqs = sorted({sequence_name(p) for p in shape_tars[ds]})
            df = pd.concat([read_prediction_table(p) for p in pred_paths], ignore_index=True)
            source = ", ".join(str(p) for p in pred_paths)
            entries = shape_entries_from_predictions(df, seqs, source)
            validate_shape_results(entries, seqs, source=source)
            shape_files.append(write_shape_results(Path(tmp) / shape_result_name(ds), entries))
            log.info("%s: %d shape entries from %s", ds, len(entries), source)
        written["pose"] = pack_submission(out_pose, pose_files)
        if shape_files:
            written["shape"] = pack_submission(out_shape, shape_files)
    return written
