"""Make ``import timm`` work on CPU-only torch.

PyPI's torchvision 0.28.0 is a CUDA build: its compiled ``_C`` extension cannot load against the CPU
wheel of torch 2.13.0, and ``torchvision/_meta_registrations.py`` then fails with
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels. timm
imports ``torchvision.ops`` at import time, so ``import timm`` fails too.

:func:`ensure_torchvision_ops` tries to load torchvision's compiled ops first, **without** importing
torchvision; only when that fails does it declare the two op schemas that the meta registrations
need (``nms`` and ``qnms``). torchvision then imports with its pure-Python fallbacks (everything timm
uses works; ``torchvision.ops.nms`` itself raises, as it would without compiled ops).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from types import ModuleType

import torch

__all__ = ["ensure_torchvision_ops", "import_timm"]

log = logging.getLogger(__name__)
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it would unregister the schemas
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _compiled_ops_loadable() -> bool:
    """True if torchvision's own compiled ops are (or can be) registered with torch."""
    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision is not installed: nothing to guard
    libs = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except (OSError, RuntimeError) as exc:
        log.debug("torchvision compiled ops do not load (%s); declaring op schemas", exc)
        return False
    return hasattr(torch.ops.torchvision, "nms")


def ensure_torchvision_ops() -> None:
    """Declare torchvision's ``nms``/``qnms`` op schemas if, and only if, its compiled ops cannot load.

    Idempotent; must run before the first ``import torchvision`` / ``import timm``.
    """
    global _LIBRARY
    if _LIBRARY is not None or _compiled_ops_loadable():
        return
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        try:
            lib.define(schema)
        except RuntimeError:  # already declared by someone else
            pass
    _LIBRARY = lib


def import_timm() -> ModuleType:
    """Return the ``timm`` module, applying :func:`ensure_torchvision_ops` first."""
    ensure_torchvision_ops()
    import timm

    return timm
