"""MANO hand model as wrapped by the challenge toolkit (spec/formats.md §5, §7.5), without chumpy.

Semantics are those of smplx ``MANO(use_pca=True, num_pca_comps=15, flat_hand_mean=False)``
followed by the toolkit's fingertip vertices and canonical remapping:

* ``pose48 = [r, θ_pca · C[:15]] + [0, 0, 0, hands_mean]`` (a zero ``θ_pca`` is the *mean* hand);
* shape ``v_shaped = v_template + shapedirs · β``; joints ``J = J_regressor · v_shaped``;
* smplx Rodrigues (``angle = |r + 1e-8|``), pose blend shapes from ``R_1 … R_15``, linear blend
  skinning about the shaped joints, then ``+ t`` on every output. The global rotation therefore turns
  the hand about the shaped wrist joint ``J_0(β)`` and the posed wrist is ``J_0(β) + t``.
* landmarks = 16 joints + tip vertices (744, 320, 443, 554, 671), reordered with
  :data:`MANO_TO_CANONICAL` into the 20 canonical UmeTrack landmarks (metres).

:meth:`ManoLayer.landmarks` is a landmark-only path: the joints come from precomputed joint
templates/shape directions (``J_regressor`` folded in at init), and only the five tip vertices get
shape blend, pose blend (their 15 rows of ``posedirs``) and skinning, so no 778-vertex work is done
(timings against smplx's full forward and the textbook batch-major path: ``benchmarks/bench_mano.py``,
docs/benchmarks.md). It runs on *component-major* tensors (batch last, see :func:`_landmark_lbs`), its
backward pass derived by autograd; the kinematic chain runs root-aligned (one product per tree depth, all
five fingers at once) and the global rotation about ``J_0(β)`` is applied to the outputs at the end.
:meth:`ManoLayer.forward_full` is the full mesh forward (smplx's batch-major layout). Only the MANO
kinematic tree (:data:`MANO_PARENTS`, the tree of every MANO file) is supported.

Only :func:`load_mano_pkl` and :meth:`ManoModel.from_dir` touch files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvhand.io_utils import InputError
from mvhand.mano_pickle import UnsafePickleError, as_array, read_mano_pickle

__all__ = [
    "MANO_TIP_VERTEX_IDS",
    "MANO_TO_CANONICAL",
    "MANO_PARENTS",
    "NUM_PCA_COMPS",
    "NUM_BETAS",
    "load_mano_pkl",
    "ManoLayer",
    "ManoModel",
]

#: Fingertip vertex ids appended after the 16 joints: thumb, index, middle, ring, pinky (spec/formats.md §5.4).
MANO_TIP_VERTEX_IDS: tuple[int, ...] = (744, 320, 443, 554, 671)
#: Index into [16 joints, 5 tips] for each of the 20 canonical landmarks (spec/formats.md §5.4).
MANO_TO_CANONICAL: tuple[int, ...] = (16, 17, 18, 19, 20, 0, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9)
#: Canonical landmarks used by the metrics: all but the wrist (index 5), spec/formats.md §7.1.
#: Parent of every MANO joint (wrist, index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

NUM_PCA_COMPS = 15
NUM_BETAS = 10
NUM_JOINTS = 16
NUM_VERTS = 778

_FIX = (
    "point `mano_dir` in config.yaml at the folder holding MANO_LEFT.pkl and MANO_RIGHT.pkl from "
    "https://mano.is.tue.mpg.de (mano_v1_2/models)"
)

_FIX_UNSAFE = _FIX + "; this file is not one of them, so do not unpickle it anywhere else either"

# key -> expected shape; None = "at least" dimension checked separately.
_REQUIRED_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (NUM_VERTS, 3),
    "f": (1538, 3),
    "shapedirs": (NUM_VERTS, 3, None),
    "posedirs": (NUM_VERTS, 3, 135),
    "J_regressor": (NUM_JOINTS, NUM_VERTS),
    "weights": (NUM_VERTS, NUM_JOINTS),
    "kintree_table": (2, NUM_JOINTS),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
_INDEX_KEYS = ("f", "kintree_table")  # integer arrays; every other required key is float64 after loading
_FLOAT_KEYS = tuple(k for k in _REQUIRED_SHAPES if k not in _INDEX_KEYS)


# --------------------------------------------------------------------------------------------------
# Loading (the only file I/O of this module)
# --------------------------------------------------------------------------------------------------


def load_mano_pkl(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load an official MANO v1.2 pickle (chumpy objects, sparse regressor) or a plain-numpy one.

    Nothing in the file is executed: the pickle is read with the allow-list of :mod:`mvhand.mano_pickle`
    (NumPy arrays, SciPy CSC/CSR matrices under their 2017 and current module paths, chumpy objects through
    a stub that keeps their stored array; no chumpy needed), so a file from an untrusted source that names
    anything else is refused. Sparse matrices are checked and densified. Every required key is validated for
    presence, shape and finiteness.

    Args:
        path: ``MANO_LEFT.pkl`` or ``MANO_RIGHT.pkl``.

    Returns:
        Dict with ``v_template`` (778, 3) float64 m, ``f`` (1538, 3) int64, ``shapedirs``
        (778, 3, S ≥ 10) float64, ``posedirs`` (778, 3, 135) float64, ``J_regressor`` (16, 778)
        float64 dense, ``weights`` (778, 16) float64, ``kintree_table`` (2, 16) int64 with the root's
        parent set to -1, ``hands_components`` (45, 45) float64 (rows = components), ``hands_mean``
        (45,) float64 rad.

    Raises:
        InputError: missing/unreadable file, a file that names code to run (refused, nothing executed),
            missing key, wrong shape, non-finite values or a kinematic tree other than MANO's
            (:data:`MANO_PARENTS`); the message names the file, the key and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "MANO model file not found", _FIX)
    try:
        raw = read_mano_pickle(path)
    except UnsafePickleError as exc:
        raise InputError(path, f"not a MANO model file: {exc}", _FIX_UNSAFE) from exc
    except Exception as exc:  # any unpickling failure: truncated, not a pickle, too large …
        raise InputError(path, f"cannot read MANO pickle ({type(exc).__name__}: {exc})", _FIX) from exc
    if not isinstance(raw, dict):
        raise InputError(path, f"MANO pickle holds a {type(raw).__name__}, expected a dict of arrays", _FIX)

    out: dict[str, np.ndarray] = {}
    for key, expected in _REQUIRED_SHAPES.items():
        if key not in raw:
            raise InputError(path, f"MANO pickle has no key '{key}' (keys: {sorted(raw)})", _FIX)
        try:
            arr = as_array(raw[key])
        except Exception as exc:
            raise InputError(path, f"key '{key}' cannot be read as an array ({exc})", _FIX) from exc
        if arr.dtype.kind not in "biuf":
            raise InputError(path, f"key '{key}' has non-numeric dtype {arr.dtype}", _FIX)
        exp_str = (
            "("
            + ", ".join("≥10" if d is None else str(d) for d in expected)
            + ("," if len(expected) == 1 else "")
            + ")"
        )
        ok = arr.ndim == len(expected) and all(d is None or d == s for d, s in zip(expected, arr.shape))
        if key == "shapedirs" and ok:
            ok = arr.shape[2] >= NUM_BETAS
        if not ok:
            raise InputError(path, f"key '{key}' has shape {tuple(arr.shape)}, expected {exp_str}", _FIX)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InputError(path, f"key '{key}' contains non-finite values", _FIX)
        out[key] = arr

    for key in _FLOAT_KEYS:
        out[key] = out[key].astype(np.float64)
    faces = out["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise InputError(path, f"key 'f' has vertex ids outside [0, {NUM_VERTS})", _FIX)
    out["f"] = faces
    kintree = out["kintree_table"].astype(np.int64)
    kintree[0, 0] = -1  # the official files store 2**32 - 1; smplx overwrites it the same way
    if kintree[0].tolist() != list(MANO_PARENTS):
        raise InputError(
            path,
            f"key 'kintree_table' row 0 is not the MANO kinematic tree (parents {kintree[0].tolist()}, "
            f"expected {list(MANO_PARENTS)}: wrist, then index, middle, pinky, ring and thumb with 3 joints each)",
            _FIX,
        )
    out["kintree_table"] = kintree
    return out


# --------------------------------------------------------------------------------------------------
# Maths
# --------------------------------------------------------------------------------------------------


# Rows 0-2: cross-product matrix of the unit vectors ([k]x = Σ_i k_i row_i); row 3: the identity.
_ROD_BASIS = np.array(
    [
        [[0, 0, 0], [0, 0, -1], [0, 1, 0]],
        [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    ],
    dtype=np.float32,
).reshape(4, 9)


def _batch_rodrigues(r: torch.Tensor) -> torch.Tensor:
    """smplx ``batch_rodrigues``: (..., 3) axis-angle → (..., 3, 3), ``angle = |r + 1e-8|``.

    smplx computes ``R = I + sin(a) K + (1 − cos(a)) K²`` with ``K = [k]x``, ``k = r / a``. Since
    ``K² = k kᵀ − |k|² I`` exactly, ``R = (1 − (1 − cos a)|k|²) I + sin(a) K + (1 − cos a) k kᵀ``, which is
    evaluated here as one small matmul plus one outer product. The full-mesh forward uses it; the landmark
    path uses the component-major :func:`_rodrigues` (same formula, its own rounding: routing one through the
    other would change the synthetic world's rendered hands or the landmarks in the last bits).
    """
    angle = torch.linalg.vector_norm(r + 1e-8, dim=-1, keepdim=True)
    k = r / angle
    s = torch.sin(angle)
    a = 1.0 - torch.cos(angle)
    feat = torch.cat([s * k, 1.0 - a * (k * k).sum(-1, keepdim=True)], dim=-1)  # (..., 4)
    basis = torch.as_tensor(_ROD_BASIS, dtype=r.dtype, device=r.device)
    R = (feat @ basis).reshape(*r.shape[:-1], 3, 3)
    return R + (a * k)[..., :, None] * k[..., None, :]


def _as_batch(x: Any, name: str, tail: tuple[int, ...], ref: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Tensor of shape (B, *tail) float32 on ``ref``'s device; (*tail) or (1, *tail) is broadcast."""
    t = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
    if tuple(t.shape) == tail:
        t = t.unsqueeze(0)
    if t.ndim != len(tail) + 1 or tuple(t.shape[1:]) != tail:
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, tail))}), got {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        if t.shape[0] != 1:
            raise ValueError(f"{name} has batch {t.shape[0]}, expected {batch} or 1")
        t = t.expand(batch, *tail)
    return t


# --------------------------------------------------------------------------------------------------
# Landmark path: component-major maths
# --------------------------------------------------------------------------------------------------
#
# The landmark path keeps every small vector or matrix *component-major*: a field of 3-vectors is a
# (3, *S) tensor and a field of 3x3 matrices a (3, 3, *S) tensor (entry [i, j] is row i, column j), with
# the batch as the last, contiguous dimension. A 3x3 product is then three fused multiply-adds over
# long contiguous rows, much cheaper on CPU than a batched matmul of tiny matrices (3-7x at batches of
# 1000-8000, docs/benchmarks.md). Autograd derives the backward pass: hand-written backward passes were
# measured 1.0-1.7x faster only, and removed (docs/benchmarks.md, section ``mano_backward``).

#: Joints in tree-depth order (the wrist, then the 5 fingers' first, second and third joints): the
#: landmark path's internal joint order. Depth ``d`` is the slice :data:`_DEPTH` ``[d - 1]``; its parents
#: are the previous depth's slice in the same order.
_DEPTH_ORDER: tuple[int, ...] = (0, *(1 + 3 * f + d for d in range(3) for f in range(5)))
_DEPTH = (slice(1, 6), slice(6, 11), slice(11, 16))


def _mv(a: torch.Tensor, v: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ v`` (``init + a @ v`` if given) for a (3, 3, *S) and a (3, *S) component-major field."""
    a0, a1, a2 = a.unbind(1)
    v0, v1, v2 = v.unbind(0)
    acc = a0 * v0 if init is None else torch.addcmul(init, a0, v0)
    return torch.addcmul(torch.addcmul(acc, a1, v1), a2, v2)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (3, 3, *S) component-major fields: ``[i, k] = Σ_j a[i, j] b[j, k]``."""
    return _mv(a[:, :, None], b[None].transpose(0, 1))


def _rodrigues(r: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """smplx ``batch_rodrigues`` in component-major layout.

    Args:
        r: (3, N) axis-angles, rad.
        basis: (9, 4) :data:`_ROD_BASIS` transposed, in ``r``'s dtype and on its device.

    Returns:
        (3, 3, N) rotation matrices. As in smplx, ``θ = |r + 1e-8|``, ``k = r / θ`` and
        ``R = I + sin θ K + (1 − cos θ) K²`` with ``K = [k]ₓ``; since ``K² = k kᵀ − |k|² I`` this is
        ``R = (1 − (1 − cos θ)|k|²) I + sin θ K + (1 − cos θ) k kᵀ``, i.e. ``basis · f + (1 − cos θ) k kᵀ``
        with ``f = [sin θ k, 1 − (1 − cos θ)|k|²]``. The 1e-8 keeps ``θ > 0``, so value and gradient
        are finite at ``r = 0``.
    """
    v = r + 1e-8
    angle = (v * v).sum(0).sqrt()  # θ, (N,); vector_norm over dim 0 is much slower on CPU
    k = r * angle.reciprocal()
    s, c = torch.sin(angle), torch.cos(angle)
    ak = (1.0 - c) * k
    f = torch.cat([s * k, 1.0 - (ak * k).sum(0, keepdim=True)])  # (4, N)
    return torch.addmm((ak[:, None] * k[None]).view(9, -1), basis, f).view(3, 3, -1)


def _landmark_lbs(
    R_loc: torch.Tensor,
    betas: torch.Tensor,
    transl: torch.Tensor,
    rest0: torch.Tensor,
    shapedirs: torch.Tensor,
    tip_posedirs: torch.Tensor,
    tip_weights: torch.Tensor,
    out_index: torch.Tensor,
) -> torch.Tensor:
    """Tip blend shapes, root-aligned forward kinematics, tip skinning and root transform.

    Joints are in :data:`_DEPTH_ORDER`.

    Args:
        R_loc: (3, 3, J, B) local joint rotations, component-major (``R_loc[:, :, 0]`` = global orient).
        betas: (B, 10) shape coefficients.
        transl: (B, 3) translation, m.
        rest0: (3J + 3T, 1) rest joints then rest tips, coordinate-major (row ``c·J + j``, then
            ``3J + c·T + t``), m; the tip rows include ``−tip_posedirs · vec(I)``.
        shapedirs: (3J + 3T, 10) shape directions of the same rows, m.
        tip_posedirs: (3T, 9J) pose blend shapes of the tip rows over ``vec(R_loc)`` (root columns 0), m.
        tip_weights: (T, J) skinning weights of the tips.
        out_index: (L,) int64 index of each output into ``[J posed joints, T posed tips]``.

    Returns:
        (B, L, 3) points, m: ``R_0 (p − J_0) + J_0 + transl`` for the root-aligned points ``p``.
    """
    nJ, B = R_loc.shape[2], R_loc.shape[3]
    nT = tip_weights.shape[0]
    rest = torch.addmm(rest0, shapedirs, betas.t())  # (3J + 3T, B)
    J = rest[: 3 * nJ].view(3, nJ, B)
    T = torch.addmm(rest[3 * nJ :], tip_posedirs, R_loc.reshape(9 * nJ, B)).view(3, nT, B)  # + pose blend
    # Root-aligned chain (R_0 = I), one product per tree depth for all five fingers.
    eye = torch.eye(3, dtype=R_loc.dtype, device=R_loc.device)[:, :, None, None].expand(3, 3, 1, B)
    R_glob, J_posed = [eye, R_loc[:, :, _DEPTH[0]]], [J[:, :1], J[:, _DEPTH[0]]]
    for parent, child in zip(_DEPTH[:-1], _DEPTH[1:]):
        R_glob.append(_mm(R_glob[-1], R_loc[:, :, child]))
        J_posed.append(_mv(R_glob[-2], J[:, child] - J[:, parent]) + J_posed[-1])
    Rg, Jp = torch.cat(R_glob, 2), torch.cat(J_posed, 1)  # (3, 3, J, B), (3, J, B)
    # Skinning transforms A_j = [R_j | J'_j − R_j J_j], blended over the joints for each tip (one matmul
    # over joint-major rows).
    A = torch.cat([Rg, (Jp - _mv(Rg, J))[:, None]], 1)  # (3, 4, J, B)
    Ab = torch.mm(tip_weights, A.permute(2, 0, 1, 3).reshape(nJ, 12 * B)).view(nT, 3, 4, B)
    Ab = Ab.permute(1, 2, 0, 3)  # (3, 4, T, B)
    tips = _mv(Ab[:, :3], T) + Ab[:, 3]
    # Global orientation about J_0, then the translation: R_0 p + (J_0 + t − R_0 J_0).
    pc = torch.cat([Jp, tips], 1).index_select(1, out_index)  # (3, L, B)
    R0, J0 = R_loc[:, :, 0], J[:, 0]
    c0 = (J0 + transl.t()) - _mv(R0, J0)
    return _mv(R0[:, :, None], pc, init=c0[:, None]).permute(2, 1, 0)


class ManoLayer(torch.nn.Module):
    """One MANO side with the toolkit's settings (15 PCA comps, mean hand added, 10 betas); buffers only.

    Args:
        data: arrays from :func:`load_mano_pkl` (the left-shapedirs fix, if any, already applied).
        is_right: which side the arrays are (informational; the maths does not depend on it).
        num_pca_comps: PCA components of the pose (15 in the challenge).

    All buffers are float32. Inputs may be tensors or arrays; they are converted to float32 on the
    module's device (tensors already there keep their autograd graph). Every ``(B, …)`` input may also
    be given without the batch dimension or with batch 1, and is then broadcast.
    """

    def __init__(self, data: dict[str, np.ndarray], is_right: bool, num_pca_comps: int = NUM_PCA_COMPS):
        super().__init__()
        self.is_right = bool(is_right)
        self.num_pca_comps = int(num_pca_comps)
        f64 = {k: np.asarray(v, dtype=np.float64) for k, v in data.items() if k not in ("f", "kintree_table")}
        v_template = f64["v_template"]
        shapedirs = f64["shapedirs"][:, :, :NUM_BETAS]
        posedirs = f64["posedirs"]  # (778, 3, 135)
        J_reg = f64["J_regressor"]
        weights = f64["weights"]
        parents = np.asarray(data["kintree_table"], dtype=np.int64)[0].copy()
        parents[0] = -1
        if parents.tolist() != list(MANO_PARENTS):  # load_mano_pkl refuses such files with an InputError
            raise ValueError(f"kintree_table is not the MANO kinematic tree: parents {parents.tolist()}")
        tips = list(MANO_TIP_VERTEX_IDS)

        def buf(name: str, arr: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype))

        # Full-mesh buffers (smplx layout).
        buf("v_template", v_template)
        buf("shapedirs", shapedirs)
        buf("posedirs", posedirs.reshape(-1, posedirs.shape[-1]).T)  # (135, 2334)
        buf("J_regressor", J_reg)
        buf("lbs_weights", weights)
        buf("faces", np.asarray(data["f"]), torch.int64)
        buf("hand_components", f64["hands_components"][: self.num_pca_comps])  # (P, 45)
        buf("pose_mean", np.concatenate([np.zeros(3), f64["hands_mean"]]))  # (48,)
        # Landmark-only buffers, precomputed in float64.
        buf("J_template", J_reg @ v_template)  # (16, 3)
        buf("J_shapedirs", np.einsum("jv,vck->jck", J_reg, shapedirs))  # (16, 3, 10)

        # Landmark path (_landmark_lbs): joints in the tree-depth order _DEPTH_ORDER, every small
        # vector/matrix component-major with the batch last; all maps below are precomputed in float64.
        order = list(_DEPTH_ORDER)
        nJ, nT, P = NUM_JOINTS, len(tips), self.num_pca_comps
        pose_w = np.zeros((3, nJ, 3 + P))  # [global orient, θ_pca] -> axis-angle (c, internal joint)
        pose_b = np.zeros((3, nJ))
        pose_mean = np.concatenate([np.zeros(3), f64["hands_mean"]])
        for i, m in enumerate(order):
            for c in range(3):
                if m == 0:
                    pose_w[c, i, c] = 1.0
                else:
                    pose_w[c, i, 3:] = f64["hands_components"][:P, 3 * (m - 1) + c]
                pose_b[c, i] = pose_mean[3 * m + c]
        buf("lm_pose_weight", pose_w.reshape(3 * nJ, 3 + P))  # (48, 3 + P)
        buf("lm_pose_bias", pose_b.reshape(3 * nJ, 1))  # (48, 1) rad
        buf("lm_rod_basis", _ROD_BASIS.T)  # (9, 4)
        # Pose blend shapes of the tips over vec(R_loc) (rows c·T + t, columns a·3J + b·J + i).
        tip_pd = np.zeros((3, nT, 3, 3, nJ))
        for i, m in enumerate(order):
            if m:
                tip_pd[..., i] = (
                    posedirs[tips][:, :, 9 * (m - 1) : 9 * m].reshape(nT, 3, 3, 3).transpose(1, 0, 2, 3)
                )
        tip_pd = tip_pd.reshape(3 * nT, 9 * nJ)
        eye_vec = np.broadcast_to(np.eye(3)[..., None], (3, 3, nJ)).reshape(-1)
        rest0 = np.concatenate(
            [(J_reg @ v_template)[order].T.reshape(-1), v_template[tips].T.reshape(-1) - tip_pd @ eye_vec]
        )
        J_sd = np.einsum("jv,vck->jck", J_reg, shapedirs)[order]  # (16, 3, 10)
        sd = np.concatenate(
            [
                J_sd.transpose(1, 0, 2).reshape(3 * nJ, -1),
                shapedirs[tips].transpose(1, 0, 2).reshape(3 * nT, -1),
            ]
        )
        buf("lm_rest0", rest0[:, None])  # (3J + 3T, 1) m: rest joints (c·J + i), then tips (c·T + t)
        buf("lm_shapedirs", sd)  # (3J + 3T, 10) m
        buf("lm_tip_posedirs", tip_pd)  # (3T, 9J) m
        buf("lm_tip_weights", weights[tips][:, order])  # (T, J)
        src = [order.index(k) if k < nJ else k for k in MANO_TO_CANONICAL]
        buf("lm_out_index", np.asarray(src), torch.int64)  # (20,) into [J posed joints, T tips]

    # ---------------------------------------------------------------------------------------------
    @property
    def _ref(self) -> torch.Tensor:
        return self.v_template

    def _inputs(
        self, pose_pca: Any, global_orient: Any, transl: Any, betas: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ref = self._ref
        ts = [
            torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
            for x in (pose_pca, global_orient, transl, betas)
        ]
        go_tail = (3, 3) if ts[1].ndim == 3 else (3,)  # (3, 3) alone is read as 3 axis-angles
        tails = [(self.num_pca_comps,), go_tail, (3,), (NUM_BETAS,)]
        batch = max([t.shape[0] for t, tail in zip(ts, tails) if t.ndim == len(tail) + 1] or [1])
        names = ("pose_pca", "global_orient", "transl", "betas")
        pose, go, transl, betas = (_as_batch(t, n, tail, ref, batch) for t, n, tail in zip(ts, names, tails))
        return pose, go, transl, betas

    def _rotations(self, pose: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3, 3) local rotations: global orient + PCA hand pose + mean pose (smplx)."""
        hand = pose @ self.hand_components + self.pose_mean[3:]  # (B, 45)
        if go.ndim == 3:  # rotation matrix given
            R_hand = _batch_rodrigues(hand.reshape(-1, NUM_JOINTS - 1, 3))
            return torch.cat([go[:, None], R_hand], dim=1)
        full = torch.cat([go + self.pose_mean[:3], hand], dim=1)
        return _batch_rodrigues(full.reshape(-1, NUM_JOINTS, 3))

    @staticmethod
    def _chain(R_loc: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward kinematics with the root rotation left out (``R_0 = I``; see :meth:`_apply_root`).

        MANO tree: joint 1 + 3f + k is finger f's k-th joint. Depth 1 needs no product (the root is the
        identity); depths 2 and 3 take one batched (3x3)·(3x4) product each, giving rotation and
        translation together.

        Args:
            R_loc: (B, 16, 3, 3) local rotations (``R_loc[:, 0]`` is ignored).
            J: (B, 16, 3) shaped rest joints.

        Returns:
            global rotations (B, 16, 3, 3) and posed joints (B, 16, 3) of the root-aligned chain.
        """
        B = R_loc.shape[0]
        eye = torch.eye(3, dtype=R_loc.dtype, device=R_loc.device).expand(B, 1, 3, 3)
        R_f = R_loc[:, 1:].reshape(B, 5, 3, 3, 3)  # (B, finger, depth, 3, 3)
        J_f = J[:, 1:].reshape(B, 5, 3, 3)  # (B, finger, depth, 3)
        rel = J_f[:, :, 1:] - J_f[:, :, :2]  # (B, 5, 2, 3): offsets of depths 2, 3 from their parents
        M = torch.cat([R_f[:, :, 1:], rel[..., None]], dim=-1)  # (B, 5, 2, 3, 4)
        R1, t1 = R_f[:, :, 0], J_f[:, :, 0]
        X2 = R1 @ M[:, :, 0]
        R2, t2 = X2[..., :3], X2[..., 3] + t1
        X3 = R2 @ M[:, :, 1]
        R3, t3 = X3[..., :3], X3[..., 3] + t2
        R_glob = torch.cat([eye, torch.stack([R1, R2, R3], dim=2).reshape(B, 15, 3, 3)], dim=1)
        J_posed = torch.cat([J[:, :1], torch.stack([t1, t2, t3], dim=2).reshape(B, 15, 3)], dim=1)
        return R_glob, J_posed

    @staticmethod
    def _apply_root(
        pts: torch.Tensor, R0: torch.Tensor, J0: torch.Tensor, transl: torch.Tensor
    ) -> torch.Tensor:
        """Rotate root-aligned points (B, N, 3) by ``R0`` (B, 3, 3) about ``J0`` (B, 3), then add ``transl``.

        Skinning is linear in the transforms and every global transform is ``[R0, J0 − R0 J0]``
        composed with the root-aligned one, so this equals running the chain with ``R0`` at the root.
        """
        return (pts - J0[:, None]) @ R0.transpose(1, 2) + (J0 + transl)[:, None]

    def _skin_transforms(self, R_glob: torch.Tensor, J_posed: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """LBS transforms A_j = [R_j, t_j − R_j J_j] flattened to (B, 16, 12)."""
        t = J_posed - (R_glob @ J[..., None])[..., 0]
        return torch.cat([R_glob, t[..., None]], dim=-1).reshape(R_glob.shape[0], NUM_JOINTS, 12)

    @staticmethod
    def _transform_points(T: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Apply per-point blended transforms T (B, N, 12) to points v (B, N, 3)."""
        T = T.reshape(*T.shape[:-1], 3, 4)
        return (T[..., :3] @ v[..., None])[..., 0] + T[..., 3]

    # ---------------------------------------------------------------------------------------------
    def root_joint(self, betas: Any) -> torch.Tensor:
        """Shaped wrist joint ``J_0(β)`` (B, 3) m; the posed world wrist is ``J_0(β) + transl``."""
        b = _as_batch(betas, "betas", (NUM_BETAS,), self._ref, None)
        return self.J_template[0] + b @ self.J_shapedirs[0].T

    def landmarks(self, pose_pca: Any, global_orient: Any, transl: Any, betas: Any) -> torch.Tensor:
        """Canonical 20 landmarks via the landmark-only path (no 778-vertex work).

        Args:
            pose_pca: (B, 15) PCA pose coefficients θ_pca.
            global_orient: (B, 3) axis-angle (rad) or (B, 3, 3) rotation matrices about ``J_0(β)``
                (matrices need the batch dimension; a (3, 3) input is read as B = 3 axis-angles).
            transl: (B, 3) translation (m) added to every output.
            betas: (B, 10) shape coefficients.

        Returns:
            (B, 20, 3) canonical landmarks (spec/formats.md §5.4), metres, float32 (also under autocast),
            differentiable w.r.t. all inputs (autograd).
        """
        pose, go, transl, betas = self._inputs(pose_pca, global_orient, transl, betas)
        B, nJ = pose.shape[0], NUM_JOINTS
        # Autocast off: one dtype throughout (float32 unless the layer was cast).
        with torch.autocast(device_type=pose.device.type, enabled=False):
            if go.ndim == 3:  # rotation matrix given: it replaces the root's Rodrigues output
                aa = torch.addmm(self.lm_pose_bias, self.lm_pose_weight[:, 3:], pose.t())
                R_loc = _rodrigues(aa.view(3, -1), self.lm_rod_basis).view(3, 3, nJ, B)
                R_loc = torch.cat([go.permute(1, 2, 0)[:, :, None], R_loc[:, :, 1:]], dim=2)
            else:
                aa = torch.addmm(self.lm_pose_bias, self.lm_pose_weight, torch.cat([go, pose], dim=1).t())
                R_loc = _rodrigues(aa.view(3, -1), self.lm_rod_basis).view(3, 3, nJ, B)
            return _landmark_lbs(
                R_loc,
                betas,
                transl,
                self.lm_rest0,
                self.lm_shapedirs,
                self.lm_tip_posedirs,
                self.lm_tip_weights,
                self.lm_out_index,
            )

    def forward_full(
        self, pose_pca: Any, global_orient: Any, transl: Any, betas: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full smplx MANO forward.

        Args: as :meth:`landmarks`.

        Returns:
            vertices (B, 778, 3) and joints (B, 16, 3) (MANO order, no tips), metres, translated.
        """
        pose, go, transl, betas = self._inputs(pose_pca, global_orient, transl, betas)
        B = pose.shape[0]
        v_shaped = self.v_template + torch.einsum("vck,bk->bvc", self.shapedirs, betas)
        J = self.J_template + torch.einsum("jck,bk->bjc", self.J_shapedirs, betas)
        R_loc = self._rotations(pose, go)
        R_glob, J_posed = self._chain(R_loc, J)
        eye = torch.eye(3, dtype=R_loc.dtype, device=R_loc.device)
        pose_feat = (R_loc[:, 1:] - eye).reshape(B, -1)
        v_posed = v_shaped + (pose_feat @ self.posedirs).reshape(B, -1, 3)
        A = self._skin_transforms(R_glob, J_posed, J)
        T = self.lbs_weights @ A  # (B, 778, 12)
        verts = self._transform_points(T, v_posed)
        R0, J0 = R_loc[:, 0], J[:, 0]
        return self._apply_root(verts, R0, J0, transl), self._apply_root(J_posed, R0, J0, transl)

    def landmarks_from_full(self, pose_pca: Any, global_orient: Any, transl: Any, betas: Any) -> torch.Tensor:
        """Canonical 20 landmarks through :meth:`forward_full`, (B, 20, 3).

        Test reference for :meth:`landmarks` (``tests/test_mano.py``); the pipeline does not call it.
        """
        verts, joints = self.forward_full(pose_pca, global_orient, transl, betas)
        pts = torch.cat([joints, verts[:, list(MANO_TIP_VERTEX_IDS)]], dim=1)
        return pts[:, list(MANO_TO_CANONICAL)]

    def forward(self, pose_pca: Any, global_orient: Any, transl: Any, betas: Any) -> torch.Tensor:
        """Alias of :meth:`landmarks`."""
        return self.landmarks(pose_pca, global_orient, transl, betas)


def _side_index(side: Any) -> int:
    if isinstance(side, str):
        s = side.lower()
        if s in ("left", "l"):
            return 0
        if s in ("right", "r"):
            return 1
        raise ValueError(f"hand side must be 'left'/'right' or 0/1, got {side!r}")
    s = int(side)
    if s not in (0, 1):
        raise ValueError(f"hand side must be 0 (left) or 1 (right), got {side!r}")
    return s


class ManoModel(torch.nn.Module):
    """Both MANO layers as the toolkit builds them (left-hand shapedirs fix applied, spec/formats.md §5.1).

    Attributes:
        left: left-hand :class:`ManoLayer` (hand_side 0).
        right: right-hand :class:`ManoLayer` (hand_side 1).
        shapedirs_fixed: whether the left-hand shapedirs fix fired.
    """

    def __init__(self, left: dict[str, np.ndarray], right: dict[str, np.ndarray]):
        super().__init__()
        left = dict(left)
        left["shapedirs"], self.shapedirs_fixed = fix_left_shapedirs(left["shapedirs"], right["shapedirs"])
        self.left = ManoLayer(left, is_right=False)
        self.right = ManoLayer(right, is_right=True)

    @classmethod
    def from_dir(cls, mano_dir: str | os.PathLike) -> ManoModel:
        """Load ``MANO_LEFT.pkl`` and ``MANO_RIGHT.pkl`` from ``mano_dir`` (see :func:`load_mano_pkl`)."""
        mano_dir = Path(mano_dir)
        if not mano_dir.is_dir():
            raise InputError(mano_dir, "MANO model folder not found", _FIX)
        return cls(load_mano_pkl(mano_dir / "MANO_LEFT.pkl"), load_mano_pkl(mano_dir / "MANO_RIGHT.pkl"))

    def layer(self, side: int | str) -> ManoLayer:
        """The layer of ``side`` (0/"left" or 1/"right")."""
        return self.right if _side_index(side) == 1 else self.left

    def per_side(self, hand_side: Any, fn: Callable[..., torch.Tensor], *batch: torch.Tensor) -> torch.Tensor:
        """``fn(layer, *batch)`` for a batch whose entries may belong to either hand.

        The batch is split by side, ``fn`` runs once per side present with that side's layer and rows, and
        the results are put back in batch order (gradients flow through the scatter). A one-sided batch is
        passed through whole.

        Args:
            hand_side: one side for the whole batch (0/"left" or 1/"right"), or (B,) ints (0 left,
                1 right; a one-element tensor applies to all).
            fn: ``fn(layer, *rows) -> (n, ...)``, e.g. :meth:`ManoLayer.landmarks` or
                :meth:`ManoLayer.root_joint`.
            *batch: (B, ...) tensors, split along dimension 0.

        Returns:
            (B, ...) results of ``fn``.

        Raises:
            ValueError: a side other than 0/1/"left"/"right", or ``hand_side`` of the wrong length.
        """
        if isinstance(hand_side, str) or np.ndim(hand_side) == 0 and not torch.is_tensor(hand_side):
            return fn(self.layer(hand_side), *batch)
        B = batch[0].shape[0]
        sides = torch.as_tensor(hand_side, device=batch[0].device).reshape(-1).long()
        if sides.numel() == 1:
            sides = sides.expand(B)
        if sides.shape[0] != B:
            raise ValueError(f"hand_side has {sides.shape[0]} entries, expected {B}")
        if bool(((sides != 0) & (sides != 1)).any()):
            raise ValueError("hand_side entries must be 0 (left) or 1 (right)")
        out = None
        for s, lay in ((0, self.left), (1, self.right)):
            idx = torch.nonzero(sides == s).reshape(-1)
            if idx.numel() == 0:
                continue
            if idx.numel() == B:
                return fn(lay, *batch)
            rows = fn(lay, *(t[idx] for t in batch))
            out = (rows.new_zeros(B, *rows.shape[1:]) if out is None else out).index_copy(0, idx, rows)
        return fn(self.left, *batch) if out is None else out  # out is None only for an empty batch

    def landmarks_from_wrist_xform(
        self, theta: Any, wrist_xform: Any, betas: Any, hand_side: Any
    ) -> torch.Tensor:
        """Canonical landmarks from challenge parameters, sides may be mixed within the batch.

        Args:
            theta: (B, 15) PCA pose coefficients.
            wrist_xform: (B, 6) ``[axis-angle (rad), translation (m)]`` = smplx global_orient, transl.
            betas: (B, 10) or (10,) shape coefficients.
            hand_side: (B,) ints (0 left, 1 right), or one int/str for the whole batch (see :meth:`per_side`).

        Returns:
            (B, 20, 3) canonical landmarks, metres, float32.
        """
        ref = self.left.v_template
        wx = _as_batch(wrist_xform, "wrist_xform", (6,), ref, None)
        B = wx.shape[0]
        th = _as_batch(theta, "theta", (NUM_PCA_COMPS,), ref, B)
        be = _as_batch(betas, "betas", (NUM_BETAS,), ref, B)
        return self.per_side(hand_side, ManoLayer.landmarks, th, wx[:, :3], wx[:, 3:], be)

    def shape_vertices(self, betas: Any) -> torch.Tensor:
        """spec/formats.md §7.5 shape-metric mesh: left layer, θ_pca = 0 (mean hand), zero wrist_xform.

        Args:
            betas: (B, 10) or (10,) shape coefficients.

        Returns:
            (B, 778, 3) vertices, metres.
        """
        ref = self.left.v_template
        be = _as_batch(betas, "betas", (NUM_BETAS,), ref, None)
        B = be.shape[0]
        zeros = ref.new_zeros(B, NUM_PCA_COMPS)
        verts, _ = self.left.forward_full(zeros, ref.new_zeros(B, 3), ref.new_zeros(B, 3), be)
        return verts


def fix_left_shapedirs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, bool]:
    """spec/formats.md §5.1 left-hand shapedirs fix (smplx issue #48).

    If ``Σ |L[:, 0, :] − R[:, 0, :]| < 1`` (the left file ships the right hand's x components),
    negate ``L[:, 0, :]``.

    Args:
        left: (778, 3, S) left shapedirs.
        right: (778, 3, S') right shapedirs.

    Returns:
        (fixed copy of ``left``, whether the fix fired).
    """
    left = np.array(left, dtype=np.float64, copy=True)
    n = NUM_BETAS  # the toolkit compares the layers' (10-beta) shapedirs
    diff = np.abs(left[:, 0, :n] - np.asarray(right, dtype=np.float64)[:, 0, :n]).sum()
    if diff < 1:
        left[:, 0, :] *= -1
        return left, True
    return left, False
