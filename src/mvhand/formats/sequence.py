"""Challenge tar files (spec/formats.md §1, §2): streaming reader, deterministic writer, JSON (de)serialisation.

A sequence is one plain tar (WebDataset layout, spec/formats.md §1.2): members ``<key>.<suffix>`` grouped by key (split at
the first dot of the basename, suffix lower-cased), one group per frame, ``frame_id = int(key)``; members
named ``__*__`` (``__hand_shapes.json__``) are metadata outside the frames.

Reading goes through the tar once, in order (``tarfile`` mode ``"r:*"``: plain or compressed; unread data
is skipped): only the members of the current frame are held in memory, and a tar that does not end with a
proper end-of-archive block raises instead of silently yielding fewer frames. Every problem raises
:class:`mvhand.io_utils.InputError` naming the tar, the frame and the member.

Writing (:class:`SequenceWriter`) is atomic and byte-deterministic: fixed tar header fields, members of a
frame contiguous and sorted by name, JSON with sorted keys and compact separators.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mvhand.constants import HAND_SIDES
from mvhand.geometry.cameras import CameraModel, camera_to_json, cameras_from_json
from mvhand.geometry.transforms import se3_from_json, se3_to_json
from mvhand.geometry.umetrack import UmeTrackHandModel
from mvhand.io_utils import InputError, atomic_path

__all__ = [
    "HAND_SHAPES_MEMBER",
    "HandPose",
    "CropParams",
    "HandShapes",
    "Frame",
    "sequence_name",
    "list_sequences",
    "iter_frames",
    "iter_frame_groups",
    "parse_frame_group",
    "read_hand_shapes",
    "parse_hand_shapes",
    "hand_pose_to_json",
    "crop_params_to_json",
    "frame_to_json",
    "dumps_json",
    "SequenceWriter",
]

log = logging.getLogger(__name__)

HAND_SHAPES_MEMBER = "__hand_shapes.json__"
_JSON_MEMBERS = ("cameras.json", "hand_crops.json", "hands.json", "info.json", "objects.json")
_IMAGE_RE = re.compile(r"^image_(.+)\.jpg$")
_KEY_SUFFIX_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_FIX_TAR = "re-download or regenerate the tar (spec/formats.md §1.2-1.3)"
#: Largest sequence-tar member read into memory (a frame's JPEG of the largest challenge camera is ~1 MB).
MAX_MEMBER_BYTES = 256 << 20
_FIX_JSON = "fix the member so that it follows spec/formats.md §2"


# --------------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class HandPose:
    """One hand of ``hands.json`` (spec/formats.md §2.3).

    Attributes:
        T_world_from_wrist: ``(4, 4)`` float32 UmeTrack wrist pose, metres.
        joint_angles: ``(22,)`` float32 radians (20-value inputs are padded with two zeros).
        mano_thetas: ``(15,)`` float32 MANO PCA pose, or None without ``mano_pose``.
        mano_wrist_xform: ``(6,)`` float32 ``[rx, ry, rz, tx, ty, tz]`` (axis-angle rad, metres), or None.
        boxes_amodal: HOT3D ``{stream_id: [x0, y0, x1, y1]}`` or None.
        visibilities: HOT3D ``visibilities_modeled`` ``{stream_id: float}`` or None.
    """

    T_world_from_wrist: np.ndarray
    joint_angles: np.ndarray
    mano_thetas: np.ndarray | None = None
    mano_wrist_xform: np.ndarray | None = None
    boxes_amodal: dict | None = None
    visibilities: dict | None = None
    # Original SE3 JSON, written back verbatim while the matrix is unchanged (bit-exact round trips).
    _T_json: dict | None = field(default=None, repr=False)


@dataclass(eq=False)
class CropParams:
    """One perspective crop camera of ``hand_crops.json`` (spec/formats.md §2.4).

    Attributes:
        T_world_from_crop_camera: ``(4, 4)`` float32 pose of the virtual pinhole camera, metres.
        fov: full field of view, radians.
    """

    T_world_from_crop_camera: np.ndarray
    fov: float
    _T_json: dict | None = field(default=None, repr=False)


@dataclass(eq=False)
class HandShapes:
    """``__hand_shapes.json__`` (spec/formats.md §2.5).

    Attributes:
        mano_betas: ``(10,)`` float32 MANO shape, shared by both hands.
        umetrack: the UmeTrack profile (metres).
        raw: the parsed JSON object, kept verbatim for writing it back.
    """

    mano_betas: np.ndarray
    umetrack: UmeTrackHandModel
    raw: dict


@dataclass(eq=False)
class Frame:
    """One frame (one tar key group) of a sequence.

    Attributes:
        sequence_name: tar file name up to the first dot.
        frame_id: ``int(key)``.
        cameras: ``{stream_id: CameraModel}`` of ``cameras.json`` (all streams, in file order).
        hands: ``{"left"|"right": HandPose}``; a side is absent when not annotated (always empty in test
            splits; a hand with ``mano_pose`` but no ``umetrack_pose`` is absent too, spec/formats.md §2.3 quirk).
        hand_crops: ``{"left"|"right": {stream_id: CropParams}}``; only hands with at least one crop.
        image_bytes: ``{stream_id: JPEG bytes}`` of the loaded streams.
        info: HOT3D ``info.json`` object or None.
        objects: HOT3D ``objects.json`` object or None.
        source: tar path (for messages).
    """

    sequence_name: str
    frame_id: int
    cameras: dict[str, CameraModel]
    hands: dict[str, HandPose]
    hand_crops: dict[str, dict[str, CropParams]]
    image_bytes: dict[str, bytes]
    info: dict | None = None
    objects: dict | None = None
    source: str = ""

    def image(self, stream_id: str) -> np.ndarray:
        """Decode one stream's JPEG with Pillow (spec/formats.md §1.4).

        Returns:
            ``(H, W, 3)`` uint8 RGB if ``"rgb"`` occurs in the stream's calibration label, else ``(H, W)``
            uint8 monochrome.

        Raises:
            InputError: stream not loaded, undecodable JPEG, or image size differs from the calibration.
        """
        from PIL import Image, UnidentifiedImageError

        where = f"frame {self.frame_id:06d}, stream {stream_id!r}"
        if stream_id not in self.image_bytes:
            raise InputError(
                self.source or self.sequence_name,
                f"{where}: image not loaded (loaded: {sorted(self.image_bytes)})",
                "iterate with images=True and include the stream in streams=",
            )
        cam = self.cameras[stream_id]
        mode = "RGB" if cam.is_rgb else "L"
        try:
            with Image.open(io.BytesIO(self.image_bytes[stream_id])) as im:
                arr = np.array(im if im.mode == mode else im.convert(mode))
        except UnidentifiedImageError as exc:
            raise InputError(
                self.source or self.sequence_name,
                f"{where}: cannot decode JPEG: image_{stream_id}.jpg is not a JPEG image",
                _FIX_TAR,
            ) from exc
        except (OSError, ValueError) as exc:  # truncated, or a broken data stream
            raise InputError(
                self.source or self.sequence_name,
                f"{where}: cannot decode JPEG: image_{stream_id}.jpg is corrupt ({exc})",
                _FIX_TAR,
            ) from exc
        if arr.shape[:2] != (cam.height, cam.width):
            raise InputError(
                self.source or self.sequence_name,
                f"{where}: image is {arr.shape[1]}x{arr.shape[0]} but the calibration says "
                f"{cam.width}x{cam.height}",
                _FIX_TAR,
            )
        return arr


# --------------------------------------------------------------------------------------------------
# JSON -> dataclasses
# --------------------------------------------------------------------------------------------------


def _finite_vector(value: Any, lengths: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a list of numbers: {exc}") from exc
    if arr.ndim != 1 or arr.shape[0] not in lengths:
        raise ValueError(f"{what} must have {' or '.join(map(str, lengths))} values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _check_sides(d: Any, what: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be an object keyed by 'left'/'right', got {type(d).__name__}")
    unknown = sorted(set(d) - set(HAND_SIDES))
    if unknown:
        raise ValueError(f"{what} has unknown hand keys {unknown} (only 'left'/'right')")
    return d


def _parse_hands(d: Any) -> dict[str, HandPose]:
    d = _check_sides(d, "hands.json")
    out: dict[str, HandPose] = {}
    for side in HAND_SIDES:
        entry = d.get(side)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"hands.json[{side!r}] must be an object")
        up = entry.get("umetrack_pose")
        if up is None:  # spec/formats.md §2.3 quirk: mano_pose alone is not loaded
            continue
        if not isinstance(up, dict) or "T_world_from_wrist" not in up or "joint_angles" not in up:
            raise ValueError(f"hands.json[{side!r}].umetrack_pose needs T_world_from_wrist and joint_angles")
        T_json = up["T_world_from_wrist"]
        T = se3_from_json(T_json)
        angles = _finite_vector(up["joint_angles"], (20, 22), f"{side} joint_angles").astype(np.float32)
        if angles.shape[0] == 20:
            angles = np.concatenate([angles, np.zeros(2, np.float32)])
        thetas = wrist = None
        mano = entry.get("mano_pose")
        if mano is not None:
            if not isinstance(mano, dict) or "thetas" not in mano or "wrist_xform" not in mano:
                raise ValueError(f"hands.json[{side!r}].mano_pose needs thetas and wrist_xform")
            thetas = _finite_vector(mano["thetas"], (15,), f"{side} mano thetas").astype(np.float32)
            wrist = _finite_vector(mano["wrist_xform"], (6,), f"{side} mano wrist_xform").astype(np.float32)
        out[side] = HandPose(
            T_world_from_wrist=T,
            joint_angles=angles,
            mano_thetas=thetas,
            mano_wrist_xform=wrist,
            boxes_amodal=entry.get("boxes_amodal"),
            visibilities=entry.get("visibilities_modeled"),
            _T_json=T_json,
        )
    return out


def _parse_hand_crops(d: Any) -> dict[str, dict[str, CropParams]]:
    d = _check_sides(d, "hand_crops.json")
    out: dict[str, dict[str, CropParams]] = {}
    for side in HAND_SIDES:
        per_stream = d.get(side)
        if not per_stream:  # absent, null or {} => no crop for this hand
            continue
        if not isinstance(per_stream, dict):
            raise ValueError(f"hand_crops.json[{side!r}] must be an object keyed by stream id")
        crops: dict[str, CropParams] = {}
        for sid, crop in per_stream.items():
            if (
                not isinstance(crop, dict)
                or "T_world_from_crop_camera" not in crop
                or "crop_camera_fov" not in crop
            ):
                raise ValueError(
                    f"hand_crops.json[{side!r}][{sid!r}] needs T_world_from_crop_camera, crop_camera_fov"
                )
            fov = crop["crop_camera_fov"]
            if not isinstance(fov, (int, float)) or not (0 < fov < math.pi):
                raise ValueError(
                    f"hand_crops.json[{side!r}][{sid!r}] crop_camera_fov must be in (0, pi) rad, got {fov}"
                )
            T_json = crop["T_world_from_crop_camera"]
            crops[str(sid)] = CropParams(se3_from_json(T_json), float(fov), _T_json=T_json)
        out[side] = crops
    return out


def parse_hand_shapes(d: Any, source: str | Path | None = None) -> HandShapes:
    """:class:`HandShapes` of a parsed ``__hand_shapes.json__`` object (spec/formats.md §2.5).

    Raises:
        InputError: missing ``mano``/``umetrack``, wrong beta count, NaN, invalid UmeTrack profile.
    """
    fix = "fix __hand_shapes.json__ (spec/formats.md §2.5)"
    if not isinstance(d, dict) or "mano" not in d or "umetrack" not in d:
        raise InputError(source, f"{HAND_SHAPES_MEMBER} must be an object with 'mano' and 'umetrack'", fix)
    try:
        betas = _finite_vector(d["mano"], (10,), "mano betas").astype(np.float32)
    except ValueError as exc:
        raise InputError(source, f"{HAND_SHAPES_MEMBER}: {exc}", fix) from exc
    try:
        model = UmeTrackHandModel.from_json(d["umetrack"])
    except InputError as exc:
        raise InputError(source, f"{HAND_SHAPES_MEMBER}: {exc}", fix) from exc
    return HandShapes(mano_betas=betas, umetrack=model, raw=d)


# --------------------------------------------------------------------------------------------------
# Dataclasses -> JSON
# --------------------------------------------------------------------------------------------------


def _se3_json(T: np.ndarray, original: dict | None) -> dict:
    if original is not None:
        try:
            if np.array_equal(se3_from_json(original), np.asarray(T, dtype=np.float32)):
                return original
        except ValueError:
            pass
    return se3_to_json(T)


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a).reshape(-1)]


def hand_pose_to_json(pose: HandPose) -> dict:
    """``hands.json`` entry of one hand (inverse of the reader; 22 angles; spec/formats.md §2.3 writer rules)."""
    angles = _floats(pose.joint_angles)
    if len(angles) == 20:
        angles += [0.0, 0.0]
    out: dict[str, Any] = {
        "umetrack_pose": {
            "T_world_from_wrist": _se3_json(pose.T_world_from_wrist, pose._T_json),
            "joint_angles": angles,
        }
    }
    if pose.mano_thetas is not None and pose.mano_wrist_xform is not None:
        out["mano_pose"] = {
            "thetas": _floats(pose.mano_thetas),
            "wrist_xform": _floats(pose.mano_wrist_xform),
        }
    if pose.boxes_amodal is not None:
        out["boxes_amodal"] = pose.boxes_amodal
    if pose.visibilities is not None:
        out["visibilities_modeled"] = pose.visibilities
    return out


def crop_params_to_json(crop: CropParams) -> dict:
    """``hand_crops.json`` value of one (hand, stream) crop camera."""
    return {
        "T_world_from_crop_camera": _se3_json(crop.T_world_from_crop_camera, crop._T_json),
        "crop_camera_fov": float(crop.fov),
    }


def frame_to_json(frame: Frame) -> dict[str, Any]:
    """JSON members of a frame, ``{member suffix: JSON object}`` (``"cameras.json"``, ...).

    ``hands.json`` is included iff the frame has at least one hand pose; ``info.json`` / ``objects.json``
    iff present. Unchanged transforms are written with their original JSON values, so
    read → write → read → write gives identical bytes.
    """
    out: dict[str, Any] = {
        "cameras.json": {sid: camera_to_json(cam) for sid, cam in frame.cameras.items()},
        "hand_crops.json": {
            side: {sid: crop_params_to_json(c) for sid, c in crops.items()}
            for side, crops in frame.hand_crops.items()
        },
    }
    if frame.hands:
        out["hands.json"] = {side: hand_pose_to_json(p) for side, p in frame.hands.items()}
    if frame.info is not None:
        out["info.json"] = frame.info
    if frame.objects is not None:
        out["objects.json"] = frame.objects
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, HandPose):
        return hand_pose_to_json(obj)
    if isinstance(obj, CropParams):
        return crop_params_to_json(obj)
    if isinstance(obj, UmeTrackHandModel):
        return obj.to_json()
    if isinstance(obj, CameraModel):
        return camera_to_json(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, compact separators, no NaN; NumPy values and the dataclasses
    of this module are converted."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def sequence_name(tar_path: str | Path) -> str:
    """Sequence name of a tar: its file name up to the first dot (spec/formats.md §6.5)."""
    return Path(tar_path).name.split(".", 1)[0]


def list_sequences(split_dir: str | Path) -> list[Path]:
    """Sorted ``*.tar`` files of a split directory.

    Raises:
        InputError: the directory does not exist.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(
            split_dir, "split directory does not exist", "check the dataset path / run the download"
        )
    return sorted(p for p in split_dir.glob("*.tar") if p.is_file())


