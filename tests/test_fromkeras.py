"""Keras -> Knet (porting.fromkeras): each model is built in Keras, converted, and checked
against what Keras itself computes (the original model's outputs are the expected values),
layer by layer through `verify_model` and end to end against the original."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from porting import layout  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.fromkeras import from_keras  # noqa: E402
from porting.fromkeras.layers import same_padding  # noqa: E402
from porting.model import forward_knet, load_export, save_export, to_keras, verify_model  # noqa: E402

L = keras.layers


def randomise(model, seed=0, *, draw_kernels=False):
    """Keras' random kernels kept (scaled to their fan-in, so deep models stay finite; with
    `draw_kernels`, drawn from `seed` too, normal over the square root of the fan-in), and
    every bias, scale, offset and batchnorm statistic drawn too: zeros and ones hide errors.
    Shared with tests/test_fromkeras_verify.py."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w, v in zip(layer.get_weights(), layer.weights, strict=True):
            path = v.path.rsplit("/", 1)[-1]
            if "kernel" in path and draw_kernels:
                fan_in = int(np.prod(w.shape[:-1])) or 1
                a = rng.standard_normal(w.shape) / np.sqrt(fan_in)
            elif "kernel" in path:
                a = w
            elif "variance" in path:
                a = 0.5 + rng.random(w.shape)
            elif path == "gamma":
                a = 0.75 + 0.5 * rng.random(w.shape)
            else:  # bias, beta, moving_mean
                a = 0.1 * rng.standard_normal(w.shape)
            new.append(np.asarray(a, dtype=w.dtype))
        layer.set_weights(new)
        if isinstance(layer, L.Normalization):  # its call reads copies that set_weights leaves
            layer.finalize_state()
    return model


def _cnn(dtype="float32"):
    keras.config.set_dtype_policy(dtype)
    try:
        inp = keras.Input((12, 10, 3), dtype=dtype)
        x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
        x = L.BatchNormalization(epsilon=1.001e-5, name="bn1")(x)
        x = L.Conv2D(6, (3, 2), padding="same", dilation_rate=(1, 2), name="c2")(x)
        x = L.ReLU(max_value=6.0, name="relu6")(x)
        x = L.MaxPooling2D(2, name="p1")(x)
        x = L.Flatten(name="flat")(x)
        x = L.Dropout(0.3, name="drop")(x)
        x = L.Dense(7, activation="tanh", name="d1")(x)
        out = L.Dense(4, activation="softmax", name="d2")(x)
        return randomise(keras.Model(inp, out, name="cnn"))
    finally:
        keras.config.set_dtype_policy("float32")


def _residual():
    inp = keras.Input((9, 9, 4))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    a = L.Activation("relu", name="a_relu")(a)
    b = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inp)
    b = L.Conv2D(4, 1, name="b")(b)
    s = L.Add(name="sum")([a, b])
    c = L.Concatenate(name="cat")([s, a])
    c = L.ZeroPadding2D(((1, 0), (2, 1)), name="zp")(c)
    c = L.AveragePooling2D(2, name="avg")(c)
    out = L.GlobalAveragePooling2D(name="gap")(c)
    return randomise(keras.Model(inp, out, name="res"))


def _conv1d():
    inp = keras.Input((16, 3))
    x = L.Conv1D(5, 3, padding="causal", dilation_rate=2, name="causal")(inp)
    x = L.LeakyReLU(0.1, name="leaky")(x)
    x = L.Conv1D(4, 4, strides=3, padding="same", name="same1d")(x)
    out = L.GlobalMaxPooling1D(name="gmax")(x)
    return randomise(keras.Model(inp, out, name="seq1d"))


def _excite(dtype="float32"):
    """Preprocessing (Rescaling, Normalization), a squeeze-and-excite gate (Reshape, Multiply),
    swish, and InceptionV3's stride-1 "same" average (mode 2)."""
    keras.config.set_dtype_policy(dtype)
    try:
        inp = keras.Input((9, 8, 3), dtype=dtype)
        x = L.Rescaling(1 / 255, name="scale")(inp)
        x = L.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.05, 0.06, 0.07], name="norm")(x)
        x = L.Conv2D(6, 3, padding="same", activation="swish", name="c")(x)
        se = L.GlobalAveragePooling2D(name="squeeze")(x)
        se = L.Reshape((1, 1, 6), name="se_reshape")(se)
        se = L.Conv2D(2, 1, activation="silu", name="reduce")(se)
        se = L.Conv2D(6, 1, activation="sigmoid", name="expand")(se)
        x = L.Multiply(name="excite")([x, se])
        x = L.AveragePooling2D(3, strides=1, padding="same", name="avg")(x)
        out = L.GlobalMaxPooling2D(name="gmax")(x)
        return randomise(keras.Model(inp, out, name="excite"))
    finally:
        keras.config.set_dtype_policy("float32")


