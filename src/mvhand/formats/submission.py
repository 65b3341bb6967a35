"""Challenge submission and ground-truth files (spec/formats.md §6).

* Result files ``result_pose_<ds>.json`` / ``result_shape_<ds>.json`` (spec/formats.md §6.1, §6.2): dataclasses,
  toolkit-identical writing (``json.dumps(list, indent=4)``), reading with clear errors,
  validation against the instances the evaluator expects (spec/formats.md §6.3), packing (spec/formats.md §6.4).
* Ground truth (spec/formats.md §6.5): ``gt_landmarks_<ds>.json``, ``gt_shape_<ds>.json``, ``gt_pose_<ds>.json``
  built from annotated tars, packed with the MANO folder as ``mano/`` at the archive root.

Datasets are ``"umetrack"`` and ``"hot3d"``; hand side 0 = left, 1 = right; metres / radians.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvhand.constants import DATASETS, HAND_SIDES
from mvhand.io_utils import InputError, atomic_path, atomic_write

__all__ = [
    "DEFAULT_EVERY_N",
    "PoseEntry",
    "ShapeEntry",
    "LandmarkEntry",
    "GroundTruth",
    "Instance",
    "pose_result_name",
    "shape_result_name",
    "sequence_name_from_path",
    "pose_entries_to_json",
    "shape_entries_to_json",
    "parse_pose_results",
    "parse_shape_results",
    "parse_landmark_entries",
    "write_pose_results",
    "read_pose_results",
    "write_shape_results",
    "read_shape_results",
    "expected_pose_instances",
    "validate_pose_results",
    "validate_shape_results",
    "pack_submission",
    "read_gt_archive",
    "read_tar_root_files",
    "tar_member_names",
    "read_submission_archive",
    "build_ground_truth",
    "write_gt_archive",
]

log = logging.getLogger(__name__)

#: Frames kept by the GT writer (sample index i with i % N == 0): UmeTrack all, HOT3D every 10th
#: (spec/formats.md §6.3).
DEFAULT_EVERY_N: dict[str, int] = {"umetrack": 1, "hot3d": 10}
N_THETA, N_XFORM, N_BETA, N_LANDMARKS = 15, 6, 10, 20
_MAX_LISTED = 5

Instance = tuple[str, int, int]  # (sequence_name, frame_id, hand_side)


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}", f"use one of {', '.join(DATASETS)}")
    return dataset


def pose_result_name(dataset: str) -> str:
    """File name of the pose-track result file of ``dataset`` (``result_pose_<ds>.json``)."""
    return f"result_pose_{_check_dataset(dataset)}.json"


def shape_result_name(dataset: str) -> str:
    """File name of the shape-track result file of ``dataset`` (``result_shape_<ds>.json``)."""
    return f"result_shape_{_check_dataset(dataset)}.json"


def sequence_name_from_path(path: str | os.PathLike) -> str:
    """Sequence name = tar file name up to the first dot (toolkit rule, spec/formats.md §6.5)."""
    return Path(path).name.split(".", 1)[0]


# ------------------------------------------------------------------------------------------------
# Entries
# ------------------------------------------------------------------------------------------------


def _floats(x: Any) -> list[float]:
    """Flat list of Python floats; float32 inputs keep their exact value (toolkit-style repr)."""
    return [float(v) for v in np.asarray(x).reshape(-1).tolist()]


@dataclass
class PoseEntry:
    """One evaluated hand instance of a pose-track result file (spec/formats.md §6.1).

    Attributes:
        sequence_name: tar stem (no split folder, no ``.tar``).
        frame_id: ``int(frame key)``.
        mano_theta: (15,) MANO PCA pose coefficients.
        wrist_xform: (6,) MANO global orient (axis-angle, rad) + translation (m).
        hand_side: 0 = left, 1 = right.
    """

    sequence_name: str
    frame_id: int
    mano_theta: np.ndarray
    wrist_xform: np.ndarray
    hand_side: int

    def to_json(self) -> dict:
        """JSON object with the toolkit's key order."""
        return {
            "sequence_name": str(self.sequence_name),
            "frame_id": int(self.frame_id),
            "mano_theta": _floats(self.mano_theta),
            "wrist_xform": _floats(self.wrist_xform),
            "hand_side": int(self.hand_side),
        }

    @property
    def instance(self) -> Instance:
        return (self.sequence_name, int(self.frame_id), int(self.hand_side))


