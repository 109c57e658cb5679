"""Deconvolution layers (`deconv4` + bias + activation), alone and in a DCGAN-style chain with
batchnorm, against an independent PyTorch float64 implementation written here from Knet's
definition: `deconv4(w, x)` is the adjoint of `y -> conv4(w, y)` with the same mode (mode 0
flips the kernel), `w` `(W..., Cout, Cin)`, output `(X-1)*s + (W-1)*d + 1 - 2p`.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
F = torch.nn.functional

from porting import layout  # noqa: E402
from porting.model import (  # noqa: E402
    Activation,
    BatchNorm,
    Deconv,
    KnetModel,
    forward_knet,
    load_export,
    save_export,
)
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64


def torch_deconv4(w, x, b=None, padding=0, stride=1, dilation=1, mode=0):
    nd = w.ndim - 2
    w = np.asarray(w, F64)
    # torch's conv_transpose weight is (Cin, Cout, k...): Knet's (W..., Cout, Cin) transposed
    wt = w.transpose(nd + 1, nd, *range(nd))
    if mode == 0:
        wt = wt[(slice(None), slice(None), *([slice(None, None, -1)] * nd))]
    xt = torch.from_numpy(np.asarray(x, F64).transpose(nd + 1, nd, *range(nd)).copy())
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    bias = None if b is None else torch.from_numpy(np.asarray(b, F64).reshape(-1))
    y = fn(xt, torch.from_numpy(wt.copy()), bias, stride=stride, padding=padding, dilation=dilation)
    return y.numpy().transpose(*range(2, nd + 2), 1, 0)


CASES = [
    # (w size (W..., Cout, Cin), x size (X..., Cin), keywords)
    ((4, 4, 3, 2), (3, 5, 2), dict(stride=2, padding=1)),  # K - s == 2p: Keras 'same' would do
    ((5, 5, 2, 3), (4, 3, 3), dict(stride=1, padding=0, mode=1)),
    ((2, 3, 2, 2), (4, 4, 2), dict(stride=(2, 1), padding=(0, 1))),  # K < s on one axis
    ((3, 2, 2), (5, 2), dict(stride=2, dilation=2, padding=1)),  # 1-D, stride and dilation
    ((3, 3, 1, 2), (3, 4, 2), dict(stride=3, padding=2, dilation=(1, 2), mode=1)),
]


@pytest.mark.parametrize("wsize,xsize,kw", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_deconv_layer_agrees_with_pytorch(wsize, xsize, kw, dtype):
    rng = np.random.default_rng(len(wsize) * 100 + sum(xsize))
    w = rng.standard_normal(wsize)
    b = rng.standard_normal(wsize[-2])
    x = rng.standard_normal((*xsize, 2))
    expected = np.tanh(torch_deconv4(w, x, b, **kw))
    model = KnetModel(
        [Deconv(w.astype(dtype), b.astype(dtype), activation="tanh", **kw)], input_size=xsize
    )
    xd = np.asfortranarray(x.astype(dtype))
    tol = 1e-12 if dtype == F64 else 1e-5
    knet = forward_knet(model, xd, backend="reference").final
    np.testing.assert_allclose(knet, expected, rtol=tol, atol=tol)
    km = to_keras(model)
    y = np.asarray(km(layout.activations_to_tf(xd)))
    np.testing.assert_allclose(y, julia_to_tf(expected, None, "reverse"), rtol=tol, atol=tol)
    for mode in ("each", "whole"):
        assert verify_model(model, xd, keras_model=km, mode=mode).ok


def test_dcgan_style_generator_block_and_export(tmp_path):
    """deconv4 2x2 s2 - bn - relu, deconv4 5x5 + bias - tanh (Knet's DCGAN generator shape)."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((2, 2, 6, 4))
    mean, var = rng.standard_normal(6), rng.uniform(0.5, 2, 6)
    p = np.concatenate([rng.uniform(0.5, 2, 6), rng.standard_normal(6)])
    w2, b2 = rng.standard_normal((5, 5, 1, 6)), rng.standard_normal((1, 1, 1, 1))
    x = rng.standard_normal((4, 4, 4, 3))
    y = torch_deconv4(w1, x, stride=2)
    nchw = torch.from_numpy(y.transpose(3, 2, 0, 1).copy())
    c = torch.from_numpy
    y = F.batch_norm(nchw, c(mean), c(var), c(p[:6]), c(p[6:]), training=False, eps=1e-5)
    y = np.maximum(y.numpy().transpose(2, 3, 1, 0), 0)
    expected = np.tanh(torch_deconv4(w2, y, b2))

    model = KnetModel(
        [
            Deconv(w1.astype(F32), stride=2),
            BatchNorm(mean.astype(F32), var.astype(F32), p.astype(F32)),
            Activation("relu"),
            Deconv(w2.astype(F32), b2.astype(F32), activation="tanh"),
        ],
        input_size=(4, 4, 4),
    )
    xd = np.asfortranarray(x.astype(F32))
    km = to_keras(model)
    np.testing.assert_allclose(
        np.asarray(km(layout.activations_to_tf(xd))),
        julia_to_tf(expected, None, "reverse"),
        rtol=1e-5,
        atol=1e-5,
    )
    for mode in ("each", "whole"):
        report = verify_model(model, xd, keras_model=km, mode=mode)
        assert report.ok, str(report)
    save_export(model, tmp_path / "gen")
    again = load_export(tmp_path / "gen")
    assert [layer.kind for layer in again] == ["deconv", "batchnorm", "activation", "deconv"]
    np.testing.assert_array_equal(forward_knet(again, xd).final, forward_knet(model, xd).final)


def test_a_deconv_kernel_left_unrotated_is_caught(monkeypatch):
    from porting.model.kinds import deconv as kdeconv

    rng = np.random.default_rng(3)
    model = KnetModel(
        [Deconv(rng.standard_normal((3, 3, 2, 2)).astype(F32), stride=2)], input_size=(4, 5, 2)
    )
    x = np.asfortranarray(rng.standard_normal((4, 5, 2, 2)).astype(F32))
    monkeypatch.setattr(
        kdeconv, "_kernel_converter", lambda w, mode, spatial: layout.kernel_to_tf(w, 1, spatial)
    )
    assert verify_model(model, x).first_divergent == "deconv1"


def test_dcgan_generator_with_reshape_agrees_with_pytorch(tmp_path):
    """Knet's DCGAN generator in small: dense-bn-relu x2 without biases, reshape (4, 4, C)
    (Julia's column-major reshape), deconv4 2x2 s2 - bn - relu, deconv4 + scalar bias - tanh."""
    from porting.model import Dense, Reshape

    rng = np.random.default_rng(12)
    z = rng.standard_normal((6, 3))

    def bn(c):
        return (
            rng.standard_normal(c) * 0.1,
            rng.uniform(0.5, 1.5, c),
            np.concatenate([rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1]),
        )

    w1, bn1 = rng.standard_normal((10, 6)), bn(10)
    w2, bn2 = rng.standard_normal((4 * 3 * 5, 10)), bn(60)
    w3, bn3 = rng.standard_normal((2, 2, 4, 5)), bn(4)
    w4, b4 = rng.standard_normal((3, 3, 1, 4)), rng.standard_normal((1, 1, 1, 1))

    def t_bn(y, m, v, p):  # per feature / channel: Julia's second-to-last dimension
        nd = y.ndim
        t = torch.from_numpy(np.moveaxis(y, [nd - 1, nd - 2], [0, 1]).copy())
        c = m.size
        pt = torch.from_numpy(p)
        out = F.batch_norm(
            t, torch.from_numpy(m), torch.from_numpy(v), pt[:c], pt[c:], training=False, eps=1e-5
        )
        return np.moveaxis(out.numpy(), [0, 1], [nd - 1, nd - 2])

    y = np.maximum(t_bn(w1 @ z, *bn1), 0)
    y = np.maximum(t_bn(w2 @ y, *bn2), 0)
    y = y.reshape((4, 3, 5, y.shape[-1]), order="F")  # Julia's reshape(y, 4, 3, 5, :)
    y = np.maximum(t_bn(torch_deconv4(w3, y, stride=2), *bn3), 0)
    expected = np.tanh(torch_deconv4(w4, y, b4, padding=1))

    c = lambda a: np.asarray(a, F32)  # noqa: E731
    model = KnetModel(
        [
            Dense(c(w1)),
            BatchNorm(*map(c, bn1)),
            Activation("relu"),
            Dense(c(w2)),
            BatchNorm(*map(c, bn2)),
            Activation("relu"),
            Reshape((4, 3, 5)),
            Deconv(c(w3), stride=2),
            BatchNorm(*map(c, bn3)),
            Activation("relu"),
            Deconv(c(w4), c(b4), padding=1, activation="tanh"),
        ],
        input_size=(6,),
    )
    zd = z.astype(F32)
    np.testing.assert_allclose(forward_knet(model, zd).final, expected, rtol=1e-5, atol=1e-5)
    km = to_keras(model)
    np.testing.assert_allclose(
        np.asarray(km(zd.T)), julia_to_tf(expected, None, "reverse"), rtol=1e-5, atol=1e-5
    )
    for mode in ("each", "whole"):
        report = verify_model(model, zd, keras_model=km, mode=mode)
        assert report.ok, str(report)
    save_export(model, tmp_path / "gen")
    again = load_export(tmp_path / "gen")
    np.testing.assert_array_equal(forward_knet(again, zd).final, forward_knet(model, zd).final)


def test_reshapes_without_a_builtin_equivalent_are_refused():
    from porting import PortingError
    from porting.model import Conv, Dense, Reshape

    w = np.ones((1, 1, 2, 2), F32)
    with pytest.raises(PortingError, match="no Keras built-in equivalent"):
        KnetModel([Conv(w), Reshape((2, 3, 2))], input_size=(3, 2, 2))
    with pytest.raises(PortingError, match="reshapes the model's input"):
        KnetModel([Reshape((2, 2, 1))], input_size=(4,))
    with pytest.raises(PortingError, match="reshape to"):
        KnetModel([Dense(np.ones((5, 4), F32)), Reshape((2, 2, 1))], input_size=(4,))
