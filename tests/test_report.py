"""Unit tests of mvhand.post.report: known scores in, known Table 1 (markdown, TSV, JSON) out; the README's
results block rendered from known report tables, spliced into a README, and tools/readme_results.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvhand.io_utils import InputError
from mvhand.post.report import (
    README_BEGIN,
    README_END,
    SHAPE_HEAD,
    TABLE1_HEAD,
    CandidateScores,
    read_tsv,
    readme_results,
    readme_results_from,
    splice_block,
    table1,
    table1_rows,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
REPORT_DATA = ROOT / "tests" / "data" / "report"  # a table1.tsv and shape.tsv as the report writes them

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
    shape_tsv = (tmp_path / "rep" / "shape.tsv").read_text().splitlines()
    assert [line.split("\t") for line in shape_tsv] == [
        SHAPE_HEAD,
        ["umetrack_test", "7.50"],
        ["hot3d_test", "–"],
    ]
    saved = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert list(saved) == ["full-neural", "baseline-raw", "mine-savgol"]
    assert saved["full-neural"]["result"]["umetrack_test"]["MPJPE"] == 12.3456
    assert saved["full-neural"]["per_sequence"]["umetrack_test"]["seq_b"] == {"MPJPE": 13.0}
    for png in ("pck_curves.png", "per_sequence_mpjpe.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temporary left


def test_write_report_without_shape_metrics_writes_the_shape_header_only(tmp_path):
    write_report(tmp_path, _scores()[:1])
    assert (tmp_path / "shape.tsv").read_text() == "\t".join(SHAPE_HEAD) + "\n"
    assert read_tsv(tmp_path / "shape.tsv", SHAPE_HEAD) == []
    assert "## Shape track" not in (tmp_path / "report.md").read_text()


# --------------------------------------------------------------------------------------------------
# README results block
# --------------------------------------------------------------------------------------------------

#: what readme_results renders from tests/data/report: columns picked from table1.tsv, each column's best
#: MPJPE (lowest, ties both) / PCK-AUC (highest) in bold, "–" never bold, the shape line below.
EXPECTED_BLOCK = """\
<!-- generated from results/report/ by `python tools/readme_results.py --write`; do not edit -->
| method | UmeTrack MPJPE (mm) ↓ | PCK-AUC ↑ | HOT3D MPJPE (mm) ↓ | PCK-AUC ↑ | report MPJPE (real data) |
|---|---|---|---|---|---|
| baseline (no extrinsic perturbation) | 30.00 | 40.00 | 60.00 | 15.00 | 23.82 / 184.27 |
| + Neural Smooth (offline) | **20.50** | **55.25** | **40.00** | **30.00** | 13.92 / 21.66 |
| + One Euro filter (instead of Neural Smooth) | **20.50** | – | 45.10 | **30.00** | – |

Shape track, MPVPE ↓: 3.51 mm (UmeTrack), – (HOT3D)."""


def test_readme_results_known_answer():
    assert readme_results_from(REPORT_DATA) == EXPECTED_BLOCK


def test_readme_results_without_shape_rows_has_no_shape_line():
    block = readme_results(read_tsv(REPORT_DATA / "table1.tsv", TABLE1_HEAD), [])
    assert block == EXPECTED_BLOCK.split("\n\nShape track")[0]


def test_readme_results_round_trip_through_write_report(tmp_path):
    """The tables write_report writes are the ones the README renders: same cells, same order."""
    shape = {"result": [{"umetrack_test": {"MPVPE": 7.5}}, {"hot3d_test": {"MPVPE": 9.25}}]}
    write_report(tmp_path, _scores(), shape_result=shape)
    lines = readme_results_from(tmp_path).splitlines()
    assert (
        lines[3]
        == "| + Neural Smooth (offline) | **12.35** | **80.00** | **20.00** | **60.50** | 13.92 / 21.66 |"
    )
    assert lines[4] == "| baseline (no extrinsic perturbation) | 30.00 | – | – | – | 23.82 / 184.27 |"
    assert lines[5] == "| mine-savgol | – | – | – | – | – |"
    assert lines[-1] == "Shape track, MPVPE ↓: 7.50 mm (UmeTrack), 9.25 mm (HOT3D)."


def test_read_tsv_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "table1.tsv"
    bad.write_text("method\tMPJPE\nx\t1\n")
    with pytest.raises(InputError, match=r"table1.tsv: header is not .*re-run the report stage"):
        read_tsv(bad, TABLE1_HEAD)
    bad.write_text("\t".join(SHAPE_HEAD) + "\numetrack_test\n")
    with pytest.raises(InputError, match="line 2 has 1 cells, the header 2"):
        read_tsv(bad, SHAPE_HEAD)
    with pytest.raises(InputError, match="nowhere.tsv: not found"):
        read_tsv(tmp_path / "nowhere.tsv", SHAPE_HEAD)


README = f"""# title

