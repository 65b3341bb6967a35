"""Evaluation report: the report's Table 1 on our data, per-sequence MPJPE, PCK curves, trajectories.

Every number comes from the submission archives of each candidate (``<variant>-<method>``) scored
against the ground-truth archive with mvhand's evaluator (the same code path as
``workflow/scripts/evaluate.py``); nothing is typed in.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvhand.constants import DATASETS, LANDMARKS_TO_EVAL
from mvhand.io_utils import InputError, atomic_path, atomic_write, pyplot, save_figure

__all__ = [
    "CANDIDATE_LABELS",
    "CandidateScores",
    "merge_gt_archives",
    "readme_results",
    "readme_results_from",
    "read_tsv",
    "score_candidate",
    "splice_block",
    "write_report",
]

log = logging.getLogger(__name__)

#: row labels of Table 1, in order (candidate id = "<variant>-<method>").
CANDIDATE_LABELS = {
    "baseline-raw": "baseline (no extrinsic perturbation)",
    "full-raw": "+ extrinsic perturbation",
    "full-neural": "+ Neural Smooth (offline)",
    "full-online": "+ online Neural Smooth (causal, ours)",
    "full-one_euro": "+ One Euro filter (instead of Neural Smooth)",
    "full-savgol": "+ Savitzky–Golay (instead of Neural Smooth)",
}
#: the 1st-place report's numbers on the real test sets (MPJPE mm), for orientation only.
PAPER_MPJPE = {
    "baseline-raw": (23.82, 184.27),
    "full-raw": (17.91, 36.93),
    "full-neural": (13.92, 21.66),
}


@dataclass
class CandidateScores:
    """Scores of one candidate.

    Attributes:
        name: candidate id.
        result: official-structure metrics ``{"<ds>_test": {"MPJPE", "PCK_AUC", "FINGERTIP_PCK_AUC"}}``.
        per_sequence: ``<ds>_test`` → sequence → metrics.
        errors: ``<ds>`` → ``(N, 19)`` per-landmark errors in mm (all instances pooled).
    """

    name: str
    result: dict[str, dict[str, float]]
    per_sequence: dict[str, dict[str, dict[str, float]]]
    errors: dict[str, np.ndarray] = field(default_factory=dict)


def merge_gt_archives(archives: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge per-dataset GT archives (``gt_*_<ds>.json`` + ``mano/``) into one, like the organisers'.

    Root JSON files are taken from every archive (a name present twice must be identical); the
    ``mano/`` folder is taken from the first archive that has it.
    """
    from mvhand.formats.submission import read_gt_archive

    members: dict[str, bytes] = {}
    for arc in archives:
        files = read_gt_archive(arc)  # names the archive if it is corrupt; reads only what the evaluator uses
        if not files:
            raise InputError(
                arc,
                "holds no gt_*_<dataset>.json and no mano/ files",
                "pass a ground-truth archive (tools/write_gt.py)",
            )
        for name, data in files.items():
            if name.startswith("mano/") and name in members:
                continue
            if name in members and members[name] != data:
                raise InputError(
                    arc,
                    f"{name} differs from the same file in an earlier GT archive",
                    "merge archives of different datasets only",
                )
            members[name] = data
    with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz") as tf:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(members[name]))
    return Path(out)


