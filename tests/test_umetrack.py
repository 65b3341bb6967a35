"""Tests of mvhand.geometry.umetrack: profile loading, FK test vectors (spec/formats.md §4.3, §6.5), mirroring."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from fixtures import GT_LANDMARKS_LEFT, HAND_SHAPES_JSON, HANDS_JSON

from mvhand.geometry.transforms import quat_wxyz_to_matrix, se3_from_json
from mvhand.geometry.umetrack import (
    UmeTrackHandModel,
    canonical_landmarks,
    forward_kinematics,
    forward_kinematics_torch,
    landmark_skinning_matrix,
)
from mvhand.io_utils import InputError

TOY = HAND_SHAPES_JSON["umetrack"]


@pytest.fixture(scope="module")
def model() -> UmeTrackHandModel:
    return UmeTrackHandModel.from_json(copy.deepcopy(TOY))


def _case_angles() -> np.ndarray:
    th = np.zeros(22)
    th[[2, 5, 6, 7]] = [0.2, 0.5, 0.4, 0.3]
    return th


def _case_wrist(rotated: bool) -> np.ndarray:
    W = np.eye(4, dtype=np.float32)
    if rotated:
        W[:3, :3] = quat_wxyz_to_matrix([0.9238795325112867, 0, 0.3826834323650898, 0])
    W[:3, 3] = [0.1, 0.2, 0.3]
    return W


def _reference_fk(m: UmeTrackHandModel, theta, W, is_right: bool) -> np.ndarray:
    """Independent float64, loop-based transcription of spec/formats.md §4.3 (one hand)."""
    W = np.array(W, dtype=np.float64)
    if is_right:
        W = W @ np.diag([-1.0, 1, 1, 1])
    L = []
    for j in range(20):
        a = m.joint_rotation_axes[j].astype(np.float64)
        c = m.joint_rest_positions[j].astype(np.float64)
        r = theta[j] * a
        ang = np.linalg.norm(r)
        R = np.eye(3)
        if ang >= 1e-6:
            k = r / ang
            K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            R = np.cos(ang) * np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * np.outer(k, k)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = c - R @ c
        L.append(T)
    frames = [W, W]
    for f in range(5):
        p = W @ L[4 * f] @ L[4 * f + 1]
        frames += [p, p @ L[4 * f + 2], p @ L[4 * f + 2] @ L[4 * f + 3]]
    out = np.zeros((21, 3))
    for n in range(21):
        omega = np.zeros(17)
        for s in range(m.landmark_rest_bone_weights.shape[1]):
            w = m.landmark_rest_bone_weights[n, s]
            if w != 0:
                omega[m.landmark_rest_bone_indices[n, s]] = w
        x = np.append(m.landmark_rest_positions[n].astype(np.float64), 1.0)
        out[n] = sum(omega[k] * (frames[k] @ x)[:3] for k in range(17))
    return out


# ---------------------------------------------------------------------------------------------------
# Profile loading
# ---------------------------------------------------------------------------------------------------


def test_from_json_converts_like_toolkit(model):
    # The toolkit does torch.tensor(list) (float32) * 0.001 for the three mm arrays.
    for key in ("joint_rest_positions", "landmark_rest_positions", "mesh_vertices"):
        expected = (torch.tensor(TOY[key]) * 0.001).numpy()
        got = getattr(model, key)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    for key in ("joint_frame_index", "joint_parent", "joint_first_child", "joint_next_sibling"):
        arr = getattr(model, key)
        assert arr.dtype == np.int64
        np.testing.assert_array_equal(arr, np.asarray(TOY[key]).astype(np.int64))
    assert model.joint_parent[0] == 255
    assert model.mesh_triangles.dtype == np.int64 and model.mesh_triangles.tolist() == [[0, 1, 2]]
    assert model.landmark_rest_bone_indices.dtype == np.int64
    assert model.joint_rotation_axes.dtype == np.float32 and model.joint_limits.shape == (22, 2)
    assert model.hand_scale == 1.0


@pytest.mark.parametrize("key", ["foo", "hand_model"])
def test_from_json_rejects_unknown_key(key):
    d = copy.deepcopy(TOY)
    d[key] = 1.0
    with pytest.raises(InputError, match=key):
        UmeTrackHandModel.from_json(d)


@pytest.mark.parametrize("key", ["joint_rotation_axes", "landmark_rest_bone_indices", "joint_parent"])
def test_from_json_rejects_missing_required_key(key):
    d = copy.deepcopy(TOY)
    del d[key]
    with pytest.raises(InputError, match=key):
        UmeTrackHandModel.from_json(d)


def test_from_json_rejects_bad_values():
    d = copy.deepcopy(TOY)
    d["joint_rest_positions"] = d["joint_rest_positions"][:5]
    with pytest.raises(InputError, match="joint_rest_positions"):
        UmeTrackHandModel.from_json(d)
    d = copy.deepcopy(TOY)
    d["joint_parent"][3] = 1.5
    with pytest.raises(InputError, match="integers"):
        UmeTrackHandModel.from_json(d)
    d = copy.deepcopy(TOY)
    d["landmark_rest_bone_indices"][0] = [17, 4, 4]
    with pytest.raises(InputError, match="0..16"):
        UmeTrackHandModel.from_json(d)
    d = copy.deepcopy(TOY)
    d["landmark_rest_positions"][2][1] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        UmeTrackHandModel.from_json(d)


def test_optional_keys_may_be_absent_and_hand_scale_is_ignored(model):
    d = {k: v for k, v in copy.deepcopy(TOY).items() if k in UmeTrackHandModel.__dataclass_fields__}
    for key in ("hand_scale", "mesh_vertices", "mesh_triangles", "dense_bone_weights", "joint_limits"):
        d.pop(key)
    small = UmeTrackHandModel.from_json(d)
    assert small.mesh_vertices is None and small.hand_scale is None
    assert set(small.to_json()) == set(d)
    scaled = UmeTrackHandModel.from_json({**copy.deepcopy(TOY), "hand_scale": 3.0})
    th, W = _case_angles(), _case_wrist(True)
    np.testing.assert_array_equal(
        forward_kinematics(scaled, th, W, False), forward_kinematics(small, th, W, False)
    )


def test_to_json_round_trip(model):
    j = model.to_json()
    assert set(j) == set(TOY)
    for key, value in TOY.items():  # values back in millimetres
        np.testing.assert_allclose(np.asarray(j[key], dtype=np.float64), np.asarray(value), atol=1e-4)
    again = UmeTrackHandModel.from_json(j)
    assert again.equals(model)
    assert again.to_json() == j


def test_mm_round_trip_is_exact_for_arbitrary_values():
    rng = np.random.default_rng(3)
    d = copy.deepcopy(TOY)
    d["joint_rest_positions"] = (rng.normal(size=(22, 3)) * 80).tolist()
    d["landmark_rest_positions"] = (rng.uniform(-200, 200, size=(21, 3))).tolist()
    m = UmeTrackHandModel.from_json(d)
    assert UmeTrackHandModel.from_json(m.to_json()).equals(m)


# ---------------------------------------------------------------------------------------------------
# Forward kinematics: spec test vectors
# ---------------------------------------------------------------------------------------------------

CASE_A = {  # landmark -> (left, right), spec/formats.md §4.3
    0: ((0.205545, 0.145841, 0.375077), (-0.005545, 0.145841, 0.375077)),
    1: ((0.246719, 0.133442, 0.319000), (-0.046719, 0.133442, 0.319000)),
    5: ((0.1, 0.2, 0.3), (0.1, 0.2, 0.3)),
    7: ((0.185958, 0.153781, 0.360853), (0.014042, 0.153781, 0.360853)),
    9: ((0.226430, 0.173271, 0.321000), (-0.026430, 0.173271, 0.321000)),
    10: ((0.240404, 0.152445, 0.320000), (-0.040404, 0.152445, 0.320000)),
    20: ((0.179839, 0.180271, 0.300000), (0.020161, 0.180271, 0.300000)),
}
CASE_B = {
    0: ((0.227719, 0.145841, 0.278456), (0.078456, 0.145841, 0.427719)),
    1: ((0.217181, 0.133442, 0.209689), (0.009689, 0.133442, 0.417181)),
}


@pytest.mark.parametrize("case", ["A", "B"])
@pytest.mark.parametrize("is_right", [False, True])
def test_fk_spec_vectors(model, case, is_right):
    table = CASE_A if case == "A" else CASE_B
    lm = forward_kinematics(model, _case_angles(), _case_wrist(case == "B"), is_right)
    assert lm.shape == (21, 3) and lm.dtype == np.float32
    for idx, (left, right) in table.items():
        np.testing.assert_allclose(lm[idx], right if is_right else left, atol=1e-5, err_msg=f"landmark {idx}")


def test_fk_gt_example_of_section_6_5(model):
    pose = HANDS_JSON["left"]["umetrack_pose"]
    lm = forward_kinematics(model, pose["joint_angles"], se3_from_json(pose["T_world_from_wrist"]), False)
    np.testing.assert_allclose(canonical_landmarks(lm), np.array(GT_LANDMARKS_LEFT), atol=1e-5)


def test_rest_pose_identity(model):
    for is_right in (False, True):
        lm = forward_kinematics(model, np.zeros(20), np.eye(4), is_right)
        expected = model.landmark_rest_positions * (np.array([-1, 1, 1], np.float32) if is_right else 1)
        np.testing.assert_allclose(lm, expected, atol=1e-7)


def test_zero_and_tiny_angles_give_no_nan(model):
    # spec/formats.md §9 item 14: old toolkit versions returned NaN when an angle was exactly 0;
    # identity guard of spec/formats.md §4.6.
    W = _case_wrist(True)
    lm0 = forward_kinematics(model, np.zeros(22), W, False)
    assert np.all(np.isfinite(lm0))
    rest_world = model.landmark_rest_positions @ W[:3, :3].T + W[:3, 3]
    np.testing.assert_allclose(lm0, rest_world, atol=1e-6)
    tiny = forward_kinematics(model, np.full(22, 1e-8), W, False)
    np.testing.assert_array_equal(tiny, lm0)  # below the 1e-6 guard: exactly the identity
    lt = forward_kinematics_torch(model, torch.zeros(22), torch.tensor(W), False)
    assert torch.isfinite(lt).all()


def test_landmark_weights_are_assigned_not_accumulated(model):
    d = copy.deepcopy(TOY)
    d["landmark_rest_bone_indices"][0] = [4, 4, 1]
    d["landmark_rest_bone_weights"][0] = [0.5, 0.5, 0.0]
    m = UmeTrackHandModel.from_json(d)
    omega = landmark_skinning_matrix(m)
    assert omega[0, 4] == 0.5 and omega[0].sum() == 0.5  # assignment: 0.5, not 1.0
    assert (
        omega[20, 1] == np.float32(0.9)
        and omega[20, 8] == np.float32(0.07)
        and omega[20, 5] == np.float32(0.03)
    )
    lm = forward_kinematics(m, _case_angles(), _case_wrist(False), False)
    ref = _reference_fk(m, _case_angles(), _case_wrist(False), False)
    np.testing.assert_allclose(lm, ref, atol=2e-6)


def test_fk_matches_independent_reference_on_random_poses(model):
    rng = np.random.default_rng(0)
    n = 6
    theta = rng.uniform(-1.0, 1.5, size=(n, 22))
    theta[:, 3] = 0.0  # exact zeros exercise the guard
    q = rng.normal(size=(n, 4))
    W = np.tile(np.eye(4), (n, 1, 1))
    W[:, :3, :3] = quat_wxyz_to_matrix(q)
    W[:, :3, 3] = rng.normal(size=(n, 3))
    is_right = np.array([False, True, False, True, True, False])
    lm = forward_kinematics(model, theta, W, is_right)
    assert lm.shape == (n, 21, 3) and lm.dtype == np.float32
    for i in range(n):
        np.testing.assert_allclose(lm[i], _reference_fk(model, theta[i], W[i], is_right[i]), atol=3e-6)
        single = forward_kinematics(model, theta[i], W[i], bool(is_right[i]))
        np.testing.assert_allclose(single, lm[i], atol=1e-7)
    np.testing.assert_array_equal(forward_kinematics(model, theta[:, :20], W, is_right), lm)  # 20 == 22


def test_fk_broadcasting(model):
    rng = np.random.default_rng(1)
    theta = rng.uniform(-0.5, 1.0, size=(2, 3, 22)).astype(np.float32)
    W = _case_wrist(True)  # one wrist for all
    lm = forward_kinematics(model, theta, W, np.array([[True], [False]]))
    assert lm.shape == (2, 3, 21, 3)
    np.testing.assert_allclose(lm[1, 2], forward_kinematics(model, theta[1, 2], W, False), atol=1e-7)
    np.testing.assert_allclose(lm[0, 1], forward_kinematics(model, theta[0, 1], W, True), atol=1e-7)
    with pytest.raises(ValueError, match="20 or 22"):
        forward_kinematics(model, np.zeros(21), W, False)


def test_right_hand_is_mirror_of_left_in_wrist_frame(model):
    rng = np.random.default_rng(2)
    theta = rng.uniform(-0.5, 1.2, size=22)
    left = forward_kinematics(model, theta, np.eye(4), False)
    right = forward_kinematics(model, theta, np.eye(4), True)
    np.testing.assert_allclose(right, left * np.array([-1, 1, 1]), atol=1e-7)


def test_canonical_landmarks(model):
    lm = forward_kinematics(model, np.zeros((4, 22)), np.eye(4), False)
    can = canonical_landmarks(lm)
    assert can.shape == (4, 20, 3)
    np.testing.assert_array_equal(can, lm[:, :20])
    assert canonical_landmarks(torch.zeros(2, 21, 3)).shape == (2, 20, 3)
    with pytest.raises(ValueError):
        canonical_landmarks(np.zeros((20, 3)))


# ---------------------------------------------------------------------------------------------------
# Mirroring, mesh, torch
# ---------------------------------------------------------------------------------------------------


def test_mirrored_model_equals_wrist_reflection(model):
    """UmeTrack's mirrored-model formulation (spec/formats.md §4.5): a right hand equals, as a left hand, the model
    with rest positions x -> -x and rotation axes (ax, ay, az) -> (ax, -ay, -az)."""
    rng = np.random.default_rng(4)
    theta = rng.uniform(-0.8, 1.5, size=(5, 22))
    W = np.tile(np.eye(4), (5, 1, 1))
    W[:, :3, :3] = quat_wxyz_to_matrix(rng.normal(size=(5, 4)))
    W[:, :3, 3] = rng.normal(size=(5, 3))
    flip_x = np.array([-1, 1, 1], np.float32)
    mirrored = dataclasses.replace(
        model,
        joint_rotation_axes=model.joint_rotation_axes * np.array([1, -1, -1], np.float32),
        joint_rest_positions=model.joint_rest_positions * flip_x,
        landmark_rest_positions=model.landmark_rest_positions * flip_x,
    )
    np.testing.assert_allclose(
        forward_kinematics(mirrored, theta, W, False), forward_kinematics(model, theta, W, True), atol=2e-7
    )
    assert not np.allclose(
        forward_kinematics(mirrored, theta, W, False), forward_kinematics(model, theta, W, False)
    )


def test_torch_fk_matches_numpy_and_is_differentiable(model):
    rng = np.random.default_rng(5)
    theta = rng.uniform(-0.5, 1.2, size=(4, 22)).astype(np.float32)
    theta[:, 0] = 0.0
    W = np.tile(np.eye(4, dtype=np.float32), (4, 1, 1))
    W[:, :3, :3] = quat_wxyz_to_matrix(rng.normal(size=(4, 4)))
    W[:, :3, 3] = rng.normal(size=(4, 3))
    is_right = np.array([True, False, False, True])
    th = torch.tensor(theta, requires_grad=True)
    lt = forward_kinematics_torch(model, th, torch.tensor(W), torch.tensor(is_right))
    np.testing.assert_allclose(lt.detach().numpy(), forward_kinematics(model, theta, W, is_right), atol=1e-6)
    lt.square().sum().backward()
    assert th.grad is not None and torch.isfinite(th.grad).all()
    assert th.grad[:, 20:].abs().max() == 0  # wrist DoFs are unused
    assert th.grad[:, :20].abs().max() > 0
    # double precision works too
    l64 = forward_kinematics_torch(model, th.detach().double(), torch.tensor(W).double(), True)
    assert l64.dtype == torch.float64
