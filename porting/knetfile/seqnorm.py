"""Batch normalisation, RNNs and embeddings found in a loaded JLD2 tree (docs/knet.md#batchnorm,
#rnn, #embed).

- Knet's `bnmoments()` is a `BNMoments` struct with fields `momentum`, `mean`, `var`, `meaninit`,
  `varinit`; `bnparams(C)` one vector `[scale; bias]` of length 2C. A layer struct holding a
  `BNMoments` field (any name) and a weight `w` is a conv/dense layer followed by
  `batchnorm(y, moments, params)` (Knet's cifar10 `cnn_batchnorm`: conv4, batchnorm, relu,
  pool); without `w` it is a batchnorm layer. Its params are the one other field holding 2C
  numbers; none is a non-affine batchnorm. `eps` is not stored: Knet's default 1e-5.
- Knet's `RNN` struct (Knet.jl v1.4.10 ops20/rnn.jl) stores `w` (the packed `(1, 1, n)`
  weights), `h`, `c`, `inputSize`, `hiddenSize`, `numLayers`, `dropout`, `seed`, `inputMode`
  (0 linear, 1 skip input), `direction` (0 uni-, 1 bidirectional), `mode` (0 relu, 1 tanh,
  2 lstm, 3 gru), `algo`, `dataType` and cuDNN descriptors; `porting.rnn.RNNSpec.from_knet`
  reads those names. The file does not say whether the user's code reads every step of `y`
  or its last one: "sequence" unless `--rnn-output last` says so.
- A struct holding only `w`, first in a chain whose next layer is an RNN, is the embedding
  `w[:, x]` (Knet's RNN tutorials); anywhere else the file does not say whether it is an
  embedding or a linear layer without bias, and it stays refused.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.knetfile import arrays
from porting.knetfile.report import DEFAULT, FILE, FLAG, Geometry, LayerReport, Setting
from porting.knetfile.tree import describe_value

__all__ = [
    "is_bnmoments",
    "moments_field",
    "is_rnn",
    "is_w_only",
    "batchnorm",
    "rnn",
    "embed",
    "BN_EPS",
]

BN_EPS = 1e-5  # batchnorm's eps keyword: in the user's call, not in the file
_RNN_FIELDS = ("inputSize", "hiddenSize", "numLayers", "dropout", "inputMode", "direction", "mode")
_RNN_OTHER = {"w", "h", "c", "seed", "algo", "dataType", "rnnDesc", "dropoutDesc"}
_RNN_OTHER |= {"dx", "dhx", "dcx"}


def _join(path: str, seg: str) -> str:
    return f"{path}/{seg}" if path else seg


def is_bnmoments(node: Any) -> bool:
    """Whether `node` is Knet's `BNMoments` struct (its fields as a dict)."""
    return isinstance(node, dict) and {"momentum", "mean", "var"} <= set(node)


def moments_field(d: dict) -> str | None:
    """The name of the field of `d` holding a `BNMoments`, None if none; several: refused."""
    names = [str(k) for k, v in d.items() if is_bnmoments(v)]
    if len(names) > 1:
        raise PortingError(
            f"a struct with {len(names)} bnmoments fields ({', '.join(names)}); porting converts "
            "a layer with one batchnorm. Describe the model with --structure S.json"
        )
    return names[0] if names else None


def is_rnn(node: Any) -> bool:
    """Whether `node` is Knet's `RNN` struct."""
    if not isinstance(node, dict):
        return False
    keys = set(node)
    return {"hiddenSize", "numLayers"} <= keys or {"inputSize", "hiddenSize"} <= keys


def is_w_only(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"w"}


def scalar(v: Any) -> Any:
    """A number JLD2 stored behind a reference (an abstract-typed field such as BNMoments'
    `momentum::AbstractFloat`) comes back as a 1-element array: that number; else `v`."""
    if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "biuf":
        return v.reshape(()).item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _number(v: Any, where: str, what: str) -> float:
    v = scalar(v)
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.number)):
        raise PortingError(f"{where}: {what} {v!r:.60}; expected a number")
    return float(v)


