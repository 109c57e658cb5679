"""Recurrent models (embed -> RNN -> dense over every step or the last one): the Knet side
against PyTorch float64, the Keras side verified per layer and per step, the shipped examples
through the CLI, a fresh-process reload, and bad input (exit 2)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from porting.cli import main
from porting.errors import PortingError
from porting.model import (
    RNN,
    Dense,
    Embed,
    KnetModel,
    TimeDense,
    forward_knet,
    load_export,
    save_export,
)
from porting.model.kinds.embed import knet_sequence
from porting.rnn import RNNSpec, pack, random_weights

pytest.importorskip("tensorflow")


def _torch_model(w_embed, rnnw, dense_w, dense_b, x, last=False, h0=None, c0=None):
    """Knet's model written with PyTorch in float64 from Knet's definitions: `w[:, x]`, the RNN
    (cuDNN's gate order and two biases, as Knet: per-gate matrices map directly), then
    `w * reshape(y, H, :) .+ b` (every step) or `w * y[:, :, end] .+ b`."""
    torch = pytest.importorskip("torch", reason="PyTorch is the independent implementation")
    spec = rnnw.spec
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[spec.rnn_type]
    g, H = spec.gates, spec.hidden_size
    mod = cls(
        spec.input_size, H, num_layers=spec.num_layers, bidirectional=spec.bidirectional
    ).double()
    with torch.no_grad():
        for s in range(spec.slots):
            k, d = divmod(s, spec.directions)
            sfx = f"l{k}" + ("_reverse" if d else "")
            for name, a in (
                ("weight_ih_", rnnw.W[s].reshape(g * H, -1)),
                ("weight_hh_", rnnw.R[s].reshape(g * H, H)),
                ("bias_ih_", rnnw.bW[s].reshape(-1)),
                ("bias_hh_", rnnw.bR[s].reshape(-1)),
            ):
                getattr(mod, name + sfx).copy_(torch.from_numpy(a.astype(np.float64)))
        xt = torch.from_numpy(np.ascontiguousarray(x.T) - 1)  # (B, T), 0-based
        e = torch.nn.functional.embedding(xt, torch.from_numpy(w_embed.T.astype(np.float64).copy()))
        if h0 is None:
            y, _ = mod(e.transpose(0, 1))  # (T, B, Y)
        else:  # the constant initial states (H, slots), the same for every sample
            B = e.shape[0]

            def state(a):
                return torch.from_numpy(np.ascontiguousarray(a.T, np.float64))[:, None].expand(
                    -1, B, -1
                )

            init = (state(h0), state(c0)) if spec.rnn_type == "lstm" else state(h0)
            y, _ = mod(e.transpose(0, 1), init)
        W = torch.from_numpy(dense_w.astype(np.float64))
        b = torch.from_numpy(dense_b.astype(np.float64))
        if last:
            return (W @ y[-1].T + b[:, None]).numpy()  # (V, B)
        z = torch.einsum("vy,tby->vbt", W, y) + b[:, None, None]
        return z.numpy()  # Knet's (V, B, T)


def _build(rt, layers, bi, last, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    vocab, dim, hidden, out = 11, 5, 4, 6
    spec = RNNSpec(dim, hidden, rt, num_layers=layers, bidirectional=bi)
    rnnw = random_weights(spec, rng, dtype=dtype)
    we = rng.standard_normal((dim, vocab)).astype(dtype)
    dw = rng.standard_normal((out, spec.output_size)).astype(dtype)
    db = rng.standard_normal(out).astype(dtype)
    head = Dense(dw, db, name="out") if last else TimeDense(dw, db, name="out")
    layers_ = [
        Embed(we, name="embed"),
        RNN(pack(rnnw), spec, output="last" if last else "sequence", name="rnn"),
        head,
    ]
    return KnetModel(layers_, input_size=(7,)), (we, rnnw, dw, db)


@pytest.mark.parametrize(
    "rt,layers,bi,last",
    [
        ("lstm", 1, False, False),  # RNNLM
        ("lstm", 2, True, False),  # tagger
        ("gru", 1, True, True),  # IMDB-like: y[:, :, end]
        ("lstm", 2, True, True),
    ],
)
def test_knet_side_matches_torch_float64(rt, layers, bi, last):
    model, (we, rnnw, dw, db) = _build(rt, layers, bi, last)
    x = np.random.default_rng(3).integers(1, 12, size=(7, 3))
    got = forward_knet(model, x)[-1]
    want = _torch_model(we, rnnw, dw, db, x, last=last)
    got = got if last else knet_sequence(got)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_last_step_is_knet_y_end_not_the_final_states():
    """A bidirectional model reading y[:, :, end]: the Keras model computes Knet's value, which
    differs from Keras's Bidirectional(return_sequences=False) (the concatenated final h)."""
    from porting.model import to_keras, verify_model
    from porting.rnn import forward

    model, (we, rnnw, dw, db) = _build("gru", 1, True, True, dtype=np.float32)
    x = np.random.default_rng(4).integers(1, 12, size=(7, 2))
    km = to_keras(model)
    report = verify_model(model, x, keras_model=km)
    assert report.ok, str(report)
    # the RNN row compares y[:, :, end]: its Knet value is not the final states' concatenation
    emb = we[:, (x.T - 1)]  # (dim, B, T)
    out = forward(rnnw, emb)
    finals = np.concatenate([out.h[:, :, 0], out.h[:, :, 1]])
    assert np.abs(out.y[:, :, -1] - finals).max() > 1e-2
    rnn_row = report.rows[1]
    assert rnn_row.shape == (8, 2)
    assert any("y[:, :, end]" in n for n in report.notes)


def test_per_step_figures_and_a_broken_port_is_caught():
    from porting.model import to_keras, verify_model

    model, _ = _build("lstm", 2, True, False, dtype=np.float32)
    x = np.random.default_rng(5).integers(1, 12, size=(7, 2))
    km = to_keras(model)
    good = verify_model(model, x, keras_model=km)
    assert good.ok
    lines = [n for n in good.notes if n.startswith("rnn:")]
    assert any("layer 2 backward: ok" in n and "per step" in n for n in lines), lines
    # the usual mistake: Keras's forward-direction kernel with gates i and f exchanged
    lay = km.get_layer("rnn__rnn_layer2")
    ws = lay.get_weights()
    H = 4
    k = ws[0].copy()
    k[:, :H], k[:, H : 2 * H] = ws[0][:, H : 2 * H], ws[0][:, :H]
    lay.set_weights([k, *ws[1:]])
    bad = verify_model(model, x, keras_model=km, diagnose=False)
    assert not bad.ok and bad.first_divergent == "rnn"
    assert any("layer 2 forward: DIVERGES from step t=1" in n for n in bad.notes), bad.notes


def test_gru_gate_order_taken_as_knets_is_named():
    """The first port people try: Keras's GRU gate blocks filled in Knet's order (r, z, n)."""
    from porting.model import to_keras, verify_model

    model, _ = _build("gru", 1, False, False, dtype=np.float32)
    x = np.random.default_rng(8).integers(1, 12, size=(7, 2))
    km = to_keras(model)
    lay = km.get_layer("rnn__rnn_layer1")
    H = 4

    def swap(a):
        b = a.copy()
        b[..., :H], b[..., H : 2 * H] = a[..., H : 2 * H], a[..., :H]
        return b

    lay.set_weights([swap(a) for a in lay.get_weights()])
    bad = verify_model(model, x, keras_model=km, diagnose=False)
    assert not bad.ok and bad.first_divergent == "rnn"
    assert any("DIVERGES from step t=1" in n for n in bad.notes), bad.notes
    assert any("RNN diagnosis: gate_order" in n for n in bad.notes), bad.notes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rt,last", [("lstm", False), ("gru", True)])
def test_initial_state_matches_torch_float64(rt, last, dtype, tmp_path):
    """Two bidirectional layers starting from a constant state per slot (torch's `(h0, c0)`
    expanded over the batch): the Knet side, the Keras side (backward slots read their
    first step at t = T), and the export round trip (policy "initial")."""
    from porting.model import to_keras

    model, (we, rnnw, dw, db) = _build(rt, 2, True, last, dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    h0, c0 = rng.uniform(-1, 1, (2, 4, 4)).astype(dtype)
    rnn = model.layers[1]
    layers = list(model.layers)
    layers[1] = RNN(rnn.w, rnn.spec, output=rnn.output, h0=h0, c0=c0 if rt == "lstm" else None)
    model = KnetModel(layers, input_size=(7,))
    x = rng.integers(1, 12, size=(7, 3))
    want = _torch_model(we, rnnw, dw, db, x, last, h0, c0)
    zero = _torch_model(we, rnnw, dw, db, x, last)
    tol = 200 * np.finfo(dtype).eps * np.abs(want).max()
    assert np.abs(zero - want).max() > 100 * tol  # the states matter
    got = forward_knet(model, x)[-1]
    assert np.abs((got if last else knet_sequence(got)) - want).max() <= tol
    km = to_keras(model)
    yk = np.asarray(km(np.ascontiguousarray(x.T - 1).astype(np.int32)))
    yk = yk.T if last else yk.transpose(2, 0, 1)  # Keras (B, V) / (B, T, V) -> Knet's
    assert np.abs(yk - want).max() <= tol
    jpath, _ = save_export(model, tmp_path / "m")
    doc = json.loads(open(jpath).read())
    entry = doc["layers"][1]
    assert entry["rnn"]["h"] == "initial" and entry["params"]["h"]["size"] == [4, 1, 4]
    assert entry["rnn"]["c"] == ("initial" if rt == "lstm" else "nothing")
    back = load_export(tmp_path / "m")
    np.testing.assert_array_equal(back.layers[1].h0, h0)
    np.testing.assert_array_equal(forward_knet(back, x)[-1], got)


def test_gru_reset_before_export_round_trip_and_torch(tmp_path):
    """`reset_after=False` (Flux's GRUv3): PyTorch float64 written here from the equations
    `n = tanh(Wn x + Rn (r .* h) + bWn + bRn)`; the export marks it `resetAfter: false`."""
    torch = pytest.importorskip("torch")
    spec = RNNSpec(3, 4, "gru", reset_after=False)
    rnnw = random_weights(spec, np.random.default_rng(5), dtype=np.float64)
    h0 = np.random.default_rng(6).uniform(-1, 1, (4, 1))
    model = KnetModel([RNN.from_weights(rnnw, h0=h0)], input_size=(6, 3))
    x = np.random.default_rng(7).uniform(-1, 1, (6, 3, 2))  # model layout (T, X, B)
    W, R = (torch.from_numpy(np.array(a[0])) for a in (rnnw.W, rnnw.R))
    b = torch.from_numpy(rnnw.bW[0] + rnnw.bR[0])
    h = torch.from_numpy(h0).expand(-1, 2)
    ys = []
    for t in range(6):
        xt = torch.from_numpy(x[t])
        r = torch.sigmoid(W[0] @ xt + R[0] @ h + b[0][:, None])
        z = torch.sigmoid(W[1] @ xt + R[1] @ h + b[1][:, None])
        n = torch.tanh(W[2] @ xt + R[2] @ (r * h) + b[2][:, None])
        h = (1 - z) * n + z * h
        ys.append(h.numpy())
    want = np.stack(ys)
    got = forward_knet(model, x)[-1]
    assert np.abs(got - want).max() <= 100 * np.finfo(np.float64).eps
    jpath, _ = save_export(model, tmp_path / "m")
    entry = json.loads(open(jpath).read())["layers"][0]
    assert entry["rnn"]["resetAfter"] is False and entry["rnn"]["h"] == "initial"
    back = load_export(tmp_path / "m")
    assert back.layers[0].spec.reset_after is False
    np.testing.assert_array_equal(forward_knet(back, x)[-1], got)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d, a: a.__setitem__("rnn.h", a["rnn.h"][:3]), "size"),
        (lambda d, a: a.__setitem__("rnn.h", np.full_like(a["rnn.h"], np.nan)), "non-finite"),
        (lambda d, a: d["layers"][0]["rnn"].__setitem__("h", "weird"), "initial"),
        (lambda d, a: d["layers"][0]["rnn"].__setitem__("resetAfter", 0), "resetAfter"),
        (lambda d, a: d["layers"][0]["rnn"].__setitem__("resetAfter", False), "only a GRU"),
    ],
)
def test_hostile_initial_state_exports_exit_2(tmp_path, capsys, edit, match):
    spec = RNNSpec(3, 4, "lstm")
    rnnw = random_weights(spec, np.random.default_rng(8), dtype=np.float32)
    h0 = np.ones((4, 1), np.float32)
    layer = RNN.from_weights(rnnw, h0=h0, name="rnn")
    save_export(KnetModel([layer], input_size=(5, 3)), tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    arrays = dict(np.load(tmp_path / "m.npz"))
    edit(doc, arrays)
    doc["layers"][0]["params"]["h"]["size"] = list(arrays["rnn.h"].shape)
    np.savez(tmp_path / "m.npz", **arrays)
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(PortingError, match=match):
        load_export(tmp_path / "m")
    out = tmp_path / "out.keras"
    assert main(["convert", str(tmp_path / "m"), "-o", str(out), "--verify"]) == 2
    assert not out.exists() and match in capsys.readouterr().err


def test_export_round_trip_version_2(tmp_path):
    model, _ = _build("lstm", 2, True, False, dtype=np.float32)
    jpath, _ = save_export(model, tmp_path / "m")
    doc = json.loads(open(jpath).read())
    assert doc["version"] == 2
    kinds = [d["kind"] for d in doc["layers"]]
    assert kinds == ["embed", "rnn", "timedense"]
    assert doc["layers"][1]["rnn"]["hiddenSize"] == 4 and doc["layers"][1]["output"] == "sequence"
    back = load_export(tmp_path / "m")
    x = np.random.default_rng(6).integers(1, 12, size=(7, 2))
    np.testing.assert_array_equal(forward_knet(back, x)[-1], forward_knet(model, x)[-1])


def test_wrong_vector_length_is_bad_input(tmp_path, capsys):
    model, _ = _build("lstm", 1, False, False, dtype=np.float32)
    save_export(model, tmp_path / "m")
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["rnn.w"] = arrays["rnn.w"][:-3]
    np.savez(tmp_path / "m.npz", **arrays)
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["layers"][1]["params"]["w"]["size"] = list(arrays["rnn.w"].shape)
    (tmp_path / "m.json").write_text(json.dumps(doc))
    n = RNNSpec(5, 4, "lstm").param_length
    with pytest.raises(PortingError, match=str(n)):
        load_export(tmp_path / "m")
    assert main(["convert", str(tmp_path / "m"), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "rnn" in err and str(n) in err and str(n - 3) in err


def test_index_out_of_range_exit_2(tmp_path, capsys):
    x = np.ones((10, 2), np.int64)
    x[4, 1] = 41  # rnnlm's vocabulary is 40
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    code = main(["convert", "--example", "rnnlm", "--verify", "--input", str(tmp_path / "x.npy")])
    assert code == 2
    err = capsys.readouterr().err
    assert "index 41 at x[5, 2]" in err and "1 <= index <= 40" in err


_RELOAD = """
import sys, numpy as np, keras
m = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(m(x)))
"""


@pytest.mark.parametrize("name", ["rnnlm", "tagger"])
def test_example_converts_verifies_and_reloads_in_a_fresh_process(name, tmp_path, capsys):
    from porting.examples.rnn_models import RNN_EXAMPLES, token_input

    out = tmp_path / f"{name}.keras"
    assert main(["convert", "--example", name, "--verify", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OK: the Keras model computes what the Knet model computes" in text
    assert "per step: OK" in text
    model = RNN_EXAMPLES[name][0]()
    x = token_input(model, seed=11)
    np.save(tmp_path / "x.npy", np.ascontiguousarray(x.T - 1).astype(np.int32))  # Keras: 0-based
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = tmp_path / "reload.py"
    script.write_text(_RELOAD)
    r = subprocess.run(
        [sys.executable, str(script), str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "y.npy")  # (B, T, V)
    want = forward_knet(model, x)[-1]  # (T, V, B)
    np.testing.assert_allclose(got.transpose(1, 2, 0), want, rtol=0, atol=1e-5)


def test_dense_after_a_sequence_is_refused():
    """Knet's w * mat(y) on (Y, B, T) mixes the batch into the features: never silently."""
    spec = RNNSpec(5, 4, "lstm")
    rnn = RNN(pack(random_weights(spec, 0)), spec, name="rnn")
    with pytest.raises(PortingError, match="use TimeDense"):
        KnetModel([Embed(np.ones((5, 9), np.float32)), rnn, Dense(np.ones((3, 28), np.float32))])


def test_julia_rnn_entry_loads_and_a_state_array_is_refused(tmp_path):
    """The rnn layer object as PortingKnet.export_model writes it (julia/README.md)."""
    spec = RNNSpec(5, 4, "gru", bidirectional=True)
    w = pack(random_weights(spec, 1)).reshape(1, 1, -1)
    we = np.random.default_rng(2).standard_normal((5, 9)).astype(np.float32)
    entry = {
        "name": "layer2", "kind": "rnn", "julia_type": "RNN",
        "params": {"w": {"key": "layer2.w", "size": [1, 1, w.size], "eltype": "Float32"}},
        "rnn": {
            "inputSize": 5, "hiddenSize": 4, "rnnType": "gru", "numLayers": 1,
            "bidirectional": True, "skipInput": False, "dropout": 0.0, "h": "zero",
            "c": "nothing",
        },
        "activation": None, "conv": None, "pool": None, "order": None, "dropout": None,
    }  # fmt: skip
    doc = {
        "format": "porting-knet-export",
        "version": 2,
        "input_size": [6],
        "layers": [
            {"name": "layer1", "kind": "embed",
             "params": {"w": {"key": "layer1.w", "size": [5, 9], "eltype": "Float32"}}},
            entry,
        ],
    }  # fmt: skip
    np.savez(tmp_path / "m.npz", **{"layer1.w": np.asfortranarray(we), "layer2.w": w})
    (tmp_path / "m.json").write_text(json.dumps(doc))
    model = load_export(tmp_path / "m")
    assert model["layer2"].spec == spec and model["layer2"].output == "sequence"
    x = np.random.default_rng(3).integers(1, 10, size=(6, 2))
    y = knet_sequence(forward_knet(model, x)[-1])
    from porting.rnn import forward

    np.testing.assert_array_equal(y, forward(random_weights(spec, 1), we[:, x.T - 1]).y)
    for version in (3,):
        (tmp_path / "m.json").write_text(json.dumps({**doc, "version": version}))
        with pytest.raises(PortingError, match="newer than this porting reads"):
            load_export(tmp_path / "m")
    h = np.zeros((4, 2, 2), np.float32)
    entry["rnn"]["h"] = "array"
    entry["params"]["h"] = {"key": "layer2.h", "size": [4, 2, 2], "eltype": "Float32"}
    np.savez(
        tmp_path / "m.npz", **{"layer1.w": np.asfortranarray(we), "layer2.w": w, "layer2.h": h}
    )
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(PortingError, match='rnn.h = "array"'):
        load_export(tmp_path / "m")


def test_cli_whole_mode_on_given_indices(tmp_path, capsys):
    from porting.examples.rnn_models import tagger, token_input

    x = token_input(tagger(), seed=2, batch=4)
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    argv = ["convert", "--example", "tagger", "--verify", "--mode", "whole", "--json"]
    assert main([*argv, "--input", str(tmp_path / "x.npy")]) == 0
    doc = json.loads(capsys.readouterr().out)
    v = doc["verification"]
    assert doc["ok"] and v["input_shape"] == [10, 4]
    assert [r["kind"] for r in v["layers"]] == ["embed", "rnn", "timedense"]
    assert v["layers"][0]["max_abs_error"] == 0.0
    assert any("layer 2 backward: ok" in n for n in v["notes"])


@pytest.mark.parametrize("name", ["rnnlm", "tagger"])
def test_tflite_export_agrees_with_knet(name, tmp_path):
    """The RNN layers are unrolled (10 steps), so TFLite converts them with builtin operators;
    the interpreter agrees with the Knet side within float32 rounding (outputs ~0.3: 50 eps)."""
    import tensorflow as tf

    from porting.examples.rnn_models import RNN_EXAMPLES, token_input
    from porting.model.convert import export_tflite, to_keras

    model = RNN_EXAMPLES[name][0]()
    path = export_tflite(to_keras(model), tmp_path / f"{name}.tflite")
    x = token_input(model, seed=9, batch=3)
    interp = tf.lite.Interpreter(model_path=path)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [3, 10])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x.T - 1).astype(np.int32))
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    want = forward_knet(model, x)[-1]
    bound = 50 * np.finfo(np.float32).eps * np.abs(want).max()
    assert np.abs(y.transpose(1, 2, 0) - want).max() <= bound


def test_rnn_first_on_float_sequences_and_bad_arguments():
    """An RNN reading the model's float input (T, X, B) = Knet's (X, B, T) permuted."""
    from porting.model import model_sequence, verify_model
    from porting.rnn import forward

    spec = RNNSpec(3, 5, "tanh", num_layers=2)
    w = random_weights(spec, 2, dtype=np.float32)
    model = KnetModel([RNN(pack(w), spec, output="last")], input_size=(6, 3))
    xk = np.random.default_rng(0).standard_normal((3, 2, 6)).astype(np.float32)  # Knet's x
    x = np.ascontiguousarray(model_sequence(xk))
    np.testing.assert_array_equal(forward_knet(model, x)[-1], forward(w, xk).y[:, :, -1])
    assert verify_model(model, x).ok
    with pytest.raises(PortingError, match=r"expected \(T, 3\)"):
        KnetModel([RNN(pack(w), spec)], input_size=(6, 4))
    n = spec.param_length
    with pytest.raises(PortingError, match=rf"{n}"):
        RNN(pack(w)[:-1], spec)
    with pytest.raises(PortingError, match="output='middle'"):
        RNN(pack(w), spec, output="middle")


def test_tflite_export_of_an_initial_state_agrees_with_knet(tmp_path):
    """The initial-state layers (Cropping1D, Reshape, tanh, Dense) convert to TFLite builtins
    and the interpreter starts from the state: against the Knet side, and away from zero."""
    import tensorflow as tf

    from porting.model.convert import export_tflite, to_keras

    spec = RNNSpec(3, 4, "lstm", bidirectional=True)
    rng = np.random.default_rng(9)
    rnnw = random_weights(spec, rng, dtype=np.float32)
    h0, c0 = rng.uniform(-1, 1, (2, 4, 2)).astype(np.float32)
    model = KnetModel([RNN.from_weights(rnnw, h0=h0, c0=c0)], input_size=(6, 3))
    zero = KnetModel([RNN.from_weights(rnnw)], input_size=(6, 3))
    path = export_tflite(to_keras(model), tmp_path / "m.tflite")
    x = rng.uniform(-1, 1, (6, 3, 2)).astype(np.float32)
    interp = tf.lite.Interpreter(model_path=path)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [2, 6, 3])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(2, 0, 1)))
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"]).transpose(1, 2, 0)
    want = forward_knet(model, x)[-1]
    bound = 50 * np.finfo(np.float32).eps * np.abs(want).max()
    assert np.abs(y - want).max() <= bound
    assert np.abs(forward_knet(zero, x)[-1] - want).max() > 100 * bound


