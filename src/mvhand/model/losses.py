"""Training losses (spec/model.md §3): 3D landmarks, root-relative 3D, UV, reprojection, MANO regularisers.

Units: 3D errors in millimetres with weight 0.01 per mm; 2D errors in crop-normalised units
(1.0 = the crop side S). Every term is a masked mean; a term without any valid element is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.geometry.cameras import project_pinhole_torch
from mvhand.model.network import HandNetOutput, heatmap_cell_centres

__all__ = ["LossWeights", "compute_losses", "heatmap_cross_entropy", "landmark_errors_mm"]

M_TO_MM = 1000.0
_EVAL = list(LANDMARKS_TO_EVAL)


@dataclass
class LossWeights:
    """Weights of the loss terms (spec/model.md §3 defaults)."""

    kp3d: float = 0.01  # per mm, mean Euclidean over the 19 evaluated landmarks
    kp3d_rel: float = 0.01  # per mm, same after removing each hand's centroid
    uv: float = 1.0  # L1 of the UV regressor, normalised crop units
    heatmap: float = 0.0  # cross-entropy of the heatmap head against a Gaussian at the target (σ = 1 cell)
    conf: float = 0.1  # BCE of the keypoint confidence against exp(-err / 0.02)
    reproj: float = 0.5  # L1 of the MANO landmarks projected into each crop, normalised units
    pose: float = 0.1  # L1 on the 15 PCA coefficients
    orient: float = 1.0  # L1 between global rotation matrices
    root: float = 0.01  # per mm, Euclidean root-joint error
    beta: float = 0.1  # squared error of the betas
    prior: float = 1e-3  # L2 on betas and PCA coefficients

    def to_dict(self) -> dict:
        return asdict(self)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    while mask.ndim < x.ndim:
        mask = mask[..., None]
    mask = mask.expand_as(x)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def landmark_errors_mm(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-landmark Euclidean errors over the 19 evaluated landmarks, (B, 19) mm."""
    return (pred[:, _EVAL] - gt[:, _EVAL]).norm(dim=-1) * M_TO_MM


def heatmap_cross_entropy(
    logits: torch.Tensor, uv: torch.Tensor, img_size: int, sigma: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of softmax heatmaps against a normalised Gaussian at the target keypoint.

    A dense auxiliary signal for the soft-argmax head (every cell gets a gradient), which trains the
    heatmaps much faster from scratch than the L1 on their expectation alone.

    Args:
        logits: (..., H, W) heatmap logits; cell (i, j) centred on crop pixel ``(j·s + (s − 1)/2,
            i·s + (s − 1)/2)``, s = S / W.
        uv: (..., 2) target keypoints, crop pixels.
        img_size: crop side S, px.
        sigma: Gaussian standard deviation, cells.

    Returns:
        (...) cross-entropy per keypoint, nats.
    """
    h, w = logits.shape[-2:]
    xs = heatmap_cell_centres(w, img_size, logits.device, logits.dtype)  # crop px
    ys = heatmap_cell_centres(h, img_size, logits.device, logits.dtype)
    gx = -0.5 * ((xs - uv[..., 0, None]) / (sigma * img_size / w)) ** 2  # (..., W)
    gy = -0.5 * ((ys - uv[..., 1, None]) / (sigma * img_size / h)) ** 2  # (..., H)
    target = torch.softmax((gy[..., :, None] + gx[..., None, :]).flatten(-2), dim=-1)
    logp = torch.log_softmax(logits.flatten(-2), dim=-1)
    return -(target * logp).sum(-1)


def compute_losses(
    out: HandNetOutput, batch: dict[str, torch.Tensor], weights: LossWeights | None = None
) -> dict[str, torch.Tensor]:
    """All loss terms and their weighted sum.

    Args:
        out: network outputs (landmarks required).
        batch: a :func:`mvhand.model.data.collate` batch on the outputs' device.
        weights: term weights.

    Returns:
        dict with the unweighted terms (``kp3d`` and ``root`` in mm, 2D in normalised units, …) and
        ``loss`` (the weighted total, a scalar tensor).
    """
    w = weights or LossWeights()
    S = batch["images"].shape[-1]
    has_lm = batch["has_landmarks"].bool()
    has_mano = batch["has_mano"].bool()
    view_mask = batch["view_mask"].bool()
    gt_lm = batch["landmarks"].float()
    pred_lm = out.landmarks.float()
    terms: dict[str, torch.Tensor] = {}

    err = landmark_errors_mm(pred_lm, gt_lm)  # (B, 19)
    terms["kp3d"] = _masked_mean(err, has_lm)
    pr = pred_lm[:, _EVAL] - pred_lm[:, _EVAL].mean(1, keepdim=True)
    gr = gt_lm[:, _EVAL] - gt_lm[:, _EVAL].mean(1, keepdim=True)
    terms["kp3d_rel"] = _masked_mean((pr - gr).norm(dim=-1) * M_TO_MM, has_lm)

    uv_valid = batch["uv_valid"].bool() & view_mask[..., None] & has_lm[:, None, None]
    gt_uv = batch["uv"].float() / S
    uv_err = (out.uv_norm - gt_uv).abs()  # (B, V, 20, 2)
    terms["uv"] = _masked_mean(uv_err.sum(-1), uv_valid)
    if out.uv_heatmap_logits is not None:
        ce = heatmap_cross_entropy(out.uv_heatmap_logits.float(), batch["uv"].float(), S)
        terms["heatmap"] = _masked_mean(ce, uv_valid)
    else:
        terms["heatmap"] = torch.zeros((), device=pred_lm.device)
    conf_target = torch.exp(-uv_err.detach().norm(dim=-1) / 0.02)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.conf_logits, conf_target, reduction="none")
    terms["conf"] = _masked_mean(bce, uv_valid)

    B, V = view_mask.shape
    pts = pred_lm[:, None].expand(B, V, 20, 3)
    proj, z = project_pinhole_torch(pts, batch["T_world_from_crop"].float(), batch["K"].float())
    ok = uv_valid & (z > 0.05)
    reproj = ((proj / S - gt_uv).abs().sum(-1)).clamp_max(1.0)
    terms["reproj"] = _masked_mean(reproj, ok)

    terms["pose"] = _masked_mean((out.pose_pca - batch["pose_pca"].float()).abs(), has_mano)
    terms["orient"] = _masked_mean((out.global_rot - batch["global_rot"].float()).abs().flatten(1), has_mano)
    terms["root"] = _masked_mean((out.root - batch["root"].float()).norm(dim=-1) * M_TO_MM, has_mano)
    terms["beta"] = _masked_mean((out.betas - batch["betas"].float()) ** 2, batch["has_beta"].bool())
    terms["prior"] = (out.betas**2).mean() + (out.pose_pca**2).mean()

    total = sum(getattr(w, k) * v for k, v in terms.items())
    terms["loss"] = total
    return terms