@dataclass
class ShapeEntry:
    """One shape-track entry (one per sequence, spec/formats.md §6.2).

    Attributes:
        sequence_name: tar stem.
        mano_beta: (10,) MANO shape coefficients.
        hand_side: carried, ignored by the metric (GT always writes 0).
    """

    sequence_name: str
    mano_beta: np.ndarray
    hand_side: int = 0

    def to_json(self) -> dict:
        return {
            "sequence_name": str(self.sequence_name),
            "mano_beta": _floats(self.mano_beta),
            "hand_side": int(self.hand_side),
        }


@dataclass
class LandmarkEntry:
    """One ground-truth landmark entry of ``gt_landmarks_<ds>.json`` (spec/formats.md §6.5).

    Attributes:
        sequence_name: tar stem.
        frame_id: frame id.
        landmarks: (20, 3) float32 canonical UmeTrack landmarks, world frame, metres.
    """

    sequence_name: str
    frame_id: int
    landmarks: np.ndarray

    def to_json(self) -> dict:
        lm = np.asarray(self.landmarks)
        return {
            "sequence_name": str(self.sequence_name),
            "frame_id": int(self.frame_id),
            "landmarks": [[float(v) for v in row] for row in lm.reshape(-1, 3).tolist()],
        }


@dataclass
class GroundTruth:
    """Ground truth of one dataset (spec/formats.md §6.5), in evaluator order.

    Attributes:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        landmarks: one entry per kept hand instance.
        shapes: one entry per sequence that has kept instances (hand_side 0).
        poses: one MANO entry per kept hand instance (zeros where the hand has no MANO fit).
    """

    dataset: str
    landmarks: list[LandmarkEntry] = field(default_factory=list)
    shapes: list[ShapeEntry] = field(default_factory=list)
    poses: list[PoseEntry] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        """The three GT files of this dataset: name → UTF-8 JSON bytes."""
        ds = _check_dataset(self.dataset)
        return {
            f"gt_landmarks_{ds}.json": _dumps([e.to_json() for e in self.landmarks]),
            f"gt_shape_{ds}.json": _dumps([e.to_json() for e in self.shapes]),
            f"gt_pose_{ds}.json": _dumps([e.to_json() for e in self.poses]),
        }


def _dumps(obj: Any) -> bytes:
    """Toolkit formatting: ``json.dumps(obj, indent=4)``, no trailing newline."""
    return json.dumps(obj, indent=4).encode("utf-8")


def pose_entries_to_json(entries: Iterable[PoseEntry]) -> bytes:
    """Serialise pose entries exactly like the toolkit's writer."""
    return _dumps([e.to_json() for e in entries])


def shape_entries_to_json(entries: Iterable[ShapeEntry]) -> bytes:
    """Serialise shape entries exactly like the toolkit's writer."""
    return _dumps([e.to_json() for e in entries])


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def _load_list(data: bytes | str | list, source: str) -> list:
    if isinstance(data, list):
        return data
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(source, f"not valid JSON ({exc})", "write the file with json.dump") from exc
    if not isinstance(obj, list):
        raise InputError(source, f"top level is a {type(obj).__name__}, expected a JSON array of entries")
    return obj


def _entry_error(source: str, i: int, problem: str, fix: str | None = None) -> InputError:
    return InputError(source, f"entry {i}: {problem}", fix)


def _get(obj: Any, key: str, source: str, i: int) -> Any:
    if not isinstance(obj, dict):
        raise _entry_error(source, i, f"is a {type(obj).__name__}, expected an object")
    if key not in obj:
        raise _entry_error(source, i, f"missing key {key!r} (keys: {sorted(obj)})")
    return obj[key]


