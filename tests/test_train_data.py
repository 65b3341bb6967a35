"""Tests for mvhand.model.data: exact flip, homography augmentation, extrinsic noise, schema errors.

``make_crop_cache`` (also used by the training/inference tests) writes a small crop cache with the
docs/architecture.md schema: MANO-consistent hands seen by 2–3 crop cameras; each stored crop shows one
bright dot at the projection of a chosen landmark, so image content can be checked against geometry.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fixtures import DOT_LANDMARK, make_crop_cache

from mvhand.geometry.cameras import project_pinhole
from mvhand.io_utils import InputError
from mvhand.model.data import (
    REQUIRED_COLUMNS,
    AugmentConfig,
    CropDataset,
    EpochSampler,
    collate,
    crop_homography,
    split_sequences,
)


@pytest.fixture(scope="module")
def mano(mano_model):
    """The session's synthetic MANO model (conftest.py)."""
    return mano_model


@pytest.fixture(scope="module")
def cache(tmp_path_factory, mano):
    return make_crop_cache(tmp_path_factory.mktemp("crops") / "seq_a.parquet", mano, n_views=3)


def _dot_position(img: np.ndarray) -> np.ndarray:
    """Sub-pixel centroid of the bright dot around the maximum."""
    img = img.astype(np.float64) - 20
    j, i = np.unravel_index(np.argmax(img), img.shape)
    ys, xs = np.mgrid[j - 3 : j + 4, i - 3 : i + 4]
    w = np.clip(img[j - 3 : j + 4, i - 3 : i + 4], 0, None)
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_groups_and_views(cache, mano):
    ds = CropDataset([cache], img_size=64, views=2, train=False, mano=mano)
    assert len(ds) == 6  # 3 frames x 2 hands
    info = [ds.group_info(i) for i in range(len(ds))]
    assert [(d["frame_id"], d["hand_side"]) for d in info] == [(f, s) for f in range(3) for s in (0, 1)]
    s = ds[0]
    assert s["images"].shape == (2, 1, 64, 64) and s["images"].dtype == np.uint8
    assert s["view_mask"].tolist() == [1.0, 1.0]
    assert bool(s["flipped"]) and not bool(ds[1]["flipped"])
    ds4 = CropDataset([cache], img_size=64, views=4, train=False, mano=mano)
    assert ds4[0]["view_mask"].tolist() == [1.0, 1.0, 1.0, 0.0]
    batch = collate([ds4[0], ds4[1]])
    assert batch["images"].shape == (2, 4, 1, 64, 64) and batch["K"].dtype == torch.float32


def test_flip_targets_match_mirrored_mano(cache, mano):
    """Mirrored left-hand params on the right MANO layer reproduce the x-mirrored left landmarks."""
    ds = CropDataset([cache], img_size=64, views=2, train=False, mano=mano)
    for i in range(len(ds)):
        s = ds[i]
        betas = torch.tensor(s["betas"])[None]
        R = torch.tensor(s["global_rot"])[None]
        root = torch.tensor(s["root"])[None]
        right = mano.right
        lm = right.landmarks(torch.tensor(s["pose_pca"])[None], R, root - right.root_joint(betas), betas)
        # Loose enough for float32 storage, far below any mirror error (cm).
        np.testing.assert_allclose(lm.detach().numpy()[0], s["landmarks"], atol=2e-5)
        g0 = ds.group_info(i)["rows"][0]
        expect = ds.lm[g0] * ([-1.0, 1.0, 1.0] if ds.side[g0] == 0 else 1.0)
        np.testing.assert_allclose(s["landmarks"], expect, atol=1e-6)


@pytest.mark.parametrize("flip_side", [0, 1])
def test_homography_keeps_keypoints_on_content(cache, mano, flip_side):
    """The dot drawn at a projected landmark lands at its re-projection through the updated camera."""
    aug = AugmentConfig(rot_deg=60, lookat_deg=5, scale_range=(0.85, 1.15), brightness=0, contrast=0,
                        blur_prob=0, noise_prob=0, extrinsic_noise=0.5, view_dropout=0.0)  # fmt: skip
    ds = CropDataset([cache], img_size=64, views=2, train=True, augment=aug, seed=3, mano=mano)
    idx = [i for i in range(len(ds)) if ds.group_info(i)["hand_side"] == flip_side]
    n_checked = 0
    for epoch in range(3):
        for i in idx:
            s = ds[(epoch, i)]
            for v in range(2):
                u_exp = s["uv"][v, DOT_LANDMARK]
                if not (6 < u_exp[0] < 58 and 6 < u_exp[1] < 58):
                    continue
                # Independent re-projection through the updated camera.
                uv2, _ = project_pinhole(
                    s["landmarks"].astype(np.float64), s["T_world_from_crop"][v].astype(np.float64), s["K"][v]
                )
                np.testing.assert_allclose(uv2[DOT_LANDMARK], u_exp, atol=1e-3)
                np.testing.assert_allclose(_dot_position(s["images"][v, 0]), u_exp, atol=0.35)
                n_checked += 1
    assert n_checked >= 6


