"""Tests for mvhand.model.stream: the row-group index, the sharded training stream and the ordered stream.

Invariants at small scale: every instance exactly once per pass for ranks × workers in {1, 2} × {0, 1, 2}
(ranks simulated by rank/world_size, workers real), the real DataLoader yields exactly the planned batches,
bounded row groups in memory, exact resume mid-epoch, determinism, the same samples as the in-memory
dataset, and a file truncated or removed in the middle of an epoch named in the error.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fixtures import NO_AUG, make_crop_cache

from mvhand.io_utils import InputError
from mvhand.model import stream as crop_stream
from mvhand.model.data import AugmentConfig, CropDataset
from mvhand.model.stream import (
    CropIndex,
    OrderedStream,
    SampleSettings,
    TrainStream,
    flatten_units,
    shard_batches,
)
from mvhand.model.training import _loader


def _rewrite(path: Path, row_group_size: int) -> Path:
    """Rewrite a Parquet file with row groups of ``row_group_size`` rows."""
    t = pq.read_table(path)
    pq.write_table(t, path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def mano(mano_model):
    """The session's synthetic MANO model (conftest.py)."""
    return mano_model


@pytest.fixture(scope="module")
def even(tmp_path_factory, mano):
    """2 files × 4 row groups of 8 rows = 2 frames × 2 hands × 2 views: 8 units of 4 instances, N = 32."""
    d = tmp_path_factory.mktemp("even")
    files = []
    for i, name in enumerate(("seq_b", "seq_a")):  # given out of order: the index sorts by sequence
        p = make_crop_cache(d / f"{name}.parquet", mano, sequence=name, n_frames=8, n_views=2, crop_size=32,
                            seed=i, dot=False)  # fmt: skip
        files.append(str(_rewrite(p, 8)))
    return files


@pytest.fixture(scope="module")
def ragged(tmp_path_factory, mano):
    """Row groups of 5 rows (frames of 6 rows straddle them), one file without ground truth."""
    d = tmp_path_factory.mktemp("ragged")
    a = make_crop_cache(d / "a.parquet", mano, sequence="seq_a", n_frames=5, n_views=3, crop_size=32, seed=1)
    b = make_crop_cache(d / "b.parquet", mano, sequence="seq_b", n_frames=4, n_views=3, crop_size=32, seed=2,
                        with_gt=False)  # fmt: skip
    c = make_crop_cache(d / "c.parquet", mano, sequence="seq_c", n_frames=3, sides=(1,), n_views=2,
                        crop_size=32, seed=3)  # fmt: skip
    return [str(_rewrite(p, 5)) for p in (a, b, c)]


def _settings(mano, train=True, seed=0, augment=None):
    return SampleSettings(img_size=24, views=2, train=train, augment=augment, seed=seed, mano=mano)


def _ids(loader) -> list[list[int]]:
    return [b["index"].tolist() for b in loader]


def test_index_counts_and_straddling_frames_match_in_memory_dataset(ragged, mano):
    """Units reassemble frames split across row groups: the same instances, rows and samples as in memory."""
    for require_gt, seqs in ((False, None), (True, None), (False, ["seq_c", "seq_b"])):
        index = CropIndex(ragged, seqs, require_gt=require_gt)
        ds = CropDataset(ragged, 24, 2, train=False, mano=mano, sequences=seqs, require_gt=require_gt)
        assert len(index) == len(ds) > 0
        assert sum(u.n_extra for u in index.units) > 0  # frames do straddle row groups here
        stream = OrderedStream(index, _settings(mano, train=False), batch_size=3)
        got = [s for b in flatten_units(_loader(stream, 0)) for s in _split(b)]
        assert [int(s["index"]) for s in got] == list(range(len(ds)))
        for i, s in enumerate(got):
            ref = ds[i]
            for k in ("images", "K", "T_world_from_crop", "landmarks", "hand_side", "view_mask"):
                np.testing.assert_array_equal(s[k], ref[k], err_msg=k)


def _split(batch: dict) -> list[dict]:
    n = len(batch["index"])
    return [{k: v[j].numpy() for k, v in batch.items() if k != "info"} for j in range(n)]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_sample_exactly_once_per_epoch(even, mano, world, workers):
    """Ranks × workers read disjoint shares; one epoch of N / (batch · world) steps sees each instance once."""
    index = CropIndex(even)
    assert len(index) == 32 and len(index.units) == 8
    bs = 4
    iters = len(index) // (bs * world)
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            stream = TrainStream(index, _settings(mano, augment=NO_AUG), bs, iters, workers, rank, world,
                                 shuffle_units=2)  # fmt: skip
            stream.set_epoch(epoch)
            got = _ids(_loader(stream, workers))
            assert got == shard_batches(stream)  # the real DataLoader yields the planned batches in order
            seen += [i for b in got for i in b]
        assert collections.Counter(seen) == collections.Counter(range(32)), (epoch, seen)


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (1, 3)])
def test_each_pass_is_a_disjoint_cover_on_ragged_units(ragged, mano, world, workers):
    """With unequal row groups (and more shards than row groups) each pass still covers every id once."""
    index = CropIndex(ragged)
    stream = TrainStream(index, _settings(mano), 3, 5, workers, 0, world, shuffle_units=2)
    for p in range(3):
        ids = []
        for shard in range(stream.S):
            for _, pairs in stream.pass_order(p, shard):
                ids += [int(index.offsets[u] + loc) for u, loc in pairs]
        assert sorted(ids) == list(range(len(index)))


