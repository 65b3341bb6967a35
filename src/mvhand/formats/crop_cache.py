"""Perspective-crop cache: one Parquet file of rendered hand crops (+ targets) per sequence.

For every frame of a sequence tar, every hand with a non-empty ``hand_crops.json`` entry (left, then
right) and every view of that hand, the crop camera of spec/formats.md §3.8 is rendered with a field-of-view
margin ``m``::

    tan(render_fov / 2) = m · tan(fov / 2),   render_size = round(m · S)

so that a training-time homography can zoom or rotate inside the crop without black borders (the crop
centre and the focal length in px stay those of the S-px crop). The source image is warped with
:func:`mvhand.geometry.cameras.warp_image` (spec/formats.md §3.9) and stored as JPEG (mono sources stay 1-channel). When the split
has annotations the row also carries the UmeTrack canonical landmarks (FK with the sequence's hand
profile), their projection into the rendered crop and the MANO parameters. The schema is
:data:`CROP_SCHEMA` (documented in docs/architecture.md).

Work is spread over a pool of worker processes (``threads`` = workers; the per-crop work is NumPy/OpenCV
calls interleaved with Python, which threads cannot overlap because of the GIL): the calling process only
streams the tar's raw member groups in chunks of consecutive frames, the workers parse each chunk, run
forward kinematics for all its hands in one batch, decode, warp and encode its crops and return its rows. A
bounded number of chunks is in flight (bounded memory); rows keep the frame order and are written in row
groups, atomically (a failed run leaves no Parquet file). One worker (``threads=1``) runs the same
chunk function in the calling process.
"""

from __future__ import annotations

import collections
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mvhand._process import exit_with_process, tune_allocator
from mvhand.constants import HAND_SIDES
from mvhand.formats.sequence import Frame, iter_frame_groups, parse_frame_group, read_hand_shapes
from mvhand.formats.sequence import sequence_name as dataset_sequence_name
from mvhand.geometry.cameras import CameraModel, crop_camera, project_pinhole, warp_image
from mvhand.geometry.umetrack import canonical_landmarks, forward_kinematics
from mvhand.io_utils import InputError, atomic_path

__all__ = [
    "CROP_SCHEMA",
    "CropCacheStats",
    "CropSettings",
    "LIST_WIDTHS",
    "cache_sequence_crops",
    "check_crop_file",
    "crop_render_geometry",
    "decode_crop_jpeg",
    "project_to_crop",
]

log = logging.getLogger(__name__)


_F32 = pa.float32()
CROP_SCHEMA = pa.schema(
    [
        pa.field("sequence_name", pa.string(), nullable=False),
        pa.field("frame_id", pa.int32(), nullable=False),
        pa.field("hand_side", pa.int8(), nullable=False),
        pa.field("view_index", pa.int8(), nullable=False),
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("image_jpeg", pa.binary(), nullable=False),
        pa.field("crop_size", pa.int16(), nullable=False),
        pa.field("fov", _F32, nullable=False),
        pa.field("render_fov", _F32, nullable=False),
        pa.field("intrinsics", pa.list_(_F32, 4), nullable=False),
        pa.field("T_world_from_crop", pa.list_(_F32, 16), nullable=False),
        pa.field("mano_beta", pa.list_(_F32)),
        pa.field("landmarks_world", pa.list_(_F32)),
        pa.field("landmarks_crop", pa.list_(_F32)),
        pa.field("mano_theta", pa.list_(_F32)),
        pa.field("mano_wrist_xform", pa.list_(_F32)),
        pa.field("n_visible", pa.int8(), nullable=False),
    ],
    metadata={"mvhand.formats.crop_cache": "1"},
)
#: Values per row of the list columns of :data:`CROP_SCHEMA` (null allowed where the schema allows it).
LIST_WIDTHS = {
    "intrinsics": 4,
    "T_world_from_crop": 16,
    "mano_beta": 10,
    "landmarks_world": 60,
    "landmarks_crop": 40,
    "mano_theta": 15,
    "mano_wrist_xform": 6,
}
# Per-column Parquet compression: JPEG bytes are stored as is, everything else zstd-compressed.
_COMPRESSION = {
    (
        f.name + ".list.element"
        if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
        else f.name
    ): ("none" if f.name == "image_jpeg" else "zstd")
    for f in CROP_SCHEMA
}


