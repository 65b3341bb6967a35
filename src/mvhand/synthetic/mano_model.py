"""Synthetic MANO-format hand model (spec/model.md §5.4, spec/formats.md §5).

No licensed MANO files can reach this machine, so mvhand ships a hand model of its own in the exact
format of ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (plain numpy, loadable by ``smplx`` and by
:class:`mvhand.geometry.mano.ManoModel`), marked as synthetic by one extra key (``mvhand_synthetic``) so that a run on
real data refuses it. Construction (all deterministic, < 1 s):

* **Skeleton** (:data:`FINGER_DESIGN`): 16 joints in MANO order, designed in the UmeTrack *left* hand frame
  (+x wrist→fingers, palm towards −y, thumb towards +z; mm), human proportions (wrist→middle tip
  190 mm, wrist→middle MCP 97 mm, index–pinky MCP 64 mm).
* **Mesh**: a "pillow" hand: the 2D outline of the smooth union of a palm polygon and five finger
  capsules (extracted with contourpy) is resampled, filled with farthest-point-sampled interior points
  and Delaunay-triangulated; the dorsal (+y) and palmar (−y) sheets share the rim and have a circular
  cross-section profile. The wrist is left open (a 16-edge boundary, like the real MANO mesh), which
  gives exactly 778 vertices and 1538 faces. The thumb is then turned palmwards about its CMC joint.
  The fingertip rim points become vertices 744/320/443/554/671 (thumb/index/middle/ring/pinky).
* **Skinning**: each vertex belongs to the palm or a finger; weights blend along the finger axis
  across each joint (smoothstep, ±4–5 mm), then two Laplacian smoothing passes; tips stay rigid.
* **J_regressor**: per joint a non-negative, sum-to-one combination of the nearest vertices
  (NNLS), so ``J_regressor @ v_template`` reproduces the designed joints (< 1 µm).
* **shapedirs**: β0 scale about the wrist, β1 finger length, β2 palm width, β3 thickness,
  β4 thumb length, β5…β9 smooth random fields (mm per unit β).
* **posedirs**: zeros (valid; the landmark maths does not depend on them).
* **Pose PCA**: a corpus of 1554 natural poses (closure synergy, coupled PIP/DIP, limited abduction,
  thumb opposition, small off-hinge noise) is built from hinge angles about the axes of
  :func:`hinge_axes_left`; ``hands_components`` are its principal axes, ``hands_mean`` its mean (a
  relaxed slight flexion), ``hands_coeffs`` its coordinates.
* **Left file** = exact mirror of the right (x → −x, reversed winding, shapedirs x negated, axis-angle
  y, z negated per joint), so the toolkit's left-shapedirs detector does not fire.

Frames: the right MANO rest mesh is ``M·(p_local + o)`` with ``M = diag(−1, 1, 1)`` and the left one
``p_local + o``, where ``p_local`` is the UmeTrack-left-frame design and ``o`` = :data:`WRIST_OFFSET_LEFT`
(the wrist is away from the origin). Hence the MANO rest axes of either side coincide with the
UmeTrack wrist frame of that side (spec/formats.md §4.5), which :mod:`mvhand.synthetic.hands` relies on.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import contourpy
import numpy as np
import scipy.sparse
from scipy.optimize import nnls
from scipy.spatial import Delaunay
from scipy.spatial.transform import Rotation

from mvhand.io_utils import InputError, atomic_write
from mvhand.mano_pickle import SYNTHETIC_MARKER_KEY, SYNTHETIC_MARKER_TEXT

__all__ = [
    "NUM_VERTS",
    "NUM_FACES",
    "TIP_VERTEX_IDS",
    "MANO_PARENTS",
    "FINGER_MANO_JOINTS",
    "WRIST_OFFSET_LEFT",
    "FINGER_DESIGN",
    "THUMB_REST_ANGLE",
    "hinge_axes_left",
    "hinge_to_mano_pose_left",
    "mirror_pose",
    "build_synthetic_mano",
    "write_synthetic_mano",
]

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_CORPUS = 1554
#: fingertip vertex ids, UmeTrack finger order (thumb, index, middle, ring, pinky)
TIP_VERTEX_IDS = (744, 320, 443, 554, 671)
#: MANO kinematic tree (root parent shown as -1; stored as 2**32-1)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
#: MANO joints (proximal → distal) of each finger in UmeTrack finger order (thumb, index, middle, ring, pinky)
FINGER_MANO_JOINTS = ((13, 14, 15), (1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9))
#: left-hand MANO wrist joint J_0 (m) at β = 0; the right one is its x-mirror
WRIST_OFFSET_LEFT = np.array([-0.0957, 0.0064, 0.0062])


@dataclass(frozen=True)
class FingerDesign:
    """Flat-layout finger design in the left UmeTrack frame (mm, x–z plane).

    Attributes:
        base: (x, z) of the first joint (CMC for the thumb, MCP otherwise).
        angle_deg: direction of the finger from +x towards +z.
        lengths: the three segment lengths (base→2nd joint, 2nd→3rd joint, 3rd joint→tip).
        radius: (base radius, tip radius) of the finger capsule.
    """

    base: tuple[float, float]
    angle_deg: float
    lengths: tuple[float, float, float]
    radius: tuple[float, float]


#: thumb, index, middle, ring, pinky
FINGER_DESIGN = (
    FingerDesign((22.0, 18.0), 48.0, (44.0, 32.0, 26.0), (11.0, 8.2)),
    FingerDesign((95.0, 24.0), 6.0, (39.0, 24.0, 22.0), (8.6, 7.0)),
    FingerDesign((97.0, 2.0), 0.0, (43.0, 27.0, 23.0), (8.8, 7.2)),
    FingerDesign((91.0, -18.0), -6.0, (40.0, 26.0, 22.0), (8.3, 6.8)),
    FingerDesign((79.0, -38.0), -13.0, (31.0, 20.0, 21.0), (7.3, 6.0)),
)
#: palm polygon (x, z) mm, convex, counter-clockwise in (x, z); continues into the forearm (clipped at x = 0)
_PALM_POLY = np.array(
    [
        [-30, -18],
        [0, -27],
        [60, -44],
        [80, -44],
        [96, -24],
        [100, 4],
        [97, 31],
        [62, 38],
        [25, 32],
        [0, 27],
        [-30, 20],
    ],
    float,
)
_PALM_HALF_THICKNESS = 13.0
#: palmward rest rotation of the thumb about +x through its CMC joint (rad)
THUMB_REST_ANGLE = np.deg2rad(38.0)
_WRIST_INNER = 7  # wrist-edge points between the two corners, per sheet (boundary loop = 16 edges)
_SMOOTH_K = 4.0  # smooth-union radius (mm) → finger webs


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _design_joints_mm() -> tuple[np.ndarray, np.ndarray]:
    """Designed joints (16, 3) and fingertips (5, 3) in the left frame, mm, wrist at the origin."""
    J = np.zeros((NUM_JOINTS, 3))
    tips = np.zeros((5, 3))
    R_thumb = _rot_x(THUMB_REST_ANGLE)  # +z (thumb side) turns towards −y (palm)
    for f, (fd, mj) in enumerate(zip(FINGER_DESIGN, FINGER_MANO_JOINTS)):
        d = np.array([np.cos(np.deg2rad(fd.angle_deg)), 0.0, np.sin(np.deg2rad(fd.angle_deg))])
        base = np.array([fd.base[0], 0.0, fd.base[1]])
        pts = base + np.cumsum([0.0, *fd.lengths])[:, None] * d
        if f == 0:
            pts = base + (pts - base) @ R_thumb.T
        J[list(mj)] = pts[:3]
        tips[f] = pts[3]
    return J, tips


# ----------------------------------------------------------------------------- 2D outline (flat layout)


def _capsules() -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Per finger: (start, end, r_start, r_end) of the flat capsule in (x, z) mm."""
    out = []
    for fd in FINGER_DESIGN:
        d = np.array([np.cos(np.deg2rad(fd.angle_deg)), np.sin(np.deg2rad(fd.angle_deg))])
        base = np.asarray(fd.base)
        total = sum(fd.lengths)
        out.append((base - 6.0 * d, base + (total - fd.radius[1]) * d, fd.radius[0], fd.radius[1]))
    return out


