"""porting.testing: the bare `assert_ported_close(expected, actual)` passes correct ports and
fails broken ones; `assert_layer_ported` / `assert_model_ported` derive their tolerances and
name the cause.

The Knet side ("expected") is computed here in PyTorch float64, written from Knet's
definitions (conv4 mode=0 is true convolution: a cross-correlation with the kernel rotated
180 degrees; `mat` flattens column-major; `pool` max over 2x2 windows), not by porting. The
ports ("actual") are Keras models built by `porting.model.to_keras`; broken ports are those
models with one known mistake put in.
"""

import numpy as np
import pytest

from porting import PortingError, layout
from porting.model import Conv, Dense, KnetModel, to_keras
from porting.testing import (
    ASSUMED_K,
    assert_layer_ported,
    assert_model_ported,
    assert_ported_close,
)

torch = pytest.importorskip("torch", reason="PyTorch float64 is the independent Knet side")
F = torch.nn.functional


# --------------------------------------------------------------------------- Knet in torch


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def knet_conv4(w, x, padding=0, mode=0):
    """Knet conv4 on Julia arrays w (W1,W2,Cin,Cout), x (X1,X2,Cin,N): (Y1,Y2,Cout,N)."""
    wt = _t(np.transpose(w, (3, 2, 0, 1)))  # (Cout, Cin, W1, W2)
    if mode == 0:
        wt = torch.flip(wt, dims=(2, 3))
    xt = _t(np.transpose(x, (3, 2, 0, 1)))  # (N, Cin, X1, X2)
    y = F.conv2d(xt, wt, padding=padding)
    return y.numpy().transpose(2, 3, 1, 0)


def knet_pool(x):
    """Knet pool(x) (window 2, max) on (X1,X2,C,N)."""
    y = F.max_pool2d(_t(np.transpose(x, (3, 2, 0, 1))), 2)
    return y.numpy().transpose(2, 3, 1, 0)


def knet_forward(model, x):
    """The Knet forward pass of a Conv/Dense model (float64), written from Knet's formulas."""
    acts = {"relu": lambda a: np.maximum(a, 0), "identity": lambda a: a, "tanh": np.tanh}
    y = np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        if isinstance(layer, Conv):
            y = knet_conv4(layer.w, y, padding=layer.geometry.padding, mode=layer.geometry.mode)
            if layer.b is not None:
                y = y + layer.b.reshape(1, 1, -1, 1)
            if layer.pool is not None:
                y = knet_pool(y)
            y = acts[layer.activation](y)
        else:
            m = y if y.ndim == 2 else y.reshape(-1, y.shape[-1], order="F")  # Knet's mat
            y = acts[layer.activation](layer.w.astype(np.float64) @ m + layer.b.reshape(-1, 1))
    return y


def keras_out(km, x, spatial="reverse"):
    return np.asarray(km(layout.activations_to_tf(x, spatial)))


def random_stack(seed, dtype):
    """A random conv/dense stack (1-2 convs, kernels 1-5, 1-16 channels, weights scaled from
    0.01 to 100, relu/tanh/identity, optional pooling) and an input batch."""
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(9, 16)), int(rng.integers(9, 16)), int(rng.integers(1, 6)))
    c, layers = size[2], []
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.choice([1, 3, 5]))
        co = int(rng.integers(2, 17))
        scale = float(rng.choice([0.01, 1.0, 100.0]))
        w = (rng.standard_normal((k, k, c, co)) * scale).astype(dtype)
        b = rng.standard_normal((1, 1, co, 1)).astype(dtype)
        layers.append(
            Conv(
                w,
                b,
                activation=str(rng.choice(["relu", "identity", "tanh"])),
                padding=int(rng.integers(0, 2)) if k > 1 else 0,
                mode=int(rng.integers(0, 2)),
                pool=dict(window=2) if rng.random() < 0.5 else None,
            )
        )
        c = co
    fin = int(np.prod(KnetModel(layers, input_size=size).output_sizes[-1]))
    w = rng.standard_normal((int(rng.integers(3, 40)), fin)).astype(dtype)
    layers.append(Dense(w, rng.standard_normal(w.shape[0]).astype(dtype)))
    model = KnetModel(layers, input_size=size)
    x = rng.uniform(-1, 1, (*size, 3)).astype(dtype)
    return model, x


@pytest.fixture(scope="module")
def lenet():
    from porting.examples.lenet import lenet, lenet_input

    m, x = lenet(), lenet_input()
    return m, x, knet_forward(m, x)


# --------------------------------------------------------------------------- bare call


