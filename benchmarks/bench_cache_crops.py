"""Benchmark of the crop-cache stage: crops/s end to end (JPEG decode -> warp -> encode -> Parquet).

Compares ``mvhand.formats.crop_cache.cache_sequence_crops`` (OpenCV decode once per stream, fast warp maps, a pool of worker
processes, row groups written as they fill) with a straightforward toolkit-style loop (Pillow decode, reference
warp with per-call float64 maps, Pillow JPEG encode per crop, rows accumulated in Python lists, one
pandas ``to_parquet`` at the end, single-threaded) on the same frames in the same run, and measures how
fast the cache can be read back and decoded (the training data loader's work per crop).

Input: every train sequence of the tiny synthetic UmeTrack and HOT3D datasets (``mvhand.synthetic.world``:
a separate-hand and a hand-hand UmeTrack recording, two HOT3D clips), each cycled to ``--frames`` frames.

    python benchmarks/bench_cache_crops.py [--frames 150] [--crop-sizes 128 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import update_section  # noqa: E402
from mvhand._process import tune_allocator  # noqa: E402
from mvhand.formats.crop_cache import CropSettings, cache_sequence_crops, crop_render_geometry  # noqa: E402
from mvhand.formats.sequence import iter_frames, read_hand_shapes  # noqa: E402


def repeat_sequence(src: Path, dst: Path, n_frames: int) -> Path:
    """Write a sequence of ``n_frames`` frames by cycling the frames of ``src`` (keys renumbered)."""
    with tarfile.open(src) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
    meta = [(n, d) for n, d in members if n.startswith("__")]
    groups: dict[str, list[tuple[str, bytes]]] = {}
    for name, data in members:
        if not name.startswith("__"):
            key, suffix = name.split(".", 1)
            groups.setdefault(key, []).append((suffix, data))
    keys = sorted(groups)
    with tarfile.open(dst, "w") as out:
        for name, data in meta:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        for i in range(n_frames):
            for suffix, data in groups[keys[i % len(keys)]]:
                info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    return dst


def train_sequences(tmp: Path, n_frames: int) -> list[tuple[str, Path]]:
    """``(label, tar)`` of every train sequence of the tiny synthetic world (written under ``tmp``), each cycled
    to ``n_frames`` frames."""
    from mvhand.synthetic.world import generate_dataset

    seqs = []
    for dataset in ("umetrack", "hot3d"):
        generate_dataset(dataset, tmp / "data", tmp / "mano", seed=0, size="tiny", progress=False)
        for src in sorted((tmp / "data" / dataset / "train").glob("*.tar")):
            seqs.append((f"{dataset} `{src.stem}`", repeat_sequence(src, tmp / src.name, n_frames)))
    return seqs


def naive_cache(tar: Path, out: Path, settings: CropSettings) -> int:
    """Toolkit-style reference: Pillow decode, reference warp, Pillow encode, Python lists, one write."""
    import pandas as pd
    from PIL import Image

    from mvhand.geometry.cameras import crop_camera, warp_image_reference
    from mvhand.geometry.umetrack import canonical_landmarks, forward_kinematics

    shapes = read_hand_shapes(tar)
    rows: dict[str, list] = {
        k: []
        for k in (
            "frame_id",
            "hand_side",
            "view_index",
            "stream_id",
            "image_jpeg",
            "intrinsics",
            "T_world_from_crop",
            "landmarks_world",
        )
    }
    for frame in iter_frames(tar):
        images = {sid: frame.image(sid) for sid in frame.cameras}  # toolkit: decode every stream
        for side_index, side in enumerate(("left", "right")):
            hand = frame.hands.get(side)
            lm = None
            if hand is not None and shapes is not None:
                lm = canonical_landmarks(
                    forward_kinematics(
                        shapes.umetrack, hand.joint_angles, hand.T_world_from_wrist, side == "right"
                    )
                )
            for view_index, (sid, params) in enumerate((frame.hand_crops.get(side) or {}).items()):
                render_fov, size = crop_render_geometry(params.fov, settings.crop_size, settings.fov_margin)
                cam = crop_camera(params.T_world_from_crop_camera, render_fov, size)
                crop = warp_image_reference(images[sid], frame.cameras[sid], cam)
                buf = io.BytesIO()
                Image.fromarray(crop).save(buf, format="JPEG", quality=settings.jpeg_quality)
                rows["frame_id"].append(frame.frame_id)
                rows["hand_side"].append(side_index)
                rows["view_index"].append(view_index)
                rows["stream_id"].append(sid)
                rows["image_jpeg"].append(buf.getvalue())
                rows["intrinsics"].append([cam.fx, cam.fy, cam.cx, cam.cy])
                rows["T_world_from_crop"].append(cam.T_world_from_eye.reshape(-1).tolist())
                rows["landmarks_world"].append(None if lm is None else lm.reshape(-1).tolist())
    pd.DataFrame(rows).to_parquet(out)
    return len(rows["frame_id"])


def read_and_decode(paths: list[Path]) -> tuple[int, float]:
    """Read every crop-cache file and decode every JPEG (single thread): (crops, seconds)."""
    t0 = time.perf_counter()
    n = 0
    for p in paths:
        table = pq.read_table(p, columns=["image_jpeg", "intrinsics", "T_world_from_crop", "landmarks_crop"])
        for blob in table.column("image_jpeg").to_pylist():
            img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
            assert img is not None
            n += 1
    return n, time.perf_counter() - t0


def decode_floor(tar: Path) -> tuple[int, float, float]:
    """CPU seconds of the work every crop cache must do, timed alone (single thread).

    Returns:
        ``(n_decoded, t_decode, t_read)``: ``cv2.imdecode`` of each source stream that has a crop in its
        frame (what ``cache_sequence_crops`` decodes, at full resolution), and reading + parsing the tar
        (``iter_frames``, shared by both implementations) without decoding.
    """
    n, t_decode = 0, 0.0
    t0 = time.process_time()
    frames = list(iter_frames(tar))
    t_read = time.process_time() - t0
    for frame in frames:
        streams = {sid for views in frame.hand_crops.values() for sid in views}
        for sid in sorted(streams):
            flag = cv2.IMREAD_COLOR if frame.cameras[sid].is_rgb else cv2.IMREAD_GRAYSCALE
            buf = np.frombuffer(frame.image_bytes[sid], np.uint8)
            c0 = time.process_time()
            cv2.imdecode(buf, flag)
            t_decode += time.process_time() - c0
            n += 1
    return n, t_decode, t_read


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def pool_startup(tar: Path, tmp: Path, workers: int) -> tuple[float, float]:
    """Wall seconds of a tiny ``cache_sequence_crops`` call with worker processes: the first one in this
    process (starts the fork server: interpreter + imports, once per job) and the best later one (a fresh pool
    of ``workers`` processes, as every call makes)."""
    settings = CropSettings(32, 1.25, 95)
    first, _ = best_of(
        lambda: cache_sequence_crops(tar, tmp / "warm.parquet", settings, threads=workers, progress=False), 1
    )
    later, _ = best_of(
        lambda: cache_sequence_crops(tar, tmp / "warm.parquet", settings, threads=workers, progress=False), 3
    )
    return first, later


def bench_size(seqs: list[tuple[str, Path]], tmp: Path, crop_size: int, workers: int, repeats: int):
    """Table rows for one crop size, the cache files written by the pooled run, and a line on the bound."""
    settings = CropSettings(crop_size, 1.25, 95)
    lines, outputs = [], []
    totals = {"naive": 0.0, "ours1": 0.0, "oursN": 0.0, "floor": 0.0}
    n_total = 0
    for label, tar in seqs:
        t_naive, n = best_of(lambda tar=tar: naive_cache(tar, tmp / "naive.parquet", settings), repeats)
        t1, s1 = best_of(
            lambda tar=tar: cache_sequence_crops(
                tar, tmp / "o1.parquet", settings, threads=1, progress=False
            ),
            repeats,
        )
        out = tmp / f"{tar.stem}_{crop_size}.parquet"
        tN, sN = best_of(
            lambda tar=tar, out=out: cache_sequence_crops(
                tar, out, settings, threads=workers, progress=False
            ),
            repeats,
        )
        assert s1.n_rows == sN.n_rows == n, (s1.n_rows, n)
        floor = min((decode_floor(tar) for _ in range(repeats)), key=lambda r: r[1] + r[2])
        t_floor = floor[1] + floor[2]
        totals["floor"] += t_floor
        outputs.append(out)
        n_total += n
        totals["naive"] += t_naive
        totals["ours1"] += t1
        totals["oursN"] += tN
        lines.append(
            f"| {crop_size} | {label} | {n} | {floor[0]} | {n / t_naive:.0f} | {n / t1:.0f} | {n / tN:.0f} | "
            f"{t_naive / t1:.1f}x | {t_naive / tN:.1f}x | {1e3 * t_floor:.0f} | {t_naive / t_floor:.1f}x |"
        )
    lines.append(
        f"| {crop_size} | **all** | {n_total} | | {n_total / totals['naive']:.0f} | "
        f"{n_total / totals['ours1']:.0f} | {n_total / totals['oursN']:.0f} | "
        f"**{totals['naive'] / totals['ours1']:.1f}x** | **{totals['naive'] / totals['oursN']:.1f}x** | "
        f"{1e3 * totals['floor']:.0f} | {totals['naive'] / totals['floor']:.1f}x |"
    )
    per_worker = totals["naive"] / totals["ours1"]
    bound = (
        f"S={crop_size}: one worker is {per_worker:.1f}x the naive loop, so 10x needs at least "
        f"{math.ceil(10 / per_worker)} fully used cores; {workers} workers reached "
        f"{totals['ours1'] / totals['oursN']:.2f}x the single-worker rate here. The floor (decode + tar "
        f"parsing) is {1e3 * totals['floor'] / n_total:.2f} ms CPU per crop of mvhand's "
        f"{1e3 * totals['ours1'] / n_total:.2f} ms (naive: {1e3 * totals['naive'] / n_total:.2f} ms)."
    )
    return lines, outputs, bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per sequence (challenge clips: 150)")
    ap.add_argument("--crop-sizes", type=int, nargs="+", default=[128, 224], help="crop sides S to time")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="worker processes of the pooled run"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    tune_allocator()  # as the cache_crops stage does: both implementations run with the same malloc settings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seqs = train_sequences(tmp, args.frames)
        t_first, t_later = pool_startup(
            sorted((tmp / "data" / "umetrack" / "train").glob("*.tar"))[0], tmp, args.threads
        )
        lines, outputs, bounds = [], [], []
        for crop_size in args.crop_sizes:
            size_lines, outputs, bound = bench_size(seqs, tmp, crop_size, args.threads, args.repeats)
            lines += size_lines
            bounds.append(bound)
        n_read, t_read = min((read_and_decode(outputs) for _ in range(3)), key=lambda r: r[1])
        size_mb = sum(p.stat().st_size for p in outputs) / 1e6
        load = os.getloadavg()[0]

    last = args.crop_sizes[-1]
    n = args.threads
    body = (
        f"Crops rendered with FOV margin 1.25 (side round(1.25 S)), JPEG quality 95. Input: every train sequence "
        f"of the tiny synthetic world, each cycled to {args.frames} frames (the challenge's clips have 150; UmeTrack: 4 mono 640x480 fisheye "
        "cameras; the separate-hand recording has one hand in 2 views, the hand-hand one two hands in 2 views; "
        "HOT3D: 2 mono 640x480 + 1 RGB 704x704 fisheye, two hands in 2-3 views), with landmark targets (train "
        f"split). Best of {args.repeats} runs.\n\n"
        f"| S | sequence | crops | JPEGs decoded | naive crops/s | mvhand crops/s (1 worker) | mvhand crops/s "
        f"({n} workers) | speed-up (1 worker) | speed-up ({n} workers) | floor (ms CPU) | naive / floor |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(lines)
        + "\n\nNaive = toolkit-style loop: Pillow decode of every stream, `warp_image_reference` (float64 maps "
        "per crop), Pillow JPEG encode, rows in Python lists, one pandas `to_parquet`, single-threaded. mvhand "
        "decodes (OpenCV) only the streams that carry a crop in that frame, once per frame, runs forward "
        "kinematics once per chunk of 4 frames, computes the warp maps on a coarse grid, encodes with "
        "`cv2.imencode` and turns each chunk's rows into one Arrow table. With 1 worker it does all this in the calling "
        f"process; with {n} workers the calling process only streams the tar and writes the Parquet file, and "
        f"{n} worker processes (fork server) render the chunks. Processes, not threads: most of the per-crop "
        "work is short NumPy/OpenCV calls interleaved with Python, which threads cannot overlap (the GIL); the "
        "former thread pool gained 1.1-1.3x from a second core.\n\n"
        "What bounds the speed-up: *floor* is the CPU time of the work any implementation of this stage has to "
        "do, timed alone: the full-resolution decode of the source JPEGs that carry a crop (the warp samples "
        "them at sub-pixel positions, so they cannot be decoded at reduced size; decoding at 1/2 scale saves "
        "only ~10 % anyway, entropy decoding dominates) plus reading and parsing the tar (`iter_frames`, "
        "shared by both). `naive / floor` is the largest speed-up one core could reach. The 10x target "
        f"therefore needs several cores, and this machine has {os.cpu_count()} (1-min load average at the end "
        f"of the run: {load:.1f}); the pooled column shares them with the process that streams the tar.\n\n"
        + "\n".join(f"- {b}" for b in bounds)
        + "\n\n"
        f"Start-up: the first pooled call in a process starts the fork server (a fresh interpreter importing "
        f"mvhand.formats.crop_cache: NumPy, OpenCV, pyarrow) and imports pandas (pyarrow does on its first table): "
        f"{t_first:.2f} s for a 6-frame sequence, paid once per `cache_crops` job; every later call starts {n} "
        f"fresh workers from the server: {1e3 * t_later:.0f} ms for the same sequence. The table's pooled column "
        "includes the latter, not the former. This is why the workflow's default is `crops.threads: 1`: with "
        "at least as many sequences as cores, Snakemake's parallel jobs use the cores without any start-up or "
        "inter-process traffic; per-job workers pay off for a few long sequences.\n\n"
        f"Reading the cache back (S={last}; pyarrow, image + camera + target columns) and decoding every JPEG "
        f"with OpenCV: **{n_read / t_read:.0f} crops/s on one core** ({n_read} crops, {size_mb:.1f} MB of "
        "Parquet). A training step of batch 32 x 2 views needs 64 crops, so one loader worker supplies "
        f"~{n_read / t_read / 64:.0f} steps/s before augmentation."
    )
    print(body)
    if not args.no_report:
        update_section(
            "cache_crops",
            "Crop cache (cache_crops): render + encode + Parquet, and read-back",
            f"python benchmarks/bench_cache_crops.py --frames {args.frames} --crop-sizes "
            f"{' '.join(map(str, args.crop_sizes))} --threads {args.threads}",
            body,
        )


if __name__ == "__main__":
    main()
