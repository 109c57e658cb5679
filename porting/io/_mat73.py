"""MAT v7.3 (MAT.jl ``matwrite``, MATLAB ``-v7.3``): HDF5 behind a 512-byte MATLAB header.

h5py sees the dims reversed; the ``.T`` view restores Julia's order (docs/files.md#mat-v73,
#hdf5-reversed). Cell arrays are object
references into ``/#refs#``; sparse matrices come back dense (their dense size is charged to
the size budget first, and their index arrays are checked before use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.io._core import (
    MAX_DEPTH,
    Budget,
    complex_from_record,
    corrupt,
    julia_view,
    numeric,
    short,
)
from porting.io._hdf5 import Walker, attr_int, attr_str, open_h5

MAT_NUMERIC = {
    "double": np.float64,
    "single": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "logical": np.bool_,
}


def load_mat73(p: Path, budget: Budget) -> dict[str, Any]:
    f = open_h5(p, "mat73")
    try:
        w = Walker(f, p, "mat73", budget)
        out = {}
        for name in w.keys(f):
            if name.startswith("#"):
                continue
            budget.visit(name)
            out[name] = _value(w, w.child(f, name, name), name, 0)
        return out
    except PortingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise corrupt(p, "mat73", e) from None
    finally:
        f.close()


def _value(w: Walker, obj, name: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PortingError(f"{w.p}: {name!r} nests deeper than {MAX_DEPTH} levels")
    return w.once(obj, name, lambda: _convert(w, obj, name, depth))


def _convert(w: Walker, obj, name: str, depth: int) -> Any:
    h5py, p = w.h5py, w.p
    cls = attr_str(obj, "MATLAB_class")
    if isinstance(obj, h5py.Group):
        if "MATLAB_sparse" in obj.attrs:
            return _sparse(w, obj, name, cls)
        if cls not in (None, "struct"):
            raise PortingError(
                f"{p}: {name!r} is a MATLAB {cls} object, which porting does not read; "
                "expected numeric arrays, structs, cells or strings"
            )
        return {
            k: _value(w, w.child(obj, k, f"{name}.{k}"), f"{name}.{k}", depth + 1)
            for k in _fields(w, obj)
        }
    if attr_int(obj, "MATLAB_empty"):
        return _empty(w, obj, name, cls)
    try:
        data = w.data(obj, name)
    except PortingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise PortingError(f"{p}: {name!r} cannot be read ({short(e)})") from None
    if cls == "cell" or h5py.check_ref_dtype(obj.dtype) is not None:
        refs = np.asarray(data).ravel(order="C")  # C order of reversed dims = Julia's order
        w.budget.visit(name, refs.size)
        return [
            None if not r else _value(w, w.deref(r, f"{name}[{i}]"), f"{name}[{i}]", depth + 1)
            for i, r in enumerate(refs, start=1)
        ]
    if cls == "char":
        return _char(np.asarray(data))
    if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
        data = complex_from_record(data, "real", "imag")
    if cls is not None and cls not in MAT_NUMERIC:
        raise PortingError(
            f"{p}: {name!r} is a MATLAB {cls} value, which porting does not read; expected "
            f"one of {', '.join(MAT_NUMERIC)}, char, cell or struct"
        )
    if cls == "logical" or attr_int(obj, "MATLAB_int_decode") == 1:
        data = np.asarray(data).astype(bool)
    return julia_view(numeric(np.asarray(data), p, name))


def _fields(w: Walker, g) -> list[str]:
    try:
        raw = g.attrs["MATLAB_fields"] if "MATLAB_fields" in g.attrs else None
    except Exception:  # noqa: BLE001
        raw = None
    names: list[str] = []
    if raw is not None:
        for item in np.asarray(raw, dtype=object).ravel():
            if isinstance(item, np.ndarray):
                names.append(b"".join(bytes(c) for c in item.ravel()).decode("utf-8", "replace"))
            elif isinstance(item, (bytes, np.bytes_)):
                names.append(bytes(item).decode("utf-8", "replace"))
            else:
                names.append(str(item))
    keys = w.keys(g)
    if not names or any(n not in keys for n in names):
        names = keys
    return names


def _empty(w: Walker, obj, name: str, cls: str | None) -> Any:
    if cls == "char":
        return ""
    dims = np.asarray(w.data(obj, name)).ravel(order="C")
    dtype = np.dtype(MAT_NUMERIC.get(cls or "double", np.float64))
    try:
        shape = tuple(int(d) for d in dims) if dims.size else (0, 0)
    except (TypeError, ValueError, OverflowError):
        shape = (-1,)
    if any(s < 0 for s in shape):
        raise PortingError(f"{w.p}: {name!r}: an empty array with impossible dims {dims.tolist()}")
    w.budget.take(name, shape, dtype.itemsize, "an empty MATLAB array")
    return np.zeros(shape, dtype=dtype, order="F")


def _char(codes: np.ndarray) -> Any:
    j = codes.T if codes.ndim else codes.reshape(1)
    if j.ndim == 1:
        j = j.reshape(1, -1)
    rows = [
        np.asarray(j[r], dtype="<u2").tobytes().decode("utf-16-le", "replace")
        for r in range(j.shape[0])
    ]
    rows = [r.rstrip("\x00") for r in rows]
    return rows[0] if len(rows) == 1 else rows


def _sparse(w: Walker, g, name: str, cls: str | None) -> np.ndarray:
    p = w.p

    def bad(why: str) -> PortingError:
        return PortingError(
            f"{p}: {name!r} is a MATLAB sparse matrix whose {why}; expected MATLAB's sparse "
            "layout (jc: n+1 column starts, ir: row indices < m, data: the values)"
        )

    m = attr_int(g, "MATLAB_sparse")
    if m is None or m < 0:
        raise bad(f"row count MATLAB_sparse={m!r} is not a count")
    if "jc" not in g:
        raise bad("column starts 'jc' are missing")
    jc = np.asarray(w.data(w.child(g, "jc", f"{name}.jc"), f"{name}.jc")).ravel()
    if jc.dtype.kind not in "iu" or jc.size < 1:
        raise bad(f"column starts 'jc' are {jc.dtype} of size {jc.size}")
    jc = jc.astype(np.int64)
    n = len(jc) - 1
    dtype = np.dtype(MAT_NUMERIC.get(cls or "double", np.float64))
    w.budget.take(name, (m, n), dtype.itemsize, "a sparse matrix, stored dense")
    out: np.ndarray = np.zeros((m, n), dtype=dtype, order="F")
    if "data" in g and "ir" in g:
        data = np.asarray(w.data(w.child(g, "data", f"{name}.data"), f"{name}.data"))
        if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
            data = complex_from_record(data, "real", "imag")
            out = out.astype(np.complex128)
        data = numeric(data.ravel(), p, f"{name}.data")
        ir = np.asarray(w.data(w.child(g, "ir", f"{name}.ir"), f"{name}.ir")).ravel()
        if ir.dtype.kind not in "iu":
            raise bad(f"row indices 'ir' are {ir.dtype}")
        ir = ir.astype(np.int64)
        if jc[0] != 0 or np.any(np.diff(jc) < 0) or jc[-1] > min(ir.size, data.size):
            raise bad(f"column starts 'jc' are not increasing within {min(ir.size, data.size)}")
        if ir.size and (ir.min() < 0 or ir.max() >= m):
            raise bad(f"row indices 'ir' leave the range 0..{m - 1}")
        for col in range(n):
            s, e = jc[col], jc[col + 1]
            out[ir[s:e], col] = data[s:e]
    return out
