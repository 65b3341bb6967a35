"""Temporal post-processing of per-frame MANO predictions: Neural Smooth (offline and online) and filters.

Neural Smooth (Zou et al. 2024): per sequence and hand, the per-frame MANO pose (15 PCA), global
orientation and root position become trainable parameters initialised from the network; the loss is

    w_pose·accel(pose) + w_orient·accel(orient) + w_position·accel(position) + w_2d·L2D,
    accel(x) = mean_t |x_t − 2 x_{t−1} + x_{t−2}|,

where L2D compares the MANO landmarks projected through every available crop camera with the
network's 2D keypoints (confidence-weighted, wrist excluded). The report minimises it with AdamW
(lr 1e-2, cosine, 500 iterations; ``solver="adamw"``); the default solver is Gauss–Newton /
Levenberg–Marquardt on the same loss with the L1 terms smoothed as ``sqrt(r² + ε²)``
(:class:`_GaussNewton`: banded normal equations, ~10 iterations; docs/smoothing.md).

Beyond the report, ``w_depth > 0`` adds ``w_depth · mean_t (u_tᵀ(root_t − root_net,t))²`` (m²): a Gaussian
prior on the root's depth along the viewing direction ``u_t`` (mean camera centre → network root), which
narrow-baseline views cannot triangulate; the directions across ``u_t`` stay with L2D. 0 (the default) is
the report's loss.

Units and parameterisation (our choices, documented in docs/smoothing.md):

* orientation: continuous 6D (first two rotation-matrix columns): no axis-angle wrap-around;
* position: the MANO root joint in world metres (AdamW works on an offset in units of
  ``position_unit`` metres, so that Adam's step size, ≈ lr per unit, is ``lr·position_unit`` metres);
* L2D: pixel error divided by the crop camera's focal length (normalised image coordinates, i.e.
  ≈ radians), independent of crop size;
* all sequences and hands are optimised together in one batch; segments (runs of consecutive frames of
  one hand) are independent: accelerations never straddle a gap. Segments shorter than 3 frames have
  no acceleration term and are returned unchanged.

The online variant is causal: for each new frame it re-optimises a sliding window of the newest frames
(Gauss–Newton, warm-started from the previous window's solution) and emits the newest frame.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.signal import savgol_filter

from mvhand.formats.predictions import require_columns
from mvhand.geometry.cameras import project_pinhole_torch
from mvhand.geometry.transforms import matrix_to_rotation_6d, rotation_6d_to_matrix

__all__ = [
    "EVAL_2D_LANDMARKS",
    "NeuralSmoothConfig",
    "OnlineSmoothConfig",
    "SmoothingProblem",
    "Trajectory",
    "accel",
    "neural_smooth",
    "one_euro",
    "online_neural_smooth",
    "savitzky_golay",
    "segment_ids",
]

log = logging.getLogger(__name__)

#: canonical landmarks used by L2D: all but the wrist (index 5), as in the evaluation.
EVAL_2D_LANDMARKS = tuple(i for i in range(20) if i != 5)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """Per-frame MANO state of N hand instances (all sequences and hands concatenated).

    Attributes:
        pose: ``(N, 15)`` MANO PCA pose coefficients.
        rot: ``(N, 3, 3)`` global orientation (world, for the side's MANO layer).
        root: ``(N, 3)`` MANO root joint position, world metres.
    """

    pose: np.ndarray
    rot: np.ndarray
    root: np.ndarray

    def copy(self) -> Trajectory:
        return Trajectory(self.pose.copy(), self.rot.copy(), self.root.copy())


@dataclass
class SmoothingProblem:
    """Everything Neural Smooth needs, flattened over all hand instances and views.

    Attributes:
        init: network predictions (``N`` instances).
        betas: ``(N, 10)`` fixed MANO shape per instance.
        hand_side: ``(N,)`` int, 0 left / 1 right (selects the MANO layer).
        segment: ``(N,)`` int segment id; instances of one segment are consecutive frames, in order.
        view_instance: ``(M,)`` int index of the instance each view belongs to.
        view_K: ``(M, 4)`` crop-camera intrinsics ``fx, fy, cx, cy`` (px).
        view_T_world_from_crop: ``(M, 4, 4)`` crop-camera poses.
        view_kp2d: ``(M, 20, 2)`` predicted 2D keypoints (px, canonical order); NaN = missing.
        view_conf: ``(M, 20)`` confidences in [0, 1] (weights of L2D).
    """

    init: Trajectory
    betas: np.ndarray
    hand_side: np.ndarray
    segment: np.ndarray
    view_instance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    view_K: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    view_T_world_from_crop: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    view_kp2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 20, 2)))
    view_conf: np.ndarray = field(default_factory=lambda: np.zeros((0, 20)))

    @property
    def n(self) -> int:
        return len(self.hand_side)

    def subset(self, idx: np.ndarray) -> SmoothingProblem:
        """The problem restricted to instances ``idx`` (sorted), views remapped."""
        idx = np.asarray(idx)
        remap = np.full(self.n, -1)
        remap[idx] = np.arange(len(idx))
        keep = remap[self.view_instance] >= 0
        return SmoothingProblem(
            init=Trajectory(self.init.pose[idx], self.init.rot[idx], self.init.root[idx]),
            betas=self.betas[idx],
            hand_side=self.hand_side[idx],
            segment=self.segment[idx],
            view_instance=remap[self.view_instance[keep]],
            view_K=self.view_K[keep],
            view_T_world_from_crop=self.view_T_world_from_crop[keep],
            view_kp2d=self.view_kp2d[keep],
            view_conf=self.view_conf[keep],
        )


def segment_ids(keys: np.ndarray, frame_id: np.ndarray, max_gap: int = 1) -> np.ndarray:
    """Split instances into segments of consecutive frames.

    Args:
        keys: ``(N,)`` group key per instance (e.g. ``"<sequence>/<hand_side>"``); instances must be
            sorted by key, then frame id.
        frame_id: ``(N,)`` int frame ids.
        max_gap: a frame-id step larger than this starts a new segment (1 = any missing frame splits).

    Returns:
        ``(N,)`` int segment ids, 0…S−1 in order of appearance.
    """
    keys = np.asarray(keys)
    frame_id = np.asarray(frame_id, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    new = np.ones(len(keys), bool)
    same_key = keys[1:] == keys[:-1]
    step = frame_id[1:] - frame_id[:-1]
    if np.any(same_key & (step <= 0)):
        raise ValueError("instances must be sorted by key and strictly increasing frame id within a key")
    new[1:] = ~same_key | (step > max_gap)
    return np.cumsum(new) - 1


def _triplets(segment: np.ndarray) -> np.ndarray:
    """``(K, 3)`` indices ``(t, t−1, t−2)`` of consecutive instances inside one segment."""
    segment = np.asarray(segment)
    t = np.arange(2, len(segment))
    ok = (segment[t] == segment[t - 1]) & (segment[t] == segment[t - 2])
    t = t[ok]
    return np.stack([t, t - 1, t - 2], -1) if len(t) else np.zeros((0, 3), np.int64)


def accel(x: torch.Tensor, triplets: torch.Tensor) -> torch.Tensor:
    """Mean absolute second difference ``mean |x_t − 2x_{t−1} + x_{t−2}|`` over the given triplets.

    Args:
        x: ``(N, D)`` per-frame values.
        triplets: ``(K, 3)`` long indices ``(t, t−1, t−2)``.

    Returns:
        scalar tensor (0 when there is no triplet).
    """
    if triplets.numel() == 0:
        return x.sum() * 0.0
    d = x[triplets[:, 0]] - 2 * x[triplets[:, 1]] + x[triplets[:, 2]]
    return d.abs().mean()


# --------------------------------------------------------------------------------------------------
# Neural Smooth
# --------------------------------------------------------------------------------------------------


@dataclass
class NeuralSmoothConfig:
    """Neural Smooth settings (units as in the module docstring; docs/smoothing.md explains the defaults).

    Attributes:
        solver: ``"gn"`` (Gauss–Newton/LM, default) or ``"adamw"`` (the report's AdamW + cosine).
        iterations: solver iterations (GN stops earlier when an iteration gains < ``tol``; AdamW: ~500).
        lr, weight_decay, position_unit: AdamW only (learning rate, decay, metres per position unit).
        w_pose, w_orient, w_position, w_2d: the report's loss weights.
        w_depth: weight of a term beyond the report (0 = the report's loss): the mean squared offset, m²,
            of the root from the network's root along each frame's viewing direction (mean camera centre →
            the network's root). A Gaussian prior on depth: it keeps the depth that narrow-baseline views
            cannot triangulate near the network's and leaves the directions across the views to L2D.
        eps_pose, eps_orient, eps_position, eps_2d: GN only; ``|r|`` of each term is smoothed as
            ``sqrt(r² + ε²)`` (PCA units, 6D units, metres, normalised image coordinates).
        lm_damping: GN: initial Levenberg–Marquardt damping, relative to the normal matrix's diagonal.
        tol: GN: relative loss decrease below which iterations stop.
        chunk_frames: GN: whole tracks of at most this many frames are solved together (memory bound).
        workers: GN on CPU: processes solving chunks in parallel (same result as 1).
        min_conf: 2D keypoints with lower confidence are ignored.
        device: torch device of the landmark computations.
    """

    solver: str = "gn"
    iterations: int = 10
    lr: float = 1e-2
    weight_decay: float = 1e-2
    w_pose: float = 0.5
    w_orient: float = 0.5
    w_position: float = 0.5
    w_2d: float = 1.0
    w_depth: float = 0.0
    position_unit: float = 0.01
    eps_pose: float = 1e-4
    eps_orient: float = 1e-4
    eps_position: float = 1e-5
    eps_2d: float = 1e-4
    lm_damping: float = 1e-3
    tol: float = 1e-3
    chunk_frames: int = 4096
    workers: int = 1
    min_conf: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.solver not in ("gn", "adamw"):
            raise ValueError(f"Neural Smooth solver must be 'gn' or 'adamw', got {self.solver!r}")
        if (
            self.iterations < 0 or self.lr <= 0 or self.position_unit <= 0 or self.chunk_frames < 3
            or self.workers < 1
        ):  # fmt: skip
            raise ValueError(f"invalid Neural Smooth settings: {self}")
        for name in ("w_pose", "w_orient", "w_position", "w_2d", "w_depth", "weight_decay", "lm_damping", "tol",
                     "eps_pose", "eps_orient", "eps_position", "eps_2d"):  # fmt: skip
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                raise ValueError(f"Neural Smooth weight {name} must be finite and >= 0")


_MANO64: dict[int, tuple] = {}


def _float64_copy(mano):
    """A float64 copy of ``mano`` (cached per model object) for finite-difference Jacobians."""
    import copy

    hit = _MANO64.get(id(mano))
    if hit is None or hit[0] is not mano:
        _MANO64.clear()  # one model at a time: no unbounded growth
        hit = _MANO64[id(mano)] = (mano, copy.deepcopy(mano).double())
    return hit[1]


class _Landmarks:
    """MANO canonical landmarks for mixed left/right batches (landmark-only path)."""

    def __init__(self, mano, hand_side: np.ndarray, betas: torch.Tensor):
        self.mano = mano
        self.hand_side = np.asarray(hand_side)
        self.side_idx = [np.flatnonzero(hand_side == s) for s in (0, 1)]
        self.side_idx_t = [torch.as_tensor(i, device=betas.device) for i in self.side_idx]
        self.betas = betas
        self.j0 = torch.zeros(betas.shape[0], 3, dtype=betas.dtype, device=betas.device)
        with torch.no_grad():
            for s in (0, 1):
                if len(self.side_idx[s]):
                    self.j0[self.side_idx_t[s]] = mano.layer(s).root_joint(betas[self.side_idx_t[s]])
        self.betas64, self.j064 = betas.double(), self.j0.double()

    def __call__(self, pose: torch.Tensor, rot: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        out = pose.new_zeros(pose.shape[0], 20, 3)
        transl = root - self.j0
        for s in (0, 1):
            i = self.side_idx_t[s]
            if len(self.side_idx[s]):
                out = out.index_copy(
                    0, i, self.mano.layer(s).landmarks(pose[i], rot[i], transl[i], self.betas[i])
                )
        return out

    def take(self, idx: np.ndarray) -> _Landmarks:
        """The landmarks of instances ``idx`` (no MANO work)."""
        out = object.__new__(_Landmarks)
        it = torch.as_tensor(idx, device=self.betas.device)
        out.mano, out.hand_side, out.betas, out.j0 = (
            self.mano,
            self.hand_side[idx],
            self.betas[it],
            self.j0[it],
        )
        out.side_idx = [np.flatnonzero(out.hand_side == s) for s in (0, 1)]
        out.side_idx_t = [torch.as_tensor(i, device=self.betas.device) for i in out.side_idx]
        out.betas64, out.j064 = self.betas64[it], self.j064[it]
        return out

    def local_and_jacobian(self, pose: torch.Tensor, step: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """Root-aligned landmarks ``local(pose)`` (``lm = R·local + root``) and ``d local / d pose``.

        Forward differences in float64 (one batched MANO pass over the batch repeated 16×; truncation
        error ≈ ``step`` relative, far below what Gauss–Newton needs).

        Args:
            pose: ``(B, 15)`` PCA pose.

        Returns:
            ``local (B, 20, 3)`` metres and ``J (B, 20, 3, 15)`` metres per PCA unit (float64).
        """
        mano64 = _float64_copy(self.mano)
        B = pose.shape[0]
        p = pose.double()
        eye = torch.eye(15, dtype=p.dtype, device=p.device) * step
        local = p.new_zeros(B, 20, 3)
        jac = p.new_zeros(B, 20, 3, 15)
        for s in (0, 1):
            i = self.side_idx_t[s]
            b = len(self.side_idx[s])
            if not b:
                continue
            ps = p[i]
            batch = torch.cat([ps[None], ps[None] + eye[:, None]]).reshape(16 * b, 15)
            j0 = self.j064[i]
            out = (
                mano64.layer(s)
                .landmarks(
                    batch,
                    torch.eye(3, dtype=p.dtype, device=p.device).expand(16 * b, 3, 3),
                    (-j0).repeat(16, 1),
                    self.betas64[i].repeat(16, 1),
                )
                .view(16, b, 20, 3)
            )
            local[i] = out[0]
            jac[i] = ((out[1:] - out[0]) / step).permute(1, 2, 3, 0)
        return local, jac


class _Objective:
    """The Neural Smooth loss over a :class:`SmoothingProblem` (torch, float32)."""

    def __init__(self, problem: SmoothingProblem, mano, cfg: NeuralSmoothConfig):
        dev = torch.device(cfg.device)
        f32 = dict(dtype=torch.float32, device=dev)
        self.cfg = cfg
        self.triplets = torch.as_tensor(_triplets(problem.segment), dtype=torch.long, device=dev)
        betas = torch.as_tensor(problem.betas, **f32)
        self.landmarks = _Landmarks(mano, problem.hand_side, betas)
        kp = np.asarray(problem.view_kp2d, dtype=np.float32)[:, EVAL_2D_LANDMARKS]
        conf = np.asarray(problem.view_conf, dtype=np.float32)[:, EVAL_2D_LANDMARKS].copy()
        bad = ~np.all(np.isfinite(kp), axis=-1) | ~np.isfinite(conf) | (conf < cfg.min_conf)
        conf[bad] = 0.0
        kp = np.where(np.isfinite(kp), kp, 0.0)
        K = np.asarray(problem.view_K, dtype=np.float32)
        valid_cam = np.all(np.isfinite(K), -1) & np.all(np.isfinite(problem.view_T_world_from_crop), (-1, -2))
        conf[~valid_cam] = 0.0
        self.view_instance = torch.as_tensor(problem.view_instance, dtype=torch.long, device=dev)
        self.K = torch.as_tensor(np.where(valid_cam[:, None], K, 1.0), **f32)
        self.T = torch.as_tensor(
            np.where(valid_cam[:, None, None], problem.view_T_world_from_crop, np.eye(4)), **f32
        )
        self.kp = torch.as_tensor(kp, **f32)
        self.conf = torch.as_tensor(conf, **f32)
        self.conf_sum = float(conf.sum())
        #: normalisers of the accel means and of L2D for :class:`_GaussNewton` (whole problem; set per chunk)
        self.n_triplets: int | None = None
        self.w2d_sum = max(self.conf_sum, 1e-6)
        self.focal = self.K[:, None, :2]
        # float64 for Gauss–Newton: camera rotation / centre, keypoints in normalised image coordinates
        T64, K64 = self.T.double(), self.K.double()
        self.Rc64, self.tc64, self.conf64 = T64[:, :3, :3], T64[:, :3, 3], self.conf.double()
        self.kpn64 = (self.kp.double() - K64[:, None, 2:4]) / K64[:, None, 0:2]
        self.segment = np.asarray(problem.segment)
        self.depth_ref, self.depth_dir, self.depth_w = _depth_prior(problem, valid_cam)
        self.n_depth = max(float(self.depth_w.sum()), 1.0)
        #: the same as float64 tensors on the device, built once (the torch loss is AdamW's hot path)
        self.depth_t = tuple(
            torch.as_tensor(a, device=dev) for a in (self.depth_ref, self.depth_dir, self.depth_w)
        )
        order = np.argsort(problem.view_instance, kind="stable")
        counts = np.bincount(problem.view_instance, minlength=problem.n)
        self._view_order, self._view_start, self._view_count = order, np.cumsum(counts) - counts, counts

    def take(self, idx: np.ndarray) -> _Objective:
        """The objective of instances ``idx`` (sorted; their views, triplets inside ``idx``), cheaply.

        Normalisers (``n_triplets``, ``w2d_sum``) are those of the window itself.
        """
        out = object.__new__(_Objective)
        out.cfg = self.cfg
        dev = self.K.device
        cnt = self._view_count[idx]
        first = np.repeat(self._view_start[idx] - np.cumsum(cnt) + cnt, cnt)
        views = self._view_order[first + np.arange(int(cnt.sum()))]
        vt = torch.as_tensor(views, dtype=torch.long, device=dev)
        out.view_instance = torch.as_tensor(np.repeat(np.arange(len(idx)), cnt), dtype=torch.long, device=dev)
        out.K, out.T, out.kp, out.conf = self.K[vt], self.T[vt], self.kp[vt], self.conf[vt]
        out.focal = out.K[:, None, :2]
        out.Rc64, out.tc64, out.conf64, out.kpn64 = (
            self.Rc64[vt],
            self.tc64[vt],
            self.conf64[vt],
            self.kpn64[vt],
        )
        out.conf_sum = float(out.conf.sum())
        out.n_triplets, out.w2d_sum = None, max(out.conf_sum, 1e-6)
        out.segment = self.segment[idx]
        out.depth_ref, out.depth_dir, out.depth_w = (
            self.depth_ref[idx],
            self.depth_dir[idx],
            self.depth_w[idx],
        )
        out.n_depth = max(float(out.depth_w.sum()), 1.0)
        out.depth_t = tuple(
            torch.as_tensor(a, device=dev) for a in (out.depth_ref, out.depth_dir, out.depth_w)
        )
        out.triplets = torch.as_tensor(_triplets(out.segment), dtype=torch.long, device=dev)
        out.landmarks = self.landmarks.take(idx)
        return out

    def __call__(
        self, pose: torch.Tensor, rot6d: torch.Tensor, root: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        terms = {
            "accel_pose": accel(pose, self.triplets),
            "accel_orient": accel(rot6d, self.triplets),
            "accel_position": accel(root, self.triplets),
        }
        if self.conf_sum > 0 and cfg.w_2d > 0:
            rot = rotation_6d_to_matrix(rot6d)
            lm = self.landmarks(pose, rot, root)[:, EVAL_2D_LANDMARKS]
            pts = lm[self.view_instance]
            uv, z = project_pinhole_torch(pts, self.T, self.K)
            # points behind (or on) the camera plane carry no 2D evidence
            uv = torch.where((z > 1e-4)[..., None], uv, self.kp)
            err = ((uv - self.kp) / self.focal).abs().sum(-1)  # normalised image coordinates
            w = self.conf * (z > 1e-4)
            terms["l2d"] = (w * err).sum() / w.sum().clamp_min(1e-6)
        else:
            terms["l2d"] = pose.sum() * 0.0
        ref, direction, weight = self.depth_t
        along = ((root.double() - ref) * direction).sum(-1)
        terms["depth"] = (weight * along**2).sum().float() / self.n_depth
        terms["loss"] = (
            cfg.w_pose * terms["accel_pose"]
            + cfg.w_orient * terms["accel_orient"]
            + cfg.w_position * terms["accel_position"]
            + cfg.w_2d * terms["l2d"]
            + cfg.w_depth * terms["depth"]
        )
        return terms


def _depth_prior(
    problem: SmoothingProblem, valid_cam: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference roots ``(N, 3)`` m (the network's), unit viewing directions ``(N, 3)`` (from the mean centre of
    the instance's valid cameras to that root) and weights ``(N,)`` (0 where the root is not finite or no
    camera is valid) of the depth term (``w_depth``)."""
    n = problem.n
    centre_sum = np.zeros((n, 3))
    count = np.zeros(n)
    vi = np.asarray(problem.view_instance)[valid_cam]
    np.add.at(centre_sum, vi, np.asarray(problem.view_T_world_from_crop, np.float64)[valid_cam, :3, 3])
    np.add.at(count, vi, 1.0)
    ref = np.asarray(problem.init.root, np.float64)
    d = ref - centre_sum / np.maximum(count, 1.0)[:, None]
    norm = np.linalg.norm(d, axis=-1)
    ok = (count > 0) & np.all(np.isfinite(ref), -1) & np.isfinite(norm) & (norm > 1e-6)
    d = np.where(ok[:, None], d / np.where(ok, norm, 1.0)[:, None], 0.0)
    return np.where(ok[:, None], ref, 0.0), d, ok.astype(np.float64)


def _sanitise_init(problem: SmoothingProblem) -> tuple[Trajectory, np.ndarray]:
    """Replace non-finite initial values by the nearest finite frame of the same segment.

    Returns the repaired trajectory and a ``(N,)`` mask of instances that had no finite value at all.
    """
    init = problem.init.copy()
    finite = (
        np.all(np.isfinite(init.pose), -1)
        & np.all(np.isfinite(init.rot), (-1, -2))
        & np.all(np.isfinite(init.root), -1)
    )
    hopeless = np.zeros(problem.n, bool)
    if finite.all():
        return init, hopeless
    for s in np.unique(problem.segment):
        idx = np.flatnonzero(problem.segment == s)
        good = idx[finite[idx]]
        if len(good) == 0:
            hopeless[idx] = True
            init.pose[idx], init.rot[idx], init.root[idx] = 0.0, np.eye(3), 0.0
            continue
        for i in idx[~finite[idx]]:
            j = good[np.argmin(np.abs(good - i))]
            init.pose[i], init.rot[i], init.root[i] = init.pose[j], init.rot[j], init.root[j]
    log.info(
        "%d instances have non-finite predictions: the optimisation starts them from the nearest finite frame "
        "of their track (%d have none)",
        int((~finite).sum()),
        int(hopeless.sum()),
    )
    return init, hopeless


def neural_smooth(
    problem: SmoothingProblem,
    mano,
    cfg: NeuralSmoothConfig | None = None,
    frozen: np.ndarray | None = None,
    progress: bool = False,
    history: list | None = None,
) -> Trajectory:
    """Run (offline) Neural Smooth on all segments of ``problem`` at once.

    Args:
        problem: the flattened problem (see :class:`SmoothingProblem`).
        mano: a :class:`mvhand.geometry.mano.ManoModel` (``layer(side)`` with ``landmarks`` and ``root_joint``).
        cfg: settings.
        frozen: optional ``(N,)`` bool; frozen instances keep their initial values (used online).
        progress: show a tqdm bar.
        history: if a list is given, per-iteration loss terms (floats) are appended to it.

    Returns:
        the smoothed :class:`Trajectory`. Instances of segments shorter than 3 frames, frozen
        instances, and instances without any finite prediction are returned unchanged (NaN stays NaN).
    """
    cfg = cfg or NeuralSmoothConfig()
    n = problem.n
    if n == 0:
        return problem.init.copy()
    init, hopeless = _sanitise_init(problem)
    seg_len = np.bincount(problem.segment)[problem.segment]
    free = (seg_len >= 3) & ~hopeless
    if frozen is not None:
        free &= ~np.asarray(frozen, bool)
    if not free.any() or cfg.iterations == 0:
        return problem.init.copy()

    if cfg.solver == "gn":
        out = _solve_gn(problem, mano, cfg, init, free, history)
    else:
        out = _solve_adamw(problem, mano, cfg, init, free, history, progress)
    keep = ~free
    out.pose[keep], out.rot[keep], out.root[keep] = (
        problem.init.pose[keep],
        problem.init.rot[keep],
        problem.init.root[keep],
    )
    return out


def _chunks(segment: np.ndarray, chunk_frames: int) -> list[np.ndarray]:
    """Consecutive index ranges of whole segments with at most ``chunk_frames`` frames (or one segment)."""
    n = len(segment)
    starts = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    ends = np.r_[starts[1:], n]
    out, begin = [], 0
    for s, e in zip(starts, ends):
        if s > begin and e - begin > chunk_frames:
            out.append(np.arange(begin, s))
            begin = s
    out.append(np.arange(begin, n))
    return [c for c in out if len(c)]


def loss_terms(
    problem: SmoothingProblem, mano, traj: Trajectory, cfg: NeuralSmoothConfig | None = None
) -> dict:
    """The exact (L1) Neural Smooth loss terms of ``traj`` on ``problem`` (floats; see the module docstring)."""
    cfg = cfg or NeuralSmoothConfig()
    obj = _Objective(problem, mano, cfg)
    f32 = dict(dtype=torch.float32, device=torch.device(cfg.device))
    with torch.no_grad():
        terms = obj(
            torch.as_tensor(traj.pose, **f32),
            matrix_to_rotation_6d(torch.as_tensor(traj.rot, **f32)),
            torch.as_tensor(traj.root, **f32),
        )
    return {k: float(v) for k, v in terms.items()}


def _solve_chunk(job: tuple) -> tuple[np.ndarray, int]:
    """One chunk's Gauss–Newton solve (also the worker function of ``workers > 1``).

    Args:
        job: ``(problem, mano, cfg, x0 (n, 24), free (n,), n_triplets, w2d_sum, n_depth)``: the chunk's
            problem and the whole problem's normalisers.

    Returns:
        the solution ``(n, 24)`` and the iterations run.
    """
    problem, mano, cfg, x0, free, n_tri, w2d_sum, n_depth = job
    obj = _Objective(problem, mano, cfg)
    obj.n_triplets, obj.w2d_sum, obj.n_depth = n_tri, w2d_sum, n_depth
    gn = _GaussNewton(obj, x0, free, cfg)
    return gn.run(cfg.iterations), gn.iterations_run


def _worker_init() -> None:
    torch.set_num_threads(1)


def _solve_gn(problem, mano, cfg, init: Trajectory, free: np.ndarray, history) -> Trajectory:
    """:class:`_GaussNewton` chunk by chunk (whole segments per chunk, normalisers of the whole problem).

    With ``cfg.workers > 1`` (CPU only) the chunks are solved by that many worker processes (spawned, one
    torch thread each); the result is the same as with one.
    """
    full = _Objective(problem, mano, cfg)
    n_tri, w2d_sum, n_depth = len(full.triplets), full.w2d_sum, full.n_depth
    x0 = np.concatenate([init.pose, init.rot[:, :, 0], init.rot[:, :, 1], init.root], -1)
    x = x0.copy()
    if history is not None:
        history.append(loss_terms(problem, mano, init, cfg))
    chunks = [idx for idx in _chunks(problem.segment, cfg.chunk_frames) if free[idx].any()]

    def jobs():
        for idx in chunks:
            sub = problem.subset(idx) if len(idx) < problem.n else problem
            yield sub, mano, cfg, x0[idx], free[idx], n_tri, w2d_sum, n_depth

    if cfg.workers > 1 and len(chunks) > 1 and torch.device(cfg.device).type == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(cfg.workers, len(chunks)), mp_context=ctx, initializer=_worker_init
        ) as ex:
            results = list(ex.map(_solve_chunk, jobs()))
    else:
        results = [_solve_chunk(job) for job in jobs()]
    for idx, (xi, _) in zip(chunks, results, strict=True):
        x[idx] = xi
    with torch.no_grad():
        rot = rotation_6d_to_matrix(torch.as_tensor(x[:, 15:21])).numpy()
    out = Trajectory(x[:, :15].copy(), rot, x[:, 21:].copy())
    if history is not None:
        final = loss_terms(problem, mano, out, cfg)
        final["gn_iterations_mean"] = float(np.mean([k for _, k in results])) if results else 0.0
        history.append(final)
    return out


def _solve_adamw(problem, mano, cfg, init: Trajectory, free: np.ndarray, history, progress) -> Trajectory:
    """The report's solver: AdamW + cosine schedule on offsets from the network's values."""
    dev = torch.device(cfg.device)
    objective = _Objective(problem, mano, cfg)
    f32 = dict(dtype=torch.float32, device=dev)
    pose0 = torch.as_tensor(init.pose, **f32)
    rot0 = matrix_to_rotation_6d(torch.as_tensor(init.rot, **f32))
    root0 = torch.as_tensor(init.root, **f32)
    mask = torch.as_tensor(free, device=dev)[:, None].float()
    d_pose = torch.zeros_like(pose0, requires_grad=True)
    d_rot = torch.zeros_like(rot0, requires_grad=True)
    d_root = torch.zeros_like(root0, requires_grad=True)
    opt = torch.optim.AdamW([d_pose, d_rot, d_root], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.iterations, 1))

    def current():
        return pose0 + mask * d_pose, rot0 + mask * d_rot, root0 + mask * d_root * cfg.position_unit

    it = range(cfg.iterations)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="neural smooth", unit="it")
    for _ in it:
        opt.zero_grad(set_to_none=True)
        terms = objective(*current())
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Neural Smooth loss became non-finite: { {k: float(v) for k, v in terms.items()} }"
            )
        loss.backward()
        opt.step()
        sched.step()
        if history is not None:
            history.append({k: float(v.detach()) for k, v in terms.items()})
    with torch.no_grad():
        pose, rot6d, root = current()
        out = Trajectory(
            pose.cpu().double().numpy(),
            rotation_6d_to_matrix(rot6d).cpu().double().numpy(),
            root.cpu().double().numpy(),
        )
    return out


