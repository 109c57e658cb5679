"""The `mul` merge (Julia's broadcasting `x1 .* x2`, squeeze-and-excite's gate) and the pool
kind's mode 2 (the mean of each window's real cells: cuDNN's exclude-padding average, Keras'
`AveragePooling(padding="same")`), against PyTorch float64 (`torch.mul` broadcasting,
`avg_pool{1,2,3}d(count_include_pad=False)`) and hand-derived values."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
F = torch.nn.functional

from porting import PortingError, layout  # noqa: E402
from porting.model import (  # noqa: E402
    Activation,
    KnetModel,
    Mul,
    Pool,
    forward_knet,
    load_export,
    save_export,
    to_keras,
    verify_model,
)

F32, F64 = np.float32, np.float64


def _x(rng, size, dtype):
    return np.asfortranarray(rng.standard_normal(size).astype(dtype))


# --------------------------------------------------------------------------- mul


@pytest.mark.parametrize("dtype", [F32, F64])
def test_mul_broadcasts_a_per_channel_gate_as_torch(dtype):
    rng = np.random.default_rng(0)
    model = KnetModel(
        [
            Activation("tanh", name="a"),
            Pool((5, 4), mode=1, name="squeeze"),
            Activation("sigm", name="gate"),
            Mul(["a", "gate"], name="excite"),
        ],
        input_size=(5, 4, 3),
        dtype=dtype,
    )
    x = _x(rng, (5, 4, 3, 2), dtype)
    outs = forward_knet(model, x)
    a, gate, y = outs[0], outs[2], outs[3]
    assert gate.shape == (1, 1, 3, 2) and y.shape == (5, 4, 3, 2)
    ref = torch.mul(torch.from_numpy(a.astype(F64)), torch.from_numpy(gate.astype(F64))).numpy()
    eps = np.finfo(dtype).eps
    assert (np.abs(y - ref) <= eps * np.abs(ref)).all()  # one rounded product
    report = verify_model(model, x)
    assert report.ok, str(report)


def test_mul_by_hand_and_refusals(tmp_path):
    x = np.asfortranarray(np.arange(1.0, 5.0).reshape(2, 2, 1, 1))
    model = KnetModel(
        [Activation("identity", name="a"), Activation("identity", name="b"), Mul(["a", "b"])],
        input_size=(2, 2, 1),
        dtype=F64,
    )
    assert forward_knet(model, x)[-1].ravel().tolist() == [1.0, 4.0, 9.0, 16.0]
    save_export(model, tmp_path / "m")
    assert load_export(tmp_path / "m").layers[-1].inputs == ("a", "b")
    with pytest.raises(PortingError, match=r"multiplies inputs of sizes \(4, 3, 2\), \(4, 2, 2\)"):
        KnetModel(
            [Activation("tanh", name="a"), Pool((1, 2), stride=1, name="p"), Mul(["a", "p"])],
            input_size=(4, 3, 2),
        )
    with pytest.raises(PortingError, match="two or more layer names"):
        Mul(["a"])


# --------------------------------------------------------------------------- pool mode 2


def torch_mean_excluding_padding(x, window, padding, stride):
    """Knet `(X1, ..., C, N)` -> torch `(N, C, ..., X1)`: the spatial axes reversed, so are
    the keywords."""
    nd = x.ndim - 2
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, F64).T))
    y = pool(
        t,
        kernel_size=tuple(window[::-1]),
        stride=tuple(stride[::-1]),
        padding=tuple(padding[::-1]),
        count_include_pad=False,
    )
    return y.numpy().T


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(
    "size, window, padding, stride",
    [
        ((7, 6, 2), (3, 3), (1, 1), (1, 1)),  # InceptionV3's 3x3 stride-1 "same" average
        ((9, 7, 3), (3, 2), (1, 1), (2, 1)),
        ((8, 5, 2), (5, 3), (2, 1), (3, 2)),
        ((10, 2), (3,), (1,), (2,)),
        ((5, 4, 3, 2), (3, 3, 2), (1, 1, 1), (1, 2, 1)),
    ],
)
def test_pool_mode_2_is_torchs_average_without_padding(dtype, size, window, padding, stride):
    rng = np.random.default_rng(1)
    x = _x(rng, (*size, 2), dtype)
    model = KnetModel(
        [Pool(window, padding=padding, stride=stride, mode=2, name="avg")],
        input_size=size,
        dtype=dtype,
    )
    y = forward_knet(model, x)[-1]
    ref = torch_mean_excluding_padding(x, window, padding, stride)
    assert y.shape == ref.shape
    # sum * (1/K), divided by count * (1/K): a few roundings of the mean of |x|
    k = int(np.prod(window))
    bound = (
        (k + 4)
        * np.finfo(dtype).eps
        * torch_mean_excluding_padding(np.abs(x), window, padding, stride)
    )
    assert (np.abs(y - ref) <= bound).all()
    # and mode 1 differs at the border: padding counted there
    y1 = forward_knet(
        model.replace(layers=[Pool(window, padding=padding, stride=stride, mode=1)]), x
    )[-1]
    assert not np.allclose(y1, ref)


def test_pool_mode_2_by_hand():
    # window 3, padding 1, stride 1 on 1, 2, 3, 4: the end windows hold two real cells
    x = np.asfortranarray(np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1))
    y = forward_knet(KnetModel([Pool(3, padding=1, stride=1, mode=2)], dtype=F64), x)[-1].ravel()
    # (sum / 3) / (count / 3): two more roundings than sum / count
    assert y.tolist() == pytest.approx([1.5, 2.0, 3.0, 3.5], rel=4 * np.finfo(F64).eps, abs=0)
    # 2-D corner of a 3x3 window on ones * 6: every output 6 (mode 1 gives 6 * 4/9 at a corner)
    x = np.full((3, 3, 1, 1), 6.0, order="F")
    y = forward_knet(KnetModel([Pool(3, padding=1, stride=1, mode=2)], dtype=F64), x)[-1]
    assert np.allclose(y, 6.0, rtol=1e-15, atol=0)
    y1 = forward_knet(KnetModel([Pool(3, padding=1, stride=1, mode=1)], dtype=F64), x)[-1]
    assert y1[0, 0, 0, 0] == pytest.approx(6.0 * 4 / 9)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_pool_mode_2_verifies_against_keras_same_average(dtype):
    rng = np.random.default_rng(2)
    model = KnetModel(
        [Pool(3, padding=1, stride=1, mode=2, name="avg"), Pool(3, padding=1, stride=2, mode=2)],
        input_size=(7, 9, 3),
        dtype=dtype,
    )
    x = _x(rng, (7, 9, 3, 2), dtype)
    report = verify_model(model, x)
    assert report.ok, str(report)
    assert any("pool mode=2 averages the real cells only" in n for n in report.notes)
    km = to_keras(model)
    kinds = [type(layer).__name__ for layer in km.layers[1:]]
    assert kinds == ["AveragePooling2D", "AveragePooling2D"]
    assert all(layer.padding == "same" for layer in km.layers[1:])


def test_pool_mode_2_whose_padding_is_not_tensorflows_same_is_refused():
    # window 2, padding 1 on 6: Knet pads (1, 1), TensorFlow's "same" would pad (0, 0)
    model = KnetModel([Pool(2, padding=1, stride=2, mode=2)], input_size=(6, 6, 1))
    with pytest.raises(PortingError, match=r"padding \(1, 1\) on spatial size \(6, 6\)"):
        to_keras(model)
    # without padding mode 2 is mode 1: the plain "valid" average
    plain = KnetModel([Pool(2, mode=2)], input_size=(6, 6, 1), dtype=F64)
    assert to_keras(plain).layers[1].padding == "valid"
    x = np.asfortranarray(np.random.default_rng(3).standard_normal((6, 6, 1, 1)))
    np.testing.assert_array_equal(
        forward_knet(plain, x)[-1],
        forward_knet(KnetModel([Pool(2, mode=1)], input_size=(6, 6, 1), dtype=F64), x)[-1],
    )
    y_tf = np.asarray(to_keras(plain)(layout.activations_to_tf(x)))
    assert y_tf.shape == (1, 3, 3, 1)
