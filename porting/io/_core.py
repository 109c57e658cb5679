"""What every format reader shares: labels, errors, the size and node budgets, numeric checks.

Format modules import this one and `porting.io._hdf5` (the HDF5 formats); they never import
each other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from porting import settings
from porting.errors import PortingError

FORMATS = ("npy", "npz", "mat5", "mat73", "jld2", "safetensors", "bson")
LABELS = {
    "npy": "a .npy file (NPZ.jl / NumPy)",
    "npz": "a .npz file (NPZ.jl / NumPy)",
    "mat5": "a MAT v5 file",
    "mat73": "a MAT v7.3 (HDF5) file",
    "jld2": "a JLD2 file",
    "safetensors": "a safetensors file",
    "bson": "a BSON.jl file",
}
EXPECTED = "a weight file (.npy, .npz, .mat, .jld2, .safetensors or .bson)"
NUMERIC_KINDS = "biufc"
MAX_DEPTH = 64

# Limits (docs/files.md#untrusted-files). One `load` may materialise at most
# MAX_BYTES_DEFAULT bytes of arrays in all, and visit at most MAX_NODES_DEFAULT objects (HDF5
# groups/datasets, zip members, MAT elements). 1 GiB holds the models Knet users port (the real
# files seen are under 100 MB; VGG-16 in float32 is 0.55 GB) and refuses a small file that
# claims gigabytes (a 2 MB file never becomes a 2 GB array); the claim is checked from headers
# before anything is read. 1,000,000 objects is far above a real model file (hundreds to a few
# thousand) and still walks in seconds.
MAX_BYTES_ENV = "PORTING_MAX_LOAD_BYTES"
MAX_BYTES_DEFAULT = 2**30
MAX_NODES_ENV = "PORTING_MAX_LOAD_OBJECTS"
MAX_NODES_DEFAULT = 1_000_000


def human(n: int) -> str:
    """Bytes for people: ``2147483648 -> '2147483648 bytes (2.0 GiB)'``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n} bytes ({n / size:.1f} {unit})"
    return f"{n} bytes"


class Budget:
    """The bytes and objects one `load` may still use; `take`/`visit` refuse past the limit."""

    def __init__(self, path: Path, max_bytes: Any = None, max_objects: Any = None) -> None:
        self.path = path
        self.max_bytes = settings.size_bytes(MAX_BYTES_ENV, MAX_BYTES_DEFAULT, explicit=max_bytes)
        self.max_objects = settings.count(MAX_NODES_ENV, MAX_NODES_DEFAULT, explicit=max_objects)
        self.used = 0
        self.objects = 0

    def take(self, name: str, shape: tuple, itemsize: int, what: str = "") -> None:
        """Account for an array of `shape` x `itemsize` bytes before it is read."""
        n = math.prod(int(s) for s in shape) * int(itemsize)
        if self.used + n > self.max_bytes:
            extra = f" ({what})" if what else ""
            already = f", after {human(self.used)} already read" if self.used else ""
            raise PortingError(
                f"{self.path}: {name!r}{extra} claims shape {tuple(int(s) for s in shape)} = "
                f"{human(n)}{already}; over the size limit of {human(self.max_bytes)}. If the "
                f"file is genuine, raise the limit: load(..., max_bytes=...) or the environment "
                f"variable {MAX_BYTES_ENV} (e.g. 16GiB)"
            )
        self.used += n

    def visit(self, name: str, n: int = 1) -> None:
        """Account for `n` more objects (a group, a dataset, a struct record, a cell...)."""
        self.objects += n
        if self.objects > self.max_objects:
            raise PortingError(
                f"{self.path}: more than {self.max_objects} objects to read (at {name!r}); "
                f"over the object limit. If the file is genuine, raise it: load(..., "
                f"max_objects=...) or the environment variable {MAX_NODES_ENV}"
            )


def short(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ") or type(e).__name__
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


def corrupt(p: Path, fmt: str, e: BaseException | str) -> PortingError:
    why = e if isinstance(e, str) else short(e)
    return PortingError(
        f"{p}: cannot read it as {LABELS[fmt]} ({why}); the file may be truncated or "
        "corrupt, or not of that format"
    )


def missing_dependency(package: str, fmt: str) -> PortingError:
    return PortingError(
        f"reading {LABELS[fmt]} needs the Python package {package!r}; "
        f"install it with `pip install {package}`"
    )


def numeric(a: np.ndarray, p: Path, name: str) -> np.ndarray:
    """`a` if it holds numbers, in native byte order (a big-endian array is converted, values
    unchanged); a `PortingError` naming `name` otherwise."""
    if a.dtype.kind not in NUMERIC_KINDS or a.dtype.names:
        raise PortingError(
            f"{p}: {name!r} holds {a.dtype} data (shape {a.shape}); expected numbers "
            "(bool, int, float or complex)"
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="), order="K")
    return a


def python_scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def julia_view(a: np.ndarray) -> Any:
    """h5py's C-order array of reversed dims -> Julia-indexed (Fortran-ordered) view."""
    if a.ndim == 0:
        return python_scalar(a[()])
    return a.T


def complex_from_record(a: np.ndarray, re: str, im: str) -> np.ndarray:
    return a[re] + 1j * a[im]


def file_size(p: Path) -> int:
    return os.stat(p).st_size


def flatten(
    tree: Mapping[str, Any], *, sep: str = ".", max_objects: int | None = None
) -> dict[str, np.ndarray]:
    """Nested dicts (and tuples/lists) of arrays to one flat dict ``{"a.b.c": array}``.

    Tuple and list items are numbered from 1, as Julia numbers them (``"layers.1.w"`` is
    Julia's ``layers[1].w``). Numbers become 0-d arrays; strings and ``None`` (a stored
    activation name, an empty field) are left out, since they are not weights. A value shared
    by many paths (a file's DAG of references) counts once per path against `max_objects`.

    >>> sorted(flatten({"conv": {"w": np.ones((3, 3)), "f": "NNlib.relu"}, "t": (1.0, 2.0)}))
    ['conv.w', 't.1', 't.2']
    """
    from porting import settings

    if not isinstance(tree, Mapping):
        raise PortingError(f"flatten expects a dict of names to arrays, got {type(tree).__name__}")
    limit = settings.count(MAX_NODES_ENV, MAX_NODES_DEFAULT, explicit=max_objects)
    out: dict[str, np.ndarray] = {}
    seen = [0]
    stack: list[tuple[str, Any, int]] = [("", tree, 0)]
    while stack:
        prefix, node, depth = stack.pop()
        seen[0] += 1
        if seen[0] > limit or depth > 256:
            raise PortingError(
                f"flatten: more than {limit} paths (or nesting deeper than 256) at {prefix!r}; "
                f"a shared structure expands too far (raise {MAX_NODES_ENV} if it is genuine)"
            )
        if isinstance(node, Mapping):
            items = [(f"{prefix}{sep}{k}" if prefix else str(k), v) for k, v in node.items()]
        elif isinstance(node, (tuple, list)):
            items = [(f"{prefix}{sep}{i}" if prefix else str(i), v) for i, v in enumerate(node, 1)]
        elif node is None or isinstance(node, (str, bytes)):
            continue
        else:
            if prefix in out:
                raise PortingError(f"name {prefix!r} occurs twice after flattening with {sep!r}")
            out[prefix] = np.asarray(node)
            continue
        stack.extend((k, v, depth + 1) for k, v in reversed(items))
    return out
