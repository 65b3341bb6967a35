"""The whole workflow on the tiny configuration: training → prediction → smoothing → submissions → report.

The session fixture `pipeline` (conftest.py) runs the default target on a copy of the tiny data/crop run.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from _wf import TINY_CONFIG, TINY_PIPELINE, copy_workdir, job_counts, run_snakemake, write_config

from mvhand.formats.submission import read_submission_archive
from mvhand.post.metrics import evaluate_archives
from mvhand.post.report import readme_results_from

pytestmark = pytest.mark.slow

POST_RULES = {"neural_smooth", "package_submission", "evaluate", "submission", "report"}


def test_default_target_writes_validated_submissions_and_report(pipeline):
    workdir, _ = pipeline
    pose = workdir / "results/submission/pose_submission.tar.gz"
    shape = workdir / "results/submission/shape_submission.tar.gz"
    assert set(read_submission_archive(pose)) == {"result_pose_umetrack.json", "result_pose_hot3d.json"}
    assert set(read_submission_archive(shape)) == {"result_shape_umetrack.json", "result_shape_hot3d.json"}
    gt = workdir / "results/evaluate/pose_test/gt.tar.gz"
    official = evaluate_archives(gt, pose, "pose_estimation")
    # the final submission is the configured candidate, and the report's Table 1 shows the evaluator's numbers
    scores = json.loads((workdir / "results/report/scores.json").read_text())
    assert set(scores) == set(TINY_CONFIG.get("evaluate", {}).get("candidates", [])) or len(scores) == 6
    final = scores["full-neural"]["result"]
    for item in official["result"]:
        for ds, metrics in item.items():
            assert final[ds]["MPJPE"] == pytest.approx(metrics["MPJPE"], rel=1e-6)
    report = (workdir / "results/report/report.md").read_text()
    assert "Table 1" in report and "+ Neural Smooth" in report and "Shape track" in report
    for png in ("pck_curves.png", "per_sequence_mpjpe.png", "trajectory.png"):
        assert (workdir / "results/report" / png).stat().st_size > 1000
    shape_metrics = json.loads((workdir / "results/evaluate/pose_test/full-neural/shape.json").read_text())
    assert {next(iter(d)) for d in shape_metrics["result"]} == {"umetrack_test", "hot3d_test"}


def test_second_run_is_a_no_op_and_smoothing_change_reruns_only_post_processing(pipeline, tmp_path):
    workdir, _ = pipeline
    dry = run_snakemake(workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    changed = copy_workdir(workdir, tmp_path / "wf")
    write_config(changed, {**TINY_PIPELINE, "smooth": {**TINY_PIPELINE["smooth"], "iterations": 30}})
    counts = job_counts(run_snakemake(changed, "-n").stdout)
    assert counts.get("neural_smooth", 0) >= 1
    assert set(counts) - {"all"} <= POST_RULES, counts  # no download, crops, train or predict


def test_jobs_run_without_an_activated_environment(tmp_path):
    """README: `.venv/bin/snakemake --cores all` without activating .venv: jobs must use its interpreter."""
    import os
    import subprocess

    from _wf import BIN, SNAKEFILE

    write_config(tmp_path, {**TINY_CONFIG, "datasets": ["hot3d"]})
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(p))
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(tmp_path), "--configfile",
         str(tmp_path / "tiny.yaml"), "--cores", "1", "downloads"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "resources/data/hot3d/manifest.json").is_file()


def test_snakemake_html_report(pipeline, tmp_path):
    """`snakemake --report report.html`: one self-contained file with the report() outputs and captions."""
    workdir, _ = pipeline
    out = tmp_path / "report.html"
    run_snakemake(workdir, "--report", str(out))
    html = out.read_text()
    # self-contained: nothing is fetched when it is opened
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", html)
    for caption in ("Table 1: each row adds one ingredient", "PCK curves: share of the evaluated landmarks",
                    "MPJPE of every test sequence", "before and after Neural Smooth", "Training curves of one variant"):  # fmt: skip
        assert caption in html, caption
    # every report() file is embedded: Table 1 (TSV) and the plots, byte for byte
    report_dir = workdir / "results" / "report"
    files = ["table1.tsv", "pck_curves.png", "per_sequence_mpjpe.png", "trajectory.png", "loss_baseline.png", "loss_full.png"]  # fmt: skip
    for name in files:
        assert base64.b64encode((report_dir / name).read_bytes()).decode() in html, name
    # Table 1's numbers are the evaluator's
    scores = json.loads((report_dir / "scores.json").read_text())
    mpjpe = scores["full-neural"]["result"]["umetrack_test"]["MPJPE"]
    assert f"\t{mpjpe:.2f}\t" in (report_dir / "table1.tsv").read_text()
    # ... and so are those of the README's results block rendered from this report (tools/readme_results.py)
    block = readme_results_from(report_dir)
    assert f" {mpjpe:.2f} |" in block or f" **{mpjpe:.2f}** |" in block
    assert "Shape track, MPVPE ↓: " in block
    # Snakemake's per-rule runtime statistics (its "Statistics" page)
    for rule in ("cache_crops", "train", "predict", "neural_smooth", "evaluate", "report"):
        assert f'{{"rule": "{rule}", "runtime": ' in html, rule
