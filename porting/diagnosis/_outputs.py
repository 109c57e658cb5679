"""Checks that need only the two outputs: rearrangements, mirror images, border-only errors,
storage format and error size. Arrays are in TF layout `(N, *spatial, C)` (or `(N, F)`)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from porting.comparison import compare
from porting.diagnosis import _score
from porting.diagnosis._formats import representable
from porting.diagnosis._result import Finding, tolerance_array

__all__ = ["structural", "heuristics"]

_SAMPLE = 256
_OWN_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}


def _names(ndim: int) -> tuple[str, ...]:
    return {
        2: ("N", "F"),
        3: ("N", "W", "C"),
        4: ("N", "H", "W", "C"),
        5: ("N", "D", "H", "W", "C"),
    }.get(ndim, tuple(f"axis{i}" for i in range(ndim)))


def _spatial(ndim: int) -> tuple[int, ...]:
    return tuple(range(1, ndim - 1)) if ndim >= 3 else ()


def _match(ref, cand, mag, k, prec, tol):
    """porting.compare(ref, cand) if it passes (after a cheap check on a sample), else None."""
    rf, cf, mf = ref.ravel(), cand.ravel(), mag.ravel()
    n = rf.size
    if n > _SAMPLE:
        idx = np.random.default_rng(0).choice(n, _SAMPLE, replace=False)
        r = _score.ratio(
            cf[idx].astype(np.float64), rf[idx].astype(np.float64), tolerance_array(tol, mf[idx])
        )
        if r.max() > 1:
            return None
    c = compare(ref, cand, k=k, magnitude=mag, precision=prec)
    return c if c.ok else None


def _found(cause, score, evidence, hypothesis, comparison) -> Finding:
    return Finding(
        cause=cause,
        score=score,
        evidence=evidence,
        hypothesis=hypothesis,
        explains=True,
        max_error_to_tolerance=comparison.max_error_to_tolerance,
        max_ulp=comparison.max_ulp,
        basis="outputs",
        misfit=0.0,
    )


def _describe_order(a_names: list[str], ndim: int) -> str:
    text = f"({', '.join(a_names)})"
    sp = [_names(ndim)[i] for i in _spatial(ndim)]
    if ndim >= 3:
        if a_names == ["N", "C", *sp]:
            text += ": channels-first (NCHW), not TensorFlow's channels-last"
        elif a_names == [*sp[::-1], "C", "N"] or a_names == [*sp, "C", "N"]:
            text += ": the Julia-indexed array, never converted to TensorFlow layout"
    return text


def structural(e, a, *, k, M, prec, tol) -> list[Finding]:
    """Is `actual` a rearrangement of `expected`? Axis permutations (layout, or H and W swapped:
    spatial_transpose), a reshape of a permuted array (layout), the same values in another
    order (layout), and per-sample permutations of a `(N, F)` array (flatten_order)."""
    out: list[Finding] = []
    if a.size != e.size:
        return out
    names = _names(e.ndim)
    sp = set(_spatial(e.ndim))
    ident = tuple(range(e.ndim))
    if a.ndim == e.ndim:
        perms = [
            p
            for p in itertools.permutations(range(a.ndim))
            if p != ident and tuple(a.shape[i] for i in p) == e.shape
        ]
        perms.sort(key=lambda p: any(p[j] != j and j not in sp for j in range(len(p))))
        for p in perms:
            c = _match(e, a.transpose(p), M, k, prec, tol)
            if c is None:
                continue
            a_names = [""] * e.ndim
            for j, i in enumerate(p):
                a_names[i] = names[j]
            if all(p[j] == j or j in sp for j in range(len(p))):
                out.append(
                    _found(
                        "spatial_transpose",
                        1.0,
                        f"actual is expected with its spatial axes swapped (actual's axes are "
                        f"({', '.join(a_names)})), within the {prec} bound; {_score.ADVICE['spatial_transpose']}",
                        f"axes_{'_'.join(map(str, p))}",
                        c,
                    )
                )
            else:
                out.append(
                    _found(
                        "layout",
                        1.0,
                        f"actual holds expected's values with its axes in the order "
                        f"{_describe_order(a_names, e.ndim)} (agrees within the {prec} bound after "
                        f"transposing); {_score.ADVICE['layout']}",
                        f"axes_{'_'.join(map(str, p))}",
                        c,
                    )
                )
            return out
    for p in itertools.permutations(range(e.ndim)):
        et = e.transpose(p)
        if a.ndim == e.ndim and et.shape == a.shape:
            continue  # an axis permutation of actual (checked above) or the rounding check
        c = _match(
            np.ascontiguousarray(et).ravel(),
            a.ravel(),
            np.ascontiguousarray(M.transpose(p)).ravel(),
            k,
            prec,
            tol,
        )
        if c is None:
            continue
        order = ", ".join(names[i] for i in p)
        if p == ident:
            ev = (
                f"actual holds expected's values in the same order but has shape {a.shape} instead "
                f"of {e.shape}: reshape it"
            )
        else:
            ev = (
                f"actual holds expected's values in the memory order of axes ({order}), reshaped "
                f"to {a.shape} instead of transposed; {_score.ADVICE['layout']}"
            )
        out.append(_found("layout", 1.0, ev, f"reshape_{'_'.join(map(str, p))}", c))
        return out
    if e.ndim == 2 and a.shape == e.shape and e.shape[1] > 1:
        order_e = np.argsort(e, axis=1, kind="stable")
        se = np.take_along_axis(e, order_e, axis=1)
        sm = np.take_along_axis(M, order_e, axis=1)
        c = _match(se, np.sort(a, axis=1), sm, k, prec, tol)
        if c is not None:
            perm = np.empty(e.shape[1], dtype=int)
            perm[np.argsort(e[0], kind="stable")] = np.argsort(a[0], kind="stable")
            same_perm = _match(e, a[:, perm], M, k, prec, tol) is not None
            ev = (
                f"each of the {e.shape[0]} rows of actual holds the same {e.shape[1]} values as "
                f"expected's row in another order"
                + (" (one permutation for every row)" if same_perm else "")
                + f": features flattened in a different order; {_score.ADVICE['flatten_order']}"
            )
            out.append(
                _found("flatten_order", 0.95 if same_perm else 0.85, ev, "row_permutation", c)
            )
            return out
    order_e = np.argsort(e, axis=None, kind="stable")
    c = _match(e.ravel()[order_e], np.sort(a, axis=None), M.ravel()[order_e], k, prec, tol)
    if c is not None:
        out.append(
            _found(
                "layout",
                0.8,
                f"actual holds the same {e.size} values as expected in another order (sorted, they "
                f"agree within the {prec} bound), but no axis permutation or reshape maps one onto "
                f"the other; {_score.ADVICE['layout']}",
                "same_values",
                c,
            )
        )
    return out


def heuristics(e, a, *, k, M, prec, tol, context: bool) -> list[Finding]:
    """Outputs-only hints: storage format (precision), mirror images (kernel_flip), errors only
    at the border or a one-pixel shift (padding_shift), and the size of the errors. With w and x
    given these are capped below the recomputation's scores (they only suggest)."""
    cap = 0.45 if context else 1.0
    out: list[Finding] = []

    def add(cause, score, evidence, name, r=None, m=float("inf"), capped=True):
        out.append(
            Finding(
                cause=cause,
                score=min(score, cap) if capped else score,
                evidence=evidence,
                hypothesis=name,
                explains=r is not None and float(r.max()) <= 1,
                max_error_to_tolerance=None if r is None else float(r.max()),
                basis="outputs",
                misfit=m,
            )
        )

    # -- precision: actual's values are float16/bfloat16 numbers, expected's are not
    a_flat = a.ravel()
    e_flat = e.ravel()
    rng = np.random.default_rng(0)
    a_smp = a_flat[rng.choice(a_flat.size, 4096, replace=False)] if a_flat.size > 4096 else a_flat
    e_smp = e_flat[rng.choice(e_flat.size, 4096, replace=False)] if e_flat.size > 4096 else e_flat
    if np.isfinite(a_smp).sum() >= 8:
        for fmt in ("bfloat16", "float16"):
            fa, fe = representable(a_smp, fmt), representable(e_smp, fmt)
            if fa >= 0.99 and fe < 0.9:
                chance = 2.0 ** -(23 - (7 if fmt == "bfloat16" else 10))
                ev = (
                    f"{fa:.0%} of actual's values are {fmt} numbers (a float32 result is one with "
                    f"probability {chance:.2g}), expected's only {fe:.0%}"
                )
                score = 0.6
                if a.shape == e.shape:
                    own = replace(tol, eps=_OWN_EPS[fmt], precision=fmt)
                    r_own = _score.ratio(
                        a.astype(np.float64), e.astype(np.float64), tolerance_array(own, M)
                    )
                    if r_own.max() <= 1:
                        score = 0.9
                        ev += f", and the differences are within the {fmt} bound (max {float(r_own.max()):.2g} of it)"
                out.append(
                    Finding(
                        cause="precision",
                        score=score if not context else min(score, 0.85),
                        evidence=f"{ev}: the other side computed or stored its result in {fmt}; {_score.ADVICE['precision']}",
                        hypothesis=f"stored_{fmt}",
                        explains=score >= 0.9,
                        basis="outputs",
                        misfit=float("inf"),
                    )
                )
                break
    if a.shape == e.shape:
        # float16 overflow: Inf in actual exactly where |expected| exceeds float16's range
        inf_a = np.isinf(a) & np.isfinite(e)
        if inf_a.any():
            big = np.abs(e.astype(np.float64)) > 65504
            if np.all(big[inf_a]):
                out.append(
                    Finding(
                        cause="precision",
                        score=0.8 if not context else 0.85,
                        evidence=(
                            f"actual is Inf at {int(inf_a.sum())} positions, all where |expected| "
                            f"exceeds 65504, float16's largest value: a float16 step overflowed; "
                            f"{_score.ADVICE['precision']}"
                        ),
                        hypothesis="float16_overflow",
                        explains=False,
                        basis="outputs",
                        misfit=float("inf"),
                    )
                )
    if a.shape != e.shape:
        if a.ndim == e.ndim >= 3 and a.shape[0] == e.shape[0] and a.shape[-1] == e.shape[-1]:
            diffs = [a.shape[i] - e.shape[i] for i in _spatial(e.ndim)]
            if a.shape[1:-1] == e.shape[1:-1][::-1]:
                add(
                    "spatial_transpose",
                    0.55,
                    f"actual's spatial size {a.shape[1:-1]} is expected's {e.shape[1:-1]} reversed: "
                    f"height and width swapped somewhere; {_score.ADVICE['spatial_transpose']}",
                    "size_reversed",
                )
            elif any(diffs) and all(abs(d) <= 8 for d in diffs):
                add(
                    "padding_shift",
                    0.5,
                    f"actual's spatial size {a.shape[1:-1]} differs from expected's {e.shape[1:-1]} "
                    f"by {tuple(diffs)}, as a different padding would make it (e.g. 'SAME' or "
                    f"'VALID' for Knet's symmetric padding); {_score.ADVICE['padding_shift']}",
                    "size_change",
                )
        return out

    af, ef = a.astype(np.float64), e.astype(np.float64)
    tol0 = tolerance_array(tol, M)
    r0 = _score.ratio(af, ef, tol0)
    m0 = _score.misfit(r0)
    sp = _spatial(e.ndim)
    names = _names(e.ndim)
    # -- kernel_flip: actual looks like expected mirrored
    fin0 = np.isfinite(af) & np.isfinite(ef)
    rms0 = float(np.sqrt(np.mean((af - ef)[fin0] ** 2))) if fin0.any() else 0.0
    for n in range(len(sp), 0, -1):
        for axes in itertools.combinations(sp, n):
            if all(e.shape[i] == 1 for i in axes):
                continue
            fe = np.flip(ef, axes)
            r = _score.ratio(af, fe, tolerance_array(tol, np.flip(M, axes)))
            along = " and ".join(names[i] for i in axes)
            m = _score.misfit(r)
            if r.max() <= 1:
                add(
                    "kernel_flip",
                    0.7,
                    f"actual equals expected mirrored along {along} (within the {prec} bound): "
                    f"a kernel used without its 180-degree rotation does this on inputs symmetric "
                    f"along {along}; pass w and x to confirm",
                    f"mirror_{'_'.join(map(str, axes))}",
                    r,
                    m,
                )
                continue
            fin = np.isfinite(af) & np.isfinite(fe)
            rms = float(np.sqrt(np.mean((af - fe)[fin] ** 2))) if fin.any() else np.inf
            if rms0 > 0 and rms < 0.5 * rms0:
                add(
                    "kernel_flip",
                    0.6 * (1 - rms / rms0),
                    f"actual resembles expected mirrored along {along} (rms difference "
                    f"{rms:.3g} instead of {rms0:.3g}): a kernel used without its 180-degree "
                    f"rotation, on inputs nearly symmetric along {along}; pass w and x to confirm",
                    f"mirror_{'_'.join(map(str, axes))}",
                    r,
                    m,
                )
    # -- padding_shift: errors only at the border, or a one-pixel shift
    if sp and r0.max() > 1:
        for rim in (1, 2, 3):
            if not all(e.shape[i] > 2 * rim for i in sp):
                break
            inner = r0[tuple(slice(rim, -rim) if i in sp else slice(None) for i in range(e.ndim))]
            if inner.max() <= 1:
                bad = int((r0 > 1).sum())
                add(
                    "padding_shift",
                    0.75,
                    f"all {bad} elements outside the bound lie within {rim} pixel(s) of the border; "
                    f"the interior agrees (max {float(inner.max()):.2g} of the bound): the padding "
                    f"differs; {_score.ADVICE['padding_shift']}",
                    f"border_{rim}",
                    None,
                    _score.misfit(inner),
                )
                break
        for shift in itertools.product((-1, 0, 1), repeat=len(sp)):
            if not any(shift) or not all(
                e.shape[i] > 3 for i, s in zip(sp, shift, strict=True) if s
            ):
                continue
            sa, se = [slice(None)] * e.ndim, [slice(None)] * e.ndim
            for i, s in zip(sp, shift, strict=True):
                # compare actual[j] with expected[j + s], one pixel in from both ends
                lo, hi = 1, e.shape[i] - 1
                sa[i] = slice(max(lo, lo - s), min(hi, hi - s))
                se[i] = slice(max(lo, lo - s) + s, min(hi, hi - s) + s)
            ra = _score.ratio(af[tuple(sa)], ef[tuple(se)], tol0[tuple(se)])
            if ra.size and ra.max() <= 1:
                dirs = ", ".join(
                    f"{names[i]} by {s:+d}" for i, s in zip(sp, shift, strict=True) if s
                )
                # "SAME" pads the odd cell after (docs/tensorflow.md#same-padding)
                add(
                    "padding_shift",
                    0.75,
                    f"away from the border, actual equals expected shifted by one pixel ({dirs}) "
                    f"within the {prec} bound: the padding sits on one side ('SAME'-style "
                    f"asymmetric padding); {_score.ADVICE['padding_shift']}",
                    f"shift_{'_'.join(map(str, shift))}",
                    ra,
                    _score.misfit(ra),
                )
                break
    # -- not in the vocabulary, but worth naming: a bias or a scale on one side only
    if r0.max() > 1 and e.ndim >= 2:
        d = af - ef
        flat_d = d.reshape(-1, d.shape[-1])
        off = np.nanmedian(flat_d, axis=0)
        r_off = _score.ratio(af, ef + off, tol0)
        if r_off.max() <= 1 and np.any(off != 0):
            shown = ", ".join(f"{v:+.4g}" for v in off[:6]) + (", ..." if off.size > 6 else "")
            add(
                "unknown",
                0.9,
                f"actual = expected + a constant per output channel ({shown}), within the "
                f"{prec} bound: a bias added on one side only (or twice); with w and x, pass "
                "the Knet bias as bias=",
                "offset_per_channel",
                r_off,
                _score.misfit(r_off),
                capped=False,
            )
        fin = np.isfinite(af) & np.isfinite(ef)
        den = float(np.sum(ef[fin] ** 2))
        if den > 0:
            c = float(np.sum(af[fin] * ef[fin])) / den
            r_sc = _score.ratio(af, c * ef, tol0 * max(abs(c), 1.0))
            if c not in (0.0, 1.0) and r_sc.max() <= 1:
                add(
                    "unknown",
                    0.9,
                    f"actual = {c:.6g} x expected within the {prec} bound: a scale factor "
                    "(Knet's alpha, a normalization) applied on one side only",
                    "scale",
                    r_sc,
                    _score.misfit(r_sc),
                    capped=False,
                )
    # -- size of the errors (only when nothing else can be tested)
    if not context:
        fin = np.isfinite(r0) & (np.abs(M) > 0)
        if fin.any():
            rel = np.abs(af - ef)[fin] / np.abs(M)[fin]
            med = float(np.median(rel))
            frac = float(np.mean(r0 > 1))
            if frac > 0.3 and 2.0**-18 <= med <= 2.0**-6:
                add(
                    "precision",
                    0.5,
                    f"errors are small and everywhere ({frac:.0%} of elements outside the bound, "
                    f"median {med:.2g} of the magnitudes), as float16, bfloat16 or TF32 arithmetic "
                    f"gives; pass w and x to test it",
                    "error_size",
                    None,
                    m0,
                )
            elif frac > 0.3 and 2.0**-6 < med <= 0.25:
                add(
                    "quantization",
                    0.45,
                    f"errors of {med:.1%} of the magnitudes everywhere ({frac:.0%} of elements "
                    f"outside the bound), as quantized weights give; pass w and x to test it",
                    "error_size",
                    None,
                    m0,
                )
    return out
