"""Stage `cache_crops`: render every hand crop of one sequence into a Parquet crop cache.

Example (what `snakemake -n -p crops` prints):
    python workflow/scripts/cache_crops.py --input resources/data/umetrack/train/seq.tar \
        --output results/crops/umetrack/train/seq.parquet --dataset umetrack --threads 4 \
        --crop-size 128 --fov-margin 1.25 --jpeg-quality 95
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mvhand._process import tune_allocator
from mvhand.cli import run
from mvhand.constants import DATASETS
from mvhand.formats.crop_cache import CropSettings, cache_sequence_crops
from mvhand.io_utils import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="sequence tar (challenge format)")
    p.add_argument("--output", required=True, help="Parquet crop cache to write")
    d = CropSettings()
    p.add_argument("--crop-size", type=int, default=d.crop_size, help="training crop side S, px")
    p.add_argument(
        "--fov-margin", type=float, default=d.fov_margin, help="field-of-view margin m >= 1 (tan scale)"
    )
    p.add_argument(
        "--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG quality of the stored crops (1-100)"
    )
    p.add_argument("--threads", type=int, default=1, help="worker processes (1: render in this process)")
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="dataset of the sequence (for messages only)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = CropSettings(args.crop_size, args.fov_margin, args.jpeg_quality)
    except ValueError as e:
        logging.error("bad crop setting: %s", e)
        return 2
    tune_allocator()  # the per-crop buffers stay on the heap (also in the worker processes)
    t0 = time.perf_counter()
    try:
        stats = cache_sequence_crops(
            args.input, args.output, settings, threads=args.threads, progress=not args.no_progress
        )
    except InputError as e:
        logging.error("%s", e)
        return 1
    dt = time.perf_counter() - t0
    logging.info(
        "%s%s: %d frames, %d crops (%d with targets) in %.1f s (%.0f crops/s) -> %s",
        f"[{args.dataset}] " if args.dataset else "",
        args.input,
        stats.n_frames,
        stats.n_rows,
        stats.n_with_targets,
        dt,
        stats.n_rows / max(dt, 1e-9),
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "cache_crops"))
