"""Layer-level causes (porting.diagnosis: bn_epsilon, bn_scale_bias_swapped, bn_batch_statistics,
residual_activation_order, embedding_off_by_one): the broken side is computed by PyTorch's own
batch_norm / embedding / relu in float64 (or by Keras, through verify_model), never by the
hypothesis functions; correct ports must give `rounding`.
"""

import numpy as np
import pytest

from porting import PortingError
from porting.diagnosis import (
    CAUSE_MEANING,
    CAUSES,
    diagnose_batchnorm,
    diagnose_embedding,
    diagnose_residual,
)

torch = pytest.importorskip("torch", reason="the broken ports are computed with PyTorch")
F = torch.nn.functional

NEW = (
    "bn_epsilon",
    "bn_scale_bias_swapped",
    "bn_batch_statistics",
    "residual_activation_order",
    "embedding_off_by_one",
)


def test_new_causes_in_the_vocabulary():
    for c in NEW:
        assert c in CAUSES and CAUSE_MEANING[c]
    assert CAUSES[-1] == "unknown" and CAUSES[0] == "rounding"


def _bn_case(seed, shape=(2, 5, 5, 6)):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    mean = rng.uniform(-0.1, 0.1, c).astype(np.float32)
    var = rng.uniform(0.5, 1.5, c).astype(np.float32)
    params = np.concatenate([rng.uniform(0.5, 1.5, c), rng.uniform(-0.1, 0.1, c)]).astype(
        np.float32
    )
    return x, mean, var, params


def _torch_bn(x, mean, var, gamma, beta, eps, training=False):
    """PyTorch's batch_norm in float64 on a TF-layout array (channels last), to float32."""
    t = torch.from_numpy(np.moveaxis(x.astype(np.float64), -1, 1).copy())
    y = F.batch_norm(
        t,
        torch.from_numpy(mean.astype(np.float64)),
        torch.from_numpy(var.astype(np.float64)),
        torch.from_numpy(gamma.astype(np.float64)),
        torch.from_numpy(beta.astype(np.float64)),
        training=training,
        eps=eps,
    )
    return np.moveaxis(y.numpy(), 1, -1).astype(np.float32)


