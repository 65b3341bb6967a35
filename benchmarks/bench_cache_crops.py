"""Benchmark of the crop-cache stage: crops/s end to end (JPEG decode -> warp -> encode -> Parquet).

Compares ``mvhand.crops.cache_sequence_crops`` (OpenCV decode once per stream, fast warp maps, thread pool,
row groups written as they fill) with a straightforward toolkit-style loop (Pillow decode, reference
warp with per-call float64 maps, Pillow JPEG encode per crop, rows accumulated in Python lists, one
pandas ``to_parquet`` at the end, single-threaded) on the same frames in the same run, and measures how
fast the cache can be read back and decoded (the training data loader's work per crop).

Input: tiny synthetic UmeTrack and HOT3D sequences (``mvhand.synthetic_world``), each frame repeated to
``--frames`` frames per sequence.

    python benchmarks/bench_cache_crops.py [--frames 32] [--crop-sizes 128 224] [--threads 2]
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
from mvhand.crops import CropSettings, cache_sequence_crops, crop_render_geometry  # noqa: E402
from mvhand.dataset import iter_frames, read_hand_shapes  # noqa: E402


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


def naive_cache(tar: Path, out: Path, settings: CropSettings) -> int:
    """Toolkit-style reference: Pillow decode, reference warp, Pillow encode, Python lists, one write."""
    import pandas as pd
    from PIL import Image

    from mvhand.cameras import crop_camera, warp_image_reference
    from mvhand.umetrack import canonical_landmarks, forward_kinematics

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


def bench_size(seqs: list[tuple[str, Path]], tmp: Path, crop_size: int, threads: int, repeats: int):
    """Table rows for one crop size, and the cache files written by the threaded run."""
    settings = CropSettings(crop_size, 1.25, 95)
    lines, outputs = [], []
    totals = {"naive": 0.0, "ours1": 0.0, "oursT": 0.0, "floor": 0.0}
    n_total = 0
    for dataset, tar in seqs:
        t_naive, n = best_of(lambda tar=tar: naive_cache(tar, tmp / "naive.parquet", settings), repeats)
        t1, s1 = best_of(
            lambda tar=tar: cache_sequence_crops(
                tar, tmp / "o1.parquet", settings, threads=1, progress=False
            ),
            repeats,
        )
        out = tmp / f"{dataset}_{crop_size}.parquet"
        tT, sT = best_of(
            lambda tar=tar, out=out: cache_sequence_crops(
                tar, out, settings, threads=threads, progress=False
            ),
            repeats,
        )
        assert s1.n_rows == sT.n_rows == n, (s1.n_rows, n)
        floor = min((decode_floor(tar) for _ in range(repeats)), key=lambda r: r[1] + r[2])
        t_floor = floor[1] + floor[2]
        totals["floor"] += t_floor
        outputs.append(out)
        n_total += n
        totals["naive"] += t_naive
        totals["ours1"] += t1
        totals["oursT"] += tT
        lines.append(
            f"| {crop_size} | {dataset} | {n} | {n / t_naive:.0f} | {n / t1:.0f} | {n / tT:.0f} | "
            f"{t_naive / t1:.1f}x | {t_naive / tT:.1f}x | {floor[0]} | {1e3 * t_floor:.0f} | "
            f"{t_naive / t_floor:.1f}x |"
        )
    lines.append(
        f"| {crop_size} | **all** | {n_total} | {n_total / totals['naive']:.0f} | {n_total / totals['ours1']:.0f} | "
        f"{n_total / totals['oursT']:.0f} | {totals['naive'] / totals['ours1']:.1f}x | "
        f"{totals['naive'] / totals['oursT']:.1f}x | | {1e3 * totals['floor']:.0f} | "
        f"{totals['naive'] / totals['floor']:.1f}x |"
    )
    bound = (
        f"S={crop_size}: the 10x target means all {n_total} crops in <= {1e2 * totals['naive']:.0f} ms wall; the "
        f"floor alone is {1e3 * totals['floor']:.0f} ms CPU ({1e3 * totals['floor'] / threads:.0f} ms on {threads} "
        f"perfectly used cores), and mvhand spends {1e3 * (totals['ours1'] - totals['floor']) / n_total:.2f} ms "
        "per crop on top of it in one thread (warp-map maths, JPEG encode, crop cameras, FK/projection, Parquet)."
    )
    return lines, outputs, bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=32, help="frames per benchmark sequence")
    ap.add_argument("--crop-sizes", type=int, nargs="+", default=[128, 224], help="crop sides S to time")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    from mvhand.synthetic_world import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seqs = []
        for dataset in ("umetrack", "hot3d"):
            generate_dataset(dataset, tmp / "data", tmp / "mano", seed=0, size="tiny", progress=False)
            src = sorted((tmp / "data" / dataset / "train").glob("*.tar"))[0]
            seqs.append((dataset, repeat_sequence(src, tmp / f"{dataset}.tar", args.frames)))
        lines, outputs, bounds = [], [], []
        for crop_size in args.crop_sizes:
            size_lines, outputs, bound = bench_size(seqs, tmp, crop_size, args.threads, args.repeats)
            lines += size_lines
            bounds.append(bound)
        n_read, t_read = min((read_and_decode(outputs) for _ in range(3)), key=lambda r: r[1])
        size_mb = sum(p.stat().st_size for p in outputs) / 1e6

    last = args.crop_sizes[-1]
    body = (
        f"Crops rendered with FOV margin 1.25 (side round(1.25 S)), JPEG quality 95; {args.frames} frames per "
        "sequence (tiny synthetic UmeTrack: 4 mono 640x480 fisheye cameras, one hand in 2 views; HOT3D: 2 mono "
        "640x480 + 1 RGB 704x704 fisheye, two hands in 3 views), with landmark targets (train split). Best of "
        f"{args.repeats} runs; machine shared with other jobs, so the threaded column is a lower bound.\n\n"
        f"| S | dataset | crops | naive crops/s | mvhand crops/s (1 thread) | mvhand crops/s ({args.threads} threads) "
        "| speed-up (1 thread) | speed-up (threads) | JPEGs decoded | floor (ms CPU) | naive / floor |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(lines)
        + "\n\nNaive = toolkit-style loop: Pillow decode of every stream, `warp_image_reference` (float64 maps "
        "per crop), Pillow JPEG encode, rows in Python lists, one pandas `to_parquet`, single-threaded. mvhand "
        "decodes (OpenCV) only the streams that carry a crop in that frame, once per frame, computes the warp "
        "maps on a coarse grid, encodes with `cv2.imencode` and overlaps frames in a thread pool: the main "
        "thread only streams the tar, workers parse each frame's members and render its crops (OpenCV calls "
        "release the GIL).\n\n"
        "What bounds the speed-up: *floor* is the CPU time of the work any implementation of this stage has to "
        "do, timed alone: the full-resolution decode of the source JPEGs that carry a crop (the warp samples "
        "them at sub-pixel positions, so they cannot be decoded at reduced size) plus reading and parsing the "
        "tar (`iter_frames`, shared by both). `naive / floor` is the largest speed-up a single thread could "
        f"reach, and {args.threads} threads at most {args.threads}x that. At S=128 the naive loop is only "
        "a few times slower than the floor, so the 10x target is out of reach there; at large S the reference "
        "warp dominates the naive loop and the speed-up grows. The threaded column only gains where a second "
        f"core is free (1-min load average at the end of this run: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores, shared with other jobs). Threads only overlap the GIL-free calls (JPEG "
        "decode/encode, remap); tar streaming stays in the main thread and frame parsing, crop-camera and "
        "warp-map maths, forward kinematics and row building hold the GIL, so the threaded run is bounded by "
        "that Python share rather than by the cores.\n\n" + "\n".join(f"- {b}" for b in bounds) + "\n\n"
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