def test_extrinsic_noise_shifts_world_only(cache, mano):
    base = dict(rot_deg=20, lookat_deg=2, view_dropout=0.0)
    ds0, ds1 = (
        CropDataset(
            [cache],
            img_size=64,
            train=True,
            augment=AugmentConfig(extrinsic_noise=a, **base),
            seed=1,
            mano=mano,
        )
        for a in (0.0, 0.5)
    )
    for i in range(len(ds0)):
        a, b = ds0[(2, i)], ds1[(2, i)]
        d = b["delta"]
        assert np.all(np.abs(d) <= 0.5) and np.abs(d).max() > 0
        for key in ("images", "K", "uv", "uv_valid", "anchor", "global_rot", "pose_pca"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_allclose(b["landmarks"], a["landmarks"] + d, atol=1e-6)
        np.testing.assert_allclose(b["root"], a["root"] + d, atol=1e-6)
        np.testing.assert_allclose(
            b["T_world_from_crop"][:, :3, 3], a["T_world_from_crop"][:, :3, 3] + d, atol=1e-6
        )
        np.testing.assert_array_equal(b["T_world_from_crop"][:, :3, :3], a["T_world_from_crop"][:, :3, :3])


def test_eval_is_deterministic_and_matches_eval_targets(cache, mano):
    ds = CropDataset([cache], img_size=64, views=2, train=False, mano=mano)
    for i in range(len(ds)):
        s = ds[i]
        lm, anchor = ds.eval_targets(i)
        np.testing.assert_allclose(s["landmarks"], lm, atol=1e-6)
        np.testing.assert_allclose(s["anchor"], anchor, atol=1e-6)
        np.testing.assert_array_equal(ds[i]["images"], s["images"])
    # Train-mode randomness depends only on (seed, epoch, index).
    dtr = CropDataset([cache], img_size=64, views=2, train=True, seed=5, mano=mano)
    np.testing.assert_array_equal(dtr[(1, 2)]["images"], dtr[(1, 2)]["images"])
    assert not np.array_equal(dtr[(1, 2)]["images"], dtr[(2, 2)]["images"])


def test_view_dropout_keeps_one(cache, mano):
    ds = CropDataset(
        [cache], img_size=32, views=2, train=True, augment=AugmentConfig(view_dropout=1.0), mano=mano
    )
    counts = {int(ds[(e, 0)]["view_mask"].sum()) for e in range(5)}
    assert counts == {1}


def test_crop_homography_identity_and_composition():
    K = np.array([50.0, 50.0, 47.5, 47.5])
    np.testing.assert_allclose(crop_homography(K, K, np.eye(3)), np.eye(3), atol=1e-12)
    K2 = np.array([30.0, 30.0, 31.5, 31.5])
    H = crop_homography(K, K2, np.eye(3))
    p = H @ np.array([47.5 + 10, 47.5, 1.0])
    np.testing.assert_allclose(p[:2] / p[2], [31.5 + 6, 31.5])


def test_split_sequences_deterministic():
    names = [f"s{i}" for i in range(10)]
    tr, va = split_sequences(names[::-1], 0.2, seed=0)
    assert split_sequences(names, 0.2, seed=0) == (tr, va)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == names
    assert split_sequences(["a"], 0.5, 0) == (["a"], [])


def test_epoch_sampler_resume():
    s = EpochSampler(10, batch_size=3, iters_per_epoch=4, seed=0)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start_iter=2)
    assert list(s) == full[6:] and len(s) == 6
    shards = [EpochSampler(10, 3, 4, 0, rank=r, world_size=2).epoch_indices(0) for r in range(2)]
    assert not set(shards[0][0]) & set(shards[1][0])


def test_missing_column_and_missing_file(tmp_path, cache):
    t = pq.read_table(cache).drop_columns(["mano_theta"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(t, bad)
    with pytest.raises(InputError, match=r"bad\.parquet.*mano_theta"):
        CropDataset([bad], img_size=32)
    with pytest.raises(InputError, match="not found"):
        CropDataset([tmp_path / "nope.parquet"], img_size=32)
    assert "mano_theta" in REQUIRED_COLUMNS
