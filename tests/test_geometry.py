"""Knet's CPU geometry is accepted: padding at least the (dilated) kernel extent or the pooling
window is computed, by the reference and by porting.tf, as NNlib does.

The expected values come from PyTorch in float64, written here from Knet's definitions (not
from porting's code):
- conv4: the input padded with zeros by `F.pad`, then `conv{1,2,3}d` (cross-correlation), the
  kernel flipped along every spatial axis for Knet's default mode 0 (true convolution);
- deconv4: `conv_transpose{1,2,3}d` without padding (the gradient of that conv), then
  `padding` cropped from both ends of every spatial axis;
- max pool: `F.pad` with -floatmax (NNlib's starting value `nextfloat(typemin(T))`; padded
  cells are skipped, so a window of only padding gives -floatmax), then `max_pool`;
- mean pool: `F.pad` with zeros, then `avg_pool` (every window is full: divides by the volume).

Julia-indexed `(X1, .., Xd, C, N)` becomes torch's `(N, C, X1, .., Xd)` by a transpose of the
batch/channel axes only: the spatial order is kept, which convolution does not care about.

Tolerance, for sums: the two float64 results differ by at most (sqrt(K) + 2) eps S per output
(see tests/test_agreement.py), S being the same op on |w| and |x| computed here by torch. The
float32 TensorFlow side is held to the float32 eps against the float64 truth. Max pooling does
no arithmetic: bit for bit.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from porting import PortingError, knet, layout
from porting.geometry import ConvGeometry, PoolGeometry

torch = pytest.importorskip("torch", reason="PyTorch float64 is the independent implementation")
F = torch.nn.functional
ptf = pytest.importorskip("porting.tf")
ptf.import_tf()  # once, up front: TF raises the recursion limit while it imports

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)
TF_PROPERTY = settings(max_examples=15, deadline=None, derandomize=True)


# --------------------------------------------------------------------------- torch, from Knet's definitions


def _t(a: np.ndarray):
    """Julia-indexed (X.., C, N) -> torch (N, C, X..), float64."""
    nd = a.ndim - 2
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (nd + 1, nd, *range(nd)))))


def _j(t) -> np.ndarray:
    """torch (N, C, Y..) -> Julia-indexed (Y.., C, N)."""
    a = t.numpy()
    nd = a.ndim - 2
    return np.transpose(a, (*range(2, nd + 2), 1, 0))


def _w(w: np.ndarray, mode: int):
    """Julia kernel (W.., A, B) -> torch (B, A, W..), rotated 180 degrees for mode 0."""
    nd = w.ndim - 2
    t = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (nd + 1, nd, *range(nd)))))
    return torch.flip(t, dims=tuple(range(2, nd + 2))) if mode == 0 else t


def _pad_arg(padding):
    """F.pad's argument: last axis first, (before, after) each."""
    out = []
    for p in reversed(padding):
        out += [p, p]
    return out


def torch_conv4(w, x, padding, stride, dilation, mode):
    nd = x.ndim - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    xt = F.pad(_t(x), _pad_arg(padding), value=0.0)
    return _j(conv(xt, _w(w, mode), stride=tuple(stride), dilation=tuple(dilation)))


def torch_deconv4(w, x, padding, stride, dilation, mode):
    nd = x.ndim - 2
    convt = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    # torch's transposed weight is (Cin_of_transpose, Cout, K..) = (Cx, Cy, K..): Julia's
    # (K.., Cy, Cx) with the last two axes moved to the front in that order.
    t = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (nd + 1, nd, *range(nd)))))
    if mode == 0:
        t = torch.flip(t, dims=tuple(range(2, nd + 2)))
    full = convt(_t(x), t, stride=tuple(stride), dilation=tuple(dilation))
    crop = (
        slice(None),
        slice(None),
        *(slice(p, full.shape[2 + i] - p) for i, p in enumerate(padding)),
    )
    return _j(full[crop])


def torch_pool(x, window, padding, stride, mode):
    nd = x.ndim - 2
    if mode in (0, 3):
        xt = F.pad(_t(x), _pad_arg(padding), value=-np.finfo(x.dtype).max)
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    else:
        xt = F.pad(_t(x), _pad_arg(padding), value=0.0)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    return _j(fn(xt, kernel_size=tuple(window), stride=tuple(stride)))


# --------------------------------------------------------------------------- strategies


