"""Tests for mvhand.model.network: split FTL equivariance, view masking, 1/2/4 views, tiny timm backbones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import ShellPayload

from mvhand.geometry.transforms import rodrigues
from mvhand.model.network import HandNet, HandNetConfig, create_backbone, masked_anchor, split_ftl


def _rand_T(rng: np.random.Generator, B: int, V: int) -> torch.Tensor:
    T = np.tile(np.eye(4), (B, V, 1, 1))
    T[..., :3, :3] = rodrigues(rng.normal(0, 1.0, (B, V, 3)))
    T[..., :3, 3] = rng.normal(0, 0.3, (B, V, 3))
    return torch.tensor(T, dtype=torch.float32)


def _inputs(B: int, V: int, S: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = torch.tensor(rng.integers(0, 255, (B, V, 1, S, S)), dtype=torch.uint8)
    f = rng.uniform(20, 60, (B, V))
    K = torch.tensor(
        np.stack([f, f, np.full_like(f, (S - 1) / 2), np.full_like(f, (S - 1) / 2)], -1), dtype=torch.float32
    )
    return images, K, _rand_T(rng, B, V)


def _world_xform(T: torch.Tensor, R: np.ndarray, t: np.ndarray) -> torch.Tensor:
    G = torch.eye(4)
    G[:3, :3] = torch.tensor(R, dtype=torch.float32)
    G[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return G @ T


def test_split_ftl_equivariance():
    rng = np.random.default_rng(1)
    B, V, N = 3, 2, 5
    p_inv = torch.randn(B, V, N, 3)
    p_var = torch.randn(B, V, N, 3)
    T = _rand_T(rng, B, V)
    fn = torch.tensor(rng.uniform(0.5, 2.0, (B, V)), dtype=torch.float32)
    mask = torch.ones(B, V)
    a = masked_anchor(T[..., :3, 3], mask)
    fi, fv = split_ftl(p_inv, p_var, T, fn, a, mask)
    # Independent computation for one view: R p and R diag(1,1,f) p + c - a.
    b, v, n = 1, 1, 3
    R, c = T[b, v, :3, :3], T[b, v, :3, 3]
    torch.testing.assert_close(fi[b, v, n], R @ p_inv[b, v, n])
    zs = torch.tensor([1.0, 1.0, float(fn[b, v])])
    torch.testing.assert_close(fv[b, v, n], R @ (zs * p_var[b, v, n]) + c - a[b])
    # Rotating cameras and world together (world frame change G = [Rg, tg]): invariant features
    # only rotate (no translation), variant features rotate and move with the (transformed) anchor.
    Rg, tg = rodrigues(np.array([0.3, -1.1, 0.7])), np.array([0.4, -0.2, 0.9])
    T2 = _world_xform(T, Rg, tg)
    a2 = masked_anchor(T2[..., :3, 3], mask)
    fi2, fv2 = split_ftl(p_inv, p_var, T2, fn, a2, mask)
    Rg_t = torch.tensor(Rg, dtype=torch.float32)
    torch.testing.assert_close(fi2, fi @ Rg_t.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(fv2, fv @ Rg_t.T, atol=1e-5, rtol=0)
    # Translating the world with the anchor held fixed: invariant unchanged, variant shifted by t.
    T3 = _world_xform(T, np.eye(3), tg)
    fi3, fv3 = split_ftl(p_inv, p_var, T3, fn, a, mask)
    torch.testing.assert_close(fi3, fi)
    torch.testing.assert_close(fv3, fv + torch.tensor(tg, dtype=torch.float32), atol=1e-5, rtol=0)
    # Masked views are zeroed.
    mask[0, 1] = 0
    fi4, fv4 = split_ftl(p_inv, p_var, T, fn, a, mask)
    assert fi4[0, 1].abs().max() == 0 and fv4[0, 1].abs().max() == 0


@pytest.fixture(scope="module")
def mano(mano_model):
    """The session's synthetic MANO model (conftest.py)."""
    return mano_model


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("views", [1, 2, 4])
def test_forward_shapes_views(backbone, views, mano):
    S = 64
    net = HandNet(backbone, S, views, n_points=8, hidden=32, mano=mano.right).eval()
    images, K, T = _inputs(2, views, S)
    out = net(images, torch.ones(2, views), K, T)
    assert out.uv.shape == (2, views, 20, 2) and out.conf.shape == (2, views, 20)
    assert out.landmarks.shape == (2, 20, 3) and out.root.shape == (2, 3)
    assert out.pose_pca.shape == (2, 15) and out.betas.shape == (2, 10)
    R = out.global_rot
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(2, 3, 3), atol=1e-5, rtol=0)
    assert torch.isfinite(out.landmarks).all()
    # The MANO root joint of the output landmarks' model is the predicted root (wrist = canonical 5 is
    # MANO joint 0, which sits at J0(beta) + transl = root).
    torch.testing.assert_close(out.landmarks[:, 5], out.root, atol=1e-5, rtol=0)


