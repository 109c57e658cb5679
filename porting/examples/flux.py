"""Flux models written as BSON.jl would write them, from Python (no Julia): for the README,
examples and tests.

The documents follow BSON.jl v0.3.9 ``src/extensions.jl``: ``lower(x::Symbol)`` (line 7),
``lower(x::Tuple)`` (line 10), ``lower(v::DataType)`` (line 64: ``name`` the module path and
type name, ``params`` the type parameters), ``lower(x::Array)`` (line 96: ``type`` the element
type, ``size`` Julia's size, ``data`` the column-major bytes) and ``lower(x)`` (line 122: a
struct's ``type`` and its field values in declaration order). A named function is an empty
struct of its ``#name`` type. Fields per layer: docs/flux.md#layer-fields (Flux 0.14).

>>> import os, tempfile
>>> p = save_lenet(os.path.join(tempfile.mkdtemp(), "lenet.bson"))
>>> from porting.flux import load_model
>>> [f.layer.kind for f in load_model(p).layers]
['conv', 'pool', 'conv', 'pool', 'mat', 'dense', 'dense', 'activation']
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = [
    "FLUX_EXAMPLES",
    "adaptive_pool",
    "array",
    "datatype",
    "encode",
    "depthwise_v012",
    "function",
    "global_pool",
    "groupnorm",
    "instancenorm",
    "layernorm",
    "gru_cell",
    "gruv3_cell",
    "lstm_cell",
    "lstm_classifier",
    "recur",
    "recurrent",
    "rnn_cell",
    "save_lstm",
    "lenet",
    "parallel",
    "pixel_shuffle",
    "resnet",
    "save",
    "save_lenet",
    "save_resnet",
    "skip",
    "struct",
    "tuple_",
    "upsample",
]

_ELTYPES = {np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64"}


def datatype(path: str, *params: Any) -> dict:
    """``{tag: datatype}`` for ``"Flux.Dense"`` (module path and name, dot-separated)."""
    return {"tag": "datatype", "name": path.split("."), "params": list(params)}


def struct(path: str, *fields: Any) -> dict:
    """``{tag: struct}``: a value of type `path` with `fields` in declaration order."""
    return {"tag": "struct", "type": datatype(path), "data": list(fields)}


def function(path: str) -> dict:
    """A named function (``"NNlib.relu"``): an empty struct of type ``NNlib.#relu``."""
    module, _, name = path.rpartition(".")
    return {"tag": "struct", "type": datatype(f"{module}.#{name}"), "data": []}


def tuple_(*items: Any) -> dict:
    return {"tag": "tuple", "data": list(items)}


def array(a: np.ndarray) -> dict:
    """A Julia-indexed array (shape = Julia's size) as BSON.jl writes it."""
    a = np.asarray(a)
    return {
        "tag": "array",
        "type": datatype(f"Core.{_ELTYPES[a.dtype]}"),
        "size": [int(s) for s in a.shape],
        "data": np.asarray(a, a.dtype.newbyteorder("<")).tobytes(order="F"),
    }


def float32(v: float) -> dict:
    """A Float32 scalar: a primitive struct holding its 4 bytes."""
    return {"tag": "struct", "type": datatype("Core.Float32"), "data": np.float32(v).tobytes()}


def encode(entries: dict) -> bytes:
    import bson

    return bson.encode(entries)


def save(path: str | os.PathLike, entries: dict) -> str:
    """Write `entries` (names -> lowered documents) as a BSON file, atomically."""
    from porting import files

    target = files.output_file(path, suffix=".bson")
    data = encode(entries)
    with files.atomic_write(target) as tmp:
        tmp.write_bytes(data)
    return str(target)


