"""Stage `pretrained_weights`: fetch timm's pretrained backbone weights from the Hugging Face Hub.

A local rule (it needs the internet, which cluster compute nodes often lack): the train job then reads the
file offline through ``--pretrained-file``. Without internet, fetch the same file elsewhere with
``hf download timm/<model> model.safetensors --local-dir <dir>`` and set ``train.pretrained_file`` instead.

Example::

    python workflow/scripts/pretrained_weights.py --backbone hiera_base_224 --pretrained mae_in1k_ft_in1k \
        --out resources/pretrained/hiera_base_224/mae_in1k_ft_in1k.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mvhand.cli import run
from mvhand.download import download_pretrained
from mvhand.model.network import pretrained_model_name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", required=True, help="timm model name (train.backbone), e.g. hiera_base_224")
    ap.add_argument(
        "--pretrained",
        required=True,
        help="timm pretrained tag (mae_in1k_ft_in1k) or full name (hiera_base_224.mae)",
    )
    ap.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    ap.add_argument(
        "--token", default=None, help="Hugging Face token (default: `hf auth login` or $HF_TOKEN)"
    )
    args = ap.parse_args(argv)
    # InputError/ValueError (unknown tag, no network, bad file) -> one clear line and exit status 1 (cli.run)
    name = pretrained_model_name(args.backbone, args.pretrained)
    download_pretrained(name, args.out, token=args.token or os.environ.get("HF_TOKEN"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "pretrained_weights"))
