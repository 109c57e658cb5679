"""Hand-written Keras -> Knet ports with the usual mistakes: verified against the original
Keras model (a model written by hand, not converted by porting), each mistake is caught at its
layer and named by the diagnosis."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from porting import layout  # noqa: E402
from porting.model import BatchNorm, Conv, KnetModel, ZeroPad, verify_model  # noqa: E402

L = keras.layers


def _keras(stride):
    rng = np.random.default_rng(0)
    inp = keras.Input((12, 10, 3))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)  # Keras' default epsilon: 1e-3
    out = L.Conv2D(4, 3, strides=stride, padding="same", name="c2")(x)
    km = keras.Model(inp, out)
    weights = []
    for w, v in zip(km.get_weights(), km.weights, strict=True):
        if "variance" in v.path:  # small variances: the epsilon matters
            weights.append((0.001 + 0.01 * rng.random(w.shape)).astype(w.dtype))
        elif "kernel" in v.path:
            weights.append(w)
        else:
            weights.append((0.1 * rng.standard_normal(w.shape)).astype(w.dtype))
    km.set_weights(weights)
    return km


def _port(km, *, rotate=True, eps=1e-3, stride=1, symmetric_same=False):
    k1, b1, g, beta, mean, var, k2, b2 = km.get_weights()
    kernel = (
        (lambda k: layout.kernel_from_tf(k, mode=0))
        if rotate
        else (
            lambda k: layout.kernel_from_tf(k, mode=1)  # Keras' kernel taken as it is
        )
    )
    layers = [
        Conv(kernel(k1), layout.bias_from_tf(b1), padding=1, name="c1"),
        BatchNorm(mean, var, np.concatenate([g, beta]), eps=eps, name="bn"),
    ]
    if stride == 2 and not symmetric_same:  # TensorFlow pads (0, 1) here: 10 and 12, stride 2
        layers.append(ZeroPad(((0, 1), (0, 1)), name="c2_pad"))
        layers.append(Conv(kernel(k2), layout.bias_from_tf(b2), stride=2, name="c2"))
    else:  # the hand port's (k - 1) ÷ 2 on both sides
        layers.append(
            Conv(kernel(k2), layout.bias_from_tf(b2), padding=1, stride=stride, name="c2")
        )
    return KnetModel(layers, input_size=(10, 12, 3))


X = np.random.default_rng(1).standard_normal((10, 12, 3, 2)).astype(np.float32)


def test_a_correct_hand_port_verifies_against_the_original():
    # (stride 1: every "same" is symmetric, so each Knet layer has its Keras layer; an explicit
    # ZeroPad before a conv has no Keras layer of its own to be compared with)
    km = _keras(1)
    report = verify_model(_port(km), X, keras_model=km)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    "mistake, stride, layer, cause",
    [
        (dict(rotate=False), 1, "c1", "kernel_flip"),  # conv4's mode 0 needs the rotation
        (dict(eps=1e-5), 1, "bn", "bn_epsilon"),  # Knet's default kept, Keras' 1e-3 forgotten
        (dict(symmetric_same=True), 2, "c2", "padding_shift"),  # "same" taken as symmetric
    ],
)
def test_the_usual_mistakes_are_caught_and_named(mistake, stride, layer, cause):
    km = _keras(stride)
    report = verify_model(_port(km, stride=stride, **mistake), X, keras_model=km)
    assert not report.ok
    assert report.first_divergent == layer
    assert report.diagnosis is not None and report.diagnosis.cause == cause
