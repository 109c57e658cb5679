"""How arrays cross into Julia and back: pure NumPy, testable without Julia.

juliacall hands a NumPy array to Julia as a `PyArray` with NumPy's own shape and strides (not
reversed). A Julia-indexed array that is Fortran-ordered therefore arrives as exactly the
column-major Julia array of the same `size()`, sharing memory. Coming back, `np.asarray` of a
Julia `Array` is Fortran-ordered, Julia-indexed and shares Julia's memory
(docs/layout.md#juliacall-arrays).

>>> import numpy as np
>>> a, copied = to_julia_layout(np.zeros((5, 4, 3, 2), np.float32, order="F"))
>>> a.flags.f_contiguous, copied
(True, False)
>>> to_julia_layout(np.zeros((5, 4, 3, 2)))[1]  # C-ordered: one copy
True
"""

from __future__ import annotations

import numpy as np

from porting._checks import FLOAT_DTYPES
from porting.errors import PortingError


def to_julia_layout(a: np.ndarray, name: str = "array") -> tuple[np.ndarray, bool]:
    """The array juliacall should receive for the Julia-indexed `a`, and whether it was copied.

    Fortran-contiguous, aligned, native-endian float32/float64 arrays go through as they are
    (zero copy). Anything else is copied once into Fortran order: a C-ordered array would reach
    Julia as a strided view (a `PyArray` with row-major strides), which Knet's and NNlib's BLAS
    and im2col paths would have to copy or walk element by element, so we make it Fortran here,
    where the copy is one fast `memcpy`-like pass and is reported to the caller.
    """
    a = np.asarray(a)
    if a.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise PortingError(
            f"{name} has dtype {a.dtype} (shape {a.shape}); expected float32 or float64 "
            "(Julia's Array{Float32} or Array{Float64})"
        )
    if a.flags.f_contiguous and a.flags.aligned and a.dtype.isnative:
        return a, False
    # C-ordered (or strided, or byte-swapped) input: one copy into Julia's column-major order.
    return np.asfortranarray(a, dtype=a.dtype.newbyteorder("=")), True


def from_julia(obj, *, dtype: np.dtype | None = None, name: str = "result") -> np.ndarray:
    """A Julia array (juliacall `ArrayValue`) -> Julia-indexed NumPy array, without a copy.

    `np.asarray` uses the buffer protocol / `__array__` that juliacall provides for dense Julia
    arrays: same memory, Fortran-ordered, shape = Julia's `size()`. Objects that are not dense
    (a lazy `reshape`/`view` of another array) fall back to juliacall's `to_numpy()` (a copy).
    `dtype`, when given, is the element type the caller expects (Float32 stays Float32).
    """
    try:
        a = np.asarray(obj)
    except Exception:  # noqa: BLE001 - retry with juliacall's own conversion below
        a = None
    if (a is None or a.dtype == object) and hasattr(obj, "to_numpy"):
        a = np.asarray(obj.to_numpy())
    if a is None or a.dtype == object:
        raise PortingError(
            f"Julia returned {type(obj).__name__} for {name}; expected a dense Float32 or "
            "Float64 array"
        )
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise PortingError(
            f"Julia returned {a.dtype} for {name} but the inputs were {np.dtype(dtype)}; the "
            "element type must round-trip (Float32 stays Float32, Float64 stays Float64)"
        )
    return a
