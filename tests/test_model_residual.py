"""Residual and branching graphs: a CIFAR-ResNet-style model (identity and projection shortcuts,
batchnorm after every conv, `relu(shortcut + main)`, global mean pool, dense) and a channel
concatenation, against an independent PyTorch float64 implementation written here from Knet's
definitions; converted to a functional Keras model (`Add`, `Concatenate`) and verified per node.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
F = torch.nn.functional

from porting import PortingError, layout  # noqa: E402
from porting.model import (  # noqa: E402
    Activation,
    Add,
    BatchNorm,
    Concat,
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


def _nchw(a):
    return torch.from_numpy(np.asarray(a, F64).transpose(3, 2, 0, 1).copy())


def _julia(t):
    return t.numpy().transpose(2, 3, 1, 0)


def t_conv(w, x, padding=0, stride=1):
    """Knet conv4 mode 0 (the kernel rotated), no bias: torch conv2d on the flipped kernel."""
    wt = np.asarray(w, F64).transpose(3, 2, 0, 1)[:, :, ::-1, ::-1].copy()
    return F.conv2d(x, torch.from_numpy(wt), padding=padding, stride=stride)


def t_bn(x, mean, var, p):
    c = mean.size
    tp = torch.from_numpy(p)
    return F.batch_norm(
        x, torch.from_numpy(mean), torch.from_numpy(var), tp[:c], tp[c:], training=False, eps=1e-5
    )


def _resnet(rng, dtype):
    def w(*s):
        return rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[:-1]))

    def bn(c):
        return (
            rng.standard_normal(c) * 0.1,
            rng.uniform(0.5, 1.5, c),
            np.concatenate([rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1]),
        )

    P = {
        "stem": w(3, 3, 3, 4),
        "stem_bn": bn(4),
        "a1": w(3, 3, 4, 4),
        "a1_bn": bn(4),
        "a2": w(3, 3, 4, 4),
        "a2_bn": bn(4),
        "b1": w(3, 3, 4, 6),
        "b1_bn": bn(6),
        "b2": w(3, 3, 6, 6),
        "b2_bn": bn(6),
        "proj": w(1, 1, 4, 6),
        "proj_bn": bn(6),
        "fc": rng.standard_normal((5, 6)),
        "fc_b": rng.standard_normal(5),
    }
    c = lambda a: np.asarray(a, dtype)  # noqa: E731

    def BN(key, name):
        m, v, p = P[key]
        return BatchNorm(c(m), c(v), c(p), name=name)

    layers = [
        Conv(c(P["stem"]), padding=1, name="stem"),
        BN("stem_bn", "stem_bn"),
        Activation("relu", name="r0"),
        # block a: identity shortcut
        Conv(c(P["a1"]), padding=1, name="a1"),
        BN("a1_bn", "a1_bn"),
        Activation("relu", name="a1_relu"),
        Conv(c(P["a2"]), padding=1, name="a2"),
        BN("a2_bn", "a2_bn"),
        Add(["a2_bn", "r0"], activation="relu", name="a_out"),
        # block b: stride 2, projection shortcut (1x1 conv stride 2 + bn) from a_out
        Conv(c(P["b1"]), padding=1, stride=2, name="b1"),
        BN("b1_bn", "b1_bn"),
        Activation("relu", name="b1_relu"),
        Conv(c(P["b2"]), padding=1, name="b2"),
        BN("b2_bn", "b2_bn"),
        Conv(c(P["proj"]), stride=2, name="proj"),
        BN("proj_bn", "proj_bn"),
        Add(["b2_bn", "proj_bn"], activation="relu", name="b_out"),
        Pool(window=(4, 3), mode=1, name="gap"),  # global mean pool over the (4, 3) map
        Mat(name="flat"),
        Dense(c(P["fc"]), c(P["fc_b"]), name="fc"),
    ]
    model = KnetModel(layers, input_size=(8, 6, 3), inputs={"proj": "a_out"})
    return model, P


def _resnet_torch(P, x):
    t = _nchw(x)
    r0 = F.relu(t_bn(t_conv(P["stem"], t, 1), *P["stem_bn"]))
    a = F.relu(t_bn(t_conv(P["a1"], r0, 1), *P["a1_bn"]))
    a = t_bn(t_conv(P["a2"], a, 1), *P["a2_bn"])
    a_out = F.relu(a + r0)
    b = F.relu(t_bn(t_conv(P["b1"], a_out, 1, 2), *P["b1_bn"]))
    b = t_bn(t_conv(P["b2"], b, 1), *P["b2_bn"])
    proj = t_bn(t_conv(P["proj"], a_out, 0, 2), *P["proj_bn"])
    b_out = F.relu(b + proj)
    g = b_out.mean(dim=(2, 3))  # (N, C)
    return P["fc"] @ g.numpy().T + P["fc_b"][:, None]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_resnet_graph_agrees_with_pytorch_and_verifies_per_node(dtype, tmp_path):
    rng = np.random.default_rng(21)
    model, P = _resnet(rng, dtype)
    x = rng.standard_normal((8, 6, 3, 2))
    expected = _resnet_torch(P, x)
    xd = np.asfortranarray(x.astype(dtype))
    tol = 1e-11 if dtype == F64 else 3e-5
    scale = np.abs(expected).max()
    knet = forward_knet(model, xd, backend="reference")
    np.testing.assert_allclose(knet.final, expected, rtol=tol, atol=tol * scale)
    km = to_keras(model)
    kinds = {type(lay).__name__ for lay in km.layers}
    assert {"Add", "BatchNormalization", "Conv2D"} <= kinds
    np.testing.assert_allclose(
        np.asarray(km(layout.activations_to_tf(xd))),
        julia_to_tf(expected, None, "reverse"),
        rtol=tol,
        atol=tol * scale,
    )
    for mode in ("each", "whole"):
        report = verify_model(model, xd, keras_model=km, mode=mode)
        assert report.ok, str(report)
        assert [r.name for r in report.rows] == [layer.name for layer in model.layers]
    # the graph survives the export
    save_export(model, tmp_path / "resnet")
    again = load_export(tmp_path / "resnet")
    assert again.sources == model.sources
    np.testing.assert_array_equal(forward_knet(again, xd).final, knet.final)


def test_a_broken_shortcut_is_named_as_the_first_divergent_node():
    rng = np.random.default_rng(4)
    model, _ = _resnet(rng, F32)
    x = np.asfortranarray(rng.standard_normal((8, 6, 3, 2)).astype(F32))
    km = to_keras(model)
    proj = km.get_layer("proj")
    k = proj.get_weights()[0]
    proj.set_weights([k * np.float32(1.01)])
    report = verify_model(model, x, keras_model=km)
    assert report.first_divergent == "proj", str(report)
    assert next(r for r in report.rows if r.name == "a_out").ok  # upstream nodes unaffected


def test_concat_along_channels():
    rng = np.random.default_rng(9)
    w1, w2 = rng.standard_normal((3, 3, 2, 3)), rng.standard_normal((1, 1, 2, 2))
    x = rng.standard_normal((5, 4, 2, 2))
    t = _nchw(x)
    expected = _julia(torch.cat([t_conv(w1, t, 1), t_conv(w2, t)], dim=1))
    model = KnetModel(
        [
            Conv(w1.astype(F32), padding=1, name="left"),
            Conv(w2.astype(F32), name="right"),
            Concat(["left", "right"], name="cat"),
        ],
        input_size=(5, 4, 2),
        inputs={"right": "input"},
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
        assert verify_model(model, xd, keras_model=km, mode=mode).ok


def test_graph_mistakes_are_named():
    w = np.ones((1, 1, 2, 2), F32)
    with pytest.raises(PortingError, match="reads 'later'"):
        KnetModel([Add(["input", "later"]), Conv(w, name="later")], input_size=(3, 3, 2))
    with pytest.raises(PortingError, match="adds inputs of sizes"):
        KnetModel(
            [Conv(np.ones((2, 2, 2, 2), F32), name="c"), Add(["c", "input"])], input_size=(3, 3, 2)
        )
    with pytest.raises(PortingError, match=r"layers \['dead'\] are computed but never read"):
        KnetModel([Conv(w, name="dead"), Conv(w, name="c")], inputs={"c": "input"})
    with pytest.raises(PortingError, match="inputs: no layer named 'nope'"):
        KnetModel([Conv(w)], inputs={"nope": "input"})
