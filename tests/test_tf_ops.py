"""porting.tf: shapes, golden values, pooling semantics, TensorFlow quirks, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from porting import PortingError, knet, layout
from porting import tf as ptf

tf = ptf.import_tf()
ROOT = Path(__file__).resolve().parents[1]  # so that `import porting` works in a subprocess


# --------------------------------------------------------------------------- import and versions


def test_importing_porting_tf_does_not_import_tensorflow():
    code = "import sys, porting.tf; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr


def test_tensorflow_import_is_quiet():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import os; from porting import tf as ptf; ptf.import_tf(); "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert "oneDNN custom operations" not in out.stderr, out.stderr
    assert "absl::InitializeLog" not in out.stderr, out.stderr


def test_noise_filter_keeps_other_native_stderr(capfd):
    with ptf._drop_native_stderr_lines(("NOISE",)):
        os.write(2, b"keep this line\nsome NOISE here\nand this one\n")
    err = capfd.readouterr().err
    assert err == "keep this line\nand this one\n"


def test_versions():
    import keras

    assert ptf.versions() == {"tensorflow": tf.__version__, "keras": keras.__version__}


# --------------------------------------------------------------------------- golden values


def _line(values):
    """A 1-D signal as (N=1, X, C=1), float64."""
    return np.asarray(values, np.float64).reshape(1, -1, 1)


def _kernel_1d(values):
    return np.asarray(values, np.float64).reshape(-1, 1, 1)


W3 = _kernel_1d([1, 10, 100])


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # cross-correlation: y[i] = sum_k xpad[i + k] w[k], xpad = [0, 1, 2, 3, 4, 5, 0]
        ({"padding": 1}, [210, 321, 432, 543, 54]),
        ({"padding": 0, "stride": 2}, [321, 543]),
        # kernel taps at xpad[i*2 + {0, 2, 4}]
        ({"padding": 1, "stride": 2, "dilation": 2}, [420, 42]),
        ({"padding": 1, "alpha": 0.5}, [105, 160.5, 216, 271.5, 27]),
    ],
)
def test_conv_golden_1d(kw, expected):
    y = ptf.conv(_line([1, 2, 3, 4, 5]), W3, **kw)
    np.testing.assert_array_equal(y.ravel(), expected)  # small integers: exact


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # y[i*s + k*d] += x[i] w[k], then `padding` cropped from both ends
        ({"stride": 2}, [1, 10, 102, 20, 203, 30, 300]),
        ({"stride": 2, "padding": 1}, [10, 102, 20, 203, 30]),
        ({"dilation": 2}, [1, 2, 13, 20, 130, 200, 300]),
        ({"dilation": 2, "stride": 2, "padding": 2}, [12, 0, 123, 0, 230]),
    ],
)
def test_conv_transpose_golden_1d(kw, expected):
    y = ptf.conv_transpose(_line([1, 2, 3]), W3, **kw)
    np.testing.assert_array_equal(y.ravel(), expected)


def test_conv_transpose_golden_dilated_and_strided():
    # dilation 2, stride 2: taps at 2i + 2k, so output[2m] = sum_{i+k=m} x[i] w[k]
    y = ptf.conv_transpose(_line([1, 2, 3]), W3, stride=2, dilation=2)
    np.testing.assert_array_equal(y.ravel(), [1, 0, 12, 0, 123, 0, 230, 0, 300])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_ones_counts_the_cells_under_the_kernel(nd, dtype):
    x = np.ones((1, *(5,) * nd, 2), dtype)
    w = np.ones((*(3,) * nd, 2, 1), dtype)
    y = ptf.conv(x, w, padding=1)
    assert y.shape == (1, *(5,) * nd, 1) and y.dtype == dtype
    corner, centre = y[(0, *(0,) * nd, 0)], y[(0, *(2,) * nd, 0)]
    assert corner == 2 * 2**nd and centre == 2 * 3**nd


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_output_sizes_per_axis(nd):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, *(11, 9, 8)[:nd], 3)).astype(np.float32)
    w = rng.standard_normal((*(3, 2, 4)[:nd], 3, 5)).astype(np.float32)
    pad, stride, dil = (2, 1, 0)[:nd], (3, 1, 2)[:nd], (1, 3, 2)[:nd]
    y = ptf.conv(x, w, padding=pad, stride=stride, dilation=dil)
    want = [
        1 + (xi + 2 * p - ((k - 1) * d + 1)) // s
        for xi, k, p, s, d in zip(x.shape[1:-1], w.shape, pad, stride, dil, strict=False)
    ]
    assert y.shape == (2, *want, 5)
    xt = rng.standard_normal((2, *(4, 3, 2)[:nd], 5)).astype(np.float32)
    yt = ptf.conv_transpose(xt, w, padding=pad, stride=stride, dilation=dil)
    want = [
        (xi - 1) * s + (k - 1) * d + 1 - 2 * p
        for xi, k, p, s, d in zip(xt.shape[1:-1], w.shape, pad, stride, dil, strict=False)
    ]
    assert yt.shape == (2, *want, 3)


def test_knet_helpers_convert_layout_and_axes():
    # X1 = 8, X2 = 6; per-axis values are in Julia's order (X1, X2).
    x = np.ones((8, 6, 2, 5), np.float32)
    w = np.ones((3, 3, 2, 4), np.float32)
    # "reverse": TF (H, W) = (X2, X1) = (6 -> 4, 8 padded 1 at stride 3 -> 3)
    assert ptf.knet_conv4_via_tf(w, x, padding=(1, 0), stride=(3, 1)).shape == (5, 4, 3, 4)
    # "keep": TF (H, W) = (X1, X2) = (8 padded 1 at stride 3 -> 3, 6 -> 4)
    y = ptf.knet_conv4_via_tf(w, x, padding=(1, 0), stride=(3, 1), spatial="keep")
    assert y.shape == (5, 3, 4, 4)
    assert ptf.knet_pool_via_tf(x, window=(2, 3)).shape == (5, 2, 4, 2)
    assert ptf.knet_pool_via_tf(x, window=(2, 3), spatial="keep").shape == (5, 4, 2, 2)
    xd = np.ones((3, 2, 4, 1), np.float32)  # deconv4: w (W1, W2, Cy=2, Cx=4)
    wd = np.ones((2, 3, 2, 4), np.float32)
    # Y1 = (3-1)*2 + 2 = 6, Y2 = (2-1)*1 + 3 = 4; "reverse" gives TF (H, W) = (Y2, Y1)
    assert ptf.knet_deconv4_via_tf(wd, xd, stride=(2, 1)).shape == (1, 4, 6, 2)
    assert ptf.knet_deconv4_via_tf(wd, xd, stride=(2, 1), spatial="keep").shape == (1, 6, 4, 2)


# --------------------------------------------------------------------------- pooling


NEG = -np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_nan_never_wins_and_empty_windows_give_minus_floatmax(dtype, nd):
    # windows of 2: [NaN, 1] [2, NaN] [3, NaN] [NaN, NaN] [-Inf, -Inf]
    line = [np.nan, 1, 2, np.nan, 3, np.nan, np.nan, np.nan, NEG, NEG]
    x = np.asarray(line, dtype).reshape((1, *(1,) * (nd - 1), 10, 1))
    y = ptf.pool(x, window=(*(1,) * (nd - 1), 2))
    assert y.dtype == dtype
    # NNlib starts each window at nextfloat(typemin(T)) = -floatmax and keeps `xv > m`, so a
    # window of only NaN/-Inf gives -floatmax, as the reference does.
    lowest = float(np.finfo(dtype).min)
    assert y.ravel().tolist() == [1.0, 2.0, 3.0, lowest, lowest]
    ref = knet.pool(
        np.asarray(line, dtype).reshape(10, *(1,) * (nd - 1), 1, 1),
        window=(2, *(1,) * (nd - 1)),
        backend="reference",
    )
    assert np.asarray(ref).ravel().tolist() == y.ravel().tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_padding_never_wins_and_lowest_finite_survives(dtype):
    lowest = np.finfo(dtype).min
    # padded: [pad, -Inf, -Inf | -5, lowest, pad]: window 3, stride 3
    x = np.asarray([NEG, NEG, -5, lowest], dtype).reshape(1, 4, 1)
    assert ptf.pool(x, window=3, padding=1).ravel().tolist() == [lowest, -5.0]
    x = np.asarray([lowest, NEG, NEG, NEG], dtype).reshape(1, 4, 1)
    assert ptf.pool(x, window=2).ravel().tolist() == [lowest, lowest]
    # all-negative input with padding: the padded zeros of a naive port would win here
    x = np.full((1, 3, 3, 1), -2.0, dtype)
    assert (ptf.pool(x, window=2, padding=1, stride=2) == -2.0).all()


def test_float64_max_pool_stays_float64_on_every_call():
    # TF 2.21's eager MaxPool returns float32 for a float64 NumPy input on every call but the
    # first in a process; porting.tf hands it a tensor. Values here are not float32-exact.
    x = 1 + np.random.default_rng(5).random((1, 4, 4, 1)) * 1e-12
    want = x[0, :, :, 0].reshape(2, 2, 2, 2).max(axis=(1, 3))
    for _ in range(3):
        y = ptf.pool(x)
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y[0, :, :, 0], want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_mean_pool_counts_padding_as_zeros(dtype, nd):
    x = np.ones((1, *(4,) * nd, 1), dtype)
    y = ptf.pool(x, window=3, padding=1, stride=1, mode=1)
    # along each axis the windows hold 2, 3, 3, 2 real cells out of 3
    edge = np.array([2, 3, 3, 2], np.float64) / 3
    want = edge
    for _ in range(nd - 1):
        want = np.multiply.outer(want, edge)
    assert y.dtype == dtype
    # each output is a sum of at most 3**nd ones divided by 3**nd: a few roundings at most
    np.testing.assert_allclose(y[0, ..., 0], want, rtol=4 * np.finfo(dtype).eps, atol=0)


def test_mode_2_warns_and_runs_mode_1():
    x = np.random.default_rng(3).standard_normal((2, 5, 5, 3))
    with pytest.warns(UserWarning, match=r"mode=2.*mode=1") as record:
        y2 = ptf.pool(x, window=3, padding=1, mode=2)
    assert "GPU" in str(record[0].message)
    np.testing.assert_array_equal(y2, ptf.pool(x, window=3, padding=1, mode=1))
    with pytest.warns(UserWarning, match="same numbers"):
        ptf.pool(x, window=2, mode=2)
    with pytest.warns(UserWarning, match="mode=2"):
        ptf.knet_pool_via_tf(np.ones((4, 4, 1, 1)), mode=2)


def test_mode_3_is_max_and_no_warning_otherwise():
    x = np.random.default_rng(4).standard_normal((1, 6, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ptf.pool(x, mode=3), ptf.pool(x, mode=0))
        ptf.pool(x, mode=1)


def test_alpha_is_applied_once_in_float64():
    x = np.random.default_rng(6).standard_normal((1, 6, 6, 2)).astype(np.float32)
    y = ptf.pool(x, alpha=0.1)
    want = (np.float64(0.1) * ptf.pool(x).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(y, want)


# --------------------------------------------------------------------------- bad input

X4 = np.zeros((1, 5, 5, 3), np.float32)
W4 = np.zeros((3, 3, 3, 2), np.float32)
XJ = np.zeros((5, 20, 3, 1), np.float32)  # Julia-indexed (X1, X2, C, N)
WJ = np.zeros((3, 3, 3, 2), np.float32)

BAD = [
    (
        "x 2-D",
        lambda: ptf.conv(np.zeros((5, 3), np.float32), W4),
        r"x has 2 dimensions \(shape \(5, 3\)\)",
    ),
    ("x 6-D", lambda: ptf.conv(np.zeros((1,) * 6, np.float32), W4), "x has 6 dimensions"),
    (
        "rank mismatch",
        lambda: ptf.conv(X4, np.zeros((3, 3, 2), np.float32)),
        r"w has 3 dimensions.*x has 4",
    ),
    (
        "channels",
        lambda: ptf.conv(X4, np.zeros((3, 3, 4, 2), np.float32)),
        "kernel has 4 input channels \\(Cin\\) but x has 3",
    ),
    (
        "dtype mismatch",
        lambda: ptf.conv(X4, W4.astype(np.float64)),
        "w is float64 but x is float32",
    ),
    ("int dtype", lambda: ptf.conv(X4.astype(np.int32), W4), "x has dtype int32"),
    ("complex", lambda: ptf.pool(X4.astype(np.complex64)), "x has dtype complex64"),
    ("strings", lambda: ptf.conv(X4, np.full((3, 3, 3, 2), "a")), "w has dtype <U1"),
    (
        "empty",
        lambda: ptf.conv(np.zeros((0, 5, 5, 3), np.float32), W4),
        r"x is empty \(shape \(0, 5, 5, 3\)\)",
    ),
    ("stride 0", lambda: ptf.conv(X4, W4, stride=0), "stride=0"),
    ("negative padding", lambda: ptf.conv(X4, W4, padding=-1), "padding=-1"),
    (
        "dilation tuple",
        lambda: ptf.conv(X4, W4, dilation=(1, 1, 1)),
        r"dilation=\(1, 1, 1\).*2 integers",
    ),
    ("alpha NaN", lambda: ptf.conv(X4, W4, alpha=float("nan")), "alpha=nan"),
    ("alpha Inf", lambda: ptf.knet_pool_via_tf(XJ, alpha=np.inf), "alpha=inf"),
    (
        "input too small",
        lambda: ptf.conv(X4[:, :2, :2], np.zeros((5, 5, 3, 2), np.float32)),
        "input size 2",
    ),
    ("alpha", lambda: ptf.conv(X4, W4, alpha="2"), "alpha='2'"),
    (
        "convT channels",
        lambda: ptf.conv_transpose(X4, W4),
        r"kernel has 2 Cx channels but x has 3.*\(\*K, Cy, Cx\)",
    ),
    (
        "convT padding",
        lambda: ptf.conv_transpose(X4[:, :1, :1, :2], W4, padding=2),
        "padding 2 is too large",
    ),
    ("pool mode", lambda: ptf.pool(X4, mode=4), "mode=4"),
    ("pool window", lambda: ptf.pool(X4, window=0), "window=0"),
    ("pool input too small", lambda: ptf.pool(X4[:, :1], window=4, padding=1), "window 4"),
    ("pool float16", lambda: ptf.pool(X4.astype(np.float16)), "float16"),
    ("spatial", lambda: ptf.knet_conv4_via_tf(WJ, XJ, spatial="transpose"), "spatial='transpose'"),
    ("knet mode", lambda: ptf.knet_conv4_via_tf(WJ, XJ, mode=2), "mode=2"),
    (
        "knet channels",
        lambda: ptf.knet_conv4_via_tf(np.zeros((3, 3, 4, 2), np.float32), XJ),
        "kernel has 4 input channels but x has 3",
    ),
    (
        "knet deconv channels",
        lambda: ptf.knet_deconv4_via_tf(WJ, XJ),
        "kernel has 2 input channels but x has 3",
    ),
    ("knet pool spatial", lambda: ptf.knet_pool_via_tf(XJ, spatial=None), "spatial=None"),
    # Julia's dimension 1 (X1 = 5) is TF's last spatial axis under "reverse": name Julia's.
    (
        "knet axis named",
        lambda: ptf.knet_conv4_via_tf(WJ, XJ[:2], padding=(0, 1)),
        "spatial dimension 1: input size 2",
    ),
]


@pytest.mark.parametrize(("name", "call", "match"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_porting_error(name, call, match):
    with pytest.raises(PortingError, match=match):
        call()


@pytest.mark.parametrize("cout", [1, 2, 3])
def test_single_output_along_a_strided_axis_is_exact(cout):
    # TF 2.21's oneDNN conv returned uninitialised memory here (output width 1, stride 2,
    # dilation and padding on the other axis); porting.tf runs that axis at stride 1.
    rng = np.random.default_rng(cout)
    w = rng.standard_normal((3, 3, 1, cout)).astype(np.float32)
    x = rng.standard_normal((2, 2, 1, 2)).astype(np.float32)
    kw = dict(padding=[2, 1], stride=[1, 2], dilation=[2, 1], mode=1, alpha=0.5)
    want = layout.activations_to_tf(np.asarray(knet.conv4(w, x, backend="reference", **kw)), "keep")
    for _ in range(3):  # the bad kernel gave different values on each call
        got = ptf.knet_conv4_via_tf(w, x, spatial="keep", **kw)
        assert got.shape == want.shape == (2, 2, 1, cout)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
