"""Knet's packed RNN weight vector <-> per-slot, per-gate matrices (Knet.jl v1.4.10 `rnnparam`).

Knet keeps every weight of an `RNN` in one vector `r.w` (size `(1, 1, n)`) in cuDNN's layout:
first every matrix, slot by slot and within a slot by id (input matrices W of each gate, then
recurrent matrices R), then every bias in the same (slot, id) order (input biases bW, then
recurrent biases bR). A matrix of `H` rows and `in` columns is stored row after row, which is
why Knet's `rnnparam(r, slot, id, 1)` reads it as the *transposed* `(in, H)` Julia matrix.
With skipInput the first layer's input matrices (both directions) have length 0; their input
biases are still there. (docs/knet.md#rnn-packing, #rnn-gates)

>>> from porting.rnn.spec import RNNSpec
>>> spec = RNNSpec(2, 1, "relu")          # W (1x2), R (1x1), bW, bR
>>> w = unpack(spec, np.float32([1, 2, 3, 4, 5]))
>>> w.W[0].tolist(), w.R[0].tolist(), w.bW[0].tolist(), w.bR[0].tolist()
([[[1.0, 2.0]]], [[[3.0]]], [[4.0]], [[5.0]])
>>> pack(w).tolist()
[1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from porting._checks import read_only
from porting.errors import PortingError
from porting.rnn.spec import RNNSpec

__all__ = ["RNNWeights", "pack", "random_weights", "unpack", "weights_from_gates"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(dt, what: str) -> np.dtype:
    dt = np.dtype(dt)
    if dt not in _DTYPES:
        raise PortingError(f"{what} has element type {dt}: expected Float32 or Float64")
    return dt


@dataclass(frozen=True, eq=False)
class RNNWeights:
    """The weights of one Knet RNN, per 0-based slot, in Knet's gate order (see spec.py).

    - `W[s]`: `(gates, H, in)` input matrices as they multiply (`W * x`), or None where
      skipInput leaves them out;
    - `R[s]`: `(gates, H, H)` recurrent matrices;
    - `bW[s]`, `bR[s]`: `(gates, H)` input and recurrent biases.

    Knet's `rnnparam(r, layer, id, 1)` is `W[layer-1][id-1].T` (or `R[...][id-gates-1].T`);
    `rnnparam` here gives the same, 1-based.

    A value: the fields cannot be assigned (a frozen dataclass) and the arrays are read-only
    copies (`porting._checks.read_only`), so nothing computed from them goes stale.
    """

    spec: RNNSpec
    W: tuple[np.ndarray | None, ...]
    R: tuple[np.ndarray, ...]
    bW: tuple[np.ndarray, ...]
    bR: tuple[np.ndarray, ...]

    def __post_init__(self):
        spec, g, h = self.spec, self.spec.gates, self.spec.hidden_size
        for name in ("W", "R", "bW", "bR"):
            if len(getattr(self, name)) != spec.slots:
                raise PortingError(
                    f"RNN weights {name}: {len(getattr(self, name))} slots, expected "
                    f"{spec.slots} for {spec}"
                )
        dtypes = set()
        for s in range(spec.slots):
            n_in = spec.matrix_input_size(s)
            want = {
                "W": None if n_in == 0 else (g, h, n_in),
                "R": (g, h, h),
                "bW": (g, h),
                "bR": (g, h),
            }
            for name, shape in want.items():
                a = getattr(self, name)[s]
                got = None if a is None else tuple(np.shape(a))
                if got != shape:
                    raise PortingError(
                        f"RNN weights {name}[{s}] ({spec.slot_name(s)}) has shape {got}, "
                        f"expected {shape} for {spec}"
                    )
                if a is not None:
                    dtypes.add(_float_dtype(a.dtype, f"RNN weights {name}[{s}]"))
        if len(dtypes) != 1:
            raise PortingError(f"RNN weights mix element types {sorted(map(str, dtypes))}")
        for name in ("W", "R", "bW", "bR"):
            frozen = tuple(None if a is None else read_only(a) for a in getattr(self, name))
            object.__setattr__(self, name, frozen)

    @property
    def dtype(self) -> np.dtype:
        return self.R[0].dtype

    def astype(self, dtype) -> RNNWeights:
        """The same weights in another float type (Float32 <-> Float64)."""
        dt = _float_dtype(dtype, "astype")

        def conv(t):
            return tuple(None if a is None else a.astype(dt) for a in t)

        return RNNWeights(self.spec, conv(self.W), conv(self.R), conv(self.bW), conv(self.bR))

    def rnnparam(self, layer: int, id: int, par: int) -> np.ndarray | None:
        """Knet's `rnnparam(r, layer, id, par)`, 1-based: `par == 1` the matrix transposed
        `(in, H)` (None for skipInput's input matrices), `par == 2` the bias `(H,)`."""
        spec = self.spec
        for value, name, hi in (
            (layer, "layer", spec.slots),
            (id, "id", spec.ids),
            (par, "par", 2),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise PortingError(f"rnnparam {name}={value!r}: expected an integer in 1:{hi}")
            if not 1 <= int(value) <= hi:
                raise PortingError(
                    f"rnnparam {name}={value}: expected 1:{hi} for {spec}"
                    + (" (forward and backward slots alternate)" if name == "layer" else "")
                )
        s, i, g = int(layer) - 1, int(id) - 1, spec.gates
        if par == 2:
            return (self.bW[s] if i < g else self.bR[s])[i % g]
        m = self.W[s] if i < g else self.R[s]
        return None if m is None else m[i % g].T


def _flat_vector(w, spec: RNNSpec) -> np.ndarray:
    try:
        a = np.asarray(w)
    except (TypeError, ValueError) as e:  # a ragged list, ...
        raise PortingError(f"RNN packed weights: expected a numeric array ({e})") from None
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise PortingError(f"RNN packed weights: expected a numeric array, got {a.dtype}")
    _float_dtype(a.dtype, "RNN packed weights")
    if a.ndim == 0 or sum(d != 1 for d in a.shape) > 1:
        raise PortingError(
            f"RNN packed weights have shape {a.shape}: expected a vector (Knet's r.w is "
            f"(1, 1, n)) of length {spec.param_length}"
        )
    return a.reshape(-1)


def _owned(a: np.ndarray) -> np.ndarray:
    """A read-only copy of `a` (RNNWeights keeps it as it is: no second copy)."""
    out = a.copy()
    out.flags.writeable = False
    return out


def unpack(spec: RNNSpec, w) -> RNNWeights:
    """Knet's packed vector `r.w` (any shape `(n,)`, `(1, 1, n)`, ...) -> `RNNWeights`.

    The arrays are copies (the packed vector is not kept). A length that does not match the
    hyperparameters is a PortingError that gives the expected length and its formula.
    """
    if not isinstance(spec, RNNSpec):
        raise PortingError(f"unpack: expected an RNNSpec, got {type(spec).__name__}")
    v = _flat_vector(w, spec)
    if v.size != spec.param_length:
        raise PortingError(
            f"RNN packed weights have length {v.size}, expected {spec.param_length} for "
            f"{spec}: {spec.length_formula()}"
        )
    g, h = spec.gates, spec.hidden_size
    pos = 0
    Ws: list[np.ndarray | None] = []
    Rs: list[np.ndarray] = []
    for s in range(spec.slots):
        n_in = spec.matrix_input_size(s)
        # g input matrices, each H rows of n_in (row-major = Knet's transposed (in, H) view)
        Ws.append(_owned(v[pos : pos + g * h * n_in].reshape(g, h, n_in)) if n_in else None)
        pos += g * h * n_in
        Rs.append(_owned(v[pos : pos + g * h * h].reshape(g, h, h)))
        pos += g * h * h
    bWs, bRs = [], []
    for _ in range(spec.slots):
        bWs.append(_owned(v[pos : pos + g * h].reshape(g, h)))
        pos += g * h
        bRs.append(_owned(v[pos : pos + g * h].reshape(g, h)))
        pos += g * h
    assert pos == v.size
    return RNNWeights(spec, tuple(Ws), tuple(Rs), tuple(bWs), tuple(bRs))


def pack(weights: RNNWeights) -> np.ndarray:
    """`RNNWeights` -> Knet's packed vector (1-D; Knet stores it as `(1, 1, n)`)."""
    if not isinstance(weights, RNNWeights):
        raise PortingError(f"pack: expected RNNWeights, got {type(weights).__name__}")
    parts = []
    for s in range(weights.spec.slots):
        m = weights.W[s]
        if m is not None:
            parts.append(m.reshape(-1))
        parts.append(weights.R[s].reshape(-1))
    for s in range(weights.spec.slots):
        parts.append(weights.bW[s].reshape(-1))
        parts.append(weights.bR[s].reshape(-1))
    return np.concatenate(parts)


def weights_from_gates(spec: RNNSpec, W, R, bW, bR, dtype=None) -> RNNWeights:
    """`RNNWeights` from per-slot sequences (arrays are converted and checked), e.g. for tests
    and examples: `W[s]` `(gates, H, in)` or None, `R[s]` `(gates, H, H)`, biases `(gates, H)`."""

    def conv(t, name):
        try:
            items = list(t)
        except TypeError:
            raise PortingError(f"RNN weights {name}: expected one array per slot") from None
        out: list[np.ndarray | None] = []
        for a in items:
            if a is None:
                out.append(None)
                continue
            arr = np.asarray(a)
            out.append(arr.astype(dtype) if dtype is not None else arr)
        return tuple(out)

    return RNNWeights(spec, conv(W, "W"), conv(R, "R"), conv(bW, "bW"), conv(bR, "bR"))


def random_weights(
    spec: RNNSpec, rng=None, dtype=np.float32, scale: float | None = None
) -> RNNWeights:
    """Weights drawn like Knet's `RNN` constructor: matrices uniform in +-sqrt(6/(in+H))
    (xavier over Knet's transposed `(in, H)` matrix), biases uniform in +-`scale` (Knet uses 0,
    and 1 for LSTM forget biases; random biases make tests see every bias). For tests,
    examples and benchmarks."""
    rng = np.random.default_rng(rng)
    g, h = spec.gates, spec.hidden_size
    W, R, bW, bR = [], [], [], []
    for s in range(spec.slots):
        n_in = spec.matrix_input_size(s)
        if n_in:
            lim = np.sqrt(6.0 / (n_in + h))
            W.append(rng.uniform(-lim, lim, (g, h, n_in)).astype(dtype))
        else:
            W.append(None)
        lim = np.sqrt(6.0 / (2 * h))
        R.append(rng.uniform(-lim, lim, (g, h, h)).astype(dtype))
        b = 0.5 if scale is None else scale
        bW.append(rng.uniform(-b, b, (g, h)).astype(dtype))
        bR.append(rng.uniform(-b, b, (g, h)).astype(dtype))
    return RNNWeights(spec, tuple(W), tuple(R), tuple(bW), tuple(bR))
