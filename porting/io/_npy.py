"""``.npy`` and ``.npz`` (NPZ.jl ``npzwrite``, NumPy; docs/files.md#npz): read member by
member, headers first (docs/files.md#untrusted-files).

Every array's header (dtype, shape, order) is read and checked before its data: object
arrays are refused without being unpickled, a shape is charged to the size budget, and a
header that claims more bytes than the file (or zip member) holds is reported as truncated
before anything is allocated.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from porting import files
from porting.errors import PortingError
from porting.io._core import NUMERIC_KINDS, Budget, corrupt, flatten, numeric, short

MAGIC = b"\x93NUMPY"


def _header(fh: IO[bytes], p: Path, name: str, fmt: str) -> tuple[tuple, bool, np.dtype]:
    """Read an .npy header from `fh` (positioned at the magic): (shape, fortran, dtype)."""
    fmt_lib = np.lib.format
    try:
        version = fmt_lib.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt_lib.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            # 3.0 differs from 2.0 only in allowing UTF-8 in the header (structured field
            # names, which are refused below anyway); its layout is 2.0's
            shape, fortran, dtype = fmt_lib.read_array_header_2_0(fh)
        else:
            raise ValueError(
                f"format version {version[0]}.{version[1]}; expected 1.0, 2.0 or 3.0 (NumPy's)"
            )
    except Exception as e:  # noqa: BLE001 - any failure here is a bad header
        where = f"member {name!r}: " if fmt == "npz" else ""
        raise corrupt(p, fmt, f"{where}bad .npy header: {short(e)}") from None
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise corrupt(p, fmt, f"{name!r}: impossible shape {shape!r} in the .npy header")
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _check_dtype(dtype: np.dtype, shape: tuple, p: Path, name: str) -> None:
    if dtype.hasobject:
        raise PortingError(
            f"{p}: {name!r} holds Python objects (dtype object, shape {shape}); expected "
            "numbers. Object arrays are never unpickled."
        )
    if dtype.kind not in NUMERIC_KINDS or dtype.names:
        raise PortingError(
            f"{p}: {name!r} holds {dtype} data (shape {shape}); expected numbers "
            "(bool, int, float or complex)"
        )


def _not_npy(p: Path, head: bytes, member: str | None) -> PortingError:
    shown = head[:16]
    if member is None:
        return PortingError(
            f"{p}: not a .npy file (it starts with {shown!r}, not NumPy's magic "
            f"{MAGIC!r}); expected an array written by NPZ.jl's npzwrite or NumPy's np.save"
        )
    return PortingError(
        f"{p}: member {member!r} is not a .npy array (it starts with {shown!r}); expected an "
        ".npz holding only .npy members, as NPZ.jl and NumPy write them"
    )


def _read(fh: IO[bytes], p: Path, name: str, budget: Budget, available: int, fmt: str):
    shape, _fortran, dtype = _header(fh, p, name, fmt)
    _check_dtype(dtype, shape, p, name)
    budget.take(name, shape, dtype.itemsize)
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > available - fh.tell():
        raise corrupt(
            p,
            fmt,
            f"{name!r} claims {claimed} bytes of data but only {max(available - fh.tell(), 0)} "
            "follow its header",
        )
    return shape, dtype


def load_npy(p: Path, budget: Budget) -> dict[str, Any]:
    name = p.stem
    with files.open_input(p) as fh:
        head = fh.read(len(MAGIC))
        if head != MAGIC:
            raise _not_npy(p, head, None)
        fh.seek(0)
        _read(fh, p, name, budget, os.fstat(fh.fileno()).st_size, "npy")
        fh.seek(0)
        try:
            a = np.lib.format.read_array(fh, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any failure here means a bad file
            raise corrupt(p, "npy", e) from None
    return {name: numeric(a, p, name)}


def load_npz(p: Path, budget: Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with files.open_input(p) as raw:
        try:
            zf = zipfile.ZipFile(raw)
        except Exception as e:  # noqa: BLE001
            raise corrupt(p, "npz", e) from None
        with zf:
            for info in zf.infolist():
                member = info.filename
                name = member[:-4] if member.endswith(".npy") else member
                budget.visit(name)
                if name in out:
                    raise PortingError(f"{p}: member {name!r} occurs twice; expected unique names")
                try:
                    with zf.open(info) as fh:
                        head = fh.read(len(MAGIC))
                    if head != MAGIC or info.is_dir():
                        raise _not_npy(p, head, member)
                    with zf.open(info) as fh:
                        _read(fh, p, name, budget, info.file_size, "npz")
                    with zf.open(info) as fh:
                        a = np.lib.format.read_array(fh, allow_pickle=False)
                except PortingError:
                    raise
                except Exception as e:  # noqa: BLE001
                    raise PortingError(
                        f"{p}: member {name!r} cannot be read ({short(e)}); the file may be "
                        "truncated or corrupt"
                    ) from None
                out[name] = numeric(a, p, name)
    return out


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, compress: bool = False) -> Path:
    """Write `arrays` (names to Julia-indexed arrays, nested dicts allowed) to an ``.npz`` file.

    Each member is written Fortran-ordered with Julia's shape, exactly as NPZ.jl's ``npzwrite``
    writes it (docs/files.md#npz), so ``npzread`` in Julia gives the same ``size()`` and elements
    and `load` gives back the same Julia-indexed arrays. Nested dicts are flattened with `flatten` (``"a.b"``).
    The file is written with `porting.files.atomic_write`: a failure leaves any previous file
    untouched and no partial file behind; a replaced file keeps its permission bits.

    >>> import numpy as np, tempfile, os
    >>> from porting.io import load
    >>> p = save_npz(os.path.join(tempfile.mkdtemp(), "w.npz"), {"w": np.ones((2, 3))})
    >>> load(p)["w"].shape
    (2, 3)
    """
    if not isinstance(arrays, Mapping):
        raise PortingError(f"arrays must be a dict of names to arrays, got {type(arrays).__name__}")
    target = files.output_file(path, what="output")
    flat = flatten(arrays)
    members: dict[str, np.ndarray] = {}
    for name, value in flat.items():
        a = np.asarray(value)
        if a.dtype.kind not in NUMERIC_KINDS:
            raise PortingError(
                f"{name!r} holds {a.dtype} data; expected numbers (bool, int, float, complex)"
            )
        # asfortranarray would turn a 0-d array into shape (1,); 0-d and 1-d need no reorder
        members[name] = np.asfortranarray(a) if a.ndim >= 2 else a
    if not members:
        raise PortingError(f"{target}: no numeric arrays to save in {sorted(arrays)!r}")

    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with files.atomic_write(target) as tmp, open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=method, allowZip64=True) as zf:
            for name, a in members.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
    return target
