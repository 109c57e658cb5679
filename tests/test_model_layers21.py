"""Knet's `logsoftmax(x; dims)`, Layers21's `Linear` (no bias by default, no flattening) and the
`Block` / `Op` composition helpers, each checked against the independent PyTorch float64
implementation in tests/knet_torch.py (written from Knet's sources, sharing no code with
porting)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

import knet_torch as K  # noqa: E402  (tests/ is on sys.path; needs torch)

from porting import layout  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.model import (  # noqa: E402
    Activation,
    Block,
    Conv,
    KnetModel,
    Linear,
    Mat,
    Op,
    Pool,
    ZeroPad,
    forward_knet,
    load_export,
    save_export,
)
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.stages import ActStage  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64


def _x(rng, shape, scale=1.0, dtype=F64):
    return np.asfortranarray((scale * rng.standard_normal(shape)).astype(dtype))


def _err(fn):
    with pytest.raises(PortingError) as e:
        fn()
    return str(e.value)


# --------------------------------------------------------------------------- logsoftmax


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_logsoftmax_is_knets_along_each_julia_dimension(dims):
    rng = np.random.default_rng(1)
    x = _x(rng, (4, 3, 5, 2), scale=20.0)  # wide range: the log-sum-exp is far from 0
    model = KnetModel([Activation("logsoftmax", dims=dims)], input_size=(4, 3, 5), dtype=F64)
    truth = K.logsoftmax(x, dims=dims)
    np.testing.assert_allclose(forward_knet(model, x).final, truth, rtol=1e-13, atol=1e-12)
    # Keras's built-in (Permute to the last axis and back where dims is not the channels)
    km = to_keras(model)
    kinds = {type(layer).__name__ for layer in km.layers}
    assert "Activation" in kinds and ("Permute" in kinds) == (dims != 3)
    y = np.asarray(km(layout.activations_to_tf(x)))
    np.testing.assert_allclose(y, julia_to_tf(truth, None, "reverse"), rtol=1e-13, atol=1e-12)


def test_logsoftmax_float32_error_stays_within_its_magnitude_bound():
    """The magnitude rule bounds the float32 error of Knet's formula and of Keras's built-in
    against the float64 truth: |err| <= 3 eps S (K = 1) elementwise."""
    rng = np.random.default_rng(2)
    x64 = _x(rng, (6, 5, 7, 3), scale=30.0)
    x32 = x64.astype(F32)
    eps = float(np.finfo(F32).eps)
    for dims in (1, 3):
        truth = K.logsoftmax(x32.astype(F64), dims=dims)
        model = KnetModel([Activation("logsoftmax", dims=dims)], input_size=(6, 5, 7))
        knet = forward_knet(model, x32).final
        s = ActStage(function="logsoftmax", dims=dims).magnitude(np.abs(x32.astype(F64)), knet, F64)
        bound = 3 * eps * s
        assert (np.abs(knet - truth) <= bound).all()
        keras_y = np.asarray(to_keras(model)(layout.activations_to_tf(x32)), F64)
        assert (
            np.abs(keras_y - julia_to_tf(truth, None, "reverse"))
            <= julia_to_tf(bound, None, "reverse")
        ).all()
        # and the bound is a rounding bound, not a vacuous one: below 1e-3 of the outputs' scale
        assert (bound <= 1e-3 * (np.abs(truth) + 1)).all()


def test_logsoftmax_verifies_and_a_wrong_port_is_caught():
    rng = np.random.default_rng(3)
    x = _x(rng, (5, 4, 3, 2), scale=5.0, dtype=F32)
    good = KnetModel([Activation("logsoftmax", dims=1, name="ls")], input_size=(5, 4, 3))
    for mode in ("each", "whole"):
        assert verify_model(good, x, mode=mode).ok
    # the wrong axis, and softmax where logsoftmax was meant, are flagged
    wrong_axis = KnetModel([Activation("logsoftmax", dims=2, name="ls")], input_size=(5, 4, 3))
    not_log = KnetModel([Activation("softmax", dims=1, name="ls")], input_size=(5, 4, 3))
    for other in (wrong_axis, not_log):
        report = verify_model(good, x, keras_model=to_keras(other), diagnose=False)
        assert not report.ok and report.rows[0].name == "ls"


def test_logsoftmax_after_dense_float64_and_its_refusals():
    rng = np.random.default_rng(4)
    w, x = _x(rng, (6, 5)), _x(rng, (5, 3))
    model = KnetModel([Linear(w), Activation("log_softmax")], input_size=(5,))
    assert model[1].function == "logsoftmax" and model[1].dims == 1
    truth = K.logsoftmax(K.Linear(w)(x), dims=1)
    np.testing.assert_allclose(forward_knet(model, x).final, truth, rtol=1e-13, atol=1e-13)
    assert verify_model(model, x).ok
    # Knet's own default, dims=: (the whole array, batch included), is refused
    assert "dims=:" in _err(lambda: Activation("logsoftmax", dims=None))
    assert "dims" in _err(lambda: Activation("logsoftmax", dims=0))
    assert "dims=:" in _err(lambda: Op("logsoftmax"))
    msg = _err(lambda: KnetModel([Activation("logsoftmax", dims=3)], input_size=(5,)))
    assert "logsoftmax over dims=3" in msg


# --------------------------------------------------------------------------- Linear


def test_linear_is_layers21s_no_bias_by_default():
    rng = np.random.default_rng(5)
    w, b, x = _x(rng, (4, 6)), _x(rng, (4,)), _x(rng, (6, 3))
    plain = Linear(w)
    assert plain.b is None and plain.bias is None and set(plain.params()) == {"w"}
    m = KnetModel([plain], input_size=(6,))
    np.testing.assert_allclose(forward_knet(m, x).final, K.Linear(w)(x), rtol=1e-13, atol=1e-13)
    km = to_keras(m)
    assert km.get_layer(plain.name).use_bias is False
    assert verify_model(m, x, keras_model=km).ok
    # with a bias and an activation: activation(w * x .+ bias)
    m2 = KnetModel([Linear(w, bias=b, activation="tanh", name="l")], input_size=(6,))
    truth = K.Linear(w, bias=b, activation=K.tanh)(x)
    np.testing.assert_allclose(forward_knet(m2, x).final, truth, rtol=1e-13, atol=1e-13)
    assert verify_model(m2, x).ok
    y = np.asarray(to_keras(m2)(x.T))
    np.testing.assert_allclose(y, truth.T, rtol=1e-13, atol=1e-13)


def test_linear_refuses_what_it_would_compute_differently():
    rng = np.random.default_rng(6)
    w = _x(rng, (4, 6))
    # a spatial input: Ops21 linear contracts along Julia's dim 1, it does not flatten
    msg = _err(lambda: KnetModel([Linear(w)], input_size=(6, 2, 3)))
    assert "(6, 2, 3)" in msg and "Mat()" in msg
    # the activation is called on the whole array in Layers21: softmax would mix samples
    assert "dims=1" in _err(lambda: Linear(w, activation="softmax"))
    assert "(out, in)" in _err(lambda: Linear(_x(rng, (2, 2, 6))))
    assert "has shape (5,)" in _err(lambda: Linear(w, bias=_x(rng, (5,))))
    assert "float32 or float64" in _err(lambda: Linear(w.astype(int)))


def test_linear_export_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    w1, b1, w2 = _x(rng, (5, 12), dtype=F32), _x(rng, (5,), dtype=F32), _x(rng, (3, 5), dtype=F32)
    m = KnetModel(
        [Mat(), Linear(w1, bias=b1, activation="relu", name="fc1"), Linear(w2, name="fc2")],
        input_size=(2, 2, 3),
    )
    save_export(m, tmp_path / "lin")
    doc = (tmp_path / "lin.json").read_text()
    assert '"kind": "linear"' in doc and '"fc1.bias"' in doc and '"fc2.bias"' not in doc
    back = load_export(tmp_path / "lin")
    assert [la.kind for la in back] == ["mat", "linear", "linear"]
    assert back["fc2"].b is None and back["fc1"].activation == "relu"
    np.testing.assert_array_equal(back["fc1"].bias, b1)
    x = _x(rng, (2, 2, 3, 4), dtype=F32)
    np.testing.assert_array_equal(forward_knet(back, x).final, forward_knet(m, x).final)


# --------------------------------------------------------------------------- Block and Op


def test_block_flattens_into_rows_and_computes_layers21s_chain():
    rng = np.random.default_rng(8)
    w = _x(rng, (3, 3, 2, 4))
    w2, b2 = _x(rng, (3, 2 * 2 * 4)), _x(rng, (3,))
    x = _x(rng, (5, 5, 2, 2))
    model = KnetModel(
        Block(
            ZeroPad(((0, 1), (0, 1)), name="pad"),
            Block(
                Conv(w, mode=1, padding=1, name="conv"),  # Layers21: cross-correlation, no bias
                Op("Knet.Ops21.relu", max_value=6.0, name="relu6"),
                name="stem",
            ),
            Op("pool", op="mean", window=3, name="pool"),
            Block(Op("reshape2d", name="flat"), Linear(w2, bias=b2, name="fc"), name="top"),
            name="net",
        ),
        input_size=(5, 5, 2),
    )
    assert [la.name for la in model] == ["pad", "conv", "relu6", "pool", "flat", "fc"]
    assert [la.kind for la in model] == ["zeropad", "conv", "activation", "pool", "mat", "linear"]
    truth = K.Block(
        K.ZeroPad(((0, 1), (0, 1))),
        K.Block(K.Conv(w, padding=1), K.Op(K.ops21_relu, max_value=6.0)),
        K.Op(K.ops21_pool, op="mean", window=3),
        K.Block(K.Op(K.mat), K.Linear(w2, bias=b2)),
    )(x)
    np.testing.assert_allclose(forward_knet(model, x).final, truth, rtol=1e-12, atol=1e-12)
    report = verify_model(model, x.astype(F64))
    assert report.ok and [r.name for r in report.rows] == [la.name for la in model]


def test_op_maps_onto_existing_rows_and_refuses_the_rest():
    assert isinstance(Op("relu", max_value=6.0), Activation)
    assert Op("NNlib.σ").function == "sigm"
    assert Op("softmax", dims=1).dims == 1
    assert isinstance(Op("reshape2d"), Mat) and isinstance(Op("Knet.mat"), Mat)
    p = Op("pool", op="maximum", window=2, stride=1)
    assert isinstance(p, Pool) and p.mode == 0 and p.stride == 1
    assert Op("pool", op="mean").mode == 1
    assert isinstance(Op("zeropad", 1), ZeroPad)
    assert Op("dropout", 0.2).p == 0.2
    assert Op("reshape", (4, 4, 8, ":")).size == (4, 4, 8)
    assert "':'" in _err(lambda: Op("reshape", (4, 4, 8)))
    assert "no layer computes it" in _err(lambda: Op("imagenet_preprocess"))
    assert "function name" in _err(lambda: Op(print))
    assert "'maximum' or 'mean'" in _err(lambda: Op("pool", op="sum"))
    assert "dims" in _err(lambda: Op("reshape2d", dims=1))
    assert "expected porting.model layers, Blocks" in _err(lambda: Block(3))
    b = Block(Op("relu"))
    b.layers.append(b)
    assert "contains itself" in _err(lambda: KnetModel([b]))


def test_add_branches_is_layers21s_residual_add(tmp_path):
    """ResNetBasic as Knet's Models21 writes it: Add(Block(ConvBN, ConvBN), identity or a
    projection ConvBN; activation=relu), every branch reading the same input."""
    from porting.model import AddBranches, BatchNorm

    rng = np.random.default_rng(9)

    def bn(c):
        mean, var = _x(rng, (1, 1, c, 1), 0.1), np.abs(_x(rng, (1, 1, c, 1))) + 0.5
        scale, bias = np.abs(_x(rng, (1, 1, c, 1))) + 0.5, _x(rng, (1, 1, c, 1), 0.1)
        ours = BatchNorm(mean, var, np.concatenate([scale.ravel(), bias.ravel()]))
        return ours, K.BatchNorm(mean=mean, var=var, bias=bias, scale=scale)

    w1, w2, w3, w4, wp = (
        _x(rng, (3, 3, 3, 4)),
        _x(rng, (3, 3, 4, 4)),
        _x(rng, (3, 3, 4, 6)),
        _x(rng, (3, 3, 6, 6)),
        _x(rng, (1, 1, 4, 6)),
    )
    (b1, t1), (b2, t2), (b3, t3), (b4, t4), (bp, tp) = bn(4), bn(4), bn(6), bn(6), bn(6)
    model = KnetModel(
        [
            Conv(w1, mode=1, padding=1, name="stem"),
            AddBranches(
                Block(Conv(w2, mode=1, padding=1), b2, Op("relu")),
                None,
                activation="relu",
                name="basic",
            ),
            b1,  # a layer after the group reads the group's sum
            AddBranches(
                Block(
                    Conv(w3, mode=1, padding=1, stride=2),
                    b3,
                    Op("relu"),
                    Conv(w4, mode=1, padding=1),
                    b4,
                ),
                Block(Conv(wp, mode=1, stride=2, name="proj"), bp),
                activation="relu",
                name="down",
            ),
        ],
        input_size=(6, 6, 3),
    )
    # one row per layer, named as KnetModel names them; the projection reads the group's input
    assert model.inputs == {"proj": "bn2"}
    assert model["basic"].inputs == ("act1", "stem") and model["down"].inputs == ("bn4", "bn5")
    relu = K.relu
    truth = K.Block(
        K.Conv(w1, padding=1),
        K.Add(K.Block(K.Conv(w2, padding=1), t2, relu), lambda x: x, activation=relu),
        t1,
        K.Add(
            K.Block(K.Conv(w3, padding=1, stride=2), t3, relu, K.Conv(w4, padding=1), t4),
            K.Block(K.Conv(wp, stride=2), tp),
            activation=relu,
        ),
    )
    x = _x(rng, (6, 6, 3, 2))
    y = forward_knet(model, x).final
    truth_y = truth(x)
    np.testing.assert_allclose(y, truth_y, rtol=1e-12, atol=1e-12)
    for mode in ("each", "whole"):
        report = verify_model(model, x, mode=mode)
        assert report.ok, str(report)
    assert [r.name for r in report.rows] == [str(la.name) for la in model]
    save_export(model, tmp_path / "res")  # the wiring is written as the graph keys
    np.testing.assert_array_equal(forward_knet(load_export(tmp_path / "res"), x).final, y)
    assert "AddBranches" in _err(lambda: AddBranches(Op("relu")))
    assert "branch 2" in _err(lambda: AddBranches(Op("relu"), "x"))
