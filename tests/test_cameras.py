"""Tests of mvhand.geometry.cameras: spec/formats.md §2.2, §3 (registry, projection, unprojection, crops, warp)."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest
import torch
from fixtures import CAMERAS_JSON as TOY_CAMERAS_JSON
from fixtures import HANDS_JSON, HOT3D_RGB_CAMERAS_JSON

from mvhand.geometry.cameras import (
    MODEL_REGISTRY,
    CameraModel,
    camera_from_json,
    camera_to_json,
    cameras_from_json,
    count_visible,
    crop_camera,
    crop_camera_from_points,
    project_pinhole,
    project_pinhole_torch,
    warp_image,
    warp_image_reference,
    warp_maps,
    warp_maps_reference,
)
from mvhand.geometry.transforms import matrix_to_quat_wxyz, rodrigues, se3_from_json
from mvhand.io_utils import InputError

# ------------------------------------------------------------------------------------------------
# Spec literals (spec/formats.md §2.7, §3.6)
# ------------------------------------------------------------------------------------------------

OVR62_PARAMS = [238.41030883789062, 238.40830993652344, 317.5602111816406, 239.81298828125,
                -0.017396999523043633, 0.0824040025472641, -0.04542249068617821, -0.003133118851110339,
                0.0009603622602298856, -0.0016521216602995992, 0, 0]  # fmt: skip
F624_PARAMS = [504.5934753417969, 504.5934753417969, 638.3945922851562, 509.4228515625,
               0.043982941657304764, -0.0448598638176918, 0.01613209955394268, -0.010928832925856113,
               0.003512823488563299, -0.0005242147017270327, 0.00047754947445355356, -4.744782927446067e-05,
               0, 0, 0, 0]  # fmt: skip
F624_PRISM = F624_PARAMS[:12] + [1e-3, -2e-4, 5e-4, 1e-4]

TEST_VECTORS = [
    ("OculusVisionFishEye62", OVR62_PARAMS, (0.05, -0.02, 0.3), (356.886355, 224.073135)),
    ("OculusVisionFishEye62", OVR62_PARAMS, (0.3, 0.2, 0.1), (565.722263, 404.399616)),
    ("OculusVisionFishEye62", OVR62_PARAMS, (0.0, 0.0, 1.0), (317.560211, 239.812988)),
    ("CameraModelType.FISHEYE624", F624_PARAMS, (0.05, -0.02, 0.3), (721.740363, 476.086835)),
    ("CameraModelType.FISHEYE624", F624_PARAMS, (0.3, 0.2, 0.1), (1169.396013, 863.129513)),
    ("CameraModelType.FISHEYE624", F624_PARAMS, (-0.2, 0.1, 0.25), (305.322160, 676.011759)),
    ("CameraModelType.FISHEYE624", F624_PRISM, (0.05, -0.02, 0.3), (721.756223, 476.094866)),
]

#: the toy sequence's two mono cameras and the HOT3D RGB camera (spec/formats.md §2.7, tests/data)
CAMERAS_JSON = {**TOY_CAMERAS_JSON, **HOT3D_RGB_CAMERAS_JSON}

# Moderate distortion parameters for every model (JSON layout), used for round trips and torch checks.
MODEL_PARAMS = {
    "PinholePlane": [300.0, 310.0, 320.0, 240.0],
    "OpenCV": [300.0, 310.0, 320.0, 240.0, -0.1, 0.02, -0.003, 0.001, -0.0015],
    "Rational": [300.0, 310.0, 320.0, 240.0, 0.3, -0.05, 0.01, 0.001, -0.0015, 0.4, -0.04, 0.012],
    "OculusVisionFishEye": [240.0, 241.0, 319.5, 239.5, -0.02, 0.08, -0.045, 0.003, 0.0009, -0.0016, 0.02, -0.01],
    "OculusVisionFishEye62": [240.0, 241.0, 319.5, 239.5, -0.02, 0.08, -0.045, 0.003, 0.0009, -0.0016, 0.001, -0.0005],
    "OculusVisionFishEye624": F624_PRISM[:4] + F624_PRISM[4:],
    "CameraModelType.FISHEYE624": F624_PRISM[1:4] + F624_PRISM[4:],  # 15 params: single focal
}  # fmt: skip


def _entry(model_type: str, params: list[float], width: int = 640, height: int = 480, T=None) -> dict:
    return {
        "T_world_from_camera": T
        or {"quaternion_wxyz": [1.0, 0.0, 0.0, 0.0], "translation_xyz": [0.0, 0.0, 0.0]},
        "calibration": {
            "label": "camera-x",
            "serial_number": "s",
            "image_width": width,
            "image_height": height,
            "projection_model_type": model_type,
            "projection_params": list(params),
        },
    }


def _cam(model_type: str, params=None, **kw) -> CameraModel:
    return camera_from_json(_entry(model_type, MODEL_PARAMS[model_type] if params is None else params, **kw))


# ------------------------------------------------------------------------------------------------
# Registry, JSON
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type, params, eye, window", TEST_VECTORS)
def test_spec_test_vectors(model_type, params, eye, window):
    cam = _cam(model_type, params, width=1408, height=1024)
    np.testing.assert_allclose(cam.eye_to_window(np.array(eye)), window, atol=1e-5)


def test_single_focal_equals_two_focal_layout():
    v = np.array([[0.05, -0.02, 0.3], [0.3, 0.2, 0.1], [-0.2, 0.1, 0.25]])
    p15 = F624_PARAMS[1:]
    p15[0] = F624_PARAMS[0]
    assert len(p15) == 15
    cam15 = _cam("CameraModelType.FISHEYE624", p15)
    cam16 = _cam("CameraModelType.FISHEYE624", F624_PARAMS)
    assert cam15.single_focal and not cam16.single_focal
    np.testing.assert_allclose(cam15.eye_to_window(v), cam16.eye_to_window(v), atol=1e-9)
    # OculusVisionFishEye624 is the same maths with 16 params; 15 params are only valid for FISHEYE624.
    np.testing.assert_allclose(
        _cam("OculusVisionFishEye624", F624_PARAMS).eye_to_window(v), cam16.eye_to_window(v)
    )
    with pytest.raises(InputError, match="OculusVisionFishEye624.*16.*got 15"):
        _cam("OculusVisionFishEye624", p15)


@pytest.mark.parametrize("model_type", sorted(MODEL_REGISTRY))
def test_wrong_parameter_count_is_rejected(model_type):
    good = MODEL_PARAMS[model_type]
    expected = 4 + MODEL_REGISTRY[model_type][2]
    for bad in (good + [0.0], good[:-1]) if model_type != "CameraModelType.FISHEYE624" else (good[:-1],):
        with pytest.raises(InputError, match=rf"{model_type}.*needs {expected}.*got {len(bad)}") as info:
            camera_from_json(_entry(model_type, bad), source="000000.cameras.json")
        assert "000000.cameras.json" in str(info.value)
    if model_type == "CameraModelType.FISHEYE624":
        with pytest.raises(InputError, match="got 17"):
            camera_from_json(_entry(model_type, F624_PARAMS + [0.0]))


def test_unknown_model_and_missing_keys_are_rejected():
    with pytest.raises(InputError, match="unknown projection_model_type 'FishEye62'"):
        camera_from_json(_entry("FishEye62", OVR62_PARAMS), source="x.json")
    entry = _entry("PinholePlane", [1.0, 1.0, 0.0, 0.0])
    del entry["calibration"]["image_width"]
    with pytest.raises(InputError, match="image_width"):
        camera_from_json(entry)
    with pytest.raises(InputError, match="T_world_from_camera"):
        camera_from_json({"calibration": _entry("PinholePlane", [1.0, 1.0, 0.0, 0.0])["calibration"]})
    with pytest.raises(InputError, match="object keyed by stream id"):
        cameras_from_json([1, 2], source="c.json")


def test_extrinsic_validation():
    T = np.eye(4, dtype=np.float32)
    T[0, 0] = 1.0 + 1e-4  # max|RᵀR − I| ≈ 2e-4 ≥ 1e-5
    with pytest.raises(ValueError, match="orthonormal"):
        CameraModel("PinholePlane", 10, 10, 5.0, 5.0, 4.5, 4.5, np.zeros(0), T)
    T[0, 0] = 1.0 + 2e-6  # below the tolerance: accepted
    CameraModel("PinholePlane", 10, 10, 5.0, 5.0, 4.5, 4.5, np.zeros(0), T)
    with pytest.raises(ValueError, match="distortion coefficients"):
        CameraModel("OpenCV", 10, 10, 5.0, 5.0, 4.5, 4.5, np.zeros(4))


def test_json_round_trip_keeps_values_and_extra_keys():
    cams = cameras_from_json(CAMERAS_JSON, source="000000.cameras.json")
    assert {k: camera_to_json(c) for k, c in cams.items()} == CAMERAS_JSON
    c0, rgb = cams["1201-0"], cams["214-1"]
    assert (c0.width, c0.height, c0.fx, c0.cy) == (640, 480, 240.0, 239.5)
    assert c0.extra["max_solid_angle"] == 1.85 and not c0.is_rgb
    assert c0.T_world_from_eye.dtype == np.float32
    np.testing.assert_array_equal(c0.T_world_from_eye[:3, 3], np.float32([-0.03, 0, 0]))
    assert rgb.is_rgb and rgb.single_focal and rgb.fx == rgb.fy == 610.0 and rgb.cx == 703.5
    assert rgb.distortion.shape == (12,)
    # A changed pose is written from the matrix (and reads back to the same matrix).
    c1 = copy.deepcopy(cams["1201-1"])
    T = np.eye(4, dtype=np.float32)
    T[:3, :3] = rodrigues(np.array([0.1, -0.2, 0.3]))
    T[:3, 3] = [0.5, 0.25, -1.0]
    c1.T_world_from_eye = T
    back = camera_from_json(camera_to_json(c1))
    np.testing.assert_allclose(back.T_world_from_eye, T, atol=1e-6)
    assert camera_to_json(c1)["calibration"] == CAMERAS_JSON["1201-1"]["calibration"]


# ------------------------------------------------------------------------------------------------
# NumPy projection maths
# ------------------------------------------------------------------------------------------------


def test_extrinsics_world_eye_batched():
    T = {
        "quaternion_wxyz": [0.9238795325112867, 0.0, 0.3826834323650898, 0.0],
        "translation_xyz": [0.1, -0.2, 0.3],
    }
    cam = _cam("OculusVisionFishEye62", T=T)
    R = np.array([[0.707107, 0, 0.707107], [0, 1, 0], [-0.707107, 0, 0.707107]])
    p = np.random.default_rng(0).normal(size=(2, 3, 5, 3))
    v = cam.world_to_eye(p)
    assert v.shape == p.shape
    np.testing.assert_allclose(v, (p - [0.1, -0.2, 0.3]) @ R, atol=1e-6)
    np.testing.assert_allclose(cam.eye_to_world(v), p, atol=1e-6)
    w = cam.world_to_window(p)
    assert w.shape == (2, 3, 5, 2)
    np.testing.assert_allclose(w, cam.eye_to_window(v))


def test_opencv_and_rational_match_cv2_project_points():
    rng = np.random.default_rng(1)
    v = np.column_stack([rng.uniform(-0.4, 0.4, (50, 2)), rng.uniform(0.5, 2.0, 50)])
    for model_type in ("OpenCV", "Rational"):
        prm = MODEL_PARAMS[model_type]
        fx, fy, cx, cy = prm[:4]
        d = prm[4:]
        # cv2 order: k1, k2, p1, p2, k3[, k4, k5, k6]; ours: k1, k2, k3, p1, p2[, k4, k5, k6]
        cv_d = np.array([d[0], d[1], d[3], d[4], d[2]] + d[5:])
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        ref, _ = cv2.projectPoints(v, np.zeros(3), np.zeros(3), K, cv_d)
        np.testing.assert_allclose(_cam(model_type).eye_to_window(v), ref[:, 0], atol=1e-6)


def test_fisheye_radial_matches_cv2_fisheye():
    """Without tangential terms OVR44 / OVR62 reduce to the Kannala–Brandt model of cv2.fisheye."""
    rng = np.random.default_rng(2)
    v = np.column_stack([rng.uniform(-1, 1, (50, 2)), rng.uniform(0.3, 2.0, 50)])
    k = [-0.02, 0.08, -0.045, 0.003]
    K = np.array([[240.0, 0, 319.5], [0, 241.0, 239.5], [0, 0, 1.0]])
    ref, _ = cv2.fisheye.projectPoints(v[:, None, :], np.zeros(3), np.zeros(3), K, np.array(k))
    for model_type, d in (
        ("OculusVisionFishEye", k + [0, 0, 0, 0]),
        ("OculusVisionFishEye62", k + [0, 0, 0, 0]),
    ):
        cam = _cam(model_type, [240.0, 241.0, 319.5, 239.5] + d)
        np.testing.assert_allclose(cam.eye_to_window(v), ref[:, 0], atol=1e-6)


def test_tangential_pairing_differs_between_opencv_and_ovr62():
    """spec/formats.md §3.5: OVR62 pairs p1 with the x term (opposite of OpenCV / OVR44)."""
    p = np.array([0.2, 0.1])  # projected point; for arctan models use a ray with |p| = θ
    theta = np.linalg.norm(p)
    ray = np.array([*(p / theta * math.sin(theta)), math.cos(theta)])
    base = [100.0, 100.0, 0.0, 0.0]
    q62 = _cam("OculusVisionFishEye62", base + [0, 0, 0, 0, 0.01, 0.0, 0, 0]).eye_to_window(ray) / 100
    q44 = _cam("OculusVisionFishEye", base + [0, 0, 0, 0, 0.01, 0.0, 0, 0]).eye_to_window(ray) / 100
    px, py = p
    r2 = px * px + py * py
    np.testing.assert_allclose(q62, [px + 0.01 * (r2 + 2 * px * px), py + 2 * 0.01 * px * py], atol=1e-12)
    np.testing.assert_allclose(q44, [px + 2 * 0.01 * px * py, py + 0.01 * (r2 + 2 * py * py)], atol=1e-12)


def test_arctan_behind_camera_and_origin():
    cam = _cam("OculusVisionFishEye62", [100.0, 100.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0])
    # θ > π/2 behind the camera, direction kept; r = 0 maps to the principal point.
    w = cam.eye_to_window(np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 2.0], [0.0, 0.0, -2.0]]))
    np.testing.assert_allclose(w[0], [100 * 3 * math.pi / 4, 0.0], atol=1e-9)
    np.testing.assert_allclose(w[1], [0.0, 0.0])
    np.testing.assert_allclose(w[2], [0.0, 0.0])  # r = 0 guard: (0,0)·θ/2⁻¹²⁸ = 0


def test_float32_path():
    cam = _cam("OculusVisionFishEye62")
    rng = np.random.default_rng(3)
    v = np.column_stack([rng.uniform(-0.5, 0.5, (2000, 2)), rng.uniform(0.2, 1.0, 2000)])
    w64 = cam.eye_to_window(v)
    w32 = cam.eye_to_window(v.astype(np.float32))
    assert w32.dtype == np.float32 and w64.dtype == np.float64
    np.testing.assert_allclose(w32, w64, atol=2e-3)
    w32w = cam.world_to_window(v.astype(np.float32))
    assert w32w.dtype == np.float32


@pytest.mark.parametrize("model_type", sorted(MODEL_PARAMS))
def test_window_eye_window_round_trip(model_type):
    cam = _cam(model_type, width=640, height=480)
    if model_type in ("OculusVisionFishEye624", "CameraModelType.FISHEYE624"):
        cam.cx, cam.cy = 320.0, 240.0  # keep the grid inside the valid lens region of these intrinsics
        cam = camera_from_json(camera_to_json(cam))
    xs, ys = np.meshgrid(np.linspace(80, 560, 25), np.linspace(60, 420, 19))  # θ < 1.3 rad
    w = np.stack([xs, ys], -1)
    rays = cam.window_to_eye(w)
    assert rays.shape == (19, 25, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-12)
    assert np.all(rays[..., 2] > 0)
    np.testing.assert_allclose(cam.eye_to_window(rays), w, atol=1e-6)
    # and eye -> window -> eye recovers the direction
    np.testing.assert_allclose(cam.window_to_eye(cam.eye_to_window(rays * 0.7)), rays, atol=1e-8)


def test_pinhole_unprojection_is_exact_formula():
    cam = _cam("PinholePlane")
    w = np.array([[10.0, 400.0], [320.0, 240.0]])
    d = np.column_stack([(w[:, 0] - 320.0) / 300.0, (w[:, 1] - 240.0) / 310.0, np.ones(2)])
    np.testing.assert_allclose(cam.window_to_eye(w), d / np.linalg.norm(d, axis=1, keepdims=True), atol=1e-15)


# ------------------------------------------------------------------------------------------------
# Torch
# ------------------------------------------------------------------------------------------------


def test_pinhole_projection_numpy_and_torch():
    """project_pinhole (NumPy) and project_pinhole_torch (batched over cameras, differentiable) equal the crop
    camera's own world -> window map and the spec/formats.md §3.4 formula written out here."""
    rng = np.random.default_rng(5)
    poses = [
        {"quaternion_wxyz": [0.9, 0.1, -0.2, 0.3], "translation_xyz": [0.1, 0, 0]},
        {"quaternion_wxyz": [0.8, -0.1, 0.2, 0.1], "translation_xyz": [0, 0.2, 0]},
    ]
    crops = [crop_camera(se3_from_json(T), fov, 128) for T, fov in zip(poses, (0.8, 0.5), strict=True)]
    pts = rng.normal(size=(2, 9, 3)) * 0.1 + np.array([0.1, 0.1, 0.5])
    T = torch.from_numpy(np.stack([c.T_world_from_eye.astype(np.float64) for c in crops]))
    K = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in crops], dtype=torch.float64)
    uv_t, z_t = project_pinhole_torch(torch.from_numpy(pts), T, K)
    for i, c in enumerate(crops):
        R, t = c.T_world_from_eye[:3, :3].astype(np.float64), c.T_world_from_eye[:3, 3].astype(np.float64)
        v = (pts[i] - t) @ R
        expected = np.column_stack([c.fx * v[:, 0] / v[:, 2] + c.cx, c.fy * v[:, 1] / v[:, 2] + c.cy])
        uv, z = project_pinhole(pts[i], c.T_world_from_eye, c.K)
        assert uv.dtype == np.float64 and uv.shape == (9, 2)
        np.testing.assert_allclose(uv, expected, rtol=1e-13)
        np.testing.assert_allclose(z, v[:, 2], rtol=1e-13)
        np.testing.assert_array_equal(uv, c.world_to_window(pts[i]))  # the camera model's pinhole maths
        np.testing.assert_allclose(uv_t[i].numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(z_t[i].numpy(), v[:, 2], rtol=1e-12)
    # A point on the camera plane gets a finite (far-off) position and its true depth; one behind, z < 0.
    T0 = crops[0].T_world_from_eye.astype(np.float64)
    on_plane, behind = T0[:3, 3] + 0.1 * T0[:3, 0], T0[:3, 3] - 0.3 * T0[:3, 2]
    uv, z = project_pinhole(np.stack([on_plane, behind]), T0, crops[0].K)
    assert np.all(np.isfinite(uv)) and abs(z[0]) < 1e-9 and abs(uv[0, 0]) > 1e6 and z[1] < 0
    p = torch.from_numpy(pts[0]).requires_grad_(True)
    Tg = T[0].clone().requires_grad_(True)
    Kg = K[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: project_pinhole_torch(a, b, c)[0], (p, Tg, Kg))


# ------------------------------------------------------------------------------------------------
# Crop cameras (spec/formats.md §3.8, §3.11) — worked example of spec/formats.md §2.7 with the toy hand
# model and the FK of spec/formats.md §4.3 (left hand)
# ------------------------------------------------------------------------------------------------

_AXES = [[0.8, 0.6, 0.0], [-0.6, 0.0, 0.8], [0.6, 0.8, 0.0], [0.6, 0.8, 0.0]] + [
    [0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]] * 4  # fmt: skip
_CENTRES = [[20.0, -10.0, 10.0], [35.0, -20.0, 28.0], [60.0, -35.0, 45.0], [83.0, -44.0, 66.0],
            [95.0, -5.0, 22.0], [95.0, -5.0, 22.0], [133.0, -9.0, 21.0], [158.0, -11.0, 20.0],
            [96.0, -2.0, 2.0], [96.0, -2.0, 2.0], [138.0, -6.0, -2.0], [165.0, -8.0, -5.0],
            [89.0, -6.0, -17.0], [89.0, -6.0, -17.0], [126.0, -10.0, -26.0], [152.0, -13.0, -33.0],
            [78.0, -13.0, -35.0], [78.0, -13.0, -35.0], [107.0, -17.0, -42.0], [126.0, -20.0, -48.0]]  # fmt: skip
_LANDMARKS = [[100.0, -50.0, 84.0], [178.0, -12.0, 19.0], [188.0, -9.0, -7.0], [173.0, -15.0, -38.0],
              [145.0, -22.0, -53.0], [0.0, 0.0, 0.0], [60.0, -35.0, 45.0], [83.0, -44.0, 66.0],
              [95.0, -5.0, 22.0], [133.0, -9.0, 21.0], [158.0, -11.0, 20.0], [96.0, -2.0, 2.0],
              [138.0, -6.0, -2.0], [165.0, -8.0, -5.0], [89.0, -6.0, -17.0], [126.0, -10.0, -26.0],
              [152.0, -13.0, -33.0], [78.0, -13.0, -35.0], [107.0, -17.0, -42.0], [126.0, -20.0, -48.0],
              [80.0, -20.0, 0.0]]  # fmt: skip
_LM_FRAME = [4, 7, 10, 13, 16, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 1, 14, 15]  # weight 1 each; palm: below


def _toy_left_landmarks(angles, W) -> np.ndarray:
    """FK (spec/formats.md §4.3) of the toy model (spec/formats.md §2.7), left hand; independent implementation."""
    ax, c = np.array(_AXES), np.array(_CENTRES) / 1000
    L = []
    for j in range(20):
        R = rodrigues(angles[j] * ax[j])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, c[j] - R @ c[j]
        L.append(T)
    F = [W, W] + [None] * 15
    for f in range(5):
        F[2 + 3 * f] = W @ L[4 * f] @ L[4 * f + 1]
        F[3 + 3 * f] = F[2 + 3 * f] @ L[4 * f + 2]
        F[4 + 3 * f] = F[3 + 3 * f] @ L[4 * f + 3]
    lm = np.array(_LANDMARKS) / 1000
    out = [(F[k] @ np.append(lm[n], 1))[:3] for n, k in enumerate(_LM_FRAME)]
    palm = sum(wt * (F[k] @ np.append(lm[20], 1))[:3] for wt, k in ((0.9, 1), (0.07, 8), (0.03, 5)))
    return np.array(out + [palm])


def _example_landmarks() -> np.ndarray:
    pose = HANDS_JSON["left"]["umetrack_pose"]
    W = se3_from_json(pose["T_world_from_wrist"]).astype(np.float64)
    angles = pose["joint_angles"][:20]
    return _toy_left_landmarks(np.array(angles), W)


def test_toy_fk_matches_spec_vector():
    W = np.eye(4)
    W[:3, 3] = [0.1, 0.2, 0.3]
    a = np.zeros(20)
    a[[2, 5, 6, 7]] = [0.2, 0.5, 0.4, 0.3]
    lm = _toy_left_landmarks(a, W)
    np.testing.assert_allclose(lm[0], [0.205545, 0.145841, 0.375077], atol=1e-6)
    np.testing.assert_allclose(lm[20], [0.179839, 0.180271, 0.300000], atol=1e-6)


def test_crop_camera_worked_example():
    crop_json = {"quaternion_wxyz": [0.999754, 0.001081, 0.022170, 0.0], "translation_xyz": [-0.03, 0.0, 0.0]}
    crop = crop_camera(se3_from_json(crop_json), 0.478367, 128)
    assert crop.model_type == "PinholePlane" and crop.width == crop.height == 128
    assert crop.fx == crop.fy == pytest.approx(64 / math.tan(0.478367 / 2))
    assert crop.fx == pytest.approx(262.45, abs=0.01)
    assert crop.cx == crop.cy == 63.5
    w = crop.world_to_window(_example_landmarks())
    np.testing.assert_allclose(w.min(0), [23.7, 9.0], atol=0.05)
    np.testing.assert_allclose(w.max(0), [102.9, 124.3], atol=0.05)
    assert count_visible(_example_landmarks(), crop) == 21


@pytest.mark.parametrize(
    "tx, quat, fov",
    [
        (-0.03, [0.999754, 0.001081, 0.022170, 0.0], 0.478367),
        (0.03, [0.998313, 0.001076, -0.058056, 0.0], 0.467880),
    ],
)
def test_crop_camera_from_points_reproduces_example(tx, quat, fov):
    T_cam = np.eye(4)
    T_cam[0, 3] = tx
    T, f = crop_camera_from_points(T_cam, _example_landmarks(), focal_multiplier=0.95)
    np.testing.assert_allclose(matrix_to_quat_wxyz(T[:3, :3]), quat, atol=2e-6)
    np.testing.assert_array_equal(T[:3, 3], [tx, 0, 0])
    assert f == pytest.approx(fov, abs=1e-6)


def test_crop_camera_from_points_properties():
    rng = np.random.default_rng(6)
    T_cam = np.eye(4)
    T_cam[:3, :3] = rodrigues(np.array([0.2, -0.4, 0.1]))
    T_cam[:3, 3] = [0.3, -0.1, 0.2]
    pts = T_cam[:3, :3] @ np.array([0.2, 0.1, 0.5]) + T_cam[:3, 3] + rng.normal(size=(30, 3)) * 0.03
    T, fov = crop_camera_from_points(T_cam, pts)
    crop = crop_camera(T, fov, 128)
    # the AABB centre lies on the optical axis; the extreme point lands 0.95·S/2 from the centre
    m = crop.world_to_eye(0.5 * (pts.min(0) + pts.max(0)))
    np.testing.assert_allclose(m[:2] / m[2], 0, atol=1e-6)  # float32 pose
    n = crop.world_to_eye(pts)
    assert np.abs(n[:, :2] / n[:, 2:]).max() * crop.fx == pytest.approx(0.95 * 64)
    # roll by 90°: x' = y-axis image rotation about the centre
    T90, fov90 = crop_camera_from_points(T_cam, pts, camera_angle_deg=90.0)
    assert fov90 == pytest.approx(fov)
    v0, v90 = crop.world_to_eye(pts), crop_camera(T90, fov, 128).world_to_eye(pts)
    np.testing.assert_allclose(v90, np.column_stack([v0[:, 1], -v0[:, 0], v0[:, 2]]), atol=1e-12)
    with pytest.raises(ValueError, match="z < 1e-4"):
        crop_camera_from_points(np.eye(4), np.array([[0.0, 0.0, 1.0], [0.0, 2.0, -1.0], [0.0, 1.0, 0.5]]))
    with pytest.raises(ValueError, match="bounding-box centre"):
        crop_camera_from_points(np.eye(4), np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))


