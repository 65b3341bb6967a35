"""Packaging predictions into submissions, GT merging, candidate scoring and the report."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import prediction_table

from mvhand.formats.submission import (
    expected_pose_instances,
    read_submission_archive,
    read_tar_root_files,
)
from mvhand.io_utils import InputError
from mvhand.post import packaging, report
from mvhand.post.metrics import evaluate_archives

ROOT = Path(__file__).resolve().parents[1]


def test_pose_entries_fill_gaps_and_follow_evaluator_order(toy):
    rng = np.random.default_rng(0)
    expected = expected_pose_instances(toy["pose_tars"], "umetrack")
    missing, broken = expected[3], expected[5]
    df = prediction_table(toy["pose_tars"], rng, drop=[missing], nan=[broken]).sample(frac=1, random_state=0)
    with pytest.raises(InputError, match=rf"2 of {len(expected)} expected instances .* --max-filled"):
        packaging.pose_entries_from_predictions(df, expected, "t.parquet", max_filled=1.9 / len(expected))
    entries = packaging.pose_entries_from_predictions(df, expected, max_filled=2 / len(expected))
    assert [e.instance for e in entries] == expected
    # filled from the nearest frame of the same hand (which has a finite prediction)
    for inst in (missing, broken):
        e = entries[expected.index(inst)]
        assert np.all(np.isfinite(e.mano_theta))
        g = df[(df.sequence_name == inst[0]) & (df.hand_side == inst[2]) & (df.frame_id != inst[1])]
        assert any(np.allclose(e.mano_theta, t) for t in g.mano_theta)
    with pytest.raises(InputError, match="no finite prediction"):
        packaging.pose_entries_from_predictions(df[df.hand_side == 0], expected, max_filled=1.0)


def test_shape_entries_are_medians(toy):
    df = pd.DataFrame(
        dict(
            sequence_name=["a", "a", "a", "b"],
            mano_beta_pred=[np.full(10, 1.0), np.full(10, 5.0), np.full(10, 2.0), np.arange(10.0)],
        )
    )
    e = packaging.shape_entries_from_predictions(df, ["a", "b"])
    np.testing.assert_allclose(e[0].mano_beta, 2.0)
    np.testing.assert_allclose(e[1].mano_beta, np.arange(10.0))
    with pytest.raises(InputError, match="'c'"):
        packaging.shape_entries_from_predictions(df, ["c"])


def test_package_score_and_report_agree_with_the_evaluator(toy, mano_model, tmp_path):
    rng = np.random.default_rng(1)
    pose_pred = tmp_path / "pose.parquet"
    prediction_table(toy["pose_tars"], rng).to_parquet(pose_pred)
    shape_pred = tmp_path / "shape.parquet"
    prediction_table(toy["shape_tars"], rng).to_parquet(shape_pred)
    written = packaging.package_submissions(
        {"umetrack": pose_pred}, {"umetrack": toy["pose_tars"]}, tmp_path / "pose_submission.tar.gz",
        {"umetrack": [shape_pred, pose_pred]}, {"umetrack": toy["shape_tars"] + toy["pose_tars"]},
        tmp_path / "shape_submission.tar.gz",
    )  # fmt: skip
    sub = read_submission_archive(written["pose"])
    assert list(sub) == ["result_pose_umetrack.json"]
    assert len(read_submission_archive(written["shape"])["result_shape_umetrack.json"]) == 3
    official = evaluate_archives(toy["gt"], written["pose"], "pose_estimation")["result"][0]["umetrack_test"]
    scores = report.score_candidate("full-neural", toy["gt"], written["pose"], mano_model)
    errors = scores.errors["umetrack"]
    assert errors.shape == (len(expected_pose_instances(toy["pose_tars"], "umetrack")), 19)
    assert errors.mean() == pytest.approx(official["MPJPE"], rel=1e-4)
    assert scores.result["umetrack_test"]["MPJPE"] == pytest.approx(official["MPJPE"])
    shape = evaluate_archives(toy["gt"], written["shape"], "shape_estimation")
    assert np.isfinite(shape["result"][0]["umetrack_test"]["MPVPE"])
    md = report.table1([scores])
    assert f"{official['MPJPE']:.2f}" in md and "13.92 / 21.66" in md
    out = report.write_report(tmp_path / "report", [scores], shape_result=shape)
    assert (tmp_path / "report" / "pck_curves.png").stat().st_size > 1000
    assert "Table 1" in out.read_text()
    tsv = [line.split("\t") for line in (tmp_path / "report" / "table1.tsv").read_text().splitlines()]
    assert tsv[0][:2] == ["method", "umetrack MPJPE (mm) ↓"] and len(tsv) == 2
    assert tsv[1][0] == "+ Neural Smooth (offline)" and tsv[1][1] == f"{official['MPJPE']:.2f}"


def test_merge_gt_archives(toy, tmp_path):
    files = read_tar_root_files(toy["gt"])
    other = tmp_path / "hot3d_gt.tar.gz"
    with tarfile.open(other, "w:gz") as tf:
        for name, data in [("gt_landmarks_hot3d.json", b"[]"), ("gt_shape_hot3d.json", b"[]")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    merged = report.merge_gt_archives([toy["gt"], other], tmp_path / "gt.tar.gz")
    mfiles = read_tar_root_files(merged)
    assert set(mfiles) == set(files) | {"gt_landmarks_hot3d.json", "gt_shape_hot3d.json"}
    with tarfile.open(merged) as tf:
        assert sorted(n for n in tf.getnames() if n.startswith("mano/")) == [
            "mano/MANO_LEFT.pkl",
            "mano/MANO_RIGHT.pkl",
        ]
    clash = tmp_path / "clash.tar.gz"
    with tarfile.open(clash, "w:gz") as tf:
        info = tarfile.TarInfo("gt_shape_umetrack.json")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"[]"))
    with pytest.raises(ValueError, match="differs"):
        report.merge_gt_archives([toy["gt"], clash], tmp_path / "bad.tar.gz")
    assert not (tmp_path / "bad.tar.gz").exists()


def test_package_and_report_clis(toy, tmp_path, mano_dir):
    rng = np.random.default_rng(2)
    pose_pred, shape_pred = tmp_path / "pose.parquet", tmp_path / "shape.parquet"
    df = prediction_table(toy["pose_tars"], rng)
    df["landmarks"] = [np.zeros(60) for _ in range(len(df))]
    df.to_parquet(pose_pred)
    prediction_table(toy["shape_tars"], rng).to_parquet(shape_pred)
    run = [sys.executable, str(ROOT / "workflow/scripts/package_submission.py")]
    args = [
        "--pose-predictions", f"umetrack={pose_pred}", "--pose-tars", f"umetrack={toy['root'] / 'pose_test'}",
        "--shape-predictions", f"umetrack={shape_pred}", "--shape-tars", f"umetrack={toy['root'] / 'shape_test'}",
        "--shape-predictions", f"umetrack={pose_pred}", "--shape-tars", f"umetrack={toy['root'] / 'pose_test'}",
        "--out-pose", str(tmp_path / "p.tar.gz"), "--out-shape", str(tmp_path / "s.tar.gz"),
    ]  # fmt: skip
    subprocess.run(run + args, check=True, capture_output=True)  # bad inputs: test_bad_inputs.py
    rep = subprocess.run(
        [sys.executable, str(ROOT / "workflow/scripts/report.py"), "--gt", str(toy["gt"]), "--mano-dir", str(mano_dir),
         "--candidate", f"full-raw={tmp_path / 'p.tar.gz'}", "--raw", str(pose_pred), "--smoothed", str(pose_pred),
         "--out-dir", str(tmp_path / "rep")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    official = evaluate_archives(toy["gt"], tmp_path / "p.tar.gz", "pose_estimation")["result"][0][
        "umetrack_test"
    ]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert f"{official['MPJPE']:.2f}" in text and "+ extrinsic perturbation" in rep.stdout
    assert (tmp_path / "rep" / "trajectory.png").is_file()
