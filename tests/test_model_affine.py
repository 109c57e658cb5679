"""The `affine` kind (Knet's `x .* s .+ b` per channel) and the Keras preprocessing layers it
comes from, against values we did not compute with porting: PyTorch float64 from the
definition, hand-derived numbers, and Keras' own Rescaling / Normalization outputs (keras 3.15
`rescaling.py`: `x * scale + offset`; `normalization.py`: `(x - mean) / max(sqrt(var),
epsilon())`)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

from porting import PortingError, layout  # noqa: E402
from porting.fromkeras import from_keras  # noqa: E402
from porting.model import (  # noqa: E402
    Affine,
    Dense,
    KnetModel,
    Mat,
    forward_knet,
    load_export,
    save_export,
    to_keras,
    verify_model,
)

F32, F64 = np.float32, np.float64
L = keras.layers


def torch_affine(x, s, b):
    """`x .* s .+ b` with s, b per channel (Julia's second-to-last dimension), float64."""
    t = torch.from_numpy(np.asarray(x, F64))
    shape = [1] * x.ndim
    shape[-2] = np.asarray(s).size
    return (
        t * torch.from_numpy(np.asarray(s, F64)).reshape(shape)
        + torch.from_numpy(np.asarray(b, F64)).reshape(shape)
    ).numpy()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("size", [(5, 4, 3), (6, 3), (7,)])
def test_affine_forward_matches_torch_and_keras(dtype, size):
    rng = np.random.default_rng(0)
    c = size[-1]
    s = rng.uniform(-2, 2, c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    model = KnetModel([Affine(s, b, name="aff")], input_size=size)
    x = np.asfortranarray(rng.standard_normal((*size, 2)).astype(dtype))
    y = forward_knet(model, x)[-1]
    # one product and one sum, each rounded: within one ulp of |x s| + |b| of the exact value
    ref = torch_affine(x, s, b)
    eps = np.finfo(dtype).eps
    bound = eps * (np.abs(torch_affine(np.abs(x), np.abs(s), np.abs(b))))
    assert (np.abs(y - ref) <= bound).all()
    report = verify_model(model, x)
    assert report.ok, str(report)
    x_tf = layout.activations_to_tf(x) if x.ndim > 2 else x.T
    kt = np.asarray(to_keras(model)(x_tf))
    y_tf = layout.activations_to_tf(y) if y.ndim > 2 else y.T
    np.testing.assert_array_equal(kt, y_tf)  # Rescaling rounds the same two operations


def test_affine_by_hand_and_one_value_for_all():
    x = np.asfortranarray(np.arange(8, dtype=F64).reshape(2, 2, 2, 1, order="F"))
    y = forward_knet(KnetModel([Affine(np.array([2.0, -1.0]), np.array([0.5, 3.0]))]), x)[-1]
    # channel 1 holds 0, 1, 2, 3 (column-major), channel 2 holds 4, 5, 6, 7
    assert y[..., 0, 0].ravel(order="F").tolist() == [0.5, 2.5, 4.5, 6.5]
    assert y[..., 1, 0].ravel(order="F").tolist() == [-1.0, -2.0, -3.0, -4.0]
    y1 = forward_knet(KnetModel([Affine(np.array([0.25]), np.array([1.0]))]), x)[-1]
    assert y1.ravel(order="F").tolist() == [1 + v / 4 for v in range(8)]


def test_affine_round_trips_the_export(tmp_path):
    rng = np.random.default_rng(3)
    s, b = rng.standard_normal(4), rng.standard_normal(4)
    model = KnetModel([Affine(s, b, name="pre")], input_size=(3, 3, 4))
    save_export(model, tmp_path / "a")
    again = load_export(tmp_path / "a")["pre"]
    np.testing.assert_array_equal(again.scale, s)
    np.testing.assert_array_equal(again.bias, b)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Affine(np.ones(3), np.ones(2)), "scale has 3 values but bias 2"),
        (lambda: Affine(np.ones(3, F32), np.ones(3)), "one element type"),
        (lambda: Affine(np.array([1.0, np.inf]), np.ones(2)), "non-finite"),
        (lambda: Affine(np.ones((2, 2)), np.ones((2, 2))), "expected 0 or 1 dimensions"),
        (lambda: Affine(np.ones(3, np.int64), np.ones(3, np.int64)), "float32 or float64"),
        (
            lambda: KnetModel([Affine(np.ones(4), np.ones(4))], input_size=(5, 5, 3)),
            "input has 3 channels",
        ),
        (
            lambda: KnetModel(
                [Mat(), Affine(np.ones(12), np.zeros(12)), Dense(np.ones((2, 12)))],
                input_size=(2, 2, 3),
            ),
            "scale before the mat",
        ),
    ],
)
def test_bad_affine_layers_are_refused(make, match):
    with pytest.raises(PortingError, match=match):
        make()


# ----------------------------------------------------------------- Keras' preprocessing layers


