"""`porting.io.load`: a weight file in, Julia-indexed arrays out (the package docstring says
what comes back for each format).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from porting import files
from porting._checks import short_repr
from porting.errors import PortingError
from porting.io._core import EXPECTED, Budget
from porting.io._detect import detect_format

__all__ = ["load"]

# format -> (module, reader); imported on first use so `import porting.io` stays light
_READERS = {
    "npy": ("porting.io._npy", "load_npy"),
    "npz": ("porting.io._npy", "load_npz"),
    "mat5": ("porting.io._mat5", "load_mat5"),
    "mat73": ("porting.io._mat73", "load_mat73"),
    "jld2": ("porting.io._jld2", "load_jld2"),
    "safetensors": ("porting.io._safetensors", "load_safetensors"),
    "bson": ("porting.io.bsonjl", "load_bson"),
}


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
    ``w[i, j, c, n]``. See `porting.io`'s docstring for vectors, scalars and safetensors.

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