@dataclass(frozen=True)
class CropSettings:
    """Crop-cache settings (the ``crops:`` config section).

    Attributes:
        crop_size: training crop side S, px.
        fov_margin: field-of-view margin m ≥ 1 (tan scale).
        jpeg_quality: JPEG quality 1–100.
    """

    crop_size: int = 128
    fov_margin: float = 1.25
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if not (8 <= int(self.crop_size) <= 4096):
            raise ValueError(f"crop_size must be in [8, 4096] px, got {self.crop_size}")
        if not (1.0 <= float(self.fov_margin) <= 4.0):
            raise ValueError(f"fov_margin must be in [1, 4], got {self.fov_margin}")
        if not (1 <= int(self.jpeg_quality) <= 100):
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


@dataclass
class CropCacheStats:
    """What :func:`cache_sequence_crops` wrote.

    Attributes:
        n_frames: frames read.
        n_rows: crops written (rows).
        n_with_targets: rows with landmark targets.
        skipped_views: (frame_id, hand, stream_id) of crop entries whose stream has no camera/image.
    """

    n_frames: int = 0
    n_rows: int = 0
    n_with_targets: int = 0
    skipped_views: list[tuple[int, str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Pure maths
# --------------------------------------------------------------------------------------------------


def crop_render_geometry(fov: float, crop_size: int, fov_margin: float) -> tuple[float, int]:
    """Field of view and side of the rendered crop.

    Args:
        fov: ``crop_camera_fov`` of ``hand_crops.json``, radians.
        crop_size: training crop side S, px.
        fov_margin: margin m ≥ 1.

    Returns:
        ``(render_fov, render_size)`` with ``tan(render_fov/2) = m·tan(fov/2)`` (radians) and
        ``render_size = round(m·S)`` (px).

    Raises:
        ValueError: ``fov`` outside (0, π) or the widened fov reaching π.
    """
    if not (0.0 < fov < math.pi):
        raise ValueError(f"crop fov must be in (0, π) radians, got {fov}")
    render_fov = 2.0 * math.atan(fov_margin * math.tan(fov / 2.0))
    return render_fov, int(round(fov_margin * crop_size))


def project_to_crop(points_world: np.ndarray, cam: CameraModel) -> tuple[np.ndarray, int]:
    """Project world points into a pinhole crop camera (:func:`mvhand.geometry.cameras.project_pinhole`).

    Args:
        points_world: ``(N, 3)`` metres.
        cam: crop camera (``PinholePlane``).

    Returns:
        ``(uv (N, 2) float32 px, n_visible)``: pixel positions (spec/formats.md §3.2) and the number of
        points in front of the camera (z > 0) whose position lies inside the image ``[−½, W−½] × [−½, H−½]``.
    """
    uv, z = project_pinhole(points_world, cam.T_world_from_eye, cam.K)
    inside = (
        (z > 0)
        & (uv[:, 0] >= -0.5)
        & (uv[:, 0] <= cam.width - 0.5)
        & (uv[:, 1] >= -0.5)
        & (uv[:, 1] <= cam.height - 0.5)
    )
    return uv.astype(np.float32), int(inside.sum())


def check_crop_file(path: str | os.PathLike) -> None:
    """Check that every list column of a crop cache has its fixed width in every row (:data:`LIST_WIDTHS`).

    A cache written by hand (or by another tool) with, e.g., 3 intrinsics in a row would otherwise be
    reshaped silently into misaligned cameras. Reads only the list columns present (no images).

    Raises:
        InputError: unreadable file or a row of the wrong length (file, column and first row named).
    """
    import pyarrow.compute as pc

    fix = "re-create it with the cache_crops stage (schema: docs/architecture.md)"
    try:
        names = [c for c in LIST_WIDTHS if c in pq.read_schema(path).names]
        table = pq.read_table(path, columns=names)
    except Exception as exc:  # noqa: BLE001 - any Arrow failure means an unusable file
        raise InputError(path, f"not a readable crop cache ({exc})", fix) from exc
    for name in names:
        lengths = pc.list_value_length(table.column(name)).to_numpy(zero_copy_only=False)
        lengths = np.asarray(lengths, dtype=np.float64)  # nulls (no target) become NaN and are allowed
        bad = np.flatnonzero(np.isfinite(lengths) & (lengths != LIST_WIDTHS[name]))
        if len(bad):
            raise InputError(
                path,
                f"column {name!r} has {int(lengths[bad[0]])} values in row {int(bad[0])} ({len(bad)} rows wrong), "
                f"expected {LIST_WIDTHS[name]}",
                fix,
            )


def decode_crop_jpeg(data: bytes) -> np.ndarray:
    """Decode a stored crop: ``(S, S)`` uint8 for mono, ``(S, S, 3)`` RGB uint8 for colour crops."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a decodable JPEG crop")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


# --------------------------------------------------------------------------------------------------
# Per-frame work
# --------------------------------------------------------------------------------------------------


class _SequenceContext:
    """Per-sequence constants shared by the workers (pickled once per worker process)."""

    def __init__(self, tar_path: Path, sequence_name: str, settings: CropSettings, shapes) -> None:
        self.tar_path = tar_path
        self.sequence_name = sequence_name
        self.owner_pid = os.getpid()  # the job's main process: workers exit when it dies
        self.settings = settings
        self.umetrack = getattr(shapes, "umetrack", None)
        beta = getattr(shapes, "mano_betas", None)
        self.mano_beta = None if beta is None else np.asarray(beta, np.float32).reshape(-1).tolist()
        self.encode_params = [cv2.IMWRITE_JPEG_QUALITY, int(settings.jpeg_quality)]
        # colour crops keep full-resolution chroma (4:4:4): small crops suffer visibly from 4:2:0
        self.encode_params_rgb = self.encode_params + [
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ]

    def chunk_landmarks(self, frames: list[Frame]) -> list[dict[str, np.ndarray]]:
        """Canonical world landmarks ``(20, 3)`` float32 of every annotated, cropped hand of a chunk.

        One batched forward-kinematics call for all hands (the per-call overhead of FK is larger than its
        arithmetic for a single hand). Returns one ``{side: landmarks}`` dict per frame (empty without a hand
        profile).
        """
        per_frame: list[dict[str, np.ndarray]] = [{} for _ in frames]
        if self.umetrack is None:
            return per_frame
        keys, angles, wrists = [], [], []
        for i, frame in enumerate(frames):
            for side in HAND_SIDES:
                hand = (frame.hands or {}).get(side)
                if hand is not None and (frame.hand_crops or {}).get(side):
                    keys.append((i, side))
                    angles.append(np.asarray(hand.joint_angles, np.float32)[:20])
                    wrists.append(np.asarray(hand.T_world_from_wrist))
        if keys:
            is_right = np.array([side == "right" for _, side in keys])
            lm21 = forward_kinematics(self.umetrack, np.stack(angles), np.stack(wrists), is_right)
            lm = np.asarray(canonical_landmarks(lm21), np.float32)
            for k, (i, side) in enumerate(keys):
                per_frame[i][side] = lm[k]
        return per_frame


def _opt_list(x) -> list[float] | None:
    return None if x is None else np.asarray(x, np.float32).reshape(-1).tolist()


@dataclass
class _ChunkResult:
    """What one chunk of frames produced (returned by the workers).

    Rows, not an Arrow table: building Arrow arrays makes pyarrow import pandas (~0.4 s), which the workers
    would each pay at start-up; the writing process builds the table (~0.01 ms per row).
    """

    rows: list[dict]
    n_frames: int
    skipped: list[tuple[int, str, str]]


def _parse_group(group, ctx: _SequenceContext) -> Frame:
    """Parse one raw tar member group (:func:`mvhand.formats.sequence.iter_frame_groups`), naming the file on error."""
    try:
        return parse_frame_group(ctx.tar_path, group, True, None)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed members of a broken sequence file
        raise InputError(
            ctx.tar_path,
            f"corrupt frame {group.key} ({type(e).__name__}: {e})",
            "re-run the download stage with --force, or replace the file",
        ) from e


def _render_chunk(groups: list, ctx: _SequenceContext | None = None) -> _ChunkResult:
    """Parse a chunk of consecutive frame groups and render all their crops (runs in the workers).

    Args:
        groups: raw member groups, in frame order.
        ctx: sequence constants (default: the worker's, set by :func:`_init_worker`).
    """
    ctx = ctx or _WORKER_CTX
    assert ctx is not None, "worker not initialised"
    frames = [_parse_group(g, ctx) for g in groups]
    rows: list[dict] = []
    skipped: list[tuple[int, str, str]] = []
    for frame, landmarks in zip(frames, ctx.chunk_landmarks(frames), strict=True):
        _render_frame(frame, ctx, landmarks, rows, skipped)
    return _ChunkResult(rows, len(frames), skipped)


def _render_frame(
    frame: Frame,
    ctx: _SequenceContext,
    landmarks: dict[str, np.ndarray],
    rows: list[dict],
    skipped: list[tuple[int, str, str]],
) -> None:
    """Append the rows of one frame (sorted by hand side, view) and its skipped (frame, hand, stream) views.

    Args:
        landmarks: ``side -> (20, 3)`` canonical world landmarks of the frame's annotated hands.
    """
    images: dict[str, np.ndarray] = {}
    s = ctx.settings
    for side_index, side in enumerate(HAND_SIDES):
        views = (frame.hand_crops or {}).get(side) or {}
        if not views:
            continue
        hand = (frame.hands or {}).get(side)
        lm_world = landmarks.get(side)
        view_index = 0
        for stream_id, params in views.items():
            src_cam = frame.cameras.get(stream_id)
            if src_cam is None or stream_id not in frame.image_bytes:
                skipped.append((frame.frame_id, side, stream_id))
                continue
            if stream_id not in images:
                # the reader's strict decode: a truncated or broken JPEG, or one whose size is not the
                # calibration's, raises naming the tar, frame and stream (OpenCV would return a blank image)
                images[stream_id] = frame.image(stream_id)
            fov = float(params.fov)
            render_fov, render_size = crop_render_geometry(fov, s.crop_size, s.fov_margin)
            cam = crop_camera(params.T_world_from_crop_camera, render_fov, render_size)
            crop = warp_image(images[stream_id], src_cam, cam)
            if crop.ndim == 3:
                crop = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)  # cv2.imencode writes BGR input
            ok, jpeg = cv2.imencode(
                ".jpg", crop, ctx.encode_params_rgb if crop.ndim == 3 else ctx.encode_params
            )
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
                raise RuntimeError(f"JPEG encoding failed for frame {frame.frame_id}, {side}, {stream_id}")
            if lm_world is not None:
                uv, n_visible = project_to_crop(lm_world, cam)
                lm_world_l, lm_crop_l = lm_world.reshape(-1).tolist(), uv.reshape(-1).tolist()
            else:
                lm_world_l, lm_crop_l, n_visible = None, None, -1
            rows.append(
                {
                    "sequence_name": ctx.sequence_name,
                    "frame_id": int(frame.frame_id),
                    "hand_side": side_index,
                    "view_index": view_index,
                    "stream_id": stream_id,
                    "image_jpeg": jpeg.tobytes(),
                    "crop_size": cam.width,
                    "fov": fov,
                    "render_fov": render_fov,
                    "intrinsics": [cam.fx, cam.fy, cam.cx, cam.cy],
                    "T_world_from_crop": np.asarray(cam.T_world_from_eye, np.float32).reshape(-1).tolist(),
                    "mano_beta": ctx.mano_beta,
                    "landmarks_world": lm_world_l,
                    "landmarks_crop": lm_crop_l,
                    "mano_theta": _opt_list(getattr(hand, "mano_thetas", None)),
                    "mano_wrist_xform": _opt_list(getattr(hand, "mano_wrist_xform", None)),
                    "n_visible": n_visible,
                }
            )
            view_index += 1


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------

_WORKER_CTX: _SequenceContext | None = None


def _init_worker(ctx: _SequenceContext) -> None:
    """Worker-process initialiser: one OpenCV thread (the pool is the parallelism), malloc kept from returning
    the per-crop buffers to the system (:func:`mvhand._process.tune_allocator`), the sequence context, and a
    watchdog that ends the worker when the job's main process dies (SIGKILL leaves it no chance to stop the
    pool; the fork server and resource tracker then exit with the workers)."""
    global _WORKER_CTX
    cv2.setNumThreads(1)
    tune_allocator()
    exit_with_process(ctx.owner_pid)
    _WORKER_CTX = ctx


def _pool_context() -> multiprocessing.context.BaseContext:
    """Start method of the worker processes: ``forkserver`` where the platform has it (no fork of a process
    that already runs BLAS/OpenCV threads; the server imports this module once and forks ready workers),
    else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", __name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _start_pool(workers: int, ctx: _SequenceContext) -> ProcessPoolExecutor | None:
    """A pool of ``workers`` processes for one sequence, or None (with a warning) where the platform cannot
    run one (e.g. no usable ``/dev/shm`` for its semaphores): the caller then renders in-process."""
    try:
        pool = ProcessPoolExecutor(
            workers, mp_context=_pool_context(), initializer=_init_worker, initargs=(ctx,)
        )
    except (OSError, NotImplementedError) as e:
        log.warning("%s: cannot start worker processes (%s); rendering in this process", ctx.tar_path, e)
        return None
    log.info("%s: rendering with %d worker processes", ctx.tar_path, workers)
    return pool


def _chunks(groups: Iterator, frames_per_chunk: int) -> Iterator[list]:
    chunk: list = []
    for group in groups:
        chunk.append(group)
        if len(chunk) == frames_per_chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------------------------------
# Sequence driver
# --------------------------------------------------------------------------------------------------


def _rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CROP_SCHEMA)


def _checked_frames(tar_path: Path, frames: Iterator) -> Iterator:
    """Re-raise reader failures (corrupt/truncated tar) as an :class:`InputError` naming the file."""
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - tarfile/json/EOF errors all mean a broken sequence file
            raise InputError(
                tar_path,
                f"corrupt or truncated sequence tar ({type(e).__name__}: {e})",
                "re-run the download stage with --force, or replace the file",
            ) from e
        yield frame


def cache_sequence_crops(
    tar_path: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: CropSettings | None = None,
    threads: int = 1,
    progress: bool = True,
    row_group_size: int = 256,
    max_in_flight: int | None = None,
    frames_per_chunk: int = 4,
) -> CropCacheStats:
    """Render, encode and store every hand crop of one sequence (schema :data:`CROP_SCHEMA`).

    Args:
        tar_path: sequence tar in the challenge format.
        out_path: Parquet file to write (atomically; nothing is left behind on failure).
        settings: crop size, FOV margin and JPEG quality.
        threads: worker processes (chunks of frames are rendered in parallel, rows keep the frame order);
            1 renders in the calling process. The output does not depend on it.
        progress: tqdm progress bar on stderr.
        row_group_size: most rows per Parquet row group; groups end at frame boundaries (a frame's crops
            are never split unless the frame alone has more rows).
        max_in_flight: chunks queued at once (bounded memory); default ``2 · threads``.
        frames_per_chunk: consecutive frames per work item (one batched FK call, one message back).

    Returns:
        :class:`CropCacheStats`. A sequence without any visible hand yields a valid empty file (warning).

    Raises:
        InputError: missing, corrupt or truncated tar, or an undecodable image (message names the file).
    """
    from tqdm import tqdm

    settings = settings or CropSettings()
    tar_path, out_path = Path(tar_path), Path(out_path)
    if not tar_path.is_file():
        raise InputError(tar_path, "sequence tar not found", "run the download stage first")
    sequence_name = dataset_sequence_name(tar_path)
    try:
        shapes = read_hand_shapes(tar_path)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(
            tar_path,
            f"corrupt or truncated sequence tar ({type(e).__name__}: {e})",
            "re-run the download stage with --force, or replace the file",
        ) from e
    ctx = _SequenceContext(tar_path, sequence_name, settings, shapes)
    stats = CropCacheStats()
    threads = max(1, int(threads))
    max_in_flight = max(1, max_in_flight or 2 * threads)
    buffer: list[pa.Table] = []
    n_buffered = 0

    with atomic_path(out_path) as tmp:
        writer = pq.ParquetWriter(
            tmp, CROP_SCHEMA, compression=_COMPRESSION, use_dictionary=["sequence_name", "stream_id"]
        )
        bar = tqdm(desc=sequence_name, unit="frame", file=sys.stderr, disable=not progress, mininterval=2.0)
        try:

            def flush(final: bool = False) -> None:
                """Write row groups of ≤ ``row_group_size`` rows that end at frame boundaries (a frame's
                crops stay in one row group, so a streaming reader reads one row group per frame); the
                last, partial group only if ``final``."""
                nonlocal n_buffered
                if n_buffered == 0:
                    return
                table = pa.concat_tables(buffer)
                frames = table.column("frame_id").to_numpy()
                ends = np.append(np.flatnonzero(frames[1:] != frames[:-1]) + 1, len(frames))  # frame ends
                start = 0
                while n_buffered - start > (0 if final else row_group_size):
                    limit = start + row_group_size
                    fit = ends[(ends > start) & (ends <= limit)]
                    # a frame larger than a row group is split; otherwise cut after the last whole frame
                    end = int(fit[-1]) if len(fit) else min(limit, n_buffered)
                    writer.write_table(table.slice(start, end - start), row_group_size=row_group_size)
                    start = end
                buffer[:] = [table.slice(start)] if start < n_buffered else []
                n_buffered -= start

            def consume(result: _ChunkResult) -> None:
                nonlocal n_buffered
                stats.n_frames += result.n_frames
                stats.n_rows += len(result.rows)
                stats.n_with_targets += sum(r["landmarks_world"] is not None for r in result.rows)
                stats.skipped_views.extend(result.skipped)
                bar.update(result.n_frames)
                if result.rows:
                    buffer.append(_rows_to_table(result.rows))
                    n_buffered += len(result.rows)
                if n_buffered >= row_group_size:
                    flush()

            # this process only streams the tar; the workers parse, decode, warp and encode
            groups = _checked_frames(tar_path, iter(iter_frame_groups(tar_path, True, None)))
            chunks = _chunks(groups, max(1, int(frames_per_chunk)))
            pool = _start_pool(threads, ctx) if threads > 1 else None
            if pool is None:
                cv2_threads = cv2.getNumThreads()
                cv2.setNumThreads(1)  # one core: OpenCV's own threads only spin (measured: no gain)
                try:
                    for chunk in chunks:
                        consume(_render_chunk(chunk, ctx))
                finally:
                    cv2.setNumThreads(cv2_threads)
            else:
                try:
                    pending: collections.deque = collections.deque()
                    for chunk in chunks:
                        pending.append(pool.submit(_render_chunk, chunk))
                        del chunk
                        while len(pending) >= max_in_flight:
                            consume(pending.popleft().result())
                    while pending:
                        consume(pending.popleft().result())
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
            flush(final=True)
        finally:
            bar.close()
            writer.close()
    if stats.skipped_views:
        f, h, sid = stats.skipped_views[0]
        log.warning(
            "%s: %d crop view(s) skipped: stream without camera/image (first: frame %d, %s, %s)",
            tar_path,
            len(stats.skipped_views),
            f,
            h,
            sid,
        )
    if stats.n_rows == 0:
        log.warning(
            "%s: no hand crop in %d frame(s); wrote an empty crop cache %s",
            tar_path,
            stats.n_frames,
            out_path,
        )
    return stats
