"""Knet's activations in one table: one row per function, every concern of it in that row.

A row (`Activation`) holds, for one activation:

- `name` and `aliases`: porting's name (Knet's) and the other spellings accepted for it
  (`sigmoid`, `σ`, `silu`, ...; module prefixes such as `Knet.` are dropped before the lookup);
- `forward(x, dims)`: what Knet computes, in NumPy, in x's element type exactly as Knet's
  arithmetic does it (docs/knet.md#activations, #softmax), on a Julia-indexed array;
- `keras`: the Keras 3 built-in that computes it (`KerasEquivalent`: layer, activation name,
  axis handling);
- `magnitude(s, out, dims)`: the rule carrying a sum of magnitudes (or an error bound) `S`
  through it and adding its own rounding, given its output `out` (docs/numerics.md#propagation);
  `passes_magnitude`: `S` passes on unchanged (identity, relu: slope <= 1, computed exactly),
  `nonnegative`: every output is >= 0 (or NaN), so that an output is its own magnitude;
- `intermediate(z)`: the magnitudes of its own intermediate results at input `z` beyond
  `|f(z)|` (elu's `exp(z) - 1` cancels near 0), which porting.diagnosis adds to a bound.

Adding an activation is adding one row to `TABLE`. Nothing here imports TensorFlow, Keras,
porting.model or porting.diagnosis: every one of them imports this module.

>>> import numpy as np
>>> get("sigmoid").name, get("Knet.relu").forward(np.float32([-1, 2]), 1).tolist()
('sigm', [0.0, 2.0])
>>> get("hardswish").keras
KerasEquivalent(layer='Activation', activation='hard_swish', axis=None, float64_note=None, composite=None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError

__all__ = [
    "ACTIVATIONS",
    "ALIASES",
    "ROUND",
    "SELU_LAMBDA",
    "SELU_LAMBDA_ALPHA",
    "GELU_TANH_ALPHA",
    "GELU_TANH_LAMBDA",
    "TABLE",
    "Activation",
    "KerasEquivalent",
    "activate",
    "canonical",
    "get",
    "relu_keywords_forward",
    "relu_keywords_magnitude",
]

Array = npt.NDArray[Any]

ROUND = 4.0
"""Rounding allowance of exp-based activations, in units of `(sqrt(K)+2) eps |f|`."""

# Knet's selu constants (ops20/activation.jl): λ01 and λ01 * α01, rounded to the element type.
SELU_LAMBDA = 1.0507009873554805
SELU_LAMBDA_ALPHA = 1.7580993408473773


@dataclass(frozen=True)
class KerasEquivalent:
    """The Keras 3 built-in computing an activation: `layer` (a `keras.layers` class), with
    `activation` (a `keras.activations` name) as its argument where it is `Activation`;
    `composite`: the name of a composition of built-in layers porting.model.stages builds
    where no single built-in computes the function (`layer` is then its last layer).
    `axis`: None (element-wise), "keyword" (the layer takes `axis=`, Julia's `dims` in
    TensorFlow's order) or "last" (it works on the last axis only: another axis is moved last by
    a `Permute` and back). `float64_note`: why the built-in is not exact in float64 (warned)."""

    layer: str
    activation: str | None = None
    axis: Literal["keyword", "last"] | None = None
    float64_note: str | None = None
    composite: str | None = None


def _zeros_like(z: Array) -> Array:
    return np.zeros_like(z)


@dataclass(frozen=True)
class Activation:
    """One row of `TABLE` (see the module's docstring for each field)."""

    name: str
    forward: Callable[[Array, int], Array]
    keras: KerasEquivalent
    magnitude: Callable[[Array, Array, int], Array]
    aliases: tuple[str, ...] = ()
    passes_magnitude: bool = False
    nonnegative: bool = False
    elementwise: bool = True  # False: normalises along Julia dimension `dims`
    intermediate: Callable[[Array], Array] = _zeros_like


# --------------------------------------------------------------------------- Knet's arithmetic


def _identity(x: Array, dims: int) -> Array:
    return x


def _relu(x: Array, dims: int) -> Array:
    y: Array = np.maximum(x, x.dtype.type(0))
    return y


def _tanh(x: Array, dims: int) -> Array:
    return np.tanh(x)


def _sigm(x: Array, dims: int) -> Array:
    # Knet: x >= 0 ? 1/(1+exp(-x)) : (z = exp(x); z/(1+z))
    t = x.dtype.type
    with np.errstate(over="ignore"):
        z = np.exp(-np.abs(x))
        y: Array = np.where(x >= 0, t(1) / (t(1) + z), z / (t(1) + z)).astype(x.dtype, copy=False)
        return y


def _gelu(x: Array, dims: int) -> Array:
    # Ops21: x * (1 + erf(x / T(sqrt(2)))) / 2, exact (erf)
    from scipy.special import erf

    t = x.dtype.type
    with np.errstate(over="ignore"):
        y: Array = (x * (t(1) + erf(x / t(np.sqrt(2)))) / t(2)).astype(x.dtype, copy=False)
        return y


GELU_TANH_ALPHA = 0.044715
GELU_TANH_LAMBDA = float(np.sqrt(2 / np.pi))


def _gelu_tanh(x: Array, dims: int) -> Array:
    # NNlib's gelu (every release) / gelu_tanh (v0.9.28 on): 0.5x (1 + tanh(√(2/π)(x + αx³)))
    t = x.dtype.type
    u = t(GELU_TANH_LAMBDA) * (x + t(GELU_TANH_ALPHA) * x * x * x)
    y: Array = (t(0.5) * x * (t(1) + np.tanh(u))).astype(x.dtype, copy=False)
    return y


def _swish(x: Array, dims: int) -> Array:
    # Ops21: x * sigm(x)
    with np.errstate(over="ignore"):
        return (x * _sigm(x, dims)).astype(x.dtype, copy=False)


def _hardsigmoid(x: Array, dims: int) -> Array:
    # Ops21: x <= -3 ? 0 : x >= 3 ? 1 : (x + 3) / 6
    t = x.dtype.type
    with np.errstate(over="ignore"):
        mid = (x + t(3)) / t(6)
        y: Array = np.where(x <= -3, t(0), np.where(x >= 3, t(1), mid)).astype(x.dtype, copy=False)
        return y


def _hardswish(x: Array, dims: int) -> Array:
    # Ops21: x <= -3 ? 0 : x >= 3 ? x : x * (x + 3) / 6
    t = x.dtype.type
    with np.errstate(over="ignore"):
        mid = x * (x + t(3)) / t(6)
        return np.where(x <= -3, t(0), np.where(x >= 3, x, mid)).astype(x.dtype, copy=False)


def _selu(x: Array, dims: int) -> Array:
    # Knet: x >= 0 ? T(λ01) * x : T(λα01) * (exp(x) - 1)
    t = x.dtype.type
    with np.errstate(over="ignore"):
        neg = t(SELU_LAMBDA_ALPHA) * (np.exp(np.minimum(x, t(0))) - t(1))
        y: Array = np.where(x >= 0, t(SELU_LAMBDA) * x, neg).astype(x.dtype, copy=False)
        return y


def _elu(x: Array, dims: int) -> Array:
    t = x.dtype.type
    with np.errstate(over="ignore"):
        return np.where(x >= 0, x, np.exp(np.minimum(x, t(0))) - t(1)).astype(x.dtype, copy=False)


def _softmax(x: Array, dims: int) -> Array:
    axis = dims - 1
    with np.errstate(over="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        out: Array = e / e.sum(axis=axis, keepdims=True)
        return out


def _logsoftmax(x: Array, dims: int) -> Array:
    # Knet: z = x .- maximum(x; dims); z .- log.(sum(exp.(z); dims))
    axis = dims - 1
    with np.errstate(over="ignore"):
        z = x - x.max(axis=axis, keepdims=True)
        out: Array = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return out


def relu_keywords_forward(
    x: Array, max_value: float | None, negative_slope: float, threshold: float
) -> Array:
    """Ops21's `relu(x; max_value, negative_slope, threshold)`: `x >= max_value ? max_value :
    x >= threshold ? x : negative_slope * (x - threshold)`, in x's element type."""
    t = x.dtype.type
    below = t(negative_slope) * (x - t(threshold)) if negative_slope else np.zeros_like(x)
    y = np.where(x >= t(threshold), x, below)
    if max_value is not None:
        y = np.where(x >= t(max_value), t(max_value), y)
    return y.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- S rules


def _s_passes(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1, computed exactly: S passes on."""
    return s


def _s_sigm(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1/4, and the rounding of exp and a division."""
    result: Array = 0.25 * s + ROUND * np.abs(out)
    return result


def _s_tanh(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1, and its own rounding."""
    result: Array = s + ROUND * np.abs(out)
    return result


def _s_elu(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1, and the rounding of exp (for out < 0, exp(x) = out + 1)."""
    result: Array = s + ROUND * (np.abs(out) + np.where(out < 0, out + 1, 0))
    return result


def _s_selu(s: Array, out: Array, dims: int) -> Array:
    """Slope <= λα01 (x < 0) or λ01, and the rounding of exp and two products (for out < 0,
    λα01 exp(x) = out + λα01)."""
    a = np.abs(out) + np.where(out < 0, out + SELU_LAMBDA_ALPHA, 0)
    result: Array = SELU_LAMBDA_ALPHA * s + ROUND * a
    return result


def _s_gelu(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1.13; erf and the products round relative to |x| <= s."""
    result: Array = 1.13 * s + ROUND * np.abs(out)
    return result


def _s_swish(s: Array, out: Array, dims: int) -> Array:
    """Slope <= 1.1; exp and the products."""
    result: Array = 1.1 * s + ROUND * np.abs(out)
    return result


def _s_hardsigmoid(s: Array, out: Array, dims: int) -> Array:
    """(x + 3) / 6: the magnitudes of the terms."""
    result: Array = (s + 3.0) / 6.0
    return result


def _s_hardswish(s: Array, out: Array, dims: int) -> Array:
    """x * (x + 3) / 6: the magnitudes of the terms."""
    result: Array = s * (s + 3.0) / 6.0
    return result


def _s_softmax(s: Array, out: Array, dims: int) -> Array:
    """Along Julia dimension `dims`, as its Jacobian `diag(p) - p p'` bounds an input error,
    plus its own rounding (exp, the sum of `n` terms, and the spread `log(max p) - log(p)`)."""
    axis = dims - 1
    n = out.shape[axis]
    first = out * (s + (out * s).sum(axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(out > 0, np.log(out.max(axis=axis, keepdims=True)) - np.log(out), 0.0)
    result: Array = first + out * (ROUND + spread + n)
    return result


def _s_logsoftmax(s: Array, out: Array, dims: int) -> Array:
    """S after Knet's `logsoftmax(x; dims)`, `y = z .- L`, `z = x .- max`, `L = log(sum(exp(z)))`
    (docs/numerics.md#propagation): an input error `e` moves `y_i` by at most
    `e_i + sum_j p_j e_j` (`p = exp(y)`, the Jacobian `I - p'`); its own rounding is that of
    `z_i` (`|z_i| <= |y_i| + L`), of `L` (`exp` and a sum of `n` terms: `n` in absolute terms,
    as `log` turns a relative error into an absolute one) and of the final subtraction (`|y_i|`).
    `L = -max(y)` (the largest `z` is 0)."""
    axis = dims - 1
    n = out.shape[axis]
    p = np.exp(out)
    first = s + (p * s).sum(axis=axis, keepdims=True)
    a = np.abs(out)
    big_l = -out.max(axis=axis, keepdims=True)
    result: Array = first + ROUND * 2 * (a + big_l) + n
    return result


def relu_keywords_magnitude(s: Array, negative_slope: float, threshold: float) -> Array:
    """S after Ops21's `relu(x; max_value, negative_slope, threshold)`: slope <= max(1,
    |negative_slope|), applied to `x - threshold`."""
    result: Array = max(1.0, abs(negative_slope)) * (s + abs(threshold))
    return result


def _exp_part(z: Array) -> Array:
    """elu's `exp(z) - 1` cancels near 0, leaving rounding of order eps * exp(z)."""
    result: Array = 1.0 * np.exp(np.minimum(z, 0.0))
    return result


def _selu_exp_part(z: Array) -> Array:
    """selu's `λα01 (exp(z) - 1)`: as elu's, times about λα01."""
    result: Array = 1.76 * np.exp(np.minimum(z, 0.0))
    return result


# --------------------------------------------------------------------------- the table

_GELU_FLOAT64 = (
    "Keras's built-in gelu runs TensorFlow's erf, which in float64 is accurate to about 1e-9 "
    "only (Knet's erf to float64's eps): no exact built-in; verification in float64 will show it"
)

_GELU_TANH_FLOAT64 = (
    "gelu_tanh is built from Rescaling layers, whose constants (0.044715, sqrt(2/pi)) "
    "TensorFlow turns into float32 numbers before the cast: in float64 the result is good to "
    "about 1e-9 relative only; verification in float64 will show it"
)

TABLE: tuple[Activation, ...] = (
    Activation(
        "identity",
        _identity,
        KerasEquivalent("Identity"),
        _s_passes,
        aliases=("", "none", "linear"),
        passes_magnitude=True,
    ),
    Activation(
        "relu",
        _relu,
        KerasEquivalent("Activation", "relu"),
        _s_passes,
        passes_magnitude=True,
        nonnegative=True,  # max(0, x)
    ),
    Activation(
        "sigm",
        _sigm,
        KerasEquivalent("Activation", "sigmoid"),
        _s_sigm,
        aliases=("sigmoid", "σ"),
        nonnegative=True,  # 1/(1 + exp(-x))
    ),
    Activation(
        "tanh",
        _tanh,
        KerasEquivalent("Activation", "tanh"),
        _s_tanh,
        aliases=("tanh_fast", "tanh_"),
    ),
    Activation(
        "elu",
        _elu,
        KerasEquivalent("Activation", "elu"),
        _s_elu,
        intermediate=_exp_part,
    ),
    Activation(
        "selu",
        _selu,
        KerasEquivalent("Activation", "selu"),
        _s_selu,
        intermediate=_selu_exp_part,
    ),
    Activation(
        "gelu",
        _gelu,
        # keras.activations.gelu: exact (erf) by default, as Knet's
        KerasEquivalent("Activation", "gelu", float64_note=_GELU_FLOAT64),
        _s_gelu,
        aliases=("gelu_erf",),
    ),
    Activation(
        "gelu_tanh",
        _gelu_tanh,
        # no built-in: keras.activations.gelu(approximate=True) is no layer argument; the
        # same formula from Multiply, Rescaling and Activation("tanh") (built-in layers)
        KerasEquivalent("Multiply", composite="gelu_tanh", float64_note=_GELU_TANH_FLOAT64),
        _s_gelu,
        aliases=("gelu_sigmoid",),
    ),
    Activation(
        "swish",
        _swish,
        KerasEquivalent("Activation", "swish"),
        _s_swish,
        aliases=("silu",),
    ),
    Activation(
        "hardsigmoid",
        _hardsigmoid,
        KerasEquivalent("Activation", "hard_sigmoid"),  # relu6(x + 3) / 6
        _s_hardsigmoid,
        aliases=("hard_sigmoid",),
    ),
    Activation(
        "hardswish",
        _hardswish,
        KerasEquivalent("Activation", "hard_swish"),
        _s_hardswish,
        aliases=("hard_swish",),
    ),
    Activation(
        "softmax",
        _softmax,
        KerasEquivalent("Softmax", axis="keyword"),
        _s_softmax,
        nonnegative=True,  # exp(x - m) / sum
        elementwise=False,
    ),
    Activation(
        "logsoftmax",
        _logsoftmax,
        # keras.ops.log_softmax: the maximum subtracted, then the log of the sum of
        # exponentials, as Knet; on the last axis only
        KerasEquivalent("Activation", "log_softmax", axis="last"),
        _s_logsoftmax,
        aliases=("log_softmax",),
        elementwise=False,
    ),
)

_BY_NAME: Mapping[str, Activation] = {row.name: row for row in TABLE}

ACTIVATIONS: tuple[str, ...] = tuple(_BY_NAME)
"""porting's activation names (Knet's), in the table's order."""

ALIASES: Mapping[str, str] = {alias: row.name for row in TABLE for alias in row.aliases}
"""Other spellings (lower case, module prefix dropped) -> porting's name."""


def canonical(value: object, where: str) -> str:
    """Normalise an activation name (`"Knet.relu"`, `"NNlib.σ"`, `None` ...) to one of
    `ACTIVATIONS`, or raise `PortingError` naming `where`.

    >>> canonical("Knet.sigm", "dense1"), canonical(None, "conv1"), canonical("SiLU", "a")
    ('sigm', 'identity', 'swish')
    """
    if value is None:
        return "identity"
    if not isinstance(value, str):
        raise PortingError(
            f"{where}: activation={value!r}: expected a name, one of {', '.join(ACTIVATIONS)}"
        )
    key = value.rsplit(".", 1)[-1].strip().lower()
    key = ALIASES.get(key, key)
    if key not in _BY_NAME:
        raise PortingError(
            f"{where}: unknown activation {value!r}; expected one of {', '.join(ACTIVATIONS)} "
            "(Knet names; 'sigmoid' is accepted for sigm)"
        )
    return key


def get(name: object, where: str = "activation") -> Activation:
    """The row of `name` (any accepted spelling), or `PortingError`."""
    return _BY_NAME[canonical(name, where)]


def activate(name: str, x: Array, dims: int = 1) -> Array:
    """Knet's activation `name` on a Julia-indexed array, in x's dtype (identity: x itself,
    else a new array)."""
    row = _BY_NAME.get(name)
    if row is None:
        raise PortingError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return row.forward(x, dims)