def test_bare_call_passes_the_correct_lenet_port_in_both_precisions(lenet):
    m, x, expected = lenet
    km = to_keras(m)
    c = assert_ported_close(expected.T, keras_out(km, x))
    assert c.ok and c.max_error_to_tolerance < 0.1
    # the same port in Float64 (weights and input converted), against the same Knet side
    m64 = KnetModel(
        [
            Conv(
                ly.w.astype(np.float64),
                ly.b.astype(np.float64),
                activation=ly.activation,
                pool=dict(window=2),
            )
            if isinstance(ly, Conv)
            else Dense(ly.w.astype(np.float64), ly.b.astype(np.float64), activation=ly.activation)
            for ly in m.layers
        ],
        input_size=m.input_size,
    )
    c64 = assert_ported_close(expected.T, keras_out(to_keras(m64), x.astype(np.float64)))
    assert c64.tolerance.precision == "float64" and c64.ok


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bare_call_has_no_false_alarm_on_random_correct_stacks(dtype):
    """The false-alarm rate on correct ports: zero in 8 random stacks per precision, with the
    worst error well inside the assumed bound."""
    ratios = []
    for seed in range(8):
        model, x = random_stack(seed, dtype)
        expected = knet_forward(model, x).T
        c = assert_ported_close(expected, keras_out(to_keras(model), x))
        ratios.append(c.max_error_to_tolerance)
    assert max(ratios) < 0.5, ratios


def _broken_lenet(m, what):
    km = to_keras(m)
    if what == "kernel_flip":  # Knet's mode=0 kernel used unrotated
        w, b = km.get_layer("conv2").get_weights()
        km.get_layer("conv2").set_weights([w[::-1, ::-1], b])
    elif what == "swapped_hw":  # the kernel's H and W swapped (the other spatial= choice)
        w, b = km.get_layer("conv1").get_weights()
        km.get_layer("conv1").set_weights([np.transpose(w, (1, 0, 2, 3)), b])
    elif what == "flatten_order":  # Knet's (X1, X2, C) feature order kept after Keras Flatten
        w = m.layers[2].w
        _, b = km.get_layer("dense1").get_weights()
        km.get_layer("dense1").set_weights([np.ascontiguousarray(w.T), b])
    return km


@pytest.mark.parametrize("what", ["kernel_flip", "swapped_hw", "flatten_order"])
def test_bare_call_fails_broken_lenet_ports(lenet, what):
    m, x, expected = lenet
    actual = keras_out(_broken_lenet(m, what), x)
    with pytest.raises(AssertionError) as e:
        assert_ported_close(expected.T, actual)
    msg = " ".join(str(e.value).split())  # messages are wrapped to 80 columns
    assert msg.startswith("ported results differ") and "DIFFER" in msg
    assert f"K={ASSUMED_K} assumed" in msg  # the assumption is in every message
    # the other bare entry points, which share the rule, fail it too
    import porting

    assert not porting.compare(expected.T, actual).ok
    assert porting.diagnose(expected.T, actual).cause != "rounding"


def test_bare_call_fails_a_padding_shift():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 3, 2, 4))
    b = rng.standard_normal((1, 1, 4, 1))
    model = KnetModel([Conv(w, b, padding=1, activation="relu")], input_size=(8, 7, 2))
    x = rng.uniform(-1, 1, (8, 7, 2, 2))
    expected = layout.activations_to_tf(knet_forward(model, x))
    km = to_keras(model)
    assert_ported_close(expected, keras_out(km, x))  # the correct port passes
    km.get_layer("conv1__pad").padding = ((0, 2), (1, 1))  # "SAME"-like asymmetric padding
    with pytest.raises(AssertionError, match="DIFFER"):
        assert_ported_close(expected, keras_out(km, x))


def test_assumption_is_stated_and_k_and_magnitude_give_the_exact_bound():
    e = np.float64([1.0, -2.0, 4.0])
    a = e.astype(np.float32)
    c = assert_ported_close(e, a)
    text = str(c)
    assert f"K={ASSUMED_K} assumed" in text and "sqrt(K)*max|expected|" in text
    # tolerance = (sqrt(K)+2) * eps * sqrt(K) * max|expected| (+ the underflow floor)
    eps = float(np.finfo(np.float32).eps)
    want = (np.sqrt(ASSUMED_K) + 2) * eps * np.sqrt(ASSUMED_K) * 4.0
    assert c.worst_tolerance == pytest.approx(want, rel=1e-6)
    # an error of 2 tolerances fails, of half a tolerance passes
    with pytest.raises(AssertionError):
        assert_ported_close(e, (e + [0, 0, 2 * want]).astype(np.float32))
    assert_ported_close(e, (e + [0, 0, 0.5 * want]).astype(np.float32))
    # explicit k and magnitude: the exact formula, no assumption
    s = np.float64([1.0, 2.0, 4.0])
    c2 = assert_ported_close(e, a, k=9, magnitude=s)
    assert "assumed" not in c2.tolerance.formula
    assert c2.worst_tolerance == pytest.approx(
        5 * eps * s[c2.worst_index] + 5 * float(np.finfo(np.float32).tiny), rel=1e-9
    )
    with pytest.raises(AssertionError):  # exact bound: 1e-6 relative is outside 5 eps
        assert_ported_close(e, (e * (1 + 1e-6)).astype(np.float32), k=9, magnitude=s)
    with pytest.raises(PortingError, match="k=0"):
        assert_ported_close(e, a, k=0)
    # a port in the other layout is a failed port, not bad input
    with pytest.raises(AssertionError, match="differ in shape"):
        assert_ported_close(np.zeros((5, 4, 3, 2)), np.zeros((2, 4, 5, 3)))


