import numpy as np
import pytest
import torch

from mvhand.geometry import transforms as g


def test_quaternion_test_vector():
    # spec/formats.md §2.1 test vector: 45 degrees about +y.
    R = g.quat_wxyz_to_matrix([0.9238795325112867, 0, 0.3826834323650898, 0])
    expected = [[0.707107, 0, 0.707107], [0, 1, 0], [-0.707107, 0, 0.707107]]
    np.testing.assert_allclose(R, expected, atol=1e-6)


def test_se3_json_round_trip_and_float32():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        obj = {"quaternion_wxyz": q.tolist(), "translation_xyz": rng.normal(size=3).tolist()}
        T = g.se3_from_json(obj)
        assert T.dtype == np.float32 and T.shape == (4, 4)
        T2 = g.se3_from_json(g.se3_to_json(T))
        np.testing.assert_allclose(T2, T, atol=1e-6)
        # q and -q are the same rotation
        obj_neg = {"quaternion_wxyz": (-q).tolist(), "translation_xyz": obj["translation_xyz"]}
        np.testing.assert_allclose(g.se3_from_json(obj_neg), T, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"quaternion_wxyz": [1, 0, 0], "translation_xyz": [0, 0, 0]},
        {"quaternion_wxyz": [np.nan, 0, 0, 0], "translation_xyz": [0, 0, 0]},
    ],
)
def test_se3_rejects_bad_objects(bad):
    with pytest.raises(ValueError):
        g.se3_from_json(bad)


def test_rodrigues_matches_axis_angle_inverse_near_0_and_pi():
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 46), [0.0, 1e-9, np.pi - 1e-7, np.pi - 1e-3]])
    r = axes * angles[:, None]
    R = g.rodrigues(r)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    r2 = g.axis_angle_from_matrix(R)
    np.testing.assert_allclose(g.rodrigues(r2), R, atol=1e-9)
    r3 = g.axis_angle_from_matrix_torch(torch.tensor(R))
    np.testing.assert_allclose(g.rodrigues(r3.numpy()), R, atol=1e-7)


def test_6d_round_trip():
    R = torch.tensor(g.rodrigues(np.random.default_rng(2).normal(size=(10, 3))))
    np.testing.assert_allclose(
        g.rotation_6d_to_matrix(g.matrix_to_rotation_6d(R)).numpy(), R.numpy(), atol=1e-12
    )
