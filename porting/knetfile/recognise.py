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

Refused, with the reason: a `w`-only struct elsewhere (embedding or bias-free linear: the file
does not say), a batchnorm that never ran or with ambiguous params, an RNN holding a saved
state, GPU arrays saved without data, optimiser states, unknown functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.knetfile import arrays, functions, seqnorm
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
        items = [(v, _join(path, str(i))) for i, v in enumerate(node, 1)]
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
            built = _layer(item, ipath, geometry)
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
            layers[i] = _build(TimeDense, r.path, layer.w, layer.b, activation=layer.activation)
            r.kind = "timedense"
            r.what = f"{r.what}, applied at every step of the RNN's y (w * reshape(y, H, :))"
            if layer.dropout:
                r.notes.append(f"dropout {layer.dropout}: the identity at inference")
        elif layer.kind not in ("dropout", "activation", "timedense"):
            seq = False


def _field_values(node: dict, names: list[str]) -> str:
    shown = [f"{n} = {node[n]}" for n in names if isinstance(node[n], str)]
    return f" ({'; '.join(shown)})" if shown else ""


def _summary(report: LayerReport, layer) -> str:
    if layer.kind in ("dense", "conv", "timedense"):
        act = "" if layer.activation == "identity" else f" {layer.activation}"
        return f"{layer.kind} {tuple(layer.w.shape)}{act}"
    if layer.kind == "embed":
        return f"embed {tuple(layer.w.shape)}"
    if layer.kind == "rnn":
        return f"rnn {layer.spec} ({layer.output})"
    if layer.kind == "batchnorm":
        return f"batchnorm {layer.channels}" + ("" if layer.bnparams is not None else " non-affine")
    return layer.kind


def _join(path: str, seg: str) -> str:
    return f"{path}/{seg}" if path else seg


def _flatten_chain(node: dict, path: str, out: list, depth: int) -> None:
    if depth > 32:
        raise PortingError(f"{path}: chains nested more than 32 deep")
    base = _join(path, "layers")
    for i, item in enumerate(node["layers"], 1):
        ipath = _join(base, str(i))
        if _is_chain(item):
            _flatten_chain(item, ipath, out, depth + 1)
        else:
            out.append((item, ipath))


# --------------------------------------------------------------------------- one layer


def _opt_weight(d: dict, names: tuple[str, ...], path: str) -> tuple[np.ndarray | None, str, str]:
    for n in names:
        if n in d:
            if d[n] is None:
                return None, n, "nothing"
            w = arrays.weight(d[n], _join(path, n))
            return w.array, n, w.stored_as + (f"; {w.note}" if w.note else "")
    return None, "", ""


def _dropout_value(d: dict, path: str) -> tuple[float, str]:
    for n in ("p", "pdrop", "dropout"):
        if n in d:
            v = d[n]
            if v is None:
                return 0.0, n
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise PortingError(
                    f"{_join(path, n)}: dropout {v!r}; expected a probability 0 <= p < 1"
                )
            return float(v), n
    return 0.0, ""


