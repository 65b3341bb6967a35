"""Tests of mvhand.post.metrics: test vectors of spec/formats.md §7.2, float64 recomputation, weighting, evaluator."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.formats.submission import (
    GroundTruth,
    LandmarkEntry,
    PoseEntry,
    ShapeEntry,
    pack_submission,
    write_gt_archive,
    write_pose_results,
    write_shape_results,
)
from mvhand.io_utils import InputError
from mvhand.post.metrics import (
    FINGERTIP_LANDMARKS,
    PCK_THRESHOLDS_MM,
    aggregate_pose_metrics,
    aggregate_shape_metrics,
    compute_pose_metrics,
    compute_shape_metrics,
    evaluate_archives,
    evaluate_archives_detailed,
    mpjpe,
    pck_auc,
    pck_curve,
    per_landmark_errors,
    pose_metrics_from_landmarks,
)

# ------------------------------------------------------------------------------------------------
# Independent float64 reference (written from spec/formats.md §7.2 only)
# ------------------------------------------------------------------------------------------------


def _ref_auc(errors_mm: np.ndarray) -> float:
    e = np.asarray(errors_mm, dtype=np.float64).reshape(-1)
    tau = np.arange(101) * 0.5
    pck = np.array([100.0 * np.count_nonzero(e <= t) / e.size for t in tau])
    return float(np.sum(0.5 * (tau[1:] - tau[:-1]) * (pck[1:] + pck[:-1])) / 50.0)


def _ref_pose_metrics(pred_m: np.ndarray, gt_m: np.ndarray) -> dict[str, float]:
    keep = [i for i in range(20) if i != 5]
    err = np.linalg.norm((pred_m[:, keep] - gt_m[:, keep]) * 1000.0, axis=-1)
    return {"MPJPE": float(err.mean()), "PCK_AUC": _ref_auc(err), "FINGERTIP_PCK_AUC": _ref_auc(err[:, :5])}


def test_landmark_sets():
    assert len(LANDMARKS_TO_EVAL) == 19 and 5 not in LANDMARKS_TO_EVAL
    assert LANDMARKS_TO_EVAL[:5] == FINGERTIP_LANDMARKS == (0, 1, 2, 3, 4)
    assert PCK_THRESHOLDS_MM.dtype == torch.float32 and PCK_THRESHOLDS_MM.numel() == 101
    assert float(PCK_THRESHOLDS_MM[1]) == 0.5 and float(PCK_THRESHOLDS_MM[-1]) == 50.0


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([10.0] * 8, 80.5),
        ([0.0] * 4 + [60.0] * 4, 50.0),
        ([2.0, 7.5, 30.0, 49.9], 55.75),
    ],
)
def test_auc_spec_vectors(errors, expected):
    assert pck_auc(np.asarray(errors)) == pytest.approx(expected, abs=1e-4)
    assert _ref_auc(np.asarray(errors)) == pytest.approx(expected, abs=1e-9)


def test_pck_threshold_is_inclusive():
    curve = pck_curve(np.array([0.5, 0.5, 1.0, 100.0]))
    assert curve.shape == (101,)
    assert float(curve[0]) == 0.0
    assert float(curve[1]) == pytest.approx(50.0)  # 0.5 <= 0.5 counts
    assert float(curve[2]) == pytest.approx(75.0)
    assert float(curve[-1]) == pytest.approx(75.0)  # 100 mm is never counted
    assert float(pck_curve(np.zeros(3))[0]) == pytest.approx(100.0)


def test_errors_are_millimetres_and_wrist_is_ignored():
    gt = np.zeros((2, 20, 3), np.float32)
    pred = gt.copy()
    pred[..., 0] += 0.003  # 3 mm everywhere
    pred[:, 5] += 1.0  # the wrist is not evaluated
    assert per_landmark_errors(pred[:, :1], gt[:, :1]).numpy() == pytest.approx(
        np.full((2, 1), 3.0), abs=1e-4
    )
    m = pose_metrics_from_landmarks(pred, gt)
    assert m["MPJPE"] == pytest.approx(3.0, abs=1e-4)
    # all errors 3 mm: PCK 0 at 0, 0.5 … 2.5 mm, 100 from 3 mm on: AUC = (50 - 3 + 0.25) / 50 * 100
    assert m["PCK_AUC"] == pytest.approx(94.5, abs=1e-3)
    assert m["FINGERTIP_PCK_AUC"] == pytest.approx(94.5, abs=1e-3)


def test_matches_independent_float64_recomputation():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.1, (37, 20, 3))
    pred = gt + rng.normal(0, 0.012, gt.shape)
    pred[:, :5] += 0.01  # make fingertips differ from the rest
    got = pose_metrics_from_landmarks(pred, gt)
    ref = _ref_pose_metrics(
        pred.astype(np.float32).astype(np.float64), gt.astype(np.float32).astype(np.float64)
    )
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=2e-4), k
    assert got["FINGERTIP_PCK_AUC"] < got["PCK_AUC"]


def test_aggregation_weighted_by_instances_equals_pooling():
    rng = np.random.default_rng(1)
    sizes = [3, 11, 1, 7]
    preds, gts = [], []
    for n in sizes:
        g = rng.normal(0, 0.1, (n, 20, 3))
        preds.append(g + rng.normal(0, rng.uniform(0.003, 0.03), g.shape))
        gts.append(g)
    per_seq = [pose_metrics_from_landmarks(p, g) for p, g in zip(preds, gts)]
    agg = aggregate_pose_metrics(per_seq, sizes)
    pooled = pose_metrics_from_landmarks(np.concatenate(preds), np.concatenate(gts))
    for k in pooled:
        assert agg[k] == pytest.approx(pooled[k], abs=1e-4), k
    # an unweighted mean would differ noticeably
    assert abs(np.mean([m["MPJPE"] for m in per_seq]) - agg["MPJPE"]) > 1e-3
    with pytest.raises(ValueError):
        aggregate_pose_metrics([], [])


class _AffineMano:
    """Stand-in MANO: landmarks = fixed template + translation, x mirrored for the right side."""

    def __init__(self):
        self.template = np.random.default_rng(5).normal(0, 0.05, (20, 3)).astype(np.float32)
        self.calls: list[int] = []

    def landmarks_from_wrist_xform(self, theta, wrist_xform, betas, hand_side):
        self.calls.append(int(hand_side))
        t = torch.as_tensor(self.template)
        if int(hand_side) == 1:
            t = t * torch.tensor([-1.0, 1.0, 1.0])
        return (
            t[None] + torch.as_tensor(wrist_xform)[:, None, 3:] + 0.001 * torch.as_tensor(theta)[:, :1, None]
        )

    def shape_vertices(self, betas):
        b = torch.as_tensor(betas, dtype=torch.float32).reshape(-1, 10)
        return torch.zeros(b.shape[0], 778, 3) + b[:, None, :3] * 0.01


def test_compute_pose_metrics_dispatches_sides():
    mano = _AffineMano()
    n = 6
    side = np.array([0, 1, 0, 1, 1, 0])
    xform = np.zeros((n, 6), np.float32)
    xform[:, 3:] = np.random.default_rng(2).normal(0, 0.2, (n, 3))
    theta = np.zeros((n, 15), np.float32)
    gt = (
        np.stack([mano.template * (np.array([-1, 1, 1]) if s else 1) for s in side]).astype(np.float32)
        + xform[:, None, 3:]
    )
    m = compute_pose_metrics(mano, theta, xform, side, np.zeros(10), gt)
    assert m["MPJPE"] == pytest.approx(0.0, abs=1e-3)
    assert sorted(mano.calls) == [0, 1]
    theta[:, 0] = 4.0  # shifts every landmark by 4 mm along all three axes
    m = compute_pose_metrics(mano, theta, xform, side, np.zeros(10), gt)
    assert m["MPJPE"] == pytest.approx(4.0 * np.sqrt(3), abs=1e-3)
    wrong = compute_pose_metrics(mano, np.zeros((n, 15)), xform, 1 - side, np.zeros(10), gt)
    assert wrong["MPJPE"] > 5.0


def test_shape_metrics_and_plain_mean():
    mano = _AffineMano()
    gt = np.zeros((1, 10))
    pred = np.zeros((1, 10))
    pred[0, 0] = 0.2  # 2 mm along x for every vertex
    assert compute_shape_metrics(mano, pred, gt)["MPVPE"] == pytest.approx(2.0, abs=1e-4)
    assert aggregate_shape_metrics([{"MPVPE": 1.0}, {"MPVPE": 4.0}]) == {"MPVPE": 2.5}
    with pytest.raises(ValueError):
        compute_shape_metrics(mano, np.zeros((2, 10)), gt)


def test_empty_errors_rejected():
    with pytest.raises(ValueError):
        mpjpe(np.zeros((0, 19)))
    with pytest.raises(ValueError):
        pose_metrics_from_landmarks(np.zeros((2, 21, 3)), np.zeros((2, 21, 3)))


# ------------------------------------------------------------------------------------------------
# Evaluator with a stand-in MANO model (end-to-end with real MANO: tests/test_submission.py)
# ------------------------------------------------------------------------------------------------


def _gt_for(mano: _AffineMano, seqs: dict[str, int], ds: str) -> tuple[GroundTruth, list[PoseEntry]]:
    """GT with seqs[name] frames each (left + right hand) and the perfect stand-in submission."""
    rng = np.random.default_rng(len(seqs))
    gt = GroundTruth(ds)
    perfect = []
    for seq, n in seqs.items():
        gt.shapes.append(ShapeEntry(seq, rng.normal(size=10).astype(np.float32), 0))
        for f in range(n):
            for s in (0, 1):
                xf = np.zeros(6, np.float32)
                xf[3:] = rng.normal(0, 0.2, 3)
                lm = (mano.template * (np.array([-1, 1, 1]) if s else 1) + xf[3:]).astype(np.float32)
                gt.landmarks.append(LandmarkEntry(seq, f, lm))
                gt.poses.append(PoseEntry(seq, f, np.zeros(15, np.float32), xf, s))
                perfect.append(PoseEntry(seq, f, np.zeros(15, np.float32), xf.copy(), s))
    return gt, perfect


@pytest.fixture
def fake_mano_dir(mano_dir):
    """MANO files for the archive (write_gt_archive validates them); the evaluator gets a stand-in injected."""
    return mano_dir


def test_evaluator_output_structure_and_known_answers(tmp_path, fake_mano_dir):
    mano = _AffineMano()
    gt_u, perfect_u = _gt_for(mano, {"seq_a": 3, "seq_b": 1}, "umetrack")
    gt_h, perfect_h = _gt_for(mano, {"clip-000001": 2}, "hot3d")
    gt_tar = write_gt_archive(tmp_path / "gt.tar.gz", {"umetrack": gt_u, "hot3d": gt_h}, fake_mano_dir)

    # UmeTrack: theta[0] = 2 shifts every landmark by (2, 2, 2) mm; HOT3D perfect; file order of
    # sequences must not matter (the evaluator groups and stably sorts by frame_id).
    shifted = [
        PoseEntry(e.sequence_name, e.frame_id, np.full(15, 2.0), e.wrist_xform, e.hand_side)
        for e in perfect_u
    ]
    # sequences interleaved, frames in order, left before right within a frame
    by_frame = sorted(shifted, key=lambda e: e.frame_id)
    files = [write_pose_results(tmp_path / "result_pose_umetrack.json", by_frame)]
    extra = PoseEntry(
        "clip-999999", 0, np.zeros(15), np.zeros(6), 0
    )  # not in the GT: ignored, like the toolkit
    files.append(write_pose_results(tmp_path / "result_pose_hot3d.json", [*perfect_h, extra]))
    sub = pack_submission(tmp_path / "pose_submission.tar.gz", files)

    res, per_seq = evaluate_archives_detailed(gt_tar, sub, "pose_estimation", mano_model=mano)
    assert list(res) == ["result"]
    assert [list(d) for d in res["result"]] == [["umetrack_test"], ["hot3d_test"]]
    u = res["result"][0]["umetrack_test"]
    assert list(u) == ["MPJPE", "PCK_AUC", "FINGERTIP_PCK_AUC"]
    assert u["MPJPE"] == pytest.approx(2.0 * np.sqrt(3), abs=1e-3)
    h = res["result"][1]["hot3d_test"]
    assert h["MPJPE"] == pytest.approx(0.0, abs=1e-3) and h["PCK_AUC"] == pytest.approx(100.0, abs=1e-3)
    assert set(per_seq["umetrack_test"]) == {"seq_a", "seq_b"}
    assert per_seq["umetrack_test"]["seq_a"]["n_instances"] == 6
    assert all(isinstance(v, float) for v in u.values())
    json.dumps(res)  # plain JSON types

    # datasets without a result file are skipped
    only_h = pack_submission(tmp_path / "only_hot3d.tar.gz", [files[1]])
    res = evaluate_archives(gt_tar, only_h, "pose_estimation", mano_model=mano)
    assert [list(d) for d in res["result"]] == [["hot3d_test"]]


def test_evaluator_shape_phase(tmp_path, fake_mano_dir):
    mano = _AffineMano()
    gt_u, _ = _gt_for(mano, {"s1": 1, "s2": 1}, "umetrack")
    gt_tar = write_gt_archive(tmp_path / "gt.tar", {"umetrack": gt_u}, fake_mano_dir)
    pred = []
    for k, e in enumerate(gt_u.shapes):
        b = np.asarray(e.mano_beta, np.float64).copy()
        b[0] += 0.1 * (k + 1)  # 1 mm and 2 mm
        pred.append(ShapeEntry(e.sequence_name, b, 1))
    sub = pack_submission(
        tmp_path / "shape.tar.gz", [write_shape_results(tmp_path / "result_shape_umetrack.json", pred)]
    )
    res = evaluate_archives(gt_tar, sub, "shape_estimation", mano_model=mano)
    assert res == {"result": [{"umetrack_test": {"MPVPE": pytest.approx(1.5, abs=1e-4)}}]}


def _rewrite(tmp_path, name, entries):
    p = write_pose_results(tmp_path / name, entries)
    return pack_submission(tmp_path / "bad.tar.gz", [p])


def test_evaluator_clear_errors(tmp_path, fake_mano_dir):
    mano = _AffineMano()
    gt_u, perfect = _gt_for(mano, {"seq_a": 2, "seq_b": 1}, "umetrack")
    gt_tar = write_gt_archive(tmp_path / "gt.tar.gz", {"umetrack": gt_u}, fake_mano_dir)
    name = "result_pose_umetrack.json"

    with pytest.raises(InputError, match="seq_b"):
        evaluate_archives(gt_tar, _rewrite(tmp_path, name, perfect[:4]), "pose_estimation", mano_model=mano)
    with pytest.raises(InputError, match="3 entries"):
        evaluate_archives(
            gt_tar, _rewrite(tmp_path, name, perfect[:3] + perfect[4:]), "pose_estimation", mano_model=mano
        )
    nan = [
        PoseEntry(e.sequence_name, e.frame_id, e.mano_theta.copy(), e.wrist_xform, e.hand_side)
        for e in perfect
    ]
    nan[2].mano_theta[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        evaluate_archives(gt_tar, _rewrite(tmp_path, name, nan), "pose_estimation", mano_model=mano)
    swapped = [perfect[1], perfect[0]] + perfect[2:]
    with pytest.raises(InputError, match="hand_side"):
        evaluate_archives(gt_tar, _rewrite(tmp_path, name, swapped), "pose_estimation", mano_model=mano)
    with pytest.raises(InputError, match="unknown phase"):
        evaluate_archives(gt_tar, _rewrite(tmp_path, name, perfect), "pose", mano_model=mano)
    with pytest.raises(InputError, match="no result_shape"):
        evaluate_archives(gt_tar, _rewrite(tmp_path, name, perfect), "shape_estimation", mano_model=mano)

    # not a tar / nested files / missing GT file
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not a tar")
    with pytest.raises(InputError, match="not a readable tar"):
        evaluate_archives(gt_tar, junk, "pose_estimation", mano_model=mano)
    nested = tmp_path / "nested.tar"
    write_pose_results(tmp_path / "sub" / name, perfect)
    with tarfile.open(nested, "w") as tf:
        tf.add(tmp_path / "sub" / name, arcname=f"sub/{name}")
    with pytest.raises(InputError, match="archive root"):
        evaluate_archives(gt_tar, nested, "pose_estimation", mano_model=mano)
    empty_gt = tmp_path / "empty_gt.tar"
    with tarfile.open(empty_gt, "w"):
        pass
    with pytest.raises(InputError, match="gt_landmarks_umetrack.json"):
        evaluate_archives(empty_gt, _rewrite(tmp_path, name, perfect), "pose_estimation", mano_model=mano)
