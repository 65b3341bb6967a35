"""Synthetic subjects and natural two-hand egocentric motion (UmeTrack + MANO annotations).

* :func:`make_subject`: MANO betas ~ N(0, 0.8²) and the UmeTrack profile *derived from the MANO hand at
  those betas* (:func:`umetrack_profile_from_mano`): the UmeTrack wrist frame is the MANO rest frame
  of the left layer translated to ``J_0(β)``, joint centres are the MANO joints (both thumb CMC DoFs at
  MANO joint 13), landmarks are the MANO joints/tip vertices, hinge axes follow
  :func:`mvhand.synthetic.mano_model.hinge_axes_left`. Hence both models agree exactly at rest.
* Pose mapping: the wrist is exact in both directions, ``T_world_from_wrist = [R(global_orient),
  J_0(β) + transl]`` for either side's layer (the synthetic MANO rest axes coincide with the side's
  UmeTrack wrist frame). Articulation is generated in MANO PCA space; the 20 UmeTrack joint angles are
  fitted to the MANO landmarks by batched Levenberg–Marquardt (:func:`fit_umetrack_angles`). The
  residual (MANO 3-DoF joints and PCA off-hinge play vs UmeTrack hinges) is reported by
  :func:`residual_report`; the evaluation GT is the UmeTrack FK.
* :func:`generate_motion`: a head-mounted device moving like a head, two hands in front of it with
  smooth wrist motion and articulation, excursions out of the field of view and hands coming close.

Device frame (shared with :mod:`mvhand.synthetic.rigs`): origin = camera centroid, +x right, +y down,
+z forward, metres.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from mvhand.constants import DATASETS, HAND_SIDES, LANDMARKS_TO_EVAL
from mvhand.geometry.mano import ManoModel
from mvhand.geometry.umetrack import UmeTrackHandModel, forward_kinematics_torch
from mvhand.synthetic.mano_model import (
    FINGER_MANO_JOINTS,
    TIP_VERTEX_IDS,
    _joint_limits,
    build_synthetic_mano,
    hinge_axes_left,
    mirror_pose,
)

__all__ = [
    "Subject",
    "HandTrack",
    "SequenceMotion",
    "make_subject",
    "umetrack_profile_from_mano",
    "wrist_to_mano",
    "mano_to_wrist",
    "fit_umetrack_angles",
    "mano_to_umetrack",
    "residual_report",
    "generate_motion",
    "motion_statistics",
    "plot_motion",
]

_M = np.diag([-1.0, 1.0, 1.0])
_NONE = 255.0
# spec/formats.md §4.2 metadata (structure of the UmeTrack hand model)
_JOINT_FRAME_INDEX = [255, 2, 3, 4, 255, 5, 6, 7, 255, 8, 9, 10, 255, 11, 12, 13, 255, 14, 15, 16, 255, 0]
_JOINT_PARENT = [255, 0, 1, 2, 255, 4, 5, 6, 255, 8, 9, 10, 255, 12, 13, 14, 255, 16, 17, 18, 255, 20]
_JOINT_FIRST_CHILD = [1, 2, 3, 255, 5, 6, 7, 255, 9, 10, 11, 255, 13, 14, 15, 255, 17, 18, 19, 255, 21, 255]
_JOINT_NEXT_SIBLING = [
    4,
    255,
    255,
    255,
    8,
    255,
    255,
    255,
    12,
    255,
    255,
    255,
    16,
    255,
    255,
    255,
    20,
    255,
    255,
    255,
    255,
    255,
]
# UmeTrack landmark → (MANO joint or -1-tip_finger, frame); palm centre handled separately
_LANDMARK_FRAMES = [4, 7, 10, 13, 16, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 1, 14, 15]
_LANDMARK_MANO_JOINT = [None] * 5 + [0, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9]
# MANO joint → UmeTrack skinning frame
_MANO_TO_FRAME = {0: 1, 13: 2, 14: 3, 15: 4, 1: 5, 2: 6, 3: 7, 4: 8, 5: 9, 6: 10, 10: 11, 11: 12, 12: 13}
_MANO_TO_FRAME.update({7: 14, 8: 15, 9: 16})
# canonical landmarks of each finger (UmeTrack finger order), used by the per-finger fit
_FINGER_LANDMARKS = ((0, 6, 7), (1, 9, 10), (2, 12, 13), (3, 15, 16), (4, 18, 19))


@dataclass
class Subject:
    """A synthetic person.

    Attributes:
        name: identifier.
        betas: (10,) MANO shape coefficients (shared by both hands).
        umetrack_profile: ``__hand_shapes.json__["umetrack"]`` dictionary (14 keys, mm).
    """

    name: str
    betas: np.ndarray
    umetrack_profile: dict

    @functools.cached_property
    def umetrack_model(self) -> UmeTrackHandModel:
        """The profile as a :class:`UmeTrackHandModel` (metres)."""
        return UmeTrackHandModel.from_json(self.umetrack_profile)


@dataclass
class HandTrack:
    """One hand over a sequence (T frames).

    Attributes:
        present: (T,) bool, hand exists/is annotated in the frame.
        mano_theta: (T, 15) PCA pose for the side's MANO layer.
        mano_wrist_xform: (T, 6) smplx global_orient (axis-angle, rad) + transl (m).
        T_world_from_wrist: (T, 4, 4) float64 UmeTrack wrist pose.
        joint_angles: (T, 22) UmeTrack joint angles (rad; last two 0).
    """

    present: np.ndarray
    mano_theta: np.ndarray
    mano_wrist_xform: np.ndarray
    T_world_from_wrist: np.ndarray
    joint_angles: np.ndarray


@dataclass
class SequenceMotion:
    """Motion of one sequence.

    Attributes:
        T_world_from_device: (T, 4, 4) float64 headset (device-frame) poses.
        hands: ``{"left": HandTrack, "right": HandTrack}``.
        subject: the person.
        fps: frame rate (Hz).
        world: "umetrack" or "hot3d".
    """

    T_world_from_device: np.ndarray
    hands: dict[str, HandTrack]
    subject: Subject
    fps: float = 30.0
    world: str = "umetrack"


# ----------------------------------------------------------------------------- subjects


def _arrays(mano_arrays: dict | None) -> dict[str, dict[str, np.ndarray]]:
    return mano_arrays if mano_arrays is not None else _default_arrays()


@functools.lru_cache(maxsize=2)
def _default_arrays() -> dict[str, dict[str, np.ndarray]]:
    return build_synthetic_mano(0)


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.todense() if scipy.sparse.issparse(x) else x, dtype=np.float64)


def _left_rest(mano_arrays: dict, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shaped left-layer vertices (778, 3) and joints (16, 3), metres, MANO coordinates."""
    left = mano_arrays["left"]
    v = np.asarray(left["v_template"], float) + np.asarray(left["shapedirs"], float)[:, :, :10] @ betas
    return v, _dense(left["J_regressor"]) @ v