def _build(cls, path: str, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None


def _layer(item: Any, path: str, geometry: Geometry) -> list[tuple[Any, LayerReport]]:
    from porting.model import Activation, Dropout, Mat

    if isinstance(item, Unreadable):
        raise PortingError(f"{path} cannot be read: {item.reason}")
    if isinstance(item, str):
        short = item.rsplit(".", 1)[-1]
        if short in ("Flat", "Mat", "mat", "flatten", "Flatten"):
            return [(Mat(), LayerReport("mat", path, f"{item} (Knet mat: flatten to a matrix)"))]
        try:
            act = functions.activation(item, path)
        except PortingError:
            raise PortingError(
                f"{path}: a layer of type {item} that holds no data; porting does not know what "
                "it computes. Describe the model with --structure S.json"
            ) from None
        rep = LayerReport("activation", path, f"function {item}", [Setting("f", act, FILE, item)])
        return [(Activation(act), rep)]
    if not isinstance(item, dict):
        raise PortingError(
            f"{path}: expected a layer (a struct with weights `w`, or a known layer type), "
            f"found {describe_value(item)}"
        )
    keys = set(item)
    if seqnorm.is_rnn(item):
        return [seqnorm.rnn(item, path, geometry)]
    if seqnorm.is_bnmoments(item):
        raise PortingError(
            f"{path}: a Knet bnmoments struct (fields {', '.join(sorted(keys))}) on its own: "
            "it is not a layer, and the file does not say which bnparams go with it. Describe "
            "the model with --structure S.json (kind batchnorm, params mean, var, bnparams)"
        )
    try:
        mname = seqnorm.moments_field(item)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    if mname is not None and "w" in keys:
        return _weighted_bn(item, path, geometry, mname)
    if mname is not None:
        skip = set(_ACT_FIELDS)
        bn, rep, used = seqnorm.batchnorm(item, path, mname, skip)
        return [(bn, rep), *_act_after(item, path, used)]
    if seqnorm.is_layers21_batchnorm(item):
        return [seqnorm.layers21_batchnorm(item, path)]
    if _is_batchnorm(item):
        raise PortingError(
            f"{path}: batch normalisation (fields {', '.join(sorted(keys))}), recognised but not "
            "convertible by porting.knetfile; describe it with --structure S.json (kind "
            "batchnorm, params mean, var, bnparams)"
        )
    if keys == {"w"}:
        w = arrays.weight(item["w"], _join(path, "w"))
        raise PortingError(
            f"{path}: a struct holding only a weight w {w.array.shape}: a Knet embedding (Embed: "
            "w[:, x]) or a linear layer without bias; the file does not say which (porting takes "
            "it as an embedding only as the first layer of a chain followed by a Knet RNN). "
            "Describe it with --structure S.json"
        )
    if "wdims" in keys and "crosscorrelation" in keys:
        return [_layers21_conv(item, path)]
    if {"w", "inputsize", "outputsize"} <= keys:
        return [_layers21_linear(item, path)]
    if keys == {"p"}:
        p, _ = _dropout_value(item, path)
        rep = LayerReport("dropout", path, "Dropout (p)", [Setting("p", p, FILE)])
        return [(_build(Dropout, path, p), rep)]
    if keys == {"kwargs"}:
        return [_pool_layer(item, path, geometry)]
    if "w" in keys:
        return [_weighted(item, path, geometry)]
    opt = arrays.optimiser_kind(item)
    if opt is not None:
        raise PortingError(f"{path}: a Knet {opt} optimiser state where a layer was expected")
    raise PortingError(
        f"{path}: a struct with fields {', '.join(sorted(map(str, keys)))}: not a layer porting "
        "recognises (expected weights `w`, `b` and an activation `f`/`actf`, or a known Knet / "
        "NNHelferlein layer). Describe the model with --structure S.json"
    )


def _act_after(d: dict, path: str, used: set) -> list:
    """The activation of a batchnorm struct, applied after it (none: nothing)."""
    from porting.model import Activation

    act = _activation(d, path)
    if act.source != FILE or act.value == "identity":
        return []
    what = f"activation after the batchnorm ({act.detail})"
    return [(Activation(act.value), LayerReport("activation", path, what, [act]))]


def _weighted_bn(d: dict, path: str, geometry: Geometry, mname: str) -> list:
    """A conv/dense struct holding a batchnorm: f.(batchnorm(conv4(w, x) .+ b, m, p)), then
    the tutorial Conv's pool (Knet's cifar10 cnn_batchnorm: conv4, batchnorm, relu, pool)."""
    from porting.model import Pool

    skip = {"w", "b", "bias", "kwargs", *_ACT_FIELDS}  # a dropout p is a number, not an array
    bn, bnrep, used = seqnorm.batchnorm(d, path, mname, skip)
    plain = {k: v for k, v in d.items() if k not in used}
    layer, rep, pool = _weighted(plain, path, geometry, split=True)
    op = ("conv4(w, x)" if layer.kind == "conv" else "w * mat(x)") + " .+ b" * (layer.b is not None)
    rep.what = f"{layer.kind} layer with a batchnorm: {op}, then the batchnorm and f"
    order = "batchnorm, f" + (", pool" if pool is not None else "")
    rep.settings.append(
        Setting("order", order, ASSUMED, "Knet's cnn_batchnorm order; the file does not store it")
    )
    out = [(layer, rep), (bn, bnrep), *_act_after(d, path, used)]
    if pool is not None:
        kw = dict(pool)
        prep = LayerReport("pool", path, "the tutorial Conv's pool, after the batchnorm")
        prep.settings = [s for s in rep.settings if s.name.startswith("pool")]
        rep.settings = [s for s in rep.settings if not s.name.startswith("pool")]
        out.append((_build(Pool, path, name=None, **kw), prep))
    return out


def _is_batchnorm(d: dict) -> bool:
    keys = set(d)
    if {"mean", "var", "bias", "scale"} <= keys or {"momentum", "mean", "var"} <= keys:
        return True
    return (
        any(isinstance(v, dict) and {"momentum", "mean", "var"} <= set(v) for v in d.values())
        and not {"w", "b"} <= keys
    )


_ACT_FIELDS = ("f", "actf", "activation")


def _activation(d: dict, path: str) -> Setting:
    for n in _ACT_FIELDS:
        if n in d:
            act = functions.activation(d[n], _join(path, n))
            return Setting(
                "activation", act, FILE, f"{n} = {d[n] if d[n] is not None else 'nothing'}"
            )
    return Setting(
        "activation",
        "identity",
        ASSUMED,
        "the struct has no activation field (a tutorial Linear computes w * x .+ b)",
    )


def _weighted(d: dict, path: str, geometry: Geometry, split: bool = False):
    """A tutorial / NNHelferlein dense or conv layer. `split`: a batchnorm follows, so build
    it without its activation and pool, and return `(layer, report, pool keywords or None)`."""
    from porting.model import Conv, Dense

    w = arrays.weight(d["w"], _join(path, "w"))
    b, bname, bstored = _opt_weight(d, ("b", "bias"), path)
    act = _activation(d, path)
    actv = "identity" if split else act.value  # with a batchnorm: applied after it
    p, pname = _dropout_value(d, path)
    known = {"w", "b", "bias", "kwargs", pname, *_ACT_FIELDS} - {""}
    extra = sorted(set(d) - known)
    settings = [] if split else [act]
    if pname:
        settings.append(Setting("dropout", p, FILE, f"{pname} (identity at inference)"))
    stored = w.stored_as + (f"; {w.note}" if w.note else "")
    notes = [f"w {tuple(w.array.shape)} from {path}/w ({stored})"]
    if bname:
        shape = "nothing" if b is None else str(tuple(b.shape))
        notes.append(f"b {shape} from {path}/{bname} ({bstored or 'nothing'})")
    else:
        notes.append("no bias field")
    if extra:
        notes.append(f"fields not used: {', '.join(extra)}")
    actfield = act.detail.split(" = ")[0] if act.source == FILE else "no f"
    if w.array.ndim == 2:
        if "kwargs" in d:
            raise PortingError(
                f"{path}: a dense weight w {w.array.shape} with conv keywords `kwargs`; expected "
                "a 4-d conv kernel for a layer with keywords"
            )
        what = f"dense layer (w, {bname or 'no b'}, {actfield})"
        layer = _build(Dense, path, w.array, b, activation=actv, dropout=p)
        rep = LayerReport("dense", path, what, settings, notes)
        return (layer, rep, None) if split else (layer, rep)
    if w.array.ndim not in (3, 4, 5):
        raise PortingError(
            f"{path}/w: a weight of shape {w.array.shape}; expected 2 dimensions (dense) or 3-5 "
            "(a conv kernel (X1, ..., Cin, Cout))"
        )
    if "kwargs" in d:  # NNHelferlein Conv: actf.(conv4(w, x; kwargs...) .+ b), no pool
        kw, kwsettings, kwnote = _keywords(
            d["kwargs"], _join(path, "kwargs"), ("padding", "stride", "dilation", "mode"), geometry
        )
        notes.append(kwnote)
        what = f"conv layer (w, b, {actfield}, kwargs): actf.(conv4(w, x; kwargs...) .+ b)"
        layer = _build(
            Conv, path, w.array, b, activation=actv, dropout=p, pool=None, **_conv_kw(kw)
        )
        rep = LayerReport("conv", path, what, settings + kwsettings, notes)
        return (layer, rep, None) if split else (layer, rep)
    # Knet tutorial Conv: f.(pool(conv4(w, dropout(x, p)) .+ b)); geometry in the forward code
    conv = {}
    for name in ("padding", "stride", "dilation", "mode"):
        conv[name] = _unstored(name, geometry.conv(name), KNET_CONV_DEFAULTS[name], "conv")
        settings.append(conv[name])
    pool_settings, pool = _tutorial_pool(geometry)
    settings.extend(pool_settings)
    what = (
        f"conv layer (w, b, {actfield}): Knet tutorial Conv, f.(pool(conv4(w, x) .+ b)); the "
        "file does not store its conv4/pool keywords"
    )
    layer = _build(
        Conv,
        path,
        w.array,
        b,
        activation=actv,
        dropout=p,
        pool=None if split else pool,
        **{k: s.value for k, s in conv.items()},
    )
    rep = LayerReport("conv", path, what, settings, notes)
    return (layer, rep, pool) if split else (layer, rep)


def _conv_kw(settings: dict) -> dict:
    return {k: s.value for k, s in settings.items()}


def _unstored(name: str, flag: Any, default: Any, what: str) -> Setting:
    if flag is not None:
        return Setting(name, flag, FLAG, f"--{what}-{name}")
    return Setting(name, default, DEFAULT, "not stored in the file, no flag given")


def _tutorial_pool(geometry: Geometry) -> tuple[list[Setting], dict | None]:
    window = geometry.pool("window")
    if window is not None and window == 0:
        return [Setting("pool", None, FLAG, "--pool-window 0: no pool in the conv layer")], None
    settings = []
    if window is None:
        settings.append(
            Setting(
                "pool.window",
                2,
                ASSUMED,
                "the Knet tutorial Conv calls pool(...) with Knet's defaults; --pool-window "
                "sets it, 0 for none",
            )
        )
        window = 2
    else:
        settings.append(Setting("pool.window", window, FLAG, "--pool-window"))
    pool: dict[str, Any] = {"window": window}
    for name in ("padding", "stride", "mode"):
        default = window if name == "stride" else KNET_POOL_DEFAULTS[name]
        s = _unstored(name, geometry.pool(name), default, "pool")
        s.name = f"pool.{name}"
        if name == "stride" and s.source == DEFAULT:
            s.detail = "Knet's default stride is the window"
        settings.append(s)
        pool[name] = s.value
    return settings, pool


def _pairs(value: Any, path: str) -> dict | None:
    """Keyword pairs stored in a `Base.Pairs` (kwargs...) as a dict, or None if unreadable."""
    if isinstance(value, str) and value.rsplit(".", 1)[-1] == "Pairs":
        return {}  # a Pairs with no data: the empty keyword list (a singleton JLD2 stores bare)
    if isinstance(value, dict):
        data = value.get("data", value)
        if isinstance(data, dict) and all(isinstance(k, str) for k in data):
            if "itr" in data and "data" not in value:
                return None
            return {k: v for k, v in data.items() if k != "itr"}
    return None


def _keywords(value: Any, path: str, allowed: tuple[str, ...], geometry: Geometry):
    """Keywords of an NNHelferlein layer: from the file when readable, else flags/defaults."""
    pairs = _pairs(value, path)
    what = "conv" if "dilation" in allowed else "pool"
    out: dict[str, Setting] = {}
    if pairs is None:
        note = (
            f"{path}: the keyword arguments could not be read ({describe_value(value)}); "
            "geometry from flags, else Knet's defaults"
        )
        for name in allowed:
            default = (KNET_CONV_DEFAULTS if what == "conv" else KNET_POOL_DEFAULTS)[name]
            getter = geometry.conv if what == "conv" else geometry.pool
            out[name] = _unstored(name, getter(name), default, what)
        return out, list(out.values()), note
    extra = sorted(set(pairs) - set(allowed) - {"alpha"})
    if extra:
        raise PortingError(
            f"{path}: keywords {extra} that porting does not convert; expected some of "
            f"{list(allowed)}"
        )
    note = (
        f"{path}: keywords {pairs} stored in the file"
        if pairs
        else f"{path}: stored as an empty keyword list: {what} called with Knet's defaults"
    )
    for name in allowed:
        getter = geometry.conv if what == "conv" else geometry.pool
        flag = getter(name)
        if name in pairs:
            v = pairs[name]
            v = tuple(v) if isinstance(v, list) else v
            if flag is not None and flag != v:
                raise PortingError(
                    f"{path}: the file stores {name}={v} but --{what}-{name} {flag} was given; "
                    "the file wins: drop the flag"
                )
            out[name] = Setting(name, v, FILE, "stored keyword")
        else:
            default = (KNET_CONV_DEFAULTS if what == "conv" else KNET_POOL_DEFAULTS)[name]
            if what == "pool" and name == "stride":
                default = out["window"].value if "window" in out else 2
            if flag is not None and flag != default:
                raise PortingError(
                    f"{path}: the file stores the keyword list without {name} (Knet's default "
                    f"{name}={default} applies) but --{what}-{name} {flag} was given; drop the flag"
                )
            out[name] = Setting(
                name, default, FILE, "not among the stored keywords: Knet's default"
            )
    if "alpha" in pairs:
        out["alpha"] = Setting("alpha", pairs["alpha"], FILE, "stored keyword")
    return out, list(out.values()), note


def _pool_layer(d: dict, path: str, geometry: Geometry):
    from porting.model import Pool

    kw, settings, note = _keywords(
        d["kwargs"], _join(path, "kwargs"), ("window", "padding", "stride", "mode"), geometry
    )
    layer = _build(Pool, path, name=None, **_conv_kw(kw))
    return layer, LayerReport(
        "pool", path, "pool layer (kwargs): pool(x; kwargs...)", settings, [note]
    )


def _layers21_conv(d: dict, path: str):
    from porting.model import Conv

    w = arrays.weight(d["w"], _join(path, "w"))
    b, _, bstored = _opt_weight(d, ("bias",), path)
    for name, ok in (("groups", 1), ("channelmajor", False), ("normalization", None), ("beta", 0)):
        v = d.get(name, ok)
        if v != ok and not (name == "normalization" and v == "Base.identity"):
            raise PortingError(
                f"{path}: Knet Layers21 Conv with {name}={v!r}; porting converts {name}={ok!r}"
            )
    padding = d.get("padding", 0)
    if isinstance(padding, (tuple, list)) and any(isinstance(x, (tuple, list)) for x in padding):
        raise PortingError(
            f"{path}: asymmetric padding {padding!r}; porting converts symmetric padding"
        )
    act = functions.activation(d.get("activation"), _join(path, "activation"))
    mode = 1 if d.get("crosscorrelation", True) else 0
    settings = [
        Setting("activation", act, FILE, f"activation = {d.get('activation') or 'nothing'}"),
        Setting("padding", _tuple(padding), FILE),
        Setting("stride", _tuple(d.get("stride", 1)), FILE),
        Setting("dilation", _tuple(d.get("dilation", 1)), FILE),
        Setting("mode", mode, FILE, f"crosscorrelation = {d.get('crosscorrelation', True)}"),
        Setting("alpha", d.get("alpha", 1), FILE),
    ]
    layer = _build(
        Conv,
        path,
        w.array,
        b,
        activation=act,
        padding=_tuple(padding),
        stride=_tuple(d.get("stride", 1)),
        dilation=_tuple(d.get("dilation", 1)),
        mode=mode,
        alpha=float(d.get("alpha", 1)),
    )
    notes = [f"w {tuple(w.array.shape)} ({w.stored_as}); bias {bstored or 'nothing'}"]
    return layer, LayerReport("conv", path, "Knet Layers21 Conv", settings, notes)


def _layers21_linear(d: dict, path: str):
    from porting.model import Dense

    w = arrays.weight(d["w"], _join(path, "w"))
    if w.array.ndim != 2:
        raise PortingError(
            f"{path}: Knet Layers21 Linear with w {w.array.shape}; porting converts 2-d weights"
        )
    b, _, bstored = _opt_weight(d, ("bias",), path)
    act = functions.activation(d.get("activation"), _join(path, "activation"))
    p = d.get("dropout", 0) or 0
    settings = [
        Setting("activation", act, FILE, f"activation = {d.get('activation') or 'nothing'}"),
        Setting("dropout", p, FILE, "identity at inference"),
    ]
    layer = _build(Dense, path, w.array, b, activation=act, dropout=float(p))
    notes = [f"w {tuple(w.array.shape)} ({w.stored_as}); bias {bstored or 'nothing'}"]
    return layer, LayerReport("dense", path, "Knet Layers21 Linear", settings, notes)


def _tuple(v):
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else v
