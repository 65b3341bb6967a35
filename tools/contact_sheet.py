"""Contact sheet of one sequence: fisheye frames and hand crops with the projected GT skeleton.

Reads a (train) tar of ``<data-root>/<dataset>/<split>/``, computes the GT landmarks with UmeTrack
forward kinematics (``hands.json`` + ``__hand_shapes.json__``), draws them on every stream image and on
the perspective crops of ``hand_crops.json`` (warped with ``mvhand.geometry.cameras.warp_image``), and writes a
PNG atomically.

Example::

    python tools/contact_sheet.py --data-root resources/data --dataset umetrack \
        --out docs/img/contact_sheet_umetrack.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from mvhand.cli import run
from mvhand.formats.sequence import iter_frames, list_sequences, read_hand_shapes
from mvhand.geometry.cameras import crop_camera, warp_image
from mvhand.geometry.umetrack import forward_kinematics
from mvhand.io_utils import InputError, atomic_path

log = logging.getLogger("contact_sheet")

# spec/formats.md §4.7 (UmeTrack landmark order: 0-4 tips, 5 wrist, 6-7 thumb, 8-19 finger joints).
SKELETON = [
    (5, 6), (6, 7), (7, 0),
    (5, 8), (8, 9), (9, 10), (10, 1),
    (5, 11), (11, 12), (12, 13), (13, 2),
    (5, 14), (14, 15), (15, 16), (16, 3),
    (5, 17), (17, 18), (18, 19), (19, 4),
    (6, 8), (8, 11), (11, 14), (14, 17),
]  # fmt: skip
COLOURS = {"left": (255, 140, 0), "right": (0, 200, 255)}  # RGB


def draw_hand(img: np.ndarray, pts: np.ndarray, ok: np.ndarray, colour, scale: float = 1.0) -> None:
    """Draw a skeleton (in place) on an RGB image; ``pts (21, 2)`` pixels, ``ok (21,)`` drawable."""
    sh = 4  # sub-pixel bits

    def p(i):
        return (
            int(round((pts[i, 0] * scale + 0.5 * scale - 0.5) * (1 << sh))),
            int(round((pts[i, 1] * scale + 0.5 * scale - 0.5) * (1 << sh))),
        )

    for a, b in SKELETON:
        if ok[a] and ok[b]:
            cv2.line(img, p(a), p(b), colour, 1, cv2.LINE_AA, sh)
    for i in range(20):
        if ok[i]:
            cv2.circle(img, p(i), 2 << sh, (255, 255, 255) if i == 5 else colour, -1, cv2.LINE_AA, sh)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img.copy()


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)


def make_contact_sheet(
    tar: Path, n_frames: int = 3, view_height: int = 240, crop_size: int = 128
) -> np.ndarray:
    """RGB contact sheet ``(H, W, 3)`` uint8 of ``n_frames`` evenly spaced frames of ``tar``.

    Each row: all stream images (scaled to ``view_height``) with the projected GT skeleton, then every
    hand crop (``crop_size`` px) with the skeleton projected into the crop camera.
    """
    shapes = read_hand_shapes(tar)
    if shapes is None:
        raise InputError(tar, "tar has no __hand_shapes.json__", "use a train tar (--split train)")
    frames_meta = [f.frame_id for f in iter_frames(tar, images=False)]
    if not frames_meta:
        raise InputError(tar, "tar has no frames", "regenerate the dataset")
    pick = sorted({frames_meta[int(round(i))] for i in np.linspace(0, len(frames_meta) - 1, n_frames)})
    rows = []
    for frame in iter_frames(tar, images=True):
        if frame.frame_id not in pick:
            continue
        lms = {
            side: forward_kinematics(shapes.umetrack, hp.joint_angles, hp.T_world_from_wrist, side == "right")
            for side, hp in frame.hands.items()
        }
        tiles = []
        for sid, cam in frame.cameras.items():
            img = _rgb(frame.image(sid))
            s = view_height / cam.height
            img = cv2.resize(img, (int(round(cam.width * s)), view_height), interpolation=cv2.INTER_AREA)
            for side, lm in lms.items():
                v = cam.world_to_eye(lm)
                w = cam.eye_to_window(v)
                draw_hand(img, w, v[:, 2] > 0, COLOURS[side], s)
            _label(img, f"{frame.sequence_name} #{frame.frame_id} {sid}")
            tiles.append(img)
        for side, crops in frame.hand_crops.items():
            for sid, cp in crops.items():
                ccam = crop_camera(cp.T_world_from_crop_camera, cp.fov, crop_size)
                crop = _rgb(warp_image(frame.image(sid), frame.cameras[sid], ccam))
                if side in lms:
                    v = ccam.world_to_eye(lms[side])
                    draw_hand(crop, ccam.eye_to_window(v), v[:, 2] > 0, COLOURS[side])
                _label(crop, f"{side[0].upper()} {sid}")
                pad = np.zeros((view_height, crop_size, 3), np.uint8)
                pad[: min(crop_size, view_height)] = crop[:view_height]
                tiles.append(pad)
        rows.append(np.concatenate(tiles, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, 0)


def _pick(tars: list[Path]) -> Path:
    """The first tar whose first frame has both hands cropped (else the first tar)."""
    for tar in tars:
        first = next(iter_frames(tar, images=False), None)
        if first is not None and len(first.hand_crops) == 2:
            return tar
    return tars[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, type=Path, help="folder holding <dataset>/<split>/*.tar")
    ap.add_argument("--dataset", required=True, choices=["umetrack", "hot3d"])
    ap.add_argument("--out", required=True, type=Path, help="output PNG")
    ap.add_argument("--split", default="train", help="split folder (needs annotations; default train)")
    ap.add_argument(
        "--sequence",
        default=None,
        help="tar stem (default: the first one with both hands in its first frame)",
    )
    ap.add_argument("--frames", type=int, default=3, help="number of frames (rows)")
    ap.add_argument("--crop-size", type=int, default=128)
    args = ap.parse_args(argv)
    try:
        split_dir = args.data_root / args.dataset / args.split
        if not split_dir.is_dir():
            raise InputError(split_dir, "split folder not found", "generate or download the dataset first")
        tars = list_sequences(split_dir)
        if args.sequence:
            tars = [t for t in tars if t.name.split(".")[0] == args.sequence]
        if not tars:
            raise InputError(
                split_dir, f"no sequence tar found (sequence={args.sequence!r})", "check --sequence"
            )
        sheet = make_contact_sheet(_pick(tars), args.frames, crop_size=args.crop_size)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    with atomic_path(args.out, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), sheet[..., ::-1]):
            raise OSError(f"cannot write {args.out}")
    log.info("wrote %s (%dx%d)", args.out, sheet.shape[1], sheet.shape[0])
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "contact_sheet"))