def _capsule_sdf(p: np.ndarray, cap) -> tuple[np.ndarray, np.ndarray]:
    a, b, ra, rb = cap
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    r = ra + (rb - ra) * t
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1) - r, r


def _palm_sdf(p: np.ndarray) -> np.ndarray:
    e = np.roll(_PALM_POLY, -1, axis=0) - _PALM_POLY
    n = np.stack([e[:, 1], -e[:, 0]], -1) / np.linalg.norm(e, axis=-1, keepdims=True)  # outward (CCW)
    return np.max(np.einsum("...kc,kc->...k", p[..., None, :] - _PALM_POLY, n), axis=-1)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _fields(p: np.ndarray) -> dict[str, np.ndarray]:
    """SDFs of the flat layout at points ``p`` (..., 2) (x, z) mm."""
    palm = _palm_sdf(p)
    caps = [_capsule_sdf(p, c) for c in _capsules()]
    cap_sdf = np.stack([c[0] for c in caps], -1)
    cap_r = np.stack([c[1] for c in caps], -1)
    union = palm
    for f in range(5):
        union = _smin(union, cap_sdf[..., f], _SMOOTH_K)
    return {
        "palm": palm,
        "cap": cap_sdf,
        "cap_r": cap_r,
        "union": union,
        "clip": np.maximum(union, -p[..., 0]),
    }


