"""Knet's CPU geometry is accepted, converted and verified: conv padding >= the dilated kernel
extent, pool padding >= the window (NNlib computes them: the outer outputs see only padding,
zeros for conv and mean pool, -floatmax for max pool), and every generated Keras layer name is
unique (a padded conv with a padded pool used to crash with a duplicate `<layer>__pad`).

The expected values are an independent PyTorch float64 implementation written here from Knet's
definitions (conv4 mode 0 flips the kernel; pool pads with zeros for mean and never lets the
padding win for max, NNlib starting each window at -floatmax), not porting's code.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
F = torch.nn.functional

from porting import PortingError, layout  # noqa: E402
from porting.model import Conv, KnetModel, Pool, forward_knet  # noqa: E402
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64
BIG = np.finfo(F64).max


def _t(a):
    """Julia-indexed (X1, ..., C, N) -> torch (N, C, X1, ...) float64."""
    a = np.asarray(a, F64)
    nd = a.ndim - 2
    return torch.from_numpy(np.ascontiguousarray(a.transpose(nd + 1, nd, *range(nd))))


def _back(t):
    a = t.numpy()
    nd = a.ndim - 2
    return np.asfortranarray(a.transpose(*range(2, nd + 2), 1, 0))


def torch_conv4(w, x, b, padding, dilation=1, mode=0):
    nd = w.ndim - 2
    wt = np.asarray(w, F64).transpose(nd + 1, nd, *range(nd))  # (Cout, Cin, W1, ...)
    if mode == 0:  # Knet's default: true convolution, the kernel rotated
        wt = wt[(slice(None), slice(None), *([slice(None, None, -1)] * nd))]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    bias = None if b is None else torch.from_numpy(np.asarray(b, F64).reshape(-1))
    pad = [padding] * nd if isinstance(padding, int) else list(padding)
    dil = [dilation] * nd if isinstance(dilation, int) else list(dilation)
    y = conv(_t(x), torch.from_numpy(wt.copy(order="C")), bias, padding=pad, dilation=dil)
    return _back(y)


def torch_pool(x, window, padding, stride=None, mode=0):
    nd = x.ndim - 2
    win = [window] * nd if isinstance(window, int) else list(window)
    pad = [padding] * nd if isinstance(padding, int) else list(padding)
    st = win if stride is None else ([stride] * nd if isinstance(stride, int) else list(stride))
    t = _t(x)
    flat = [p for q in reversed(pad) for p in (q, q)]  # F.pad: last axis first
    if mode in (0, 3):
        t = F.pad(t, flat, value=-float("inf"))
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        y = torch.clamp(pool(t, win, st), min=-BIG)  # NNlib starts each window at -floatmax
    else:
        t = F.pad(t, flat, value=0.0)
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        y = pool(t, win, st)  # divides by prod(window), padding counted
    return _back(y)


def _w(rng, *shape):
    return np.asfortranarray(rng.standard_normal(shape))


CASES = {
    # 1x1 kernel with padding 1: the outer ring sees only padding (bias only)
    "conv 1x1 padding 1": lambda r: (
        [Conv(_w(r, 1, 1, 2, 3), _w(r, 1, 1, 3, 1), padding=1)],
        (5, 4, 2),
        lambda x, L: torch_conv4(L[0].w, x, L[0].b, 1),
    ),
    # dilated extent 5 with padding 6 (1-D, cross-correlation)
    "conv dilated padding > extent": lambda r: (
        [Conv(_w(r, 3, 2, 2), None, padding=6, dilation=2, mode=1)],
        (4, 2),
        lambda x, L: torch_conv4(L[0].w, x, None, 6, dilation=2, mode=1),
    ),
    # padded conv AND padded mean pool in one layer (the duplicate `__pad` crash)
    "conv padded + mean pool padded": lambda r: (
        [
            Conv(
                _w(r, 3, 3, 2, 2),
                _w(r, 1, 1, 2, 1),
                padding=1,
                pool=dict(window=2, padding=1, mode=1),
            )
        ],
        (6, 5, 2),
        lambda x, L: torch_pool(torch_conv4(L[0].w, x, L[0].b, 1), 2, 1, mode=1),
    ),
    # max pool with padding >= window: border windows of padding only give -floatmax
    "max pool padding >= window": lambda r: (
        [Pool(window=2, padding=3, stride=1)],
        (4, 3, 2),
        lambda x, L: torch_pool(x, 2, 3, 1, mode=0),
    ),
    "max pool 1-D padding > window, strided": lambda r: (
        [Pool(window=1, padding=2, stride=2)],
        (5, 2),
        lambda x, L: torch_pool(x, 1, 2, 2, mode=0),
    ),
    "mean pool padding >= window": lambda r: (
        [Pool(window=(2, 1), padding=(2, 1), stride=1, mode=1)],
        (3, 4, 2),
        lambda x, L: torch_pool(x, (2, 1), (2, 1), 1, mode=1),
    ),
    # a padded conv whose padded max pool has windows of padding only, 3-D float64
    "conv + max pool 3-D": lambda r: (
        [Conv(_w(r, 2, 2, 2, 1, 2), None, padding=2, pool=dict(window=2, padding=2))],
        (3, 3, 2, 1),
        lambda x, L: torch_pool(torch_conv4(L[0].w, x, None, 2), 2, 2, mode=0),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [F64, F32])
def test_knet_cpu_geometry_converts_and_verifies(name, dtype):
    rng = np.random.default_rng(sum(map(ord, name)))
    layers64, size, reference = CASES[name](rng)
    x64 = np.asfortranarray(rng.standard_normal((*size, 2)))
    expected = reference(x64, layers64)  # independent: PyTorch float64 from Knet's definitions
    layers = [_astype(layer, dtype) for layer in layers64]
    model = KnetModel(layers, input_size=size, dtype=dtype)
    x = np.asfortranarray(x64.astype(dtype))
    # porting's Knet reference agrees with the independent one
    knet = forward_knet(model, x, backend="reference").final
    assert knet.shape == expected.shape
    exp_d = np.maximum(expected, np.finfo(dtype).min).astype(dtype)  # -floatmax of the dtype
    tol = 1e-12 if dtype == F64 else 1e-5
    np.testing.assert_allclose(knet, exp_d, rtol=tol, atol=tol)
    # the Keras model: built-in layers, unique names, and it verifies layer by layer
    km = to_keras(model)
    names = [lay.name for lay in km.layers]
    assert len(names) == len(set(names)), names
    y = np.asarray(km(layout.activations_to_tf(x)))
    np.testing.assert_allclose(y, julia_to_tf(exp_d, None, "reverse"), rtol=tol, atol=tol)
    for mode in ("each", "whole"):
        report = verify_model(model, x, keras_model=km, mode=mode)
        assert report.ok, str(report)
    if name.startswith("max pool"):
        assert (knet == np.finfo(dtype).min).any()  # some windows hold only padding
        assert any("cuDNN" in n for n in report.notes)


def _astype(layer, dtype):
    if isinstance(layer, Conv):
        pool = None
        if layer.pool is not None:
            p = layer.pool
            pool = dict(window=p.window, padding=p.padding, stride=p.stride, mode=p.mode)
        return Conv(
            layer.w.astype(dtype),
            None if layer.b is None else layer.b.astype(dtype),
            padding=layer.padding,
            dilation=layer.dilation,
            mode=layer.mode,
            pool=pool,
        )
    return layer


def test_every_generated_keras_name_is_unique_for_every_pool_combination():
    rng = np.random.default_rng(3)
    for mode in (0, 1):
        for p in (0, 1, 2):
            layers = [
                Conv(
                    _w(rng, 3, 3, 1, 2).astype(F32),
                    padding=1,
                    pool=dict(window=2, padding=p, mode=mode),
                ),
                Pool(window=2, padding=p, mode=mode, alpha=2.0),
                Conv(
                    _w(rng, 1, 1, 2, 2).astype(F32),
                    padding=1,
                    pool=dict(window=2, padding=p, mode=mode, alpha=0.5),
                ),
            ]
            km = to_keras(KnetModel(layers, input_size=(8, 8, 1)))
            names = [lay.name for lay in km.layers]
            assert len(names) == len(set(names)), names


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(
    k=st.integers(1, 3),
    d=st.integers(1, 2),
    p=st.integers(0, 5),
    x=st.integers(1, 6),
    win=st.integers(1, 3),
    pp=st.integers(0, 4),
    mode=st.sampled_from([0, 1]),
)
def test_random_geometries_are_accepted_when_knet_computes_them(k, d, p, x, win, pp, mode):
    """1-D conv + pool over random keywords: whenever Knet's CPU rule holds (Xi + 2p >= extent;
    pool: >= window) the model converts and agrees with the PyTorch float64 reference; otherwise
    it is one PortingError."""
    extent = (k - 1) * d + 1
    rng = np.random.default_rng(k * 1000 + d * 100 + p * 10 + x)
    w = rng.standard_normal((k, 2, 2))
    xs = rng.standard_normal((x, 2, 2))
    conv_ok = x + 2 * p >= extent
    y_len = 1 + (x + 2 * p - extent) if conv_ok else 0
    pool_ok = conv_ok and y_len + 2 * pp >= win
    layers = [
        Conv(w, padding=p, dilation=d, pool=dict(window=win, padding=pp, stride=1, mode=mode))
    ]
    if not pool_ok:
        with pytest.raises(PortingError):
            KnetModel(layers, input_size=(x, 2))
        return
    model = KnetModel(layers, input_size=(x, 2))
    expected = torch_pool(torch_conv4(w, xs, None, p, dilation=d), win, pp, 1, mode=mode)
    xd = np.asfortranarray(xs)
    np.testing.assert_allclose(
        forward_knet(model, xd, backend="reference").final, expected, rtol=1e-12, atol=1e-12
    )
    y = np.asarray(to_keras(model)(layout.activations_to_tf(xd)))
    np.testing.assert_allclose(y, julia_to_tf(expected, None, "reverse"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_asymmetric_zeropad_as_layers21_defines_it(spatial, tmp_path):
    """Layers21 ZeroPad(((lo1, hi1), (lo2, hi2))) pads Julia dims 1 and 2; PyTorch's F.pad
    takes the last dimension first."""
    from porting.model import ZeroPad, load_export, save_export

    rng = np.random.default_rng(6)
    w = rng.standard_normal((3, 2, 2, 3))
    x = rng.standard_normal((5, 4, 2, 2))
    t = _t(x)  # (N, C, X1, X2)
    padded = F.pad(t, (0, 3, 1, 2))  # X2: (0, 3), X1: (1, 2)
    expected = torch_conv4(w, _back(padded), None, 0)
    model = KnetModel(
        [ZeroPad(((1, 2), (0, 3)), name="zp"), Conv(w.astype(F32), name="c")],
        input_size=(5, 4, 2),
    )
    assert model.output_sizes[0] == (8, 7, 2)
    xd = np.asfortranarray(x.astype(F32))
    np.testing.assert_allclose(forward_knet(model, xd).final, expected, rtol=1e-5, atol=1e-5)
    km = to_keras(model, spatial=spatial)
    np.testing.assert_allclose(
        np.asarray(km(layout.activations_to_tf(xd, spatial))),
        julia_to_tf(expected, None, spatial),
        rtol=1e-5,
        atol=1e-5,
    )
    for mode in ("each", "whole"):
        assert verify_model(model, xd, keras_model=km, mode=mode, spatial=spatial).ok
    save_export(model, tmp_path / "zp")
    assert load_export(tmp_path / "zp")["zp"].padding == ((1, 2), (0, 3))
    with pytest.raises(PortingError, match="padding="):
        ZeroPad(((1, 2, 3), (0, 1)))


@pytest.mark.parametrize(
    "cin,cout,groups,mode",
    [(4, 4, 4, 1), (4, 6, 2, 0), (3, 6, 3, 1)],
    ids=["depthwise", "groups-2", "depthwise-multiplier-2"],
)
def test_grouped_and_depthwise_conv_as_ops21_defines_it(cin, cout, groups, mode, tmp_path):
    """Ops21's groups: input and output channels in `groups` contiguous blocks, w of size
    (W..., Cin/groups, Cout) (depthwise: groups = Cin). PyTorch's conv2d(groups=...) from the
    same definition."""
    from porting.model import load_export, save_export

    rng = np.random.default_rng(cin * 10 + groups)
    w = rng.standard_normal((3, 3, cin // groups, cout))
    b = rng.standard_normal(cout)
    x = rng.standard_normal((7, 6, cin, 2))
    wt = w.transpose(3, 2, 0, 1)
    if mode == 0:
        wt = wt[:, :, ::-1, ::-1]
    y = F.conv2d(_t(x), torch.from_numpy(wt.copy()), torch.from_numpy(b), padding=1, groups=groups)
    expected = _back(y)
    model = KnetModel(
        [Conv(w.astype(F32), b.astype(F32), padding=1, groups=groups, mode=mode, name="dw")],
        input_size=(7, 6, cin),
    )
    xd = np.asfortranarray(x.astype(F32))
    np.testing.assert_allclose(forward_knet(model, xd).final, expected, rtol=1e-5, atol=1e-5)
    km = to_keras(model)
    np.testing.assert_allclose(
        np.asarray(km(layout.activations_to_tf(xd))),
        julia_to_tf(expected, None, "reverse"),
        rtol=1e-5,
        atol=1e-5,
    )
    for m in ("each", "whole"):
        assert verify_model(model, xd, keras_model=km, mode=m).ok
    save_export(model, tmp_path / "g")
    assert load_export(tmp_path / "g")["dw"].groups == groups
    with pytest.raises(PortingError, match="groups=5"):
        Conv(w.astype(F32), groups=5)


def test_pool_mode_2_is_noted_once():
    # two mode-2 pools with padding (noted once, not per layer) and one without (mode 1's mean)
    rng = np.random.default_rng(0)
    model = KnetModel(
        [
            Pool(window=3, padding=1, stride=1, mode=2),
            Pool(window=3, padding=1, stride=1, mode=2),
            Pool(window=2, mode=2),
        ],
        input_size=(6, 5, 2),
    )
    x = np.asfortranarray(rng.standard_normal((6, 5, 2, 2)).astype(F32))
    report = verify_model(model, x)
    assert report.ok
    assert [n for n in report.notes if "mode=2" in n] == [
        "pool mode=2 averages the real cells only (cuDNN's exclude-padding mean, Knet's GPU "
        "path); Knet 1.4.10's CPU pool runs mode 2 as mode 1 (padding counted), so porting "
        "computes it as pool(x; mode=1) ./ pool(ones; mode=1), as PortingKnet.import_model does"
    ]