def umetrack_profile_from_mano(mano_arrays: dict | None, betas: np.ndarray) -> dict:
    """UmeTrack profile (``__hand_shapes.json__["umetrack"]``, mm) matching the left MANO hand at ``betas``.

    Args:
        mano_arrays: ``{"left": arrays, "right": arrays}`` (from :func:`build_synthetic_mano` or
            :func:`mvhand.geometry.mano.load_mano_pkl`); None = the default synthetic model.
        betas: (10,) shape coefficients.

    Returns:
        Dict with exactly the 14 keys of spec/formats.md §2.5 (lengths in mm, JSON-serialisable).
    """
    arrays = _arrays(mano_arrays)
    betas = np.asarray(betas, float).reshape(10)
    v, J = _left_rest(arrays, betas)
    o = J[0]
    Jl = (J - o) * 1e3
    vl = (v - o) * 1e3
    tips = vl[list(TIP_VERTEX_IDS)]
    axes = np.concatenate([hinge_axes_left(Jl, tips), [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    centres = np.zeros((22, 3))
    for f, mj in enumerate(FINGER_MANO_JOINTS):
        centres[4 * f : 4 * f + 2] = Jl[mj[0]]
        centres[4 * f + 2] = Jl[mj[1]]
        centres[4 * f + 3] = Jl[mj[2]]
    lms = np.zeros((21, 3))
    lms[:5] = tips
    for n in range(5, 20):
        lms[n] = Jl[_LANDMARK_MANO_JOINT[n]]
    lms[20] = (Jl[0] + Jl[1] + Jl[4] + Jl[10] + Jl[7]) / 5 + np.array([0.0, -8.0, 0.0])
    weights = [[1.0, 0.0, 0.0]] * 20 + [[0.88, 0.08, 0.04]]
    indices = [[k, k, k] for k in _LANDMARK_FRAMES] + [[1, 8, 5]]
    # drawing mesh: the MANO mesh padded to 788 vertices / 1544 triangles (padding is degenerate)
    v0, J0 = _left_rest(arrays, np.zeros(10))
    ring = np.abs(v0[:, 0] - J0[0, 0]) < 1e-7  # the open wrist ring (x = wrist at β = 0)
    pad_v = np.repeat(vl[ring].mean(0, keepdims=True), 10, axis=0)
    mesh_v = np.concatenate([vl, pad_v])
    tri = np.asarray(arrays["left"]["f"], np.int64)
    pad_t = 778 + np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1], [2, 3, 4], [5, 6, 7]])
    mesh_t = np.concatenate([tri, pad_t])
    w16 = np.asarray(arrays["left"]["weights"], float)
    dense = np.zeros((788, 17))
    for j, k in _MANO_TO_FRAME.items():
        dense[:778, k] += w16[:, j]
    dense[778:, 1] = 1.0
    limits = np.concatenate([_joint_limits(), [[-0.8, 0.8], [-0.8, 0.8]]])

    def r(x, d=5):
        return np.round(np.asarray(x, float), d).tolist()

    return {
        "joint_rotation_axes": r(axes, 7),
        "joint_rest_positions": r(centres),
        "joint_frame_index": [float(x) for x in _JOINT_FRAME_INDEX],
        "joint_parent": [float(x) for x in _JOINT_PARENT],
        "joint_first_child": [float(x) for x in _JOINT_FIRST_CHILD],
        "joint_next_sibling": [float(x) for x in _JOINT_NEXT_SIBLING],
        "landmark_rest_positions": r(lms),
        "landmark_rest_bone_weights": weights,
        "landmark_rest_bone_indices": indices,
        "hand_scale": 1.0,
        "mesh_vertices": r(mesh_v, 4),
        "mesh_triangles": mesh_t.astype(float).tolist(),
        "dense_bone_weights": r(dense, 6),
        "joint_limits": r(limits, 4),
    }


