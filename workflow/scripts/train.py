#!/usr/bin/env python
"""Stage `train`: train the multi-view hand network on crop-cache Parquet files.

Example (CPU default config)::

    python workflow/scripts/train.py --crops-list results/crops/umetrack/train.txt \
        --mano-dir resources/mano --out-dir results/train/full --extrinsic-noise 0.5

8 GPUs on one node (DDP; the `train` rule launches this itself when train.gpus > 1)::

    python -m torch.distributed.run --standalone --nproc_per_node 8 workflow/scripts/train.py ... --device cuda

Writes model.pt, checkpoints/, metrics.csv, steps.csv, loss.png, tb/, config.json, val_sequences.txt
into --out-dir; re-running resumes from the newest checkpoint (--resume auto).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mvhand.cli import add_file_list_arguments, listed_files, run  # noqa: E402
from mvhand.io_utils import InputError  # noqa: E402
from mvhand.model.losses import LossWeights  # noqa: E402
from mvhand.model.training import AMP_MODES, TrainConfig, TrainingDivergedError, fit  # noqa: E402

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig(crops=[], mano_dir="", out_dir="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs / outputs")
    add_file_list_arguments(io, "crops", "crop-cache Parquet files of the training split")
    io.add_argument("--mano-dir", required=True, help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl")
    io.add_argument("--out-dir", required=True, help="results/train/<variant>")
    io.add_argument("--resume", default="auto", help="auto (newest checkpoint), none, or a checkpoint path")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default=d.backbone, help="timm model name (paper: hiera_base_224)")
    m.add_argument("--img-size", type=int, default=d.img_size, help="training crop side in px")
    m.add_argument("--views", type=int, default=d.views, help="view slots per hand")
    m.add_argument("--in-chans", type=int, default=d.in_chans, choices=(1, 3), help="image channels")
    m.add_argument("--n-points", type=int, default=d.n_points, help="3D feature points per FTL branch")
    m.add_argument("--hidden", type=int, default=d.hidden, help="MLP width")
    m.add_argument("--position-mode", default=d.position_mode, choices=("point", "mlp"), help="root read-off")
    m.add_argument(
        "--uv-head",
        default=d.uv_head,
        choices=("heatmap", "regress"),
        help="2D head: soft-argmax heatmaps or MLP",
    )
    m.add_argument(
        "--pretrained-file",
        default=d.pretrained_file,
        help="local timm weights of the backbone (offline; e.g. hiera_base_224)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=d.batch_size, help="hands per step and process")
    o.add_argument("--epochs", type=int, default=d.epochs)
    o.add_argument("--iters-per-epoch", type=int, default=d.iters_per_epoch)
    o.add_argument("--lr", type=float, default=d.lr)
    o.add_argument("--weight-decay", type=float, default=d.weight_decay)
    o.add_argument("--warmup-iters", type=int, default=d.warmup_iters)
    o.add_argument(
        "--extrinsic-noise", type=float, default=d.extrinsic_noise, help="world-shift half-width, m (0 = off)"
    )
    o.add_argument("--no-augment", action="store_true", help="switch off crop/photometric augmentation")
    o.add_argument("--val-fraction", type=float, default=d.val_fraction)
    o.add_argument("--val-max-instances", type=int, default=d.val_max_instances, help="0 = all")
    o.add_argument("--seed", type=int, default=d.seed)
    o.add_argument(
        "--loss-weights",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help=f"overrides of the loss weights ({', '.join(f'{k}={v:g}' for k, v in LossWeights().to_dict().items())})",
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers per rank")
    r.add_argument(
        "--shuffle-row-groups", type=int, default=d.shuffle_row_groups,
        help="crop-cache row groups per shuffle window of each loader worker",
    )  # fmt: skip
    r.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    r.add_argument("--amp", default=d.amp, choices=AMP_MODES,
                   help="bf16 autocast: auto (CUDA only), bf16 (also on the CPU) or off")  # fmt: skip
    r.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0 = default)")
    r.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints"
    )
    return p.parse_args(argv)


def parse_loss_weights(items: list[str]) -> dict[str, float]:
    """``["uv=3", "heatmap=0.1"]`` → ``{"uv": 3.0, "heatmap": 0.1}``; unknown names and bad numbers raise
    ValueError naming the valid names."""
    valid = LossWeights().to_dict()
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in valid:
            raise ValueError(f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(valid)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a number") from None
        if not math.isfinite(out[name]) or out[name] < 0:
            raise ValueError(f"{item!r}: weights must be finite and >= 0")
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        loss_weights = parse_loss_weights(a.loss_weights)
    except ValueError as exc:
        log.error("--loss-weights: %s", exc)
        return 2
    try:
        crops = listed_files(a.crops, a.crops_list, "crops")
    except InputError as exc:
        log.error("%s", exc)
        return 2
    cfg = TrainConfig(
        crops=crops, mano_dir=a.mano_dir, out_dir=a.out_dir, backbone=a.backbone, img_size=a.img_size,
        views=a.views, in_chans=a.in_chans, n_points=a.n_points, hidden=a.hidden, position_mode=a.position_mode,
        uv_head=a.uv_head,
        pretrained_file=a.pretrained_file, batch_size=a.batch_size,
        epochs=a.epochs, iters_per_epoch=a.iters_per_epoch, lr=a.lr, weight_decay=a.weight_decay,
        warmup_iters=a.warmup_iters, extrinsic_noise=a.extrinsic_noise, augment=not a.no_augment,
        val_fraction=a.val_fraction, val_max_instances=a.val_max_instances, seed=a.seed,
        num_workers=a.num_workers, shuffle_row_groups=a.shuffle_row_groups, device=a.device, amp=a.amp,
        checkpoint_every=a.checkpoint_every, threads=a.threads,
        loss_weights=loss_weights,
    )  # fmt: skip
    try:
        res = fit(cfg, resume=a.resume)
    except (InputError, TrainingDivergedError) as exc:
        log.error("%s", exc)
        return 1
    last = res.epochs[-1] if res.epochs else {}
    log.info("done: %s (val MPJPE %.1f mm, baseline %.1f mm)", res.model_path,
             last.get("val_mpjpe_mm", float("nan")), last.get("val_baseline_mpjpe_mm", float("nan")))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "train"))
