"""Synthetic head-mounted camera rigs: an UmeTrack-like 4-camera headset and HOT3D-like Aria / Quest 3.

Device (rig) frame (shared convention with :mod:`mvhand.synthetic.hands`): origin = centroid of the
camera centres, +x = user's right, +y = down, +z = forward, metres. A camera's pose in the world is
``T_world_from_camera = T_world_from_device @ T_device_from_camera`` (spec/formats.md §8.2); its eye frame
is OpenCV-like (+x right in the image, +y down, +z out of the lens).

Layouts (nominal values; ``rng`` adds small per-headset jitter):

* **UmeTrack-like** (modelled on the real rig of the UmeTrack recording ``user_08/recording_12``): four
  640×480 monochrome fisheye cameras, ``OculusVisionFishEye62``, f ≈ 238 px. Cameras 1 and 2 form a
  forward stereo pair (≈ 98 mm baseline, toed out ±10.4°, sensors rolled ≈ 90° so the image x axis
  points up); cameras 0 and 3 sit ≈ 50 mm further back and higher and look sideways and ≈ 40° up.
* **Aria-like** (HOT3D): an RGB fisheye ``214-1`` (704×704, half the real 1408² resolution to keep
  the generation fast; f ≈ 305 px; looking forward and 25° down; sensor rolled 90° as on Aria) and two
  mono SLAM fisheyes ``1201-1`` / ``1201-2`` (640×480, f ≈ 241 px) at the temples, toed out ±25° and
  pitched 25° down, ``CameraModelType.FISHEYE624`` with 15 single-focal parameters.
* **Quest 3-like** (HOT3D): two mono fisheyes ``1201-1`` / ``1201-2`` (640×512, half the real 1280×1024;
  f ≈ 252 px), 76 mm baseline, pitched 35° down, toed out ±18°, unrolled sensors,
  ``CameraModelType.FISHEYE624`` with 16 parameters (fx = fy).

The HOT3D layouts deliberately differ from the UmeTrack one (baselines, orientations, intrinsics,
models) so that a model trained on one rig can be tested on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvhand.geometry.transforms import make_transform, se3_to_json

__all__ = [
    "RigCamera",
    "Rig",
    "umetrack_rig",
    "hot3d_rig",
    "camera_json",
    "cameras_json",
    "rig_cameras",
    "look_rotation",
]


@dataclass
class RigCamera:
    """One camera of a rig (calibration + mounting).

    Attributes:
        stream_id: image stream id, e.g. ``"1201-1"`` (no dots).
        label: calibration label; contains ``"rgb"`` iff the stream is RGB.
        serial_number: calibration serial string.
        width, height: image size in pixels.
        model_type: ``projection_model_type`` (spec/formats.md §3.3).
        params: ``projection_params`` in JSON order (float64).
        T_device_from_camera: ``(4, 4)`` float64 pose of the eye frame in the device frame, metres.
        max_solid_angle: carried into the calibration (unused by readers).
    """

    stream_id: str
    label: str
    serial_number: str
    width: int
    height: int
    model_type: str
    params: np.ndarray
    T_device_from_camera: np.ndarray
    max_solid_angle: float = 1.85

    @property
    def is_rgb(self) -> bool:
        return "rgb" in self.label


@dataclass
class Rig:
    """A headset: its cameras in stream order.

    Attributes:
        name: ``"umetrack"``, ``"aria"`` or ``"quest3"``.
        cameras: the rig's cameras.
        write_device_extrinsics: whether ``calibration.T_device_from_camera`` carries the mounting
            (HOT3D) or the identity (as in the real UmeTrack files, spec/formats.md §2.2).
    """

    name: str
    cameras: list[RigCamera] = field(default_factory=list)
    write_device_extrinsics: bool = True

    @property
    def stream_ids(self) -> list[str]:
        return [c.stream_id for c in self.cameras]

    def camera(self, stream_id: str) -> RigCamera:
        for c in self.cameras:
            if c.stream_id == stream_id:
                return c
        raise KeyError(f"rig {self.name!r} has no stream {stream_id!r} (streams: {self.stream_ids})")


def _direction(yaw_deg: float, pitch_up_deg: float) -> np.ndarray:
    """Unit vector in the device frame from yaw (+ = right) and pitch (+ = up); y points down."""
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_up_deg)
    return np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])


def look_rotation(forward: np.ndarray, x_hint: np.ndarray) -> np.ndarray:
    """Rotation whose columns are the eye axes: z = ``forward``, x = ``x_hint`` made orthogonal to z.

    Args:
        forward: ``(3,)`` optical axis in the parent frame.
        x_hint: ``(3,)`` approximate direction of the image +x axis in the parent frame.

    Returns:
        ``(3, 3)`` float64 proper rotation ``R_parent_from_eye``.
    """
    z = np.asarray(forward, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.asarray(x_hint, dtype=np.float64)
    x = x - z * (x @ z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _roll_hint(forward: np.ndarray, roll_deg: float) -> np.ndarray:
    """Image-x direction for a camera rolled by ``roll_deg`` from 'x = device right' (positive: x tilts up)."""
    z = forward / np.linalg.norm(forward)
    right = np.array([1.0, 0.0, 0.0]) - z * z[0]
    if np.linalg.norm(right) < 1e-6:
        right = np.array([0.0, 0.0, 1.0]) - z * z[2]
    right /= np.linalg.norm(right)
    up = np.cross(right, z)  # right x forward = -down = up  (y down => cross(x, z) = -y)
    r = np.deg2rad(roll_deg)
    return np.cos(r) * right + np.sin(r) * up


def _jitter_rotation(rng: np.random.Generator | None, sigma_deg: float) -> np.ndarray:
    if rng is None or sigma_deg == 0:
        return np.eye(3)
    from mvhand.geometry.transforms import rodrigues

    return rodrigues(np.deg2rad(sigma_deg) * rng.standard_normal(3))


def _build(
    name: str,
    specs: list[dict],
    rng: np.random.Generator | None,
    write_device_extrinsics: bool,
    pos_sigma_m: float = 0.001,
    rot_sigma_deg: float = 0.5,
) -> Rig:
    centres = []
    rotations = []
    for s in specs:
        fwd = _direction(s["yaw"], s["pitch"])
        R = look_rotation(fwd, s.get("x_hint", _roll_hint(fwd, s.get("roll", 0.0))))
        c = np.asarray(s["centre"], dtype=np.float64)
        if rng is not None:
            R = _jitter_rotation(rng, rot_sigma_deg) @ R
            c = c + pos_sigma_m * rng.standard_normal(3)
        centres.append(c)
        rotations.append(R)
    origin = np.mean(centres, axis=0)  # device origin = centroid of the camera centres
    cams = []
    for s, c, R in zip(specs, centres, rotations):
        params = np.asarray(s["params"], dtype=np.float64).copy()
        if rng is not None:
            nf = 1 if s["model_type"] == "CameraModelType.FISHEYE624" and len(params) == 15 else 2
            f_scale = 1.0 + 0.006 * rng.standard_normal()
            params[:nf] *= f_scale  # (fx, fy) or single f
            params[nf : nf + 2] += 0.8 * rng.standard_normal(2)  # principal point, px
            params[nf + 2 :] *= 1.0 + 0.03 * rng.standard_normal()  # keeps θ_d(θ) monotonic
        cams.append(
            RigCamera(
                stream_id=s["stream_id"],
                label=s["label"],
                serial_number=s["serial"],
                width=int(s["width"]),
                height=int(s["height"]),
                model_type=s["model_type"],
                params=params,
                T_device_from_camera=make_transform(R, c - origin),
                max_solid_angle=float(s.get("max_solid_angle", 1.85)),
            )
        )
    return Rig(name=name, cameras=cams, write_device_extrinsics=write_device_extrinsics)


# OVR62 [k1, k2, k3, k4, p1, p2, k5, k6]: radial terms of the magnitude of the real UmeTrack cameras
# (monotonic θ_d(θ) up to 90°), tangential terms of spec/formats.md §3.6's test vector, k5 = k6 = 0.
_OVR62_DIST = [-0.02, 0.09, -0.06, 0.01, 0.00096, -0.00165, 0.0, 0.0]
# Fisheye624 [k0..k5, p0, p1, s0..s3]: Quest 3 values of spec/formats.md §3.6, an Aria-RGB-like and an
# Aria-SLAM-like set (all with θ_d(θ) monotonic beyond 85°).
_F624_DIST = [0.044, -0.0449, 0.0161, -0.0109, 0.0035, -0.00052, 0.00048, -0.00005, 0.0, 0.0, 0.0, 0.0]
_F624_RGB = [0.02, -0.01, 0.004, -0.001, 0.0, 0.0, 0.0006, -0.0003, -0.0004, 0.00007, 0.0003, -0.00002]
_F624_SLAM = [-0.0255, 0.0968, -0.0712, 0.0182, 0.0004, -0.0001, -0.0003, 0.0002, 0.0004, 0.0, -0.0003, 0.0]


def umetrack_rig(rng: np.random.Generator | None = None, serial_base: int = 84022805) -> Rig:
    """UmeTrack-like 4-camera mono fisheye headset (640×480, OculusVisionFishEye62).

    Args:
        rng: ``None`` gives the nominal rig; a generator adds per-headset jitter (≈ 1 mm, 0.5°,
            0.6 % focal, 0.8 px principal point, 3 % distortion).
        serial_base: first camera's serial number (the others count up).

    Returns:
        The :class:`Rig` (streams ``1201-0`` … ``1201-3``, labels ``camera-0`` …).
    """
    # Centres (m) and orientations after the real rig (README of the UmeTrack reference recording):
    # x hints are the image-x axes of the real cameras expressed in the device frame.
    layout = [
        ((-0.0735, -0.0243, -0.0251), -91.1, 40.6, (0.638, -0.740, -0.213)),
        ((-0.0484, 0.0248, 0.0238), -10.4, 0.4, (0.220, -0.975, 0.033)),
        ((0.0492, 0.0238, 0.0259), 10.4, 0.4, (-0.207, -0.977, 0.045)),
        ((0.0727, -0.0243, -0.0246), 91.4, 39.0, (-0.620, -0.759, -0.198)),
    ]
    specs = []
    for k, (centre, yaw, pitch, x_hint) in enumerate(layout):
        specs.append(
            dict(
                stream_id=f"1201-{k}",
                label=f"camera-{k}",
                serial=f"{serial_base + k}:mono10bit",
                width=640,
                height=480,
                model_type="OculusVisionFishEye62",
                params=[238.4, 238.4, 319.5, 239.5, *_OVR62_DIST],
                centre=centre,
                yaw=yaw,
                pitch=pitch,
                x_hint=x_hint,
                max_solid_angle=1.85,
            )
        )
    return _build("umetrack", specs, rng, write_device_extrinsics=False)


def hot3d_rig(device: str = "aria", rng: np.random.Generator | None = None) -> Rig:
    """HOT3D-like headset: ``"aria"`` (RGB 704² + 2 mono SLAM 640×480) or ``"quest3"`` (2 mono 640×512).

    Args:
        device: ``"aria"`` or ``"quest3"`` (case-insensitive).
        rng: ``None`` gives the nominal rig; a generator adds per-headset jitter.

    Returns:
        The :class:`Rig`.

    Raises:
        ValueError: unknown device.
    """
    dev = device.lower()
    if dev == "aria":
        specs = [
            dict(
                stream_id="214-1",
                label="camera-rgb",
                serial="1M0YC2-rgb",
                width=704,
                height=704,
                model_type="CameraModelType.FISHEYE624",
                params=[305.0, 351.5, 351.5, *_F624_RGB],
                centre=(0.045, -0.006, 0.008),
                yaw=0.0,
                pitch=-25.0,
                roll=90.0,
                max_solid_angle=1.75,
            ),
            dict(
                stream_id="1201-1",
                label="camera-slam-left",
                serial="0072510f-slam-left",
                width=640,
                height=480,
                model_type="CameraModelType.FISHEYE624",
                params=[241.0, 319.5, 239.5, *_F624_SLAM],
                centre=(-0.068, 0.002, -0.006),
                yaw=-25.0,
                pitch=-25.0,
                roll=-90.0,
                max_solid_angle=2.4,
            ),
            dict(
                stream_id="1201-2",
                label="camera-slam-right",
                serial="0072510f-slam-right",
                width=640,
                height=480,
                model_type="CameraModelType.FISHEYE624",
                params=[241.0, 319.5, 239.5, *_F624_SLAM],
                centre=(0.068, 0.002, -0.006),
                yaw=25.0,
                pitch=-25.0,
                roll=90.0,
                max_solid_angle=2.4,
            ),
        ]
        return _build("aria", specs, rng, write_device_extrinsics=True)
    if dev == "quest3":
        specs = [
            dict(
                stream_id=f"1201-{k + 1}",
                label=f"camera-slam-{side}",
                serial=f"Q3-{side}-00{k + 1}",
                width=640,
                height=512,
                model_type="CameraModelType.FISHEYE624",
                params=[252.3, 252.3, 319.2, 254.7, *_F624_DIST],
                centre=(sign * 0.038, 0.018, 0.0),
                yaw=sign * 18.0,
                pitch=-35.0,
                roll=0.0,
                max_solid_angle=2.2,
            )
            for k, (side, sign) in enumerate((("left", -1.0), ("right", 1.0)))
        ]
        return _build("quest3", specs, rng, write_device_extrinsics=True)
    raise ValueError(f"unknown HOT3D device {device!r}; expected 'aria' or 'quest3'")


def camera_json(
    cam: RigCamera, T_world_from_device: np.ndarray, write_device_extrinsics: bool = True
) -> dict:
    """One ``cameras.json`` value (spec/formats.md §2.2) for a camera at a device pose.

    Args:
        cam: the rig camera.
        T_world_from_device: ``(4, 4)`` device pose, metres.
        write_device_extrinsics: write the mounting as ``calibration.T_device_from_camera`` (else identity).

    Returns:
        ``{"T_world_from_camera": SE3, "calibration": {...}}`` with plain Python types.
    """
    T_wc = np.asarray(T_world_from_device, dtype=np.float64) @ cam.T_device_from_camera
    T_dc = cam.T_device_from_camera if write_device_extrinsics else np.eye(4)
    return {
        "T_world_from_camera": se3_to_json(T_wc),
        "calibration": {
            "T_device_from_camera": se3_to_json(T_dc),
            "image_height": int(cam.height),
            "image_width": int(cam.width),
            "label": cam.label,
            "max_solid_angle": float(cam.max_solid_angle),
            "projection_model_type": cam.model_type,
            "projection_params": [float(v) for v in cam.params],
            "serial_number": cam.serial_number,
            "stream_id": cam.stream_id,
        },
    }


def cameras_json(rig: Rig, T_world_from_device: np.ndarray) -> dict:
    """The ``cameras.json`` dict of one frame: ``{stream_id: camera_json(...)}`` in rig order.

    Args:
        rig: the headset.
        T_world_from_device: ``(4, 4)`` device pose of the frame, metres.
    """
    return {
        c.stream_id: camera_json(c, T_world_from_device, rig.write_device_extrinsics) for c in rig.cameras
    }


def rig_cameras(rig: Rig, T_world_from_device: np.ndarray) -> dict:
    """``{stream_id: mvhand.geometry.cameras.CameraModel}`` of one frame, parsed from :func:`cameras_json`.

    Going through the JSON guarantees that the renderer uses exactly the (float32-rounded) cameras that a
    reader of the written files will see.
    """
    from mvhand.geometry.cameras import camera_from_json

    return {sid: camera_from_json(v) for sid, v in cameras_json(rig, T_world_from_device).items()}
