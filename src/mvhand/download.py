"""Download stage: put a dataset into the challenge layout and write its sequence manifest.

Sources:

* ``synthetic``: :func:`mvhand.synthetic.world.generate_dataset` (no network).
* ``huggingface``: UmeTrack from ``facebook/hand_tracking_challenge_umetrack`` (already in the challenge
  layout), HOT3D-Clips from ``bop-benchmark/hot3d`` (``train_aria/``, ``train_quest3/``, ``test_aria/``,
  ``test_quest3/`` + ``clip_splits.json``), mapped onto ``{train, pose_test, shape_test}`` with
  ``clip_splits.json`` (spec/formats.md §1.1) by hard links (symbolic links across file systems).
  Downloads go through :func:`huggingface_hub.snapshot_download` (resumable) and are checked against the
  repository's file metadata (size, LFS sha256 or git blob id).
* ``local``: a folder the user already has, in either layout, linked the same way.

Result: ``<output_dir>/<dataset>/{train,pose_test,shape_test}/<sequence>.tar`` and, written atomically and
last, ``<output_dir>/<dataset>/manifest.json`` (:class:`Manifest`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvhand.constants import DATASETS
from mvhand.io_utils import InputError, atomic_path, atomic_write
from mvhand.mano_pickle import is_synthetic_mano

__all__ = [
    "HF_REPOS",
    "HOT3D_SPLIT_MAP",
    "MANIFEST_NAME",
    "SOURCES",
    "SPLITS",
    "STATE_NAME",
    "Manifest",
    "RemoteFile",
    "download_dataset",
    "download_huggingface",
    "check_dataset_folder",
    "dataset_kind",
    "download_pretrained",
    "hot3d_clip_paths",
    "link_local",
    "local_dir_for",
    "read_manifest",
    "remote_file_index",
    "resolve_revision",
    "scan_splits",
    "verify_files",
    "write_manifest",
]

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "huggingface", "local")
SPLITS = ("train", "pose_test", "shape_test")
MANIFEST_NAME = "manifest.json"
HF_REPOS = {"umetrack": "facebook/hand_tracking_challenge_umetrack", "hot3d": "bop-benchmark/hot3d"}
# HOT3D clip_splits.json key -> our split; device key -> (train folder, test folder).
HOT3D_SPLIT_MAP = {"train": "train", "test_ht_pose": "pose_test", "test_ht_shape": "shape_test"}
HOT3D_DEVICE_DIRS = {"Aria": ("train_aria", "test_aria"), "Quest3": ("train_quest3", "test_quest3")}
HOT3D_SPLITS_FILE = "clip_splits.json"
HOT3D_HF_SUBDIR = "_hf"  # raw mirror of bop-benchmark/hot3d inside <output_dir>/hot3d/
# <output_dir>/<dataset>/STATE_NAME: the commit being downloaded and the files already verified
STATE_NAME = ".mvhand_download.json"
UMETRACK_PATTERNS = tuple(f"{split}/*.tar" for split in SPLITS)

_LOGIN_FIX = (
    "accept the dataset's terms on https://huggingface.co/datasets/{repo}, then run `hf auth login` "
    "(or export HF_TOKEN=...); or download it elsewhere and set `source: local` with `download.local_dir`"
)
_OFFLINE_FIX = (
    "unset HF_HUB_OFFLINE (and check the network), or copy the data here and set `source: local` with "
    "`download.local_dir`, or use `source: synthetic`"
)


@dataclass
class Manifest:
    """Contents of ``<dataset>/manifest.json``.

    Attributes:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        source: where the data came from (:data:`SOURCES`).
        splits: split -> sorted sequence names (tar stems); the tar is ``<split>/<name>.tar``.
        info: source-specific details (repository, generator settings, HOT3D devices, …).
        created: UTC time stamp (ISO 8601).
    """

    dataset: str
    source: str
    splits: dict[str, list[str]]
    info: dict = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict:
        """JSON-serialisable dict (``format`` 1)."""
        return {"format": 1, **asdict(self)}

    @property
    def n_sequences(self) -> int:
        """Total number of sequences over all splits."""
        return sum(len(v) for v in self.splits.values())


@dataclass
class RemoteFile:
    """One file of a Hugging Face repository, as listed by ``HfApi.list_repo_tree`` (sizes and LFS hashes come
    without ``expand``, which would cut the pages from 1000 to 50 entries).

    Attributes:
        path: path inside the repository.
        size: bytes.
        sha256: LFS sha256 (hex) for LFS files, else None.
        blob_id: git blob id (sha1 of ``b"blob <size>\\0" + content``) for regular files, else None.
    """

    path: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


def scan_splits(dataset_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Sorted tar stems of ``<dataset_dir>/<split>/*.tar`` for every split (missing folder -> ``[]``)."""
    dataset_dir = Path(dataset_dir)
    out = {}
    for split in SPLITS:
        d = dataset_dir / split
        out[split] = sorted(p.name[: -len(".tar")] for p in d.glob("*.tar")) if d.is_dir() else []
    return out


