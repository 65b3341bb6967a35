#!/usr/bin/env python
"""Stage `predict`: run a trained model over crop-cache Parquet files and write per-hand predictions.

Example::

    python workflow/scripts/predict.py --model results/train/full/model.pt \
        --crops-list results/crops/umetrack/pose_test.txt --mano-dir resources/mano \
        --out results/predict/full/umetrack/pose_test.parquet --betas gt

Validation predictions on held-out training sequences: add ``--sequences-file
results/train/full/val_sequences.txt`` and pass the train-split crops. ``--crops FILE...`` names Parquet
files directly (by hand); the workflow passes list files. Output schema: docs/model.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mvhand.cli import add_file_list_arguments, default_of, listed_files, run  # noqa: E402
from mvhand.io_utils import InputError  # noqa: E402
from mvhand.model.inference import predict, read_sequences_file  # noqa: E402

log = logging.getLogger("predict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by the train stage")
    add_file_list_arguments(p, "crops", "crop-cache Parquet files")
    p.add_argument("--mano-dir", required=True, help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--sequences-file", default=None, help="only these sequences (e.g. val_sequences.txt)")
    p.add_argument(
        "--betas",
        choices=("pred", "gt"),
        default=default_of(predict, "betas"),
        help="betas for wrist_xform (gt falls back to pred)",
    )
    p.add_argument("--batch-size", type=int, default=default_of(predict, "batch_size"))
    p.add_argument("--device", default=default_of(predict, "device"), help="auto, cpu or cuda")
    p.add_argument("--num-workers", type=int, default=default_of(predict, "num_workers"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        crops = listed_files(a.crops, a.crops_list, "crops")
        seqs = read_sequences_file(a.sequences_file) if a.sequences_file else None
        table = predict(a.model, crops, a.mano_dir, a.out, sequences=seqs, betas=a.betas,
                        batch_size=a.batch_size, device=a.device, num_workers=a.num_workers)  # fmt: skip
    except InputError as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %s (%d hands)", a.out, table.num_rows)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "predict"))