def make_subject(
    rng: np.random.Generator, mano_arrays: dict | None = None, name: str | None = None
) -> Subject:
    """Draw a subject: betas ~ N(0, 0.8²) (clipped to ±2.4) and the matching UmeTrack profile.

    Args:
        rng: random generator.
        mano_arrays: MANO arrays of both sides (None = the default synthetic model).
        name: subject name (default ``subject_<6 hex digits>`` drawn from ``rng``).

    Returns:
        :class:`Subject`.
    """
    betas = np.clip(rng.normal(0.0, 0.8, 10), -2.4, 2.4)
    if name is None:
        name = f"subject_{int(rng.integers(16**6)):06x}"
    return Subject(name, betas, umetrack_profile_from_mano(mano_arrays, betas))


# ----------------------------------------------------------------------------- pose mapping


def _root_joint(mano_arrays: dict, betas: np.ndarray, side: str) -> np.ndarray:
    _, J = _left_rest(mano_arrays, np.asarray(betas, float))
    return J[0] * (np.array([-1.0, 1.0, 1.0]) if side == "right" else 1.0)


def wrist_to_mano(
    T_world_from_wrist: np.ndarray, betas: np.ndarray, side: str, mano_arrays: dict | None = None
):
    """MANO ``wrist_xform`` (…, 6) of UmeTrack wrist poses (…, 4, 4): ``[log R, t − J_0(β)]`` (exact)."""
    T = np.asarray(T_world_from_wrist, float)
    r = Rotation.from_matrix(T[..., :3, :3].reshape(-1, 3, 3)).as_rotvec().reshape(T.shape[:-2] + (3,))
    return np.concatenate([r, T[..., :3, 3] - _root_joint(_arrays(mano_arrays), betas, side)], -1)


