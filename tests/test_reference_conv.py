"""The reference conv4/deconv4 (`porting.knet`, backend "reference") against independent ones.

The fast reference (jobs of images x output rows, each padding the rows it reads, column
matrices from sliding windows, GEMMs, shifted GEMMs)
is checked against implementations written here straight from Knet's definitions
(docs/knet.md#conv4, #flip, #conv-size and #deconv4): explicit loops over output positions with
exactly rounded sums (`math.fsum`) for small sizes, and a per-kernel-offset shift-and-add in
float64 (long double for float64 inputs) for realistic sizes. Every algorithm and batching path of the reference is forced in turn through
its tuning knobs, so small inputs reach the paths that large inputs take.

Tolerances come from the accumulation: an output summing `K` terms `w*x` may be off by
`c * sqrt(K) * eps * sum(|w*x|)` (docs/numerics.md#tolerance and #worst-case), never a bare
constant; each check also proves the tolerance is tight enough to reject the kernel flip of the
other mode.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from porting.geometry import ConvGeometry
from porting.knet import conv4, deconv4, reference

# ---------------------------------------------------------------------------------------------
# Independent implementations (Julia-indexed arrays, no transposes, no im2col)


def _out_size(xs, ks, pad, stride, dil):
    return tuple(
        1 + (x + 2 * p - ((k - 1) * d + 1)) // s
        for x, k, p, s, d in zip(xs, ks, pad, stride, dil, strict=True)
    )


def _tuple(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def loop_conv4(w, x, *, padding=0, stride=1, dilation=1, mode=0):
    """Knet conv4 from its definition: `y[o,f,n] = sum_{k,c} w'[k,c,f] x[o*s + k*d - p, c, n]`,
    `w'` = w rotated 180 degrees for mode 0. Returns (y, sum |w x|, K) in float64, each y
    the exactly rounded sum of the float64 products (exact products for float32 inputs)."""
    nd = x.ndim - 2
    pad, st, dil = (_tuple(v, nd) for v in (padding, stride, dilation))
    ks, cin, cout = w.shape[:nd], w.shape[nd], w.shape[nd + 1]
    xs, n = x.shape[:nd], x.shape[-1]
    ys = _out_size(xs, ks, pad, st, dil)
    y = np.zeros((*ys, cout, n))
    mag = np.zeros_like(y)
    wf, xf = w.astype(np.float64).tolist(), x.astype(np.float64)
    for o in itertools.product(*(range(v) for v in ys)):
        taps = []
        for k in itertools.product(*(range(v) for v in ks)):
            xi = tuple(
                oi * s + ki * d - p for oi, ki, s, d, p in zip(o, k, st, dil, pad, strict=True)
            )
            if all(0 <= a < b for a, b in zip(xi, xs, strict=True)):
                kk = k if mode == 1 else tuple(v - 1 - ki for v, ki in zip(ks, k, strict=True))
                taps.append((kk, xf[xi].tolist()))  # xf[xi]: (cin, n)
        for f in range(cout):
            for b in range(n):
                terms = []
                for kk, xv in taps:
                    wk = wf
                    for i in kk:
                        wk = wk[i]
                    terms.extend(wk[c][f] * xv[c][b] for c in range(cin))
                y[(*o, f, b)] = math.fsum(terms)
                mag[(*o, f, b)] = math.fsum(abs(t) for t in terms)
    return y, mag, math.prod(ks) * cin


def loop_deconv4(w, x, *, padding=0, stride=1, dilation=1, mode=0):
    """Knet deconv4 from its definition, the adjoint of conv4: every input position o and kernel
    offset k send `sum_cx w'[k,cy,cx] x[o,cx,n]` to output `o*s + k*d - p` (if inside)."""
    nd = x.ndim - 2
    pad, st, dil = (_tuple(v, nd) for v in (padding, stride, dilation))
    ks, cy, cx = w.shape[:nd], w.shape[nd], w.shape[nd + 1]
    xs, n = x.shape[:nd], x.shape[-1]
    ys = tuple(
        (xi - 1) * s + (k - 1) * d + 1 - 2 * p
        for xi, s, k, d, p in zip(xs, st, ks, dil, pad, strict=True)
    )
    terms = {}
    wf, xf = w.astype(np.float64), x.astype(np.float64)
    for o in itertools.product(*(range(v) for v in xs)):
        for k in itertools.product(*(range(v) for v in ks)):
            yi = tuple(
                oi * s + ki * d - p for oi, ki, s, d, p in zip(o, k, st, dil, pad, strict=True)
            )
            if not all(0 <= a < b for a, b in zip(yi, ys, strict=True)):
                continue
            kk = k if mode == 1 else tuple(v - 1 - ki for v, ki in zip(ks, k, strict=True))
            prods = wf[kk][:, :, None] * xf[o][None, :, :]  # (cy, cx, n), exact for float32
            for a in range(cy):
                for b in range(n):
                    terms.setdefault((*yi, a, b), []).extend(prods[a, :, b].tolist())
    y = np.zeros((*ys, cy, n))
    mag = np.zeros_like(y)
    for idx, t in terms.items():
        y[idx] = math.fsum(t)
        mag[idx] = math.fsum(abs(v) for v in t)
    return y, mag, math.prod(ks) * cx  # an upper bound on the terms any output sums


def shift_conv4(w, x, *, padding=0, stride=1, dilation=1, mode=0):
    """Knet conv4 vectorised differently from the reference: a loop over kernel offsets, each a
    strided slice of the padded input times that offset's (cin, cout) matrix, accumulated in
    float64 (long double for float64 inputs, so the float64 reference is checked against a
    sum about 2000 times more precise). Returns (y, sum |w x|, K, eps of the accumulation)."""
    nd = x.ndim - 2
    pad, st, dil = (_tuple(v, nd) for v in (padding, stride, dilation))
    acc = np.longdouble if x.dtype == np.float64 else np.float64
    ks, xs = w.shape[:nd], x.shape[:nd]
    ys = _out_size(xs, ks, pad, st, dil)
    xp = np.zeros((*(v + 2 * p for v, p in zip(xs, pad, strict=True)), *x.shape[nd:]), acc)
    xp[tuple(slice(p, p + v) for p, v in zip(pad, xs, strict=True))] = x
    wa = w.astype(acc)
    y = np.zeros((*ys, w.shape[-1], x.shape[-1]), acc)
    mag = np.zeros_like(y)
    for k in itertools.product(*(range(v) for v in ks)):
        kk = k if mode == 1 else tuple(v - 1 - ki for v, ki in zip(ks, k, strict=True))
        sl = xp[
            tuple(
                slice(ki * d, ki * d + (yi - 1) * s + 1, s)
                for ki, d, yi, s in zip(k, dil, ys, st, strict=True)
            )
        ]
        y += np.moveaxis(np.tensordot(sl, wa[kk], axes=([nd], [0])), -1, -2)
        mag += np.moveaxis(np.tensordot(np.abs(sl), np.abs(wa[kk]), axes=([nd], [0])), -1, -2)
    return y, mag, math.prod(ks) * w.shape[nd], float(np.finfo(acc).eps)


# ---------------------------------------------------------------------------------------------
# Tolerance


def check_close(actual, expected, mag, k, *, alpha=1.0, ref_eps=0.0, wrong=None):
    """Assert |actual - expected| <= tol with tol = |alpha| (2 sqrt(K) + 1) eps sum|w x| (+ the
    independent sum's own worst-case error K ref_eps sum|w x|); `+1` covers rounding the
    result (and alpha's product) to the output type. If `wrong` (another mode's answer) is
    given, assert it is rejected: the tolerance is not vacuous."""
    eps = float(np.finfo(actual.dtype).eps)
    tol = abs(alpha) * ((2 * math.sqrt(k) + 1) * eps + k * ref_eps) * np.asarray(mag, np.float64)
    tol = tol + np.finfo(actual.dtype).tiny  # an all-zero window must give exactly 0
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(alpha * expected, np.float64))
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert np.all(err <= tol), (
        f"max error {err[worst]:.3g} > tolerance {tol[worst]:.3g} at {worst} "
        f"(K={k}, eps={eps:.3g}, sum|wx|={mag[worst]:.3g})"
    )
    if wrong is not None:
        werr = np.abs(np.asarray(actual, np.float64) - alpha * np.asarray(wrong, np.float64))
        assert np.any(werr > tol), "the tolerance also accepts the other mode's (flipped) answer"


# The reference's tuning knobs, set so that small inputs take every path large ones take.
PATHS = {
    "default": {},
    "im2col": {"_MIN_SHIFT_ROWS": 10**9},
    "shifted": {"_MIN_SHIFT_ROWS": 1},
    "shifted-row-batches": {"_MIN_SHIFT_ROWS": 1, "_COL_BYTES": 1},
    "im2col-row-batches": {"_MIN_SHIFT_ROWS": 10**9, "_COL_BYTES": 1},
    "image-batches": {"_MIN_SHIFT_ROWS": 1, "_COL_BYTES": 3000},
    # Jobs of one output row each (every slab at a top border, a bottom border or between), and
    # of longer row ranges (n=2 images, 3 jobs wanted: pieces of about 2/3 of the rows, the
    # last one shorter where they do not divide).
    "row-jobs": {"_MIN_SHIFT_ROWS": 1, "_MIN_JOBS": 10**6, "_JOB_MACS": 1},
    "row-jobs-im2col": {"_MIN_SHIFT_ROWS": 10**9, "_MIN_JOBS": 10**6, "_JOB_MACS": 1},
    "row-jobs-uneven": {"_MIN_SHIFT_ROWS": 1, "_MIN_JOBS": 3, "_JOB_MACS": 1},
}


@pytest.fixture(params=sorted(PATHS))
def path(request, monkeypatch):
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(reference, name, value)
    return request.param


def _arrays(rng, xs, ks, cin, cout, n, dtype, order="F", wshape=None):
    x = rng.standard_normal((*xs, cin, n)).astype(dtype)
    w = rng.standard_normal(wshape or (*ks, cin, cout)).astype(dtype)
    return (np.asfortranarray(x) if order == "F" else np.ascontiguousarray(x)), w


# Geometries: (spatial input size, kernel size, padding, stride, dilation); small enough for
# the loop reference, chosen to hit odd/even kernels, per-dimension values, inner strides
# (which the shifted path takes), outer strides (which it leaves to im2col), all-padding
# windows and sizes where the stride does not divide evenly.
GEOMS = [
    ((7,), (3,), 1, 1, 1),
    ((9,), (2,), 1, 2, 2),
    ((6,), (1,), 0, 1, 1),
    ((6, 5), (3, 3), 1, 1, 1),
    ((7, 6), (2, 3), (1, 2), 1, 1),
    ((8, 7), (3, 2), (2, 1), (2, 1), 1),
    ((7, 8), (3, 3), (1, 0), (1, 3), (2, 1)),
    ((9, 6), (2, 2), 1, (1, 2), (3, 1)),
    ((4, 5), (1, 3), 0, 1, 1),
    ((5, 4, 4), (3, 2, 3), 1, 1, 1),
    ((5, 6, 4), (2, 3, 2), (1, 0, 1), (2, 1, 1), (1, 2, 1)),
]


_LOOPS: dict = {}


def _loops(fn, key, w, x, **kw):
    """`fn` for both modes, computed once per (test data, geometry): the paths share them."""
    if key not in _LOOPS:
        _LOOPS[key] = {mode: fn(w, x, mode=mode, **kw) for mode in (0, 1)}
    return _LOOPS[key]


def _geom_id(g):
    return f"x{g[0]}k{g[1]}p{g[2]}s{g[3]}d{g[4]}".replace(" ", "")


@pytest.mark.parametrize("geom", GEOMS, ids=_geom_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv4_matches_loops(geom, dtype, path):
    xs, ks, pad, stride, dil = geom
    rng = np.random.default_rng(sum(xs) * 7 + sum(ks) + len(xs) * 100)
    x, w = _arrays(rng, xs, ks, cin=3, cout=2, n=2, dtype=dtype)
    kw = dict(padding=pad, stride=stride, dilation=dil)
    loops = _loops(loop_conv4, ("conv", geom, dtype), w, x, **kw)
    for mode in (0, 1):
        y = conv4(w, x, mode=mode, backend="reference", **kw)
        expected, mag, k = loops[mode]
        assert y.shape == expected.shape and y.dtype == dtype and y.flags.f_contiguous
        check_close(y, expected, mag, k, wrong=loops[1 - mode][0] if math.prod(ks) > 1 else None)


@pytest.mark.parametrize("geom", GEOMS, ids=_geom_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deconv4_matches_loops(geom, dtype, path):
    xs, ks, pad, stride, dil = geom
    nd = len(xs)
    # deconv4's output must be non-empty: keep the padding within half the kernel extent.
    pad = tuple(
        min(p, ((k - 1) * d) // 2)
        for p, k, d in zip(_tuple(pad, nd), ks, _tuple(dil, nd), strict=True)
    )
    rng = np.random.default_rng(sum(xs) * 5 + sum(ks) + nd * 10)
    xs = tuple(max(1, v // 2) for v in xs)
    x, w = _arrays(rng, xs, ks, cin=2, cout=3, n=2, dtype=dtype, wshape=(*ks, 3, 2))  # Cy=3, Cx=2
    kw = dict(padding=pad, stride=stride, dilation=dil)
    loops = _loops(loop_deconv4, ("deconv", geom, dtype), w, x, **kw)
    for mode in (0, 1):
        y = deconv4(w, x, mode=mode, backend="reference", **kw)
        expected, mag, k = loops[mode]
        assert y.shape == expected.shape and y.dtype == dtype and y.flags.f_contiguous
        check_close(y, expected, mag, k, wrong=loops[1 - mode][0] if math.prod(ks) > 1 else None)


@pytest.mark.parametrize("padding", [(3, 2), (3, 0), (0, 4)])
def test_deconv4_padding_beyond_the_kernel_crops(padding, path):
    """Stride 1 runs deconv4 as a correlation with padding (K-1)*d - p: negative (a crop) in
    one or both dims here, next to positive padding in the other."""
    rng = np.random.default_rng(11)
    x, w = _arrays(rng, (9, 8), (3, 2), 2, 3, n=2, dtype=np.float32, wshape=(3, 2, 3, 2))
    kw = dict(padding=padding, dilation=(1, 2))
    for mode in (0, 1):
        y = deconv4(w, x, mode=mode, backend="reference", **kw)
        expected, mag, k = loop_deconv4(w, x, mode=mode, **kw)
        assert y.shape == expected.shape
        check_close(y, expected, mag, k)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_deconv4_is_the_adjoint_of_conv4(nd):
    """<conv4(w, u), v> == <u, deconv4(w, v)>: float64, realistic sizes, strided and dilated."""
    rng = np.random.default_rng(40 + nd)
    ks, pad, st, dil = (3, 2, 3)[:nd], (1, 0, 2)[:nd], (2, 1, 2)[:nd], (1, 2, 1)[:nd]
    xs = (9, 7, 6)[:nd]
    w = rng.standard_normal((*ks, 5, 4))
    v = rng.standard_normal((*xs, 4, 3))
    g = ConvGeometry.from_knet(nd, padding=pad, stride=st, dilation=dil)
    u = rng.standard_normal((*g.transpose_output_size(xs, ks), 5, 3))
    for mode in (0, 1):
        cu = conv4(w, u, padding=pad, stride=st, dilation=dil, mode=mode, backend="reference")
        dv = deconv4(w, v, padding=pad, stride=st, dilation=dil, mode=mode, backend="reference")
        lhs, rhs = math.fsum((cu * v).ravel()), math.fsum((u * dv).ravel())
        # Both sides sum |w u v| over the same triples; each output carries at most
        # (2 sqrt(K) + 1) eps of its magnitude (K terms, K = kernel volume x channels).
        mag = math.fsum(
            (
                conv4(
                    np.abs(w),
                    np.abs(u),
                    padding=pad,
                    stride=st,
                    dilation=dil,
                    mode=mode,
                    backend="reference",
                )
                * np.abs(v)
            ).ravel()
        )
        k = math.prod(ks) * 5
        bound = 2 * (2 * math.sqrt(k) + 1) * np.finfo(np.float64).eps * mag
        assert abs(lhs - rhs) <= bound, (mode, lhs, rhs, bound)


# Realistic sizes: the benchmark's layers at a smaller batch (and the 224 x 224 one on a smaller
# image), plus dilated, 1-D and 3-D layers, each taking the path the default knobs choose for it.
LAYERS = [
    # (X..., C, F, K..., padding, stride, dilation, N)
    ((56, 56), 64, 64, (3, 3), 1, 1, 1, 2),
    ((28, 28), 32, 64, (5, 5), 2, 1, 1, 3),
    ((96, 80), 3, 16, (7, 7), 3, 1, 1, 1),  # too few channels for shifted GEMMs; row batches
    ((97, 80), 3, 8, (7, 7), 3, 2, 1, 1),  # stride 2: im2col
    ((30, 20), 48, 8, (3, 3), 2, 1, 2, 2),
    ((200,), 64, 16, (5,), 2, 1, 1, 3),
    ((12, 10, 9), 16, 8, (3, 3, 3), 1, 1, 1, 2),
]


@pytest.mark.parametrize(
    "layer", LAYERS, ids=lambda layer: f"x{layer[0]}c{layer[1]}k{layer[3]}s{layer[5]}"
)
@pytest.mark.parametrize("order", ["F", "C"])
def test_conv4_realistic_sizes(layer, order):
    xs, cin, cout, ks, pad, st, dil, n = layer
    rng = np.random.default_rng(cin * 1000 + sum(xs))
    x, w = _arrays(rng, xs, ks, cin, cout, n, np.float32, order=order)
    y = conv4(w, x, padding=pad, stride=st, dilation=dil, backend="reference")
    expected, mag, k, ref_eps = shift_conv4(w, x, padding=pad, stride=st, dilation=dil)
    wrong, _, _, _ = shift_conv4(w, x, padding=pad, stride=st, dilation=dil, mode=1)
    assert y.dtype == np.float32 and y.flags.f_contiguous
    check_close(y, expected, mag, k, ref_eps=ref_eps, wrong=wrong)


def test_float64_against_long_double_sums():
    rng = np.random.default_rng(64)
    x, w = _arrays(rng, (20, 17), (3, 3), 24, 6, 2, np.float64)
    y = conv4(w, x, padding=1, dilation=(2, 1), backend="reference")
    expected, mag, k, ref_eps = shift_conv4(w, x, padding=1, dilation=(2, 1))
    wrong, _, _, _ = shift_conv4(w, x, padding=1, dilation=(2, 1), mode=1)
    assert y.dtype == np.float64
    check_close(y, expected, mag, k, ref_eps=ref_eps, wrong=wrong)


def test_memory_order_does_not_change_a_bit(path):
    rng = np.random.default_rng(5)
    x, w = _arrays(rng, (11, 9), (3, 3), 4, 5, 3, np.float32)
    for kw in ({"padding": 1}, {"padding": 0, "stride": 2}, {"padding": 2, "dilation": 2}):
        a = conv4(np.asfortranarray(w), np.asfortranarray(x), backend="reference", **kw)
        b = conv4(np.ascontiguousarray(w), np.ascontiguousarray(x), backend="reference", **kw)
        c = conv4(w, x[:, ::-1][:, ::-1], backend="reference", **kw)  # negative strides
        assert np.array_equal(a, b) and np.array_equal(a, c)
        wd = w.transpose(0, 1, 3, 2)  # (W1, W2, Cy=5, Cx=4)
        d = deconv4(wd, np.ascontiguousarray(x), backend="reference", **kw)
        e = deconv4(wd, np.asfortranarray(x), backend="reference", **kw)
        assert np.array_equal(d, e)


def test_batch_members_are_independent(path):
    """Each image of a batch gets its own answer, alone or batched (whatever the batching)."""
    rng = np.random.default_rng(6)
    x, w = _arrays(rng, (10, 8), (3, 3), 6, 4, 5, np.float32)
    y = conv4(w, x, padding=1, backend="reference")
    for b in range(5):
        alone = conv4(w, x[..., b : b + 1], padding=1, backend="reference")
        expected, mag, k = loop_conv4(w, x[..., b : b + 1], padding=1)
        check_close(alone, expected, mag, k)
        check_close(y[..., b : b + 1], expected, mag, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.1, -3, 2.5e-3])
def test_alpha_is_applied_in_float64_and_rounded_once(dtype, alpha):
    """Knet's lmul!(alpha, y): each element is float64(alpha) * y rounded once to y's type."""
    rng = np.random.default_rng(7)
    x, w = _arrays(rng, (9, 7), (3, 2), 3, 2, 2, dtype)
    y1 = conv4(w, x, padding=1, backend="reference")
    ya = conv4(w, x, padding=1, alpha=alpha, backend="reference")
    assert np.array_equal(ya, (np.float64(alpha) * y1.astype(np.float64)).astype(dtype))
    expected, mag, k = loop_conv4(w, x, padding=1)
    check_close(ya, expected, mag, k, alpha=alpha)
    d1 = deconv4(w, x[:, :, :2], padding=1, backend="reference", stride=2)
    da = deconv4(w, x[:, :, :2], padding=1, backend="reference", stride=2, alpha=alpha)
    assert np.array_equal(da, (np.float64(alpha) * d1.astype(np.float64)).astype(dtype))


def test_inputs_are_not_modified(path):
    rng = np.random.default_rng(8)
    x, w = _arrays(rng, (8, 8), (3, 3), 3, 2, 2, np.float32)
    x0, w0 = x.copy(), w.copy()
    conv4(w, x, padding=1, alpha=2, backend="reference")
    deconv4(w, x[:, :, :2], padding=1, alpha=2, backend="reference")
    assert np.array_equal(x, x0) and np.array_equal(w, w0)


# ---------------------------------------------------------------------------------------------
# Seed 002: Knet's own printed output (Float64 Knet, kernel and data as in the report).
# The report's TensorFlow listing prints every kernel and data value as float32 with 8
# decimals (enough to fix each float32 exactly), copied [i, j, c] straight across from Julia.

SEED002_W = [  # w[i][j][c] = Julia testw[i+1, j+1, c+1]
    [
        [0.4800154, 0.55037946, 0.42947057],
        [0.4085474, 0.44007453, 0.373467],
        [-0.06514555, -0.08138704, -0.06136011],
    ],
    [
        [0.31047726, 0.34573907, 0.27476987],
        [0.05020237, 0.04063221, 0.03868078],
        [-0.40338343, -0.45350131, -0.36722335],
    ],
    [
        [-0.05087169, -0.05863491, -0.05746817],
        [-0.28522751, -0.33066967, -0.26224968],
        [-0.41851634, -0.4850302, -0.35009676],
    ],
]
SEED002_ROWS = [  # x[i][j][c] = Julia partappledata[i+1, j+1, c+1], the same for every j
    [41.06299973, 55.22100067, 60.3430481],
    [41.06299973, 55.22100067, 60.3430481],
    [41.06299973, 55.22100067, 60.3430481],
    [42.06299973, 56.22100067, 61.3430481],
    [42.06299973, 56.22100067, 62.3430481],
]
SEED002_KNET = [  # Knet's ydata[:, :, 1, 1] as printed (6 significant digits)
    [194.694, 120.055, 120.055, 120.055, -4.38531],
    [140.102, 0.368195, 0.368195, 0.368195, -115.278],
    [142.784, 2.84226, 2.84226, 2.84226, -114.264],
    [144.647, 3.42023, 3.42023, 3.42023, -115.046],
    [0.798015, -130.909, -130.909, -130.909, -171.574],
]


def test_seed_002_reproduces_knets_printed_output():
    """conv4(w, x; padding=1), mode 0, Float64, as in the report, matches Knet's print.

    Tolerance: half a unit in the 6th significant digit of each printed value, plus what the
    data's uncertainty can move the sum: Julia's Float64 data is known here only through its
    float32 listing, i.e. to half a float32 ulp each (the kernel is Float32 in Julia, so exact).
    Pure printing precision is not enough: at [2, 2] the float32-listed data give 0.36819551,
    which would print 0.368196 (1.02 half-units from Knet's 0.368195).
    """
    w = np.array(SEED002_W, np.float32).astype(np.float64)[..., None]  # (3, 3, 3, 1)
    x = np.array([[r] * 5 for r in SEED002_ROWS], np.float32)[..., None]  # (5, 5, 3, 1)
    knet = np.array(SEED002_KNET)
    y = conv4(w, x.astype(np.float64), padding=1, backend="reference")
    assert y.shape == (5, 5, 1, 1) and y.dtype == np.float64
    printed = 0.5 * 10.0 ** (np.floor(np.log10(np.abs(knet))) - 5)
    data = np.max(np.spacing(x)) / 2 * np.abs(w).sum()
    tol = printed + data
    err = np.abs(y[:, :, 0, 0] - knet)
    assert np.all(err <= tol), np.max(err / tol)
    # The same tolerance rejects cross-correlation (mode 1, what TensorFlow computed), whose
    # answer agrees with Knet's only where the window is symmetric (the centre column).
    y1 = conv4(w, x.astype(np.float64), padding=1, mode=1, backend="reference")
    assert np.max(np.abs(y1[:, :, 0, 0] - knet) / tol) > 1e3
    # And float32 data (as the report's TensorFlow run used) lands within float32 rounding.
    y32 = conv4(w.astype(np.float32), x, padding=1, backend="reference")
    eps32 = float(np.finfo(np.float32).eps)
    mag = np.abs(w).sum() * np.abs(x).max()
    assert np.all(np.abs(y32[:, :, 0, 0] - knet) <= tol + (2 * math.sqrt(27) + 1) * eps32 * mag)
