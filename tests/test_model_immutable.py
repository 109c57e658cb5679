"""A model never changes once built (issue 21): assigning its layers, a layer's field, or
writing into a layer's arrays is refused, so no plan or converted model can describe layers
the model no longer has; changed models are built anew (`model.replace`, `dataclasses.replace`)
and `copy.deepcopy` / pickle rebuild the model with a fresh plan.

The flipped LeNet's first layer is checked against PyTorch float64 (Knet's conv4 with mode=1
is a cross-correlation; then the bias, Knet's 2x2 max pool and relu), not against porting."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest

from porting import PortingError
from porting.examples import models, rnn_models
from porting.examples.lenet import lenet, lenet_input
from porting.model import Conv, Dense, KnetModel, forward_knet
from porting.rnn import RNNSpec, random_weights


def _flipped(model):
    return [dataclasses.replace(c, mode=1 - c.mode) if c.kind == "conv" else c for c in model]


def _torch_conv1(conv, x, mode):
    """Knet's tutorial conv layer relu.(pool(conv4(w, x; mode) .+ b)) in PyTorch float64."""
    torch = pytest.importorskip("torch", reason="PyTorch float64 is the independent Knet side")
    F = torch.nn.functional
    wt = torch.from_numpy(np.transpose(conv.w, (3, 2, 0, 1)).astype(np.float64))
    if mode == 0:
        wt = torch.flip(wt, dims=(2, 3))  # true convolution: the kernel rotated
    xt = torch.from_numpy(np.transpose(x, (3, 2, 0, 1)).astype(np.float64))
    y = F.conv2d(xt, wt) + torch.from_numpy(conv.b.reshape(1, -1, 1, 1).astype(np.float64))
    y = torch.relu(F.max_pool2d(y, 2))
    return y.numpy().transpose(2, 3, 1, 0)


