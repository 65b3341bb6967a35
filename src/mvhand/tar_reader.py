"""Fast sequential reader of plain (uncompressed) tar archives: ustar, GNU and PAX headers.

``tarfile`` spends most of its time on Python-level bookkeeping per member (about 50 µs in stream mode);
a challenge sequence has ~8 members per frame, and every stage streams every tar once, so this reader keeps
only what the challenge files need: member names (including GNU long names and PAX ``path``/``size``
records, the ustar prefix), sizes, the regular-file flag, and the data. It reads strictly sequentially
(``read_data`` for the current member, or skip it), and it is strict where ``tarfile`` is lenient: a bad
header checksum, a short header or short data raises :class:`tarfile.ReadError` instead of silently ending
the archive, and :attr:`PlainTarReader.clean_end` tells whether the archive ended with its all-zero
end-of-archive block.

Names are decoded as UTF-8 with ``surrogateescape``, the fields are parsed as ``tarfile.TarInfo.frombuf``
parses them (octal or base-256 numbers, unsigned or signed checksums), so both readers see the same members.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["COMPRESSED_MAGIC", "MAX_HEADER_BYTES", "PlainTarReader", "TarMember", "is_compressed"]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # REGTYPE, AREGTYPE, CONTTYPE
_GNU_TYPES = (b"L", b"K", b"S")  # long name, long link, sparse: their prefix field is not a name prefix
#: Largest PAX / GNU long-name header read (real ones hold a path and a few numbers).
MAX_HEADER_BYTES = 1 << 20
# gzip, bzip2, xz: archives that ``tarfile`` decompresses ("r|*") and this reader does not
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def is_compressed(head: bytes) -> bool:
    """True if the first bytes of a file are a gzip, bzip2 or xz signature."""
    return head.startswith(COMPRESSED_MAGIC)


@dataclass(frozen=True)
class TarMember:
    """One archive member.

    Attributes:
        name: path inside the archive (``str``; undecodable bytes kept as surrogates).
        size: data size, bytes.
        is_file: regular file (``tarfile.TarInfo.isreg``).
        offset_data: byte offset of the data in the archive.
    """

    name: str
    size: int
    is_file: bool
    offset_data: int


def _number(field: bytes) -> int:
    """A numeric header field: octal ASCII, or GNU base-256 (first byte 0o200 / 0o377)."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - (256 ** (len(field) - 1)) if field[0] == 0xFF else n
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise tarfile.ReadError(f"invalid number field {field!r} in a tar header") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 256 + sum(block[156:])  # the checksum field counts as 8 spaces
    if stored == unsigned:
        return True
    # tarfile also accepts the historic checksum over signed chars: every byte > 127 counts 256 less
    n_high = sum(b > 127 for b in block[:148]) + sum(b > 127 for b in block[156:])
    return stored == unsigned - 256 * n_high


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<len> <key>=<value>\\n"`` records of a PAX extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        if space < 0:
            raise tarfile.ReadError("invalid PAX header record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.ReadError("invalid PAX header record length") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise tarfile.ReadError("invalid PAX header record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class PlainTarReader:
    """Iterate the members of an uncompressed tar archive, strictly in order.

    Args:
        fh: binary file object positioned at the start of the archive.
        seekable: skip unread data with ``seek`` instead of reading it.

    Iterating yields :class:`TarMember` objects; :meth:`read_data` returns the current member's data and
    must be called before the iteration advances (unread data is skipped). After the iteration,
    :attr:`clean_end` is True only if the archive ended with an all-zero block.

    Raises (while iterating):
        tarfile.ReadError: empty file, bad header checksum, short header or data, malformed PAX record,
            sparse member. ``ReadError`` with ``at_start=True`` attribute when the very first header is bad
            (the file is not a tar archive at all).
    """

    def __init__(self, fh: BinaryIO, seekable: bool = False) -> None:
        self._fh = fh
        self._seekable = seekable
        self._pos = 0
        self._pending = 0  # data + padding bytes of the current member not yet consumed
        self._current: TarMember | None = None
        self._unread = False  # the current member's data has not been read
        self._global: dict[str, str] = {}
        self.clean_end = False

    def _read(self, n: int) -> bytes:
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def _skip_pending(self) -> None:
        if self._pending:
            if self._seekable:
                self._fh.seek(self._pending, 1)
                self._pos += self._pending
            elif len(self._read(self._pending)) != self._pending:
                raise tarfile.ReadError("unexpected end of data")
            self._pending = 0

    def read_data(self) -> bytes:
        """The data of the current member (once)."""
        m = self._current
        if m is None or not self._unread:
            raise RuntimeError("read_data: no unread current member")
        self._unread = False
        data = self._read(m.size)
        if len(data) != m.size:
            raise tarfile.ReadError(f"unexpected end of data in member {m.name!r}")
        self._pending -= m.size
        return data

    def _data_of_special(self, size: int) -> bytes:
        """Data of a PAX/GNU header member (read whole, padding skipped; at most :data:`MAX_HEADER_BYTES`)."""
        if size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(f"extended header of {size} bytes (more than {MAX_HEADER_BYTES} bytes)")
        data = self._read(size)
        pad = -size % BLOCK
        if len(data) != size or len(self._read(pad)) != pad:
            raise tarfile.ReadError("unexpected end of data in an extended header")
        return data

    def _error(self, message: str, at_start: bool) -> tarfile.ReadError:
        err = tarfile.ReadError(message)
        err.at_start = at_start  # type: ignore[attr-defined]
        return err

    def __iter__(self) -> Iterator[TarMember]:
        long_name: str | None = None
        pax: dict[str, str] = {}
        first = True
        while True:
            self._skip_pending()
            self._current, self._unread = None, False
            block = self._read(BLOCK)
            at_start = first and long_name is None and not pax
            if len(block) < BLOCK:
                if not block and not at_start:
                    return  # end of file without an end-of-archive block: clean_end stays False
                raise self._error("empty file" if not block else "truncated header", at_start)
            if block == _ZERO_BLOCK:
                if at_start:
                    raise self._error("empty archive (end-of-archive block first)", True)
                self.clean_end = True
                return
            try:
                valid = _checksum_ok(block)
            except tarfile.ReadError:  # not even a number in the checksum field
                valid = False
            if not valid:
                raise self._error("bad checksum in a tar header", at_start)
            first = False
            kind = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise tarfile.ReadError("negative member size in a tar header")
            if kind in (b"x", b"g"):
                records = _pax_records(self._data_of_special(size))
                if kind == b"g":
                    self._global.update(records)
                else:
                    pax.update(records)
                continue
            if kind in (b"L", b"K"):
                data = self._data_of_special(size)
                if kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            if kind == b"S":
                raise tarfile.ReadError("sparse tar members are not supported")
            name = _text(block[0:100])
            prefix = _text(block[345:500])
            if prefix and kind not in _GNU_TYPES:
                name = prefix + "/" + name
            if long_name is not None:
                name = long_name
            records = {**self._global, **pax}
            if "path" in records:
                name = records["path"]
            if "size" in records:
                try:
                    size = int(records["size"])
                except ValueError:
                    raise tarfile.ReadError("invalid PAX size record") from None
            long_name, pax = None, {}
            is_file = kind in _REGULAR and not (kind == b"\0" and name.endswith("/"))
            if kind == b"5" or (kind == b"\0" and name.endswith("/")):
                name = name.rstrip("/")
            # directories, links, devices and FIFOs carry no data in the archive (size is informational)
            data_size = size if kind in _REGULAR or kind not in b"123456" else 0
            self._current, self._unread = TarMember(name, size, is_file, self._pos), data_size > 0 or is_file
            self._pending = data_size + (-data_size % BLOCK)
            yield self._current
