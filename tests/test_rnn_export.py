"""Reading an exported Knet RNN (`rnn` layer of PortingKnet.export_model, version 2).

Expected values are written by hand in this file from Knet's definitions (`h = tanh(W x + R h'
+ bW + bR)`, the packed order W, R, bW, bR), not taken from the code under test.
"""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from porting.errors import PortingError
from porting.rnn import RNNSpec, forward, from_export


def _entry(rnn_type="tanh", X=1, H=1, L=1, bi=False, n=None, dtype="Float32", h="nothing"):
    n = RNNSpec(X, H, rnn_type, num_layers=L, bidirectional=bi).param_length if n is None else n
    return {
        "name": "layer2",
        "kind": "rnn",
        "julia_type": "RNN",
        "params": {"w": {"key": "layer2.w", "size": [1, 1, n], "eltype": dtype}},
        "rnn": {
            "inputSize": X,
            "hiddenSize": H,
            "rnnType": rnn_type,
            "numLayers": L,
            "bidirectional": bi,
            "skipInput": False,
            "dropout": 0.0,
            "h": h,
            "c": "nothing",
        },
        "activation": None,
        "conv": None,
        "pool": None,
        "order": None,
        "dropout": None,
        "dims": None,
    }


def test_hand_computed_tanh_step_with_an_exported_state():
    # Knet's packed vector of RNN(1, 1; rnnType=:tanh): W, R, bW, bR
    entry = _entry()
    entry["rnn"]["h"] = "array"
    entry["params"]["h"] = {"key": "layer2.h", "size": [1, 1, 1], "eltype": "Float64"}
    entry["params"]["w"]["eltype"] = "Float64"
    arrays = {
        "layer2.w": np.array([0.5, -0.25, 0.1, 0.2]).reshape(1, 1, 4),
        "layer2.h": np.array([[[0.3]]]),
    }
    # through JSON and an .npz, as the files arrive
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    r = from_export(json.loads(json.dumps(entry)), np.load(buf))
    assert r.name == "layer2" and r.h_policy == "array" and r.c is None
    assert r.weights.rnnparam(1, 1, 1).tolist() == [[0.5]]  # W' (in, H)
    assert r.weights.rnnparam(1, 2, 2).tolist() == [0.2]  # bR
    y = forward(r.weights, np.array([[[1.0]]]), h=r.h).y
    assert y[0, 0, 0] == pytest.approx(math.tanh(0.5 * 1.0 - 0.25 * 0.3 + 0.1 + 0.2), abs=1e-15)


def test_bidirectional_lstm_layout_and_policies():
    X, H = 2, 3
    spec = RNNSpec(X, H, "lstm", num_layers=2, bidirectional=True)
    n = spec.param_length
    entry = _entry("lstm", X, H, 2, True)
    entry["rnn"]["h"], entry["rnn"]["c"] = "zero", "array"
    entry["params"]["c"] = {"key": "layer2.c", "size": [H, 5, 4], "eltype": "Float32"}
    w = np.arange(n, dtype=np.float32).reshape(1, 1, n)
    c = np.asfortranarray(np.arange(H * 5 * 4, dtype=np.float32).reshape(H, 5, 4))
    r = from_export(entry, {"layer2.w": w, "layer2.c": c})
    assert r.h == 0 and r.c is c and str(r.spec) == str(spec)
    # first matrix: layer 1 forward, input gate, H rows of X: rnnparam is its transpose
    assert r.weights.rnnparam(1, 1, 1).tolist() == [[0, 2, 4], [1, 3, 5]]
    # the last element of r.w is the recurrent output-gate bias of slot 4 (layer 2 backward)
    assert r.weights.rnnparam(4, 8, 2)[-1] == n - 1


def test_state_arrays_of_a_non_lstm_c_are_ignored_and_nothing_is_none():
    entry = _entry("gru", 2, 2)
    r = from_export(entry, {"layer2.w": np.zeros((1, 1, RNNSpec(2, 2, "gru").param_length), "f")})
    assert r.h is None and r.c is None and r.c_policy == "nothing"


