"""A model's structure in Python, Flux's way, for a `Flux.state` tree (docs/flux.md#flux-state).

`Flux.state(model)` keeps a model's arrays and numbers in nested NamedTuples (functions and
other values become ``()``) and no layer types: what the layers are comes from the user's
code. These constructors mirror Flux's (a pair ``1 => 6`` is written ``(1, 6)``) and
`load_state` puts a state tree (as `porting.io` reads it from a JLD2 file: a NamedTuple is a
dict, a Tuple a tuple) into them the way ``Flux.loadmodel!`` does: the same field names at
every level, arrays of the same size; every mismatch is one `PortingError` naming its path.

>>> import numpy as np
>>> m = Chain(Dense((3, 2), "relu"))
>>> state = {"layers": ({"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32),
...                     "σ": ()},)}
>>> load_state(m, state).output_sizes
[(2,)]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.io.bsonjl import JuliaStruct, JuliaType

__all__ = [
    "BatchNorm",
    "Chain",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Conv",
    "Dense",
    "Dropout",
    "GRU",
    "GRUv3",
    "LSTM",
    "RNN",
    "MaxPool",
    "MeanPool",
    "PixelShuffle",
    "Upsample",
    "flatten",
    "load_jld2",
    "load_state",
]

_FUNCS = {
    "identity": "Base.identity",
    "relu": "NNlib.relu",
    "σ": "NNlib.σ",
    "sigmoid": "NNlib.σ",
    "tanh": "Base.tanh",
    "elu": "NNlib.elu",
    "softmax": "NNlib.softmax",
    "logsoftmax": "NNlib.logsoftmax",
    "swish": "NNlib.swish",
    "gelu": "NNlib.gelu_tanh",  # NNlib's gelu: `const gelu = gelu_tanh` (v0.9.28 on)
    "gelu_tanh": "NNlib.gelu_tanh",
    "gelu_erf": "NNlib.gelu_erf",
    "flatten": "Flux.flatten",
}


def _function(name: str) -> JuliaStruct:
    if name not in _FUNCS:
        raise PortingError(f"activation {name!r}; expected one of {', '.join(sorted(_FUNCS))}")
    module, _, short = _FUNCS[name].rpartition(".")
    return JuliaStruct(JuliaType(f"{module}.#{short}"), ())


def _tuple(v: Any, n: int, what: str) -> tuple[int, ...]:
    t = (v,) * n if isinstance(v, int) else tuple(v)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
        raise PortingError(f"{what}={v!r}: expected an integer or a tuple of integers")
    return t


def _pair(ch: Any, what: str) -> tuple[int, int]:
    if not (isinstance(ch, tuple) and len(ch) == 2 and all(isinstance(c, int) for c in ch)):
        raise PortingError(f"{what}: channels {ch!r}; expected (in, out), Flux's in => out")
    return ch


@dataclass
class _Layer:
    """A layer's fields in Flux 0.14's declaration order: name -> expected value (a shape for
    an array, ``()`` for a function, else the number or tuple)."""

    kind: str
    fields: dict[str, Any]
    arrays: dict[str, tuple[int, ...]] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    leaf: bool = False  # not a Functors node in Flux 0.14: its state is ``()``
    params: tuple = ()  # the struct's type parameters (Upsample's mode)

    def __post_init__(self):
        for f in self.functions.values():
            _function(f)  # an unknown activation name is refused when the layer is built


def Dense(ch, σ: str = "identity", *, bias: bool = True) -> _Layer:  # noqa: N802
    i, o = _pair(ch, "Dense")
    arrays: dict[str, tuple[int, ...]] = {"weight": (o, i)} | ({"bias": (o,)} if bias else {})
    return _Layer(
        "Dense", {"weight": None, "bias": None if bias else False, "σ": None}, arrays, {"σ": σ}
    )


def Conv(
    k, ch, σ: str = "identity", *, stride=1, pad=0, dilation=1, groups: int = 1, bias: bool = True
) -> _Layer:  # noqa: N802
    k = _tuple(k, len(k) if isinstance(k, tuple) else 2, "Conv k")
    n = len(k)
    cin, cout = _pair(ch, "Conv")
    if cin % groups or cout % groups:
        raise PortingError(f"Conv groups={groups} does not divide channels {cin} => {cout}")
    p = _tuple(pad, n, "pad")
    p = tuple(v for v in p for _ in range(2)) if len(p) == n else p
    arrays = {"weight": (*k, cin // groups, cout)} | ({"bias": (cout,)} if bias else {})
    fields = {
        "σ": None,
        "weight": None,
        "bias": None if bias else False,
        "stride": _tuple(stride, n, "stride"),
        "pad": p,
        "dilation": _tuple(dilation, n, "dilation"),
        "groups": groups,
    }
    return _Layer("Conv", fields, arrays, {"σ": σ})


def _pool(kind: str, k, pad=0, stride=None) -> _Layer:
    k = _tuple(k, 2, f"{kind} k")
    p = _tuple(pad, len(k), "pad")
    p = tuple(v for v in p for _ in range(2)) if len(p) == len(k) else p
    s = _tuple(stride if stride is not None else k, len(k), "stride")
    return _Layer(kind, {"k": k, "pad": p, "stride": s}, leaf=True)


def MaxPool(k, *, pad=0, stride=None) -> _Layer:  # noqa: N802
    return _pool("MaxPool", k, pad, stride)


def MeanPool(k, *, pad=0, stride=None) -> _Layer:  # noqa: N802
    return _pool("MeanPool", k, pad, stride)


def BatchNorm(
    ch: int,
    λ: str = "identity",
    *,
    eps: float = 1e-5,
    momentum: float = 0.1,  # noqa: N802
    affine: bool = True,
    track_stats: bool = True,
) -> _Layer:
    arrays: dict[str, tuple[int, ...]] = {"μ": (ch,), "σ²": (ch,)}
    if affine:
        arrays.update({"β": (ch,), "γ": (ch,)})
    fields = _norm_fields(eps, momentum, affine, track_stats, ch)
    return _Layer("BatchNorm", fields, arrays, {"λ": λ})


def _norm_fields(eps, momentum, affine: bool, track: bool, chs: int) -> dict[str, Any]:
    """The fields of Flux's `BatchNorm`, `InstanceNorm` and (after its `G`) `GroupNorm`:
    arrays as None (filled from the state), the numbers and flags as given."""
    return {
        "λ": None,
        "β": None,
        "γ": None,
        "μ": None,
        "σ²": None,
        "ϵ": eps,
        "momentum": momentum,
        "affine": affine,
        "track_stats": track,
        "active": None,
        "chs": chs,
    }


def Upsample(mode: str = "nearest", *, scale=None, size=None) -> _Layer:  # noqa: N802
    """``Upsample(mode; scale, size)`` (mode ``"nearest"``, ``"bilinear"``, ``"trilinear"``,
    Flux's Symbol without the colon). Its state is ``()`` in every Flux version (not a
    Functors node up to 0.14, ``Functors.@leaf`` from 0.15)."""
    from porting.io.bsonjl import Symbol

    if mode not in ("nearest", "bilinear", "trilinear"):
        raise PortingError(f"Upsample mode {mode!r}; expected nearest, bilinear or trilinear")
    if (scale is None) == (size is None):
        raise PortingError("Upsample: give exactly one of scale and size (as Flux)")
    fields = {"scale": tuple(scale) if isinstance(scale, list) else scale}
    fields["size"] = tuple(size) if isinstance(size, (list, tuple)) else size
    return _Layer("Upsample", fields, leaf=True, params=(Symbol(mode),))


def PixelShuffle(r: int) -> _Layer:  # noqa: N802
    """``PixelShuffle(r)``: state ``()`` up to Flux 0.14, ``(r = r,)`` from 0.15 (Functors
    0.5 makes it a node)."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise PortingError(f"PixelShuffle r={r!r}; expected a positive integer")
    return _Layer("PixelShuffle", {"r": r}, leaf=True)


