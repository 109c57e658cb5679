"""Batch normalisation as Knet computes it at inference, against an independent PyTorch float64
implementation written here from Knet's definitions (ops20/batchnorm.jl):
`y = g .* (x .- mean) ./ sqrt.(var .+ eps) .+ b` per channel (the second-to-last Julia dimension),
`bnparams(C)` one vector with the scale in the first half and the bias in the second.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

from porting import PortingError, layout  # noqa: E402
from porting.model import (  # noqa: E402
    Activation,
    BatchNorm,
    Conv,
    Dense,
    KnetModel,
    Mat,
    Pool,
    forward_knet,
    load_export,
    save_export,
)
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64


def torch_bn(x, mean, var, bnparams, eps=1e-5):
    """Knet's inference batchnorm, from its definition, with torch.nn.functional.batch_norm:
    channels are Julia's second-to-last dimension; bnparams = [scale; bias]."""
    x = np.asarray(x, F64)
    nd = x.ndim
    t = torch.from_numpy(np.moveaxis(x, [nd - 1, nd - 2], [0, 1]).copy())  # (N, C, ...)
    c = np.asarray(mean).size
    w = b = None
    if bnparams is not None:
        p = torch.from_numpy(np.asarray(bnparams, F64).reshape(-1))
        w, b = p[:c], p[c:]  # scale first, then bias
    y = torch.nn.functional.batch_norm(
        t,
        torch.from_numpy(np.asarray(mean, F64).reshape(-1)),
        torch.from_numpy(np.asarray(var, F64).reshape(-1)),
        w,
        b,
        training=False,
        eps=eps,
    )
    return np.moveaxis(y.numpy(), [0, 1], [nd - 1, nd - 2])


def torch_conv2d_mode0(w, x, b):
    wt = np.asarray(w, F64).transpose(3, 2, 0, 1)[:, :, ::-1, ::-1].copy()  # conv4 mode 0 flips
    xt = torch.from_numpy(np.asarray(x, F64).transpose(3, 2, 0, 1).copy())
    y = torch.nn.functional.conv2d(xt, torch.from_numpy(wt), torch.from_numpy(b.reshape(-1)))
    return y.numpy().transpose(2, 3, 1, 0)


def _moments(rng, c, shape):
    mean = rng.standard_normal(c).reshape(shape)
    var = rng.uniform(0.2, 3.0, c).reshape(shape)
    return mean, var


@pytest.mark.parametrize("dtype", [F64, F32])
def test_cnn_batchnorm_chain_agrees_with_pytorch(dtype):
    """Knet's cifar10 cnn_batchnorm shape in small: conv-bn-relu-pool, dense (no bias)-bn-relu,
    dense; plus a non-affine batchnorm and one right after `mat` (per feature, Keras' Flatten
    order)."""
    rng = np.random.default_rng(5)
    w1, b1 = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal((1, 1, 4, 1))
    m1, v1 = _moments(rng, 4, (1, 1, 4, 1))
    p1 = np.concatenate([rng.uniform(0.5, 2, 4), rng.standard_normal(4)])  # [scale; bias]
    m2, v2 = _moments(rng, 4 * 3 * 4, (48, 1))  # after mat: per feature, no params
    w3 = rng.standard_normal((6, 48))
    m3, v3 = _moments(rng, 6, (6,))
    p3 = np.concatenate([rng.uniform(0.5, 2, 6), rng.standard_normal(6)])
    w4, b4 = rng.standard_normal((3, 6)), rng.standard_normal(3)
    x = rng.standard_normal((10, 8, 2, 3))

    # independent reference, float64
    y = torch_conv2d_mode0(w1, x, b1)
    y = np.maximum(torch_bn(y, m1, v1, p1), 0)
    y = torch.nn.functional.max_pool2d(torch.from_numpy(y.transpose(3, 2, 0, 1).copy()), 2)
    y = y.numpy().transpose(2, 3, 1, 0)  # (4, 3, 4, N)
    y = y.reshape(-1, y.shape[-1], order="F")  # mat
    y = torch_bn(y, m2, v2, None)
    y = np.maximum(torch_bn(w3 @ y, m3, v3, p3), 0)
    expected = w4 @ y + b4[:, None]

    c = lambda a: None if a is None else np.asarray(a, dtype)  # noqa: E731
    model = KnetModel(
        [
            Conv(c(w1), c(b1)),
            BatchNorm(c(m1), c(v1), c(p1)),
            Activation("relu"),  # Knet's example: pool(relu(bn(conv)))
            Pool(window=2),
            Mat(),
            BatchNorm(c(m2), c(v2)),
            Dense(c(w3)),
            BatchNorm(c(m3), c(v3), c(p3), momentum=0.2),
            Activation("relu"),
            Dense(c(w4), c(b4)),
        ],
        input_size=(10, 8, 2),
    )
    xd = np.asfortranarray(x.astype(dtype))
    knet = forward_knet(model, xd, backend="reference").final
    tol = 1e-12 if dtype == F64 else 2e-5
    np.testing.assert_allclose(knet, expected, rtol=tol, atol=tol * np.abs(expected).max())
    km = to_keras(model)
    bns = [lay for lay in km.layers if type(lay).__name__ == "BatchNormalization"]
    assert [lay.epsilon for lay in bns] == [1e-5] * 3
    assert [round(lay.momentum, 12) for lay in bns] == [0.9, 0.9, 0.8]  # 1 - Knet's momentum
    assert [lay.center for lay in bns] == [True, False, True]
    y_keras = np.asarray(km(layout.activations_to_tf(xd)))
    np.testing.assert_allclose(
        y_keras, julia_to_tf(expected, None, "reverse"), rtol=tol, atol=tol * np.abs(expected).max()
    )
    for mode in ("each", "whole"):
        report = verify_model(model, xd, keras_model=km, mode=mode)
        assert report.ok, str(report)
        assert [r.kind for r in report.rows].count("batchnorm") == 3