def _resample(poly: np.ndarray, n: int) -> np.ndarray:
    """``n`` points (ends included) evenly spaced by arc length along an open polyline."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    q = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(q, s, poly[:, 0]), np.interp(q, s, poly[:, 1])], -1)


def _outline(n_rim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat outline of the hand.

    Returns:
        rim (n_rim, 2) from the ulnar wrist corner (z<0) around the hand to the radial one, the wrist
        edge's inner points (_WRIST_INNER, 2) from the radial corner back, and the rim index of each
        fingertip (5,).
    """
    xs = np.arange(-4.0, 205.0, 0.5)
    zs = np.arange(-70.0, 120.0, 0.5)
    X, Z = np.meshgrid(xs, zs, indexing="ij")
    F = _fields(np.stack([X, Z], -1))["clip"]
    gen = contourpy.contour_generator(x=zs, y=xs, z=F)  # contourpy: x = columns (z), y = rows (x)
    lines = gen.lines(0.0)
    line = max(lines, key=len)[:, ::-1]  # → (x, z)
    if np.allclose(line[0], line[-1]):
        line = line[:-1]
    on_wrist = line[:, 0] < 0.25
    # rotate so that the polyline starts right after the wrist edge
    off = np.nonzero(~on_wrist)[0]
    k = next(i for i in range(len(line)) if on_wrist[i - 1] and not on_wrist[i])
    line = np.roll(line, -k, axis=0)
    rim_path = line[: len(off)]
    zc = np.sort(line[np.roll(on_wrist, -k)][:, 1])
    c0, c1 = np.array([0.0, zc[0]]), np.array([0.0, zc[-1]])
    # orient: go from the ulnar (z<0) corner around to the radial (z>0) corner
    if np.linalg.norm(rim_path[0] - c0) > np.linalg.norm(rim_path[-1] - c0):
        rim_path = rim_path[::-1]
    rim = _resample(np.concatenate([c0[None], rim_path, c1[None]]), n_rim)
    # snap the nearest rim sample to each exact fingertip
    flat_tips = []
    for fd in FINGER_DESIGN:
        d = np.array([np.cos(np.deg2rad(fd.angle_deg)), np.sin(np.deg2rad(fd.angle_deg))])
        flat_tips.append(np.asarray(fd.base) + sum(fd.lengths) * d)
    tip_rim = []
    for t in flat_tips:
        i = int(np.argmin(np.linalg.norm(rim - t, axis=1)))
        rim[i] = t
        tip_rim.append(i)
    t = np.linspace(0.0, 1.0, _WRIST_INNER + 2)[1:-1]
    wrist = c1 + t[:, None] * (c0 - c1)
    return rim, wrist, np.array(tip_rim)


