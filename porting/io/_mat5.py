"""MAT v5 (MATLAB, scipy; MAT.jl cannot write it: docs/files.md#mat-v5, #mat-v73): read with
``scipy.io.loadmat`` after a budget scan.

Before scipy reads anything, the file's top-level elements are walked: a compressed element
is inflated in a stream and only counted (nothing kept), so a small file that inflates to
gigabytes is refused against the size budget before scipy allocates it. A sparse matrix comes
back dense; its dense size is charged to the budget before it is expanded.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from porting import files
from porting.errors import PortingError
from porting.io._core import MAX_DEPTH, Budget, corrupt, missing_dependency, numeric

_MI_MATRIX, _MI_COMPRESSED = 14, 15
_CHUNK = 1 << 20


def _scan(p: Path, budget: Budget) -> None:
    """Charge every top-level element's (inflated) size to `budget`."""
    with files.open_input(p) as fh:
        head = fh.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            return  # a v4 file (no header): scipy reads it; nothing is compressed
        order = "<" if head[126:128] == b"IM" else ">"
        size = os.fstat(fh.fileno()).st_size
        index = 0
        while True:
            tag = fh.read(8)
            if len(tag) < 8:
                return
            index += 1
            budget.visit(f"element {index}")
            mtype, nbytes = struct.unpack(order + "II", tag)
            if mtype >> 16:  # small data element: 4 bytes packed in the tag
                continue
            if mtype != _MI_COMPRESSED:
                if fh.tell() + nbytes > size:
                    raise corrupt(
                        p, "mat5", f"element {index} claims {nbytes} bytes past the end of the file"
                    )
                budget.take(f"element {index}", (nbytes,), 1, "MAT v5 data element")
                fh.seek(nbytes + (-nbytes % 8), 1)
                continue
            inflater = zlib.decompressobj()
            left, inflated = nbytes, 0
            try:
                while left > 0:
                    chunk = fh.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    data = inflater.decompress(chunk, _CHUNK)
                    while True:
                        inflated += len(data)
                        if inflated > budget.max_bytes - budget.used:
                            budget.take(
                                f"element {index}", (inflated,), 1, "compressed MAT v5 element"
                            )
                        if not inflater.unconsumed_tail:
                            break
                        data = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            except zlib.error as e:
                raise corrupt(p, "mat5", e) from None
            budget.take(f"element {index}", (inflated,), 1, "compressed MAT v5 element")


def load_mat5(p: Path, budget: Budget) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:
        raise missing_dependency("scipy", "mat5") from None
    _scan(p, budget)
    try:
        raw = scipy.io.loadmat(
            str(p), squeeze_me=False, struct_as_record=False, chars_as_strings=True
        )
    except Exception as e:  # noqa: BLE001
        raise corrupt(p, "mat5", e) from None
    # the scan charged the stored sizes; arrays are now in memory, so start a fresh account
    # for what conversion adds (dense copies of sparse matrices)
    budget.used = 0
    return {k: _value(v, p, k, budget, 0) for k, v in raw.items() if not k.startswith("__")}


def _value(v: Any, p: Path, name: str, budget: Budget, depth: int) -> Any:
    from scipy.io.matlab import mat_struct

    if depth > MAX_DEPTH:
        raise PortingError(f"{p}: {name!r} nests deeper than {MAX_DEPTH} levels")
    budget.visit(name)
    import scipy.sparse as sparse

    if sparse.issparse(v):
        budget.take(name, v.shape, v.dtype.itemsize, "a sparse matrix, stored dense")
        v = v.toarray(order="F")
    if isinstance(v, mat_struct):
        return {
            f: _value(getattr(v, f), p, f"{name}.{f}", budget, depth + 1) for f in v._fieldnames
        }
    if not isinstance(v, np.ndarray):
        raise PortingError(
            f"{p}: {name!r} is a MATLAB {type(v).__name__}, which porting does not read; "
            "expected numeric arrays, structs, cells or strings"
        )
    if v.dtype.kind == "U":
        strings = [str(s) for s in v.ravel(order="F")]
        return strings[0] if len(strings) == 1 else strings
    if v.dtype.kind == "O":
        items = list(v.ravel(order="F"))
        if items and all(isinstance(x, mat_struct) for x in items):
            dicts = [_value(x, p, name, budget, depth + 1) for x in items]
            return dicts[0] if len(dicts) == 1 else dicts
        return [
            _value(x, p, f"{name}[{i}]", budget, depth + 1) for i, x in enumerate(items, start=1)
        ]
    return numeric(v, p, name)
