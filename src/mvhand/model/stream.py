"""Streaming reads of the Parquet crop cache: memory bounded by a few row groups, whatever the cache size.

The crop cache (one Parquet file per sequence, row groups of ≤ 256 rows written by
:func:`mvhand.formats.crop_cache.cache_sequence_crops`) is too large to hold at real scale (≈ 40–100 GB). Three pieces:

* :class:`CropIndex` — built from the key columns only (sequence, frame, side, view, landmark validity), no
  JPEG bytes: one *unit* per row group with its number of hand instances after filtering. A frame whose
  rows straddle a row-group boundary belongs to the row group of its first row; loading that unit also reads
  the few rows it needs from the next row group. Global instance ids ``0..N−1`` follow the unit order
  (files sorted by their first sequence name, then row groups, then sequence/frame/side inside a unit).
* :class:`TrainStream` — the training loader (an ``IterableDataset`` yielding collated batches). A *pass*
  over the data deals a seeded permutation of the units to ``S = world_size · max(1, num_workers)``
  shards (disjoint: every instance is in exactly one shard per pass); each shard reads its units a window
  of ``shuffle_units`` at a time and yields the window's instances in a seeded random order. Each DataLoader
  worker of each rank serves one shard and reads only its own units. Batch ``j`` of a rank's epoch comes
  from shard ``j mod W`` of that rank, so the whole sample sequence is a pure function of
  ``(seed, world_size, num_workers, batch_size, iters_per_epoch)`` and the position ``(epoch, iteration)``:
  the trainer resumes mid-epoch without storing any loader state. Sample augmentations are drawn from
  ``default_rng([seed, epoch, instance id])`` as before.
* :class:`OrderedStream` — validation and prediction: every unit in order, one item (a list of batches) per
  unit; worker ``w`` reads units ``w, w + W, …`` and the DataLoader's round-robin returns them in order.

Why row-group windows and not a global sample permutation: a random permutation over all samples reads one
row group (≈ 256 crops) per sample — measured in benchmarks/bench_scale.py and docs/model.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mvhand.io_utils import InputError
from mvhand.model.data import REQUIRED_COLUMNS, AugmentConfig, CropDataset, collate, instance_groups

__all__ = [
    "CropIndex",
    "Unit",
    "SampleSettings",
    "TrainStream",
    "OrderedStream",
    "flatten_units",
    "shard_batches",
    "unit_eval_targets",
]

_FIX = "re-create the crop cache with workflow/scripts/cache_crops.py"
_KEY_COLUMNS = ["sequence_name", "frame_id", "hand_side", "view_index"]
#: Reading statistics of this process (tests check the memory bound): ``reads`` row groups read,
#: ``max_held`` the most decoded units a :class:`TrainStream` iterator held at once.
STATS = {"reads": 0, "max_held": 0}


@dataclass(frozen=True)
class Unit:
    """One row group of the index: rows ``[head, n_rows + tail)`` of row groups ``rg .. rg + n_extra``."""

    file: int
    rg: int
    head: int  # leading rows that belong to a frame started in the previous row group
    n_extra: int  # following row groups read for the tail (0 or 1 normally)
    tail: int  # rows of the following row group(s) that finish this unit's last frame
    n_instances: int


def _read_error(path: str, exc: BaseException) -> InputError:
    return InputError(path, f"crop cache unreadable or truncated ({type(exc).__name__}: {exc})", _FIX)


class CropIndex:
    """Index of the hand instances of crop-cache files by row group (reads no image bytes).

    Args:
        files: crop-cache Parquet files.
        sequences: keep only these sequence names (None = all).
        require_gt: keep only instances with ground-truth landmarks.

    Attributes:
        files: the files, sorted by their first sequence name (then path).
        units: one :class:`Unit` per row group holding at least one kept instance.
        offsets: ``(len(units) + 1,)`` cumulative instance counts: unit ``u`` holds global ids
            ``offsets[u] .. offsets[u + 1] − 1``.

    Raises:
        InputError: a missing, unreadable or truncated file, a missing column, or rows of one frame that
            are not contiguous in their file.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        sequences: Sequence[str] | None = None,
        require_gt: bool = False,
    ):
        self.sequences = None if sequences is None else frozenset(sequences)
        self.require_gt = bool(require_gt)
        per_file = []
        for f in files:
            keys = self._keys(str(f))
            first = str(keys["seq"][0]) if len(keys["seq"]) else ""
            per_file.append((first, str(f), keys))
        per_file.sort(key=lambda t: (t[0], t[1]))
        self.files = [f for _, f, _ in per_file]
        units: list[Unit] = []
        for fi, (_, path, keys) in enumerate(per_file):
            units += self._file_units(fi, path, keys)
        self.units = units
        self.offsets = np.concatenate([[0], np.cumsum([u.n_instances for u in units])]).astype(np.int64)

    def __len__(self) -> int:
        """Number of hand instances N."""
        return int(self.offsets[-1])

    @staticmethod
    def _keys(path: str) -> dict:
        if not Path(path).is_file():
            raise InputError(path, "crop cache file not found", _FIX)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - any Arrow failure means an unusable file
            raise _read_error(path, exc) from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise InputError(path, f"crop cache lacks column(s) {', '.join(missing)}", _FIX)
        try:
            t = pf.read(columns=[*_KEY_COLUMNS, "landmarks_world"])
        except Exception as exc:  # noqa: BLE001
            raise _read_error(path, exc) from exc
        md = pf.metadata
        return {
            "seq": np.asarray(t.column("sequence_name").to_pylist(), dtype=object),
            "frame": t.column("frame_id").to_numpy().astype(np.int64),
            "side": t.column("hand_side").to_numpy().astype(np.int64),
            "view": t.column("view_index").to_numpy().astype(np.int64),
            "has_lm": np.asarray(pc.is_valid(t.column("landmarks_world")).to_numpy(zero_copy_only=False)),
            "rg_rows": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
        }

    def _count(self, keys: dict, lo: int, hi: int) -> int:
        """Instances in rows ``[lo, hi)`` of a file after the filters (the same rule as :meth:`load`)."""
        sl = slice(lo, hi)
        keep = np.ones(hi - lo, dtype=bool)
        if self.sequences is not None:
            keep &= np.isin(keys["seq"][sl], list(self.sequences))
        idx = np.flatnonzero(keep)
        groups = instance_groups(keys["seq"][sl][idx], keys["frame"][sl][idx], keys["side"][sl][idx],
                                 keys["view"][sl][idx])  # fmt: skip
        if self.require_gt:
            has = keys["has_lm"][sl][idx]
            return sum(bool(has[g[0]]) for g in groups)
        return len(groups)

    def _file_units(self, fi: int, path: str, keys: dict) -> list[Unit]:
        rg_rows = keys["rg_rows"]
        n = len(keys["seq"])
        # frame runs: a (sequence, frame) key must occupy one contiguous run of rows
        new = np.ones(n, dtype=bool)
        if n > 1:
            new[1:] = (keys["seq"][1:] != keys["seq"][:-1]) | (keys["frame"][1:] != keys["frame"][:-1])
        run_start = np.flatnonzero(new)
        run_ids = np.cumsum(new) - 1
        pairs = set()
        for s in run_start:
            k = (keys["seq"][s], int(keys["frame"][s]))
            if k in pairs:
                raise InputError(path, f"rows of sequence {k[0]!r} frame {k[1]} are not contiguous", _FIX)
            pairs.add(k)
        run_end = np.append(run_start[1:], n)
        starts = np.concatenate([[0], np.cumsum(rg_rows)]).astype(np.int64)
        units = []
        for rg in range(len(rg_rows)):
            lo, hi = int(starts[rg]), int(starts[rg + 1])
            if hi == lo:
                continue
            first_run = run_ids[lo]
            own_lo = lo if run_start[first_run] == lo else int(run_end[first_run])
            if own_lo >= hi:  # the whole row group continues a frame of an earlier one
                continue
            own_hi = int(run_end[run_ids[hi - 1]])
            n_extra = int(np.searchsorted(starts, own_hi, side="left") - 1 - rg) if own_hi > hi else 0
            count = self._count(keys, own_lo, own_hi)
            if count:  # row groups without a kept instance are never read
                units.append(Unit(fi, rg, own_lo - lo, n_extra, own_hi - hi, count))
        return units

    def unit_of(self, gid: int) -> tuple[int, int]:
        """``(unit, local instance)`` of global instance id ``gid``."""
        u = int(np.searchsorted(self.offsets, gid, side="right") - 1)
        return u, int(gid - self.offsets[u])

    def read_unit(self, u: int, columns: Sequence[str] | None = None) -> pa.Table:
        """The filtered rows of unit ``u`` (row-group reads; at most ``1 + n_extra`` row groups live).

        Raises:
            InputError: the file vanished or is truncated/corrupt (named).
        """
        unit = self.units[u]
        path = self.files[unit.file]
        cols = list(columns) if columns is not None else list(REQUIRED_COLUMNS)
        STATS["reads"] += 1 + unit.n_extra
        if not Path(path).is_file():
            raise InputError(path, "crop cache file disappeared while reading it", _FIX)
        try:
            pf = pq.ParquetFile(path)
            rgs = list(range(unit.rg, unit.rg + 1 + unit.n_extra))
            t = pf.read_row_groups(rgs, columns=cols, use_threads=False)  # loader workers are the parallelism
            n_own = pf.metadata.row_group(unit.rg).num_rows
        except Exception as exc:  # noqa: BLE001 - any Arrow failure means an unusable file
            raise _read_error(path, exc) from exc
        t = t.slice(unit.head, n_own - unit.head + unit.tail)
        if self.sequences is not None:
            t = t.filter(pc.is_in(t.column("sequence_name"), pa.array(sorted(self.sequences), pa.string())))
        return t


