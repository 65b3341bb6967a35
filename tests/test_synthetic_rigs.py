"""Tests of the synthetic headset rigs (mvhand.synthetic.rigs)."""

from __future__ import annotations

import numpy as np
import pytest

from mvhand.geometry.cameras import camera_from_json, count_visible
from mvhand.geometry.transforms import se3_from_json
from mvhand.synthetic.rigs import cameras_json, hot3d_rig, rig_cameras, umetrack_rig


def _centres(rig):
    return np.stack([c.T_device_from_camera[:3, 3] for c in rig.cameras])


def _axes(rig, col=2):
    return np.stack([c.T_device_from_camera[:3, col] for c in rig.cameras])


def _yaw_pitch(d):
    return np.degrees(np.arctan2(d[0], d[2])), np.degrees(np.arcsin(-d[1]))


def test_umetrack_rig_matches_real_layout():
    rig = umetrack_rig()
    assert rig.stream_ids == ["1201-0", "1201-1", "1201-2", "1201-3"]
    assert [c.label for c in rig.cameras] == [f"camera-{k}" for k in range(4)]
    for c in rig.cameras:
        assert (c.width, c.height) == (640, 480)
        assert c.model_type == "OculusVisionFishEye62" and len(c.params) == 12
        assert 230 < c.params[0] < 245 and c.params[10] == 0 and c.params[11] == 0
        assert c.serial_number.endswith(":mono10bit")
        R = c.T_device_from_camera[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
    C = _centres(rig)
    np.testing.assert_allclose(C.mean(0), 0, atol=1e-12)  # device origin = centroid
    # Real rig (README of the reference recording): baselines 1-2 = 97.6 mm, 0-1 = 73.7 mm.
    assert np.linalg.norm(C[1] - C[2]) == pytest.approx(0.0976, abs=0.002)
    assert np.linalg.norm(C[0] - C[1]) == pytest.approx(0.0737, abs=0.002)
    z = _axes(rig)
    yaw1, pitch1 = _yaw_pitch(z[1])
    yaw2, _ = _yaw_pitch(z[2])
    assert yaw1 == pytest.approx(-10.4, abs=0.5) and yaw2 == pytest.approx(10.4, abs=0.5)
    assert abs(pitch1) < 1.0
    yaw0, pitch0 = _yaw_pitch(z[0])
    assert yaw0 == pytest.approx(-91, abs=1.5) and pitch0 == pytest.approx(40.6, abs=1.0)
    # forward cameras are rolled ~90 deg: their image x axis points (mostly) up = -y in the device frame
    x = _axes(rig, 0)
    assert x[1][1] < -0.9 and x[2][1] < -0.9


def test_hands_in_front_of_the_rig_are_seen_by_the_forward_pair_only():
    cams = rig_cameras(umetrack_rig(), np.eye(4))
    # wrists where the real recording has them: ~0.32 m ahead, ~0.14 m below, +-0.05..0.12 m lateral
    pts = np.array([[-0.05, 0.14, 0.32], [0.11, 0.14, 0.32], [-0.02, 0.10, 0.38], [0.05, 0.12, 0.30]])
    vis = {sid: count_visible(pts, cam) for sid, cam in cams.items()}
    assert vis["1201-1"] == 4 and vis["1201-2"] == 4
    assert vis["1201-0"] == 0 and vis["1201-3"] == 0


def test_cameras_json_round_trip_and_world_pose():
    rig = umetrack_rig(np.random.default_rng(3))
    ang = 0.4
    T_wd = np.eye(4)
    T_wd[:3, :3] = [[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]]
    T_wd[:3, 3] = [1.0, -2.0, 0.5]
    js = cameras_json(rig, T_wd)
    assert list(js) == rig.stream_ids
    for cam_r in rig.cameras:
        e = js[cam_r.stream_id]
        cam = camera_from_json(e)
        np.testing.assert_allclose(cam.T_world_from_eye, T_wd @ cam_r.T_device_from_camera, atol=1e-6)
        np.testing.assert_allclose(cam.projection_params, cam_r.params, rtol=1e-6)
        # UmeTrack real files store identity T_device_from_camera
        np.testing.assert_allclose(
            se3_from_json(e["calibration"]["T_device_from_camera"]), np.eye(4), atol=1e-7
        )
        assert e["calibration"]["stream_id"] == cam_r.stream_id
        # a point 0.3 m along the optical axis projects to the principal point
        p = (T_wd @ cam_r.T_device_from_camera @ np.array([0, 0, 0.3, 1.0]))[:3]
        np.testing.assert_allclose(cam.world_to_window(p), [cam.cx, cam.cy], atol=1e-3)
    hot = hot3d_rig("aria")
    e = cameras_json(hot, T_wd)["1201-1"]
    np.testing.assert_allclose(
        se3_from_json(e["calibration"]["T_device_from_camera"]),
        hot.camera("1201-1").T_device_from_camera,
        atol=1e-6,
    )


def test_hot3d_rigs_streams_and_models():
    aria = hot3d_rig("aria")
    assert aria.stream_ids == ["214-1", "1201-1", "1201-2"]
    rgb = aria.camera("214-1")
    assert rgb.is_rgb and rgb.label == "camera-rgb" and (rgb.width, rgb.height) == (704, 704)
    for c in aria.cameras:
        assert c.model_type == "CameraModelType.FISHEYE624" and len(c.params) == 15
    assert [c.label for c in aria.cameras[1:]] == ["camera-slam-left", "camera-slam-right"]
    assert not any(c.is_rgb for c in aria.cameras[1:])
    q3 = hot3d_rig("Quest3")
    assert q3.stream_ids == ["1201-1", "1201-2"]
    for c in q3.cameras:
        assert len(c.params) == 16 and c.params[0] == c.params[1] and not c.is_rgb
    cam = camera_from_json(cameras_json(aria, np.eye(4))["214-1"])
    assert cam.single_focal and cam.is_rgb
    with pytest.raises(ValueError, match="unknown HOT3D device"):
        hot3d_rig("hololens")


def test_fisheye_models_are_monotonic_to_85_degrees():
    rigs = [umetrack_rig(), hot3d_rig("aria"), hot3d_rig("quest3")]
    rigs += [umetrack_rig(np.random.default_rng(s)) for s in range(5)]
    rigs += [hot3d_rig(d, np.random.default_rng(s)) for s in range(5) for d in ("aria", "quest3")]
    for rig in rigs:
        for sid, cam in rig_cameras(rig, np.eye(4)).items():
            th = np.linspace(0.01, np.radians(85), 200)
            r = np.linalg.norm(
                cam.eye_to_window(np.stack([np.sin(th), np.zeros_like(th), np.cos(th)], -1))
                - [cam.cx, cam.cy],
                axis=1,
            )
            assert np.all(np.diff(r) > 0), (rig.name, sid)


def test_layouts_differ_between_umetrack_and_hot3d():
    ume = umetrack_rig()
    for dev in ("aria", "quest3"):
        hot = hot3d_rig(dev)
        # stereo pair = the two 1201-1 / 1201-2 cameras in both rigs
        b_ume = np.linalg.norm(
            ume.camera("1201-1").T_device_from_camera[:3, 3]
            - ume.camera("1201-2").T_device_from_camera[:3, 3]
        )
        b_hot = np.linalg.norm(
            hot.camera("1201-1").T_device_from_camera[:3, 3]
            - hot.camera("1201-2").T_device_from_camera[:3, 3]
        )
        assert abs(b_ume - b_hot) > 0.015
        for sid in ("1201-1", "1201-2"):
            Ru = ume.camera(sid).T_device_from_camera[:3, :3]
            Rh = hot.camera(sid).T_device_from_camera[:3, :3]
            angle = np.degrees(np.arccos(np.clip((np.trace(Ru.T @ Rh) - 1) / 2, -1, 1)))
            assert angle > 15, (dev, sid, angle)
            assert ume.camera(sid).model_type != hot.camera(sid).model_type


def test_rig_jitter_is_small_and_deterministic():
    a = umetrack_rig(np.random.default_rng(7))
    b = umetrack_rig(np.random.default_rng(7))
    c = umetrack_rig(np.random.default_rng(8))
    nominal = umetrack_rig()
    for ca, cb, cc, cn in zip(a.cameras, b.cameras, c.cameras, nominal.cameras):
        np.testing.assert_array_equal(ca.params, cb.params)
        np.testing.assert_array_equal(ca.T_device_from_camera, cb.T_device_from_camera)
        assert not np.array_equal(ca.params, cc.params)
        assert np.abs(ca.params[:2] - cn.params[:2]).max() < 6.0
        assert np.linalg.norm(ca.T_device_from_camera[:3, 3] - cn.T_device_from_camera[:3, 3]) < 0.01
