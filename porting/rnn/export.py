"""An `rnn` layer of a Julia export (`PortingKnet.export_model`, export version 2) -> porting.rnn.

>>> import numpy as np
>>> from porting.rnn import RNNSpec
>>> n = RNNSpec(3, 4, "gru").param_length
>>> entry = {
...     "name": "layer2", "kind": "rnn", "julia_type": "RNN",
...     "rnn": {"inputSize": 3, "hiddenSize": 4, "rnnType": "gru", "numLayers": 1,
...             "bidirectional": False, "skipInput": False, "dropout": 0.0,
...             "h": "nothing", "c": "nothing"},
...     "params": {"w": {"key": "layer2.w", "size": [1, 1, n], "eltype": "Float32"}},
... }
>>> r = from_export(entry, {"layer2.w": np.zeros((1, 1, n), np.float32)})
>>> str(r.spec), r.h, r.weights.dtype.name
('GRU(input=3,hidden=4)', None, 'float32')

The layer object (julia/README.md, "Export format", has the whole schema) carries, besides the
keys every layer has, an object `rnn` with Knet's names: `inputSize`, `hiddenSize`, `numLayers`
(integers >= 1), `rnnType` (`"relu"`, `"tanh"`, `"lstm"` or `"gru"`), `bidirectional`,
`skipInput` (booleans), `dropout` (a number in [0, 1), training only), and the state policies
`h`, `c`: `"nothing"` (Knet's `nothing`: zero initial state, final state discarded), `"zero"`
(Knet's `0`: zero initial state, final state kept), `"array"` (the state the RNN holds, in
`params.h` / `params.c`, `(H, B, L or 2L)`: the next call starts from it), or porting's
`"initial"` (a constant initial state `(H, 1, L or 2L)` in `params.h` / `params.c` that EVERY
call starts from, each sample alike: Flux's trained `state0`). Porting's optional
`resetAfter: false` marks a GRU whose reset gate applies before the recurrent matrix (Flux's
GRUv3), which no Knet RNN computes. `params.w` is Knet's
packed weight vector `r.w` as Knet stores it, `(1, 1, n)`.

Every problem is one PortingError naming the layer and the key (`rnn.hiddenSize`,
`params.w`, ...), what was found and what was expected; a weight vector of the wrong length
gives the expected length and its formula.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from porting.errors import PortingError
from porting.rnn.params import RNNWeights, unpack
from porting.rnn.spec import RNN_TYPES, RNNSpec

__all__ = ["STATE_POLICIES", "RNNExport", "from_export"]

STATE_POLICIES = ("nothing", "zero", "array", "initial")
"""How the export records Knet's `r.h` / `r.c`: `nothing`, `0`, or an array; `initial` is
porting's: a constant initial state `(H, 1, L or 2L)` that every call starts from (Flux's
trained `state0`, restored by `Flux.reset!`), the same for every sample of a batch."""

_INT_KEYS = ("inputSize", "hiddenSize", "numLayers")
_BOOL_KEYS = ("bidirectional", "skipInput")
_RNN_KEYS = _INT_KEYS + _BOOL_KEYS + ("rnnType", "dropout", "h", "c")
_OPTIONAL_KEYS = ("resetAfter",)  # porting's: false for Flux's GRUv3 (no Knet RNN computes it)
_ELTYPES = {"Float32": np.dtype(np.float32), "Float64": np.dtype(np.float64)}


@dataclass(frozen=True, eq=False)
class RNNExport:
    """One exported Knet RNN: its weights (with the spec) and its initial states as Knet's
    `r.h`, `r.c` hold them: `None` (`nothing`), `0`, or an array `(H, B, L or 2L)`, ready for
    `porting.rnn.forward(r.weights, x, h=r.h, c=r.c)`. `c` is `None` except for an LSTM (Knet
    reads the cell state only there). `h_policy`, `c_policy` are the recorded policies."""

    name: str
    weights: RNNWeights
    h: np.ndarray | int | None
    c: np.ndarray | int | None
    h_policy: str
    c_policy: str

    @property
    def spec(self) -> RNNSpec:
        return self.weights.spec


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _int(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PortingError(
            f"{where}: rnn.{key} = {value!r} ({_type_name(value)}); expected an integer >= 1"
        )
    if int(value) < 1:
        raise PortingError(f"{where}: rnn.{key} = {value}; expected an integer >= 1")
    return int(value)


def _bool(value, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise PortingError(
            f"{where}: rnn.{key} = {value!r} ({_type_name(value)}); expected true or false"
        )
    return value


def _dropout(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PortingError(
            f"{where}: rnn.dropout = {value!r} ({_type_name(value)}); expected a number in [0, 1)"
        )
    p = float(value)
    if not (math.isfinite(p) and 0.0 <= p < 1.0):
        raise PortingError(f"{where}: rnn.dropout = {value!r}; expected a number in [0, 1)")
    return p


def _policy(value, where: str, key: str) -> str:
    if not isinstance(value, str) or value not in STATE_POLICIES:
        raise PortingError(
            f"{where}: rnn.{key} = {value!r}; expected one of "
            + ", ".join(f'"{p}"' for p in STATE_POLICIES)
            + f" (Knet's r.{key} = nothing, 0, or a state array)"
        )
    return value


def _spec(fields, where: str) -> tuple[RNNSpec, str, str]:
    if not isinstance(fields, Mapping):
        raise PortingError(
            f"{where}: rnn = {fields!r}; expected an object with " + ", ".join(_RNN_KEYS)
        )
    for key in fields:
        if key not in _RNN_KEYS + _OPTIONAL_KEYS:
            raise PortingError(
                f"{where}: rnn.{key}: not a key of an exported RNN (expected "
                + ", ".join(_RNN_KEYS)
                + ")"
            )
    for key in _RNN_KEYS:
        if key not in fields:
            raise PortingError(
                f"{where}: rnn.{key} is missing (an exported RNN has " + ", ".join(_RNN_KEYS) + ")"
            )
    sizes = {key: _int(fields[key], where, key) for key in _INT_KEYS}
    flags = {key: _bool(fields[key], where, key) for key in _BOOL_KEYS}
    rnn_type = fields["rnnType"]
    if not isinstance(rnn_type, str) or rnn_type not in RNN_TYPES:
        raise PortingError(
            f"{where}: rnn.rnnType = {rnn_type!r}; expected one of "
            + ", ".join(f'"{t}"' for t in RNN_TYPES)
        )
    dropout = _dropout(fields["dropout"], where)
    reset_after = _bool(fields.get("resetAfter", True), where, "resetAfter")
    try:
        spec = RNNSpec(
            input_size=sizes["inputSize"],
            hidden_size=sizes["hiddenSize"],
            rnn_type=rnn_type,
            num_layers=sizes["numLayers"],
            bidirectional=flags["bidirectional"],
            skip_input=flags["skipInput"],
            dropout=dropout,
            reset_after=reset_after,
        )
    except PortingError as e:
        raise PortingError(f"{where}: rnn: {e}") from None
    return spec, _policy(fields["h"], where, "h"), _policy(fields["c"], where, "c")


def _param(params, name: str, where: str, arrays: Mapping) -> np.ndarray:
    ref = params[name]
    what = f"{where}: params.{name}"
    if not isinstance(ref, Mapping):
        raise PortingError(f"{what} = {ref!r}; expected {{'key', 'size', 'eltype'}}")
    for k in ("key", "size", "eltype"):
        if k not in ref:
            raise PortingError(f"{what}.{k} is missing; expected {{'key', 'size', 'eltype'}}")
    key, size, eltype = ref["key"], ref["size"], ref["eltype"]
    if not isinstance(key, str):
        raise PortingError(f"{what}.key = {key!r}; expected a string (an array name)")
    if (
        not isinstance(size, list)
        or not size
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise PortingError(
            f"{what}.size = {size!r}; expected a non-empty list of non-negative integers"
        )
    if not isinstance(eltype, str) or eltype not in _ELTYPES:
        raise PortingError(f'{what}.eltype = {eltype!r}; expected "Float32" or "Float64"')
    if key not in arrays:
        have = sorted(str(k) for k in arrays)
        shown = ", ".join(have[:8]) + (" ..." if len(have) > 8 else "")
        raise PortingError(
            f"{what}.key = {key!r}, but the arrays have no such entry (they have {shown or 'none'})"
        )
    a = arrays[key]
    if not isinstance(a, np.ndarray):
        raise PortingError(f"{what}: array {key!r} is a {type(a).__name__}; expected an array")
    if a.dtype != _ELTYPES[eltype]:
        raise PortingError(
            f"{what}: array {key!r} has element type {a.dtype}, but the .json says {eltype}"
        )
    if list(a.shape) != size:
        raise PortingError(
            f"{what}: array {key!r} has size {list(a.shape)}, but the .json says {size}"
        )
    return a


def _state(params, name: str, policy: str, spec: RNNSpec, dtype, where: str, arrays):
    if policy not in ("array", "initial"):
        if name in params:
            raise PortingError(
                f"{where}: params.{name} is given but rnn.{name} = {policy!r}; an exported "
                f'state array goes with rnn.{name} = "array"'
            )
        return None if policy == "nothing" else 0
    if name not in params:
        raise PortingError(
            f'{where}: rnn.{name} = "array" but params.{name} is missing (the state array)'
        )
    a = _param(params, name, where, arrays)
    if policy == "initial" and (a.ndim != 3 or a.shape[1] != 1):
        raise PortingError(
            f'{where}: params.{name} has size {list(a.shape)} but rnn.{name} = "initial"; '
            f"expected (H, 1, L or 2L) = ({spec.hidden_size}, 1, {spec.slots}): one state for "
            "every sample"
        )
    if policy == "initial" and not np.all(np.isfinite(a)):
        raise PortingError(f"{where}: params.{name} holds non-finite values; expected a state")
    want = (spec.hidden_size, spec.slots)
    shape3 = a.shape + (1,) * (3 - a.ndim) if 1 <= a.ndim <= 3 else None
    if shape3 is None or (shape3[0], shape3[2]) != want or shape3[1] < 1:
        raise PortingError(
            f"{where}: params.{name} has size {list(a.shape)}; expected (H, B, L or 2L) = "
            f"({spec.hidden_size}, B, {spec.slots}) for {spec}"
        )
    if a.dtype != dtype:
        raise PortingError(
            f"{where}: params.{name} is {a.dtype} but params.w is {dtype}; Knet requires one "
            "element type"
        )
    return a


def from_export(entry, arrays) -> RNNExport:
    """One `rnn` layer object of an export's `.json` plus the export's arrays (its `.npz`, as a
    mapping of entry name -> NumPy array, Julia-indexed) -> `RNNExport`."""
    if not isinstance(entry, Mapping):
        raise PortingError(
            f"RNN export entry: expected a layer object (a JSON object with 'rnn' and "
            f"'params'), got {_type_name(entry)}"
        )
    if not isinstance(arrays, Mapping):
        raise PortingError(
            f"RNN export arrays: expected a mapping of array names to arrays (the .npz), got "
            f"{_type_name(arrays)}"
        )
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise PortingError(f"RNN export entry: name = {name!r}; expected a string")
    where = f"layer {name!r}" if name else "RNN layer"
    kind = entry.get("kind", "rnn")
    if kind != "rnn":
        raise PortingError(f'{where}: kind = {kind!r}; expected "rnn"')
    for key in ("rnn", "params"):
        if key not in entry:
            raise PortingError(
                f"{where}: {key} is missing (an exported RNN has 'rnn' and 'params')"
            )
    spec, h_policy, c_policy = _spec(entry["rnn"], where)
    params = entry["params"]
    if not isinstance(params, Mapping):
        raise PortingError(f"{where}: params = {params!r}; expected an object with 'w'")
    for key in params:
        if key not in ("w", "h", "c"):
            raise PortingError(f"{where}: params.{key}: expected only w, h and c")
    if "w" not in params:
        raise PortingError(f"{where}: params.w is missing (Knet's packed weight vector r.w)")
    w = _param(params, "w", where, arrays)
    try:
        weights = unpack(spec, w)
    except PortingError as e:
        raise PortingError(f"{where}: params.w: {e}") from None
    h = _state(params, "h", h_policy, spec, w.dtype, where, arrays)
    c = _state(params, "c", c_policy, spec, w.dtype, where, arrays)
    if spec.rnn_type != "lstm":
        c = None
    return RNNExport(name or "rnn", weights, h, c, h_policy, c_policy)
