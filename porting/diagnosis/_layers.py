"""Layer-level causes: batch normalisation, residual sums and embeddings, by recomputation.

Each function recomputes Knet's layer and every hypothesis about the port in float64 from the
layer's Knet input and weights, and scores each against `actual` in units of porting.compare's
tolerance (`(sqrt(K) + 2) * eps * S`, docs/numerics.md#tolerance), as porting.diagnose does
for convolutions: a hypothesis that reproduces `actual` within the bound scores its prior (about
1), one that does not scores the fraction of the error it removes. Arrays are in TensorFlow
layout, channels (features) last.

- `diagnose_batchnorm`: `bn_epsilon` (Keras's default epsilon 1e-3 instead of Knet's 1e-5, or
  any other), `bn_scale_bias_swapped` (the packed `bnparams` vector `[scale; bias]` split the
  wrong way round), `bn_batch_statistics` (the batch's own mean and variance: Keras's training
  mode left on), and their combinations (named by the first of those causes, the others in the
  evidence).
- `diagnose_residual`: `residual_activation_order`, the residual sum taken after the
  activation of a branch instead of before it (Knet's `f.(x1 .+ x2)` ported as `f(x1) + x2`),
  or the other way round.
- `diagnose_embedding`: `embedding_off_by_one`, Knet's 1-based indices given to a 0-based
  lookup (or shifted the other way).

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from porting import activations
from porting import magnitude as S
from porting.comparison import compare
from porting.diagnosis import _score
from porting.diagnosis._core import _effective_precision, _output_array
from porting.diagnosis._result import CAUSES, Diagnosis, Finding
from porting.errors import PortingError
from porting.tolerance import Tolerance

__all__ = [
    "diagnose_batchnorm",
    "diagnose_residual",
    "diagnose_embedding",
    "EPSILON_CANDIDATES",
]

#: Epsilons tried for `bn_epsilon` besides one fitted to the data: Keras's default first.
EPSILON_CANDIDATES = (1e-3, 1e-5, 1e-4, 1e-6, 1e-2, 2e-5)

_ADVICE = {
    "bn_epsilon": (
        "give Keras Knet's epsilon: BatchNormalization(epsilon=1e-5) (Keras's default is 1e-3)"
    ),
    "bn_scale_bias_swapped": (
        "bnparams(C) is ONE vector [scale; bias]: gamma = p[:C], beta = p[C:] "
        "(Keras weights [gamma, beta, moving_mean, moving_variance])"
    ),
    "bn_batch_statistics": (
        "run Keras in inference mode (model(x, training=False); never BatchNormalization()(t, "
        "training=True) in a model) so the running statistics (Knet's bnmoments) are used"
    ),
    "embedding_off_by_one": (
        "Knet indexes w[:, x] from 1, Keras's Embedding from 0: feed x - 1 to an Embedding "
        "whose weights are w' (vocab, dim)"
    ),
    "upsample_align_corners": (
        "Flux's Upsample(:bilinear) aligns corners (NNlib's default align_corners=true); Keras's "
        "UpSampling2D(interpolation='bilinear') uses half-pixel centres: build the aligned "
        "interpolation as its matrix (porting's upsample kind does) or keep the same convention"
    ),
    "upsample_mode": (
        "use the same interpolation on both sides (Keras's UpSampling defaults to 'nearest'; "
        "Flux's Upsample to :nearest, its :bilinear is linear)"
    ),
    "pixel_shuffle_order": (
        "NNlib's pixel_shuffle reads channel i1 + r*i2 + r^2*c (the output channel slowest); "
        "tf.nn.depth_to_space reads (i2*r + i1)*C + c: reorder the channels or build it from "
        "Reshape/Permute (porting's pixelshuffle kind)"
    ),
    "residual_activation_order": (
        "apply the activation where Knet does: Knet's relu.(shortcut .+ main) is "
        "Activation('relu')(Add()([shortcut, main])), not Add()([shortcut, relu(main)])"
    ),
}


@dataclass
class _Hyp:
    cause: str
    name: str
    text: str
    pred: np.ndarray  # float64, shape of actual (or of the sample)
    mag: np.ndarray  # sums of magnitudes for the tolerance
    k: int
    prior: float = 1.0
    mask: np.ndarray | None = None  # elements the hypothesis predicts (None: all)


def _finish(e, a, mag, k, hyps: list[_Hyp], basis: str, notes: list[str]) -> Diagnosis:
    """Rank the hypotheses against `a` (the rounding check first) into a Diagnosis."""
    prec = _effective_precision(e, a)
    with np.errstate(all="ignore"):
        comparison = compare(e, a, k=k, magnitude=mag, precision=prec)
    if comparison.ok:
        c = comparison
        return Diagnosis(
            cause="rounding",
            confidence=1.0,
            evidence=(
                f"all {c.n_elements} elements agree within the {prec} bound (max error "
                f"{c.max_error_to_tolerance:.2g} of the tolerance; tolerance "
                f"{c.tolerance.formula}): no bug"
            ),
            alternatives=[],
            basis=basis,
            comparison=c,
            notes=notes,
            expected=e,
            actual=a,
            magnitude=mag,
        )
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    tol0 = Tolerance.of(k, prec)
    r0 = _score.ratio(a64, e64, tol0.bound(mag))
    base, base_max = _score.misfit(r0), float(r0.max())
    best: dict[str, Finding] = {}
    with np.errstate(all="ignore"):
        for h in hyps:
            tol = Tolerance.of(h.k, prec)
            r = _score.ratio(a64, h.pred, tol.bound(h.mag))
            if h.mask is not None:
                r = r[h.mask]
            mx, m = (float(r.max()), _score.misfit(r)) if r.size else (np.inf, np.inf)
            advice = _ADVICE.get(h.cause, "")
            if mx <= 1:
                explains, score = True, h.prior
                ev = (
                    f"{h.text} reproduces actual within the {prec} bound (max error {mx:.2g} of "
                    f"the tolerance; without it {_score.fmt_ratio(base_max)} times); {advice}"
                )
            else:
                explains, score = False, _score.partial_score(m, base) * h.prior
                ev = (
                    f"{h.text} leaves errors up to {_score.fmt_ratio(mx)} times the {prec} bound "
                    f"(without it {_score.fmt_ratio(base_max)} times)"
                )
            f = Finding(
                cause=h.cause,
                score=score,
                evidence=ev,
                hypothesis=h.name,
                explains=explains,
                max_error_to_tolerance=mx,
                basis="recomputation",
                misfit=m,
            )
            cur = best.get(h.cause)
            if cur is None or (f.score, -f.misfit) > (cur.score, -cur.misfit):
                best[h.cause] = f
    ranked = sorted(best.values(), key=lambda f: (-f.score, f.misfit, CAUSES.index(f.cause)))
    if ranked and ranked[0].score >= 0.5:
        top = ranked[0]
        return Diagnosis(
            cause=top.cause,
            confidence=top.score,
            evidence=top.evidence,
            alternatives=ranked[1:],
            basis=basis,
            comparison=comparison,
            finding=top,
            notes=notes,
            expected=e,
            actual=a,
            magnitude=mag,
        )
    c = comparison
    return Diagnosis(
        cause="unknown",
        confidence=1.0 - (ranked[0].score if ranked else 0.0),
        evidence=(
            f"no tested hypothesis reproduces actual: {c.n_mismatched} of {c.n_elements} "
            f"elements are outside the {prec} bound (max {c.max_error_to_tolerance:.3g} times)"
        ),
        alternatives=ranked,
        basis=basis,
        comparison=comparison,
        notes=notes,
        expected=e,
        actual=a,
        magnitude=mag,
    )


def _vec(v, name: str, c: int) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise PortingError(
            f"{name} must be a numeric vector, got {type(v).__name__}: {err}"
        ) from None
    if a.size != c:
        raise PortingError(
            f"{name} has {a.size} values; expected one per channel ({c}, the last axis of x)"
        )
    return a


def _check_shapes(x: np.ndarray, a: np.ndarray, what: str) -> None:
    if x.shape != a.shape:
        raise PortingError(f"actual has shape {a.shape} but {what} has {x.shape}; expected equal")


# --------------------------------------------------------------------------- batchnorm


def _bn(x, mean, var, g, b, eps):
    ivar = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * ivar
    return y if g is None else g * y + b


def _bn_mag(x, mean, var, g, b, eps):
    """S of batchnorm on `x` (channels last), by porting.magnitude's one rule for it."""
    return S.batchnorm(np.abs(x), mean, var, g, b, eps, channel_axis=-1)