def test_gru_reset_before_tolerance_passes_the_port_and_catches_a_wrong_matrix():
    """The carried tolerance of the reset-before GRU (porting.rnn.verify) holds the float32
    Keras `GRU(reset_after=False)` over 40 steps, and a 1e-3 change in the new gate's
    recurrent kernel (what `Wh_h̃` becomes) is caught."""
    from porting.model import to_keras, verify_model

    spec = RNNSpec(3, 4, "gru", reset_after=False, num_layers=2)
    rnnw = random_weights(spec, np.random.default_rng(10), dtype=np.float32)
    model = KnetModel([RNN.from_weights(rnnw, name="rnn")], input_size=(40, 3))
    x = np.random.default_rng(11).uniform(-1, 1, (40, 3, 2)).astype(np.float32)
    km = to_keras(model)
    assert verify_model(model, x, keras_model=km).ok
    lay = km.get_layer("rnn__rnn_layer2")
    kernel, rec, bias = lay.get_weights()
    assert bias.shape == (12,)  # one bias: reset_after=False
    rec = rec.copy()
    rec[0, 8] += 1e-3  # the h block (Keras z, r, h): the matrix applied to r .* h
    lay.set_weights([kernel, rec, bias])
    bad = verify_model(model, x, keras_model=km, diagnose=False)
    assert not bad.ok and bad.first_divergent == "rnn"
