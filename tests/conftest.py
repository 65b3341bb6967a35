"""Shared pytest set-up: offline hub, small thread pools, torchvision guard before any timm import."""

from __future__ import annotations

import os
import subprocess

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
    from mvhand.synthetic.mano_model import write_synthetic_mano

    out = tmp_path_factory.mktemp("mano")
    write_synthetic_mano(out)
    return out


@pytest.fixture(scope="session")
def mano_model(mano_dir):
    """:class:`mvhand.geometry.mano.ManoModel` loaded from :func:`mano_dir`."""
    from mvhand.geometry.mano import ManoModel

    return ManoModel.from_dir(mano_dir)


@pytest.fixture(scope="session")
def toy(tmp_path_factory, mano_dir):
    """Toy pose-test / shape-test tars (tests/_toy_data.py), their GT archive and paths, for packaging tests."""
    from fixtures import write_toy_tar

    from mvhand.formats.submission import GroundTruth, build_ground_truth, write_gt_archive

    root = tmp_path_factory.mktemp("pack")
    for split in ("pose_test", "shape_test"):
        (root / split).mkdir()
    write_toy_tar(root / "pose_test" / "subject_000_separate_hand_000000.tar", range(6))
    write_toy_tar(root / "pose_test" / "subject_001_hand_hand_000001.tar", range(4), right_every=1)
    write_toy_tar(root / "shape_test" / "subject_002_separate_hand_000002.tar", range(3))
    pose_tars = sorted((root / "pose_test").glob("*.tar"))
    shape_tars = sorted((root / "shape_test").glob("*.tar"))
    gp, gs = build_ground_truth(pose_tars, "umetrack"), build_ground_truth(shape_tars, "umetrack")
    # one organiser-style archive: the pose track needs the betas of the pose-test sequences too
    gt = GroundTruth("umetrack", gp.landmarks, gp.shapes + gs.shapes, gp.poses)
    write_gt_archive(root / "gt.tar.gz", {"umetrack": gt}, mano_dir)
    return {"root": root, "pose_tars": pose_tars, "shape_tars": shape_tars, "gt": root / "gt.tar.gz"}


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
