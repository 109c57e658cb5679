"""One layer of a Knet file: the recognition table `RULES` (which Knet struct, by its fields,
builds which porting.model layer) and the builders it names. `porting.knetfile.recognise`
walks a chain and calls `build_layer` for each item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.knetfile import arrays, functions, seqnorm
from porting.knetfile.report import (
    ASSUMED,
    DEFAULT,
    FILE,
    FLAG,
    KNET_CONV_DEFAULTS,
    KNET_POOL_DEFAULTS,
    Geometry,
    LayerReport,
    Setting,
)
from porting.knetfile.tree import Unreadable, describe_value

__all__ = ["RULES", "Rule", "build_layer", "join", "layer_built"]


# --------------------------------------------------------------------------- one layer


def join(path: str, seg: str) -> str:
    return f"{path}/{seg}" if path else seg


def _opt_weight(d: dict, names: tuple[str, ...], path: str) -> tuple[np.ndarray | None, str, str]:
    for n in names:
        if n in d:
            if d[n] is None:
                return None, n, "nothing"
            w = arrays.weight(d[n], join(path, n))
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
                    f"{join(path, n)}: dropout {v!r}; expected a probability 0 <= p < 1"
                )
            return float(v), n
    return 0.0, ""


def layer_built(cls, path: str, *args, **kwargs):
    """`cls(*args, **kwargs)`, its `PortingError` naming `path`."""
    try:
        return cls(*args, **kwargs)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None


def build_layer(item: Any, path: str, geometry: Geometry) -> list[tuple[Any, LayerReport]]:
    """The porting.model layers (with their reports) one item of a chain builds: a function
    name (an activation, `mat`), or a struct recognised by the first row of `RULES` it
    matches."""
    from porting.model import Activation, Mat

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
    for rule in RULES:
        try:
            hit = rule.matches(item)
        except PortingError as e:
            raise PortingError(f"{path}: {e}") from None
        if hit:
            return rule.build(item, path, geometry)
    raise PortingError(
        f"{path}: a struct with fields {', '.join(sorted(map(str, item)))}: not a layer porting "
        "recognises (expected weights `w`, `b` and an activation `f`/`actf`, or a known Knet / "
        "NNHelferlein layer). Describe the model with --structure S.json"
    )


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Rule:
    """One row of the recognition table `RULES`: a Knet struct (a dict of its fields) that
    `matches` is built by `build(d, path, geometry)` into porting.model layers, each with its
    report, or refused with the reason; `kind` names the porting.model kind it builds ("" for a
    refusal). Rows are tried in order and the first that matches decides, so a row for a more
    specific field set comes before a more general one. A reader of another format (Flux)
    keeps a table of the same shape."""

    what: str
    kind: str
    matches: Callable[[dict], bool]
    build: Callable[[dict, str, Geometry], list[tuple[Any, LayerReport]]]


def _refuse_bnmoments(d: dict, path: str, geometry: Geometry) -> list:
    raise PortingError(
        f"{path}: a Knet bnmoments struct (fields {', '.join(sorted(d))}) on its own: "
        "it is not a layer, and the file does not say which bnparams go with it. Describe "
        "the model with --structure S.json (kind batchnorm, params mean, var, bnparams)"
    )


def _bn_with_moments(d: dict, path: str, geometry: Geometry) -> list:
    mname = str(seqnorm.moments_field(d))
    if "w" in d:
        return _weighted_bn(d, path, geometry, mname)
    bn, rep, used = seqnorm.batchnorm(d, path, mname, set(_ACT_FIELDS))
    return [(bn, rep), *_act_after(d, path, used)]


def _refuse_batchnorm(d: dict, path: str, geometry: Geometry) -> list:
    raise PortingError(
        f"{path}: batch normalisation (fields {', '.join(sorted(d))}), recognised but not "
        "convertible by porting.knetfile; describe it with --structure S.json (kind "
        "batchnorm, params mean, var, bnparams)"
    )


def _refuse_w_only(d: dict, path: str, geometry: Geometry) -> list:
    w = arrays.weight(d["w"], join(path, "w"))
    raise PortingError(
        f"{path}: a struct holding only a weight w {w.array.shape}: a Knet embedding (Embed: "
        "w[:, x]) or a linear layer without bias; the file does not say which (porting takes "
        "it as an embedding only as the first layer of a chain followed by a Knet RNN). "
        "Describe it with --structure S.json"
    )


def _dropout(d: dict, path: str, geometry: Geometry) -> list:
    from porting.model import Dropout

    p, _ = _dropout_value(d, path)
    rep = LayerReport("dropout", path, "Dropout (p)", [Setting("p", p, FILE)])
    return [(layer_built(Dropout, path, p), rep)]


def _refuse_optimiser(d: dict, path: str, geometry: Geometry) -> list:
    raise PortingError(
        f"{path}: a Knet {arrays.optimiser_kind(d)} optimiser state where a layer was expected"
    )


RULES: tuple[Rule, ...] = (
    Rule("Knet RNN", "rnn", seqnorm.is_rnn, lambda d, p, g: [seqnorm.rnn(d, p, g)]),
    Rule("Knet bnmoments on its own", "", seqnorm.is_bnmoments, _refuse_bnmoments),
    Rule(
        "a layer holding bnmoments (with w: conv/dense + batchnorm)",
        "batchnorm",
        lambda d: seqnorm.moments_field(d) is not None,
        _bn_with_moments,
    ),
    Rule(
        "Layers21 BatchNorm",
        "batchnorm",
        seqnorm.is_layers21_batchnorm,
        lambda d, p, g: [seqnorm.layers21_batchnorm(d, p)],
    ),
    Rule("other batch normalisation", "", lambda d: _is_batchnorm(d), _refuse_batchnorm),
    Rule("w only (embedding or linear)", "", lambda d: set(d) == {"w"}, _refuse_w_only),
    Rule(
        "Layers21 Conv (wdims, crosscorrelation)",
        "conv",
        lambda d: {"wdims", "crosscorrelation"} <= set(d),
        lambda d, p, g: [_layers21_conv(d, p)],
    ),
    Rule(
        "Layers21 Linear (w, inputsize, outputsize)",
        "linear",
        lambda d: {"w", "inputsize", "outputsize"} <= set(d),
        lambda d, p, g: [_layers21_linear(d, p)],
    ),
    Rule("Dropout (p)", "dropout", lambda d: set(d) == {"p"}, _dropout),
    Rule(
        "NNHelferlein Pool (kwargs)",
        "pool",
        lambda d: set(d) == {"kwargs"},
        lambda d, p, g: [_pool_layer(d, p, g)],
    ),
    Rule(
        "tutorial / NNHelferlein Dense or Conv (w, b, activation)",
        "dense",
        lambda d: "w" in d,
        lambda d, p, g: [_weighted(d, p, g)],
    ),
    Rule(
        "optimiser state",
        "",
        lambda d: arrays.optimiser_kind(d) is not None,
        _refuse_optimiser,
    ),
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
        out.append((layer_built(Pool, path, name=None, **kw), prep))
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
            act = functions.activation(d[n], join(path, n))
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

    w = arrays.weight(d["w"], join(path, "w"))
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
        layer = layer_built(Dense, path, w.array, b, activation=actv, dropout=p)
        rep = LayerReport("dense", path, what, settings, notes)
        return (layer, rep, None) if split else (layer, rep)
    if w.array.ndim not in (3, 4, 5):
        raise PortingError(
            f"{path}/w: a weight of shape {w.array.shape}; expected 2 dimensions (dense) or 3-5 "
            "(a conv kernel (X1, ..., Cin, Cout))"
        )
    if "kwargs" in d:  # NNHelferlein Conv: actf.(conv4(w, x; kwargs...) .+ b), no pool
        kw, kwsettings, kwnote = _keywords(
            d["kwargs"], join(path, "kwargs"), ("padding", "stride", "dilation", "mode"), geometry
        )
        notes.append(kwnote)
        what = f"conv layer (w, b, {actfield}, kwargs): actf.(conv4(w, x; kwargs...) .+ b)"
        layer = layer_built(
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
    layer = layer_built(
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
        d["kwargs"], join(path, "kwargs"), ("window", "padding", "stride", "mode"), geometry
    )
    layer = layer_built(Pool, path, name=None, **_conv_kw(kw))
    return layer, LayerReport(
        "pool", path, "pool layer (kwargs): pool(x; kwargs...)", settings, [note]
    )


def _layers21_conv(d: dict, path: str):
    from porting.model import Conv

    w = arrays.weight(d["w"], join(path, "w"))
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
    act = functions.activation(d.get("activation"), join(path, "activation"))
    mode = 1 if d.get("crosscorrelation", True) else 0
    settings = [
        Setting("activation", act, FILE, f"activation = {d.get('activation') or 'nothing'}"),
        Setting("padding", _tuple(padding), FILE),
        Setting("stride", _tuple(d.get("stride", 1)), FILE),
        Setting("dilation", _tuple(d.get("dilation", 1)), FILE),
        Setting("mode", mode, FILE, f"crosscorrelation = {d.get('crosscorrelation', True)}"),
        Setting("alpha", d.get("alpha", 1), FILE),
    ]
    layer = layer_built(
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

    w = arrays.weight(d["w"], join(path, "w"))
    if w.array.ndim != 2:
        raise PortingError(
            f"{path}: Knet Layers21 Linear with w {w.array.shape}; porting converts 2-d weights"
        )
    b, _, bstored = _opt_weight(d, ("bias",), path)
    act = functions.activation(d.get("activation"), join(path, "activation"))
    p = d.get("dropout", 0) or 0
    settings = [
        Setting("activation", act, FILE, f"activation = {d.get('activation') or 'nothing'}"),
        Setting("dropout", p, FILE, "identity at inference"),
    ]
    layer = layer_built(Dense, path, w.array, b, activation=act, dropout=float(p))
    notes = [f"w {tuple(w.array.shape)} ({w.stored_as}); bias {bstored or 'nothing'}"]
    return layer, LayerReport("dense", path, "Knet Layers21 Linear", settings, notes)


def _tuple(v):
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else v
