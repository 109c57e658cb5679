"""Input validation shared by every public function: one `PortingError`, naming the value."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np

from porting.errors import PortingError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT_MAX = 2**62  # the largest geometry value accepted: no array dimension is larger


def short_repr(value: object, limit: int = 80) -> str:
    """`repr(value)` for an error message, cut to `limit` characters; a huge integer (which
    `repr` may refuse to print) is described by its number of digits.

    >>> short_repr(10**5000)
    '<integer of about 5000 digits>'
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<integer of about {round(value.bit_length() * 0.30103)} digits>"
    if isinstance(value, (list, tuple)):
        items = ", ".join(short_repr(v, limit) for v in value[:8])
        more = ", ..." if len(value) > 8 else ""
        text = (
            f"({items}{more}{',' if len(value) == 1 else ''})"
            if isinstance(value, tuple)
            else f"[{items}{more}]"
        )
        return text if len(text) <= limit else text[: limit - 3] + "..."
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - anything else repr refuses
        text = f"<{type(value).__name__} that cannot be printed>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(x: object) -> str:
    """Short description of an array-like for error messages: `float32 array of shape (3, 4)`."""
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return f"{type(x).__name__} {short_repr(x, 110)}"


def as_float_array(x: object, name: str, *, ndim: Sequence[int] | int | None = None) -> np.ndarray:
    """Return `x` as a Float32/Float64 ndarray without copying, or raise `PortingError`.

    Both C- and Fortran-ordered arrays are accepted; the shape is taken as Julia's `size()`.
    A non-native (big-endian) array is converted to native byte order (a copy).
    """
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any failure to make an array is the user's input
        raise PortingError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
    if not a.dtype.isnative and a.dtype.newbyteorder("=") in FLOAT_DTYPES:
        # a big-endian array (from a .mat or .npy written on such a machine): same values,
        # native bytes
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype not in FLOAT_DTYPES:
        raise PortingError(
            f"{name} has dtype {a.dtype} ({describe(a)}); expected float32 or float64 "
            "(Knet's Array{Float32} or Array{Float64})"
        )
    if a.size == 0:
        raise PortingError(f"{name} is empty (shape {a.shape}); expected at least one element")
    check_fits(a.shape, a.dtype, name)  # a broadcast view claiming terabytes
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise PortingError(f"{name} has {a.ndim} dimensions (shape {a.shape}); expected {want}")
    return a


def read_only(a: np.ndarray, what: str = "array") -> np.ndarray:
    """`a` as an array nobody can write through: `a` itself when neither it nor any array it
    views is writable, else a read-only copy (a view would still change when the caller writes
    into `a`). A copy that would not fit in memory (a broadcast view of terabytes) is a
    `PortingError` naming `what`.

    >>> w = np.zeros(3)
    >>> r = read_only(w)
    >>> r.flags.writeable, read_only(r) is r, np.shares_memory(r, w)
    (False, True, False)
    """
    base: object = a
    while isinstance(base, np.ndarray) and not base.flags.writeable:
        base = base.base
    if base is None or not isinstance(base, np.ndarray):
        return a
    check_fits(a.shape, a.dtype, what)
    out = a.copy(order="K")
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """Refuse an array larger than this machine's memory before allocating (or scanning) it:
    a broadcast view or a geometry claiming terabytes is a clear error, not a MemoryError deep
    in NumPy or an hours-long loop.

    >>> check_fits((3, 4), np.dtype(np.float32), "x")  # fits: nothing happens
    """
    need = math.prod(shape) * np.dtype(dtype).itemsize
    have = physical_memory()
    if have is not None and need > have:
        raise PortingError(
            f"{what} would be an array of shape {shape} ({need / 2**30:.3g} GiB of "
            f"{np.dtype(dtype)}), more than this machine's {have / 2**30:.3g} GiB of memory; "
            "expected sizes that fit (check padding, stride and the input size)"
        )


def int_tuple(value: object, n: int, name: str, *, minimum: int) -> tuple[int, ...]:
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
                f"{name}={short_repr(value)}: expected an integer or {n} integers (one per spatial dimension)"
            )
        items = tuple(int(v) for v in seq)
    else:
        raise PortingError(
            f"{name}={short_repr(value)}: expected an integer or {n} integers (one per spatial dimension)"
        )
    bad = [v for v in items if v < minimum]
    if bad:
        raise PortingError(
            f"{name}={short_repr(value)}: every entry must be >= {minimum}, got {short_repr(bad[0])}"
        )
    if any(v > INT_MAX for v in items):
        raise PortingError(
            f"{name}={short_repr(value)}: every entry must be <= 2**62 (no array dimension is "
            "larger)"
        )
    return items


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    """Refuse anything but one of `choices`; where they are integers, a bool or a float is
    refused too (`mode=True` is not `mode=1`)."""
    if type(value) in (int, str) and value in choices:  # the common case, fast
        return
    ok = False
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in choices)
    if not ints or (
        isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)
    ):
        try:
            ok = bool(value in choices)
        except Exception:  # noqa: BLE001 - e.g. an array: not one of the choices
            ok = False
    if not ok:
        raise PortingError(
            f"{name}={short_repr(value)}: expected one of {', '.join(map(repr, choices))}"
        )


def as_scalar(value: object, name: str) -> float:
    """A finite real number (Knet's `alpha`), or `PortingError` naming the value.

    >>> as_scalar(2, "alpha")
    2.0
    """
    if type(value) is float and math.isfinite(value):  # the common cases, fast
        return value
    if type(value) is int and -(2**1023) < value < 2**1023:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise PortingError(f"{name}={short_repr(value)}: expected a real number")
    try:
        out = float(value)
    except OverflowError:
        raise PortingError(f"{name}={short_repr(value)}: expected a finite real number") from None
    if not math.isfinite(out):
        raise PortingError(
            f"{name}={short_repr(value)}: expected a finite real number (not NaN or Inf)"
        )
    return out


def user_stacklevel() -> int:
    """The `stacklevel` for `warnings.warn` called here that points at the first caller
    outside the `porting` package (the user's line, however deep the call came from)."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)  # the function that will call warnings.warn: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def check_fits_memory(what: str, nbytes: int) -> None:
    """Refuse work that needs more than half this machine's RAM, before allocating any of it."""
    ram = physical_memory()
    if ram is not None and nbytes > ram // 2:
        raise PortingError(
            f"{what} needs about {_gb(nbytes)} of memory; this machine has {_gb(ram)} "
            "(expected sizes whose arrays fit in half of it)"
        )


def _gb(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"
