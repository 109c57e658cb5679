"""`diagnose`: name the most likely cause of a mismatch between a Knet result and its port."""

from __future__ import annotations

import numbers

import numpy as np

from porting import magnitude as S
from porting._checks import check_choice, check_fits, short_repr
from porting.comparison import ASSUMED_K, assumed_magnitude, compare
from porting.diagnosis import _context, _hypotheses, _outputs, _score
from porting.diagnosis._result import CAUSES, Diagnosis, Finding
from porting.errors import PortingError
from porting.geometry import ConvGeometry
from porting.layout import SPATIAL_CHOICES
from porting.tolerance import check_k

__all__ = ["diagnose", "K_ASSUMED", "MAX_POSITIONS"]

#: Terms per output assumed when neither w/x nor k are given: porting.compare's `ASSUMED_K`
#: (one rule for "nothing else known" in the whole library).
K_ASSUMED = ASSUMED_K
#: Output positions at which a hypothesis is recomputed (all of them for smaller outputs).
MAX_POSITIONS = 4096

_OK_DTYPES = ("float16", "float32", "float64", "bfloat16")


def _output_array(v, name: str) -> np.ndarray:
    try:
        a = np.asarray(v)
    except Exception as e:  # noqa: BLE001 - anything that is not an array is bad input
        raise PortingError(f"{name} must be an array, got {type(v).__name__}: {e}") from None
    if a.dtype.name not in _OK_DTYPES:
        raise PortingError(
            f"{name} has dtype {a.dtype} (shape {a.shape}); expected a floating-point array "
            "(float16, bfloat16, float32 or float64)"
        )
    if a.ndim == 0 or a.size == 0:
        raise PortingError(f"{name} has shape {a.shape}; expected a non-empty array (TF layout)")
    check_fits(a.shape, np.dtype(np.float64), name)  # worked on in float64; a broadcast view
    if a.dtype.name == "bfloat16":
        a = a.astype(np.float32)
    if not a.dtype.isnative:  # big-endian data: the same values in native bytes
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _effective_precision(*arrays: np.ndarray) -> str:
    """float32 if either side is float32 or narrower, or a float64 array holding only float32
    values (a float32 result converted); else float64. Narrower storage (float16, bfloat16) is
    judged as a precision finding, never accepted as rounding."""
    for arr in arrays:
        if arr.dtype != np.float64:
            return "float32"
    for arr in arrays:
        flat = arr.ravel()
        if flat.size > 65536:
            flat = flat[np.random.default_rng(0).choice(flat.size, 65536, replace=False)]
        flat = flat[np.isfinite(flat)]
        with np.errstate(over="ignore"):
            if flat.size and np.array_equal(flat.astype(np.float32).astype(np.float64), flat):
                return "float32"
    return "float64"


def _check_k(k) -> int | None:
    if k is None:
        return None
    return check_k(k)


