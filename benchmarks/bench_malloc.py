"""glibc malloc tuning (``mvhand._process.tune_allocator``) vs the default malloc on the cache_crops loop.

Each measurement runs in a fresh process (``mallopt`` is process-wide and cannot be undone): the process
renders the crop cache of every train sequence of the tiny synthetic world (cycled to ``--frames`` frames)
with ``cache_sequence_crops`` in-process (1 worker, as the default ``crops.threads: 1``), after one warm-up
sequence, and reports its wall time, CPU time and minor page faults. Tuned and default processes alternate,
``--rounds`` times; the table gives the medians. Writes the ``malloc`` section of ``docs/benchmarks.md``.

    python benchmarks/bench_malloc.py [--frames 150] [--crop-sizes 128 224] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(tuned: bool, crop_size: int, out: Path, tars: list[Path]) -> dict:
    """One measurement (runs in its own process): the cache_crops loop over ``tars``."""
    import cv2

    from mvhand._process import tune_allocator
    from mvhand.formats.crop_cache import CropSettings, cache_sequence_crops

    cv2.setNumThreads(1)
    applied = tune_allocator() if tuned else False
    settings = CropSettings(crop_size, 1.25, 95)
    cache_sequence_crops(tars[0], out, settings, threads=1, progress=False)  # warm-up: imports, caches
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0, c0 = time.perf_counter(), time.process_time()
    crops = sum(cache_sequence_crops(t, out, settings, threads=1, progress=False).n_rows for t in tars)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0.ru_minflt
    return {"applied": applied, "crops": crops, "wall": wall, "cpu": cpu, "faults": faults}


def measure(tuned: bool, crop_size: int, out: Path, tars: list[Path]) -> dict:
    cmd = [sys.executable, __file__, "--child", "tuned" if tuned else "default", str(crop_size), str(out)]
    res = subprocess.run(cmd + [str(t) for t in tars], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, size, out, *tars = sys.argv[2:]
        print(json.dumps(child(mode == "tuned", int(size), Path(out), [Path(t) for t in tars])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per sequence (challenge clips: 150)")
    ap.add_argument("--crop-sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()

    from benchmarks._report import update_section
    from benchmarks.bench_cache_crops import train_sequences

    rows, cpu_gains = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tars = [tar for _, tar in train_sequences(tmp, args.frames)]
        for size in args.crop_sizes:
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for _ in range(args.rounds):
                for tuned in (False, True):
                    runs[tuned].append(measure(tuned, size, tmp / "crops.parquet", tars))
            if not all(r["applied"] for r in runs[True]):
                raise SystemExit("mallopt not available here (not glibc): nothing to compare")
            med = {
                t: {k: statistics.median(r[k] for r in runs[t]) for k in ("wall", "cpu", "faults")}
                for t in runs
            }
            n = runs[True][0]["crops"]
            d, t = med[False], med[True]
            rows.append(
                f"| {size} | {n} | {1e3 * d['wall'] / n:.2f} | {1e3 * t['wall'] / n:.2f} | "
                f"**{d['wall'] / t['wall']:.2f}×** | {1e3 * d['cpu'] / n:.2f} | {1e3 * t['cpu'] / n:.2f} | "
                f"**{d['cpu'] / t['cpu']:.2f}×** | {d['faults']:.0f} | {t['faults']:.0f} |"
            )
            cpu_gains.append(d["cpu"] / t["cpu"])
            print(rows[-1], flush=True)
    body = (
        f"Every train sequence of the tiny synthetic world cycled to {args.frames} frames, rendered by "
        "`cache_sequence_crops` in one process (1 worker, the default `crops.threads: 1`; the worker processes "
        "of `crops.threads > 1` apply the same setting), FOV margin 1.25, JPEG quality 95. Each measurement is "
        "a fresh process (`mallopt` is process-wide) that renders one sequence as a warm-up, then all of them; "
        f"tuned and default processes alternate, medians of {args.rounds} rounds. *Tuned*: "
        "`mvhand._process.tune_allocator()` (glibc `mallopt`: mmap threshold fixed at 32 MiB, trim threshold "
        "64 MiB, so the per-crop decode/warp/encode buffers are reused on the heap instead of being mapped and "
        "unmapped for every crop).\n\n"
        "| S | crops | default ms/crop (wall) | tuned ms/crop (wall) | **speed-up (wall)** | default ms/crop "
        "(CPU) | tuned ms/crop (CPU) | **speed-up (CPU)** | default page faults | tuned page faults |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + (
            f"Kept: {min(cpu_gains):.2f}-{max(cpu_gains):.2f}× faster in CPU time for 30 lines (`ctypes` into libc, a "
            "no-op where malloc is not glibc's), on the stage that handles every image of a real dataset "
            "(millions of crops)."
            if min(cpu_gains) >= 1.1
            else f"No clear gain in this run ({min(cpu_gains):.2f}-{max(cpu_gains):.2f}× CPU time)."
        )
        + " The CPU-time column is the less noisy one on a shared machine (1-min load average at the end of the "
        "run: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)."
    )
    print(body)
    if not args.no_report:
        update_section(
            "malloc",
            "glibc malloc tuning on the cache_crops loop",
            "python benchmarks/bench_malloc.py --frames "
            f"{args.frames} --crop-sizes {' '.join(map(str, args.crop_sizes))} --rounds {args.rounds}",
            body,
        )


if __name__ == "__main__":
    main()
