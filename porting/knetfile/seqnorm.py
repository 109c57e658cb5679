"""Batch normalisation, RNNs and embeddings found in a loaded JLD2 tree (docs/knet.md#batchnorm,
#batchnorm-ops21, #rnn, #embed).

- Knet's `bnmoments()` is a `BNMoments` struct with fields `momentum`, `mean`, `var`, `meaninit`,
  `varinit`; `bnparams(C)` one vector `[scale; bias]` of length 2C. A layer struct holding a
  `BNMoments` field (any name) and a weight `w` is a conv/dense layer followed by
  `batchnorm(y, moments, params)` (Knet's cifar10 `cnn_batchnorm`: conv4, batchnorm, relu,
  pool); without `w` it is a batchnorm layer. Its params are the one other field holding 2C
  numbers; none is a non-affine batchnorm. `eps` is not stored: Knet's default 1e-5.
  Layers21's `BatchNorm` stores its statistics, `bias`, `scale`, `epsilon` and `update`.
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
    "moments_count",
    "is_rnn",
    "is_w_only",
    "is_layers21_batchnorm",
    "layers21_batchnorm",
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


def moments_count(d: dict) -> int:
    """How many fields of the struct `d` hold a `BNMoments`."""
    return sum(1 for v in d.values() if is_bnmoments(v))


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


def is_layers21_batchnorm(node: Any) -> bool:
    return isinstance(node, dict) and {"mean", "var", "bias", "scale", "epsilon"} <= set(node)


def layers21_batchnorm(d: dict, path: str) -> tuple[Any, LayerReport]:
    """Knet Layers21 `BatchNorm` (fields dims, mean, var, bias, scale, use_estimates, update,
    epsilon, format, mode, ...): `((x .- mean) ./ sqrt.(epsilon .+ var)) .* scale .+ bias`
    per channel at inference; its epsilon and update (momentum) are stored."""
    from porting.model import BatchNorm

    def refuse(why: str):
        return PortingError(f"{path}: Knet Layers21 BatchNorm with {why}")

    dims = d.get("dims")
    if dims is not None:
        t = tuple(int(x) for x in np.atleast_1d(np.asarray(dims)).ravel())
        if not t or t != (*range(1, len(t)), len(t) + 1):
            raise refuse(
                f"dims = {dims!r}: porting converts per-channel statistics (dims nothing or "
                "(1, ..., N-2, N))"
            )
    use = scalar(d.get("use_estimates"))
    if use is not None and use is not True and use != 1:
        raise refuse(f"use_estimates = {use!r}: it normalises with each batch's own statistics")
    for name, ok in (("format", 0), ("mode", 1)):  # CUDNN_TENSOR_NCHW, CUDNN_NORM_PER_CHANNEL
        v = scalar(d.get(name, ok))
        if v is not None and v != ok:
            raise refuse(f"{name} = {v!r}; porting converts {name} = {ok} (per channel, NCHW)")
    if d["mean"] is None or d["var"] is None:
        raise refuse(
            "mean/var nothing: it never ran on data, so the file holds no running statistics"
        )
    got = {n: arrays.weight(d[n], _join(path, n)) for n in ("mean", "var", "bias", "scale")}
    eps = _number(d["epsilon"], _join(path, "epsilon"), "epsilon")
    momentum = _number(d.get("update", 0.1), _join(path, "update"), "update")
    bnp = np.concatenate([got["scale"].array.reshape(-1), got["bias"].array.reshape(-1)])
    try:
        layer = BatchNorm(got["mean"].array, got["var"].array, bnp, eps=eps, momentum=momentum)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    settings = [
        Setting("eps", eps, FILE, "epsilon"),
        Setting("momentum", momentum, FILE, "update"),
    ]
    notes = [
        f"{n} {tuple(w.array.shape)} from {_join(path, n)} ({w.stored_as})" for n, w in got.items()
    ]
    return layer, LayerReport("batchnorm", path, "Knet Layers21 BatchNorm", settings, notes)


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