def _as_int(v: Any, key: str, source: str, i: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise _entry_error(source, i, f"{key!r} must be an integer, got {v!r}")
    return int(v)


def _as_vector(v: Any, key: str, source: str, i: int) -> np.ndarray:
    """Numeric list → float64 array (exact JSON values, any length; lengths are validated later)."""
    if isinstance(v, list):
        try:
            arr = np.asarray(v)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.ndim == 1 and (arr.dtype.kind in "iuf" or arr.size == 0):
            return arr.astype(np.float64)
    raise _entry_error(source, i, f"{key!r} must be a list of numbers, got {str(v)[:60]}")


def _as_name(v: Any, source: str, i: int) -> str:
    if not isinstance(v, str) or not v:
        raise _entry_error(source, i, f"'sequence_name' must be a non-empty string, got {v!r}")
    return v


def parse_pose_results(data: bytes | str | list, source: str = "<pose results>") -> list[PoseEntry]:
    """Parse a pose-track result file (spec/formats.md §6.1) into entries (values kept as float64).

    Raises:
        InputError: not a JSON array, missing keys, non-numeric values, or the README's ``pose``
            key instead of ``mano_theta`` (spec/formats.md §9 item 1).
    """
    out = []
    for i, obj in enumerate(_load_list(data, source)):
        if isinstance(obj, dict) and "mano_theta" not in obj and "pose" in obj:
            raise _entry_error(
                source,
                i,
                "uses the key 'pose' for the MANO PCA coefficients; the challenge evaluator reads "
                "'mano_theta' (the README example is wrong, spec/formats.md §9 item 1) and fails on 'pose'",
                "rename 'pose' to 'mano_theta'",
            )
        side = _as_int(_get(obj, "hand_side", source, i), "hand_side", source, i)
        out.append(
            PoseEntry(
                sequence_name=_as_name(_get(obj, "sequence_name", source, i), source, i),
                frame_id=_as_int(_get(obj, "frame_id", source, i), "frame_id", source, i),
                mano_theta=_as_vector(_get(obj, "mano_theta", source, i), "mano_theta", source, i),
                wrist_xform=_as_vector(_get(obj, "wrist_xform", source, i), "wrist_xform", source, i),
                hand_side=side,
            )
        )
    return out


def parse_shape_results(data: bytes | str | list, source: str = "<shape results>") -> list[ShapeEntry]:
    """Parse a shape-track result / GT shape file (spec/formats.md §6.2) into entries."""
    out = []
    for i, obj in enumerate(_load_list(data, source)):
        out.append(
            ShapeEntry(
                sequence_name=_as_name(_get(obj, "sequence_name", source, i), source, i),
                mano_beta=_as_vector(_get(obj, "mano_beta", source, i), "mano_beta", source, i),
                hand_side=_as_int(_get(obj, "hand_side", source, i), "hand_side", source, i),
            )
        )
    return out


def parse_landmark_entries(data: bytes | str | list, source: str = "<gt landmarks>") -> list[LandmarkEntry]:
    """Parse ``gt_landmarks_<ds>.json`` (spec/formats.md §6.5); every entry must hold 20×3 finite numbers."""
    out = []
    for i, obj in enumerate(_load_list(data, source)):
        raw = _get(obj, "landmarks", source, i)
        try:
            lm = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _entry_error(source, i, f"'landmarks' is not a numeric 20x3 array ({exc})") from exc
        if lm.shape != (N_LANDMARKS, 3):
            raise _entry_error(source, i, f"'landmarks' has shape {lm.shape}, expected (20, 3)")
        if not np.all(np.isfinite(lm)):
            raise _entry_error(source, i, "'landmarks' contains NaN/inf", "rebuild the ground truth")
        out.append(
            LandmarkEntry(
                sequence_name=_as_name(_get(obj, "sequence_name", source, i), source, i),
                frame_id=_as_int(_get(obj, "frame_id", source, i), "frame_id", source, i),
                landmarks=lm,
            )
        )
    return out


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc


def write_pose_results(path: str | os.PathLike, entries: Iterable[PoseEntry]) -> Path:
    """Write ``result_pose_<ds>.json`` atomically (toolkit formatting). Returns the path."""
    data = pose_entries_to_json(entries)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def read_pose_results(path: str | os.PathLike) -> list[PoseEntry]:
    """Read a pose-track result file (see :func:`parse_pose_results`)."""
    return parse_pose_results(_read_bytes(path), str(path))


def write_shape_results(path: str | os.PathLike, entries: Iterable[ShapeEntry]) -> Path:
    """Write ``result_shape_<ds>.json`` atomically (toolkit formatting). Returns the path."""
    data = shape_entries_to_json(entries)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def read_shape_results(path: str | os.PathLike) -> list[ShapeEntry]:
    """Read a shape-track result file (see :func:`parse_shape_results`)."""
    return parse_shape_results(_read_bytes(path), str(path))


# ------------------------------------------------------------------------------------------------
# Expected instances and validation
# ------------------------------------------------------------------------------------------------


def _every_n(dataset: str, every_n: int | None) -> int:
    n = DEFAULT_EVERY_N[_check_dataset(dataset)] if every_n is None else int(every_n)
    if n < 1:
        raise InputError(None, f"every_n must be >= 1, got {n}")
    return n


def _kept_frames(tar_path: Path, n: int) -> Iterable[Any]:
    """Frames of one tar (no images) whose sample index i satisfies i % n == 0 (spec/formats.md §6.5 step 3)."""
    from mvhand.formats.sequence import iter_frames

    for i, frame in enumerate(iter_frames(tar_path, images=False)):
        if i % n == 0:
            yield frame


def _cropped_sides(frame: Any) -> list[int]:
    """Hand sides (0 left, 1 right, in that order) with a non-empty hand_crops entry."""
    crops = frame.hand_crops or {}
    return [s for s, name in enumerate(HAND_SIDES) if crops.get(name)]


def expected_pose_instances(
    tar_paths: Iterable[str | os.PathLike], dataset: str, every_n: int | None = None
) -> list[Instance]:
    """(sequence_name, frame_id, hand_side) the evaluator expects, in evaluator order (spec/formats.md §6.3).

    Every hand with a non-empty ``hand_crops.json`` entry, left before right, in tar order; UmeTrack
    keeps every frame, HOT3D every 10th *sample index* (override with ``every_n``). Sequences come
    in the order of ``tar_paths``.

    Args:
        tar_paths: test tars (pose_test split; hands.json not needed).
        dataset: ``"umetrack"`` or ``"hot3d"``.
        every_n: frame subsampling; default per dataset.
    """
    n = _every_n(dataset, every_n)
    out: list[Instance] = []
    for tar in tar_paths:
        seq = sequence_name_from_path(tar)
        for frame in _kept_frames(Path(tar), n):
            out.extend((seq, int(frame.frame_id), s) for s in _cropped_sides(frame))
    return out


def _first(items: Sequence[Any], n: int = _MAX_LISTED) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", … ({len(items)} in total)" if len(items) > n else "")