def test_swapped_halves_and_keras_default_epsilon_are_caught():
    """The two classic porting mistakes make verification fail at the batchnorm layer."""
    rng = np.random.default_rng(1)
    c = 5
    mean, var = _moments(rng, c, (1, 1, c, 1))
    p = np.concatenate([rng.uniform(2, 3, c), rng.standard_normal(c)]).astype(F32)
    model = KnetModel(
        [
            Conv(rng.standard_normal((3, 3, 1, c)).astype(F32)),
            BatchNorm(mean.astype(F32), var.astype(F32) * 1e-3, p),
        ],
        input_size=(7, 7, 1),
    )
    x = np.asfortranarray(rng.standard_normal((7, 7, 1, 2)).astype(F32))
    km = to_keras(model)
    assert verify_model(model, x, keras_model=km).ok
    bn = next(lay for lay in km.layers if type(lay).__name__ == "BatchNormalization")
    g, b, m, v = bn.get_weights()
    bn.set_weights([b, g, m, v])  # scale and bias halves swapped
    assert verify_model(model, x, keras_model=km).first_divergent == "bn1"
    bn.set_weights([g, b, m, v])
    bn.epsilon = 1e-3  # Keras's default epsilon
    assert verify_model(model, x, keras_model=km).first_divergent == "bn1"


def test_batchnorm_export_round_trip_and_bad_input(tmp_path):
    rng = np.random.default_rng(2)
    mean, var = _moments(rng, 3, (3, 1))
    p = rng.standard_normal(6)
    m = KnetModel(
        [Dense(rng.standard_normal((3, 4))), BatchNorm(mean, var, p, eps=1e-3, momentum=0.05)],
        input_size=(4,),
    )
    save_export(m, tmp_path / "bn")
    m2 = load_export(tmp_path / "bn")
    bn = m2["bn1"]
    assert bn.eps == 1e-3 and bn.momentum == 0.05
    np.testing.assert_array_equal(bn.bnparams, p)
    x = np.asfortranarray(rng.standard_normal((4, 2)))
    np.testing.assert_array_equal(forward_knet(m, x).final, forward_knet(m2, x).final)
    with pytest.raises(PortingError, match="bnparams has shape"):
        BatchNorm(mean, var, p[:5])
    with pytest.raises(PortingError, match="var holds negative"):
        BatchNorm(mean, -var)
    with pytest.raises(PortingError, match="eps="):
        BatchNorm(mean, var, eps=float("nan"))
    with pytest.raises(PortingError, match="moments hold 3"):
        KnetModel([Dense(rng.standard_normal((4, 4))), BatchNorm(mean, var)], input_size=(4,))