def score_candidate(
    name: str, gt_tar: str | os.PathLike, submission_tar: str | os.PathLike, mano
) -> CandidateScores:
    """Score a pose submission archive; also keep per-landmark errors for the PCK curves."""
    import torch

    from mvhand.formats.submission import (
        parse_landmark_entries,
        parse_pose_results,
        read_gt_archive,
        read_tar_root_files,
    )
    from mvhand.post.metrics import evaluate_archives_detailed

    result, per_seq = evaluate_archives_detailed(gt_tar, submission_tar, "pose_estimation", mano_model=mano)
    flat = {k: v for item in result["result"] for k, v in item.items()}
    scores = CandidateScores(name, flat, per_seq)
    gt_files = read_gt_archive(gt_tar)
    sub_files = read_tar_root_files(
        submission_tar, {f"result_pose_{ds}.json" for ds in DATASETS}.__contains__
    )
    for ds in DATASETS:
        if f"result_pose_{ds}.json" not in sub_files:
            continue
        gt = parse_landmark_entries(gt_files[f"gt_landmarks_{ds}.json"])
        shapes = {e["sequence_name"]: e["mano_beta"] for e in json.loads(gt_files[f"gt_shape_{ds}.json"])}
        pred = parse_pose_results(sub_files[f"result_pose_{ds}.json"])
        errs = []
        for seq in dict.fromkeys(e.sequence_name for e in gt):
            g = sorted((e for e in gt if e.sequence_name == seq), key=lambda e: e.frame_id)
            p = sorted((e for e in pred if e.sequence_name == seq), key=lambda e: e.frame_id)
            with torch.no_grad():
                lm = mano.landmarks_from_wrist_xform(
                    torch.as_tensor(np.stack([e.mano_theta for e in p]), dtype=torch.float32),
                    torch.as_tensor(np.stack([e.wrist_xform for e in p]), dtype=torch.float32),
                    torch.as_tensor(np.asarray(shapes[seq]), dtype=torch.float32),
                    torch.as_tensor([e.hand_side for e in p]),
                ).numpy()
            gl = np.stack([np.asarray(e.landmarks) for e in g])
            idx = list(LANDMARKS_TO_EVAL)
            errs.append(np.linalg.norm(lm[:, idx] - gl[:, idx], axis=-1) * 1000.0)
        scores.errors[ds] = np.concatenate(errs) if errs else np.zeros((0, 19))
    return scores


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _mpjpe_head(ds: str) -> str:
    return f"{ds} MPJPE (mm) ↓"


def _auc_head(ds: str) -> str:
    return f"{ds} PCK-AUC ↑"


#: header of Table 1 (``table1.tsv``): method, MPJPE / PCK-AUC / fingertip PCK-AUC per dataset, paper MPJPE.
TABLE1_HEAD = [
    "method",
    *(h for ds in DATASETS for h in (_mpjpe_head(ds), _auc_head(ds), f"{ds} tip AUC ↑")),
    "report MPJPE (real data)",
]
#: header of the shape track table (``shape.tsv``): one row per ``<ds>_test`` entry of the shape metrics.
SHAPE_HEAD = ["dataset", "MPVPE (mm) ↓"]


def table1_rows(scores: Sequence[CandidateScores]) -> tuple[list[str], list[list[str]]]:
    """Table 1 as (header, rows): method, then MPJPE / PCK-AUC / fingertip PCK-AUC per dataset (formatted),
    then the report's real-data MPJPE."""
    rows = []
    for s in scores:
        cells = [CANDIDATE_LABELS.get(s.name, s.name)]
        for ds in DATASETS:
            m = s.result.get(f"{ds}_test", {})
            cells += [_fmt(m.get("MPJPE")), _fmt(m.get("PCK_AUC")), _fmt(m.get("FINGERTIP_PCK_AUC"))]
        paper = PAPER_MPJPE.get(s.name)
        rows.append(cells + [f"{paper[0]} / {paper[1]}" if paper else "–"])
    return list(TABLE1_HEAD), rows


def shape_rows(shape_result: dict | None) -> tuple[list[str], list[list[str]]]:
    """The shape track as (header, rows): ``<ds>_test`` and its MPVPE in mm (formatted).

    Args:
        shape_result: the shape phase's evaluate.py output ``{"result": [{"<ds>_test": {"MPVPE": mm}}, ...]}``,
            or ``None`` (no rows).
    """
    rows = [
        [k, _fmt(v.get("MPVPE"))] for item in (shape_result or {}).get("result", []) for k, v in item.items()
    ]
    return list(SHAPE_HEAD), rows


def _markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table1(scores: Sequence[CandidateScores]) -> str:
    """Markdown Table 1: MPJPE / PCK-AUC / fingertip PCK-AUC per dataset and candidate."""
    return _markdown_table(*table1_rows(scores))


