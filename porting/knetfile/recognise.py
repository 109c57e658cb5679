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
- weights as `Array`, AutoGrad `Param`, Knet `KnetArray` (see `porting.knetfile.arrays`).

Recognised but refused, with the reason: batch normalisation (Knet `bnmoments` /
Layers21 `BatchNorm`), RNNs (Knet `RNN`), a struct holding only `w` (an embedding or a
bias-free linear layer: the file does not say which), GPU arrays saved without data,
optimiser states, unknown functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.knetfile import arrays, functions
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
]

KNET_CONV_DEFAULTS = {"padding": 0, "stride": 1, "dilation": 1, "mode": 0}
KNET_POOL_DEFAULTS = {"window": 2, "padding": 0, "stride": None, "mode": 0}  # stride = window

FILE = "file"
FLAG = "flag"
STRUCTURE = "structure file"
DEFAULT = "Knet default"
ASSUMED = "Knet tutorial layer"


class NotAModel(PortingError):
    """The selected value is not a Knet model (an array, a number, an optimiser state...)."""


@dataclass
class Geometry:
    """Geometry for what the file does not say, from command-line flags (None: not given).

    Conv values apply to every conv layer whose struct does not store them; pool values to
    every pool whose keywords the file does not hold (a tutorial `Conv`'s built-in pool, an
    NNHelferlein `Pool` whose keywords are unreadable). `pool_window=0` says a tutorial `Conv`
    does not pool.
    """

    conv_padding: Any = None
    conv_stride: Any = None
    conv_dilation: Any = None
    conv_mode: Any = None
    pool_window: Any = None
    pool_stride: Any = None
    pool_padding: Any = None
    pool_mode: Any = None

    used: set = field(default_factory=set, repr=False)  # the flags some layer took

    def conv(self, name: str):
        value = getattr(self, f"conv_{name}")
        if value is not None:
            self.used.add(f"conv_{name}")
        return value

    def pool(self, name: str):
        value = getattr(self, f"pool_{name}")
        if value is not None:
            self.used.add(f"pool_{name}")
        return value

    def given(self) -> dict[str, Any]:
        """The flags given (not None), by field name."""
        return {k: v for k, v in vars(self).items() if k != "used" and v is not None}

    def check_all_used(self, where: str) -> None:
        """Refuse a flag no layer took: it would otherwise be silently ignored."""
        unused = sorted(set(self.given()) - self.used)
        if unused:
            flags = ", ".join(f"--{n.replace('_', '-')} {self.given()[n]}" for n in unused)
            raise PortingError(
                f"{flags} given but no layer of {where} takes it: the file stores that value "
                "itself or the model has no such layer (see porting inspect FILE --key ...)"
            )


@dataclass
class Setting:
    """One value of a layer (a geometry keyword, the activation...) and where it came from."""

    name: str
    value: Any
    source: str  # FILE, FLAG, STRUCTURE, DEFAULT or ASSUMED
    detail: str = ""

    def __str__(self) -> str:
        v = "none" if self.value is None else self.value
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.name}={v} ({self.source}{tail})"


@dataclass
class LayerReport:
    """Where one `porting.model` layer came from in the file."""

    kind: str
    path: str
    what: str
    settings: list[Setting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    name: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "what": self.what,
            "settings": [
                {"name": s.name, "value": s.value, "source": s.source, "detail": s.detail}
                for s in self.settings
            ],
            "notes": list(self.notes),
        }


@dataclass
class Recognised:
    """A model found in the file: its `porting.model` layers and their provenance."""

    layers: list  # porting.model layers
    reports: list[LayerReport]
    what: str
    notes: list[str] = field(default_factory=list)
    input_size: tuple[int, ...] | None = None


# --------------------------------------------------------------------------- classification


def _is_chain(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("layers"), (list, tuple))


def _layer_like(node: Any) -> bool:
    if isinstance(node, dict):
        return bool({"w", "kwargs", "hiddenSize"} & set(node)) or set(node) == {"p"}
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
    if _is_chain(node) or (isinstance(node, dict) and "w" in node) or layer_list:
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
    for item, ipath in items:
        for layer, report in _layer(item, ipath, geometry):
            layers.append(layer)
            reports.append(report)
    notes = []
    if others:
        notes.append(
            f"fields of {where} not used by the conversion: {', '.join(others)}"
            + _field_values(node, others)
        )
    kinds = ", ".join(_summary(r, layer) for r, layer in zip(reports, layers, strict=True))
    rec = Recognised(layers, reports, f"{what}: {kinds}", notes)
    first = next((la for la in layers if la.kind in ("conv", "dense", "pool", "mat")), None)
    if first is not None and first.kind == "dense":
        rec.input_size = (int(first.w.shape[1]),)
    return rec


def _field_values(node: dict, names: list[str]) -> str:
    shown = [f"{n} = {node[n]}" for n in names if isinstance(node[n], str)]
    return f" ({'; '.join(shown)})" if shown else ""


def _summary(report: LayerReport, layer) -> str:
    if layer.kind in ("dense", "conv"):
        act = "" if layer.activation == "identity" else f" {layer.activation}"
        return f"{layer.kind} {tuple(layer.w.shape)}{act}"
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
    if {"hiddenSize", "numLayers"} <= keys or {"inputSize", "hiddenSize"} <= keys:
        raise PortingError(
            f"{path}: a Knet RNN (fields {', '.join(sorted(keys)[:8])} ...), recognised but not "
            "convertible by porting.knetfile yet: porting.model has no RNN layer kind"
        )
    if _is_batchnorm(item):
        raise PortingError(
            f"{path}: batch normalisation (fields {', '.join(sorted(keys))}), recognised but not "
            "convertible by porting.knetfile yet: porting.model has no batchnorm layer kind"
        )
    if keys == {"w"}:
        w = arrays.weight(item["w"], _join(path, "w"))
        raise PortingError(
            f"{path}: a struct holding only a weight w {w.array.shape}: a Knet embedding (Embed: "
            "w[:, x]) or a linear layer without bias; the file does not say which. Embeddings "
            "are not convertible yet; for a linear layer describe it with --structure S.json"
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


def _weighted(d: dict, path: str, geometry: Geometry):
    from porting.model import Conv, Dense

    w = arrays.weight(d["w"], _join(path, "w"))
    b, bname, bstored = _opt_weight(d, ("b", "bias"), path)
    act = _activation(d, path)
    p, pname = _dropout_value(d, path)
    known = {"w", "b", "bias", "kwargs", pname, *_ACT_FIELDS} - {""}
    extra = sorted(set(d) - known)
    settings = [act]
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
        layer = _build(Dense, path, w.array, b, activation=act.value, dropout=p)
        return layer, LayerReport("dense", path, what, settings, notes)
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
            Conv, path, w.array, b, activation=act.value, dropout=p, pool=None, **_conv_kw(kw)
        )
        return layer, LayerReport("conv", path, what, settings + kwsettings, notes)
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
        activation=act.value,
        dropout=p,
        pool=pool,
        **{k: s.value for k, s in conv.items()},
    )
    return layer, LayerReport("conv", path, what, settings, notes)


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
