"""End-to-end tests of the Snakemake workflow (download + cache_crops) on a tiny synthetic config.

snakemake runs as a subprocess with the venv on PATH, exactly as a user would run it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _wf import REPO, TINY_CONFIG, copy_workdir, job_counts, run_snakemake, write_config

from mvhand.formats.crop_cache import CROP_SCHEMA, decode_crop_jpeg
from mvhand.formats.sequence import iter_frames
from mvhand.geometry.cameras import crop_camera, warp_image_reference
from mvhand.geometry.umetrack import canonical_landmarks, forward_kinematics

pytestmark = pytest.mark.slow

SPLITS = ("train", "pose_test", "shape_test")


def _manifest(workdir: Path, dataset: str) -> dict:
    return json.loads((workdir / "resources" / "data" / dataset / "manifest.json").read_text())


def _check_sequence_against_independent_crops(tar: Path, parquet: Path, crop_size: int, margin: float) -> int:
    """Re-render every crop of a sequence independently (Pillow decode + reference warp) and compare."""
    from mvhand.formats.sequence import read_hand_shapes

    table = pq.read_table(parquet)
    assert table.schema.equals(CROP_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    shapes = read_hand_shapes(tar)
    expected_keys = []
    i = 0
    for frame in iter_frames(tar):
        for side_index, side in enumerate(("left", "right")):
            views = frame.hand_crops.get(side) or {}
            for view_index, (stream_id, params) in enumerate(views.items()):
                expected_keys.append((frame.frame_id, side_index, view_index, stream_id))
                row = rows[i]
                i += 1
                assert (
                    row["frame_id"],
                    row["hand_side"],
                    row["view_index"],
                    row["stream_id"],
                ) == expected_keys[-1]
                size = round(margin * crop_size)
                fov_r = 2 * math.atan(margin * math.tan(params.fov / 2))
                cam = crop_camera(params.T_world_from_crop_camera, fov_r, size)
                ref = warp_image_reference(frame.image(stream_id), frame.cameras[stream_id], cam)
                got = decode_crop_jpeg(row["image_jpeg"])
                assert got.shape == ref.shape
                diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
                assert diff.mean() < (3.0 if got.ndim == 2 else 3.5), (
                    tar.name,
                    row["frame_id"],
                    stream_id,
                    diff.mean(),
                )
                np.testing.assert_allclose(row["intrinsics"], [cam.fx, cam.fy, cam.cx, cam.cy], rtol=1e-6)
                np.testing.assert_allclose(
                    np.reshape(row["T_world_from_crop"], (4, 4)), cam.T_world_from_eye, atol=1e-7
                )
                hand = frame.hands.get(side)
                if hand is not None and shapes is not None:
                    lm = canonical_landmarks(
                        forward_kinematics(
                            shapes.umetrack, hand.joint_angles, hand.T_world_from_wrist, side == "right"
                        )
                    )
                    np.testing.assert_allclose(np.reshape(row["landmarks_world"], (20, 3)), lm, atol=1e-5)
                    uv = cam.world_to_window(lm.astype(np.float64))
                    np.testing.assert_allclose(np.reshape(row["landmarks_crop"], (20, 2)), uv, atol=2e-3)
                else:
                    assert row["landmarks_world"] is None and row["n_visible"] == -1
    assert i == len(rows), "more rows than crops in hand_crops.json"
    return len(rows)


def test_crops_end_to_end(tiny_run):
    wd = tiny_run.workdir
    n_checked = 0
    for dataset in TINY_CONFIG["datasets"]:
        manifest = _manifest(wd, dataset)
        assert manifest["source"] == "synthetic" and manifest["dataset"] == dataset
        for split in SPLITS:
            names = manifest["splits"][split]
            assert names, (dataset, split)
            for name in names:
                parquet = wd / "results" / "crops" / dataset / split / f"{name}.parquet"
                assert parquet.is_file()
                assert (wd / "logs" / "cache_crops" / dataset / split / f"{name}.log").is_file()
        # one sequence per split is re-computed independently (train: with targets)
        for split in SPLITS:
            name = manifest["splits"][split][0]
            tar = wd / "resources" / "data" / dataset / split / f"{name}.tar"
            parquet = wd / "results" / "crops" / dataset / split / f"{name}.parquet"
            n_checked += _check_sequence_against_independent_crops(tar, parquet, 32, 1.25)
    assert n_checked > 0
    assert (wd / "resources" / "mano" / "MANO_LEFT.pkl").is_file()
    assert list(wd.glob("benchmarks/cache_crops.*.tsv"))


def test_second_run_is_a_no_op(tiny_run):
    proc = run_snakemake(tiny_run.workdir, "-n", "crops")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_changed_crop_setting_reruns_only_cache_crops(tiny_run):
    wd = tiny_run.workdir
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["crops"]["jpeg_quality"] = 80
    write_config(wd, cfg, "changed.yaml")
    proc = run_snakemake(wd, "-n", "-p", "crops", configfile="changed.yaml")
    counts = job_counts(proc.stdout + proc.stderr)
    assert "--jpeg-quality 80" in proc.stdout + proc.stderr
    n_sequences = sum(len(_manifest(wd, d)["splits"][s]) for d in TINY_CONFIG["datasets"] for s in SPLITS)
    assert counts == {"cache_crops": n_sequences, "crops": 1}, proc.stdout[-3000:]
    # changing the number of threads (scheduling only) re-runs nothing
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["crops"]["threads"] = 1
    write_config(wd, cfg, "threads.yaml")
    proc = run_snakemake(wd, "-n", "crops", configfile="threads.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_run_prints_standalone_commands(tiny_run):
    proc = run_snakemake(tiny_run.workdir, "-n", "-p", "--forcerun", "cache_crops", "--", "crops")
    out = proc.stdout + proc.stderr
    assert "workflow/scripts/cache_crops.py --input resources/data/" in out
    assert "--crop-size 32 --fov-margin 1.25 --jpeg-quality 90" in out


def test_train_command_carries_model_and_loss_settings(tiny_run):
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["train"] = {"uv_head": "regress", "loss_weights": {"uv": 2.5, "heatmap": 0.25}}
    write_config(tiny_run.workdir, cfg, "loss.yaml")
    proc = run_snakemake(tiny_run.workdir, "-n", "-p", "results/train/full/model.pt", configfile="loss.yaml")
    out = proc.stdout + proc.stderr
    assert "--uv-head regress" in out
    assert "--loss-weights heatmap=0.25 uv=2.5" in out


def test_lint_is_clean(tiny_run):
    proc = run_snakemake(tiny_run.workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_slurm_profile_dry_run(tiny_run):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = run_snakemake(
        tiny_run.workdir,
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "-n",
        "--forcerun",
        "cache_crops",
        "--",
        "crops",
    )
    assert job_counts(proc.stdout + proc.stderr).get("cache_crops", 0) > 0


def test_local_profile_dry_run(tiny_run):
    proc = run_snakemake(
        tiny_run.workdir, "--workflow-profile", str(REPO / "workflow" / "profiles" / "local"), "-n", "crops"
    )
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_cluster_generic_execution(tiny_run, tmp_path):
    pytest.importorskip("snakemake_executor_plugin_cluster_generic")
    wd = copy_workdir(tiny_run.workdir, tmp_path / "wf")
    name = _manifest(wd, "umetrack")["splits"]["pose_test"][0]
    target = wd / "results" / "crops" / "umetrack" / "pose_test" / f"{name}.parquet"
    before = pq.read_table(target)
    target.unlink()
    run_snakemake(
        wd,
        "--executor",
        "cluster-generic",
        "--cluster-generic-submit-cmd",
        "bash",
        "--jobs",
        "2",
        "--seconds-between-status-checks",
        "1",
        "crops",
    )
    assert pq.read_table(target).equals(before)


# Configuration errors (schema and planning-time checks): tests/test_bad_inputs.py


def test_corrupt_tar_fails_only_its_job(tiny_run, tmp_path):
    wd = copy_workdir(tiny_run.workdir, tmp_path / "wf")
    names = _manifest(wd, "hot3d")["splits"]["train"]
    bad = names[len(names) // 2]
    tar = wd / "resources" / "data" / "hot3d" / "train" / f"{bad}.tar"
    data = tar.read_bytes()
    tar.unlink()  # the data may be hard-linked: write a new file rather than modifying shared bytes
    tar.write_bytes(data[: len(data) // 2])
    crops_dir = wd / "results" / "crops"
    for p in crops_dir.rglob("*.parquet"):
        p.unlink()
    proc = run_snakemake(wd, "--cores", "2", "--keep-going", "crops", check=False)
    assert proc.returncode != 0
    assert not (crops_dir / "hot3d" / "train" / f"{bad}.parquet").exists()
    leftovers = [p.name for p in crops_dir.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []  # no partial/temporary files
    for dataset in TINY_CONFIG["datasets"]:
        for split in SPLITS:
            for name in _manifest(wd, dataset)["splits"][split]:
                if (dataset, split, name) != ("hot3d", "train", bad):
                    assert (crops_dir / dataset / split / f"{name}.parquet").is_file(), (dataset, split, name)
    log = (wd / "logs" / "cache_crops" / "hot3d" / "train" / f"{bad}.log").read_text()
    assert f"{bad}.tar" in log and ("corrupt" in log or "truncated" in log)


def test_dag_of_thousands_of_sequences_is_fast(tmp_path):
    """Dry-run the DAG of 3000 sequences from a fake manifest (tars are empty placeholders)."""
    root = tmp_path / "resources" / "data" / "umetrack"
    splits = {
        "train": [f"subject_{i:04d}_seq" for i in range(2400)],
        "pose_test": [f"pose_{i:04d}" for i in range(400)],
        "shape_test": [f"shape_{i:04d}" for i in range(200)],
    }
    for split, names in splits.items():
        (root / split).mkdir(parents=True)
        for name in names:
            (root / split / f"{name}.tar").touch()
    cfg = dict(TINY_CONFIG, datasets=["umetrack"])
    write_config(tmp_path, cfg)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "umetrack", "source": "synthetic", "splits": splits}))
    later = time.time() + 5  # newer than the repository's scripts: the download is up to date
    os.utime(manifest, (later, later))
    t0 = time.perf_counter()
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules", "--", "crops")
    dt = time.perf_counter() - t0
    counts = job_counts(proc.stdout + proc.stderr)
    print(f"\ndry run of {counts.get('cache_crops')} cache_crops jobs: {dt:.1f} s")
    assert counts == {"cache_crops": 3000, "crops": 1}
    assert dt < 120  # seconds (about 10 s on an idle 2-core machine, most of it printing the jobs)


def _fake_dataset(workdir: Path, names: dict[str, list[str]]) -> None:
    """Placeholder tars, GT archive and MANO files and a manifest newer than the scripts: the download counts
    as done (dry runs only)."""
    root = workdir / "resources" / "data" / "umetrack"
    for split, seqs in names.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in seqs:
            (root / split / f"{name}.tar").touch()
    (root / "gt.tar.gz").touch()  # the synthetic world's test ground truth (read by eval_gt)
    mano = workdir / "resources" / "mano"  # written (synthetic source) or checked by the download
    mano.mkdir(parents=True, exist_ok=True)
    for name in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl"):
        (mano / name).touch()
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "umetrack", "source": "synthetic", "splits": names}))
    later = time.time() + 5
    os.utime(manifest, (later, later))


def _commands(output: str) -> dict[str, str]:
    """The shell command printed by `snakemake -n -p` for each job, keyed by the job's log file."""
    cmds = {}
    for line in output.splitlines():
        line = line.strip().removeprefix("Shell command: ")
        if line.startswith("python ") and "> logs/" in line:
            cmds[line.rsplit("> ", 1)[1]] = line
    return cmds