def _interior(boundary: np.ndarray, n: int) -> np.ndarray:
    """``n`` interior points by farthest-point sampling with a finer spacing on the fingers."""
    xs = np.arange(0.5, 200.0, 1.0)
    zs = np.arange(-65.0, 115.0, 1.0)
    X, Z = np.meshgrid(xs, zs, indexing="ij")
    cand = np.stack([X.ravel(), Z.ravel()], -1)
    fl = _fields(cand)
    palmness = np.clip(-fl["palm"] / 8.0, 0.0, 1.0)
    sigma = 5.0 + 4.5 * palmness  # local target spacing (mm)
    keep = fl["clip"] < -0.45 * sigma
    cand, sigma = cand[keep], sigma[keep]
    dmin = np.full(len(cand), np.inf)
    for b in np.array_split(boundary, 8):
        dmin = np.minimum(dmin, np.linalg.norm(cand[:, None] - b[None], axis=-1).min(1))
    dmin /= sigma
    out = np.empty((n, 2))
    for i in range(n):
        j = int(np.argmax(dmin))
        out[i] = cand[j]
        dmin = np.minimum(dmin, np.linalg.norm(cand - cand[j], axis=1) / sigma)
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class _Mesh:
    v: np.ndarray  # (778, 3) left frame, mm, wrist at origin
    f: np.ndarray  # (1538, 3) outward winding for the left frame
    w: np.ndarray  # (778, 16)
    flat: np.ndarray  # (778, 2) flat-layout (x, z) of each vertex
    member: np.ndarray  # (778,) -1 palm, 0..4 finger (UmeTrack order)
    s_axis: np.ndarray  # (778,) distance along the member finger from its base joint (mm)


