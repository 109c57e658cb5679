"""Flux layer structs (decoded from a BSON.jl file) -> `porting.model` layers.

Fields are read by position, in each layer's declaration order, which depends on the Flux
version (docs/flux.md#layer-fields). A layer whose arithmetic has no exact counterpart among
the kinds is refused with its path and what to do; nothing is approximated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.flux.fields import (
    Found,
    _anonymous_refusal,
    _gpu,
    _ints,
    _padding,
    _short,
    activation,
    array,
    bias,
    is_flux_model,
)
from porting.flux.functions import (
    anonymous_layer,
    function_name,
    is_function,
    read_anonymous,
)
from porting.io.bsonjl import Anonymous, JuliaStruct
from porting.model import (
    Activation,
    Add,
    BatchNorm,
    Concat,
    Conv,
    Deconv,
    Dense,
    Dropout,
    Embed,
    Mat,
    Pool,
    Reshape,
    ZeroPad,
)

__all__ = ["layers_of", "pool_window"]


def layers_of(x: Any, path: str, out: list[Found]) -> None:
    """Append the layers that the Flux value `x` (a Chain, a layer or a function) becomes."""
    if isinstance(x, JuliaStruct) and isinstance(x.type, Anonymous):
        code = read_anonymous(x.type)
        got = anonymous_layer(code)
        if got is None:
            raise _anonymous_refusal(x.type, path)
        kind, kw = got
        what = f"anonymous function {code.name} ({code.text()}, at {code.where})"
        if kind == "flatten":
            out.append(Found(Mat(), path, f"{what}: recognised as Flux.flatten"))
        elif kind == "maxpool":
            w = kw["window"]
            out.append(Found(Pool(w, stride=w, mode=0), path, f"{what}: recognised as MaxPool{w}"))
        else:
            out.append(Found(Reshape(kw["size"]), path, f"{what}: recognised as a reshape"))
        return
    if is_function(x):
        name = function_name(x) or ""
        short = name.rsplit(".", 1)[-1]
        if short == "flatten":
            out.append(Found(Mat(), path, f"{name}"))
            return
        out.append(Found(Activation(activation(x, path)), path, name))
        return
    if not isinstance(x, JuliaStruct):
        raise PortingError(f"{path}: a {type(x).__name__} {x!r:.60}; expected a Flux layer")
    kind = _short(x)
    if not is_flux_model(x):
        if "CuArray" in x.name:
            raise _gpu(x, path)
        raise PortingError(
            f"{path}: a {x.name}, not a Flux layer: a user struct has its own forward, which "
            "the file does not hold (Julia code). Write its forward as a structure file "
            "(--structure FILE.py with porting.flux.structure: docs/flux.md#structure-files), or "
            f"convert its Flux parts one by one with --key (e.g. --key {path.replace('.', '/')}/1)"
        )
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise PortingError(
            f"{path}: Flux.{kind} is not supported yet (supported: "
            f"{', '.join(sorted(_HANDLERS))}, "
            "flatten and named activations)"
        )
    handler(x, path, out)


def _chain(x: JuliaStruct, path: str, out: list[Found]) -> None:
    if len(x.data) != 1:
        raise PortingError(f"{path}: a Chain with {len(x.data)} fields; expected (layers,)")
    items = x.data[0]
    names: list[str] | None = None
    if isinstance(items, JuliaStruct) and _short(items) == "NamedTuple":  # Chain(a = ..., ...)
        t = items.type
        names = [str(n) for n in t.params[0]] if t.params and isinstance(t.params[0], tuple) else []
        items = items.data
    if not isinstance(items, (tuple, list)):
        raise PortingError(f"{path}: a Chain of {type(items).__name__}; expected a tuple")
    for i, item in enumerate(items, 1):
        sub = f"{path}.{names[i - 1]}" if names and i <= len(names) else f"{path}.{i}"
        layers_of(item, sub, out)


def _conv_fields(
    d: Sequence[Any], path: str
) -> tuple[
    str,
    np.ndarray,
    np.ndarray | None,
    tuple[int, ...],
    tuple[tuple[int, ...], tuple | None],
    tuple[int, ...],
    int,
]:
    """The fields Flux's Conv, CrossCor and ConvTranspose share, in their order: (σ, weight,
    bias, stride, (pad, asymmetric pairs or None), dilation, groups (1 when absent))."""
    act = activation(d[0], f"{path}.σ")
    w = array(d[1], path, "weight")
    return (
        act,
        w,
        bias(d[2], path),
        _ints(d[3], path, "stride"),
        _padding(_ints(d[4], path, "pad"), w.ndim - 2, path),
        _ints(d[5], path, "dilation"),
        int(d[6]) if len(d) == 7 else 1,
    )


def _conv(x: JuliaStruct, path: str, out: list[Found]) -> None:
    d = x.data
    kind = _short(x)
    if len(d) not in (6, 7):
        raise PortingError(f"{path}: Flux.{kind} with {len(d)} fields; expected 6 or 7")
    act, w, b, stride, (pad, pairs), dilation, groups = _conv_fields(d, path)
    mode = 1 if kind == "CrossCor" else 0
    what = f"Flux.{kind} {w.shape}" + (" (cross-correlation: mode 1)" if mode else " (flipped)")
    if pairs is not None:
        out.append(Found(ZeroPad(pairs), path, f"Flux.{kind} asymmetric pad {pairs}"))
    out.append(
        Found(
            Conv(
                w,
                b,
                activation=act,
                padding=pad,
                stride=stride,
                dilation=dilation,
                mode=mode,
                groups=groups,
            ),
            path,
            what,
        )
    )


def _conv_transpose(x: JuliaStruct, path: str, out: list[Found]) -> None:
    d = list(x.data)
    if len(d) == 8:  # outpad, from 0.14.17
        outpad = _ints(d.pop(5), path, "outpad")
        if any(outpad):
            raise PortingError(
                f"{path}: ConvTranspose outpad={outpad} is not supported yet (no kind adds "
                "output padding)"
            )
    if len(d) not in (6, 7):
        raise PortingError(f"{path}: ConvTranspose with {len(x.data)} fields; expected 6-8")
    act, w, b, stride, (pad, pairs), dilation, groups = _conv_fields(d, path)
    if pairs is not None:
        raise PortingError(f"{path}: ConvTranspose with asymmetric pad {pairs} is not supported")
    if groups != 1:
        raise PortingError(f"{path}: ConvTranspose groups={groups} is not supported (only 1)")
    out.append(
        Found(
            Deconv(w, b, activation=act, padding=pad, stride=stride, dilation=dilation),
            path,
            f"Flux.ConvTranspose {w.shape}",
        )
    )


def _pool(x: JuliaStruct, path: str, out: list[Found]) -> None:
    kind = _short(x)
    if len(x.data) != 3:
        raise PortingError(
            f"{path}: Flux.{kind} with {len(x.data)} fields; expected (k, pad, stride)"
        )
    k = _ints(x.data[0], path, "k")
    pad, pairs = _padding(_ints(x.data[1], path, "pad"), len(k), path)
    if pairs is not None:
        raise PortingError(
            f"{path}: Flux.{kind} with asymmetric pad {pairs} is not supported (Knet's pool "
            "pads both sides alike)"
        )
    stride = _ints(x.data[2], path, "stride")
    mode = 0 if kind == "MaxPool" else 1  # NNlib meanpool divides by prod(k), padding counted
    out.append(Found(Pool(k, padding=pad, stride=stride, mode=mode), path, f"Flux.{kind}{k}"))


def _dense(x: JuliaStruct, path: str, out: list[Found]) -> None:
    if len(x.data) != 3:
        raise PortingError(f"{path}: Flux.Dense with {len(x.data)} fields; expected 3")
    w = array(x.data[0], path, "weight")
    if w.ndim != 2:
        raise PortingError(f"{path}.weight has shape {w.shape}; expected (out, in)")
    b = bias(x.data[1], path)
    act = activation(x.data[2], f"{path}.σ")
    out.append(Found(Dense(w, b, activation=act), path, f"Flux.Dense {w.shape[1]} => {w.shape[0]}"))


def _batchnorm(x: JuliaStruct, path: str, out: list[Found]) -> None:
    d = x.data
    if len(d) not in (7, 8, 11):
        raise PortingError(f"{path}: Flux.BatchNorm with {len(d)} fields; expected 7, 8 or 11")
    act = activation(d[0], f"{path}.λ")
    affine = bool(d[7]) if len(d) == 11 else True
    track = bool(d[8]) if len(d) == 11 else True
    active = d[9] if len(d) == 11 else d[7] if len(d) == 8 else None
    if not track:
        raise PortingError(
            f"{path}: BatchNorm(track_stats=false) normalises with each batch's own statistics "
            "at inference too; no running mean/variance to convert"
        )
    if active is True:
        raise PortingError(
            f"{path}: BatchNorm saved with active=true (trainmode!: batch statistics always); "
            "call testmode!(model) or Flux.trainmode!(model, :auto) before saving"
        )
    mu = array(d[3], path, "μ")
    var = array(d[4], path, "σ²")
    params = None
    if affine:
        beta, gamma = array(d[1], path, "β"), array(d[2], path, "γ")
        params = np.concatenate([gamma.reshape(-1), beta.reshape(-1)])
    eps, momentum = float(d[5]), float(d[6])
    out.append(
        Found(
            BatchNorm(mu, var, params, eps=eps, momentum=momentum),
            path,
            f"Flux.BatchNorm({mu.size}, ϵ={eps:g}, momentum={momentum:g}"
            + ("" if affine else ", affine=false")
            + ")",
        )
    )
    if act != "identity":
        out.append(Found(Activation(act), path, f"BatchNorm's λ = {act}"))


def _dropout(x: JuliaStruct, path: str, out: list[Found]) -> None:
    p = x.data[0] if x.data else 0.0
    out.append(Found(Dropout(float(p)), path, f"Flux.{_short(x)}({p}): identity at inference"))


def _embedding(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``Embedding(weight)`` (Flux 0.12 on), weight ``(dim, vocab)``: ``weight[:, x]`` with
    Julia's 1-based indices, Knet's `w[:, x]` (the `embed` kind); on a ``(steps, batch)``
    index matrix Flux gives ``(dim, steps, batch)``, a sequence (docs/flux.md#recurrent-flux)."""
    if len(x.data) != 1:
        raise PortingError(f"{path}: Flux.Embedding with {len(x.data)} fields; expected (weight,)")
    w = array(x.data[0], path, "weight")
    if w.ndim != 2:
        raise PortingError(f"{path}.weight has shape {w.shape}; expected (dim, vocab)")
    out.append(
        Found(Embed(w), path, f"Flux.Embedding({w.shape[1]} => {w.shape[0]}): 1-based indices")
    )


