"""DDP exercised on the CPU: ``torchrun --standalone --nproc_per_node 2`` (gloo) trains like one process
with the same global batch and resumes exactly under DDP (bf16 autocast on the CPU: test_training.py).

Equivalence needs a model and batch without per-rank statistics: no BatchNorm (``test_vit`` backbone and
the ``regress`` UV head; BatchNorm normalises each rank's slice, as plain DDP does on GPUs too) and loss
masks of equal counts on every rank (no augmentation, so no view dropout; every toy hand fully
annotated). Each rank streams its own share of the crop cache (:class:`mvhand.model.stream.TrainStream`),
so the one-process reference reads, at every step, rank 0's and rank 1's batches concatenated
(:class:`_BothRanks`); DDP's mean of the ranks' gradients then equals the gradient of that global batch up
to float summation order.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import make_crop_cache

from mvhand.geometry.mano import ManoModel
from mvhand.model import stream as crop_stream
from mvhand.model import training
from mvhand.model.training import TrainConfig, fit
from mvhand.synthetic.mano_model import write_synthetic_mano

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
PER_RANK_BATCH = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp_setup")
    write_synthetic_mano(d / "mano")
    mano = ManoModel.from_dir(d / "mano")
    crops = [
        str(make_crop_cache(d / f"s{i}.parquet", mano, sequence=f"seq_{i}", n_frames=2, seed=i, dot=False))
        for i in range(3)
    ]
    return d, crops


class _BothRanks(torch.utils.data.IterableDataset):
    """In one process, the global batch of a 2-rank run: each step yields rank 0's and rank 1's batches of
    :class:`~mvhand.model.stream.TrainStream` (half the batch size each) concatenated. Stands in for
    ``TrainStream`` inside :func:`mvhand.model.training.fit` (same signature)."""

    def __init__(self, index, settings, batch_size, iters_per_epoch, num_workers=0, rank=0, world_size=1,
                 shuffle_units=8):  # fmt: skip
        assert (num_workers, rank, world_size) == (0, 0, 1) and batch_size % 2 == 0
        self.ranks = [
            crop_stream.TrainStream(index, settings, batch_size // 2, iters_per_epoch, 0, r, 2, shuffle_units)
            for r in (0, 1)
        ]

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        for s in self.ranks:
            s.set_epoch(epoch, start_iter)

    def __iter__(self):
        for a, b in zip(*self.ranks, strict=True):
            yield {k: torch.cat([a[k], b[k]]) for k in a}


def _cfg(setup, out: Path, **kw) -> dict:
    d, crops = setup
    base = dict(crops=crops, mano_dir=str(d / "mano"), out_dir=str(out), backbone="test_vit", uv_head="regress",
                img_size=32, n_points=4, hidden=16, batch_size=PER_RANK_BATCH, epochs=2, iters_per_epoch=2,
                lr=1e-3, warmup_iters=2, augment=False, val_fraction=0.34, num_workers=0, device="cpu",
                checkpoint_every=1, threads=1)  # fmt: skip
    return base | kw


def _cli_args(cfg: dict) -> list[str]:
    """The train CLI's flags for ``cfg`` (the fields :func:`_cfg` sets)."""
    args = ["--crops", *cfg["crops"], "--no-augment"]
    for key in ("mano_dir", "out_dir", "backbone", "uv_head", "img_size", "n_points", "hidden", "batch_size",
                "epochs", "iters_per_epoch", "lr", "warmup_iters", "val_fraction", "num_workers", "device",
                "checkpoint_every", "threads"):  # fmt: skip
        args += ["--" + key.replace("_", "-"), str(cfg[key])]
    return args


def _torchrun(args: list[str], tmp: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*TORCHRUN, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)["model"]


def _losses(out: Path) -> list[float]:
    with open(out / "steps.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_ddp_two_ranks_equal_one_process_and_resume_exactly(setup, tmp_path):
    # one process, the global batch (2 ranks x 2 hands) in one step
    single = tmp_path / "single"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "TrainStream", _BothRanks)
        fit(TrainConfig(**_cfg(setup, single, batch_size=2 * PER_RANK_BATCH)))
    # the train CLI under torchrun: 2 ranks (gloo), 2 hands each
    ddp = tmp_path / "ddp"
    _torchrun([str(REPO / "workflow" / "scripts" / "train.py"), *_cli_args(_cfg(setup, ddp))], tmp_path)
    for name in ("model.pt", "metrics.csv", "steps.csv", "val_sequences.txt"):
        assert (ddp / name).is_file(), name
    w1, w2 = _weights(single), _weights(ddp)
    # 4 AdamW steps at lr 1e-3 move weights by up to ~4e-3; the two runs agree to float summation order
    # (AdamW normalises gradients, so summation noise shows as up to ~3e-6 in the weights)
    last_move = _max_diff(w1, torch.load(sorted((single / "checkpoints").glob("ckpt_*.pt"))[0],
                                         weights_only=True)["model"])  # fmt: skip
    assert last_move > 1e-4  # training moved the weights (the comparison below is not vacuous)
    # The attention key biases get a gradient that is 0 in exact arithmetic (softmax ignores a constant
    # added to every key): AdamW normalises its float noise into visible steps, so they get a looser bound.
    key_bias = {k for k in w1 if k.endswith("attn.qkv.bias")}
    assert key_bias
    rest = set(w1) - key_bias
    assert _max_diff({k: w1[k] for k in rest}, {k: w2[k] for k in rest}) < 1e-5  # wrong samples: ~5e-3
    assert _max_diff({k: w1[k] for k in key_bias}, {k: w2[k] for k in key_bias}) < 1e-4
    # the logged loss is the global batch's (the mean of the ranks' terms), not rank 0's slice
    assert _losses(ddp) == pytest.approx(_losses(single), rel=1e-5)

    # interrupted under DDP after 3 of 4 steps (mid-epoch 2), then resumed by the train CLI under DDP
    resumed = tmp_path / "resumed"
    cfg_file = tmp_path / "resumed.json"
    cfg_file.write_text(json.dumps(_cfg(setup, resumed)))
    _torchrun([str(REPO / "tests" / "_ddp_fit.py"), str(cfg_file), "--max-steps", "3"], tmp_path)
    assert not (resumed / "model.pt").exists()
    assert (resumed / "checkpoints" / "ckpt_00000003.pt").is_file()
    _torchrun([str(REPO / "workflow" / "scripts" / "train.py"), *_cli_args(_cfg(setup, resumed))], tmp_path)
    assert _max_diff(_weights(resumed), w2) == 0.0
    assert _losses(resumed) == _losses(ddp)
    with open(resumed / "metrics.csv") as fh1, open(ddp / "metrics.csv") as fh2:
        drop = {"epoch_time_s"}
        r1 = [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh1)]
        r2 = [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh2)]
    assert r1 == r2 and len(r1) == 2
