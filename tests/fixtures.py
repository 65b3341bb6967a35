"""Shared test data and writers: the one place tests get toy sequences, images, crop caches and payloads.

* The toy sequence of spec/formats.md §2.7 (cameras, hands, crops, hand shapes) and the spec/formats.md §6.5
  GT landmarks of its left hand, loaded from ``tests/data/toy_sequence.json``. The dicts are shared: never
  modify them in place (deep-copy first).
* :func:`jpeg_image`: the one synthetic JPEG image (smooth texture or incompressible noise).
* Sequence tars: :func:`write_toy_tar` (several frames, both hands, for GT / submission tests),
  :func:`write_crop_sequence` (crop-cache tests), :func:`write_umetrack_sequence` (reader round trips),
  :func:`write_raw_tar` (member by member, no validation: as broken as a test needs).
* :func:`make_crop_cache` (a crop-cache Parquet with exact landmark projections), :func:`make_mano_arrays`
  (random MANO arrays of the official shapes), :func:`prediction_table`, :class:`ShellPayload`.

Test modules import from here (``from fixtures import ...``), never from each other.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from mvhand.formats.sequence import SequenceWriter
from mvhand.formats.submission import expected_pose_instances
from mvhand.geometry.cameras import project_pinhole
from mvhand.geometry.mano import MANO_PARENTS, ManoModel
from mvhand.geometry.transforms import axis_angle_from_matrix, rodrigues
from mvhand.model.data import AugmentConfig

DATA = Path(__file__).resolve().parent / "data"

_TOY = json.loads((DATA / "toy_sequence.json").read_text(encoding="utf-8"))
SEQUENCE_NAME: str = _TOY["sequence_name"]
CAMERAS_JSON: dict = _TOY["cameras"]
HOT3D_RGB_CAMERAS_JSON: dict = _TOY["hot3d_rgb_cameras"]
HANDS_JSON: dict = _TOY["hands"]
HAND_CROPS_JSON: dict = _TOY["hand_crops"]
HAND_SHAPES_JSON: dict = _TOY["hand_shapes"]
#: (20, 3) canonical GT landmarks of the toy left hand, metres, world frame (spec/formats.md §6.5)
GT_LANDMARKS_LEFT: list = _TOY["gt_landmarks_left"]

#: the toy sequence's two mono streams, and the stream id of an optional RGB camera
STREAMS = ("1201-0", "1201-1")
RGB_STREAM = "214-1"


NO_AUG = AugmentConfig(enabled=False, extrinsic_noise=0.0)  # training samples without augmentation


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


@functools.cache
def jpeg_image(height: int, width: int, seed: int = 0, rgb: bool = False, noise: bool = False) -> bytes:
    """JPEG (quality 95) of a ``height × width`` grey (or RGB) image.

    The default is a low-frequency texture chosen by ``seed`` (JPEG-friendly, so comparisons after decoding
    keep small tolerances); ``noise=True`` gives incompressible uniform noise instead (large files).
    """
    rng = np.random.default_rng(seed)
    if noise:
        img = rng.integers(0, 256, size=(height, width, 3) if rgb else (height, width), dtype=np.uint8)
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        a, b, c = rng.uniform(0.02, 0.06, 3)
        img = np.clip(127 + 60 * np.sin(a * xx + b * yy) + 50 * np.cos(c * xx - a * yy), 0, 255)
        img = img.astype(np.uint8)
        if rgb:
            img = np.stack([img, 255 - img, np.full_like(img, 40)], -1)
    buf = io.BytesIO()
    Image.fromarray(img, "RGB" if rgb else "L").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Sequence tars
# --------------------------------------------------------------------------------------------------


def write_raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar of ``(name, data)`` members in the given order (no validation: it may be as broken as asked)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _toy_hand(dx: float, mano: bool = True) -> dict:
    h = copy.deepcopy(HANDS_JSON["left"])
    t = h["umetrack_pose"]["T_world_from_wrist"]["translation_xyz"]
    t[0] += dx
    if mano:
        h["mano_pose"]["wrist_xform"][3] += dx
    else:
        del h["mano_pose"]
    return h


def write_toy_tar(
    path: Path, frame_ids, right_every: int = 2, shapes: bool = True, hands: bool = True, no_mano=(2,)
) -> Path:
    """Toy sequence: left hand in every frame except frame 3 (no crops at all), right hand every
    ``right_every``-th frame; ``no_mano`` frames lack the left hand's mano_pose (GT pose = zeros)."""
    img = jpeg_image(8, 8)
    crops_left = HAND_CROPS_JSON["left"]
    with SequenceWriter(path) as w:
        if shapes:
            w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
        for k, fid in enumerate(frame_ids):
            crops, hj = {}, {}
            if fid != 3:
                crops["left"] = crops_left
                hj["left"] = _toy_hand(0.002 * k, mano=fid not in no_mano)
            if k % right_every == right_every - 1:
                crops["right"] = crops_left
                hj["right"] = _toy_hand(0.1 + 0.001 * k)
            w.write_frame(fid, CAMERAS_JSON, crops, hj if hands else None, {s: img for s in CAMERAS_JSON})
    return path