def _finalise(problems: list[str], source: str | None, raise_error: bool, fix: str) -> list[str]:
    if problems and raise_error:
        raise InputError(source, "invalid results: " + "; ".join(problems), fix)
    return problems


def validate_pose_results(
    entries: Sequence[PoseEntry],
    expected: Sequence[Instance],
    source: str | None = None,
    raise_error: bool = True,
) -> list[str]:
    """Check pose entries against the instances the evaluator expects (spec/formats.md §6.3).

    Checks: vector lengths (15/6), finite values, hand_side in {0, 1}, duplicates, missing and
    extra instances, and the order the evaluator relies on: per sequence, after a stable sort by
    frame_id, entries must line up positionally with the expected instances (left before right
    within a frame). Frames may appear in any order (the evaluator sorts them).

    Args:
        entries: parsed result entries.
        expected: output of :func:`expected_pose_instances`.
        source: file name for the error message.
        raise_error: raise :class:`InputError` (default) or just return the problem list.

    Returns:
        List of problems (each naming the first offending instances); empty if valid.
    """
    problems: list[str] = []
    bad_len = [
        e.instance for e in entries if np.size(e.mano_theta) != N_THETA or np.size(e.wrist_xform) != N_XFORM
    ]
    if bad_len:
        problems.append(f"mano_theta must have 15 values and wrist_xform 6 at {_first(bad_len)}")
    non_finite = [
        e.instance
        for e in entries
        if not (
            np.all(np.isfinite(np.asarray(e.mano_theta, float)))
            and np.all(np.isfinite(np.asarray(e.wrist_xform, float)))
        )
    ]
    if non_finite:
        problems.append(f"NaN/inf values at {_first(non_finite)}")
    bad_side = [e.instance for e in entries if e.hand_side not in (0, 1)]
    if bad_side:
        problems.append(f"hand_side must be 0 (left) or 1 (right) at {_first(bad_side)}")

    got = [e.instance for e in entries]
    counts: dict[Instance, int] = defaultdict(int)
    for inst in got:
        counts[inst] += 1
    dup = [k for k, v in counts.items() if v > 1]
    if dup:
        problems.append(f"duplicate entries for {_first(dup)}")
    exp_set = set(expected)
    missing = [x for x in expected if x not in counts]
    extra = [x for x in dict.fromkeys(got) if x not in exp_set]
    if missing:
        # Distinguish a wrong hand_side from a truly missing instance.
        got_frames = {(s, f) for s, f, _ in got}
        wrong_side = [x for x in missing if (x[0], x[1]) in got_frames]
        if wrong_side:
            problems.append(f"hand_side mismatch / missing hand at {_first(wrong_side)}")
        truly_missing = [x for x in missing if (x[0], x[1]) not in got_frames]
        if truly_missing:
            problems.append(f"missing instances {_first(truly_missing)}")
    if extra:
        problems.append(f"unexpected instances (not in the ground truth) {_first(extra)}")

    if not (missing or extra or dup):
        by_seq_got: dict[str, list[Instance]] = defaultdict(list)
        by_seq_exp: dict[str, list[Instance]] = defaultdict(list)
        for inst in got:
            by_seq_got[inst[0]].append(inst)
        for inst in expected:
            by_seq_exp[inst[0]].append(inst)
        misplaced = []
        for seq, exp_list in by_seq_exp.items():
            got_sorted = sorted(by_seq_got[seq], key=lambda x: x[1])
            misplaced.extend(g for g, x in zip(got_sorted, exp_list, strict=True) if g != x)
        if misplaced:
            problems.append(
                "order: after the evaluator's stable sort by frame_id these entries do not line up "
                f"with the ground truth (left hand must precede right hand in a frame): {_first(misplaced)}"
            )
    return _finalise(
        problems, source, raise_error, "regenerate the result file from expected_pose_instances order"
    )


