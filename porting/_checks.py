"""Input validation shared by every public function: one `PortingError`, naming the value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from porting.errors import PortingError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(x) -> str:
    """Short description of an array-like for error messages: `float32 array of shape (3, 4)`."""
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_float_array(x, name: str, *, ndim: Sequence[int] | int | None = None) -> np.ndarray:
    """Return `x` as a Float32/Float64 ndarray without copying, or raise `PortingError`.

    Both C- and Fortran-ordered arrays are accepted; the shape is taken as Julia's `size()`.
    """
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any failure to make an array is the user's input
        raise PortingError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
    if a.dtype not in FLOAT_DTYPES:
        raise PortingError(
            f"{name} has dtype {a.dtype} ({describe(a)}); expected float32 or float64 "
            "(Knet's Array{Float32} or Array{Float64})"
        )
    if a.size == 0:
        raise PortingError(f"{name} is empty (shape {a.shape}); expected at least one element")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise PortingError(f"{name} has {a.ndim} dimensions (shape {a.shape}); expected {want}")
    return a


def int_tuple(value, n: int, name: str, *, minimum: int) -> tuple[int, ...]:
    """Expand a scalar or per-dimension value to an `n`-tuple of ints >= `minimum`.

    >>> int_tuple(2, 3, "stride", minimum=1)
    (2, 2, 2)
    """
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        items = (int(value),) * n
    elif isinstance(value, (list, tuple, np.ndarray)):
        seq = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        if len(seq) != n or not all(
            isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in seq
        ):
            raise PortingError(
                f"{name}={value!r}: expected an integer or {n} integers (one per spatial dimension)"
            )
        items = tuple(int(v) for v in seq)
    else:
        raise PortingError(
            f"{name}={value!r}: expected an integer or {n} integers (one per spatial dimension)"
        )
    bad = [v for v in items if v < minimum]
    if bad:
        raise PortingError(f"{name}={value!r}: every entry must be >= {minimum}, got {bad[0]}")
    return items


def check_choice(value, name: str, choices: Sequence) -> None:
    if value not in choices:
        raise PortingError(f"{name}={value!r}: expected one of {', '.join(map(repr, choices))}")


def as_scalar(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.number)):
        raise PortingError(f"{name}={value!r}: expected a real number")
    return float(value)
