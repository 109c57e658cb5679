"""Compare two results with a tolerance derived from floating-point arithmetic.

The tolerance is porting.tolerance's, element by element: `Tolerance.of(k, precision)` bounds
a sum of K rounded products by `(sqrt(K) + 2) * eps * S + (sqrt(K) + 2) * tiny`, where `S`
is the sum of the magnitudes added (porting.magnitude computes it; docs/numerics.md#tolerance,
#sum-of-magnitudes;
measured float32 errors on CPUs and GPUs stay within about 3 eps * S, TF32 reaches 1e-4 * S:
docs/numerics.md#measured).
`eps` is that of the lower-precision side (or of `precision=` when the computation ran in a
format other than the one its result is stored in). `S` is `magnitude=` when given (e.g. the
same convolution applied to `|w|` and `|x|`, which `verify_conv4` computes).

**When K or S is not given** (`compare(expected, actual)`), one rule, the library's only one
for "nothing else known" (`porting.testing.assert_ported_close` and `porting.diagnose` apply
it too): K = `ASSUMED_K` (4096) and S = sqrt(K) * max|expected| everywhere, what a sum of K
random-sign terms has when it cancels down to the largest output (`assumed_magnitude`).
Correct ports pass it, cancellation included; kernel flips, swapped axes, padding shifts and
flatten-order mistakes fail it; it is too loose to judge precision (TF32), for which pass `k=`
and `magnitude=` (docs/numerics.md#assumed).

The comparison is one pass over the data in cache-sized chunks, holding no input-sized buffers
beyond at most one copy when the two arrays differ in memory order.

>>> import numpy as np
>>> compare(np.float32([1, 2, 3]), np.float32([1, 2, 3])).ok
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from porting._checks import check_fits
from porting.errors import PortingError
from porting.tolerance import Tolerance, check_given, check_k

__all__ = [  # Tolerance re-exported from porting.tolerance
    "ASSUMED_K",
    "Comparison",
    "Tolerance",
    "assumed_magnitude",
    "compare",
    "float_operand",
]

ASSUMED_K = 4096
"""Terms per element assumed when `k` is not given (`compare`, `assert_ported_close`,
`diagnose`).

