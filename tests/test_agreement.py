"""The reference Knet ops, converted to TensorFlow's layout, agree with `porting.tf`.

Tolerance (`porting.compare`): an output that is a sum of K products is computed by each side
with an error of order sqrt(K) * u * S, u = eps/2 the unit roundoff and S the sum of the
magnitudes added; the difference of two such results is within sqrt(K) * eps * S, and each side
rounds its result (and the alpha scaling) once more, hence (sqrt(K) + 2) * eps * S. S comes from
the same op run in float64 on |w| and |x|. The worst case K * eps * S is not used: it is too
loose to catch TF32. Max pooling involves no arithmetic and must agree bit for bit.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from porting import PortingError, knet, layout
from porting import tf as ptf
from porting.comparison import Tolerance, compare
from porting.geometry import ConvGeometry, PoolGeometry
from porting.knet import reference

ptf.import_tf()  # once, up front: TF raises the recursion limit while it imports

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)


def within(printed: np.ndarray, y: np.ndarray, bound: np.ndarray) -> float:
    """max |printed - y| / bound, for the seed checks whose bound adds printing precision."""
    assert printed.shape == y.shape
    return float(np.max(np.abs(printed - y) / bound))


# --------------------------------------------------------------------------- strategies


@st.composite
def conv_cases(draw, transpose: bool = False):
    nd = draw(st.integers(1, 3))
    kmax, xmax = (3, 4) if nd < 3 else (2, 3)
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    kext = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    padding, size = [], []
    for ke, s in zip(kext, stride, strict=True):
        if transpose:
            xi = draw(st.integers(1, xmax))
            full = (xi - 1) * s + ke
            padding.append(draw(st.integers(0, min(ke - 1, (full - 1) // 2))))
        else:
            p = draw(st.integers(0, ke - 1))
            padding.append(p)
            xi = draw(st.integers(max(1, ke - 2 * p), max(1, ke - 2 * p) + xmax))
        size.append(xi)
    return {
        "nd": nd,
        "kernel": kernel,
        "size": tuple(size),
        "padding": tuple(padding),
        "stride": stride,
        "dilation": dilation,
        "cin": draw(st.integers(1, 3)),
        "cout": draw(st.integers(1, 3)),
        "n": draw(st.integers(1, 2)),
        "mode": draw(st.sampled_from([0, 1])),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "spatial": draw(st.sampled_from(["reverse", "keep"])),
        "alpha": draw(st.sampled_from([1, 0.5, 3.0, -0.7])),
        "scalar": draw(st.booleans()),  # pass scalars where every axis has the same value
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _param(values: tuple[int, ...], scalar: bool):
    return values[0] if scalar and len(set(values)) == 1 else values


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(conv_cases())
def test_conv4_reference_agrees_with_tf(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((*case["size"], case["cin"], case["n"])).astype(dt)
    w = rng.standard_normal((*case["kernel"], case["cin"], case["cout"])).astype(dt)
    kw = {
        "padding": _param(case["padding"], case["scalar"]),
        "stride": _param(case["stride"], case["scalar"]),
        "dilation": _param(case["dilation"], case["scalar"]),
        "mode": case["mode"],
        "alpha": case["alpha"],
    }
    y_knet = knet.conv4(w, x, backend="reference", **kw)
    y_tf = ptf.knet_conv4_via_tf(w, x, spatial=case["spatial"], **kw)
    geom = ConvGeometry.from_knet(
        case["nd"], **{k: kw[k] for k in ("padding", "stride", "dilation", "mode")}
    )
    mag = reference.conv4(
        np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), geom, abs(case["alpha"])
    )
    k = int(np.prod(case["kernel"])) * case["cin"]
    expected = layout.activations_to_tf(np.asarray(y_knet), case["spatial"])
    assert y_tf.dtype == dt
    res = compare(expected, y_tf, k=k, magnitude=layout.activations_to_tf(mag, case["spatial"]))
    assert res.ok, f"{case}: {res}"


@PROPERTY
@given(conv_cases(transpose=True))
def test_deconv4_reference_agrees_with_tf(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    cx, cy = case["cin"], case["cout"]
    x = rng.standard_normal((*case["size"], cx, case["n"])).astype(dt)
    w = rng.standard_normal((*case["kernel"], cy, cx)).astype(dt)
    kw = {
        "padding": _param(case["padding"], case["scalar"]),
        "stride": _param(case["stride"], case["scalar"]),
        "dilation": _param(case["dilation"], case["scalar"]),
        "mode": case["mode"],
        "alpha": case["alpha"],
    }
    y_knet = knet.deconv4(w, x, backend="reference", **kw)
    y_tf = ptf.knet_deconv4_via_tf(w, x, spatial=case["spatial"], **kw)
    geom = ConvGeometry.from_knet(
        case["nd"], **{k: kw[k] for k in ("padding", "stride", "dilation", "mode")}
    )
    mag = reference.deconv4(
        np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), geom, abs(case["alpha"])
    )
    # At most prod(kernel) * Cx terms reach an output (fewer where the stride skips).
    k = int(np.prod(case["kernel"])) * cx
    expected = layout.activations_to_tf(np.asarray(y_knet), case["spatial"])
    assert y_tf.dtype == dt
    res = compare(expected, y_tf, k=k, magnitude=layout.activations_to_tf(mag, case["spatial"]))
    assert res.ok, f"{case}: {res}"


@st.composite
def pool_cases(draw):
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k - 1)) for k in window)
    stride = draw(st.one_of(st.none(), st.tuples(*(st.integers(1, 3) for _ in range(nd)))))
    size = tuple(
        draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + (4 if nd < 3 else 2)))
        for k, p in zip(window, padding, strict=True)
    )
    return {
        "nd": nd,
        "window": window,
        "padding": padding,
        "stride": stride,
        "size": size,
        "c": draw(st.integers(1, 3)),
        "n": draw(st.integers(1, 2)),
        "mode": draw(st.sampled_from([0, 1, 3])),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "spatial": draw(st.sampled_from(["reverse", "keep"])),
        "alpha": draw(st.sampled_from([1, 0.5, 3.0, -0.7])),
        "specials": draw(st.booleans()),  # sprinkle NaN and -Inf into max pooling inputs
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@PROPERTY
@given(pool_cases())
def test_pool_reference_agrees_with_tf(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((*case["size"], case["c"], case["n"])).astype(dt)
    is_max = case["mode"] in (0, 3)
    if is_max and case["specials"]:
        x[rng.random(x.shape) < 0.3] = np.nan
        x[rng.random(x.shape) < 0.2] = -np.inf
    kw = {k: case[k] for k in ("window", "padding", "stride", "mode", "alpha")}
    y_knet = layout.activations_to_tf(
        np.asarray(knet.pool(x, backend="reference", **kw)), case["spatial"]
    )
    y_tf = ptf.knet_pool_via_tf(x, spatial=case["spatial"], **kw)
    assert y_tf.dtype == dt
    if is_max:
        # No arithmetic but the alpha scaling, done identically: equal bit for bit.
        assert np.array_equal(y_knet, y_tf, equal_nan=True), case
    else:
        geom = PoolGeometry.from_knet(
            case["nd"], **{k: case[k] for k in ("window", "padding", "stride", "mode")}
        )
        mag = reference.pool(np.abs(x).astype(np.float64), geom, abs(case["alpha"]))
        res = compare(
            y_knet,
            y_tf,
            k=int(np.prod(case["window"])),
            magnitude=layout.activations_to_tf(mag, case["spatial"]),
        )
        assert res.ok, f"{case}: {res}"


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stride_and_dilation_together(nd, dtype):
    """The combination tf.nn.convolution refuses, per axis, forward and transposed."""
    rng = np.random.default_rng(10 + nd)
    stride, dilation, padding = (2, 3, 2)[:nd], (2, 2, 3)[:nd], (1, 2, 0)[:nd]
    kernel = (3, 2, 2)[:nd]
    x = rng.standard_normal((*(9, 8, 7)[:nd], 3, 2)).astype(dtype)
    w = rng.standard_normal((*kernel, 3, 4)).astype(dtype)
    geom = ConvGeometry.from_knet(nd, padding=padding, stride=stride, dilation=dilation, mode=1)
    y = ptf.knet_conv4_via_tf(w, x, padding=padding, stride=stride, dilation=dilation, mode=1)
    ref = layout.activations_to_tf(
        np.asarray(
            knet.conv4(
                w, x, padding=padding, stride=stride, dilation=dilation, mode=1, backend="reference"
            )
        )
    )
    mag = layout.activations_to_tf(
        reference.conv4(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), geom)
    )
    assert y.shape == (2, *geom.output_size(x.shape[:-2], kernel)[::-1], 4)
    res = compare(ref, y, k=int(np.prod(kernel)) * 3, magnitude=mag)
    assert res.ok, str(res)

    # deconv4 with the same w, read as (K..., Cy=3, Cx=4)
    xd = rng.standard_normal((*(4, 3, 3)[:nd], 4, 2)).astype(dtype)
    yd = ptf.knet_deconv4_via_tf(w, xd, padding=padding, stride=stride, dilation=dilation, mode=1)
    refd = layout.activations_to_tf(
        np.asarray(
            knet.deconv4(
                w,
                xd,
                padding=padding,
                stride=stride,
                dilation=dilation,
                mode=1,
                backend="reference",
            )
        )
    )
    magd = layout.activations_to_tf(
        reference.deconv4(np.abs(w).astype(np.float64), np.abs(xd).astype(np.float64), geom)
    )
    assert yd.shape == (2, *geom.transpose_output_size(xd.shape[:-2], kernel)[::-1], 3)
    res = compare(refd, yd, k=int(np.prod(kernel)) * 4, magnitude=magd)
    assert res.ok, str(res)


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(y, w), x> == <y, conv_transpose(x, w)> for the same w: it is conv's input gradient."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 2, 2, 5))  # (K1, K2, Cy=2, Cx=5)
    x = rng.standard_normal((2, 4, 5, 5))  # (N, X1, X2, Cx)
    geom = {"padding": (1, 0), "stride": (2, 3), "dilation": (2, 1)}
    yt = ptf.conv_transpose(x, w, **geom)
    y = rng.standard_normal(yt.shape)
    fwd = ptf.conv(y, w, **geom)
    assert fwd.shape == x.shape
    lhs, rhs = np.sum(fwd * x), np.sum(y * yt)
    # Each side is one float64 sum over every product w*y*x: K = its number of terms.
    mag = np.sum(ptf.conv(np.abs(y), np.abs(w), **geom) * np.abs(x))
    k = int(np.prod(w.shape[:-1])) * x[..., 0].size
    assert abs(lhs - rhs) <= Tolerance.of(k, np.float64).bound(mag)


# --------------------------------------------------------------------------- broken ports


def _conv_setup(seed: int, size=(9, 7), kernel=(3, 3), cin=3, cout=4, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*size, cin, 2)).astype(dtype)
    w = rng.standard_normal((*kernel, cin, cout)).astype(dtype)
    return w, x


def _knet_side(w, x, spatial="reverse", **kw):
    """Reference conv4 in TF layout, and `check(port)`: porting.compare of a port against it."""
    y = layout.activations_to_tf(np.asarray(knet.conv4(w, x, backend="reference", **kw)), spatial)
    geom = ConvGeometry.from_knet(x.ndim - 2, **kw)
    mag = layout.activations_to_tf(
        reference.conv4(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), geom), spatial
    )
    k = int(np.prod(w.shape[:-1]))
    return y, lambda port: compare(y, port, k=k, magnitude=mag)


# A correct float32 port sits below ratio 1; a broken one is off by about the values themselves,
# i.e. by 1 / ((sqrt(K) + 2) eps) ~ 1e6 times the bound. Demand at least 1e4.
BROKEN = 1e4


def test_correct_port_passes_the_same_check():
    w, x = _conv_setup(20)
    y_knet, check = _knet_side(w, x, padding=1)
    res = check(ptf.knet_conv4_via_tf(w, x, padding=1))
    assert res.ok and res.max_error_to_tolerance < 1, str(res)


def test_broken_port_kernel_not_rotated():
    w, x = _conv_setup(21)
    y_knet, check = _knet_side(w, x, padding=1, mode=0)  # Knet's default: true convolution
    # The port copies the weights across without the 180-degree rotation.
    y_port = ptf.conv(layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), padding=1)
    res = check(y_port)
    assert not res.ok and res.max_error_to_tolerance > BROKEN, str(res)


def test_broken_port_height_and_width_swapped():
    # Square kernel, non-square input: the kernel read with the other axis convention is
    # transposed, the shapes still agree, the numbers do not.
    w, x = _conv_setup(22, size=(9, 7))
    y_knet, check = _knet_side(w, x, spatial="reverse", padding=1, mode=1)
    x_tf = layout.activations_to_tf(x, "reverse")
    w_wrong = layout.kernel_to_tf(w, mode=1, spatial="keep")
    y_port = ptf.conv(x_tf, w_wrong, padding=1)
    assert y_port.shape == y_knet.shape
    res = check(y_port)
    assert not res.ok and res.max_error_to_tolerance > BROKEN, str(res)
    # Reading the whole input the other way round changes the shape: flagged too.
    y_keep = ptf.knet_conv4_via_tf(w, x, padding=1, mode=1, spatial="keep")
    with pytest.raises(PortingError, match="shape"):
        check(y_keep)


def test_broken_port_padding_off_by_one():
    # Stride 3 makes padding 0 and 1 give the same output size, so only the numbers differ.
    w, x = _conv_setup(23, size=(9, 9))
    y_knet, check = _knet_side(w, x, padding=1, stride=3, mode=1)
    y_port = ptf.knet_conv4_via_tf(w, x, padding=0, stride=3, mode=1)
    assert y_port.shape == y_knet.shape
    res = check(y_port)
    assert not res.ok and res.max_error_to_tolerance > BROKEN, str(res)
    # At stride 1 the size changes instead.
    y_knet1, check1 = _knet_side(w, x, padding=1, mode=1)
    with pytest.raises(PortingError, match="shape"):
        check1(ptf.knet_conv4_via_tf(w, x, padding=2, mode=1))


def test_broken_port_same_padding_with_stride_2_and_even_kernel():
    tf = ptf.import_tf()
    # 4x4 kernel, stride 2, 9x9 input: "SAME" pads 3 in total, 1 before and 2 after; Knet's
    # padding=2 pads 2 on both sides and gives the same output size
    # (docs/tensorflow.md#same-padding).
    w, x = _conv_setup(24, size=(9, 9), kernel=(4, 4))
    y_knet, check = _knet_side(w, x, padding=2, stride=2, mode=1)
    y_port = tf.nn.conv2d(
        layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), strides=2, padding="SAME"
    ).numpy()
    assert y_port.shape == y_knet.shape
    res = check(y_port)
    assert not res.ok and res.max_error_to_tolerance > BROKEN, str(res)
    # The same geometry through porting.tf (explicit symmetric padding) agrees.
    assert check(ptf.knet_conv4_via_tf(w, x, padding=2, stride=2, mode=1)).ok


# --------------------------------------------------------------------------- seed 002
# Seed 002, a user report (also porting.examples.seed002): a Knet conv4 and its TensorFlow
# port disagree (docs/knet.md#flip, docs/tensorflow.md#same-padding). Printed arrays, verbatim.

SEED002_IMMATDATA = """
[[[ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ]],
 [[ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ]],
 [[ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ], [ 41.06299973, 55.22100067, 60.3430481 ],
  [ 41.06299973, 55.22100067, 60.3430481 ]],
 [[ 42.06299973, 56.22100067, 61.3430481 ], [ 42.06299973, 56.22100067, 61.3430481 ],
  [ 42.06299973, 56.22100067, 61.3430481 ], [ 42.06299973, 56.22100067, 61.3430481 ],
  [ 42.06299973, 56.22100067, 61.3430481 ]],
 [[ 42.06299973, 56.22100067, 62.3430481 ], [ 42.06299973, 56.22100067, 62.3430481 ],
  [ 42.06299973, 56.22100067, 62.3430481 ], [ 42.06299973, 56.22100067, 62.3430481 ],
  [ 42.06299973, 56.22100067, 62.3430481 ]]]
