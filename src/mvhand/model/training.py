"""Training loop: AdamW + cosine, bf16 autocast (GPU by default), DDP (torchrun), atomic checkpoints, exact resume.

``fit(cfg)`` is the whole stage (``setup → train_one_epoch → evaluate`` per epoch, after detectron2's
plain loop). Outputs in ``cfg.out_dir``::

    model.pt            final weights + model config (rebuild with :func:`load_model`)
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

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.geometry.cameras import project_pinhole_torch
from mvhand.geometry.mano import ManoModel
from mvhand.io_utils import InputError, atomic_path, atomic_write, pyplot, save_figure
from mvhand.model.data import AugmentConfig, split_sequences
from mvhand.model.losses import LossWeights, compute_losses, landmark_errors_mm
from mvhand.model.network import HandNet, HandNetConfig
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
    "load_model",
    "load_checkpoint",
    "resolve_device",
    "crop_sequence_names",
]

log = logging.getLogger(__name__)
_EVAL_KP = list(LANDMARKS_TO_EVAL)
AMP_MODES = ("auto", "bf16", "off")
_CKPT_RE = re.compile(r"ckpt_(\d+)\.pt$")
MODEL_FORMAT = "mvhand.handnet/1"


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
    epochs: int = 12
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


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda if available else cpu; ``cuda`` without a GPU raises InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            None, f"device {device!r} requested but no CUDA GPU is available", "use --device cpu"
        )
    return torch.device(device)


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
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    """Every global RNG state as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - global state is what must be restored
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    key = np.asarray(n["key"].numpy(), np.uint32)
    np.random.set_state((n["kind"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint / model file written by this module, without running code from it.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain Python data only (what
    :func:`fit` writes, RNG states included). A file that pickles anything else — e.g. a ``model.pt``
    from elsewhere carrying a payload that would run a shell command — is refused; nothing in it runs.

    Raises:
        InputError: unreadable/corrupt file, a file holding other pickled objects (refused), or not an
            mvhand model file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model/checkpoint file not found", "train a model first (train stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) or "?"
        except Exception:  # noqa: BLE001 - the names are only for the message
            names = "?"
        raise InputError(
            path,
            f"refused to load: it pickles Python objects other than tensors and plain data ({names}), which "
            "could run code; nothing in it was executed",
            "use model files written by mvhand's train stage that you trust; a checkpoint of an older mvhand "
            "cannot be resumed (delete it: training resumes from an older checkpoint or starts over)",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated/corrupt files
        raise InputError(
            path,
            f"corrupt or truncated checkpoint ({type(exc).__name__}: {exc})",
            "delete it and resume from an older one or retrain",
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT or "model_config" not in ckpt:
        raise InputError(
            path, "not an mvhand HandNet model/checkpoint file", "pass a model.pt written by train.py"
        )
    return ckpt


def _save(obj: dict, path: Path) -> None:
    """``torch.save`` atomically. Through a Python file object, so that a full disk surfaces as the
    ``OSError(ENOSPC)`` that :func:`atomic_path` turns into an InputError naming ``path`` and the fix
    (torch's own file writer reports it as an opaque ``inline_container … unexpected pos`` RuntimeError)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # the zip writer's clean-up can mask the file object's OSError
            err = exc.__context__
            while err is not None and not isinstance(err, OSError):
                err = err.__context__
            if err is None:
                raise
            raise err from exc


def _check_finite_weights(path: str | os.PathLike, state: dict) -> None:
    """Refuse a model whose weights hold NaN/inf: every prediction from it would be NaN."""
    floats = {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}
    bad = [k for k, v in floats.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(
            path,
            f"{len(bad)} of {len(floats)} weight tensors hold NaN or inf values ({', '.join(bad[:3])}"
            f"{', …' if len(bad) > 3 else ''}); every prediction from it would be NaN",
            "retrain the model (with a lower lr if it diverged) or pass an earlier, finite checkpoint from "
            "the training's checkpoints/ folder",
        )


def _newest_readable_checkpoint(ckpt_dir: Path, move_aside: bool = True) -> tuple[Path | None, dict | None]:
    """The newest checkpoint of ``ckpt_dir`` that loads (``resume="auto"``).

    Unreadable ones (truncated by a crash, corrupt, refused) are skipped with a warning and, if
    ``move_aside`` (the main rank), renamed to ``*.unreadable`` so that they are neither resumed from nor
    counted as the newest checkpoints when old ones are pruned.
    """
    for path in reversed(_checkpoints(ckpt_dir)):
        try:
            return path, load_checkpoint(path)
        except InputError as exc:
            log.warning("skipping checkpoint %s: %s", path, exc.problem)
            if move_aside:
                with contextlib.suppress(FileNotFoundError):
                    path.replace(path.with_name(path.name + ".unreadable"))
    return None, None


def _build_net(model_cfg: dict, mano: ManoModel | None, path: str | os.PathLike) -> HandNet:
    try:
        return HandNet.from_config(model_cfg, mano=None if mano is None else mano.right)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            path, f"cannot rebuild the model {model_cfg} ({exc})", "check the timm version"
        ) from exc


# Settings that may change between an interrupted run and its resumption (num_workers may not: the loader
# shards the data per worker, so the sample order depends on it).
_RUNTIME_KEYS = frozenset({"device", "threads", "checkpoint_every", "keep_checkpoints", "out_dir"})


def _config_diff(old: dict, new: dict) -> dict:
    """Experiment settings that differ between a checkpoint's training config and the current one.

    A setting the checkpoint's mvhand did not have yet (e.g. ``amp``) counts as its default value.
    """
    defaults = {
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
    }
    old = {k: v for k, v in defaults.items() if k in new} | old
    keys = (set(old) | set(new)) - _RUNTIME_KEYS
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


def load_model(
    path: str | os.PathLike, mano: ManoModel | None, device: torch.device | str = "cpu"
) -> HandNet:
    """Rebuild a trained :class:`HandNet` from ``model.pt`` (or a checkpoint), in eval mode.

    Args:
        path: model file written by :func:`fit`.
        mano: MANO model (its right layer is attached), or None for a net without MANO output.
        device: target device.

    Raises:
        InputError: see :func:`load_checkpoint`; also weights holding NaN/inf (the file is named).
    """
    ckpt = load_checkpoint(path)
    _check_finite_weights(path, ckpt["model"])
    net = _build_net(ckpt["model_config"], mano, path)
    try:
        net.load_net_state_dict(ckpt["model"])
    except ValueError as exc:
        raise InputError(path, str(exc), "the file belongs to another architecture") from exc
    return net.to(device).eval()


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("ckpt_*.pt") if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


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


def fit(cfg: TrainConfig, resume: str = "auto", max_steps: int | None = None) -> FitResult:
    """Train (or resume) a model; see the module docstring for the outputs.

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
    rank, world, device = _dist_setup(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    is_main = rank == 0
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.json") as fh:
            json.dump(dataclasses.asdict(cfg), fh, indent=2)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002
    random.seed(cfg.seed)

    mano = ManoModel.from_dir(cfg.mano_dir).to(device)
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

    net = HandNet.from_config(cfg.model_config(), mano=mano.right, pretrained_file=cfg.pretrained_file).to(
        device
    )
    total_steps = cfg.epochs * cfg.iters_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.warmup_iters))
    weights = LossWeights(**cfg.loss_weights)
    model_cfg = cfg.model_config().to_dict()

    start_epoch, start_iter, step = 0, 0, 0
    resumed_sums, resumed_n = {}, 0
    steps_hist: list[dict] = []
    epochs_hist: list[dict] = []
    ckpt_path, ck = None, None
    explicit = resume not in ("auto", "none", "", None)
    if resume == "auto":
        ckpt_path, ck = _newest_readable_checkpoint(ckpt_dir, move_aside=is_main)
    elif explicit:
        ckpt_path = Path(resume)
        ck = load_checkpoint(ckpt_path)
    if ck is not None:
        diff = _config_diff(ck.get("train_config", {}), dataclasses.asdict(cfg))
        if ck.get("world_size", 1) != world:
            diff["world_size"] = (ck.get("world_size", 1), world)
        if ck["model_config"] != model_cfg:
            diff["model"] = (ck["model_config"], model_cfg)
        if diff and explicit:
            raise InputError(ckpt_path, f"checkpoint is from another architecture or configuration "
                             f"(checkpoint vs now: {diff})", "delete out_dir/checkpoints or pass --resume none")  # fmt: skip
        if diff:  # resume=auto after a settings change (e.g. a Snakemake re-run): start over
            log.warning("%s was written with other settings %s; starting over", ckpt_path, diff)
            for old in _checkpoints(ckpt_dir):
                old.unlink(missing_ok=True)
            ck = None
    if ck is not None:
        try:
            net.load_net_state_dict(ck["model"])
        except ValueError as exc:
            raise InputError(ckpt_path, str(exc), "delete out_dir/checkpoints or pass --resume none") from exc
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        start_epoch, start_iter, step = ck["epoch"], ck["iter_in_epoch"], ck["step"]
        steps_hist, epochs_hist = ck["steps"], ck["epochs"]
        # the interrupted epoch's loss sums so far: its train_* means then cover all its steps
        resumed_sums, resumed_n = dict(ck.get("epoch_sums", {})), int(ck.get("epoch_steps", 0))
        log.info(
            "resumed from %s (epoch %d, iteration %d, step %d)", ckpt_path, start_epoch, start_iter, step
        )

    ddp_net = net
    if world > 1:
        ddp_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.amp not in AMP_MODES:
        raise InputError(None, f"train amp {cfg.amp!r} is not one of {', '.join(AMP_MODES)}", "use auto")
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    stream = TrainStream(train_index, train_set, cfg.batch_size, cfg.iters_per_epoch, cfg.num_workers,
                         rank, world, cfg.shuffle_row_groups)  # fmt: skip
    loader = _loader(stream, cfg.num_workers, device)
    val_loader = None
    if val_index is not None:
        val_stream = OrderedStream(val_index, val_set, cfg.batch_size, val_select)
        val_loader = _loader(val_stream, min(cfg.num_workers, 2), device)

    tb = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"), purge_step=step)

    def save_checkpoint(epoch: int, it: int) -> Path:
        path = ckpt_dir / f"ckpt_{step:08d}.pt"
        state = {
            "format": MODEL_FORMAT, "model_config": model_cfg, "model": net.net_state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(),
            "epoch": epoch, "iter_in_epoch": it, "step": step, "steps": steps_hist, "epochs": epochs_hist,
            "train_config": dataclasses.asdict(cfg), "epoch_sums": dict(sums), "epoch_steps": n_in_epoch,
            "world_size": world,
        }  # fmt: skip
        _save(state, path)
        for old in _checkpoints(ckpt_dir)[: -max(1, cfg.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        return path

    def write_logs() -> None:
        _write_csv(out / "steps.csv", steps_hist)
        _write_csv(out / "metrics.csv", epochs_hist)
        _plot(out / "loss.png", steps_hist, epochs_hist)

    from tqdm import tqdm

    net.train()
    last_good = None
    for epoch in range(start_epoch, cfg.epochs):
        it0 = start_iter if epoch == start_epoch else 0
        stream.set_epoch(epoch, it0)
        t0 = time.time()
        sums: dict[str, float] = dict(resumed_sums) if epoch == start_epoch and it0 > 0 else {}
        n_in_epoch = resumed_n if epoch == start_epoch and it0 > 0 else 0
        bar = tqdm(loader, total=cfg.iters_per_epoch - it0, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not is_main, leave=False, mininterval=5.0)  # fmt: skip
        it = it0
        for batch in bar:
            b = _to(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out_ = ddp_net(b["images"], b["view_mask"], b["K"], b["T_world_from_crop"], b["anchor"])
            terms = compute_losses(out_, b, weights)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                bad = {k: float(v.detach()) for k, v in terms.items()}
                raise TrainingDivergedError(
                    f"non-finite training loss at step {step + 1} (terms {bad}); stopped. Last good checkpoint: "
                    f"{last_good or 'none'} (lower --lr or check the crop cache, then resume)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            sched.step()
            step += 1
            it += 1
            n_in_epoch += 1
            vals = {k: float(v.detach()) for k, v in terms.items()}
            if world > 1:  # log the global batch's terms (the mean over ranks), not rank 0's slice
                vals = _mean_over_ranks(vals, world, device)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            steps_hist.append(
                {"step": step, "epoch": epoch + 1, "loss": vals["loss"], "lr": sched.get_last_lr()[0]}
            )
            if tb is not None:
                for k, v in vals.items():
                    tb.add_scalar(f"train/{k}", v, step)
                tb.add_scalar("train/lr", sched.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{vals['loss']:.3f}", mpjpe=f"{vals['kp3d']:.1f}mm")
            stop = max_steps is not None and step >= max_steps
            if is_main and it < cfg.iters_per_epoch and (step % cfg.checkpoint_every == 0 or stop):
                last_good = save_checkpoint(epoch, it)
            if stop and it < cfg.iters_per_epoch:
                if tb is not None:
                    tb.close()
                if is_main:
                    write_logs()
                _dist_teardown(world)
                return FitResult(None, steps_hist, epochs_hist, False)
        bar.close()
        row = {"epoch": epoch + 1, "step": step, "lr": sched.get_last_lr()[0]}
        row |= {f"train_{k}": v / max(1, n_in_epoch) for k, v in sums.items()}
        if is_main:
            ev = evaluate(net, flatten_units(val_loader) if val_loader is not None else (), device, amp)
            row |= ev | {"val_baseline_mpjpe_mm": baseline_mpjpe, "epoch_time_s": time.time() - t0}
            epochs_hist.append(row)
            log.info("epoch %d/%d: loss %.4f, train 3D %.1f mm, val MPJPE %.1f mm (baseline %.1f mm), "
                     "val 2D %.2f px (3D reprojected %.2f px), %.0f s",
                     epoch + 1, cfg.epochs, row.get("train_loss", float("nan")), row.get("train_kp3d", float("nan")),
                     ev["val_mpjpe_mm"], baseline_mpjpe, ev["val_uv_px"], ev["val_reproj_px"],
                     row["epoch_time_s"])  # fmt: skip
            if tb is not None:
                tb.add_scalar("val/mpjpe_mm", ev["val_mpjpe_mm"], step)
                tb.add_scalar("val/uv_px", ev["val_uv_px"], step)
                tb.add_scalar("val/reproj_px", ev["val_reproj_px"], step)
                tb.add_scalar("val/baseline_mpjpe_mm", baseline_mpjpe, step)
            last_good = save_checkpoint(epoch + 1, 0)
            write_logs()
        if max_steps is not None and step >= max_steps and epoch + 1 < cfg.epochs:
            if tb is not None:
                tb.close()
            _dist_teardown(world)
            return FitResult(None, steps_hist, epochs_hist, False)

    model_path = out / "model.pt"
    if is_main:
        write_logs()  # also when resumed from the final checkpoint (a re-run of a finished training)
        final = {
            "format": MODEL_FORMAT, "model_config": model_cfg, "model": net.net_state_dict(),
            "train_config": dataclasses.asdict(cfg), "val_sequences": val_names, "epochs": epochs_hist,
        }  # fmt: skip
        _save(final, model_path)
        if tb is not None:
            tb.close()
    _dist_teardown(world)
    return FitResult(model_path, steps_hist, epochs_hist, True)
