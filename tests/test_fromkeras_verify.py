"""Verification against the original Keras model, where one Keras layer became several Knet
layers (porting.model.fused): a Conv2D with TensorFlow's asymmetric "same" padding is
`<name>_pad` + `<name>`, a GlobalAveragePooling2D `<name>_pool` + `<name>`. Each Keras layer is
compared at the last Knet layer of its group, the rows are the Keras layer names, and a wrong
split is caught at that layer and named."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from porting import layout  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.fromkeras import from_keras  # noqa: E402
from porting.model import Activation, Add, Conv, KnetModel, verify_model  # noqa: E402
from porting.model.fused import keras_same_pads, same_split  # noqa: E402
from tests.test_fromkeras import randomise  # noqa: E402 - the same weight drawing

L = keras.layers


def _resnet_like(dtype="float32"):
    """ResNet50's stem (explicit ZeroPadding2D + 7x7/2 conv "valid", BN 1.001e-5, max pool
    after an explicit padding) and a bottleneck whose 3x3/2 conv is "same" on an even size
    (TensorFlow pads (0, 1): two Knet layers), with a projection shortcut; global average."""
    keras.config.set_dtype_policy(dtype)
    try:
        inp = keras.Input((24, 22, 3), dtype=dtype)
        x = L.ZeroPadding2D(3, name="conv1_pad")(inp)
        x = L.Conv2D(8, 7, strides=2, name="conv1_conv")(x)
        x = L.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
        x = L.Activation("relu", name="conv1_relu")(x)
        x = L.ZeroPadding2D(1, name="pool1_pad")(x)
        x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
        s = L.Conv2D(12, 1, strides=2, name="b_0_conv")(x)
        y = L.Conv2D(6, 1, name="b_1_conv")(x)
        y = L.BatchNormalization(epsilon=1.001e-5, name="b_1_bn")(y)
        y = L.Activation("relu", name="b_1_relu")(y)
        y = L.Conv2D(6, 3, strides=2, padding="same", name="b_2_conv")(y)
        y = L.Activation("relu", name="b_2_relu")(y)
        y = L.Conv2D(12, 1, name="b_3_conv")(y)
        x = L.Add(name="b_add")([s, y])
        x = L.Activation("relu", name="b_out")(x)
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        out = L.Dense(5, activation="softmax", name="predictions")(x)
        return randomise(keras.Model(inp, out, name="resnet_like"), draw_kernels=True)
    finally:
        keras.config.set_dtype_policy("float32")


def _mobilenet_like(dtype="float32"):
    """MobileNetV2's first conv (3x3/2 "same" on an even size: padded (0, 1)), ReLU(6), an
    inverted residual with a depthwise conv, a stride-2 depthwise "same" (two Knet layers
    again), global average and a softmax Dense."""
    keras.config.set_dtype_policy(dtype)
    try:
        inp = keras.Input((16, 14, 3), dtype=dtype)
        x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inp)
        x = L.BatchNormalization(epsilon=1e-3, momentum=0.999, name="bn_Conv1")(x)
        x = L.ReLU(6.0, name="Conv1_relu")(x)
        y = L.Conv2D(16, 1, name="expand")(x)
        y = L.ReLU(6.0, name="expand_relu")(y)
        y = L.DepthwiseConv2D(3, padding="same", name="depthwise")(y)
        y = L.Conv2D(8, 1, name="project")(y)
        x = L.Add(name="add")([x, y])
        x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw2")(x)
        x = L.ReLU(6.0, name="out_relu")(x)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        out = L.Dense(4, activation="softmax", name="predictions")(x)
        return randomise(keras.Model(inp, out, name="mobilenet_like"), draw_kernels=True)
    finally:
        keras.config.set_dtype_policy("float32")


MODELS = {"resnet": _resnet_like, "mobilenet": _mobilenet_like}
# the Keras layers from_keras makes two Knet layers, and the Knet layer added before each
FUSED = {
    "resnet": {"b_2_conv": "b_2_conv_pad", "avg_pool": "avg_pool_pool"},
    "mobilenet": {"Conv1": "Conv1_pad", "dw2": "dw2_pad", "gap": "gap_pool"},
}


def _x(km, n=2, seed=1):
    shape = tuple(km.inputs[0].shape[1:])
    x_tf = np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(km.inputs[0].dtype)
    return layout.activations_from_tf(x_tf)


def _keras_names(km):
    return [lay.name for lay in km.layers if not isinstance(lay, L.InputLayer)]


def _with(model, name, **changes):
    return model.replace(
        layers=[
            dataclasses.replace(lay, **changes) if lay.name == name else lay for lay in model.layers
        ]
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["each", "whole"])
@pytest.mark.parametrize("name", list(MODELS))
def test_each_keras_layer_verifies_at_its_last_knet_layer(name, mode, dtype):
    km = MODELS[name](dtype)
    model = from_keras(km)
    knet_names = [lay.name for lay in model.layers]
    for keras_name, inner in FUSED[name].items():  # the groups this test is about exist
        assert knet_names.index(inner) + 1 == knet_names.index(keras_name)
    report = verify_model(model, _x(km), keras_model=km, mode=mode)
    assert report.ok, str(report)
    # one row per Keras layer, named as in Keras (in an order where each comes after what it
    # reads); the inner Knet layers have none, and the notes say where their Keras layer is
    assert sorted(r.name for r in report.rows) == sorted(_keras_names(km))
    assert len(report.rows) == len(model.layers) - len(FUSED[name])
    for keras_name, inner in FUSED[name].items():
        assert any(
            n.startswith(f"Keras layer {keras_name} is the Knet layers {inner}, ")
            for n in report.notes
        )


def test_the_row_of_a_fused_layer_is_that_keras_layer_against_the_knet_output():
    """The row compares what we did not compute: Keras's own output of the layer (a sub-model
    of the original, run here) against Knet's output of the group's last layer."""
    from porting.model import forward_knet

    km = _mobilenet_like("float64")
    model = from_keras(km)
    x = _x(km)
    report = verify_model(model, x, keras_model=km, mode="whole")
    row = next(r for r in report.rows if r.name == "Conv1")
    sub = keras.Model(km.inputs[0], km.get_layer("Conv1").output)
    want = np.asarray(sub(layout.activations_to_tf(x)))
    knet = forward_knet(model, x)[[lay.name for lay in model.layers].index("Conv1")]
    err = np.max(np.abs(layout.activations_to_tf(knet) - want))
    assert row.max_abs_error == pytest.approx(err, rel=1e-6, abs=1e-300)
    assert err < 1e-12  # float64: the same 27-term sums, rounded in another order at most


@pytest.mark.parametrize("mode", ["each", "whole"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "layer"), [("resnet", "b_2_conv"), ("mobilenet", "Conv1")])
def test_a_shifted_padding_split_is_caught_at_its_keras_layer_and_named(name, layer, dtype, mode):
    """The hand-port mistake: "same"'s odd zero put before instead of after (TensorFlow puts
    it after, docs/tensorflow.md#same-padding). The Knet model then matches the Keras model
    rebuilt from it; only the original tells."""
    km = MODELS[name](dtype)
    model = from_keras(km)
    pad = model.layers[[lay.name for lay in model.layers].index(f"{layer}_pad")]
    assert pad.padding == ((0, 1), (0, 1))  # even sizes, stride 2, 3x3: TensorFlow's split
    broken = _with(model, f"{layer}_pad", padding=((1, 0), (1, 0)))
    x = _x(km)
    assert verify_model(broken, x).ok  # against its own rebuilt Keras model: nothing seen
    report = verify_model(broken, x, keras_model=km, mode=mode)
    assert not report.ok
    assert report.first_divergent == layer
    bad = [r.name for r in report.rows if not r.ok]
    assert bad[0] == layer and all(
        r.ok for r in report.rows[: [r.name for r in report.rows].index(layer)]
    )
    assert report.diagnosis is not None and report.diagnosis.cause == "padding_shift"
    assert "pads ((1, 0), (1, 0))" in report.diagnosis.evidence
    assert "((0, 1), (0, 1))" in report.diagnosis.evidence


def test_a_kernel_left_unrotated_in_a_padded_conv_is_named_kernel_flip():
    km = _mobilenet_like()
    model = from_keras(km)
    w = model.layers[[lay.name for lay in model.layers].index("Conv1")].w
    broken = _with(model, "Conv1", w=np.ascontiguousarray(w[::-1, ::-1]))
    report = verify_model(broken, _x(km), keras_model=km)
    assert report.first_divergent == "Conv1"
    assert report.diagnosis is not None and report.diagnosis.cause == "kernel_flip"


def test_a_wrong_weight_inside_the_group_is_caught_at_the_keras_layer():
    """An error in the first Knet layer of a group (here the pool before global average's
    mat, made a max pool) shows at the Keras layer, which is the only row."""
    km = _resnet_like()
    model = from_keras(km)
    broken = _with(model, "avg_pool_pool", mode=0)
    report = verify_model(broken, _x(km), keras_model=km)
    assert report.first_divergent == "avg_pool"
    assert "avg_pool_pool" not in [r.name for r in report.rows]


def test_a_knet_layer_without_keras_layer_that_branches_is_refused():
    inp = keras.Input((6, 6, 2))
    r = L.Activation("relu", name="r")(inp)
    c = L.Conv2D(2, 1, name="c")(r)
    km = keras.Model(inp, L.Add(name="s")([r, c]))
    w = np.ones((1, 1, 2, 2), np.float32)
    # "extra" has no Keras layer, and two Knet layers read it: not part of one Keras layer
    model = KnetModel(
        [Activation("relu", name="extra"), Conv(w, name="c"), Add(("extra", "c"), name="s")],
        input_size=(6, 6, 2),
    )
    with pytest.raises(PortingError, match="'extra'.*not one of several Knet layers"):
        verify_model(model, keras_model=km)
    lone = KnetModel([Activation("relu", name="r"), Conv(w, name="c")], input_size=(6, 6, 2))
    lone = lone.replace(layers=[*lone.layers[:1], Conv(w, name="d")])
    with pytest.raises(PortingError, match="no layer named 'd'"):
        verify_model(lone, keras_model=km)


@pytest.mark.parametrize(
    ("size", "window", "stride", "dilation", "expected"),
    [
        # out = ceil(n / s); total = (out - 1) s + (k - 1) d + 1 - n, the odd one after
        (8, 3, 2, 1, (0, 1)),  # out 4: 6 + 3 - 8 = 1
        (9, 3, 2, 1, (1, 1)),  # out 5: 8 + 3 - 9 = 2
        (224, 7, 2, 1, (2, 3)),  # out 112: 222 + 7 - 224 = 5
        (10, 3, 1, 2, (2, 2)),  # out 10: 9 + 5 - 10 = 4
        (5, 1, 2, 1, (0, 0)),  # out 3: 4 + 1 - 5 = 0
    ],
)
def test_same_split_by_hand(size, window, stride, dilation, expected):
    assert same_split(size, window, stride, dilation) == expected


def test_keras_same_pads_are_in_julia_order():
    inp = keras.Input((8, 9, 2))
    conv = L.Conv2D(2, (3, 1), strides=2, padding="same", name="c")
    conv(inp)
    # TensorFlow (H, W) = (8, 9): H pads (0, 1), W pads (0, 0); Julia's X1 is W ("reverse")
    assert keras_same_pads(conv, "reverse") == ((0, 0), (0, 1))
    assert keras_same_pads(conv, "keep") == ((0, 1), (0, 0))
    valid = L.Conv2D(2, 3, name="v")
    valid(inp)
    assert keras_same_pads(valid, "reverse") is None


@pytest.mark.parametrize("app", ["ResNet50", "MobileNetV2"])
def test_keras_applications_verify_against_the_original(app):
    """keras.applications built with weights=None (no download here), weights and batchnorm
    statistics drawn: every Keras layer is a row, compared with the original's own output."""
    km = randomise(
        getattr(keras.applications, app)(weights=None, input_shape=(64, 64, 3), classes=5),
        draw_kernels=True,
    )
    model = from_keras(km)
    report = verify_model(model, _x(km), keras_model=km)
    assert report.ok, str(report)
    assert sorted(r.name for r in report.rows) == sorted(_keras_names(km))
    fused = len(model.layers) - len(report.rows)
    assert fused >= 1 and sum("is the Knet layers" in n for n in report.notes) == fused