def diagnose(
    expected,
    actual,
    *,
    w=None,
    x=None,
    bias=None,
    padding=0,
    stride=1,
    dilation=1,
    mode=0,
    alpha=1,
    geometry: ConvGeometry | None = None,
    spatial: str = "reverse",
    activation=None,
    k: int | None = None,
    magnitude=None,
    max_positions: int = MAX_POSITIONS,
) -> Diagnosis:
    """Name the most likely cause of the differences between `expected` and `actual`.

    `expected` is the Knet side's result and `actual` the port's, both in TensorFlow layout
    (`(N, H, W, C)` for a 2-d conv, `(N, out)` for a dense layer). The cause is one of
    `porting.diagnose.CAUSES`; `rounding` means the differences are within porting.compare's
    floating-point bound: no bug.

    With the Knet side's inputs, the hypotheses are tested by recomputation (NumPy, no
    TensorFlow): `w` `(W1, W2, Cin, Cout)` and `x` `(X1, X2, Cin, N)` Julia-indexed, with
    conv4's `padding`, `stride`, `dilation` (Julia order), `mode`, `alpha` and `spatial` as
    used for the port (see porting.layout); or a dense layer: `w` `(out, in)` and `x`
    `(X1, X2, C, N)` (the input of `mat`) or `(in, N)`. A conv's keywords may come already
    parsed instead, as a `porting.geometry.ConvGeometry` in `geometry` (padding, stride,
    dilation and mode then left at their defaults). `bias` (Knet's) and `activation`
    ("relu", "sigmoid", "tanh" or a NumPy function) when the outputs include them; Knet's
    `alpha` is inferred when not given. Without w and x only the outputs are examined (axis
    permutations, mirror images, border-only errors, storage format, error size); `k` (terms
    per output) and `magnitude` (sum of |w*x| per output) then set the tolerance as in
    porting.compare, else porting.compare's rule for "nothing else known": K = `K_ASSUMED`
    (compare's `ASSUMED_K`, 4096) and S = sqrt(K) * max|expected|.

    Returns a `Diagnosis`: `cause`, `evidence`, `confidence`, `alternatives` (the other causes
    tested, best first), `comparison` (porting.compare's report), and the error arrays for
    plots. A correct port, in float32 or float64, gives `rounding`.

    >>> import numpy as np
    >>> from porting import knet, layout
    >>> from porting.examples import seed002
    >>> ex = seed002()  # Knet conv4(w, x; padding=1) vs tf.nn.conv2d on the unrotated kernel
    >>> y = knet.conv4(ex["w"], ex["x"], padding=1, backend="reference")
    >>> expected = layout.activations_to_tf(np.asarray(y), spatial="keep")
    >>> actual = np.float32(ex["tf_printed"]).reshape(1, 5, 5, 1)
    >>> diagnose(expected, actual, w=ex["w"], x=ex["x"], padding=1, spatial="keep").cause
    'kernel_flip'
    """
    e = _output_array(expected, "expected")
    a = _output_array(actual, "actual")
    check_choice(spatial, "spatial", SPATIAL_CHOICES)
    k = _check_k(k)
    if (
        isinstance(max_positions, bool)
        or not isinstance(max_positions, (numbers.Integral, np.integer))
        or max_positions < 1
    ):
        raise PortingError(
            f"max_positions={short_repr(max_positions)}: expected a positive integer"
        )
    # a limit: any value beyond the number of outputs an array can have means "all of them"
    max_positions = min(int(max_positions), 2**62)
    if (w is None) != (x is None):
        raise PortingError("pass both w and x (the Knet side's inputs), or neither")
    notes: list[str] = []
    ctx = None
    if w is not None:
        ctx = _context.make_context(
            w,
            x,
            bias=bias,
            padding=padding,
            stride=stride,
            dilation=dilation,
            mode=mode,
            alpha=alpha,
            geometry=geometry,
            spatial=spatial,
            activation=activation,
        )
        if e.shape != ctx.out_shape:
            what = "conv4(w, x)" if ctx.kind == "conv" else "w * mat(x)"
            raise PortingError(
                f"expected has shape {e.shape} but {what} gives {ctx.out_shape} in TensorFlow "
                f"layout (spatial={spatial!r}); pass expected in TensorFlow layout "
                "(porting.layout.activations_to_tf) and the keywords the Knet side used"
            )
        if k is not None or magnitude is not None:
            notes.append(
                "k and magnitude were computed from w and x; the values passed are ignored"
            )
        kk, mag = ctx.k, ctx.magnitude
        basis = ctx.describe
    else:
        if bias is not None or activation is not None:
            raise PortingError(
                "bias and activation are used only with w and x (the recomputation); drop them"
            )
        kk = k if k is not None else K_ASSUMED
        if magnitude is not None:
            mag = S.of_outputs(e, _output_array(magnitude, "magnitude"))
            if mag.shape != e.shape:
                raise PortingError(
                    f"magnitude has shape {mag.shape}; expected the shape of expected, {e.shape}"
                )
            basis = f"outputs only, with the magnitudes given (K = {kk})"
        else:
            mag = np.asarray(assumed_magnitude(e, kk))
            basis = (
                f"outputs only: the float bound assumes K = {kk} terms per output with sums of "
                "magnitudes sqrt(K) x max|expected| (porting.compare's rule when nothing else "
                "is known; pass w and x, or k and magnitude, for an exact bound and for the "
                "hypotheses that need recomputation)"
            )
    prec = _effective_precision(e, a)
    tol = compare(np.zeros(1), np.zeros(1), k=kk, precision=prec).tolerance
    with np.errstate(all="ignore"):  # compare's ULP figures may overflow where expected is 0
        assumed = ctx is None and magnitude is None
        return _diagnose(e, a, ctx, kk, mag, prec, tol, basis, notes, max_positions, assumed)