def mano_to_wrist(wrist_xform: np.ndarray, betas: np.ndarray, side: str, mano_arrays: dict | None = None):
    """UmeTrack ``T_world_from_wrist`` (…, 4, 4) of MANO ``wrist_xform`` (…, 6) (inverse of :func:`wrist_to_mano`)."""
    wx = np.asarray(wrist_xform, float)
    T = np.zeros(wx.shape[:-1] + (4, 4))
    T[..., :3, :3] = (
        Rotation.from_rotvec(wx[..., :3].reshape(-1, 3)).as_matrix().reshape(wx.shape[:-1] + (3, 3))
    )
    T[..., :3, 3] = wx[..., 3:] + _root_joint(_arrays(mano_arrays), betas, side)
    T[..., 3, 3] = 1.0
    return T


def _mano_model(mano: ManoModel | dict | None) -> ManoModel:
    if isinstance(mano, ManoModel):
        return mano
    if mano is None:
        return _default_model()
    return ManoModel(_layer_arrays(mano["left"]), _layer_arrays(mano["right"]))


def _layer_arrays(d: dict) -> dict[str, np.ndarray]:
    """Numeric arrays of a MANO dict as :func:`mvhand.geometry.mano.load_mano_pkl` returns them (dense, no strings)."""
    return {k: _dense(v) for k, v in d.items() if not isinstance(v, str)}


@functools.lru_cache(maxsize=1)
def _default_model() -> ManoModel:
    a = _default_arrays()
    return ManoModel(_layer_arrays(a["left"]), _layer_arrays(a["right"]))


def _init_angles(theta: np.ndarray, side: str, mano_arrays: dict, axes: np.ndarray) -> np.ndarray:
    """First-order hinge angles (B, 20) from the full MANO pose (projection onto the hinge axes)."""
    a = mano_arrays[side]
    pose = theta @ np.asarray(a["hands_components"], float)[:15] + np.asarray(a["hands_mean"], float)
    if side == "right":
        pose = mirror_pose(pose)
    pose = pose.reshape(-1, 15, 3)
    out = np.zeros((pose.shape[0], 20))
    for f, mj in enumerate(FINGER_MANO_JOINTS):
        out[:, 4 * f] = pose[:, mj[0] - 1] @ axes[4 * f]
        out[:, 4 * f + 1] = pose[:, mj[0] - 1] @ axes[4 * f + 1]
        out[:, 4 * f + 2] = pose[:, mj[1] - 1] @ axes[4 * f + 2]
        out[:, 4 * f + 3] = pose[:, mj[2] - 1] @ axes[4 * f + 3]
    return out


def fit_umetrack_angles(
    model: UmeTrackHandModel, target_local: np.ndarray, init: np.ndarray, iters: int = 2
) -> np.ndarray:
    """Fit UmeTrack joint angles to canonical landmarks given in the (left) wrist frame.

    Fingers are independent once the wrist is fixed, so the Jacobian needs only 4 perturbed FK
    evaluations per iteration (joint k of all five fingers at once); each finger's 4 angles are then
    solved by damped Gauss–Newton (Levenberg–Marquardt) on its 3 evaluated landmarks.

    Args:
        model: UmeTrack profile.
        target_local: (B, 20, 3) canonical landmarks in the left-hand wrist frame, metres.
        init: (B, 20) initial angles (rad).
        iters: iterations.

    Returns:
        (B, 20) fitted angles (rad).
    """
    x = torch.as_tensor(init, dtype=torch.float64).clone()
    tgt = torch.as_tensor(target_local, dtype=torch.float64)
    B = x.shape[0]
    eye4 = torch.eye(4, dtype=torch.float64).expand(5 * B, 4, 4)
    lm_idx = torch.tensor(_FINGER_LANDMARKS)  # (5, 3)
    tgt_f = tgt[:, lm_idx].reshape(B, 5, 9)
    h = 1e-6
    lam = 1e-4
    eye = torch.eye(4, dtype=torch.float64)
    for _ in range(iters):
        # one FK call: the current angles and the 4 perturbations (joint k of every finger)
        xs = x[None].repeat(5, 1, 1)
        for k in range(4):
            xs[k + 1, :, k::4] += h
        out = forward_kinematics_torch(model, xs.reshape(5 * B, 20), eye4, False)[:, :20]
        res = out[:, lm_idx].reshape(5, B, 5, 9) - tgt_f
        r0 = res[0]
        Jac = ((res[1:] - r0) / h).permute(1, 2, 3, 0)  # (B, 5, 9, 4)
        JtJ = Jac.transpose(-1, -2) @ Jac
        JtJ = JtJ + lam * (eye + torch.diag_embed(JtJ.diagonal(dim1=-2, dim2=-1)))
        step = torch.linalg.solve(JtJ, -(Jac.transpose(-1, -2) @ r0[..., None]))[..., 0]  # (B, 5, 4)
        x = x + step.reshape(B, 20)
    return x.numpy()