"""
SEED002_WDATA = """
[[[ 0.4800154 , 0.55037946, 0.42947057], [ 0.4085474 , 0.44007453, 0.373467 ],
  [-0.06514555, -0.08138704, -0.06136011]],
 [[ 0.31047726, 0.34573907, 0.27476987], [ 0.05020237, 0.04063221, 0.03868078],
  [-0.40338343, -0.45350131, -0.36722335]],
 [[-0.05087169, -0.05863491, -0.05746817], [-0.28522751, -0.33066967, -0.26224968],
  [-0.41851634, -0.4850302 , -0.35009676]]]
"""
SEED002_TF_OUT = """
[[-168.01942444, -128.39241028, -128.39241028, -128.39241028, 0.46919155],
 [-115.27775574, 0.36819839, 0.36819839, 0.36819839, 140.10180664],
 [-117.4095459 , -1.93058014, -1.93058014, -1.93058014, 139.05670166],
 [-119.1164856 , -2.76397705, -2.76397705, -2.76397705, 139.79747009],
 [ -4.79425049, 122.31194305, 122.31194305, 122.31194305, 198.7494812 ]]
"""
# Knet side: Julia's compact display (6 significant digits) of testw (Float32) and ydata.
SEED002_TESTW = [  # testw[:, :, c], rows as printed
    [
        [0.480015, 0.408547, -0.0651456],
        [0.310477, 0.0502024, -0.403383],
        [-0.0508717, -0.285228, -0.418516],
    ],
    [
        [0.550379, 0.440075, -0.081387],
        [0.345739, 0.0406322, -0.453501],
        [-0.0586349, -0.33067, -0.48503],
    ],
    [
        [0.429471, 0.373467, -0.0613601],
        [0.27477, 0.0386808, -0.367223],
        [-0.0574682, -0.26225, -0.350097],
    ],
]
SEED002_KNET_OUT = """
194.694 120.055 120.055 120.055 -4.38531
140.102 0.368195 0.368195 0.368195 -115.278
142.784 2.84226 2.84226 2.84226 -114.264
144.647 3.42023 3.42023 3.42023 -115.046
0.798015 -130.909 -130.909 -130.909 -171.574
"""

_NUMBER = re.compile(r"-?\d+\.\d*")


def _parse_printed(text: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """Values and half a unit in the last printed decimal place of each."""
    tokens = _NUMBER.findall(text)
    values = np.array([float(t) for t in tokens]).reshape(shape)
    half_unit = np.array([0.5 * 10.0 ** -len(t.split(".")[1]) for t in tokens]).reshape(shape)
    return values, half_unit


def _half_unit_6_significant(v: np.ndarray) -> np.ndarray:
    """Julia's compact display keeps 6 significant digits (trailing zeros dropped)."""
    return 0.5 * 10.0 ** (np.floor(np.log10(np.abs(v))) - 5)