def _stored_in_half(e, a, kk, mag, prec, tol) -> bool:
    """Whether actual's values are float16/bfloat16 numbers (expected's are not), within that
    format's bound: seen from the bits, whatever bound was assumed."""
    found = _outputs.heuristics(e, a, k=kk, M=mag, prec=prec, tol=tol, context=False)
    return any(f.hypothesis.startswith("stored_") and f.explains for f in found)


def _diagnose(
    e, a, ctx, kk, mag, prec, tol, basis, notes, max_positions, assumed=False
) -> Diagnosis:
    if ctx is not None:
        status = _hypotheses.check_expected(ctx, e, a, tol, max_positions)
        if status == "swapped":
            e, a = a, e
        mag = ctx.magnitude
        notes += ctx.notes

    def settled(cause, evidence, comparison, magnitude) -> Diagnosis:
        """A diagnosis decided before any hypothesis is tested."""
        return Diagnosis(
            cause=cause,
            confidence=1.0,
            evidence=evidence,
            alternatives=[],
            basis=basis,
            comparison=comparison,
            notes=notes,
            expected=e,
            actual=a,
            magnitude=magnitude,
        )

    comparison = None
    if e.shape == a.shape:
        comparison = compare(e, a, k=kk, magnitude=mag, precision=prec)
        # two sides of nothing (all NaN, all zero) are equal, but no computation is shown to
        # be right: said below as such, never as rounding in some precision format
        # (with an assumed bound, loose enough for half precision, a result stored in
        # float16/bfloat16 is still named from its bits, below)
        if (
            comparison.ok
            and _empty_sides(e, a) is None
            and not (assumed and _stored_in_half(e, a, kk, mag, prec, tol))
        ):
            c = comparison
            ev = (
                f"all {c.n_elements} elements agree within the {prec} bound (max error "
                f"{c.max_error_to_tolerance:.2g} of the tolerance, {c.max_ulp:.3g} ULP; tolerance "
                f"{c.tolerance.formula}): differences of this size come from the order of "
                "accumulation, not a bug"
            )
            return settled("rounding", ev, c, mag)
    empty = _empty_sides(e, a)
    if empty is not None:
        return settled("unknown", empty, comparison, mag if e.shape == np.shape(mag) else None)
    findings: list[Finding] = []
    findings += _outputs.structural(e, a, k=kk, M=mag, prec=prec, tol=tol)
    if ctx is not None:
        findings += _hypotheses.run_hypotheses(ctx, e, a, tol, prec, max_positions)
    findings += _outputs.heuristics(e, a, k=kk, M=mag, prec=prec, tol=tol, context=ctx is not None)
    best: dict[str, Finding] = {}
    for f in findings:
        cur = best.get(f.cause)
        if cur is None or (f.score, -f.misfit) > (cur.score, -cur.misfit):
            best[f.cause] = f
    ranked = sorted(best.values(), key=lambda f: (-f.score, f.misfit, CAUSES.index(f.cause)))
    if ranked and ranked[0].score >= 0.5:
        top = ranked[0]
        cause, evidence, confidence = top.cause, top.evidence, top.score
        others = ranked[1:]
        if cause == "unknown":  # a named effect outside the vocabulary (bias, scale)
            evidence = "no porting mistake of the kinds tested, but " + evidence
    else:
        top = None
        cause, confidence = "unknown", 1.0 - (ranked[0].score if ranked else 0.0)
        evidence = _unknown_evidence(e, a, comparison, prec, ranked)
        others = ranked
    alternatives = list(others)  # every other cause tested, best first (low scores: excluded)
    if top is not None and top.explains:
        for f in others:
            if f.explains and f.score >= 0.9:
                notes.append(
                    f"the data are also consistent with {f.cause} ({f.hypothesis}), equally well "
                    f"within the bound; {top.cause} was preferred as the more common mistake"
                )
    if ctx is not None and cause == "unknown":
        fin = np.abs(a[np.isfinite(a)].astype(np.float64))
        bound = float(np.max(ctx.magnitude)) if ctx.magnitude.size else 0.0
        if fin.size and fin.max() > 4 * bound + 1e-30:
            notes.append(
                f"actual holds values up to {fin.max():.3g}, while no output of w and x can exceed "
                f"{bound:.3g} in magnitude (the largest sum of |w*x|): these are not results of a "
                "convolution at all (uninitialized memory?). TensorFlow 2.21's oneDNN CPU kernels "
                "return such values for some strided convolutions with a one-pixel-wide output; "
                "TF_ENABLE_ONEDNN_OPTS=0 avoids it"
            )
    if ctx is None:
        notes.append(
            "outputs only: pass w and x to test kernel flips, padding, precision and quantization by recomputation"
        )
    return Diagnosis(
        cause=cause,
        confidence=confidence,
        evidence=evidence,
        alternatives=alternatives,
        basis=basis,
        comparison=comparison,
        finding=top,
        notes=notes,
        expected=e,
        actual=a,
        magnitude=mag if e.shape == np.shape(mag) else None,
    )


