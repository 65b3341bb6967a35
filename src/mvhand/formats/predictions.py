"""The prediction table: per-hand network predictions (predict stage) and their smoothed versions
(neural_smooth), one Parquet row per (sequence, frame, hand) — schema, key validation and reader in one place.

The predict stage writes :data:`PREDICTION_SCHEMA` row group by row group (:mod:`mvhand.model.inference`);
neural_smooth writes the same columns with smoothed MANO parameters; packaging and the report read them with
:func:`read_prediction_table`. Columns are documented in docs/model.md ("Prediction table").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mvhand.io_utils import InputError

__all__ = [
    "KEY_COLUMNS",
    "PREDICTION_SCHEMA",
    "check_prediction_keys",
    "check_view_columns",
    "read_prediction_table",
    "require_columns",
]

_FIX = "re-run the predict stage (a table written by hand must follow docs/model.md)"
#: one row per (sequence, frame, hand side); hand_side 0 = left, 1 = right
KEY_COLUMNS = ("sequence_name", "frame_id", "hand_side")

_F32 = pa.float32()
PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("sequence_name", pa.string(), nullable=False),
        pa.field("frame_id", pa.int32(), nullable=False),
        pa.field("hand_side", pa.int8(), nullable=False),
        pa.field("mano_theta", pa.list_(_F32, 15), nullable=False),
        pa.field("wrist_xform", pa.list_(_F32, 6), nullable=False),
        pa.field("mano_beta_pred", pa.list_(_F32, 10), nullable=False),
        pa.field("mano_beta", pa.list_(_F32, 10), nullable=False),
        pa.field("global_rot", pa.list_(_F32, 9), nullable=False),
        pa.field("root", pa.list_(_F32, 3), nullable=False),
        pa.field("landmarks", pa.list_(_F32, 60), nullable=False),
        pa.field("n_views", pa.int8(), nullable=False),
        pa.field("view_stream_ids", pa.list_(pa.string()), nullable=False),
        pa.field("view_kp2d", pa.list_(pa.list_(_F32, 40)), nullable=False),
        pa.field("view_conf", pa.list_(pa.list_(_F32, 20)), nullable=False),
        pa.field("view_intrinsics", pa.list_(pa.list_(_F32, 4)), nullable=False),
        pa.field("view_T_world_from_crop", pa.list_(pa.list_(_F32, 16)), nullable=False),
        pa.field("mpjpe_mm", pa.float32(), nullable=True),
    ],
    metadata={"mvhand.predictions": "1"},
)


def require_columns(df: pd.DataFrame, columns, source: str) -> None:
    """Raise :class:`InputError` naming ``source`` if ``df`` lacks any of ``columns`` (all in
    :data:`PREDICTION_SCHEMA`)."""
    unknown = [c for c in columns if c not in PREDICTION_SCHEMA.names]
    if unknown:
        raise ValueError(f"{unknown} are not prediction-table columns")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(source, f"prediction table lacks column(s) {missing}", _FIX)


def check_prediction_keys(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate the row keys of a prediction table; returns it with integer ``frame_id`` / ``hand_side``.

    One row per (sequence, frame, hand), integer frame ids, hand sides 0 (left) / 1 (right): a table that
    breaks this would otherwise be truncated, mis-sorted or silently mis-assigned downstream.

    Raises:
        InputError: a missing key column, a fractional / non-finite frame id, a hand side other than 0 or 1,
            or duplicate rows (the first offenders are listed).
    """
    fix = "re-run the predict stage (and neural_smooth); a table written by hand needs one row per frame and hand"
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(source, f"prediction table lacks column(s) {missing}", fix)
    out = df.copy()
    for col, allowed in (("frame_id", None), ("hand_side", (0, 1))):
        raw = pd.to_numeric(out[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if allowed is not None:
            bad |= ~np.isin(raw, allowed)
        if bad.any():
            rows = np.flatnonzero(bad)[:3].tolist()
            what = "0 (left) or 1 (right)" if allowed else "an integer"
            shown = [out[col].iloc[i] for i in rows]
            raise InputError(
                source, f"{col} must be {what}: {int(bad.sum())} rows are not (rows {rows}: {shown})", fix
            )
        out[col] = raw.astype(np.int64)
    dup = out.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        first = out.loc[dup, list(KEY_COLUMNS)].drop_duplicates().head(3).to_records(index=False).tolist()
        raise InputError(
            source,
            f"{int(dup.sum())} rows share their (sequence_name, frame_id, hand_side) with another row "
            f"(e.g. {first})",
            fix,
        )
    return out


def read_prediction_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a prediction / smoothed table (Parquet) and validate its keys (:func:`check_prediction_keys`).

    Raises:
        InputError: missing or unreadable file, or invalid keys; the message names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "prediction table not found", "run the predict stage first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise InputError(
            path, f"cannot read Parquet ({exc})", "delete it and re-run the stage that wrote it"
        ) from exc
    return check_prediction_keys(df, str(path))


def check_view_columns(df: pd.DataFrame, source: str) -> None:
    """Every row holds as many views in each ``view_*`` column, and every view its fixed number of values
    (the fixed-size lists of :data:`PREDICTION_SCHEMA`: 40 keypoint coordinates, 20 confidences, 4
    intrinsics, 16 pose values).

    Raises:
        InputError: naming ``source``, the row and the column.
    """
    widths = {
        f.name: f.type.value_type.list_size
        for f in PREDICTION_SCHEMA
        if f.name.startswith("view_")
        and pa.types.is_list(f.type)
        and pa.types.is_fixed_size_list(f.type.value_type)
    }
    require_columns(df, list(widths), source)
    counts, first = None, None
    for col, width in widths.items():
        lens = [len(v) for v in df[col]]
        if counts is not None and lens != counts:
            i = next(k for k, (a, b) in enumerate(zip(lens, counts, strict=True)) if a != b)
            raise InputError(
                source, f"row {i}: column {col!r} has {lens[i]} views, {first} has {counts[i]}", _FIX
            )
        counts, first = lens, first or col
        for i, views in enumerate(df[col]):
            for v in views:
                if len(v) != width:
                    raise InputError(
                        source,
                        f"row {i}: column {col!r} holds a view of {len(v)} values, expected {width}",
                        _FIX,
                    )