def test_porting_rnn_is_lazy_and_framework_free():
    code = (
        "import sys, porting\n"
        "porting.rnn.from_export\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'scipy', 'juliacall') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "assert 'rnn' in dir(porting) and 'rnn' in porting.__all__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _arrays(entry):
    n = entry["params"]["w"]["size"][-1]
    return {"layer2.w": np.zeros((1, 1, n), np.float32)}


RNN_KEYS = [
    "inputSize",
    "hiddenSize",
    "rnnType",
    "numLayers",
    "bidirectional",
    "skipInput",
    "dropout",
    "h",
    "c",
]


@pytest.mark.parametrize("key", RNN_KEYS)
def test_missing_rnn_key_is_named(key):
    entry = _entry()
    del entry["rnn"][key]
    with pytest.raises(PortingError, match=rf"layer 'layer2': rnn\.{key} is missing"):
        from_export(entry, _arrays(entry))


@pytest.mark.parametrize(
    "key, value",
    [
        ("inputSize", "1"),
        ("inputSize", 1.0),
        ("hiddenSize", True),
        ("hiddenSize", 0),
        ("numLayers", None),
        ("numLayers", -1),
        ("rnnType", "LSTM"),
        ("rnnType", 2),
        ("rnnType", ":tanh"),
        ("bidirectional", 1),
        ("skipInput", "false"),
        ("dropout", "0.5"),
        ("dropout", float("nan")),
        ("dropout", 1.0),
        ("dropout", True),
        ("h", None),
        ("h", 0),
        ("c", "zeros"),
    ],
)
def test_wrong_type_or_value_names_the_key(key, value):
    entry = _entry()
    entry["rnn"][key] = value
    with pytest.raises(PortingError, match=rf"rnn\.{key} = ") as e:
        from_export(entry, _arrays(entry))
    assert repr(value) in str(e.value)


def test_unknown_rnn_key_is_named():
    entry = _entry()
    entry["rnn"]["hiddensize"] = 4
    with pytest.raises(PortingError, match=r"rnn\.hiddensize: not a key"):
        from_export(entry, _arrays(entry))


def test_wrong_vector_length_gives_expected_length_and_formula():
    spec = RNNSpec(3, 4, "gru", num_layers=2, bidirectional=True)
    entry = _entry("gru", 3, 4, 2, True, n=spec.param_length - 1)
    with pytest.raises(PortingError) as e:
        from_export(entry, _arrays(entry))
    msg = str(e.value)
    assert "params.w" in msg and f"length {spec.param_length - 1}" in msg
    assert f"expected {spec.param_length}" in msg and "gates*(H*in + H*H + 2*H)" in msg


def test_skip_input_with_different_sizes_is_refused_with_the_key():
    entry = _entry("tanh", 2, 3)
    entry["rnn"]["skipInput"] = True
    with pytest.raises(PortingError, match=r"layer 'layer2': rnn: RNN skipInput=true"):
        from_export(entry, _arrays(entry))


def _mutate(path, value):
    def f(entry, arrays):
        node = entry
        for k in path[:-1]:
            node = node[k]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return f


BAD = {
    "params missing": (_mutate(("params",), KeyError), r"params is missing"),
    "params not an object": (_mutate(("params",), [1]), r"params = \[1\]"),
    "params.w missing": (_mutate(("params", "w"), KeyError), r"params\.w is missing"),
    "params.w a string": (_mutate(("params", "w"), "layer2.w"), r"params\.w = 'layer2\.w'"),
    "params.w.key missing": (_mutate(("params", "w", "key"), KeyError), r"params\.w\.key is"),
    "params.w.key a number": (_mutate(("params", "w", "key"), 3), r"params\.w\.key = 3"),
    "params.w.size a string": (_mutate(("params", "w", "size"), "4"), r"params\.w\.size = '4'"),
    "params.w.eltype Float16": (
        _mutate(("params", "w", "eltype"), "Float16"),
        r"params\.w\.eltype = 'Float16'",
    ),
    "params.w.eltype Float64": (
        _mutate(("params", "w", "eltype"), "Float64"),
        r"params\.w: array 'layer2\.w' has element type float32, but the \.json says Float64",
    ),
    "params.w.size mismatch": (
        _mutate(("params", "w", "size"), [4]),
        r"params\.w: array 'layer2\.w' has size \[1, 1, 4\], but the \.json says \[4\]",
    ),
    "params.w.key not in the arrays": (
        _mutate(("params", "w", "key"), "layer9.w"),
        r"params\.w\.key = 'layer9\.w', but the arrays have no such entry \(they have layer2\.w\)",
    ),
    "unknown param": (_mutate(("params", "b"), {}), r"params\.b: expected only w, h and c"),
    "rnn missing": (_mutate(("rnn",), KeyError), r"rnn is missing"),
    "rnn not an object": (_mutate(("rnn",), "lstm"), r"rnn = 'lstm'"),
    "kind dense": (_mutate(("kind",), "dense"), r"kind = 'dense'; expected \"rnn\""),
    "name a number": (_mutate(("name",), 2), r"name = 2; expected a string"),
    "h array without params.h": (_mutate(("rnn", "h"), "array"), r"params\.h is missing"),
    "params.h without array policy": (
        _mutate(("params", "h"), {"key": "layer2.w", "size": [1, 1, 4], "eltype": "Float32"}),
        r"params\.h is given but rnn\.h = 'nothing'",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_entry_is_one_porting_error_naming_the_key(case):
    mutate, pattern = BAD[case]
    entry = _entry()
    arrays = _arrays(entry)
    entry = copy.deepcopy(entry)
    mutate(entry, arrays)
    with pytest.raises(PortingError, match=pattern):
        from_export(entry, arrays)


@pytest.mark.parametrize(
    "h, pattern",
    [
        (np.zeros((2, 1, 1), np.float32), r"params\.h has size \[2, 1, 1\]; expected \(H, B, L"),
        (np.zeros((1, 3, 2), np.float32), r"params\.h has size \[1, 3, 2\]"),
        (np.zeros((1, 1, 1, 1), np.float32), r"params\.h has size \[1, 1, 1, 1\]"),
        (np.zeros((1, 2, 1), np.float64), r"params\.h is float64 but params\.w is float32"),
    ],
)
def test_bad_state_array(h, pattern):
    entry = _entry(h="array")
    eltype = "Float64" if h.dtype == np.float64 else "Float32"
    entry["params"]["h"] = {"key": "layer2.h", "size": list(h.shape), "eltype": eltype}
    arrays = _arrays(entry) | {"layer2.h": h}
    with pytest.raises(PortingError, match=pattern):
        from_export(entry, arrays)


def test_state_of_a_trailing_singleton_size_is_accepted():
    # Knet accepts r.h of size (H, B) for a one-slot RNN (trailing dimensions of size 1)
    entry = _entry(h="array")
    h = np.full((1, 2), 0.5, np.float32)
    entry["params"]["h"] = {"key": "layer2.h", "size": [1, 2], "eltype": "Float32"}
    r = from_export(entry, _arrays(entry) | {"layer2.h": h})
    y = forward(r.weights, np.ones((1, 2, 1), np.float32), h=r.h).y
    assert y.shape == (1, 2, 1) and np.all(y == 0)  # zero weights: tanh(0)


@pytest.mark.parametrize("entry", [None, [], "rnn", 3])
def test_entry_not_an_object(entry):
    with pytest.raises(PortingError, match="expected a layer object"):
        from_export(entry, {})


@pytest.mark.parametrize("arrays", [None, [np.zeros(4)], "layer2.w"])
def test_arrays_not_a_mapping(arrays):
    with pytest.raises(PortingError, match="expected a mapping of array names"):
        from_export(_entry(), arrays)


def test_array_of_objects_is_refused():
    entry = _entry()
    with pytest.raises(PortingError, match=r"params\.w: array 'layer2\.w' is a list"):
        from_export(entry, {"layer2.w": [0.0, 0.0, 0.0, 0.0]})


def _readme_rnn_example() -> tuple[str, dict]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "julia" / "README.md").read_text("utf-8")
    section = text[text.index("## Export format") :]
    section = section[: section.find("\n## ", 1)]
    blocks = [b for b in section.split("```json\n")[1:] if '"kind": "rnn"' in b]
    assert len(blocks) == 1, "julia/README.md should show one rnn layer object"
    return section, json.loads(blocks[0].split("```", 1)[0])


def test_the_documented_rnn_layer_object_reads_and_every_key_is_described():
    section, layer = _readme_rnn_example()
    for key in layer["rnn"]:
        assert f"`{key}`" in section.split("An `rnn` layer's `rnn` object", 1)[1], key
    assert set(layer) <= {"name", "kind", "julia_type", "params", "rnn"} | {
        "activation",
        "conv",
        "pool",
        "order",
        "dropout",
        "dims",
    }
    arrays = {
        ref["key"]: np.zeros(ref["size"], np.dtype(ref["eltype"].lower()))
        for ref in layer["params"].values()
    }
    r = from_export(layer, arrays)
    assert str(r.spec) == "LSTM(input=8,hidden=16,bidirectional)"
    assert r.h is arrays["layer2.h"] and r.c == 0 and (r.h_policy, r.c_policy) == ("array", "zero")
