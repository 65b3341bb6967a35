import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from mvhand.io_utils import InputError, atomic_path, atomic_write


def test_plain_timm_import_works_after_guard_in_fresh_interpreter():
    code = "from mvhand._compat import import_timm; t = import_timm(); print(t.create_model('test_resnet').__class__.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ResNet" in out.stdout


def test_atomic_write_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_write(target) as fh:
        fh.write("{}")
    assert target.read_text() == "{}"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "{}"  # untouched
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "a.tar.gz") as tmp:
        assert tmp.name.endswith(".tar.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.tar.gz").read_bytes() == b"x"


def test_input_error_message():
    err = InputError("data/x.tar", "truncated tar", "re-download it")
    assert "data/x.tar" in str(err) and "re-download" in str(err)


@pytest.mark.parametrize("fix", ["re-download it", None])
def test_input_error_survives_pickling(fix):
    """Worker processes send their errors back pickled: the message, path and fix must survive."""
    import pickle

    err = InputError("data/x.tar", "truncated tar", fix)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is InputError
    assert (str(back), back.path, back.problem, back.fix) == (str(err), "data/x.tar", "truncated tar", fix)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_outputs_honour_the_umask(tmp_path, mask):
    """A file written atomically gets the mode a plain open() gives (group members on a cluster can read it)."""
    old = os.umask(mask)
    try:
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        with atomic_write(tmp_path / "atomic.txt") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "atomic.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert want == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode) == want
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode) == want


def test_rewriting_an_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "private.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    with atomic_write(target) as fh:
        fh.write('{"a": 1}')
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and target.read_text() == '{"a": 1}'


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_writers_are_swept(tmp_path):
    from mvhand.io_utils import STALE_TEMP_AGE_S, _host_tag

    target = tmp_path / "out.parquet"
    host = _host_tag()
    dead = tmp_path / f".out.parquet.{_dead_pid()}@{host}.0a1b2c3d.tmp.parquet"
    live = tmp_path / f".out.parquet.{os.getppid()}@{host}.0a1b2c3e.tmp.parquet"  # a running writer
    foreign_old = tmp_path / ".out.parquet.123@otherhost.0a1b2c3f.tmp.parquet"
    foreign_new = tmp_path / ".out.parquet.124@otherhost.0a1b2c40.tmp.parquet"
    other_file = tmp_path / f".other.parquet.{_dead_pid()}@{host}.0a1b2c41.tmp.parquet"
    for p in (dead, live, foreign_old, foreign_new, other_file):
        p.write_bytes(b"half")
    old = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(foreign_old, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out.parquet", live.name, foreign_new.name, other_file.name])


def test_full_disk_gives_a_clear_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(InputError) as ei, atomic_write(target) as fh:
        fh.write("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    msg = str(ei.value)
    assert str(target) in msg and "no space left" in msg and "free disk space" in msg
    assert list(tmp_path.iterdir()) == []


def test_writers_on_a_really_full_file_system(tiny_fs):
    """The real thing: a 64 KiB file system; text, binary and Parquet writers all fail cleanly."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = "x" * 200_000
    with pytest.raises(InputError, match="no space left"), atomic_write(tiny_fs / "a.txt") as fh:
        fh.write(big)
        fh.flush()
    table = pa.table({"v": np.random.default_rng(0).random(100_000)})
    with pytest.raises(InputError, match="no space left"), atomic_path(tiny_fs / "b.parquet") as tmp:
        pq.write_table(table, tmp, compression="none")
    assert list(tiny_fs.iterdir()) == []


def test_path_lists_round_trip_and_errors(tmp_path):
    from mvhand.cli import listed_files
    from mvhand.io_utils import InputError, read_path_list, write_path_list

    paths = [f"results/crops/umetrack/train/s{i:04d}.parquet" for i in range(5000)] + [
        "/abs/with space.parquet"
    ]
    listing = write_path_list(tmp_path / "train.txt", paths)
    assert read_path_list(listing) == paths  # order kept, spaces kept
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]  # written atomically: no temporary left
    (tmp_path / "hand.txt").write_text("# written by hand\n\n  a.parquet  \nb.parquet\n")
    assert read_path_list(tmp_path / "hand.txt") == ["a.parquet", "b.parquet"]
    # files on the command line first, then the lists, duplicates dropped
    assert listed_files(["b.parquet", "x.parquet"], [str(tmp_path / "hand.txt")], "crops") == [
        "b.parquet",
        "x.parquet",
        "a.parquet",
    ]
    with pytest.raises(InputError, match=r"missing\.txt: list file not found \(re-run the workflow"):
        listed_files([], [str(tmp_path / "missing.txt")], "crops")
    with pytest.raises(InputError, match=r"give --crops FILE\.\.\. or --crops-list LIST"):
        listed_files([], [], "crops")
    with pytest.raises(ValueError, match="line break"):
        write_path_list(tmp_path / "bad.txt", ["a\nb.parquet"])
    assert not (tmp_path / "bad.txt").exists()