def test_seed002_tf_output_reproduced():
    # NumPy printed these float32 arrays with 8 decimal places (its legacy precision=8), which
    # identifies each float32 value exactly: reading them back as float32 gives TF's inputs.
    immat, _ = _parse_printed(SEED002_IMMATDATA, (5, 5, 3))
    wdata, _ = _parse_printed(SEED002_WDATA, (3, 3, 3))
    printed, half_unit = _parse_printed(SEED002_TF_OUT, (5, 5))
    x = immat.astype(np.float32)[None]  # (1, 5, 5, 3) NHWC
    w = wdata.astype(np.float32)[..., None]  # (3, 3, 3, 1) HWIO
    # tf.nn.conv2d(..., padding="SAME") with a 3x3 kernel at stride 1 pads 1 on every side
    # (docs/tensorflow.md#same-padding).
    y = ptf.conv(x, w, padding=1)[0, :, :, 0]
    mag = ptf.conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), padding=1)[
        0, :, :, 0
    ]
    bound = half_unit + Tolerance.of(27, np.float32).bound(mag)
    assert within(printed, y, bound) <= 1

    # The author copied Julia's [i, j, c] straight across: spatial="keep", and TF computes
    # cross-correlation, Knet's mode=1.
    w_julia = wdata.astype(np.float32)[..., None]  # (W1, W2, Cin, Cout)
    x_julia = immat.astype(np.float32)[..., None]  # (X1, X2, Cin, N)
    y_keep = ptf.knet_conv4_via_tf(w_julia, x_julia, padding=1, mode=1, spatial="keep")[0, :, :, 0]
    assert within(printed, y_keep, bound) <= 1
    # Under spatial="reverse" the same conv comes out transposed (X1 is then the width).
    y_rev = ptf.knet_conv4_via_tf(w_julia, x_julia, padding=1, mode=1, spatial="reverse")[
        0, :, :, 0
    ]
    assert within(printed.T, y_rev, bound.T) <= 1
    # Knet's default mode=0 (true convolution) is what the user ran: it does not match TF
    # (docs/knet.md#flip).
    y_mode0 = ptf.knet_conv4_via_tf(w_julia, x_julia, padding=1, mode=0, spatial="keep")[0, :, :, 0]
    assert within(printed, y_mode0, bound) > BROKEN