def _plot_pck(scores: Sequence[CandidateScores], out: Path) -> None:
    plt = pyplot()

    thr = np.linspace(0, 50, 101)
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(6 * len(DATASETS), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], DATASETS, strict=True):
        for s in scores:
            e = s.errors.get(ds)
            if e is None or e.size == 0:
                continue
            ax.plot(thr, [(e <= t).mean() * 100 for t in thr], label=CANDIDATE_LABELS.get(s.name, s.name))
        ax.set(title=f"{ds}: PCK over the 19 evaluated landmarks", xlabel="threshold (mm)", ylabel="PCK (%)")
        ax.set_xlim(0, 50)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def _plot_per_sequence(scores: Sequence[CandidateScores], out: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(len(DATASETS), 1, figsize=(11, 3.6 * len(DATASETS)), squeeze=False)
    for ax, ds in zip(axes[:, 0], DATASETS, strict=True):
        seqs = sorted({q for s in scores for q in s.per_sequence.get(f"{ds}_test", {})})
        if not seqs:
            ax.set_visible(False)
            continue
        width = 0.8 / max(len(scores), 1)
        for k, s in enumerate(scores):
            vals = [s.per_sequence.get(f"{ds}_test", {}).get(q, {}).get("MPJPE", np.nan) for q in seqs]
            ax.bar(np.arange(len(seqs)) + k * width, vals, width, label=CANDIDATE_LABELS.get(s.name, s.name))
        ax.set_xticks(np.arange(len(seqs)) + 0.4 - width / 2, seqs, rotation=20, ha="right", fontsize=7)
        ax.set(title=f"{ds}: MPJPE per test sequence", ylabel="MPJPE (mm)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def plot_trajectory(
    raw, smoothed, gt_landmarks: Mapping[tuple[str, int, int], np.ndarray] | None, out: Path, title: str
) -> str:
    """Plot the wrist-relative middle-fingertip and the root over time for the longest hand track.

    Args:
        raw / smoothed: prediction tables (before / after Neural Smooth) with ``landmarks`` (60).
        gt_landmarks: optional ``(sequence, frame, side)`` → ``(20, 3)`` GT landmarks (m).
        out: PNG path.

    Returns:
        ``"<sequence> hand <side>"`` of the plotted track.
    """
    plt = pyplot()

    sizes = raw.groupby(["sequence_name", "hand_side"]).size()
    seq, side = sizes.idxmax()

    def track(df):
        g = df[(df["sequence_name"] == seq) & (df["hand_side"] == side)].sort_values("frame_id")
        return g["frame_id"].to_numpy(), np.stack(g["landmarks"].to_numpy()).reshape(-1, 20, 3)

    fr, lm_raw = track(raw)
    _, lm_s = track(smoothed)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharex=True)
    for c, axis in enumerate("xyz"):
        for row, (k, name) in enumerate([(5, "wrist"), (2, "middle fingertip")]):
            ax = axes[row, c]
            ax.plot(fr, lm_raw[:, k, c] * 1000, ".-", lw=0.8, ms=3, label="network (raw)", color="tab:red")
            ax.plot(fr, lm_s[:, k, c] * 1000, "-", lw=1.5, label="Neural Smooth", color="tab:blue")
            if gt_landmarks:
                g = [gt_landmarks.get((seq, int(f), int(side))) for f in fr]
                gy = np.array([np.nan if v is None else v[k, c] * 1000 for v in g])
                ax.plot(fr, gy, "--", lw=1.2, label="ground truth", color="k")
            ax.set_title(f"{name} {axis} (mm)", fontsize=9)
            ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("frame")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: {seq}, hand {'right' if side else 'left'}")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    return f"{seq} hand {side}"


