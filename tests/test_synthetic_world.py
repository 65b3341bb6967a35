"""Tests of the synthetic dataset generator (mvhand.synthetic.world) on the "tiny" size."""

from __future__ import annotations

import errno
import json
import re
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mvhand.formats.sequence import SequenceWriter, iter_frames, list_sequences, read_hand_shapes
from mvhand.geometry.cameras import count_visible, crop_camera, warp_image
from mvhand.geometry.mano import ManoModel
from mvhand.geometry.umetrack import forward_kinematics
from mvhand.io_utils import InputError
from mvhand.synthetic import world as sw
from mvhand.synthetic.render import render_view


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    mano_dir = root / "mano"
    for ds in ("umetrack", "hot3d"):
        sw.generate_dataset(ds, root / "data", mano_dir, seed=3, size="tiny", progress=False)
    return root / "data", mano_dir


def _members(tar: Path) -> list[str]:
    with tarfile.open(tar) as tf:
        return tf.getnames()


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_layout_names_manifest_and_disjoint_subjects(world, dataset):
    data, mano_dir = world
    root = data / dataset
    man = json.loads((root / "manifest.json").read_text())
    cfg = sw.SIZES[dataset]["tiny"]
    assert man["seed"] == 3 and man["size"] == "tiny" and man["generator_version"] == sw.GENERATOR_VERSION
    assert man["frames_per_sequence"] == {s: cfg["frames"] for s in sw.SPLITS}
    pat = r"subject_\d{3}_(separate_hand|hand_hand)_\d{6}" if dataset == "umetrack" else r"clip-\d{6}"
    for split in sw.SPLITS:
        names = sorted(p.stem for p in list_sequences(root / split))
        assert names == sorted(man["splits"][split]) and len(names) == cfg[split]
        assert all(re.fullmatch(pat, n) for n in names)
    for split in ("pose_test", "shape_test"):
        assert sorted(p.stem for p in list_sequences(root / "test_annotations" / split)) == sorted(
            man["splits"][split]
        )
    train_subj = {man["subjects"][n] for n in man["splits"]["train"]}
    test_subj = {man["subjects"][n] for s in ("pose_test", "shape_test") for n in man["splits"][s]}
    assert train_subj and test_subj and not (train_subj & test_subj)
    assert (mano_dir / "MANO_LEFT.pkl").is_file() and (mano_dir / "MANO_RIGHT.pkl").is_file()
    assert not list(data.glob(".*partial*"))  # no staging left behind


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_read_back_every_field(world, dataset):
    data, _ = world
    streams = {"umetrack": {"1201-0", "1201-1", "1201-2", "1201-3"}}
    n_hands = n_crops = 0
    for tar in list_sequences(data / dataset / "train"):
        shapes = read_hand_shapes(tar)
        assert shapes is not None and shapes.mano_betas.shape == (10,)
        frames = list(iter_frames(tar))
        assert [f.frame_id for f in frames] == list(range(sw.SIZES[dataset]["tiny"]["frames"]))
        for f in frames:
            sids = set(f.cameras)
            if dataset == "umetrack":
                assert sids == streams["umetrack"]
            else:
                assert sids in ({"214-1", "1201-1", "1201-2"}, {"1201-1", "1201-2"})
                assert f.info["device"] in ("Aria", "Quest3") and f.objects == {}
                assert set(f.info["image_timestamps_ns"]) == sids
            for sid, cam in f.cameras.items():
                img = f.image(sid)
                assert img.shape[:2] == (cam.height, cam.width)
                assert img.ndim == (3 if cam.is_rgb else 2)
                assert 10 < img.mean() < 200
            assert set(f.hand_crops) <= set(f.hands)  # every cropped hand is annotated
            for hp in f.hands.values():
                n_hands += 1
                assert hp.joint_angles.shape == (22,) and np.all(hp.joint_angles[20:] == 0)
                assert hp.mano_thetas.shape == (15,) and hp.mano_wrist_xform.shape == (6,)
                if dataset == "hot3d":
                    assert set(hp.visibilities) == sids
                    assert set(hp.boxes_amodal) <= sids
                    for box in hp.boxes_amodal.values():
                        assert box[0] < box[2] and box[1] < box[3]
            for crops in f.hand_crops.values():
                for sid, cp in crops.items():
                    n_crops += 1
                    assert sid in sids and 0.05 < cp.fov < 2.5
    assert n_hands > 0 and n_crops > 0


