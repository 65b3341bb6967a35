"""Training/inference samples from the Parquet crop cache: view grouping, exact crop augmentation, flips.

One sample = one hand instance (sequence, frame, hand side) with up to V crops. All geometry stays exact:

* **Flip (spec/model.md §2.5).** Left hands become right hands by mirroring the world with M = diag(−1, 1, 1):
  the stored crop is flipped horizontally (``cx → W − 1 − cx``), every crop pose becomes
  ``M₄ T M₄`` (a proper rigid transform), landmarks/root become ``M p`` and the MANO global rotation
  ``M R M``; PCA pose and betas are unchanged (the left MANO basis is the mirror of the right one).
  :func:`unflip_points` / :func:`unflip_rotation` undo it.
* **Crop augmentation as an exact homography.** The stored margin crop (pinhole ``K_old``) is re-rendered
  into the S×S training crop of a rotated pinhole camera ``K_new`` sharing the optical centre:
  ``H = K_new · R_δ · K_old⁻¹`` (``x_new = R_δ x_old`` in eye coordinates), warped with
  ``cv2.warpPerspective``; the crop pose becomes ``T_world_from_new = T_world_from_old · [R_δᵀ 0; 0 1]``.
  ``R_δ`` = roll about the optical axis · small look-at tilt; the focal is scaled for FOV jitter.
  Without augmentation ``R_δ = I`` and ``f_new = (S/2)/tan(fov/2)`` (the hand_crops.json field of view).
* **Extrinsic translation noise (spec/model.md §2.4).** One offset δ ~ U(−a, a)³ per sample is added to
  every crop-camera centre and to the 3D targets (a shift of the world origin). The anchor (mean of the
  valid camera centres) is computed *before* the shift, so the network sees the offset between anchor
  and cameras; image-space quantities are unchanged.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler

from mvhand.geometry.cameras import project_pinhole
from mvhand.geometry.transforms import rodrigues
from mvhand.io_utils import InputError

__all__ = [
    "REQUIRED_COLUMNS",
    "MIRROR",
    "AugmentConfig",
    "CropDataset",
    "EpochSampler",
    "collate",
    "instance_groups",
    "read_crop_tables",
    "split_sequences",
    "flip_transform",
    "flip_intrinsics",
    "unflip_points",
    "unflip_rotation",
    "crop_homography",
    "warp_crop",
]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "sequence_name",
    "frame_id",
    "hand_side",
    "view_index",
    "stream_id",
    "image_jpeg",
    "crop_size",
    "fov",
    "intrinsics",
    "T_world_from_crop",
    "mano_beta",
    "landmarks_world",
    "mano_theta",
    "mano_wrist_xform",
    "n_visible",
)
MIRROR = np.diag([-1.0, 1.0, 1.0])  # M of spec/model.md §2.5
_MIRROR4 = np.diag([-1.0, 1.0, 1.0, 1.0])
_FIX = "re-create the crop cache with workflow/scripts/cache_crops.py"


# --------------------------------------------------------------------------------------------------
# Pure geometry
# --------------------------------------------------------------------------------------------------


def flip_transform(T: np.ndarray) -> np.ndarray:
    """Mirror a pose ``(..., 4, 4)`` with the world: ``M₄ T M₄`` (a proper rigid transform again)."""
    return _MIRROR4 @ np.asarray(T, dtype=np.float64) @ _MIRROR4


def flip_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics ``(..., 4)`` of a horizontally flipped image of ``width`` px: ``cx → W − 1 − cx``."""
    K = np.array(K, dtype=np.float64)
    K[..., 2] = (width - 1) - K[..., 2]
    return K


def unflip_points(p: np.ndarray) -> np.ndarray:
    """Undo (or apply) the mirror on points ``(..., 3)``: x → −x."""
    return np.asarray(p) * np.array([-1.0, 1.0, 1.0], dtype=np.asarray(p).dtype)


