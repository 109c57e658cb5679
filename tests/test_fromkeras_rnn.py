"""Keras text models -> Knet (porting.fromkeras): Embedding, SimpleRNN / LSTM / GRU,
Bidirectional and a Dense at every step become Knet's `w[:, x]`, `RNN` (packed `r.w`) and
`w * reshape(y, H, :) .+ b`. Each model is built in Keras; the original Keras model's outputs
are the expected values (layer by layer through `verify_model` against the original, per time
step, and end to end); the gate order is checked against the block layout written by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from porting.cli import main  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.fromkeras import from_keras  # noqa: E402
from porting.model import (  # noqa: E402
    RNN,
    Embed,
    KnetModel,
    TimeDense,
    forward_knet,
    load_export,
    save_export,
    to_keras,
    verify_model,
)
from porting.rnn import RNNSpec  # noqa: E402
from porting.rnn.keras import keras_weights, weights_from_keras  # noqa: E402
from porting.rnn.params import random_weights, weights_from_gates  # noqa: E402

L = keras.layers
T, VOCAB = 9, 13


def _randomise(model, seed=0):
    """Every weight moved off Keras' initial values (zero biases and orthogonal recurrent
    kernels hide gate-order and bias mistakes)."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [(w + 0.3 * rng.standard_normal(w.shape)).astype(w.dtype) for w in model.get_weights()]
    )
    return model


def _with_dtype(dtype, build):
    keras.config.set_dtype_policy(dtype)
    try:
        return _randomise(build())
    finally:
        keras.config.set_dtype_policy("float32")


def _lstm_classifier():
    """Embedding -> LSTM (last step) -> Dense: a sentence classifier."""
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, 5, name="emb")(inp)
    x = L.LSTM(6, name="lstm")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="out")(x), name="lstm_text")


def _bigru_tagger():
    """Embedding -> Bidirectional(GRU) -> TimeDistributed(Dense): a sequence tagger."""
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, 5, name="emb")(inp)
    x = L.Bidirectional(L.GRU(4, return_sequences=True), name="bigru")(x)
    x = L.TimeDistributed(L.Dense(3, activation="softmax"), name="tags")(x)
    return keras.Model(inp, x, name="bigru_tagger")


def _stacked():
    """SimpleRNN (relu) -> LSTM (sequence) -> Dense over every step -> Bidirectional(LSTM)."""
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, 4, name="emb")(inp)
    x = L.SimpleRNN(5, activation="relu", return_sequences=True, name="srnn")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.LSTM(4, return_sequences=True, use_bias=False, name="lstm")(x)
    x = L.Dense(6, activation="tanh", name="step_dense")(x)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bilstm")(x)
    return keras.Model(inp, x, name="stacked")


def _conv_lstm():
    """Embedding -> Conv1D over the steps -> LSTM -> Dense: a sequence between a conv and an
    RNN is the same (T, X, B) array (Knet's (X, B, T) permuted; conv1d's (W, C, N))."""
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, 4, name="emb")(inp)
    x = L.Conv1D(5, 3, padding="same", activation="relu", name="conv")(x)
    x = L.LSTM(4, name="lstm")(x)
    return keras.Model(inp, L.Dense(2, name="out")(x), name="conv_lstm")


MODELS = {
    "lstm": _lstm_classifier,
    "bigru": _bigru_tagger,
    "stacked": _stacked,
    "conv_lstm": _conv_lstm,
}
KINDS = {
    "lstm": ["embed", "rnn", "dense"],
    "bigru": ["embed", "rnn", "timedense"],
    "stacked": ["embed", "rnn", "dropout", "rnn", "timedense", "rnn"],
    "conv_lstm": ["embed", "conv", "rnn", "dense"],
}


def _tokens(seed=1, batch=3):
    """Knet's 1-based token indices (T, B); Keras reads x' - 1."""
    return np.random.default_rng(seed).integers(1, VOCAB + 1, size=(T, batch))


def _tf(y):
    """A model-layout output ((T, Y, B) sequence or (Y, B)) in TensorFlow's layout."""
    return y.transpose(2, 0, 1) if y.ndim == 3 else y.T


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_keras_text_model_converts_and_verifies_against_the_original(name, dtype):
    km = _with_dtype(dtype, MODELS[name])
    model = from_keras(km)
    assert [layer.kind for layer in model.layers] == KINDS[name]
    assert str(model.dtype) == dtype
    x = _tokens()
    # layer by layer against the ORIGINAL Keras model (rows matched by the Keras layer names)
    report = verify_model(model, x, keras_model=km)
    assert report.ok, str(report)
    per_step = [n for n in report.notes if "per step: OK" in n]
    assert len(per_step) == KINDS[name].count("rnn"), report.notes
    # and against the Keras model rebuilt from the Knet one
    assert verify_model(model, x).ok
    # end to end: Knet's forward against the original, which never saw porting's arithmetic.
    # The carried RNN bound of verify_model is the claim; this is the plain check that the
    # outputs are the original's to a few hundred eps of their scale (a wrong gate order or
    # bias moves them by their own size).
    expected = np.asarray(km(x.T - 1))
    y = _tf(forward_knet(model, x)[-1])
    assert y.shape == expected.shape
    eps = np.finfo(expected.dtype).eps
    np.testing.assert_allclose(y, expected, rtol=0, atol=256 * eps * np.abs(expected).max())


