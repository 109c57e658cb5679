"""The hyperparameters of a Knet `RNN` (Knet.jl v1.4.10, src/ops20/rnn.jl), validated once.

>>> s = RNNSpec(input_size=3, hidden_size=5, rnn_type="lstm", num_layers=2, bidirectional=True)
>>> str(s), s.slots, s.output_size, s.param_length
('LSTM(input=3,hidden=5,bidirectional,layers=2)', 4, 10, 1080)

A *slot* is Knet's `layer` argument of `rnnparam`: one direction of one layer, 1-based, forward
and backward alternating (1 = forward layer 1, 2 = backward layer 1, 3 = forward layer 2, ...).
Gates are in Knet's (cuDNN's) order: LSTM i, f, n (new memory), o; GRU r (reset), z (update),
n (new); relu/tanh one gate. See docs/knet.md#rnn, #rnn-packing and #rnn-gates.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from porting._checks import INT_MAX, short_repr
from porting.errors import PortingError

__all__ = ["GATE_NAMES", "RNN_TYPES", "RNNSpec"]

RNN_TYPES = ("relu", "tanh", "lstm", "gru")
"""Knet's `rnnType` values; the index is Knet's (cuDNN's) `mode` field."""

GATE_NAMES: dict[str, tuple[str, ...]] = {
    "relu": ("h",),
    "tanh": ("h",),
    "lstm": ("i", "f", "n", "o"),
    "gru": ("r", "z", "n"),
}
"""Gate names in Knet's order: id g is the input matrix, id g + gates the recurrent one."""

_SHOW = {"relu": "RNNRELU", "tanh": "RNNTANH", "lstm": "LSTM", "gru": "GRU"}

# Fields a Julia export may carry that do not change what the RNN computes at inference.
_IGNORED_FIELDS = {"algo", "seed", "dataType", "w", "h", "c", "rnnDesc", "dropoutDesc"}
_IGNORED_FIELDS |= {"dx", "dhx", "dcx", "atype"}


def _positive_int(value, name: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 1 <= int(value) <= INT_MAX
    ):
        raise PortingError(f"RNN {name}={short_repr(value)}: expected a positive integer <= 2**62")
    return int(value)


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise PortingError(f"RNN {name}={short_repr(value)}: expected true or false")


def rnn_type_name(value) -> str:
    """`:lstm`, `"LSTM"`, `"lstm"` or Knet's mode 2 -> `"lstm"`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if 0 <= int(value) < len(RNN_TYPES):
            return RNN_TYPES[int(value)]
    elif isinstance(value, str):
        name = value.strip().lstrip(":").lower()
        if name in RNN_TYPES:
            return name
    raise PortingError(
        f"RNN rnnType={short_repr(value)}: expected one of :relu, :tanh, :lstm, :gru "
        "(or Knet's mode 0, 1, 2, 3)"
    )


@dataclass(frozen=True)
class RNNSpec:
    """What Knet's `RNN(inputSize, hiddenSize; rnnType, numLayers, bidirectional, skipInput,
    dropout)` computes, as a frozen, validated value.

    `dropout` is kept for the record only: Knet applies it only while differentiating
    (training), so inference ignores it. `skip_input` (cuDNN's SKIP_INPUT) adds the input
    itself to every gate of the first layer (both directions) instead of `W * x`, so it needs
    `input_size == hidden_size`, as cuDNN does.

    `reset_after=False` (GRU only) is the one variant Knet cannot compute: the reset gate
    multiplies the state BEFORE the recurrent matrix of the new gate, `n = tanh(Wn x + Rn (r .*
    h) + bWn + bRn)` (Flux's `GRUv3`, Keras `GRU(reset_after=False)`); Knet's (cuDNN's) GRU,
    the default `True`, multiplies after it, `r .* (Rn h + bRn)` (docs/flux.md#flux-gruv3).
    """

    input_size: int
    hidden_size: int
    rnn_type: str = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    skip_input: bool = False
    dropout: float = 0.0
    reset_after: bool = True

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "input_size", _positive_int(self.input_size, "inputSize"))
        set_(self, "hidden_size", _positive_int(self.hidden_size, "hiddenSize"))
        set_(self, "rnn_type", rnn_type_name(self.rnn_type))
        set_(self, "num_layers", _positive_int(self.num_layers, "numLayers"))
        set_(self, "bidirectional", _flag(self.bidirectional, "bidirectional"))
        set_(self, "skip_input", _flag(self.skip_input, "skipInput"))
        try:
            p = math.nan if isinstance(self.dropout, bool) else float(self.dropout)
        except (TypeError, ValueError, OverflowError):
            p = math.nan
        if not 0.0 <= p < 1.0:
            raise PortingError(
                f"RNN dropout={short_repr(self.dropout)}: expected a number in [0, 1)"
            )
        set_(self, "dropout", p)
        set_(self, "reset_after", _flag(self.reset_after, "resetAfter"))
        if not self.reset_after and self.rnn_type != "gru":
            raise PortingError(
                f"RNN resetAfter=false with rnnType={self.rnn_type}: only a GRU has a reset gate"
            )
        if self.skip_input and self.input_size != self.hidden_size:
            raise PortingError(
                f"RNN skipInput=true with inputSize={self.input_size} and "
                f"hiddenSize={self.hidden_size}: skipInput adds the input to every gate, so "
                "it needs inputSize == hiddenSize"
            )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_knet(cls, fields: Mapping) -> RNNSpec:
        """From Knet's field names, as a Julia export writes them (`inputSize`, `hiddenSize`,
        `numLayers`, `rnnType` or `mode`, `bidirectional` or `direction`, `skipInput` or
        `inputMode`, `dropout`); snake_case names are accepted too.

        >>> RNNSpec.from_knet({"inputSize": 4, "hiddenSize": 4, "mode": 3, "direction": 1})
        RNNSpec(input_size=4, hidden_size=4, rnn_type='gru', num_layers=1, bidirectional=True, skip_input=False, dropout=0.0, reset_after=True)
        """
        if not isinstance(fields, Mapping):
            raise PortingError(
                f"RNN fields: expected a mapping of Knet field names, got {fields!r}"
            )
        aliases = {
            "inputSize": "input_size",
            "hiddenSize": "hidden_size",
            "numLayers": "num_layers",
            "rnnType": "rnn_type",
            "mode": "rnn_type",
            "direction": "bidirectional",
            "inputMode": "skip_input",
            "skipInput": "skip_input",
            "resetAfter": "reset_after",
        }
        known = {"input_size", "hidden_size", "rnn_type", "num_layers", "bidirectional"}
        known |= {"skip_input", "dropout", "reset_after"}
        kwargs: dict = {}
        for key, value in fields.items():
            if key in _IGNORED_FIELDS:
                continue
            name = aliases.get(key, key)
            if name not in known:
                raise PortingError(
                    f"RNN field {key!r}: not a Knet RNN hyperparameter (expected inputSize, "
                    "hiddenSize, rnnType/mode, numLayers, bidirectional/direction, "
                    "skipInput/inputMode, dropout)"
                )
            if name in kwargs:
                raise PortingError(f"RNN field {key!r}: {name} given twice")
            kwargs[name] = value
        for need in ("input_size", "hidden_size"):
            if need not in kwargs:
                raise PortingError(f"RNN fields {sorted(fields)}: {need} is missing")
        return cls(**kwargs)

    def to_knet(self) -> dict:
        """Knet's constructor keywords (and the two sizes), for a Julia export; a GRU with
        `reset_after=False` adds porting's `resetAfter: false` (no Knet RNN computes it)."""
        out = {
            "inputSize": self.input_size,
            "hiddenSize": self.hidden_size,
            "rnnType": self.rnn_type,
            "numLayers": self.num_layers,
            "bidirectional": self.bidirectional,
            "skipInput": self.skip_input,
            "dropout": self.dropout,
        }
        if not self.reset_after:
            out["resetAfter"] = False
        return out

    # ------------------------------------------------------------------ derived sizes

    @property
    def gates(self) -> int:
        """Gates per direction: 1 (relu/tanh), 4 (lstm), 3 (gru)."""
        return len(GATE_NAMES[self.rnn_type])

    @property
    def ids(self) -> int:
        """Knet's `rnnids`: matrices (and biases) per slot, input ones then recurrent ones."""
        return 2 * self.gates

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def slots(self) -> int:
        """Knet's `L` in `(H, B, L)`: num_layers, doubled when bidirectional."""
        return self.num_layers * self.directions

    @property
    def output_size(self) -> int:
        """Rows of `y`: H, or 2H when bidirectional."""
        return self.hidden_size * self.directions

    @property
    def gate_names(self) -> tuple[str, ...]:
        return GATE_NAMES[self.rnn_type]

    def layer_of(self, slot: int) -> int:
        """0-based layer of a 0-based slot."""
        return slot // self.directions

    def is_backward(self, slot: int) -> bool:
        """Whether a 0-based slot runs backwards in time."""
        return self.bidirectional and slot % 2 == 1

    def input_size_of(self, layer: int) -> int:
        """Rows of a 0-based layer's input: X, then H (2H above bidirectional layers)."""
        return self.input_size if layer == 0 else self.output_size

    def matrix_input_size(self, slot: int) -> int:
        """Columns of a slot's input matrices W: 0 for skipInput's first layer."""
        layer = self.layer_of(slot)
        return 0 if (layer == 0 and self.skip_input) else self.input_size_of(layer)

    @property
    def param_length(self) -> int:
        """Length of Knet's packed weight vector (Knet's getRNNParamsSize)."""
        h, g = self.hidden_size, self.gates
        return sum(g * (h * self.matrix_input_size(s) + h * h + 2 * h) for s in range(self.slots))

    def length_formula(self) -> str:
        """How `param_length` is computed, with the numbers.

        >>> print(RNNSpec(3, 5, "gru", num_layers=2).length_formula())
        sum over slots of gates*(H*in + H*H + 2*H) with gates=3, H=5, in per slot [3, 5]: 3*(5*3 + 5*5 + 2*5) + 3*(5*5 + 5*5 + 2*5) = 330
        """
        h, g = self.hidden_size, self.gates
        ins = [self.matrix_input_size(s) for s in range(self.slots)]
        terms = " + ".join(f"{g}*({h}*{i} + {h}*{h} + 2*{h})" for i in ins)
        return (
            f"sum over slots of gates*(H*in + H*H + 2*H) with gates={g}, H={h}, "
            f"in per slot {ins}: {terms} = {self.param_length}"
        )

    def slot_name(self, slot: int) -> str:
        """'layer 2 backward' for 0-based slot 3 of a bidirectional RNN."""
        name = f"layer {self.layer_of(slot) + 1}"
        if self.bidirectional:
            name += " backward" if self.is_backward(slot) else " forward"
        return name

    def __str__(self) -> str:
        s = f"{_SHOW[self.rnn_type]}(input={self.input_size},hidden={self.hidden_size}"
        if self.bidirectional:
            s += ",bidirectional"
        if self.num_layers > 1:
            s += f",layers={self.num_layers}"
        if self.dropout > 0:
            s += f",dropout={self.dropout}"
        if self.skip_input:
            s += ",skipinput"
        if not self.reset_after:
            s += ",reset_before"
        return s + ")"
