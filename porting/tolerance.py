"""The tolerance of a floating-point result: `tol_i = (sqrt(K) + 2) * eps * S_i + (sqrt(K) + 2) * tiny`.

The one place the formula lives (docs/numerics.md#tolerance explains it). A result element that sums K
rounded products in a format with machine epsilon `eps` carries an error of order
`sqrt(K) * eps * S`, `S` being the sum of the magnitudes added (see porting.magnitude):

- `sqrt(K)`: K rounded additions, growing like a random walk;
- `+ 1`: rounding the inputs into the lower precision when the two sides differ;
- `+ 1`: rounding the result itself;
- `tiny`: the smallest normal number, so results that underflow are not flagged.

>>> Tolerance.of(9, "float32").formula
'(sqrt(K)+2)*eps*S with K=9, eps=1.19e-07 (float32), S = sum of magnitudes (given)'
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from porting._checks import short_repr
from porting.errors import PortingError

__all__ = ["check_given", "Tolerance", "precision_dtype", "check_k", "K_MAX"]

K_MAX = 2**53
"""The largest `K` accepted: a count of terms beyond what float64 holds exactly is no count of
products any layer sums (and `sqrt(K) * eps` of that size bounds nothing)."""


def check_k(k: object) -> int:
    """`k` as a positive int no larger than `K_MAX`, or `PortingError` naming it.

    >>> check_k(9)
    9
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PortingError(
            f"k={short_repr(k)}: expected a positive integer (terms summed per element)"
        )
    if k > K_MAX:
        raise PortingError(
            f"k={short_repr(k)}: expected at most 2**53 terms summed per element (a larger count "
            "is not a number of products any layer sums)"
        )
    return int(k)


def precision_dtype(precision: DTypeLike) -> np.dtype[np.floating[Any]]:
    """`precision` as a floating-point NumPy dtype ("tf32" stores as float32), or `PortingError`.

    >>> precision_dtype("float16")
    dtype('float16')
    """
    if isinstance(precision, np.dtype) and precision.kind == "f":
        return precision  # already one (compare passes its operands' dtype)
    if isinstance(precision, str) and precision in ("tf32", "TF32"):
        return np.dtype(np.float32)  # storage; eps handled by caller
    dt: np.dtype[Any] | None
    try:
        dt = np.dtype(precision)
    except (TypeError, ValueError):
        dt = None
    if dt is None or not np.issubdtype(dt, np.floating):
        raise PortingError(
            f"precision={short_repr(precision)}: expected a floating-point dtype such as 'float32', "
            "'float64', 'float16' or 'tf32'"
        )
    return cast("np.dtype[np.floating[Any]]", dt)  # np.issubdtype checked it


@functools.lru_cache(maxsize=16)  # three formats in practice; compare asks once per call
def _format(dt: np.dtype[np.floating[Any]]) -> tuple[str, float, float]:
    """(name, eps, tiny) of a float format, in native byte order."""
    dt = dt.newbyteorder("=")
    fi = np.finfo(dt)
    return str(dt), float(fi.eps), float(fi.tiny)


@dataclass(frozen=True)
class Tolerance:
    """How the tolerance was derived: `tol_i = factor * eps * S_i + factor * tiny`."""

    k: int
    precision: str
    eps: float
    factor: float
    magnitude: str  # where S came from
    tiny: float = float(np.finfo(np.float32).tiny)

    @classmethod
    def of(
        cls, k: int, dtype: DTypeLike, magnitude: str = "sum of magnitudes (given)"
    ) -> Tolerance:
        """The tolerance `compare` uses for K-term sums computed in `dtype` (a float dtype, or
        "tf32" for TensorFloat-32 arithmetic: a 10-bit mantissa, float32's range).

        >>> Tolerance.of(9, "float32").factor
        5.0
        >>> Tolerance.of(4, "tf32").eps
        0.0009765625
        """
        k = check_k(k)
        if isinstance(dtype, str) and dtype.lower() == "tf32":
            name, eps, tiny = "tf32", 2.0**-10, float(np.finfo(np.float32).tiny)
        else:
            name, eps, tiny = _format(precision_dtype(dtype))
        return cls(
            k=k,
            precision=name,
            eps=eps,
            factor=math.sqrt(k) + 2.0,
            magnitude=magnitude,
            tiny=tiny,
        )

    @property
    def scale(self) -> float:
        """`factor * eps`: the bound is `scale * S + floor` (the form compare's scan uses)."""
        return self.factor * self.eps

    @property
    def floor(self) -> float:
        """`factor * tiny`, the bound where `S` is 0."""
        return self.factor * self.tiny

    def bound(self, magnitude: ArrayLike) -> NDArray[np.float64]:
        """Per-element tolerance for sums of magnitudes `magnitude` (float64)."""
        s = np.abs(np.asarray(magnitude, dtype=np.float64))
        return self.factor * (self.eps * s + self.tiny)

    @property
    def formula(self) -> str:
        return (
            f"(sqrt(K)+2)*eps*S with K={self.k}, eps={self.eps:.3g} ({self.precision}), "
            f"S = {self.magnitude}"
        )


def check_given(magnitude: NDArray[np.floating[Any]]) -> None:
    """A user's sums of magnitudes are >= 0 (`sum(|w*x|)`): a negative one is a signed output
    passed by mistake, refused here for porting.compare and porting.diagnose alike."""
    with np.errstate(invalid="ignore"):
        negative = bool(np.any(magnitude < 0))
    if negative:
        raise PortingError(
            f"magnitude has negative values (min {float(np.nanmin(magnitude)):.3g}); expected "
            "sums of magnitudes (sum of |w*x| per element), which are >= 0"
        )