def write_report(
    out_dir: str | os.PathLike,
    scores: Sequence[CandidateScores],
    shape_result: dict | None = None,
    online_stats: Mapping[str, dict] | None = None,
    trajectory_png: str | None = None,
    trajectory_caption: str = "",
    training_curves: Mapping[str, str] | None = None,
    notes: str = "",
) -> Path:
    """Write ``report.md``, its plots, ``table1.tsv``, ``shape.tsv`` and ``scores.json`` into ``out_dir``.

    ``shape.tsv`` holds the header only when ``shape_result`` is ``None``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_pck(scores, out_dir / "pck_curves.png")
    _plot_per_sequence(scores, out_dir / "per_sequence_mpjpe.png")
    parts = [
        "# mvhand evaluation report",
        "",
        "Scores of each pipeline variant on the held-out test sequences, computed by mvhand's evaluator "
        "(same numbers as the official one: MPJPE over the 19 evaluated landmarks with ground-truth betas, "
        "PCK-AUC over 0–50 mm; HOT3D every 10th frame). Rows build up the method as in the 1st-place "
        "report's Table 1; the last column repeats the report's real-data MPJPE (UmeTrack / HOT3D) for "
        "orientation only — our numbers come from the data configured in `config.yaml`.",
        "",
        "## Table 1",
        "",
        table1(scores),
        "",
        "How to read it: lower MPJPE and higher AUC are better. *+ extrinsic perturbation* trains with a "
        "random world-origin shift so that the position branch cannot memorise the camera layout; it matters "
        "most where the world frame differs from training (HOT3D). *Neural Smooth* optimises each hand "
        "trajectory against the network's multi-view 2D keypoints with acceleration penalties; the two filter "
        "rows smooth the same predictions without 2D evidence, the online row is the causal variant.",
    ]
    shape_head, shape_table = shape_rows(shape_result)
    if shape_result:
        parts += ["", "## Shape track", "", _markdown_table(shape_head, shape_table)]
    if online_stats:
        parts += ["", "## Online Neural Smooth latency", "", "| dataset | window | free | iterations | streams | median ms/step | p95 ms/step |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for ds, st in online_stats.items():
            o = st.get("online", {})
            parts.append(
                f"| {ds} | {o.get('window')} | {o.get('free')} | {o.get('iterations')} | {o.get('parallel_streams')} "
                f"| {_fmt(o.get('step_latency_ms_median'), 1)} | {_fmt(o.get('step_latency_ms_p95'), 1)} |"
            )
        parts.append("")
        parts.append(
            "One step emits the newest frame of every active hand track at once (all streams batched)."
        )
    parts += ["", "## PCK curves", "", "![PCK curves](pck_curves.png)"]
    parts += ["", "## Per-sequence MPJPE", "", "![per-sequence MPJPE](per_sequence_mpjpe.png)"]
    if trajectory_png:
        parts += [
            "",
            "## Trajectory before / after Neural Smooth",
            "",
            trajectory_caption,
            "",
            f"![trajectory]({trajectory_png})",
        ]
    if training_curves:
        parts += ["", "## Training curves", ""]
        for name, png in training_curves.items():
            parts.append(f"![{name}]({png})")
    if notes:
        parts += ["", notes]
    path = out_dir / "report.md"
    with atomic_write(path) as fh:
        fh.write("\n".join(parts) + "\n")
    # the same tables for Snakemake's HTML report (snakemake --report) and the README (tools/readme_results.py)
    _write_tsv(out_dir / "table1.tsv", *table1_rows(scores))
    _write_tsv(out_dir / "shape.tsv", shape_head, shape_table)
    with atomic_write(out_dir / "scores.json") as fh:
        json.dump(
            {s.name: {"result": s.result, "per_sequence": s.per_sequence} for s in scores}, fh, indent=2
        )
    return path


# --------------------------------------------------------------------------------------------------
# Tables as TSV, and the README's results block rendered from them
# --------------------------------------------------------------------------------------------------

#: the lines that delimit the README's generated results block (tools/readme_results.py).
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
#: display names of the datasets in the README's results block.
DATASET_NAMES = {"umetrack": "UmeTrack", "hot3d": "HOT3D"}


def _write_tsv(path: Path, head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with atomic_write(path) as fh:
        fh.write("\n".join("\t".join(r) for r in [head, *rows]) + "\n")


def read_tsv(path: str | os.PathLike, head: Sequence[str]) -> list[list[str]]:
    """Rows of a table the report wrote (``table1.tsv``, ``shape.tsv``), checked against its header.

    Args:
        path: the TSV file.
        head: the header the report writes (:data:`TABLE1_HEAD`, :data:`SHAPE_HEAD`).

    Returns:
        The data rows, each a list of ``len(head)`` formatted cells.

    Raises:
        InputError: the file is missing, or its header or a row's width differs (it names the file).
    """
    fix = "re-run the report stage (snakemake report) with this version of mvhand"
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(path, "not found", fix) from None
    if not lines or lines[0].split("\t") != list(head):
        raise InputError(path, f"header is not {list(head)}", fix)
    rows = [line.split("\t") for line in lines[1:] if line]
    for i, row in enumerate(rows, start=2):
        if len(row) != len(head):
            raise InputError(path, f"line {i} has {len(row)} cells, the header {len(head)}", fix)
    return rows


def _bold_best(cells: list[str], lower_is_better: bool) -> list[str]:
    """Bold every cell holding the column's best number; cells that are not numbers ("–") stay as they are."""
    values = {}
    for i, c in enumerate(cells):
        try:
            values[i] = float(c)
        except ValueError:
            continue
    if not values:
        return cells
    best = min(values.values()) if lower_is_better else max(values.values())
    return [f"**{c}**" if values.get(i) == best else c for i, c in enumerate(cells)]