def validate_shape_results(
    entries: Sequence[ShapeEntry],
    expected_sequences: Iterable[str],
    source: str | None = None,
    raise_error: bool = True,
) -> list[str]:
    """Check shape entries: exactly one finite 10-vector per expected sequence (spec/formats.md §6.2).

    Args:
        entries: parsed result entries.
        expected_sequences: sequence names of the shape-test split.
        source: file name for the error message.
        raise_error: raise :class:`InputError` (default) or return the problem list.
    """
    problems: list[str] = []
    bad_len = [e.sequence_name for e in entries if np.size(e.mano_beta) != N_BETA]
    if bad_len:
        problems.append(f"mano_beta must have 10 values for {_first(bad_len)}")
    non_finite = [e.sequence_name for e in entries if not np.all(np.isfinite(np.asarray(e.mano_beta, float)))]
    if non_finite:
        problems.append(f"NaN/inf values for {_first(non_finite)}")
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        counts[e.sequence_name] += 1
    dup = [k for k, v in counts.items() if v > 1]
    if dup:
        problems.append(f"more than one entry for {_first(dup)} (the evaluator requires exactly one)")
    exp = list(dict.fromkeys(expected_sequences))
    missing = [s for s in exp if s not in counts]
    if missing:
        problems.append(f"missing sequences {_first(missing)}")
    extra = [s for s in counts if s not in set(exp)]
    if extra:
        problems.append(f"unexpected sequences {_first(extra)}")
    return _finalise(problems, source, raise_error, "write exactly one entry per shape-test sequence")


# ------------------------------------------------------------------------------------------------
# Archives
# ------------------------------------------------------------------------------------------------

