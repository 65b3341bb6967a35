"""Unit tests of mvhand.post.report: known scores in, known Table 1 (markdown, TSV, JSON) out."""

from __future__ import annotations

import json

import numpy as np

from mvhand.post.report import CandidateScores, table1, table1_rows, write_report

HEAD = [
    "method",
    "umetrack MPJPE (mm) ↓",
    "umetrack PCK-AUC ↑",
    "umetrack tip AUC ↑",
    "hot3d MPJPE (mm) ↓",
    "hot3d PCK-AUC ↑",
    "hot3d tip AUC ↑",
    "report MPJPE (real data)",
]


def _scores() -> list[CandidateScores]:
    """Three candidates: both datasets; one dataset plus a NaN; an unknown id without a paper row."""
    full = CandidateScores(
        "full-neural",
        {
            "umetrack_test": {"MPJPE": 12.3456, "PCK_AUC": 80.0, "FINGERTIP_PCK_AUC": 70.125},
            "hot3d_test": {"MPJPE": 20.0, "PCK_AUC": 60.5, "FINGERTIP_PCK_AUC": 50.0},
        },
        {"umetrack_test": {"seq_a": {"MPJPE": 12.0}, "seq_b": {"MPJPE": 13.0}}},
        {"umetrack": np.array([[5.0, 15.0], [25.0, 60.0]])},
    )
    base = CandidateScores(
        "baseline-raw",
        {"umetrack_test": {"MPJPE": 30.0, "PCK_AUC": float("nan"), "FINGERTIP_PCK_AUC": 40.0}},
        {},
    )
    other = CandidateScores("mine-savgol", {}, {})
    return [full, base, other]


EXPECTED_ROWS = [
    ["+ Neural Smooth (offline)", "12.35", "80.00", "70.12", "20.00", "60.50", "50.00", "13.92 / 21.66"],
    ["baseline (no extrinsic perturbation)", "30.00", "–", "40.00", "–", "–", "–", "23.82 / 184.27"],
    ["mine-savgol", "–", "–", "–", "–", "–", "–", "–"],
]


def test_table1_rows_known_answer():
    head, rows = table1_rows(_scores())
    assert head == HEAD
    assert rows == EXPECTED_ROWS


def test_table1_markdown_known_answer():
    md = table1(_scores()[:1])
    assert md.splitlines() == [
        "| " + " | ".join(HEAD) + " |",
        "|---|---|---|---|---|---|---|---|",
        "| + Neural Smooth (offline) | 12.35 | 80.00 | 70.12 | 20.00 | 60.50 | 50.00 | 13.92 / 21.66 |",
    ]


def test_write_report_files(tmp_path):
    scores = _scores()
    shape = {"result": [{"umetrack_test": {"MPVPE": 7.5}}, {"hot3d_test": {"MPVPE": float("inf")}}]}
    online = {"umetrack": {"online": {"window": 8, "free": 2, "iterations": 5, "parallel_streams": 3,
                                      "step_latency_ms_median": 12.34, "step_latency_ms_p95": 20.0}}}  # fmt: skip
    path = write_report(tmp_path / "rep", scores, shape_result=shape, online_stats=online, notes="NOTE")
    assert path == tmp_path / "rep" / "report.md"
    text = path.read_text()
    assert table1(scores) in text  # the markdown table is the one table1 renders
    assert "| umetrack_test | 7.50 |" in text and "| hot3d_test | – |" in text
    assert "| umetrack | 8 | 2 | 5 | 3 | 12.3 | 20.0 |" in text
    assert text.rstrip().endswith("NOTE")
    tsv = (tmp_path / "rep" / "table1.tsv").read_text().splitlines()
    assert [line.split("\t") for line in tsv] == [HEAD, *EXPECTED_ROWS]
    saved = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert list(saved) == ["full-neural", "baseline-raw", "mine-savgol"]
    assert saved["full-neural"]["result"]["umetrack_test"]["MPJPE"] == 12.3456
    assert saved["full-neural"]["per_sequence"]["umetrack_test"]["seq_b"] == {"MPJPE": 13.0}
    for png in ("pck_curves.png", "per_sequence_mpjpe.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temporary left
