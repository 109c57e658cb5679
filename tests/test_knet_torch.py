"""The PyTorch float64 re-implementation of Knet's operations (tests/knet_torch.py) checked
against data it did not produce: NNlib's own hard-coded conv/pool answers (golden vectors),
the outputs stored in Knet's conv tutorial, and small cases derived by hand from Knet's
definitions (docs/knet.md#conv4, #deconv4, #pool, #pool-nan, #batchnorm, #batchnorm-ops21,
#ops21-conv, #ops21-pool, #layers21, #embed, #activations and #softmax).

The golden values are exact integers or short binary fractions, so float64 results must match
them to a few ULPs (``rtol=1e-12``); the 3-D filter gradients are printed to 6 significant
figures in NNlib's source, hence ``rtol=1e-5`` there only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

import knet_torch as K  # noqa: E402  (tests/ is on sys.path; needs torch)

EXACT = dict(rtol=1e-12, atol=0.0)
FLOATMAX = np.finfo(np.float64).max


# ---------------------------------------------------------------------------------------------
# Golden vectors from NNlib (test/conv.jl, test/pooling.jl at v0.8.21)


def _golden_path() -> Path | None:
    from golden_paths import golden_dir  # tests/ is on sys.path

    base = golden_dir("nnlib_vectors.json")
    return None if base is None else base / "nnlib_vectors.json"


@pytest.fixture(scope="module")
def golden() -> dict:
    path = _golden_path()
    if path is None:
        pytest.skip(
            "nnlib_vectors.json not found (looked in PORTING_GOLDEN_DIR, <repo>/../shared/golden, "
            "/work/shared/golden)"
        )
    return json.loads(path.read_text())


def _arr(entry: dict) -> np.ndarray:
    """A Julia array from its size and column-major data, Julia-indexed."""
    return np.array(entry["data_colmajor"], dtype=np.float64).reshape(
        entry["julia_size"], order="F"
    )


def _cn(a: np.ndarray) -> np.ndarray:
    """Append Julia's trailing channel and batch dims of size 1."""
    return a[..., None, None]


CONV_CASES = {
    "plain": {},
    "stride": {"stride": 2},
    "dil": {"dilation": 2},
    "pad": {"padding": 1},
    "flip": {"mode": 1},  # NNlib flipkernel=true == Knet mode=1 (cross-correlation)
}


