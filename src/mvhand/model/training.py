"""Training loop: AdamW + cosine, bf16 autocast (GPU by default), DDP (torchrun), atomic checkpoints, exact resume.

``fit(cfg)`` is the whole stage, a short loop after detectron2's plain one: ``_setup`` (process group,
seeds, data, model, optimiser, resumption, loaders) → per epoch :func:`train_one_epoch` → ``_end_epoch``
(:func:`evaluate`, checkpoint, logs) → ``_save_outputs`` (``model.pt``). Outputs in ``cfg.out_dir``::

    model.pt            final weights + model config (:mod:`mvhand.model.checkpoint`; rebuild with
                        :func:`mvhand.model.checkpoint.load_model`)
    checkpoints/        ckpt_<step>.pt (atomic; the newest ``keep_checkpoints`` are kept)
    metrics.csv         one row per epoch (train loss terms, lr, val MPJPE, val 2D errors of the UV head and of
                        the reprojected 3D, trivial-baseline MPJPE)
    steps.csv           one row per optimisation step (loss, lr)
    loss.png            loss / val MPJPE curves
    tb/                 TensorBoard events
    config.json         the resolved training configuration
    val_sequences.txt   held-out training sequences used for validation (one per line)

Resume (``resume="auto"``: the newest checkpoint that loads; unreadable ones are moved aside) restores model,
optimiser, scheduler, RNG states, epoch, the position inside the epoch and that epoch's loss sums; sample
randomness is a pure function of ``(seed, epoch, index)``, so a resumed run reproduces the uninterrupted loss
sequence and ``metrics.csv`` exactly on CPU. Checkpoints and ``model.pt`` hold tensors and plain Python data
only and are read with ``torch.load(weights_only=True)``: a model file from elsewhere cannot run code.

Cluster (8 GPUs, one node): ``torchrun --standalone --nproc_per_node 8 workflow/scripts/train.py ...``
(``WORLD_SIZE > 1`` switches on ``init_process_group("nccl", init_method="env://")``, gloo on the CPU; the
batch size is per process; each rank and each loader worker reads its own share of the crop cache
(:mod:`mvhand.model.stream`), and the logged loss terms are the mean over the ranks; tests/test_ddp.py shows
that 2 CPU ranks resume exactly).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.geometry.cameras import project_pinhole_torch
from mvhand.geometry.mano import ManoModel
from mvhand.io_utils import InputError, atomic_write, pyplot, save_figure
from mvhand.model.checkpoint import (
    MODEL_FORMAT,
    checkpoint_files,
    checkpoint_name,
    config_diff,
    load_checkpoint,
    newest_readable_checkpoint,
    rng_state,
    save_model_file,
    set_rng_state,
)
from mvhand.model.data import AugmentConfig, split_sequences
from mvhand.model.losses import LossWeights, compute_losses, landmark_errors_mm
from mvhand.model.network import HandNet, HandNetConfig, resolve_device
from mvhand.model.stream import (
    CropIndex,
    OrderedStream,
    SampleSettings,
    TrainStream,
    flatten_units,
    unit_eval_targets,
)

__all__ = [
    "AMP_MODES",
    "TrainConfig",
    "TrainingDivergedError",
    "FitResult",
    "fit",
    "evaluate",
    "crop_sequence_names",
]

log = logging.getLogger(__name__)
_EVAL_KP = list(LANDMARKS_TO_EVAL)
AMP_MODES = ("auto", "bf16", "off")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Training stage settings (CLI flags of workflow/scripts/train.py; ``train:`` config section).

    Attributes:
        crops: crop-cache Parquet files of the training split.
        mano_dir: folder with MANO_LEFT.pkl / MANO_RIGHT.pkl.
        out_dir: results/train/<variant>.
        backbone, img_size, views, in_chans, n_points, hidden, position_mode, uv_head: model (see
            :class:`HandNetConfig`).
        batch_size: hands per step and process.
        epochs, iters_per_epoch: schedule length (steps = epochs · iters_per_epoch).
        lr, weight_decay, warmup_iters: AdamW and the linear warm-up before the cosine decay.
        extrinsic_noise: half-width (m) of the shared world shift (0 = the ablation baseline).
        augment: crop/photometric augmentations and view dropout on/off.
        val_fraction: fraction of training sequences held out for validation.
        val_max_instances: cap on validation hand instances (0 = all).
        seed: global seed.
        num_workers: DataLoader worker processes per rank (each reads its own share of the crop cache; started
            anew every epoch; resuming requires the same count).
        device: "auto", "cpu" or "cuda".
        amp: bf16 autocast of the forward passes: "auto" (on CUDA only), "bf16" (also on the CPU) or "off".
        checkpoint_every: steps between checkpoints (a checkpoint is also written after every epoch).
        keep_checkpoints: checkpoints kept on disk.
        threads: torch CPU threads (0 = leave torch's default).
        loss_weights: overrides of :class:`LossWeights`.
        shuffle_row_groups: crop-cache row groups per shuffle window of each loader shard
            (:class:`mvhand.model.stream.TrainStream`; memory ≈ this many row groups per worker).
    """

    crops: list[str]
    mano_dir: str
    out_dir: str
    backbone: str = "mobilenetv3_small_100"
    img_size: int = 96
    views: int = 2
    in_chans: int = 1
    n_points: int = 64
    hidden: int = 512
    position_mode: str = "point"
    uv_head: str = "heatmap"
    pretrained_file: str = ""
    batch_size: int = 16
    epochs: int = 30
    iters_per_epoch: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_iters: int = 40
    extrinsic_noise: float = 0.5
    augment: bool = True
    val_fraction: float = 0.2
    val_max_instances: int = 300
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    threads: int = 0
    loss_weights: dict = field(default_factory=dict)
    shuffle_row_groups: int = 8

    def model_config(self) -> HandNetConfig:
        """The model fields of this config (those named as in :class:`HandNetConfig`) as a HandNetConfig."""
        return HandNetConfig.from_dict(dataclasses.asdict(self))


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    model_path: Path | None
    steps: list[dict]
    epochs: list[dict]
    completed: bool