def test_key_order_and_explicit_defaults_do_not_change_commands(tmp_path):
    """Snakemake re-runs a job when its command changes: the command must depend on the values only."""
    names = {"train": ["s0", "s1"], "pose_test": ["p0"], "shape_test": ["q0"]}
    base = dict(TINY_CONFIG, datasets=["umetrack"])
    a = dict(base, train={"epochs": 2, "lr": 0.002, "loss_weights": {"uv": 3.0, "heatmap": 0.1}},
             smooth={"iterations": 10})  # fmt: skip
    # the same settings: sections and keys reordered, defaults written out, numbers in another notation
    b = {
        "smooth": {"lr": 0.01, "iterations": 10.0, "savgol_window": 9},
        "train": {"loss_weights": {"heatmap": 0.1, "uv": 3}, "weight_decay": 0.01, "lr": 2e-3, "epochs": 2.0},
        **{k: base[k] for k in reversed(list(base))},
    }
    outs = []
    for name, cfg in (("a", a), ("b", b)):
        wd = tmp_path / name
        _fake_dataset(wd, names)
        write_config(wd, cfg)
        proc = run_snakemake(wd, "-n", "-p", "all")
        outs.append(_commands(proc.stdout + proc.stderr))
    assert outs[0] and any("train.py" in c for c in outs[0].values())
    assert outs[0] == outs[1]
    train = outs[0]["logs/train/full.log 2>&1"]
    assert "--epochs 2 " in train and "--lr 0.002 " in train and "--loss-weights heatmap=0.1 uv=3.0" in train


