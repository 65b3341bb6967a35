"""Tests for mvhand.model.inference and workflow/scripts/predict.py: schema, left/right handling, betas, 2D mapping."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fixtures import make_crop_cache

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.formats.predictions import PREDICTION_SCHEMA
from mvhand.geometry.mano import ManoModel
from mvhand.io_utils import InputError
from mvhand.model.checkpoint import MODEL_FORMAT
from mvhand.model.data import CropDataset, collate
from mvhand.model.inference import predict, stored_crop_keypoints
from mvhand.model.network import HandNet
from mvhand.synthetic.mano_model import write_synthetic_mano

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    write_synthetic_mano(d / "mano")
    mano = ManoModel.from_dir(d / "mano")
    gt = make_crop_cache(d / "seq_b.parquet", mano, sequence="seq_b", n_frames=2, n_views=3, seed=1)
    nogt = make_crop_cache(d / "seq_a.parquet", mano, sequence="seq_a", n_frames=1, with_gt=False, seed=2)
    torch.manual_seed(0)
    net = HandNet("test_resnet", 32, 2, n_points=4, hidden=16)
    with torch.no_grad():  # make the untrained heads produce non-trivial parameters
        for head in (net.param_head, net.pos_head):
            head[-1].bias.normal_(0, 0.3)
    torch.save(
        {"format": MODEL_FORMAT, "model_config": net.config.to_dict(), "model": net.net_state_dict()},
        d / "model.pt",
    )
    return d, mano, [str(gt), str(nogt)]


def test_schema_sorting_and_gt(env, tmp_path):
    d, mano, crops = env
    out = tmp_path / "pred.parquet"
    table = predict(d / "model.pt", crops, d / "mano", out, batch_size=3, device="cpu", progress=False)
    read = pq.read_table(out)
    assert read.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    assert read.num_rows == 6  # seq_a: 1 frame x 2 hands, seq_b: 2 frames x 2 hands
    keys = list(
        zip(*(read.column(c).to_pylist() for c in ("sequence_name", "frame_id", "hand_side")), strict=True)
    )
    assert keys == sorted(keys) and keys[0] == ("seq_a", 0, 0)
    rows = read.to_pylist()
    assert all(r["n_views"] == 2 == len(r["view_kp2d"]) == len(r["view_stream_ids"]) for r in rows)
    assert np.isnan(rows[0]["mpjpe_mm"]) and np.isnan(rows[1]["mpjpe_mm"])  # no GT in seq_a
    gt = pq.read_table(crops[0]).to_pylist()
    for r in rows[2:]:
        g = next(x for x in gt if x["frame_id"] == r["frame_id"] and x["hand_side"] == r["hand_side"])
        err = np.linalg.norm(
            np.reshape(r["landmarks"], (20, 3)) - np.reshape(g["landmarks_world"], (20, 3)), axis=-1
        )
        assert r["mpjpe_mm"] == pytest.approx(1000 * err[list(LANDMARKS_TO_EVAL)].mean(), rel=1e-4)
        # Eval chooses the two views with the most visible landmarks, reported by stream id.
        assert set(r["view_stream_ids"]) <= {"cam0", "cam1", "cam2"}
    assert table.num_rows == 6


def test_left_hand_is_mirror_of_network_output(env):
    """A left hand's output = x-mirror of the right-hand network output on the flipped input."""
    d, mano, crops = env
    rows = predict(
        d / "model.pt", crops[:1], d / "mano", None, betas="pred", device="cpu", progress=False
    ).to_pylist()
    from mvhand.model.checkpoint import load_model

    net = load_model(d / "model.pt", mano)
    ds = CropDataset(crops[:1], 32, 2, train=False, mano=mano)
    for i in range(len(ds)):
        info = ds.group_info(i)
        b = collate([ds[i]])
        with torch.no_grad():
            o = net(b["images"], b["view_mask"], b["K"], b["T_world_from_crop"], b["anchor"])
        lm = o.landmarks[0].double().numpy()
        if info["hand_side"] == 0:
            lm = lm * [-1.0, 1.0, 1.0]
        r = next(x for x in rows if (x["frame_id"], x["hand_side"]) == (info["frame_id"], info["hand_side"]))
        np.testing.assert_allclose(np.reshape(r["landmarks"], (20, 3)), lm, atol=2e-5)
        np.testing.assert_allclose(r["root"], lm[5], atol=2e-5)  # canonical 5 = MANO wrist joint


