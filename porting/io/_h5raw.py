"""Read one string attribute of an HDF5 object from the file's bytes, in pure Python.

JLD2 records a committed datatype's Julia type name in an attribute ``julia_type`` whose value
is a Julia ``DataType``: a compound of ``name`` (a variable-length string) and ``parameters``
(variable-length object references). h5py cannot convert that compound, and reading it through
h5py's low-level API crashed the Python process on a real file. This module reads the name
from the bytes HDF5 wrote instead (docs/files.md#jld2-type-names):

object header (v1, or v2 ``OHDR`` with ``OCHK`` continuations) -> attribute message named
``julia_type`` -> its datatype (inline, or shared: the committed datatype's own header) -> the
offset of the ``name`` member -> a 16-byte variable-length reference (length, global heap
collection address, object index) -> the ``GCOL`` collection -> the bytes.

Every read is bounds-checked and every loop bounded; anything unexpected gives None (a type
name is a hint, never required), so no file can crash or hang this code.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_MESSAGES = 4096
_MAX_CHUNKS = 64
_MAX_READ = 1 << 24


class _Bad(Exception):
    pass


class RawFile:
    """A read-only view of an HDF5 file's bytes, addresses relative to its base address."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        self.size = os.fstat(self.fd).st_size
        self.base, self.o, self.lsize = self._superblock()

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or n > _MAX_READ or off + n > self.size:
            raise _Bad(f"read of {n} bytes at {off} outside the file")
        data = os.pread(self.fd, n, off)
        if len(data) != n:
            raise _Bad("short read")
        return data

    def _superblock(self) -> tuple[int, int, int]:
        at = 0
        while at < min(self.size, 1 << 20):
            if self.read(at, 8) == _SIGNATURE:
                break
            at = 512 if at == 0 else at * 2
        else:
            raise _Bad("no HDF5 signature")
        version = self.read(at + 8, 1)[0]
        if version in (0, 1):
            o, lsize = self.read(at + 13, 1)[0], self.read(at + 14, 1)[0]
            base_at = at + 24 + (4 if version == 1 else 0)
        elif version in (2, 3):
            o, lsize = self.read(at + 9, 1)[0], self.read(at + 10, 1)[0]
            base_at = at + 12
        else:
            raise _Bad(f"superblock version {version}")
        if o not in (2, 4, 8) or lsize not in (2, 4, 8):
            raise _Bad("odd offset sizes")
        return self.uint(base_at, o), o, lsize

    def uint(self, off: int, n: int) -> int:
        return int.from_bytes(self.read(off, n), "little")

    # ---------------------------------------------------------------- object headers

    def messages(self, addr: int) -> list[tuple[int, int, int, int]]:
        """(type, flags, file offset of data, size) of every message in an object header."""
        at = self.base + addr
        if self.read(at, 4) == b"OHDR":
            return self._messages_v2(at)
        return self._messages_v1(at)

    def _messages_v1(self, at: int) -> list[tuple[int, int, int, int]]:
        if self.read(at, 1)[0] != 1:
            raise _Bad("object header version")
        count = struct.unpack("<H", self.read(at + 2, 2))[0]
        size = struct.unpack("<I", self.read(at + 8, 4))[0]
        chunks = [(at + 16, size)]
        out: list[tuple[int, int, int, int]] = []
        while chunks and len(out) < min(count, _MAX_MESSAGES):
            start, length = chunks.pop(0)
            pos, end = start, start + length
            while pos + 8 <= end and len(out) < count:
                mtype, msize, mflags = struct.unpack("<HHB", self.read(pos, 5))
                out.append((mtype, mflags, pos + 8, msize))
                if mtype == 0x10 and len(chunks) < _MAX_CHUNKS:
                    chunks.append((self.base + self.uint(pos + 8, self.o),
                                   self.uint(pos + 8 + self.o, self.lsize)))  # fmt: skip
                pos += 8 + msize
        return out

    def _messages_v2(self, at: int) -> list[tuple[int, int, int, int]]:
        flags = self.read(at + 5, 1)[0]
        pos = at + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        size = self.uint(pos, width)
        pos += width
        chunks = [(pos, size)]
        order = 2 if flags & 0x04 else 0
        out: list[tuple[int, int, int, int]] = []
        visited = 0
        while chunks and len(out) < _MAX_MESSAGES:
            start, length = chunks.pop(0)
            visited += 1
            if visited > _MAX_CHUNKS:
                break
            p, end = start, start + length
            while p + 4 + order <= end and len(out) < _MAX_MESSAGES:
                mtype = self.read(p, 1)[0]
                msize = struct.unpack("<H", self.read(p + 1, 2))[0]
                mflags = self.read(p + 3, 1)[0]
                data = p + 4 + order
                out.append((mtype, mflags, data, msize))
                if mtype == 0x10:
                    caddr = self.base + self.uint(data, self.o)
                    clen = self.uint(data + self.o, self.lsize)
                    if self.read(caddr, 4) == b"OCHK":
                        chunks.append((caddr + 4, clen - 8))  # signature .. checksum
                p = data + msize
        return out

    # ---------------------------------------------------------------- datatypes

    def _datatype_at(self, off: int, flags: int) -> tuple[int, int]:
        """(file offset of a datatype's encoding, its class); follows a shared datatype."""
        if flags & 0x02:  # shared: a committed datatype elsewhere
            version = self.read(off, 1)[0]
            addr = self.uint(off + (8 if version == 1 else 2), self.o)
            for mtype, _f, data, _s in self.messages(addr):
                if mtype == 0x03:
                    return data, self.read(data, 1)[0] & 0x0F
            raise _Bad("committed datatype without a datatype message")
        return off, self.read(off, 1)[0] & 0x0F

    def _name_member(self, dt: int) -> tuple[int, int]:
        """(offset of the string inside the value, datatype class of that string)."""
        head = self.read(dt, 8)
        cls, version = head[0] & 0x0F, head[0] >> 4
        if cls in (3, 9):  # the attribute itself is a string
            return 0, cls
        if cls != 6:
            raise _Bad("not a compound")
        total = struct.unpack("<I", head[4:8])[0]
        pos = dt + 8
        raw = self.read(pos, min(256, self.size - pos))
        end = raw.find(b"\x00")
        if end < 0 or raw[:end] != b"name":
            raise _Bad("first member is not 'name'")
        if version >= 3:
            pos += end + 1
            width = 1 if total < 1 << 8 else 2 if total < 1 << 16 else 3 if total < 1 << 24 else 4
            offset = self.uint(pos, width)
            pos += width
        else:
            pos += (end + 8) // 8 * 8
            offset = self.uint(pos, 4)
            pos += 4 + (28 if version == 1 else 0)
        member = self.read(pos, 4)
        mcls = member[0] & 0x0F
        if mcls == 9 and member[1] & 0x0F != 1:
            raise _Bad("'name' is a sequence, not a string")
        if mcls not in (3, 9):
            raise _Bad("'name' is not a string")
        return offset, mcls

    # ---------------------------------------------------------------- the value

    def _heap_object(self, addr: int, index: int) -> bytes:
        at = self.base + addr
        if self.read(at, 4) != b"GCOL":
            raise _Bad("no global heap collection")
        size = self.uint(at + 8, self.lsize)
        pos, end = at + 8 + self.lsize, at + min(size, _MAX_READ)
        for _ in range(65536):
            if pos + 8 + self.lsize > end:
                break
            ident = struct.unpack("<H", self.read(pos, 2))[0]
            osize = self.uint(pos + 8, self.lsize)
            if ident == 0:
                break
            if ident == index:
                return self.read(pos + 8 + self.lsize, osize)
            pos += 8 + self.lsize + (osize + 7) // 8 * 8
        raise _Bad("heap object not found")

    def string_attribute(self, addr: int, name: bytes) -> str | None:
        for mtype, _f, data, _size in self.messages(addr):
            if mtype != 0x0C:
                continue
            version, aflags = self.read(data, 1)[0], self.read(data + 1, 1)[0]
            nlen, tlen, slen = struct.unpack("<HHH", self.read(data + 2, 6))
            if version == 1:
                pos = data + 8
                pad = lambda n: (n + 7) // 8 * 8  # noqa: E731
            elif version in (2, 3):
                pos = data + 8 + (1 if version == 3 else 0)
                pad = lambda n: n  # noqa: E731
            else:
                continue
            if self.read(pos, nlen).rstrip(b"\x00") != name:
                continue
            dt_off = pos + pad(nlen)
            value = dt_off + pad(tlen) + pad(slen)
            dt, _cls = self._datatype_at(dt_off, aflags & 0x01 and 0x02 or 0)
            offset, scls = self._name_member(dt)
            if scls == 3:  # fixed-length string
                size = struct.unpack("<I", self.read(dt + 4, 4))[0]
                text = self.read(value + offset, size)
            else:
                length = struct.unpack("<I", self.read(value + offset, 4))[0]
                heap = self.uint(value + offset + 4, self.o)
                index = struct.unpack("<I", self.read(value + offset + 4 + self.o, 4))[0]
                text = self._heap_object(heap, index)[:length]
            return text.rstrip(b"\x00").decode("utf-8", "replace")
        return None


def string_attribute(path: Path, addr: int, name: str) -> str | None:
    """The string (or a compound's ``name`` string member) held by attribute `name` of the
    object whose header is at `addr` (relative to the base address, as h5py's
    ``h5o.get_info(...).addr`` gives it); None when it cannot be read."""
    try:
        with RawFile(path) as raw:
            return raw.string_attribute(addr, name.encode())
    except (_Bad, OSError, struct.error, ValueError, IndexError, OverflowError):
        return None