intro text
{README_BEGIN}
| old | table |
old shape line
{README_END}

## next section
trailing text without a newline"""


def test_splice_replaces_exactly_the_block():
    out = splice_block(README, "NEW 1\nNEW 2\n")
    before, after = README.split(README_BEGIN)[0], README.split(README_END)[1]
    assert out == f"{before}{README_BEGIN}\nNEW 1\nNEW 2\n{README_END}{after}"
    assert splice_block(out, "NEW 1\nNEW 2") == out  # idempotent, trailing newline or not
    assert splice_block(README, "") == f"{before}{README_BEGIN}\n\n{README_END}{after}"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("no markers\n", "has 0 lines '<!-- results:begin -->'"),
        (f"{README_BEGIN}\n{README_BEGIN}\n{README_END}\n", "has 2 lines '<!-- results:begin -->'"),
        (f"{README_END}\nx\n{README_BEGIN}\n", "comes before"),
    ],
)
def test_splice_refuses_missing_repeated_or_swapped_markers(text, problem):
    with pytest.raises(InputError, match=problem) as exc:
        splice_block(text, "x", "docs/README.md")
    assert str(exc.value).startswith("docs/README.md: ")


def test_the_readme_has_one_results_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(README_BEGIN + "\n")[1].split(README_END)[0]
    assert splice_block(text, block) == text  # exactly one well-ordered pair of markers
    assert block.startswith("<!-- generated from results/report/ by `python tools/readme_results.py --write`")


def _tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "readme_results.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_results_tool_write_then_check(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    flags = ["--report-dir", REPORT_DATA, "--readme", readme]
    r = _tool("--check", *flags)
    assert (
        r.returncode == 1 and "-| old | table |" in r.stdout and "+| + Neural Smooth (offline) |" in r.stdout
    )
    assert readme.read_text() == README  # --check never writes
    assert _tool("--write", *flags).returncode == 0
    assert readme.read_text() == splice_block(README, EXPECTED_BLOCK)
    r = _tool("--check", *flags)
    assert r.returncode == 0, r.stdout + r.stderr
    # a hand-edited number is caught, with the line in the diff
    readme.write_text(readme.read_text().replace("| 60.00 |", "| 59.00 |"))
    r = _tool("--check", *flags)
    assert r.returncode == 1
    assert "-| baseline (no extrinsic perturbation) | 30.00 | 40.00 | 59.00 |" in r.stdout
    assert "+| baseline (no extrinsic perturbation) | 30.00 | 40.00 | 60.00 |" in r.stdout
    assert "run tools/readme_results.py --write" in r.stderr


def test_readme_results_tool_names_a_missing_report(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    shutil.copy(REPORT_DATA / "table1.tsv", tmp_path / "table1.tsv")  # no shape.tsv
    r = _tool("--write", "--report-dir", tmp_path, "--readme", readme)
    assert r.returncode == 1 and "shape.tsv: not found (re-run the report stage" in r.stderr
    assert readme.read_text() == README