def _one_layer(layer, shape, dtype="float32"):
    keras.config.set_dtype_policy(dtype)  # the input layer's too
    try:
        inp = keras.Input(shape, dtype=dtype)
        return keras.Model(inp, layer(inp))
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rescaling_is_x_times_scale_plus_offset(dtype):
    km = _one_layer(L.Rescaling([0.5, 2.0, -1.0], offset=0.25, dtype=dtype), (4, 4, 3), dtype)
    layer = from_keras(km).layers[0]
    assert layer.kind == "affine"
    assert layer.scale.tolist() == [0.5, 2.0, -1.0]  # exact in binary
    assert layer.bias.tolist() == [0.25] * 3
    x_tf = np.random.default_rng(1).standard_normal((2, 4, 4, 3)).astype(dtype)
    y = forward_knet(from_keras(km), layout.activations_from_tf(x_tf))[-1]
    np.testing.assert_array_equal(layout.activations_to_tf(y), np.asarray(km(x_tf)))


def test_rescaling_by_a_python_number_in_float64_scales_by_its_float32_value():
    # Keras 3.15 (TensorFlow backend) casts a Python scale through a float32 tensor: a float64
    # Rescaling(1 / 255) multiplies by float32(1 / 255); porting converts what Keras computes
    km = _one_layer(L.Rescaling(1 / 255, dtype="float64"), (3,), "float64")
    layer = from_keras(km).layers[0]
    assert layer.scale[0] == F64(F32(1 / 255)) != 1 / 255
    y = np.asarray(km(np.ones((1, 3), F64)))
    assert (y == F64(F32(1 / 255))).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("invert", [False, True])
def test_normalization_divides_by_max_of_sqrt_var_and_epsilon(dtype, invert):
    # variances 4, 0.25, and 0 (whose sqrt is below epsilon 1e-7: divided by 1e-7 instead)
    mean, var = [1.0, -2.0, 0.5], [4.0, 0.25, 0.0]
    km = _one_layer(
        L.Normalization(mean=mean, variance=var, invert=invert, dtype=dtype), (2, 2, 3), dtype
    )
    layer = from_keras(km).layers[0]
    d = np.maximum(np.sqrt(np.array(var, dtype)), np.dtype(dtype).type(1e-7))
    if invert:  # mean + x d: exactly
        assert layer.scale.tolist() == d.tolist() and layer.bias.tolist() == mean
    else:  # s = 1 / d, b = -mean / d, by hand: 1/2, 2, 1e7 and -1/2, 4, -5e6
        expected_s = np.array([0.5, 2.0, 1e7], dtype)
        expected_b = np.array([-0.5, 4.0, -5e6], dtype)
        np.testing.assert_array_equal(layer.scale, expected_s)
        np.testing.assert_array_equal(layer.bias, expected_b)
    x_tf = np.random.default_rng(2).standard_normal((3, 2, 2, 3)).astype(dtype) * 1e-8 + 0.5
    y = layout.activations_to_tf(forward_knet(from_keras(km), layout.activations_from_tf(x_tf))[-1])
    want = np.asarray(km(x_tf))
    # (x - m) / d against x * (1/d) + (-m/d): a few roundings of |x| s + |b|
    eps = np.finfo(dtype).eps
    bound = 4 * eps * (np.abs(x_tf) * np.abs(layer.scale) + np.abs(layer.bias))
    assert (np.abs(y - want) <= bound).all()


def test_normalization_with_adapted_statistics_and_stale_ones():
    data = np.random.default_rng(4).standard_normal((20, 3, 3, 2)).astype(F32) * 3 + 1
    norm = L.Normalization()
    norm.adapt(data)
    km = _one_layer(norm, (3, 3, 2))
    layer = from_keras(km).layers[0]
    mean, var = data.mean(axis=(0, 1, 2)), data.var(axis=(0, 1, 2))
    np.testing.assert_allclose(layer.scale, 1 / np.sqrt(var), rtol=1e-5)
    np.testing.assert_allclose(layer.bias, -mean / np.sqrt(var), rtol=1e-5)
    # set_weights leaves the values the call uses behind: refused, saying what to do
    norm.set_weights([np.zeros(2, F32), np.full(2, 2.0, F32), np.array(0)])
    with pytest.raises(PortingError, match="finalize_state"):
        from_keras(km)
    norm.finalize_state()
    assert from_keras(km).layers[0].scale.tolist() == pytest.approx([2**-0.5] * 2)


@pytest.mark.parametrize(
    "km, match",
    [
        (lambda: _one_layer(L.Rescaling(np.ones((2, 3))), (4, 4, 3)), r"shape \(2, 3\)"),
        (lambda: _one_layer(L.Rescaling([1.0, 2.0]), (4, 4, 3)), r"shape \(2,\)"),
        (lambda: _one_layer(L.Rescaling(1.0, offset=float("nan")), (3,)), "non-finite"),
        (
            lambda: _one_layer(
                L.Normalization(
                    axis=(1, 2, 3), mean=np.zeros((4, 4, 3)), variance=np.ones((4, 4, 3))
                ),
                (4, 4, 3),
            ),
            r"axis=\(1, 2, 3\)",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((2, 2, 3)), L.Flatten(), L.Rescaling(np.arange(1.0, 13.0))]
            ),
            "rescale before the Flatten",
        ),
        (lambda: _one_layer(L.Reshape((3, 2)), (2, 3)), "reshapes"),
    ],
)
def test_unsupported_preprocessing_is_refused_naming_the_value(km, match):
    with pytest.raises(PortingError, match=match):
        from_keras(km())
