"""Strict types in the export schema: an integer is an integer (not a string, a fraction, 2.0 or
a boolean), numbers are finite, and the error is one PortingError naming the layer and the key.
One test per class of bad value; each also checks the untouched file loads, so the failure is
the mutation's."""

import json

import numpy as np
import pytest

from porting import PortingError
from porting.model import Activation, Conv, Dense, KnetModel, Mat, Pool, load_export, save_export

F32 = np.float32


@pytest.fixture
def export(tmp_path):
    """A saved export and a function writing a mutated copy of its JSON."""
    rng = np.random.default_rng(0)
    model = KnetModel(
        [
            Conv(
                rng.standard_normal((3, 3, 1, 2)).astype(F32),
                np.zeros((1, 1, 2, 1), F32),
                padding=1,
                alpha=1.5,
                pool=dict(window=2),
                name="conv1",
            ),
            Pool(window=2, name="pool1"),
            Mat(name="mat1"),
            Dense(rng.standard_normal((3, 8)).astype(F32), dropout=0.25, name="dense1"),
            Activation("softmax", dims=1, name="act1"),
        ],
        input_size=(8, 8, 1),
    )
    json_path, _ = save_export(model, tmp_path / "m")
    doc = json.loads(open(json_path).read())
    load_export(json_path)  # the untouched export loads

    def mutated(change):
        d = json.loads(json.dumps(doc))
        change(d)
        with open(json_path, "w") as f:
            f.write(json.dumps(d))  # allow_nan: writes NaN / Infinity as Python's json does
        return json_path

    return mutated


def _msg(path) -> str:
    with pytest.raises(PortingError) as e:
        load_export(path)
    return str(e.value)


def _layer(d, name):
    return next(layer for layer in d["layers"] if layer["name"] == name)


def test_sizes_given_as_strings_are_refused_naming_the_key(export):
    msg = _msg(export(lambda d: d.__setitem__("input_size", "8,8,1")))
    assert "input_size" in msg and "'8,8,1'" in msg and "list of integers" in msg
    msg = _msg(export(lambda d: d.__setitem__("input_size", ["8", 8, 1])))
    assert "input_size[1]" in msg and "string" in msg
    msg = _msg(export(lambda d: _layer(d, "conv1")["conv"].__setitem__("padding", "1")))
    assert "conv layer 'conv1'" in msg and "conv.padding" in msg and "string" in msg


def test_fractional_and_float_sizes_are_refused_naming_the_key(export):
    msg = _msg(export(lambda d: d.__setitem__("input_size", [8.5, 8, 1])))
    assert "input_size[1] = 8.5" in msg and "fractional" in msg
    msg = _msg(export(lambda d: d.__setitem__("input_size", [8.0, 8, 1])))
    assert "input_size[1] = 8.0" in msg and "expected an integer" in msg
    msg = _msg(export(lambda d: _layer(d, "pool1")["pool"].__setitem__("window", [2, 2.5])))
    assert "pool layer 'pool1'" in msg and "pool.window[2] = 2.5" in msg
    msg = _msg(export(lambda d: _layer(d, "dense1")["params"]["w"].__setitem__("size", [3, 8.0])))
    assert "params.w.size" in msg and "8.0" in msg
    msg = _msg(export(lambda d: _layer(d, "act1").__setitem__("dims", 1.0)))
    assert "dims = 1.0" in msg


def test_booleans_are_not_integers(export):
    msg = _msg(export(lambda d: _layer(d, "conv1")["conv"].__setitem__("mode", True)))
    assert "conv.mode = True" in msg and "boolean" in msg
    msg = _msg(export(lambda d: _layer(d, "pool1")["pool"].__setitem__("stride", False)))
    assert "pool.stride = False" in msg and "boolean" in msg
    msg = _msg(export(lambda d: d.__setitem__("input_size", [True, 8, 1])))
    assert "input_size[1] = True" in msg
    msg = _msg(export(lambda d: _layer(d, "conv1").__setitem__("dropout", True)))
    assert "dropout = True" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_numbers_are_refused_naming_the_key(export, bad):
    msg = _msg(export(lambda d: _layer(d, "conv1")["conv"].__setitem__("alpha", bad)))
    assert "conv.alpha" in msg and "finite" in msg
    msg = _msg(export(lambda d: _layer(d, "pool1")["pool"].__setitem__("alpha", bad)))
    assert "pool.alpha" in msg and "finite" in msg
    msg = _msg(export(lambda d: _layer(d, "dense1").__setitem__("dropout", bad)))
    assert "dropout" in msg and "finite" in msg
    # the Python API refuses them too
    with pytest.raises(PortingError, match="alpha=.*finite"):
        Pool(window=2, alpha=bad)
    with pytest.raises(PortingError, match="dropout=.*probability"):
        Dense(np.ones((2, 2), F32), dropout=bad)


def test_wrong_json_types_for_names_and_strings(export):
    msg = _msg(export(lambda d: _layer(d, "conv1").__setitem__("activation", ["relu"])))
    assert "activation" in msg and "string" in msg
    msg = _msg(export(lambda d: _layer(d, "conv1").__setitem__("order", 1)))
    assert "order = 1" in msg and "string" in msg
    msg = _msg(export(lambda d: _layer(d, "dense1")["params"]["w"].__setitem__("key", 7)))
    assert "params.w.key = 7" in msg
    msg = _msg(export(lambda d: _layer(d, "conv1")["conv"].__setitem__("padding", 10**20)))
    assert "conv.padding" in msg and "below 2^62" in msg
    msg = _msg(export(lambda d: _layer(d, "conv1")["conv"].__setitem__("padding", 10**40)))
    assert "conv.padding" in msg and "41 digits" in msg  # refused while parsing the JSON
