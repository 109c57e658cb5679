"""Recognise a Knet model in a loaded JLD2 tree and build a `porting.model.KnetModel`.

What the file says decides everything it can: the layer kind from the weights' shapes and the
struct's field names, the activation from the stored function's type name. What the file does
not say (a tutorial `Conv` keeps padding, stride and mode in the user's forward code) comes
from `Geometry` (command-line flags), else Knet's defaults, and every value is recorded with
where it came from (`Setting.source`).

Recognised:

- a chain: a struct with a `layers` field (Knet tutorial `Chain`: docs/knet.md#examples;
  NNHelferlein `Classifier` / `Chain`, Knet Layers21 `Block`), nested chains flattened in order;
- tutorial layers: `w`, `b`, an activation `f` / `actf` / `activation`, optional dropout `p` /
  `pdrop`; `w` of 2 dimensions is a dense layer `f.(w * mat(x) .+ b)`, of 3-5 a conv layer
  (docs/knet.md#dense, #examples);
- NNHelferlein: `Conv` (`w`, `b`, `actf`, `kwargs` for conv4), `Pool` (`kwargs` for pool),
  `Flat` (`mat`), `Dense` (`w`, `b`, `actf`);
- Knet Layers21 `Conv` and `Linear` (geometry stored in the struct; docs/knet.md#layers21),
  `Dropout`;
- weights as `Array`, AutoGrad `Param`, Knet `KnetArray` (see `porting.knetfile.arrays`);
- batchnorm (Knet `bnmoments` + `bnparams`, Layers21 `BatchNorm`), Knet `RNN` structs (a dense
  layer after one reads every step: `TimeDense`) and a `w`-only first layer before an RNN (an
  embedding): see `porting.knetfile.seqnorm`.

One layer is recognised by the table `RULES` (porting.knetfile.layers): each row names the field
set of a Knet struct and the builder of its porting.model layers, tried in order; the one-line
summary of a layer comes from `SUMMARIES`, by kind. A new Knet layer is a row there.

Refused, with the reason: a `w`-only struct elsewhere (embedding or bias-free linear: the file
does not say), a batchnorm that never ran or with ambiguous params, an RNN holding a saved
state, GPU arrays saved without data, optimiser states, unknown functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.knetfile import arrays, functions, seqnorm
from porting.knetfile.layers import RULES, Rule, build_layer, join, layer_built
from porting.knetfile.report import (  # re-exported
    ASSUMED,
    DEFAULT,
    FILE,
    FLAG,
    KNET_CONV_DEFAULTS,
    KNET_POOL_DEFAULTS,
    STRUCTURE,
    Geometry,
    LayerReport,
    NotAModel,
    Recognised,
    Setting,
)
from porting.knetfile.tree import Unreadable, describe_value

__all__ = [
    "Geometry",
    "Setting",
    "LayerReport",
    "Recognised",
    "recognise",
    "classify",
    "NotAModel",
    "KNET_CONV_DEFAULTS",
    "KNET_POOL_DEFAULTS",
    "STRUCTURE",
    "ASSUMED",
    "DEFAULT",
    "FILE",
    "FLAG",
    "RULES",
    "Rule",
    "SUMMARIES",
]


# --------------------------------------------------------------------------- classification


def _is_chain(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("layers"), (list, tuple))


def _layer_like(node: Any) -> bool:
    if isinstance(node, dict):
        if bool({"w", "kwargs", "hiddenSize"} & set(node)) or set(node) == {"p"}:
            return True
        if seqnorm.is_layers21_batchnorm(node):
            return True
        return any(seqnorm.is_bnmoments(v) for v in node.values())
    return isinstance(node, str) and functions.is_function_name(node)


def classify(node: Any, path: str = "") -> tuple[str, str]:
    """``(kind, summary)`` of a node without raising: kind is "model", "model-refused",
    "weights", "optimiser", "gpu", "array", "unreadable" or "value"."""
    if isinstance(node, Unreadable):
        return "unreadable", node.reason
    if isinstance(node, np.ndarray):
        return "array", describe_value(node)
    opt = arrays.optimiser_kind(node)
    if opt is not None:
        return "optimiser", f"Knet {opt} optimiser state (not a model)"
    if isinstance(node, dict) and set(node) == {"value", "opt"}:
        try:
            w = arrays.weight(node, "")
            return "array", f"Param{{{describe_value(w.array)}}}"
        except PortingError:
            kind = arrays.gpu_kind(node.get("value"))
            return "gpu", f"Param{{{kind or '?'}}} with no data (saved from the GPU)"
    if arrays.gpu_kind(node) is not None:
        return "gpu", f"{arrays.gpu_kind(node)} with no data (saved from the GPU)"
    if arrays.is_weight(node):
        return "array", "KnetArray (bytes saved by Knet.save)"
    layer_list = (
        isinstance(node, (list, tuple))
        and bool(node)
        and all(_layer_like(v) for v in node)
        and any(isinstance(v, dict) for v in node)
    )
    one = isinstance(node, dict) and (
        "w" in node or seqnorm.is_rnn(node) or seqnorm.moments_count(node) > 0
    )
    if _is_chain(node) or one or layer_list:
        try:
            rec = recognise(node, path, Geometry())
        except NotAModel as e:
            return "value", str(e)
        except PortingError as e:
            return "model-refused", f"Knet model that cannot be converted: {_first_line(e)}"
        return "model", rec.what
    if isinstance(node, (list, tuple)) and node and all(isinstance(v, np.ndarray) for v in node):
        return "weights", (
            f"{len(node)} arrays (the weights of a functional model such as predict(w, x)): "
            "convert with --structure S.json naming which array each layer takes"
        )
    return "value", describe_value(node)


def _first_line(e: BaseException) -> str:
    s = str(e)
    return s if len(s) < 400 else s[:400] + " ..."


# --------------------------------------------------------------------------- recognition


def recognise(node: Any, path: str, geometry: Geometry) -> Recognised:
    """The Knet model at `path` (its node `node`), or `PortingError` saying why not.

    Raises `NotAModel` when the node is plainly not a model (a number, an array, an optimiser
    state), and `PortingError` naming the layer and field when it is a model porting cannot
    convert (GPU weights without data, an unknown function, a layer kind not yet supported).
    """
    where = path or "the file's top level"
    if isinstance(node, Unreadable):
        raise PortingError(f"{where} cannot be read: {node.reason}")
    opt = arrays.optimiser_kind(node)
    if opt is not None:
        raise NotAModel(
            f"{where} is a Knet {opt} optimiser state (fields {', '.join(sorted(node))}), not a "
            "model; select the model instead (porting inspect FILE lists what the file holds)"
        )
    if isinstance(node, (list, tuple)) and node and all(isinstance(v, np.ndarray) for v in node):
        raise NotAModel(
            f"{where} is a list of {len(node)} arrays, the weights of a functional model (code "
            "such as predict(w, x)); the file does not say how they are used. Convert it with "
            "--structure S.json naming which array each layer takes (see porting convert --help)"
        )
    items: list[tuple[Any, str]] = []
    if _is_chain(node):
        what = "a chain of layers (a struct with a `layers` field)"
        _flatten_chain(node, path, items, 0)
        others = sorted(set(node) - {"layers"})
    elif isinstance(node, (list, tuple)) and node and all(_layer_like(v) for v in node):
        what = "a list of layers"
        items = [(v, join(path, str(i))) for i, v in enumerate(node, 1)]
        others = []
    elif _layer_like(node):
        what = "a single layer"
        items = [(node, path)]
        others = []
    else:
        what_is = describe_value(node)
        if arrays.is_weight(node) and not isinstance(node, np.ndarray):
            what_is = "one weight (a Param or a Knet array)"
        raise NotAModel(
            f"{where} is {what_is}, not a Knet model (expected a struct with a `layers` field "
            "or layers with weights `w`)"
        )
    if not items:
        raise PortingError(f"{where}: a chain with no layers; nothing to convert")
    layers: list = []
    reports: list[LayerReport] = []
    for i, (item, ipath) in enumerate(items):
        if i == 0 and seqnorm.is_w_only(item) and len(items) > 1 and seqnorm.is_rnn(items[1][0]):
            built = [seqnorm.embed(item, ipath, items[1][1])]
        else:
            built = build_layer(item, ipath, geometry)
        for layer, report in built:
            layers.append(layer)
            reports.append(report)
    _per_step_dense(layers, reports)
    notes = []
    if others:
        notes.append(
            f"fields of {where} not used by the conversion: {', '.join(others)}"
            + _field_values(node, others)
        )
    kinds = ", ".join(_summary(r, layer) for r, layer in zip(reports, layers, strict=True))
    rec = Recognised(layers, reports, f"{what}: {kinds}", notes)
    first = next((la for la in layers if la.kind not in ("dropout", "activation")), None)
    if first is not None and first.kind == "dense":
        rec.input_size = (int(first.w.shape[1]),)
    return rec


def _per_step_dense(layers: list, reports: list[LayerReport]) -> None:
    """A dense layer reading an RNN's every step is Knet's `w * reshape(y, H, :) .+ b`: the
    same dense layer at each step (`TimeDense`); a tutorial Dense's `mat(y)` would mix steps."""
    from porting.model import TimeDense

    seq = False
    for i, layer in enumerate(layers):
        if layer.kind == "rnn":
            seq = layer.output == "sequence"
        elif layer.kind == "dense" and seq:
            r = reports[i]
            layers[i] = layer_built(
                TimeDense, r.path, layer.w, layer.b, activation=layer.activation
            )
            r.kind = "timedense"
            r.what = f"{r.what}, applied at every step of the RNN's y (w * reshape(y, H, :))"
            if layer.dropout:
                r.notes.append(f"dropout {layer.dropout}: the identity at inference")
        elif layer.kind not in ("dropout", "activation", "timedense"):
            seq = False