def test_betas_gt_keeps_root_and_uses_gt_shape(env):
    d, mano, crops = env
    pred = predict(
        d / "model.pt", crops[:1], d / "mano", None, betas="pred", device="cpu", progress=False
    ).to_pylist()
    gtb = predict(
        d / "model.pt", crops[:1], d / "mano", None, betas="gt", device="cpu", progress=False
    ).to_pylist()
    gt_beta = np.array(pq.read_table(crops[0]).column("mano_beta")[0].as_py())
    for a, b in zip(pred, gtb, strict=True):
        np.testing.assert_allclose(a["root"], b["root"], atol=1e-6)
        assert not np.allclose(a["wrist_xform"][3:], b["wrist_xform"][3:])
        side = b["hand_side"]
        lm = mano.landmarks_from_wrist_xform(
            torch.tensor([b["mano_theta"]]), torch.tensor([b["wrist_xform"]]), torch.tensor(gt_beta, dtype=torch.float32), side
        )  # fmt: skip
        np.testing.assert_allclose(lm[0].numpy(), np.reshape(b["landmarks"], (20, 3)), atol=1e-5)
        np.testing.assert_allclose(lm[0, 5].numpy(), b["root"], atol=1e-5)
        # the table records the betas it used, so post-processing recomputes exactly these landmarks
        np.testing.assert_allclose(b["mano_beta"], gt_beta, atol=1e-6)
        np.testing.assert_allclose(a["mano_beta"], a["mano_beta_pred"], atol=1e-6)


def test_stored_crop_keypoints_inverts_warp_and_flip(env):
    """GT keypoints of the network crop map back onto the cache's landmarks_crop (left and right)."""
    d, mano, crops = env
    ds = CropDataset(crops[:1], 32, 2, train=False, mano=mano)
    for i in range(len(ds)):
        s = ds[i]
        for slot, r in enumerate(s["view_rows"]):
            back = stored_crop_keypoints(s["uv"][slot].astype(np.float64), s["H"][slot].astype(np.float64),
                                         int(ds.crop_size[r]), bool(s["flipped"]))  # fmt: skip
            stored = pq.read_table(crops[0]).column("landmarks_crop")[int(r)].as_py()
            np.testing.assert_allclose(back, np.reshape(stored, (20, 2)), atol=2e-3)


def test_predict_cli(env, tmp_path):
    d, mano, crops = env
    spec = importlib.util.spec_from_file_location("predict_cli", ROOT / "workflow" / "scripts" / "predict.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seqs = tmp_path / "val.txt"
    seqs.write_text("seq_b\n")
    out = tmp_path / "p.parquet"
    args = ["--model", str(d / "model.pt"), "--crops", *crops, "--mano-dir", str(d / "mano"), "--out", str(out),
            "--sequences-file", str(seqs), "--device", "cpu"]  # fmt: skip
    assert mod.main(args) == 0
    assert set(pq.read_table(out).column("sequence_name").to_pylist()) == {"seq_b"}
    assert mod.main([*args[:-2], "--model", str(tmp_path / "none.pt")]) == 1


def test_streamed_output_row_groups_equal_the_in_memory_table(env, tmp_path):
    """Written row group by row group (small row groups here), the file equals the returned-table run."""
    d, mano, crops = env
    ref = predict(d / "model.pt", crops, d / "mano", None, device="cpu", progress=False)
    out = tmp_path / "rg.parquet"
    meta = predict(d / "model.pt", crops, d / "mano", out, device="cpu", progress=False, row_group_rows=2)
    assert meta.num_rows == ref.num_rows == 6 and meta.num_row_groups >= 2
    read = pq.read_table(out)
    assert read.drop_columns(["mpjpe_mm"]).equals(ref.drop_columns(["mpjpe_mm"]))
    np.testing.assert_array_equal(
        read.column("mpjpe_mm").to_numpy(), ref.column("mpjpe_mm").to_numpy()
    )  # NaN = NaN


def test_crop_file_truncated_during_predict_is_named_and_nothing_is_left(env, tmp_path, monkeypatch):
    """The second row group's file is cut after the index was built: InputError names it, no output left."""
    from mvhand.model import stream as crop_stream

    d, mano, crops = env
    copies = []
    for c in crops:
        dst = tmp_path / "in" / Path(c).name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(Path(c).read_bytes())
        copies.append(str(dst))
    original = crop_stream.CropIndex.read_unit
    calls = []

    def read_unit(self, u, columns=None):
        calls.append(u)
        if len(calls) == 2:  # the first unit's predictions are already in the temporary output
            victim = Path(self.files[self.units[u].file])
            victim.write_bytes(victim.read_bytes()[:200])
        return original(self, u, columns)

    monkeypatch.setattr(crop_stream.CropIndex, "read_unit", read_unit)
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match="truncated") as exc:
        predict(d / "model.pt", copies, d / "mano", out_dir / "p.parquet", device="cpu", progress=False,
                row_group_rows=1)  # fmt: skip
    assert str(tmp_path / "in" / "seq_b.parquet") in str(exc.value)
    assert list(out_dir.iterdir()) == []