4096 covers a 3x3 convolution over 455 channels or a 4096-wide dense layer; the bound grows
like K, so a larger K only loosens it (pass `k=` for wider layers).
"""

_CHUNK = 1 << 17
"""Elements per chunk of the scan: a few chunk-sized temporaries stay in cache. 2^17 against
2^16: 21-22% less time per call on ResNet-50 layers at batch 2 (0.8-1.6M elements), 11-14% on
the resnet example's at batch 64, the same on small ones; 2^18 was no better overall (AMD EPYC,
2 cores: `benchmarks/bench_compare.py --layers --chunks 65536,131072,262144`)."""


_FORMATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def finite_max_abs(a: np.ndarray) -> float:
    """max|a| over the finite elements (0 when there are none)."""
    a = np.asarray(a)
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        m = np.abs(a[np.isfinite(a)])
    return float(m.max()) if m.size else 0.0


def _flat_max_abs(flat: np.ndarray) -> float:
    """`finite_max_abs` of a 1-D array, chunk by chunk (no input-sized temporary)."""
    top = 0.0
    for start in range(0, flat.size, _CHUNK):
        c = np.abs(flat[start : start + _CHUNK].astype(np.float64))
        c[~np.isfinite(c)] = 0.0
        top = max(top, float(c.max()))
    return top


def assumed_magnitude(expected: Any, k: int) -> np.ndarray:
    """The S assumed when no magnitude is known: sqrt(k) * max|expected| at every element (a
    read-only broadcast float64 view, no input-sized buffer).

    >>> float(assumed_magnitude(np.float32([1, -3]), 4)[0])
    6.0
    """
    e = np.asarray(expected)
    s = np.float64(math.sqrt(k) * _flat_max_abs(e.ravel()))
    return np.broadcast_to(s, e.shape)


def assumption(k: int, k_given: bool, peak: float) -> str:
    """Where S came from, when it was assumed (`Tolerance.magnitude`)."""
    kk = f"K={k}" if k_given else f"K={k} assumed"
    return (
        f"sqrt(K)*max|expected| = {math.sqrt(k) * peak:.3g} ({kk}; no magnitude given: "
        "each element taken as a sum of K random-sign terms, which cancel to about "
        "S/sqrt(K); pass k= and magnitude= for the exact bound)"
    )


def float_operand(a: object, name: str) -> NDArray[np.floating[Any]]:
    """`a` as an array `compare` accepts (float16, float32 or float64, of a size that fits), or
    one `PortingError` naming it as `name` (shared with porting.testing's assertions).

    >>> float_operand([1.0, 2.0], "expected").dtype
    dtype('float64')
    """
    try:
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001
        raise PortingError(f"{name} must be an array, got {type(a).__name__}: {e}") from None
    if arr.dtype.kind != "f":  # np.issubdtype(dtype, np.floating), without its cost per call
        raise PortingError(
            f"{name} has dtype {arr.dtype} (shape {arr.shape}); expected a floating-point array"
        )
    if arr.dtype.newbyteorder("=") not in _FORMATS:
        raise PortingError(
            f"{name} has dtype {arr.dtype} ({arr.dtype.itemsize * 8}-bit extended precision, "
            f"shape {arr.shape}); expected float16, float32 or float64, the formats Knet and "
            "TensorFlow compute in: convert it with .astype(np.float64)"
        )
    check_fits(arr.shape, arr.dtype, name)  # a broadcast view claiming terabytes
    return arr


@dataclass
class Comparison:
    """Outcome of `compare`. `ok` is True when every element is within its tolerance and the
    non-finite values (NaN, +-Inf) sit at the same positions on both sides."""

    ok: bool
    shape: tuple[int, ...]
    expected_dtype: str
    actual_dtype: str
    tolerance: Tolerance
    n_elements: int
    n_mismatched: int
    n_nonfinite_mismatched: int
    max_abs_error: float
    max_rel_error: float  # max |e - a| / (S + tiny/eps) over finite elements
    max_ulp: float  # max |e - a| in ULPs of the lower-precision side at |expected|; a secondary
    # figure only (docs/numerics.md#why-not-ulps)
    max_error_to_tolerance: float  # max |e - a| / tol: < 1 means within bounds
    worst_index: tuple[int, ...] | None
    worst_expected: float | None
    worst_actual: float | None
    worst_tolerance: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data: NaN and +-Inf figures (e.g. the ULP distance of a
        NaN) become the strings "nan", "inf" and "-inf", as in `Diagnosis.to_dict`, so that
        `json.dumps(..., allow_nan=False)` holds."""
        d = asdict(self)
        d["tolerance"]["formula"] = self.tolerance.formula
        return {k: _json_safe(v) for k, v in d.items()}

    def __str__(self) -> str:
        verdict = "agree" if self.ok else "DIFFER"
        lines = [
            f"{verdict}: {self.n_mismatched} of {self.n_elements} elements outside tolerance"
            + (
                f" ({self.n_nonfinite_mismatched} NaN/Inf mismatches)"
                if self.n_nonfinite_mismatched
                else ""
            ),
            f"  shape {self.shape}, expected {self.expected_dtype}, actual {self.actual_dtype}",
            f"  max abs error {self.max_abs_error:.3g}, max error / S {self.max_rel_error:.3g}, "
            f"max {self.max_ulp:.3g} ULP ({self.tolerance.precision})",
            f"  error / tolerance at worst element {self.max_error_to_tolerance:.3g} "
            f"(tolerance {self.tolerance.formula})",
        ]
        if self.worst_index is not None:
            lines.append(
                f"  worst at {self.worst_index}: expected {self.worst_expected!r}, "
                f"actual {self.worst_actual!r}, tolerance {self.worst_tolerance:.3g}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _json_safe(v: object) -> object:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


@functools.lru_cache(maxsize=16)
def _dtype_name(dt: np.dtype[Any]) -> str:
    return str(dt)


def _memory_order(a: NDArray[np.floating[Any]]) -> Literal["C", "F"]:
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _flat_views(
    expected: NDArray[np.floating[Any]],
    actual: NDArray[np.floating[Any]],
    magnitude: NDArray[np.floating[Any]] | None,
) -> tuple[Literal["C", "F"], list[NDArray[np.floating[Any]]]]:
    """1-D views in one common memory order; at most one of them is copied."""
    order = _memory_order(expected)
    arrays = [expected, actual] + ([magnitude] if magnitude is not None else [])
    flat = []
    for arr in arrays:
        contiguous = arr.flags.f_contiguous if order == "F" else arr.flags.c_contiguous
        flat.append(arr.ravel(order=order) if contiguous else np.asarray(arr).ravel(order=order))
    return order, flat


@dataclass(frozen=True)
class _Consts:
    work: np.dtype[np.floating[Any]]
    lower: np.dtype[np.floating[Any]]
    scale: np.floating[Any]  # of `work`
    floor: np.floating[Any]
    eps: float  # of `lower`
    magnitude: Any  # S at every element, where no magnitudes are given
    ulps: bool = True  # whether to find the largest error in ULPs (`compare(ulps=False)`)
    # whether to check, chunk by chunk, that the magnitudes are finite and >= 0 (the scan stops
    # at the first chunk where they are not, and compare looks element by element)
    check_magnitude: bool = False


@dataclass
class _Partial:
    n_bad: int = 0
    n_nonfinite_bad: int = 0
    max_abs: float = 0.0
    max_ulp: float = 0.0
    worst_ratio: float = -1.0
    worst_flat: int = -1
    first_nonfinite_bad: int = -1
    magnitude_unplain: bool = False  # a chunk's magnitudes were not all finite and >= 0


_EXPONENT_BITS: dict[int, tuple[type[np.signedinteger[Any]], int]] = {
    2: (np.int16, 0x7C00),
    4: (np.int32, 0x7F800000),
    8: (np.int64, 0x7FF0000000000000),
}


def _binade(
    x: NDArray[np.floating[Any]],
    lower: np.dtype[np.floating[Any]],
    out: NDArray[np.signedinteger[Any]] | None = None,
) -> NDArray[np.floating[Any]]:
    """The power of two of `|x|` in `lower`'s format, at least the smallest normal number (from
    the exponent bits, which carry no sign: one cheap pass instead of a nextafter per element).
    `np.spacing(|x|)` is this times eps, for normal and subnormal `x` alike (the spacing of
    subnormals is the smallest subnormal, the smallest normal times eps). `out`, an integer
    buffer of `lower`'s width and `x`'s size, is reused when given."""
    v = x.astype(lower, copy=False)
    itype, mask = _EXPONENT_BITS[lower.itemsize]
    bits = np.bitwise_and(v.view(itype), np.array(mask, dtype=itype), out=out)
    p2 = bits.view(lower)
    np.maximum(p2, lower.type(np.finfo(lower).smallest_normal), out=p2)
    return p2


def _scan(
    fe: NDArray[np.floating[Any]],
    fa: NDArray[np.floating[Any]],
    fm: NDArray[np.floating[Any]] | None,
    lo: int,
    hi: int,
    c: _Consts,
) -> _Partial:
    """The statistics of elements [lo, hi) of the flat views, one cache-sized chunk at a time.

    Every pass writes into one of three chunk-sized buffers reused from chunk to chunk (no
    allocation per chunk); each operation runs in the working type `c.work` (`dtype=`), on
    inputs that type holds exactly (the same or a wider format), as a copy into it would."""
    out = _Partial()
    work = c.work
    size = min(_CHUNK, max(hi - lo, 0))
    buf_d = np.empty(size, work)
    buf_t = np.empty(size, work)
    buf_p = np.empty(size, _EXPONENT_BITS[c.lower.itemsize][0]) if c.ulps else None
    for start in range(lo, hi, _CHUNK):
        stop = min(start + _CHUNK, hi)
        m = stop - start
        ce, ca = fe[start:stop], fa[start:stop]
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.subtract(ce, ca, out=buf_d[:m], dtype=work)  # inf - inf -> NaN, see below
        np.abs(d, out=d)
        # magnitudes given are >= 0 or NaN (compare checked them); else the one assumed
        tol = buf_t[:m]
        if fm is None:
            tol.fill(c.magnitude * c.scale + c.floor)
        else:
            cm = fm[start:stop]
            np.multiply(cm, c.scale, out=tol, dtype=work)
            # read from the chunk in cache, instead of two passes over the whole array first
            if c.check_magnitude and not (float(cm.min()) >= 0 and math.isfinite(tol.max())):
                out.magnitude_unplain = True  # NaN fails both comparisons
                return out
            tol += c.floor
        with np.errstate(invalid="ignore"):
            ratio = np.divide(d, tol, out=tol)  # NaN where an infinity or NaN is involved
        top = float(ratio.max())
        if not top <= 1.0:  # some element outside its tolerance, or NaN/Inf: look closer
            ce, ca = ce.astype(work, copy=False), ca.astype(work, copy=False)
            bad_idx = np.flatnonzero(~(ratio <= 1.0))
            be, ba = ce[bad_idx], ca[bad_idx]
            same_nonfinite = (np.isnan(be) & np.isnan(ba)) | (~np.isfinite(be) & (be == ba))
            real_bad = bad_idx[~same_nonfinite]
            if real_bad.size:
                out.n_bad += real_bad.size
                nonfinite = ~(np.isfinite(ce[real_bad]) & np.isfinite(ca[real_bad]))
                out.n_nonfinite_bad += int(nonfinite.sum())
                if out.first_nonfinite_bad < 0 and nonfinite.any():
                    out.first_nonfinite_bad = start + int(real_bad[np.argmax(nonfinite)])
            # keep NaN/Inf out of the statistics below
            finite = np.isfinite(d) & np.isfinite(ratio)
            if not finite.all():
                d = np.where(finite, d, 0.0)
                ratio = np.where(finite, ratio, 0.0)
            top = float(ratio.max())
        if top > out.worst_ratio:
            i = int(np.argmax(ratio))
            out.worst_ratio, out.worst_flat = float(ratio[i]), start + i
        out.max_abs = max(out.max_abs, float(d.max()))
        if buf_p is not None:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                p2 = _binade(ce, c.lower, buf_p[:m])
                ulp = np.divide(d, p2, out=buf_t[:m], dtype=work)  # in units of the binade
            out.max_ulp = max(out.max_ulp, float(ulp.max()) / c.eps)  # eps: a power of two
    if buf_p is None:
        out.max_ulp = math.nan
    return out


def _scans(
    fe: NDArray[np.floating[Any]],
    fa: NDArray[np.floating[Any]],
    fm: NDArray[np.floating[Any]] | None,
    n: int,
    consts: _Consts,
) -> list[_Partial]:
    """`_scan` of all `n` elements: two halves on two threads for a large input (NumPy
    releases the GIL in its loops), chunk by chunk."""
    parts = -(-n // (4 * _CHUNK))
    if parts > 1:  # the thread setting is read only where it can matter
        from porting._transpose import _threads

        parts = min(_threads(None), 2, parts)
    if parts <= 1:
        return [_scan(fe, fa, fm, 0, n, consts)]
    from porting._transpose import _executor

    bounds = [n * i // parts // _CHUNK * _CHUNK for i in range(parts)] + [n]
    futures = [
        _executor(parts - 1).submit(_scan, fe, fa, fm, bounds[i], bounds[i + 1], consts)
        for i in range(1, parts)
    ]
    return [_scan(fe, fa, fm, bounds[0], bounds[1], consts)] + [f.result() for f in futures]


def compare(
    expected: ArrayLike,
    actual: ArrayLike,
    *,
    k: int | None = None,
    magnitude: ArrayLike | None = None,
    precision: DTypeLike | None = None,
    ulps: bool = True,
) -> Comparison:
    """Compare `actual` with `expected` element by element, with a float-derived tolerance.

    `k` is the number of terms summed per element (conv4: kernel volume x input channels),
    default `ASSUMED_K`; `magnitude` the sum of magnitudes per element (same shape), default
    `assumed_magnitude(expected, k)` (see the module's docstring; an element-wise result's
    exact bound is `k=1, magnitude=abs(expected)`); a negative magnitude is refused, and where
    it is infinite it bounds nothing, so that element must match exactly;
    `precision` the format the lower-precision side computed in (default: the lower of the
    two dtypes; 'tf32' for TensorFloat-32 accumulation). Shapes must match exactly.
    `ulps=False` skips the secondary ULP figure (`max_ulp` is then NaN), for callers that do not
    report it: a third fewer passes over the data; every other figure is the same.

    >>> import numpy as np
    >>> c = compare(np.float64([1.0, 2.0]), np.float32([1.0, 2.0000002]), k=1)
    >>> c.ok, c.max_ulp
    (True, 1.0)
    >>> compare(np.float64([1.0, 2.0]), np.float64([1.0, 2.0000002])).ok  # not Float64 rounding
    False
    """
    e = float_operand(expected, "expected")
    a = float_operand(actual, "actual")
    if e.shape != a.shape:
        raise PortingError(
            f"expected has shape {e.shape} but actual has shape {a.shape}; shapes must match "
            "exactly (no broadcasting). A layout mix-up? Convert with porting.layout first."
        )
    k_given = k is not None
    k = check_k(k) if k is not None else ASSUMED_K
    m = None
    assumed = None
    if magnitude is not None:
        m = float_operand(magnitude, "magnitude")
        if m.shape != e.shape:
            raise PortingError(
                f"magnitude has shape {m.shape}; expected the shape of expected, {e.shape}"
            )
    _, flat = _flat_views(e, a, m)
    fe, fa = flat[0], flat[1]
    fm = flat[2] if m is not None else None
    s_assumed = 0.0  # S at every element when assumed
    if m is None:
        peak = _flat_max_abs(fe)
        s_assumed = math.sqrt(k) * peak
        assumed = assumption(k, k_given, peak)
    # the format of the lower-precision side, in native byte order (ULPs are read from its bits)
    lower = (e.dtype if e.dtype.itemsize <= a.dtype.itemsize else a.dtype).newbyteorder("=")
    tol_info = Tolerance.of(
        k,
        lower if precision is None else precision,
        magnitude=assumed if assumed is not None else "sum of magnitudes (given)",
    )
    if e.dtype.newbyteorder("=") != a.dtype.newbyteorder("="):
        work = np.dtype(np.float64)
    else:
        work = np.promote_types(e.dtype, np.float32)  # float16 inputs are compared in float32
    n = fe.size
    consts = _Consts(
        work=work,
        lower=np.dtype(lower),
        scale=work.type(tol_info.scale),
        floor=work.type(tol_info.floor),
        eps=float(np.finfo(lower).eps),
        magnitude=work.type(s_assumed),
        ulps=bool(ulps),
        check_magnitude=m is not None,
    )
    scans = _scans(fe, fa, fm, n, consts)
    if any(p.magnitude_unplain for p in scans):
        # the scan met a negative, NaN or infinite magnitude (or one whose tolerance overflows
        # the working type): look element by element, as the rule in the docstring says
        assert m is not None
        check_given(m)
        if np.isinf(m).any():
            # an infinite sum of magnitudes bounds nothing: never an infinite tolerance, the
            # element must match exactly (its tolerance is the floor alone)
            m = np.where(np.isinf(m), np.zeros((), m.dtype), m)
            fm = _flat_views(e, a, m)[1][2]
        scans = _scans(fe, fa, fm, n, replace(consts, check_magnitude=False))
    n_bad = sum(p.n_bad for p in scans)
    n_nonfinite_bad = sum(p.n_nonfinite_bad for p in scans)
    max_abs = max(p.max_abs for p in scans)
    max_ulp = max(p.max_ulp for p in scans)
    best = max(scans, key=lambda p: p.worst_ratio)  # earliest part wins ties
    worst_ratio, worst_flat = best.worst_ratio, best.worst_flat
    nonfinite_firsts = [p.first_nonfinite_bad for p in scans if p.first_nonfinite_bad >= 0]
    first_nonfinite_bad = nonfinite_firsts[0] if nonfinite_firsts else -1
    # |e - a| / S, with the tolerance's floor: (S + tiny/eps) in the denominator
    max_rel = max(worst_ratio, 0.0) * float(consts.scale)

    worst_index = worst_e = worst_a = worst_t = None
    if first_nonfinite_bad >= 0 and worst_ratio <= 1.0:
        worst_flat = first_nonfinite_bad  # only NaN/Inf placement differs: show that
    if worst_flat >= 0:
        order = _memory_order(e)
        worst_index = tuple(int(i) for i in np.unravel_index(worst_flat, e.shape, order=order))
        worst_e = float(e[worst_index])
        worst_a = float(a[worst_index])
        mv = abs(float(m[worst_index])) if m is not None else s_assumed
        worst_t = tol_info.scale * mv + tol_info.floor
    notes = []
    if assumed is None and not k_given:
        notes.append(f"K={ASSUMED_K} assumed (no k given)")
    return Comparison(
        ok=n_bad == 0,
        shape=tuple(e.shape),
        expected_dtype=_dtype_name(e.dtype),
        actual_dtype=_dtype_name(a.dtype),
        tolerance=tol_info,
        n_elements=int(n),
        n_mismatched=int(n_bad),
        n_nonfinite_mismatched=int(n_nonfinite_bad),
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        max_ulp=max_ulp,
        max_error_to_tolerance=max(worst_ratio, 0.0),
        worst_index=worst_index,
        worst_expected=worst_e,
        worst_actual=worst_a,
        worst_tolerance=worst_t,
        notes=notes,
    )
