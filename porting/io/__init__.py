"""Weight files in, Julia-indexed NumPy arrays out.

``load(path)`` reads the files people move Knet weights in and returns a dict of names to
**Julia-indexed** arrays: shape equals Julia's ``size()`` and element ``[i-1, j-1, ...]`` equals
Julia's ``[i, j, ...]``, whatever the memory order (most come back Fortran-ordered, zero copy).

>>> import numpy as np, tempfile, os
>>> w = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))  # Julia (2,3,4)
>>> d = tempfile.mkdtemp(); p = save_npz(os.path.join(d, "w.npz"), {"conv": {"w": w}})
>>> {k: v.shape for k, v in load(p).items()}
{'conv.w': (2, 3, 4)}

Formats (chosen by the file's magic bytes, else by extension; ``format=`` overrides; each is
described in docs/files.md#npz, #mat-v5, #mat-v73, #jld2, #jld2-functions, #hdf5-plain and
#safetensors):

- ``npy``: NPZ.jl ``npzwrite`` (Fortran order, shape = Julia's size) or NumPy. Returned as
  stored: NumPy's logical array already has Julia's shape and indexing. A C-ordered ``.npy``
  written by a NumPy user is taken the same way (its logical shape is taken as Julia's size).
  The single array is named by the file stem.
- ``npz``: NPZ.jl, NumPy or :func:`save_npz`; each member as for ``npy``, names flat.
- ``mat5``: MATLAB (``save -v7``/``-v6``) or scipy ``savemat`` (MAT.jl cannot write v5);
  ``scipy.io.loadmat`` already gives ``(X1, X2, ...)``.
- ``mat73``: MAT.jl ``matwrite`` (its default) or MATLAB ``-v7.3``: HDF5 behind a 512-byte
  MATLAB header. h5py sees the dims reversed; the ``.T`` view restores Julia's order
  (docs/files.md#hdf5-reversed).
- ``jld2``: JLD2.jl (``JLD2.save``, ``jldsave``, ``@save``): HDF5 behind a 512-byte Julia
  header, dims reversed as for ``mat73``; object references followed.
- ``safetensors``: Python / PyTorch writers; returned as stored (see below), read without
  the ``safetensors`` package.
- ``bson``: BSON.jl (``BSON.@save``, Flux's older way to save a model): BSON decoded by
  pymongo's ``bson`` module, BSON.jl's tags into a plain tree (``porting.io._bson``: structs,
  types, Julia-indexed arrays; functions by name, anonymous ones as code never run;
  docs/flux.md#bson-files).

Decisions, stated once:

- **Nothing is squeezed or padded.** A shape is the one the file records, in Julia order.
  MAT v5 cannot hold a 1-D array (a vector is an ``n x 1`` or ``1 x n`` matrix, a scalar
  ``1 x 1``), so a vector saved to v5 by MATLAB or scipy comes back ``(n, 1)`` or ``(1, n)``;
  a Julia ``Vector`` of length ``n`` from MAT v7.3, JLD2 and ``.npy`` comes back ``(n,)``.
  MAT.jl writes a scalar as a 1-element array, ``(1,)`` in v7.3. Consumers should accept
  ``(n,)`` and ``(n, 1)`` biases alike (docs/files.md#mat-v5, #mat-v73).
- A value the file stores as a scalar (HDF5 scalar dataspace: JLD2 numbers) is a plain Python
  ``int``/``float``/``complex``/``bool``; a string is ``str``.
- MATLAB structs, JLD2 groups, ``Dict``\\ s, ``NamedTuple``\\ s and other Julia structs become
  nested dicts; JLD2 tuples and ``Pair``\\ s become Python tuples; MATLAB cell arrays and JLD2
  arrays of references (``Vector{Any}``, ``Vector{Matrix{Float32}}``) become lists in Julia's
  linear (column-major) order.
- A Julia function stored in a JLD2 struct field (``f=relu``) that h5py *can* read comes back as
  its name (``"NNlib.relu"``); one h5py cannot read raises `PortingError` with export advice.
- **safetensors** files are written from Python (row-major, PyTorch layout). They are returned
  exactly as stored; no axis is reversed, because the file does not say who wrote it. If you
  wrote one from Julia by reversing dims yourself, reverse them back with ``a.T``.
- A plain HDF5 file with neither a MAT 7.3 nor a JLD2 header is refused unless ``format=`` says
  how to read it: nothing in it tells whether its dims are Julia's (reversed) or C order.

Every problem with the file (missing, a directory, a FIFO or device, truncated, corrupt, unknown
format, strings or objects where numbers were expected) raises `PortingError` naming the path
and what was expected. h5py and scipy are imported only inside the functions that need them.

Untrusted files (docs/files.md#untrusted-files):

- **Size budget.** Every array's size is known from its header (an ``.npy``/``.npz`` member's
  shape, an HDF5 dataset's ``size * itemsize``, a safetensors entry, a MAT v5 element inflated
  in a stream) and charged before it is read; past the limit, `PortingError` names the member,
  its claimed size and the limit. Default 1 GiB per `load`; ``max_bytes=`` or the environment
  variable ``PORTING_MAX_LOAD_BYTES`` (``512M``, ``16GiB``) changes it.
- **Object budget.** At most 1,000,000 objects (HDF5 groups/datasets, zip members, MAT
  elements) per `load`; ``max_objects=`` or ``PORTING_MAX_LOAD_OBJECTS``. An HDF5 object reached
  by several paths (hard links, object references) is read once and shared.
- **Links.** HDF5 external links, external storage and virtual datasets are refused (never
  followed into another file); soft links are resolved inside the file only.
- **Byte order.** A big-endian array is converted to native order (same values).
- **safetensors** ``BF16`` tensors come back as float32 with the same values.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from porting import files
from porting._checks import short_repr
from porting.errors import PortingError
from porting.io._core import EXPECTED, FORMATS, Budget, flatten
from porting.io._npy import save_npz

__all__ = ["FORMATS", "load", "detect_format", "save_npz", "flatten"]

_ALIASES = {"mat": "mat", "matlab": "mat", "mat7.3": "mat73", "v7.3": "mat73", "hdf5": "hdf5"}
_EXTENSIONS = {
    ".npy": "npy",
    ".npz": "npz",
    ".mat": "mat",
    ".jld2": "jld2",
    ".safetensors": "safetensors",
    ".bson": "bson",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
# format -> (module, reader); imported on first use so `import porting.io` stays light
_READERS = {
    "npy": ("porting.io._npy", "load_npy"),
    "npz": ("porting.io._npy", "load_npz"),
    "mat5": ("porting.io._mat5", "load_mat5"),
    "mat73": ("porting.io._mat73", "load_mat73"),
    "jld2": ("porting.io._jld2", "load_jld2"),
    "safetensors": ("porting.io._safetensors", "load_safetensors"),
    "bson": ("porting.io._bson", "load_bson"),
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Public API


def load(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    max_bytes: int | str | None = None,
    max_objects: int | None = None,
    partial: bool = False,
) -> dict[str, Any]:
    """Read a weight file into ``{name: Julia-indexed array | nested dict | number | ...}``.

    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npy")
    >>> np.save(p, np.asfortranarray(np.zeros((3, 3, 1, 8), np.float32)))  # as NPZ.jl writes
    >>> load(p)["w"].shape
    (3, 3, 1, 8)

    `format` is one of ``"npy", "npz", "mat5", "mat73", "mat"`` (v5 or v7.3 by header),
    ``"jld2"``, ``"safetensors"``, ``"bson"``; by default the file's magic bytes decide, then its extension.
    A JLD2 or MAT v7.3 array ``w`` of Julia size ``(3, 3, 1, 8)`` comes back with
    ``w.shape == (3, 3, 1, 8)``, Fortran-ordered, and ``w[i-1, j-1, c-1, n-1]`` equal to Julia's
    ``w[i, j, c, n]``. See the module docstring for vectors, scalars and safetensors.

    `max_bytes` (default 1 GiB, or ``PORTING_MAX_LOAD_BYTES``) bounds the bytes of arrays read,
    `max_objects` (default 1,000,000, or ``PORTING_MAX_LOAD_OBJECTS``) the objects visited;
    both are checked from the file's headers before anything is read.

    `partial=True` (JLD2 only) reads each top-level entry on its own: an entry that cannot be
    read becomes the `PortingError` that says why, instead of failing the whole file (so a
    model saved next to a data loader stays reachable).

    Raises `PortingError` naming `path` when the file is missing, not a regular file, truncated
    or corrupt, of an unknown format, over a budget, or holds non-numeric arrays.
    """
    if not isinstance(partial, (bool, np.bool_)):
        raise PortingError(f"partial={short_repr(partial)}: expected True or False")
    p = files.input_file(path, EXPECTED)
    budget = Budget(p, max_bytes, max_objects)
    fmt = detect_format(p, format=format)
    if partial:
        if fmt != "jld2":
            raise PortingError(f"partial=True reads JLD2 files only; {p} is {fmt}")
        from porting.io._jld2 import load_jld2_entries

        return load_jld2_entries(p, budget)
    module, reader = _READERS[fmt]
    return getattr(importlib.import_module(module), reader)(p, budget)


def detect_format(path: str | os.PathLike, *, format: str | None = None) -> str:
    """Which reader `load` uses for `path`: one of `FORMATS`.

    The file's first bytes win over its extension: an NPZ.jl file named ``w.dat`` is still
    read as ``npz``. A ``format=`` given by the caller wins over both (``"mat"`` still picks
    v5 or v7.3 from the header).
    """
    p = files.input_file(path, EXPECTED)
    head = _read_head(p)
    if not head:
        raise PortingError(f"{p} is empty (0 bytes); expected {EXPECTED}")
    if format is not None:
        if not isinstance(format, str):
            raise PortingError(
                f"format={short_repr(format)}: expected one of {', '.join(map(repr, FORMATS))} or None"
            )
        name = format.lower().lstrip(".")
        name = _ALIASES.get(name, name)
        if name == "mat":
            return "mat73" if _is_mat73(head) or _has_hdf5_magic(head) else "mat5"
        if name == "hdf5":
            raise PortingError(
                f"format={format!r} for {p}: a plain HDF5 file does not say whether its dims "
                "are Julia's (reversed) or C order; pass format='jld2' or 'mat73' if Julia "
                "wrote it (HDF5.jl, JLD2, MAT.jl)"
            )
        if name not in FORMATS:
            raise PortingError(
                f"format={format!r}: expected one of {', '.join(map(repr, FORMATS))}, 'mat' or None"
            )
        return name

    sniffed = _sniff(head)
    by_ext = _EXTENSIONS.get(p.suffix.lower())
    if sniffed == "hdf5":
        if by_ext in ("jld2", "mat"):
            return "jld2" if by_ext == "jld2" else "mat73"
        raise PortingError(
            f"{p}: an HDF5 file without a MAT 7.3 or JLD2 header; its dims may be Julia's "
            "(reversed) or C order and nothing in the file says which. If Julia wrote it "
            "(HDF5.jl, MAT.jl, JLD2), pass format='jld2' or format='mat73'"
        )
    if sniffed is not None:
        return sniffed
    if by_ext == "mat":
        return "mat5"  # scipy also reads v4 files, which have no magic text
    if by_ext is not None and by_ext != "hdf5":
        return by_ext  # its reader reports the corruption in the format's own terms
    shown = head[:16]
    raise PortingError(
        f"{p}: unknown format (extension {p.suffix or 'none'!r}, first bytes {shown!r}); "
        f"expected {EXPECTED}, or pass format= one of {', '.join(FORMATS)}"
    )


# --------------------------------------------------------------------------------------------
# Magic bytes


def _read_head(p: Path, n: int = 1100) -> bytes:
    try:
        with files.open_input(p) as fh:
            return fh.read(n)
    except OSError as e:
        raise PortingError(f"{p}: cannot open ({e.strerror or e}); expected {EXPECTED}") from None


def _has_hdf5_magic(head: bytes) -> bool:
    # HDF5 looks for its signature at 0, 512, 1024, ... (after a user block).
    return any(head[o : o + 8] == _HDF5_MAGIC for o in (0, 512, 1024))


def _is_mat73(head: bytes) -> bool:
    return head.startswith(b"MATLAB 7.3 MAT-file")


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if _is_mat73(head):
        return "mat73"
    if head.startswith(b"HDF5-based Julia Data Format") or head.startswith(
        b"Julia data file (HDF5)"
    ):
        return "jld2"
    if head.startswith(b"MATLAB 5.0 MAT-file") or (
        len(head) >= 128
        and head[126:128] in (b"IM", b"MI")
        and head[124:126] in (b"\x00\x01", b"\x01\x00")
    ):
        return "mat5"
    if _has_hdf5_magic(head):
        return "hdf5"
    if len(head) >= 10 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 2 <= n < 100_000_000:
            return "safetensors"
    return None