class _CheckedTarInfo(tarfile.TarInfo):
    """Records whether the archive ended with a proper end-of-archive (all-zero) block.

    ``tarfile`` silently stops at an empty, truncated or garbage header after the first member; this
    flag lets the reader tell a complete archive from a truncated or corrupt one.
    """

    @classmethod
    def fromtarfile(cls, tf):  # noqa: D102
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            tf._mvhand_clean_end = True
            raise


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeDecodeError)


def _check_tar_path(tar_path: Path) -> None:
    if not tar_path.is_file():
        raise InputError(tar_path, "tar file does not exist", "check the path / regenerate the dataset")


def _load_json(tar_path: Path, member: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(tar_path, f"member {member} is not valid JSON: {exc}", _FIX_JSON) from exc


@dataclass
class _Group:
    key: str
    members: dict[str, bytes | None] = field(default_factory=dict)  # suffix -> data (None: not read)


def parse_frame_group(tar_path: Path, group: _Group, images: bool, streams: frozenset[str] | None) -> Frame:
    """Parse one raw member group of :func:`iter_frame_groups` into a :class:`Frame`.

    Args:
        tar_path: the sequence tar (named in errors).
        group: the frame's members (``key`` and ``{suffix: bytes}``).
        images: decode the stream images (else ``Frame.images`` is empty).
        streams: only these stream ids (None = all).

    Raises:
        InputError: a missing or malformed member, naming the file and the member.
    """
    key, members = group.key, group.members
    for required in ("cameras.json", "hand_crops.json"):
        if required not in members:
            raise InputError(
                tar_path, f"frame {key} has no {key}.{required} member (members: {sorted(members)})", _FIX_TAR
            )
    cam_json = _load_json(tar_path, f"{key}.cameras.json", members["cameras.json"])
    if not isinstance(cam_json, dict) or not cam_json:
        raise InputError(
            tar_path, f"member {key}.cameras.json must be a non-empty object keyed by stream id", _FIX_JSON
        )
    cameras = cameras_from_json(cam_json, f"{tar_path}: {key}.cameras.json")
    for sid in cameras:
        if f"image_{sid}.jpg" not in members:
            raise InputError(
                tar_path,
                f"frame {key}: stream {sid!r} of cameras.json has no member {key}.image_{sid}.jpg",
                _FIX_TAR,
            )
    if streams is not None:
        missing = sorted(streams - set(cameras))
        if missing:
            raise InputError(
                tar_path,
                f"frame {key}: requested streams {missing} are not in cameras.json {sorted(cameras)}",
                "pass stream ids that exist in the data",
            )
    parsed: dict[str, Any] = {}
    for suffix in ("hand_crops.json", "hands.json", "info.json", "objects.json"):
        if suffix in members:
            parsed[suffix] = _load_json(tar_path, f"{key}.{suffix}", members[suffix])
    try:
        hand_crops = _parse_hand_crops(parsed["hand_crops.json"])
    except ValueError as exc:
        raise InputError(tar_path, f"member {key}.hand_crops.json: {exc}", _FIX_JSON) from exc
    try:
        hands = _parse_hands(parsed["hands.json"]) if "hands.json" in parsed else {}
    except (ValueError, TypeError) as exc:
        raise InputError(tar_path, f"member {key}.hands.json: {exc}", _FIX_JSON) from exc
    image_bytes: dict[str, bytes] = {}
    if images:
        for sid in cameras:
            if streams is None or sid in streams:
                data = members[f"image_{sid}.jpg"]
                assert data is not None
                image_bytes[sid] = data
    for suffix in ("info.json", "objects.json"):
        if suffix in parsed and not isinstance(parsed[suffix], dict):
            raise InputError(tar_path, f"member {key}.{suffix} must be a JSON object", _FIX_JSON)
    return Frame(
        sequence_name=sequence_name(tar_path),
        frame_id=int(key),
        cameras=cameras,
        hands=hands,
        hand_crops=hand_crops,
        image_bytes=image_bytes,
        info=parsed.get("info.json"),
        objects=parsed.get("objects.json"),
        source=str(tar_path),
    )


def _wanted(suffix: str, images: bool, streams: frozenset[str] | None) -> bool:
    if suffix in _JSON_MEMBERS:
        return True
    m = _IMAGE_RE.match(suffix)
    if m is None:
        return False  # unknown members are ignored, as the toolkit does
    return images and (streams is None or m.group(1) in streams)


def iter_frames(
    tar_path: str | Path, images: bool = True, streams: Iterable[str] | None = None
) -> Iterator[Frame]:
    """Stream the frames of one sequence tar in stored order (spec/formats.md §1.2, §1.5).

    Args:
        tar_path: sequence tar (plain or compressed; read sequentially, never extracted).
        images: load the JPEG bytes (``Frame.image_bytes``); False skips them (the tar is then read in
            seekable mode, which jumps over image data instead of reading it).
        streams: if given, only these stream ids' images are loaded (cameras are always all parsed).

    Yields:
        :class:`Frame` objects; only one frame's members are in memory at a time.

    Raises:
        InputError: truncated/corrupt tar, non-integer key, non-contiguous frame group, repeated member,
            missing ``cameras.json`` / ``hand_crops.json`` / image member, malformed JSON, NaN in poses.
            Frames before the problem may already have been yielded; the last frame is only yielded
            after the end of the archive has been verified.
    """
    tar_path = Path(tar_path)
    want_streams = None if streams is None else frozenset(streams)
    for group in iter_frame_groups(tar_path, images, want_streams):
        frame = parse_frame_group(tar_path, group, images, want_streams)
        del group  # hold one frame's bytes at a time
        yield frame
        del frame


def _member_data(tf: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """The data of a regular member of an open archive."""
    extracted = tf.extractfile(info)
    return extracted.read() if extracted is not None else b""


def _regular_members(tar_path: Path, fh) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(name, read)`` of the regular-file members of an open tar, in order; ``read()`` returns the data and
    must be called before the next item (or never: the data is then skipped).

    Plain and gzip/bzip2/xz archives alike go through ``tarfile`` (mode ``"r:*"``, one member header at a time:
    ``TarFile.members`` is emptied as it goes); the data of members that are not read is skipped. The plain-tar
    reader this replaced was measured 3.5x faster on the archive alone but brought no measurable gain to any
    stage (docs/benchmarks.md, ``tar_reader``).

    Raises:
        InputError: not a tar archive, a corrupt or truncated one, or one without end-of-archive block
            (also from ``read()``).
    """

    def corrupt(exc: BaseException) -> InputError:
        return InputError(tar_path, f"truncated or corrupt tar: {exc}", _FIX_TAR)

    def guarded(raw_read: Callable[[], bytes], name: str, size: int) -> Callable[[], bytes]:
        def read() -> bytes:
            if size > MAX_MEMBER_BYTES:  # refused from the header, before its data is read
                raise InputError(
                    tar_path,
                    f"member {name} is {size} bytes, more than the {MAX_MEMBER_BYTES >> 20} MiB any frame "
                    "member needs",
                    _FIX_TAR,
                )
            try:
                return raw_read()
            except _TAR_ERRORS as exc:
                raise corrupt(exc) from exc

        return read

    try:
        try:
            tf = tarfile.open(fileobj=fh, mode="r:*", tarinfo=_CheckedTarInfo)
        except _TAR_ERRORS as exc:
            raise InputError(tar_path, f"not a readable tar archive: {exc}", _FIX_TAR) from exc
        with tf:
            while (info := tf.next()) is not None:
                tf.members = []  # tarfile keeps every TarInfo otherwise
                if info.isreg():
                    yield info.name, guarded(partial(_member_data, tf, info), info.name, info.size)
            clean_end = getattr(tf, "_mvhand_clean_end", False)
    except _TAR_ERRORS as exc:
        raise corrupt(exc) from exc
    if not clean_end:
        raise InputError(
            tar_path, "truncated or corrupt tar (no end-of-archive marker after the last member)", _FIX_TAR
        )


def iter_frame_groups(tar_path: Path, images: bool, want_streams: frozenset[str] | None) -> Iterator[_Group]:
    """The raw member groups of :func:`iter_frames` (tar checks only; parse each with :func:`parse_frame_group`).

    Splitting reading from parsing lets a consumer parse frames in worker processes while one process streams
    the archive. Raises the tar-level :class:`InputError` of :func:`iter_frames`; the last group is only
    yielded after the end of the archive has been verified.
    """
    _check_tar_path(tar_path)
    seen_keys: set[str] = set()
    seen_ids: set[int] = set()
    n_shapes = 0
    group: _Group | None = None
    with open(tar_path, "rb", buffering=1 << 16) as fh:
        for name, read in _regular_members(tar_path, fh):
            if "/" not in name and name.startswith("__") and name.endswith("__"):
                if name == HAND_SHAPES_MEMBER:
                    n_shapes += 1
                    if n_shapes > 1:
                        raise InputError(tar_path, f"{HAND_SHAPES_MEMBER} occurs twice", _FIX_TAR)
                continue
            m = _KEY_SUFFIX_RE.match(name)
            if m is None:
                continue  # no dot: not a sample member (webdataset ignores it too)
            key, suffix = m.group(1), m.group(2).lower()
            if group is None or key != group.key:
                if not key.isascii() or not key.isdigit():
                    raise InputError(
                        tar_path,
                        f"member {name}: key {key!r} is not an integer frame id",
                        "members must be named <6-digit frame id>.<suffix> at the archive root",
                    )
                if key in seen_keys or int(key) in seen_ids:
                    raise InputError(
                        tar_path,
                        f"member {name}: frame {key} appears in two separate groups "
                        "(the members of a frame must be contiguous)",
                        _FIX_TAR,
                    )
                seen_keys.add(key)
                seen_ids.add(int(key))
                if group is not None:
                    yield group
                group = _Group(key)
            if suffix in group.members:
                raise InputError(
                    tar_path, f"member {name}: repeated suffix {suffix!r} in frame {key}", _FIX_TAR
                )
            group.members[suffix] = read() if _wanted(suffix, images, want_streams) else None
    if group is not None:
        yield group


def read_hand_shapes(tar_path: str | Path) -> HandShapes | None:
    """Parse ``__hand_shapes.json__`` of a sequence tar (random access), or None if absent (shape test).

    Raises:
        InputError: unreadable/truncated tar or invalid ``__hand_shapes.json__``.
    """
    tar_path = Path(tar_path)
    _check_tar_path(tar_path)
    try:
        with tarfile.open(tar_path, "r:*", tarinfo=_CheckedTarInfo) as tf:
            data = None
            while True:
                info = tf.next()
                if info is None:
                    break
                if info.name == HAND_SHAPES_MEMBER and info.isreg():
                    if info.size > MAX_MEMBER_BYTES:
                        raise InputError(
                            tar_path,
                            f"member {info.name} is {info.size} bytes (not a hand-shape file)",
                            _FIX_TAR,
                        )
                    extracted = tf.extractfile(info)
                    data = extracted.read() if extracted is not None else b""
                    break
            if data is None and not getattr(tf, "_mvhand_clean_end", False):
                raise InputError(tar_path, "truncated or corrupt tar (no end-of-archive marker)", _FIX_TAR)
    except _TAR_ERRORS as exc:
        raise InputError(tar_path, f"not a readable tar archive: {exc}", _FIX_TAR) from exc
    if data is None:
        return None
    return parse_hand_shapes(_load_json(tar_path, HAND_SHAPES_MEMBER, data), tar_path)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class SequenceWriter:
    """Deterministic, atomic writer of one sequence tar (spec/formats.md §1.5).

    Use as a context manager; the tar appears at ``path`` only when the block succeeds (nothing is left
    behind on error). Without ``with``, call :meth:`close` (commit) or :meth:`abort`.

    Layout: ``__hand_shapes.json__`` first (optional, at most once), then per frame, in strictly ascending
    frame id, the members ``%06d.<suffix>`` sorted by name. Headers: mtime 0, uid/gid 0, empty
    uname/gname, mode 0o644. Every frame is validated with the reader's parsers before it is written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path, suffix=".tar"))
        try:
            self._tf = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._last_id: int | None = None
        self._shapes_written = False
        self._closed = False
        self.n_frames = 0

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)
        return False

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        self._tf.addfile(info, io.BytesIO(data))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: SequenceWriter is closed")

    def write_hand_shapes(self, mano_betas: Any, umetrack_profile: dict | UmeTrackHandModel) -> None:
        """Write ``__hand_shapes.json__`` (must come before any frame; at most once).

        Args:
            mano_betas: ``(10,)`` MANO betas.
            umetrack_profile: UmeTrack profile dictionary (mm, spec/formats.md §2.5) or :class:`UmeTrackHandModel`.
        """
        self._check_open()
        if self._shapes_written:
            raise ValueError(f"{self.path}: {HAND_SHAPES_MEMBER} already written")
        if self._last_id is not None:
            raise ValueError(f"{self.path}: write {HAND_SHAPES_MEMBER} before the first frame")
        profile = (
            umetrack_profile.to_json()
            if isinstance(umetrack_profile, UmeTrackHandModel)
            else umetrack_profile
        )
        obj = {
            "mano": [float(v) for v in np.asarray(mano_betas, dtype=np.float64).reshape(-1)],
            "umetrack": profile,
        }
        data = dumps_json(obj)
        parse_hand_shapes(json.loads(data), self.path)  # validate before writing
        self._add(HAND_SHAPES_MEMBER, data)
        self._shapes_written = True

    def write_frame(
        self,
        frame_id: int,
        cameras: dict,
        hand_crops: dict | None,
        hands: dict | None,
        images: dict[str, bytes],
        info: dict | None = None,
        objects: dict | None = None,
    ) -> None:
        """Write one frame's members contiguously.

        Args:
            frame_id: non-negative, strictly greater than the previous frame's.
            cameras: ``cameras.json`` object ``{stream_id: {...}}`` (JSON-ready; CameraModel values allowed).
            hand_crops: ``hand_crops.json`` object (``None`` is written as ``{}``).
            hands: ``hands.json`` object, or None to omit the member (test splits).
            images: ``{stream_id: JPEG bytes}``, exactly the streams of ``cameras``.
            info, objects: HOT3D ``info.json`` / ``objects.json`` objects, or None.

        Raises:
            ValueError: out-of-order frame id, stream/image mismatch, bad stream id, or content that the
                reader would reject (the message says why).
        """
        self._check_open()
        frame_id = int(frame_id)
        if frame_id < 0 or (self._last_id is not None and frame_id <= self._last_id):
            raise ValueError(
                f"{self.path}: frame ids must be ascending and >= 0, got {frame_id} after {self._last_id}"
            )
        if not isinstance(cameras, dict) or not cameras:
            raise ValueError(f"{self.path}: frame {frame_id}: cameras must be a non-empty dict")
        for sid in cameras:
            if not isinstance(sid, str) or not sid or any(c in sid for c in "./") or sid != sid.lower():
                raise ValueError(
                    f"{self.path}: stream id {sid!r} must be a lower-case string without '.' or '/'"
                )
        if set(images) != set(cameras):
            raise ValueError(
                f"{self.path}: frame {frame_id}: images {sorted(images)} must match the camera streams {sorted(cameras)}"
            )
        key = f"{frame_id:06d}"
        members: dict[str, bytes] = {}
        content = {"cameras.json": cameras, "hand_crops.json": {} if hand_crops is None else hand_crops}
        content.update({"hands.json": hands, "info.json": info, "objects.json": objects})
        for suffix, obj in content.items():
            if obj is None:
                continue
            try:
                members[suffix] = dumps_json(obj)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{self.path}: frame {frame_id}: {suffix} is not valid JSON content: {exc}"
                ) from exc
        for sid, data in images.items():
            if not isinstance(data, (bytes, bytearray)) or not data:
                raise ValueError(
                    f"{self.path}: frame {frame_id}: image of stream {sid!r} must be non-empty bytes"
                )
            members[f"image_{sid}.jpg"] = bytes(data)
        try:  # validate with the reader's parsers so that nothing unreadable is ever written
            parse_frame_group(self.path, _Group(key, dict(members)), images=True, streams=None)
        except InputError as exc:
            raise ValueError(f"frame {frame_id} would not be readable: {exc}") from exc
        for suffix in sorted(members):
            self._add(f"{key}.{suffix}", members[suffix])
        self._last_id = frame_id
        self.n_frames += 1

    def write(self, frame: Frame) -> None:
        """Write a :class:`Frame` (e.g. one read by :func:`iter_frames` with ``images=True``)."""
        js = frame_to_json(frame)
        self.write_frame(
            frame.frame_id,
            js["cameras.json"],
            js["hand_crops.json"],
            js.get("hands.json"),
            frame.image_bytes,
            info=js.get("info.json"),
            objects=js.get("objects.json"),
        )

    def close(self) -> None:
        """Finish the archive and move it onto ``path``."""
        if self._closed:
            return
        self._closed = True
        try:
            self._tf.close()
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()

    def abort(self) -> None:
        """Discard everything written; ``path`` is left untouched."""
        err = RuntimeError("SequenceWriter aborted")
        self._abort(type(err), err, None)

    def _abort(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._tf.close()
        except Exception:  # the archive is discarded anyway
            log.debug("closing an aborted tar failed", exc_info=True)
        self._stack.__exit__(exc_type, exc, tb)