def write_manifest(dataset_dir: str | os.PathLike, manifest: Manifest, extra: dict | None = None) -> Path:
    """Write ``<dataset_dir>/manifest.json`` atomically; returns its path.

    Args:
        dataset_dir: dataset folder.
        manifest: the manifest.
        extra: more top-level keys (e.g. the synthetic generator's own record); the manifest's keys win.
    """
    if not manifest.created:
        manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = Path(dataset_dir) / MANIFEST_NAME
    with atomic_write(path) as fh:
        json.dump({**(extra or {}), **manifest.to_json()}, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return path


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest written by :func:`write_manifest`.

    Raises:
        InputError: missing file or not a manifest.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(
            d["dataset"],
            d["source"],
            {k: list(v) for k, v in d["splits"].items()},
            d.get("info", {}),
            d.get("created", ""),
        )
    except FileNotFoundError:
        raise InputError(path, "manifest not found", "run the download stage first") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(path, f"not a valid manifest ({e})", "re-run the download stage (--force)") from None


# --------------------------------------------------------------------------------------------------
# Linking
# --------------------------------------------------------------------------------------------------


def _link(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (replacing ``dst``); symbolic link if hard links are impossible.

    Returns:
        ``"hardlink"``, ``"symlink"`` or ``"same"`` (``dst`` already is ``src``).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return "same"
    tmp = dst.with_name(f".{dst.name}.link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        kind = "hardlink"
    except OSError:
        os.symlink(src.resolve(), tmp)
        kind = "symlink"
    os.replace(tmp, dst)
    return kind


def _link_all(pairs: Iterable[tuple[Path, Path]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for src, dst in pairs:
        kind = _link(src, dst)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _read_clip_splits(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise ValueError("top level is not an object")
        return d
    except FileNotFoundError:
        raise InputError(
            path, "clip_splits.json not found", "download it with the clips (HOT3D-Clips layout)"
        ) from None
    except ValueError as e:
        raise InputError(path, f"unreadable clip_splits.json ({e})", "download it again") from None


def hot3d_clip_paths(clip_splits: dict) -> dict[str, dict[str, str]]:
    """Map ``clip_splits.json`` onto our splits (spec/formats.md §1.1).

    Args:
        clip_splits: parsed ``clip_splits.json``: ``{hot3d split: {"Aria"|"Quest3": [int clip ids]}}``.

    Returns:
        ``{split: {clip name "clip-XXXXXX": path in the HOT3D-Clips layout, e.g. "test_aria/clip-000123.tar"}}``
        for ``split`` in :data:`SPLITS` (``train`` → train, ``test_ht_pose`` → pose_test,
        ``test_ht_shape`` → shape_test; ``test_bop`` is ignored).

    Raises:
        ValueError: unknown device key or a non-integer clip id.
    """
    out: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for key, split in HOT3D_SPLIT_MAP.items():
        for device, ids in (clip_splits.get(key) or {}).items():
            if device not in HOT3D_DEVICE_DIRS:
                raise ValueError(f"clip_splits[{key!r}]: unknown device {device!r} (expected Aria or Quest3)")
            folder = HOT3D_DEVICE_DIRS[device][0 if split == "train" else 1]
            for clip_id in ids:
                if (
                    isinstance(clip_id, bool)
                    or not isinstance(clip_id, int | str)
                    or not str(clip_id).isdigit()
                ):
                    raise ValueError(f"clip_splits[{key!r}][{device!r}]: bad clip id {clip_id!r}")
                name = f"clip-{int(clip_id):06d}"
                out[split][name] = f"{folder}/{name}.tar"
    return out


def _clip_mapping(path: Path) -> dict[str, dict[str, str]]:
    """:func:`hot3d_clip_paths` of a ``clip_splits.json`` file, with errors that name it."""
    try:
        return hot3d_clip_paths(_read_clip_splits(path))
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(
            path,
            f"invalid clip_splits.json: {e}",
            "download it again (clip ids are integers, devices Aria/Quest3)",
        ) from None


def _map_hot3d(src_root: Path, dataset_dir: Path) -> tuple[dict[str, list[str]], dict]:
    """Link HOT3D-Clips tars of ``src_root`` into ``dataset_dir/<split>/``; returns (splits, info)."""
    mapping = _clip_mapping(src_root / HOT3D_SPLITS_FILE)
    missing = [rel for split in SPLITS for rel in mapping[split].values() if not (src_root / rel).is_file()]
    if missing:
        raise InputError(
            src_root,
            f"{len(missing)} clip(s) listed in clip_splits.json are missing (first: {missing[0]})",
            "complete the download (re-run it; it resumes) or fix the local copy",
        )
    pairs = [
        (src_root / rel, dataset_dir / split / f"{name}.tar")
        for split in SPLITS
        for name, rel in mapping[split].items()
    ]
    counts = _link_all(pairs)
    devices = {
        name: rel.split("/")[0].split("_")[1] for split in SPLITS for name, rel in mapping[split].items()
    }
    splits = {split: sorted(mapping[split]) for split in SPLITS}
    return splits, {"links": counts, "device_folder": devices}


def _map_challenge_layout(src_root: Path, dataset_dir: Path) -> tuple[dict[str, list[str]], dict]:
    """Link ``src_root/{train,pose_test,shape_test}/*.tar`` into ``dataset_dir``; returns (splits, info)."""
    splits = scan_splits(src_root)
    if src_root.resolve() == dataset_dir.resolve():
        return splits, {"links": {}}
    pairs = [
        (src_root / split / f"{name}.tar", dataset_dir / split / f"{name}.tar")
        for split in SPLITS
        for name in splits[split]
    ]
    return splits, {"links": _link_all(pairs)}


_CLIP_TAR = re.compile(r"clip-\d+\.tar")


def _first_tar(folder: Path) -> str | None:
    """Name of one ``*.tar`` directly in ``folder`` (None if none; stops at the first, cheap at any size)."""
    if not folder.is_dir():
        return None
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.endswith(".tar"):
                return entry.name
    return None


def dataset_kind(folder: str | os.PathLike) -> str | None:
    """Which dataset a folder holds, from its layout: ``"hot3d"`` (``clip_splits.json``, HOT3D-Clips device
    folders, or ``clip-<id>.tar`` sequences), ``"umetrack"`` (split folders with other tar names) or None
    (no sequence found). Reads at most one directory entry per folder."""
    folder = Path(folder)
    if (folder / HOT3D_SPLITS_FILE).is_file():
        return "hot3d"
    for pair in HOT3D_DEVICE_DIRS.values():
        for sub in pair:
            if _first_tar(folder / sub):
                return "hot3d"
    for split in SPLITS:
        name = _first_tar(folder / split)
        if name:
            return "hot3d" if _CLIP_TAR.fullmatch(name) else "umetrack"
    return None


def check_dataset_folder(dataset: str, folder: str | os.PathLike, key: str = "download.local_dir") -> None:
    """Refuse one dataset's folder given for the other (it would be linked under the wrong name).

    Raises:
        InputError: naming the folder, what it holds and the ``key`` to fix.
    """
    kind = dataset_kind(folder)
    if kind is not None and kind != dataset:
        other = (
            "UmeTrack (subject_* sequences)" if kind == "umetrack" else "HOT3D-Clips (clip-<id> sequences)"
        )
        raise InputError(
            folder,
            f"holds {other} data but is given as the {dataset} folder ({key})",
            f"set `download.local_dir: {{{dataset}: <your {dataset} folder>, {kind}: {folder}}}`",
        )


def local_dir_for(
    setting: str | Mapping[str, str] | None, dataset: str, datasets: Iterable[str] = DATASETS
) -> str:
    """The folder of ``dataset`` given the ``download.local_dir`` setting ("" if none is set).

    Args:
        setting: ``{dataset: folder}`` (one entry per dataset), or one folder: either a folder holding
            ``<dataset>/`` sub-folders, or (only when one dataset is configured) that dataset's folder.
        dataset: ``"umetrack"`` or ``"hot3d"``.
        datasets: the configured datasets.

    Returns:
        The folder, normalised (a trailing slash does not change it).

    Raises:
        InputError: one folder holding a single dataset's files while two datasets are configured (it
            cannot serve both): the fix names the per-dataset form.
    """
    if isinstance(setting, Mapping):
        folder = str(setting.get(dataset) or "")
        return os.path.normpath(folder) if folder else ""
    folder = str(setting or "")
    if not folder:
        return ""
    folder = os.path.normpath(folder)
    if os.path.isdir(os.path.join(folder, dataset)):
        return os.path.join(folder, dataset)
    datasets = list(datasets)
    kind = dataset_kind(folder)
    if len(datasets) > 1 and kind is not None:
        raise InputError(
            "download.local_dir",
            f"{folder} holds the files of one dataset ({kind}) but {len(datasets)} datasets are configured",
            f"give one folder per dataset: `download.local_dir: {{{kind}: {folder}, "
            f"{next(d for d in datasets if d != kind) if kind in datasets else datasets[0]}: <its folder>}}`, "
            "or a folder holding umetrack/ and hot3d/",
        )
    return folder


def link_local(
    dataset: str, local_dir: str | os.PathLike, dataset_dir: str | os.PathLike
) -> tuple[dict, dict]:
    """Map an existing copy (challenge or HOT3D-Clips layout) onto ``dataset_dir``.

    Args:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        local_dir: the dataset folder, or a folder holding ``<dataset>/``.
        dataset_dir: ``<output_dir>/<dataset>``.

    Returns:
        ``(splits, info)``: split -> sequence names, and details for the manifest.

    Raises:
        InputError: folder missing, in neither layout, or without any sequence.
    """
    root = Path(local_dir)
    if not str(local_dir) or not root.is_dir():
        raise InputError(
            local_dir or "download.local_dir",
            "local data folder not found",
            "set `download.local_dir` (or --local-dir) to the folder holding the dataset",
        )
    if (root / dataset).is_dir():
        root = root / dataset
    check_dataset_folder(dataset, root)
    if (root / HOT3D_SPLITS_FILE).is_file():
        splits, info = _map_hot3d(root, Path(dataset_dir))
        layout = "hot3d-clips"
    elif any((root / split).is_dir() for split in SPLITS):
        splits, info = _map_challenge_layout(root, Path(dataset_dir))
        layout = "challenge"
    else:
        raise InputError(
            root,
            f"no {'/'.join(SPLITS)} folders and no {HOT3D_SPLITS_FILE}",
            "point `download.local_dir` at the dataset folder (challenge layout, or HOT3D-Clips with "
            "train_aria/ ... and clip_splits.json)",
        )
    if not any(splits.values()):
        raise InputError(root, "no sequence (.tar) found", "check `download.local_dir`")
    return splits, {"local_dir": str(root.resolve()), "layout": layout, **info}


# --------------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------------


def _hf_offline() -> bool:
    import huggingface_hub.constants as hc

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(getattr(hc, "HF_HUB_OFFLINE", False))


def _hf_error(e: Exception, repo_id: str, where: Path, what: str = "dataset") -> InputError:
    """Translate a huggingface_hub / network exception into an :class:`InputError` with a fix
    (``what``: the kind of repository, in the message)."""
    from huggingface_hub import errors

    fix = _LOGIN_FIX.format(repo=repo_id)
    if isinstance(e, errors.GatedRepoError):
        return InputError(
            where, f"access to the gated {what} {repo_id} was refused ({type(e).__name__})", fix
        )
    if isinstance(e, errors.RepositoryNotFoundError | errors.LocalTokenNotFoundError):
        return InputError(where, f"{what} {repo_id} not found or not authorised ({type(e).__name__})", fix)
    if (
        isinstance(e, errors.LocalEntryNotFoundError | ConnectionError | TimeoutError)
        or "connect" in str(e).lower()
    ):
        return InputError(
            where, f"cannot reach the Hugging Face Hub for {repo_id} ({type(e).__name__}: {e})", _OFFLINE_FIX
        )
    if isinstance(e, errors.HfHubHTTPError):
        return InputError(
            where, f"download of {repo_id} failed ({e})", "re-run the download (it resumes where it stopped)"
        )
    return InputError(
        where,
        f"download of {repo_id} failed ({type(e).__name__}: {e})",
        "re-run the download (it resumes where it stopped)",
    )


def remote_file_index(
    repo_id: str, patterns: Iterable[str], token: str | None = None, revision: str | None = None
) -> dict[str, RemoteFile]:
    """Files of a dataset repository matching ``patterns`` (fnmatch), with sizes and checksums.

    One recursive ``HfApi().list_repo_tree(repo_id, repo_type="dataset", recursive=True, revision=...)``
    (1000 entries a page; no ``expand``, whose pages hold 50).
    """
    import huggingface_hub

    patterns = list(patterns)
    api = huggingface_hub.HfApi(token=token)
    out = {}
    tree = api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, revision=revision, token=token)
    for entry in tree:
        size = getattr(entry, "size", None)
        if size is None:  # a folder
            continue
        if not any(fnmatch.fnmatch(entry.path, p) for p in patterns):
            continue
        lfs = getattr(entry, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        out[entry.path] = RemoteFile(
            entry.path, int(size), sha, None if sha else getattr(entry, "blob_id", None)
        )
    return out


def resolve_revision(repo_id: str, requested: str, recorded: str, token: str | None = None) -> str:
    """The commit sha to download: ``recorded`` (an earlier download's) when nothing is ``requested``,
    else the commit that ``requested`` (sha, branch or tag; "" = main) names now on the Hub."""
    if not requested and recorded:
        return recorded
    import huggingface_hub

    info = huggingface_hub.HfApi(token=token).dataset_info(repo_id, revision=requested or None, token=token)
    sha = getattr(info, "sha", None)
    if not sha:
        raise InputError(
            None, f"the Hub gave no commit for {repo_id}@{requested or 'main'}", "re-run the download"
        )
    return str(sha)


def _read_state(path: Path) -> dict:
    """The download record (:data:`STATE_NAME`): ``{"revision": sha, "verified": {path: [size, mtime_ns,
    digest]}}``; ``{}`` if missing or unreadable (then everything is checked again)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: dict) -> None:
    with atomic_write(path) as fh:
        json.dump(state, fh, indent=0, sort_keys=True)


def _file_digest(path: Path, algo: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algo)
    h.update(prefix)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def verify_files(
    root: str | os.PathLike,
    expected: dict[str, RemoteFile],
    mode: str = "sha256",
    verified: dict[str, list] | None = None,
) -> None:
    """Check downloaded files against the repository metadata.

    Args:
        root: local folder mirroring the repository.
        expected: path in repo -> :class:`RemoteFile`.
        mode: ``"sha256"`` (size + LFS sha256 / git blob sha1), ``"size"`` or ``"none"``.
        verified: record of files already hashed, ``{path: [size, mtime_ns, expected digest]}``, updated in
            place: a file whose size, modification time and expected digest match its entry is not hashed
            again (a resumed download hashes only what is new or changed).

    Raises:
        InputError: missing or short files (partial download), or size/checksum mismatches. Files with a
            wrong checksum are deleted so that re-running the download fetches them again.
    """
    if mode == "none":
        return
    root = Path(root)
    verified = {} if verified is None else verified
    missing, short, bad = [], [], []
    for rel, rf in sorted(expected.items()):
        p = root / rel
        if not p.is_file():
            missing.append(rel)
            continue
        st = p.stat()
        size = st.st_size
        if size != rf.size:
            (short if size < rf.size else bad).append(f"{rel} ({size} of {rf.size} bytes)")
            continue
        if mode != "sha256":
            continue
        digest = (rf.sha256 or rf.blob_id or "").lower()
        if not digest or verified.get(rel) == [size, st.st_mtime_ns, digest]:
            continue
        if rf.sha256 and _file_digest(p, "sha256") != digest:
            bad.append(f"{rel} (sha256 mismatch)")
        elif not rf.sha256 and _file_digest(p, "sha1", b"blob %d\0" % size) != digest:
            bad.append(f"{rel} (git blob id mismatch)")
        else:
            verified[rel] = [size, st.st_mtime_ns, digest]
    if missing or short:
        first = (missing + short)[0]
        raise InputError(
            root,
            f"partial download: {len(missing)} file(s) missing and {len(short)} truncated of {len(expected)} "
            f"(first: {first})",
            "re-run the download stage; snapshot_download resumes where it stopped",
        )
    if bad:
        for item in bad:
            rel = item.split(" (")[0]
            verified.pop(rel, None)
            (root / rel).unlink(missing_ok=True)
        raise InputError(
            root,
            f"{len(bad)} downloaded file(s) do not match the repository metadata (first: {bad[0]}); they were deleted",
            "re-run the download stage to fetch them again",
        )


def _snapshot(
    repo_id: str, local_dir: Path, patterns: list[str], token: str | None, force: bool, revision: str
) -> None:
    import huggingface_hub

    log.info(
        "snapshot_download %s@%s (%d pattern(s)) -> %s", repo_id, revision[:12], len(patterns), local_dir
    )
    huggingface_hub.snapshot_download(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=patterns,
        local_dir=str(local_dir),
        token=token,
        force_download=force,
    )


def download_huggingface(
    dataset: str,
    dataset_dir: str | os.PathLike,
    token: str | None = None,
    force: bool = False,
    verify: str = "sha256",
    revision: str = "",
    recorded_revision: str = "",
) -> tuple[dict[str, list[str]], dict]:
    """Download one dataset from the Hugging Face Hub into the challenge layout.

    UmeTrack files land directly in ``dataset_dir/{train,pose_test,shape_test}/``. HOT3D: first
    ``clip_splits.json``, then exactly the clips of the hand-tracking splits into ``dataset_dir/_hf/``
    (the repository layout), hard-linked into ``dataset_dir/<split>/clip-XXXXXX.tar``.

    The repository is listed once (one recursive listing without ``expand``) at one commit: ``revision``,
    or, when it is "", the commit recorded by an earlier run in ``dataset_dir/`` :data:`STATE_NAME`, else
    the current commit of main. That record also holds the files already verified, so a resumed download
    hashes only what is new.

    Args:
        dataset: ``"umetrack"`` or ``"hot3d"``.
        dataset_dir: ``<output_dir>/<dataset>``.
        token: Hugging Face token (None: the login / ``HF_TOKEN``).
        force: download again even if files exist and hash everything again (the commit stays the recorded
            one unless ``revision`` is given).
        verify: see :func:`verify_files`.
        revision: commit sha, branch or tag ("": see above).
        recorded_revision: the commit of an earlier complete download (its manifest's ``info.revision``),
            used when ``revision`` is "" and the record holds none.

    Returns:
        ``(splits, info)`` for the manifest; ``info["revision"]`` is the commit sha fetched.

    Raises:
        InputError: offline, gated/unauthorised, network failure, partial download, checksum mismatch.
    """
    repo_id = HF_REPOS[dataset]
    dataset_dir = Path(dataset_dir)
    if _hf_offline():
        raise InputError(
            dataset_dir, f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded", _OFFLINE_FIX
        )
    state_path = dataset_dir / STATE_NAME
    state = _read_state(state_path)
    if state.get("repo_id") not in (None, repo_id):
        state = {}
    verified: dict[str, list] = {} if force else dict(state.get("verified") or {})
    sha = ""
    try:
        recorded = str(state.get("revision") or "") or recorded_revision
        sha = resolve_revision(repo_id, revision, recorded, token)
        if sha != state.get("revision"):
            log.info("%s: downloading commit %s", repo_id, sha)
        dataset_dir.mkdir(parents=True, exist_ok=True)
        _write_state(state_path, {"repo_id": repo_id, "revision": sha, "verified": verified})
        if dataset == "umetrack":
            patterns = list(UMETRACK_PATTERNS)
            index = remote_file_index(repo_id, patterns, token, sha)
            if not index:
                raise InputError(
                    dataset_dir,
                    f"{repo_id}@{sha} lists no file matching {patterns}",
                    "check the repository layout / download.revision",
                )
            _snapshot(repo_id, dataset_dir, patterns, token, force, sha)
            verify_files(dataset_dir, index, verify, verified)
            splits = {
                split: sorted(Path(p).stem for p in index if p.startswith(f"{split}/")) for split in SPLITS
            }
            return splits, {"repo_id": repo_id, "revision": sha, "files": len(index)}
        mirror = dataset_dir / HOT3D_HF_SUBDIR
        folders = sorted({sub + "/*.tar" for pair in HOT3D_DEVICE_DIRS.values() for sub in pair})
        listing = remote_file_index(repo_id, [HOT3D_SPLITS_FILE, *folders], token, sha)
        meta = {k: v for k, v in listing.items() if k == HOT3D_SPLITS_FILE}
        if not meta:
            raise InputError(
                dataset_dir, f"{repo_id}@{sha} has no {HOT3D_SPLITS_FILE}", "check download.revision"
            )
        _snapshot(repo_id, mirror, [HOT3D_SPLITS_FILE], token, force, sha)
        verify_files(mirror, meta, verify, verified)
        mapping = _clip_mapping(mirror / HOT3D_SPLITS_FILE)
        wanted = sorted({rel for split in SPLITS for rel in mapping[split].values()})
        index = {k: listing[k] for k in wanted if k in listing}
        absent = [rel for rel in wanted if rel not in index]
        if absent:
            raise InputError(
                mirror / HOT3D_SPLITS_FILE,
                f"{len(absent)} clip(s) of clip_splits.json are not in {repo_id} (first: {absent[0]})",
                "report it upstream; or use `source: local` with a complete copy",
            )
        _snapshot(repo_id, mirror, wanted, token, force, sha)
        verify_files(mirror, index, verify, verified)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - every hub/network failure becomes an actionable message
        raise _hf_error(e, repo_id, dataset_dir) from e
    finally:
        if sha:  # what was verified so far survives a failure: the re-run hashes only the rest
            _write_state(state_path, {"repo_id": repo_id, "revision": sha, "verified": verified})
    splits, info = _map_hot3d(mirror, dataset_dir)
    return splits, {"repo_id": repo_id, "revision": sha, "files": len(index), **info}


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _synthetic(
    dataset: str, output_dir: Path, mano_dir: Path, seed: int, size: str, force: bool, progress: bool
) -> tuple[dict[str, list[str]], dict, dict]:
    from mvhand.synthetic.world import generate_dataset

    dataset_dir = output_dir / dataset
    if not force and dataset_dir.is_dir() and any(dataset_dir.iterdir()):
        # The workflow re-runs this stage only when its settings changed (or the manifest is gone): an
        # earlier synthetic dataset is replaced; anything else is left alone unless --force is given.
        if (dataset_dir / HOT3D_HF_SUBDIR).exists() or not (dataset_dir / "test_annotations").is_dir():
            raise InputError(
                dataset_dir,
                "holds data that is not a synthetic dataset",
                "move it away, choose another data_root, or pass --force to replace it",
            )
        log.info("%s: replacing the previous synthetic dataset", dataset_dir)
        force = True
    generate_dataset(dataset, output_dir, mano_dir, seed, size=size, force=force, progress=progress)
    generator: dict = {}
    gen_manifest = dataset_dir / MANIFEST_NAME
    if gen_manifest.is_file():  # the generator's own record; its keys are kept in the manifest
        try:
            generator = json.loads(gen_manifest.read_text(encoding="utf-8"))
        except ValueError:
            generator = {}
    return scan_splits(dataset_dir), {"seed": seed, "size": size}, generator


def download_dataset(
    source: str,
    dataset: str,
    output_dir: str | os.PathLike,
    mano_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    local_dir: str | os.PathLike | None = None,
    force: bool = False,
    token: str | None = None,
    verify: str = "sha256",
    progress: bool = True,
    revision: str = "",
) -> Manifest:
    """Fetch/generate/link one dataset into ``<output_dir>/<dataset>/`` and write its manifest last.

    Args:
        source: ``"synthetic"``, ``"huggingface"`` or ``"local"``.
        dataset: ``"umetrack"`` or ``"hot3d"``.
        output_dir: data root (``resources/data``).
        mano_dir: MANO folder (written by the synthetic generator; checked otherwise).
        seed, size: synthetic generator settings.
        local_dir: existing copy (``source="local"``).
        force: regenerate / download again.
        token: Hugging Face token.
        verify: Hugging Face file check (:func:`verify_files`).
        progress: progress bars.
        revision: Hugging Face commit sha, branch or tag; "" = the recorded commit, else main's
            (:func:`download_huggingface`).

    Returns:
        The written :class:`Manifest`.

    Raises:
        InputError: bad arguments or any of the failures described in the module docstring.
    """
    if source not in SOURCES:
        raise InputError(None, f"unknown source {source!r}", f"use one of {', '.join(SOURCES)}")
    if dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}", f"use one of {', '.join(DATASETS)}")
    output_dir, mano_dir = Path(output_dir), Path(mano_dir)
    dataset_dir = output_dir / dataset
    manifest_path = dataset_dir / MANIFEST_NAME
    previous_revision = ""
    if source == "huggingface" and manifest_path.is_file():  # the commit an earlier download recorded
        try:
            previous_revision = str(read_manifest(manifest_path).info.get("revision") or "")
        except InputError:
            previous_revision = ""
    if source != "synthetic":
        manifest_path.unlink(missing_ok=True)  # the manifest marks a complete dataset: remove it first
    extra: dict = {}
    if source == "synthetic":
        splits, info, extra = _synthetic(dataset, output_dir, mano_dir, seed, size, force, progress)
    elif source == "huggingface":
        splits, info = download_huggingface(
            dataset,
            dataset_dir,
            token=token,
            force=force,
            verify=verify,
            revision=revision,
            recorded_revision=previous_revision,
        )
    else:
        splits, info = link_local(dataset, local_dir or "", dataset_dir)
    if not any(splits.values()):
        raise InputError(dataset_dir, "no sequence found after the download", "check the source settings")
    missing_mano = [n for n in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl") if not (mano_dir / n).is_file()]
    synthetic_mano = [
        n
        for n in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl")
        if n not in missing_mano and is_synthetic_mano(mano_dir / n)
    ]
    if source != "synthetic" and synthetic_mano:
        log.warning(
            "%s: %s are mvhand's synthetic stand-ins (from `source: synthetic`), not the MANO model: replace them "
            "with the official files (https://mano.is.tue.mpg.de); the workflow refuses to run on real data "
            "until then",
            mano_dir,
            ", ".join(synthetic_mano),
        )
    if missing_mano:
        log.warning(
            "%s: %s missing; copy the official MANO files there (needed by the shape track and "
            "evaluation, https://mano.is.tue.mpg.de)",
            mano_dir,
            ", ".join(missing_mano),
        )
    manifest = Manifest(dataset, source, splits, info)
    write_manifest(dataset_dir, manifest, extra)
    log.info("%s: %s", manifest_path, ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
    return manifest


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes, in timm's order


def download_pretrained(name: str, out: str | os.PathLike, token: str | None = None) -> Path:
    """Fetch timm's pretrained backbone weights ``name`` (``arch.tag``) into ``out`` as safetensors.

    The file comes from the weights' Hugging Face repository (``timm/<arch>.<tag>``; ``model.safetensors``,
    else ``pytorch_model.bin`` read with ``weights_only`` and re-saved) through the Hub cache, so a second
    fetch is offline. It is checked to hold a tensor state dict and written atomically.

    Raises:
        InputError: unknown name/tag, no network (or ``HF_HUB_OFFLINE``) with nothing cached, or a bad file;
            the fix names the ``hf download`` command for fetching it on another machine.
    """
    import huggingface_hub
    from huggingface_hub import errors

    from mvhand.model.network import pretrained_hub_repo, read_backbone_weights

    out = Path(out)
    try:
        repo = pretrained_hub_repo(name)
    except ValueError as exc:
        raise InputError(None, str(exc), "set train.pretrained to one of the listed tags") from None
    fetched = None
    for filename in _WEIGHT_FILES:
        try:
            fetched = huggingface_hub.hf_hub_download(repo, filename, token=token)
            break
        except errors.RemoteEntryNotFoundError:  # the repository has no such file: try the next one
            continue
        except Exception as exc:
            err = _hf_error(exc, repo, out, what="model")
            raise InputError(
                out,
                err.problem,
                f"fetch it on a machine with internet: `hf download {repo} model.safetensors --local-dir <dir>`, "
                "then copy <dir>/model.safetensors to this machine and set train.pretrained_file to its path",
            ) from None
    if fetched is None:
        raise InputError(out, f"{repo} holds none of {', '.join(_WEIGHT_FILES)}", "set train.pretrained_file")
    state = read_backbone_weights(fetched)
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source": f"{repo}"})
    log.info("%s: %d tensors from %s (%s)", out, len(state), repo, Path(fetched).name)
    return out