MODELS = {
    "cnn": _cnn,
    "cnn64": lambda: _cnn("float64"),
    "residual": _residual,
    "conv1d": _conv1d,
    "excite": _excite,
    "excite64": lambda: _excite("float64"),
}


def _julia_input(km, n=3, seed=1):
    shape = tuple(km.inputs[0].shape[1:])
    x_tf = np.random.default_rng(seed).standard_normal((n, *shape)).astype(km.inputs[0].dtype)
    return x_tf, layout.activations_from_tf(x_tf) if len(shape) > 1 else x_tf.T.copy()


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_computes_what_keras_computes(name):
    km = MODELS[name]()
    model = from_keras(km)
    x_tf, x = _julia_input(km)
    expected = np.asarray(km(x_tf))
    report = verify_model(model, x)
    assert report.ok, str(report)
    back = np.asarray(to_keras(model)(layout.activations_to_tf(x) if x.ndim > 2 else x.T))
    # The Keras model rebuilt from the Knet one runs the same products as the original, summed
    # in another order at most (a grouped conv for a depthwise one): a few eps of the output's
    # scale, where a wrong padding, flip or flatten order moves outputs by their own size.
    eps = np.finfo(expected.dtype).eps
    np.testing.assert_allclose(back, expected, rtol=0, atol=64 * eps * np.abs(expected).max())
    knet_out = forward_knet(model, x)[-1]
    y = layout.activations_to_tf(knet_out) if knet_out.ndim > 2 else knet_out.T
    assert y.shape == expected.shape


def test_report_rows_are_the_keras_layer_names():
    km = _cnn()
    names = [layer.name for layer in from_keras(km).layers]
    # c1: stride 2 on 12 x 10 pads (0, 1) per axis (asymmetric); c2's (3, 2) kernel with
    # dilation (1, 2) pads (1, 1) and (1, 1): symmetric, so Knet's own padding
    assert names == ["c1_pad", "c1", "bn1", "c2", "relu6", "p1", "flat", "drop", "d1", "d2"]


def test_export_round_trip_is_bit_exact(tmp_path):
    km = _residual()
    model = from_keras(km)
    save_export(model, tmp_path / "res")
    again = load_export(tmp_path / "res")
    x_tf, _ = _julia_input(km)
    np.testing.assert_array_equal(
        np.asarray(to_keras(again)(x_tf)), np.asarray(to_keras(model)(x_tf))
    )


def test_batchnorm_keeps_keras_epsilon_and_momentum():
    km = _cnn()
    bn = next(layer for layer in from_keras(km).layers if layer.kind == "batchnorm")
    assert bn.eps == pytest.approx(1.001e-5)
    assert bn.momentum == pytest.approx(0.01)  # Keras 0.99: 0.99 * running + 0.01 * batch


@pytest.mark.parametrize(
    "size, window, stride, dilation, expected",
    [
        (224, 7, 2, 1, (2, 3)),  # ResNet50's conv1 on 224: TensorFlow pads one more at the end
        (112, 3, 2, 1, (0, 1)),
        (8, 3, 1, 1, (1, 1)),
        (8, 3, 1, 2, (2, 2)),
        (5, 1, 2, 1, (0, 0)),
        (7, 4, 3, 1, (1, 2)),  # out 3: (3-1)*3 + 4 - 7 = 3 cells
    ],
)
def test_same_padding_by_hand(size, window, stride, dilation, expected):
    # total = (ceil(size/stride) - 1) * stride + (window - 1) * dilation + 1 - size
    assert same_padding(size, window, stride, dilation) == expected


def _sequential(*layers, shape=(8, 8, 3)):
    return keras.Sequential([keras.Input(shape), *layers])


@pytest.mark.parametrize(
    "km, match",
    [
        (lambda: _sequential(L.MaxPooling2D(2, padding="same")), None),
        (lambda: _sequential(L.MaxPooling2D(3, strides=2, padding="same")), "more at the end"),
        (lambda: _sequential(L.AveragePooling2D(3, strides=1, padding="same")), None),
        (
            lambda: _sequential(L.AveragePooling2D(3, strides=2, padding="same")),
            r"pads \(\(0, 1\), \(0, 1\)\).*would be counted in the mean",
        ),
        # over the channels only: Julia's last dimension, which Flux's LayerNorm cannot take alone
        (lambda: _sequential(L.LayerNormalization()), "leading dimensions 1:k"),
        (lambda: _sequential(L.Dense(3)), "Flatten first"),
        (lambda: _sequential(L.Conv2D(2, 3, activation="softplus")), "softplus"),
        (lambda: _sequential(L.Flatten(), L.BatchNormalization()), "normalise before the Flatten"),
    ],
)
def test_layers_without_a_knet_counterpart_are_refused(km, match):
    model = km()
    if match is None:
        assert from_keras(model).layers[0].kind == "pool"  # symmetric "same": converts
        return
    with pytest.raises(PortingError, match=match):
        from_keras(model)