@pytest.mark.parametrize("rank", ["1", "2", "3"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv4_reproduces_nnlib_golden_y(golden, rank, case):
    c = golden["conv"][rank]
    x, w = _cn(_arr(c["x"])), _cn(_arr(c["w"]))
    y = K.conv4(w, x, **CONV_CASES[case])
    expected = _arr(c[f"y_{case}"])
    assert y.shape == expected.shape + (1, 1)
    np.testing.assert_allclose(y[..., 0, 0], expected, **EXACT)


@pytest.mark.parametrize("rank", ["1", "2", "3"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_deconv4_reproduces_nnlib_golden_dx(golden, rank, case):
    """NNlib's dx is the input gradient with dy := y, i.e. deconv4(w, y) (Knet's deconv4 is
    ∇conv_data). Knet sizes the output by dcdims, so where the forward conv left trailing input
    cells unused (the stride case) NNlib's dx has zeros there and deconv4 is shorter."""
    c = golden["conv"][rank]
    w = _cn(_arr(c["w"]))
    y = _cn(_arr(c[f"y_{case}"]))
    dx = K.deconv4(w, y, **CONV_CASES[case])[..., 0, 0]
    expected = _arr(c[f"dx_{case}"])
    inner = tuple(slice(0, n) for n in dx.shape)
    np.testing.assert_allclose(dx, expected[inner], **EXACT)
    rest = expected.copy()
    rest[inner] = 0
    assert not rest.any(), "cells beyond deconv4's output must have zero gradient in NNlib"
    if case != "stride":
        assert dx.shape == expected.shape


@pytest.mark.parametrize("rank", ["1", "2", "3"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv4_autograd_reproduces_nnlib_golden_dx_dw(golden, rank, case):
    c = golden["conv"][rank]
    x = torch.tensor(_cn(_arr(c["x"])), requires_grad=True)
    w = torch.tensor(_cn(_arr(c["w"])), requires_grad=True)
    y = K.conv4(w, x, **CONV_CASES[case])
    (y * y.detach()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[..., 0, 0], _arr(c[f"dx_{case}"]), **EXACT)
    rtol = 1e-5 if rank == "3" else 1e-12  # 3-D dw printed to ~6 significant figures
    np.testing.assert_allclose(w.grad.numpy()[..., 0, 0], _arr(c[f"dw_{case}"]), rtol=rtol)


POOL_CASES = {"k2": {}, "k2_stride1": {"stride": 1}, "k2_pad1": {"padding": 1}}


@pytest.mark.parametrize("kind,mode", [("maxpool", 0), ("maxpool", 3), ("meanpool", 1)])
@pytest.mark.parametrize("rank", ["1", "2", "3"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_reproduces_nnlib_golden(golden, kind, mode, rank, case):
    c = golden[kind][rank]
    x = torch.tensor(_cn(_arr(c["x"])), requires_grad=True)
    y = K.pool(x, window=2, mode=mode, **POOL_CASES[case])
    np.testing.assert_array_equal(y.detach().numpy()[..., 0, 0], _arr(c[f"y_{case}"]))
    (y * y.detach()).sum().backward()  # NNlib's harness: ∇pool(y, y, x)
    np.testing.assert_array_equal(x.grad.numpy()[..., 0, 0], _arr(c[f"dx_{case}"]))


def test_pool_reproduces_nnlib_issue_regressions():
    # NNlib test/pooling.jl, issue #229: meanpool of -ones(4,4) with padding 1 counts the pads
    y = K.pool(-np.ones((4, 4, 1, 1)), window=2, padding=1, mode=1)[:, :, 0, 0]
    expected = np.array([[-0.25, -0.5, -0.25], [-0.5, -1.0, -0.5], [-0.25, -0.5, -0.25]])
    np.testing.assert_array_equal(y, expected)
    # issue #133: maxpool 3x3 of 1:9, padding 1 stride 2 picks the corners
    x = np.arange(1.0, 10.0).reshape((3, 3, 1, 1), order="F")
    y = K.pool(x, window=2, padding=1, stride=2)[:, :, 0, 0]
    np.testing.assert_array_equal(y, np.array([[1.0, 7.0], [3.0, 9.0]]))


# ---------------------------------------------------------------------------------------------
# Outputs stored in Knet's tutorial/50.cnn.ipynb (Knet v1.4.10)


def _jl(values, size):
    return np.array(values, dtype=np.float64).reshape(size, order="F")


def test_conv4_reproduces_knet_tutorial():
    w = _jl([1, 2, 3], (3, 1, 1, 1))
    x = _jl(range(1, 8), (7, 1, 1, 1))
    np.testing.assert_array_equal(K.conv4(w, x).ravel(), [10, 16, 22, 28, 34])
    np.testing.assert_array_equal(
        K.conv4(w, x, padding=(1, 0)).ravel(), [4, 10, 16, 22, 28, 34, 32]
    )
    np.testing.assert_array_equal(K.conv4(w, x, padding=(1, 0), stride=3).ravel(), [4, 22, 32])
    np.testing.assert_array_equal(K.conv4(w, x, mode=1).ravel(), [14, 20, 26, 32, 38])
    x = _jl(range(1, 10), (3, 3, 1, 1))
    w = _jl(range(1, 5), (2, 2, 1, 1))
    np.testing.assert_array_equal(K.conv4(w, x)[:, :, 0, 0], [[23, 53], [33, 63]])
    # channels: x (3,3,2,1), w (2,2,2,3) -> (2,2,3,1)
    x = _jl(range(1, 19), (3, 3, 2, 1))
    w = _jl(range(1, 25), (2, 2, 2, 3))
    y = K.conv4(w, x)
    assert y.shape == (2, 2, 3, 1)
    np.testing.assert_array_equal(y[:, :, 0, 0], [[328, 436], [364, 472]])
    np.testing.assert_array_equal(y[:, :, 1, 0], [[808, 1108], [908, 1208]])
    np.testing.assert_array_equal(y[:, :, 2, 0], [[1288, 1780], [1452, 1944]])


def test_pool_reproduces_knet_tutorial():
    x = _jl(range(1, 7), (6, 1, 1, 1))
    np.testing.assert_array_equal(K.pool(x, window=(2, 1)).ravel(), [2, 4, 6])
    np.testing.assert_array_equal(K.pool(x, window=(3, 1)).ravel(), [3, 6])
    np.testing.assert_array_equal(K.pool(x, window=(2, 1), padding=(1, 0)).ravel(), [1, 3, 5, 6])
    x10 = _jl(range(1, 11), (10, 1, 1, 1))
    np.testing.assert_array_equal(K.pool(x10, window=(2, 1), stride=4).ravel(), [2, 6, 10])
    # CPU: mode 1 counts the pad; mode 2 runs as mode 1 (the GPU would give [1, 2.5, 4.5, 6])
    for mode in (1, 2):
        np.testing.assert_array_equal(
            K.pool(x, window=(2, 1), padding=(1, 0), mode=mode).ravel(), [0.5, 2.5, 4.5, 3.0]
        )
    y = K.pool(_jl(range(1, 33), (4, 4, 2, 1)))
    np.testing.assert_array_equal(y[:, :, 0, 0], [[6, 14], [8, 16]])
    np.testing.assert_array_equal(y[:, :, 1, 0], [[22, 30], [24, 32]])


# ---------------------------------------------------------------------------------------------
# Convolution, deconvolution and pooling edge cases derived by hand


def test_conv4_padding_beyond_kernel_and_alpha():
    x = _jl([1, 2, 3], (3, 1, 1))
    w = _jl([1, 1], (2, 1, 1))
    # zero-padded [0 0 1 2 3 0 0], window sums of 2
    np.testing.assert_array_equal(K.conv4(w, x, padding=2, mode=1).ravel(), [0, 1, 3, 5, 3, 0])
    np.testing.assert_array_equal(
        K.conv4(w, x, padding=2, alpha=0.5).ravel(), [0, 0.5, 1.5, 2.5, 1.5, 0]
    )


def test_conv4_and_pool_flat_asymmetric_padding():
    """NNlib reads a 2*nd padding tuple as (lo1, hi1, lo2, hi2, ...)."""
    x = _jl([1, 2, 3], (3, 1, 1))
    w = _jl([1, 1], (2, 1, 1))
    np.testing.assert_array_equal(K.conv4(w, x, padding=(1, 0)).ravel(), [1, 3, 5])
    np.testing.assert_array_equal(K.pool(x, padding=(0, 1), mode=1).ravel(), [1.5, 1.5])
    x2 = np.ones((2, 3, 1, 1))
    y = K.conv4(np.ones((1, 1, 1, 1)), x2, padding=(1, 0, 0, 2))
    assert y.shape == (3, 5, 1, 1)
    np.testing.assert_array_equal(y[1:, :3], x2)
    assert y.sum() == x2.sum()


def _loop_conv2d(w, x, pads, stride, dilation, groups, flip):
    """Direct loops in Julia indexing: x (X1,X2,Cx,N), w (W1,W2,Cx/groups,Cy), pads (lo,hi)x2."""
    (lo1, hi1), (lo2, hi2) = pads
    xp = np.zeros((x.shape[0] + lo1 + hi1, x.shape[1] + lo2 + hi2) + x.shape[2:])
    xp[lo1 : lo1 + x.shape[0], lo2 : lo2 + x.shape[1]] = x
    if flip:
        w = w[::-1, ::-1]
    k1, k2, cw, cy = w.shape
    y1 = (xp.shape[0] - ((k1 - 1) * dilation + 1)) // stride + 1
    y2 = (xp.shape[1] - ((k2 - 1) * dilation + 1)) // stride + 1
    y = np.zeros((y1, y2, cy, x.shape[3]))
    per_group = cy // groups
    for i, j, co, n in np.ndindex(y.shape):
        g = co // per_group
        acc = 0.0
        for a, b, c in np.ndindex(k1, k2, cw):
            acc += (
                w[a, b, c, co]
                * xp[i * stride + a * dilation, j * stride + b * dilation, g * cw + c, n]
            )
        y[i, j, co, n] = acc
    return y


@pytest.mark.parametrize("seed", range(6))
def test_ops21_conv_and_conv4_match_direct_loops(seed):
    rng = np.random.default_rng(seed)
    groups = [1, 2, 3][seed % 3]
    cw, cy = int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k1, k2 = (int(v) for v in rng.integers(1, 4, size=2))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, size=(2, 2)))
    x = rng.standard_normal((int(rng.integers(5, 8)), int(rng.integers(5, 8)), cw * groups, 2))
    w = rng.standard_normal((k1, k2, cw, cy))
    expected = _loop_conv2d(w, x, pads, stride, dilation, groups, flip=False)
    layer = K.Conv(w, padding=pads, stride=stride, dilation=dilation, groups=groups)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    flipped = K.ops21_conv(
        w,
        x,
        padding=sum(pads, ()),
        stride=stride,
        dilation=dilation,
        groups=groups,
        crosscorrelation=False,
    )
    expected = _loop_conv2d(w, x, pads, stride, dilation, groups, flip=True)
    np.testing.assert_allclose(flipped, expected, rtol=1e-12, atol=1e-12)
    if groups == 1:
        np.testing.assert_allclose(
            K.conv4(w, x, padding=sum(pads, ()), stride=stride, dilation=dilation),
            expected,
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("seed", range(6))
def test_deconv4_is_the_adjoint_of_conv4(seed):
    """<conv4(w, x), y> == <x, deconv4(w, y)> for the sizes dcdims gives (dot-product test)."""
    rng = np.random.default_rng(100 + seed)
    nd = 1 + seed % 3
    ks = tuple(int(v) for v in rng.integers(1, 4, size=nd))
    st = tuple(int(v) for v in rng.integers(1, 4, size=nd))
    dl = tuple(int(v) for v in rng.integers(1, 3, size=nd))
    pd = tuple(int(v) for v in rng.integers(0, 3, size=nd))
    ys = tuple(int(v) for v in rng.integers(2, 5, size=nd))
    mode = seed % 2
    xs = tuple((ys[i] - 1) * st[i] + (ks[i] - 1) * dl[i] + 1 - 2 * pd[i] for i in range(nd))
    if min(xs) < 1:
        pd = (0,) * nd
        xs = tuple((ys[i] - 1) * st[i] + (ks[i] - 1) * dl[i] + 1 for i in range(nd))
    w = rng.standard_normal(ks + (3, 2))  # conv4: Cin=3 -> Cout=2; deconv4: Cy=3 <- Cx=2
    x = rng.standard_normal(xs + (3, 2))
    y = rng.standard_normal(ys + (2, 2))
    kw = dict(stride=st, dilation=dl, padding=pd, mode=mode)
    cx = K.conv4(w, x, **kw)
    assert cx.shape == y.shape
    dy = K.deconv4(w, y, **kw)
    assert dy.shape == x.shape
    lhs, rhs = float(np.sum(cx * y)), float(np.sum(x * dy))
    scale = float(np.sum(np.abs(x)) * np.sum(np.abs(w)) * np.max(np.abs(y)))
    assert abs(lhs - rhs) <= 1e-13 * scale


def test_conv4_rejects_bad_input():
    x = np.ones((4, 4, 2, 1))
    with pytest.raises(ValueError, match="input channels"):
        K.conv4(np.ones((2, 2, 3, 1)), x)
    with pytest.raises(ValueError, match="group"):
        K.conv4(np.ones((2, 2, 2, 1)), x, group=2)
    with pytest.raises(ValueError, match="kernel extent"):
        K.conv4(np.ones((5, 5, 2, 1)), x)


def test_deconv4_hand_values_and_flip():
    x = _jl([1, 10], (2, 1, 1))
    w = _jl([1, 2, 3], (3, 1, 1))
    # cross-correlation transpose, stride 2: out[(j-1)s + k] += w[k] x[j]
    np.testing.assert_array_equal(K.deconv4(w, x, stride=2, mode=1).ravel(), [1, 2, 13, 20, 30])
    # mode 0 (default) flips the kernel: w_eff = [3, 2, 1]
    np.testing.assert_array_equal(K.deconv4(w, x, stride=2).ravel(), [3, 2, 31, 20, 10])
    # padding crops one cell at each end
    np.testing.assert_array_equal(K.deconv4(w, x, stride=2, padding=1, mode=1).ravel(), [2, 13, 20])
    # two channels: w (W, Cy, Cx) = (1, 2, 1): each output channel scales the input
    w2 = np.zeros((1, 2, 1))
    w2[0, :, 0] = [2.0, -1.0]
    y = K.deconv4(w2, _jl([1, 10], (2, 1, 1)))
    np.testing.assert_array_equal(y[:, :, 0], [[2, -1], [20, -10]])


@pytest.mark.parametrize(
    "xs,ks,s,p,d",
    [
        ((4,), (4,), 2, 1, 1),  # DCGAN/VAE 4x4 s2 p1: doubles
        ((7, 5), (3, 2), 2, 0, 1),
        ((3, 3), (5, 5), 1, 2, 1),  # 'same' for K=5
        ((2, 3, 2), (2, 2, 3), (2, 1, 3), (0, 1, 0), (1, 2, 1)),
        ((4, 4), (2, 2), 3, 0, 2),  # K < stride
    ],
)
def test_deconv4_output_size(xs, ks, s, p, d):
    nd = len(xs)
    st, pd, dl = ((v,) * nd if isinstance(v, int) else v for v in (s, p, d))
    x = np.ones(xs + (3, 2))
    w = np.ones(ks + (5, 3))
    y = K.deconv4(w, x, stride=s, padding=p, dilation=d)
    expected = tuple((xs[i] - 1) * st[i] + (ks[i] - 1) * dl[i] + 1 - 2 * pd[i] for i in range(nd))
    assert y.shape == expected + (5, 2)
    # and conv4 with the same keywords maps that size back to x's
    assert (
        K.conv4(np.ones(ks + (5, 3)), np.ones(y.shape), stride=s, padding=p, dilation=d).shape
        == x.shape
    )


def test_pool_padding_beyond_window_and_nan():
    x = _jl([1, 2, 3], (3, 1, 1))
    # padded [P P 1 2 3 P P], window 2 stride 1
    np.testing.assert_array_equal(
        K.pool(x, window=2, padding=2, stride=1).ravel(), [-FLOATMAX, 1, 2, 3, 3, -FLOATMAX]
    )
    np.testing.assert_array_equal(
        K.pool(x, window=2, padding=2, stride=1, mode=1).ravel(), [0, 0.5, 1.5, 2.5, 1.5, 0]
    )
    # NNlib's max never lets NaN or -Inf win; a window of only those gives -floatmax
    xn = _jl([np.nan, 1, np.nan, np.nan, -np.inf, -5], (6, 1, 1))
    np.testing.assert_array_equal(K.pool(xn).ravel(), [1, -FLOATMAX, -5])
    np.testing.assert_array_equal(K.pool(x, alpha=2, window=3).ravel(), [6])


def test_ops21_pool_global_window():
    x = _jl([1, 5, 2, 4, 3, 9, 0, 6], (2, 2, 2, 1))
    big = 2**63 - 1  # typemax(Int)
    ymax = K.ops21_pool(x, window=big)
    ymean = K.ops21_pool(x, op="mean", window=big)
    assert ymax.shape == ymean.shape == (1, 1, 2, 1)
    np.testing.assert_array_equal(ymax.ravel(), [5, 9])
    np.testing.assert_array_equal(ymean.ravel(), [3, 4.5])
    # with padding the cut window is X + 2p and the mean still divides by it (pads count)
    np.testing.assert_array_equal(
        K.ops21_pool(x, op="mean", window=big, padding=1).ravel(), [12 / 16, 18 / 16]
    )


# ---------------------------------------------------------------------------------------------
# mat, dense, linear, cat


def test_mat_and_dense_column_major():
    x = np.arange(8.0).reshape((2, 2, 2), order="F")  # Julia reshape(0:7, 2, 2, 2)
    m = K.mat(x)
    np.testing.assert_array_equal(m, [[0, 4], [1, 5], [2, 6], [3, 7]])
    np.testing.assert_array_equal(K.mat(x, dims=1), np.arange(8.0).reshape((2, 4), order="F"))
    np.testing.assert_array_equal(K.mat(x, dims=0), np.arange(8.0).reshape((1, 8)))
    w = np.array([[1.0, 10, 100, 1000]])  # 0+10+200+3000+5, 4+50+600+7000+5
    np.testing.assert_array_equal(K.dense(w, x, np.array([5.0])), [[3215, 7659]])


def test_linear_generalised():
    w = np.arange(12.0).reshape((3, 2, 2), order="F")  # (A=3, B=(2,2))
    x = np.arange(8.0).reshape((2, 2, 2), order="F")  # (B=(2,2), C=2)
    y = K.linear(w, x, dims=2)
    expected = w.reshape((3, 4), order="F") @ x.reshape((4, 2), order="F")
    np.testing.assert_array_equal(y, expected)
    lin = K.Linear(np.array([[1.0, 2.0]]))  # no bias by default
    np.testing.assert_array_equal(lin(np.array([[1.0], [1.0]])), [[3.0]])
    lin = K.Linear(np.array([[1.0, 2.0]]), bias=np.array([1.0]), activation=K.relu)
    np.testing.assert_array_equal(lin(np.array([[-5.0], [1.0]])), [[0.0]])


def test_concat_channels():
    a = np.zeros((2, 2, 1, 3))
    b = np.ones((2, 2, 2, 3))
    y = K.concat_channels(a, b)
    assert y.shape == (2, 2, 3, 3)
    assert not y[:, :, 0].any() and y[:, :, 1:].all()


# ---------------------------------------------------------------------------------------------
# Batch normalisation


def _bn_x4() -> np.ndarray:
    # (X1=2, X2=1, C=2, N=1): channel 1 holds [1, 3], channel 2 holds [2, 6]
    x = np.zeros((2, 1, 2, 1))
    x[:, 0, 0, 0] = [1, 3]
    x[:, 0, 1, 0] = [2, 6]
    return x


def test_batchnorm_ops20_params_are_scale_then_bias():
    x = _bn_x4()
    mom = K.bnmoments(mean=np.array([1.0, 2.0]).reshape(1, 1, 2, 1), var=np.array([4.0, 16.0]))
    params = np.array([2.0, 3.0, 10.0, 20.0])  # scale [2, 3]; bias [10, 20]
    y = K.batchnorm(x, mom, params, eps=0.0)
    # channel 1: 2*(x-1)/2 + 10; channel 2: 3*(x-2)/4 + 20
    np.testing.assert_array_equal(y[:, 0, 0, 0], [10, 12])
    np.testing.assert_array_equal(y[:, 0, 1, 0], [20, 23])
    y = K.batchnorm(x, mom, params)  # eps = 1e-5 by default
    exp = [2 * (3 - 1) / math.sqrt(4 + 1e-5) + 10, 3 * (6 - 2) / math.sqrt(16 + 1e-5) + 20]
    np.testing.assert_allclose([y[1, 0, 0, 0], y[1, 0, 1, 0]], exp, **EXACT)
    # non-affine
    y = K.batchnorm(x, mom, eps=0.0)
    np.testing.assert_array_equal(y[:, 0, 0, 0], [0, 1])
    np.testing.assert_array_equal(y[:, 0, 1, 0], [0, 1])
    # bnparams(C): ones then zeros; lazily initialised moments: zeros/ones
    np.testing.assert_array_equal(K.bnparams(2), [1, 1, 0, 0])
    y = K.batchnorm(x, K.bnmoments(), K.bnparams(2))
    np.testing.assert_allclose(y, x / math.sqrt(1 + 1e-5), **EXACT)


def test_batchnorm_ops20_2d_and_5d_per_channel():
    x = np.array([[1.0, 3.0, 5.0], [10.0, 20.0, 30.0]])  # (C=2, N=3): per feature (row)
    mom = K.bnmoments(mean=np.array([[3.0], [20.0]]), var=np.array([[4.0], [100.0]]))
    y = K.batchnorm(x, mom, np.array([1.0, 2.0, 0.0, 1.0]), eps=0.0)
    np.testing.assert_array_equal(y, [[-1, 0, 1], [-1, 1, 3]])
    x5 = np.arange(16.0).reshape((2, 1, 2, 2, 2), order="F")  # C = dims 4
    mom5 = K.bnmoments(mean=np.array([1.0, 2.0]), var=np.array([1.0, 1.0]))
    y5 = K.batchnorm(x5, mom5, eps=0.0)
    np.testing.assert_array_equal(y5[..., 0, :], x5[..., 0, :] - 1)
    np.testing.assert_array_equal(y5[..., 1, :], x5[..., 1, :] - 2)
    with pytest.raises(ValueError, match="moments must be provided"):
        K.batchnorm(x)
    with pytest.raises(ValueError, match="2\\*C"):
        K.batchnorm(x, mom, np.ones(3))


def test_batchnorm_ops20_training_uses_batch_stats_and_updates_moments():
    x = _bn_x4()
    mom = K.bnmoments(momentum=0.1, mean=np.array([0.0, 0.0]), var=np.array([1.0, 1.0]))
    y = K.batchnorm(x, mom, training=True, eps=0.0)
    # channel 1 [1, 3]: mean 2, biased var 1; channel 2 [2, 6]: mean 4, biased var 4
    np.testing.assert_array_equal(y[:, 0, 0, 0], [-1, 1])
    np.testing.assert_array_equal(y[:, 0, 1, 0], [-1, 1])
    np.testing.assert_allclose(np.ravel(mom.mean), [0.2, 0.4], **EXACT)
    np.testing.assert_allclose(np.ravel(mom.var), [0.1 * 1 + 0.9, 0.1 * 4 + 0.9], **EXACT)


def test_ops21_batchnorm_bias_before_scale():
    x = _bn_x4()
    shape = (1, 1, 2, 1)
    mean = np.array([1.0, 2.0]).reshape(shape)
    var = np.array([4.0, 16.0]).reshape(shape)
    bias = np.array([10.0, 20.0]).reshape(shape)
    scale = np.array([2.0, 3.0]).reshape(shape)
    y = K.ops21_batchnorm(x, mean, var, bias, scale, epsilon=0.0)
    np.testing.assert_array_equal(y[:, 0, 0, 0], [10, 12])
    np.testing.assert_array_equal(y[:, 0, 1, 0], [20, 23])
    # the usual (gamma, beta) order would give a different answer: the order matters
    swapped = K.ops21_batchnorm(x, mean, var, scale, bias, epsilon=0.0)
    assert not np.array_equal(swapped, y)
    y = K.ops21_batchnorm(x, mean, var, bias, scale)  # epsilon 1e-5 added to var
    np.testing.assert_allclose(y[1, 0, 1, 0], (6 - 2) / math.sqrt(1e-5 + 16) * 3 + 20, **EXACT)
    # batch statistics over the dims where mean has size 1, and the in-place update
    m, v = np.zeros(shape), np.ones(shape)
    y = K.ops21_batchnorm(x, m, v, 0.0, 1.0, epsilon=0.0, update=0.1, use_estimates=False)
    np.testing.assert_array_equal(y[:, 0, :, 0], [[-1, -1], [1, 1]])
    np.testing.assert_allclose(m.ravel(), [0.2, 0.4], **EXACT)
    np.testing.assert_allclose(v.ravel(), [1.0, 1.3], **EXACT)


def test_layers21_batchnorm_defaults():
    x = _bn_x4()
    np.testing.assert_allclose(K.BatchNorm()(x), x / math.sqrt(1 + 1e-5), **EXACT)
    bn = K.BatchNorm(
        mean=np.array([1.0, 2.0]).reshape(1, 1, 2, 1),
        var=np.array([4.0, 16.0]).reshape(1, 1, 2, 1),
        bias=np.array([10.0, 20.0]).reshape(1, 1, 2, 1),
        scale=np.array([2.0, 3.0]).reshape(1, 1, 2, 1),
        epsilon=0.0,
    )
    np.testing.assert_array_equal(bn(x)[:, 0, :, 0], [[10, 20], [12, 23]])


# ---------------------------------------------------------------------------------------------
# Ops21 / Layers21 convolution, ZeroPad, Add


def _two_channel_x():
    x = np.zeros((3, 1, 2, 1))
    x[:, 0, 0, 0] = [1, 2, 3]
    x[:, 0, 1, 0] = [4, 5, 6]
    return x


def test_ops21_conv_crosscorrelation_default_and_depthwise():
    x = _two_channel_x()
    w = np.zeros((2, 1, 1, 2))  # depthwise: (W1, W2, Cx/groups=1, Cy=2)
    w[:, 0, 0, 0] = [1, 10]
    w[:, 0, 0, 1] = [1, 100]
    y = K.ops21_conv(w, x, groups=2)
    np.testing.assert_array_equal(y[:, 0, :, 0], [[21, 504], [32, 605]])
    y = K.ops21_conv(w, x, groups=2, crosscorrelation=False)  # flips: [10,1], [100,1]
    np.testing.assert_array_equal(y[:, 0, :, 0], [[12, 405], [23, 506]])
    # conv4's default is the opposite (flip); conv4 has no groups
    w1 = w[:, :, :, :1]
    np.testing.assert_array_equal(K.conv4(w1, x[:, :, :1])[:, 0, 0, 0], [12, 23])
    with pytest.raises(ValueError, match="groups"):
        K.ops21_conv(w, x, groups=3)


def test_ops21_conv_order_bias_normalization_activation():
    x = _two_channel_x()[:, :, :1]
    w = np.zeros((2, 1, 1, 1))
    w[:, 0, 0, 0] = [1, 10]  # cross-correlation: [21, 32]
    bias = np.full((1, 1, 1, 1), -25.0)
    y = K.ops21_conv(w, x, bias=bias, normalization=lambda t: 2 * t - 10, activation=K.relu)
    # relu(2 * ([21, 32] - 25) - 10) = relu([-18, 4]); relu first would give [-10, 4]
    np.testing.assert_array_equal(y.ravel(), [0, 4])
    # alpha scales the conv only; z is added only when beta != 0 (Knet's default beta=0)
    z = np.full((2, 1, 1, 1), 100.0)
    np.testing.assert_array_equal(K.ops21_conv(w, x, alpha=0.5, z=z).ravel(), [10.5, 16])
    np.testing.assert_array_equal(K.ops21_conv(w, x, beta=2, z=z, bias=bias).ravel(), [196, 207])
    # Layers21 Conv with a BatchNorm inside: bias, then normalization, then activation
    one = (1, 1, 1, 1)
    bn = K.BatchNorm(
        mean=np.full(one, 1.0), var=np.full(one, 4.0), scale=np.full(one, 3.0), epsilon=0.0
    )
    conv = K.Conv(w, bias=bias, normalization=bn, activation=K.relu)
    # relu(3 * ([-4, 7] - 1) / 2) = relu([-7.5, 9]); relu before the batchnorm: [-1.5, 9]
    np.testing.assert_array_equal(conv(x).ravel(), [0, 9])


def test_ops21_conv_channelmajor_permutes_2314():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 5, 3, 2))  # (X1, X2, C, N)
    w = rng.standard_normal((2, 3, 3, 4))  # (W1, W2, Cx, Cy)
    b = rng.standard_normal((1, 1, 4, 1))
    y = K.ops21_conv(w, x, bias=b, activation=K.relu)
    # channel-major: x (C, X1, X2, N), w (Cx, W1, W2, Cy), bias (Cy, 1, 1, 1), y (Cy, Y1, Y2, N)
    cm = K.ops21_conv(
        w.transpose(2, 0, 1, 3),
        x.transpose(2, 0, 1, 3),
        bias=b.transpose(2, 0, 1, 3),
        activation=K.relu,
        channelmajor=True,
    )
    np.testing.assert_array_equal(cm, y.transpose(2, 0, 1, 3))


def test_zeropad_asymmetric_and_layers21_conv_padding():
    x = np.arange(1.0, 7.0).reshape((2, 3, 1, 1), order="F")
    y = K.ZeroPad(((1, 0), (0, 2)))(x)
    assert y.shape == (3, 5, 1, 1)
    np.testing.assert_array_equal(y[1:3, 0:3], x)
    y[1:3, 0:3] = 0
    assert not y.any()
    np.testing.assert_array_equal(K.zeropad(x, 1).shape, (4, 5, 1, 1))
    np.testing.assert_array_equal(K.zeropad(x, (2, 0)).shape, (6, 3, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        K.zeropad(x, -1)
    # Layers21 Conv pads asymmetrically first, then convolves (cross-correlation)
    w = _jl([1, 10], (2, 1, 1, 1))
    c = K.Conv(w, padding=((1, 0), (0, 0)))
    np.testing.assert_array_equal(c(_jl([1, 2], (2, 1, 1, 1))).ravel(), [10, 21])
    c = K.Conv(w, padding=((1, 1), (0, 0)))  # symmetric pairs: ordinary padding
    np.testing.assert_array_equal(c(_jl([1, 2], (2, 1, 1, 1))).ravel(), [10, 21, 2])


def test_add_block_op():
    x = np.array([-3.0, 1.0])
    add = K.Add(lambda t: t, lambda t: -2 * t, activation=K.relu)
    np.testing.assert_array_equal(add(x), [3, 0])  # relu(x - 2x), activation after the sum
    blk = K.Block(K.Op(K.ops21_relu, max_value=6), lambda t: t + 1)
    np.testing.assert_array_equal(blk(np.array([-1.0, 7.0])), [1, 7])


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_embed_one_based():
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (dim=2, vocab=3)
    np.testing.assert_array_equal(K.embed(w, np.array([3, 1])), [[3, 1], [6, 4]])
    y = K.Embed(w)(np.array([[1, 2], [3, 3]]))
    assert y.shape == (2, 2, 2)
    np.testing.assert_array_equal(y[:, 1, 0], [3, 6])  # x[2,1] = 3
    np.testing.assert_array_equal(y[:, 0, 1], [2, 5])  # x[1,2] = 2
    for bad in (0, 4, -1):
        with pytest.raises(IndexError, match=f"index {bad} "):
            K.embed(w, np.array([1, bad]))
    with pytest.raises(ValueError, match="integers"):
        K.embed(w, np.array([1.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# Activations at points computed from their formulas (Python's math, not torch)


def _at(f, xs, **kw):
    return f(np.array(xs, dtype=np.float64), **kw)


def test_ops20_activations():
    np.testing.assert_array_equal(_at(K.relu, [-1, 0, 2]), [0, 0, 2])
    assert np.isnan(_at(K.relu, [np.nan])[0])  # Julia max(NaN, 0) is NaN
    sig = [1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-3))]
    np.testing.assert_allclose(_at(K.sigm, [-2, 0, 3]), sig, **EXACT)
    np.testing.assert_array_equal(_at(K.sigm, [-800, 800]), [0, 1])  # stable, no overflow
    np.testing.assert_allclose(_at(K.tanh, [-1, 0.5]), [math.tanh(-1), math.tanh(0.5)], **EXACT)
    np.testing.assert_allclose(_at(K.elu, [-1, 0, 2]), [math.exp(-1) - 1, 0, 2], **EXACT)
    selu = [1.7580993408473773 * (math.exp(-1) - 1), 0, 1.0507009873554805 * 2]
    np.testing.assert_allclose(_at(K.selu, [-1, 0, 2]), selu, **EXACT)
    np.testing.assert_allclose(_at(K.leaky_relu, [-1, 3]), [-0.2, 3], **EXACT)
    np.testing.assert_allclose(_at(K.leaky_relu, [-1, 3], alpha=0.3), [-0.3, 3], **EXACT)


def test_ops21_activations():
    gelu = [v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in (-1.5, 0.0, 1.0)]
    np.testing.assert_allclose(_at(K.gelu, [-1.5, 0, 1]), gelu, **EXACT)
    assert abs(_at(K.gelu, [1.0])[0] - 0.8413447460685429) < 1e-15  # not the tanh approximation
    np.testing.assert_allclose(
        _at(K.swish, [-2, 0, 1]), [-2 / (1 + math.exp(2)), 0, 1 / (1 + math.exp(-1))], **EXACT
    )
    np.testing.assert_array_equal(
        _at(K.hardsigmoid, [-4, -3, 0, 1.5, 3, 4]), [0, 0, 0.5, 0.75, 1, 1]
    )
    np.testing.assert_allclose(
        _at(K.hardswish, [-4, -3, -1, 1, 3, 5]), [0, 0, -1 * 2 / 6, 4 / 6, 3, 5], **EXACT
    )
    r = K.ops21_relu
    np.testing.assert_array_equal(_at(r, [-1, 0, 7]), [0, 0, 7])
    np.testing.assert_array_equal(_at(r, [-1, 6, 7, 3], max_value=6), [0, 6, 6, 3])  # relu6
    # x == threshold belongs to the identity branch; below it, 0 (or the slope from threshold)
    np.testing.assert_array_equal(_at(r, [0.5, 1, 2], threshold=1), [0, 1, 2])
    np.testing.assert_allclose(_at(r, [0, 2], threshold=1, negative_slope=0.1), [-0.1, 2], **EXACT)
    np.testing.assert_allclose(_at(r, [-2, 2], negative_slope=0.2), [-0.4, 2], **EXACT)
    # NaN fails every comparison: 0 when negative_slope == 0 (unlike Ops20's relu)
    np.testing.assert_array_equal(_at(r, [np.nan]), [0])


def test_softmax_whole_array_by_default():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    e = [[math.exp(1), math.exp(2)], [math.exp(3), math.exp(4)]]
    total = sum(map(sum, e))
    np.testing.assert_allclose(K.softmax(x), np.array(e) / total, **EXACT)
    cols = np.array(e) / np.array(e).sum(axis=0, keepdims=True)  # Julia dims=1: per column
    np.testing.assert_allclose(K.softmax(x, dims=1), cols, **EXACT)
    rows = np.array(e) / np.array(e).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(K.softmax(x, dims=2), rows, **EXACT)
    np.testing.assert_allclose(K.logsoftmax(x), np.log(np.array(e) / total), rtol=1e-14)
    np.testing.assert_allclose(
        K.logsoftmax(x, dims=1), x - np.log(np.array(e).sum(axis=0)), rtol=1e-14
    )
    np.testing.assert_allclose(K.softmax(np.array([1000.0, 1000.0])), [0.5, 0.5], **EXACT)
