"""Rigid-body maths shared by every module: SE3 JSON objects, quaternions, axis-angle, 6D rotations.

Conventions (spec/formats.md §0.2, §2.1):

* ``T_a_from_b`` is a 4x4 matrix mapping homogeneous points of frame ``b`` into frame ``a``
  (``x_a = R x_b + t``, column vectors).
* Quaternions are stored **w first**: ``[w, x, y, z]`` (Hamilton).
* Translations are metres.

NumPy functions take arrays with arbitrary leading batch dimensions. The ``*_torch`` functions are
differentiable and take tensors with arbitrary leading batch dimensions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily (only the *_torch functions need it; it costs ~2 s to import)
    import torch

__all__ = [
    "quat_wxyz_to_matrix",
    "matrix_to_quat_wxyz",
    "se3_from_json",
    "se3_to_json",
    "make_transform",
    "rodrigues",
    "axis_angle_from_matrix",
    "axis_angle_from_matrix_torch",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
]


# --------------------------------------------------------------------------------------------------
# Quaternions and SE3 JSON objects
# --------------------------------------------------------------------------------------------------


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (normalised) quaternion.

    Args:
        q: ``(..., 4)`` quaternion ``[w, x, y, z]``; it is normalised first, so any non-zero scale works.

    Returns:
        ``(..., 3, 3)`` float64 rotation matrix.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape == (4,):  # single quaternion: Python floats (same float64 operations, ~20× less overhead)
        return np.array(_quat_rows(*q.tolist()))
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0) or not np.all(np.isfinite(q)):
        raise ValueError(f"quaternion must be finite and non-zero, got {q.tolist()}")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _quat_rows(w: float, x: float, y: float, z: float) -> list[list[float]]:
    """Rows of the rotation matrix of one quaternion, with the float64 operations of the batched path
    (the norm is the sequential sum of squares that ``np.linalg.norm`` computes for 4 values)."""
    vals = (w, x, y, z)
    norm = math.sqrt(((w * w + x * x) + y * y) + z * z)
    if norm == 0 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"quaternion must be finite and non-zero, got {list(vals)}")
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Quaternion ``[w, x, y, z]`` (w >= 0) of a rotation matrix (Shepperd's method, batched).

    Args:
        R: ``(..., 3, 3)`` proper rotation matrix.

    Returns:
        ``(..., 4)`` float64 unit quaternion with non-negative ``w``.
    """
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=-2, axis2=-1)
    diag = np.diagonal(m, axis1=-2, axis2=-1)
    # Candidate 4*q_i^2 values; pick the largest for numerical stability.
    cand = np.stack([1 + tr, 1 + 2 * diag[:, 0] - tr, 1 + 2 * diag[:, 1] - tr, 1 + 2 * diag[:, 2] - tr], -1)
    idx = np.argmax(cand, axis=-1)
    q = np.empty((m.shape[0], 4))
    for i, (k, mm) in enumerate(zip(idx, m, strict=True)):
        s = 2.0 * np.sqrt(max(cand[i, k], 1e-300))
        if k == 0:
            q[i] = [s / 4, (mm[2, 1] - mm[1, 2]) / s, (mm[0, 2] - mm[2, 0]) / s, (mm[1, 0] - mm[0, 1]) / s]
        elif k == 1:
            q[i] = [(mm[2, 1] - mm[1, 2]) / s, s / 4, (mm[0, 1] + mm[1, 0]) / s, (mm[0, 2] + mm[2, 0]) / s]
        elif k == 2:
            q[i] = [(mm[0, 2] - mm[2, 0]) / s, (mm[0, 1] + mm[1, 0]) / s, s / 4, (mm[1, 2] + mm[2, 1]) / s]
        else:
            q[i] = [(mm[1, 0] - mm[0, 1]) / s, (mm[0, 2] + mm[2, 0]) / s, (mm[1, 2] + mm[2, 1]) / s, s / 4]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def se3_from_json(obj: dict) -> np.ndarray:
    """4x4 transform of an SE3 JSON object, exactly as the reference builds it (spec/formats.md §2.1).

    The rotation is computed in float64 from the normalised quaternion, then the whole matrix is
    rounded to float32 (the toolkit stores float32 matrices).

    Args:
        obj: ``{"quaternion_wxyz": [w, x, y, z], "translation_xyz": [tx, ty, tz]}`` (metres).

    Returns:
        ``(4, 4)`` float32 matrix.

    Raises:
        ValueError: missing keys, wrong lengths or non-finite values.
    """
    if isinstance(obj, dict):  # fast path for plain JSON numbers (the common case, ~20× less overhead)
        qv, tv = obj.get("quaternion_wxyz"), obj.get("translation_xyz")
        if (
            isinstance(qv, list)
            and isinstance(tv, list)
            and len(qv) == 4
            and len(tv) == 3
            and all(type(v) is float or type(v) is int for v in qv + tv)
        ):
            q, t = [float(v) for v in qv], [float(v) for v in tv]
            if all(math.isfinite(v) for v in q + t) and any(q):
                rows = _quat_rows(*q)
                return np.array(
                    [rows[0] + t[:1], rows[1] + t[1:2], rows[2] + t[2:], [0.0, 0.0, 0.0, 1.0]], np.float32
                )
    try:
        q = np.asarray(obj["quaternion_wxyz"], dtype=np.float64)
        t = np.asarray(obj["translation_xyz"], dtype=np.float64)
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"an SE3 object needs 'quaternion_wxyz' and 'translation_xyz', got {obj!r:.200}"
        ) from exc
    if q.shape != (4,) or t.shape != (3,):
        raise ValueError(f"SE3 object needs 4 quaternion and 3 translation values, got {q.shape}, {t.shape}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise ValueError(f"SE3 object has non-finite values: {obj!r:.200}")
    T = np.eye(4)
    T[:3, :3] = quat_wxyz_to_matrix(q)
    T[:3, 3] = t
    return T.astype(np.float32)


def se3_to_json(T: np.ndarray) -> dict:
    """SE3 JSON object of a rigid 4x4 (or 3x4) transform; inverse of :func:`se3_from_json`.

    Args:
        T: ``(4, 4)`` or ``(3, 4)`` rigid transform, metres.

    Returns:
        ``{"quaternion_wxyz": [...4 floats], "translation_xyz": [...3 floats]}`` (plain Python floats).
    """
    T = np.asarray(T, dtype=np.float64)
    return {
        "quaternion_wxyz": [float(v) for v in matrix_to_quat_wxyz(T[:3, :3])],
        "translation_xyz": [float(v) for v in T[:3, 3]],
    }


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(..., 4, 4)`` homogeneous transform from ``R (..., 3, 3)`` and ``t (..., 3)``."""
    R = np.asarray(R)
    t = np.asarray(t)
    shape = np.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = np.zeros(shape + (4, 4), dtype=np.result_type(R, t))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


# --------------------------------------------------------------------------------------------------
# Axis-angle (NumPy)
# --------------------------------------------------------------------------------------------------


def _skew(v: np.ndarray) -> np.ndarray:
    x, y, z = np.moveaxis(v, -1, 0)
    o = np.zeros_like(x)
    return np.stack([np.stack([o, -z, y], -1), np.stack([z, o, -x], -1), np.stack([-y, x, o], -1)], -2)


def rodrigues(r: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Rotation matrices of rotation vectors (the toolkit's variant, spec/formats.md §4.6).

    ``θ = |r|``; identity when ``θ < eps``, else ``cos θ I + sin θ [k]x + (1 - cos θ) k kᵀ``.

    Args:
        r: ``(..., 3)`` rotation vectors (axis * angle, radians).
        eps: angle below which the identity is returned.

    Returns:
        ``(..., 3, 3)`` rotation matrices in ``r``'s float dtype.
    """
    r = np.asarray(r)
    if not np.issubdtype(r.dtype, np.floating):
        r = r.astype(np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    small = theta < eps
    k = r / np.where(small, 1, theta)
    c = np.cos(theta)[..., None]
    s = np.sin(theta)[..., None]
    eye = np.broadcast_to(np.eye(3, dtype=r.dtype), r.shape[:-1] + (3, 3))
    R = c * eye + s * _skew(k) + (1 - c) * k[..., :, None] * k[..., None, :]
    return np.where(small[..., None], eye, R).astype(r.dtype)


def axis_angle_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation vectors (angle in [0, π]) of rotation matrices, robust near 0 and π.

    Args:
        R: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` float64 rotation vectors.
    """
    q = matrix_to_quat_wxyz(R)  # w >= 0  =>  angle in [0, pi]
    w = np.clip(q[..., 0], -1.0, 1.0)
    xyz = q[..., 1:]
    s = np.linalg.norm(xyz, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    # angle / s -> 2 as s -> 0 (first-order series of 2 atan2(s, w) / s with w -> 1).
    scale = np.where(s > 1e-12, angle / np.where(s > 1e-12, s, 1.0), 2.0)
    return xyz * scale[..., None]


# --------------------------------------------------------------------------------------------------
# Torch (differentiable)
# --------------------------------------------------------------------------------------------------


def axis_angle_from_matrix_torch(R: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ``(..., 3)`` of rotation matrices ``(..., 3, 3)`` (angle in [0, π]).

    Differentiable away from angle π; uses the quaternion route, which is stable near 0 and π. Used by the
    straightforward reference of ``benchmarks/bench_smoothing.py`` (smplx takes axis-angles); mvhand itself
    optimises rotations in the 6D representation.
    """
    import torch

    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    d = torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    cand = torch.stack([1 + tr, 1 + 2 * d[..., 0] - tr, 1 + 2 * d[..., 1] - tr, 1 + 2 * d[..., 2] - tr], -1)
    s = 2 * cand.clamp_min(1e-12).sqrt()  # 4 |q_i|
    q0 = torch.stack(
        [s[..., 0] / 4, (m[..., 2, 1] - m[..., 1, 2]) / s[..., 0], (m[..., 0, 2] - m[..., 2, 0]) / s[..., 0],
         (m[..., 1, 0] - m[..., 0, 1]) / s[..., 0]], -1)  # fmt: skip
    q1 = torch.stack(
        [(m[..., 2, 1] - m[..., 1, 2]) / s[..., 1], s[..., 1] / 4, (m[..., 0, 1] + m[..., 1, 0]) / s[..., 1],
         (m[..., 0, 2] + m[..., 2, 0]) / s[..., 1]], -1)  # fmt: skip
    q2 = torch.stack(
        [(m[..., 0, 2] - m[..., 2, 0]) / s[..., 2], (m[..., 0, 1] + m[..., 1, 0]) / s[..., 2], s[..., 2] / 4,
         (m[..., 1, 2] + m[..., 2, 1]) / s[..., 2]], -1)  # fmt: skip
    q3 = torch.stack(
        [(m[..., 1, 0] - m[..., 0, 1]) / s[..., 3], (m[..., 0, 2] + m[..., 2, 0]) / s[..., 3],
         (m[..., 1, 2] + m[..., 2, 1]) / s[..., 3], s[..., 3] / 4], -1)  # fmt: skip
    qs = torch.stack([q0, q1, q2, q3], -2)
    idx = cand.argmax(-1)
    q = torch.gather(qs, -2, idx[..., None, None].expand(idx.shape + (1, 4))).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    q = q / q.norm(dim=-1, keepdim=True)
    w = q[..., 0].clamp(-1, 1)
    xyz = q[..., 1:]
    sn = xyz.norm(dim=-1)
    angle = 2 * torch.atan2(sn, w)
    scale = torch.where(sn > 1e-8, angle / sn.clamp_min(1e-8), 2.0 / w.clamp_min(1e-8))
    return xyz * scale[..., None]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Continuous 6D representation (Zhou et al. 2019) to rotation matrices.

    Args:
        d6: ``(..., 6)``: the first two **columns** of the rotation matrix, ``[c0 (3), c1 (3)]``.

    Returns:
        ``(..., 3, 3)`` rotation matrices (Gram-Schmidt; columns b1, b2, b1 x b2).
    """
    import torch

    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rotation_6d_to_matrix`: ``(..., 3, 3) -> (..., 6)`` (first two columns)."""
    import torch

    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)