BN_CASES = {
    "rounding": dict(),
    "bn_epsilon": dict(eps=1e-3),
    "bn_scale_bias_swapped": dict(swap=True),
    "bn_batch_statistics": dict(training=True),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cause", list(BN_CASES))
def test_batchnorm_causes(cause, seed):
    x, mean, var, p = _bn_case(seed, shape=(2, 5, 5, 6) if seed != 2 else (8, 12))
    c = mean.size
    kw = BN_CASES[cause]
    g, b = (p[c:], p[:c]) if kw.get("swap") else (p[:c], p[c:])
    actual = _torch_bn(x, mean, var, g, b, kw.get("eps", 1e-5), kw.get("training", False))
    d = diagnose_batchnorm(x, actual, mean=mean, var=var, scale=p[:c], bias=p[c:])
    assert d.cause == cause, str(d)
    if cause != "rounding":
        assert d.finding is not None and d.finding.explains


def test_batchnorm_two_mistakes_named_together():
    """The naive Keras port: [bias; scale] AND epsilon 1e-3: named by the swap, both in the text."""
    x, mean, var, p = _bn_case(5)
    c = mean.size
    actual = _torch_bn(x, mean, var, p[c:], p[:c], 1e-3)
    d = diagnose_batchnorm(x, actual, mean=mean, var=var, scale=p[:c], bias=p[c:])
    assert d.cause == "bn_scale_bias_swapped"
    assert "epsilon 0.001" in d.evidence


def test_batchnorm_unexplained_error_is_unknown():
    x, mean, var, p = _bn_case(3)
    c = mean.size
    actual = _torch_bn(x, mean * 3 + 0.5, var, p[:c], p[c:], 1e-5)
    d = diagnose_batchnorm(x, actual, mean=mean, var=var, scale=p[:c], bias=p[c:])
    assert d.cause == "unknown"


def test_batchnorm_bad_input():
    x, mean, var, p = _bn_case(0)
    with pytest.raises(PortingError, match="mean has 3 values"):
        diagnose_batchnorm(x, x, mean=mean[:3], var=var)
    with pytest.raises(PortingError, match="both scale and bias"):
        diagnose_batchnorm(x, x, mean=mean, var=var, scale=p[:6])
    with pytest.raises(PortingError, match="eps"):
        diagnose_batchnorm(x, x, mean=mean, var=var, eps=-1)
    with pytest.raises(PortingError, match="shape"):
        diagnose_batchnorm(x, x[:1], mean=mean, var=var)


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_activation_order(seed):
    rng = np.random.default_rng(seed)
    x1, x2 = (rng.standard_normal((2, 4, 4, 3)).astype(np.float32) for _ in range(2))
    t1, t2 = torch.from_numpy(x1.astype(np.float64)), torch.from_numpy(x2.astype(np.float64))
    right = F.relu(t1 + t2).numpy().astype(np.float32)
    assert diagnose_residual([x1, x2], right, activation="relu").cause == "rounding"
    for wrong in (t1 + F.relu(t2), F.relu(t1) + F.relu(t2)):
        d = diagnose_residual([x1, x2], wrong.numpy().astype(np.float32), activation="relu")
        assert d.cause == "residual_activation_order" and d.finding.explains, str(d)
    # Knet sums already activated inputs; the port applies relu after the sum
    a1, a2 = F.relu(t1), F.relu(t2)
    d = diagnose_residual(
        [a1.numpy().astype(np.float32), a2.numpy().astype(np.float32)],
        F.relu(a1 - 1.0 + a2).numpy().astype(np.float32),  # not a relu of the sum
        activation="identity",
    )
    assert d.cause != "residual_activation_order"
    with pytest.raises(PortingError, match="two or more"):
        diagnose_residual([x1], x1)


def test_embedding_off_by_one():
    rng = np.random.default_rng(0)
    dim, vocab = 5, 12
    w = rng.standard_normal((dim, vocab)).astype(np.float32)  # Knet (dim, vocab)
    idx = rng.integers(1, vocab + 1, (3, 7))  # Knet's 1-based indices
    table = torch.from_numpy(
        np.concatenate([w.T, rng.standard_normal((1, dim))]).astype(np.float32)
    )
    right = F.embedding(torch.from_numpy(idx - 1), table).numpy()
    assert diagnose_embedding(w, idx, right).cause == "rounding"
    wrong = F.embedding(torch.from_numpy(idx), table).numpy()  # 1-based fed to a 0-based lookup
    d = diagnose_embedding(w, idx, wrong)
    assert d.cause == "embedding_off_by_one" and d.finding.hypothesis == "shift_+1", str(d)
    with pytest.raises(PortingError, match=r"indices\[0, 0\] = 0"):
        diagnose_embedding(w, np.zeros((2, 2), int), wrong[:2, :2])


# ------------------------------------------------------------------ through verify_model


def _hand_port(model, *, swap=False, eps=1e-5, training=False, act_before_add=False):
    """A Keras port written by hand (the layers named as Knet's): conv kernels rotated with
    porting.layout, batchnorm as a user might write it."""
    import keras

    from porting import layout

    conv, bn = model.layers[0], model.layers[1]
    c = bn.channels
    inp = keras.Input((6, 6, c), name="knet_input")
    t = keras.layers.Conv2D(c, 3, padding="same", name=conv.name)(inp)
    bnl = keras.layers.BatchNormalization(epsilon=eps, name=bn.name)
    t = bnl(t, training=True) if training else bnl(t)
    if act_before_add:
        t = keras.layers.Activation("relu", name="add1__act")(t)
        out = keras.layers.Add(name="add1")([inp, t])
    else:
        s = keras.layers.Add(name="add1")([inp, t])
        out = keras.layers.Activation("relu", name="add1__act")(s)
    km = keras.Model(inp, out)
    km.get_layer(conv.name).set_weights([layout.kernel_to_tf(conv.w, mode=0), conv.b.reshape(-1)])
    p = bn.bnparams.reshape(-1)
    g, b = (p[c:], p[:c]) if swap else (p[:c], p[c:])
    bnl.set_weights([g, b, bn.mean.reshape(-1), bn.var.reshape(-1)])
    return km


@pytest.mark.parametrize(
    "kw, cause",
    [
        (dict(), None),
        (dict(eps=1e-3), "bn_epsilon"),
        (dict(swap=True), "bn_scale_bias_swapped"),
        (dict(swap=True, eps=1e-3), "bn_scale_bias_swapped"),
        (dict(training=True), "bn_batch_statistics"),
        (dict(act_before_add=True), "residual_activation_order"),
    ],
)
def test_verify_model_names_the_layer_cause(kw, cause):
    pytest.importorskip("tensorflow")
    from porting.model import Add, BatchNorm, Conv, KnetModel
    from porting.model.verify import verify_model

    rng = np.random.default_rng(7)
    c = 4
    model = KnetModel(
        [
            Conv(
                rng.uniform(-0.5, 0.5, (3, 3, c, c)).astype(np.float32),
                rng.uniform(-0.1, 0.1, (1, 1, c, 1)).astype(np.float32),
                padding=1,
                name="conv1",
            ),
            BatchNorm(
                rng.uniform(-0.1, 0.1, (1, 1, c, 1)).astype(np.float32),
                rng.uniform(0.5, 1.5, (1, 1, c, 1)).astype(np.float32),
                np.concatenate([rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c)]).astype(
                    np.float32
                ),
                name="bn1",
            ),
            Add(["input", "bn1"], activation="relu", name="add1"),
        ],
        input_size=(6, 6, c),
    )
    km = _hand_port(model, **kw)
    for mode in ("each", "whole"):
        report = verify_model(model, keras_model=km, mode=mode)
        if cause is None:
            assert report.ok, str(report)
            continue
        assert not report.ok
        want = "add1" if cause == "residual_activation_order" else "bn1"
        assert report.first_divergent == want
        assert report.diagnosis is not None and report.diagnosis.cause == cause, str(report)