def mano_to_umetrack(
    subject: Subject,
    mano_params: dict[str, tuple[np.ndarray, np.ndarray]],
    mano: ManoModel | dict | None = None,
    mano_arrays: dict | None = None,
    iters: int = 2,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """UmeTrack poses fitted to MANO poses (both sides in one batched fit).

    Args:
        subject: person (betas, UmeTrack profile).
        mano_params: ``{side: (theta (B, 15), wrist_xform (B, 6))}`` for the side's MANO layer.
        mano: MANO model (None = default synthetic); ``mano_arrays``: its arrays (None = default).
        iters: Levenberg–Marquardt iterations.

    Returns:
        ``{side: (T_world_from_wrist (B, 4, 4) float64, joint_angles (B, 22))}``.
    """
    arrays = _arrays(mano_arrays)
    model = _mano_model(mano if mano is not None else mano_arrays)
    ume = subject.umetrack_model
    axes = ume.joint_rotation_axes[:20].astype(float)
    Ts, locs, inits, sizes = {}, [], [], []
    for side, (theta, wx) in mano_params.items():
        theta = np.asarray(theta, float)
        wx = np.asarray(wx, float)
        with torch.no_grad():
            lm = model.landmarks_from_wrist_xform(theta, wx, subject.betas, side).double().numpy()
        T = mano_to_wrist(wx, subject.betas, side, arrays)
        local = np.einsum("bji,bnj->bni", T[:, :3, :3], lm - T[:, None, :3, 3])
        if side == "right":
            local[..., 0] *= -1
        Ts[side] = T
        locs.append(local)
        inits.append(_init_angles(theta, side, arrays, axes))
        sizes.append(theta.shape[0])
    ang = fit_umetrack_angles(ume, np.concatenate(locs), np.concatenate(inits), iters)
    out, i = {}, 0
    for side, n in zip(mano_params, sizes):
        out[side] = (Ts[side], np.concatenate([ang[i : i + n], np.zeros((n, 2))], -1))
        i += n
    return out


def residual_report(motions: list[SequenceMotion], mano: ManoModel | dict | None = None) -> dict[str, float]:
    """MANO-vs-UmeTrack landmark residual (mm) over the present hands of ``motions``.

    For every present hand-frame, MANO FK with the GT MANO parameters and GT betas (challenge metric
    path) is compared with UmeTrack FK of the GT UmeTrack pose (the evaluation GT) on the 19 evaluated
    landmarks.

    Returns:
        ``{"mean_mm", "median_mm", "p95_mm", "max_mm", "n"}`` plus ``"per_landmark_mm"`` (19 means).
    """
    model = _mano_model(mano)
    errs = []
    for m in motions:
        for side, tr in m.hands.items():
            p = tr.present
            if not p.any():
                continue
            with torch.no_grad():
                lm_mano = model.landmarks_from_wrist_xform(
                    tr.mano_theta[p], tr.mano_wrist_xform[p], m.subject.betas, side
                ).double()
                lm_ume = forward_kinematics_torch(
                    m.subject.umetrack_model,
                    torch.as_tensor(tr.joint_angles[p]),
                    torch.as_tensor(tr.T_world_from_wrist[p]),
                    side == "right",
                )[:, :20]
            d = (lm_mano - lm_ume)[:, list(LANDMARKS_TO_EVAL)].norm(dim=-1) * 1e3
            errs.append(d.numpy())
    e = np.concatenate(errs)
    return {
        "mean_mm": float(e.mean()),
        "median_mm": float(np.median(e)),
        "p95_mm": float(np.percentile(e, 95)),
        "max_mm": float(e.max()),
        "n": int(e.shape[0]),
        "per_landmark_mm": e.mean(0).tolist(),
    }


# ----------------------------------------------------------------------------- motion


def _smooth_noise(rng: np.random.Generator, n: int, dim: int, sigma_frames: float) -> np.ndarray:
    """Gaussian-filtered white noise (n, dim) with unit marginal std (stationary, no edge effects)."""
    pad = int(4 * sigma_frames) + 2
    w = rng.normal(0.0, 1.0, (n + 2 * pad, dim))
    s = gaussian_filter1d(w, sigma_frames, axis=0, mode="wrap")[pad : pad + n]
    return s * np.sqrt(2.0 * np.sqrt(np.pi) * sigma_frames)


def _bump(n: int, start: float, length: float, ramp: float) -> np.ndarray:
    """Raised-cosine envelope in [0, 1] over frames ``[start, start + length]`` with ``ramp``-frame edges."""
    t = np.arange(n, dtype=float)
    up = np.clip((t - start) / ramp, 0.0, 1.0)
    down = np.clip((start + length - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def _base_rotation_left() -> np.ndarray:
    """Typical left-hand wrist orientation in the device frame: fingers forward/up/inwards, palm down-in."""
    x = np.array([0.25, -0.35, 1.0])
    x /= np.linalg.norm(x)
    pn = np.array([0.45, 1.0, 0.15])  # palm normal (−y_wrist)
    y = -(pn - (pn @ x) * x)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _world_from_origin(rng: np.random.Generator, world: str) -> np.ndarray:
    T = np.eye(4)
    if world == "umetrack":
        T[:3, :3] = Rotation.from_rotvec(rng.normal(0.0, 0.1, 3)).as_matrix()
        T[:3, 3] = rng.normal(0.0, 0.05, 3)
    elif world == "hot3d":
        yaw = rng.uniform(-np.pi, np.pi)
        T[:3, :3] = (
            Rotation.from_euler("y", yaw).as_matrix()
            @ Rotation.from_rotvec(rng.normal(0, 0.1, 3)).as_matrix()
        )
        T[:3, 3] = [rng.uniform(-3.0, 3.0), rng.uniform(-1.7, -1.3), rng.uniform(-3.0, 3.0)]
    else:
        raise ValueError(f"world must be 'umetrack' or 'hot3d', got {world!r}")
    return T


def generate_motion(
    rng: np.random.Generator,
    subject: Subject,
    n_frames: int,
    fps: float = 30.0,
    world: str = "umetrack",
    mano: ManoModel | dict | None = None,
    mano_arrays: dict | None = None,
) -> SequenceMotion:
    """Natural two-hand egocentric motion with UmeTrack and MANO annotations.

    Head: smooth translation (≈ 2 cm/s) and rotation (≈ 4°/s median). Hands (device frame): wrists
    ≈ 0.3 m in front, 0.14 m below, 0.05/0.115 m left/right, smooth offsets (peaks ≈ 0.3–0.5 m/s),
    smooth wrist rotations and PCA articulation (per-component std from the pose corpus); per hand an
    optional excursion out of the field of view (down or sideways, ``present`` False while far away),
    an optional episode of the hands coming close, and rarely a hand absent for the whole sequence.

    Args:
        rng: random generator (the only source of randomness: same seed → identical arrays).
        subject: person (betas + UmeTrack profile).
        n_frames: number of frames T.
        fps: frame rate (Hz).
        world: "umetrack" (world origin near the first device pose) or "hot3d" (far origin, random yaw).
        mano: :class:`ManoModel` (or arrays) used for the MANO landmarks (None = default synthetic).
        mano_arrays: arrays of both sides matching ``mano`` (None = ``mano`` if it is a dict, else the
            default synthetic model). Must be a *synthetic* model (its rest axes are the UmeTrack frame).

    Returns:
        :class:`SequenceMotion`.
    """
    arrays = _arrays(mano_arrays if mano_arrays is not None else mano if isinstance(mano, dict) else None)
    model = _mano_model(mano if mano is not None else mano_arrays)
    if world not in DATASETS:
        raise ValueError(f"world must be 'umetrack' or 'hot3d', got {world!r}")
    T = int(n_frames)
    sig = lambda seconds: max(seconds * fps, 1.0)  # noqa: E731
    head_gain = 1.0 if world == "umetrack" else 1.6
    T_wo = _world_from_origin(rng, world)
    head_p = 0.011 * head_gain * _smooth_noise(rng, T, 3, sig(0.5))
    head_r = 0.045 * head_gain * _smooth_noise(rng, T, 3, sig(0.6))
    T_od = np.tile(np.eye(4), (T, 1, 1))
    T_od[:, :3, :3] = Rotation.from_rotvec(head_r).as_matrix()
    T_od[:, :3, 3] = head_p
    T_wd = T_wo @ T_od

    comps_std = np.std(np.asarray(arrays["right"]["hands_coeffs"], float)[:, :15], axis=0)
    base_down, base_fwd = (0.14, 0.32) if world == "umetrack" else (0.2, 0.36)
    close = _bump(T, rng.uniform(-0.3, 0.8) * T, rng.uniform(0.4, 1.0) * T, sig(0.4)) * (rng.random() < 0.3)
    absent_side = rng.integers(2) if rng.random() < 0.08 else -1
    hands = {}
    for s, side in enumerate(HAND_SIDES):
        # left-canonical device-frame trajectory; the right hand is its x-mirror
        p0 = np.array([-0.06 if s == 0 else -0.115, base_down, base_fwd]) + rng.normal(0, 0.012, 3)
        p = p0 + np.array([0.025, 0.03, 0.035]) * _smooth_noise(rng, T, 3, sig(0.25))
        p[:, 0] += 0.03 * close
        env = np.zeros(T)
        if rng.random() < 0.4:
            env = _bump(T, rng.uniform(-0.3, 0.7) * T, rng.uniform(1.0, 2.5) * fps, sig(0.8))
            direction = [np.array([0.0, 1.0, -0.2]), np.array([-1.0, 0.3, -0.3])][int(rng.integers(2))]
            p = p + 0.35 * env[:, None] * direction / np.linalg.norm(direction)
        present = env < 0.75
        if s == absent_side:
            present[:] = False
            p = p + np.array([-0.3, 0.5, -0.1])
        roll = rng.normal(0.0, 0.35)
        R0 = _base_rotation_left() @ Rotation.from_rotvec([roll, 0, 0]).as_matrix()
        rv = 0.3 * _smooth_noise(rng, T, 3, sig(0.3))
        R = np.einsum("ij,tjk->tik", R0, Rotation.from_rotvec(rv).as_matrix())
        if side == "right":
            p = p * np.array([-1.0, 1.0, 1.0])
            R = _M @ R @ _M
        T_dw = np.tile(np.eye(4), (T, 1, 1))
        T_dw[:, :3, :3] = R
        T_dw[:, :3, 3] = p
        T_ww = T_wd @ T_dw
        theta = 0.75 * comps_std * _smooth_noise(rng, T, 15, sig(0.3))
        theta[:, 0] += rng.normal(0.0, 0.5 * comps_std[0])
        hands[side] = [present, theta, T_ww]
    # keep the wrists apart (≥ 8 cm): push both along their separation, continuously in time
    d = hands["right"][2][:, :3, 3] - hands["left"][2][:, :3, 3]
    gap = np.linalg.norm(d, axis=1, keepdims=True)
    push = d / np.maximum(gap, 1e-9) * np.maximum(0.08 - gap, 0.0) / 2
    hands["left"][2][:, :3, 3] -= push
    hands["right"][2][:, :3, 3] += push
    params = {
        side: (hands[side][1], wrist_to_mano(hands[side][2], subject.betas, side, arrays))
        for side in HAND_SIDES
    }
    fitted = mano_to_umetrack(subject, params, model, arrays)
    tracks = {
        side: HandTrack(hands[side][0], params[side][0], params[side][1], *fitted[side])
        for side in HAND_SIDES
    }
    return SequenceMotion(T_wd, tracks, subject, float(fps), world)


def motion_statistics(motions: list[SequenceMotion]) -> dict[str, dict[str, float]]:
    """Percentiles (5/25/50/75/95/max) of head, wrist, fingertip and joint-angle speeds.

    Speeds are finite differences between consecutive frames where the hand is present. A documentation
    tool: the motion statistics table of docs/synthetic_hands.md (the pipeline does not call it).

    Returns:
        ``{quantity: {"p5", "p25", "p50", "p75", "p95", "max"}}`` with quantities ``head_speed_mps``,
        ``head_rot_dps``, ``wrist_speed_mps``, ``wrist_rot_dps``, ``index_tip_speed_mps``,
        ``joint_rate_dps`` and ``wrist_gap_m`` (distance between the wrists, both present).
    """
    acc: dict[str, list] = {
        k: [] for k in ("head_speed_mps", "head_rot_dps", "wrist_speed_mps", "wrist_rot_dps")
    }
    acc.update({"index_tip_speed_mps": [], "joint_rate_dps": [], "wrist_gap_m": []})
    for m in motions:
        f = m.fps
        Td = m.T_world_from_device
        acc["head_speed_mps"].append(np.linalg.norm(np.diff(Td[:, :3, 3], axis=0), axis=1) * f)
        dR = np.einsum("tji,tjk->tik", Td[:-1, :3, :3], Td[1:, :3, :3])
        acc["head_rot_dps"].append(
            np.rad2deg(np.linalg.norm(Rotation.from_matrix(dR).as_rotvec(), axis=1)) * f
        )
        for side, tr in m.hands.items():
            ok = tr.present[1:] & tr.present[:-1]
            W = tr.T_world_from_wrist
            acc["wrist_speed_mps"].append((np.linalg.norm(np.diff(W[:, :3, 3], axis=0), axis=1) * f)[ok])
            dR = np.einsum("tji,tjk->tik", W[:-1, :3, :3], W[1:, :3, :3])
            rot = np.rad2deg(np.linalg.norm(Rotation.from_matrix(dR).as_rotvec(), axis=1)) * f
            acc["wrist_rot_dps"].append(rot[ok])
            lm = forward_kinematics_torch(
                m.subject.umetrack_model,
                torch.as_tensor(tr.joint_angles),
                torch.as_tensor(W),
                side == "right",
            ).numpy()
            acc["index_tip_speed_mps"].append((np.linalg.norm(np.diff(lm[:, 1], axis=0), axis=1) * f)[ok])
            acc["joint_rate_dps"].append(
                (np.abs(np.diff(tr.joint_angles[:, :20], axis=0)) * f)[ok].ravel() * 180 / np.pi
            )
        both = m.hands["left"].present & m.hands["right"].present
        gap = m.hands["left"].T_world_from_wrist[:, :3, 3] - m.hands["right"].T_world_from_wrist[:, :3, 3]
        acc["wrist_gap_m"].append(np.linalg.norm(gap, axis=1)[both])
    out = {}
    for k, v in acc.items():
        x = np.concatenate(v) if v else np.zeros(1)
        x = x if x.size else np.zeros(1)
        q = np.percentile(x, [5, 25, 50, 75, 95])
        out[k] = {"p5": q[0], "p25": q[1], "p50": q[2], "p75": q[3], "p95": q[4], "max": float(x.max())}
        out[k] = {a: float(b) for a, b in out[k].items()}
    return out


def plot_motion(motion: SequenceMotion, path: str | Path) -> Path:
    """Plot wrist trajectories in the device frame and wrist speeds over time (PNG, atomic).

    A documentation tool: docs/synthetic_hands.md gives the command that regenerates its figure.
    """
    from mvhand.io_utils import pyplot, save_figure

    Td = motion.T_world_from_device
    fig, axs = pyplot().subplots(1, 3, figsize=(13, 4))
    t = np.arange(Td.shape[0]) / motion.fps
    for side, tr in motion.hands.items():
        rel = np.einsum("tji,tj->ti", Td[:, :3, :3], tr.T_world_from_wrist[:, :3, 3] - Td[:, :3, 3])
        pr = np.where(tr.present, 1.0, np.nan)
        axs[0].plot(rel[:, 0], rel[:, 2], label=side)
        axs[1].plot(rel[:, 0], -rel[:, 1], label=side)
        v = np.r_[
            np.nan, np.linalg.norm(np.diff(tr.T_world_from_wrist[:, :3, 3], axis=0), axis=1) * motion.fps
        ]
        axs[2].plot(t, v * pr, label=f"{side} wrist speed")
    axs[0].set(xlabel="x right (m)", ylabel="z forward (m)", title="wrists, top view (device frame)")
    axs[1].set(xlabel="x right (m)", ylabel="−y up (m)", title="wrists, front view (device frame)")
    axs[2].set(xlabel="time (s)", ylabel="m/s", title="wrist speed (present frames)")
    for a in axs:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=80)
    path.chmod(0o644)
    return path