def _field_values(node: dict, names: list[str]) -> str:
    shown = [f"{n} = {node[n]}" for n in names if isinstance(node[n], str)]
    return f" ({'; '.join(shown)})" if shown else ""


def _weighted_summary(layer) -> str:
    act = "" if layer.activation == "identity" else f" {layer.activation}"
    return f"{layer.kind} {tuple(layer.w.shape)}{act}"


# How the model's one-line summary names a layer, by porting.model kind (others: the kind).
SUMMARIES: dict[str, Callable[[Any], str]] = {
    "dense": _weighted_summary,
    "conv": _weighted_summary,
    "timedense": _weighted_summary,
    "embed": lambda layer: f"embed {tuple(layer.w.shape)}",
    "rnn": lambda layer: f"rnn {layer.spec} ({layer.output})",
    "batchnorm": lambda layer: (
        f"batchnorm {layer.channels}" + ("" if layer.bnparams is not None else " non-affine")
    ),
}


def _summary(report: LayerReport, layer) -> str:
    describe = SUMMARIES.get(layer.kind)
    return describe(layer) if describe is not None else layer.kind


def _flatten_chain(node: dict, path: str, out: list, depth: int) -> None:
    if depth > 32:
        raise PortingError(f"{path}: chains nested more than 32 deep")
    base = join(path, "layers")
    for i, item in enumerate(node["layers"], 1):
        ipath = join(base, str(i))
        if _is_chain(item):
            _flatten_chain(item, ipath, out, depth + 1)
        else:
            out.append((item, ipath))