_RESULT_RE = re.compile(r"^result_(pose|shape)_(umetrack|hot3d)\.json$")


def _tar_add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def _write_tar_gz(out: str | os.PathLike, members: Mapping[str, bytes]) -> Path:
    """Deterministic (mtime 0) gzip tar of in-memory members, written atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for name, data in members.items():
                    _tar_add_bytes(tf, name, data)
    return Path(out)


def pack_submission(out_tar_gz: str | os.PathLike, files: Iterable[str | os.PathLike]) -> Path:
    """Pack result files at the archive root of a gzip tar (spec/formats.md §6.4), atomically and reproducibly.

    Args:
        out_tar_gz: destination, e.g. ``results/submission/pose_submission.tar.gz``.
        files: paths named ``result_{pose,shape}_{umetrack,hot3d}.json``.

    Raises:
        InputError: a file is missing, has a name the evaluator would not look for, or two files
            share a name.
    """
    members: dict[str, bytes] = {}
    for f in files:
        name = Path(f).name
        if not _RESULT_RE.match(name):
            raise InputError(
                f,
                "not a result file name the evaluator reads",
                "name it result_{pose,shape}_{umetrack,hot3d}.json",
            )
        if name in members:
            raise InputError(f, f"{name} given twice")
        members[name] = _read_bytes(f)
    if not members:
        raise InputError(out_tar_gz, "no result file to pack")
    return _write_tar_gz(out_tar_gz, members)


def _open_tar(path: str | os.PathLike) -> tarfile.TarFile:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "archive not found")
    try:
        return tarfile.open(p, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InputError(
            p, f"not a readable tar archive ({exc})", "pack it with tar -czf or pack_submission"
        ) from exc


#: Largest archive member read into memory (result and ground-truth JSON of the real test sets are far smaller).
MAX_ARCHIVE_MEMBER_BYTES = 512 << 20
#: Members of a ground-truth archive that the evaluator reads.
GT_MEMBER_RE = re.compile(r"^(gt_(landmarks|shape|pose)_(umetrack|hot3d)\.json|mano/MANO_(LEFT|RIGHT)\.pkl)$")


def _member_name(name: str) -> str:
    """Archive member path without leading ``./`` prefixes (``tar -czf x.tar.gz -C dir .`` archives)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def read_tar_root_files(
    path: str | os.PathLike,
    wanted: Callable[[str], Any] | None = None,
    max_member_bytes: int | None = None,
) -> dict[str, bytes]:
    """Regular files of a tar (any compression) that are used: normalised member path → bytes.

    Memory stays bounded whatever the archive holds: members ``wanted`` does not select are skipped
    without being kept, and a selected member larger than ``max_member_bytes`` is refused from its header
    (before its data is read). Leading ``./`` is stripped, so ``tar -czf x.tar.gz -C dir .`` archives work.

    Args:
        path: the archive.
        wanted: predicate on the normalised name (default: every member).
        max_member_bytes: size limit of a selected member (default :data:`MAX_ARCHIVE_MEMBER_BYTES`).

    Raises:
        InputError: missing, unreadable or corrupt archive, or an oversize member (named, with the limit).
    """
    limit = MAX_ARCHIVE_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
    out: dict[str, bytes] = {}
    with _open_tar(path) as tf:
        try:
            for m in tf:
                tf.members = []  # the archive's TarInfo list would grow with every member otherwise
                name = _member_name(m.name)
                if not m.isfile() or (wanted is not None and not wanted(name)):
                    continue
                if m.size > limit:
                    raise InputError(
                        path,
                        f"member {name} is {m.size} bytes, more than the {limit >> 20} MiB any such file needs",
                        "check that this is the right archive (a result or ground-truth archive holds small JSON "
                        "files); it was not read",
                    )
                fh = tf.extractfile(m)
                assert fh is not None
                out[name] = fh.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InputError(
                path, f"corrupt or truncated tar archive ({exc})", "re-create or re-download the archive"
            ) from exc
    return out


