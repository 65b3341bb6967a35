"""Tests for mvhand.model.losses: known answers, masks, zero loss at the ground truth, gradients."""

from __future__ import annotations

import math

import torch

from mvhand.model.losses import LossWeights, compute_losses, landmark_errors_mm
from mvhand.model.network import HandNetOutput


def _batch(B: int = 2, V: int = 2, S: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lm = torch.randn(B, 20, 3, generator=g) * 0.03 + torch.tensor([0.0, 0.0, 0.4])
    T = torch.eye(4).expand(B, V, 4, 4).clone()
    T[:, 1, 0, 3] = 0.05
    K = torch.tensor([60.0, 60.0, (S - 1) / 2, (S - 1) / 2]).expand(B, V, 4).clone()
    R = T[..., :3, :3]
    v = (lm[:, None] - T[..., None, :3, 3]) @ R
    uv = v[..., :2] / v[..., 2:] * 60.0 + (S - 1) / 2
    return {
        "images": torch.zeros(B, V, 1, S, S, dtype=torch.uint8),
        "view_mask": torch.ones(B, V),
        "K": K,
        "T_world_from_crop": T,
        "landmarks": lm,
        "has_landmarks": torch.ones(B, dtype=torch.bool),
        "uv": uv,
        "uv_valid": torch.ones(B, V, 20, dtype=torch.bool),
        "has_mano": torch.ones(B, dtype=torch.bool),
        "pose_pca": torch.randn(B, 15, generator=g),
        "global_rot": torch.eye(3).expand(B, 3, 3).clone(),
        "root": lm[:, 5].clone(),
        "has_beta": torch.ones(B, dtype=torch.bool),
        "betas": torch.randn(B, 10, generator=g),
    }


def _perfect(batch: dict[str, torch.Tensor]) -> HandNetOutput:
    S = batch["images"].shape[-1]
    B, V = batch["view_mask"].shape
    uvn = (batch["uv"] / S).clone().requires_grad_(True)
    big = torch.full((B, V, 20), 20.0)
    return HandNetOutput(
        uv=uvn * S, uv_norm=uvn, conf=torch.sigmoid(big), conf_logits=big,
        pose_pca=batch["pose_pca"].clone(), betas=batch["betas"].clone(), global_rot=batch["global_rot"].clone(),
        root_rel=batch["root"].clone(), root=batch["root"].clone(), anchor=torch.zeros(B, 3),
        landmarks=batch["landmarks"].clone().requires_grad_(True), feat_inv=torch.zeros(B, V, 1, 3),
        feat_var=torch.zeros(B, V, 1, 3),
    )  # fmt: skip


def test_zero_at_ground_truth_except_priors():
    b = _batch()
    t = compute_losses(_perfect(b), b)
    for k in ("kp3d", "kp3d_rel", "uv", "reproj", "pose", "orient", "root", "beta"):
        assert float(t[k].detach()) < 1e-4, k
    assert float(t["prior"]) > 0


def test_known_values_and_masks():
    b = _batch()
    out = _perfect(b)
    shift = torch.tensor([0.01, 0.0, 0.0])  # 10 mm on every landmark of sample 0
    out.landmarks = (b["landmarks"] + torch.stack([shift, torch.zeros(3)])[:, None]).requires_grad_(True)
    t = compute_losses(out, b)
    assert math.isclose(float(t["kp3d"].detach()), 5.0, rel_tol=1e-4)  # mean of 10 mm and 0 mm
    assert float(t["kp3d_rel"].detach()) < 1e-3  # a rigid shift is removed by the centroid
    b["has_landmarks"][0] = False
    assert float(compute_losses(out, b)["kp3d"].detach()) < 1e-4
    errs = landmark_errors_mm(out.landmarks, b["landmarks"])
    assert errs.shape == (2, 19)


def test_total_is_weighted_sum_and_backprop():
    b = _batch()
    out = _perfect(b)
    out.landmarks = (out.landmarks.detach() + 0.003).requires_grad_(True)
    w = LossWeights()
    t = compute_losses(out, b, w)
    manual = sum(getattr(w, k) * float(t[k].detach()) for k in w.to_dict())
    assert math.isclose(float(t["loss"].detach()), manual, rel_tol=1e-5)
    t["loss"].backward()
    assert out.landmarks.grad is not None and out.landmarks.grad.abs().sum() > 0


def test_heatmap_cross_entropy_against_independent_computation():
    from mvhand.model.losses import heatmap_cross_entropy

    S, H, W = 64, 8, 8  # 8 px per cell
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, H, W, generator=g)
    uv = torch.tensor([[3.5, 3.5], [20.0, 41.0], [63.0, 0.0]])
    ce = heatmap_cross_entropy(logits, uv, S, sigma=1.0)
    for n in range(3):  # explicit loops over cells
        cx, cy = (uv[n, 0].item() - 3.5) / 8, (uv[n, 1].item() - 3.5) / 8
        t = torch.tensor(
            [[math.exp(-0.5 * ((j - cx) ** 2 + (i - cy) ** 2)) for j in range(W)] for i in range(H)]
        )
        t = t / t.sum()
        logp = torch.log_softmax(logits[n].flatten(), 0).reshape(H, W)
        assert math.isclose(float(ce[n]), float(-(t * logp).sum()), rel_tol=1e-5)
    # Minimal (= the target's entropy) when the heatmap is the target itself; larger when shifted.
    target_logits = torch.stack(
        [torch.tensor([[-0.5 * ((j - 2.0) ** 2 + (i - 5.0) ** 2) for j in range(W)] for i in range(H)])]
    )
    at = heatmap_cross_entropy(target_logits, torch.tensor([[2 * 8 + 3.5, 5 * 8 + 3.5]]), S)
    off = heatmap_cross_entropy(target_logits, torch.tensor([[4 * 8 + 3.5, 5 * 8 + 3.5]]), S)
    p = torch.softmax(target_logits.flatten(), 0)
    assert math.isclose(float(at), float(-(p * p.log()).sum()), rel_tol=1e-5)
    assert float(off) > float(at) + 1.0


def test_heatmap_term_only_with_heatmap_logits():
    b = _batch()
    out = _perfect(b)
    assert float(compute_losses(out, b)["heatmap"]) == 0.0
    B, V = b["view_mask"].shape
    out.uv_heatmap_logits = torch.zeros(B, V, 20, 8, 8, requires_grad=True)
    t = compute_losses(out, b, LossWeights(heatmap=1.0))
    assert math.isclose(float(t["heatmap"].detach()), math.log(64), rel_tol=0.2)  # near-uniform vs a peak
    t["loss"].backward()
    assert out.uv_heatmap_logits.grad.abs().sum() > 0