def test_an_embedding_bag_classifier_converts():
    """Embedding -> GlobalAveragePooling1D -> Dense (no RNN): the mean over the steps."""
    km = _randomise(
        keras.Sequential(
            [
                keras.Input((T,), dtype="int32"),
                L.Embedding(VOCAB, 4, name="emb"),
                L.GlobalAveragePooling1D(name="gap"),
                L.Dense(3, name="out"),
            ]
        )
    )
    model = from_keras(km)
    x = _tokens()
    assert verify_model(model, x).ok
    expected = np.asarray(km(x.T - 1))
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(
        forward_knet(model, x)[-1].T, expected, rtol=0, atol=64 * eps * np.abs(expected).max()
    )


def test_gate_blocks_land_where_the_gate_orders_say():
    """Hand-derived: Keras GRU blocks are z, r, h and Knet's (cuDNN's) gates r, z, n, so
    Keras block 1 is Knet gate 0 and block 0 is gate 1; LSTM's i, f, c, o is Knet's i, f, n, o."""
    h, n_in = 2, 3
    for rnn_type, gates, want in (("gru", 3, [1, 0, 2]), ("lstm", 4, [0, 1, 2, 3])):
        # block k of every Keras array holds the value k (+10 in the recurrent kernel, ...)
        kernel = np.repeat(np.arange(gates, dtype=np.float64), h)[None].repeat(n_in, 0)
        recurrent = kernel[:h] + 10
        row = np.repeat(np.arange(gates, dtype=np.float64), h)
        bias = np.stack([row + 20, row + 30]) if rnn_type == "gru" else row + 20
        w = weights_from_keras(RNNSpec(n_in, h, rnn_type), [[kernel, recurrent, bias]])
        for g, k in enumerate(want):
            assert np.all(w.W[0][g] == k) and np.all(w.R[0][g] == k + 10)
            assert np.all(w.bW[0][g] == k + 20)
            assert np.all(w.bR[0][g] == (k + 30 if rnn_type == "gru" else 0))


@pytest.mark.parametrize("rnn_type", ["tanh", "relu", "lstm", "gru"])
def test_keras_weights_round_trip(rnn_type):
    spec = RNNSpec(3, 4, rnn_type, bidirectional=True)
    w = random_weights(spec, 0, dtype=np.float64)
    back = weights_from_keras(spec, keras_weights(w))
    for s in range(spec.slots):
        np.testing.assert_array_equal(back.W[s], w.W[s])
        np.testing.assert_array_equal(back.R[s], w.R[s])
        # Keras keeps one bias bW + bR per gate (GRU: both rows): Knet's sum is the same
        np.testing.assert_array_equal(back.bW[s] + back.bR[s], w.bW[s] + w.bR[s])
    with pytest.raises(PortingError, match="recurrent_kernel"):
        ws = keras_weights(w)
        weights_from_keras(spec, [[ws[0][0], ws[0][1][:, :-1], ws[0][2]], ws[1]])


def _sequential(*layers, tokens=True):
    inp = keras.Input((T,), dtype="int32") if tokens else keras.Input((T, 4))
    return keras.Sequential([inp, *layers])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: _sequential(L.Embedding(VOCAB, 4), L.GRU(3, reset_after=False)), "reset_after"),
        (lambda: _sequential(L.Embedding(VOCAB, 4, mask_zero=True), L.LSTM(3)), "mask_zero"),
        (lambda: _sequential(L.Masking(), L.LSTM(3), tokens=False), "mask"),
        (lambda: _sequential(L.LSTM(3, activation="relu"), tokens=False), "tanh and sigmoid"),
        (lambda: _sequential(L.SimpleRNN(3, activation="sigmoid"), tokens=False), ":tanh or"),
        (lambda: _sequential(L.LSTM(3, go_backwards=True), tokens=False), "go_backwards"),
        (
            lambda: _sequential(L.Bidirectional(L.LSTM(3)), tokens=False),
            "backward direction's FINAL state",
        ),
        (
            lambda: _sequential(
                L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"), tokens=False
            ),
            "merge_mode",
        ),
        (
            lambda: _sequential(L.TimeDistributed(L.Dropout(0.1)), tokens=False),
            r"only TimeDistributed\(Dense\)",
        ),
    ],
)
def test_what_knet_does_not_compute_is_refused_with_the_reason(build, match):
    with pytest.raises(PortingError, match=match):
        from_keras(build())