def tar_member_names(path: str | os.PathLike) -> list[str]:
    """Normalised names of the regular files of an archive (headers only; for messages)."""
    names = []
    with _open_tar(path) as tf:
        try:
            for m in tf:
                tf.members = []
                if m.isfile():
                    names.append(_member_name(m.name))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InputError(
                path, f"corrupt or truncated tar archive ({exc})", "re-create or re-download the archive"
            ) from exc
    return names


def read_gt_archive(path: str | os.PathLike) -> dict[str, bytes]:
    """The members of a ground-truth archive the evaluator uses (:data:`GT_MEMBER_RE`), bounded in memory."""
    return read_tar_root_files(path, GT_MEMBER_RE.match)


def read_submission_archive(path: str | os.PathLike) -> dict[str, list[PoseEntry] | list[ShapeEntry]]:
    """Read a submission archive: ``result_*.json`` name → parsed entries.

    Raises:
        InputError: unreadable archive, no result file at the root (names the nested ones if the
            files sit in a folder), or an unparsable result file.
    """
    files = read_tar_root_files(path, _RESULT_RE.match)
    out: dict[str, list[PoseEntry] | list[ShapeEntry]] = {}
    for name, data in files.items():
        m = _RESULT_RE.match(name)
        src = f"{path}:{name}"
        out[name] = parse_pose_results(data, src) if m.group(1) == "pose" else parse_shape_results(data, src)
    if not out:
        files = tar_member_names(path)
        nested = [n for n in files if _RESULT_RE.match(Path(n).name)]
        hint = f"found {nested} inside a folder; " if nested else ""
        raise InputError(
            path,
            f"no result_{{pose,shape}}_{{umetrack,hot3d}}.json at the archive root ({hint}members: {_first(sorted(files))})",
            "pack the result files at the archive root (pack_submission)",
        )
    return out


# ------------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------------


def _fk_landmarks(
    umetrack_model: Any, joint_angles: np.ndarray, T_world_from_wrist: np.ndarray, is_right: bool
) -> np.ndarray:
    """Canonical UmeTrack landmarks (B, 20, 3) float32 m by float32 FK (spec/formats.md §4.3, :mod:`mvhand.geometry.umetrack`)."""
    from mvhand.geometry.umetrack import canonical_landmarks, forward_kinematics

    lm = forward_kinematics(
        umetrack_model,
        np.asarray(joint_angles, dtype=np.float32),
        np.asarray(T_world_from_wrist, dtype=np.float32),
        is_right,
    )
    return np.asarray(canonical_landmarks(lm), dtype=np.float32)