def test_count_visible_rule_and_margin():
    cam = _cam("PinholePlane", [100.0, 100.0, 50.0, 50.0], width=101, height=101)
    # window x = 100 z-scaled: x/z*100 + 50
    pts = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [0.505, 0.0, 1.0], [0.0, -0.5, 1.0], [0.0, 0.0, -1.0]])
    assert count_visible(pts, cam) == 3  # x = 100 = W−1 inside, 100.5 outside, behind not counted
    assert count_visible(pts, cam, margin=1.0) == 4
    with pytest.raises(ValueError, match="must be in"):
        crop_camera(np.eye(4), 0.0, 64)


# ------------------------------------------------------------------------------------------------
# Warp (spec/formats.md §3.9)
# ------------------------------------------------------------------------------------------------


def _texture(h: int, w: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, channels)) * 255
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)
    img = np.clip((img - img.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def _crops(src: CameraModel):
    """(rotation vector relative to the source, fov, size) incl. crops partly outside and behind."""
    cases = [
        ((0.1, 0.2, 0.0), 0.5, 224),
        ((0.3, -0.5, 0.2), 0.8, 128),
        ((-0.4, 0.7, 0.0), 0.45, 160),
        ((0.0, 1.15, 0.3), 0.9, 224),  # edge of the fisheye image
        ((0.0, 1.6, 0.0), 1.0, 128),  # partly behind the camera
        ((0.2, 2.6, 0.0), 1.2, 96),  # mostly behind
        ((0.0, 0.0, 0.0), 2.4, 128),  # very wide crop
        ((0.2, -0.3, 0.1), 0.6, 150),  # size not a multiple of the coarse step
    ]
    Ts = src.T_world_from_eye.astype(np.float64)
    for rv, fov, size in cases:
        T = Ts.copy()
        T[:3, :3] = Ts[:3, :3] @ rodrigues(np.array(rv))
        yield crop_camera(T, fov, size)


@pytest.mark.parametrize("channels", [1, 3])
def test_warp_matches_reference(channels):
    src = cameras_from_json(CAMERAS_JSON)["1201-0"]
    img = _texture(480, 640, channels)
    for dst in _crops(src):
        ref = warp_image_reference(img, src, dst)
        fast = warp_image(img, src, dst)
        assert fast.shape == ref.shape == ((dst.height, dst.width) + ((3,) if channels == 3 else ()))
        diff = np.abs(fast.astype(int) - ref.astype(int))
        assert np.mean(diff <= 1) >= 0.999, (dst.T_world_from_eye, diff.max())
        # the behind-camera mask is exact
        mx, my = warp_maps(src, dst)
        rx, ry = warp_maps_reference(src, dst)
        np.testing.assert_array_equal(mx == -1, rx == -1)
        inside = (rx > -2) & (rx < 641) & (ry > -2) & (ry < 481)
        if inside.any():
            assert np.abs(mx - rx)[inside].max() < 3e-3 and np.abs(my - ry)[inside].max() < 3e-3


def test_warp_reference_semantics():
    src = cameras_from_json(CAMERAS_JSON)["1201-0"]
    img = _texture(480, 640)
    dst = list(_crops(src))[4]  # partly behind the camera
    mx, my = warp_maps_reference(src, dst)
    xs, ys = np.meshgrid(np.arange(dst.width, dtype=float), np.arange(dst.height, dtype=float))
    rays = dst.window_to_eye(np.stack([xs, ys], -1))
    v = src.world_to_eye(dst.eye_to_world(rays))
    behind = v[..., 2] < 0
    assert behind.any() and (~behind).any()
    assert np.all(mx[behind] == -1) and np.all(my[behind] == -1)
    np.testing.assert_allclose(mx[~behind], src.eye_to_window(v[~behind])[:, 0], atol=1e-3)
    out = warp_image(img, src, dst)
    assert np.all(out[behind] == 0)


def test_warp_identity_and_offset_centre():
    """Pinhole source = destination gives the image back; a crop camera at another centre uses the general
    path, which equals the reference exactly."""
    pin = _cam("PinholePlane", [200.0, 200.0, 63.5, 47.5], width=128, height=96)
    img = _texture(96, 128, 3, seed=2)
    dst = CameraModel(
        "PinholePlane", 128, 96, 200.0, 200.0, 63.5, 47.5, T_world_from_eye=pin.T_world_from_eye
    )
    np.testing.assert_array_equal(warp_image(img, pin, dst), img)
    src = cameras_from_json(CAMERAS_JSON)["1201-0"]
    T = src.T_world_from_eye.copy()
    T[:3, 3] += [0.01, 0.0, 0.0]
    off = crop_camera(T, 0.7, 96)
    img = _texture(480, 640)
    np.testing.assert_array_equal(warp_image(img, src, off), warp_image_reference(img, src, off))
    out = np.empty((96, 96), np.uint8)
    assert warp_image(img, src, off, out=out) is out
    np.testing.assert_array_equal(out, warp_image_reference(img, src, off))
    with pytest.raises(ValueError, match="PinholePlane"):
        warp_image(img, off, src)
