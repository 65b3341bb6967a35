"""A whole synthetic UmeTrack-like / HOT3D-like dataset in the exact challenge layout (spec/formats.md §1).

:func:`generate_dataset` writes::

    <out_root>/<dataset>/train/*.tar                     all annotations
    <out_root>/<dataset>/pose_test/*.tar                 stripped: no hands.json (HOT3D: no objects.json)
    <out_root>/<dataset>/shape_test/*.tar                stripped: also no __hand_shapes.json__
    <out_root>/<dataset>/test_annotations/{pose_test,shape_test}/*.tar   unstripped copies
    <out_root>/<dataset>/gt.tar.gz                       challenge GT (spec/formats.md §6.5) of the unstripped tars
    <out_root>/<dataset>/manifest.json                   sequences per split, seed, size, generator version
    <mano_dir>/MANO_{LEFT,RIGHT}.pkl                     synthetic MANO model (mvhand.synthetic.mano_model)

Per sequence: a subject (MANO β + matching UmeTrack profile) and its motion come from
:mod:`mvhand.synthetic.hands`, the headset from :mod:`mvhand.synthetic.rigs`, the images from
:mod:`mvhand.synthetic.render` (the MANO mesh of each present hand over a procedural room). ``hand_crops.json``
follows spec/formats.md §3.11 (crop points = actual + neutral + open UmeTrack landmarks, look-at from the
source camera centre, ``fov = 2·atan(M / 0.95)``); a (hand, stream) gets a crop if ≥ 19 of the 21
landmarks are in view (UmeTrack) or if the visibility (fraction of the 21 landmarks in front and inside
the image) is > 0.1 (HOT3D). HOT3D ``hands.json`` also carries ``boxes_amodal`` (projected mesh box,
clipped to the image) and ``visibilities_modeled``.

Everything is a deterministic function of ``(dataset, seed, size)``: each sequence has its own seed
derived from them, so the output bytes do not depend on the number of worker processes. The dataset
is first written into a hidden staging folder beside the destination and renamed into place only when
complete, so a failure (including a full disk) never leaves a partial dataset.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvhand.constants import DATASETS, HAND_SIDES
from mvhand.io_utils import InputError, atomic_path, atomic_write

__all__ = ["GENERATOR_VERSION", "SIZES", "SequenceJob", "generate_dataset", "plan_sequences"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
SPLITS = ("train", "pose_test", "shape_test")

# Sequences per split and frames per sequence ("<split>_frames" overrides "frames" for one split).
# "default" is sized to generate in well under 90 s per dataset on 2 cores; "tiny" is for tests.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "umetrack": {
        "tiny": {"train": 2, "pose_test": 1, "shape_test": 1, "frames": 6},
        "default": {"train": 10, "pose_test": 3, "shape_test": 2, "frames": 60},
        "large": {"train": 40, "pose_test": 8, "shape_test": 6, "frames": 150},
    },
    "hot3d": {
        "tiny": {"train": 2, "pose_test": 1, "shape_test": 1, "frames": 6},
        # pose_test clips as long as the real ones (150 frames): the GT takes every 10th frame
        "default": {"train": 8, "pose_test": 3, "shape_test": 2, "frames": 60, "pose_test_frames": 150},
        "large": {"train": 32, "pose_test": 8, "shape_test": 6, "frames": 150},
    },
}

FPS = 30
JPEG_QUALITY = 90
UMETRACK_MIN_VISIBLE = 19  # of 21 landmarks (UmeTrack tracker rule, spec/formats.md §3.11)
HOT3D_MIN_VISIBILITY = 0.1  # hot3d clips README (spec/formats.md §2.4)
HOT3D_GT_EVERY_N = 10


@dataclass(frozen=True)
class SequenceJob:
    """One sequence to generate.

    Attributes:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        split: ``"train"``, ``"pose_test"`` or ``"shape_test"``.
        name: tar stem (``subject_003_hand_hand_000007`` / ``clip-001003``).
        subject_index: subject number (disjoint between train and test splits).
        kind: UmeTrack ``"separate_hand"`` / ``"hand_hand"``; HOT3D device ``"aria"`` / ``"quest3"``.
        n_frames: frames to write.
        seed: per-sequence seed words.
    """

    dataset: str
    split: str
    name: str
    subject_index: int
    kind: str
    n_frames: int
    seed: tuple[int, ...]


def _check_args(dataset: str, size: str) -> dict[str, int]:
    if dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}", f"choose one of {', '.join(DATASETS)}")
    if size not in SIZES[dataset]:
        raise InputError(
            None, f"unknown synthetic dataset size {size!r}", f"choose one of {', '.join(SIZES[dataset])}"
        )
    return SIZES[dataset][size]


def plan_sequences(dataset: str, seed: int, size: str = "default") -> list[SequenceJob]:
    """The list of sequences of a synthetic dataset (names, subjects, kinds, seeds), in split order.

    Subjects are numbered consecutively over train, pose_test, shape_test, so no subject appears in both
    the training and a test split.
    """
    cfg = _check_args(dataset, size)
    jobs: list[SequenceJob] = []
    subject = 0
    counter = 0
    ds_idx = DATASETS.index(dataset)
    for split_idx, split in enumerate(SPLITS):
        for i in range(cfg[split]):
            if dataset == "umetrack":
                kind = "hand_hand" if i % 2 else "separate_hand"
                name = f"subject_{subject:03d}_{kind}_{counter:06d}"
            else:
                kind = "quest3" if i % 2 else "aria"
                name = f"clip-{1000 + counter:06d}"
            jobs.append(
                SequenceJob(
                    dataset=dataset,
                    split=split,
                    name=name,
                    subject_index=subject,
                    kind=kind,
                    n_frames=cfg.get(f"{split}_frames", cfg["frames"]),
                    seed=(int(seed), ds_idx, split_idx, i),
                )
            )
            subject += 1
            counter += 1
    return jobs


# --------------------------------------------------------------------------------------------------
# Per-sequence generation (pure function of the job + MANO folder)
# --------------------------------------------------------------------------------------------------

_MANO_CACHE: dict[str, Any] = {}


def _mano_model(mano_dir: Path):
    key = str(Path(mano_dir).resolve())
    if key not in _MANO_CACHE:
        from mvhand.geometry.mano import ManoModel

        _MANO_CACHE.clear()
        _MANO_CACHE[key] = ManoModel.from_dir(mano_dir)
    return _MANO_CACHE[key]


def _smooth_albedo(rng: np.random.Generator, faces: np.ndarray, n_verts: int, rgb: bool) -> np.ndarray:
    """Per-vertex skin albedo with a per-subject tone and smooth blotches, ``(V,)`` or ``(V, 3)``."""
    a = rng.standard_normal(n_verts)
    f = np.asarray(faces, np.int64)
    for _ in range(4):  # neighbour averaging over the mesh edges
        s = np.zeros(n_verts)
        c = np.zeros(n_verts)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            s += np.bincount(f[:, i], weights=a[f[:, j]], minlength=n_verts)
            c += np.bincount(f[:, i], minlength=n_verts)
        a = 0.5 * a + 0.5 * s / np.maximum(c, 1)
    tone = rng.uniform(0.75, 1.1)
    alb = tone * (1.0 + 0.12 * a / max(float(np.abs(a).max()), 1e-6))
    if not rgb:
        return alb.astype(np.float32)
    skin = np.array([0.86, 0.64, 0.52]) * rng.uniform(0.85, 1.1, 3)
    return (alb[:, None] * skin[None]).astype(np.float32)


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB").save(
        buf, format="JPEG", quality=JPEG_QUALITY
    )
    return buf.getvalue()


def _make_subject(job: SequenceJob, rng: np.random.Generator):
    from mvhand.synthetic import hands as sh

    name = (
        f"subject_{job.subject_index:03d}" if job.dataset == "umetrack" else f"P{job.subject_index + 1:04d}"
    )
    return sh.make_subject(rng, name=name)


def _make_motion(job: SequenceJob, subject, rng: np.random.Generator, mano):
    from mvhand.synthetic import hands as sh

    return sh.generate_motion(rng, subject, job.n_frames, fps=float(FPS), world=job.dataset, mano=mano)


def _crop_entries(
    cams: dict, lm_actual: np.ndarray, crop_points: np.ndarray, dataset: str
) -> tuple[dict, dict[str, float]]:
    """``hand_crops.json`` value of one hand and its per-stream visibility (fraction of 21 landmarks)."""
    from mvhand.geometry.cameras import count_visible, crop_camera_from_points
    from mvhand.geometry.transforms import se3_to_json

    crops: dict[str, dict] = {}
    vis: dict[str, float] = {}
    n_lm = lm_actual.shape[0]
    for sid, cam in cams.items():
        n = count_visible(lm_actual, cam)
        vis[sid] = n / n_lm
        ok = n >= UMETRACK_MIN_VISIBLE if dataset == "umetrack" else vis[sid] > HOT3D_MIN_VISIBILITY
        if not ok:
            continue
        try:
            T, fov = crop_camera_from_points(np.asarray(cam.T_world_from_eye, np.float64), crop_points)
        except ValueError:
            continue  # points span more than a hemisphere from this camera: no sensible crop
        crops[sid] = {"T_world_from_crop_camera": se3_to_json(T), "crop_camera_fov": float(fov)}
    return crops, vis


def _amodal_box(cam, verts_world: np.ndarray) -> list[float] | None:
    """xyxy box (pixels) of the hand mesh projected into ``cam``, clipped to the image; None if unseen."""
    v = cam.world_to_eye(np.asarray(verts_world, np.float64))
    front = v[:, 2] > 1e-3
    if not front.any():
        return None
    w = cam.eye_to_window(v[front])
    x0, y0 = np.clip(w.min(0), [-0.5, -0.5], [cam.width - 0.5, cam.height - 0.5])
    x1, y1 = np.clip(w.max(0), [-0.5, -0.5], [cam.width - 0.5, cam.height - 0.5])
    if x1 <= x0 or y1 <= y0:
        return None
    return [float(x0), float(y0), float(x1), float(y1)]


def generate_sequence(job: SequenceJob, out_tar: Path, mano_dir: Path) -> dict:
    """Render one sequence and write its annotated tar (atomically) to ``out_tar``.

    Args:
        job: what to generate.
        out_tar: destination ``.tar``.
        mano_dir: folder with the (synthetic) MANO pickles.

    Returns:
        Summary ``{"name", "frames", "hands", "crops"}`` (counts of annotated hands and crop cameras).
    """
    import torch

    from mvhand.formats.sequence import SequenceWriter
    from mvhand.geometry.transforms import se3_from_json, se3_to_json
    from mvhand.geometry.umetrack import UmeTrackHandModel, forward_kinematics
    from mvhand.synthetic.render import make_environment, render_view
    from mvhand.synthetic.rigs import cameras_json, hot3d_rig, rig_cameras, umetrack_rig

    ss = np.random.SeedSequence(list(job.seed))
    rng_subject, rng_rig, rng_motion, rng_look, rng_noise = (np.random.default_rng(s) for s in ss.spawn(5))
    subject = _make_subject(job, rng_subject)
    rig = umetrack_rig(rng_rig) if job.dataset == "umetrack" else hot3d_rig(job.kind, rng_rig)
    mano = _mano_model(mano_dir)
    motion = _make_motion(job, subject, rng_motion, mano)
    T_wd = np.asarray(motion.T_world_from_device, np.float64)
    T = min(job.n_frames, T_wd.shape[0])

    any_rgb = any(c.is_rgb for c in rig.cameras)
    up = -T_wd[0, :3, 1]
    env = make_environment(rng_look, rgb=any_rgb, up=up)

    model = UmeTrackHandModel.from_json(subject.umetrack_profile)
    betas = np.asarray(subject.betas, np.float32).reshape(10)

    per_side: dict[str, dict[str, np.ndarray]] = {}
    for side in HAND_SIDES:
        tr = motion.hands.get(side)
        if tr is None:
            continue
        present = np.asarray(tr.present, bool)[:T]
        if not present.any():
            continue
        is_right = side == "right"
        ja = np.asarray(tr.joint_angles, np.float32)[:T]
        # the wrist pose exactly as a reader will see it (quaternion JSON -> float32 matrix), so that the
        # crop/visibility decisions below agree bit for bit with the GT built from the files
        Tw = np.stack([se3_from_json(se3_to_json(M)) for M in np.asarray(tr.T_world_from_wrist)[:T]])
        lm = forward_kinematics(model, ja, Tw, is_right)  # (T, 21, 3)
        neutral = np.broadcast_to(model.neutral_joint_angles, ja.shape)
        lm_neutral = forward_kinematics(model, neutral, Tw, is_right)
        lm_open = forward_kinematics(model, np.zeros_like(ja), Tw, is_right)
        theta = np.asarray(tr.mano_theta, np.float32)[:T]
        wx = np.asarray(tr.mano_wrist_xform, np.float32)[:T]
        layer = mano.layer(side)
        with torch.no_grad():
            verts, _ = layer.forward_full(
                torch.from_numpy(theta),
                torch.from_numpy(wx[:, :3]),
                torch.from_numpy(wx[:, 3:]),
                torch.from_numpy(np.broadcast_to(betas, (T, 10)).copy()),
            )
        faces = layer.faces.cpu().numpy().astype(np.int64)
        per_side[side] = dict(
            present=present,
            ja=ja,
            Tw=Tw,
            lm=lm,
            crop_pts=np.concatenate([lm, lm_neutral, lm_open], axis=1),
            theta=theta,
            wx=wx,
            verts=verts.numpy().astype(np.float32),
            faces=faces,
            albedo=_smooth_albedo(rng_look, faces, verts.shape[1], any_rgb),
        )

    blur_p = rng_look.random(T)
    blur_dir = rng_look.uniform(0, 2 * np.pi, T)
    blur_len = rng_look.uniform(1.5, 4.0, T)

    n_hands = 0
    n_crops = 0
    with SequenceWriter(out_tar) as writer:
        writer.write_hand_shapes(betas, subject.umetrack_profile)
        for t in range(T):
            cams_js = cameras_json(rig, T_wd[t])
            cams = rig_cameras(rig, T_wd[t])
            meshes, albedos = [], []
            hands_js: dict[str, Any] = {}
            crops_js: dict[str, Any] = {}
            for side, d in per_side.items():
                if not d["present"][t]:
                    continue
                meshes.append((d["verts"][t], d["faces"]))
                albedos.append(d["albedo"])
                crops, vis = _crop_entries(cams, d["lm"][t], d["crop_pts"][t], job.dataset)
                crops_js[side] = crops
                n_crops += len(crops)
                n_hands += 1
                entry: dict[str, Any] = {
                    "umetrack_pose": {
                        "T_world_from_wrist": se3_to_json(d["Tw"][t]),
                        "joint_angles": [float(v) for v in np.concatenate([d["ja"][t][:20], [0.0, 0.0]])],
                    },
                    "mano_pose": {
                        "thetas": [float(v) for v in d["theta"][t]],
                        "wrist_xform": [float(v) for v in d["wx"][t]],
                    },
                }
                if job.dataset == "hot3d":
                    boxes = {}
                    for sid, cam in cams.items():
                        box = _amodal_box(cam, d["verts"][t])
                        if box is not None and vis[sid] > 0:
                            boxes[sid] = box
                    entry["boxes_amodal"] = boxes
                    entry["visibilities_modeled"] = {sid: float(v) for sid, v in vis.items()}
                hands_js[side] = entry
            motion_blur = None
            if blur_p[t] < 0.15:
                motion_blur = (blur_len[t] * np.cos(blur_dir[t]), blur_len[t] * np.sin(blur_dir[t]))
            images = {}
            for sid, cam in cams.items():
                img = render_view(cam, meshes, env, rng_noise, albedo=albedos, motion_blur=motion_blur)
                images[sid] = _jpeg(img)
            info = objects = None
            if job.dataset == "hot3d":
                ts = 1_000_000_000 + t * (1_000_000_000 // FPS)
                info = {
                    "device": "Aria" if job.kind == "aria" else "Quest3",
                    "image_timestamps_ns": {sid: ts for sid in cams},
                    "participant_id": f"P{job.subject_index + 1:04d}",
                    "ref_timestamp_ns": ts,
                    "sequence_id": f"synthetic_{job.name}",
                }
                objects = {}
            writer.write_frame(t, cams_js, crops_js, hands_js, images, info=info, objects=objects)
    return {"name": job.name, "frames": T, "hands": n_hands, "crops": n_crops}


def _worker(args: tuple[SequenceJob, str, str]) -> dict:
    job, out_tar, mano_dir = args
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    return generate_sequence(job, Path(out_tar), Path(mano_dir))


# --------------------------------------------------------------------------------------------------
# Stripping and orchestration
# --------------------------------------------------------------------------------------------------


def strip_tar(src: Path, dst: Path, drop_suffixes: tuple[str, ...], drop_hand_shapes: bool) -> None:
    """Copy a sequence tar without the members a public test tar lacks (spec/formats.md §1.1).

    Args:
        src: unstripped tar.
        dst: destination (written atomically).
        drop_suffixes: member suffixes to drop, e.g. ``(".hands.json", ".objects.json")``.
        drop_hand_shapes: also drop ``__hand_shapes.json__``.
    """
    with (
        tarfile.open(src, "r") as tin,
        atomic_path(dst) as tmp,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tout,
    ):
        for m in tin:
            if m.name == "__hand_shapes.json__" and drop_hand_shapes:
                continue
            if any(m.name.endswith(s) for s in drop_suffixes):
                continue
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)


def _synthetic_file(path: Path, current: bytes) -> bool:
    """True if ``path`` is a synthetic MANO file of any mvhand version (replaceable without ``force``).

    Files of this version and later carry the synthetic marker; older ones (unmarked) hold the same arrays.
    """
    from mvhand.mano_pickle import (
        SYNTHETIC_MARKER_KEY,
        is_synthetic_mano,
        loads_mano_pickle,
        read_mano_pickle,
    )

    if is_synthetic_mano(path):
        return True
    try:
        old, new = read_mano_pickle(path), loads_mano_pickle(current)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
    return (
        isinstance(old, dict)
        and set(old) == set(new) - {SYNTHETIC_MARKER_KEY}
        and all(np.array_equal(old[k], new[k]) for k in ("v_template", "hands_components", "hands_mean"))
    )


def _install_mano(mano_dir: Path, force: bool) -> None:
    """Write the synthetic MANO model into ``mano_dir``, refusing to overwrite other MANO files.

    Raises:
        InputError: ``mano_dir`` holds a different ``MANO_*.pkl`` (e.g. the licensed model) and not ``force``.
    """
    import tempfile

    from mvhand.synthetic.mano_model import write_synthetic_mano

    with tempfile.TemporaryDirectory() as td:
        write_synthetic_mano(Path(td))
        new = {n: (Path(td) / n).read_bytes() for n in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl")}
    for name, data in new.items():
        dst = mano_dir / name
        if dst.exists() and not force and dst.read_bytes() != data and not _synthetic_file(dst, data):
            raise InputError(
                dst,
                "exists and is not the synthetic MANO model that the synthetic dataset needs",
                "choose another --mano-dir, or pass --force to overwrite it",
            )
    for name, data in new.items():
        dst = mano_dir / name
        if not dst.exists() or dst.read_bytes() != data:
            with atomic_write(dst, "wb") as fh:
                fh.write(data)


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def generate_dataset(
    dataset: str,
    out_root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate a synthetic dataset in the challenge layout under ``out_root/<dataset>``.

    Args:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        out_root: data root; the dataset goes to ``out_root/<dataset>/``.
        mano_dir: where the synthetic MANO model is written (``MANO_LEFT.pkl``, ``MANO_RIGHT.pkl``).
        seed: master seed; the same seed gives byte-identical files.
        size: ``"tiny"`` (tests), ``"default"`` or ``"large"`` (see :data:`SIZES`).
        force: replace an existing non-empty ``out_root/<dataset>``.
        progress: show a tqdm progress bar on stderr.
        workers: processes (default: ``min(2, cpu_count)``, 1 for tiny datasets). Output bytes do not
            depend on it.

    Returns:
        The dataset folder ``out_root/<dataset>``.

    Raises:
        InputError: unknown dataset/size, existing non-empty output without ``force``, or the disk ran
            full (nothing of the new dataset is left behind in that case).
    """
    cfg = _check_args(dataset, size)
    out_root = Path(out_root)
    final = out_root / dataset
    if _is_nonempty_dir(final) and not force:
        raise InputError(
            final,
            "output folder already exists and is not empty",
            "pass --force (force=True) to overwrite it",
        )
    if final.exists() and not final.is_dir():
        raise InputError(final, "output path exists and is not a folder", "remove it or choose another --out")
    jobs = plan_sequences(dataset, seed, size)
    if workers is None:
        workers = 1 if sum(j.n_frames for j in jobs) <= 64 else max(1, min(2, os.cpu_count() or 1))

    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".{dataset}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _install_mano(Path(mano_dir), force)
        _MANO_CACHE.clear()
        tasks = []
        for job in jobs:
            sub = "train" if job.split == "train" else f"test_annotations/{job.split}"
            tasks.append((job, str(staging / sub / f"{job.name}.tar"), str(mano_dir)))
        for sub in (
            "train",
            "pose_test",
            "shape_test",
            "test_annotations/pose_test",
            "test_annotations/shape_test",
        ):
            (staging / sub).mkdir(parents=True, exist_ok=True)
        summaries = _run_jobs(tasks, workers, progress, dataset)

        drop = (".hands.json", ".objects.json") if dataset == "hot3d" else (".hands.json",)
        for job in jobs:
            if job.split == "train":
                continue
            src = staging / "test_annotations" / job.split / f"{job.name}.tar"
            strip_tar(
                src, staging / job.split / f"{job.name}.tar", drop, drop_hand_shapes=job.split == "shape_test"
            )

        from mvhand.formats.submission import GroundTruth, build_ground_truth, write_gt_archive

        every_n = HOT3D_GT_EVERY_N if dataset == "hot3d" else 1
        ann = staging / "test_annotations"
        pose_tars = [ann / "pose_test" / f"{j.name}.tar" for j in jobs if j.split == "pose_test"]
        shape_tars = [ann / "shape_test" / f"{j.name}.tar" for j in jobs if j.split == "shape_test"]
        gt_pose = build_ground_truth(pose_tars, dataset, every_n)
        gt_shape = build_ground_truth(shape_tars, dataset, every_n)
        # One organiser-style archive for both phases: the pose track scores with the GT betas of
        # the pose-test sequences, so gt_shape lists both test splits (spec/formats.md §6.6); shape
        # submissions therefore cover the pose-test sequences too.
        gt = GroundTruth(
            dataset=dataset,
            landmarks=gt_pose.landmarks,
            shapes=gt_pose.shapes + gt_shape.shapes,
            poses=gt_pose.poses,
        )
        write_gt_archive(staging / "gt.tar.gz", {dataset: gt}, mano_dir)

        manifest = {
            "dataset": dataset,
            "generator": "mvhand.synthetic.world",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": size,
            "frames_per_sequence": {s: cfg.get(f"{s}_frames", cfg["frames"]) for s in SPLITS},
            "gt_every_n_frames": every_n,
            "splits": {s: [j.name for j in jobs if j.split == s] for s in SPLITS},
            "subjects": {j.name: j.subject_index for j in jobs},
            "kinds": {j.name: j.kind for j in jobs},
            "summary": {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in summaries},
        }
        with atomic_write(staging / "manifest.json") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise InputError(
                out_root,
                "no space left on device while writing the synthetic dataset; nothing was kept",
                "free disk space or choose another output folder",
            ) from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("synthetic %s dataset (%s, seed %d) written to %s", dataset, size, seed, final)
    return final


def _run_jobs(tasks: list, workers: int, progress: bool, dataset: str) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=f"synthetic {dataset}", unit="seq", disable=not progress)
    out: list[dict] = []
    try:
        if workers <= 1:
            for t in tasks:
                out.append(generate_sequence(t[0], Path(t[1]), Path(t[2])))
                bar.update(1)
        else:
            import multiprocessing as mp

            # fork: no re-import of the caller's __main__ (works from any script or notebook); the workers
            # switch torch and OpenCV to one thread before any work.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers) as pool:
                for res in pool.imap(_worker, tasks):
                    out.append(res)
                    bar.update(1)
    finally:
        bar.close()
    return out