def unflip_rotation(R: np.ndarray) -> np.ndarray:
    """Undo (or apply) the mirror on rotations ``(..., 3, 3)``: ``M R M``."""
    return MIRROR @ np.asarray(R, dtype=np.float64) @ MIRROR


def _kmat(K: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = (float(v) for v in K)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def crop_homography(K_old: np.ndarray, K_new: np.ndarray, R_delta: np.ndarray) -> np.ndarray:
    """Pixel homography old crop → new crop of two pinhole cameras with the same optical centre.

    Args:
        K_old, K_new: ``(4,)`` fx, fy, cx, cy (pixels, pixel-centre convention).
        R_delta: ``(3, 3)`` rotation taking old-eye directions to new-eye directions.

    Returns:
        ``(3, 3)`` H with ``p_new ~ H p_old`` (homogeneous pixels).
    """
    return _kmat(K_new) @ R_delta @ np.linalg.inv(_kmat(K_old))


def warp_crop(image: np.ndarray, H: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` (H, W[, C]) with the old→new homography into a ``size``² crop (black outside)."""
    return cv2.warpPerspective(
        image, H, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _rot_axis(axis: int, angle: float) -> np.ndarray:
    r = np.zeros(3)
    r[axis] = angle
    return rodrigues(r)


# --------------------------------------------------------------------------------------------------
# Configuration, splitting, reading
# --------------------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Training augmentations (all off with ``enabled=False`` except what is set explicitly).

    Attributes:
        enabled: master switch for the random crop/photometric augmentations and view dropout.
        rot_deg: roll about the optical axis ~ U(−rot_deg, rot_deg).
        lookat_deg: look-at tilt about the eye x and y axes ~ U(−lookat_deg, lookat_deg) each.
        scale_range: focal multiplier range (FOV jitter; > 1 zooms in).
        brightness: additive brightness ~ U(−b, b) · 255.
        contrast: contrast factor ~ U(1 − c, 1 + c).
        blur_prob, blur_sigma: probability and max sigma (px) of a Gaussian blur.
        noise_prob, noise_std: probability and max std (grey levels) of Gaussian noise.
        extrinsic_noise: half-width a (m) of the shared world shift δ ~ U(−a, a)³ (0 = off).
        view_dropout: probability of dropping views (keeping at least one) when ≥ 2 are available.
    """

    enabled: bool = True
    rot_deg: float = 30.0
    lookat_deg: float = 3.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.15
    contrast: float = 0.3
    blur_prob: float = 0.3
    blur_sigma: float = 1.2
    noise_prob: float = 0.5
    noise_std: float = 6.0
    extrinsic_noise: float = 0.5
    view_dropout: float = 0.2


def split_sequences(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/val split of sequence names.

    Args:
        names: sequence names (any order, duplicates ignored).
        val_fraction: fraction of sequences held out (at least one when > 0 and ≥ 2 sequences exist).
        seed: split seed.

    Returns:
        ``(train, val)`` sorted name lists.
    """
    uniq = sorted(set(names))
    if val_fraction <= 0 or len(uniq) < 2:
        return uniq, []
    n_val = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    val = sorted(uniq[i] for i in perm[:n_val])
    return sorted(set(uniq) - set(val)), val


def read_crop_tables(files: Sequence[str | os.PathLike], sequences: set[str] | None = None) -> pa.Table:
    """Read and concatenate crop-cache Parquet files, checking the schema.

    Args:
        files: Parquet files of the crop cache (docs/architecture.md schema).
        sequences: keep only these sequence names (None = all).

    Raises:
        InputError: a file is missing, unreadable, or lacks a required column.
    """
    tables = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise InputError(path, "crop cache file not found", _FIX)
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(path, f"not a readable Parquet file ({exc})", _FIX) from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise InputError(path, f"crop cache lacks column(s) {', '.join(missing)}", _FIX)
        t = pq.read_table(path, columns=list(REQUIRED_COLUMNS))
        if sequences is not None:
            keep = np.isin(np.asarray(t.column("sequence_name").to_pylist(), dtype=object), list(sequences))
            t = t.filter(pa.array(keep))
        if t.num_rows:
            tables.append(t)
    if not tables:
        return pa.table({c: pa.array([], type=pa.null()) for c in REQUIRED_COLUMNS})
    return pa.concat_tables(tables, promote_options="permissive")


def instance_groups(
    seq: np.ndarray, frame: np.ndarray, side: np.ndarray, view_index: np.ndarray
) -> list[np.ndarray]:
    """Rows of each hand instance (sequence, frame, side), instances sorted by that key.

    Args:
        seq, frame, side, view_index: ``(rows,)`` columns of crop-cache rows.

    Returns:
        One int64 array of row numbers per instance, sorted by ``view_index``.
    """
    if len(seq) == 0:
        return []
    order = np.lexsort((view_index, side, frame, np.asarray(seq).astype(str)))
    keys = list(zip(np.asarray(seq)[order], frame[order], side[order], strict=True))
    groups, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or keys[i] != keys[start]:
            groups.append(order[start:i])
            start = i
    return groups


def _fixed(table: pa.Table, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A list column as a float64 ``(rows, width)`` array (NaN for nulls) and its validity mask."""
    col = table.column(name).combine_chunks()
    out = np.full((table.num_rows, width), np.nan)
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if valid.any():
        vals = col.filter(pa.array(valid))
        flat = np.asarray(vals.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        out[valid] = flat.reshape(-1, width)
    return out, valid


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


class CropDataset(Dataset):
    """Hand instances of a crop cache, each with up to ``views`` crops.

    Args:
        files: crop-cache Parquet files.
        img_size: side S of the training crop (pixels).
        views: view slots V per sample.
        in_chans: 1 (grey; RGB crops are converted) or 3 (grey replicated; RGB kept).
        train: random view choice, augmentations and extrinsic noise (eval: the V crops with the most
            visible landmarks, no randomness).
        augment: augmentation settings (train only); default :class:`AugmentConfig`.
        seed: base seed; sample randomness is drawn from ``default_rng([seed, epoch, index])`` so it
            does not depend on worker processes (exact resume).
        sequences: restrict to these sequence names.
        mano: optional :class:`mvhand.geometry.mano.ManoModel`; needed for root-joint / rotation targets.
        require_gt: keep only instances with ground-truth landmarks.

    Items (``dataset[i]`` or ``dataset[(epoch, i)]``) are dicts of numpy arrays, see :func:`collate`.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        img_size: int,
        views: int = 2,
        in_chans: int = 1,
        train: bool = True,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        sequences: Sequence[str] | None = None,
        mano: torch.nn.Module | None = None,
        require_gt: bool = False,
    ):
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        # OpenCV's internal thread pool does not survive fork(): a DataLoader worker forked after the
        # parent used cv2 can deadlock in warpPerspective. Crops are small; run OpenCV single-threaded.
        cv2.setNumThreads(0)
        self.files = [str(f) for f in files]
        self.img_size = int(img_size)
        self.views = int(views)
        self.in_chans = in_chans
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = int(seed)
        self.base = 0
        table = read_crop_tables(self.files, None if sequences is None else set(sequences))
        self._load(table, mano)
        if require_gt:
            self.groups = [g for g in self.groups if self.has_lm[g[0]]]

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        source: str | os.PathLike,
        img_size: int,
        views: int = 2,
        in_chans: int = 1,
        train: bool = True,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        mano: torch.nn.Module | None = None,
        require_gt: bool = False,
        base: int = 0,
    ) -> CropDataset:
        """The instances of an already read (and filtered) crop-cache table, e.g. one row group.

        Args:
            table: crop-cache rows (at least :data:`REQUIRED_COLUMNS`; ``image_jpeg`` may be absent when
                only :meth:`eval_targets` is needed).
            source: the file the rows come from (named in errors).
            base: global id of this table's first instance: item ``i`` draws its randomness from
                ``default_rng([seed, epoch, base + i])`` and reports ``index = base + i``.
            img_size, views, in_chans, train, augment, seed, mano, require_gt: as for the constructor.
        """
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        ds = cls.__new__(cls)
        ds.files = [str(source)]
        ds.img_size, ds.views, ds.in_chans, ds.train = int(img_size), int(views), in_chans, train
        ds.augment = augment if augment is not None else AugmentConfig()
        ds.seed, ds.base = int(seed), int(base)
        ds._load(table, mano)
        if require_gt:
            ds.groups = [g for g in ds.groups if ds.has_lm[g[0]]]
        return ds

    # ----------------------------------------------------------------------------------------------
    def _load(self, t: pa.Table, mano: torch.nn.Module | None) -> None:
        n = t.num_rows
        self.num_rows = n
        if n == 0:
            self.groups: list[np.ndarray] = []
            return
        self.seq = np.asarray(t.column("sequence_name").to_pylist(), dtype=object)
        self.frame = t.column("frame_id").to_numpy().astype(np.int64)
        self.side = t.column("hand_side").to_numpy().astype(np.int64)
        self.view_index = t.column("view_index").to_numpy().astype(np.int64)
        self.stream = np.asarray(t.column("stream_id").to_pylist(), dtype=object)
        # one chunk per file/row group: never combined, so the 2 GiB offset limit of binary() cannot bite
        self.images = t.column("image_jpeg") if "image_jpeg" in t.column_names else None
        self.crop_size = t.column("crop_size").to_numpy().astype(np.int64)
        self.fov = t.column("fov").to_numpy().astype(np.float64)
        self.n_visible = t.column("n_visible").to_numpy().astype(np.int64)
        self.K, _ = _fixed(t, "intrinsics", 4)
        T, _ = _fixed(t, "T_world_from_crop", 16)
        self.T = T.reshape(n, 4, 4)
        lm, self.has_lm = _fixed(t, "landmarks_world", 60)
        self.lm = lm.reshape(n, 20, 3)
        self.beta, self.has_beta = _fixed(t, "mano_beta", 10)
        self.theta, has_theta = _fixed(t, "mano_theta", 15)
        self.wrist, has_wrist = _fixed(t, "mano_wrist_xform", 6)
        self.has_mano = has_theta & has_wrist & self.has_beta & (mano is not None)
        # MANO root-joint and rotation targets in the hand's own (unflipped) world.
        self.root = np.zeros((n, 3))
        self.rot = np.tile(np.eye(3), (n, 1, 1))
        if mano is not None and self.has_mano.any():
            idx = np.flatnonzero(self.has_mano)
            with torch.no_grad():
                for s in (0, 1):
                    sel = idx[self.side[idx] == s]
                    if sel.size:
                        j0 = mano.layer(s).root_joint(torch.as_tensor(self.beta[sel], dtype=torch.float32))
                        self.root[sel] = j0.double().cpu().numpy() + self.wrist[sel, 3:]
            self.rot[idx] = rodrigues(self.wrist[idx, :3])
        self.groups = instance_groups(self.seq, self.frame, self.side, self.view_index)

    def __len__(self) -> int:
        return len(self.groups)

    def sequence_names(self) -> list[str]:
        """Sorted unique sequence names of the kept instances."""
        return sorted({str(self.seq[g[0]]) for g in self.groups})

    def group_info(self, i: int) -> dict:
        """Identity of instance ``i``: sequence_name, frame_id, hand_side, rows (crop-cache rows)."""
        g = self.groups[i]
        return {
            "sequence_name": str(self.seq[g[0]]),
            "frame_id": int(self.frame[g[0]]),
            "hand_side": int(self.side[g[0]]),
            "rows": g,
        }

    def choose_views(self, i: int, rng: np.random.Generator | None) -> np.ndarray:
        """Crop-cache rows used for instance ``i`` (≤ V, in slot order)."""
        g = self.groups[i]
        if rng is None or not self.train:
            best = sorted(g, key=lambda r: (-self.n_visible[r], self.view_index[r]))[: self.views]
            return np.array(sorted(best, key=lambda r: self.view_index[r]), dtype=np.int64)
        rows = rng.permutation(g)[: self.views]
        a = self.augment
        if a.enabled and rows.size >= 2 and rng.random() < a.view_dropout:
            rows = rows[: int(rng.integers(1, rows.size))]
        return rows

    def decode(self, row: int) -> np.ndarray:
        """The stored crop of ``row`` as uint8 (H, W) grey or (H, W, 3) RGB."""
        buf = np.frombuffer(self.images[int(row)].as_py(), dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(
                self.files[0] if len(self.files) == 1 else None,
                f"crop-cache row {row}: undecodable JPEG",
                _FIX,
            )
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img

    def _channels(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and self.in_chans == 1:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if img.ndim == 2:
            img = img[None] if self.in_chans == 1 else np.repeat(img[None], 3, 0)
        else:
            img = np.ascontiguousarray(img.transpose(2, 0, 1))
        return img

    def _photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.augment
        x = img.astype(np.float32)
        alpha = rng.uniform(1 - a.contrast, 1 + a.contrast)
        beta = rng.uniform(-a.brightness, a.brightness) * 255.0
        x = (x - 127.5) * alpha + 127.5 + beta
        if rng.random() < a.blur_prob:
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=rng.uniform(0.1, a.blur_sigma))
        if rng.random() < a.noise_prob:
            x = x + rng.normal(0.0, rng.uniform(0.0, a.noise_std), x.shape)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        gid = self.base + int(i)  # global instance id: the sample's randomness and "index"
        rng = np.random.default_rng([self.seed, int(epoch), gid]) if self.train else None
        aug = self.augment if (self.train and self.augment.enabled) else None
        rows = self.choose_views(i, rng)
        S, V = self.img_size, self.views
        g0 = self.groups[i][0]
        flip = bool(self.side[g0] == 0)
        images = np.zeros((V, self.in_chans, S, S), dtype=np.uint8)
        K = np.tile(np.array([S, S, (S - 1) / 2, (S - 1) / 2], dtype=np.float64), (V, 1))
        T = np.tile(np.eye(4), (V, 1, 1))
        H = np.tile(np.eye(3), (V, 1, 1))
        view_rows = np.full(V, -1, dtype=np.int64)
        mask = np.zeros(V, dtype=np.float32)
        for slot, r in enumerate(rows):
            img = self.decode(r)
            W = img.shape[1]
            K_old, T_old = self.K[r], self.T[r]
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
                K_old, T_old = flip_intrinsics(K_old, W), flip_transform(T_old)
            f_new = (S / 2.0) / math.tan(self.fov[r] / 2.0)
            R_delta = np.eye(3)
            if aug is not None:
                f_new *= rng.uniform(*aug.scale_range)
                tilt = np.deg2rad(aug.lookat_deg)
                R_delta = (
                    _rot_axis(2, rng.uniform(-1, 1) * np.deg2rad(aug.rot_deg))
                    @ _rot_axis(0, rng.uniform(-tilt, tilt))
                    @ _rot_axis(1, rng.uniform(-tilt, tilt))
                )
            K_new = np.array([f_new, f_new, (S - 1) / 2, (S - 1) / 2])
            H[slot] = crop_homography(K_old, K_new, R_delta)
            warped = warp_crop(img, H[slot], S)
            if aug is not None:
                warped = self._photometric(warped, rng)
            images[slot] = self._channels(warped)
            K[slot] = K_new
            T[slot] = T_old
            T[slot, :3, :3] = T_old[:3, :3] @ R_delta.T
            view_rows[slot] = r
            mask[slot] = 1.0
        n = len(rows)
        anchor = T[:n, :3, 3].mean(0)
        delta = np.zeros(3)
        if aug is not None and aug.extrinsic_noise > 0:
            delta = rng.uniform(-aug.extrinsic_noise, aug.extrinsic_noise, 3)
        T[:n, :3, 3] += delta
        # Targets in the (flipped, shifted) world.
        has_lm = bool(self.has_lm[g0])
        lm = np.nan_to_num(self.lm[g0]) if has_lm else np.zeros((20, 3))
        root, rot = self.root[g0].copy(), self.rot[g0].copy()
        if flip:
            lm, root, rot = unflip_points(lm), unflip_points(root), unflip_rotation(rot)
        lm, root = lm + delta, root + delta
        uv = np.zeros((V, 20, 2))
        uv_valid = np.zeros((V, 20), dtype=bool)
        if has_lm:
            for slot in range(n):
                uv[slot], z = project_pinhole(lm, T[slot], K[slot])
                inside = np.all((uv[slot] > -0.1 * S) & (uv[slot] < 1.1 * S), axis=-1)
                uv_valid[slot] = (z > 1e-3) & inside
        f32 = np.float32
        return {
            "index": np.int64(gid),
            "images": images,
            "view_mask": mask,
            "K": K.astype(f32),
            "T_world_from_crop": T.astype(f32),
            "anchor": anchor.astype(f32),
            "H": H.astype(f32),
            "view_rows": view_rows,
            "hand_side": np.int64(self.side[g0]),
            "flipped": np.bool_(flip),
            "delta": delta.astype(f32),
            "has_landmarks": np.bool_(has_lm),
            "landmarks": lm.astype(f32),
            "uv": uv.astype(f32),
            "uv_valid": uv_valid,
            "has_mano": np.bool_(self.has_mano[g0]),
            "pose_pca": np.nan_to_num(self.theta[g0]).astype(f32),
            "global_rot": rot.astype(f32),
            "root": root.astype(f32),
            "has_beta": np.bool_(self.has_beta[g0]),
            "betas": np.nan_to_num(self.beta[g0]).astype(f32),
        }

    def eval_targets(self, i: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Cheap (no image) targets of instance ``i`` in the flipped world without augmentation.

        Returns:
            ``(landmarks (20, 3) or None, anchor (3,))`` metres.
        """
        rows = self.choose_views(i, None)
        g0 = self.groups[i][0]
        flip = self.side[g0] == 0
        centres = self.T[rows, :3, 3]
        anchor = unflip_points(centres).mean(0) if flip else centres.mean(0)
        if not self.has_lm[g0]:
            return None, anchor
        lm = self.lm[g0]
        return (unflip_points(lm) if flip else lm), anchor


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack :class:`CropDataset` items into batched tensors (leading dimension B)."""
    return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in samples[0]}


class EpochSampler(Sampler):
    """Deterministic, resumable sampler yielding ``(epoch, index)`` keys for :class:`CropDataset`.

    Each epoch draws ``iters_per_epoch · batch_size · world_size`` indices from concatenated seeded
    permutations of the dataset and gives rank ``r`` every ``world_size``-th batch slice.

    Args:
        n: dataset length.
        batch_size: per-process batch size.
        iters_per_epoch: batches per epoch and process.
        seed: sampler seed.
        rank, world_size: DDP position (0, 1 without DDP).
    """

    def __init__(
        self, n: int, batch_size: int, iters_per_epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.bs, self.iters, self.seed = n, batch_size, iters_per_epoch, seed
        self.rank, self.world = rank, world_size
        self.epoch = 0
        self.start_iter = 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Select the epoch and skip its first ``start_iter`` batches (resume)."""
        self.epoch, self.start_iter = int(epoch), int(start_iter)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """``(iters, batch_size)`` indices of this rank for ``epoch``."""
        total = self.iters * self.bs * self.world
        rng = np.random.default_rng([self.seed, 7919, int(epoch)])
        reps = -(-total // self.n)
        idx = np.concatenate([rng.permutation(self.n) for _ in range(reps)])[:total]
        return idx.reshape(self.iters, self.world, self.bs)[:, self.rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.epoch_indices(self.epoch)[self.start_iter :].reshape(-1)
        return iter([(self.epoch, int(i)) for i in idx])

    def __len__(self) -> int:
        return (self.iters - self.start_iter) * self.bs
