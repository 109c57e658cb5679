"""HDF5 walking shared by MAT v7.3 and JLD2: links, references, budgets
(docs/files.md#untrusted-files).

- External links are refused (never followed into another file), and so are datasets whose
  data lives in other files (external storage, virtual datasets).
- Soft links are resolved one path component at a time inside this file; one that goes
  through an external link or leads nowhere is refused.
- Every object (group, dataset) is converted once: a second path to it (a hard link, an object
  reference) gets the same Python value back, so a file of a few kB whose references form a
  DAG with 2^30 paths is read in time proportional to its objects. A reference back to an
  object still being converted (a cycle) is refused. Objects count against the node budget.
- A dataset's ``size * itemsize`` is charged to the size budget before it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.io._core import Budget, corrupt, missing_dependency, short

_MAX_SOFT_HOPS = 32


def h5py_module(fmt: str):
    try:
        import h5py
    except ImportError:
        raise missing_dependency("h5py", fmt) from None
    return h5py


def open_h5(p: Path, fmt: str):
    h5py = h5py_module(fmt)
    try:
        return h5py.File(p, "r")
    except Exception as e:  # noqa: BLE001
        raise corrupt(p, fmt, e) from None


def attr_str(obj, key: str) -> str | None:
    try:
        if key not in obj.attrs:
            return None
        v = obj.attrs[key]
    except Exception:  # noqa: BLE001 - unreadable attribute: treat as absent
        return None
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else b""
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", "replace").rstrip("\x00")
    return str(v)


def attr_int(obj, key: str) -> int | None:
    try:
        if key not in obj.attrs:
            return None
        return int(np.asarray(obj.attrs[key]).ravel()[0])
    except Exception:  # noqa: BLE001
        return None


class Walker:
    """One HDF5 file being read: link checks, the object memo and the budgets."""

    def __init__(self, f, p: Path, fmt: str, budget: Budget) -> None:
        self.f, self.p, self.fmt, self.budget = f, p, fmt, budget
        self.h5py = h5py_module(fmt)
        self.memo: dict[int, Any] = {}
        self.active: set[int] = set()

    def address(self, obj) -> int:
        return int(self.h5py.h5o.get_info(obj.id).addr)

    def keys(self, group) -> list[str]:
        try:
            return list(group.keys())
        except Exception as e:  # noqa: BLE001
            raise corrupt(self.p, self.fmt, e) from None

    def child(self, group, key: str, name: str):
        """`group[key]`, never following an external link, soft links resolved in-file."""
        h5py = self.h5py
        try:
            link = group.get(key, getlink=True)
        except Exception as e:  # noqa: BLE001
            raise PortingError(f"{self.p}: {name!r} cannot be read ({short(e)})") from None
        if isinstance(link, h5py.ExternalLink):
            raise PortingError(
                f"{self.p}: {name!r} is an HDF5 external link to {link.path!r} in file "
                f"{link.filename!r}; porting never follows links into other files. Copy the "
                "data into this file to read it"
            )
        if isinstance(link, h5py.SoftLink):
            return self.resolve(link.path, group, name)
        if isinstance(link, h5py.HardLink):
            try:
                return group[key]
            except Exception as e:  # noqa: BLE001
                hint = ""
                if "datatype message" in str(e):
                    hint = (
                        "; its type is encoded in a form the HDF5 library under h5py does not "
                        "read (some JLD2 versions write these for custom Julia types): re-save "
                        "the weights as plain arrays"
                    )
                raise PortingError(
                    f"{self.p}: {name!r} cannot be read ({short(e)}){hint}"
                ) from None
        raise PortingError(
            f"{self.p}: {name!r} is an HDF5 link of an unknown kind ({type(link).__name__}); "
            "expected groups and datasets"
        )

    def resolve(self, path: str, group, name: str, hops: int = 0):
        if hops > _MAX_SOFT_HOPS:
            raise PortingError(
                f"{self.p}: {name!r}: soft links nest more than {_MAX_SOFT_HOPS} deep"
            )
        node = self.f if path.startswith("/") else group
        for part in [s for s in path.split("/") if s and s != "."]:
            if part == ".." or not isinstance(node, self.h5py.Group):
                raise PortingError(
                    f"{self.p}: {name!r} is a soft link to {path!r}, which leaves the file's "
                    "tree; expected a path to an object in this file"
                )
            try:
                link = node.get(part, getlink=True)
            except Exception:  # noqa: BLE001
                link = None
            if link is None:
                raise PortingError(
                    f"{self.p}: {name!r} is a soft link to {path!r}, which does not exist in "
                    "the file"
                )
            if isinstance(link, self.h5py.SoftLink):
                node = self.resolve(link.path, node, name, hops + 1)
            else:
                node = self.child(node, part, name)
        return node

    def deref(self, ref, name: str):
        try:
            return self.f[ref]
        except Exception as e:  # noqa: BLE001
            raise PortingError(
                f"{self.p}: {name!r} holds an object reference that cannot be followed ({short(e)})"
            ) from None

    def once(self, obj, name: str, convert: Callable[[], Any]) -> Any:
        """`convert()` for `obj` the first time it is reached; its value on every later path."""
        key = self.address(obj)
        if key in self.memo:
            return self.memo[key]
        if key in self.active:
            raise PortingError(
                f"{self.p}: {name!r} refers back to an object that contains it (a cycle); "
                "expected a tree or a DAG of objects"
            )
        self.budget.visit(name)
        self.active.add(key)
        try:
            value = convert()
        finally:
            self.active.discard(key)
        self.memo[key] = value
        return value

    def data(self, ds, name: str) -> Any:
        """`ds[()]` after checking where its data lives and charging its size."""
        try:
            if ds.is_virtual:
                raise PortingError(
                    f"{self.p}: {name!r} is an HDF5 virtual dataset (its data lives in other "
                    "files); porting reads only data stored in the file itself"
                )
            if ds.external:
                raise PortingError(
                    f"{self.p}: {name!r} keeps its data in external files "
                    f"({ds.external[0][0]!r}...); porting reads only data stored in the file"
                )
            shape = ds.shape or ()
            itemsize = ds.dtype.itemsize
        except PortingError:
            raise
        except Exception as e:  # noqa: BLE001
            raise PortingError(f"{self.p}: {name!r} cannot be read ({short(e)})") from None
        self.budget.take(name, shape, itemsize)
        return ds[()]
