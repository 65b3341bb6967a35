"""Shared pytest set-up: offline hub, small thread pools, torchvision guard before any timm import."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from mvhand._compat import ensure_torchvision_ops  # noqa: E402

torch.set_num_threads(2)
ensure_torchvision_ops()