def build_ground_truth(
    tar_paths: Iterable[str | os.PathLike], dataset: str, every_n: int | None = None
) -> GroundTruth:
    """Build the GT of ``dataset`` from annotated tars like the toolkit's writer (spec/formats.md §6.5).

    For every kept frame (sample index ``i % every_n == 0``) and every hand with a non-empty crop
    dict (left first): a landmark entry (float32 UmeTrack FK of ``umetrack_pose`` with the
    sequence profile, canonical 20, metres) and a pose entry (MANO GT, or zeros if the hand has no
    MANO fit). The first kept hand of a sequence emits its shape entry (hand_side 0). Sequences
    without kept hands get no entry.

    Args:
        tar_paths: annotated tars (train split or unstripped test tars).
        dataset: ``"umetrack"`` or ``"hot3d"``.
        every_n: frame subsampling; default 1 for UmeTrack, 10 for HOT3D.

    Raises:
        InputError: a hand with crop cameras but no ``hands.json`` annotation, or a tar without
            ``__hand_shapes.json__`` (the toolkit's crash conditions).
    """
    from mvhand.formats.sequence import read_hand_shapes

    n = _every_n(dataset, every_n)
    gt = GroundTruth(dataset=dataset)
    for tar in tar_paths:
        tar = Path(tar)
        seq = sequence_name_from_path(tar)
        shapes = None
        recs: list[tuple[int, int, Any]] = []  # (frame_id, side, HandPose)
        for frame in _kept_frames(tar, n):
            for s in _cropped_sides(frame):
                hand = (frame.hands or {}).get(HAND_SIDES[s])
                if hand is None:
                    raise InputError(
                        tar,
                        f"frame {frame.frame_id}: the {HAND_SIDES[s]} hand has crop cameras in hand_crops.json but no "
                        "umetrack_pose in hands.json",
                        "build ground truth from annotated (train or unstripped test) tars",
                    )
                recs.append((int(frame.frame_id), s, hand))
        if not recs:
            log.info("%s: no hand with crop cameras in the kept frames; no GT entries", seq)
            continue
        shapes = read_hand_shapes(tar)
        if shapes is None:
            raise InputError(
                tar,
                "no __hand_shapes.json__ member",
                "ground truth needs the hand shapes (not shape-test data)",
            )
        gt.shapes.append(ShapeEntry(seq, np.asarray(shapes.mano_betas, dtype=np.float32), 0))
        lms = np.zeros((len(recs), N_LANDMARKS, 3), dtype=np.float32)
        for s in (0, 1):
            idx = [k for k, r in enumerate(recs) if r[1] == s]
            if not idx:
                continue
            ja = np.stack([np.asarray(recs[k][2].joint_angles, dtype=np.float32) for k in idx])
            T = np.stack([np.asarray(recs[k][2].T_world_from_wrist, dtype=np.float32) for k in idx])
            lms[idx] = _fk_landmarks(shapes.umetrack, ja, T, bool(s))
        if not np.all(np.isfinite(lms)):
            bad = [(seq, recs[k][0], recs[k][1]) for k in np.nonzero(~np.isfinite(lms).all(axis=(1, 2)))[0]]
            raise InputError(
                tar, f"UmeTrack FK gave NaN/inf landmarks at {_first(bad)}", "check the hand annotations"
            )
        for k, (fid, s, hand) in enumerate(recs):
            gt.landmarks.append(LandmarkEntry(seq, fid, lms[k]))
            theta = hand.mano_thetas if hand.mano_thetas is not None else np.zeros(N_THETA, np.float32)
            xform = (
                hand.mano_wrist_xform if hand.mano_wrist_xform is not None else np.zeros(N_XFORM, np.float32)
            )
            gt.poses.append(
                PoseEntry(seq, fid, np.asarray(theta, np.float32), np.asarray(xform, np.float32), s)
            )
    return gt


def write_gt_archive(
    out_tar_gz: str | os.PathLike, gt_by_dataset: Mapping[str, GroundTruth], mano_dir: str | os.PathLike
) -> Path:
    """Pack GT files of one or more datasets and the MANO folder (as ``mano/``) into a tar.gz (spec/formats.md §6.5).

    Args:
        out_tar_gz: destination (written atomically, reproducible bytes).
        gt_by_dataset: dataset name → :class:`GroundTruth`.
        mano_dir: folder with ``MANO_LEFT.pkl`` and ``MANO_RIGHT.pkl``; both are validated
            (:func:`mvhand.geometry.mano.load_mano_pkl`: a safe read, the official keys and shapes) before anything is
            written, and only these two files are packed (as ``mano/MANO_{LEFT,RIGHT}.pkl``).

    Raises:
        InputError: a missing or invalid MANO file (named, nothing written), or no ground truth.
    """
    from mvhand.geometry.mano import load_mano_pkl

    mano_dir = Path(mano_dir)
    names = ("MANO_LEFT.pkl", "MANO_RIGHT.pkl")
    for name in names:
        if not (mano_dir / name).is_file():
            raise InputError(
                mano_dir / name,
                "MANO model file not found",
                "pass --mano-dir with MANO_LEFT.pkl and MANO_RIGHT.pkl",
            )
        load_mano_pkl(mano_dir / name)  # the evaluator will load it: refuse a broken or unsafe file now
    if not gt_by_dataset:
        raise InputError(out_tar_gz, "no dataset ground truth to pack")
    members: dict[str, bytes] = {}
    for ds, gt in gt_by_dataset.items():
        if gt.dataset != ds:
            raise ValueError(f"GroundTruth of {gt.dataset!r} given under key {ds!r}")
        members.update(gt.files())
    for name in names:
        members[f"mano/{name}"] = (mano_dir / name).read_bytes()
    return _write_tar_gz(out_tar_gz, members)
