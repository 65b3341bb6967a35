"""Tests of synthetic subjects, the UmeTrack⇄MANO mapping and the motion generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mvhand.geometry.umetrack import UmeTrackHandModel, forward_kinematics
from mvhand.synthetic.hands import (
    SequenceMotion,
    generate_motion,
    make_subject,
    mano_to_umetrack,
    mano_to_wrist,
    motion_statistics,
    plot_motion,
    residual_report,
    wrist_to_mano,
)
from mvhand.synthetic.mano_model import (
    FINGER_MANO_JOINTS,
    build_synthetic_mano,
    hinge_to_mano_pose_left,
    mirror_pose,
)

PROFILE_KEYS = {
    "joint_rotation_axes", "joint_rest_positions", "joint_frame_index", "joint_parent", "joint_first_child",
    "joint_next_sibling", "landmark_rest_positions", "landmark_rest_bone_weights", "landmark_rest_bone_indices",
    "hand_scale", "mesh_vertices", "mesh_triangles", "dense_bone_weights", "joint_limits",
}  # fmt: skip


@pytest.fixture(scope="module")
def arrays():
    return build_synthetic_mano(0)


@pytest.fixture(scope="module")
def subject(arrays):
    return make_subject(np.random.default_rng(5), arrays)


@pytest.fixture(scope="module")
def motions(subject, arrays):
    out = [generate_motion(np.random.default_rng(s), subject, 60, mano_arrays=arrays) for s in range(6)]
    out.append(generate_motion(np.random.default_rng(9), subject, 60, world="hot3d", mano_arrays=arrays))
    return out


def test_subject_profile_is_valid(subject):
    prof = subject.umetrack_profile
    assert set(prof) == PROFILE_KEYS
    json.dumps(prof)
    model = UmeTrackHandModel.from_json(prof)
    assert np.asarray(prof["mesh_vertices"]).shape == (788, 3)
    assert np.asarray(prof["mesh_triangles"]).shape == (1544, 3)
    dense = np.asarray(prof["dense_bone_weights"])
    assert dense.shape == (788, 17)
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-5)
    assert np.asarray(prof["joint_limits"]).shape == (22, 2)
    np.testing.assert_allclose(np.linalg.norm(model.joint_rotation_axes, axis=1), 1.0, atol=1e-6)
    # wrist landmark at the origin, landmarks carried by one frame, palm centre blended
    assert np.all(model.landmark_rest_positions[5] == 0)
    assert model.landmark_rest_bone_indices[20].tolist() == [1, 8, 5]
    # left-hand frame: fingers along +x, thumb towards +z, palm towards −y (thumb tip palmwards)
    lm = model.landmark_rest_positions
    assert lm[1:5, 0].min() > 0.14 and lm[0, 2] > 0.05 and lm[0, 1] < -0.02
    # flexing a finger curls it towards −y
    ang = np.zeros(22)
    ang[9:12] = 0.8
    curled = forward_kinematics(model, ang, np.eye(4, dtype=np.float32), False)
    assert curled[2, 1] < lm[2, 1] - 0.03
    # betas N(0, 0.8): the subject differs from the mean hand
    assert subject.betas.shape == (10,) and 0 < np.abs(subject.betas).max() <= 2.4


def test_profile_follows_betas(arrays):
    a = make_subject(np.random.default_rng(1), arrays)
    lm = np.asarray(a.umetrack_profile["landmark_rest_positions"])
    v = arrays["left"]["v_template"] + arrays["left"]["shapedirs"] @ a.betas
    J = arrays["left"]["J_regressor"] @ v
    np.testing.assert_allclose(lm[2], (v[443] - J[0]) * 1e3, atol=1e-4)  # middle tip, mm
    np.testing.assert_allclose(lm[12], (J[5] - J[0]) * 1e3, atol=1e-4)  # middle intermediate


def test_wrist_mapping_round_trip_and_mano_wrist(subject, arrays, mano_model):
    rng = np.random.default_rng(3)
    wx = np.concatenate([rng.normal(0, 0.8, (4, 3)), rng.normal(0, 0.3, (4, 3))], -1)
    assert np.linalg.norm(wx[:, :3], axis=1).max() < np.pi  # canonical axis-angles round-trip exactly
    for side in ("left", "right"):
        T = mano_to_wrist(wx, subject.betas, side, arrays)
        np.testing.assert_allclose(wrist_to_mano(T, subject.betas, side, arrays), wx, atol=1e-9)
        lm = mano_model.landmarks_from_wrist_xform(np.zeros((4, 15)), wx, subject.betas, side).numpy()
        np.testing.assert_allclose(lm[:, 5], T[:, :3, 3], atol=2e-6)  # MANO wrist = UmeTrack wrist


def test_hinge_pose_maps_exactly_to_mano(subject, arrays, mano_dir):
    """UmeTrack hinge angles ↔ full 45-D MANO pose agree exactly (independent smplx forward)."""
    smplx = pytest.importorskip("smplx")
    rng = np.random.default_rng(4)
    B = 6
    ang = rng.uniform(-0.2, 1.0, (B, 20))
    model = subject.umetrack_model
    pose_left = hinge_to_mano_pose_left(ang, model.joint_rotation_axes[:20].astype(float))
    wx = np.concatenate([rng.normal(0, 1, (B, 3)), rng.normal(0, 0.3, (B, 3))], -1)
    for side in ("left", "right"):
        layer = smplx.create(
            str(mano_dir / f"MANO_{side.upper()}.pkl"),
            "mano",
            use_pca=False,
            flat_hand_mean=True,
            is_rhand=side == "right",
        )
        pose = pose_left if side == "left" else mirror_pose(pose_left)
        out = layer(
            betas=torch.tensor(np.tile(subject.betas, (B, 1)), dtype=torch.float32),
            global_orient=torch.tensor(wx[:, :3], dtype=torch.float32),
            hand_pose=torch.tensor(pose, dtype=torch.float32),
            transl=torch.tensor(wx[:, 3:], dtype=torch.float32),
        )
        joints = out.joints.detach().numpy()
        tips = out.vertices.detach().numpy()[:, [744, 320, 443, 554, 671]]
        T = mano_to_wrist(wx, subject.betas, side, arrays)
        ume = forward_kinematics(model, ang, T.astype(np.float32), side == "right")
        np.testing.assert_allclose(ume[:, :5], tips, atol=2e-5)
        for f, mj in enumerate(FINGER_MANO_JOINTS):
            canon = [(6, 7), (9, 10), (12, 13), (15, 16), (18, 19)][f]
            np.testing.assert_allclose(ume[:, list(canon)], joints[:, list(mj[1:])], atol=2e-5)


def test_residual_small(motions, mano_model):
    rep = residual_report(motions, mano_model)
    assert rep["n"] > 500
    assert rep["mean_mm"] <= 3.0 and rep["median_mm"] <= 1.0
    assert len(rep["per_landmark_mm"]) == 19


def test_fit_recovers_umetrack_angles(subject, arrays, mano_model):
    """MANO landmarks made from known hinge angles (via the PCA-free path) are fitted back."""
    rng = np.random.default_rng(6)
    motion = generate_motion(rng, subject, 20, mano_arrays=arrays)
    tr = motion.hands["left"]
    fitted = mano_to_umetrack(
        subject, {"left": (tr.mano_theta, tr.mano_wrist_xform)}, mano_model, arrays, iters=6
    )
    np.testing.assert_allclose(fitted["left"][0], tr.T_world_from_wrist, atol=1e-9)
    lm_a = forward_kinematics(subject.umetrack_model, fitted["left"][1], fitted["left"][0], False)
    lm_b = forward_kinematics(subject.umetrack_model, tr.joint_angles, tr.T_world_from_wrist, False)
    assert np.abs(lm_a - lm_b).max() < 1e-3


def test_motion_layout(motions):
    m = motions[0]
    assert isinstance(m, SequenceMotion)
    assert m.T_world_from_device.shape == (60, 4, 4) and m.T_world_from_device.dtype == np.float64
    for side in ("left", "right"):
        tr = m.hands[side]
        assert tr.present.shape == (60,) and tr.present.dtype == bool
        assert tr.mano_theta.shape == (60, 15) and tr.mano_wrist_xform.shape == (60, 6)
        assert tr.T_world_from_wrist.shape == (60, 4, 4) and tr.joint_angles.shape == (60, 22)
        assert np.all(tr.joint_angles[:, 20:] == 0)
        R = tr.T_world_from_wrist[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    # hands in front of the device: left on the left, right on the right, below the rig
    for m in motions:
        Td = m.T_world_from_device
        for side, sgn in (("left", -1), ("right", 1)):
            tr = m.hands[side]
            rel = np.einsum("tji,tj->ti", Td[:, :3, :3], tr.T_world_from_wrist[:, :3, 3] - Td[:, :3, 3])[
                tr.present
            ]
            if len(rel):
                med = np.median(rel, axis=0)
                assert sgn * med[0] > -0.01 and 0.03 < med[1] < 0.35 and 0.2 < med[2] < 0.5


def test_presence_varies_over_sequences(subject, arrays):
    ms = [generate_motion(np.random.default_rng(100 + s), subject, 90, mano_arrays=arrays) for s in range(8)]
    pres = np.concatenate([m.hands[s].present for m in ms for s in ("left", "right")])
    assert 0.5 < pres.mean() < 1.0  # hands sometimes leave


def test_motion_statistics_human(motions):
    st = motion_statistics(motions)
    assert 0.008 < st["head_speed_mps"]["p50"] < 0.05 and st["head_speed_mps"]["p95"] < 0.15
    assert 1.5 < st["head_rot_dps"]["p50"] < 12 and st["head_rot_dps"]["p95"] < 40
    assert 0.05 < st["wrist_speed_mps"]["p50"] < 0.35 and st["wrist_speed_mps"]["p95"] < 1.0
    assert 20 < st["wrist_rot_dps"]["p50"] < 150 and st["wrist_rot_dps"]["max"] < 500
    assert st["index_tip_speed_mps"]["p95"] < 1.5
    assert 3 < st["joint_rate_dps"]["p50"] < 40 and st["joint_rate_dps"]["p95"] < 250
    assert st["wrist_gap_m"]["p5"] > 0.075
    # smooth: acceleration of present wrists stays human (no teleports)
    for m in motions:
        for tr in m.hands.values():
            p = tr.T_world_from_wrist[:, :3, 3]
            acc = np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=1) * m.fps**2
            ok = tr.present[2:] & tr.present[1:-1] & tr.present[:-2]
            assert np.all(acc[ok] < 15.0)
            assert np.all(np.linalg.norm(np.diff(p, axis=0), axis=1) < 0.05)


def test_worlds(motions):
    near = np.linalg.norm(motions[0].T_world_from_device[0, :3, 3])
    far = np.linalg.norm(motions[-1].T_world_from_device[0, :3, 3])
    assert motions[-1].world == "hot3d" and near < 0.3 and far > 1.0


def test_deterministic(subject, arrays, motions):
    again = generate_motion(np.random.default_rng(0), subject, 60, mano_arrays=arrays)
    np.testing.assert_array_equal(again.T_world_from_device, motions[0].T_world_from_device)
    for side in ("left", "right"):
        a, b = again.hands[side], motions[0].hands[side]
        for k in ("present", "mano_theta", "mano_wrist_xform", "T_world_from_wrist", "joint_angles"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    s2 = make_subject(np.random.default_rng(5), arrays)
    assert s2.umetrack_profile == subject.umetrack_profile
    assert not np.array_equal(motions[1].hands["left"].mano_theta, motions[0].hands["left"].mano_theta)


def test_bad_world_raises(subject, arrays):
    with pytest.raises(ValueError, match="world"):
        generate_motion(np.random.default_rng(0), subject, 5, world="mars", mano_arrays=arrays)


def test_plot_motion(motions, tmp_path):
    path = plot_motion(motions[0], tmp_path / "img" / "m.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