def LayerNorm(  # noqa: N802
    size: int | tuple[int, ...], λ: str = "identity", *, affine: bool = True, eps: float = 1e-5
) -> _Layer:
    """``LayerNorm(size, λ; affine, eps)`` (Flux 0.13 on): ``diag`` is a ``Scale(scale, bias,
    λ)`` when affine, else a function (its state ``()``). The Flux version that saved the state
    decides how ``eps`` enters (`load_state(..., flux_version=...)`, porting.flux.norms)."""
    sz = _tuple(size, 1, "LayerNorm size")
    if not sz or any(v < 1 for v in sz):
        raise PortingError(f"LayerNorm size={size!r}: expected positive sizes")
    diag: Any
    if affine:
        diag = _Layer(
            "Scale", {"scale": None, "bias": None, "σ": None}, {"scale": sz, "bias": sz}, {"σ": λ}
        )
    else:
        diag = None
    fields = {"λ": None, "diag": diag, "ϵ": eps, "size": sz, "affine": affine}
    return _Layer("LayerNorm", fields, {}, {"λ": λ} | ({} if affine else {"diag": λ}))


def _stats_norm(kind: str, chs: int, λ: str, affine: bool, track: bool, eps, momentum) -> _Layer:
    if not isinstance(chs, int) or isinstance(chs, bool) or chs < 1:
        raise PortingError(f"{kind} channels={chs!r}: expected a positive integer")
    arrays: dict[str, tuple[int, ...]] = {"β": (chs,), "γ": (chs,)} if affine else {}
    if track:
        arrays |= {"μ": (chs,), "σ²": (chs,)}
    return _Layer(kind, _norm_fields(eps, momentum, affine, track, chs), arrays, {"λ": λ})


