"""Shared pytest set-up: offline hub, small thread pools, torchvision guard before any timm import."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from mvhand._compat import ensure_torchvision_ops  # noqa: E402

torch.set_num_threads(2)
ensure_torchvision_ops()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mano_dir(tmp_path_factory):
    """A folder with the synthetic MANO_LEFT.pkl / MANO_RIGHT.pkl (written once per test session)."""
    from mvhand.synthetic_mano import write_synthetic_mano

    out = tmp_path_factory.mktemp("mano")
    write_synthetic_mano(out)
    return out


@pytest.fixture(scope="session")
def mano_model(mano_dir):
    """:class:`mvhand.mano.ManoModel` loaded from :func:`mano_dir`."""
    from mvhand.mano import ManoModel

    return ManoModel.from_dir(mano_dir)
