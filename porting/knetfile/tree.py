"""A model file as a tree, paths into it (`q_networks/1/layers/2/w`), and what each node holds.

Paths are the names `porting.io.load` gives, joined by ``/``; items of a Julia `Vector` or
`Tuple` are numbered from 1, as Julia users write them (`q_networks/1` is Julia's
`q_networks[1]`).

>>> select({"q": [{"w": 1}, {"w": 2}]}, "q/2/w", "m.jld2")
2
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = [
    "Unreadable",
    "read",
    "select",
    "split_path",
    "normal_key",
    "children",
    "describe_value",
]


@dataclass
class Unreadable:
    """A top-level entry of the file that could not be read; `reason` says why."""

    reason: str


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The whole file as `porting.io.load` reads it.

    When one top-level entry of a JLD2 file cannot be read (a data loader, a struct h5py cannot
    decode), the other entries are still returned and that one becomes an `Unreadable` holding
    the reason, so a model saved beside it stays reachable.
    """
    from porting import io

    try:
        return io.load(path)
    except PortingError as first:
        if io.detect_format(path) != "jld2":
            raise
        partial = _read_jld2_by_entry(Path(os.fspath(path)))
        if partial is None:
            raise first from None
        return partial


def _read_jld2_by_entry(p: Path) -> dict[str, Any] | None:
    from porting import io

    try:
        entries = io.load(p, partial=True)
    except PortingError:
        return None  # io.load already reported the real problem
    out: dict[str, Any] = {
        k: Unreadable(str(v)) if isinstance(v, PortingError) else v for k, v in entries.items()
    }
    if all(isinstance(v, Unreadable) for v in out.values()):
        return None
    return out


def split_path(key: str) -> list[str]:
    """``"q_networks/1"`` -> ``["q_networks", "1"]`` (leading/trailing ``/`` ignored; Julia's
    indexing ``q_networks[1]`` is accepted for ``q_networks/1``).

    >>> split_path("q_networks[2]/layers/1")
    ['q_networks', '2', 'layers', '1']
    """
    if not isinstance(key, str):
        raise PortingError(f"--key {key!r}: expected a path such as q_networks/1")
    key = re.sub(r"\[(\d+)\]", r"/\1", key.strip())  # Julia's q_networks[1] is q_networks/1
    return [s for s in key.split("/") if s != ""]


def normal_key(key: str | None) -> str | None:
    """`key` written as ``a/1/b`` (None for None or an empty path)."""
    if key is None:
        return None
    return "/".join(split_path(key)) or None


def children(node: Any) -> list[tuple[str, Any]]:
    """The named children of a dict / list / tuple node (1-based names for sequences)."""
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node, start=1)]
    return []


def select(tree: Any, key: str | None, source: str) -> Any:
    """The node at `key` in `tree` (the whole tree for None or ``""``).

    Raises `PortingError` naming the first path segment that does not exist and what exists
    there; sequence items are numbered from 1, as in Julia.
    """
    if key is None:
        return tree
    node = tree
    here: list[str] = []
    for seg in split_path(key):
        where = "/".join(here) or "the file's top level"
        if isinstance(node, Unreadable):
            raise PortingError(f"--key {key}: {'/'.join(here)} cannot be read: {node.reason}")
        if isinstance(node, dict):
            match = [k for k in node if str(k) == seg]
            if not match:
                have = ", ".join(str(k) for k in list(node)[:12]) + (
                    " ..." if len(node) > 12 else ""
                )
                raise PortingError(
                    f"--key {key}: {source} has no {seg!r} in {where}; it has: {have or 'nothing'} "
                    f"(list them with: porting inspect {source})"
                )
            node = node[match[0]]
        elif isinstance(node, (list, tuple)):
            n = len(node)
            try:
                i = int(seg)
            except ValueError:
                raise PortingError(
                    f"--key {key}: {where} is a list of {n} items; expected a number 1-{n} "
                    f"(1-based, as in Julia), got {seg!r}"
                ) from None
            if not 1 <= i <= n:
                extra = " (numbering starts at 1, as in Julia)" if i == 0 else ""
                raise PortingError(
                    f"--key {key}: {where} holds {n} items, numbered 1-{n}; got {i}{extra}"
                )
            node = node[i - 1]
        else:
            raise PortingError(
                f"--key {key}: {where} is {describe_value(node)}, which has no parts; "
                f"expected a path ending at a model (see: porting inspect {source})"
            )
        here.append(seg)
    return node


def describe_value(node: Any) -> str:
    """A short description of a non-container value (an array, a number, a name...)."""
    if isinstance(node, np.ndarray):
        shape = "(" + ", ".join(map(str, node.shape)) + (",)" if node.ndim == 1 else ")")
        return f"{node.dtype} array {shape}"
    if isinstance(node, Unreadable):
        return "unreadable"
    if node is None:
        return "nothing"
    if isinstance(node, bool):
        return f"Bool {node}"
    if isinstance(node, (int, np.integer)):
        return f"Int {node}"
    if isinstance(node, (float, np.floating)):
        return f"Float {node:g}"
    if isinstance(node, str):
        return repr(node)
    if isinstance(node, dict):
        return f"struct/dict of {len(node)} fields"
    if isinstance(node, (list, tuple)):
        return f"{type(node).__name__} of {len(node)}"
    return type(node).__name__