def _build_mesh() -> _Mesh:
    n_rim = 182
    n_b = n_rim + _WRIST_INNER
    n_i = (NUM_VERTS - _WRIST_INNER - n_b) // 2
    assert n_b + 2 * n_i + _WRIST_INNER == NUM_VERTS
    rim, wrist, tip_rim = _outline(n_rim)
    inner = _interior(np.concatenate([rim, wrist]), n_i)
    pts2 = np.concatenate([rim, wrist, inner])  # 2D polygon points
    tri = Delaunay(pts2).simplices
    cen = pts2[tri].mean(1)
    tri = tri[_fields(cen)["clip"] < 0]
    # orientation in (x, z): make all counter-clockwise
    a, b, c = pts2[tri[:, 0]], pts2[tri[:, 1]], pts2[tri[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    tri = np.where((cross < 0)[:, None], tri[:, ::-1], tri)
    if len(tri) != n_b + 2 * n_i - 2:
        raise RuntimeError(f"synthetic MANO outline triangulation failed ({len(tri)} triangles)")
    # 3D vertices: rim shared, [wrist + inner] on the dorsal (+y) and the palmar (−y) sheet
    n_top = _WRIST_INNER + n_i
    top_idx = np.concatenate([np.arange(n_rim), n_rim + np.arange(n_top)])
    bot_idx = np.concatenate([np.arange(n_rim), n_rim + n_top + np.arange(n_top)])
    flat = np.concatenate([rim, wrist, inner, wrist, inner])
    fl = _fields(flat)
    d = np.maximum(-fl["union"], 0.0)
    near = np.argmin(fl["cap"], axis=1)
    r_near = fl["cap_r"][np.arange(len(flat)), near]
    palmness = np.clip(-fl["palm"] / 6.0, 0.0, 1.0)
    R = (1 - palmness) * r_near + palmness * _PALM_HALF_THICKNESS
    h = np.where(d < R, np.sqrt(np.maximum(2 * R * d - d * d, 0.0)), R)
    h[:n_rim] = 0.0
    sign = np.concatenate([np.zeros(n_rim), np.ones(n_top), -np.ones(n_top)])
    v = np.stack([flat[:, 0], sign * h, flat[:, 1]], -1)
    # dorsal sheet normals must point to +y: n_y = -cross_xz → use clockwise (x, z) order on top
    faces = np.concatenate([top_idx[tri[:, ::-1]], bot_idx[tri]])

    # membership and axial coordinate
    member = np.full(len(v), -1)
    s_axis = np.zeros(len(v))
    for f, fd in enumerate(FINGER_DESIGN):
        dd = np.array([np.cos(np.deg2rad(fd.angle_deg)), np.sin(np.deg2rad(fd.angle_deg))])
        s = (flat - np.asarray(fd.base)) @ dd
        own = (np.argmin(fl["cap"], axis=1) == f) & (fl["cap"][:, f] < fl["palm"] + 3.0) & (s > -6.0)
        if f == 0:
            own = (fl["cap"][:, 0] < np.minimum(fl["palm"], 0) + 4.0) & (s > -8.0)
        member[own] = f
        s_axis[own] = s[own]
    # skinning weights
    w = np.zeros((len(v), NUM_JOINTS))
    w[:, 0] = 1.0
    for f, (fd, mj) in enumerate(zip(FINGER_DESIGN, FINGER_MANO_JOINTS)):
        m = member == f
        s = s_axis[m]
        b0 = 8.0 if f == 0 else 5.0
        t0 = _smoothstep((s + b0) / (2 * b0))
        t1 = _smoothstep((s - fd.lengths[0] + 4.0) / 8.0)
        t2 = _smoothstep((s - fd.lengths[0] - fd.lengths[1] + 4.0) / 8.0)
        ww = np.zeros((m.sum(), NUM_JOINTS))
        ww[:, 0] = 1 - t0
        ww[:, mj[0]] = t0 - t1
        ww[:, mj[1]] = t1 - t2
        ww[:, mj[2]] = t2
        w[m] = ww
    # two Laplacian smoothing passes
    A = scipy.sparse.coo_matrix(
        (
            np.ones(faces.size * 2),
            (
                np.r_[faces.ravel(), np.roll(faces, 1, 1).ravel()],
                np.r_[np.roll(faces, 1, 1).ravel(), faces.ravel()],
            ),
        ),
        shape=(len(v), len(v)),
    ).tocsr()
    A.data[:] = 1.0
    deg = np.asarray(A.sum(1)).ravel()
    for _ in range(2):
        w = 0.5 * w + 0.5 * (A @ w) / deg[:, None]
    tip_vertices = tip_rim  # rim indices == vertex indices
    for f, tv in enumerate(tip_vertices):
        w[tv] = 0.0
        w[tv, FINGER_MANO_JOINTS[f][2]] = 1.0
    w /= w.sum(1, keepdims=True)
    # thumb palmward rest rotation about its CMC joint
    J, _ = _design_joints_mm()
    c = J[13]
    R = _rot_x(THUMB_REST_ANGLE)
    wt = w[:, [13, 14, 15]].sum(1)
    v = v + wt[:, None] * ((v - c) @ R.T + c - v)
    # put the tips at the official ids: permutation new→old
    order = [i for i in range(len(v)) if i not in set(tip_vertices.tolist())]
    perm = np.empty(len(v), int)
    rest = iter(order)
    tip_at = dict(zip(TIP_VERTEX_IDS, tip_vertices))
    for new in range(len(v)):
        perm[new] = tip_at[new] if new in tip_at else next(rest)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(v))
    return _Mesh(v[perm], inv[faces], w[perm], flat[perm], member[perm], s_axis[perm])


# ----------------------------------------------------------------------------- kinematics / pose corpus


def hinge_axes_left(J: np.ndarray, tips: np.ndarray) -> np.ndarray:
    """UmeTrack-style hinge axes (20, 3) of a left hand from its joints, in the left wrist frame.

    Rule (any units): fingers: abduction axis = palm normal −y (positive → towards the thumb), flexion
    axes ⟂ the segment direction and −y (positive curls towards the palm); thumb (CMC at MANO joint 13):
    joint 0 = adduction about the turned palm normal, joint 1 = palmar abduction, joints 2/3 = flexion
    across the palm.

    Args:
        J: (16, 3) joints in MANO order (left frame).
        tips: (5, 3) fingertips, UmeTrack finger order.

    Returns:
        (20, 3) unit axes, UmeTrack joint order (4 per finger: thumb, index, middle, ring, pinky).
    """
    J = np.asarray(J, float)
    tips = np.asarray(tips, float)
    n = np.array([0.0, -1.0, 0.0])
    axes = np.zeros((20, 3))

    def unit(x):
        return x / np.linalg.norm(x)

    for f, mj in enumerate(FINGER_MANO_JOINTS):
        chain = np.concatenate([J[list(mj)], tips[f][None]])
        if f == 0:
            nt = _rot_x(THUMB_REST_ANGLE) @ n
            d0 = unit(chain[1] - chain[0])
            axes[0] = unit(-nt - (-nt @ d0) * d0)
            axes[1] = unit(np.cross(d0, nt))
            for k in (1, 2):
                dk = unit(chain[k + 1] - chain[k])
                axes[1 + k] = unit(0.6 * unit(np.cross(dk, nt)) - 0.8 * nt)
            continue
        d0 = unit(chain[1] - chain[0])
        axes[4 * f] = unit(n - (n @ d0) * d0)
        for k in range(3):
            dk = unit(chain[k + 1] - chain[k])
            axes[4 * f + 1 + k] = unit(np.cross(dk, n))
    return axes


def hinge_to_mano_pose_left(angles: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """MANO per-joint axis-angles (…, 45) (joints 1…15, left frame) of UmeTrack hinge angles.

    The two base DoFs of each finger (4f, 4f+1) compose as ``exp(θ_{4f} a_{4f}) · exp(θ_{4f+1} a_{4f+1})``
    (UmeTrack's ``L_{4f} · L_{4f+1}``); the others are single hinges.

    Args:
        angles: (…, 20) hinge angles, radians.
        axes: (20, 3) hinge axes from :func:`hinge_axes_left`.

    Returns:
        (…, 45) axis-angles of MANO joints 1…15.
    """
    angles = np.asarray(angles, float)
    batch = angles.shape[:-1]
    a = angles.reshape(-1, 20)
    out = np.zeros((a.shape[0], 15, 3))
    for f, mj in enumerate(FINGER_MANO_JOINTS):
        R0 = Rotation.from_rotvec(a[:, 4 * f, None] * axes[4 * f])
        R1 = Rotation.from_rotvec(a[:, 4 * f + 1, None] * axes[4 * f + 1])
        out[:, mj[0] - 1] = (R0 * R1).as_rotvec()
        out[:, mj[1] - 1] = a[:, 4 * f + 2, None] * axes[4 * f + 2]
        out[:, mj[2] - 1] = a[:, 4 * f + 3, None] * axes[4 * f + 3]
    return out.reshape(batch + (45,))


def mirror_pose(pose45: np.ndarray) -> np.ndarray:
    """Mirror per-joint axis-angles across x (negate y and z of every joint triple)."""
    sign = np.tile([1.0, -1.0, -1.0], 15)
    return np.asarray(pose45) * sign


def _joint_limits() -> np.ndarray:
    """Our own hinge ranges (20, 2) rad, used to clamp the corpus."""
    thumb = [[-0.8, 1.2], [-0.6, 0.7], [-0.1, 1.2], [-0.3, 1.2]]
    finger = [[-0.35, 0.45], [-0.3, 1.5], [-0.05, 1.85], [-0.05, 1.4]]
    pinky = [[-0.6, 0.45], [-0.3, 1.6], [-0.05, 1.85], [-0.05, 1.4]]
    return np.array(thumb + finger * 3 + pinky)


def _pose_corpus(rng: np.random.Generator, n: int) -> np.ndarray:
    """Natural hinge-angle poses (n, 20): closure synergy, coupled PIP/DIP, spread, thumb opposition."""
    c = rng.beta(1.6, 3.0, n) * 1.4 - 0.05  # overall closure
    dev = rng.normal(0.0, 0.22, (n, 4))
    dev[:, 3] = 0.6 * dev[:, 2] + 0.8 * dev[:, 3]  # ring–pinky coupling
    point = rng.random(n) < 0.12  # pointing: index extended
    dev[point, 0] = -c[point] + rng.normal(0, 0.05, point.sum())
    spread = rng.normal(0.05, 0.14, n) - 0.15 * c
    a = np.zeros((n, 20))
    for k, fan in enumerate((0.6, 0.1, -0.4, -0.9)):
        f = k + 1
        cl = c + dev[:, k]
        a[:, 4 * f] = fan * spread + rng.normal(0, 0.04, n)
        a[:, 4 * f + 1] = 0.85 * cl + rng.normal(0, 0.08, n)
        a[:, 4 * f + 2] = 1.05 * cl + rng.normal(0, 0.08, n)
        a[:, 4 * f + 3] = 0.7 * a[:, 4 * f + 2] + rng.normal(0, 0.05, n)
    opp = rng.beta(2.0, 2.0, n)
    a[:, 0] = -0.2 + 0.9 * opp + rng.normal(0, 0.1, n)
    a[:, 1] = 0.1 + 0.5 * c + 0.2 * opp + rng.normal(0, 0.12, n)
    a[:, 2] = 0.15 + 0.6 * c + rng.normal(0, 0.12, n)
    a[:, 3] = 0.1 + 0.7 * c + rng.normal(0, 0.12, n)
    lim = _joint_limits()
    return np.clip(a, lim[:, 0], lim[:, 1])


def _shapedirs_left(mesh: _Mesh, rng: np.random.Generator) -> np.ndarray:
    """(778, 3, 10) shape blend shapes in the left frame, metres per unit β."""
    v = mesh.v
    sd = np.zeros((len(v), 3, NUM_BETAS))
    sd[:, :, 0] = 0.025 * v  # scale about the wrist (v is wrist-relative)
    fingers = mesh.member >= 0
    for f, fd in enumerate(FINGER_DESIGN):
        m = (mesh.member == f) & (mesh.s_axis > 0)
        d = np.array([np.cos(np.deg2rad(fd.angle_deg)), 0.0, np.sin(np.deg2rad(fd.angle_deg))])
        if f == 0:
            d = _rot_x(THUMB_REST_ANGLE) @ d
        gain = 0.045 if f else 0.0
        sd[m, :, 1] += gain * mesh.s_axis[m, None] * d
        if f == 0:
            sd[m, :, 4] += 0.05 * mesh.s_axis[m, None] * d
    # palm width: lateral displacement of the palm, fingers follow their base rigidly
    anchor = mesh.flat[:, 1].copy()
    for f, fd in enumerate(FINGER_DESIGN):
        m = mesh.member == f
        anchor[m] = fd.base[1] + _smoothstep(-mesh.s_axis[m] / 10.0) * (mesh.flat[m, 1] - fd.base[1])
    sd[:, 2, 2] = 0.06 * anchor
    sd[:, 1, 3] = 0.08 * v[:, 1] * np.where(fingers, 0.6, 1.0)
    for k in range(5, NUM_BETAS):
        for _ in range(4):
            cidx = rng.integers(len(v))
            amp = rng.normal(0.0, 1.0, 3)
            g = np.exp(-np.sum((v - v[cidx]) ** 2, 1) / (2 * 35.0**2))
            sd[:, :, k] += g[:, None] * amp
    return sd * 1e-3  # mm → m (the mm-per-mm gains above become m-per-unit-β)


def _regressor(v: np.ndarray, J: np.ndarray) -> np.ndarray:
    """(16, 778) non-negative rows summing to 1 with ``R @ v ≈ J`` (nearest-vertex NNLS)."""
    R = np.zeros((NUM_JOINTS, len(v)))
    for j in range(NUM_JOINTS):
        order = np.argsort(np.linalg.norm(v - J[j], axis=1))
        for k in (12, 20, 32, 48, 80):
            idx = order[:k]
            lam = 1e3
            A = np.concatenate([v[idx].T, lam * np.ones((1, k))])
            b = np.concatenate([J[j], [lam]])
            x, _ = nnls(A, b)
            x = x / x.sum()
            if np.linalg.norm(x @ v[idx] - J[j]) < 1e-6:
                break
        R[j, idx] = x
    return R


def build_synthetic_mano(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Build the synthetic right and left MANO arrays.

    Args:
        seed: seeds the random shape fields and the pose corpus (the geometry is fixed).

    Returns:
        ``{"right": arrays, "left": arrays}``; each with the official keys: ``v_template`` (778, 3) f64 m,
        ``f`` (1538, 3) uint32, ``shapedirs`` (778, 3, 10), ``posedirs`` (778, 3, 135), ``J_regressor``
        (16, 778) scipy csc, ``weights`` (778, 16), ``kintree_table`` (2, 16) uint32, ``hands_components``
        (45, 45), ``hands_mean`` (45,), ``hands_coeffs`` (1554, 45), ``J`` (16, 3), ``bs_style`` 'lbs',
        ``bs_type`` 'lrotmin', and the marker :data:`mvhand.mano_pickle.SYNTHETIC_MARKER_KEY` (a string) that
        tells these files from the licensed ones.
    """
    rng = np.random.default_rng(seed)
    mesh = _build_mesh()
    J_mm, _ = _design_joints_mm()
    reg = _regressor(mesh.v, J_mm)
    J_mm = reg @ mesh.v
    tips_mm = mesh.v[list(TIP_VERTEX_IDS)]
    sd = _shapedirs_left(mesh, rng)
    # pose corpus → PCA (right-hand coordinates, as in the official files)
    axes = hinge_axes_left(J_mm, tips_mm)
    corpus_left = hinge_to_mano_pose_left(_pose_corpus(rng, NUM_CORPUS), axes)
    corpus_left += rng.normal(0.0, 0.035, corpus_left.shape)  # off-hinge (twist, sideways) play
    corpus_right = mirror_pose(corpus_left)
    mean_r = corpus_right.mean(0)
    X = corpus_right - mean_r
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    Vt *= np.where(Vt[np.arange(45), np.argmax(np.abs(Vt), 1)] < 0, -1.0, 1.0)[:, None]
    coeffs = X @ Vt.T

    offset_mm = WRIST_OFFSET_LEFT * 1e3
    v_left = (mesh.v + offset_mm) * 1e-3
    M = np.array([-1.0, 1.0, 1.0])
    kin = np.array([[2**32 - 1, *MANO_PARENTS[1:]], list(range(NUM_JOINTS))], dtype=np.uint32)
    common = {
        "posedirs": np.zeros((NUM_VERTS, 3, 135)),
        "weights": mesh.w.astype(np.float64),
        "kintree_table": kin,
        "hands_coeffs": coeffs,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        SYNTHETIC_MARKER_KEY: SYNTHETIC_MARKER_TEXT,  # never mistaken for the licensed model (mano_pickle)
    }
    reg_csc = scipy.sparse.csc_matrix(reg)
    right = dict(
        common,
        v_template=v_left * M,
        f=mesh.f[:, ::-1].astype(np.uint32),
        shapedirs=sd * M[None, :, None],
        J_regressor=reg_csc,
        J=(J_mm + offset_mm) * 1e-3 * M,
        hands_components=Vt,
        hands_mean=mean_r,
    )
    left = dict(
        common,
        v_template=v_left,
        f=mesh.f.astype(np.uint32),
        shapedirs=sd,
        J_regressor=reg_csc.copy(),
        J=(J_mm + offset_mm) * 1e-3,
        hands_components=mirror_pose(Vt),
        hands_mean=mirror_pose(mean_r),
    )
    for d in (right, left):
        d["weights"] = d["weights"].copy()
        d["hands_coeffs"] = d["hands_coeffs"].copy()
    return {"right": right, "left": left}


def write_synthetic_mano(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` (pickle protocol 2, atomic) into ``out_dir``.

    Args:
        out_dir: destination folder (created if missing).
        seed: passed to :func:`build_synthetic_mano`.

    Returns:
        ``{"right": path, "left": path}``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder", "pass a folder path for the MANO files")
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = build_synthetic_mano(seed)
    paths = {}
    for side, name in (("right", "MANO_RIGHT.pkl"), ("left", "MANO_LEFT.pkl")):
        path = out_dir / name
        with atomic_write(path, "wb") as fh:
            pickle.dump(arrays[side], fh, protocol=2)
        paths[side] = path
    return paths
