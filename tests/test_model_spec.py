"""porting.model without TensorFlow: the model description, the Knet forward pass, the export
pair, and every user mistake as a PortingError naming the layer and the shapes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from porting import PortingError
from porting.knet import reference
from porting.model import (
    Activation,
    Conv,
    Dense,
    Dropout,
    KnetModel,
    Mat,
    forward_knet,
    load_export,
    save_export,
)
from porting.model.forward import activate

F32 = np.float32


def _lenet_like(rng, hidden=6):
    return KnetModel(
        [
            Conv(
                rng.standard_normal((3, 3, 2, 4), F32),
                rng.standard_normal((1, 1, 4, 1), F32),
                activation="relu",
                pool=dict(window=2),
            ),
            Mat(),
            Dense(
                rng.standard_normal((hidden, 4 * 3 * 4), F32),
                rng.standard_normal(hidden, F32),
                activation="tanh",
            ),
            Dropout(0.5),
            Dense(rng.standard_normal((3, hidden), F32), None),
            Activation("softmax"),
        ],
        input_size=(10, 8, 2),
    )


def test_import_model_pulls_in_no_framework():
    code = (
        "import porting.model, porting.model.verify, porting.model.convert, porting.commands.convert, json, sys\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'juliacall') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_sizes_names_and_repr():
    m = _lenet_like(np.random.default_rng(0))
    assert [layer.name for layer in m] == ["conv1", "mat1", "dense1", "dropout1", "dense2", "act1"]
    assert m.output_sizes == [(4, 3, 4), (48,), (6,), (6,), (3,), (3,)]
    assert m.n_params == 3 * 3 * 2 * 4 + 4 + 6 * 48 + 6 + 3 * 6
    assert "conv1: conv4(2-d" in str(m) and "-> (4, 3, 4)" in str(m)
    assert m["dense1"] is m.layers[2]


def test_forward_matches_hand_composed_knet_ops():
    rng = np.random.default_rng(1)
    m = _lenet_like(rng)
    x = np.asfortranarray(rng.standard_normal((10, 8, 2, 3), F32))
    out = forward_knet(m, x, backend="reference")
    c = m.layers[0]
    from porting.geometry import ConvGeometry, PoolGeometry

    y = reference.conv4(c.w, x, ConvGeometry.from_knet(2), 1.0) + c.b
    y = np.maximum(reference.pool(y, PoolGeometry.from_knet(2, window=2), 1.0), 0)
    np.testing.assert_array_equal(out["conv1"], y)
    flat = y.reshape(-1, 3, order="F")  # Knet mat: column-major
    np.testing.assert_array_equal(out["mat1"], flat)
    h = np.tanh(m.layers[2].w @ flat + m.layers[2].b[:, None])
    np.testing.assert_allclose(out["dense1"], h, rtol=1e-6)
    z = m.layers[4].w @ out["dropout1"]
    p = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    np.testing.assert_allclose(out[-1], p, rtol=1e-6)
    np.testing.assert_allclose(out.final.sum(axis=0), 1, rtol=1e-6)
    assert out.backend == "reference" and len(out) == 6


def test_activation_golden_values():
    x = np.float64([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(activate("relu", x), [0, 0, 0, 0.5, 2])
    np.testing.assert_allclose(activate("sigm", x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_allclose(
        activate("elu", x), [np.exp(-2) - 1, np.exp(-0.5) - 1, 0, 0.5, 2], rtol=1e-15
    )
    np.testing.assert_allclose(activate("tanh", x), np.tanh(x))
    assert activate("sigm", np.float32([-100.0, 100.0])).tolist() == [
        pytest.approx(3.7e-44, rel=0.1),
        1.0,
    ]
    s = activate("softmax", np.float64([[1, 2], [3, 5]]))  # dims=1: columns sum to 1
    np.testing.assert_allclose(s.sum(axis=0), 1)
    np.testing.assert_allclose(s[:, 0], [1 / (1 + np.e**2), np.e**2 / (1 + np.e**2)])


def test_activation_aliases():
    assert Dense(np.ones((2, 2), F32), activation="Knet.sigm").activation == "sigm"
    assert Dense(np.ones((2, 2), F32), activation="sigmoid").activation == "sigm"
    assert Dense(np.ones((2, 2), F32), activation=None).activation == "identity"


# --------------------------------------------------------------------------- bad input


def _err(fn) -> str:
    with pytest.raises(PortingError) as e:
        fn()
    return str(e.value)


def test_conv_channels_that_do_not_chain():
    rng = np.random.default_rng(0)
    msg = _err(
        lambda: KnetModel(
            [
                Conv(rng.standard_normal((3, 3, 1, 8), F32)),
                Conv(rng.standard_normal((3, 3, 6, 4), F32), name="second"),
            ]
        )
    )
    assert (
        "'second'" in msg
        and "6 input channels" in msg
        and "outputs 8" in msg
        and "(3, 3, 6, 4)" in msg
    )


def test_conv_channels_vs_input_size():
    msg = _err(lambda: KnetModel([Conv(np.ones((3, 3, 3, 2), F32))], input_size=(8, 8, 1)))
    assert "conv layer 'conv1'" in msg and "3 input channels" in msg and "(8, 8, 1)" in msg


def test_dense_that_does_not_match_the_flattened_conv():
    rng = np.random.default_rng(0)
    msg = _err(
        lambda: KnetModel(
            [
                Conv(rng.standard_normal((5, 5, 1, 20), F32), pool=dict(window=2)),
                Conv(rng.standard_normal((5, 5, 20, 50), F32), pool=dict(window=2)),
                Dense(rng.standard_normal((500, 900), F32), name="fc"),
            ],
            input_size=(28, 28, 1),
        )
    )
    assert (
        "'fc'" in msg
        and "(500, 900)" in msg
        and "(4, 4, 50) = 800 features" in msg
        and "(500, 800)" in msg
    )


def test_dense_chain_and_bias_shapes():
    assert "expects 7 inputs" in _err(
        lambda: KnetModel([Dense(np.ones((5, 3), F32)), Dense(np.ones((2, 7), F32))])
    )
    msg = _err(lambda: Dense(np.ones((5, 3), F32), np.ones(4, F32), name="d"))
    assert "'d'" in msg and "(4,)" in msg and "(5,)" in msg
    msg = _err(lambda: Conv(np.ones((3, 3, 2, 4), F32), np.ones((1, 1, 5, 1), F32), name="c"))
    assert "'c'" in msg and "(1, 1, 5, 1)" in msg and "4 output" in msg


def test_other_mistakes():
    assert "mix float32, float64" in _err(
        lambda: KnetModel([Dense(np.ones((2, 2), F32)), Dense(np.ones((2, 2)))])
    )
    assert "unknown activation 'mish'" in _err(
        lambda: Dense(np.ones((2, 2), F32), activation="mish")
    )
    assert "int64" in _err(lambda: Dense(np.ones((2, 2), np.int64)))
    # padding >= the kernel extent is computed (Knet's CPU does); an input smaller than the
    # dilated kernel is not
    assert "padding" in _err(
        lambda: KnetModel([Conv(np.ones((3, 3, 1, 1), F32), dilation=3)], input_size=(5, 5, 1))
    )
    assert "padding=-1" in _err(
        lambda: KnetModel([Conv(np.ones((3, 3, 1, 1), F32), padding=-1)], input_size=(5, 5, 1))
    )
    # padding >= the kernel extent is Knet's CPU geometry (NNlib computes it): accepted
    conv = KnetModel([Conv(np.ones((3, 3, 1, 1), F32), padding=3)], input_size=(5, 5, 1))
    assert conv.output_sizes == [(9, 9, 1)]
    assert "used twice" in _err(lambda: KnetModel([Mat(name="a"), Mat(name="a")]))
    assert "follows a dense" in _err(
        lambda: KnetModel([Dense(np.ones((2, 2), F32)), Conv(np.ones((1, 1, 2, 2), F32))])
    )
    assert "dims" in _err(lambda: Activation("softmax", dims=0))
    assert "probability" in _err(lambda: Dropout(1.5))
    m = KnetModel([Dense(np.ones((2, 3), F32))], input_size=(3,))
    assert "convert x" in _err(lambda: forward_knet(m, np.ones((3, 1))))
    m1 = KnetModel([Conv(np.ones((3, 3, 1, 1), F32))], input_size=(5, 5, 1))
    assert "x[..., None]" in _err(lambda: forward_knet(m1, np.ones((5, 5, 1), F32)))


# --------------------------------------------------------------------------- export pair


def _write_julia_style(tmp_path, layers, arrays, **extra):
    """Write an export the way PortingKnet.export_model does: NPZ.jl (Fortran-ordered arrays
    with Julia's size) + JSON per the schema."""
    np.savez(tmp_path / "m.npz", **{k: np.asfortranarray(v) for k, v in arrays.items()})
    doc = {
        "format": "porting-knet-export",
        "version": 1,
        "julia_version": "1.9.4",
        "knet_version": "1.4.10",
        "nnlib_version": "0.8.21",
        "model_type": "Chain",
        "npz": "m.npz",
        "layers": layers,
        **extra,
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    return tmp_path / "m"


def _p(key, a):
    return {"key": key, "size": list(a.shape), "eltype": "Float32" if a.dtype == F32 else "Float64"}


def test_load_export_written_as_julia_writes_it(tmp_path):
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((3, 3, 1, 4), F32)
    b1 = rng.standard_normal((1, 1, 4, 1), F32)
    w2 = rng.standard_normal((5, 36), F32)
    b2 = rng.standard_normal(5, F32)
    # every key of julia/README.md's schema, nulls included, as export_model writes them
    none = {
        "conv": None,
        "pool": None,
        "order": None,
        "dropout": None,
        "dims": None,
        "activation": None,
    }
    layers = [
        {
            "name": "c1",
            "kind": "conv",
            "julia_type": "Conv",
            "params": {"w": _p("c1_w", w1), "b": _p("c1_b", b1)},
            "activation": "relu",
            "conv": {"padding": [1, 1], "stride": [1, 1], "dilation": [1, 1], "mode": 0},
            "pool": {"window": [2, 2], "padding": [0, 0], "stride": [2, 2], "mode": 0},
            "order": "pool-activation",
            "dropout": 0.0,
            "dims": None,
        },
        {**none, "name": "m", "kind": "mat", "julia_type": "function", "params": {}},
        {
            **none,
            "name": "d",
            "kind": "dropout",
            "julia_type": "function",
            "params": {},
            "dropout": 0.25,
        },
        {
            **none,
            "name": "fc",
            "kind": "dense",
            "julia_type": "Dense",
            "params": {"w": _p("fc_w", w2), "b": _p("fc_b", b2)},
            "activation": "identity",
            "dropout": 0.0,
        },
        {
            **none,
            "name": "sm",
            "kind": "activation",
            "julia_type": "function",
            "params": {},
            "activation": "softmax",
            "dims": 1,
        },
    ]
    prefix = _write_julia_style(
        tmp_path, layers, {"c1_w": w1, "c1_b": b1, "fc_w": w2, "fc_b": b2}, input_size=[6, 6, 1]
    )
    with np.load(tmp_path / "m.npz") as z:  # the file holds Fortran-ordered members, like NPZ.jl's
        assert z["c1_w"].flags.f_contiguous and not z["c1_w"].flags.c_contiguous
    for path in (prefix, tmp_path / "m.json", tmp_path / "m.npz"):
        m = load_export(path)
        assert [layer.kind for layer in m] == ["conv", "mat", "dropout", "dense", "activation"]
        np.testing.assert_array_equal(m["c1"].w, w1)
        assert m["c1"].w[1, 2, 0, 3] == w1[1, 2, 0, 3] and m["c1"].geometry.padding == (1, 1)
        assert m["c1"].activation == "relu" and m["d"].p == 0.25 and m.input_size == (6, 6, 1)
    # round trip through porting's own writer
    save_export(m, tmp_path / "again")
    m2 = load_export(tmp_path / "again")
    x = rng.standard_normal((6, 6, 1, 2), F32)
    np.testing.assert_array_equal(forward_knet(m, x).final, forward_knet(m2, x).final)


def test_export_errors_name_layer_and_shapes(tmp_path):
    w = np.ones((3, 3, 1, 4), F32)
    base = {
        "name": "c1",
        "kind": "conv",
        "params": {"w": _p("w", w)},
        "activation": "relu",
        "conv": {},
        "pool": None,
    }
    msg = _err(
        lambda: load_export(
            _write_julia_style(tmp_path, [base, {"name": "r", "kind": "lstm"}], {"w": w})
        )
    )
    assert "layer 2 ('r')" in msg and "unknown kind 'lstm'" in msg
    bad = dict(base, params={"w": {"key": "w", "size": [3, 3, 2, 4], "eltype": "Float32"}})
    msg = _err(lambda: load_export(_write_julia_style(tmp_path, [bad], {"w": w})))
    assert "'c1'" in msg and "(3, 3, 1, 4)" in msg and "(3, 3, 2, 4)" in msg
    # dims reversed (a C-order writer): refused with the reason
    w_odd = np.ones((3, 3, 2, 4), F32)
    _write_julia_style(tmp_path, [dict(base, params={"w": _p("w", w_odd)})], {})
    np.savez(tmp_path / "m.npz", w=np.ascontiguousarray(w_odd.T))
    msg = _err(lambda: load_export(tmp_path / "m"))
    assert "reversed" in msg
    bad = dict(base, params={"w": {"key": "nope", "size": [3, 3, 1, 4]}})
    assert "'nope'" in _err(lambda: load_export(_write_julia_style(tmp_path, [bad], {"w": w})))


def test_unreadable_truncated_and_directory_files(tmp_path):
    m = KnetModel([Dense(np.ones((2, 3), F32), np.zeros(2, F32))], input_size=(3,))
    save_export(m, tmp_path / "ok")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "ok.npz").write_bytes(data[: len(data) // 2])
    assert "ok.npz" in _err(lambda: load_export(tmp_path / "ok"))
    (tmp_path / "j.json").write_text('{"format": "porting-knet-export", "version": 1, "lay')
    assert "JSON" in _err(lambda: load_export(tmp_path / "j.json"))
    (tmp_path / "d").mkdir()
    assert "is a directory" in _err(lambda: load_export(tmp_path / "d"))
    assert "no such file" in _err(lambda: load_export(tmp_path / "missing"))
    (tmp_path / "v.json").write_text(
        '{"format": "porting-knet-export", "version": 9, "layers": [{}]}'
    )
    assert "newer" in _err(lambda: load_export(tmp_path / "v.json"))


def test_shipped_example_is_small_and_deterministic():
    from porting.examples import lenet as ex

    prefix = ex.lenet_prefix()
    size = prefix.with_suffix(".npz").stat().st_size + prefix.with_suffix(".json").stat().st_size
    assert size < 700_000  # well under 2 MB
    m = ex.lenet()
    fresh = ex.make_lenet()
    for a, b in zip(m, fresh, strict=True):
        for k in a.params():
            np.testing.assert_array_equal(
                a.params()[k], b.params()[k], err_msg=f"{a.name}.{k}: regenerate"
            )
    np.testing.assert_array_equal(ex.lenet_input(), ex.make_input())
    w = m["conv2"].w  # Knet xavier_uniform bound sqrt(6/(fanin+fanout))
    assert np.abs(w).max() <= np.sqrt(6 / (5 * 5 * 20 + 5 * 5 * 50)) and w.dtype == F32
    assert m.output_sizes == [(12, 12, 20), (4, 4, 50), (128,), (10,)]


@pytest.mark.parametrize(
    "module",
    [
        "porting.model",
        "porting.model.spec",
        "porting.model.forward",
        "porting.examples.lenet",
    ],
)
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
