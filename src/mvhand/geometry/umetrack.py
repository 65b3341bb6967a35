"""UmeTrack hand model (spec/formats.md §2.5, §4): profile JSON, forward kinematics (NumPy and torch), mirroring.

The profile describes a **left** hand in its wrist ("hand") frame, metres after loading. A right hand is
the reflection of the model's local x axis, applied inside FK as ``W' = W · diag(-1, 1, 1, 1)`` (spec/formats.md §4.5).

Forward kinematics (spec/formats.md §4.3), per joint ``j < 20``: ``L_j = [[R_j, c_j - R_j c_j], [0, 1]]`` with
``R_j = exp([θ_j a_j]x)``; frames ``F_0 = F_1 = W'``, ``F_{2+3f} = W' L_{4f} L_{4f+1}``,
``F_{3+3f} = F_{2+3f} L_{4f+2}``, ``F_{4+3f} = F_{3+3f} L_{4f+3}``; points are skinned with
``x' = Σ_k Ω[., k] (F_k [x; 1])``. The NumPy path runs in float32 with the reference's multiplication
order so that it matches the toolkit's ground truth to float32 rounding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mvhand.geometry.transforms import rodrigues
from mvhand.io_utils import InputError

if TYPE_CHECKING:  # torch is imported lazily (only the *_torch functions need it; it costs ~2 s to import)
    import torch

__all__ = [
    "NUM_JOINTS",
    "NUM_FK_JOINTS",
    "NUM_FRAMES",
    "NUM_LANDMARKS",
    "NUM_CANONICAL_LANDMARKS",
    "UmeTrackHandModel",
    "forward_kinematics",
    "forward_kinematics_torch",
    "canonical_landmarks",
    "landmark_skinning_matrix",
]

NUM_JOINTS = 22  # joint angles stored in the data (20 finger DoFs + 2 unused wrist DoFs)
NUM_FK_JOINTS = 20  # joint angles used by FK
NUM_FRAMES = 17  # root, wrist, 5 fingers x 3 segments
NUM_LANDMARKS = 21  # UmeTrack order; the 21st is the palm centre
NUM_CANONICAL_LANDMARKS = 20

_MM_TO_M = np.float32(0.001)
_FIX = "fix the UmeTrack hand-model dictionary (spec/formats.md §2.5)"

# key -> (required, kind); kind: "mm" float32 array scaled to metres, "f" float32 array, "i" int64 array,
# "s" scalar. Order = the toolkit's dataclass field order.
_KEYS: dict[str, tuple[bool, str]] = {
    "joint_rotation_axes": (True, "f"),
    "joint_rest_positions": (True, "mm"),
    "joint_frame_index": (True, "i"),
    "joint_parent": (True, "i"),
    "joint_first_child": (True, "i"),
    "joint_next_sibling": (True, "i"),
    "landmark_rest_positions": (True, "mm"),
    "landmark_rest_bone_weights": (True, "f"),
    "landmark_rest_bone_indices": (True, "i"),
    "hand_scale": (False, "s"),
    "mesh_vertices": (False, "mm"),
    "mesh_triangles": (False, "i"),
    "dense_bone_weights": (False, "f"),
    "joint_limits": (False, "f"),
}


def _mm_from_m(x_m: np.ndarray) -> np.ndarray:
    """float32 millimetre values that map back exactly onto ``x_m`` under ``float32(x_mm) * float32(1e-3)``."""
    x_m = np.asarray(x_m, dtype=np.float32)
    cand = (x_m.astype(np.float64) * 1000.0).astype(np.float32)
    out = cand.copy()
    ok = (cand * _MM_TO_M) == x_m
    for direction in (np.inf, -np.inf):  # a neighbour maps back when the first guess does not
        if ok.all():
            break
        nb = np.nextafter(cand, np.float32(direction))
        hit = ~ok & ((nb * _MM_TO_M) == x_m)
        out[hit] = nb[hit]
        ok |= hit
    return out


@dataclass(eq=False)
class UmeTrackHandModel:
    """UmeTrack hand profile, converted exactly as the toolkit's ``from_json`` does (spec/formats.md §2.5).

    Attributes:
        joint_rotation_axes: ``(J, 3)`` float32 unit axes in the hand frame (J = 22 in real data).
        joint_rest_positions: ``(J, 3)`` float32 joint centres, metres.
        joint_frame_index, joint_parent, joint_first_child, joint_next_sibling: ``(J,)`` int64 metadata
            (255 = none), unused by FK.
        landmark_rest_positions: ``(21, 3)`` float32 landmark rest positions, metres.
        landmark_rest_bone_weights: ``(21, K)`` float32 skinning weights.
        landmark_rest_bone_indices: ``(21, K)`` int64 skinning frame indices (0…16).
        hand_scale: carried, ignored by FK (None if absent).
        mesh_vertices: ``(V, 3)`` float32 metres or None.
        mesh_triangles: ``(F, 3)`` int64 vertex indices (left-hand winding) or None.
        dense_bone_weights: ``(V, 17)`` float32 or None.
        joint_limits: ``(J, 2)`` float32 radians or None.
    """

    joint_rotation_axes: np.ndarray
    joint_rest_positions: np.ndarray
    joint_frame_index: np.ndarray
    joint_parent: np.ndarray
    joint_first_child: np.ndarray
    joint_next_sibling: np.ndarray
    landmark_rest_positions: np.ndarray
    landmark_rest_bone_weights: np.ndarray
    landmark_rest_bone_indices: np.ndarray
    hand_scale: float | None = None
    mesh_vertices: np.ndarray | None = None
    mesh_triangles: np.ndarray | None = None
    dense_bone_weights: np.ndarray | None = None
    joint_limits: np.ndarray | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UmeTrackHandModel:
        """Build the model from the profile dictionary (millimetres).

        Args:
            d: the ``umetrack`` value of ``__hand_shapes.json__`` (keys of spec/formats.md §2.5 only).

        Raises:
            InputError: unknown or missing keys, wrong shapes, non-finite values, bad indices.
        """
        if not isinstance(d, dict):
            raise InputError(None, f"UmeTrack hand model must be a JSON object, got {type(d).__name__}", _FIX)
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise InputError(None, f"UmeTrack hand model has unknown keys {unknown}", _FIX)
        missing = [k for k, (req, _) in _KEYS.items() if req and k not in d]
        if missing:
            raise InputError(None, f"UmeTrack hand model lacks required keys {missing}", _FIX)
        vals: dict[str, Any] = {}
        for key, value in d.items():
            kind = _KEYS[key][1]
            if value is None:
                if _KEYS[key][0]:
                    raise InputError(None, f"UmeTrack hand model key {key!r} is null", _FIX)
                vals[key] = None
                continue
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(
                    None, f"UmeTrack hand model key {key!r} is not numeric: {exc}", _FIX
                ) from exc
            if not np.all(np.isfinite(arr)):
                raise InputError(None, f"UmeTrack hand model key {key!r} has non-finite values", _FIX)
            if kind == "s":
                if arr.size != 1:
                    raise InputError(None, f"{key!r} must be a scalar, got shape {arr.shape}", _FIX)
                vals[key] = float(arr.reshape(()))
            elif kind == "i":
                if np.any(arr != np.round(arr)):
                    raise InputError(None, f"UmeTrack hand model key {key!r} must hold integers", _FIX)
                vals[key] = arr.astype(np.int64)
            elif kind == "mm":
                vals[key] = np.asarray(value, dtype=np.float32) * _MM_TO_M
            else:
                vals[key] = np.asarray(value, dtype=np.float32)
        model = cls(**vals)
        model._validate()
        return model

    def _validate(self) -> None:
        def bad(msg: str) -> InputError:
            return InputError(None, f"UmeTrack hand model: {msg}", _FIX)

        J = self.joint_rotation_axes.shape[0] if self.joint_rotation_axes.ndim == 2 else -1
        if J < NUM_FK_JOINTS or self.joint_rotation_axes.shape != (J, 3):
            raise bad(f"joint_rotation_axes must be (J>=20, 3), got {self.joint_rotation_axes.shape}")
        if np.any(np.linalg.norm(self.joint_rotation_axes[:NUM_FK_JOINTS], axis=-1) < 1e-3):
            raise bad("joint_rotation_axes of joints 0..19 must be non-zero (unit) vectors")
        if self.joint_rest_positions.shape != (J, 3):
            raise bad(f"joint_rest_positions must be ({J}, 3), got {self.joint_rest_positions.shape}")
        for key in ("joint_frame_index", "joint_parent", "joint_first_child", "joint_next_sibling"):
            if getattr(self, key).shape != (J,):
                raise bad(f"{key} must have shape ({J},), got {getattr(self, key).shape}")
        if self.landmark_rest_positions.shape != (NUM_LANDMARKS, 3):
            raise bad(f"landmark_rest_positions must be (21, 3), got {self.landmark_rest_positions.shape}")
        w, idx = self.landmark_rest_bone_weights, self.landmark_rest_bone_indices
        if w.ndim != 2 or w.shape[0] != NUM_LANDMARKS or idx.shape != w.shape:
            raise bad(f"landmark bone weights/indices must both be (21, K), got {w.shape} and {idx.shape}")
        if np.any((w != 0) & ((idx < 0) | (idx >= NUM_FRAMES))):
            raise bad("landmark_rest_bone_indices with a non-zero weight must lie in 0..16")
        V = None
        if self.mesh_vertices is not None:
            if self.mesh_vertices.ndim != 2 or self.mesh_vertices.shape[1] != 3:
                raise bad(f"mesh_vertices must be (V, 3), got {self.mesh_vertices.shape}")
            V = self.mesh_vertices.shape[0]
        if self.dense_bone_weights is not None and (
            V is None or self.dense_bone_weights.shape != (V, NUM_FRAMES)
        ):
            raise bad(
                f"dense_bone_weights must be (V, 17) with mesh_vertices, got {self.dense_bone_weights.shape}"
            )
        if self.mesh_triangles is not None:
            t = self.mesh_triangles
            if V is None or t.ndim != 2 or t.shape[1] != 3 or t.min(initial=0) < 0 or t.max(initial=0) >= V:
                raise bad(f"mesh_triangles must be (F, 3) indices into mesh_vertices, got {t.shape}")
        if self.joint_limits is not None and self.joint_limits.shape != (J, 2):
            raise bad(f"joint_limits must be ({J}, 2), got {self.joint_limits.shape}")

    def to_json(self) -> dict[str, Any]:
        """Profile dictionary in millimetres with the same key set as the one loaded (spec/formats.md §2.5).

        ``from_json(to_json())`` reproduces every array bit for bit (millimetre values are chosen so
        that the float32 mm → m conversion lands on the stored metres).
        """
        out: dict[str, Any] = {}
        for key, (_required, kind) in _KEYS.items():
            v = getattr(self, key)
            if v is None:
                continue
            if kind == "s":
                out[key] = float(v)
            elif kind == "i":
                out[key] = np.asarray(v).astype(np.int64).tolist()
            elif kind == "mm":
                out[key] = _mm_from_m(v).astype(np.float64).tolist()
            else:
                out[key] = np.asarray(v, dtype=np.float32).astype(np.float64).tolist()
        return out

    def equals(self, other: UmeTrackHandModel) -> bool:
        """True if every field is identical (arrays compared exactly, dtype included)."""
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if (a is None) != (b is None):
                return False
            if isinstance(a, np.ndarray):
                if a.dtype != b.dtype or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    @property
    def neutral_joint_angles(self) -> np.ndarray:
        """``(J,)`` float32 UmeTrack neutral pose ``0.5 (lower + upper)`` (zeros without joint limits)."""
        if self.joint_limits is None:
            return np.zeros(self.joint_rotation_axes.shape[0], np.float32)
        return (0.5 * self.joint_limits[:, 0] + 0.5 * self.joint_limits[:, 1]).astype(np.float32)


def landmark_skinning_matrix(model: UmeTrackHandModel) -> np.ndarray:
    """``(21, 17)`` float32 landmark weights Ω (spec/formats.md §4.3 step 5; zero-weight slots skipped)."""
    n, k = model.landmark_rest_bone_weights.shape
    omega = np.zeros((n, NUM_FRAMES), np.float32)
    for s in range(k):  # later slots overwrite earlier ones on a repeated index, as the toolkit does
        w = model.landmark_rest_bone_weights[:, s]
        nz = np.nonzero(w != 0)[0]
        omega[nz, model.landmark_rest_bone_indices[nz, s]] = w[nz]
    return omega


def _as_is_right(is_right: Any, batch_shape: tuple[int, ...]) -> np.ndarray:
    flags = np.asarray(is_right)
    if flags.dtype != np.bool_:
        if not np.all(np.isin(flags, (0, 1))):
            raise ValueError(f"is_right must be bool (or 0/1), got {flags!r:.80}")
        flags = flags.astype(bool)
    return np.broadcast_to(flags, batch_shape)


def _skinning_frames(model: UmeTrackHandModel, joint_angles: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``(..., 17, 4, 4)`` float32 skinning frames from angles ``(..., >=20)`` and mirrored wrists ``W'``."""
    axes = model.joint_rotation_axes[:NUM_FK_JOINTS]
    centres = model.joint_rest_positions[:NUM_FK_JOINTS]
    theta = joint_angles[..., :NUM_FK_JOINTS]
    R = rodrigues(theta[..., None] * axes, eps=1e-6).astype(np.float32)  # (..., 20, 3, 3)
    t = centres - (R * centres[:, None, :]).sum(-1)
    L = np.zeros(R.shape[:-2] + (4, 4), np.float32)
    L[..., :3, :3] = R
    L[..., :3, 3] = t
    L[..., 3, 3] = 1
    L = L.reshape(L.shape[:-3] + (5, 4, 4, 4))  # (..., finger, joint, 4, 4)
    Wf = W[..., None, :, :]  # (..., 1, 4, 4) broadcast over fingers
    P0 = Wf @ L[..., 0, :, :]
    F2 = P0 @ L[..., 1, :, :]
    F3 = F2 @ L[..., 2, :, :]
    F4 = F3 @ L[..., 3, :, :]
    fingers = np.stack([F2, F3, F4], axis=-3)  # (..., 5, 3, 4, 4)
    fingers = fingers.reshape(fingers.shape[:-4] + (15, 4, 4))
    return np.concatenate([W[..., None, :, :], W[..., None, :, :], fingers], axis=-3)


