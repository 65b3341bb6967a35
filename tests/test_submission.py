"""Tests of mvhand.formats.submission (result files, validation, packing, GT) and the end-to-end evaluator + CLIs."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import fixtures as toy
import numpy as np
import pytest
import torch
from fixtures import write_toy_tar as _write_toy_tar

from mvhand.formats.submission import (
    GroundTruth,
    LandmarkEntry,
    PoseEntry,
    ShapeEntry,
    build_ground_truth,
    expected_pose_instances,
    pack_submission,
    read_pose_results,
    read_shape_results,
    read_submission_archive,
    read_tar_root_files,
    validate_pose_results,
    validate_shape_results,
    write_gt_archive,
    write_pose_results,
    write_shape_results,
)
from mvhand.io_utils import InputError

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# Result files
# ------------------------------------------------------------------------------------------------


def _entries(seqs=("seq_a", "seq_b"), frames=3, seed=0) -> list[PoseEntry]:
    rng = np.random.default_rng(seed)
    out = []
    for seq in seqs:
        for f in range(frames):
            for s in (0, 1):
                out.append(
                    PoseEntry(
                        seq,
                        f,
                        rng.normal(size=15).astype(np.float32),
                        rng.normal(size=6).astype(np.float32),
                        s,
                    )
                )
    return out


def test_pose_round_trip_same_bytes_and_toolkit_format(tmp_path):
    entries = _entries()
    p1 = write_pose_results(tmp_path / "a" / "result_pose_umetrack.json", entries)
    back = read_pose_results(p1)
    p2 = write_pose_results(tmp_path / "b" / "result_pose_umetrack.json", back)
    assert p1.read_bytes() == p2.read_bytes()
    raw = json.loads(p1.read_bytes())
    assert list(raw[0]) == ["sequence_name", "frame_id", "mano_theta", "wrist_xform", "hand_side"]
    assert p1.read_text() == json.dumps(raw, indent=4)  # json.dumps(list, indent=4), like the toolkit
    # float32 values are written with their exact float repr and read back exactly
    assert raw[0]["mano_theta"][0] == float(entries[0].mano_theta[0])
    np.testing.assert_array_equal(back[3].wrist_xform.astype(np.float32), entries[3].wrist_xform)
    assert [e.instance for e in back] == [e.instance for e in entries]


def test_shape_round_trip_same_bytes(tmp_path):
    entries = [ShapeEntry("s1", np.arange(10, dtype=np.float32) * 0.1, 0), ShapeEntry("s2", np.ones(10), 1)]
    p1 = write_shape_results(tmp_path / "result_shape_hot3d.json", entries)
    back = read_shape_results(p1)
    p2 = write_shape_results(tmp_path / "again" / "result_shape_hot3d.json", back)
    assert p1.read_bytes() == p2.read_bytes()
    assert list(json.loads(p1.read_bytes())[0]) == ["sequence_name", "mano_beta", "hand_side"]


def test_pose_key_quirk_gives_clear_error(tmp_path):
    obj = _entries(frames=1)[0].to_json()
    obj["pose"] = obj.pop("mano_theta")
    p = tmp_path / "result_pose_umetrack.json"
    p.write_text(json.dumps([obj]))
    with pytest.raises(InputError, match="rename 'pose' to 'mano_theta'") as exc:
        read_pose_results(p)
    assert str(p) in str(exc.value)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "expected a JSON array"),
        (
            '[{"sequence_name": "s", "frame_id": 0, "mano_theta": [], "hand_side": 0}]',
            "missing key 'wrist_xform'",
        ),
        (
            '[{"sequence_name": "s", "frame_id": 0.5, "mano_theta": [], "wrist_xform": [], "hand_side": 0}]',
            "integer",
        ),
        (
            '[{"sequence_name": "s", "frame_id": 0, "mano_theta": ["x"], "wrist_xform": [], "hand_side": 0}]',
            "numbers",
        ),
        (
            '[{"sequence_name": "s", "frame_id": 0, "mano_theta": ["1.5"], "wrist_xform": [], "hand_side": 0}]',
            "numbers",
        ),
        (
            '[{"sequence_name": "s", "frame_id": 0, "mano_theta": [true], "wrist_xform": [], "hand_side": 0}]',
            "numbers",
        ),
        (
            '[{"sequence_name": "", "frame_id": 0, "mano_theta": [], "wrist_xform": [], "hand_side": 0}]',
            "non-empty",
        ),
    ],
)
def test_malformed_result_files(tmp_path, payload, match):
    p = tmp_path / "result_pose_umetrack.json"
    p.write_text(payload)
    with pytest.raises(InputError, match=match):
        read_pose_results(p)
    with pytest.raises(InputError, match="file not found"):
        read_pose_results(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def test_validate_pose_results():
    entries = _entries()
    expected = [e.instance for e in entries]
    assert validate_pose_results(entries, expected) == []
    # frames in any order are fine (the evaluator sorts by frame_id), sequences interleaved too
    shuffled = [e for f in range(2, -1, -1) for e in entries if e.frame_id == f]
    assert validate_pose_results(shuffled, expected) == []

    probs = validate_pose_results(entries[:-3], expected, raise_error=False)
    assert any("missing" in p and "('seq_b', 1, 1)" in p for p in probs)
    extra = [*entries, PoseEntry("seq_c", 0, np.zeros(15), np.zeros(6), 0)]
    assert any(
        "unexpected" in p and "seq_c" in p for p in validate_pose_results(extra, expected, raise_error=False)
    )
    swapped = [entries[1], entries[0], *entries[2:]]
    probs = validate_pose_results(swapped, expected, raise_error=False)
    assert len(probs) == 1 and probs[0].startswith("order") and "('seq_a', 0, 1)" in probs[0]
    bad = copy.deepcopy(entries)
    bad[4].mano_theta = bad[4].mano_theta[:14]
    bad[5].wrist_xform[2] = np.nan
    bad[6].mano_theta[0] = np.inf
    probs = validate_pose_results(bad, expected, raise_error=False)
    assert any("15 values" in p and str(bad[4].instance) in p for p in probs)
    assert any("NaN/inf" in p and str(bad[5].instance) in p and str(bad[6].instance) in p for p in probs)
    wrong_side = copy.deepcopy(entries)
    wrong_side[1].hand_side = 0
    probs = validate_pose_results(wrong_side, expected, raise_error=False)
    assert any("hand_side mismatch" in p and "('seq_a', 0, 1)" in p for p in probs)
    assert any("duplicate" in p for p in probs)
    with pytest.raises(InputError, match="missing instances") as exc:
        validate_pose_results(entries[:-3], expected, source="result_pose_umetrack.json")
    assert "result_pose_umetrack.json" in str(exc.value)


def test_validate_lists_only_first_offenders():
    entries = _entries(frames=20)
    probs = validate_pose_results([], [e.instance for e in entries], raise_error=False)
    assert len(probs) == 1 and "(80 in total)" in probs[0]


def test_validate_shape_results():
    entries = [ShapeEntry("s1", np.zeros(10)), ShapeEntry("s2", np.zeros(10))]
    assert validate_shape_results(entries, ["s1", "s2"]) == []
    probs = validate_shape_results(
        [*entries, ShapeEntry("s2", np.zeros(9)), ShapeEntry("s4", np.full(10, np.nan))],
        ["s1", "s2", "s3"],
        raise_error=False,
    )
    text = " | ".join(probs)
    for needle in (
        "10 values for s2",
        "NaN/inf values for s4",
        "more than one entry for s2",
        "missing sequences s3",
        "unexpected sequences s4",
    ):
        assert needle in text
    with pytest.raises(InputError, match="missing sequences s3"):
        validate_shape_results(entries, ["s1", "s2", "s3"])


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------


def test_pack_and_read_submission(tmp_path):
    f1 = write_pose_results(tmp_path / "result_pose_umetrack.json", _entries())
    f2 = write_pose_results(tmp_path / "result_pose_hot3d.json", _entries(("clip-000001",), 2))
    out = pack_submission(tmp_path / "out" / "pose_submission.tar.gz", [f1, f2])
    with tarfile.open(out, "r:gz") as tf:
        assert sorted(tf.getnames()) == ["result_pose_hot3d.json", "result_pose_umetrack.json"]
    assert read_tar_root_files(out)["result_pose_umetrack.json"] == f1.read_bytes()
    sub = read_submission_archive(out)
    assert [e.instance for e in sub["result_pose_hot3d.json"]] == [
        e.instance for e in _entries(("clip-000001",), 2)
    ]
    # reproducible bytes
    again = pack_submission(tmp_path / "again.tar.gz", [f1, f2])
    assert again.read_bytes() == out.read_bytes()
    # an uncompressed tar made with the tar tool convention (./name) reads too
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        tf.add(f1, arcname="./result_pose_umetrack.json")
    assert list(read_submission_archive(plain)) == ["result_pose_umetrack.json"]

    with pytest.raises(InputError, match="result file name"):
        pack_submission(tmp_path / "x.tar.gz", [tmp_path / "out" / "pose_submission.tar.gz"])
    with pytest.raises(InputError, match="file not found"):
        pack_submission(tmp_path / "x.tar.gz", [tmp_path / "result_shape_hot3d.json"])
    assert not (tmp_path / "x.tar.gz").exists()
    nested = tmp_path / "nested.tar.gz"
    with tarfile.open(nested, "w:gz") as tf:
        tf.add(f1, arcname="results/result_pose_umetrack.json")
    with pytest.raises(InputError, match="inside a folder"):
        read_submission_archive(nested)


# ------------------------------------------------------------------------------------------------
# MANO fixture (valid MANO-format pickles, plain numpy)
# ------------------------------------------------------------------------------------------------

_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)


def _mano_arrays(side: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    nv, nj = 778, 16
    joints = np.zeros((nj, 3))
    for start, dx in {1: -0.02, 4: 0.0, 7: 0.04, 10: 0.02, 13: -0.045}.items():
        for k in range(3):
            joints[start + k] = [dx * (1 + 0.2 * k), 0.08 + 0.025 * k, -0.003 * k]
    owner = rng.integers(0, nj, nv)
    v = joints[owner] + rng.normal(0, 0.006, (nv, 3))
    J_reg = np.zeros((nj, nv))
    for j in range(nj):
        ids = np.flatnonzero(owner == j)[:10]
        J_reg[j, ids] = 1.0 / ids.size
    weights = np.full((nv, nj), 0.01)
    weights[np.arange(nv), owner] = 1.0
    weights /= weights.sum(1, keepdims=True)
    kintree = np.stack([np.array([2**32 - 1, *_PARENTS[1:]], dtype=np.int64), np.arange(nj)]).astype(
        np.uint32
    )
    shapedirs = rng.normal(0, 0.002, (nv, 3, 10))
    Q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    arrays = {
        "v_template": v,
        "f": rng.integers(0, nv, (1538, 3)).astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((nv, 3, 135), np.float32),  # compact pickles; MANO maths is tested in test_mano
        "J_regressor": J_reg,
        "weights": weights,
        "kintree_table": kintree,
        "hands_components": Q.T,
        "hands_mean": rng.normal(0, 0.1, 45),
    }
    if side == 0:  # mirrored left hand
        arrays["v_template"] = v * [-1, 1, 1]
        arrays["shapedirs"] = shapedirs * np.array([-1, 1, 1])[None, :, None]
        sign = np.tile([1.0, -1.0, -1.0], 15)
        arrays["hands_components"] = Q.T * sign
        arrays["hands_mean"] = arrays["hands_mean"] * sign
    return arrays


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mano")
    for side, name in ((0, "MANO_LEFT.pkl"), (1, "MANO_RIGHT.pkl")):
        with open(d / name, "wb") as fh:
            pickle.dump(_mano_arrays(side), fh, protocol=2)
    return d


# ------------------------------------------------------------------------------------------------
# Evaluator with a real MANO model from the GT archive: known answers
# ------------------------------------------------------------------------------------------------


def _mano_gt(mano_dir: Path, seqs: dict[str, int], seed: int = 0) -> tuple[GroundTruth, list[PoseEntry]]:
    """GT whose landmarks *are* the MANO landmarks of its pose entries (so a perfect score is 0)."""
    from mvhand.geometry.mano import ManoModel

    mano = ManoModel.from_dir(mano_dir)
    rng = np.random.default_rng(seed)
    gt = GroundTruth("umetrack")
    for seq, n in seqs.items():
        beta = rng.normal(0, 1, 10).astype(np.float32)
        gt.shapes.append(ShapeEntry(seq, beta, 0))
        for f in range(n):
            for s in (0, 1):
                theta = rng.normal(0, 0.5, 15).astype(np.float32)
                xf = np.concatenate([rng.normal(0, 0.5, 3), rng.normal(0, 0.2, 3)]).astype(np.float32)
                with torch.no_grad():
                    lm = mano.landmarks_from_wrist_xform(theta[None], xf[None], beta[None], s)[0].numpy()
                gt.landmarks.append(LandmarkEntry(seq, f, lm))
                gt.poses.append(PoseEntry(seq, f, theta, xf, s))
    return gt, [
        PoseEntry(e.sequence_name, e.frame_id, e.mano_theta, e.wrist_xform, e.hand_side) for e in gt.poses
    ]


def test_evaluator_known_shift_with_real_mano(tmp_path, mano_dir):
    from mvhand.post.metrics import evaluate_archives, evaluate_archives_detailed

    gt, perfect = _mano_gt(mano_dir, {"seq_a": 4, "seq_b": 2})
    gt_tar = write_gt_archive(tmp_path / "gt.tar.gz", {"umetrack": gt}, mano_dir)
    with tarfile.open(gt_tar) as tf:
        names = sorted(tf.getnames())
    assert names == [
        "gt_landmarks_umetrack.json",
        "gt_pose_umetrack.json",
        "gt_shape_umetrack.json",
        "mano/MANO_LEFT.pkl",
        "mano/MANO_RIGHT.pkl",
    ]
    sub = pack_submission(
        tmp_path / "p.tar.gz", [write_pose_results(tmp_path / "result_pose_umetrack.json", perfect)]
    )
    res = evaluate_archives(gt_tar, sub, "pose_estimation")
    m = res["result"][0]["umetrack_test"]
    assert m["MPJPE"] == pytest.approx(0.0, abs=1e-3)
    # float32 recomputation noise (~1e-5 mm) only affects PCK at the 0 mm threshold: AUC in [99.5, 100]
    assert 99.5 - 1e-4 <= m["PCK_AUC"] <= 100.0 + 1e-4
    assert 99.5 - 1e-4 <= m["FINGERTIP_PCK_AUC"] <= 100.0 + 1e-4

    # MANO's transl moves every landmark by the same vector: |(1.1, 2.2, 2.2)| mm = 3.3 mm, off-threshold.
    d = np.array([1.1, 2.2, 2.2], np.float32) * 1e-3
    shifted = [
        PoseEntry(
            e.sequence_name,
            e.frame_id,
            e.mano_theta,
            e.wrist_xform + np.r_[np.zeros(3, np.float32), d],
            e.hand_side,
        )
        for e in perfect
    ]
    sub = pack_submission(
        tmp_path / "s.tar.gz", [write_pose_results(tmp_path / "result_pose_umetrack.json", shifted)]
    )
    res, per_seq = evaluate_archives_detailed(gt_tar, sub, "pose_estimation")
    m = res["result"][0]["umetrack_test"]
    assert m["MPJPE"] == pytest.approx(3.3, abs=2e-3)
    # PCK 0 up to 3.0 mm, 100 from 3.5 mm: AUC = (100 * 46.5 + 25) / 50
    assert m["PCK_AUC"] == pytest.approx(93.5, abs=1e-3)
    assert m["FINGERTIP_PCK_AUC"] == pytest.approx(93.5, abs=1e-3)
    assert per_seq["umetrack_test"]["seq_b"]["n_instances"] == 4

    # shape phase: GT betas vs GT betas = 0; betas moved → the independent left-layer mesh error
    from mvhand.geometry.mano import ManoModel

    mano = ManoModel.from_dir(mano_dir)
    pred = [ShapeEntry(e.sequence_name, np.asarray(e.mano_beta) + 0.5, 1) for e in gt.shapes]
    sub = pack_submission(
        tmp_path / "sh.tar.gz", [write_shape_results(tmp_path / "result_shape_umetrack.json", pred)]
    )
    got = evaluate_archives(gt_tar, sub, "shape_estimation")["result"][0]["umetrack_test"]["MPVPE"]
    ref = []
    for e, p in zip(gt.shapes, pred):
        vg = mano.left.forward_full(
            torch.zeros(1, 15), torch.zeros(1, 3), torch.zeros(1, 3), torch.as_tensor(e.mano_beta)[None]
        )[0]
        vp = mano.left.forward_full(
            torch.zeros(1, 15),
            torch.zeros(1, 3),
            torch.zeros(1, 3),
            torch.as_tensor(p.mano_beta, dtype=torch.float32)[None],
        )[0]
        ref.append(
            np.linalg.norm(
                (vp.detach().numpy().astype(np.float64) - vg.detach().numpy()) * 1000, axis=-1
            ).mean()
        )
    assert got == pytest.approx(float(np.mean(ref)), rel=1e-4)
    assert got > 0.1


# ------------------------------------------------------------------------------------------------
# Tars (spec/formats.md §2.7 toy data) → expected instances, ground truth, end to end, CLIs
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    (root / "pose_test").mkdir()
    (root / "shape_test").mkdir()
    _write_toy_tar(root / "pose_test" / "subject_000_separate_hand_000000.tar", range(6))
    _write_toy_tar(root / "pose_test" / "subject_001_hand_hand_000001.tar", range(4), right_every=1)
    _write_toy_tar(root / "shape_test" / "subject_002_separate_hand_000002.tar", range(3))
    return {"root": root, "pose": root / "pose_test", "shape": root / "shape_test"}


def test_expected_instances_umetrack_vs_hot3d(tmp_path, toy_dirs):
    tars = sorted(toy_dirs["pose"].glob("*.tar"))
    inst = expected_pose_instances(tars, "umetrack")
    s0, s1 = "subject_000_separate_hand_000000", "subject_001_hand_hand_000001"
    exp0 = [(s0, 0, 0), (s0, 1, 0), (s0, 1, 1), (s0, 2, 0), (s0, 3, 1), (s0, 4, 0), (s0, 5, 0), (s0, 5, 1)]
    exp1 = [(s1, f, s) for f in range(4) for s in (0, 1) if (f, s) != (3, 0)]
    assert inst == exp0 + exp1
    # HOT3D: every 10th *sample index*; frame ids here are 0, 3, 6, … so the kept ids are 0, 30, 60
    clip = _write_toy_tar(tmp_path / "clip-000007.tar", [3 * i for i in range(25)], right_every=10**6)
    kept = expected_pose_instances([clip], "hot3d")
    assert kept == [("clip-000007", 0, 0), ("clip-000007", 30, 0), ("clip-000007", 60, 0)]
    assert len(expected_pose_instances([clip], "hot3d", every_n=1)) == 24  # frame id 3 has no cropped hand
    with pytest.raises(InputError, match="unknown dataset"):
        expected_pose_instances([clip], "freihand")


def test_build_ground_truth_matches_spec_example(toy_dirs):

    tars = sorted(toy_dirs["pose"].glob("*.tar"))
    gt = build_ground_truth(tars, "umetrack")
    assert [(e.sequence_name, e.frame_id) for e in gt.landmarks] == [
        i[:2] for i in expected_pose_instances(tars, "umetrack")
    ]
    assert [e.instance for e in gt.poses] == expected_pose_instances(tars, "umetrack")
    # spec/formats.md §6.5 example: FK of the left hand of spec/formats.md §2.7 (frame 0 of sequence 1, unshifted)
    np.testing.assert_allclose(gt.landmarks[0].landmarks, np.asarray(toy.GT_LANDMARKS_LEFT), atol=2e-6)
    assert gt.landmarks[0].landmarks.dtype == np.float32
    # frame 1's left hand is shifted by 2 mm along world x
    np.testing.assert_allclose(
        gt.landmarks[1].landmarks - gt.landmarks[0].landmarks, [[0.002, 0, 0]] * 20, atol=2e-6
    )
    # one shape entry per sequence, hand_side 0, the tar's betas
    assert [(e.sequence_name, e.hand_side) for e in gt.shapes] == [
        ("subject_000_separate_hand_000000", 0),
        ("subject_001_hand_hand_000001", 0),
    ]
    np.testing.assert_allclose(gt.shapes[0].mano_beta, toy.HAND_SHAPES_JSON["mano"], atol=1e-6)
    # MANO GT, zeros where the hand has no mano_pose (frame 2, left)
    np.testing.assert_allclose(
        gt.poses[0].mano_theta, toy.HANDS_JSON["left"]["mano_pose"]["thetas"], atol=1e-6
    )
    f2 = [e for e in gt.poses if e.instance == ("subject_000_separate_hand_000000", 2, 0)][0]
    assert not f2.mano_theta.any() and not f2.wrist_xform.any()
    # GT files: spec/formats.md §6.5 schemas
    files = gt.files()
    lm0 = json.loads(files["gt_landmarks_umetrack.json"])[0]
    assert list(lm0) == ["sequence_name", "frame_id", "landmarks"] and np.shape(lm0["landmarks"]) == (20, 3)
    assert lm0["landmarks"][0][0] == float(gt.landmarks[0].landmarks[0, 0])  # full float32 repr


def test_ground_truth_crash_conditions_are_clear_errors(tmp_path):
    no_hands = _write_toy_tar(tmp_path / "stripped.tar", range(2), hands=False)
    with pytest.raises(InputError, match="no umetrack_pose in hands.json") as exc:
        build_ground_truth([no_hands], "umetrack")
    assert "stripped.tar" in str(exc.value)
    no_shapes = _write_toy_tar(tmp_path / "noshape.tar", range(2), shapes=False)
    with pytest.raises(InputError, match="__hand_shapes.json__"):
        build_ground_truth([no_shapes], "umetrack")
    with pytest.raises(InputError, match="MANO model file not found"):
        write_gt_archive(tmp_path / "gt.tar.gz", {"umetrack": GroundTruth("umetrack")}, tmp_path)
    assert not (tmp_path / "gt.tar.gz").exists()


def _independent_mpjpe(mano_dir: Path, gt: GroundTruth, entries: list[PoseEntry]) -> float:
    """float64 NumPy MPJPE over the 19 landmarks, from MANO landmarks of ``entries`` vs GT landmarks."""
    from mvhand.geometry.mano import ManoModel

    mano = ManoModel.from_dir(mano_dir)
    betas = {e.sequence_name: np.asarray(e.mano_beta, np.float32) for e in gt.shapes}
    keep = [i for i in range(20) if i != 5]
    errs = []
    for p, g in zip(entries, gt.landmarks, strict=True):
        with torch.no_grad():
            lm = mano.landmarks_from_wrist_xform(
                np.asarray(p.mano_theta, np.float32)[None],
                np.asarray(p.wrist_xform, np.float32)[None],
                betas[p.sequence_name][None],
                p.hand_side,
            )[0].numpy()
        errs.append(np.linalg.norm((lm[keep].astype(np.float64) - g.landmarks[keep]) * 1000.0, axis=-1))
    return float(np.mean(errs))


@pytest.mark.slow
def test_end_to_end_tar_to_metrics_and_clis(tmp_path, toy_dirs, mano_dir):
    from mvhand.post.metrics import evaluate_archives

    env_py = sys.executable
    gt_tar = tmp_path / "gt.tar.gz"
    r = subprocess.run(
        [
            env_py,
            str(ROOT / "tools/write_gt.py"),
            "--input-dir",
            str(toy_dirs["pose"]),
            "--input-dir",
            str(toy_dirs["shape"]),
            "--dataset",
            "umetrack",
            "--mano-dir",
            str(mano_dir),
            "--output",
            str(gt_tar),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    files = read_tar_root_files(gt_tar)
    assert sorted(files) == [
        "gt_landmarks_umetrack.json",
        "gt_pose_umetrack.json",
        "gt_shape_umetrack.json",
        "mano/MANO_LEFT.pkl",
        "mano/MANO_RIGHT.pkl",
    ]
    tars = sorted(toy_dirs["pose"].glob("*.tar")) + sorted(toy_dirs["shape"].glob("*.tar"))
    gt = build_ground_truth(tars, "umetrack")
    assert files["gt_landmarks_umetrack.json"] == gt.files()["gt_landmarks_umetrack.json"]

    # "Perfect" submission = the MANO GT: scores the MANO-UmeTrack residual, computed independently.
    perfect = [
        PoseEntry(e.sequence_name, e.frame_id, e.mano_theta, e.wrist_xform, e.hand_side) for e in gt.poses
    ]
    validate_pose_results(perfect, expected_pose_instances(tars, "umetrack"))
    sub = pack_submission(
        tmp_path / "pose.tar.gz", [write_pose_results(tmp_path / "result_pose_umetrack.json", perfect)]
    )
    res = evaluate_archives(gt_tar, sub, "pose_estimation")
    assert res["result"][0]["umetrack_test"]["MPJPE"] == pytest.approx(
        _independent_mpjpe(mano_dir, gt, perfect), rel=1e-4
    )
    # Shifting MANO's translation by d shifts every predicted landmark by d.
    d = np.array([0.0, 0.0, 0.0, 0.004, -0.003, 0.012], np.float32)
    shifted = [
        PoseEntry(e.sequence_name, e.frame_id, e.mano_theta, e.wrist_xform + d, e.hand_side) for e in perfect
    ]
    sub2 = pack_submission(
        tmp_path / "pose2.tar.gz", [write_pose_results(tmp_path / "result_pose_umetrack.json", shifted)]
    )
    m2 = evaluate_archives(gt_tar, sub2, "pose_estimation")["result"][0]["umetrack_test"]["MPJPE"]
    assert m2 == pytest.approx(_independent_mpjpe(mano_dir, gt, shifted), rel=1e-4)
    assert m2 != pytest.approx(res["result"][0]["umetrack_test"]["MPJPE"], rel=1e-2)

    # evaluate.py prints and writes exactly the structure
    out = tmp_path / "eval" / "metrics.json"
    cmd = [env_py, str(ROOT / "workflow/scripts/evaluate.py"), "--gt", str(gt_tar), "--submission", str(sub)]
    r = subprocess.run(
        [*cmd, "--phase", "pose_estimation", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == json.loads(r.stdout) == res
    # bad inputs of evaluate.py / tools/write_gt.py: tests/test_bad_inputs.py
