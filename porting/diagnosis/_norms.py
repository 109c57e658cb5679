"""Why a port of a normalisation by a sample's own statistics (the `layernorm` and `groupnorm`
kinds: Flux's LayerNorm, GroupNorm, InstanceNorm) gives other numbers.

Hypotheses, each recomputed from the layer's input in float64: another epsilon or another
placement of it (`norm_epsilon`: Keras's default 1e-3, `eps^2`, `std + eps` instead of
`sqrt(var + eps)`: the three Flux versions' formulas, docs/flux.md#normalisation-flux), and for
a group norm the channels grouped another way (`norm_groups`: interleaved instead of
consecutive, one group per channel or a single group).
"""

from __future__ import annotations

import itertools

import numpy as np

from porting.diagnosis._core import _output_array
from porting.diagnosis._layers import _check_shapes, _finish, _Hyp
from porting.diagnosis._result import Diagnosis
from porting.errors import PortingError

__all__ = ["diagnose_normalisation"]

FORMULA_TEXT = {
    "var": "sqrt(var + eps)",
    "eps2": "sqrt(var + eps^2)",
    "std": "std + eps",
}
EPS_CANDIDATES = (1e-3, 1e-5, 1e-6, 1.001e-5)


def _view(x: np.ndarray, axes: tuple[int, ...] | None, groups: int | None, interleave: bool):
    """x (TF layout) with the normalised elements on the reduced axes: for groups, channels
    split `(G, C/G)` (consecutive) or `(C/G, G)` (interleaved)."""
    if groups is None:
        assert axes is not None
        return x, axes
    c = x.shape[-1]
    shape = (
        (*x.shape[:-1], c // groups, groups) if interleave else (*x.shape[:-1], groups, c // groups)
    )
    v = x.reshape(shape)
    g_axis = v.ndim - 1 if interleave else v.ndim - 2
    return v, tuple(i for i in range(1, v.ndim) if i != g_axis)


def _normalise(x, axes, groups, eps, formula, interleave=False):
    v, red = _view(x, axes, groups, interleave)
    mu = v.mean(axis=red, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=red, keepdims=True)
    den = (
        np.sqrt(var) + eps
        if formula == "std"
        else np.sqrt(var + (eps * eps if formula == "eps2" else eps))
    )
    a = 1.0 / den
    z = (v - mu) * a
    s = np.abs(v)
    f = (np.sqrt(var) + eps) / np.maximum(np.sqrt(var), 1e-300) if formula == "std" else 1.0
    mag = a * (
        s
        + s.mean(axis=red, keepdims=True)
        + f * np.abs(z) * (np.abs(z) * s).mean(axis=red, keepdims=True)
    )
    return z.reshape(x.shape), mag.reshape(x.shape), int(np.prod([v.shape[i] for i in red]))


def _affine(z, mag, scale, bias):
    if scale is None:
        return z, mag
    return z * scale + bias, np.abs(scale) * mag + np.abs(bias)


def diagnose_normalisation(
    x,
    actual,
    *,
    axes: tuple[int, ...] | None = None,
    groups: int | None = None,
    scale=None,
    bias=None,
    eps: float = 1e-5,
    formula: str = "var",
    expected=None,
) -> Diagnosis:
    """Why a port of a layer norm (`axes`: the normalised TensorFlow axes, batch 0) or a group
    norm (`groups`: over the spatial axes and each group of consecutive channels, channels
    last) gives `actual` for the input `x` (both TensorFlow layout, e.g. `(N, H, W, C)`).
    `scale`, `bias`: the affine part broadcastable on `x` (None: none); `eps`, `formula` the
    layer's ("var", "eps2", "std"). Causes: `rounding`, `norm_epsilon`, `norm_groups`,
    `unknown`."""
    xa = _output_array(x, "x")
    a = _output_array(actual, "actual")
    _check_shapes(xa, a, "x")
    if (axes is None) == (groups is None):
        raise PortingError("give the normalised axes (a layer norm) or groups (a group norm)")
    if formula not in FORMULA_TEXT:
        raise PortingError(f"formula={formula!r}; expected one of {', '.join(FORMULA_TEXT)}")
    if groups is not None and (groups < 1 or xa.shape[-1] % groups):
        raise PortingError(f"groups={groups!r} does not divide the {xa.shape[-1]} channels")
    x64 = xa.astype(np.float64)
    g = None if scale is None else np.asarray(scale, np.float64)
    b = None if bias is None else np.asarray(bias, np.float64)
    z, mag0, n = _normalise(x64, axes, groups, eps, formula)
    want, mag = _affine(z, mag0, g, b)
    e = want.astype(a.dtype) if expected is None else _output_array(expected, "expected")
    _check_shapes(e, a, "expected")
    k = n + 4
    hyps: list[_Hyp] = []
    cands = [eps, eps * eps, float(np.sqrt(eps)), *EPS_CANDIDATES]
    for f, ep in itertools.product(FORMULA_TEXT, dict.fromkeys(cands)):
        if (f, ep) == (formula, eps):
            continue
        zz, mm, _ = _normalise(x64, axes, groups, ep, f)
        pred, hmag = _affine(zz, mm, g, b)
        what = f"epsilon {ep:g} as {FORMULA_TEXT[f]} instead of {eps:g} as {FORMULA_TEXT[formula]}"
        hyps.append(
            _Hyp("norm_epsilon", f"norm:{f}:eps={ep:g}", what, pred, np.maximum(hmag, mag), k)
        )
    if groups is not None:
        c = xa.shape[-1]
        others = [("interleaved", groups, True)] if 1 < groups < c else []
        others += [(f"{gg} groups", gg, False) for gg in dict.fromkeys((c, 1)) if gg != groups]
        for label, gg, inter in others:
            zz, mm, _ = _normalise(x64, None, gg, eps, formula, interleave=inter)
            pred, hmag = _affine(zz, mm, g, b)
            what = (
                f"channels grouped {label} (channel c in group c mod G) instead of {groups} "
                "groups of consecutive channels"
                if inter
                else f"{label} instead of {groups}"
            )
            hyps.append(
                _Hyp("norm_groups", f"groups:{label}", what, pred, np.maximum(hmag, mag), k)
            )
    basis = f"recomputation of the normalisation (eps={eps:g}, {FORMULA_TEXT[formula]}) from x"
    return _finish(e, a, mag, k, hyps, basis, [])