def test_report_from_verify_conv4_still_accepted():
    from porting.verify import verify_conv4

    rng = np.random.default_rng(0)
    r = verify_conv4(
        rng.standard_normal((3, 3, 2, 2)), rng.standard_normal((6, 5, 2, 1)), knet="reference"
    )
    assert assert_ported_close(r) is r


# --------------------------------------------------------------------------- one layer


def test_assert_layer_ported_conv_dense_pool():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((7, 6, 2, 2)).astype(np.float32)
    conv = keras.Sequential([keras.layers.ZeroPadding2D(1), keras.layers.Conv2D(4, (2, 3))])
    conv.build((None, 6, 7, 2))
    conv.layers[1].set_weights([layout.kernel_to_tf(w, mode=0), b])
    c = assert_layer_ported(conv, x, w=w, b=b, padding=1)
    assert c.ok and c.tolerance.k == 3 * 2 * 2 + 1
    # the same layer built from the unrotated kernel: named kernel_flip
    conv.layers[1].set_weights([layout.kernel_to_tf(w, mode=1), b])
    with pytest.raises(AssertionError) as e:
        assert_layer_ported(conv, x, w=w, b=b, padding=1)
    assert "cause: kernel_flip" in str(e.value)

    # dense after a conv output: Flatten in Keras order needs dense_to_tf's permutation
    wd = rng.standard_normal((5, 7 * 6 * 2)).astype(np.float32)
    bd = rng.standard_normal(5).astype(np.float32)
    dense = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(5)])
    dense.build((None, 6, 7, 2))
    dense.layers[1].set_weights([layout.dense_to_tf(wd, input_shape=(7, 6, 2)), bd])
    assert assert_layer_ported(dense, x, w=wd, b=bd).ok
    dense.layers[1].set_weights([np.ascontiguousarray(wd.T), bd])  # Knet's order kept
    with pytest.raises(AssertionError, match="flatten_order"):
        assert_layer_ported(dense, x, w=wd, b=bd)

    pool = keras.layers.MaxPooling2D(2)
    assert assert_layer_ported(pool, x, window=2).ok
    mean = assert_layer_ported(keras.layers.AveragePooling2D(2), x, window=2, mode=1)
    assert mean.ok and mean.tolerance.k == 4
    with pytest.raises(AssertionError, match="layer not ported"):
        assert_layer_ported(keras.layers.AveragePooling2D(2), x, window=2)
    with pytest.raises(PortingError, match="window: not a Knet keyword of conv4"):
        assert_layer_ported(conv, x, w=w, window=2)


# --------------------------------------------------------------------------- whole model


def test_assert_model_ported_passes_and_names_the_broken_layer(lenet):
    m, x, _ = lenet
    report = assert_model_ported(m, to_keras(m), x)
    assert report.ok and len(report.rows) == 4
    with pytest.raises(AssertionError) as e:
        assert_model_ported(m, _broken_lenet(m, "kernel_flip"), x)
    msg = str(e.value)
    assert "first divergent layer 'conv2'" in msg and "kernel_flip" in msg
    assert all(len(line) <= 80 for line in msg.splitlines()), msg


def test_assert_model_ported_says_when_the_input_was_generated():
    rng = np.random.default_rng(0)
    m = KnetModel([Dense(rng.standard_normal((3, 4)).astype(np.float32))], input_size=(4,))
    report = assert_model_ported(m, to_keras(m))
    assert any("input generated" in n for n in report.notes)


def test_bare_call_on_the_shipped_seed002_arrays():
    """The reporter's arrays: porting's port passes the bare call; the reporter's TensorFlow
    output (printed in the report, the kernel not rotated) fails it."""
    from porting import tf as ptf
    from porting.examples import seed002

    ex = seed002()
    w, x = ex["w"], ex["x"]
    expected = layout.activations_to_tf(knet_conv4(w, x, padding=1), "keep")  # (1, 5, 5, 1)
    ours = ptf.conv(
        layout.activations_to_tf(x, "keep").astype(np.float32),
        layout.kernel_to_tf(w, mode=0, spatial="keep").astype(np.float32),
        padding=1,
    )
    assert assert_ported_close(expected, ours).ok
    theirs = np.float32(ex["tf_printed"]).reshape(1, 5, 5, 1)
    with pytest.raises(AssertionError, match="DIFFER"):
        assert_ported_close(expected, theirs)


def test_quiet_messages_are_short_and_keep_the_cause(lenet, monkeypatch):
    from porting.testing import _record

    m, x, _ = lenet
    broken = _broken_lenet(m, "kernel_flip")
    monkeypatch.setitem(_record._STATE, "verbosity", 0)  # as without -q, whatever runs this test
    with pytest.raises(AssertionError) as full:
        assert_model_ported(m, broken, x)
    monkeypatch.setitem(_record._STATE, "verbosity", -1)  # what the plugin sets under -q
    with pytest.raises(AssertionError) as short:
        assert_model_ported(m, broken, x)
    lines = str(short.value).splitlines()
    assert len(lines) <= 6 < len(str(full.value).splitlines())
    assert "first divergent layer 'conv2'" in lines[0] and "kernel_flip" in str(short.value)