def batchnorm(d: dict, path: str, mname: str, skip: set[str]) -> tuple[Any, LayerReport, set]:
    """The `porting.model.BatchNorm` of the struct `d` whose field `mname` is a `BNMoments`;
    `skip` the fields another part of the layer takes (w, b, f...). Returns the layer, its
    report and the fields it used."""
    from porting.model import BatchNorm

    mpath = _join(path, mname)
    mom = d[mname]
    stats = {}
    for n in ("mean", "var"):
        if mom[n] is None:
            raise PortingError(
                f"{mpath}/{n} is nothing: the batchnorm never ran on data, so the file holds no "
                "running statistics (Knet fills them from meaninit/varinit at the first call, "
                "with sizes taken from that input). Run the model once on a batch, or describe "
                "the model with --structure S.json"
            )
        stats[n] = arrays.weight(mom[n], _join(mpath, n))
    momentum = _number(mom["momentum"], _join(mpath, "momentum"), "momentum")
    c = int(stats["mean"].array.size)
    cands = []
    for k, v in d.items():
        if k == mname or k in skip or not arrays.is_weight(v):
            continue
        w = arrays.weight(v, _join(path, str(k)))
        cands.append((str(k), w))
    used = {mname}
    params = [(k, w) for k, w in cands if w.array.size == 2 * c]
    if len(params) > 1 or (cands and not params):
        shown = ", ".join(f"{k} {tuple(w.array.shape)}" for k, w in cands)
        raise PortingError(
            f"{path}: a batchnorm with {c} channels (moments {mname}) beside arrays {shown}; "
            f"expected one bnparams vector of 2C = {2 * c} values [scale; bias] (or none for a "
            "non-affine batchnorm). Describe the model with --structure S.json"
        )
    bnp = params[0][1].array.reshape(-1) if params else None
    if params:
        used.add(params[0][0])
    settings = [
        Setting("momentum", momentum, FILE, f"{mname}.momentum"),
        Setting("eps", BN_EPS, DEFAULT, "batchnorm's eps keyword is not stored in the file"),
    ]
    notes = [
        f"mean {tuple(stats['mean'].array.shape)}, var {tuple(stats['var'].array.shape)} from "
        f"{mpath} (Knet bnmoments: running statistics)",
        f"params {params[0][1].array.shape} from {_join(path, params[0][0])} (bnparams: scale, "
        "then bias)"
        if params
        else "no bnparams field: non-affine batchnorm(x, moments)",
    ]
    try:
        layer = BatchNorm(
            stats["mean"].array, stats["var"].array, bnp, eps=BN_EPS, momentum=momentum
        )
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    what = f"batchnorm(x, {mname}{', ' + params[0][0] if params else ''}) at inference"
    return layer, LayerReport("batchnorm", path, what, settings, notes), used


def _state(v: Any, where: str) -> str:
    v = scalar(v) if isinstance(v, np.ndarray) and v.size == 1 and v.ndim <= 1 else v
    if v is None:
        return "nothing"
    if isinstance(v, (numbers.Real, np.number)) and not isinstance(v, bool) and v == 0:
        return "0"
    raise PortingError(
        f"{where}: the saved RNN holds a state ({describe_value(v)}), left by its last call "
        "(h = 0 or an array keeps the final state); a converted model starts every sequence "
        "from zero. Re-save it in Julia after `r.h = r.c = nothing` (or 0), or describe the "
        "model with --structure S.json"
    )


def rnn(d: dict, path: str, geometry: Geometry) -> tuple[Any, LayerReport]:
    """The `porting.model.RNN` of Knet's `RNN` struct `d`."""
    from porting.model import RNN

    if d.get("w") is None:
        raise PortingError(f"{_join(path, 'w')}: the RNN's weights are nothing; expected r.w")
    w = arrays.weight(d["w"], _join(path, "w"))
    states = {s: _state(d.get(s), _join(path, s)) for s in ("h", "c")}
    fields = {k: scalar(d[k]) for k in _RNN_FIELDS if k in d}
    for alias in ("rnnType", "bidirectional", "skipInput"):  # a struct written by other code
        if alias in d:
            fields[alias] = scalar(d[alias])
    flag = geometry.rnn()
    output = "sequence" if flag is None else flag
    if output not in ("sequence", "last"):
        raise PortingError(f"--rnn-output {output!r}: expected 'sequence' or 'last'")
    try:
        layer = RNN(w.array, fields, output=output)
    except PortingError as e:
        raise PortingError(f"{path}: Knet RNN (fields {sorted(fields)}): {e}") from None
    spec = layer.spec
    settings = [
        Setting("rnn", str(spec), FILE, ", ".join(f"{k} = {v}" for k, v in fields.items())),
        Setting("output", output, FLAG, "--rnn-output")
        if flag is not None
        else Setting(
            "output",
            output,
            DEFAULT,
            "not stored in the file: every step of y (Knet's r(x)); --rnn-output last reads "
            "y[:, :, end]",
        ),
    ]
    extra = sorted(set(map(str, d)) - set(_RNN_FIELDS) - _RNN_OTHER - set(fields))
    notes = [
        f"w {tuple(w.array.shape)} from {_join(path, 'w')} ({w.stored_as}): Knet's packed "
        f"weights, {spec.param_length} values",
        f"initial states h = {states['h']}, c = {states['c']}: zero",
    ]
    if extra:
        notes.append(f"fields not used: {', '.join(extra)}")
    return layer, LayerReport("rnn", path, f"Knet RNN {spec}", settings, notes)


def embed(d: dict, path: str, next_path: str) -> tuple[Any, LayerReport]:
    """The `porting.model.Embed` of a struct holding only `w`, first in a chain before the RNN
    at `next_path`."""
    from porting.model import Embed

    w = arrays.weight(d["w"], _join(path, "w"))
    try:
        layer = Embed(w.array)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    what = (
        f"embedding w[:, x]: a struct holding only w, first in the chain and followed by the "
        f"Knet RNN at {next_path}"
    )
    notes = [f"w {tuple(w.array.shape)} from {_join(path, 'w')} ({w.stored_as}): (dim, vocab)"]
    return layer, LayerReport("embed", path, what, [], notes)
