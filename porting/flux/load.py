"""A Flux model saved with BSON.jl -> `porting.model.KnetModel` and a recognition report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from porting.errors import PortingError
from porting.flux.recognise import (
    GPU_HINT,
    Found,
    find_gpu,
    is_flux_model,
    is_optimiser,
    layers_of,
)
from porting.io._bson import Anonymous, JuliaStruct

__all__ = ["FluxModel", "entries", "load_model", "read"]

SOURCE = "Flux.jl (BSON.jl file)"
_FLAT_AFTER = {"mat", "dense"}
_SPATIAL = {"conv", "pool", "deconv", "zeropad", "reshape"}


@dataclass
class FluxModel:
    """A Flux model recognised in a file: the `KnetModel` and how each layer was read."""

    model: Any  # porting.model.KnetModel
    path: str
    key: str
    layers: list[Found]
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{self.path} --key {self.key}"

    def report(self) -> str:
        lines = [f"Recognised in {self.source}: a Flux model ({SOURCE}), {len(self.layers)} layers"]
        for f in self.layers:
            lines.append(f"  {f.layer.name} <- {f.path}: {f.what}")
            lines.extend(f"      {n}" for n in f.notes)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "key": self.key,
            "source": SOURCE,
            "layers": [{"name": f.layer.name, "path": f.path, "what": f.what} for f in self.layers],
            "notes": list(self.notes),
        }


def read(path: str | os.PathLike, **limits) -> dict[str, Any]:
    """The decoded top-level entries of a BSON.jl file (`porting.io.load`, format bson)."""
    from porting import io

    return io.load(path, format="bson", **limits)


def _pick_key(tree: dict, p: str) -> str:
    models = [k for k, v in tree.items() if _is_struct(v) and not is_optimiser(v)]
    flux = [k for k in models if is_flux_model(tree[k])]
    if len(flux) == 1:
        return flux[0]
    if "model" in tree:
        return "model"
    if len(models) == 1:
        return models[0]
    raise PortingError(
        f"{p}: which entry is the model? The file holds {', '.join(map(repr, tree)) or 'nothing'}; "
        "give --key NAME"
    )


def _is_struct(v: Any) -> bool:
    return isinstance(v, JuliaStruct) and not isinstance(v.type, Anonymous)


def select(tree: dict, key: str, p: str) -> Any:
    """The value at `key` (``model`` or ``model/2``: items numbered from 1, as in Julia)."""
    parts = [s for s in key.replace(".", "/").split("/") if s]
    if not parts or parts[0] not in tree:
        raise PortingError(f"{p}: no entry {key!r}; the file holds {', '.join(map(repr, tree))}")
    node = tree[parts[0]]
    for i, part in enumerate(parts[1:], 1):
        items = node.data if isinstance(node, JuliaStruct) else node
        if isinstance(node, JuliaStruct) and len(items) == 1 and isinstance(items[0], tuple):
            items = items[0]  # a Chain's layers
        if isinstance(items, JuliaStruct):
            items = items.data
        if (
            not part.isdigit()
            or not isinstance(items, (tuple, list))
            or not (1 <= int(part) <= len(items))
        ):
            raise PortingError(
                f"{p}: --key {key}: no item {part!r} at {'/'.join(parts[:i])} "
                f"(it holds {len(items) if isinstance(items, (tuple, list)) else 0} numbered items)"
            )
        node = items[int(part) - 1]
    return node


def load_model(path: str | os.PathLike, key: str | None = None, **limits) -> FluxModel:
    """Recognise the Flux model at `key` (default: the file's only Flux model, else
    ``model``) and build the `KnetModel`. `PortingError` names what cannot be converted."""
    from porting.model import KnetModel

    p = str(os.fspath(path))
    tree = read(p, **limits)
    key = key or _pick_key(tree, p)
    node = select(tree, key, p)
    gpu = find_gpu(node, key.replace("/", "."))
    if gpu is not None:
        raise PortingError(f"{p}: {gpu} is a CuArray: {GPU_HINT}")
    found: list[Found] = []
    layers_of(node, key.replace("/", "."), found)
    if not found:
        raise PortingError(f"{p} --key {key}: no layers found")
    _check_dense_inputs(found, p)
    input_size = None
    first = found[0].layer
    if first.kind == "dense":
        input_size = (int(first.w.shape[1]),)
    model = KnetModel([f.layer for f in found], input_size=input_size, name="flux_model")
    model.source = f"{p} --key {key}"
    notes = (
        ["Flux stores no input size: a conv model needs --input-size (one sample's Julia size)"]
        if input_size is None
        else []
    )
    return FluxModel(model, p, key, found, notes)


def _check_dense_inputs(found: list[Found], p: str) -> None:
    """Flux's Dense on an array of more than two dimensions multiplies the first one only
    (Knet's flattens everything): refuse a Dense that would meet a spatial input."""
    spatial = False
    for f in found:
        k = f.layer.kind
        if k == "dense" and spatial:
            raise PortingError(
                f"{p}: {f.path}: a Flux.Dense after a spatial layer with no Flux.flatten in "
                "between: Flux applies it to the first dimension only, which this converter "
                "does not model; add Flux.flatten before it"
            )
        if k in _SPATIAL:
            spatial = True
        elif k in _FLAT_AFTER:
            spatial = False


@dataclass
class Entry:
    path: str
    kind: str
    summary: str


def entries(path: str | os.PathLike) -> list[Entry]:
    """One line per top-level entry: a Flux model (or why it cannot be converted), or what
    else it is."""
    p = str(os.fspath(path))
    tree = read(p)
    out = []
    for k, v in tree.items():
        if isinstance(v, JuliaStruct):
            if is_optimiser(v):
                out.append(Entry(k, "optimiser", v.name))
            elif _is_struct(v):
                try:
                    fm = load_model(p, k)
                    out.append(Entry(k, "model", f"{v.name}: {len(fm.layers)} layers"))
                except PortingError as e:
                    out.append(Entry(k, "model-refused", f"{v.name}: {e}"))
            else:
                out.append(Entry(k, "value", v.name))
        else:
            out.append(Entry(k, "value", type(v).__name__ + ": " + repr(v)[:60]))
    return out


def inspect_text(path: str | os.PathLike, key: str | None = None) -> str:
    """`porting inspect FILE.bson`: the entries, or with `key` the model's report."""
    if key:
        return load_model(path, key).report()
    lines = [f"{os.fspath(path)}: a BSON.jl file (Flux); entries usable as --key:"]
    for e in entries(path):
        label = {
            "model": "Flux model",
            "model-refused": "cannot convert",
            "optimiser": "optimiser",
        }.get(e.kind, "")
        lines.append(f"  {e.path}  {label + ': ' if label else ''}{e.summary}")
    return "\n".join(lines)