def test_view_mask_honoured(mano):
    S, V = 64, 4
    torch.manual_seed(0)
    net = HandNet("test_resnet", S, V, n_points=8, hidden=32, mano=mano.right).eval()
    images, K, T = _inputs(2, V, S, seed=3)
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    out = net(images, mask, K, T)
    images2, K2, T2 = _inputs(2, V, S, seed=4)  # different content in the masked slots only
    keep = mask.bool()
    images2[keep], K2[keep], T2[keep] = images[keep], K[keep], T[keep]
    out2 = net(images2, mask, K2, T2)
    for name in ("landmarks", "root", "pose_pca", "betas", "global_rot"):
        torch.testing.assert_close(getattr(out2, name), getattr(out, name))
    torch.testing.assert_close(out2.uv[keep], out.uv[keep])
    # Unmasking a slot changes the output (the mask is not ignored altogether).
    out3 = net(images2, torch.ones(2, V), K2, T2)
    assert not torch.allclose(out3.landmarks, out.landmarks)


@pytest.mark.parametrize("position_mode", ["point", "mlp"])
def test_world_translation_equivariance(mano, position_mode):
    """Shifting the world moves the landmarks by exactly the shift (anchor follows the cameras)."""
    S, V = 64, 2
    torch.manual_seed(0)
    net = HandNet(
        "test_resnet", S, V, n_points=8, hidden=32, position_mode=position_mode, mano=mano.right
    ).eval()
    images, K, T = _inputs(3, V, S)
    t = np.array([0.3, -0.45, 0.2])
    out = net(images, torch.ones(3, V), K, T)
    out2 = net(images, torch.ones(3, V), K, _world_xform(T, np.eye(3), t))
    torch.testing.assert_close(
        out2.landmarks, out.landmarks + torch.tensor(t, dtype=torch.float32), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out2.feat_inv, out.feat_inv)
    # With the anchor held fixed the variant branch sees the shift (so the output changes).
    out3 = net(images, torch.ones(3, V), K, _world_xform(T, np.eye(3), t), anchor=out.anchor)
    torch.testing.assert_close(
        out3.feat_var, out.feat_var + torch.tensor(t, dtype=torch.float32), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out3.feat_inv, out.feat_inv)
    if position_mode == "point":  # the read-off root moves with the cameras even for a fixed anchor
        shift = torch.tensor(t, dtype=torch.float32)
        resid = net.pos_head(
            torch.cat([out3.feat_var.flatten(1), out3.feat_inv.flatten(1), torch.ones(3, V)], -1)
        )
        torch.testing.assert_close(
            out3.root - resid,
            out.root
            - net.pos_head(
                torch.cat([out.feat_var.flatten(1), out.feat_inv.flatten(1), torch.ones(3, V)], -1)
            )
            + shift,
            atol=1e-5,
            rtol=0,
        )


def test_config_roundtrip_and_state(mano):
    net = HandNet("test_resnet", 64, 2, n_points=8, hidden=32, mano=mano.right)
    cfg = HandNetConfig.from_dict(net.config.to_dict() | {"unknown": 1})
    net2 = HandNet.from_config(cfg, mano=mano.right)
    sd = net.net_state_dict()
    assert not any(k.startswith("mano.") for k in sd)
    net2.load_net_state_dict(sd)
    images, K, T = _inputs(1, 2, 64)
    torch.testing.assert_close(
        net.eval()(images, torch.ones(1, 2), K, T).landmarks,
        net2.eval()(images, torch.ones(1, 2), K, T).landmarks,
    )
    with pytest.raises(ValueError, match="does not match"):
        HandNet("test_vit", 64, 2, n_points=8, hidden=32).load_net_state_dict(sd)


def test_backbone_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_backbone("hiera_tiny_224", 100)
    with pytest.raises(ValueError, match="unknown timm backbone"):
        create_backbone("no_such_net_xyz", 64)
    with pytest.raises(ValueError, match="do not match"):
        net = HandNet("test_resnet", 64, 2, n_points=4, hidden=16)
        images, K, T = _inputs(1, 3, 64)
        net(images, torch.ones(1, 3), K, T)
    assert math.isfinite(1.0)


def test_local_backbone_weights_are_loaded_offline(tmp_path):
    from mvhand.io_utils import InputError
    from mvhand.model.network import create_backbone

    ref = create_backbone("test_resnet", 32)
    weights = tmp_path / "w.pth"
    torch.save({k: v + 1.0 for k, v in ref.state_dict().items() if v.is_floating_point()}, weights)
    loaded = create_backbone("test_resnet", 32, pretrained_file=weights)
    for k, v in loaded.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, ref.state_dict()[k] + 1.0)
    with pytest.raises(InputError, match="not found"):
        create_backbone("test_resnet", 32, pretrained_file=tmp_path / "missing.pth")