def test_shared_layer_and_custom_layer_are_refused():
    shared = L.Dense(4, name="shared")
    inp = keras.Input((4,))
    km = keras.Model(inp, shared(shared(inp)))
    with pytest.raises(PortingError, match="called 2 times"):
        from_keras(km)

    class Mine(keras.layers.Layer):
        def call(self, x):
            return x * 2

    with pytest.raises(PortingError, match="not by Keras"):
        from_keras(_sequential(Mine(name="mine"), shape=(4,)))


def test_not_a_model_and_mixed_precision_are_refused():
    with pytest.raises(PortingError, match="expected a Keras 3 keras.Model"):
        from_keras(object())
    km = _sequential(L.Conv2D(2, 3, dtype="mixed_float16"))
    with pytest.raises(PortingError, match="mixed precision"):
        from_keras(km)


APPLICATIONS = {
    # keras.applications built with weights=None (no download here), randomised weights and
    # batchnorm statistics; small inputs keep the suite fast, the layers are the full models'
    # (EfficientNetB0's and InceptionV3's are their smallest: 32 and 75)
    "ResNet50": (64, 64, 3),
    "MobileNetV2": (64, 64, 3),
    "DenseNet121": (64, 64, 3),
    "VGG16": (48, 48, 3),
    "EfficientNetB0": (32, 32, 3),
    "InceptionV3": (75, 75, 3),
}
# float64: the same layers at the smallest input each model takes, one sample (TensorFlow's
# float64 convolutions have no oneDNN kernels: each costs several times float32's)
APPLICATIONS64 = {
    "ResNet50": (32, 32, 3),
    "MobileNetV2": (32, 32, 3),
    "DenseNet121": (32, 32, 3),
    "VGG16": (32, 32, 3),
    "EfficientNetB0": (32, 32, 3),
    "InceptionV3": (75, 75, 3),
}


def _application(app, shape, dtype):
    """keras.applications' `app` in `dtype` (the dtype policy and floatx: the input too)."""
    keras.config.set_dtype_policy(dtype)
    keras.config.set_floatx(dtype)
    try:
        km = getattr(keras.applications, app)(weights=None, input_shape=shape, classes=5)
    finally:
        keras.config.set_dtype_policy("float32")
        keras.config.set_floatx("float32")
    return randomise(km)


@pytest.mark.parametrize(
    "app, dtype",
    [(a, "float32") for a in APPLICATIONS]
    + [pytest.param(a, "float64", marks=pytest.mark.slow) for a in APPLICATIONS64],
)
def test_keras_applications_go_to_knet_and_back(app, dtype):
    shape = (APPLICATIONS if dtype == "float32" else APPLICATIONS64)[app]
    km = _application(app, shape, dtype)
    model = from_keras(km)
    assert model.dtype == np.dtype(dtype)
    # the report's rows are the Keras layer names, plus the explicit paddings TensorFlow's
    # asymmetric "same" needs (<layer>_pad) and a global pool's pool before its mat (<layer>_pool)
    keras_names = {layer.name for layer in km.layers}
    extra = [layer.name for layer in model.layers if layer.name not in keras_names]
    assert all(n[: -len("_pad")] in keras_names or n[: -len("_pool")] in keras_names for n in extra)
    x_tf, x = _julia_input(km, n=2 if dtype == "float32" else 1)
    report = verify_model(model, x)
    assert report.ok, str(report)
    assert report.rows[0].name == model.layers[0].name
    expected = np.asarray(km(x_tf))
    back = np.asarray(to_keras(model)(x_tf))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(back, expected, rtol=0, atol=64 * eps * np.abs(expected).max())


def test_efficientnet_and_inception_layers_map_as_documented():
    km = _application("EfficientNetB0", (32, 32, 3), "float32")
    eff = from_keras(km)
    kinds = {layer.name: layer.kind for layer in eff.layers}
    pre = [
        layer.name for layer in km.layers if type(layer).__name__ in ("Rescaling", "Normalization")
    ]
    assert len(pre) == 2 and all(kinds[n] == "affine" for n in pre)
    assert kinds["block2a_se_excite"] == "mul" and kinds["block2a_se_reshape"] == "reshape"
    assert eff["stem_activation"].function == "swish"
    inc = from_keras(_application("InceptionV3", (75, 75, 3), "float32"))
    avg = [layer for layer in inc.layers if layer.kind == "pool" and layer.mode == 2]
    # every mixed block's 3x3 stride-1 "same" average: padding 1 on both sides, mean of the
    # real cells (Keras' exclude-padding average)
    assert len(avg) == 9 and all(p.padding == (1, 1) and p.stride == (1, 1) for p in avg)