def conv(w, b, act="NNlib.relu", stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Flux 0.14 ``Conv(σ, weight, bias, stride, pad, dilation, groups)``."""
    return struct(
        "Flux.Conv",
        function(act),
        array(w),
        array(b) if b is not None else False,
        tuple_(*stride),
        tuple_(*pad),
        tuple_(*dilation),
        groups,
    )


def dense(w, b, act="Base.identity"):
    """Flux 0.14 ``Dense(weight, bias, σ)``."""
    return struct("Flux.Dense", array(w), array(b) if b is not None else False, function(act))


def maxpool(k=(2, 2), pad=(0, 0, 0, 0), stride=None):
    return struct("Flux.MaxPool", tuple_(*k), tuple_(*pad), tuple_(*(stride or k)))


def layernorm(size, scale=None, bias=None, act="Base.identity", eps=1e-5):
    """Flux 0.13-0.16 ``LayerNorm(λ, diag, ϵ, size, affine)``: ``diag`` a ``Scale(scale, bias,
    σ = λ)`` (affine, `scale`/`bias` of shape `size`), else ``λ`` itself (docs/flux.md#layer-fields;
    Float32 `scale` gives a Float32 ``ϵ``)."""
    affine = scale is not None
    if affine:
        diag = struct("Flux.Scale", array(scale), array(bias), function(act))
    else:
        diag = function(act)
    e = float(eps) if affine and np.asarray(scale).dtype == np.float64 else float32(eps)
    return struct("Flux.LayerNorm", function(act), diag, e, tuple_(*size), affine)


def groupnorm(chs, groups, gamma=None, beta=None, act="Base.identity", eps=1e-5):
    """Flux 0.14-0.16 ``GroupNorm(G, λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active,
    chs)``: no running statistics (``μ``, ``σ²`` nothing)."""
    f64 = gamma is not None and np.asarray(gamma).dtype == np.float64
    num = float if f64 else float32
    return struct(
        "Flux.GroupNorm",
        groups,
        function(act),
        None if beta is None else array(beta),
        None if gamma is None else array(gamma),
        None,
        None,
        num(eps),
        num(0.1),
        gamma is not None,
        False,
        None,
        chs,
    )


def instancenorm(chs, gamma=None, beta=None, mu=None, var=None, act="Base.identity", eps=1e-5,
                 active=None):  # fmt: skip
    """Flux 0.12-0.16 ``InstanceNorm(λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active,
    chs)``; `mu`/`var` given: ``track_stats = true``."""
    return struct(
        "Flux.InstanceNorm",
        function(act),
        None if beta is None else array(beta),
        None if gamma is None else array(gamma),
        None if mu is None else array(mu),
        None if var is None else array(var),
        float32(eps),
        float32(0.1),
        gamma is not None,
        mu is not None,
        active,
        chs,
    )


def chain(*layers):
    return struct("Flux.Chain", tuple_(*layers))


def skip(layers, connection="Base.+"):
    """``SkipConnection(layers, connection)`` (fields: layers, connection)."""
    return struct("Flux.SkipConnection", layers, function(connection))


def parallel(connection, *layers):
    """``Parallel(connection, layers...)`` (fields: connection, layers as a tuple)."""
    return struct("Flux.Parallel", function(connection), tuple_(*layers))


def global_pool(kind="GlobalMeanPool"):
    """``GlobalMaxPool()`` / ``GlobalMeanPool()``: structs without fields."""
    return struct(f"Flux.{kind}")


def adaptive_pool(out, kind="AdaptiveMeanPool"):
    """``AdaptiveMaxPool(out)`` / ``AdaptiveMeanPool(out)`` (one field, ``out``)."""
    return struct(f"Flux.{kind}", tuple_(*out))


def upsample(mode: str = "nearest", scale: Any = None, size: Any = None) -> dict:
    """``Upsample{mode, S, T}(scale, size)`` (Flux 0.12-0.16): the mode is the type's first
    parameter, a Symbol (BSON.jl ``lower(x::Symbol)``), then the types of the two fields;
    ``nothing`` is BSON null (BSON.jl v0.3.9 ``src/write.jl``)."""

    def typ(v: Any) -> dict:
        if v is None:
            return datatype("Core.Nothing")
        if isinstance(v, tuple):
            return datatype("Core.Tuple", *(typ(i) for i in v))
        return datatype("Core.Int64" if isinstance(v, int) else "Core.Float64")

    def val(v: Any) -> Any:
        return tuple_(*v) if isinstance(v, tuple) else v

    t = datatype("Flux.Upsample", {"tag": "symbol", "name": mode}, typ(scale), typ(size))
    return {"tag": "struct", "type": t, "data": [val(scale), val(size)]}


def pixel_shuffle(r: int) -> dict:
    """``PixelShuffle(r)`` (one field)."""
    return struct("Flux.PixelShuffle", r)


def depthwise_v012(w, b, act="Base.identity", stride=(1, 1), pad=(0, 0), dilation=(1, 1)):
    """Flux 0.11-0.12 ``DepthwiseConv(σ, weight, bias, stride, pad, dilation)``, weight
    ``(k1, k2, multiplier, Cin)``."""
    return struct(
        "Flux.DepthwiseConv",
        function(act),
        array(w),
        array(b) if b is not None else False,
        tuple_(*stride),
        tuple_(*pad),
        tuple_(*dilation),
    )


def recur(cell, state=None):
    """Flux 0.12-0.14 ``Recur(cell, state)``: `state` the last batch's (default: none saved)."""
    return struct("Flux.Recur", cell, state if state is not None else tuple_())


def lstm_cell(wi, wh, b, state0=None, version="0.14"):
    """``LSTMCell``: 0.14 ``(Wi, Wh, b, state0 = (h0, c0))``; 0.15 on ``(Wi, Wh, bias)``."""
    fields = [array(wi), array(wh), array(b) if b is not None else False]
    if version == "0.14":
        h = wh.shape[1]
        h0, c0 = state0 if state0 is not None else (np.zeros((h, 1), wi.dtype),) * 2
        fields.append(tuple_(array(h0), array(c0)))
    return struct("Flux.LSTMCell", *fields)


def gru_cell(wi, wh, b, state0=None, version="0.14"):
    """``GRUCell``: 0.14 ``(Wi, Wh, b, state0)``; 0.15 on ``(Wi, Wh, b)``."""
    fields = [array(wi), array(wh), array(b) if b is not None else False]
    if version == "0.14":
        fields.append(array(state0 if state0 is not None else np.zeros((wh.shape[1], 1), wi.dtype)))
    return struct("Flux.GRUCell", *fields)


def gruv3_cell(wi, wh, b, wh_n, state0=None, version="0.14"):
    """``GRUv3Cell``: 0.12-0.14 ``(Wi, Wh (2H, H), b, Wh_h̃, state0)``; 0.15 on ``(Wi, Wh
    (3H, H), b, Wh_h̃)`` (Flux v0.14.25 / v0.16.9 ``src/layers/recurrent.jl``)."""
    fields = [array(wi), array(wh), array(b) if b is not None else False, array(wh_n)]
    if version == "0.14":
        fields.append(array(state0 if state0 is not None else np.zeros((wh.shape[1], 1), wi.dtype)))
    return struct("Flux.GRUv3Cell", *fields)


def rnn_cell(wi, wh, b, act="Base.tanh", state0=None, version="0.14"):
    """``RNNCell``: 0.14 ``(σ, Wi, Wh, b, state0)``; 0.15 on ``(σ, Wi, Wh, bias)``."""
    fields = [function(act), array(wi), array(wh), array(b) if b is not None else False]
    if version == "0.14":
        fields.append(array(state0 if state0 is not None else np.zeros((wh.shape[1], 1), wi.dtype)))
    return struct("Flux.RNNCell", *fields)


def recurrent(kind, cell, return_state=False):
    """Flux 0.15+ ``LSTM``/``GRU``/``RNN``/``GRUv3`` (one field, the cell; the type's first
    parameter is `return_state` from 0.16)."""
    return {
        "tag": "struct",
        "type": datatype(f"Flux.{kind}", return_state, datatype(cell["type"]["name"][-1])),
        "data": [cell],
    }


def lstm_classifier(seed: int = 0, features: int = 6, hidden: int = 16, classes: int = 4):
    """A Flux 0.15-style sequence classifier: ``Chain(LSTM(features => hidden),
    Dense(hidden => classes), softmax)``: class probabilities at every step (the caller reads
    the step it wants, e.g. the last)."""
    rng = np.random.default_rng(seed)

    def w(*shape, fan):
        return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)

    cell = lstm_cell(
        w(4 * hidden, features, fan=features),
        w(4 * hidden, hidden, fan=hidden),
        w(4 * hidden, fan=4),
        version="0.15",
    )
    return chain(
        recurrent("LSTM", cell),
        dense(w(classes, hidden, fan=hidden), w(classes, fan=4)),
        function("NNlib.softmax"),
    )