@st.composite
def conv_geometries(draw, transpose: bool = False):
    """Any geometry NNlib computes, padding up to two beyond the dilated kernel extent
    (docs/knet.md#padding-beyond-kernel)."""
    nd = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding, size = [], []
    for k, d, s in zip(kernel, dilation, stride, strict=True):
        ext = (k - 1) * d + 1
        if transpose:
            xi = draw(st.integers(1, 4))
            full = (xi - 1) * s + ext
            padding.append(draw(st.integers(0, (full - 1) // 2)))  # output size >= 1
        else:
            p = draw(st.integers(0, ext + 2))
            padding.append(p)
            xi = draw(st.integers(max(1, ext - 2 * p), max(1, ext - 2 * p) + 3))
        size.append(xi)
    cin, cout, n = (draw(st.integers(1, 3)) for _ in range(3))
    return {
        "w": (*kernel, *((cout, cin) if transpose else (cin, cout))),
        "x": (*size, cin, n),
        "padding": tuple(padding),
        "stride": stride,
        "dilation": dilation,
        "mode": draw(st.sampled_from([0, 1])),
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def pool_geometries(draw):
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k + 2)) for k in window)
    size = tuple(
        draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + 3))
        for k, p in zip(window, padding, strict=True)
    )
    return {
        "x": (*size, draw(st.integers(1, 3)), draw(st.integers(1, 2))),
        "window": window,
        "padding": padding,
        "stride": stride,
        "mode": draw(st.sampled_from([0, 1])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x"]).astype(dtype)
    w = rng.standard_normal(case["w"]).astype(dtype) if "w" in case else None
    return w, x


def _within(got, want, s, k, eps):
    assert got.shape == want.shape, (got.shape, want.shape)
    bound = (math.sqrt(k) + 2) * eps * s + (math.sqrt(k) + 2) * np.finfo(np.float64).tiny
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), f"max error / bound {np.max(err / bound):.3g}"


# --------------------------------------------------------------------------- reference


@PROPERTY
@given(conv_geometries())
def test_reference_conv4_any_nnlib_geometry(case):
    w, x = _arrays(case)
    geo = {k: case[k] for k in ("padding", "stride", "dilation", "mode")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = knet.conv4(w, x, backend="reference", **geo)
    want = torch_conv4(w, x, **geo)
    s = torch_conv4(np.abs(w), np.abs(x), **geo)
    _within(np.asarray(got), want, s, math.prod(case["w"][:-1]), np.finfo(np.float64).eps)


@PROPERTY
@given(conv_geometries(transpose=True))
def test_reference_deconv4_any_nnlib_geometry(case):
    w, x = _arrays(case)
    geo = {k: case[k] for k in ("padding", "stride", "dilation", "mode")}
    got = knet.deconv4(w, x, backend="reference", **geo)
    want = torch_deconv4(w, x, **geo)
    s = torch_deconv4(np.abs(w), np.abs(x), **geo)
    k = math.prod(case["w"][:-2]) * case["w"][-1]
    _within(np.asarray(got), want, s, k, np.finfo(np.float64).eps)


@PROPERTY
@given(pool_geometries())
def test_reference_pool_any_nnlib_geometry(case):
    _, x = _arrays(case)
    geo = {k: case[k] for k in ("window", "padding", "stride", "mode")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = np.asarray(knet.pool(x, backend="reference", **geo))
    want = torch_pool(x, **geo)
    if case["mode"] == 0:
        np.testing.assert_array_equal(got, want)  # no arithmetic: bit for bit
    else:
        s = torch_pool(np.abs(x), **geo)
        _within(got, want, s, math.prod(case["window"]), np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- TensorFlow


@TF_PROPERTY
@given(conv_geometries(), st.sampled_from([np.float32, np.float64]))
def test_tf_conv4_any_nnlib_geometry(case, dtype):
    w, x = _arrays(case, dtype)
    geo = {k: case[k] for k in ("padding", "stride", "dilation", "mode")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = ptf.knet_conv4_via_tf(w, x, spatial="keep", **geo)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    want = layout.activations_to_tf(torch_conv4(w64, x64, **geo), "keep")
    s = layout.activations_to_tf(torch_conv4(np.abs(w64), np.abs(x64), **geo), "keep")
    _within(got, want, s, math.prod(case["w"][:-1]), np.finfo(dtype).eps)


@TF_PROPERTY
@given(conv_geometries(transpose=True), st.sampled_from([np.float32, np.float64]))
def test_tf_deconv4_any_nnlib_geometry(case, dtype):
    w, x = _arrays(case, dtype)
    geo = {k: case[k] for k in ("padding", "stride", "dilation", "mode")}
    got = ptf.knet_deconv4_via_tf(w, x, spatial="reverse", **geo)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    want = layout.activations_to_tf(torch_deconv4(w64, x64, **geo), "reverse")
    s = layout.activations_to_tf(torch_deconv4(np.abs(w64), np.abs(x64), **geo), "reverse")
    k = math.prod(case["w"][:-2]) * case["w"][-1]
    _within(got, want, s, k, np.finfo(dtype).eps)


@TF_PROPERTY
@given(pool_geometries(), st.sampled_from([np.float32, np.float64]))
def test_tf_pool_any_nnlib_geometry(case, dtype):
    _, x = _arrays(case, dtype)
    geo = {k: case[k] for k in ("window", "padding", "stride", "mode")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = ptf.knet_pool_via_tf(x, spatial="reverse", **geo)
    want = layout.activations_to_tf(torch_pool(x.astype(np.float64), **geo), "reverse")
    if case["mode"] == 0:
        # x is exact in float64 and -floatmax(float32) too: the float32 max is the same value
        np.testing.assert_array_equal(
            got.astype(np.float64),
            np.where(want == -np.finfo(np.float64).max, -np.finfo(dtype).max, want),
        )
    else:
        s = layout.activations_to_tf(torch_pool(np.abs(x.astype(np.float64)), **geo), "reverse")
        _within(got, want, s, math.prod(case["window"]), np.finfo(dtype).eps)


# --------------------------------------------------------------------------- hand-derived


def test_padding_only_outputs_by_hand():
    """A 1x1 kernel with padding 1 (the example of issue 9): the border is 0, the centre the
    product; max pool window 2 with padding 2: -floatmax where only padding is seen
    (docs/knet.md#padding-beyond-kernel, #pool-nan)."""
    x = np.arange(1.0, 7.0).reshape(2, 3, 1, 1)  # X1 = 2, X2 = 3
    w = np.full((1, 1, 1, 1), 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y = np.asarray(knet.conv4(w, x, padding=1, backend="reference"))[:, :, 0, 0]
        want = np.zeros((4, 5))
        want[1:3, 1:4] = 2.0 * x[:, :, 0, 0]
        np.testing.assert_array_equal(y, want)
        p = np.asarray(knet.pool(np.ones((1, 1, 1, 1)), window=2, padding=2, backend="reference"))
    # padded extent 5, stride 2: windows [-2, -1] (only padding) and [0, 1] (sees x) per axis
    lo = -np.finfo(np.float64).max
    np.testing.assert_array_equal(p[:, :, 0, 0], [[lo, lo], [lo, 1.0]])


def test_padding_only_warns_once_naming_cudnn(monkeypatch):
    from porting.geometry import _keywords

    monkeypatch.setattr(_keywords, "_warned", set())
    with pytest.warns(UserWarning, match="cuDNN") as rec:
        ConvGeometry.from_knet(1, padding=1).output_size((2,), (1,))
        ConvGeometry.from_knet(1, padding=3).output_size((2,), (1,))
    assert len([r for r in rec if "cuDNN" in str(r.message)]) == 1
    assert rec[0].filename == __file__  # points at the caller, not into porting
    with pytest.warns(UserWarning, match="refuses padding >= window"):
        PoolGeometry.from_knet(1, window=1, padding=1).output_size((2,))


def test_input_smaller_than_kernel_is_still_refused():
    with pytest.raises(PortingError, match="input size 1 with padding 0 is smaller"):
        knet.conv4(np.ones((3, 1, 1)), np.ones((1, 1, 1)), backend="reference")
    with pytest.raises(PortingError, match="smaller than the pooling window 3"):
        knet.pool(np.ones((1, 1, 1)), window=3, backend="reference")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: knet.conv4(W, X, padding=float("nan")), "padding=nan: expected an integer"),
        (lambda: knet.conv4(W, X, stride=(1, math.inf)), r"stride=\(1, inf\): expected"),
        (lambda: knet.conv4(W, X, alpha=float("inf")), "alpha=inf: expected a finite"),
        (lambda: knet.deconv4(W, X, alpha=np.float32("nan")), r"alpha=.*nan\)?: expected a finite"),
        (lambda: knet.pool(X, window=float("nan")), "window=nan: expected an integer"),
        (lambda: knet.pool(X, alpha=10**400), "alpha=<integer of about 400 digits>: expected a"),
        (lambda: knet.conv4(W, X, mode=True), "mode=True: expected one of 0, 1"),
        (lambda: knet.pool(X, mode=1.0), "mode=1.0: expected one of"),
        (lambda: knet.conv4(W, X, padding=10**30), "padding=<integer of about 30 digits>"),
        (lambda: knet.conv4(W, X, padding=2**61), "elements .*expected a size an array"),
        (lambda: knet.conv4(W, X, stride=(1, 10**5000)), r"stride=\(1, <integer of about 5000"),
        (lambda: knet.conv4(W, X, alpha=10**5000), "alpha=<integer of about 5000 digits>"),
        (lambda: knet.pool(X, mode=10**5000), "mode=<integer of about 5000 digits>"),
        (lambda: knet.mat(X, dims=10**5000), "dims=<integer of about 5000 digits>"),
        (lambda: knet.conv4(W, X, padding=10**6), "GiB of memory"),
        (lambda: knet.pool(X, padding=10**6, window=1, stride=1), "GiB of memory"),
    ],
)
def test_non_finite_or_absurd_geometry_and_scale_are_bad_input(call, match):
    """NaN, Inf, booleans, floats and sizes no machine holds are refused by name, before any
    arithmetic (never a silently wrong answer or a MemoryError)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(PortingError, match=match):
            call()


W = np.ones((3, 3, 2, 2))
X = np.ones((5, 5, 2, 1))


def test_big_endian_operands_give_the_native_numbers():
    """Arrays in the other byte order (a .mat or .npy from a big-endian machine) are read by
    value: every op gives bit for bit what the native arrays give."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 2, 2, 3)).astype(np.float32)
    x = rng.standard_normal((6, 5, 2, 2)).astype(np.float32)
    other = ">" if np.little_endian else "<"
    wb, xb = w.astype(w.dtype.newbyteorder(other)), x.astype(x.dtype.newbyteorder(other))
    assert not wb.dtype.isnative and np.array_equal(wb, w)
    for fn in (
        lambda a, b: knet.conv4(a, b, padding=1, backend="reference"),
        lambda a, b: knet.deconv4(a[:, :, :, :2], b, stride=2, backend="reference"),
        lambda a, b: knet.pool(b, window=2, backend="reference"),
        lambda a, b: ptf.knet_conv4_via_tf(a, b, padding=1),
        lambda a, b: layout.kernel_to_tf(a),
    ):
        native, swapped = np.asarray(fn(w, x)), np.asarray(fn(wb, xb))
        assert swapped.dtype.isnative
        np.testing.assert_array_equal(swapped, native)


def test_conv_dims_sizes_and_conversions_by_hand():
    """w (3, 2, 2, 4), x (8, 6, 2, 5), padding (1, 0), stride (2, 1): by Knet's formula
    Y1 = 1 + (8 + 2 - 3) // 2 = 4 and Y2 = 1 + (6 - 2) // 1 = 5."""
    from porting.geometry import ConvOp, PoolOp

    kw = dict(padding=(1, 0), stride=(2, 1), dilation=1, mode=0)
    dims = ConvOp.knet(np.ones((3, 2, 2, 4)), np.ones((8, 6, 2, 5)), **kw).dims
    assert dims.y_shape == (4, 5, 4, 5) and dims.terms == 3 * 2 * 2
    assert dims.knet_keywords() == {"padding": (1, 0), "stride": (2, 1), "dilation": 1, "mode": 0}
    tf_dims = dims.to_tf("reverse")
    assert tf_dims.y_shape == (5, 5, 4, 4) and tf_dims.x_shape == (5, 6, 8, 2)
    assert tf_dims.padding == (0, 1) and tf_dims.crosscorrelation  # the TF kernel is rotated
    assert tf_dims.tf_paddings() == [[0, 0], [0, 0], [1, 1], [0, 0]]
    assert dims.to_tf("keep").y_shape == (5, 4, 5, 4)
    # what the two sides compute has those shapes
    w, x = np.ones((3, 2, 2, 4)), np.ones((8, 6, 2, 5))
    assert knet.conv4(w, x, backend="reference", **kw).shape == dims.y_shape
    assert ptf.knet_conv4_via_tf(w, x, **kw).shape == tf_dims.y_shape
    # deconv4 (w (W, Cy, Cx)): Yi = (Xi - 1) s + (Wi - 1) d + 1 - 2 p
    t = ConvOp.knet(
        np.ones((3, 2, 4, 2)), np.ones((4, 5, 2, 1)), stride=2, padding=1, transposed=True
    ).dims
    assert t.y_shape == ((4 - 1) * 2 + 3 - 2, (5 - 1) * 2 + 2 - 2, 4, 1)
    p = PoolOp.knet(np.ones((5, 4, 3, 2)), window=(2, 3), padding=(0, 1)).dims
    assert p.y_shape == (2, 2, 3, 2) and p.stride == (2, 3)


def test_numpy_integers_are_integers_everywhere():
    """Sizes read from files arrive as NumPy integers: they are accepted wherever a Python int
    is, and give the same numbers."""
    w, x = np.ones((3, 3, 2, 2)), np.arange(50.0).reshape(5, 5, 2, 1)
    i = np.int64
    kw = dict(padding=i(1), stride=(i(1), i(2)), dilation=np.int32(1), mode=i(0))
    np.testing.assert_array_equal(
        knet.conv4(w, x, backend="reference", **kw),
        knet.conv4(w, x, padding=1, stride=(1, 2), backend="reference"),
    )
    assert knet.mat(x, dims=i(3), backend="reference").shape == (50, 1)
    assert knet.pool(x, window=np.uint8(2), mode=i(1), backend="reference").shape == (2, 2, 2, 1)


# --------------------------------------------------------------------------- Knet's defaults, once


def _defaults_of(fn) -> dict:
    import inspect

    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_knet_defaults_are_written_once_and_every_signature_agrees():
    """Knet's own defaults (Knet.jl src/ops20/conv.jl docstrings: `conv4(w, x; padding=0,
    stride=1, dilation=1, mode=0, alpha=1)`, `pool(x; window=2, padding=0, stride=window,
    mode=0, alpha=1)`) are porting.geometry's tables, and every signature or layer field that
    spells one out gives the table's value."""
    import dataclasses

    from porting import diagnosis, quant, verify
    from porting import tf as ptf
    from porting.geometry import CONV_DEFAULTS, POOL_DEFAULTS, ConvOp, PoolOp
    from porting.model import Conv, Deconv, Pool

    assert dict(CONV_DEFAULTS) == {"padding": 0, "stride": 1, "dilation": 1, "mode": 0, "alpha": 1}
    assert dict(POOL_DEFAULTS) == {"window": 2, "padding": 0, "stride": None, "mode": 0, "alpha": 1}
    conv_like = [
        knet.conv4,
        knet.deconv4,
        ConvOp.knet,
        ConvGeometry.from_knet,
        verify.verify_conv4,
        diagnosis.diagnose,
        quant.diagnose_quantized,
        ptf.conv,
        ptf.conv_transpose,
        ptf.knet_conv4_via_tf,
        ptf.knet_deconv4_via_tf,
    ]
    pool_like = [knet.pool, PoolOp.knet, PoolGeometry.from_knet, ptf.pool, ptf.knet_pool_via_tf]
    fields = {
        cls: {f.name: f.default for f in dataclasses.fields(cls)} for cls in (Conv, Deconv, Pool)
    }
    seen = 0
    for where, table, found in (
        *((fn.__qualname__, CONV_DEFAULTS, _defaults_of(fn)) for fn in conv_like),
        *((fn.__qualname__, POOL_DEFAULTS, _defaults_of(fn)) for fn in pool_like),
        ("Conv", CONV_DEFAULTS, fields[Conv]),
        ("Deconv", CONV_DEFAULTS, fields[Deconv]),
        ("Pool", POOL_DEFAULTS, fields[Pool]),
    ):
        for key, value in table.items():
            if key in found:
                seen += 1
                assert found[key] == value, (where, key, found[key])
    assert seen >= 70  # the table is what the signatures spell out, not a few of them


def test_an_op_bound_to_a_parsed_geometry_is_the_op_of_its_keywords():
    from porting.geometry import ConvOp, PoolOp

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    x = rng.standard_normal((7, 6, 2, 3)).astype(np.float32)
    kw = {"padding": (1, 0), "stride": 2, "dilation": (1, 2), "mode": 1}
    g = ConvGeometry.from_knet(2, **kw)
    assert ConvOp.bind(w, x, g, 0.5) == ConvOp.knet(w, x, **kw, alpha=0.5)
    wt = rng.standard_normal((3, 2, 4, 2)).astype(np.float32)  # deconv4: (W..., Cy, Cx)
    dual = ConvOp.bind(wt, x, g, transposed=True)
    assert dual == ConvOp.knet(wt, x, **kw, transposed=True)
    pg = PoolGeometry.from_knet(2, window=3, padding=1)
    assert PoolOp.bind(x, pg, 2) == PoolOp.knet(x, window=3, padding=1, alpha=2)
    with pytest.raises(PortingError, match=r"conv4: a 1-d geometry for x of shape \(7, 6, 2, 3\)"):
        ConvOp.bind(w, x, ConvGeometry.from_knet(1))
    with pytest.raises(PortingError, match="input channels"):
        ConvOp.bind(w, x[:, :, :1], g)
    with pytest.raises(PortingError, match=r"pool: a 3-d geometry"):
        PoolOp.bind(x, PoolGeometry.from_knet(3))