def test_backbone_weights_with_a_pickle_payload_are_refused(tmp_path):
    """A downloaded weights file that would run code when unpickled: refused, named, never run."""
    from mvhand.io_utils import InputError
    from mvhand.model.network import create_backbone

    marker = tmp_path / "pwned"
    weights = tmp_path / "hiera_base_224.pth"
    state = create_backbone("test_resnet", 32).state_dict()
    torch.save({"state_dict": state, "args": ShellPayload(marker)}, weights)
    with pytest.raises(InputError) as ei:
        create_backbone("test_resnet", 32, pretrained_file=weights)
    assert str(weights) in str(ei.value) and "trust" in str(ei.value)
    assert not marker.exists()
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(InputError, match="cannot load the backbone weights"):
        create_backbone("test_resnet", 32, pretrained_file=truncated)


def test_heatmap_soft_argmax_reads_the_peak_cell():
    """A sharp peak at cell (i, j) gives the crop pixel centre of that cell (c = (S − 1)/2 convention)."""
    from mvhand.model.network import HeatmapUV

    S, W = 96, 12  # 8 px per cell
    head = HeatmapUV(4, (), n_up=0, width=4).eval()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
    peaks = [(0, 0), (3, 7), (11, 11)]  # (row i, column j)
    logits = torch.full((len(peaks), 20, W, W), -1e4)
    for n, (i, j) in enumerate(peaks):
        logits[n, :, i, j] = 0.0
    head.out = _ConstantOut(logits)
    uv, conf_logits, hm = head(torch.zeros(len(peaks), 4, W, W), S)
    for n, (i, j) in enumerate(peaks):
        expect = torch.tensor([j * 8 + 3.5, i * 8 + 3.5]) / S
        torch.testing.assert_close(uv[n], expect.expand(20, 2), atol=1e-6, rtol=0)
    assert hm.shape == (len(peaks), 20, W, W) and conf_logits.shape == (len(peaks), 20)
    # A uniform map has its expectation at the crop centre and a lower confidence than a peak.
    head.out = _ConstantOut(torch.zeros(1, 20, W, W))
    uv_flat, conf_flat, _ = head(torch.zeros(1, 4, W, W), S)
    torch.testing.assert_close(uv_flat, torch.full((1, 20, 2), (S - 1) / 2 / S), atol=1e-6, rtol=0)
    assert (conf_flat < conf_logits[:1]).all()


class _ConstantOut(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_heatmap_head_uses_backbone_skips_and_learns(mano):
    """timm backbones with ``forward_intermediates`` feed their stride-16/8 maps to the heatmap head; a
    few steps on a fixed target move the 2D prediction towards it (gradients reach the head)."""
    S = 64
    net = HandNet("test_resnet", S, 1, n_points=8, hidden=32, uv_head="heatmap", mano=mano.right)
    assert len(net._skip_idx) == 2 and len(net.uv_net.laterals) == 2
    images, K, T = _inputs(2, 1, S)
    out = net.eval()(images, torch.ones(2, 1), K, T)
    assert out.uv_heatmap_logits.shape[:3] == (2, 1, 20)
    assert out.uv_heatmap_logits.shape[-1] == 4 * 2  # test_resnet: last map 2x2 at 64 px, heatmap 4x finer
    target = torch.full((2, 1, 20, 2), 0.25)
    opt = torch.optim.Adam(net.uv_net.parameters(), lr=1e-2)
    net.train()
    first = None
    for _ in range(30):
        err = (net(images, torch.ones(2, 1), K, T).uv_norm - target).abs().mean()
        first = float(err.detach()) if first is None else first
        opt.zero_grad()
        err.backward()
        opt.step()
    assert float(err.detach()) < 0.5 * first


def test_uv_head_options_and_old_configs(mano):
    reg = HandNet("test_resnet", 64, 2, n_points=8, hidden=32, uv_head="regress", position_mode="mlp")
    assert reg.config.uv_head == "regress" and reg.config.position_mode == "mlp"  # both recorded
    images, K, T = _inputs(1, 2, 64)
    assert reg.eval()(images, torch.ones(1, 2), K, T).uv_heatmap_logits is None
    # Models written before the option existed have no uv_head key: they are regressors.
    old = {k: v for k, v in reg.config.to_dict().items() if k not in ("uv_head", "uv_upsample")}
    assert HandNetConfig.from_dict(old).uv_head == "regress"
    assert HandNetConfig().uv_head == "heatmap"
    with pytest.raises(ValueError, match="uv_head"):
        HandNet("test_resnet", 64, 2, uv_head="gaussian")
    with pytest.raises(ValueError, match="position_mode"):
        HandNet("test_resnet", 64, 2, position_mode="nearest")