def crop_sequence_names(files: list[str]) -> list[str]:
    """Sorted unique sequence names of crop-cache files (reads that column; checks the list-column widths)."""
    from mvhand.formats.crop_cache import check_crop_file

    names: set[str] = set()
    for f in files:
        if not Path(f).is_file():
            raise InputError(f, "crop cache file not found", "run the cache_crops stage first")
        check_crop_file(f)
        try:
            names.update(pq.read_table(f, columns=["sequence_name"]).column(0).to_pylist())
        except Exception as exc:  # noqa: BLE001 - any Arrow failure means an unusable file
            raise InputError(
                f, f"cannot read the sequence_name column ({exc})", "re-create the crop cache"
            ) from exc
    return sorted(names)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)


def _as_is(x):
    return x


def _loader(ds, num_workers: int, device=None) -> DataLoader:
    """DataLoader over a stream that yields whole batches (:mod:`mvhand.model.stream`).

    Workers are not persistent: each epoch's iterator starts them with the epoch set in the stream.
    """
    return DataLoader(
        ds,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_as_is,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        pin_memory=device is not None and device.type == "cuda",
    )


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    net: HandNet, loader: Iterable[dict], device: torch.device, amp: bool = False
) -> dict[str, float]:
    """Validation errors (in the flipped world, i.e. mirror invariant); an empty loader gives NaNs and 0.

    Returns:
        ``val_mpjpe_mm``: MPJPE over the 19 evaluated landmarks, mm; ``val_uv_px``: mean 2D error of
        the UV head, pixels of the S×S network crop, over the 19 landmarks in every valid view;
        ``val_reproj_px``: the same for the 3D landmarks projected into the crops (the 2D that
        Neural Smooth starts from — its L2D term only helps where ``val_uv_px`` is lower);
        ``val_instances``.
    """
    was = net.training
    net.eval()
    errs, uv_errs, rp_errs = [], [], []
    for batch in loader:
        b = _to(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(b["images"], b["view_mask"], b["K"], b["T_world_from_crop"], b["anchor"])
        keep = b["has_landmarks"].bool()
        errs.append(landmark_errors_mm(out.landmarks.float()[keep], b["landmarks"].float()[keep]).cpu())
        ok = (b["uv_valid"].bool() & b["view_mask"].bool()[..., None] & keep[:, None, None])[..., _EVAL_KP]
        gt_uv = b["uv"].float()[..., _EVAL_KP, :]
        uv_errs.append((out.uv.float()[..., _EVAL_KP, :] - gt_uv).norm(dim=-1)[ok].cpu())
        B, V = b["view_mask"].shape
        pts = out.landmarks.float()[:, None].expand(B, V, 20, 3)
        proj, _ = project_pinhole_torch(pts, b["T_world_from_crop"].float(), b["K"].float())
        rp_errs.append((proj[..., _EVAL_KP, :] - gt_uv).norm(dim=-1)[ok].cpu())
    net.train(was)

    def _mean(xs: list[torch.Tensor]) -> float:
        x = torch.cat(xs) if xs else torch.zeros(0)
        return float(x.mean()) if x.numel() else float("nan")

    return {
        "val_mpjpe_mm": _mean(errs),
        "val_uv_px": _mean(uv_errs),
        "val_reproj_px": _mean(rp_errs),
        "val_instances": sum(int(x.shape[0]) for x in errs),
    }


def _baseline(
    train_targets: Iterable[tuple[np.ndarray | None, np.ndarray]],
    val_targets: Iterable[tuple[np.ndarray | None, np.ndarray]],
) -> tuple[float, np.ndarray]:
    """Trivial baseline: the mean training pose at the mean training offset from the anchor.

    Args:
        train_targets, val_targets: ``(landmarks (20, 3) or None, anchor (3,))`` per instance, metres
            (:meth:`CropDataset.eval_targets`); streamed, so memory does not grow with the cache.

    Returns:
        ``(val MPJPE in mm (NaN without val GT), mean offset (20, 3) m)``.
    """
    off_sum, n_off = np.zeros((20, 3)), 0
    for lm, anchor in train_targets:
        if lm is not None:
            off_sum += lm - anchor
            n_off += 1
    mean_off = off_sum / max(1, n_off)
    err_sum, n_err = 0.0, 0
    for lm, anchor in val_targets:
        if lm is not None:
            pred = anchor + mean_off
            e = landmark_errors_mm(torch.tensor(pred[None]), torch.tensor(lm[None])).numpy()
            err_sum += float(e.sum())
            n_err += e.size
    return (err_sum / n_err if n_err else float("nan")), mean_off


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_write(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, steps: list[dict], epochs: list[dict]) -> None:
    fig, ax = pyplot().subplots(1, 3, figsize=(15, 3.6))
    if steps:
        s = np.array([r["step"] for r in steps])
        loss = np.array([r["loss"] for r in steps])
        ax[0].plot(s, loss, lw=0.5, alpha=0.4, label="step")
        k = max(1, len(loss) // 50)
        if len(loss) >= k:
            sm = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax[0].plot(s[k - 1 :], sm, lw=1.5, label=f"mean of {k}")
        ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("training loss")
    if steps:
        ax[0].legend()
    if epochs:
        e = [r["epoch"] for r in epochs]
        ax[1].plot(e, [r["val_mpjpe_mm"] for r in epochs], "o-", label="model")
        ax[1].plot(e, [r["val_baseline_mpjpe_mm"] for r in epochs], "--", label="mean pose @ mean position")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("val MPJPE (mm)")
    if epochs:
        ax[1].legend()
        uv = [r.get("val_uv_px", float("nan")) for r in epochs]
        rp = [r.get("val_reproj_px", float("nan")) for r in epochs]
        ax[2].plot(e, uv, "o-", label="2D head")
        ax[2].plot(e, rp, "s--", label="3D reprojected")
        ax[2].legend(title="Neural Smooth helps where 2D head < 3D", fontsize=8, title_fontsize=8)
    ax[2].set_xlabel("epoch")
    ax[2].set_ylabel("val 2D error (px of the network crop)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------


def _dist_setup(device_str: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_str)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_str != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return dist.get_rank(), world, torch.device(f"cuda:{local}" if use_cuda else "cpu")


def _dist_teardown(world: int) -> None:
    """End the DDP process group (also when :func:`fit` stops early at ``max_steps``)."""
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def _mean_over_ranks(vals: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """The mean over the DDP ranks of each rank's loss terms (one all-reduce)."""
    import torch.distributed as dist

    t = torch.tensor(list(vals.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(vals, (t / world).tolist(), strict=True))


@dataclass
class _Progress:
    """Where a run starts: the position and logs restored from a checkpoint (zeros and empty lists when new)."""

    epoch: int = 0  # epoch to start in
    iter_in_epoch: int = 0  # iterations of that epoch already done
    step: int = 0  # global optimisation steps done
    epoch_sums: dict[str, float] = field(default_factory=dict)  # the interrupted epoch's loss sums so far
    epoch_steps: int = 0  # steps those sums cover
    steps: list[dict] = field(default_factory=list)  # steps.csv rows so far
    epochs: list[dict] = field(default_factory=list)  # metrics.csv rows so far


@dataclass
class _Run:
    """One training run as :func:`_setup` builds it; :func:`train_one_epoch` advances ``step``,
    ``steps_hist``, ``epochs_hist`` and ``last_good``."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    net: HandNet
    ddp_net: torch.nn.Module  # ``net``, wrapped in DistributedDataParallel when world > 1
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    weights: LossWeights
    model_cfg: dict
    amp: bool
    stream: TrainStream
    loader: DataLoader
    val_loader: DataLoader | None
    val_names: list[str]
    baseline_mpjpe: float  # mm
    tb: object | None  # SummaryWriter on the main rank
    start: _Progress
    step: int = 0
    steps_hist: list[dict] = field(default_factory=list)
    epochs_hist: list[dict] = field(default_factory=list)
    last_good: Path | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


@dataclass
class EpochStats:
    """What :func:`train_one_epoch` returns."""

    sums: dict[str, float]  # loss terms summed over the epoch's steps (those before a resume included)
    steps: int  # steps the sums cover
    t0: float  # time.time() when the epoch (or its resumed part) started
    interrupted: bool = False  # stopped inside the epoch by max_steps (a checkpoint was written)


def _train_defaults() -> dict:
    return {
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
    }


def _resume(
    cfg: TrainConfig, resume: str, net: HandNet, opt, sched, model_cfg: dict, world: int, is_main: bool
) -> _Progress:
    """Load the checkpoint that ``resume`` names into ``net``/``opt``/``sched`` and the global RNGs.

    ``resume="auto"`` after a settings change (e.g. a Snakemake re-run) deletes the old checkpoints and
    starts over; an explicit checkpoint of other settings is an InputError.
    """
    ckpt_dir = Path(cfg.out_dir) / "checkpoints"
    ckpt_path, ck = None, None
    explicit = resume not in ("auto", "none", "", None)
    if resume == "auto":
        ckpt_path, ck = newest_readable_checkpoint(ckpt_dir, move_aside=is_main)
    elif explicit:
        ckpt_path = Path(resume)
        ck = load_checkpoint(ckpt_path)
    if ck is not None:
        diff = config_diff(ck.get("train_config", {}), dataclasses.asdict(cfg), _train_defaults())
        if ck.get("world_size", 1) != world:
            diff["world_size"] = (ck.get("world_size", 1), world)
        if ck["model_config"] != model_cfg:
            diff["model"] = (ck["model_config"], model_cfg)
        if diff and explicit:
            raise InputError(ckpt_path, f"checkpoint is from another architecture or configuration "
                             f"(checkpoint vs now: {diff})", "delete out_dir/checkpoints or pass --resume none")  # fmt: skip
        if diff:  # resume=auto after a settings change (e.g. a Snakemake re-run): start over
            log.warning("%s was written with other settings %s; starting over", ckpt_path, diff)
            for old in checkpoint_files(ckpt_dir):
                old.unlink(missing_ok=True)
            ck = None
    if ck is None:
        return _Progress()
    try:
        net.load_net_state_dict(ck["model"])
    except ValueError as exc:
        raise InputError(ckpt_path, str(exc), "delete out_dir/checkpoints or pass --resume none") from exc
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    # the interrupted epoch's loss sums so far: its train_* means then cover all its steps
    start = _Progress(ck["epoch"], ck["iter_in_epoch"], ck["step"], dict(ck.get("epoch_sums", {})),
                      int(ck.get("epoch_steps", 0)), ck["steps"], ck["epochs"])  # fmt: skip
    log.info("resumed from %s (epoch %d, iteration %d, step %d)", ckpt_path, start.epoch, start.iter_in_epoch,
             start.step)  # fmt: skip
    return start


@dataclass
class _Data:
    """The training and validation data of a run (:func:`_data`)."""

    train_set: SampleSettings
    val_set: SampleSettings
    train_index: CropIndex
    val_index: CropIndex | None  # None without validation sequences
    val_select: np.ndarray | None  # (n,) validation instances kept by ``val_max_instances``; None = all
    val_names: list[str]
    baseline_mpjpe: float  # mm; the trivial baseline's validation MPJPE (NaN without validation)


def _data(cfg: TrainConfig, mano: ManoModel, device: torch.device, out: Path, is_main: bool) -> _Data:
    """Split the crop cache's sequences into training / validation, index them, and score the trivial
    baseline on the validation instances. Writes ``val_sequences.txt`` (main rank).

    Raises:
        InputError: unreadable crop files, no annotated training instance.
    """
    names = crop_sequence_names(list(cfg.crops))
    train_names, val_names = split_sequences(names, cfg.val_fraction, cfg.seed)
    if is_main:
        with atomic_write(out / "val_sequences.txt") as fh:
            fh.write("".join(f"{n}\n" for n in val_names))
    aug = AugmentConfig(enabled=cfg.augment, extrinsic_noise=cfg.extrinsic_noise)
    # samples are made in loader workers: their MANO targets use a CPU copy (no CUDA in forked workers)
    data_mano = mano if device.type == "cpu" else ManoModel.from_dir(cfg.mano_dir)
    common = dict(
        img_size=cfg.img_size, views=cfg.views, in_chans=cfg.in_chans, seed=cfg.seed, mano=data_mano
    )
    train_set = SampleSettings(train=True, augment=aug, **common)
    val_set = SampleSettings(train=False, **common)
    train_index = CropIndex(cfg.crops, train_names, require_gt=True)
    if len(train_index) == 0:
        raise InputError(
            cfg.crops[0] if cfg.crops else None,
            "no annotated hand instances in the training crops",
            "pass the crop cache of the train split",
        )
    val_index = CropIndex(cfg.crops, val_names, require_gt=True) if val_names else None
    val_select = None
    if val_index is not None and cfg.val_max_instances > 0 and len(val_index) > cfg.val_max_instances:
        val_select = np.unique(
            np.linspace(0, len(val_index) - 1, cfg.val_max_instances).round().astype(np.int64)
        )
    n_val = 0
    if val_index is not None:
        n_val = len(val_index) if val_select is None else len(val_select)
        chosen = None if val_select is None else set(val_select.tolist())
        val_targets = (
            t for i, t in enumerate(unit_eval_targets(val_index, val_set)) if chosen is None or i in chosen
        )
        baseline_mpjpe, _ = _baseline(unit_eval_targets(train_index, train_set), val_targets)
    else:
        baseline_mpjpe = float("nan")
    log.info("train: %d instances of %d sequences; val: %d instances of %d sequences; baseline %.1f mm",
             len(train_index), len(train_names), n_val, len(val_names), baseline_mpjpe)  # fmt: skip
    return _Data(train_set, val_set, train_index, val_index, val_select, val_names, baseline_mpjpe)


def _setup(cfg: TrainConfig, resume: str) -> _Run:
    """Process group, seeds, data, validation baseline, model, optimiser, resumption, loaders, TensorBoard.

    Writes ``config.json`` and ``val_sequences.txt`` (main rank).
    """
    rank, world, device = _dist_setup(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    is_main = rank == 0
    if is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.json") as fh:
            json.dump(dataclasses.asdict(cfg), fh, indent=2)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002
    random.seed(cfg.seed)

    mano = ManoModel.from_dir(cfg.mano_dir).to(device)
    data = _data(cfg, mano, device, out, is_main)

    net = HandNet.from_config(cfg.model_config(), mano=mano.right, pretrained_file=cfg.pretrained_file).to(
        device
    )
    total_steps = cfg.epochs * cfg.iters_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.warmup_iters))
    weights = LossWeights(**cfg.loss_weights)
    model_cfg = cfg.model_config().to_dict()
    start = _resume(cfg, resume, net, opt, sched, model_cfg, world, is_main)

    ddp_net = net
    if world > 1:
        ddp_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.amp not in AMP_MODES:
        raise InputError(None, f"train amp {cfg.amp!r} is not one of {', '.join(AMP_MODES)}", "use auto")
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    stream = TrainStream(data.train_index, data.train_set, cfg.batch_size, cfg.iters_per_epoch,
                         cfg.num_workers, rank, world, cfg.shuffle_row_groups)  # fmt: skip
    loader = _loader(stream, cfg.num_workers, device)
    val_loader = None
    if data.val_index is not None:
        val_stream = OrderedStream(data.val_index, data.val_set, cfg.batch_size, data.val_select)
        val_loader = _loader(val_stream, min(cfg.num_workers, 2), device)

    tb = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"), purge_step=start.step)
    net.train()
    return _Run(cfg, rank, world, device, out, net, ddp_net, opt, sched, weights, model_cfg, amp, stream,
                loader, val_loader, data.val_names, data.baseline_mpjpe, tb, start, start.step, start.steps,
                start.epochs)  # fmt: skip


def _save_checkpoint(run: _Run, epoch: int, it: int, stats: EpochStats) -> Path:
    """Write ``checkpoints/ckpt_<step>.pt`` (resume at iteration ``it`` of ``epoch``); prune old ones."""
    path = run.ckpt_dir / checkpoint_name(run.step)
    state = {
        "format": MODEL_FORMAT, "model_config": run.model_cfg, "model": run.net.net_state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "rng": rng_state(),
        "epoch": epoch, "iter_in_epoch": it, "step": run.step, "steps": run.steps_hist,
        "epochs": run.epochs_hist, "train_config": dataclasses.asdict(run.cfg), "epoch_sums": dict(stats.sums),
        "epoch_steps": stats.steps, "world_size": run.world,
    }  # fmt: skip
    save_model_file(state, path)
    for old in checkpoint_files(run.ckpt_dir)[: -max(1, run.cfg.keep_checkpoints)]:
        old.unlink(missing_ok=True)
    return path


def _write_logs(run: _Run) -> None:
    """``steps.csv``, ``metrics.csv`` and ``loss.png`` from the history so far."""
    _write_csv(run.out / "steps.csv", run.steps_hist)
    _write_csv(run.out / "metrics.csv", run.epochs_hist)
    _plot(run.out / "loss.png", run.steps_hist, run.epochs_hist)


def _train_step(run: _Run, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimisation step on ``batch``; returns the loss terms (the mean over the ranks under DDP).

    Raises:
        TrainingDivergedError: non-finite loss (nothing is updated).
    """
    b = _to(batch, run.device)
    with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        out = run.ddp_net(b["images"], b["view_mask"], b["K"], b["T_world_from_crop"], b["anchor"])
    terms = compute_losses(out, b, run.weights)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        bad = {k: float(v.detach()) for k, v in terms.items()}
        raise TrainingDivergedError(
            f"non-finite training loss at step {run.step + 1} (terms {bad}); stopped. Last good checkpoint: "
            f"{run.last_good or 'none'} (lower --lr or check the crop cache, then resume)"
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.net.parameters(), 10.0)
    run.opt.step()
    run.sched.step()
    run.step += 1
    vals = {k: float(v.detach()) for k, v in terms.items()}
    if run.world > 1:  # log the global batch's terms (the mean over ranks), not rank 0's slice
        vals = _mean_over_ranks(vals, run.world, run.device)
    return vals


def train_one_epoch(run: _Run, epoch: int, max_steps: int | None = None) -> EpochStats:
    """The optimisation steps of ``epoch`` (0-based; a resumed epoch from its saved iteration on).

    Logs each step (``steps_hist``, TensorBoard), writes a checkpoint every ``checkpoint_every`` steps
    inside the epoch, and stops inside the epoch at global step ``max_steps`` (with a checkpoint).
    """
    cfg = run.cfg
    it0 = run.start.iter_in_epoch if epoch == run.start.epoch else 0
    run.stream.set_epoch(epoch, it0)
    resumed = epoch == run.start.epoch and it0 > 0
    stats = EpochStats(dict(run.start.epoch_sums) if resumed else {}, run.start.epoch_steps if resumed else 0,
                       time.time())  # fmt: skip
    bar = tqdm(run.loader, total=cfg.iters_per_epoch - it0, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not run.is_main, leave=False, mininterval=5.0)  # fmt: skip
    it = it0
    for batch in bar:
        vals = _train_step(run, batch)
        it += 1
        stats.steps += 1
        for k, v in vals.items():
            stats.sums[k] = stats.sums.get(k, 0.0) + v
        lr = run.sched.get_last_lr()[0]
        run.steps_hist.append({"step": run.step, "epoch": epoch + 1, "loss": vals["loss"], "lr": lr})
        if run.tb is not None:
            for k, v in vals.items():
                run.tb.add_scalar(f"train/{k}", v, run.step)
            run.tb.add_scalar("train/lr", lr, run.step)
        bar.set_postfix(loss=f"{vals['loss']:.3f}", mpjpe=f"{vals['kp3d']:.1f}mm")
        stop = max_steps is not None and run.step >= max_steps
        if run.is_main and it < cfg.iters_per_epoch and (run.step % cfg.checkpoint_every == 0 or stop):
            run.last_good = _save_checkpoint(run, epoch, it, stats)
        if stop and it < cfg.iters_per_epoch:
            stats.interrupted = True
            return stats
    bar.close()
    return stats


def _end_epoch(run: _Run, epoch: int, stats: EpochStats) -> None:
    """Main rank: :func:`evaluate`, the ``metrics.csv`` row, TensorBoard, the end-of-epoch checkpoint, logs."""
    row = {"epoch": epoch + 1, "step": run.step, "lr": run.sched.get_last_lr()[0]}
    row |= {f"train_{k}": v / max(1, stats.steps) for k, v in stats.sums.items()}
    if not run.is_main:
        return
    val_batches = flatten_units(run.val_loader) if run.val_loader is not None else ()
    ev = evaluate(run.net, val_batches, run.device, run.amp)
    row |= ev | {"val_baseline_mpjpe_mm": run.baseline_mpjpe, "epoch_time_s": time.time() - stats.t0}
    run.epochs_hist.append(row)
    log.info("epoch %d/%d: loss %.4f, train 3D %.1f mm, val MPJPE %.1f mm (baseline %.1f mm), "
             "val 2D %.2f px (3D reprojected %.2f px), %.0f s",
             epoch + 1, run.cfg.epochs, row.get("train_loss", float("nan")), row.get("train_kp3d", float("nan")),
             ev["val_mpjpe_mm"], run.baseline_mpjpe, ev["val_uv_px"], ev["val_reproj_px"],
             row["epoch_time_s"])  # fmt: skip
    if run.tb is not None:
        run.tb.add_scalar("val/mpjpe_mm", ev["val_mpjpe_mm"], run.step)
        run.tb.add_scalar("val/uv_px", ev["val_uv_px"], run.step)
        run.tb.add_scalar("val/reproj_px", ev["val_reproj_px"], run.step)
        run.tb.add_scalar("val/baseline_mpjpe_mm", run.baseline_mpjpe, run.step)
    run.last_good = _save_checkpoint(run, epoch + 1, 0, stats)
    _write_logs(run)


def _save_outputs(run: _Run) -> Path:
    """Main rank: the logs (also when resumed from the final checkpoint: a re-run of a finished training)
    and ``model.pt``. Returns the path of ``model.pt``."""
    model_path = run.out / "model.pt"
    if run.is_main:
        _write_logs(run)
        final = {
            "format": MODEL_FORMAT, "model_config": run.model_cfg, "model": run.net.net_state_dict(),
            "train_config": dataclasses.asdict(run.cfg), "val_sequences": run.val_names,
            "epochs": run.epochs_hist,
        }  # fmt: skip
        save_model_file(final, model_path)
    return model_path


def _close(run: _Run, write_logs: bool = False) -> None:
    """Close TensorBoard, write the logs if asked (main rank), end the process group."""
    if run.tb is not None:
        run.tb.close()
    if write_logs and run.is_main:
        _write_logs(run)
    _dist_teardown(run.world)


def fit(cfg: TrainConfig, resume: str = "auto", max_steps: int | None = None) -> FitResult:
    """Train (or resume) a model; see the module docstring for the outputs.

    ``_setup`` → per epoch ``train_one_epoch`` → ``_end_epoch`` (:func:`evaluate`, checkpoint, logs) →
    ``_save_outputs``.

    Args:
        cfg: training configuration.
        resume: ``"auto"`` (newest readable checkpoint in ``out_dir/checkpoints`` if any), ``"none"``
            (start over) or a checkpoint path.
        max_steps: stop after this global step (simulates an interruption; a checkpoint is written).

    Returns:
        :class:`FitResult` (``model_path`` is None when stopped early by ``max_steps``).

    Raises:
        InputError: bad inputs (no crops, no ground truth, corrupt/foreign checkpoint, …).
        TrainingDivergedError: non-finite loss.
    """
    run = _setup(cfg, resume)
    for epoch in range(run.start.epoch, cfg.epochs):
        stats = train_one_epoch(run, epoch, max_steps)
        if stats.interrupted:
            _close(run, write_logs=True)
            return FitResult(None, run.steps_hist, run.epochs_hist, False)
        _end_epoch(run, epoch, stats)
        if max_steps is not None and run.step >= max_steps and epoch + 1 < cfg.epochs:
            _close(run)
            return FitResult(None, run.steps_hist, run.epochs_hist, False)
    model_path = _save_outputs(run)
    _close(run)
    return FitResult(model_path, run.steps_hist, run.epochs_hist, True)
