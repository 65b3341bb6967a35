"""Catalogue of bad inputs and faults, stage by stage (docs/reliability.md lists the same table).

Every case runs a stage script exactly as Snakemake does (``python workflow/scripts/<stage>.py ARGS``; the
non-stage tools as ``python tools/<tool>.py ARGS``), here in-process through :mod:`runpy` to save interpreter
start-ups, and asserts three things: the exit status, that the message names the culprit (file, member, key)
and the fix, and that no output — complete, partial or temporary — is left behind. Configuration faults are
checked at planning time (``snakemake -n``), hard kills with real signals on a real subprocess, and archive
memory with a real subprocess's peak RSS.

Library-level error tests stay beside the code they test (test_dataset, test_mano, test_mano_pickle, ...).
"""

from __future__ import annotations

import copy
import errno
import gzip
import io
import json
import os
import pickle
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import (
    CAMERAS_JSON,
    HAND_CROPS_JSON,
    HAND_SHAPES_JSON,
    HANDS_JSON,
    STREAMS,
    ShellPayload,
    jpeg_image,
    prediction_table,
    write_raw_tar,
    write_toy_tar,
)

from mvhand.formats.sequence import dumps_json
from mvhand.formats.submission import (
    build_ground_truth,
    expected_pose_instances,
    pack_submission,
    write_pose_results,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
sys.path.insert(0, str(Path(__file__).parent / "integration"))
from _wf import TINY_CONFIG, run_snakemake, snakemake_env, write_config  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One catalogue entry: a stage run on bad input and what must come of it."""

    stage: str  # workflow/scripts/<stage>.py, or "tools/<tool>" for tools/<tool>.py
    argv: list
    rc: int
    names: list  # substrings the message must contain: the culprit (file, member, key)
    fix: str  # substring of the fix the message gives
    outputs: list = field(default_factory=list)  # must not exist afterwards
    folders: list = field(default_factory=list)  # must hold no temporary file afterwards
    absent: list = field(default_factory=list)  # files a payload would have created


def run_stage(stage: str, argv: list, caplog, capsys) -> tuple[int, str]:
    """``python workflow/scripts/<stage>.py ARGV`` (``tools/<tool>.py`` for a stage ``"tools/<tool>"``)
    in-process: (exit status, everything it logged/printed)."""
    path = (ROOT if stage.startswith("tools/") else SCRIPTS) / f"{stage}.py"
    caplog.clear()
    old = sys.argv
    sys.argv = [str(path), *map(str, argv)]
    try:
        runpy.run_path(str(path), run_name="__main__")
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return rc, caplog.text + out.err + out.out


def temporaries(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in Path(folder).rglob("*") if ".tmp" in p.name) if Path(folder).exists() else []
    )


def check(fault: Fault, caplog, capsys) -> str:
    rc, text = run_stage(fault.stage, fault.argv, caplog, capsys)
    assert rc == fault.rc, (rc, text[-3000:])
    for name in fault.names:
        assert str(name) in text, (name, text[-3000:])
    assert fault.fix in text, (fault.fix, text[-3000:])
    for out in fault.outputs:
        assert not Path(out).exists(), out
    for folder in fault.folders:
        assert temporaries(folder) == [], folder
    for p in fault.absent:
        assert not Path(p).exists(), f"payload ran: {p}"
    return text


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def raw_sequence(
    path: Path,
    n_frames: int = 3,
    cameras: dict | None = None,
    image: Callable[[int, str], bytes] | None = None,
    extra: dict | None = None,
) -> Path:
    """A sequence tar written member by member (no validation on the way: it may be as broken as asked)."""
    cameras = cameras or CAMERAS_JSON
    image = image or (lambda k, sid: jpeg_image(480, 640, 10 * k + STREAMS.index(sid)))
    members = [("__hand_shapes.json__", dumps_json(HAND_SHAPES_JSON))]
    for k in range(n_frames):
        key = f"{k:06d}"
        members += [
            (f"{key}.cameras.json", dumps_json(cameras)),
            (f"{key}.hand_crops.json", dumps_json(HAND_CROPS_JSON)),
            (f"{key}.hands.json", dumps_json(HANDS_JSON)),
            *((f"{key}.image_{sid}.jpg", image(k, sid)) for sid in STREAMS),
            *((f"{key}.{name}", data) for name, data in (extra or {}).items()),
        ]
    write_raw_tar(path, members)
    return path


def with_calibration(**changes) -> dict:
    cams = copy.deepcopy(CAMERAS_JSON)
    calib = cams["1201-0"]["calibration"]
    for k, v in changes.items():
        if k == "focal":
            calib["projection_params"][0] = calib["projection_params"][1] = v
        else:
            calib[k] = v
    return cams


def garbled_jpeg_sequence(path: Path) -> Path:
    """Frame 1's image of stream 1201-0 has 300 bytes of its entropy-coded data garbled (same length: the tar
    stays valid). OpenCV decodes it to a flat grey image without an error."""
    tar = raw_sequence(path)
    data = bytearray(tar.read_bytes())
    start = data.index(b"\xff\xd8\xff", data.index(b"000001.image_1201-0.jpg"))
    end = data.index(b"\xff\xd9", start)
    mid = (start + end) // 2
    for i in range(mid, mid + 300):
        data[i] = (data[i] * 7 + 13) & 0xFF
    tar.write_bytes(bytes(data))
    return tar


def crop_args(tar: Path, out: Path, *more) -> list:
    return ["--input", tar, "--output", out, "--crop-size", 32, "--threads", 1, "--no-progress", *more]


# --------------------------------------------------------------------------------------------------
# cache_crops
# --------------------------------------------------------------------------------------------------

_FIX_DATA = "re-download or regenerate the tar"


def _cache_crops_faults(tmp: Path) -> dict[str, Fault]:
    out = tmp / "out"
    o = lambda name: out / f"{name}.parquet"  # noqa: E731
    good = raw_sequence(tmp / "good.tar")
    trunc = tmp / "trunc.tar"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    junk = tmp / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    small = raw_sequence(tmp / "small.tar", image=lambda k, sid: jpeg_image(240, 320, k) if k == 1 and sid == "1201-0"
                         else jpeg_image(480, 640, k))  # fmt: skip
    faults = {
        "missing tar": Fault("cache_crops", crop_args(tmp / "missing.tar", o("m")), 1, ["missing.tar"],
                             "run the download stage first", [o("m")], [out]),
        "not a tar": Fault("cache_crops", crop_args(junk, o("junk")), 1, ["junk.tar", "not a readable tar"],
                           "re-download", [o("junk")], [out]),
        "truncated tar (worker processes)": Fault(
            "cache_crops", [*crop_args(trunc, o("trunc")), "--threads", 2], 1, ["trunc.tar", "truncated"],
            "re-download", [o("trunc")], [out]),
        "JPEG corrupt mid-stream": Fault(
            "cache_crops", crop_args(garbled_jpeg_sequence(tmp / "garbled.tar"), o("g")), 1,
            ["garbled.tar", "frame 000001", "'1201-0'", "cannot decode JPEG"], _FIX_DATA, [o("g")], [out]),
        "JPEG size differs from the calibration": Fault(
            "cache_crops", crop_args(small, o("s")), 1,
            ["small.tar", "frame 000001", "'1201-0'", "320x240 but the calibration says 640x480"], _FIX_DATA,
            [o("s")], [out]),
        "focal length 0": Fault(
            "cache_crops", crop_args(raw_sequence(tmp / "f0.tar", cameras=with_calibration(focal=0.0)), o("f0")),
            1, ["f0.tar", "000000.cameras.json['1201-0']", "focal length fx = 0"], "fix the cameras.json entry",
            [o("f0")], [out]),
        "focal length 1e308": Fault(
            "cache_crops", crop_args(raw_sequence(tmp / "fbig.tar", cameras=with_calibration(focal=1e308)), o("fb")),
            1, ["fbig.tar", "cameras.json['1201-0']", "not plausible"], "fix the cameras.json entry", [o("fb")],
            [out]),
        "image width 10**400": Fault(
            "cache_crops",
            crop_args(raw_sequence(tmp / "w.tar", cameras=with_calibration(image_width=10**400)), o("w")),
            1, ["w.tar", "cameras.json['1201-0']", "image_width"], "fix the cameras.json entry", [o("w")], [out]),
        "bad setting (jpeg quality 0)": Fault(
            "cache_crops", crop_args(good, o("q"), "--jpeg-quality", 0), 2, ["jpeg_quality"], "[1, 100]",
            [o("q")], [out]),
    }  # fmt: skip
    return faults


_CROP_FAULTS = [
    "missing tar",
    "not a tar",
    "truncated tar (worker processes)",
    "JPEG corrupt mid-stream",
    "JPEG size differs from the calibration",
    "focal length 0",
    "focal length 1e308",
    "image width 10**400",
    "bad setting (jpeg quality 0)",
]


@pytest.mark.parametrize("name", _CROP_FAULTS)
def test_cache_crops(tmp_path, caplog, capsys, name):
    check(_cache_crops_faults(tmp_path)[name], caplog, capsys)


def test_cache_crops_oversize_member_is_refused_unread(tmp_path, caplog, capsys, monkeypatch):
    import mvhand.formats.sequence as ds

    monkeypatch.setattr(ds, "MAX_MEMBER_BYTES", 100_000)  # stands for 256 MiB: a real 640x480 JPEG is ~40 kB
    big = raw_sequence(tmp_path / "big.tar", image=lambda k, sid: jpeg_image(480, 640, k) + b"\0" * 200_000)
    out = tmp_path / "out" / "big.parquet"
    check(Fault("cache_crops", crop_args(big, out), 1, ["big.tar", "image_1201-0.jpg", "more than"], _FIX_DATA,
                [out], [out.parent]), caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# cache_crops under SIGTERM / SIGKILL: nothing keeps running, nothing half-written stays, a re-run is clean
# --------------------------------------------------------------------------------------------------


def _processes_with(token: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if f"MVHAND_TEST_TOKEN={token}".encode() in (p / "environ").read_bytes():
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_cache_crops_killed_leaves_no_process_and_reruns_cleanly(tmp_path, sig):
    tar = raw_sequence(tmp_path / "long.tar", n_frames=400)
    out = tmp_path / "out" / "long.parquet"
    token = f"{os.getpid()}-{sig}-{time.monotonic_ns()}"
    env = {**snakemake_env(), "MVHAND_TEST_TOKEN": token}
    cmd = [
        sys.executable,
        str(SCRIPTS / "cache_crops.py"),
        *map(str, crop_args(tar, out, "--crop-size", 192)),
    ]
    cmd[cmd.index("--threads") + 1] = "2"
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (temporaries(out.parent) and "rendering with 2 worker" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # the workers are busy
        assert len(_processes_with(token)) >= 3  # main, fork server, workers (and the resource tracker)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        deadline = time.monotonic() + 15
        while _processes_with(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(token) == [], "processes outlived the job"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not out.exists()
    if sig == signal.SIGTERM:  # unwound: the temporary is gone already
        assert temporaries(out.parent) == [] and "terminated (SIGTERM)" in log.read_text()
    else:  # no chance to clean up: the next run of the stage sweeps it
        assert len(temporaries(out.parent)) == 1
    short = raw_sequence(tmp_path / "long.tar", n_frames=2)  # the re-run (made quick)
    done = subprocess.run([sys.executable, str(SCRIPTS / "cache_crops.py"), *map(str, crop_args(short, out))],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.is_file() and temporaries(out.parent) == []


# --------------------------------------------------------------------------------------------------
# train (the loss-weight parser and fit themselves: test_training.py)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crop_cache(tmp_path_factory, mano_dir):
    from fixtures import make_crop_cache

    from mvhand.geometry.mano import ManoModel

    d = tmp_path_factory.mktemp("train_bad")
    mano = ManoModel.from_dir(mano_dir)
    return [make_crop_cache(d / f"s{i}.parquet", mano, sequence=f"seq_{i}", n_frames=2, seed=i, dot=False)
            for i in range(3)]  # fmt: skip


def _train_args(crops, mano_dir, out) -> list:
    return ["--crops", *crops, "--mano-dir", mano_dir, "--out-dir", out, "--backbone", "test_resnet",
            "--img-size", 32, "--n-points", 4, "--hidden", 16, "--batch-size", 2, "--epochs", 1,
            "--iters-per-epoch", 1, "--num-workers", 0, "--device", "cpu", "--val-fraction", 0.34]  # fmt: skip


def test_train_bad_loss_weight_name(tmp_path, caplog, capsys, crop_cache, mano_dir):
    out = tmp_path / "t"
    check(Fault("train", [*_train_args(crop_cache, mano_dir, out), "--loss-weights", "uvv=1"], 2,
                ["--loss-weights", "uvv"], "NAME one of", [out / "model.pt"]), caplog, capsys)  # fmt: skip


def test_train_crop_cache_with_wrong_length_intrinsics(tmp_path, caplog, capsys, crop_cache, mano_dir):
    rows = pq.read_table(crop_cache[0]).to_pylist()
    rows[3]["intrinsics"] = rows[3]["intrinsics"][:3]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), bad)
    out = tmp_path / "t"
    check(Fault("train", _train_args([bad, *crop_cache[1:]], mano_dir, out), 1,
                ["bad.parquet", "'intrinsics'", "row 3"], "re-create it with the cache_crops stage",
                [out / "model.pt", out / "metrics.csv", out / "val_sequences.txt"], [out]), caplog, capsys)  # fmt: skip


def test_train_resume_from_a_checkpoint_with_a_payload(tmp_path, caplog, capsys, crop_cache, mano_dir):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "ckpt_00000007.pt"
    torch.save({"format": "mvhand.handnet/1", "model_config": {}, "x": ShellPayload(marker)}, evil)
    out = tmp_path / "t"
    check(Fault("train", [*_train_args(crop_cache, mano_dir, out), "--resume", evil], 1,
                ["ckpt_00000007.pt", "refused to load", "system"], "that you trust", [out / "model.pt"],
                [out], [marker]), caplog, capsys)  # fmt: skip


def _full_disk_save(real_save, limit: int):
    """``torch.save`` onto a file system that fills up after ``limit`` bytes: its writes raise ENOSPC."""

    class FullDisk(io.RawIOBase):
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.n += len(b)
            if self.n > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(b)

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # torch's own C++ file writer says only this on a full disk
            Path(f).write_bytes(b"PK")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, FullDisk(f), *args, **kwargs)

    return save


def test_train_disk_full_while_writing_a_checkpoint(
    tmp_path, caplog, capsys, crop_cache, mano_dir, monkeypatch
):
    import torch

    monkeypatch.setattr(torch, "save", _full_disk_save(torch.save, 4096))
    out = tmp_path / "t"
    check(Fault("train", _train_args(crop_cache, mano_dir, out), 1,
                [out / "checkpoints" / "ckpt_00000001.pt", "no space left on device"],
                "free disk space (or quota) on the file system of", [out / "model.pt", out / "metrics.csv"],
                [out, out / "checkpoints"]), caplog, capsys)  # fmt: skip
    assert list((out / "checkpoints").iterdir()) == []


def test_train_on_a_really_full_file_system(tiny_fs, caplog, capsys, crop_cache, mano_dir):
    """The real thing: results on a 64 KiB file system; the first checkpoint does not fit."""
    out = tiny_fs / "t"
    check(Fault("train", _train_args(crop_cache, mano_dir, out), 1,
                [out / "checkpoints" / "ckpt_00000001.pt", "no space left on device"],
                "or write the results to another file system", [out / "model.pt", out / "metrics.csv"],
                [out]), caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, crop_cache, mano_dir) -> Path:
    from mvhand.model.training import TrainConfig, fit

    out = tmp_path_factory.mktemp("predict_bad") / "train"
    cfg = TrainConfig(crops=[str(c) for c in crop_cache], mano_dir=str(mano_dir), out_dir=str(out),
                      backbone="test_resnet", img_size=32, n_points=4, hidden=16, batch_size=2, epochs=1,
                      iters_per_epoch=1, num_workers=0, device="cpu", val_fraction=0.34)  # fmt: skip
    return fit(cfg).model_path


def _predict_fault(tmp: Path, model: Path, crops, mano_dir, names: list, fix: str) -> Fault:
    out = tmp / "pred" / "out.parquet"
    argv = ["--model", model, "--crops", *crops, "--mano-dir", mano_dir, "--out", out, "--device", "cpu"]
    return Fault("predict", argv, 1, names, fix, [out], [out.parent])


def test_predict_model_with_nan_weights(tmp_path, caplog, capsys, crop_cache, mano_dir, trained_model):
    import torch

    state = torch.load(trained_model, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    bad = tmp_path / "nan_model.pt"
    torch.save(state, bad)
    check(_predict_fault(tmp_path, bad, crop_cache, mano_dir, ["nan_model.pt", "hold NaN or inf values", name],
                         "retrain the model"), caplog, capsys)  # fmt: skip


def test_predict_nonfinite_predictions(
    tmp_path, caplog, capsys, crop_cache, mano_dir, trained_model, monkeypatch
):
    """Finite weights, but one hand's output is NaN (e.g. an overflow): refused, naming model and hand."""
    from mvhand.model.network import HandNet

    forward = HandNet.forward
    calls = []

    def one_nan(self, *args, **kwargs):  # the first hand of the first batch only
        out = forward(self, *args, **kwargs)
        if not calls:
            out.root[0, 0] = float("nan")
        calls.append(1)
        return out

    monkeypatch.setattr(HandNet, "forward", one_nan)
    check(_predict_fault(tmp_path, trained_model, crop_cache, mano_dir,
                         [trained_model, "non-finite (NaN/inf) predictions for 1 of", "sequence seq_"],
                         "check the crop cache"), caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# neural_smooth
# --------------------------------------------------------------------------------------------------


def _prediction_rows(n: int = 6, side: int = 1, seq: str = "s") -> list[dict]:
    K = [100.0, 100.0, 47.5, 47.5]
    return [
        dict(sequence_name=seq, frame_id=i, hand_side=side, global_rot=np.eye(3).ravel(), root=[0.0, 0.0, 0.5],
             mano_theta=np.zeros(15), mano_beta_pred=np.zeros(10), wrist_xform=np.r_[0, 0, 0, 0, 0, 0.5],
             view_kp2d=[np.zeros(40)], view_conf=[np.zeros(20)], view_intrinsics=[K],
             view_T_world_from_crop=[np.eye(4).ravel()])
        for i in range(n)
    ]  # fmt: skip


def _smooth_fault(tmp: Path, mano_dir, rows=None, names=(), fix="re-run the predict stage", mano=None, **kw):
    pred = tmp / "pred.parquet"
    if rows is not None:
        pd.DataFrame(rows).to_parquet(pred)
    out = tmp / "smooth" / "out.parquet"
    argv = ["--predictions", pred, "--mano-dir", mano or mano_dir, "--out", out, "--method", "raw"]
    return Fault(
        "neural_smooth", argv, 1, list(names), fix, [out, out.with_suffix(".json")], [out.parent], **kw
    )


def _rows_with(change: Callable[[list[dict]], None]) -> list[dict]:
    rows = _prediction_rows()
    change(rows)
    return rows


def _nan_all(rows):
    for r in rows:
        r["mano_theta"] = np.full(15, np.nan)


_SMOOTH_FAULTS = {
    "missing prediction table": dict(names=["pred.parquet", "not found"], fix="run the predict stage first"),
    "duplicate rows": dict(rows=_rows_with(lambda r: r.append(dict(r[2]))), names=["pred.parquet", "share their"]),
    "hand_side 2": dict(rows=_rows_with(lambda r: r[1].update(hand_side=2)), names=["pred.parquet", "hand_side", "0 (left)"]),
    "fractional frame id": dict(rows=_rows_with(lambda r: [x.update(frame_id=x["frame_id"] + 0.5) for x in r[:2]]),
                                names=["pred.parquet", "frame_id must be an integer"]),
    "wrong-length view_intrinsics": dict(rows=_rows_with(lambda r: r[4].update(view_intrinsics=[[1.0, 2.0, 3.0]])),
                                         names=["pred.parquet", "row 4", "'view_intrinsics'", "3 values, expected 4"]),
    "all predictions NaN": dict(rows=_rows_with(_nan_all), names=["pred.parquet", "none of the 6 hand instances"],
                                fix="retrain, re-run predict"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(_SMOOTH_FAULTS))
def test_neural_smooth(tmp_path, caplog, capsys, mano_dir, name):
    check(_smooth_fault(tmp_path, mano_dir, **_SMOOTH_FAULTS[name]), caplog, capsys)


def test_neural_smooth_missing_mano_folder(tmp_path, caplog, capsys, mano_dir):
    check(_smooth_fault(tmp_path, mano_dir, _prediction_rows(), ["no_mano", "folder not found"],
                        "`mano_dir`", mano=tmp_path / "no_mano"), caplog, capsys)  # fmt: skip


def test_neural_smooth_mano_file_with_a_payload(tmp_path, caplog, capsys, mano_dir):
    bad = tmp_path / "mano"
    shutil.copytree(mano_dir, bad)
    marker = tmp_path / "pwned"
    (bad / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(ShellPayload(marker), protocol=2))
    check(_smooth_fault(tmp_path, mano_dir, _prediction_rows(), ["MANO_RIGHT.pkl", "refused to load posix.system"],
                        "mano.is.tue.mpg.de", mano=bad, absent=[marker]), caplog, capsys)  # fmt: skip


def test_neural_smooth_reports_exactly_what_it_filled(tmp_path, caplog, capsys, mano_dir):
    """A track without any finite frame cannot be filled: the log and the stats must say so."""
    rows = _prediction_rows(6, side=1) + _prediction_rows(6, side=0)
    for r in rows[6:]:
        r["mano_theta"] = np.full(15, np.nan)  # the whole left track
    rows[2]["root"] = [np.nan, 0.0, 0.5]  # one frame of the right track
    pred, out = tmp_path / "pred.parquet", tmp_path / "out.parquet"
    pd.DataFrame(rows).to_parquet(pred)
    argv = [
        "--predictions",
        pred,
        "--mano-dir",
        mano_dir,
        "--out",
        out,
        "--method",
        "neural",
        "--iterations",
        3,
    ]
    rc, text = run_stage("neural_smooth", argv, caplog, capsys)
    assert rc == 0, text
    assert (
        "7 of 12 instances have non-finite predictions: 1 now have values" in text
        and "6 stay non-finite" in text
    )
    stats = json.loads(out.with_suffix(".json").read_text())
    assert (stats["nonfinite_inputs"], stats["filled"], stats["nonfinite_outputs"]) == (7, 1, 6)
    smoothed = pd.read_parquet(out)
    finite = np.isfinite(np.stack(smoothed["mano_theta"])).all(1) & np.isfinite(
        np.stack(smoothed["root"])
    ).all(1)
    assert int((~finite).sum()) == 6


# --------------------------------------------------------------------------------------------------
# package_submission
# --------------------------------------------------------------------------------------------------


def _pose_table(tars, drop: int = 0) -> pd.DataFrame:
    """Predictions for the expected instances of ``tars``, without the first ``drop`` of them."""
    expected = expected_pose_instances(tars, "umetrack")
    return prediction_table(tars, np.random.default_rng(0), drop=expected[:drop])


def _package(toy, tmp: Path, pose: pd.DataFrame, shape: pd.DataFrame, *more) -> tuple[list, list]:
    pp, sp = tmp / "pose.parquet", tmp / "shape.parquet"
    pose.to_parquet(pp)
    shape.to_parquet(sp)
    out = tmp / "sub"
    outs = [out / "pose_submission.tar.gz", out / "shape_submission.tar.gz"]
    argv = ["--pose-predictions", f"umetrack={pp}", "--pose-tars", f"umetrack={toy['root'] / 'pose_test'}",
            "--shape-predictions", f"umetrack={sp}", "--shape-tars", f"umetrack={toy['root'] / 'shape_test'}",
            "--out-pose", outs[0], "--out-shape", outs[1], *more]  # fmt: skip
    return argv, outs


def test_package_too_many_filled_instances(tmp_path, caplog, capsys, toy):
    n = len(expected_pose_instances(toy["pose_tars"], "umetrack"))
    k = (4 * n + 9) // 10  # 40 % of the expected instances have no prediction
    argv, outs = _package(
        toy, tmp_path, _pose_table(toy["pose_tars"], drop=k), _pose_table(toy["shape_tars"])
    )
    check(Fault("package_submission", argv, 1, ["pose.parquet", f"{k} of {n} expected instances"], "--max-filled",
                outs, [outs[0].parent]), caplog, capsys)  # fmt: skip
    rc, _ = run_stage(
        "package_submission", [*argv, "--max-filled", 0.5], caplog, capsys
    )  # asked for: accepted
    assert rc == 0 and all(p.is_file() for p in outs)


def test_package_bad_shape_input_writes_no_pose_archive(tmp_path, caplog, capsys, toy):
    shape = _pose_table(toy["shape_tars"]).assign(sequence_name="another_sequence")
    argv, outs = _package(toy, tmp_path, _pose_table(toy["pose_tars"]), shape)
    check(Fault("package_submission", argv, 1, ["shape.parquet", "subject_002_separate_hand_000002"],
                "re-run predict", outs, [outs[0].parent]), caplog, capsys)  # fmt: skip


def test_package_duplicate_prediction_rows(tmp_path, caplog, capsys, toy):
    pose = _pose_table(toy["pose_tars"])
    argv, outs = _package(toy, tmp_path, pd.concat([pose, pose.iloc[[2]]]), _pose_table(toy["shape_tars"]))
    check(Fault("package_submission", argv, 1, ["pose.parquet", "share their (sequence_name, frame_id, hand_side)"],
                "re-run the predict stage", outs, [outs[0].parent]), caplog, capsys)  # fmt: skip


def test_package_malformed_argument(tmp_path, caplog, capsys):
    check(Fault("package_submission", ["--pose-predictions", "nope", "--pose-tars", "x", "--out-pose",
                                       tmp_path / "y.tar.gz"], 1, ["--pose-predictions", "'nope'"], "umetrack=PATH",
                [tmp_path / "y.tar.gz"], [tmp_path]), caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# eval_gt, evaluate, write_gt, report
# --------------------------------------------------------------------------------------------------


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _gt_members(toy) -> dict[str, bytes]:
    with tarfile.open(toy["gt"]) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_eval_gt_corrupt_archive(tmp_path, caplog, capsys, toy):
    bad = tmp_path / "gt.tar.gz"
    bad.write_bytes(toy["gt"].read_bytes()[:300])
    out = tmp_path / "eval" / "gt.tar.gz"
    check(Fault("eval_gt", ["--archive", bad, "--out", out], 1, ["gt.tar.gz", "corrupt or truncated"],
                "re-create or re-download", [out], [out.parent]), caplog, capsys)  # fmt: skip


def test_eval_gt_strips_the_dot_slash_prefix_only(tmp_path, caplog, capsys, toy):
    """`./x` is the archive root (tar -C dir .); `../x` is not (lstrip("./") took it for `x`)."""
    members = {f"./{k}": v for k, v in _gt_members(toy).items() if k != "gt_pose_umetrack.json"}
    members["../gt_pose_umetrack.json"] = b"[]"
    arc = _tar_gz(tmp_path / "dot.tar.gz", members)
    out = tmp_path / "merged.tar.gz"
    rc, text = run_stage("eval_gt", ["--archive", arc, "--out", out], caplog, capsys)
    assert rc == 0, text
    with tarfile.open(out) as tf:
        names = sorted(tf.getnames())
    assert names == ["gt_landmarks_umetrack.json", "gt_shape_umetrack.json", "mano/MANO_LEFT.pkl",
                     "mano/MANO_RIGHT.pkl"]  # fmt: skip


def _submission(toy, tmp: Path, extra: dict[str, bytes] | None = None) -> Path:
    gt = build_ground_truth(toy["pose_tars"], "umetrack")
    res = write_pose_results(tmp / "result_pose_umetrack.json", gt.poses)
    sub = pack_submission(tmp / "sub.tar.gz", [res])
    if extra:
        with tarfile.open(sub) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf}
        sub = _tar_gz(tmp / "sub_extra.tar.gz", {**members, **extra})
    return sub


def test_evaluate_gt_archive_whose_mano_file_carries_a_payload(tmp_path, caplog, capsys, toy):
    marker = tmp_path / "pwned"
    members = _gt_members(toy)
    members["mano/MANO_RIGHT.pkl"] = pickle.dumps(ShellPayload(marker), protocol=2)
    gt = _tar_gz(tmp_path / "evil_gt.tar.gz", members)
    out = tmp_path / "eval" / "pose.json"
    check(Fault("evaluate", ["--gt", gt, "--submission", _submission(toy, tmp_path), "--phase", "pose_estimation",
                             "--out", out], 1, ["evil_gt.tar.gz:mano/MANO_RIGHT.pkl", "refused to load"],
                "rebuild the archive with tools/write_gt.py", [out], [out.parent], [marker]), caplog, capsys)  # fmt: skip


def test_evaluate_oversize_member_is_refused_unread(tmp_path, caplog, capsys, toy, monkeypatch):
    import mvhand.formats.submission as sub_mod

    monkeypatch.setattr(sub_mod, "MAX_ARCHIVE_MEMBER_BYTES", 1 << 20)  # stands for 512 MiB
    gt = build_ground_truth(toy["pose_tars"], "umetrack")
    big = json.dumps([e.to_json() for e in gt.poses] * 2000).encode()
    sub = _tar_gz(tmp_path / "big.tar.gz", {"result_pose_umetrack.json": big})
    out = tmp_path / "eval" / "pose.json"
    check(Fault("evaluate", ["--gt", toy["gt"], "--submission", sub, "--phase", "pose_estimation", "--out", out], 1,
                ["big.tar.gz", "member result_pose_umetrack.json", "more than the 1 MiB"], "it was not read", [out],
                [out.parent]), caplog, capsys)  # fmt: skip


def test_evaluate_no_result_file_for_the_phase(tmp_path, caplog, capsys, toy):
    out = tmp_path / "eval" / "shape.json"
    check(Fault("evaluate", ["--gt", toy["gt"], "--submission", _submission(toy, tmp_path), "--phase",
                             "shape_estimation", "--out", out], 1, ["sub.tar.gz", "no result_shape"],
                "pack the result files at the archive root", [out], [out.parent]), caplog, capsys)  # fmt: skip


def test_evaluate_memory_stays_bounded_with_a_huge_unused_member(tmp_path, toy):
    """A 1 MB .tar.gz holding a 256 MiB zero member: evaluate reads past it without keeping it."""
    junk = tmp_path / "junk.bin"
    with open(junk, "wb") as fh:
        fh.truncate(256 << 20)
    sub = _submission(toy, tmp_path)
    padded = tmp_path / "padded.tar.gz"
    with gzip.open(padded, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        tf.add(junk, arcname="junk.bin")
        with tarfile.open(sub) as src:
            for m in src:
                tf.addfile(m, src.extractfile(m))
    junk.unlink()
    assert padded.stat().st_size < 2 << 20
    code = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
            "exec('try:\\n runpy.run_path(sys.argv[0], run_name=\"__main__\")\\nexcept SystemExit as e:\\n rc = e.code'); "
            "print('RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)")  # fmt: skip
    peaks = []
    for arc in (sub, padded):
        r = subprocess.run([sys.executable, "-c", code, str(SCRIPTS / "evaluate.py"), "--gt", str(toy["gt"]),
                            "--submission", str(arc), "--phase", "pose_estimation", "--out", str(tmp_path / "m.json")],
                           capture_output=True, text=True, timeout=300, env=snakemake_env())  # fmt: skip
        m = re.search(r"RSS_KB (\d+) (\S+)", r.stdout)
        assert m and m.group(2) == "0", r.stdout[-2000:] + r.stderr[-2000:]
        peaks.append(int(m.group(1)) / 1024)
    assert peaks[1] - peaks[0] < 64, peaks  # MiB: the 256 MiB member was never held


def test_write_gt_refuses_a_broken_mano_folder(tmp_path, caplog, capsys, toy, mano_dir):
    bad = tmp_path / "mano"
    shutil.copytree(mano_dir, bad)
    (bad / "MANO_LEFT.pkl").write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict
    out = tmp_path / "gt" / "gt.tar.gz"
    check(Fault("tools/write_gt", ["--input-dir", toy["root"] / "pose_test", "--dataset", "umetrack", "--mano-dir", bad,
                             "--output", out], 1, ["MANO_LEFT.pkl", "no key 'v_template'"], "https://mano.is.tue.mpg.de",
                [out], [out.parent]), caplog, capsys)  # fmt: skip


def test_write_gt_tars_without_annotations(tmp_path, caplog, capsys, mano_dir):
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    write_toy_tar(stripped / "s.tar", range(2), hands=False)
    out = tmp_path / "gt" / "gt.tar.gz"
    check(Fault("tools/write_gt", ["--input-dir", stripped, "--dataset", "hot3d", "--mano-dir", mano_dir, "--output", out],
                1, ["s.tar", "hands.json"], "annotated", [out], [out.parent]), caplog, capsys)  # fmt: skip


def test_write_gt_input_folder_not_found(tmp_path, caplog, capsys, mano_dir):
    out = tmp_path / "gt.tar.gz"
    check(Fault("tools/write_gt", ["--input-dir", tmp_path / "nowhere", "--dataset", "hot3d", "--mano-dir", mano_dir,
                             "--output", out], 1, ["nowhere", "input folder not found"], "split folder", [out],
                [tmp_path]), caplog, capsys)  # fmt: skip


def test_report_names_an_invalid_metrics_json(tmp_path, caplog, capsys, toy, mano_dir):
    shape = tmp_path / "shape.json"
    shape.write_text('{"result": [')  # a crash mid-write of an older tool
    out = tmp_path / "report"
    check(Fault("report", ["--gt", toy["gt"], "--mano-dir", mano_dir, "--candidate",
                           f"full-raw={_submission(toy, tmp_path)}", "--shape-metrics", shape, "--out-dir", out], 1,
                ["shape.json", "not valid JSON"], "re-run the stage that wrote it", [out / "report.md"], [out]),
          caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# download (the Hugging Face / local logic itself: test_download.py)
# --------------------------------------------------------------------------------------------------


def test_download_local_hot3d_with_a_bad_clip_id(tmp_path, caplog, capsys):
    src = tmp_path / "hot3d_clips"
    (src / "train_aria").mkdir(parents=True)
    (src / "train_aria" / "clip-000001.tar").touch()
    (src / "clip_splits.json").write_text(json.dumps({"train": {"Aria": [1, "x1"]}}))
    argv = ["--source", "local", "--dataset", "hot3d", "--output-dir", tmp_path / "data", "--mano-dir",
            tmp_path / "mano", "--local-dir", src]  # fmt: skip
    check(Fault("download", argv, 1, ["clip_splits.json", "bad clip id 'x1'"], "download it again",
                [tmp_path / "data" / "hot3d" / "manifest.json"], [tmp_path / "data"]), caplog, capsys)  # fmt: skip


def test_download_local_without_local_dir(tmp_path, caplog, capsys):
    argv = ["--source", "local", "--dataset", "umetrack", "--output-dir", tmp_path / "data", "--mano-dir",
            tmp_path / "mano"]  # fmt: skip
    check(Fault("download", argv, 1, ["download.local_dir"], "set `download.local_dir`",
                [tmp_path / "data" / "umetrack" / "manifest.json"], [tmp_path / "data"]), caplog, capsys)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Configuration: refused at planning time (snakemake -n), before any job runs
# --------------------------------------------------------------------------------------------------


def _config(**patch) -> dict:
    cfg = json.loads(json.dumps(TINY_CONFIG))
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(
    ("patch", "pattern"),
    [
        ({"crop": {"crop_size": 64}}, "crop"),  # typo of a section name
        ({"crops": {"fov_margin": 0.5}}, "fov_margin"),  # out of range
        ({"crops": {"crop_sise": 64}}, "crop_sise"),  # typo inside a section
        ({"source": "ftp"}, "source"),  # not in the enum
        ({"train": {"loss_weights": {"uvv": 2.0}}}, "uvv"),  # typo of a loss term
        ({"train": {"uv_head": "gaussian"}}, "uv_head"),  # not in the enum
    ],
)
def test_config_schema_errors_name_the_key(tmp_path, patch, pattern):
    write_config(tmp_path, _config(**patch))
    proc = run_snakemake(tmp_path, "-n", "crops", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "validating config" in out.lower() and pattern in out, out[-3000:]


# (dotted key, config patch, fix): each value passes the schema but points nowhere
_SEMANTIC = [
    ("train.lr", {"train": {"lr": float("nan")}}, "write a finite number"),
    ("smooth.fps", {"smooth": {"fps": float("inf")}}, "write a finite number"),
    ("evaluate.candidates", {"evaluate": {"candidates": ["fulll-neural"]}}, "variant of baseline, full"),
    ("submission.candidate", {"submission": {"candidate": "best-neural"}}, "variant of baseline, full"),
    ("evaluate.val_variant", {"evaluate": {"val_variant": "ful"}}, "use one of baseline, full"),
    ("download.local_dir", {"source": "local", "evaluate": {"split": "val"}}, "set it to the folder"),
    ("download.local_dir", {"source": "local", "download": {"local_dir": "/nowhere/data"},
                            "evaluate": {"split": "val"}}, "point it at the folder"),
    ("evaluate.split", {"source": "huggingface"}, "set `evaluate.split: val`"),
    ("train.pretrained_file", {"train": {"pretrained_file": "hiera.pth"}}, "local timm weights file"),
    ("smooth.savgol_polyorder", {"smooth": {"savgol_window": 5, "savgol_polyorder": 4}}, "savgol_polyorder <= 3"),
    ("smooth.online_free", {"smooth": {"online_free": 6}}, "online_free <= 5"),
    ("train.gpus", {"train": {"gpus": 0, "device": "cuda"}}, "train.gpus >= 1 to train on GPUs, or train.device: cpu"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "patch", "fix"), _SEMANTIC, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(_SEMANTIC)]
)
def test_config_values_that_point_nowhere(key, patch, fix):
    from mvhand.workflow_config import config_problems

    problems = config_problems(_full_config(**patch), ("baseline", "full"))
    assert [p.path for p in problems] == [key], [str(p) for p in problems]
    assert fix in str(problems[0])


def _full_config(**patch) -> dict:
    """The repository's config.yaml with a patch (what validation gives the checks: every section present).
    Its relative `mano_dir` would be read from the working directory, where a pipeline run may have left the
    synthetic MANO files: the checks see a folder without MANO files instead, unless the patch names one."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["mano_dir"] = str(ROOT / "tests" / "data" / "no-mano-here")
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def test_local_dir_of_the_other_dataset_is_refused_at_planning_time(tmp_path):
    from mvhand.workflow_config import config_problems

    ume, hot = tmp_path / "ume", tmp_path / "hot"
    (ume / "train").mkdir(parents=True)
    (ume / "train" / "subject_000_separate_hand_000000.tar").touch()
    (hot / "train_aria").mkdir(parents=True)
    (hot / "train_aria" / "clip-000001.tar").touch()
    (hot / "clip_splits.json").write_text("{}")

    def problems(local_dir):
        cfg = _full_config(source="local", download={"local_dir": local_dir}, evaluate={"split": "val"})
        return config_problems(cfg, ("baseline", "full"))

    assert problems({"umetrack": str(ume), "hot3d": str(hot)}) == []
    swapped = problems({"umetrack": str(hot), "hot3d": str(ume)})
    assert [p.path for p in swapped] == [str(hot), str(ume)]
    assert "given as the umetrack folder (download.local_dir.umetrack)" in str(swapped[0])
    assert "set `download.local_dir: {umetrack: <your umetrack folder>, hot3d: " in str(swapped[0])
    missing = problems({"umetrack": str(ume)})
    assert [p.path for p in missing] == ["download.local_dir.hot3d"] and "hot3d" in missing[0].fix
    # one dataset's folder as a plain string cannot serve both datasets
    (plain,) = problems(str(ume))
    assert plain.path == "download.local_dir" and "{umetrack: " in plain.fix


def test_synthetic_mano_with_real_data_is_refused(tmp_path, mano_dir):
    from mvhand.workflow_config import config_problems

    cfg = _full_config(source="huggingface", mano_dir=str(mano_dir), evaluate={"split": "val"})
    problems = config_problems(cfg, ("baseline", "full"))
    assert [p.path for p in problems] == ["mano_dir"]
    assert "synthetic stand-in" in str(problems[0]) and "copy the official MANO_LEFT.pkl" in str(problems[0])
    assert (
        config_problems(_full_config(mano_dir=str(mano_dir)), ("baseline", "full")) == []
    )  # synthetic source


@pytest.mark.slow
def test_config_faults_stop_the_workflow_before_any_job(tmp_path, mano_dir):
    """The planning-time check is wired in: every problem named at once, rc != 0, nothing created."""
    shutil.copytree(mano_dir, tmp_path / "resources" / "mano")
    cfg = _config(source="local", download={"local_dir": ""},
                  evaluate={"candidates": ["fulll-neural"], "split": "pose_test"}, train={"lr": float("nan")},
                  smooth={"savgol_window": 3, "savgol_polyorder": 2})  # fmt: skip
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for key in ("download.local_dir", "evaluate.candidates", "evaluate.split", "train.lr",
                "smooth.savgol_polyorder", "mano_dir"):  # fmt: skip
        assert key in out, (key, out[-4000:])
    assert "set `evaluate.split: val`" in out and "copy the official MANO_LEFT.pkl" in out
    assert not any((tmp_path / d).exists() for d in ("results", "logs", "benchmarks", "resources/data"))
