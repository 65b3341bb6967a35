"""Stage `download`: fetch, generate or link one dataset into the challenge layout + manifest.json.

Example (what `snakemake -n -p downloads` prints):
    python workflow/scripts/download.py --dataset umetrack --output-dir resources/data \
        --mano-dir resources/mano --source synthetic --seed 0 --size tiny
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mvhand.cli import run
from mvhand.constants import DATASETS
from mvhand.download import SOURCES, download_dataset
from mvhand.io_utils import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=SOURCES, default="synthetic", help="where the data comes from")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument(
        "--output-dir", required=True, help="data root; the dataset goes to <output-dir>/<dataset>/"
    )
    p.add_argument("--mano-dir", required=True, help="folder with MANO_LEFT.pkl / MANO_RIGHT.pkl")
    p.add_argument("--seed", type=int, default=0, help="synthetic generator seed")
    p.add_argument("--size", choices=("default", "tiny"), default="default", help="synthetic dataset size")
    p.add_argument("--local-dir", default=None, help="existing copy of the dataset (--source local)")
    p.add_argument(
        "--verify",
        choices=("sha256", "size", "none"),
        default="sha256",
        help="check of downloaded files against the repository metadata (--source huggingface)",
    )
    p.add_argument(
        "--revision",
        default="",
        help="Hugging Face commit sha, branch or tag (default: the commit an earlier run recorded, else main's)",
    )
    p.add_argument("--force", action="store_true", help="regenerate / download again")
    p.add_argument("--token", default=None, help="Hugging Face token (default: `hf auth login` or $HF_TOKEN)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        download_dataset(
            args.source,
            args.dataset,
            args.output_dir,
            args.mano_dir,
            seed=args.seed,
            size=args.size,
            local_dir=args.local_dir,
            force=args.force,
            token=args.token or os.environ.get("HF_TOKEN") or None,
            verify=args.verify,
            progress=not args.no_progress,
            revision=args.revision,
        )
    except InputError as e:
        logging.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "download"))