def InstanceNorm(  # noqa: N802
    chs: int,
    λ: str = "identity",
    *,
    affine: bool = False,
    track_stats: bool = False,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> _Layer:
    """``InstanceNorm(chs, λ; affine=false, track_stats=false, eps, momentum)``."""
    return _stats_norm("InstanceNorm", chs, λ, affine, track_stats, eps, momentum)


def GroupNorm(  # noqa: N802
    chs: int,
    G: int,
    λ: str = "identity",
    *,
    affine: bool = True,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> _Layer:
    """``GroupNorm(chs, G, λ; affine=true, eps, momentum)`` (Flux 0.14 on: no running
    statistics, ``μ`` and ``σ²`` are ``nothing``)."""
    spec = _stats_norm("GroupNorm", chs, λ, affine, False, eps, momentum)
    if not isinstance(G, int) or isinstance(G, bool) or G < 1 or chs % G:
        raise PortingError(
            f"GroupNorm G={G!r}: expected a positive number of groups dividing {chs}"
        )
    spec.fields = {"G": G} | spec.fields
    return spec


def Dropout(p: float) -> _Layer:  # noqa: N802
    return _Layer("Dropout", {"p": p, "dims": None, "active": None, "rng": None})


flatten = "flatten"


# Flux's recurrent cells' fields: Flux 0.14 ``Recur(cell, state)`` around a cell holding its
# trained ``state0``; 0.15 on the layer holds the cell only, which holds no state
# (src/layers/recurrent.jl v0.14.25, v0.16.9; docs/flux.md#recurrent-flux)
_CELL_FIELDS = {
    ("RNN", "0.14"): ("σ", "Wi", "Wh", "b", "state0"),
    ("RNN", "0.15"): ("σ", "Wi", "Wh", "bias"),
    ("LSTM", "0.14"): ("Wi", "Wh", "b", "state0"),
    ("LSTM", "0.15"): ("Wi", "Wh", "bias"),
    ("GRU", "0.14"): ("Wi", "Wh", "b", "state0"),
    ("GRU", "0.15"): ("Wi", "Wh", "b"),
    ("GRUv3", "0.14"): ("Wi", "Wh", "b", "Wh_h̃", "state0"),
    ("GRUv3", "0.15"): ("Wi", "Wh", "b", "Wh_h̃"),
}
_RECURRENT_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3, "GRUv3": 3}


@dataclass
class _Recurrent:
    """``LSTM(in => out)`` and the others, in Flux 0.14's design (``version="0.14"``: a
    ``Recur`` whose cell holds ``state0``; 0.12-0.13 are the same) or 0.15's on (``"0.15"``:
    the layer holds the cell, no state)."""

    kind: str
    ch: tuple[int, int]
    version: str
    σ: str = "tanh"

    def __post_init__(self) -> None:
        if self.version not in ("0.14", "0.15"):
            raise PortingError(
                f"{self.kind} version={self.version!r}: expected '0.14' (Recur, 0.12-0.14) or "
                "'0.15' (the recurrent layers of 0.15 on)"
            )

    def arrays(self) -> dict[str, Any]:
        i, h = self.ch
        g = _RECURRENT_GATES[self.kind]
        wh_rows = 2 if (self.kind, self.version) == ("GRUv3", "0.14") else g
        out: dict[str, Any] = {"Wi": (g * h, i), "Wh": (wh_rows * h, h), "Wh_h̃": (h, h)}
        out["b"] = out["bias"] = (g * h,)
        out["state0"] = ((h, 1), (h, 1)) if self.kind == "LSTM" else (h, 1)
        return out

    def tree(self, node: Any, path: str) -> JuliaStruct:
        fields = _CELL_FIELDS[(self.kind, self.version)]
        cell_name = f"{self.kind}Cell"
        old = self.version == "0.14"
        d = _keys(node, ["cell", "state"] if old else ["cell"], path)
        cd = _keys(d["cell"], list(fields), f"{path}.cell")
        shapes = self.arrays()
        values: list[Any] = []
        for name in fields:
            v, where = cd[name], f"{path}.cell.{name}"
            if name == "σ":
                if not _empty(v):
                    raise PortingError(f"{where}: {v!r:.60}; expected () (a function's state)")
                values.append(_function(self.σ))
                continue
            if name in ("b", "bias") and v is False:
                values.append(False)
                continue
            want = shapes[name]
            if name == "state0" and self.kind == "LSTM":
                if not (isinstance(v, (tuple, list)) and len(v) == 2):
                    raise PortingError(f"{where}: {type(v).__name__}; expected (h0, c0)")
                values.append(tuple(_array(a, f"{where}[{k}]", want[k]) for k, a in enumerate(v)))
            else:
                values.append(_array(v, where, want))
        cell = JuliaStruct(JuliaType(f"Flux.{cell_name}"), tuple(values))
        if old:  # the saved `state` is the last batch's: never read (Flux.reset! -> state0)
            return JuliaStruct(JuliaType("Flux.Recur"), (cell, ()))
        return JuliaStruct(JuliaType(f"Flux.{self.kind}", (False,)), (cell,))


def _array(v: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
        raise PortingError(f"{where}: a {type(v).__name__}; expected a float array {shape}")
    if tuple(v.shape) != shape:
        raise PortingError(
            f"{where}: size {tuple(v.shape)} in the state, {shape} in the model "
            "(Flux.loadmodel!: DimensionMismatch); check the layer's sizes"
        )
    return v


def LSTM(ch, *, version: str = "0.15") -> _Recurrent:  # noqa: N802
    """``LSTM(in => out)``: ``version="0.14"`` for a ``Recur`` (Flux 0.12-0.14)."""
    return _Recurrent("LSTM", _pair(ch, "LSTM"), version)


def GRU(ch, *, version: str = "0.15") -> _Recurrent:  # noqa: N802
    return _Recurrent("GRU", _pair(ch, "GRU"), version)


def GRUv3(ch, *, version: str = "0.15") -> _Recurrent:  # noqa: N802
    """``GRUv3(in => out)``: the reset gate before ``Wh_h̃`` (Keras ``reset_after=False``)."""
    return _Recurrent("GRUv3", _pair(ch, "GRUv3"), version)


def RNN(ch, σ: str = "tanh", *, version: str = "0.15") -> _Recurrent:  # noqa: N802
    _function(σ)
    return _Recurrent("RNN", _pair(ch, "RNN"), version, σ)


@dataclass
class Chain:
    """``Chain(layers...)``: layers built here, or activation / ``flatten`` names."""

    layers: tuple

    def __init__(self, *layers: Any):
        for i, layer in enumerate(layers, 1):
            if not isinstance(layer, (_Layer, _Recurrent, Chain, str)):
                raise PortingError(
                    f"Chain layer {i}: a {type(layer).__name__}; expected a layer built by "
                    "porting.flux.build or an activation name"
                )
        self.layers = layers


def _empty(v: Any) -> bool:
    return v is None or v == () or (isinstance(v, dict) and not v) or v == []


def _keys(node: Any, want: list[str], path: str) -> dict:
    if not isinstance(node, dict):
        raise PortingError(
            f"{path}: the state holds a {type(node).__name__}; expected a NamedTuple with "
            f"fields {', '.join(want)}"
        )
    got = list(node)
    if set(got) != set(want):
        missing = [k for k in want if k not in node]
        extra = [k for k in got if k not in want]
        raise PortingError(
            f"{path}: the state's fields ({', '.join(got)}) do not match the model's "
            f"({', '.join(want)}): "
            + "; ".join(
                x
                for x in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"not in the model {', '.join(extra)}" if extra else "",
                )
                if x
            )
            + " (as Flux.loadmodel! requires the same structure; a state from another Flux "
            "version can differ in fields, e.g. ConvTranspose's outpad)"
        )
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def _layer(spec: _Layer, node: Any, path: str) -> JuliaStruct:
    if spec.leaf and _empty(node):  # Flux 0.14: no children, state ()
        node = dict(spec.fields)
    d = _keys(node, list(spec.fields), path)
    values: list[Any] = []
    for name, want in spec.fields.items():
        v = d[name]
        where = f"{path}.{name}"
        if name in spec.functions:
            if not _empty(v):
                raise PortingError(f"{where}: {v!r:.60}; expected () (a function's state)")
            values.append(_function(spec.functions[name]))
        elif isinstance(want, _Layer):  # a layer inside (LayerNorm's Scale)
            values.append(_layer(want, v, where))
        elif name in spec.arrays:
            values.append(_array(v, where, spec.arrays[name]))
        elif want is None:  # a value the model does not fix (active, rng, dims)
            values.append(None if _empty(v) else v)
        elif want is False and name == "bias":
            if v is not False and not _empty(v):
                raise PortingError(f"{where}: the state holds a bias; the model has bias=false")
            values.append(False)
        else:
            if not _same(v, want):
                raise PortingError(
                    f"{where}: {v!r:.60} in the state, {want!r} in the model; build the layer "
                    f"with {name}={v!r:.40}"
                )
            values.append(want)
    if spec.kind == "Dropout":
        values = [values[0]]
    if spec.kind in ("BatchNorm", "InstanceNorm") and not d["affine"]:
        values[1] = values[2] = None
    if spec.kind == "GroupNorm" and not d["affine"]:
        values[2] = values[3] = None
    return JuliaStruct(JuliaType(f"Flux.{spec.kind}", spec.params), tuple(values))


def _tree(model: Any, node: Any, path: str) -> Any:
    if isinstance(model, str):
        if not _empty(node):
            raise PortingError(f"{path}: {node!r:.60}; expected () (the function {model})")
        return _function(model)
    if isinstance(model, Chain):
        d = _keys(node, ["layers"], path)
        items = d["layers"]
        if isinstance(items, dict):
            items = tuple(items.values())
        if not isinstance(items, (tuple, list)) or len(items) != len(model.layers):
            n = len(items) if isinstance(items, (tuple, list)) else type(items).__name__
            raise PortingError(
                f"{path}.layers: the state holds {n} layers, the model {len(model.layers)}"
            )
        return JuliaStruct(
            JuliaType("Flux.Chain"),
            (
                tuple(
                    _tree(m, s, f"{path}.layers[{i}]")
                    for i, (m, s) in enumerate(zip(model.layers, items, strict=True), 1)
                ),
            ),
        )
    if isinstance(model, _Recurrent):
        return model.tree(node, path)
    return _layer(model, node, path)


def state_layers(model: Chain, state: Any, where: str = "state", flux_version=None) -> list:
    """The `Found` layers of `model` (built here) holding the arrays of `state` (a
    `Flux.state` tree), checked as ``Flux.loadmodel!`` checks it. `flux_version`: the Flux
    that saved it (a LayerNorm needs it: porting.flux.norms)."""
    from porting.flux.fields import Found
    from porting.flux.norms import flux_version as version
    from porting.flux.recognise import layers_of

    if not isinstance(model, Chain):
        raise PortingError(f"model: a {type(model).__name__}; expected porting.flux.build.Chain")
    tree = _tree(model, state, where)
    found: list[Found] = []
    with version(flux_version):
        layers_of(tree, where, found)
    return found


def load_state(
    model: Chain, state: Any, *, input_size=None, where: str = "state", flux_version=None
):
    """The `porting.model.KnetModel` of `model` (built here) holding the arrays of `state`
    (a `Flux.state` tree), checked as ``Flux.loadmodel!`` checks it. `flux_version`: the Flux
    that saved it (a LayerNorm needs it: porting.flux.norms)."""
    from porting.flux.load import _assemble

    return _assemble(state_layers(model, state, where, flux_version), where, input_size)


def load_jld2(
    path: str | os.PathLike,
    model: Chain,
    key: str = "model_state",
    input_size=None,
    flux_version=None,
):
    """`load_state` of the entry `key` of a JLD2 file (``jldsave(path; model_state =
    Flux.state(model))``), read by `porting.io`."""
    from porting import io

    p = str(os.fspath(path))
    entries = io.load(p, format="jld2")
    if key not in entries:
        raise PortingError(f"{p}: no entry {key!r}; the file holds {', '.join(map(repr, entries))}")
    return load_state(
        model, entries[key], input_size=input_size, where=f"{p}:{key}", flux_version=flux_version
    )