def save_lstm(path: str | os.PathLike, seed: int = 0) -> str:
    """Write `lstm_classifier` as ``BSON.@save path model`` would."""
    return save(path, {"model": lstm_classifier(seed)})


def resnet(seed: int = 0, channels: int = 8, blocks: int = 2, classes: int = 10) -> dict:
    """A Metalhead-style stack of basic residual blocks for 16x16x3 inputs: ``Chain(Conv((3, 3),
    3 => c, relu; pad=1), [Chain(SkipConnection(Chain(Conv((3, 3), c => c, relu; pad=1),
    Conv((3, 3), c => c; pad=1)), +), relu) for each block]..., MaxPool((2, 2)),
    GlobalMeanPool(), Flux.flatten, Dense(c => classes))``, deterministic weights."""
    rng = np.random.default_rng(seed)

    def w(*shape, fan):
        return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)

    def cv(cin, cout, act="NNlib.relu"):
        return conv(w(3, 3, cin, cout, fan=9 * cin), w(cout, fan=16), act, pad=(1, 1, 1, 1))

    body = [cv(3, channels)]
    for _ in range(blocks):
        block = skip(chain(cv(channels, channels), cv(channels, channels, "Base.identity")))
        body.append(chain(block, function("NNlib.relu")))
    body += [
        maxpool(),
        global_pool("GlobalMeanPool"),
        function("Flux.flatten"),
        dense(w(classes, channels, fan=channels), w(classes, fan=16)),
    ]
    return chain(*body)