def _rgb_camera_json() -> dict:
    """A small single-focal FISHEYE624 RGB camera at the pose of stream 1201-0."""
    cam = copy.deepcopy(CAMERAS_JSON["1201-0"])
    cam["calibration"].update(
        {
            "image_height": 240,
            "image_width": 320,
            "label": "camera-rgb",
            "projection_model_type": "CameraModelType.FISHEYE624",
            "projection_params": [120.0, 159.5, 119.5, 0.39, -0.38, -0.11, 1.08, -1.35, 0.51]
            + [0.0006, -0.0003, -0.0004, 7e-05, 0.0003, -2e-05],
            "stream_id": RGB_STREAM,
        }
    )
    return cam


def write_crop_sequence(
    path: Path,
    n_frames: int = 3,
    hands: bool = True,
    shapes: bool = True,
    crops: bool = True,
    rgb: bool = False,
) -> Path:
    """Toy sequence of spec/formats.md §2.7: two mono fisheye cameras (+ optional RGB), left hand cropped."""
    cameras = {sid: copy.deepcopy(CAMERAS_JSON[sid]) for sid in STREAMS}
    hand_crops = copy.deepcopy(HAND_CROPS_JSON)
    if rgb:
        cameras[RGB_STREAM] = _rgb_camera_json()
        hand_crops["left"][RGB_STREAM] = copy.deepcopy(HAND_CROPS_JSON["left"]["1201-0"])
    with SequenceWriter(path) as w:
        if shapes:
            w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
        for k in range(n_frames):
            images = {sid: jpeg_image(480, 640, 10 * k + i) for i, sid in enumerate(STREAMS)}
            if rgb:
                images[RGB_STREAM] = jpeg_image(240, 320, 7 * k, rgb=True)
            w.write_frame(
                k,
                cameras,
                hand_crops if crops else {},
                copy.deepcopy(HANDS_JSON) if hands else None,
                images,
            )
    return path


def mono_images(seed: int = 0) -> dict[str, bytes]:
    """JPEGs (480 × 640) of the toy sequence's two mono streams."""
    return {sid: jpeg_image(480, 640, seed + i) for i, sid in enumerate(STREAMS)}


def right_hand() -> dict:
    """A right hand for the toy sequence: 20 joint angles (accepted), no mano_pose, shifted wrist."""
    right = copy.deepcopy(HANDS_JSON["left"])
    right["umetrack_pose"]["joint_angles"] = right["umetrack_pose"]["joint_angles"][:20]  # 20 accepted
    right["umetrack_pose"]["T_world_from_wrist"]["translation_xyz"] = [0.05, 0.08, 0.35]
    del right["mano_pose"]
    return right


def write_umetrack_sequence(path: Path, hands: bool = True, shapes: bool = True) -> Path:
    """3 frames, two streams: left hand only / both hands / no hand (hands.json '{}')."""
    crops_both = {"left": HAND_CROPS_JSON["left"], "right": {"1201-1": HAND_CROPS_JSON["left"]["1201-1"]}}
    with SequenceWriter(path) as w:
        if shapes:
            w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
        w.write_frame(0, CAMERAS_JSON, HAND_CROPS_JSON, HANDS_JSON if hands else None, mono_images(0))
        w.write_frame(
            1,
            CAMERAS_JSON,
            crops_both,
            {**HANDS_JSON, "right": right_hand()} if hands else None,
            mono_images(1),
        )
        w.write_frame(2, CAMERAS_JSON, {}, {} if hands else None, mono_images(2))
    return path


# --------------------------------------------------------------------------------------------------
# Crop caches, MANO arrays, prediction tables, payloads
# --------------------------------------------------------------------------------------------------

