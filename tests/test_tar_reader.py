"""Tests of mvhand.tar_reader: the fast plain-tar reader sees exactly what ``tarfile`` sees, and is strict."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from mvhand.dataset import iter_frames
from mvhand.io_utils import InputError
from mvhand.tar_reader import PlainTarReader, is_compressed


def _members(specs, fmt) -> bytes:
    """An archive (bytes) of ``(name, kind, data, mtime)`` entries written by ``tarfile`` in format ``fmt``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, data, mtime in specs:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "x" * 150  # long link name: GNU 'K' / PAX linkpath
                tf.addfile(info)
    return buf.getvalue()


SPECS = [
    ("__hand_shapes.json__", "file", b'{"a": 1}', 0),
    ("000000.cameras.json", "file", b"{}", 1700000000.25),  # float mtime: PAX writes an mtime record
    ("000000.image_1201-0.jpg", "file", bytes(range(256)) * 5, 0),
    ("empty.txt", "file", b"", 0),
    ("d" * 120 + "/000001.hands.json", "file", b"[1]", 0),  # > 100 chars: ustar prefix / GNU / PAX path
    ("n" * 160 + ".json", "file", b"long", 0),  # no '/' to split: GNU long name or PAX path only
    ("caf\u00e9/000002.info.json", "file", b"{}", 0),  # non-ASCII name
    ("a_directory", "dir", b"", 0),
    ("a_link", "link", b"", 0),
    ("000003.image_0.jpg", "file", b"\xff\xd8" + b"j" * 1023, 0),  # exactly two blocks of data
]


def _reference(data: bytes) -> list[tuple[str, int, bool, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [
            (m.name, m.size, m.isreg(), tf.extractfile(m).read() if m.isreg() else None)
            for m in tf.getmembers()
        ]


def _ours(data: bytes, seekable: bool, read: bool = True):
    reader = PlainTarReader(io.BytesIO(data), seekable=seekable)
    out = [(m.name, m.size, m.is_file, reader.read_data() if (m.is_file and read) else None) for m in reader]
    return out, reader.clean_end


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("seekable", [False, True])
def test_same_members_as_tarfile(fmt, seekable):
    specs = SPECS if fmt != tarfile.USTAR_FORMAT else [s for s in SPECS if not s[0].startswith("n" * 160)]
    if fmt == tarfile.USTAR_FORMAT:  # ustar has neither long link names nor non-ASCII names
        specs = [s for s in specs if s[1] != "link" and s[0].isascii()]
    data = _members(specs, fmt)
    ours, clean = _ours(data, seekable)
    assert clean
    assert ours == _reference(data)


def test_skipped_data_and_offsets():
    data = _members(SPECS, tarfile.PAX_FORMAT)
    for seekable in (False, True):
        reader = PlainTarReader(io.BytesIO(data), seekable=seekable)
        members = list(reader)  # nothing read: every data block is skipped
        assert reader.clean_end and len(members) == len(SPECS)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        offsets = [m.offset_data for m in tf.getmembers()]
    reader = PlainTarReader(io.BytesIO(data))
    assert [m.offset_data for m in reader] == offsets


def test_signed_checksum_is_accepted():
    """Old tar writers summed the header as signed chars; tarfile accepts both sums, so do we."""
    data = bytearray(_members([("caf\u00e9.txt", "file", b"x", 0)], tarfile.GNU_FORMAT))
    header = data[:512]
    unsigned = sum(header[:148]) + 256 + sum(header[156:])
    signed = unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:])
    assert signed != unsigned
    data[148:156] = b"%06o\x00 " % signed
    assert _ours(bytes(data), False)[0] == _reference(bytes(data))


def _archive() -> bytes:
    return _members(SPECS[:4], tarfile.PAX_FORMAT)


def test_end_of_archive_detection():
    data = _archive()
    end = len(data.rstrip(b"\0"))
    end += -end % 512  # just after the last member's padded data
    assert _ours(data[:end], False)[1] is False  # no end-of-archive block: not clean
    assert _ours(data[: end + 512], False)[1] is True  # one zero block is enough (as for tarfile)


@pytest.mark.parametrize("seekable", [False, True])
def test_corruption_raises(seekable):
    data = _archive()
    bad_checksum = bytearray(data)
    bad_checksum[1024 + 10] ^= 0x55  # a byte in the name of the second header (after the 1st member)
    with pytest.raises(tarfile.ReadError, match="checksum"):
        _ours(bytes(bad_checksum), seekable)
    with pytest.raises(tarfile.ReadError, match="truncated header"):
        _ours(data[: 1024 + 100], seekable)
    with pytest.raises(tarfile.ReadError) as info:
        _ours(b"not a tar archive at all" * 40, seekable)
    assert info.value.at_start
    for empty in (b"", bytes(1024)):
        with pytest.raises(tarfile.ReadError) as info:
            _ours(empty, seekable)
        assert info.value.at_start
    image = data.index(bytes(range(256)))  # cut inside the data of the image member
    with pytest.raises(tarfile.ReadError, match="end of data"):
        _ours(data[: image + 700], False)
    if seekable:  # skipped by seeking, the cut shows only as a missing end of archive
        ours, clean = _ours(data[: image + 700], True, read=False)
        assert not clean and len(ours) == 3
    else:  # skipped by reading: short data
        with pytest.raises(tarfile.ReadError, match="end of data"):
            _ours(data[: image + 700], False, read=False)


def test_read_data_only_once():
    reader = PlainTarReader(io.BytesIO(_archive()))
    member = next(iter(reader))
    assert reader.read_data() == b'{"a": 1}' and member.size == 8
    with pytest.raises(RuntimeError):
        reader.read_data()


def test_compressed_archives_go_through_tarfile(tmp_path):
    """A gzip-compressed sequence reads like the plain one (tarfile path), truncation still detected."""
    from test_dataset import _write_umetrack_sequence

    plain = _write_umetrack_sequence(tmp_path / "seq.tar")
    gz = tmp_path / "seq.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert is_compressed(gz.read_bytes()[:8]) and not is_compressed(plain.read_bytes()[:8])
    a, b = list(iter_frames(plain)), list(iter_frames(gz))
    assert [f.frame_id for f in a] == [f.frame_id for f in b]
    assert all(x.image_bytes == y.image_bytes and x.cameras.keys() == y.cameras.keys() for x, y in zip(a, b))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.tar.gz.*truncated or corrupt"):
        list(iter_frames(cut))
