"""Tests of mvhand.download: Hugging Face path against a local stand-in of the Hub, local layouts,
synthetic source, manifest, and the actionable errors (offline, gated, partial, checksum mismatch)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub import errors
from huggingface_hub.hf_api import RepoFile, RepoFolder

from mvhand import download as dl
from mvhand.download import (
    HF_REPOS,
    download_dataset,
    hot3d_clip_paths,
    read_manifest,
    verify_files,
)
from mvhand.io_utils import InputError

REPO = Path(__file__).resolve().parents[1]

CLIP_SPLITS = {
    "train": {"Aria": [1, 2], "Quest3": [3]},
    "test_ht_pose": {"Aria": [4], "Quest3": [5]},
    "test_ht_shape": {"Aria": [6]},
    "test_bop": {"Aria": [4, 6, 7]},
}


def _payload(name: str) -> bytes:
    return (name.encode() + b"\0") * 300  # distinct content per file


def _make_umetrack_remote(root: Path) -> Path:
    for rel in (
        "train/subject_000_a.tar",
        "train/subject_001_b.tar",
        "pose_test/subject_014_c.tar",
        "shape_test/subject_090_d.tar",
        "README.md",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_payload(rel))
    return root


def _make_hot3d_remote(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "clip_splits.json").write_text(json.dumps(CLIP_SPLITS))
    files = {
        "train_aria": [1, 2],
        "train_quest3": [3],
        "test_aria": [4, 6, 7],
        "test_quest3": [5],
    }
    for folder, ids in files.items():
        (root / folder).mkdir(exist_ok=True)
        for i in ids:
            (root / folder / f"clip-{i:06d}.tar").write_bytes(_payload(f"{folder}/{i}"))
    (root / "object_models").mkdir()
    (root / "object_models" / "obj_000001.glb").write_bytes(b"mesh" * 100)
    return root


class FakeHub:
    """Serves a local folder like the Hub: dataset_info (the commit of a revision), list_repo_tree metadata
    (refusing ``expand``, whose pages hold 50 entries) and snapshot_download. Every call is recorded."""

    def __init__(self, remotes: dict[str, Path]):
        self.remotes = remotes
        self.sha = "a" * 40  # current commit of main
        self.info_calls: list[dict] = []
        self.list_calls: list[dict] = []
        self.snapshot_calls: list[dict] = []
        self.drop: set[str] = set()  # files the "network" fails to deliver
        self.truncate: set[str] = set()
        self.corrupt: set[str] = set()  # same size, different bytes
        self.error: Exception | None = None

    # HfApi(token=...) factory
    def api(self, token=None):
        return SimpleNamespace(list_repo_tree=self.list_repo_tree, dataset_info=self.dataset_info)

    def dataset_info(self, repo_id, *, revision=None, token=None, **kwargs):
        self.info_calls.append({"repo_id": repo_id, "revision": revision})
        if self.error is not None:
            raise self.error
        assert repo_id in self.remotes
        return SimpleNamespace(id=repo_id, sha=revision if revision and len(revision) == 40 else self.sha)

    def list_repo_tree(
        self,
        repo_id,
        path_in_repo=None,
        *,
        recursive=False,
        expand=False,
        revision=None,
        repo_type=None,
        token=None,
    ):
        assert repo_type == "dataset" and recursive and not expand
        self.list_calls.append({"repo_id": repo_id, "revision": revision})
        if self.error is not None:
            raise self.error
        root = self.remotes[repo_id]
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_dir():
                yield RepoFolder(path=rel, oid="0" * 40)
                continue
            data = p.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            if rel.endswith(".tar"):
                lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 130}
                yield RepoFile(path=rel, size=len(data), oid=blob, lfs=lfs)
            else:
                yield RepoFile(path=rel, size=len(data), oid=blob)

    def snapshot_download(
        self,
        repo_id,
        *,
        repo_type=None,
        allow_patterns=None,
        local_dir=None,
        token=None,
        force_download=False,
        **kwargs,
    ):
        assert repo_type == "dataset" and local_dir is not None
        self.snapshot_calls.append(
            {"repo_id": repo_id, "allow_patterns": list(allow_patterns), "revision": kwargs.get("revision")}
        )
        if self.error is not None:
            raise self.error
        root = self.remotes[repo_id]
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if not p.is_file() or not any(fnmatch.fnmatch(rel, pat) for pat in allow_patterns):
                continue
            if rel in self.drop:
                continue
            dst = Path(local_dir) / rel
            if dst.is_file() and dst.stat().st_size == p.stat().st_size and not force_download:
                continue  # like the Hub client: a file already downloaded is kept (time stamp too)
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = p.read_bytes()
            if rel in self.truncate:
                data = data[: len(data) // 2]
            if rel in self.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            dst.write_bytes(data)
        return str(local_dir)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(
        {
            HF_REPOS["umetrack"]: _make_umetrack_remote(tmp_path / "remote_umetrack"),
            HF_REPOS["hot3d"]: _make_hot3d_remote(tmp_path / "remote_hot3d"),
        }
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return fake


def test_huggingface_umetrack(hub, tmp_path):
    m = download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano")
    root = tmp_path / "data" / "umetrack"
    assert m.splits == {
        "train": ["subject_000_a", "subject_001_b"],
        "pose_test": ["subject_014_c"],
        "shape_test": ["subject_090_d"],
    }
    assert (root / "train" / "subject_001_b.tar").read_bytes() == _payload("train/subject_001_b.tar")
    assert not (root / "README.md").exists()  # only the split folders are requested
    assert hub.snapshot_calls[0]["allow_patterns"] == ["train/*.tar", "pose_test/*.tar", "shape_test/*.tar"]
    on_disk = read_manifest(root / "manifest.json")
    assert on_disk.splits == m.splits and on_disk.source == "huggingface" and on_disk.dataset == "umetrack"


def test_huggingface_hot3d_clip_splits_mapping(hub, tmp_path):
    m = download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")
    root = tmp_path / "data" / "hot3d"
    assert m.splits == {
        "train": ["clip-000001", "clip-000002", "clip-000003"],
        "pose_test": ["clip-000004", "clip-000005"],
        "shape_test": ["clip-000006"],
    }
    # contents come from the right device folder; files are hard links into the raw mirror
    assert (root / "pose_test" / "clip-000005.tar").read_bytes() == _payload("test_quest3/5")
    assert (root / "train" / "clip-000003.tar").read_bytes() == _payload("train_quest3/3")
    assert os.path.samefile(
        root / "shape_test" / "clip-000006.tar", root / "_hf" / "test_aria" / "clip-000006.tar"
    )
    # only clip_splits.json, then exactly the hand-tracking clips were requested (no test_bop-only clip 7)
    assert hub.snapshot_calls[0]["allow_patterns"] == ["clip_splits.json"]
    wanted = sorted(hub.snapshot_calls[1]["allow_patterns"])
    assert wanted == sorted(
        [
            "train_aria/clip-000001.tar",
            "train_aria/clip-000002.tar",
            "train_quest3/clip-000003.tar",
            "test_aria/clip-000004.tar",
            "test_quest3/clip-000005.tar",
            "test_aria/clip-000006.tar",
        ]
    )
    assert not (root / "_hf" / "test_aria" / "clip-000007.tar").exists()
    assert m.info["device_folder"]["clip-000005"] == "quest3"


def test_hot3d_clip_paths_rules():
    mapping = hot3d_clip_paths(
        {"train": {"Quest3": [12]}, "test_ht_shape": {"Aria": ["7"]}, "test_bop": {"Aria": [1]}}
    )
    assert mapping == {
        "train": {"clip-000012": "train_quest3/clip-000012.tar"},
        "pose_test": {},
        "shape_test": {"clip-000007": "test_aria/clip-000007.tar"},
    }
    with pytest.raises(ValueError, match="device"):
        hot3d_clip_paths({"train": {"Hololens": [1]}})
    with pytest.raises(ValueError, match="clip id"):
        hot3d_clip_paths({"train": {"Aria": [1.5]}})


def test_checksum_mismatch_is_reported_and_file_removed(hub, tmp_path):
    hub.corrupt.add("train/subject_001_b.tar")
    (tmp_path / "data" / "umetrack").mkdir(parents=True)
    (tmp_path / "data" / "umetrack" / "manifest.json").write_text("{}")  # stale manifest of an older run
    with pytest.raises(InputError, match=r"subject_001_b\.tar \(sha256 mismatch\).*re-run"):
        download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano")
    root = tmp_path / "data" / "umetrack"
    assert not (root / "train" / "subject_001_b.tar").exists()
    assert not (root / "manifest.json").exists()  # never a manifest for an incomplete dataset
    # a re-run with a healthy connection resumes and succeeds; "size" mode does not notice same-size corruption
    hub.corrupt.clear()
    assert download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano").n_sequences == 4


def test_blob_id_checked_for_regular_files(hub, tmp_path):
    hub.corrupt.add("clip_splits.json")
    with pytest.raises(InputError, match=r"clip_splits\.json \(git blob id mismatch\)"):
        download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")


@pytest.mark.parametrize("how", ["drop", "truncate"])
def test_partial_download(hub, tmp_path, how):
    getattr(hub, how).add("test_quest3/clip-000005.tar")
    with pytest.raises(InputError, match=r"partial download.*clip-000005.*re-run"):
        download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano", verify="size")
    assert not (tmp_path / "data" / "hot3d" / "manifest.json").exists()


def test_verify_modes(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"abc")
    good = {"a.tar": dl.RemoteFile("a.tar", 3, hashlib.sha256(b"abc").hexdigest())}
    verify_files(tmp_path, good, "sha256")
    wrong = {"a.tar": dl.RemoteFile("a.tar", 3, hashlib.sha256(b"abd").hexdigest())}
    verify_files(tmp_path, wrong, "size")  # size only: passes
    verify_files(tmp_path, wrong, "none")
    with pytest.raises(InputError, match="sha256 mismatch"):
        verify_files(tmp_path, wrong, "sha256")
    assert not (tmp_path / "a.tar").exists()


def _response():
    return SimpleNamespace(headers={}, request=None, status_code=401)


def test_gated_dataset_message(hub, tmp_path):
    hub.error = errors.GatedRepoError(
        "Access to dataset bop-benchmark/hot3d is restricted", response=_response()
    )
    with pytest.raises(InputError, match=r"gated.*hf auth login.*source: local"):
        download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")


def test_unauthorised_and_network_messages(hub, tmp_path):
    hub.error = errors.RepositoryNotFoundError("401 Client Error", response=_response())
    with pytest.raises(InputError, match=r"not authorised.*hf auth login"):
        download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano")
    hub.error = ConnectionError("Failed to establish a new connection")
    with pytest.raises(InputError, match=r"cannot reach the Hugging Face Hub.*source: local"):
        download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano")


def test_offline_message(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"HF_HUB_OFFLINE is set.*source: local"):
        download_dataset("huggingface", "umetrack", tmp_path / "data", tmp_path / "mano")
    assert hub.snapshot_calls == []


def test_local_challenge_layout_nested(tmp_path):
    src = _make_umetrack_remote(tmp_path / "mine" / "umetrack")
    m = download_dataset(
        "local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir=tmp_path / "mine"
    )
    assert m.splits["train"] == ["subject_000_a", "subject_001_b"]
    linked = tmp_path / "data" / "umetrack" / "train" / "subject_000_a.tar"
    assert os.path.samefile(linked, src / "train" / "subject_000_a.tar")
    assert m.info["layout"] == "challenge"
    # the data folder itself as local_dir: nothing to link, manifest still written
    m2 = download_dataset(
        "local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir=tmp_path / "data" / "umetrack"
    )
    assert m2.splits == m.splits


def test_local_hot3d_layout(tmp_path):
    src = _make_hot3d_remote(tmp_path / "hot3d_clips")
    m = download_dataset("local", "hot3d", tmp_path / "data", tmp_path / "mano", local_dir=src)
    assert m.splits["shape_test"] == ["clip-000006"] and m.info["layout"] == "hot3d-clips"
    assert (tmp_path / "data" / "hot3d" / "pose_test" / "clip-000004.tar").read_bytes() == _payload(
        "test_aria/4"
    )
    (src / "test_aria" / "clip-000004.tar").unlink()
    with pytest.raises(InputError, match=r"missing \(first: test_aria/clip-000004\.tar\)"):
        download_dataset("local", "hot3d", tmp_path / "data2", tmp_path / "mano", local_dir=src)


def test_local_bad_folders(tmp_path):
    with pytest.raises(InputError, match="local_dir"):
        download_dataset("local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir="")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train/pose_test/shape_test"):
        download_dataset(
            "local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir=tmp_path / "empty"
        )
    with pytest.raises(InputError, match="unknown source"):
        download_dataset("ftp", "umetrack", tmp_path / "data", tmp_path / "mano")


def _fake_generator(calls):
    def generate_dataset(dataset, out_root, mano_dir, seed, size="default", force=False, progress=True):
        calls.append({"force": force, "seed": seed, "size": size})
        final = Path(out_root) / dataset
        if final.exists() and any(final.iterdir()) and not force:
            raise InputError(final, "output folder already exists and is not empty", "pass --force")
        shutil.rmtree(final, ignore_errors=True)
        for split, n in (("train", 2), ("pose_test", 1), ("shape_test", 1)):
            (final / split).mkdir(parents=True)
            for i in range(n):
                (final / split / f"{dataset}_{split}_{i}.tar").write_bytes(b"x")
        (final / "test_annotations").mkdir()
        (final / "manifest.json").write_text(
            json.dumps({"generator": "fake", "seed": seed, "subjects": {"a": 1}})
        )
        Path(mano_dir).mkdir(parents=True, exist_ok=True)
        for side in ("LEFT", "RIGHT"):
            (Path(mano_dir) / f"MANO_{side}.pkl").write_bytes(b"m")
        return final

    return generate_dataset


def test_synthetic_source_and_rerun(tmp_path, monkeypatch):
    import mvhand.synthetic.world

    calls: list[dict] = []
    monkeypatch.setattr(mvhand.synthetic.world, "generate_dataset", _fake_generator(calls))
    m = download_dataset("synthetic", "hot3d", tmp_path / "data", tmp_path / "mano", seed=3, size="tiny")
    assert m.splits["train"] == ["hot3d_train_0", "hot3d_train_1"]
    d = json.loads((tmp_path / "data" / "hot3d" / "manifest.json").read_text())
    assert (
        d["subjects"] == {"a": 1} and d["source"] == "synthetic" and d["info"] == {"seed": 3, "size": "tiny"}
    )
    assert d["splits"] == m.splits
    # the workflow re-runs the stage after a settings change: an earlier synthetic dataset is replaced
    (tmp_path / "data" / "hot3d" / "manifest.json").unlink()
    download_dataset("synthetic", "hot3d", tmp_path / "data", tmp_path / "mano", seed=4, size="tiny")
    assert calls[-1]["force"] is True and calls[-1]["seed"] == 4


def test_synthetic_never_overwrites_other_data(tmp_path, monkeypatch):
    import mvhand.synthetic.world

    monkeypatch.setattr(mvhand.synthetic.world, "generate_dataset", _fake_generator([]))
    real = tmp_path / "data" / "umetrack" / "train"
    real.mkdir(parents=True)
    (real / "precious.tar").write_bytes(b"real data")
    with pytest.raises(InputError, match="not a synthetic dataset.*--force"):
        download_dataset("synthetic", "umetrack", tmp_path / "data", tmp_path / "mano")
    assert (real / "precious.tar").read_bytes() == b"real data"


def test_missing_mano_is_a_warning_for_real_data(tmp_path, caplog):
    _make_umetrack_remote(tmp_path / "mine")
    with caplog.at_level(logging.WARNING, logger="mvhand.download"):
        download_dataset(
            "local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir=tmp_path / "mine"
        )
    assert "MANO_LEFT.pkl" in caplog.text


def test_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="run the download stage"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a valid manifest"):
        read_manifest(tmp_path / "manifest.json")


def test_stage_script(hub, tmp_path, caplog):
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    try:
        import download as script
    finally:
        sys.path.pop(0)
    args = [
        "--source",
        "huggingface",
        "--dataset",
        "umetrack",
        "--output-dir",
        str(tmp_path / "data"),
        "--mano-dir",
        str(tmp_path / "mano"),
        "--verify",
        "sha256",
        "--no-progress",
    ]
    assert script.main(args + ["--revision", "b" * 40]) == 0
    assert read_manifest(tmp_path / "data" / "umetrack" / "manifest.json").info["revision"] == "b" * 40
    hub.error = errors.GatedRepoError("restricted", response=_response())
    with caplog.at_level(logging.ERROR):
        assert script.main(args + ["--force"]) == 1
    assert "hf auth login" in caplog.text


# --------------------------------------------------------------------------------------------------
# At scale: one listing per dataset, a pinned and recorded revision, a resumed download hashes only new files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["umetrack", "hot3d"])
def test_repository_listed_once_at_one_commit(hub, tmp_path, dataset):
    m = download_dataset("huggingface", dataset, tmp_path / "data", tmp_path / "mano")
    assert hub.list_calls == [{"repo_id": HF_REPOS[dataset], "revision": hub.sha}]  # once, no expand
    assert {c["revision"] for c in hub.snapshot_calls} == {hub.sha}
    assert m.info["revision"] == hub.sha


def test_revision_recorded_in_the_manifest_and_reused(hub, tmp_path):
    data = tmp_path / "data"
    first = hub.sha
    download_dataset("huggingface", "umetrack", data, tmp_path / "mano")
    assert read_manifest(data / "umetrack" / "manifest.json").info["revision"] == first
    assert len(hub.info_calls) == 1 and hub.info_calls[0]["revision"] is None  # main, resolved once
    hub.sha = "b" * 40  # the repository moved on
    download_dataset("huggingface", "umetrack", data, tmp_path / "mano")  # a re-run: the recorded commit
    assert len(hub.info_calls) == 1
    assert hub.list_calls[-1]["revision"] == first and hub.snapshot_calls[-1]["revision"] == first
    assert read_manifest(data / "umetrack" / "manifest.json").info["revision"] == first
    (data / "umetrack" / dl.STATE_NAME).unlink()  # the record lost: the manifest's commit is still used
    download_dataset("huggingface", "umetrack", data, tmp_path / "mano")
    assert len(hub.info_calls) == 1 and hub.snapshot_calls[-1]["revision"] == first
    # asking for main (or any revision) explicitly resolves it again and records the new commit
    m = download_dataset("huggingface", "umetrack", data, tmp_path / "mano", revision="main")
    assert hub.info_calls[-1]["revision"] == "main" and m.info["revision"] == "b" * 40
    assert hub.snapshot_calls[-1]["revision"] == "b" * 40
    pinned = "c" * 40
    assert (
        download_dataset("huggingface", "umetrack", data, tmp_path / "mano", revision=pinned).info["revision"]
        == pinned
    )


def test_resumed_download_hashes_only_new_files(hub, tmp_path, monkeypatch):
    hashed: list[str] = []
    digest = dl._file_digest

    def counting(path, algo, prefix=b""):
        hashed.append(Path(path).name)
        return digest(path, algo, prefix)

    monkeypatch.setattr(dl, "_file_digest", counting)
    hub.drop.add("test_quest3/clip-000005.tar")  # the connection breaks before this clip
    with pytest.raises(InputError, match="partial download"):
        download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")
    assert "clip-000005.tar" not in hashed and len(hashed) == 6  # clip_splits.json + 5 clips verified
    hub.drop.clear()
    hashed.clear()
    m = download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")
    assert hashed == ["clip-000005.tar"] and m.n_sequences == 6  # only the new file
    # a verified file that changes afterwards (same size, new bytes and time stamp) is hashed again
    hashed.clear()
    clip = tmp_path / "data" / "hot3d" / "_hf" / "train_aria" / "clip-000001.tar"
    data = clip.read_bytes()
    clip.unlink()  # hard-linked into train/: write a new file
    clip.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    hub.drop.add("train_aria/clip-000001.tar")  # snapshot_download keeps the local file as it is
    with pytest.raises(InputError, match=r"clip-000001\.tar \(sha256 mismatch\)"):
        download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano")
    assert hashed == ["clip-000001.tar"]
    # --force forgets the verified files (everything is hashed again), not the commit
    hub.drop.clear()
    hashed.clear()
    first, hub.sha = hub.sha, "d" * 40
    m = download_dataset("huggingface", "hot3d", tmp_path / "data", tmp_path / "mano", force=True)
    assert len(hashed) == 7 and m.info["revision"] == first


# --------------------------------------------------------------------------------------------------
# download.local_dir per dataset, and the layout check
# --------------------------------------------------------------------------------------------------


def test_local_dir_per_dataset_and_plain_string(tmp_path):
    ume = _make_umetrack_remote(tmp_path / "ume")
    hot = _make_hot3d_remote(tmp_path / "hot")
    both = {"umetrack": str(ume) + "/", "hot3d": str(hot)}
    assert dl.local_dir_for(both, "umetrack") == str(ume)  # normalised: a trailing slash changes nothing
    assert dl.local_dir_for(both, "hot3d") == str(hot)
    assert dl.local_dir_for({"hot3d": str(hot)}, "umetrack") == ""
    # one folder holding umetrack/ and hot3d/: unambiguous
    parent = tmp_path / "all"
    (parent).mkdir()
    os.symlink(ume, parent / "umetrack")
    os.symlink(hot, parent / "hot3d")
    assert dl.local_dir_for(str(parent), "hot3d") == str(parent / "hot3d")
    # one dataset's folder: fine for that dataset alone, refused when both are configured
    assert dl.local_dir_for(str(ume), "umetrack", ["umetrack"]) == str(ume)
    with pytest.raises(InputError, match=r"holds the files of one dataset \(umetrack\).*hot3d: <its folder>"):
        dl.local_dir_for(str(ume), "umetrack", ["umetrack", "hot3d"])


def test_one_datasets_folder_is_refused_for_the_other(tmp_path):
    ume = _make_umetrack_remote(tmp_path / "ume")
    hot = _make_hot3d_remote(tmp_path / "hot")
    assert dl.dataset_kind(ume) == "umetrack" and dl.dataset_kind(hot) == "hot3d"
    with pytest.raises(
        InputError, match=r"ume: holds UmeTrack .* given as the hot3d folder.*hot3d: <your hot3d"
    ):
        download_dataset("local", "hot3d", tmp_path / "data", tmp_path / "mano", local_dir=ume)
    with pytest.raises(InputError, match=r"hot: holds HOT3D-Clips .* given as the umetrack folder"):
        download_dataset("local", "umetrack", tmp_path / "data", tmp_path / "mano", local_dir=hot)
    assert not (tmp_path / "data" / "hot3d").exists() and not (tmp_path / "data" / "umetrack").exists()
    # HOT3D already in the challenge layout (clip-<id>.tar in split folders) is recognised as HOT3D
    mapped = download_dataset("local", "hot3d", tmp_path / "data", tmp_path / "mano", local_dir=hot)
    assert dl.dataset_kind(tmp_path / "data" / "hot3d") == "hot3d" and mapped.n_sequences == 6
    with pytest.raises(InputError, match="given as the umetrack folder"):
        download_dataset(
            "local", "umetrack", tmp_path / "d2", tmp_path / "mano", local_dir=tmp_path / "data" / "hot3d"
        )