def test_issue_scenario_an_edited_model_never_computes_the_old_layers():
    model = lenet()
    x = lenet_input()
    before = forward_knet(model, x)
    try:  # the issue's first use: a conversion (needs TensorFlow)
        import tensorflow  # noqa: F401

        from porting.model import to_keras

        to_keras(model)
    except ImportError:
        pass
    flipped = _flipped(model)
    with pytest.raises(PortingError, match=r"layers cannot be changed.*model\.replace"):
        model.layers = flipped
    with pytest.raises(PortingError, match="cannot be changed"):
        model.layers[0] = flipped[0]
    for mutate in ("append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"):
        with pytest.raises(PortingError):
            getattr(model.layers, mutate)(*([flipped[0]] if mutate in ("append", "remove") else []))
    with pytest.raises(PortingError, match=r"mode cannot be changed.*dataclasses\.replace"):
        model[0].mode = 1
    with pytest.raises(ValueError, match="read-only"):
        model[0].w[0, 0, 0, 0] = 1.0
    for key, value in (("input_size", (32, 32, 1)), ("name", "other"), ("plan", None)):
        with pytest.raises(PortingError, match=f"model 'lenet': {key} cannot be changed"):
            setattr(model, key, value)
    with pytest.raises(PortingError):
        del model.layers
    # nothing changed: the model still computes what it did, bit for bit
    again = forward_knet(model, x)
    assert all(np.array_equal(a, b) for a, b in zip(before.outputs, again.outputs, strict=True))
    # the changed model is a new one, which computes the new layers
    new = model.replace(layers=flipped)
    assert [c.mode for c in new if c.kind == "conv"] == [1, 1]
    assert [c.mode for c in model if c.kind == "conv"] == [0, 0]
    y1 = forward_knet(new, x)["conv1"]
    np.testing.assert_allclose(y1, _torch_conv1(new[0], x, mode=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        before["conv1"], _torch_conv1(model[0], x, mode=0), rtol=1e-5, atol=1e-5
    )
    assert np.abs(y1 - before["conv1"]).max() > 1e-2  # the flip shows
    same = KnetModel(flipped, input_size=(28, 28, 1), name="lenet")
    assert np.array_equal(forward_knet(same, x)[-1], forward_knet(new, x)[-1])


def test_replace_checks_and_keeps_what_was_not_changed():
    model = lenet()
    assert model.replace().input_size == (28, 28, 1) and model.replace().name == "lenet"
    assert model.replace(name="b").name == "b"
    with pytest.raises(PortingError, match=r"replace\(nope=...\)"):
        model.replace(nope=1)
    with pytest.raises(PortingError, match="input channels"):  # checked like a new model
        model.replace(input_size=(28, 28, 3))
    # a shortcut's wiring survives a replace of other layers
    res = models.resnet()
    wired = dict(res.inputs)
    assert wired and res.replace(layers=list(res.layers)).inputs == wired


def test_model_source_is_the_one_thing_a_loader_may_set():
    model = lenet()
    model.source = "somewhere"
    assert model.source == "somewhere"


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle"])
def test_copies_of_a_used_model_are_rebuilt_with_their_own_plan(how):
    model = lenet()
    x = lenet_input()
    y = forward_knet(model, x)[-1]
    other = {
        "deepcopy": copy.deepcopy,
        "copy": copy.copy,
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    }[how](model)
    assert other is not model and other.plan is not model.plan
    assert other.plan.model_id == id(other)  # made for the copy, not the original
    assert other.source == model.source
    assert np.array_equal(forward_knet(other, x)[-1], y)
    with pytest.raises(PortingError):
        other.layers = _flipped(other)
    with pytest.raises(PortingError):
        other[0].mode = 1
    if how != "copy":  # a deep copy holds its own arrays, read-only too
        assert other[0].w is not model[0].w
    assert not other[0].w.flags.writeable


def _every_example_layer():
    for make in (lenet, models.cnn_bn, models.resnet, models.layers21, models.dcgan):
        yield from make().layers
    yield from rnn_models.tagger().layers


def test_every_kind_is_sealed_and_its_arrays_read_only():
    seen = set()
    for layer in _every_example_layer():
        seen.add(layer.kind)
        with pytest.raises(PortingError, match="cannot be changed after the layer is built"):
            layer.name = "other"
        for key, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                assert not value.flags.writeable, (layer.label, key)
        for a in layer.params().values():
            with pytest.raises(ValueError, match="read-only"):
                a[(0,) * a.ndim] = 0
        sub = getattr(layer, "rnn_weights", None)
        if sub is not None:
            for field in ("W", "R", "bW", "bR"):
                assert all(m is None or not m.flags.writeable for m in getattr(sub, field))
    assert {"conv", "dense", "batchnorm", "pool", "embed", "rnn", "deconv"} <= seen


def test_a_layer_does_not_see_later_writes_to_the_array_it_was_given():
    w = np.ones((3, 3, 1, 2), np.float32)
    conv = Conv(w, np.zeros(2, np.float32))
    w[:] = 5.0
    assert float(conv.w.max()) == 1.0  # a copy: the caller's array is not the layer's
    frozen = conv.w
    assert Conv(frozen).w is frozen  # read-only arrays are taken as they are: no second copy
    dense = Dense(np.ones((2, 3), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        dense.b[0] = 1


def test_a_changed_layer_is_rebuilt_with_its_derived_parts():
    conv = Conv(np.ones((3, 3, 1, 2), np.float32), padding=1)
    other = dataclasses.replace(conv, mode=1, stride=2)
    assert (other.geometry.mode, other.geometry.stride) == (1, (2, 2))
    assert (conv.geometry.mode, conv.geometry.stride) == (0, (1, 1))
    with pytest.raises(PortingError, match="stride cannot be changed"):
        conv.stride = 2


def test_a_broadcast_weight_of_terabytes_is_a_clear_error():
    huge = np.broadcast_to(np.float32(1), (2**20, 2**20, 2, 2))
    with pytest.raises(PortingError, match="more than this machine"):
        Conv(huge)


def test_rnn_spec_and_weights_are_values():
    spec = RNNSpec(input_size=3, hidden_size=4, rnn_type="gru")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hidden_size = 5  # type: ignore[misc]
    weights = random_weights(spec, rng=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        weights.R = weights.R  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        weights.R[0][0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        weights.rnnparam(1, 1, 2)[0] = 1.0
    assert all(not a.flags.writeable for a in weights.bW + weights.bR)
