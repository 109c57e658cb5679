"""`load_model(path, key=...)`: a Knet model saved in a JLD2 file, as a `porting.model.KnetModel`
with a report of where every layer, weight and geometry value came from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from porting.errors import PortingError
from porting.knetfile.recognise import (
    ASSUMED,
    DEFAULT,
    FLAG,
    Geometry,
    LayerReport,
    NotAModel,
    classify,
    recognise,
)
from porting.knetfile.tree import Unreadable, children, normal_key, read, select

__all__ = ["FileModel", "load_model", "Entry", "entries", "CAVEAT"]

CAVEAT = (
    "--verify proves that the Keras model computes what the Knet model above computes (these "
    "layers, weights, activations and geometry). It cannot prove that they are what your own "
    "Julia forward code computes: a struct stores weights and functions, not how your code "
    "calls them (conv/pool keywords, whether `f` is applied). Without Julia and your model's "
    "code porting cannot run the saved object itself; check the values marked 'Knet default', "
    "'flag' or 'Knet tutorial layer' against your code."
)


@dataclass
class FileModel:
    """A model recognised in a file: the `KnetModel` and how each layer was found."""

    model: Any  # porting.model.KnetModel
    path: str
    key: str | None
    what: str
    reports: list[LayerReport]
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{self.path} --key {self.key}" if self.key else self.path

    def report(self) -> str:
        lines = [f"Recognised in {self.source}: {self.what}"]
        for r in self.reports:
            lines.append(f"  {r.name} <- {r.path}: {r.what}")
            for n in r.notes:
                lines.append(f"      {n}")
            for s in r.settings:
                lines.append(f"      {s}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        unstored = [
            f"{r.name}.{s.name}"
            for r in self.reports
            for s in r.settings
            if s.source in (DEFAULT, FLAG, ASSUMED)
        ]
        if unstored:
            lines.append(
                "  not stored in the file (flag, Knet default or Knet tutorial layer): "
                + ", ".join(unstored)
            )
        lines.append(f"  {CAVEAT}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "key": self.key,
            "what": self.what,
            "layers": [r.to_dict() for r in self.reports],
            "notes": list(self.notes),
            "caveat": CAVEAT,
        }


def _candidates(tree: Any) -> list[str]:
    return [e.path for e in entries(tree) if e.kind == "model"]


def load_model(
    path: str | os.PathLike,
    key: str | None = None,
    *,
    structure: str | os.PathLike | None = None,
    geometry: Geometry | None = None,
    input_size=None,
) -> FileModel:
    """The Knet model at `key` in the JLD2 file `path` (key None: the file's only model).

    `structure` (a JSON structure file, see `porting.knetfile.structure`) describes a model the
    file holds only the arrays of; `geometry` gives what the file does not store (flags);
    `input_size` one sample's Julia size when the model does not fix it.
    Raises `PortingError` saying why the file or the key cannot be converted.
    """
    from porting.model import KnetModel

    p = str(os.fspath(path))
    key = normal_key(key)
    tree = read(p)
    geometry = geometry or Geometry()
    if structure is not None:
        if geometry.given():
            raise PortingError(
                "geometry flags (--conv-*, --pool-*, --rnn-output) describe layers recognised in "
                "the file; with --structure, give each layer's geometry in the structure file "
                'instead (an rnn layer\'s "output": "sequence" or "last")'
            )
        from porting.knetfile.structure import from_structure

        rec = from_structure(tree, key, structure, p)
        what = rec.what
    else:
        if key is None:
            found = _candidates(tree)
            top = [k for k, v in tree.items() if not isinstance(v, Unreadable)]
            if len(found) == 1:
                key = found[0]
            elif len(found) > 1:
                raise PortingError(
                    f"{p} holds {len(found)} models ({', '.join(found[:10])}"
                    f"{' ...' if len(found) > 10 else ''}); choose one with --key PATH "
                    "(list with --list or porting inspect)"
                )
            elif len(top) == 1:
                key = top[0]  # the error from recognise says why it is not convertible
            else:
                reasons = [f"{e.path}: {e.summary}" for e in entries(tree, depth=1)]
                raise PortingError(
                    f"{p}: no Knet model recognised; it holds "
                    + "; ".join(reasons[:8])
                    + ". Choose one with --key PATH, or describe the model with --structure"
                )
        node = select(tree, key, p)
        try:
            rec = recognise(node, key or "", geometry)
        except NotAModel as e:
            raise PortingError(f"{p}: {e}") from None
        except PortingError as e:
            raise PortingError(f"{p}: {e}") from None
        geometry.check_all_used(f"{p} --key {key}" if key else p)
        what = rec.what
    name = Path(p).stem + (f"_{key.replace('/', '_')}" if key else "")
    clean = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name).strip("_.-")
    size = input_size if input_size is not None else rec.input_size
    try:
        model = KnetModel(rec.layers, input_size=size, name=clean or "knet_model")
    except PortingError as e:
        raise PortingError(f"{p}{' --key ' + key if key else ''}: {e}") from None
    model.source = p
    for layer, r in zip(model.layers, rec.reports, strict=True):
        r.name = layer.name
    return FileModel(model, p, key, what, rec.reports, rec.notes)


# --------------------------------------------------------------------------- listing


@dataclass
class Entry:
    """One line of `porting inspect`: a path usable as ``--key``, its kind and a summary."""

    path: str
    depth: int
    kind: str  # model, model-refused, weights, optimiser, gpu, array, unreadable, value, container
    summary: str


def entries(
    tree: Any, *, depth: int = 8, items: int = 20, max_entries: int = 100_000
) -> list[Entry]:
    """What `tree` holds, top-down. Models, arrays and refused models are leaves (their inner
    structure is the model's business); containers are opened up to `depth` levels and `items`
    children each. A container reached again by another path (HDF5 hard links and object
    references make a DAG: a small file can hold 2**30 paths) is listed once, then named as
    the same object; at most `max_entries` lines in all."""
    out: list[Entry] = []
    seen: dict[int, str] = {}  # id of a container opened -> its first path

    def walk(node: Any, path: str, level: int) -> None:
        if len(out) >= max_entries:
            return
        kind, summary = classify(node, path)
        if kind == "weights" and not any(a.ndim >= 2 for a in node):
            kind, summary = "value", summary
        if kind != "value" or not isinstance(node, (dict, list, tuple)) or not node:
            out.append(Entry(path, level, kind, summary))
            return
        if id(node) in seen:
            first = seen[id(node)] or "the top level"
            out.append(Entry(path, level, "container", f"the same object as {first} (shared)"))
            return
        seen[id(node)] = path
        kids = children(node)
        label = (
            f"{type(node).__name__} of {len(kids)} (items 1-{len(kids)}, 1-based as in Julia)"
            if isinstance(node, (list, tuple))
            else f"struct/dict with fields {', '.join(k for k, _ in kids[:10])}"
            + (" ..." if len(kids) > 10 else "")
        )
        if path:
            out.append(Entry(path, level, "container", label))
        if path and level >= depth:
            return
        for name, child in kids[:items]:
            walk(child, f"{path}/{name}" if path else name, level + 1 if path else level)
        if len(kids) > items:
            out.append(
                Entry(f"{path}/...", level + 1, "more", f"{len(kids) - items} more not shown")
            )

    walk(tree, "", 0)
    if len(out) >= max_entries:
        out.append(Entry("...", 0, "more", f"listing stopped at {max_entries} entries"))
    return out