def test_resnet_projection_shortcut_batchnorm_swapped():
    """The shipped ResNet, its projection shortcut's batchnorm given [bias; scale] in Keras."""
    pytest.importorskip("tensorflow")
    from porting.examples.models import example_input, resnet
    from porting.model import to_keras
    from porting.model.verify import verify_model

    model = resnet()
    km = to_keras(model)
    layer = km.get_layer("proj_bn")
    g, b, mean, var = layer.get_weights()
    layer.set_weights([b, g, mean, var])
    report = verify_model(model, example_input(model), keras_model=km, mode="whole")
    assert report.first_divergent == "proj_bn"
    assert report.diagnosis.cause == "bn_scale_bias_swapped", str(report)


def test_batchnorm_sampled_rows_still_name_the_cause():
    x, mean, var, p = _bn_case(4, shape=(4, 9, 9, 6))
    actual = _torch_bn(x, mean, var, p[:6], p[6:], 1e-3)
    d = diagnose_batchnorm(x, actual, mean=mean, var=var, scale=p[:6], bias=p[6:], max_positions=60)
    assert d.cause == "bn_epsilon" and d.comparison.n_elements == x.size
    with pytest.raises(PortingError, match="max_positions"):
        diagnose_batchnorm(x, actual, mean=mean, var=var, max_positions=0)


def test_batchnorm_after_mat_features_in_flatten_order():
    """A batchnorm of the features `mat` makes (Keras's Flatten order differs): the hook gives
    the diagnosis the parameters in Keras's feature order."""
    pytest.importorskip("tensorflow")
    from porting.model import BatchNorm, Conv, KnetModel, Mat, to_keras
    from porting.model.verify import verify_model

    rng = np.random.default_rng(11)
    f = 3 * 2 * 2
    p = np.concatenate([rng.uniform(0.5, 1.5, f), rng.uniform(-0.5, 0.5, f)]).astype(np.float32)
    model = KnetModel(
        [
            Conv(rng.uniform(-0.5, 0.5, (2, 2, 2, 2)).astype(np.float32), name="conv1"),
            Mat(name="mat1"),
            BatchNorm(
                rng.uniform(-0.1, 0.1, f).astype(np.float32),
                rng.uniform(0.5, 1.5, f).astype(np.float32),
                p,
                name="bn1",
            ),
        ],
        input_size=(4, 3, 2),
    )
    km = to_keras(model)
    layer = km.get_layer("bn1")
    layer.epsilon = 1e-3
    report = verify_model(model, keras_model=km)
    assert report.first_divergent == "bn1"
    assert report.diagnosis.cause == "bn_epsilon", str(report)