def lenet(seed: int = 0) -> dict:
    """A Flux LeNet for 28x28x1 inputs: ``Chain(Conv((5, 5), 1 => 6, relu), MaxPool((2, 2)),
    Conv((5, 5), 6 => 16, relu), MaxPool((2, 2)), Flux.flatten, Dense(256 => 120, relu),
    Dense(120 => 10), softmax)``, deterministic weights, lowered as BSON.jl lowers it."""
    rng = np.random.default_rng(seed)

    def w(*shape, fan):
        return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)

    return chain(
        conv(w(5, 5, 1, 6, fan=25), w(6, fan=4)),
        maxpool(),
        conv(w(5, 5, 6, 16, fan=150), w(16, fan=4)),
        maxpool(),
        function("Flux.flatten"),
        dense(w(120, 256, fan=256), w(120, fan=4), "NNlib.relu"),
        dense(w(10, 120, fan=120), w(10, fan=4)),
        function("NNlib.softmax"),
    )


def save_lenet(path: str | os.PathLike, seed: int = 0) -> str:
    """Write `lenet` as ``BSON.@save path model`` would: one entry, ``model``."""
    return save(path, {"model": lenet(seed)})


def save_resnet(path: str | os.PathLike, seed: int = 0) -> str:
    """Write `resnet` as ``BSON.@save path model`` would."""
    return save(path, {"model": resnet(seed)})


def _example(save_fn, input_size):
    def build():
        """The example written as a BSON.jl file (a temporary folder) and read back by
        `porting.flux.load_model`: the whole Flux path, as a user's file takes it."""
        import tempfile

        from porting.flux import load_model

        with tempfile.TemporaryDirectory() as d:
            return load_model(save_fn(os.path.join(d, "model.bson")), input_size=input_size).model

    return build


# `porting convert --example NAME` (porting.examples.models adds these to its EXAMPLES)
FLUX_EXAMPLES = {
    "flux-lenet": (
        _example(save_lenet, (28, 28, 1)),
        "built-in example: a Flux LeNet (Conv, MaxPool, flatten, Dense, softmax), read from BSON",
    ),
    "flux-resnet": (
        _example(save_resnet, (16, 16, 3)),
        "built-in example: a Flux stack of residual blocks (SkipConnection(+), GlobalMeanPool), "
        "read from BSON",
    ),
    "flux-lstm": (
        _example(save_lstm, (12, 6)),
        "built-in example: a Flux LSTM sequence classifier (LSTM, Dense, softmax at every "
        "step), read from BSON",
    ),
}