# --------------------------------------------------------------------------------------------------
# Gauss–Newton / Levenberg–Marquardt solver (default)
# --------------------------------------------------------------------------------------------------

#: parameters per frame: pose 15 | 6D orientation 6 | root position 3
_P = 24
_TERM_SLICES = {"pose": slice(0, 15), "orient": slice(15, 21), "position": slice(21, 24)}


def _landmarks_and_jacobian(
    landmarks: _Landmarks, pose: torch.Tensor, rot6d: torch.Tensor, root: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2D landmarks and their Jacobian with respect to the 24 per-frame parameters.

    Uses ``lm = R(rot6d) · local(pose) + root`` (MANO rotates about the root joint), so only ``local``
    needs derivatives through the kinematic chain (:meth:`_Landmarks.local_and_jacobian`); the 6D →
    matrix derivative is a float64 forward difference too (six directions).

    Args:
        landmarks: the problem's :class:`_Landmarks` (betas and sides of these ``B`` frames).
        pose: ``(B, 15)``; rot6d: ``(B, 6)``; root: ``(B, 3)`` metres.

    Returns:
        ``lm (B, L, 3)`` metres and ``J (B, L, 3, 24)`` (``L`` = len(:data:`EVAL_2D_LANDMARKS`)), float64.
    """
    B = pose.shape[0]
    idx = list(EVAL_2D_LANDMARKS)
    local, d_local = landmarks.local_and_jacobian(pose)
    local, d_local = local[:, idx], d_local[:, idx]
    r6 = rot6d.double()
    h = 1e-7
    with torch.no_grad():
        rr = rotation_6d_to_matrix(
            torch.cat([r6[None], r6[None] + h * torch.eye(6, dtype=r6.dtype, device=r6.device)[:, None]])
        )
        R = rr[0]  # (B, 3, 3)
        dR = ((rr[1:] - rr[0]) / h).permute(1, 2, 3, 0)  # (B, 3, 3, 6)
    lm = local @ R.transpose(1, 2) + root.double()[:, None]
    J = torch.empty(B, len(idx), 3, _P, dtype=torch.float64, device=pose.device)
    J[..., :15] = torch.einsum("bij,bljk->blik", R, d_local)
    J[..., 15:21] = torch.einsum("bijk,blj->blik", dR, local)
    J[..., 21:] = torch.eye(3, dtype=torch.float64, device=pose.device)
    return lm, J


def _retract(x: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Project the 6D orientation of free frames back onto rotations (orthonormal columns, in place).

    The 6D vector has three directions that do not change the rotation; without this the solver would
    lower accel(orientation) by shrinking/shearing them, which the emitted (orthonormal) rotations undo.
    """
    f = np.flatnonzero(free)
    a1, a2 = x[f, 15:18], x[f, 18:21]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    x[f, 15:18], x[f, 18:21] = b1, b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return x


class _GaussNewton:
    """Levenberg–Marquardt on the smoothed-L1 Neural Smooth objective of one chunk of whole segments.

    Objective (the module's loss with ``|r|`` replaced by ``sqrt(r² + ε²)``, ε per term, see
    :class:`NeuralSmoothConfig`), minimised by iteratively reweighted Gauss–Newton: each iteration
    linearises the L2D residuals (Jacobians from :func:`_landmarks_and_jacobian`), weights every
    residual by ``c / sqrt(r² + ε²)`` and solves the normal equations. Frames are ordered in time, so
    the normal matrix is banded (24×24 frame blocks from L2D, second-difference couplings of the
    accelerations to frames t±1, t±2): one banded Cholesky (``scipy.linalg.solveh_banded``, lower
    bandwidth 48) per iteration, cost linear in frames.

    Normalisations (``n_triplets``, ``w2d_sum``) are those of the whole problem, so the chunks' losses
    add up to the full loss.
    """

    def __init__(self, objective: _Objective, x0: np.ndarray, free: np.ndarray, cfg: NeuralSmoothConfig):
        self.obj, self.cfg = objective, cfg
        self.x = x0.astype(np.float64).copy()  # (N, 24)
        self.free = free
        self.tri = objective.triplets.cpu().numpy()
        n_tri = max(len(self.tri), 1) if objective.n_triplets is None else max(objective.n_triplets, 1)
        self.c_acc = np.zeros(_P)
        self.eps_acc = np.zeros(_P)
        for name, sl in _TERM_SLICES.items():
            width = sl.stop - sl.start
            self.c_acc[sl] = getattr(cfg, f"w_{name}") / (n_tri * width)
            self.eps_acc[sl] = getattr(cfg, f"eps_{name}")
        self.use_2d = objective.conf_sum > 0 and cfg.w_2d > 0 and len(objective.view_instance) > 0
        #: depth term: per-frame weight c·w (0 = off), viewing direction and reference root
        self.c_depth = cfg.w_depth * objective.depth_w / objective.n_depth
        self.depth_dir, self.depth_ref = objective.depth_dir, objective.depth_ref
        if self.use_2d:
            self.Rc, self.tc = objective.Rc64, objective.tc64
            self.kpn, self.conf = objective.kpn64, objective.conf64

    # -- residuals ----------------------------------------------------------------------------------
    def _accel(self, x: np.ndarray) -> np.ndarray:
        t = self.tri
        return x[t[:, 0]] - 2 * x[t[:, 1]] + x[t[:, 2]]  # (K, 24)

    def _l2d(self, x: np.ndarray, jac: bool):
        """Normalised 2D residuals ``(M, L, 2)`` and weights ``(M, L)`` (NumPy float64), or with ``jac``
        the same as float64 tensors and the Jacobian ``J (M, L, 2, 24)``."""
        obj = self.obj
        xt = torch.as_tensor(x, dtype=torch.float32, device=obj.K.device)
        pose, rot6d, root = xt[:, :15], xt[:, 15:21], xt[:, 21:]
        if jac:
            lm, J = _landmarks_and_jacobian(obj.landmarks, pose, rot6d, root)
        else:
            with torch.no_grad():
                lm = obj.landmarks(pose, rotation_6d_to_matrix(rot6d), root)[:, EVAL_2D_LANDMARKS].double()
        vi = obj.view_instance
        v = (lm[vi] - self.tc[:, None]) @ self.Rc  # (M, L, 3) camera coordinates
        z = v[..., 2]
        ok = z > 1e-4
        zs = torch.where(ok, z, torch.ones_like(z))
        r = v[..., :2] / zs[..., None] - self.kpn
        w = self.conf * ok
        r = torch.where(ok[..., None], r, torch.zeros_like(r))
        if not jac:
            return r.double().cpu().numpy(), w.double().cpu().numpy(), None
        # d(v_xy / z)/dv = [[1/z, 0, −x/z²], [0, 1/z, −y/z²]]; dv/dlm = Rcᵀ
        inv = 1.0 / zs
        P = torch.zeros(*z.shape, 2, 3, dtype=v.dtype, device=v.device)
        P[..., 0, 0] = inv
        P[..., 1, 1] = inv
        P[..., :, 2] = -v[..., :2] * (inv * inv)[..., None]
        PR = P @ self.Rc.transpose(1, 2)[:, None]  # (M, L, 2, 3)
        return r, w, PR @ J[vi]  # tensors; Jacobian (M, L, 2, 24)

    def _depth(self, x: np.ndarray) -> np.ndarray:
        """Depth residuals ``(N,)`` m: the root's offset from the network's along the viewing direction."""
        return ((x[:, 21:] - self.depth_ref) * self.depth_dir).sum(-1)

    def loss(self, x: np.ndarray) -> float:
        """The smoothed objective at ``x``."""
        a = self._accel(x)
        f = float((self.c_acc * np.sqrt(a * a + self.eps_acc**2)).sum())
        if self.c_depth.any():
            d = self._depth(x)
            f += float((self.c_depth * d * d).sum())
        if self.use_2d:
            r, w, _ = self._l2d(x, jac=False)
            c = self.cfg.w_2d * w / self.obj.w2d_sum
            f += float((c[..., None] * np.sqrt(r * r + self.cfg.eps_2d**2)).sum())
        return f

    # -- one normal-equation assembly ---------------------------------------------------------------
    def _normal_equations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Banded IRLS normal matrix (lower form, ``(49, 24N)``), gradient ``(24N,)`` and loss."""
        n = len(x)
        ab = np.zeros((2 * _P + 1, n * _P))
        g = np.zeros((n, _P))
        a = self._accel(x)
        s = np.sqrt(a * a + self.eps_acc**2)
        f = float((self.c_acc * s).sum())
        W = self.c_acc / s  # (K, 24) IRLS weights
        t0, t1, t2 = self.tri.T
        # gradient of Σ c·sqrt(a² + ε²): W·a times the second-difference stencil (1, −2, 1)
        Wa = W * a
        np.add.at(g, t0, Wa)
        np.add.at(g, t1, -2 * Wa)
        np.add.at(g, t2, Wa)
        # Hessian of the stencil: diagonal per parameter, couplings at ±1 and ±2 frames
        diag = np.zeros((n, _P))
        np.add.at(diag, t0, W)
        np.add.at(diag, t1, 4 * W)
        np.add.at(diag, t2, W)
        off1 = np.zeros((n, _P))  # entry (t−1 → t−2) stored at column t−2 ... general: (i+1, i) at i
        np.add.at(off1, t1, -2 * W)  # (t, t−1) stored at column t−1
        np.add.at(off1, t2, -2 * W)  # (t−1, t−2) stored at column t−2
        off2 = np.zeros((n, _P))
        np.add.at(off2, t2, W)  # (t, t−2) at column t−2
        ab[0] = diag.reshape(-1)
        ab[_P] = off1.reshape(-1)
        ab[2 * _P] = off2.reshape(-1)
        if self.c_depth.any():  # Σ c·d², d = uᵀ(root − root_net): gradient 2c·d·u, rank-1 root blocks 2c·uuᵀ
            d = self._depth(x)
            f += float((self.c_depth * d * d).sum())
            u = self.depth_dir
            g[:, 21:] += (2 * self.c_depth * d)[:, None] * u
            Hd = (2 * self.c_depth)[:, None, None] * u[:, :, None] * u[:, None, :]  # (N, 3, 3)
            for o in range(3):
                ab[o].reshape(n, _P)[:, 21 : _P - o] += np.diagonal(Hd, offset=-o, axis1=1, axis2=2)
        if self.use_2d:
            r, w, Jr = self._l2d(x, jac=True)  # torch, float64
            c = self.cfg.w_2d * w / self.obj.w2d_sum  # (M, L)
            s2 = torch.sqrt(r * r + self.cfg.eps_2d**2)
            f += float((c[..., None] * s2).double().sum())
            W2 = (c[..., None] / s2).reshape(len(r), -1)  # (M, 2L) IRLS weights
            Jm = Jr.reshape(len(r), -1, _P)  # (M, 2L, 24)
            gv = torch.einsum("mk,mkp->mp", W2 * r.reshape(len(r), -1), Jm)
            Hv = Jm.transpose(1, 2) @ (W2[..., None] * Jm)  # (M, 24, 24)
            vi = self.obj.view_instance
            gf = torch.zeros(n, _P, dtype=Hv.dtype, device=Hv.device).index_add_(0, vi, gv)
            H = torch.zeros(n, _P, _P, dtype=Hv.dtype, device=Hv.device).index_add_(0, vi, Hv)
            g += gf.double().cpu().numpy()
            H = H.double().cpu().numpy()
            for o in range(_P):  # lower band entries (d + o, d) of each frame's block
                ab[o].reshape(n, _P)[:, : _P - o] += np.diagonal(H, offset=-o, axis1=1, axis2=2)
        return ab, g.reshape(-1), f

    def _constrain(self, ab: np.ndarray, g: np.ndarray) -> None:
        """Frozen frames: δ = 0 (identity rows/columns, zero gradient)."""
        fixed = np.repeat(~self.free, _P)
        if not fixed.any():
            return
        idx = np.flatnonzero(fixed)
        for o in range(1, ab.shape[0]):
            ab[o, idx] = 0.0  # entries (i + o, i)
            j = idx - o
            ab[o, j[j >= 0]] = 0.0  # entries (i, i − o)
        ab[0, idx] = 1.0
        g[idx] = 0.0

    def run(self, iterations: int) -> np.ndarray:
        from scipy.linalg import LinAlgError, solveh_banded

        cfg = self.cfg
        mu = cfg.lm_damping
        self.iterations_run = 0
        for _ in range(iterations):
            self.iterations_run += 1
            ab, g, f = self._normal_equations(self.x)
            self._constrain(ab, g)
            d0 = ab[0].copy()
            floor = 1e-9 * max(float(d0.max()), 1e-30)
            accepted = False
            for _try in range(8):
                abd = ab.copy()
                abd[0] = d0 + mu * d0 + floor
                try:
                    step = solveh_banded(abd, -g, lower=True, check_finite=False)
                except LinAlgError:
                    mu *= 10.0
                    continue
                x_new = _retract(self.x + step.reshape(self.x.shape), self.free)
                f_new = self.loss(x_new)
                if np.isfinite(f_new) and f_new <= f:
                    self.x, accepted = x_new, True
                    mu = max(mu / 3.0, 1e-6)
                    break
                mu *= 10.0
            if not accepted or (f - f_new) <= cfg.tol * f:
                break
        return self.x


@dataclass
class OnlineSmoothConfig:
    """Causal sliding-window Neural Smooth.

    Attributes:
        window: frames in the optimisation window (the newest included).
        free: newest frames that are optimised; older window frames are frozen at their current values
            (``free = window``, the default, re-optimises the whole window: a causal fixed-lag smoother;
            frozen frames carry their velocity errors forward under the L1 acceleration prior).
        iterations: Gauss–Newton iterations per new frame (warm start from the previous window).
        base: loss weights, ε, damping (the solver is always Gauss–Newton; ``base.iterations`` is ignored).
    """

    window: int = 5
    free: int = 5
    iterations: int = 1
    base: NeuralSmoothConfig = field(default_factory=NeuralSmoothConfig)

    def __post_init__(self) -> None:
        if not (1 <= self.free <= self.window) or self.window < 3 or self.iterations < 1:
            raise ValueError(f"invalid online smoothing settings: window={self.window}, free={self.free}")


def online_neural_smooth(
    problem: SmoothingProblem, mano, cfg: OnlineSmoothConfig | None = None, progress: bool = False
) -> tuple[Trajectory, np.ndarray]:
    """Causal Neural Smooth: frame t's output depends only on frames ≤ t.

    For each new frame the window of the last ``cfg.window`` frames is re-optimised (Gauss–Newton,
    :class:`_GaussNewton`, ``cfg.iterations`` iterations, warm-started from the previous window's
    solution; the new frame starts at the network's value); its older ``window − free`` frames are frozen
    at their current values. The newest frame's solution is emitted. Windows of fewer than 3 frames (a
    track's first two frames) are emitted unchanged, like segments shorter than 3 frames offline.

    All segments advance in lock-step (step k processes the k-th frame of every segment at once, one
    batched solve), which is how a multi-stream server would batch them; the latency of a step is the
    time to emit one new frame for every active stream.

    Returns:
        the smoothed trajectory and ``(steps,)`` per-step latencies in seconds.
    """
    cfg = cfg or OnlineSmoothConfig()
    out = problem.init.copy()
    if problem.n == 0:
        return out, np.zeros(0)
    base = replace(cfg.base, solver="gn")
    init, hopeless = _sanitise_init(problem)
    seg = problem.segment
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    pos_in_seg = np.arange(problem.n) - np.repeat(starts, np.diff(np.r_[starts, problem.n]))
    seg_len = np.bincount(seg)[seg]
    full = _Objective(problem, mano, base)
    x = np.concatenate([init.pose, init.rot[:, :, 0], init.rot[:, :, 1], init.root], -1)
    latencies = []
    steps = range(int(pos_in_seg.max()) + 1)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="online smooth", unit="frame")
    for k in steps:
        t0 = time.perf_counter()
        idx = np.flatnonzero((pos_in_seg <= k) & (pos_in_seg > k - cfg.window) & (seg_len >= 3) & ~hopeless)
        newest = idx[pos_in_seg[idx] == k]
        if k >= 2 and len(newest):
            free = pos_in_seg[idx] > k - cfg.free
            xw = _GaussNewton(full.take(idx), x[idx], free, base).run(cfg.iterations)
            rot = rotation_6d_to_matrix(torch.as_tensor(xw[:, 15:21])).numpy()
            xw[:, 15:21] = np.concatenate([rot[:, :, 0], rot[:, :, 1]], -1)  # warm start on the manifold
            x[idx] = xw
            j = pos_in_seg[idx] == k
            out.pose[newest], out.rot[newest], out.root[newest] = xw[j, :15], rot[j], xw[j, 21:]
        latencies.append(time.perf_counter() - t0)
    return out, np.asarray(latencies)


# --------------------------------------------------------------------------------------------------
# Filter baselines
# --------------------------------------------------------------------------------------------------


def _to_features(tr: Trajectory) -> np.ndarray:
    """``(N, 24)`` = pose 15 | 6D orientation | root 3."""
    d6 = np.concatenate([tr.rot[:, :, 0], tr.rot[:, :, 1]], -1)
    return np.concatenate([tr.pose, d6, tr.root], -1)


def _from_features(x: np.ndarray) -> Trajectory:
    rot = rotation_6d_to_matrix(torch.as_tensor(x[:, 15:21], dtype=torch.float64)).numpy()
    return Trajectory(x[:, :15].copy(), rot, x[:, 21:24].copy())


def _per_segment(tr: Trajectory, segment: np.ndarray, fn) -> Trajectory:
    x = _to_features(tr)
    out = x.copy()
    for s in np.unique(segment):
        idx = np.flatnonzero(segment == s)
        seg = x[idx]
        if np.all(np.isfinite(seg)):
            out[idx] = fn(seg)
    return _from_features(out)


def savitzky_golay(tr: Trajectory, segment: np.ndarray, window: int = 9, polyorder: int = 2) -> Trajectory:
    """Offline Savitzky–Golay smoothing of pose, 6D orientation and root, per segment.

    The window is shrunk (to the largest odd length ≤ the segment) for short segments; segments not
    longer than ``polyorder`` are left unchanged.
    """

    def fn(seg: np.ndarray) -> np.ndarray:
        w = min(window, len(seg) if len(seg) % 2 else len(seg) - 1)
        if w <= polyorder:
            return seg
        return savgol_filter(seg, w, polyorder, axis=0, mode="interp")

    return _per_segment(tr, segment, fn)


def one_euro(
    tr: Trajectory,
    segment: np.ndarray,
    fps: float = 30.0,
    min_cutoff: float = 4.0,
    beta: float = 0.5,
    d_cutoff: float = 1.0,
) -> Trajectory:
    """Causal One Euro filter (Casiez et al., CHI 2012) on pose, 6D orientation and root, per segment.

    Args:
        fps: frame rate (Hz).
        min_cutoff: minimum cut-off frequency (Hz); lower = smoother.
        beta: speed coefficient; higher = less lag on fast motion.
        d_cutoff: cut-off of the derivative filter (Hz).
    """
    te = 1.0 / fps

    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    a_d = alpha(d_cutoff)

    def fn(seg: np.ndarray) -> np.ndarray:
        out = np.empty_like(seg)
        out[0] = seg[0]
        dx_hat = np.zeros_like(seg[0])
        for t in range(1, len(seg)):
            dx = (seg[t] - seg[t - 1]) / te  # derivative of the raw signal (reference implementation)
            dx_hat = a_d * dx + (1 - a_d) * dx_hat
            a = alpha(min_cutoff + beta * np.abs(dx_hat))
            out[t] = a * seg[t] + (1 - a) * out[t - 1]
        return out

    return _per_segment(tr, segment, fn)


# --------------------------------------------------------------------------------------------------
# Prediction tables (the Parquet written by ``predict``)
# --------------------------------------------------------------------------------------------------

#: columns of the prediction table (:mod:`mvhand.formats.predictions`) that smoothing reads.
PREDICTION_COLUMNS = (
    "sequence_name", "frame_id", "hand_side", "global_rot", "root", "mano_theta", "mano_beta_pred",
    "view_kp2d", "view_conf", "view_intrinsics", "view_T_world_from_crop",
)  # fmt: skip


def _stack(col, width: int, name: str) -> np.ndarray:
    out = np.full((len(col), width), np.nan)
    for i, v in enumerate(col):
        if v is not None and len(v) == width:
            out[i] = np.asarray(v, dtype=np.float64)
        elif v is not None:
            raise ValueError(f"column {name!r}: row {i} has {len(v)} values, expected {width}")
    return out


def problem_from_predictions(df, betas_column: str | None = None, max_gap: int = 1) -> SmoothingProblem:
    """Build a :class:`SmoothingProblem` from a prediction table (one row per sequence, frame, hand).

    Args:
        df: pandas DataFrame with :data:`PREDICTION_COLUMNS` (schema in docs/model.md); it is sorted by
            sequence, hand side and frame id here (the returned arrays follow that order, see
            :func:`sort_predictions`).
        betas_column: column with the per-row betas to use (``"mano_beta"`` — the betas the
            prediction's ``wrist_xform`` was computed with — if present, else ``"mano_beta_pred"``).
        max_gap: frame-id step that still counts as consecutive.
    """
    require_columns(df, PREDICTION_COLUMNS, "prediction table")
    if betas_column is None:
        betas_column = "mano_beta" if "mano_beta" in df.columns else "mano_beta_pred"
    n = len(df)
    keys = (df["sequence_name"].astype(str) + "/" + df["hand_side"].astype(str)).to_numpy()
    frame_id = df["frame_id"].to_numpy(np.int64)
    init = Trajectory(
        _stack(df["mano_theta"], 15, "mano_theta"),
        _stack(df["global_rot"], 9, "global_rot").reshape(n, 3, 3),
        _stack(df["root"], 3, "root"),
    )
    view_instance, K, T, kp, conf = [], [], [], [], []
    for i, (vk, vc, vi, vt) in enumerate(
        zip(
            df["view_kp2d"], df["view_conf"], df["view_intrinsics"], df["view_T_world_from_crop"], strict=True
        )
    ):
        for k, c, intr, t in zip(vk, vc, vi, vt, strict=True):
            view_instance.append(i)
            kp.append(np.asarray(k, np.float64).reshape(20, 2))
            conf.append(np.asarray(c, np.float64).reshape(20))
            K.append(np.asarray(intr, np.float64).reshape(4))
            T.append(np.asarray(t, np.float64).reshape(4, 4))
    m = len(view_instance)
    return SmoothingProblem(
        init=init,
        betas=np.nan_to_num(_stack(df[betas_column], 10, betas_column)),
        hand_side=df["hand_side"].to_numpy(np.int64),
        segment=segment_ids(keys, frame_id, max_gap),
        view_instance=np.asarray(view_instance, np.int64),
        view_K=np.asarray(K).reshape(m, 4),
        view_T_world_from_crop=np.asarray(T).reshape(m, 4, 4),
        view_kp2d=np.asarray(kp).reshape(m, 20, 2),
        view_conf=np.asarray(conf).reshape(m, 20),
    )


def sort_predictions(df):
    """Rows ordered by sequence, hand side, frame id (the order smoothing works in)."""
    return df.sort_values(["sequence_name", "hand_side", "frame_id"], kind="stable").reset_index(drop=True)


def apply_trajectory(df, traj: Trajectory, problem: SmoothingProblem, mano):
    """A copy of the prediction table with the MANO state replaced by ``traj``.

    Updates ``mano_theta``, ``global_rot``, ``root``, ``wrist_xform`` (axis-angle + ``root − J0(β)``
    with the problem's betas), ``landmarks`` (MANO canonical landmarks, world) and drops the now stale
    ``mpjpe_mm``.
    """
    from mvhand.geometry.transforms import axis_angle_from_matrix

    out = df.copy()
    n = len(out)
    betas = torch.as_tensor(problem.betas, dtype=torch.float32)
    lm_fn = _Landmarks(mano, problem.hand_side, betas)
    finite = np.all(np.isfinite(traj.pose), -1) & np.all(np.isfinite(traj.root), -1)
    with torch.no_grad():
        lm = lm_fn(
            torch.as_tensor(np.nan_to_num(traj.pose), dtype=torch.float32),
            torch.as_tensor(np.where(finite[:, None, None], traj.rot, np.eye(3)), dtype=torch.float32),
            torch.as_tensor(np.nan_to_num(traj.root), dtype=torch.float32),
        ).numpy()
        j0 = lm_fn.j0.numpy()
    lm[~finite] = np.nan
    aa = axis_angle_from_matrix(np.where(finite[:, None, None], traj.rot, np.eye(3)))
    wrist = np.concatenate([aa, traj.root - j0], -1)
    wrist[~finite] = np.nan
    out["mano_theta"] = list(traj.pose.astype(np.float32))
    out["global_rot"] = list(traj.rot.reshape(n, 9).astype(np.float32))
    out["root"] = list(traj.root.astype(np.float32))
    out["wrist_xform"] = list(wrist.astype(np.float32))
    out["landmarks"] = list(lm.reshape(n, 60).astype(np.float32))
    if "mpjpe_mm" in out.columns:
        out = out.drop(columns=["mpjpe_mm"])
    return out
