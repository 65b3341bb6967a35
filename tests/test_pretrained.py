"""Pretrained backbone weights: timm-format files (safetensors, .pth/.bin) into Hiera, position-embedding
resampling, refusals, fetching from the Hub (mocked; tests stay offline), and two training steps of the
paper backbone from a pretrained file."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import save_file

from mvhand._compat import import_timm
from mvhand.io_utils import InputError
from mvhand.model.network import (
    create_backbone,
    pretrained_hub_repo,
    pretrained_model_name,
    resample_pos_embed,
)

HIERA = "hiera_base_224"


@pytest.fixture(scope="module")
def hiera_files(tmp_path_factory):
    """A timm hiera_base_224 *classifier* (RGB, 1000 classes, as on the Hub) saved the ways timm writes
    weights: model.safetensors (Hub), pytorch_model.bin (older Hub repos), and a train.py-style .pth
    checkpoint ({"state_dict": ..., "epoch": ...})."""
    timm = import_timm()
    torch.manual_seed(1)
    source = timm.create_model(HIERA, pretrained=False)  # in_chans 3, head.fc 768 -> 1000
    with torch.no_grad():  # zero-initialised tensors (pos_embed, biases) get distinct values too
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = {k: v.detach().clone().contiguous() for k, v in source.state_dict().items()}
    d = tmp_path_factory.mktemp("hiera")
    save_file(state, str(d / "model.safetensors"))
    torch.save(state, d / "pytorch_model.bin")
    torch.save({"state_dict": state, "epoch": 3, "arch": HIERA}, d / "checkpoint.pth")
    return d, state


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "checkpoint.pth"])
def test_hiera_loads_timm_format_weights_into_a_grey_backbone(hiera_files, name):
    d, state = hiera_files
    net = create_backbone(HIERA, 224, in_chans=1, pretrained_file=d / name)
    own = net.state_dict()
    assert "head.fc.weight" not in own  # num_classes=0: the classifier is dropped
    for key, value in own.items():
        if key == "patch_embed.proj.weight":  # grey input: timm sums the RGB filters
            torch.testing.assert_close(value, state[key].sum(dim=1, keepdim=True))
        else:
            assert torch.equal(value, state[key]), key
    # grey x through the adapted stem == the same grey replicated to RGB through the original stem
    x = torch.rand(1, 1, 224, 224)
    ref = torch.nn.functional.conv2d(x.expand(1, 3, 224, 224), state[key := "patch_embed.proj.weight"],
                                     state["patch_embed.proj.bias"], stride=4, padding=3)  # fmt: skip
    torch.testing.assert_close(net.patch_embed.proj(x), ref, atol=1e-5, rtol=1e-5)
    assert key in own


def test_hiera_at_another_size_resamples_the_position_embedding(hiera_files):
    d, state = hiera_files
    net = create_backbone(HIERA, 192, in_chans=3, pretrained_file=d / "model.safetensors")
    # 224 px / stride 4 = 56 x 56 tokens; 192 px: 48 x 48
    assert tuple(state["pos_embed"].shape) == (1, 56 * 56, 96) and tuple(net.pos_embed.shape) == (
        1,
        48 * 48,
        96,
    )
    grid = state["pos_embed"].reshape(1, 56, 56, 96).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(48, 48), mode="bicubic", antialias=True)
    torch.testing.assert_close(net.pos_embed.detach(), expected.permute(0, 2, 3, 1).reshape(1, 48 * 48, 96))
    for key, value in net.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, state[key]), key
    assert net(torch.rand(1, 3, 192, 192)).shape == (1, 768)


def test_resample_pos_embed_known_answers():
    # a constant embedding stays constant; a linear ramp stays linear away from the border
    const = torch.full((1, 16 * 16, 4), 0.25)
    torch.testing.assert_close(
        resample_pos_embed(const, torch.Size((1, 8 * 8, 4))), torch.full((1, 64, 4), 0.25)
    )
    g0, g = 32, 48
    xs = (torch.arange(g0) + 0.5) / g0  # token centres in [0, 1]
    ramp = (xs[None, :, None] + 2 * xs[:, None, None]).expand(g0, g0, 3).reshape(1, g0 * g0, 3)
    out = resample_pos_embed(ramp, torch.Size((1, g * g, 3))).reshape(g, g, 3)
    xn = (torch.arange(g) + 0.5) / g
    want = xn[None, :] + 2 * xn[:, None]
    inner = slice(3, g - 3)
    torch.testing.assert_close(out[inner, inner, 0], want[inner, inner], atol=1e-4, rtol=0)
    # prefix (class) tokens are kept as they are
    with_cls = torch.cat([torch.full((1, 1, 3), 7.0), ramp], dim=1)
    assert torch.equal(resample_pos_embed(with_cls, torch.Size((1, 1 + g * g, 3)), 1)[:, 0], with_cls[:, 0])
    with pytest.raises(ValueError, match="square"):
        resample_pos_embed(torch.zeros(1, 15, 3), torch.Size((1, 16, 3)))


def test_weights_that_do_not_fit_are_refused(hiera_files, tmp_path):
    d, state = hiera_files
    # a file of another architecture: refused, naming the problem (no layer silently left random)
    timm = import_timm()
    other = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(other))
    with pytest.raises(InputError, match=r"do not fit backbone hiera_base_224.*(missing|unexpected)"):
        create_backbone(HIERA, 224, pretrained_file=other)
    # one tensor missing
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "blocks.3.attn.qkv.weight"}, str(partial))
    with pytest.raises(InputError, match=r"1 missing tensors \(blocks.3.attn.qkv.weight\)"):
        create_backbone(HIERA, 224, pretrained_file=partial)
    # truncated file
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((d / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(InputError, match="cannot load the backbone weights"):
        create_backbone(HIERA, 224, pretrained_file=cut)


def _response():
    from types import SimpleNamespace

    return SimpleNamespace(headers={}, request=None, status_code=404)


def test_pretrained_names_and_hub_repositories():
    assert pretrained_model_name(HIERA, "mae_in1k_ft_in1k") == "hiera_base_224.mae_in1k_ft_in1k"
    assert pretrained_model_name(HIERA, "hiera_base_224.mae") == "hiera_base_224.mae"
    with pytest.raises(ValueError, match="is for 'vit_base_patch16_224'"):
        pretrained_model_name(HIERA, "vit_base_patch16_224.augreg_in21k")
    assert pretrained_hub_repo("hiera_base_224.mae_in1k_ft_in1k") == "timm/hiera_base_224.mae_in1k_ft_in1k"
    with pytest.raises(ValueError, match=r"hiera_base_224.mae, hiera_base_224.mae_in1k_ft_in1k"):
        pretrained_hub_repo("hiera_base_224.imagenet")


def test_download_pretrained_through_the_hub_cache(hiera_files, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    from mvhand.download import download_pretrained

    d, state = hiera_files
    calls = []

    def fake_download(repo_id, filename, token=None):
        calls.append((repo_id, filename))
        if filename == "model.safetensors":  # an older repository: only pytorch_model.bin
            raise errors.RemoteEntryNotFoundError("404", response=_response())
        return str(d / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = download_pretrained("hiera_base_224.mae", tmp_path / "w" / "hiera.safetensors")
    assert calls == [
        ("timm/hiera_base_224.mae", "model.safetensors"),
        ("timm/hiera_base_224.mae", "pytorch_model.bin"),
    ]
    net = create_backbone(HIERA, 224, in_chans=3, pretrained_file=out)
    assert torch.equal(net.state_dict()["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc1.weight"])

    def offline(repo_id, filename, token=None):
        raise errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    target = tmp_path / "x.safetensors"
    with pytest.raises(
        InputError, match=r"cannot reach the Hugging Face Hub.*hf download timm/hiera_base_224.mae"
    ):
        download_pretrained("hiera_base_224.mae", target)
    assert not target.exists() and list(tmp_path.glob(".x.safetensors*")) == []
    with pytest.raises(InputError, match="train.pretrained"):
        download_pretrained("hiera_base_224.nope", target)


@pytest.mark.slow
def test_hiera_base_trains_two_steps_from_a_pretrained_file(hiera_files, tmp_path):
    """The paper backbone at 224 px, batch 2, two steps on the CPU, starting from the pretrained file."""
    from fixtures import make_crop_cache

    from mvhand.geometry.mano import ManoModel
    from mvhand.model.training import TrainConfig, fit
    from mvhand.synthetic.mano_model import write_synthetic_mano

    d, state = hiera_files
    write_synthetic_mano(tmp_path / "mano")
    mano = ManoModel.from_dir(tmp_path / "mano")
    crops = [str(make_crop_cache(tmp_path / f"s{i}.parquet", mano, sequence=f"seq_{i}", n_frames=2, seed=i,
                                 crop_size=224, dot=False)) for i in range(2)]  # fmt: skip
    cfg = TrainConfig(crops=crops, mano_dir=str(tmp_path / "mano"), out_dir=str(tmp_path / "out"), backbone=HIERA,
                      img_size=224, in_chans=3, n_points=8, hidden=32, pretrained_file=str(d / "model.safetensors"),
                      batch_size=2, epochs=1, iters_per_epoch=2, lr=1e-6, weight_decay=0.0, warmup_iters=0,
                      val_fraction=0.0, num_workers=0, device="cpu", checkpoint_every=2, threads=2)  # fmt: skip
    res = fit(cfg)
    assert res.completed and len(res.steps) == 2
    with open(tmp_path / "out" / "steps.csv") as fh:
        assert all(math.isfinite(float(r["loss"])) for r in csv.DictReader(fh))
    trained = torch.load(tmp_path / "out" / "model.pt", weights_only=False)["model"]
    backbone = {k[len("backbone.") :]: v for k, v in trained.items() if k.startswith("backbone.")}
    assert set(backbone) == set(state) - {"head.fc.weight", "head.fc.bias"}
    # two AdamW steps of lr 1e-6 move no weight by more than ~2e-6: training started from the file
    drift = max((backbone[k].float() - state[k].float()).abs().max().item() for k in backbone)
    assert drift < 1e-5, drift