def _prepare(joint_angles, T_world_from_wrist, is_right):
    theta = np.asarray(joint_angles, dtype=np.float32)
    W = np.asarray(T_world_from_wrist, dtype=np.float32)
    if theta.shape[-1:] not in ((20,), (22,)):
        raise ValueError(f"joint_angles must have 20 or 22 values in the last axis, got {theta.shape}")
    if W.shape[-2:] != (4, 4):
        raise ValueError(f"T_world_from_wrist must be (..., 4, 4), got {W.shape}")
    batch = np.broadcast_shapes(theta.shape[:-1], W.shape[:-2], np.shape(is_right))
    theta = np.broadcast_to(theta, batch + theta.shape[-1:])
    W = np.array(np.broadcast_to(W, batch + (4, 4)))
    flags = _as_is_right(is_right, batch)
    W[..., :, 0] *= np.where(flags, np.float32(-1), np.float32(1))[..., None]
    return theta, W, flags


def _skin(F: np.ndarray, omega: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Σ_k Ω[v, k] (F_k [x_v; 1]) for frames ``(..., 17, 4, 4)``; returns ``(..., V, 3)`` float32.

    Blends the 17 matrices first (``(Σ_k Ω[v, k] F_k) [x_v; 1]``, one BLAS matmul); identical for one-hot
    weights and equal to the toolkit's per-frame sum up to float32 rounding otherwise.
    """
    Fm = F[..., :3, :].reshape(F.shape[:-3] + (NUM_FRAMES, 12))
    M = np.matmul(omega.astype(np.float32), Fm).reshape(F.shape[:-3] + (omega.shape[0], 3, 4))
    return ((M[..., :3] * points[:, None, :]).sum(-1) + M[..., 3]).astype(np.float32)


def forward_kinematics(
    model: UmeTrackHandModel, joint_angles: np.ndarray, T_world_from_wrist: np.ndarray, is_right: Any
) -> np.ndarray:
    """UmeTrack landmarks (spec/formats.md §4.3) in float32, batched and vectorised.

    Args:
        model: hand profile (left hand, metres).
        joint_angles: ``(..., 20)`` or ``(..., 22)`` radians (only the first 20 are used).
        T_world_from_wrist: ``(..., 4, 4)`` wrist pose, metres (a proper rigid transform for both hands).
        is_right: bool, or ``(...)`` bool array broadcastable to the batch shape.

    Returns:
        ``(..., 21, 3)`` float32 world landmarks, metres, UmeTrack order (first 20 = canonical).
    """
    theta, W, _ = _prepare(joint_angles, T_world_from_wrist, is_right)
    F = _skinning_frames(model, theta, W)
    pts = np.concatenate([model.landmark_rest_positions, np.ones((NUM_LANDMARKS, 1), np.float32)], -1)
    return _skin(F, landmark_skinning_matrix(model), pts[:, :3])


def canonical_landmarks(lm21):
    """First 20 of the 21 UmeTrack landmarks (``(..., 21, 3) -> (..., 20, 3)``; NumPy or torch)."""
    if lm21.shape[-2] != NUM_LANDMARKS:
        raise ValueError(f"expected (..., 21, 3) landmarks, got {tuple(lm21.shape)}")
    return lm21[..., :NUM_CANONICAL_LANDMARKS, :]


def _joint_rotations_torch(axes: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``exp([θ_j a_j]x)`` for fixed axes ``(20, 3)`` and angles ``(..., 20)`` -> ``(..., 20, 3, 3)``.

    Closed form ``I + sin(θ|a|)/|a| [a]x + (1 - cos(θ|a|))/|a|² [a]x²`` (Rodrigues with the axis
    factored out): smooth in θ, so no small-angle branch is needed and gradients are finite at 0.
    """
    import torch

    norm = axes.norm(dim=-1)  # (20,), > 0 (validated on load)
    K = torch.zeros(axes.shape[:-1] + (3, 3), dtype=axes.dtype, device=axes.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -axes[..., 2], axes[..., 1], -axes[..., 0]
    K = K - K.transpose(-1, -2)
    K2 = K @ K
    phi = theta * norm
    a = (torch.sin(phi) / norm)[..., None, None]
    b = ((1 - torch.cos(phi)) / norm.square())[..., None, None]
    return torch.eye(3, dtype=axes.dtype, device=axes.device) + a * K + b * K2


def forward_kinematics_torch(
    model: UmeTrackHandModel, joint_angles: torch.Tensor, T_world_from_wrist: torch.Tensor, is_right: Any
) -> torch.Tensor:
    """Differentiable UmeTrack FK (same maths as :func:`forward_kinematics`).

    Joint rotations use a closed form that is smooth at zero (finite gradients) instead of the 1e-6
    identity guard; the two agree to float precision.

    Args:
        model: hand profile.
        joint_angles: ``(..., 20|22)`` tensor, radians.
        T_world_from_wrist: ``(..., 4, 4)`` tensor.
        is_right: bool, or bool tensor/array broadcastable to the batch shape.

    Returns:
        ``(..., 21, 3)`` landmarks in ``joint_angles``' dtype and device.
    """
    import torch

    dtype, device = joint_angles.dtype, joint_angles.device
    if joint_angles.shape[-1] not in (20, 22):
        raise ValueError(
            f"joint_angles must have 20 or 22 values in the last axis, got {tuple(joint_angles.shape)}"
        )
    W = T_world_from_wrist.to(dtype)
    flags = torch.as_tensor(
        np.asarray(is_right) if not torch.is_tensor(is_right) else is_right, device=device
    )
    batch = torch.broadcast_shapes(joint_angles.shape[:-1], W.shape[:-2], flags.shape)
    theta = joint_angles[..., :NUM_FK_JOINTS].expand(batch + (NUM_FK_JOINTS,))
    W = W.expand(batch + (4, 4))
    sign = torch.where(flags.bool(), -1.0, 1.0).to(dtype).expand(batch)
    W = torch.cat([W[..., :, :1] * sign[..., None, None], W[..., :, 1:]], dim=-1)

    axes = torch.as_tensor(model.joint_rotation_axes[:NUM_FK_JOINTS], dtype=dtype, device=device)
    centres = torch.as_tensor(model.joint_rest_positions[:NUM_FK_JOINTS], dtype=dtype, device=device)
    R = _joint_rotations_torch(axes, theta)  # (..., 20, 3, 3)
    t = centres - torch.einsum("...ij,...j->...i", R, centres)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=device).expand(R.shape[:-2] + (1, 4))
    L = torch.cat([torch.cat([R, t[..., None]], -1), bottom], -2).reshape(batch + (5, 4, 4, 4))
    Wf = W[..., None, :, :]
    F2 = Wf @ L[..., 0, :, :] @ L[..., 1, :, :]
    F3 = F2 @ L[..., 2, :, :]
    F4 = F3 @ L[..., 3, :, :]
    fingers = torch.stack([F2, F3, F4], dim=-3).reshape(batch + (15, 4, 4))
    F = torch.cat([W[..., None, :, :], W[..., None, :, :], fingers], dim=-3)

    omega = torch.as_tensor(landmark_skinning_matrix(model), dtype=dtype, device=device)
    pts = torch.as_tensor(model.landmark_rest_positions, dtype=dtype, device=device)
    M = torch.matmul(omega, F[..., :3, :].reshape(batch + (NUM_FRAMES, 12))).reshape(batch + (-1, 3, 4))
    return (M[..., :3] * pts[:, None, :]).sum(-1) + M[..., 3]