def _emptiness(v: np.ndarray) -> str | None:
    """What an array holds when it holds no information: all NaN, no finite value, all 0."""
    finite = np.isfinite(v)
    if not finite.any():
        return "NaN everywhere" if np.isnan(v).all() else "NaN or Inf everywhere"
    if not np.any(v[finite]) and finite.all():
        return "0 everywhere"
    return None


def _empty_sides(e: np.ndarray, a: np.ndarray) -> str | None:
    """Evidence when a side holds nothing to diagnose (all NaN, all non-finite or all zero):
    no precision format, layout or geometry mistake turns values into that, so no such cause
    is named; None when both sides hold values."""
    sides = [(name, _emptiness(v), v) for name, v in (("expected", e), ("actual", a))]
    empty = [(name, what, v) for name, what, v in sides if what is not None]
    if not empty:
        return None
    parts = [f"{name} is {what} (all {v.size} elements)" for name, what, v in empty]
    if len(empty) == 1:
        other = "actual" if empty[0][0] == "expected" else "expected"
        parts.append(f"while {other} holds values")
    text = ", ".join(parts[:-1]) + (" and " if len(empty) == 2 else " ") + parts[-1]
    return (
        f"{text}: there is nothing to compare, and no layout, geometry or rounding mistake "
        "turns values into that; the empty side did not compute (weights or inputs of NaN or "
        "zeros, an output never written, a failed run): check its inputs first"
    )


def _unknown_evidence(e, a, comparison, prec, ranked) -> str:
    if comparison is not None:
        c = comparison
        head = f"no tested hypothesis reproduces actual: {c.n_mismatched} of {c.n_elements} elements are outside the {prec} bound"
        if c.n_mismatched > c.n_nonfinite_mismatched:
            head += f", up to {_score.fmt_ratio(c.max_error_to_tolerance)} times it"
        if c.n_nonfinite_mismatched:
            head += f" ({c.n_nonfinite_mismatched} of them NaN or Inf on one side only)"
    else:
        head = (
            f"actual has shape {a.shape} but expected {e.shape}, and no tested rearrangement, "
            "padding or transposition explains it"
        )
    if ranked and ranked[0].score > 0:
        head += f"; closest: {ranked[0].cause} ({ranked[0].evidence})"
    return head
