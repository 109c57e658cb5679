"""porting.testing.strategies: Knet geometries and Julia-indexed arrays for property tests.

The geometries are checked against Knet's size rule and computed by PyTorch float64 (written
here from Knet's definitions), and ports checked with them through assert_layer_ported.
"""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the strategies are hypothesis strategies")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from porting import knet  # noqa: E402
from porting.testing.strategies import (  # noqa: E402
    conv_geometries,
    conv_inputs,
    julia_arrays,
    pool_geometries,
    pool_inputs,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _per_dim(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


@FAST
@given(conv_geometries(nd=2))
def test_conv_geometries_are_ones_knet_computes(case):
    nd = 2
    kw = case.keywords
    pad, stride, dil = (_per_dim(kw[k], nd) for k in ("padding", "stride", "dilation"))
    assert kw["mode"] in (0, 1) and case.w_size[-2] == case.x_size[-2]
    for i in range(nd):
        extent = (case.w_size[i] - 1) * dil[i] + 1
        assert case.x_size[i] + 2 * pad[i] >= extent and pad[i] <= extent - 1
    assert stride and all(s >= 1 for s in stride)


@FAST
@given(conv_inputs(nd=2))
def test_conv_inputs_agree_with_an_independent_conv(case):
    torch = pytest.importorskip("torch", reason="independent float64 convolution")
    w, x, kw = case
    assert w.dtype == x.dtype and w.dtype in (np.float32, np.float64)
    y = np.asarray(knet.conv4(w, x, backend="reference", **kw))
    wt = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)), dtype=np.float64))
    if kw["mode"] == 0:
        wt = torch.flip(wt, dims=(2, 3))
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)), dtype=np.float64))
    want = torch.nn.functional.conv2d(
        xt,
        wt,
        padding=_per_dim(kw["padding"], 2),
        stride=_per_dim(kw["stride"], 2),
        dilation=_per_dim(kw["dilation"], 2),
    ).numpy()
    want = want.transpose(2, 3, 1, 0)
    assert y.shape == want.shape
    s = np.asarray(knet.conv4(np.abs(w), np.abs(x), backend="reference", **kw), np.float64)
    k = int(np.prod(w.shape[:-1]))
    fi = np.finfo(w.dtype)  # the bound of porting.tolerance, with its underflow floor
    err = np.abs(y - want)
    assert np.all(err <= (np.sqrt(k) + 2) * (fi.eps * s + fi.tiny)), err.max()


@FAST
@given(pool_inputs(nd=2))
def test_pool_inputs_are_pools_knet_computes(case):
    x, kw = case
    y = np.asarray(knet.pool(x, backend="reference", **kw))
    win, pad, stride = (_per_dim(kw[k], 2) for k in ("window", "padding", "stride"))
    for i in range(2):
        assert y.shape[i] == 1 + (x.shape[i] + 2 * pad[i] - win[i]) // stride[i]
    assert pad[0] < win[0] and kw["mode"] in (0, 1)


@FAST
@given(pool_geometries(nd=1, beyond_extent=True))
def test_beyond_extent_draws_cpu_only_paddings_but_stays_computable(case):
    x_size, kw = case.x_size, case.keywords
    win, pad = _per_dim(kw["window"], 1), _per_dim(kw["padding"], 1)
    assert x_size[0] + 2 * pad[0] >= win[0] and pad[0] <= win[0] + 1


@settings(max_examples=40, deadline=None)
@given(julia_arrays((3, 2, 4)))
def test_julia_arrays_both_orders_and_dtypes(a):
    assert a.shape == (3, 2, 4) and a.dtype in (np.float32, np.float64)
    assert a.flags.f_contiguous or a.flags.c_contiguous
    assert np.all(np.isfinite(a)) and np.all(np.abs(a) <= 10)


def test_julia_arrays_cover_both_orders_and_dtypes():
    from hypothesis import find

    find(julia_arrays((2, 3)), lambda a: a.dtype == np.float32 and a.flags.f_contiguous)
    find(julia_arrays((2, 3)), lambda a: a.dtype == np.float64 and not a.flags.f_contiguous)


def test_a_port_property_tested_with_assert_layer_ported():
    """The documented use: a user's conv port, property-tested (the correct port passes every
    drawn geometry; one that ignores the mode fails some)."""
    pytest.importorskip("keras")
    from hypothesis import find

    from porting import tf as ptf
    from porting.testing import assert_layer_ported

    def my_port(w, kw, ignore_mode=False):
        from porting import layout

        k = layout.kernel_to_tf(w, mode=1 if ignore_mode else kw["mode"])
        # per-axis values in TensorFlow's axis order (Julia's reversed, spatial="reverse")
        tf_kw = {
            key: layout.spatial_to_tf(_per_dim(kw[key], 2))
            for key in ("padding", "stride", "dilation")
        }
        return lambda x_tf: ptf.conv(x_tf, k, **tf_kw)

    @settings(max_examples=15, deadline=None)
    @given(conv_inputs(nd=2, dtype=np.float64))
    def check(case):
        w, x, kw = case
        assert_layer_ported(my_port(w, kw), x, w=w, knet="reference", **kw)

    check()

    def broken_fails(case):
        w, x, kw = case
        try:
            assert_layer_ported(my_port(w, kw, ignore_mode=True), x, w=w, knet="reference", **kw)
        except AssertionError:
            return True
        return False

    find(conv_inputs(nd=2, dtype=np.float64), broken_fails, settings=settings(deadline=None))


def test_without_hypothesis_the_import_says_what_to_install():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import porting.testing.strategies\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
        "import porting.testing\n"  # the rest of porting.testing does not need it
        "print('testing ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "MissingDependencyError" in out.stdout and "pip install hypothesis" in out.stdout
    assert "testing ok" in out.stdout


@settings(max_examples=60, deadline=None)
@given(julia_arrays((4, 3), dtype=np.float64, bound=1e-300))
def test_arrays_hold_no_subnormal_values(a):
    # TensorFlow's CPU kernels read subnormals as zero (docs/tensorflow.md#subnormal-inputs):
    # a property test drawing them would test that flush, not the port
    tiny = np.finfo(a.dtype).tiny
    assert not ((a != 0) & (np.abs(a) < tiny)).any()
