"""Tests for mvhand.model.training: exact resume, NaN handling, corrupt / foreign checkpoints, outputs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from fixtures import ShellPayload, training_crop_caches

from mvhand.geometry.mano import ManoModel
from mvhand.io_utils import InputError
from mvhand.model import training
from mvhand.model.checkpoint import load_model
from mvhand.model.training import TrainConfig, TrainingDivergedError, fit


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return training_crop_caches(tmp_path_factory.mktemp("train_setup"))


def _cfg(setup, out, **kw) -> TrainConfig:
    d, crops = setup
    base = dict(crops=crops, mano_dir=str(d / "mano"), out_dir=str(out), backbone="test_resnet", img_size=32,
                n_points=4, hidden=16, batch_size=2, epochs=2, iters_per_epoch=2, lr=1e-3, warmup_iters=2,
                val_fraction=0.34, num_workers=0, device="cpu", checkpoint_every=2)  # fmt: skip
    return TrainConfig(**(base | kw))


def _losses(out) -> list[float]:
    with open(out / "steps.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def _train_means(out) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if k.startswith("train_")} for r in csv.DictReader(fh)]


def test_fit_outputs_and_exact_resume(setup, tmp_path):
    full = fit(_cfg(setup, tmp_path / "full"))
    assert full.completed and len(full.steps) == 4 and len(full.epochs) == 2
    out = tmp_path / "full"
    for name in ("model.pt", "metrics.csv", "steps.csv", "loss.png", "config.json", "val_sequences.txt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    val = (out / "val_sequences.txt").read_text().split()
    assert len(val) == 1 and val[0].startswith("seq_")
    assert json.loads((out / "config.json").read_text())["backbone"] == "test_resnet"
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(
        math.isfinite(float(r["val_mpjpe_mm"])) and float(r["val_baseline_mpjpe_mm"]) > 0 for r in rows
    )
    # Interrupted at step 3 (mid-epoch 2), then resumed: identical loss sequence and weights.
    part = fit(_cfg(setup, tmp_path / "resumed"), max_steps=3)
    assert not part.completed and len(part.steps) == 3
    assert not (tmp_path / "resumed" / "model.pt").exists()
    res = fit(_cfg(setup, tmp_path / "resumed"), resume="auto")
    assert res.completed
    assert _losses(tmp_path / "resumed") == _losses(out)
    # the interrupted epoch's train_* means cover all its steps, not only those after the resume
    assert _train_means(tmp_path / "resumed") == _train_means(out)
    a = torch.load(out / "model.pt", weights_only=True)["model"]  # plain tensors and data only
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    net = load_model(out / "model.pt", ManoModel.from_dir(setup[0] / "mano"))
    assert not net.training and net.config.backbone == "test_resnet"


def test_exact_resume_with_loader_workers(setup, tmp_path):
    """Two loader workers read disjoint shares; interrupted mid-epoch at an odd batch, the resumed run
    reproduces the uninterrupted loss sequence (the worker that serves batch 1 serves it again)."""
    kw = dict(num_workers=2, batch_size=1, iters_per_epoch=3, epochs=2)
    full = fit(_cfg(setup, tmp_path / "full", **kw))
    assert full.completed and len(full.steps) == 6
    fit(_cfg(setup, tmp_path / "resumed", **kw), max_steps=4)
    res = fit(_cfg(setup, tmp_path / "resumed", **kw), resume="auto")
    assert res.completed and _losses(tmp_path / "resumed") == _losses(tmp_path / "full")
    # a different worker count changes the sample order: auto-resume starts over instead of mixing orders
    fit(_cfg(setup, tmp_path / "other", **kw), max_steps=4)
    again = fit(_cfg(setup, tmp_path / "other", **(kw | {"num_workers": 0})), max_steps=1)
    assert len(again.steps) == 1


def test_nan_loss_stops_and_keeps_last_checkpoint(setup, tmp_path, monkeypatch):
    real = training.compute_losses
    calls = {"n": 0}

    def poisoned(out, batch, weights=None):
        calls["n"] += 1
        terms = real(out, batch, weights)
        if calls["n"] >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(training, "compute_losses", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match="non-finite training loss at step 3.*ckpt_00000002"):
        fit(_cfg(setup, out, checkpoint_every=1, epochs=1, iters_per_epoch=3))
    ckpts = sorted((out / "checkpoints").glob("ckpt_*.pt"))
    assert ckpts[-1].name == "ckpt_00000002.pt"
    assert torch.isfinite(torch.load(ckpts[-1], weights_only=True)["model"]["pos_head.4.weight"]).all()
    assert not (out / "model.pt").exists()


def test_corrupt_and_foreign_checkpoints(setup, tmp_path):
    out = tmp_path / "c"
    fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), max_steps=1)
    ck = sorted((out / "checkpoints").glob("ckpt_*.pt"))[-1]
    # Another architecture: an explicit resume is refused; resume=auto starts over.
    with pytest.raises(InputError, match="another architecture or configuration"):
        fit(_cfg(setup, out, epochs=1, iters_per_epoch=2, backbone="test_vit"), resume=str(ck))
    other_cfg = _cfg(setup, tmp_path / "c2", epochs=1, iters_per_epoch=2, lr=5e-4)
    fit(other_cfg, max_steps=1)
    fresh = fit(_cfg(setup, tmp_path / "c2", epochs=1, iters_per_epoch=2), max_steps=1)
    assert [r["step"] for r in fresh.steps] == [1]
    # Truncated file: an explicit resume is refused; resume=auto skips it (moved aside) and starts over.
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(InputError, match=f"{ck.name}.*corrupt or truncated"):
        fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), resume=str(ck))
    again = fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), max_steps=1)
    assert [r["step"] for r in again.steps] == [1]
    assert (out / "checkpoints" / f"{ck.name}.unreadable").is_file()
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt", None)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(InputError, match="not an mvhand"):
        load_model(other, None)


def test_train_cli_parses_loss_weights():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "train.py"
    spec = importlib.util.spec_from_file_location("train_cli", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_loss_weights(["uv=3", "heatmap=0.1"]) == {"uv": 3.0, "heatmap": 0.1}
    assert mod.parse_loss_weights([]) == {}
    for bad, msg in [
        (["uvv=1"], "one of"),
        (["uv"], "NAME=VALUE"),
        (["uv=abc"], "not a number"),
        (["uv=-1"], ">= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            mod.parse_loss_weights(bad)
    # the stage's exit status and message for a bad --loss-weights: test_bad_inputs.py


def test_resume_auto_falls_back_to_the_newest_readable_checkpoint(setup, tmp_path, caplog):
    out = tmp_path / "fb"
    cfg = _cfg(setup, out, epochs=1, iters_per_epoch=4, checkpoint_every=1)
    fit(cfg, max_steps=3)
    ckpts = sorted((out / "checkpoints").glob("ckpt_*.pt"))
    assert [p.name for p in ckpts] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:-50])  # the crash hit the newest one mid-write
    res = fit(cfg, resume="auto")
    assert res.completed and "skipping checkpoint" in caplog.text and "ckpt_00000003.pt" in caplog.text
    assert [r["step"] for r in res.steps] == [1, 2, 3, 4]  # steps 1-2 from the checkpoint, 3-4 trained again
    ref = fit(_cfg(setup, tmp_path / "ref", epochs=1, iters_per_epoch=4, checkpoint_every=1))
    assert [r["loss"] for r in res.steps] == [r["loss"] for r in ref.steps]


def test_checkpoint_with_a_pickle_payload_is_refused_and_never_runs(setup, tmp_path, caplog):
    out = tmp_path / "p"
    fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), max_steps=1)
    good = sorted((out / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(good, weights_only=True)
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({**state, "extra": ShellPayload(marker)}, evil)
    with pytest.raises(InputError) as ei:
        load_model(evil, None)
    msg = str(ei.value)
    assert str(evil) in msg and "refused to load" in msg and "system" in msg and "trust" in msg
    assert not marker.exists()
    # in the checkpoint folder it is skipped like a corrupt one, and never run
    bad = out / "checkpoints" / "ckpt_00000009.pt"
    evil.replace(bad)
    res = fit(_cfg(setup, out, epochs=1, iters_per_epoch=2))
    assert res.completed and not marker.exists() and "refused to load" in caplog.text


def test_rerun_of_a_finished_training_writes_every_output(setup, tmp_path):
    """`snakemake --forcerun train` deletes the outputs and re-runs: resumed from the final checkpoint, no
    step is trained again, and every declared output (metrics.csv included) is written again, unchanged."""
    out = tmp_path / "r"
    first = fit(_cfg(setup, out, epochs=1))
    names = ("model.pt", "metrics.csv", "steps.csv", "loss.png", "val_sequences.txt")
    before = {n: (out / n).read_bytes() for n in ("metrics.csv", "steps.csv", "val_sequences.txt")}
    weights = torch.load(out / "model.pt", weights_only=True)["model"]
    for name in names:
        (out / name).unlink()
    again = fit(_cfg(setup, out, epochs=1))
    assert again.completed and again.steps == first.steps  # nothing trained again
    for name in names:
        assert (out / name).is_file(), name
    assert {n: (out / n).read_bytes() for n in before} == before
    now = torch.load(out / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(now[k], weights[k]) for k in weights)


def test_bf16_autocast_on_the_cpu(setup, tmp_path):
    """``amp: bf16`` runs the forward passes under CPU autocast: the network's linear layers really
    compute in bfloat16, the loss stays finite and the weights move; ``auto`` on the CPU stays float32."""
    seen: list[torch.dtype] = []

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear):
            seen.append(output.dtype)

    def run(name: str, amp: str):
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            res = fit(_cfg(setup, tmp_path / name, amp=amp, epochs=1, iters_per_epoch=2, checkpoint_every=1))
        finally:
            handle.remove()
        return res, set(seen)

    res, dtypes = run("bf16", "bf16")
    assert dtypes == {torch.bfloat16}
    assert res.completed and all(math.isfinite(r["loss"]) for r in res.steps)
    assert all(math.isfinite(float(r["val_mpjpe_mm"])) for r in res.epochs)  # evaluation under autocast too
    out = tmp_path / "bf16"
    step1 = torch.load(out / "checkpoints" / "ckpt_00000001.pt", weights_only=True)["model"]
    final = torch.load(out / "model.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert final["pos_head.4.weight"].dtype == torch.float32  # master weights stay float32
    assert any(not torch.equal(step1[k], final[k]) for k in final)  # the second step moved the weights
    _, dtypes = run("fp32", "auto")
    assert dtypes == {torch.float32}
    with pytest.raises(InputError, match="amp 'fp16' is not one of auto, bf16, off"):
        fit(_cfg(setup, tmp_path / "bad", amp="fp16"))


def test_checkpoint_without_a_newer_setting_resumes(setup, tmp_path):
    """A checkpoint written before a setting existed (here ``amp``) resumes as if it had the default."""
    out = tmp_path / "old"
    fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), max_steps=1)
    ck = sorted((out / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(ck, weights_only=True)
    del state["train_config"]["amp"]
    torch.save(state, ck)
    res = fit(_cfg(setup, out, epochs=1, iters_per_epoch=2), resume=str(ck))  # explicit: refused on a diff
    assert res.completed and [r["step"] for r in res.steps] == [1, 2]
    with pytest.raises(
        InputError, match="another architecture or configuration.*'amp': \\('auto', 'bf16'\\)"
    ):
        fit(_cfg(setup, out, epochs=1, iters_per_epoch=2, amp="bf16"), resume=str(ck))
