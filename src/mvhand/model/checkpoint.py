"""The model-file contract: what ``model.pt`` and ``checkpoints/ckpt_<step>.pt`` hold, how they are written
(atomically, a full disk named) and read back (``torch.load(weights_only=True)``: nothing in a file runs).

Both are dicts of tensors and plain Python data tagged ``"format": MODEL_FORMAT``::

    model.pt            format, model_config (HandNetConfig.to_dict()), model (HandNet.net_state_dict()),
                        train_config (TrainConfig as a dict), val_sequences (list of names),
                        epochs (metrics.csv rows)
    ckpt_<step>.pt      format, model_config, model, optimizer, scheduler (state dicts), rng (every global
                        RNG state as tensors, :func:`rng_state`), epoch and iter_in_epoch (where to go on),
                        step, steps and epochs (steps.csv / metrics.csv rows so far), train_config,
                        epoch_sums and epoch_steps (the interrupted epoch's loss sums), world_size

:func:`load_model` rebuilds a :class:`~mvhand.model.network.HandNet` from either; the training loop
(:mod:`mvhand.model.training`) writes and resumes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from mvhand.geometry.mano import ManoModel
from mvhand.io_utils import InputError, atomic_path
from mvhand.model.network import HandNet

__all__ = [
    "MODEL_FORMAT",
    "checkpoint_name",
    "load_checkpoint",
    "load_model",
    "save_model_file",
    "rng_state",
    "set_rng_state",
    "checkpoint_files",
    "newest_readable_checkpoint",
    "config_diff",
]

log = logging.getLogger(__name__)
MODEL_FORMAT = "mvhand.handnet/1"
_CKPT_RE = re.compile(r"ckpt_(\d+)\.pt$")

# Training settings that may change between an interrupted run and its resumption (num_workers may not: the
# loader shards the data per worker, so the sample order depends on it).
_RUNTIME_KEYS = frozenset({"device", "threads", "checkpoint_every", "keep_checkpoints", "out_dir"})


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint written after global step ``step`` (``ckpt_00000042.pt``)."""
    return f"ckpt_{step:08d}.pt"


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The ``ckpt_<step>.pt`` files of ``ckpt_dir``, oldest (lowest step) first."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("ckpt_*.pt") if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def rng_state() -> dict:
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


def set_rng_state(st: dict) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    key = np.asarray(n["key"].numpy(), np.uint32)
    np.random.set_state((n["kind"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint / model file of this contract, without running code from it.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain Python data only (what
    the train stage writes, RNG states included). A file that pickles anything else — e.g. a ``model.pt``
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


def save_model_file(obj: dict, path: Path) -> None:
    """``torch.save`` a model file / checkpoint dict atomically.

    Through a Python file object, so that a full disk surfaces as the ``OSError(ENOSPC)`` that
    :func:`atomic_path` turns into an InputError naming ``path`` and the fix (torch's own file writer
    reports it as an opaque ``inline_container … unexpected pos`` RuntimeError).
    """
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


def newest_readable_checkpoint(ckpt_dir: Path, move_aside: bool = True) -> tuple[Path | None, dict | None]:
    """The newest checkpoint of ``ckpt_dir`` that loads (``resume="auto"``), as ``(path, contents)``.

    Unreadable ones (truncated by a crash, corrupt, refused) are skipped with a warning and, if
    ``move_aside`` (the main rank), renamed to ``*.unreadable`` so that they are neither resumed from nor
    counted as the newest checkpoints when old ones are pruned. ``(None, None)`` when none loads.
    """
    for path in reversed(checkpoint_files(ckpt_dir)):
        try:
            return path, load_checkpoint(path)
        except InputError as exc:
            log.warning("skipping checkpoint %s: %s", path, exc.problem)
            if move_aside:
                with contextlib.suppress(FileNotFoundError):
                    path.replace(path.with_name(path.name + ".unreadable"))
    return None, None


def config_diff(old: dict, new: dict, defaults: dict) -> dict:
    """Experiment settings that differ between a checkpoint's training config and the current one.

    Args:
        old: the checkpoint's ``train_config``.
        new: the current training config (as a dict).
        defaults: the training config's defaults: a setting the checkpoint's mvhand did not have yet
            (e.g. ``amp``) counts as its default value.

    Returns:
        ``{key: (old value, new value)}``, runtime-only settings (device, threads, checkpoint cadence,
        out_dir) left out.
    """
    old = {k: v for k, v in defaults.items() if k in new} | old
    keys = (set(old) | set(new)) - _RUNTIME_KEYS
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


def _build_net(model_cfg: dict, mano: ManoModel | None, path: str | os.PathLike) -> HandNet:
    try:
        return HandNet.from_config(model_cfg, mano=None if mano is None else mano.right)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            path, f"cannot rebuild the model {model_cfg} ({exc})", "check the timm version"
        ) from exc


def load_model(
    path: str | os.PathLike, mano: ManoModel | None, device: torch.device | str = "cpu"
) -> HandNet:
    """Rebuild a trained :class:`HandNet` from ``model.pt`` (or a checkpoint), in eval mode.

    Args:
        path: model file written by the train stage.
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