def _fit_epsilon(x, a, mean, var, g, b) -> float | None:
    """The epsilon that best explains `a` given Knet's other parameters (median over channels
    of the least-squares `ivar`), or None when the data do not determine one."""
    with np.errstate(all="ignore"):
        num = (a - b) / g if g is not None else a
        d = x - mean
        ivar = np.sum(num * d, axis=0) / np.sum(d * d, axis=0)
        eps = 1.0 / ivar**2 - var
    eps = eps[np.isfinite(eps) & (eps > 0)]
    if not eps.size:
        return None
    return float(f"{float(np.median(eps)):.2g}")


def diagnose_batchnorm(
    x,
    actual,
    *,
    mean,
    var,
    scale=None,
    bias=None,
    eps: float = 1e-5,
    expected=None,
    max_positions: int = 65536,
) -> Diagnosis:
    """Why a port of Knet's inference `batchnorm(x, moments, params; eps)` gives `actual`.

    `x` is the layer's Knet input and `actual` the port's output, both in TensorFlow layout
    (channels or features last, e.g. `(N, H, W, C)` or `(N, F)`); `mean`, `var` are the running
    moments and `scale`, `bias` Knet's halves of `bnparams` (`p[:C]`, `p[C:]`; None for a
    non-affine batchnorm), one value per channel in that order. `expected` (Knet's output)
    is recomputed in float64 when not given. Causes: `rounding`, `bn_epsilon`,
    `bn_scale_bias_swapped`, `bn_batch_statistics`, `unknown`.
    """
    if isinstance(max_positions, bool) or not isinstance(max_positions, (int, np.integer)):
        raise PortingError(f"max_positions={max_positions!r}: expected a positive integer")
    if max_positions < 1:
        raise PortingError(f"max_positions={max_positions!r}: expected a positive integer")
    xa = _output_array(x, "x")
    a = _output_array(actual, "actual")
    _check_shapes(xa, a, "x")
    c = xa.shape[-1]
    mu, v = _vec(mean, "mean", c), _vec(var, "var", c)
    if (scale is None) != (bias is None):
        raise PortingError("pass both scale and bias (bnparams' halves), or neither")
    g = None if scale is None else _vec(scale, "scale", c)
    b = None if bias is None else _vec(bias, "bias", c)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise PortingError(f"eps={eps!r}: expected a positive number (Knet's default 1e-5)")
    x2 = xa.astype(np.float64).reshape(-1, c)
    mean_b = x2.mean(axis=0)
    var_b = ((x2 - mean_b) ** 2).mean(axis=0)
    ms = (x2 * x2).mean(axis=0)
    m_count = x2.shape[0]
    if expected is None:
        e = _bn(x2, mu, v, g, b, eps).astype(a.dtype).reshape(a.shape)
    else:
        e = _output_array(expected, "expected")
        _check_shapes(e, a, "expected")
    mag = _bn_mag(x2, mu, v, g, b, eps).reshape(a.shape)
    # the hypotheses are recomputed at a sample of rows (all of them for smaller outputs)
    rows = np.arange(x2.shape[0])
    if x2.shape[0] * c > max_positions:
        n = max(1, max_positions // c)
        rows = np.sort(np.random.default_rng(0).choice(x2.shape[0], n, replace=False))
    xs = x2[rows]
    a_s = a.astype(np.float64).reshape(-1, c)[rows]
    e_s = e.reshape(-1, c)[rows]
    mag_s = mag.reshape(-1, c)[rows]
    eps_set: list[float] = []
    fitted = _fit_epsilon(xs, a_s, mu, v, g, b)
    for cand in (*EPSILON_CANDIDATES, fitted):
        if cand is not None and cand not in eps_set and cand > 0:
            eps_set.append(cand)
    hyps: list[_Hyp] = []
    swaps = (False, True) if g is not None else (False,)
    stats = ("running", "batch") if m_count >= 2 else ("running",)
    eps_opts = [(float(eps), False)] + [(c, True) for c in eps_set if c != eps]
    for swap, stat, (ep, wrong_eps) in itertools.product(swaps, stats, eps_opts):
        if not (swap or stat == "batch" or wrong_eps):
            continue  # the correct computation
        gg, bb = (b, g) if swap else (g, b)
        mm, vv = (mean_b, var_b) if stat == "batch" else (mu, v)
        pred = _bn(xs, mm, vv, gg, bb, ep)
        hmag = _bn_mag(xs, mm, vv, gg, bb, ep)
        k = 4
        if stat == "batch":
            # the statistics are sums over the batch, rounded: K grows by their terms, and the
            # variance's error reaches the output through d ivar / d var = ivar / (2 (var + eps))
            k += m_count
            hmag = hmag + (0 if gg is None else np.abs(gg)) * np.abs(xs - mm) * ms / (
                2 * np.sqrt(vv + ep) * (vv + ep)
            )
        parts = []
        if swap:
            parts.append("scale and bias swapped (bnparams split [bias; scale])")
        if stat == "batch":
            parts.append("the batch's own mean and variance (training mode)")
        if wrong_eps:
            parts.append(f"epsilon {ep:g} instead of {eps:g}")
        cause = (
            "bn_scale_bias_swapped"
            if swap
            else "bn_batch_statistics"
            if stat == "batch"
            else "bn_epsilon"
        )
        hyps.append(
            _Hyp(
                cause=cause,
                name="bn:"
                + "+".join(
                    p
                    for p, on in (
                        ("swap", swap),
                        ("batch", stat == "batch"),
                        (f"eps={ep:g}", wrong_eps),
                    )
                    if on
                ),
                text=" and ".join(parts),
                pred=pred,
                mag=np.maximum(hmag, mag_s),
                k=k,
                prior=1.0 if len(parts) == 1 else 0.98,
            )
        )
    basis = f"recomputation of batchnorm (eps={eps:g}) from x and the moments"
    d = _finish_sample(e, a, mag, e_s, a_s, mag_s, 4, hyps, basis)
    return d


def _finish_sample(e, a, mag, e_s, a_s, mag_s, k, hyps, basis) -> Diagnosis:
    """`_finish` scored on the sampled rows, with the full arrays kept for the report."""
    prec = _effective_precision(e, a)
    with np.errstate(all="ignore"):
        full = compare(e, a, k=k, magnitude=mag, precision=prec)
    if full.ok:
        return _finish(e, a, mag, k, [], basis, [])
    d = _finish(e_s.astype(e.dtype), a_s.astype(a.dtype), mag_s, k, hyps, basis, [])
    if d.cause == "rounding":  # the sample agreed, the rest did not: no hypothesis tested there
        d = _finish(e, a, mag, k, [], basis, [])
    d.comparison, d.expected, d.actual, d.magnitude = full, e, a, mag
    return d


# --------------------------------------------------------------------------- residual


def _elementwise(name: str) -> activations.Activation:
    row = activations.get(name)
    if not row.elementwise:
        raise PortingError(f"activation={name!r}: expected an elementwise activation")
    return row


def _activate(name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(_elementwise(name).forward(x, 1))


def _act_mag(name: str, z: np.ndarray) -> np.ndarray:
    """Magnitudes of an activation's own intermediate results at `z`, beyond |f(z)|
    (porting.activations' `intermediate`: elu's exp(z) - 1 cancels near 0, leaving rounding of
    order eps * exp(z))."""
    return _elementwise(name).intermediate(z)


def diagnose_residual(
    inputs: Sequence, actual, *, activation: str = "relu", expected=None
) -> Diagnosis:
    """Why a port of Knet's residual sum `activation.(x1 .+ x2 .+ ...)` gives `actual`.

    `inputs` are the sum's Knet inputs (the shortcut and the block's output before the
    activation), `actual` the port's output, all of one shape (any layout). Hypotheses
    (`residual_activation_order`): the activation applied to some of the inputs before the sum
    instead of after it (`f(x2) + x1`, `f(x1) + f(x2)`, ...); and, when Knet's sum has no
    activation (`activation="identity"`), a relu after the sum. Causes: `rounding`,
    `residual_activation_order`, `unknown`.
    """
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        raise PortingError(
            f"inputs: expected a list of two or more arrays (the summed branches), got "
            f"{type(inputs).__name__}"
        )
    a = _output_array(actual, "actual")
    xs = [_output_array(x, f"inputs[{i}]").astype(np.float64) for i, x in enumerate(inputs)]
    for x in xs:
        _check_shapes(x, a, "an input")
    n = len(xs)
    act = str(activation)
    total = sum(xs[1:], xs[0])
    ssum = sum((np.abs(x) for x in xs[1:]), np.abs(xs[0]))
    if expected is None:
        e = _activate(act, total).astype(a.dtype)
    else:
        e = _output_array(expected, "expected")
        _check_shapes(e, a, "expected")
    mag = ssum + np.abs(e.astype(np.float64)) + _act_mag(act, total)
    hyps: list[_Hyp] = []
    if act != "identity":
        for r in range(1, n + 1):
            for sub in itertools.combinations(range(n), r):
                terms = [_activate(act, x) if i in sub else x for i, x in enumerate(xs)]
                pred = np.sum(terms, axis=0)
                hmag = np.sum([np.abs(t) for t in terms], axis=0) + ssum
                hmag = hmag + np.sum([_act_mag(act, xs[i]) for i in sub], axis=0)
                which = " and ".join(f"input {i + 1}" for i in sub)
                hyps.append(
                    _Hyp(
                        cause="residual_activation_order",
                        name=f"act_before_add:{','.join(str(i + 1) for i in sub)}",
                        text=f"{act} applied to {which} before the sum instead of after it",
                        pred=pred,
                        mag=hmag,
                        k=n + 1,
                    )
                )
    else:
        pred = _activate("relu", total)
        hyps.append(
            _Hyp(
                cause="residual_activation_order",
                name="relu_after_add",
                text="relu applied after a sum that Knet leaves without activation",
                pred=pred,
                mag=mag,
                k=n + 1,
            )
        )
    basis = f"recomputation of {act}.(x1 .+ ... .+ x{n}) from the {n} inputs"
    return _finish(e, a, mag, n + 1, hyps, basis, [])


# --------------------------------------------------------------------------- embedding


def diagnose_embedding(w, indices, actual, *, expected=None) -> Diagnosis:
    """Why a port of Knet's embedding `w[:, x]` gives `actual`.

    `w` is Knet's `(dim, vocab)` matrix, `indices` Knet's 1-based integer indices (any shape),
    `actual` the port's embeddings of shape `(*indices.shape, dim)` (one vector per index,
    last axis: Knet's `(dim, T, B)` output is `np.moveaxis(y, 0, -1)` of that). Hypotheses
    (`embedding_off_by_one`): every index shifted by +1 (Knet's 1-based indices given to a
    0-based lookup) or -1; where the shifted index falls outside the vocabulary the port's
    value is not predicted. Causes: `rounding`, `embedding_off_by_one`, `unknown`.
    """
    wa = _output_array(w, "w")
    if wa.ndim != 2:
        raise PortingError(f"w has shape {wa.shape}; expected Knet's (dim, vocab) matrix")
    dim, vocab = wa.shape
    try:
        idx = np.asarray(indices)
    except Exception as err:  # noqa: BLE001 - anything that is not an array is bad input
        raise PortingError(f"indices must be an integer array: {err}") from None
    if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise PortingError(
            f"indices has dtype {idx.dtype} and shape {idx.shape}; expected a non-empty array of "
            "Knet's 1-based integer indices"
        )
    bad = (idx < 1) | (idx > vocab)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise PortingError(
            f"indices{list(pos)} = {int(idx[pos])}: expected a Knet index in 1..{vocab} "
            "(1-based, the vocabulary is w's second dimension)"
        )
    a = _output_array(actual, "actual")
    if a.shape != (*idx.shape, dim):
        raise PortingError(
            f"actual has shape {a.shape}; expected {(*idx.shape, dim)} (indices' shape, then dim)"
        )
    w64 = wa.astype(np.float64)
    if expected is None:
        e = w64[:, idx - 1].transpose(*range(1, idx.ndim + 1), 0).astype(a.dtype)
    else:
        e = _output_array(expected, "expected")
        _check_shapes(e, a, "expected")
    mag = np.abs(e.astype(np.float64))
    hyps = []
    for s in (1, -1):
        j = idx - 1 + s
        ok = (j >= 0) & (j < vocab)
        if not ok.any():
            continue
        pred = w64[:, np.clip(j, 0, vocab - 1)].transpose(*range(1, idx.ndim + 1), 0)
        mask = np.broadcast_to(ok[..., None], a.shape)
        unpredicted = int((~ok).sum())
        hyps.append(
            _Hyp(
                cause="embedding_off_by_one",
                name=f"shift_{s:+d}",
                text=(
                    f"every index shifted by {s:+d} ("
                    + (
                        "Knet's 1-based indices given to a 0-based lookup"
                        if s == 1
                        else "indices decremented twice, or w given an extra first column"
                    )
                    + ")"
                    + (
                        f", {unpredicted} indices falling outside the vocabulary not predicted"
                        if unpredicted
                        else ""
                    )
                ),
                pred=pred,
                mag=np.abs(pred),
                k=1,
                mask=mask,
            )
        )
    return _finish(e, a, mag, 1, hyps, "recomputation of w[:, x] (1-based)", [])