@dataclass
class SampleSettings:
    """What turns rows into samples (:class:`mvhand.model.data.CropDataset` arguments)."""

    img_size: int
    views: int = 2
    in_chans: int = 1
    train: bool = True
    augment: AugmentConfig | None = None
    seed: int = 0
    mano: torch.nn.Module | None = None


def _unit_dataset(index: CropIndex, u: int, st: SampleSettings, columns=None) -> CropDataset:
    ds = CropDataset.from_table(
        index.read_unit(u, columns), index.files[index.units[u].file], st.img_size, st.views, st.in_chans,
        st.train, st.augment, st.seed, st.mano, index.require_gt, base=int(index.offsets[u]),
    )  # fmt: skip
    if len(ds) != index.units[u].n_instances:
        raise InputError(ds.files[0], f"row group {index.units[u].rg} changed since it was indexed", _FIX)
    return ds


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _init_cv2_threads() -> None:
    import cv2

    cv2.setNumThreads(0 if get_worker_info() is None else 1)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _count_mod(n: int, w: int, W: int) -> int:
    """How many ``j`` in ``[0, n)`` have ``j mod W == w``."""
    return max(0, (n - w + W - 1) // W)


class TrainStream(IterableDataset):
    """Shuffled, sharded, resumable training stream (yields collated batches; DataLoader ``batch_size=None``).

    Args:
        index: :class:`CropIndex` of the training instances (``require_gt`` as wanted).
        settings: :class:`SampleSettings` (``train=True``).
        batch_size: hands per batch and rank.
        iters_per_epoch: batches per epoch and rank.
        num_workers: the DataLoader's worker count W (0 = in the main process; counts as 1 shard).
        rank, world_size: DDP position.
        shuffle_units: row groups per shuffle window (memory: about this many row groups per worker).

    Call :meth:`set_epoch` before creating the DataLoader iterator (workers are not persistent).
    """

    def __init__(
        self,
        index: CropIndex,
        settings: SampleSettings,
        batch_size: int,
        iters_per_epoch: int,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_units: int = 8,
    ):
        if len(index) == 0:
            raise ValueError("cannot sample from an empty crop index")
        self.index, self.st = index, settings
        self.bs, self.iters = int(batch_size), int(iters_per_epoch)
        self.W = max(1, int(num_workers))
        self.rank, self.world = int(rank), int(world_size)
        self.S = self.world * self.W
        self.window = max(1, int(shuffle_units))
        n_units = len(index.units)
        # small caches: split each row group into P parts (instance l goes to part l mod P) so that every
        # shard gets work; P = 1 whenever there are at least as many row groups as shards
        self.parts = max(1, math.ceil(self.S / max(1, n_units)))
        counts = np.array([u.n_instances for u in index.units], dtype=np.int64)
        p = np.arange(self.parts)
        self._vcounts = np.maximum(0, (counts[:, None] - p[None] + self.parts - 1) // self.parts).reshape(-1)
        self.epoch, self.start_iter = 0, 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Select the trainer epoch and skip its first ``start_iter`` batches (resume)."""
        self.epoch, self.start_iter = int(epoch), int(start_iter)

    # -- the pure schedule ---------------------------------------------------------------------------
    def pass_units(self, p: int, shard: int) -> np.ndarray:
        """Virtual units (``unit · parts + part``) of ``shard`` in pass ``p``, in reading order."""
        perm = np.random.default_rng([self.st.seed, 7919, int(p)]).permutation(len(self._vcounts))
        return perm[shard :: self.S]

    def pass_order(self, p: int, shard: int) -> Iterator[tuple[int, np.ndarray]]:
        """Windows of pass ``p`` of ``shard``: ``(window units, shuffled (unit, local) pairs)``."""
        vus = self.pass_units(p, shard)
        for w0 in range(0, len(vus), self.window):
            win = vus[w0 : w0 + self.window]
            pairs = [
                np.stack(
                    [
                        np.full(c, v // self.parts),
                        np.arange(v % self.parts, v % self.parts + c * self.parts, self.parts),
                    ],
                    1,
                )  # fmt: skip
                for v in win
                if (c := int(self._vcounts[v])) > 0
            ]
            if not pairs:
                continue
            allp = np.concatenate(pairs)
            rng = np.random.default_rng([self.st.seed, 7919, int(p), int(shard), int(w0)])
            yield np.unique(win // self.parts), allp[rng.permutation(len(allp))]

    def shard_stream(self, shard: int, start: int) -> Iterator[tuple[int, int]]:
        """Endless ``(unit, local)`` sequence of ``shard`` from its ``start``-th sample (passes chained)."""
        p, empty = 0, 0
        while True:
            n = int(self._vcounts[self.pass_units(p, shard)].sum())
            if n == 0:
                empty += 1
                if empty > 1000:
                    raise InputError(None, f"shard {shard} of {self.S} never gets a hand instance",
                                     "use fewer DataLoader workers or ranks for so small a crop cache")  # fmt: skip
            if start >= n:
                start -= n
                p += 1
                continue
            for _, pairs in self.pass_order(p, shard):
                if start >= len(pairs):
                    start -= len(pairs)
                    continue
                for uu, loc in pairs[start:]:
                    yield int(uu), int(loc)
                start = 0
            p += 1

    def logical_shard(self, worker: int) -> tuple[int, int]:
        """``(shard, logical worker w)`` served by DataLoader worker ``worker`` in this epoch segment."""
        w = (self.start_iter + worker) % self.W
        return self.rank * self.W + w, w

    def batch_plan(self, worker: int) -> tuple[int, int, int]:
        """``(shard, first sample, number of batches)`` for DataLoader worker ``worker``."""
        shard, w = self.logical_shard(worker)
        done = self.epoch * _count_mod(self.iters, w, self.W) + _count_mod(self.start_iter, w, self.W)
        n = _count_mod(self.iters, w, self.W) - _count_mod(self.start_iter, w, self.W)
        return shard, done * self.bs, n

    def planned_ids(self, worker: int) -> list[list[int]]:
        """Global instance ids of the batches DataLoader worker ``worker`` will yield (no reading)."""
        shard, start, n = self.batch_plan(worker)
        it = self.shard_stream(shard, start)
        out = []
        for _ in range(n):
            out.append([int(self.index.offsets[u] + loc) for u, loc in (next(it) for _ in range(self.bs))])
        return out

    # -- reading -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, n_workers = _worker()
        if n_workers != self.W and not (n_workers == 1 and self.W == 1):
            raise ValueError(f"TrainStream built for {self.W} workers runs in a DataLoader with {n_workers}")
        _init_cv2_threads()
        shard, start, n_batches = self.batch_plan(worker)
        if n_batches <= 0:
            return
        cache: dict[int, CropDataset] = {}
        it = self.shard_stream(shard, start)
        for _ in range(n_batches):
            samples = []
            for _ in range(self.bs):
                u, loc = next(it)
                if u not in cache:
                    if len(cache) >= self.window:  # a new window: release the previous one
                        cache.clear()
                    cache[u] = _unit_dataset(self.index, u, self.st)
                    STATS["max_held"] = max(STATS["max_held"], len(cache))
                samples.append(cache[u][(self.epoch, loc)])
            yield collate(samples)


def shard_batches(stream: TrainStream) -> list[list[int]]:
    """The rank's batches of the current epoch segment as global ids, in DataLoader order (no reading)."""
    plans = [stream.planned_ids(w) for w in range(stream.W)]
    out = []
    for j in range(max(len(p) for p in plans)):
        out += [p[j] for p in plans if j < len(p)]
    return out


# --------------------------------------------------------------------------------------------------
# Evaluation and prediction
# --------------------------------------------------------------------------------------------------


class OrderedStream(IterableDataset):
    """Every selected instance once, in index order; one item per unit = a list of collated batches.

    Args:
        index: :class:`CropIndex`.
        settings: :class:`SampleSettings` (``train=False``).
        batch_size: hands per batch (batches never span units).
        select: sorted global ids to keep (None = all).
        with_info: add an ``info`` list per batch (identity, GT, stored views) for prediction.

    Use with ``DataLoader(batch_size=None, collate_fn=lambda x: x)`` and :func:`flatten_units`.
    """

    def __init__(
        self,
        index: CropIndex,
        settings: SampleSettings,
        batch_size: int,
        select: np.ndarray | None = None,
        with_info: bool = False,
    ):
        self.index, self.st, self.bs = index, settings, int(batch_size)
        self.select = None if select is None else np.asarray(select, dtype=np.int64)
        self.with_info = with_info

    def __len__(self) -> int:
        """Instances yielded."""
        return len(self.index) if self.select is None else len(self.select)

    def _local(self, u: int) -> np.ndarray:
        lo, hi = self.index.offsets[u], self.index.offsets[u + 1]
        if self.select is None:
            return np.arange(hi - lo)
        s = self.select[(self.select >= lo) & (self.select < hi)]
        return s - lo

    def __iter__(self) -> Iterator[list[dict]]:
        worker, n_workers = _worker()
        _init_cv2_threads()
        for u in range(worker, len(self.index.units), n_workers):
            local = self._local(u)
            if len(local) == 0:
                yield []  # keep the round-robin aligned with the unit order
                continue
            ds = _unit_dataset(self.index, u, self.st)
            batches = []
            for b0 in range(0, len(local), self.bs):
                ids = local[b0 : b0 + self.bs]
                batch = collate([ds[int(i)] for i in ids])
                if self.with_info:
                    batch["info"] = [_info(ds, int(i)) for i in ids]
                batches.append(batch)
            yield batches


def _info(ds: CropDataset, i: int) -> dict:
    g0 = ds.groups[i][0]
    rows = ds.choose_views(i, None)
    return ds.group_info(i) | {
        "has_beta": bool(ds.has_beta[g0]),
        "beta": ds.beta[g0].copy(),
        "has_lm": bool(ds.has_lm[g0]),
        "lm": ds.lm[g0].copy(),
        "view_crop_size": [int(ds.crop_size[r]) for r in rows],
        "view_K": [ds.K[r].tolist() for r in rows],
        "view_T": [ds.T[r].reshape(-1).tolist() for r in rows],
        "view_stream": [str(ds.stream[r]) for r in rows],
    }


def flatten_units(loader) -> Iterator[dict]:
    """Batches of a DataLoader over :class:`OrderedStream` (its items are per-unit batch lists)."""
    for unit_batches in loader:
        yield from unit_batches


def unit_eval_targets(
    index: CropIndex, settings: SampleSettings
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """:meth:`CropDataset.eval_targets` of every instance in order, reading no image bytes."""
    cols = [c for c in REQUIRED_COLUMNS if c != "image_jpeg"]
    for u in range(len(index.units)):
        ds = _unit_dataset(index, u, settings, columns=cols)
        for i in range(len(ds)):
            yield ds.eval_targets(i)