def test_stateful_is_refused():
    inp = keras.Input(batch_shape=(2, T, 4))
    km = keras.Model(inp, L.LSTM(3, stateful=True, name="s")(inp))
    with pytest.raises(PortingError, match="stateful"):
        from_keras(km)


def test_a_float_sequence_input_converts():
    """An RNN reading the model's (T, X) float input directly (no embedding)."""
    km = _randomise(_sequential(L.GRU(4, name="gru"), L.Dense(2, name="d"), tokens=False))
    model = from_keras(km)
    x_tf = np.random.default_rng(3).standard_normal((2, T, 4)).astype(np.float32)
    x = np.ascontiguousarray(x_tf.transpose(1, 2, 0))  # (T, X, B), the model layout
    assert verify_model(model, x, keras_model=km).ok
    expected = np.asarray(km(x_tf))
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(
        forward_knet(model, x)[-1].T, expected, rtol=0, atol=256 * eps * np.abs(expected).max()
    )


# ------------------------------------------------------------------ hand ports and diagnosis


def _hand_port(km, gate_blocks):
    """A Knet port of `_gru_tagger` written by hand: Keras' GRU kernel cut into blocks and the
    blocks taken as Knet's gates in the order `gate_blocks` (correct: Keras block 1 is Knet's
    reset gate r, block 0 its update gate z)."""
    emb, kernel, recurrent, bias, wd, bd = km.get_weights()
    h = recurrent.shape[0]

    def blocks(m):
        return np.stack([m[:, b * h : (b + 1) * h].T for b in gate_blocks])

    def gates(v):
        return np.stack([v[b * h : (b + 1) * h] for b in gate_blocks])

    spec = RNNSpec(emb.shape[1], h, "gru")
    w = weights_from_gates(
        spec, [blocks(kernel)], [blocks(recurrent)], [gates(bias[0])], [gates(bias[1])]
    )
    layers = [
        Embed(emb.T, name="emb"),
        RNN.from_weights(w, name="gru"),
        TimeDense(wd.T, bd, name="tags"),
    ]
    return KnetModel(layers, input_size=(T,))


def _gru_tagger():
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, 5, name="emb")(inp)
    x = L.GRU(4, return_sequences=True, name="gru")(x)
    return _randomise(keras.Model(inp, L.Dense(3, name="tags")(x)))


def test_a_correct_hand_port_of_a_gru_verifies():
    km = _gru_tagger()
    report = verify_model(_hand_port(km, (1, 0, 2)), _tokens(), keras_model=km)
    assert report.ok, str(report)


def test_keras_gate_order_taken_for_cudnns_is_caught_and_named():
    """Issue 19's fourth hand-port mistake: Keras' z, r, h blocks read as Knet's r, z, n."""
    km = _gru_tagger()
    report = verify_model(_hand_port(km, (0, 1, 2)), _tokens(), keras_model=km)
    assert not report.ok
    assert report.first_divergent == "gru"
    assert report.diagnosis is not None and report.diagnosis.cause == "gate_order"
    assert report.to_dict()["diagnosis"]["cause"] == "gate_order"
    assert any("RNN diagnosis: gate_order" in n for n in report.notes), report.notes


# ----------------------------------------------------------------------------- the CLI


def test_convert_cli_verifies_a_text_model_on_token_indices(tmp_path, capsys):
    km = _with_dtype("float32", _bigru_tagger)
    path = tmp_path / "tagger.keras"
    km.save(path)
    prefix = tmp_path / "tagger"
    argv = ["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--round-trip"]
    code = main([*argv, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["verification"]["ok"] and doc["round_trip"]["ok"]
    model = load_export(prefix)
    x = _tokens(seed=4, batch=2)
    expected = np.asarray(km(x.T - 1))
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(
        _tf(forward_knet(model, x)[-1]), expected, rtol=0, atol=256 * eps * np.abs(expected).max()
    )


def test_export_round_trip_is_bit_exact(tmp_path):
    model = from_keras(_with_dtype("float64", _stacked))
    save_export(model, tmp_path / "m")
    again = load_export(tmp_path / "m")
    x_tf = _tokens().T - 1
    np.testing.assert_array_equal(
        np.asarray(to_keras(again)(x_tf)), np.asarray(to_keras(model)(x_tf))
    )