def test_rerunning_download_with_unchanged_data_recrops_nothing(tmp_path):
    """cache_crops reads its own tar, not the manifest: a forced re-run of `download` (which rewrites the
    manifest), a dry run that forces it, or a trailing slash in download.local_dir re-crops nothing."""
    mine = tmp_path / "mine"
    names = {"train": ["subject_000_a", "subject_001_b"], "pose_test": ["subject_014_c"], "shape_test": ["subject_090_d"]}  # fmt: skip
    for split, seqs in names.items():
        (mine / split).mkdir(parents=True)
        for name in seqs:
            (mine / split / f"{name}.tar").write_bytes(name.encode())
    wd = tmp_path / "wf"
    cfg = dict(
        TINY_CONFIG,
        datasets=["umetrack"],
        source="local",
        download={"local_dir": {"umetrack": str(mine)}},
        evaluate={"split": "val"},  # real data has no test ground truth
    )
    write_config(wd, cfg)
    run_snakemake(
        wd, "--cores", "1", "downloads"
    )  # the real download stage: links the tars, writes the manifest
    manifest = wd / "resources" / "data" / "umetrack" / "manifest.json"
    assert _manifest(wd, "umetrack")["splits"] == names
    for split, seqs in names.items():  # crop caches as cache_crops leaves them: newer than their tars
        for name in seqs:
            out = wd / "results" / "crops" / "umetrack" / split / f"{name}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
    assert "Nothing to be done" in run_snakemake(wd, "-n", "crops").stdout
    before = manifest.stat().st_mtime_ns
    run_snakemake(wd, "--cores", "1", "--forcerun", "download", "--", "downloads")
    assert manifest.stat().st_mtime_ns > before  # the manifest was written again, with the same sequences
    assert _manifest(wd, "umetrack")["splits"] == names
    proc = run_snakemake(wd, "-n", "crops")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    proc = run_snakemake(wd, "-n", "--forcerun", "download", "--", "crops")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("download") == 1 and "cache_crops" not in counts, counts
    # the same folder written with a trailing slash: the download's command is unchanged
    write_config(wd, dict(cfg, download={"local_dir": {"umetrack": f"{mine}/"}}), "slash.yaml")
    proc = run_snakemake(wd, "-n", "crops", configfile="slash.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    # train and predict read the crop caches from list files (rule crop_list): short commands, same inputs
    run_snakemake(wd, "--cores", "1", "results/crops/umetrack/train.txt")
    (wd / "resources" / "mano").mkdir(parents=True)  # real data: the user copies the MANO model there
    for name in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl"):
        (wd / "resources" / "mano" / name).write_bytes(b"official MANO pickle")
    listed = (wd / "results" / "crops" / "umetrack" / "train.txt").read_text().splitlines()
    assert listed == [f"results/crops/umetrack/train/{name}.parquet" for name in names["train"]]
    out = run_snakemake(wd, "-n", "-p", "results/predict/full/umetrack/pose_test.parquet").stdout
    train_cmd = next(line for line in out.splitlines() if "scripts/train.py --" in line)
    assert (
        "--crops-list results/crops/umetrack/train.txt --mano-dir" in train_cmd
        and ".parquet" not in train_cmd
    )
    assert "--crops-list results/crops/umetrack/pose_test.txt" in out
    # a changed tar is re-cropped, and only that one
    tar = mine / "train" / "subject_001_b.tar"
    later = time.time() + 5
    os.utime(tar, (later, later))
    counts = job_counts(run_snakemake(wd, "-n", "crops").stdout)
    assert counts == {"cache_crops": 1, "crops": 1}, counts