def _depthwise(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """Flux 0.11-0.12 ``DepthwiseConv(σ, weight, bias, stride, pad, dilation)``, weight
    ``(k..., multiplier, Cin)``; NNlib's output channel ``(c_in - 1) * multiplier + m`` is a
    grouped conv's (groups = Cin) with the weight reshaped to ``(k..., 1, multiplier * Cin)``
    (column-major). From 0.13 on `DepthwiseConv` builds a `Conv` with `groups`."""
    d = x.data
    if len(d) != 6:
        raise PortingError(f"{path}: Flux.DepthwiseConv with {len(d)} fields; expected 6")
    w = array(d[1], path, "weight")
    if w.ndim < 3:
        raise PortingError(f"{path}.weight has shape {w.shape}; expected (k..., multiplier, Cin)")
    cin = int(w.shape[-1])
    w2 = w.reshape((*w.shape[:-2], 1, w.shape[-2] * cin), order="F")
    conv = JuliaStruct(x.type, (d[0], w2, d[2], d[3], d[4], d[5], cin))
    _conv(conv, path, out)
    out[-1].what = f"Flux.DepthwiseConv {w.shape} (multiplier {w.shape[-2]}): conv groups={cin}"


def _global_pool(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``GlobalMaxPool()``/``GlobalMeanPool()``: NNlib's pool with the whole spatial size as
    window (stride = window, no padding); Flux keeps ``(1, ..., 1, C, N)``."""
    kind = _short(x)
    mode = 0 if kind == "GlobalMaxPool" else 1
    out.append(
        Found(
            Pool(1, stride=1, mode=mode),
            path,
            f"Flux.{kind}()",
            pending={"kind": kind, "mode": mode, "out": None},
        )
    )


def _adaptive_pool(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``AdaptiveMaxPool(out)``/``AdaptiveMeanPool(out)``: Flux computes ``stride = in ÷ out``
    and ``k = in - (out - 1) * stride``, no padding, then an ordinary pool."""
    kind = _short(x)
    if len(x.data) != 1:
        raise PortingError(f"{path}: Flux.{kind} with {len(x.data)} fields; expected (out,)")
    target = _ints(x.data[0], path, "out")
    if any(v < 1 for v in target):
        raise PortingError(f"{path}.out = {target}; expected positive sizes")
    mode = 0 if kind == "AdaptiveMaxPool" else 1
    out.append(
        Found(
            Pool(1, stride=1, mode=mode),
            path,
            f"Flux.{kind}({target})",
            pending={"kind": kind, "mode": mode, "out": target},
        )
    )


def pool_window(pending: dict, in_size: tuple[int, ...], path: str) -> tuple[tuple, tuple]:
    """(window, stride) of a Global/Adaptive pool on an input of `in_size` (one sample)."""
    spatial = tuple(int(v) for v in in_size[:-1])
    kind = pending["kind"]
    if not spatial:
        raise PortingError(
            f"{path}: Flux.{kind} meets an input of size {in_size} per sample (features); "
            "expected (X1, ..., C): pooling needs spatial dimensions"
        )
    target = pending["out"]
    if target is None:  # global
        return spatial, spatial
    if len(target) != len(spatial):
        raise PortingError(
            f"{path}: Flux.{kind}{target} has {len(target)} output sizes but its input "
            f"{in_size} has {len(spatial)} spatial dimensions"
        )
    small = [(i, o) for i, o in zip(spatial, target, strict=True) if i < o]
    if small:
        raise PortingError(
            f"{path}: Flux.{kind}{target} on an input of spatial size {spatial}: Flux's stride "
            "`in ÷ out` would be 0 (NNlib refuses it); the output cannot be larger than the input"
        )
    stride = tuple(i // o for i, o in zip(spatial, target, strict=True))
    window = tuple(i - (o - 1) * s for i, o, s in zip(spatial, target, stride, strict=True))
    return window, stride


def _connection(x: Any, path: str) -> str:
    """A SkipConnection's or Parallel's connection: ``+`` -> "add", ``vcat`` -> "vcat",
    Metalhead's ``cat_channels`` (``cat(xs...; dims=3)``) -> "cat3"; anything else refused."""
    name = function_name(x)
    known = {
        "Base.+": "add",
        "Base.vcat": "vcat",
        "Metalhead.cat_channels": "cat3",  # Metalhead 0.8
        "Metalhead.Layers.cat_channels": "cat3",  # Metalhead 0.9 (docs/flux.md#graph-flux)
    }
    if name in known:
        return known[name]
    if isinstance(x, JuliaStruct) and isinstance(x.type, Anonymous):
        code = read_anonymous(x.type)
        shown = f"an anonymous function {code.name} (written at {code.where}; code: {code.text()[:160]})"
    elif name is not None:
        shown = f"the function {name}"
    else:
        shown = f"a {x.name if isinstance(x, JuliaStruct) else type(x).__name__}"
    raise PortingError(
        f"{path}.connection is {shown}: the connections converted are `+` (Add), `vcat` (Concat "
        "of features) and Metalhead's `cat_channels` (Concat of channels); its code is never "
        "run. Rebuild the layer with one of them before saving (e.g. `SkipConnection(layer, +)`, "
        "`Parallel(vcat, a, b)`; for channels `Metalhead.cat_channels`)"
    )


def _merge(op: str, sources: tuple[int, ...], path: str, what: str) -> Found:
    layer = Add(["#"] * len(sources)) if op == "add" else Concat(["#"] * len(sources))
    return Found(layer, path, what, sources=sources, connection=op)


def _skip(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``SkipConnection(layers, connection)``: ``connection(layers(x), x)``."""
    if len(x.data) != 2:
        raise PortingError(f"{path}: Flux.SkipConnection with {len(x.data)} fields; expected 2")
    op = _connection(x.data[1], path)
    src = len(out) - 1
    start = len(out)
    layers_of(x.data[0], f"{path}.layers", out)
    end = len(out) - 1 if len(out) > start else src
    if len(out) > start and out[start].reads is None:
        out[start].reads = src
    out.append(_merge(op, (end, src), path, f"Flux.SkipConnection({op}): connection(layers(x), x)"))


def _rewire(found: list[Found], old: int, new: int) -> None:
    """Point the layers of one branch that read `old` (the layer before the branch, which a
    nested SkipConnection or Parallel takes for its input) at `new` (the branch's input)."""
    for f in found:
        if f.reads == old:
            f.reads = new
        if f.sources is not None:
            f.sources = tuple(new if j == old else j for j in f.sources)


def _parallel(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``Parallel(connection, layers)``: ``connection(map(f -> f(x), layers)...)`` (Flux
    0.12: ``mapreduce(f -> f(x), connection, layers)``, the same for `+`, `vcat`, `cat`)."""
    if len(x.data) != 2:
        raise PortingError(f"{path}: Flux.Parallel with {len(x.data)} fields; expected 2")
    op = _connection(x.data[0], path)
    items = x.data[1]
    names: list[str] = []
    if isinstance(items, JuliaStruct) and _short(items) == "NamedTuple":
        t = items.type
        names = [str(n) for n in t.params[0]] if t.params and isinstance(t.params[0], tuple) else []
        items = items.data
    if not isinstance(items, (tuple, list)) or not items:
        raise PortingError(f"{path}.layers: expected a tuple of one or more layers")
    src = len(out) - 1
    ends: list[int] = []
    for i, item in enumerate(items, 1):
        sub = f"{path}.{names[i - 1]}" if i <= len(names) else f"{path}.layers.{i}"
        start = len(out)
        layers_of(item, sub, out)
        if len(out) > start:
            if out[start].reads is None:
                out[start].reads = src
            if start - 1 != src:  # what the branch took for its input (the layer before it)
                _rewire(out[start:], start - 1, src)
            ends.append(len(out) - 1)
        else:
            ends.append(src)
    if len(ends) == 1:  # connection(y): `+(y)`, `vcat(y)` and `cat(y; dims)` are y
        return
    out.append(_merge(op, tuple(ends), path, f"Flux.Parallel({op}) of {len(ends)} branches"))


def _recurrent(x: JuliaStruct, path: str, out: list[Found]) -> None:
    from porting.flux.recurrent import recurrent

    recurrent(x, path, out)


def _upsample(x: JuliaStruct, path: str, out: list[Found]) -> None:
    from porting.flux.resample import upsample

    upsample(x, path, out)


def _pixelshuffle(x: JuliaStruct, path: str, out: list[Found]) -> None:
    from porting.flux.resample import pixelshuffle

    pixelshuffle(x, path, out)


def _norm(x: JuliaStruct, path: str, out: list[Found]) -> None:
    from porting.flux import norms

    {"LayerNorm": norms.layernorm, "GroupNorm": norms.groupnorm}.get(_short(x), norms.instancenorm)(
        x, path, out
    )


_HANDLERS = {
    "Chain": _chain,
    "Conv": _conv,
    "CrossCor": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool,
    "MeanPool": _pool,
    "Dense": _dense,
    "BatchNorm": _batchnorm,
    "Dropout": _dropout,
    "AlphaDropout": _dropout,
    "DepthwiseConv": _depthwise,
    "Embedding": _embedding,
    "GlobalMaxPool": _global_pool,
    "GlobalMeanPool": _global_pool,
    "AdaptiveMaxPool": _adaptive_pool,
    "AdaptiveMeanPool": _adaptive_pool,
    "SkipConnection": _skip,
    "Parallel": _parallel,
    "Recur": _recurrent,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "GRUv3": _recurrent,
    "RNN": _recurrent,
    "Upsample": _upsample,
    "PixelShuffle": _pixelshuffle,
    "LayerNorm": _norm,
    "GroupNorm": _norm,
    "InstanceNorm": _norm,
}
