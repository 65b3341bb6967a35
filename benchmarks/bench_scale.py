"""Crop cache at real-dataset size: streaming loader memory and speed vs the in-memory loader, DDP, predict.

Builds one crop cache of generated rows (real JPEG crops — 160-px grey as UmeTrack, 280-px RGB as HOT3D —
repeated with distinct sequence/frame ids, valid camera geometry and targets) in a temporary folder, takes
two prefixes of its files and the whole cache as the three sizes (≈ 0.3, 1.5 and > 3 GiB of JPEG; the
largest has ≥ 500 files and ≥ 300k crops), and
measures, each in a fresh subprocess (peak RSS = ``ru_maxrss``), with one thread per process:

* the streaming training loader (:class:`mvhand.model.stream.TrainStream`): peak RSS and augmented crops per
  CPU-second, at every size;
* the in-memory loader (:class:`mvhand.model.data.CropDataset` + :class:`~mvhand.model.data.EpochSampler`, the
  loader before the streaming one) on the two smaller caches: the same two numbers;
* a 2-process DDP run (gloo, CPU) of the streaming loader on the largest cache: per-rank peak RSS and
  crops per CPU-second;
* ``predict`` (streaming in, ParquetWriter out) on a prefix of the smallest cache: peak RSS.

    python benchmarks/bench_scale.py            # full: ≈ 3.6 GiB in /tmp, several minutes
    python benchmarks/bench_scale.py --quick    # small sizes, no report

The generated cache is deleted at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS_PER_FILE = 600  # 150 frames × 2 hands × 2 views (a HOT3D clip)
IMG_SIZE = 128
PRED_IMG_SIZE = 64  # predict's model: its cost here is the network, kept small (the RSS is the point)
BATCH = 16


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------------
# cache generation
# --------------------------------------------------------------------------------------------------


def _jpegs(size: int, colour: bool, n: int, seed: int) -> list[bytes]:
    """``n`` JPEG crops (quality 90) of smooth structure + sensor noise, like a hand against a background."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ch = 3 if colour else 1
        base = rng.normal(0, 1, (size // 8, size // 8, ch)).astype(np.float32)
        img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, ch)
        yy, xx = np.mgrid[:size, :size]
        blob = np.exp(-(((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 5) ** 2)))[..., None]
        img = 90 + 40 * img + 80 * blob + rng.normal(0, 6, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img if colour else img[..., 0], [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def build_cache(root: Path, mano_dir: Path, n_files: int, rows_per_file: int) -> list[tuple[str, int, int]]:
    """Write ``n_files`` crop-cache files; returns ``(path, rows, JPEG bytes)`` per file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "tests"))
    from test_train_data import make_crop_cache

    from mvhand.formats.crop_cache import _COMPRESSION, CROP_SCHEMA
    from mvhand.geometry.mano import ManoModel

    mano = ManoModel.from_dir(mano_dir)
    templates = {}
    for size, colour in ((160, False), (280, True)):
        t = pq.read_table(make_crop_cache(root / f"template_{size}.parquet", mano, n_frames=4, crop_size=size,
                                          dot=False))  # fmt: skip
        templates[size] = (t.cast(CROP_SCHEMA), _jpegs(size, colour, 8, size))
    out = []
    for i in range(n_files):
        size = 160 if i % 2 == 0 else 280
        tmpl, jpegs = templates[size]
        reps = -(-rows_per_file // tmpl.num_rows)
        t = pa.concat_tables([tmpl] * reps).slice(0, rows_per_file)
        n = t.num_rows
        frames = np.repeat(np.arange(-(-n // 4)), 4)[:n].astype(
            np.int32
        )  # 4 rows (2 hands × 2 views) per frame
        imgs = [jpegs[(i * 7 + f) % len(jpegs)] for f in frames]
        t = t.set_column(0, CROP_SCHEMA.field("sequence_name"), pa.array([f"seq_{i:05d}"] * n, pa.string()))
        t = t.set_column(1, CROP_SCHEMA.field("frame_id"), pa.array(frames, pa.int32()))
        t = t.set_column(5, CROP_SCHEMA.field("image_jpeg"), pa.array(imgs, pa.binary()))
        path = root / f"seq_{i:05d}.parquet"
        pq.write_table(t, path, row_group_size=256, compression=_COMPRESSION,
                       use_dictionary=["sequence_name", "stream_id"])  # fmt: skip
        out.append((str(path), n, sum(len(b) for b in imgs)))
    return out


# --------------------------------------------------------------------------------------------------
# children (each runs in its own process)
# --------------------------------------------------------------------------------------------------


def _settings(mano_dir: str, seed: int = 0):
    from mvhand.geometry.mano import ManoModel
    from mvhand.model.data import AugmentConfig
    from mvhand.model.stream import SampleSettings

    return SampleSettings(IMG_SIZE, 2, 1, True, AugmentConfig(), seed, ManoModel.from_dir(mano_dir))


def _consume(loader, n_batches: int) -> tuple[int, float, float]:
    """(crops, CPU s, wall s) over ``n_batches`` batches after the first (start-up excluded)."""
    it = iter(loader)
    next(it)
    c0, w0 = time.process_time(), time.perf_counter()
    crops = 0
    for _ in range(n_batches):
        crops += int(next(it)["view_mask"].sum())
    return crops, time.process_time() - c0, time.perf_counter() - w0


def child_stream(files: list[str], mano_dir: str, n_batches: int) -> dict:
    from mvhand.model.stream import CropIndex, TrainStream
    from mvhand.model.training import _loader

    t0 = time.perf_counter()
    index = CropIndex(files, require_gt=True)
    t_index = time.perf_counter() - t0
    stream = TrainStream(index, _settings(mano_dir), BATCH, n_batches + 1, 0)
    crops, cpu, wall = _consume(_loader(stream, 0), n_batches)
    rss = _rss_mb()
    # the alternative: a global sample permutation read straight from the files = one row-group read per sample
    import numpy as np

    from mvhand.model.stream import _unit_dataset

    rng = np.random.default_rng(0)
    c0, n_glob = time.process_time(), 0
    for gid in rng.choice(len(index), size=max(8, n_batches), replace=False):
        u, loc = index.unit_of(int(gid))
        n_glob += int(_unit_dataset(index, u, stream.st)[(0, loc)]["view_mask"].sum())
    glob_rate = n_glob / (time.process_time() - c0)
    return {"instances": len(index), "index_s": t_index, "crops": crops, "cpu_s": cpu, "wall_s": wall,
            "rss_mb": rss, "global_perm_rate": glob_rate}  # fmt: skip


def child_memory(files: list[str], mano_dir: str, n_batches: int) -> dict:
    from torch.utils.data import DataLoader

    from mvhand.model.data import CropDataset, EpochSampler, collate

    st = _settings(mano_dir)
    t0 = time.perf_counter()
    ds = CropDataset(files, IMG_SIZE, 2, train=True, augment=st.augment, mano=st.mano, require_gt=True)
    t_load = time.perf_counter() - t0
    loader = DataLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), BATCH, n_batches + 1, 0),
                        collate_fn=collate)  # fmt: skip
    crops, cpu, wall = _consume(loader, n_batches)
    return {"instances": len(ds), "index_s": t_load, "crops": crops, "cpu_s": cpu, "wall_s": wall,
            "rss_mb": _rss_mb()}  # fmt: skip


def _ddp_rank(rank: int, files: list[str], mano_dir: str, n_batches: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from mvhand.model.stream import CropIndex, TrainStream
    from mvhand.model.training import _loader

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    index = CropIndex(files, require_gt=True)
    stream = TrainStream(index, _settings(mano_dir), BATCH, n_batches + 1, 0, rank, 2)
    it = iter(_loader(stream, 0))
    next(it)
    dist.barrier()
    c0, w0 = time.process_time(), time.perf_counter()
    crops = 0
    for _ in range(n_batches):
        b = next(it)
        n = torch.tensor([float(b["view_mask"].sum())])
        dist.all_reduce(n)  # one collective per step, as the gradient all-reduce of DDP
        crops += int(b["view_mask"].sum())
    res = {
        "crops": crops,
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - w0,
        "rss_mb": _rss_mb(),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def child_ddp(files: list[str], mano_dir: str, n_batches: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_ddp_rank, args=(files, mano_dir, n_batches, port, d), nprocs=2, join=True)
        ranks = [json.loads(Path(d, f"rank{r}.json").read_text()) for r in range(2)]
    return {"crops": sum(r["crops"] for r in ranks), "cpu_s": sum(r["cpu_s"] for r in ranks),
            "wall_s": max(r["wall_s"] for r in ranks), "rss_mb": max(r["rss_mb"] for r in ranks)}  # fmt: skip


def child_predict(files: list[str], mano_dir: str, model: str, out: str) -> dict:
    import pyarrow.parquet as pq

    from mvhand.model.inference import predict

    t0 = time.perf_counter()
    c0 = time.process_time()
    meta = predict(model, files, mano_dir, out, batch_size=32, device="cpu", progress=False)
    return {"hands": meta.num_rows, "row_groups": pq.ParquetFile(out).metadata.num_row_groups,
            "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0, "rss_mb": _rss_mb()}  # fmt: skip


def write_model(path: Path, mano_dir: Path) -> None:
    """A small untrained HandNet saved in the train stage's model format (predict's cost is reading + crops)."""
    import torch

    from mvhand.geometry.mano import ManoModel
    from mvhand.model.checkpoint import MODEL_FORMAT
    from mvhand.model.network import HandNet

    mano = ManoModel.from_dir(mano_dir)
    net = HandNet("test_resnet", PRED_IMG_SIZE, 2, n_points=8, hidden=32, mano=mano.right)
    torch.save(
        {"format": MODEL_FORMAT, "model_config": net.config.to_dict(), "model": net.net_state_dict()}, path
    )


def _run_child(kind: str, list_file: Path, mano_dir: Path, *more: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--list",
        str(list_file),
        "--mano-dir",
        str(mano_dir),
        *more,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child_main(a: argparse.Namespace) -> int:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    files = Path(a.list).read_text().split()
    if a.child == "stream":
        res = child_stream(files, a.mano_dir, a.batches)
    elif a.child == "memory":
        res = child_memory(files, a.mano_dir, a.batches)
    elif a.child == "ddp":
        res = child_ddp(files, a.mano_dir, a.batches)
    else:
        res = child_predict(files, a.mano_dir, a.model, a.out)
    print(json.dumps(res))
    return 0


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-gib", nargs=3, type=float, default=[0.3, 1.5, 3.2], help="three JPEG sizes (GiB)")
    p.add_argument("--quick", action="store_true", help="sizes 0.01/0.03/0.06 GiB, few batches, no report")
    p.add_argument("--batches", type=int, default=100, help="timed batches of 16 hands per loader run")
    p.add_argument(
        "--predict-files", type=int, default=12, help="files of the smallest cache given to predict"
    )
    p.add_argument("--workdir", default=None, help="where to build the cache (default: a folder in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the generated cache")
    p.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--list", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mano-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return _child_main(a)
    if a.quick:
        a.sizes_gib, a.batches, a.predict_files, a.no_report = [0.01, 0.03, 0.06], 8, 4, True
    from mvhand.synthetic.mano_model import write_synthetic_mano

    root = Path(tempfile.mkdtemp(prefix="mvhand_bench_scale_", dir=a.workdir))
    load0 = os.getloadavg()[0]
    try:
        mano_dir = root / "mano"
        write_synthetic_mano(mano_dir)
        # files needed for the largest size (≥ 500 files and ≥ 300k crops in the full run)
        probe = build_cache(root, mano_dir, 2, ROWS_PER_FILE)
        per_file = sum(b for _, _, b in probe) / 2
        n_files = int(-(-a.sizes_gib[2] * 2**30 // per_file)) + 1
        if not a.quick:
            n_files = max(n_files, 500, -(-300_000 // ROWS_PER_FILE))
        free = shutil.disk_usage(root).free
        if n_files * per_file * 1.1 > free:
            raise SystemExit(
                f"{root}: {free / 2**30:.1f} GiB free, need {n_files * per_file * 1.1 / 2**30:.1f}"
            )
        t0 = time.perf_counter()
        files = build_cache(root, mano_dir, n_files, ROWS_PER_FILE)
        t_build = time.perf_counter() - t0
        cum = 0
        tiers: list[list[tuple[str, int, int]]] = []
        for target in a.sizes_gib[:2]:
            k = 0
            cum = 0
            while k < len(files) and cum < target * 2**30:
                cum += files[k][2]
                k += 1
            tiers.append(files[:k])
        tiers.append(files)  # the largest: every file (≥ 500 files, ≥ 300k crops in the full run)
        model = root / "model.pt"
        write_model(model, mano_dir)
        rows = []
        for tier in tiers:
            lst = root / f"tier_{len(tier)}.txt"
            lst.write_text("\n".join(f for f, _, _ in tier))
            r = _run_child("stream", lst, mano_dir, "--batches", str(a.batches))
            rows.append((tier, r))
            print(f"stream {len(tier)} files: {r}", flush=True)
        small = root / f"tier_{len(tiers[0])}.txt"
        mem = _run_child("memory", small, mano_dir, "--batches", str(a.batches))
        print(f"in-memory {len(tiers[0])} files: {mem}", flush=True)
        mid = root / f"tier_{len(tiers[1])}.txt"
        mem_mid = _run_child("memory", mid, mano_dir, "--batches", str(a.batches))
        print(f"in-memory {len(tiers[1])} files: {mem_mid}", flush=True)
        big = root / f"tier_{len(tiers[2])}.txt"
        ddp = _run_child("ddp", big, mano_dir, "--batches", str(a.batches))
        print(f"ddp {len(tiers[2])} files: {ddp}", flush=True)
        pred_list = root / "predict.txt"
        pred_list.write_text("\n".join(f for f, _, _ in tiers[0][: a.predict_files]))
        pred = _run_child(
            "predict", pred_list, mano_dir, "--model", str(model), "--out", str(root / "pred.parquet")
        )
        print(f"predict {a.predict_files} files: {pred}", flush=True)
        pred_small = root / "predict_small.txt"
        pred_small.write_text("\n".join(f for f, _, _ in tiers[0][: max(1, a.predict_files // 4)]))
        pred2 = _run_child(
            "predict", pred_small, mano_dir, "--model", str(model), "--out", str(root / "p2.parquet")
        )
        print(f"predict {max(1, a.predict_files // 4)} files: {pred2}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)

    def rate(r: dict) -> float:
        return r["crops"] / r["cpu_s"]

    lines = [
        f"Generated cache: {len(files)} files × {ROWS_PER_FILE} crops (160-px grey / 280-px RGB JPEG, q90, "
        f"row groups of 256), written in {t_build:.0f} s. Loader: batches of {BATCH} hands × 2 views, "
        f"{IMG_SIZE}-px augmented crops, {a.batches} batches timed, 1 thread, no worker processes.",
        "",
        "| loader | cache (JPEG) | files | crops | index / load s | peak RSS (MB) | crops per CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, r in rows:
        gib = sum(b for _, _, b in tier) / 2**30
        lines.append(f"| streaming | {gib:.2f} GiB | {len(tier)} | {sum(n for _, n, _ in tier)} | "
                     f"{r['index_s']:.1f} | {r['rss_mb']:.0f} | {rate(r):.0f} |")  # fmt: skip
    for tier, r in ((tiers[0], mem), (tiers[1], mem_mid)):
        gib = sum(b for _, _, b in tier) / 2**30
        lines.append(f"| in-memory (before) | {gib:.2f} GiB | {len(tier)} | {sum(n for _, n, _ in tier)} | "
                     f"{r['index_s']:.1f} | {r['rss_mb']:.0f} | {rate(r):.0f} |")  # fmt: skip
    gib2 = sum(b for _, _, b in tiers[2]) / 2**30
    lines.append(f"| streaming, DDP 2 ranks (gloo), per rank | {gib2:.2f} GiB | {len(tiers[2])} | "
                 f"{sum(n for _, n, _ in tiers[2])} | – | {ddp['rss_mb']:.0f} | {rate(ddp) :.0f} |")  # fmt: skip
    lines += [
        "",
        f"Streaming / in-memory crops per CPU-second on the smallest cache: {rate(rows[0][1]) / rate(mem):.2f}. "
        "The alternative to row-group windows, a global sample permutation read straight from the files (one "
        "row-group read per sample), gives "
        + ", ".join(f"{r['global_perm_rate']:.0f}" for _, r in rows)
        + " crops per CPU-second at the three sizes.",
        f"`predict` (streaming in, ParquetWriter out, test_resnet model): {pred['hands']} hands from "
        f"{a.predict_files} files → peak RSS {pred['rss_mb']:.0f} MB; {pred2['hands']} hands from "
        f"{max(1, a.predict_files // 4)} files → {pred2['rss_mb']:.0f} MB.",
        "",
        f"1-minute load average at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(shared machine: wall-clock rates are unreliable, hence crops per CPU-second).",
    ]
    body = "\n".join(lines)
    print(body)
    if not a.no_report:
        from benchmarks._report import update_section

        update_section("scale", "Crop cache at real size (streaming loader, DDP, predict)",
                       "OMP_NUM_THREADS=1 python benchmarks/bench_scale.py", body)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
