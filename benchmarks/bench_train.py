"""Training throughput: data loader crops/s (with augmentations, N workers) vs model train-step crops/s.

The loader must never be the bottleneck: its crops/s with the configured workers has to exceed the
model's consumption. On a GPU machine the paper model (hiera_base_224, 224 px) is also timed
(images/s and peak memory).

    python benchmarks/bench_train.py --crops results/crops/*/train/*.parquet --mano-dir resources/mano --img-size 96

Without --crops a small synthetic crop cache is written to a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import update_section  # noqa: E402
from mvhand.geometry.mano import ManoModel  # noqa: E402
from mvhand.model.data import AugmentConfig, CropDataset, collate  # noqa: E402
from mvhand.model.losses import compute_losses  # noqa: E402
from mvhand.model.network import HandNet  # noqa: E402
from mvhand.model.stream import CropIndex, SampleSettings, TrainStream  # noqa: E402
from mvhand.model.training import _loader  # noqa: E402


def loader_rate(ds: CropDataset, mano: ManoModel, batch: int, workers: int, n_batches: int) -> float:
    """Crops/s (valid views) delivered by the training loader (the streaming one, first batch excluded)."""
    st = SampleSettings(ds.img_size, ds.views, ds.in_chans, True, ds.augment, 0, mano)
    stream = TrainStream(CropIndex(ds.files, require_gt=True), st, batch, n_batches + 1, workers)
    loader = _loader(stream, workers)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    crops = 0
    for b in it:
        crops += int(b["view_mask"].sum())
    dt = time.perf_counter() - t0
    del it, loader
    return crops / dt


def step_rate(
    net: HandNet, ds: CropDataset, batch: int, steps: int, device: torch.device
) -> tuple[float, float]:
    """(crops/s, ms/step) of forward + loss + backward + AdamW on a fixed batch."""
    b = collate([ds[(0, i % len(ds))] for i in range(batch)])
    b = {k: v.to(device) for k, v in b.items()}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()
    amp = device.type == "cuda"

    def one():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(b["images"], b["view_mask"], b["K"], b["T_world_from_crop"], b["anchor"])
        loss = compute_losses(out, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return float(b["view_mask"].sum()) / dt, dt * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", nargs="*", default=None)
    p.add_argument("--mano-dir", default=None)
    p.add_argument("--backbones", nargs="+", default=["mobilenetv3_small_100", "convnext_atto", "resnet18"])
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=8)
    p.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    load0 = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory()
    if not a.crops:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from fixtures import make_crop_cache

        from mvhand.synthetic.mano_model import write_synthetic_mano

        a.mano_dir = str(Path(tmp.name) / "mano")
        write_synthetic_mano(a.mano_dir)
        mano = ManoModel.from_dir(a.mano_dir)
        a.crops = [str(make_crop_cache(Path(tmp.name) / "c.parquet", mano, n_frames=20, crop_size=160))]
    mano = ManoModel.from_dir(a.mano_dir)
    ds = CropDataset(a.crops, a.img_size, 2, train=True, augment=AugmentConfig(), mano=mano, require_gt=True)
    lines = ["| loader workers | crops/s (augmented, 2 views/hand) |", "|---|---|"]
    rates = {}
    for w in a.workers:
        rates[w] = loader_rate(ds, mano, a.batch_size, w, a.loader_batches)
        lines.append(f"| {w} | {rates[w]:.0f} |")
        print(lines[-1], flush=True)
    lines += ["", f"| backbone | img | hands/step | ms/step | train crops/s | loader/model ratio ({max(a.workers)} workers) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    device = torch.device("cpu")
    for name in a.backbones:
        net = HandNet(name, a.img_size, 2, mano=mano.right)
        rate, ms = step_rate(net, ds, a.batch_size, a.steps, device)
        lines.append(
            f"| {name} | {a.img_size} | {a.batch_size} | {ms:.0f} | {rate:.0f} | {rates[max(a.workers)] / rate:.1f} |"
        )
        print(lines[-1], flush=True)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        ds224 = CropDataset(a.crops, 224, 2, train=True, mano=mano, require_gt=True)
        net = HandNet("hiera_base_224", 224, 2, n_points=256, hidden=1024, mano=mano.right.to(dev)).to(dev)
        torch.cuda.reset_peak_memory_stats()
        rate, ms = step_rate(net, ds224, 128, a.steps, dev)
        mem = torch.cuda.max_memory_allocated() / 2**30
        lines += ["", f"GPU paper model hiera_base_224, batch 128 hands x 2 views, bf16: {rate:.0f} images/s, "
                  f"{ms:.0f} ms/step, peak memory {mem:.1f} GiB."]  # fmt: skip
    else:
        lines += ["", "No GPU in this run: the paper model's GPU images/s and memory were not measured."]
    lines += ["", f"1-minute load average at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(above the core count, other processes inflate the timings)."]  # fmt: skip
    body = "\n".join(lines)
    print(body)
    if not a.no_report:
        cmd = (
            "python benchmarks/bench_train.py --crops results/crops/*/train/*.parquet --mano-dir resources/mano "
            f"--img-size {a.img_size}"
        )
        update_section("train", "Training throughput (loader vs model)", cmd, body)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