def test_seed002_knet_output_reproduced_through_tf():
    """Knet's own printed conv4 output (mode=0, Float64) from TF, via the kernel rotation."""
    w = np.array(SEED002_TESTW).transpose(1, 2, 0)[..., None]  # (3, 3, 3, 1), testw[i, j, c]
    x = np.zeros((5, 5, 3, 1))
    for c, (top, bottom) in enumerate([(41.063, 42.063), (55.221, 56.221), (60.343, 61.343)]):
        x[:3, :, c], x[3:, :, c] = top, bottom
    x[4, :, 2] = 62.343
    printed, _ = _parse_printed(SEED002_KNET_OUT, (5, 5))
    # Inputs are known to 6 significant digits: propagate that through the (linear) conv.
    dw, dx = _half_unit_6_significant(w), _half_unit_6_significant(x)
    aw, ax = np.abs(w), np.abs(x)
    kw = {"padding": 1, "spatial": "keep"}
    # |conv(w + dw, x + dx) - conv(w, x)| <= conv(|w| + |dw|, |dx|) + conv(|dw|, |x|) (mode 0
    # flips w and dw alike, so mode 0 bounds it as well).
    input_bound = (ptf.knet_conv4_via_tf(aw + dw, dx, **kw) + ptf.knet_conv4_via_tf(dw, ax, **kw))[
        0, :, :, 0
    ]
    mag = ptf.knet_conv4_via_tf(aw, ax, **kw)[0, :, :, 0]
    bound = (
        input_bound + _half_unit_6_significant(printed) + Tolerance.of(27, np.float64).bound(mag)
    )
    y = ptf.knet_conv4_via_tf(w, x, **kw)[0, :, :, 0]  # mode=0, Knet's default
    assert within(printed, y, bound) <= 1