def test_row_groups_in_memory_are_bounded(even, mano):
    """A full pass reads each row group once and holds at most ``shuffle_units`` of them."""
    index = CropIndex(even)
    stream = TrainStream(index, _settings(mano, augment=NO_AUG), 4, 8, 0, shuffle_units=3)
    crop_stream.STATS.update(reads=0, max_held=0)
    ids = [i for b in _ids(_loader(stream, 0)) for i in b]
    assert sorted(ids) == list(range(32))
    assert crop_stream.STATS["reads"] == len(index.units) == 8
    assert crop_stream.STATS["max_held"] == 3


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_the_same_batches(even, mano, workers):
    index = CropIndex(even)
    aug = AugmentConfig(extrinsic_noise=0.1)

    def batches(epoch, start):
        s = TrainStream(index, _settings(mano, seed=3, augment=aug), 3, 7, workers, shuffle_units=2)
        s.set_epoch(epoch, start)
        return list(_loader(s, workers))

    full = batches(1, 0)
    tail = batches(1, 3)
    assert len(full) == 7 and len(tail) == 4
    for a, b in zip(full[3:], tail, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_deterministic_for_a_seed_and_same_samples_as_in_memory(even, mano):
    index = CropIndex(even)
    aug = AugmentConfig()

    def ids(seed, epoch):
        s = TrainStream(index, _settings(mano, seed=seed, augment=aug), 4, 8, 0, shuffle_units=2)
        s.set_epoch(epoch)
        return list(_loader(s, 0))

    a, b = ids(5, 0), ids(5, 0)
    assert [x["index"].tolist() for x in a] == [x["index"].tolist() for x in b]
    assert [x["index"].tolist() for x in a] != [x["index"].tolist() for x in ids(6, 0)]
    assert [x["index"].tolist() for x in a] != [x["index"].tolist() for x in ids(5, 1)]
    # the augmented sample is the in-memory dataset's sample for the same (seed, epoch, id)
    ds = CropDataset(even, 24, 2, train=True, augment=aug, seed=5, mano=mano)
    for j, gid in enumerate(a[0]["index"].tolist()):
        ref = ds[(0, gid)]
        np.testing.assert_array_equal(a[0]["images"][j].numpy(), ref["images"])
        np.testing.assert_array_equal(a[0]["delta"][j].numpy(), ref["delta"])


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_file_damaged_mid_epoch_is_named(tmp_path, even, mano, damage):
    files = []
    for f in even:
        dst = tmp_path / Path(f).name
        dst.write_bytes(Path(f).read_bytes())
        files.append(str(dst))
    index = CropIndex(files)
    stream = TrainStream(index, _settings(mano, augment=NO_AUG), 4, 8, 0, shuffle_units=1)
    it = iter(_loader(stream, 0))
    next(it)
    victim = Path(index.files[1] if index.units[0].file == 0 else index.files[0])
    if damage == "truncate":
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    else:
        victim.unlink()
    with pytest.raises(InputError) as exc:
        for _ in it:
            pass
    assert str(victim) in str(exc.value)


def test_too_many_shards_for_tiny_caches_still_cover(ragged, mano):
    """More shards than row groups: row groups are split by instance, still a disjoint cover."""
    index = CropIndex(ragged, ["seq_c"])
    assert len(index.units) < 4
    stream = TrainStream(index, _settings(mano), 1, 3, 2, 0, 2)
    assert stream.parts > 1
    ids = [
        int(index.offsets[u] + loc)
        for s in range(stream.S)
        for _, pr in stream.pass_order(0, s)
        for u, loc in pr
    ]
    assert sorted(ids) == list(range(len(index)))


def test_missing_file_and_column_at_index_time(tmp_path, even):
    with pytest.raises(InputError, match="not found"):
        CropIndex([tmp_path / "nope.parquet"])
    t = pq.read_table(even[0]).drop_columns(["fov"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(t, bad)
    with pytest.raises(InputError, match="fov") as exc:
        CropIndex([bad])
    assert str(bad) in str(exc.value)