#: middle fingertip: the landmark make_crop_cache draws as a dot into every crop
DOT_LANDMARK = 2


def _look_at(centre: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1) @ rodrigues(np.array([0.0, 0.0, roll]))
    T[:3, 3] = centre
    return T


def make_crop_cache(
    path: Path,
    mano: ManoModel,
    sequence: str = "seq_a",
    n_frames: int = 3,
    sides: tuple[int, ...] = (0, 1),
    n_views: int = 2,
    crop_size: int = 96,
    with_gt: bool = True,
    seed: int = 0,
    dot: bool = True,
) -> Path:
    """Write a synthetic crop-cache Parquet; returns ``path``."""
    rng = np.random.default_rng(seed)
    betas = rng.normal(0, 1, 10).astype(np.float32)
    rows = []
    for frame in range(n_frames):
        for side in sides:
            theta = rng.normal(0, 0.5, 15)
            rot = rodrigues(rng.normal(0, 1.0, 3))
            root = np.array([0.15 * (side - 0.5), 0.05, 0.45]) + rng.normal(0, 0.03, 3) + [0.2, -0.1, 0.3]
            j0 = mano.layer(side).root_joint(torch.tensor(betas)).numpy().reshape(3)
            wrist = np.concatenate([axis_angle_from_matrix(rot), root - j0])
            lm = mano.layer(side).landmarks(theta[None], wrist[None, :3], wrist[None, 3:], betas[None])
            lm = lm.detach().numpy()[0].astype(np.float64)
            centre = lm.mean(0)
            for v in range(n_views):
                cam_c = np.array([0.2 + 0.05 * (v - 0.5), -0.1 + 0.02 * v, 0.3])
                T = _look_at(cam_c, centre + rng.normal(0, 0.01, 3), rng.uniform(-0.5, 0.5))
                fov = 2 * math.atan(0.25 / np.linalg.norm(centre - cam_c))
                render_fov = 2 * math.atan(1.5 * math.tan(fov / 2))
                f = (crop_size / 2) / math.tan(render_fov / 2)
                K = np.array([f, f, (crop_size - 1) / 2, (crop_size - 1) / 2])
                uv, z = project_pinhole(lm, T, K)
                img = np.full((crop_size, crop_size), 20, np.uint8)
                if dot:
                    yy, xx = np.mgrid[:crop_size, :crop_size]
                    u0, v0 = uv[DOT_LANDMARK]
                    img = np.clip(
                        20 + 230 * np.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 1.5**2)), 0, 255
                    )
                    img = img.astype(np.uint8)
                ok, jpg = cv2.imencode(".png", img)  # lossless: the dot test needs exact content
                rows.append(
                    {
                        "sequence_name": sequence,
                        "frame_id": frame,
                        "hand_side": side,
                        "view_index": v,
                        "stream_id": f"cam{v}",
                        "image_jpeg": jpg.tobytes(),
                        "crop_size": crop_size,
                        "fov": fov,
                        "render_fov": render_fov,
                        "intrinsics": K.tolist(),
                        "T_world_from_crop": T.reshape(-1).tolist(),
                        "mano_beta": betas.tolist() if with_gt else None,
                        "landmarks_world": lm.reshape(-1).tolist() if with_gt else None,
                        "landmarks_crop": uv.reshape(-1).tolist() if with_gt else None,
                        "mano_theta": theta.tolist() if with_gt else None,
                        "mano_wrist_xform": wrist.tolist() if with_gt else None,
                        "n_visible": int(np.sum(z > 0)) if with_gt else -1,
                    }
                )
    f32 = pa.float32()
    schema = pa.schema(
        [
            ("sequence_name", pa.string()),
            ("frame_id", pa.int32()),
            ("hand_side", pa.int8()),
            ("view_index", pa.int8()),
            ("stream_id", pa.string()),
            ("image_jpeg", pa.binary()),
            ("crop_size", pa.int16()),
            ("fov", f32),
            ("render_fov", f32),
            ("intrinsics", pa.list_(f32, 4)),
            ("T_world_from_crop", pa.list_(f32, 16)),
            ("mano_beta", pa.list_(f32)),
            ("landmarks_world", pa.list_(f32)),
            ("landmarks_crop", pa.list_(f32)),
            ("mano_theta", pa.list_(f32)),
            ("mano_wrist_xform", pa.list_(f32)),
            ("n_visible", pa.int8()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def make_mano_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random but valid right-hand MANO arrays with the official shapes and conventions."""
    rng = np.random.default_rng(seed)
    nv, nj = 778, 16
    # Joints: wrist off the origin, fingers fanning out along +y.
    joints = np.zeros((nj, 3))
    joints[0] = [0.09, 0.006, 0.005]
    finger_dirs = {1: -0.02, 4: 0.0, 7: 0.04, 10: 0.02, 13: -0.045}
    for start, dx in finger_dirs.items():
        base = joints[0] + [dx, 0.08 if start != 13 else 0.03, 0.0]
        for k in range(3):
            joints[start + k] = base + [dx * 0.2 * k, 0.025 * k, -0.003 * k]
    # Vertices scattered around the joints.
    owner = rng.integers(0, nj, nv)
    v_template = joints[owner] + rng.normal(0, 0.008, (nv, 3))
    # Convex-combination joint regressor: each joint averages ~12 of its own vertices.
    J_regressor = np.zeros((nj, nv))
    for j in range(nj):
        ids = np.flatnonzero(owner == j)
        if ids.size == 0:
            ids = rng.integers(0, nv, 4)
        ids = ids[:12]
        w = rng.uniform(0.5, 1.0, ids.size)
        J_regressor[j, ids] = w / w.sum()
    # Skinning weights: the owner joint plus up to two random joints, rows sum to 1.
    weights = np.zeros((nv, nj))
    weights[np.arange(nv), owner] = rng.uniform(0.5, 1.0, nv)
    for _ in range(2):
        weights[np.arange(nv), rng.integers(0, nj, nv)] += rng.uniform(0.0, 0.4, nv)
    weights /= weights.sum(1, keepdims=True)
    kintree = np.zeros((2, nj), dtype=np.uint32)
    kintree[0] = [2**32 - 1, *MANO_PARENTS[1:]]
    kintree[1] = np.arange(nj)
    # Smooth shape directions: per beta an affine field of the vertex position (cm per unit beta).
    shapedirs = np.zeros((nv, 3, 10))
    for b in range(10):
        A = rng.normal(0, 0.1 / (1 + b), (3, 3))
        c = rng.normal(0, 0.004 / (1 + b), 3)
        shapedirs[:, :, b] = (v_template - joints[0]) @ A.T + c + rng.normal(0, 2e-4, (nv, 3))
    posedirs = rng.normal(0, 1e-3, (nv, 3, 135)) + 2e-3 * np.sin(v_template[:, :, None] * 40.0)
    Q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    hands_components = Q.T * np.linspace(1.0, 0.2, 45)[:, None]  # rows orthogonal
    hands_components = hands_components / np.linalg.norm(hands_components, axis=1, keepdims=True)
    hands_mean = rng.normal(0, 0.15, 45)
    faces = rng.integers(0, nv, (1538, 3)).astype(np.uint32)
    return {
        "v_template": v_template,
        "f": faces,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "hands_components": hands_components,
        "hands_mean": hands_mean,
        "J": J_regressor @ v_template,  # extra keys of the official file are ignored
        "bs_style": "lbs",
    }


#: keys loaded as float64 arrays equal to what was pickled
FLOAT_KEYS = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "hands_components",
    "hands_mean",
)


def prediction_table(tars, rng, drop=(), nan=()) -> pd.DataFrame:
    """Random predictions for the expected umetrack pose instances of ``tars`` (``drop``: left out; ``nan``: NaN
    theta), as the predict stage's columns needed by packaging."""
    rows = []
    for inst in expected_pose_instances(tars, "umetrack"):
        if inst in drop:
            continue
        theta = rng.normal(0, 0.3, 15)
        if inst in nan:
            theta[0] = np.nan
        rows.append(
            dict(
                sequence_name=inst[0], frame_id=inst[1], hand_side=inst[2], mano_theta=theta,
                wrist_xform=np.r_[rng.normal(0, 0.5, 3), -0.05 + 0.2 * inst[2], 0.08, 0.35],
                mano_beta_pred=rng.normal(0, 1, 10),
            )
        )  # fmt: skip
    return pd.DataFrame(rows)


class ShellPayload:
    """``pickle``-ing this and loading it back with a plain unpickler would run ``touch <marker>``.

    The tests put it into files mvhand reads (model files, weights) and assert that the marker never appears.
    """

    def __init__(self, marker: str | os.PathLike):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
