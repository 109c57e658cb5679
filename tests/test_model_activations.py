"""Activations beyond the first six, each checked against Knet's definition through an
independent PyTorch float64 implementation: `selu(x) = x >= 0 ? λ01 x : λ01 α01 (exp(x) - 1)`
(ops20/activation.jl; torch's selu uses the same two constants)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

from porting import layout  # noqa: E402
from porting.model import Activation, Conv, Dense, KnetModel, forward_knet  # noqa: E402
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64


@pytest.mark.parametrize("dtype", [F64, F32])
def test_selu_as_knet_defines_it(dtype):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((6, 5)) * 3
    wc = rng.standard_normal((3, 3, 1, 2))
    x = rng.standard_normal((5, 4))
    expected = torch.nn.functional.selu(torch.from_numpy(w @ x)).numpy()
    tol = 1e-13 if dtype == F64 else 2e-6
    model = KnetModel([Dense(w.astype(dtype), activation="selu")], input_size=(5,))
    xd = x.astype(dtype)
    np.testing.assert_allclose(forward_knet(model, xd).final, expected, rtol=tol, atol=tol)
    km = to_keras(model)
    np.testing.assert_allclose(np.asarray(km(xd.T)), expected.T, rtol=tol, atol=tol)
    assert verify_model(model, xd, keras_model=km).ok
    # as a layer of its own, after a conv
    conv = KnetModel(
        [Conv(wc.astype(dtype), name="c"), Activation("Knet.selu", name="s")], input_size=(6, 5, 1)
    )
    xc = np.asfortranarray(rng.standard_normal((6, 5, 1, 2)).astype(dtype))
    for mode in ("each", "whole"):
        report = verify_model(conv, xc, mode=mode)
        assert report.ok, str(report)
    y = np.asarray(to_keras(conv)(layout.activations_to_tf(xc)))
    t = torch.nn.functional.conv2d(
        torch.from_numpy(np.asarray(xc, F64).transpose(3, 2, 0, 1).copy()),
        torch.from_numpy(wc.transpose(3, 2, 0, 1)[:, :, ::-1, ::-1].copy()),
    )
    ref = torch.nn.functional.selu(t).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(y, julia_to_tf(ref, None, "reverse"), rtol=tol * 5, atol=tol * 5)


@pytest.mark.parametrize(
    "name,reference",
    [
        ("gelu", lambda t: torch.nn.functional.gelu(t)),  # exact, erf: Ops21's x*(1+erf(x/√2))/2
        ("swish", lambda t: t * torch.sigmoid(t)),  # Ops21: x * sigm(x)
        # Ops21: x <= -3 ? 0 : x >= 3 ? 1 : (x+3)/6
        ("hardsigmoid", lambda t: torch.clamp((t + 3) / 6, 0, 1)),
        # Ops21: x <= -3 ? 0 : x >= 3 ? x : x*(x+3)/6
        (
            "hardswish",
            lambda t: torch.where(t <= -3, 0 * t, torch.where(t >= 3, t, t * (t + 3) / 6)),
        ),
    ],
)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_ops21_activations_as_knet_defines_them(name, reference, dtype):
    rng = np.random.default_rng(len(name))
    w = rng.standard_normal((40, 3)) * 2.5  # pre-activations spread over [-8, 8]
    x = rng.standard_normal((3, 4))
    expected = reference(torch.from_numpy(w @ x)).numpy()
    tol = 1e-13 if dtype == F64 else 3e-6
    model = KnetModel([Dense(w.astype(dtype), activation=name)], input_size=(3,))
    xd = x.astype(dtype)
    np.testing.assert_allclose(forward_knet(model, xd).final, expected, rtol=tol, atol=tol)
    if name == "gelu" and dtype == F64:
        # TensorFlow's float64 erf is accurate to ~1e-9 only: said at conversion, and shown
        with pytest.warns(UserWarning, match="erf, which in float64"):
            km = to_keras(model)
        np.testing.assert_allclose(np.asarray(km(xd.T)), expected.T, rtol=1e-8, atol=1e-8)
        report = verify_model(model, xd, keras_model=km)
        assert report.first_divergent == "dense1" and any("erf" in n for n in report.notes)
        return
    km = to_keras(model)
    np.testing.assert_allclose(np.asarray(km(xd.T)), expected.T, rtol=tol, atol=tol)
    for mode in ("each", "whole"):
        report = verify_model(model, xd, keras_model=km, mode=mode)
        assert report.ok, str(report)


def knet_relu(t, max_value=None, negative_slope=0.0, threshold=0.0):
    """Ops21 relu, from its definition: x >= max_value ? max_value : x >= threshold ? x :
    negative_slope == 0 ? 0 : negative_slope * (x - threshold)."""
    below = negative_slope * (t - threshold) if negative_slope else torch.zeros_like(t)
    y = torch.where(t >= threshold, t, below)
    if max_value is not None:
        y = torch.where(t >= max_value, torch.full_like(t, max_value), y)
    return y


@pytest.mark.parametrize(
    "kw",
    [
        dict(negative_slope=0.2),  # the DCGAN's leaky relu (Keras LeakyReLU's default is 0.3)
        dict(max_value=6.0),
        dict(max_value=2.0, negative_slope=0.3),
        dict(threshold=0.5, negative_slope=0.1),
    ],
    ids=["leaky", "relu6", "clipped-leaky", "threshold"],
)
def test_relu_keywords_as_ops21_defines_them(kw, tmp_path):
    from porting.model import load_export, save_export

    rng = np.random.default_rng(2)
    w = rng.standard_normal((30, 3)) * 3
    x = rng.standard_normal((3, 4))
    expected = knet_relu(torch.from_numpy(w @ x), **kw).numpy()
    model = KnetModel(
        [Dense(w.astype(F32), name="d"), Activation("relu", name="r", **kw)], input_size=(3,)
    )
    xd = x.astype(F32)
    np.testing.assert_allclose(forward_knet(model, xd).final, expected, rtol=2e-6, atol=2e-6)
    if kw.get("threshold"):
        with pytest.warns(UserWarning, match="x == threshold"):
            km = to_keras(model)
    else:
        km = to_keras(model)
    np.testing.assert_allclose(np.asarray(km(xd.T)), expected.T, rtol=2e-6, atol=2e-6)
    for mode in ("each", "whole"):
        report = verify_model(model, xd, keras_model=km, mode=mode)
        assert report.ok, str(report)
    save_export(model, tmp_path / "m")
    r = load_export(tmp_path / "m")["r"]
    assert (r.max_value, r.negative_slope, r.threshold) == (
        kw.get("max_value"),
        kw.get("negative_slope", 0.0),
        kw.get("threshold", 0.0),
    )


def test_relu_keywords_are_checked():
    from porting import PortingError

    with pytest.raises(PortingError, match="relu's keywords"):
        Activation("tanh", negative_slope=0.2)
    with pytest.raises(PortingError, match="negative_slope=nan"):
        Activation("relu", negative_slope=float("nan"))
    with pytest.raises(PortingError, match="max_value=1 < threshold=2"):
        Activation("relu", max_value=1, threshold=2)
