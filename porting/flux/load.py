"""A Flux model saved with BSON.jl -> `porting.model.KnetModel` and a recognition report."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from porting.errors import PortingError
from porting.flux.fields import GPU_HINT, Found, find_gpu, is_flux_model, is_optimiser
from porting.flux.recognise import layers_of, pool_window
from porting.io.bsonjl import Anonymous, JuliaStruct

__all__ = ["FluxModel", "entries", "load_model", "read"]

SOURCE = "Flux.jl (BSON.jl file)"
STATE_SOURCE = "Flux.jl (JLD2 file of Flux.state)"
_FLAT_AFTER = {"mat", "dense"}
_SPATIAL = {"conv", "pool", "deconv", "zeropad", "reshape"}
_SEQUENCE_KINDS = {"embed", "rnn", "dense", "activation", "dropout"}
SEQUENCE_STEPS = 16
"""The number of time steps a recurrent-first model is built for when no input size is given
(Flux files record the features per step, never a sequence length); said in the report."""


@dataclass
class FluxModel:
    """A Flux model recognised in a file: the `KnetModel` and how each layer was read."""

    model: Any  # porting.model.KnetModel
    path: str
    key: str
    layers: list[Found]
    notes: list[str] = field(default_factory=list)
    kind: str = SOURCE

    @property
    def source(self) -> str:
        return f"{self.path} --key {self.key}"

    def report(self) -> str:
        lines = [
            f"Recognised in {self.source}: a Flux model ({self.kind}), {len(self.layers)} layers"
        ]
        for f in self.layers:
            lines.append(f"  {f.layer.name} <- {f.path}: {f.what}")
            lines.extend(f"      {n}" for n in f.notes)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "key": self.key,
            "source": self.kind,
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


def load_model(
    path: str | os.PathLike,
    key: str | None = None,
    input_size=None,
    flux_version: str | None = None,
    **limits,
) -> FluxModel:
    """Recognise the Flux model at `key` (default: the file's only Flux model, else
    ``model``) and build the `KnetModel`. `input_size` (one sample's Julia size) plans it and
    fixes the windows of Global/Adaptive pools, which Flux computes from the input.
    `flux_version` (e.g. ``"0.14.22"``): the Flux that saved it, which a LayerNorm needs
    (porting.flux.norms). `PortingError` names what cannot be converted."""
    from porting.flux.norms import flux_version as version

    p = str(os.fspath(path))
    tree = read(p, **limits)
    key = key or _pick_key(tree, p)
    node = select(tree, key, p)
    gpu = find_gpu(node, key.replace("/", "."))
    if gpu is not None:
        raise PortingError(f"{p}: {gpu} is a CuArray: {GPU_HINT}")
    found: list[Found] = []
    with version(flux_version):
        layers_of(node, key.replace("/", "."), found)
    if not found:
        raise PortingError(f"{p} --key {key}: no layers found")
    notes = []
    first = found[0].layer
    if input_size is None and first.kind == "rnn":
        input_size = (SEQUENCE_STEPS, first.spec.input_size)
        notes.append(
            f"Flux stores no sequence length: built for {SEQUENCE_STEPS} steps of "
            f"{first.spec.input_size} features; give --input-size T,{first.spec.input_size} "
            "for sequences of T steps"
        )
    model = _assemble(found, p, input_size)
    model.source = f"{p} --key {key}"
    if model.input_size is None:
        notes.append(
            "Flux stores no input size: a conv model needs --input-size (one sample's Julia size)"
        )
    return FluxModel(model, p, key, found, notes)


def _assemble(found: list[Found], p: str, input_size=None):
    """The `KnetModel` of the recognised layers (`found` is completed in place)."""
    from porting.model import KnetModel
    from porting.model.planning import as_size

    _sequence_model(found, p)
    size = None if input_size is None else as_size(input_size, "input size")
    first = found[0].layer
    if size is None and first.kind == "dense":
        size = (int(first.w.shape[1]),)
    srcs = _graph(found)
    _check_flat(found, srcs, size, p)
    _resolve_pools(found, srcs, size, p)
    inputs = _wire(found, srcs)
    model = KnetModel(
        [f.layer for f in found], input_size=size, name="flux_model", inputs=inputs or None
    )
    _check_cat_dims(found, model, p)
    return model


def _sequence_model(found: list[Found], p: str) -> None:
    """A model with a recurrent layer maps a sequence to a sequence: Flux 0.11-0.14 apply the
    whole Chain once per step (``[m(x) for x in xs]`` after ``Flux.reset!``), 0.15 on every
    layer to ``(features, steps, batch)`` arrays (Dense on the first dimension): either way a
    Dense is the same dense at every step (`TimeDense`), and `softmax` is over the features
    of each step (folded into the TimeDense before it)."""
    from porting.model import TimeDense

    if not any(f.layer.kind in ("rnn", "embed") for f in found):
        return
    keep: list[Found] = []
    for i, f in enumerate(found):
        layer = f.layer
        k = layer.kind
        if k == "embed" and i:
            raise PortingError(
                f"{p}: {f.path}: a Flux.Embedding that is not the model's first layer: it "
                "reads the model's integer input, so it must come first"
            )
        if f.sources is not None or f.reads is not None or k not in _SEQUENCE_KINDS:
            raise PortingError(
                f"{p}: {f.path}: {f.what} in a sequence model (recurrent layers or an "
                "Embedding): only an Embedding first, Dense, Dropout, elementwise activations "
                "and the recurrent layers themselves are converted there (each applied at "
                "every time step)"
            )
        if k == "dense":
            f.layer = TimeDense(layer.w, layer.b, activation=layer.activation)
            f.what += ", at every time step"
        elif k == "activation" and layer.function in ("softmax", "logsoftmax"):
            prev = keep[-1].layer if keep else None
            if prev is None or prev.kind != "timedense" or prev.activation != "identity":
                raise PortingError(
                    f"{p}: {f.path}: {layer.function} in a recurrent model is converted only "
                    "right after a Dense (over each step's features)"
                )
            keep[-1].layer = dataclasses.replace(prev, activation=layer.function)
            keep[-1].what += f", then {layer.function} over each step's features"
            continue
        keep.append(f)
    found[:] = keep


def _graph(found: list[Found]) -> list[tuple[int, ...]]:
    """Each found layer's sources (indices; -1 the model's input)."""
    out = []
    for i, f in enumerate(found):
        if f.sources is not None:
            out.append(tuple(f.sources))
        elif f.reads is not None:
            out.append((f.reads,))
        else:
            out.append((i - 1,))
    return out


def _check_flat(found: list[Found], srcs, size, p: str) -> None:
    """Flux's Dense on an array of more than two dimensions multiplies the first one only
    (Knet's flattens everything): refuse a Dense that would meet a spatial input. `vcat`
    joins along Flux's first dimension: the features of a (F, N) matrix (Concat), but the
    width of an image (no kind does that): refused there; `cat_channels` (dims=3) of
    features makes a third dimension: refused there."""
    if size is not None:
        state_in: str | None = "flat" if len(size) == 1 else "spatial"
    elif any(f.layer.kind in _SPATIAL for f in found):
        state_in = "spatial"
    else:
        state_in = None
    states: list[str | None] = []
    for i, f in enumerate(found):
        k = f.layer.kind
        before = [state_in if j < 0 else states[j] for j in srcs[i]]
        st = before[0]
        if k == "dense" and st == "spatial":
            raise PortingError(
                f"{p}: {f.path}: a Flux.Dense after a spatial layer with no Flux.flatten in "
                "between: Flux applies it to the first dimension only, which this converter "
                "does not model; add Flux.flatten before it"
            )
        if f.connection == "vcat" and any(b != "flat" for b in before):
            why = (
                "spatial arrays joins them along Flux's first dimension (the width), not the "
                "channels, which no kind does; join channels with Metalhead.cat_channels"
                if "spatial" in before
                else "inputs of unknown layout; give --input-size"
            )
            raise PortingError(f"{p}: {f.path}: vcat of {why}")
        if f.connection == "cat3" and any(b != "spatial" for b in before):
            why = (
                "(features, N) matrices makes a third dimension; join features with vcat"
                if "flat" in before
                else "inputs of unknown layout; give --input-size"
            )
            raise PortingError(f"{p}: {f.path}: cat_channels (cat(xs...; dims=3)) of {why}")
        if k in _SPATIAL:
            st = "spatial"
        elif k in _FLAT_AFTER:
            st = "flat"
        states.append(st)


def _resolve_pools(found: list[Found], srcs, size, p: str) -> None:
    """Give Global/Adaptive pools their windows, from their input sizes (planned here)."""
    from porting.model import Pool

    pending = [f for f in found if f.pending]
    if not pending:
        return
    if size is None:
        f = pending[0]
        kind = (f.pending or {}).get("kind")
        raise PortingError(
            f"{p}: {f.path}: Flux.{kind} takes its window from the input's size, which Flux "
            "files do not record: give --input-size X1,X2,C (one sample's Julia size)"
        )
    sizes: list[tuple[int, ...]] = []
    for i, f in enumerate(found):
        ins = [size if j < 0 else sizes[j] for j in srcs[i]]
        if f.pending:
            window, stride = pool_window(f.pending, ins[0], f.path)
            f.layer = Pool(window, stride=stride, mode=f.pending["mode"])
            f.what += f": window {window}, stride {stride} on {ins[0][:-1]}"
        try:
            out = f.layer.output_size(ins) if f.layer.merges else f.layer.output_size(ins[0])
        except PortingError as e:
            raise PortingError(f"{p}: {f.path}: {e}") from None
        sizes.append(tuple(out))


def _wire(found: list[Found], srcs) -> dict[str, str]:
    """Names every layer and wires merges and branch heads (`KnetModel(inputs=...)`)."""
    if all(f.sources is None and f.reads is None for f in found):
        return {}
    counts: dict[str, int] = {}
    for f in found:
        counts[f.layer.kind] = counts.get(f.layer.kind, 0) + 1
        # a layer is a value once built: the named (and below, wired) one is a new layer
        f.layer = dataclasses.replace(f.layer, name=f"{f.layer.kind}{counts[f.layer.kind]}")

    def name(j: int) -> str:
        return "input" if j < 0 else str(found[j].layer.name)

    inputs: dict[str, str] = {}
    for i, f in enumerate(found):
        if f.sources is not None:
            f.layer = dataclasses.replace(f.layer, inputs=tuple(name(j) for j in srcs[i]))
        elif f.reads is not None:
            inputs[str(f.layer.name)] = name(f.reads)
    return inputs


def _check_cat_dims(found: list[Found], model, p: str) -> None:
    for f in found:
        if f.connection == "cat3" and model.nd not in (None, 2):
            raise PortingError(
                f"{p}: {f.path}: cat_channels joins along dimension 3, which is the channels "
                f"of 2-D images only; this model's inputs have {model.nd} spatial dimensions"
            )


@dataclass
class Entry:
    path: str
    kind: str
    summary: str


def entries(path: str | os.PathLike, flux_version: str | None = None) -> list[Entry]:
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
                    fm = load_model(p, k, flux_version=flux_version)
                    out.append(Entry(k, "model", f"{v.name}: {len(fm.layers)} layers"))
                except PortingError as e:
                    out.append(Entry(k, "model-refused", f"{v.name}: {e}"))
            else:
                out.append(Entry(k, "value", v.name))
        else:
            out.append(Entry(k, "value", type(v).__name__ + ": " + repr(v)[:60]))
    return out


def inspect_text(
    path: str | os.PathLike, key: str | None = None, flux_version: str | None = None
) -> str:
    """`porting inspect FILE.bson`: the entries, or with `key` the model's report
    (`flux_version`: the Flux that saved it, for a LayerNorm)."""
    if key:
        return load_model(path, key, flux_version=flux_version).report()
    lines = [f"{os.fspath(path)}: a BSON.jl file (Flux); entries usable as --key:"]
    for e in entries(path, flux_version):
        label = {
            "model": "Flux model",
            "model-refused": "cannot convert",
            "optimiser": "optimiser",
        }.get(e.kind, "")
        lines.append(f"  {e.path}  {label + ': ' if label else ''}{e.summary}")
    return "\n".join(lines)