def _mano_meshes(frame, shapes, mano):
    meshes, sides = [], []
    for side, hp in frame.hands.items():
        layer = mano.layer(side)
        with torch.no_grad():
            v, _ = layer.forward_full(
                torch.from_numpy(hp.mano_thetas[None]),
                torch.from_numpy(hp.mano_wrist_xform[None, :3]),
                torch.from_numpy(hp.mano_wrist_xform[None, 3:]),
                torch.from_numpy(shapes.mano_betas[None]),
            )
        meshes.append((v[0].numpy(), layer.faces.numpy()))
        sides.append(side)
    return meshes, sides


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_gt_keypoints_fall_on_rendered_hand_pixels_and_crops_contain_the_hand(world, dataset):
    data, mano_dir = world
    mano = ManoModel.from_dir(mano_dir)
    checked_pts = on_hand = crops_checked = 0
    for tar in list_sequences(data / dataset / "train"):
        shapes = read_hand_shapes(tar)
        for f in iter_frames(tar):
            if not f.hands:
                continue
            meshes, sides = _mano_meshes(f, shapes, mano)
            for sid, cam in f.cameras.items():
                res = render_view(cam, meshes, None, np.random.default_rng(0), return_buffers=True)
                hand_mask = cv2.dilate((res.mesh_id >= 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
                img = f.image(sid).astype(float)
                img = img.mean(-1) if img.ndim == 3 else img
                for k, side in enumerate(sides):
                    hp = f.hands[side]
                    lm = forward_kinematics(
                        shapes.umetrack, hp.joint_angles, hp.T_world_from_wrist, side == "right"
                    )
                    v = cam.world_to_eye(lm)
                    w = cam.eye_to_window(v)
                    inside = (
                        (v[:, 2] > 0)
                        & (w[:, 0] >= 0)
                        & (w[:, 0] <= cam.width - 1)
                        & (w[:, 1] >= 0)
                        & (w[:, 1] <= cam.height - 1)
                    )
                    px = np.rint(w[inside]).astype(int)
                    checked_pts += len(px)
                    on_hand += int(hand_mask[px[:, 1], px[:, 0]].sum())
                    crop = f.hand_crops.get(side, {}).get(sid)
                    if crop is None:
                        continue
                    # the crop of hand_crops.json contains all 21 landmarks and the hand's pixels
                    ccam = crop_camera(crop.T_world_from_crop_camera, crop.fov, 128)
                    wc = ccam.world_to_window(lm)
                    assert np.all((wc >= -0.5) & (wc <= 127.5)), (tar.name, f.frame_id, side, sid)
                    mask_crop = warp_image(((res.mesh_id == k) * 255).astype(np.uint8), cam, ccam)
                    assert (mask_crop > 127).mean() > 0.05
                    # and the image really shows something hand-like there: hand pixels differ from
                    # the background pixels of the same crop
                    crop_img = warp_image(img.astype(np.uint8), cam, ccam).astype(float)
                    hand_px = mask_crop > 127
                    assert abs(crop_img[hand_px].mean() - crop_img[~hand_px].mean()) > 5
                    crops_checked += 1
    assert checked_pts > 100 and crops_checked > 0
    assert on_hand / checked_pts > 0.97


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_crop_visibility_rule(world, dataset):
    data, _ = world
    for tar in list_sequences(data / dataset / "train"):
        shapes = read_hand_shapes(tar)
        for f in iter_frames(tar, images=False):
            for side, hp in f.hands.items():
                lm = forward_kinematics(
                    shapes.umetrack, hp.joint_angles, hp.T_world_from_wrist, side == "right"
                )
                crops = f.hand_crops.get(side, {})
                for sid, cam in f.cameras.items():
                    n = count_visible(lm, cam)
                    if dataset == "umetrack":
                        assert (sid in crops) == (n >= 19), (tar.name, f.frame_id, side, sid, n)
                    else:
                        assert hp.visibilities[sid] == pytest.approx(n / 21)
                        assert (sid in crops) == (n / 21 > 0.1), (tar.name, f.frame_id, side, sid, n)


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_test_splits_are_stripped_like_the_real_ones(world, dataset):
    data, _ = world
    root = data / dataset
    for split in ("pose_test", "shape_test"):
        for tar in list_sequences(root / split):
            full = root / "test_annotations" / split / tar.name
            names, full_names = _members(tar), _members(full)
            assert any(n.endswith(".hands.json") for n in full_names)
            assert "__hand_shapes.json__" in full_names
            assert not any(n.endswith(".hands.json") for n in names)
            assert ("__hand_shapes.json__" in names) == (split == "pose_test")
            if dataset == "hot3d":
                assert any(n.endswith(".objects.json") for n in full_names)
                assert not any(n.endswith(".objects.json") for n in names)
            kept = [n for n in full_names if n in set(names)]
            assert kept == names  # same order, nothing else removed
            with tarfile.open(tar) as a, tarfile.open(full) as b:
                for n in names:
                    assert a.extractfile(n).read() == b.extractfile(n).read()
            frames = list(iter_frames(tar, images=False))
            assert frames and all(not fr.hands for fr in frames)
            assert any(fr.hand_crops for fr in frames)


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_gt_archive_matches_test_annotations(world, dataset):
    data, _ = world
    root = data / dataset
    with tarfile.open(root / "gt.tar.gz") as tf:
        names = set(tf.getnames())
        lms = json.load(tf.extractfile(f"gt_landmarks_{dataset}.json"))
        shapes = json.load(tf.extractfile(f"gt_shape_{dataset}.json"))
    assert {"mano/MANO_LEFT.pkl", "mano/MANO_RIGHT.pkl", f"gt_pose_{dataset}.json"} <= names
    every = 10 if dataset == "hot3d" else 1
    expected = []
    for tar in list_sequences(root / "test_annotations" / "pose_test"):
        for i, f in enumerate(iter_frames(tar, images=False)):
            if i % every == 0:
                expected += [(tar.stem, f.frame_id) for side in ("left", "right") if f.hand_crops.get(side)]
    assert [(e["sequence_name"], e["frame_id"]) for e in lms] == expected
    # one archive serves both phases: the pose track needs the betas of every scored pose-test sequence
    split_of = {p.stem: split for split in ("pose_test", "shape_test")
                for p in list_sequences(root / "test_annotations" / split)}  # fmt: skip
    assert {e["sequence_name"] for e in lms} <= {e["sequence_name"] for e in shapes}
    assert {e["sequence_name"] for e in shapes} <= set(split_of)
    assert any(split_of[e["sequence_name"]] == "shape_test" for e in shapes)
    for e in shapes:
        hs = read_hand_shapes(
            root / "test_annotations" / split_of[e["sequence_name"]] / f"{e['sequence_name']}.tar"
        )
        np.testing.assert_allclose(e["mano_beta"], hs.mano_betas, rtol=1e-6)


def test_same_seed_gives_identical_bytes(world, tmp_path):
    data, mano_dir = world
    ref = data / "umetrack"
    jobs = sw.plan_sequences("umetrack", 3, "tiny")
    assert jobs == sw.plan_sequences("umetrack", 3, "tiny")
    job = next(j for j in jobs if j.split == "train")
    # same seed, fresh process state (caches cleared): byte-identical tar
    sw._MANO_CACHE.clear()
    sw.generate_sequence(job, tmp_path / "again.tar", mano_dir)
    assert (tmp_path / "again.tar").read_bytes() == (ref / "train" / f"{job.name}.tar").read_bytes()
    # sequences get different per-sequence seeds (and a different master seed changes them all)
    assert len({j.seed for j in jobs}) == len(jobs)
    assert all(a.seed != b.seed for a, b in zip(jobs, sw.plan_sequences("umetrack", 4, "tiny")))
    tars = list_sequences(ref / "train")
    assert tars[0].read_bytes() != tars[1].read_bytes()


def test_plan_of_the_default_sizes():
    ume = sw.plan_sequences("umetrack", 0, "default")
    hot = sw.plan_sequences("hot3d", 0, "default")
    assert [sum(j.split == s for j in ume) for s in sw.SPLITS] == [10, 3, 2]
    assert {j.n_frames for j in ume} == {60}
    assert {(j.split, j.n_frames) for j in hot} == {("train", 60), ("pose_test", 150), ("shape_test", 60)}
    assert [j.kind for j in hot if j.split == "train"] == ["aria", "quest3"] * 4
    assert len({j.name for j in ume + hot}) == len(ume) + len(hot)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        sw.generate_dataset("epic", tmp_path, tmp_path / "mano", size="tiny")
    with pytest.raises(InputError, match="unknown synthetic dataset size"):
        sw.generate_dataset("umetrack", tmp_path, tmp_path / "mano", size="huge")
    (tmp_path / "umetrack").mkdir()
    (tmp_path / "umetrack" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="--force") as ei:
        sw.generate_dataset("umetrack", tmp_path, tmp_path / "mano", size="tiny", progress=False)
    assert str(tmp_path / "umetrack") in str(ei.value)
    assert (tmp_path / "umetrack" / "keep.txt").read_text() == "x"
    # a folder with other (e.g. licensed) MANO files is never overwritten silently
    (tmp_path / "mano").mkdir()
    (tmp_path / "mano" / "MANO_RIGHT.pkl").write_bytes(b"licensed")
    with pytest.raises(InputError, match="not the synthetic MANO model") as ei:
        sw.generate_dataset("hot3d", tmp_path, tmp_path / "mano", size="tiny", progress=False)
    assert "MANO_RIGHT.pkl" in str(ei.value) and "--mano-dir" in str(ei.value)
    assert (tmp_path / "mano" / "MANO_RIGHT.pkl").read_bytes() == b"licensed"
    assert not (tmp_path / "hot3d").exists()


def test_unmarked_synthetic_mano_of_an_older_version_is_replaceable(tmp_path):
    """Files written before the synthetic marker existed are recognised as ours by their arrays (no --force)."""
    import pickle

    from mvhand.mano_pickle import SYNTHETIC_MARKER_KEY, is_synthetic_mano
    from mvhand.synthetic.mano_model import build_synthetic_mano, write_synthetic_mano

    current = write_synthetic_mano(tmp_path / "new")["right"].read_bytes()
    arrays = build_synthetic_mano()["right"]
    del arrays[SYNTHETIC_MARKER_KEY]
    old = tmp_path / "MANO_RIGHT.pkl"
    old.write_bytes(pickle.dumps(arrays, protocol=2))
    assert not is_synthetic_mano(old) and sw._synthetic_file(old, current)
    arrays["v_template"] = arrays["v_template"] + 0.001  # someone else's model
    old.write_bytes(pickle.dumps(arrays, protocol=2))
    assert not sw._synthetic_file(old, current)


def test_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    orig = SequenceWriter.write_frame

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # second sequence, mid-write
            raise OSError(errno.ENOSPC, "No space left on device")
        return orig(self, *a, **k)

    monkeypatch.setattr(SequenceWriter, "write_frame", failing)
    # an existing dataset replaced with force stays intact when the new one fails
    (tmp_path / "umetrack").mkdir()
    (tmp_path / "umetrack" / "old.txt").write_text("old")
    with pytest.raises(InputError, match="no space left") as ei:
        sw.generate_dataset("umetrack", tmp_path, tmp_path / "mano", size="tiny", force=True, progress=False)
    assert "free disk space" in str(ei.value) and calls["n"] == 9
    assert (tmp_path / "umetrack" / "old.txt").read_text() == "old"
    leftovers = [
        p
        for p in tmp_path.rglob("*")
        if p.suffix == ".tar" or "partial" in p.name or p.name == "manifest.json"
    ]
    assert leftovers == []
    assert sorted(p.name for p in (tmp_path / "umetrack").iterdir()) == ["old.txt"]


def _contact_sheet_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "contact_sheet.py"
    spec = importlib.util.spec_from_file_location("contact_sheet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_contact_sheet_script(world, tmp_path):
    data, _ = world
    cs = _contact_sheet_module()
    out = tmp_path / "sheet.png"
    assert cs.main(["--data-root", str(data), "--dataset", "hot3d", "--out", str(out), "--frames", "2"]) == 0
    img = cv2.imread(str(out))
    assert img.shape[0] == 2 * (240 + 2) and img.shape[1] >= 2 * 320
    # skeleton colours are drawn (orange or blue pixels exist)
    bgr = img.reshape(-1, 3).astype(int)
    assert ((bgr[:, 2] > 200) & (bgr[:, 0] < 80)).any() or ((bgr[:, 0] > 200) & (bgr[:, 2] < 80)).any()
    # bad input: missing split folder, or a test split without annotations
    assert cs.main(["--data-root", str(tmp_path), "--dataset", "umetrack", "--out", str(out)]) == 2
    assert (
        cs.main(
            ["--data-root", str(data), "--dataset", "umetrack", "--split", "shape_test", "--out", str(out)]
        )
        == 2
    )
