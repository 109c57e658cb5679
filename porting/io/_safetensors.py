"""safetensors (Python / PyTorch writers): read from the format's own layout, no dependency.

The layout is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the data. Each entry is checked (dtype known, shape of non-negative
integers, byte range inside the data and exactly ``prod(shape) * itemsize`` long) and charged to
the size budget before its bytes are read. Tensors are returned exactly as stored (row-major,
the writer's own axis order; docs/files.md#safetensors). ``BF16`` tensors come back as float32
with the same values (every bfloat16 is a float32 with the low 16 bits zero); 8-bit and smaller
float formats are refused by name (docs/files.md#untrusted-files).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from porting import files
from porting.errors import PortingError
from porting.io._core import Budget, corrupt

_DTYPES = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
    "C64": "<c8",
    "BF16": "<u2",  # converted to float32 below
}
MAX_HEADER = 100_000_000  # the safetensors specification's own limit


def load_safetensors(p: Path, budget: Budget) -> dict[str, Any]:
    with files.open_input(p) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise corrupt(
                p, "safetensors", f"{len(head)} bytes, shorter than the 8-byte header size"
            )
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or n > size - 8:
            raise corrupt(
                p, "safetensors", f"header length {n} but the file has {size - 8} bytes after it"
            )
        try:
            text = fh.read(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise corrupt(p, "safetensors", e) from None
        header = files.loads_json(text, f"{p} (safetensors header)")
        if not isinstance(header, dict):
            raise corrupt(p, "safetensors", f"header is a JSON {type(header).__name__}")
        start, data_len = 8 + n, size - 8 - n
        entries = {
            name: _entry(p, name, entry, data_len)
            for name, entry in header.items()
            if name != "__metadata__"
        }
        _check_disjoint(p, entries)
        out: dict[str, Any] = {}
        for name, (dtype, shape, begin, end) in entries.items():
            entry = header[name]
            bf16 = entry["dtype"] == "BF16"
            budget.visit(name)
            # what is kept: BF16 comes back as float32, 4 bytes an element
            budget.take(name, shape, 4 if bf16 else np.dtype(dtype).itemsize)
            fh.seek(start + begin)
            raw = bytearray(fh.read(end - begin))
            if len(raw) != end - begin:
                raise corrupt(p, "safetensors", f"{name!r}: data cut short")
            a = np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]).reshape(shape)
            if bf16:  # widened in place of the result: no temporary beside it
                wide = np.empty(shape, dtype=np.uint32)
                np.copyto(wide, a)
                del a, raw
                wide <<= np.uint32(16)
                a = wide.view(np.float32)
            elif not a.dtype.isnative:
                a = a.astype(a.dtype.newbyteorder("="))
            out[name] = a
    return out


def _check_disjoint(p: Path, entries: dict[str, tuple[str, tuple, int, int]]) -> None:
    """The format gives every tensor its own bytes: overlapping ranges are a forged file."""
    spans = sorted(
        (begin, end, name) for name, (_, _, begin, end) in entries.items() if end > begin
    )
    reach, owner = 0, ""
    for begin, end, name in spans:
        if begin < reach:
            raise corrupt(
                p,
                "safetensors",
                f"tensors {owner!r} and {name!r} share bytes (from byte {begin}); expected each "
                "tensor in its own byte range",
            )
        if end > reach:
            reach, owner = end, name


def _entry(p: Path, name: str, entry: Any, data_len: int) -> tuple[str, tuple, int, int]:
    def bad(why: str) -> PortingError:
        return corrupt(p, "safetensors", f"tensor {name!r}: {why}")

    if not isinstance(entry, dict):
        raise bad(f"header entry is {type(entry).__name__}, expected an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str):
        raise bad(f"dtype {dtype!r}")
    if dtype not in _DTYPES:
        raise PortingError(
            f"{p}: tensor {name!r} has dtype {dtype}, which porting does not read; expected one "
            f"of {', '.join(_DTYPES)} (convert it to float32 before saving)"
        )
    shape = entry.get("shape")
    if not isinstance(shape, list) or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
    ):
        raise bad(f"shape {shape!r}; expected a list of non-negative integers")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)
    ):
        raise bad(f"data_offsets {offsets!r}; expected [begin, end]")
    begin, end = offsets
    itemsize = np.dtype(_DTYPES[dtype]).itemsize
    want = math.prod(shape) * itemsize
    if not 0 <= begin <= end <= data_len:
        raise bad(f"data_offsets {offsets} outside the {data_len} data bytes (truncated?)")
    if end - begin != want:
        raise bad(f"{end - begin} data bytes for shape {tuple(shape)} of {dtype} ({want} needed)")
    return _DTYPES[dtype], tuple(shape), begin, end