def readme_results(table1_rows_: Sequence[Sequence[str]], shape_rows_: Sequence[Sequence[str]]) -> str:
    """The README's results block (without its marker lines) from the report's tables.

    Args:
        table1_rows_: rows of ``table1.tsv`` (columns :data:`TABLE1_HEAD`).
        shape_rows_: rows of ``shape.tsv`` (columns :data:`SHAPE_HEAD`: ``<ds>_test``, MPVPE mm).

    Returns:
        Markdown: a generated-file comment, the table (method, MPJPE mm and PCK-AUC per dataset, the report's
        real-data MPJPE; the best MPJPE / AUC of each column in bold), then one line with the shape track's
        MPVPE (mm) per dataset when ``shape_rows_`` is not empty. Cells are copied as the report formatted them.
    """
    cols, head = [0], ["method"]
    lower = {}  # column position in the README table -> lower is better
    for ds in DATASETS:
        name = DATASET_NAMES[ds]
        for src, title, low in (
            (_mpjpe_head(ds), f"{name} MPJPE (mm) ↓", True),
            (_auc_head(ds), "PCK-AUC ↑", False),
        ):
            lower[len(head)] = low
            cols.append(TABLE1_HEAD.index(src))
            head.append(title)
    cols.append(len(TABLE1_HEAD) - 1)
    head.append("report MPJPE (real data)")
    table = [[row[c] for c in cols] for row in table1_rows_]
    for j, low in lower.items():
        for row, cell in zip(table, _bold_best([row[j] for row in table], low), strict=True):
            row[j] = cell
    lines = [
        "<!-- generated from results/report/ by `python tools/readme_results.py --write`; do not edit -->",
        _markdown_table(head, table),
    ]
    if shape_rows_:
        per_ds = [
            f"{v}{' mm' if v != '–' else ''} ({DATASET_NAMES.get(k.removesuffix('_test'), k)})"
            for k, v in shape_rows_
        ]
        lines += ["", "Shape track, MPVPE ↓: " + ", ".join(per_ds) + "."]
    return "\n".join(lines)


def readme_results_from(report_dir: str | os.PathLike) -> str:
    """:func:`readme_results` of a report directory's ``table1.tsv`` and ``shape.tsv`` (see :func:`read_tsv`)."""
    report_dir = Path(report_dir)
    return readme_results(
        read_tsv(report_dir / "table1.tsv", TABLE1_HEAD), read_tsv(report_dir / "shape.tsv", SHAPE_HEAD)
    )


def splice_block(text: str, block: str, source: str | os.PathLike = "README.md") -> str:
    """Replace what lies between the :data:`README_BEGIN` and :data:`README_END` lines of ``text`` by ``block``.

    Everything outside the two marker lines, and the marker lines themselves, are kept byte for byte.

    Args:
        text: the README's text.
        block: the new content (no trailing newline needed).
        source: the README's path, named in errors.

    Raises:
        InputError: a marker line is missing or repeated, or the end comes before the begin.
    """
    lines = text.splitlines(keepends=True)
    found = {}
    for marker in (README_BEGIN, README_END):
        at = [i for i, line in enumerate(lines) if line.strip() == marker]
        if len(at) != 1:
            raise InputError(
                source,
                f"has {len(at)} lines '{marker}', needs exactly one",
                f"put the results block between a '{README_BEGIN}' and a '{README_END}' line",
            )
        found[marker] = at[0]
    begin, end = found[README_BEGIN], found[README_END]
    if end < begin:
        raise InputError(source, f"'{README_END}' comes before '{README_BEGIN}'", "swap the two marker lines")
    return "".join(lines[: begin + 1]) + block.rstrip("\n") + "\n" + "".join(lines[end:])
