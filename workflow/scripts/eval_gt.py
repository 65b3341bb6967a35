#!/usr/bin/env python
"""Ground-truth archive for local evaluation (both datasets in one archive, as the organisers' one).

Either merge per-dataset GT archives (the synthetic world ships ``<data_root>/<ds>/gt.tar.gz`` for its
test splits)::

    python workflow/scripts/eval_gt.py --archive resources/data/umetrack/gt.tar.gz \
        --archive resources/data/hot3d/gt.tar.gz --out results/evaluate/gt.tar.gz

or, for real data whose test annotations are private, build it from held-out training sequences (the
toolkit README's recommendation) — the validation sequences chosen by ``train``::

    python workflow/scripts/eval_gt.py --tars umetrack=resources/data/umetrack/train \
        --sequences results/train/full/val_sequences.txt --mano-dir resources/mano --out results/evaluate/gt.tar.gz
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from mvhand.cli import run
from mvhand.io_utils import InputError
from mvhand.post.report import merge_gt_archives

log = logging.getLogger("eval_gt")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--archive", action="append", default=[], type=Path, help="per-dataset GT archive to merge"
    )
    p.add_argument(
        "--tars", action="append", default=[], metavar="DS=SPLIT_DIR", help="build GT from these tars"
    )
    p.add_argument("--sequences", type=Path, help="text file of sequence names to keep (one per line)")
    p.add_argument("--mano-dir", type=Path, help="MANO folder packed into the archive (with --tars)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    archives = list(args.archive)
    for a in archives:
        if not a.is_file():
            raise InputError(a, "GT archive not found", "run the download stage (synthetic source writes it)")
    with tempfile.TemporaryDirectory(prefix="mvhand_gt_") as tmp:
        if args.tars:
            from mvhand.formats.submission import build_ground_truth, write_gt_archive

            if args.mano_dir is None:
                raise InputError(None, "--mano-dir is required with --tars")
            keep = None
            if args.sequences:
                keep = {ln.strip() for ln in args.sequences.read_text().splitlines() if ln.strip()}
            gts = {}
            for item in args.tars:
                ds, _, folder = item.partition("=")
                tars = sorted(Path(folder).glob("*.tar"))
                if keep is not None:
                    tars = [t for t in tars if t.name.split(".")[0] in keep]
                if not tars:
                    raise InputError(folder, f"no {ds} tars to build ground truth from")
                gts[ds] = build_ground_truth(tars, ds)
            built = Path(tmp) / "built.tar.gz"
            write_gt_archive(built, gts, args.mano_dir)
            archives.append(built)
        if not archives:
            raise InputError(None, "nothing to do: give --archive and/or --tars")
        merge_gt_archives(archives, args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "eval_gt"))
