"""Planning-time checks of the workflow configuration that the JSON schema cannot express.

``workflow/rules/common.smk`` validates ``config.yaml`` against ``workflow/schemas/config.schema.yaml`` (types,
ranges, unknown keys) and then calls :func:`check_config`, so that a value that points nowhere fails before
any job runs — with the key named and the fix — instead of hours later, or never (a candidate naming an
unknown variant made the default target print "Nothing to be done" and keep a stale report).

Checked: every number is finite (YAML ``.nan`` / ``.inf`` pass the schema's ranges); candidates and
``evaluate.val_variant`` name trained variants; ``source: local`` has an existing ``download.local_dir`` for
every dataset that holds that dataset (not the other one);
``evaluate.split: pose_test`` only with the synthetic world (the real test ground truth is private);
``train.pretrained_file`` exists when set; ``train.gpus: 0`` is not combined with ``train.device: cuda``;
Savitzky–Golay and online-smoothing settings that cannot work;
and real-data sources refuse the synthetic stand-in MANO files (:func:`mvhand.mano_pickle.is_synthetic_mano`).
Only NumPy is imported (no torch): this runs every time Snakemake parses the workflow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mvhand.io_utils import InputError

__all__ = ["check_config", "config_problems"]

MANO_FILES = ("MANO_LEFT.pkl", "MANO_RIGHT.pkl")


def _numbers(node: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every float in a nested config (lists indexed ``key[i]``)."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def _variant(candidate: str) -> str:
    return candidate.split("-", 1)[0]


def config_problems(config: Mapping[str, Any], variants: Iterable[str]) -> list[InputError]:
    """Every problem of a (schema-validated, defaults filled) config, as :class:`InputError` s naming the key.

    Args:
        config: the workflow config.
        variants: the training variants the workflow defines (``MODEL_VARIANTS``).
    """
    variants = tuple(variants)
    known = ", ".join(variants)
    out: list[InputError] = []
    for key, value in _numbers(config):
        if not math.isfinite(value):
            out.append(InputError(key, f"{value} is not a finite number", "write a finite number"))

    evaluate = config.get("evaluate") or {}
    for cand in evaluate.get("candidates") or []:
        if _variant(cand) not in variants:
            out.append(
                InputError(
                    "evaluate.candidates",
                    f"{cand!r} names the unknown training variant {_variant(cand)!r}",
                    f"write <variant>-<method> with a variant of {known}",
                )
            )
    cand = (config.get("submission") or {}).get("candidate")
    if cand and _variant(cand) not in variants:
        out.append(
            InputError(
                "submission.candidate",
                f"{cand!r} names the unknown training variant {_variant(cand)!r}",
                f"write <variant>-<method> with a variant of {known}",
            )
        )
    val_variant = evaluate.get("val_variant")
    if val_variant is not None and val_variant not in variants:
        out.append(
            InputError(
                "evaluate.val_variant", f"unknown training variant {val_variant!r}", f"use one of {known}"
            )
        )

    source = config.get("source", "synthetic")
    if source == "local":
        out.extend(_local_dir_problems(config))
    if source != "synthetic" and evaluate.get("split") == "pose_test":
        out.append(
            InputError(
                "evaluate.split",
                f"pose_test needs the test ground truth, which only the synthetic world ships (source: {source}; "
                "the real test annotations are private)",
                "set `evaluate.split: val` to score held-out training sequences",
            )
        )
    if source != "synthetic":
        out.extend(_synthetic_mano_problems(Path(str(config.get("mano_dir", "resources/mano"))), source))

    pretrained = str((config.get("train") or {}).get("pretrained_file") or "")
    if pretrained and not os.path.isfile(pretrained):
        out.append(
            InputError(
                "train.pretrained_file",
                f"{pretrained!r} is not a file",
                'point it at a local timm weights file, or set it to "" to train from scratch',
            )
        )

    train = config.get("train") or {}
    if train.get("gpus") == 0 and train.get("device") == "cuda":
        out.append(
            InputError(
                "train.gpus",
                "is 0 (train on the CPU, request no GPU) but train.device is cuda",
                "set train.gpus >= 1 to train on GPUs, or train.device: cpu",
            )
        )

    smooth = config.get("smooth") or {}
    window, order = smooth.get("savgol_window"), smooth.get("savgol_polyorder")
    if isinstance(window, int) and isinstance(order, int) and order >= window - 1:
        out.append(
            InputError(
                "smooth.savgol_polyorder",
                f"{order} with savgol_window {window}: a polynomial of order >= window - 1 passes through every "
                "frame, so the filter returns the raw trajectory",
                f"use savgol_polyorder <= {max(window - 2, 0)} or a larger savgol_window",
            )
        )
    free, win = smooth.get("online_free"), smooth.get("online_window")
    if isinstance(free, int) and isinstance(win, int) and free > win:
        out.append(
            InputError(
                "smooth.online_free",
                f"{free} frames optimised per step but online_window holds only {win}",
                f"use online_free <= {win}",
            )
        )
    return out


def _local_dir_problems(config: Mapping[str, Any]) -> list[InputError]:
    """``source: local``: every configured dataset has an existing folder holding that dataset (not the other)."""
    from mvhand.download import check_dataset_folder, local_dir_for

    setting = (config.get("download") or {}).get("local_dir") or ""
    datasets = list(config.get("datasets") or [])
    per_dataset = isinstance(setting, Mapping)
    if not per_dataset and not setting:
        return [
            InputError(
                "download.local_dir",
                "is empty but `source: local` reads the data from it",
                "set it to the folder holding your copy of the dataset(s), as "
                "`{umetrack: <folder>, hot3d: <folder>}`, or choose another source",
            )
        ]
    if not per_dataset and not os.path.isdir(str(setting)):
        return [
            InputError(
                "download.local_dir",
                f"{setting!r} is not a folder",
                "point it at the folder holding your copy of the dataset(s)",
            )
        ]
    out: list[InputError] = []
    for dataset in datasets:
        key = f"download.local_dir.{dataset}" if per_dataset else "download.local_dir"
        try:
            folder = local_dir_for(setting, dataset, datasets)
        except InputError as exc:
            return [exc]
        if not folder:
            out.append(
                InputError(
                    key,
                    f"is empty but `source: local` reads the {dataset} data from it",
                    f"set `download.local_dir: {{{dataset}: <folder of your {dataset} copy>}}` (one entry per "
                    "dataset), or choose another source",
                )
            )
        elif not os.path.isdir(folder):
            out.append(
                InputError(
                    key, f"{folder!r} is not a folder", f"point it at the folder holding your {dataset} copy"
                )
            )
        else:
            try:
                check_dataset_folder(dataset, folder, key)
            except InputError as exc:
                out.append(exc)
    return out


def _synthetic_mano_problems(mano_dir: Path, source: str) -> list[InputError]:
    from mvhand.mano_pickle import is_synthetic_mano

    synthetic = [n for n in MANO_FILES if (mano_dir / n).is_file() and is_synthetic_mano(mano_dir / n)]
    if not synthetic:
        return []
    return [
        InputError(
            "mano_dir",
            f"{mano_dir} holds mvhand's synthetic stand-in MANO model ({', '.join(synthetic)}), written by "
            f"`source: synthetic`; with real data (source: {source}) every MANO-based result would be wrong",
            "copy the official MANO_LEFT.pkl and MANO_RIGHT.pkl (https://mano.is.tue.mpg.de, mano_v1_2/models) "
            "into it, or point `mano_dir` at the folder that holds them",
        )
    ]


def check_config(config: Mapping[str, Any], variants: Iterable[str]) -> None:
    """Raise one :class:`InputError` listing every problem of :func:`config_problems` (nothing if valid)."""
    problems = config_problems(config, variants)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise InputError(None, f"{len(problems)} settings of the configuration point nowhere:\n  {lines}")
