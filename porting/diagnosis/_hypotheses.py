"""Running the hypotheses of a diagnosis context: is `expected` what w and x give (or a scaled
or swapped version), then every `Spec` scored against `actual` on sampled positions, in two
stages, in units of porting.compare's tolerance."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from porting.diagnosis import _score
from porting.diagnosis._formats import representable
from porting.diagnosis._result import Finding, tolerance_array
from porting.diagnosis._spec import _OWN_EPS, _STAGE1, ACTIVATIONS, Spec

if TYPE_CHECKING:
    from porting.diagnosis._context import _Context

__all__ = ["check_expected", "run_hypotheses"]


def check_expected(ctx: _Context, e: np.ndarray, a: np.ndarray, tol, limit: int) -> str:
    """Is `expected` what w and x give? Returns "ok", "swapped" (actual is) or "mismatch";
    fits a scale factor (Knet's alpha) when that explains it."""
    pos = ctx.positions(ctx.out_shape, limit)
    chans = ctx.channels(ctx.out_shape[-1])
    ctx.clear()
    base_out = ctx.predict(ctx.base, pos, chans)
    assert base_out is not None  # the base spec always fits its own output shape
    pred, mag = base_out
    ctx.clear()
    tolv = tolerance_array(tol, mag)
    e_s = ctx.take(e, pos, chans)
    r = _score.ratio(e_s, pred, tolv)
    if r.max() <= 1:
        return "ok"
    # Knet's alpha, when not passed: expected = act(c * conv + b) for some c; fit c where the
    # activation is invertible (identity; relu where expected > 0)
    act, bias = ctx.activation, ctx.bias
    ctx.activation, ctx.bias = None, np.zeros_like(bias)
    raw_out = ctx.predict(ctx.base, pos, chans)
    ctx.activation, ctx.bias = act, bias
    ctx.clear()
    assert raw_out is not None
    raw = raw_out[0]
    target = e_s - bias[chans]
    use = np.isfinite(target) & np.isfinite(raw)
    if act is ACTIVATIONS["relu"]:
        use &= e_s > 0
    elif act is not None:
        use &= False
    den = float(np.sum(raw[use] ** 2))
    if den > 0:
        c = float(np.sum(raw[use] * target[use])) / den
        if c != 0 and np.isfinite(c):
            ctx.alpha *= c
            ctx.clear()
            trial = ctx.predict(ctx.base, pos, chans)
            ctx.clear()
            assert trial is not None
            if _score.ratio(e_s, trial[0], tolerance_array(tol, trial[1])).max() <= 1:
                absb = np.abs(ctx.bias)
                ctx.magnitude = (ctx.magnitude - absb) * abs(c) + absb
                ctx.notes.append(
                    f"expected is act({c:.6g} x conv4(w, x) + bias): taken as Knet's alpha "
                    "(pass alpha= to say so)"
                    if (act is not None or np.any(bias))
                    else f"expected is {c:.6g} times conv4(w, x): taken as Knet's alpha (pass alpha= to say so)"
                )
                return "ok"
            ctx.alpha /= c
    if a.shape == e.shape:
        a_s = ctx.take(a, pos, chans)
        if _score.ratio(a_s, pred, tolv).max() <= 1:
            ctx.notes.append(
                "actual, not expected, is what w and x give: the two arrays were passed the other "
                "way round (expected is the Knet side); diagnosing with them swapped"
            )
            return "swapped"
    ctx.notes.append(
        f"expected is not what w and x give with these keywords (errors up to {_score.fmt_ratio(float(r.max()))} "
        "times the float bound): check mode, padding, stride, dilation, alpha, bias and spatial; "
        "the hypotheses below start from the recomputation"
    )
    return "mismatch"


def run_hypotheses(
    ctx: _Context, e: np.ndarray, a: np.ndarray, tol, prec: str, limit: int
) -> list[Finding]:
    """Score every hypothesis of `ctx` against `actual`; returns one Finding per hypothesis."""
    if a.ndim != len(ctx.out_shape):
        return []
    ctx.float64 = prec == "float64"
    specs = ctx.specs(a.shape)
    if not specs:
        return []
    pos = ctx.positions(a.shape, limit)
    chans = ctx.channels(a.shape[-1])
    # Stage 1: every hypothesis on a few positions, with the base kernel's magnitudes (cheap).
    # Stage 2: those that fit there, the closest others, the best of each cause and every
    # precision hypothesis, on all sampled positions with their own magnitudes.
    if len(pos) > 2 * _STAGE1:
        sub = np.sort(np.random.default_rng(2).choice(len(pos), _STAGE1, replace=False))
        first = _screen(ctx, specs, pos[sub], chans, a, tol)
        order = sorted(range(len(first)), key=lambda i: first[i][1])
        keep = {i for i in order if first[i][2] <= 1}
        keep = set(sorted(keep, key=order.index)[:16]) | set(order[:6])
        causes: set[str] = set()
        for i in order:
            sp = first[i][0]
            if sp.cause == "precision" or sp.cause not in causes:
                keep.add(i)
                causes.add(sp.cause)
        survivors = [first[i][0] for i in sorted(keep)]
        chan_fits = [(sp, cm) for sp, _, _, cm in first]
        final = _evaluate(ctx, survivors, pos, chans, a, tol, prec)
    else:
        final = _evaluate(ctx, specs, pos, chans, a, tol, prec)
        chan_fits = [(sp, cm) for sp, _, cm in final]
    composite = _per_channel_quantizer(chan_fits, chans, a.shape[-1])
    if composite is not None:
        final += _evaluate(ctx, [composite], pos, chans, a, tol, prec)
    ctx.clear()
    return [f for _, f, _ in final]


def _screen(ctx: _Context, specs, pos, chans, a, tol):
    """Cheap first pass: (spec, misfit, max error/tolerance, per-channel misfit) per spec."""
    ctx.clear()
    a_s = ctx.take(a, pos, chans)
    out = []
    for spec in specs:
        res = ctx.predict(spec, pos, chans, cheap=True)
        if res is None:
            continue
        pred, mag = res
        r = _score.ratio(a_s, pred, tolerance_array(tol, mag))
        lr = np.log2(1.0 + np.minimum(r, _score.BIG))
        cm = lr.mean(axis=0) if spec.cause == "quantization" else None
        out.append((spec, float(lr.mean()), float(r.max()), cm))
    ctx.clear()
    return out


def _per_channel_quantizer(fits_by_spec, chans, n_out: int):
    """Each output channel's best-fitting grid quantizer, combined into one kernel: weights
    quantized with a scale per output channel (QKeras alpha='auto_po2', per-channel grids)."""
    cands = [
        (sp, cm)
        for sp, cm in fits_by_spec
        if cm is not None and sp.name.startswith(("fixed_", "po2_"))
    ]
    if len(cands) < 2 or n_out < 2 or len(chans) != n_out:
        return None
    fits = np.stack([cm for _, cm in cands])  # (quantizers, channels)
    best = fits.argmin(axis=0)
    if len(set(best.tolist())) < 2:
        return None
    kernel = np.empty_like(cands[0][0].kernel)
    for c, i in enumerate(best):
        kernel[..., c] = cands[i][0].kernel[..., c]
    names = [cands[i][0].name for i in best]
    steps = sorted({n.split("_")[1] for n in names if n.startswith("fixed_")})
    text = (
        "weights quantized with a grid chosen per output channel "
        + (f"(steps {', '.join(steps)}), " if steps else "")
        + "as QKeras quantized_bits with alpha='auto_po2' does"
    )
    return Spec(
        "quantization",
        "per_channel_grids",
        text,
        kernel,
        cands[0][0].grid,
        details={"per_channel": names},
        prior=0.99,  # more freedom than a single quantizer
    )


def _evaluate(
    ctx: _Context, specs, pos, chans, a, tol, prec
) -> list[tuple[Spec, Finding, np.ndarray | None]]:
    ctx.clear()  # cached windows belong to other positions
    specs = [replace(sp, base_mag=False) for sp in specs]
    a_s = ctx.take(a, pos, chans)
    if tuple(a.shape) == ctx.out_shape:
        base_out = ctx.predict(ctx.base, pos, chans)
        assert base_out is not None
        p0, m0 = base_out
        r0 = _score.ratio(a_s, p0, tolerance_array(tol, m0))
    else:
        ref = float(np.median(ctx.magnitude)) or 1.0
        r0 = _score.ratio(a_s, np.zeros_like(a_s), tolerance_array(tol, ref))
    base, base_max = _score.misfit(r0), float(r0.max())
    results = []
    for spec in specs:
        out = ctx.predict(spec, pos, chans)
        if out is not None:
            f, r = _assess(spec, out, a_s, tol, prec, base, base_max)
            cm = (
                np.mean(np.log2(1.0 + np.minimum(r, _score.BIG)), axis=0)
                if spec.cause == "quantization"
                else None
            )
            results.append((spec, f, cm))
    ctx.clear()
    return results


def _assess(spec: Spec, out, a_s, tol, prec, base, base_max) -> tuple[Finding, np.ndarray]:
    pred, mag = out
    r = _score.ratio(a_s, pred, tolerance_array(tol, mag))
    mx, m = float(r.max()), _score.misfit(r)
    ulp = _score.max_ulp(a_s, pred, prec)
    advice = _score.ADVICE.get(spec.cause, "")
    explains = mx <= 1
    if explains:
        score = spec.prior
        ev = (
            f"{spec.text} reproduces actual within the {prec} bound (max error {mx:.2g} of the "
            f"tolerance; {_score.ulp_text(a_s, pred, prec)}); {advice}"
        )
    else:
        score = _score.partial_score(m, base) * spec.prior
        ev = (
            f"{spec.text} leaves errors up to {_score.fmt_ratio(mx)} times the {prec} bound "
            f"(without it {_score.fmt_ratio(base_max)} times)"
        )
        if spec.post:
            own = replace(tol, eps=_OWN_EPS[spec.post], precision=spec.post)
            r_own = _score.ratio(a_s, pred, tolerance_array(own, mag))
            frac = representable(a_s, spec.post)
            if r_own.max() <= 1 and frac >= 0.99:
                score = 0.97 * spec.prior
                explains = True
                ev = (
                    f"{spec.text} reproduces actual within the {spec.post} bound (max error "
                    f"{float(r_own.max()):.2g} of the {spec.post} tolerance), and "
                    f"{frac:.0%} of actual's values are {spec.post} numbers; {advice}"
                )
    details = dict(spec.details)
    finding = Finding(
        cause=spec.cause,
        score=score,
        evidence=ev,
        hypothesis=spec.name,
        explains=explains,
        max_error_to_tolerance=mx,
        max_ulp=ulp,
        basis="recomputation",
        details=details,
        misfit=m,
    )
    return finding, r
