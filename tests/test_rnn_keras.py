"""Knet RNN -> Keras 3: the converted layers agree with the NumPy reference (itself checked
against PyTorch in test_rnn_reference.py): to float64 rounding in float64, within the carried
float32 bound of porting.rnn.verify in float32."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the Keras conversion needs TensorFlow")

from porting.errors import PortingError  # noqa: E402
from porting.rnn import RNNSpec, forward, random_weights  # noqa: E402
from porting.rnn.keras import (  # noqa: E402
    keras_forward,
    keras_weights,
    state_to_keras,
    to_keras,
    x_to_keras,
)
from porting.rnn.verify import verify  # noqa: E402

CASES = [
    (rt, layers, bi, skip)
    for rt in ("relu", "tanh", "lstm", "gru")
    for layers, bi, skip in ((1, False, False), (2, True, False), (2, False, True), (1, True, True))
]


@pytest.mark.parametrize("rt,layers,bi,skip", CASES)
def test_keras_matches_reference_float64(rt, layers, bi, skip):
    rng = np.random.default_rng(len(rt) * 100 + layers * 10 + 2 * bi + skip)
    H = 5
    X = H if skip else 3
    spec = RNNSpec(X, H, rt, num_layers=layers, bidirectional=bi, skip_input=skip)
    w = random_weights(spec, rng, dtype=np.float64)
    B, T = 3, 6
    x = rng.standard_normal((X, B, T))
    h0 = rng.standard_normal((H, B, spec.slots))
    c0 = rng.standard_normal((H, B, spec.slots)) if rt == "lstm" else None
    model = to_keras(w, initial_state=True, layer_outputs=True)
    got = keras_forward(model, w, x, h0, c0)
    ref = forward(w, x, h0, c0, trace=True)
    np.testing.assert_allclose(got["y"], ref.y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["h"], ref.h, rtol=0, atol=1e-12)
    if rt == "lstm":
        np.testing.assert_allclose(got["c"], ref.c, rtol=0, atol=1e-12)
    for layer in range(layers):
        want = np.concatenate(ref.slots[layer * spec.directions : (layer + 1) * spec.directions])
        np.testing.assert_allclose(got[f"layer{layer + 1}"], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rt", ["relu", "tanh", "lstm", "gru"])
def test_keras_float32_within_carried_bound(rt):
    rng = np.random.default_rng(7)
    spec = RNNSpec(8, 16, rt, num_layers=2, bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float32)
    x = rng.standard_normal((8, 4, 40)).astype(np.float32)
    model = to_keras(w, layer_outputs=True)
    v = verify(w, x, model)
    assert v.ok, v.text()
    assert len(v.slots) == spec.slots
    assert all(s.err.max() > 0 for s in v.slots)  # two different computations were compared
    assert v.precision == "float32"


def test_last_step_is_knets_not_final_states():
    rng = np.random.default_rng(3)
    spec = RNNSpec(4, 6, "lstm", num_layers=2, bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float64)
    x = rng.standard_normal((4, 2, 7))
    got = keras_forward(to_keras(w, output="last"), w, x)
    ref = forward(w, x, h=0)
    assert got["y"].shape == (12, 2)
    np.testing.assert_allclose(got["y"], ref.y[:, :, -1], rtol=0, atol=1e-12)
    finals = np.concatenate([ref.h[:, :, 2], ref.h[:, :, 3]])  # Keras's return_sequences=False
    assert np.abs(got["y"] - finals).max() > 1e-3


def test_weight_layout_gru_and_lstm():
    spec = RNNSpec(3, 4, "gru")
    w = random_weights(spec, 0, dtype=np.float64)
    kernel, rec, bias = keras_weights(w)[0]
    # Keras GRU blocks: z, r, h; Knet gates r, z, n
    np.testing.assert_array_equal(kernel[:, :4], w.rnnparam(1, 2, 1))  # update (Knet id 2)
    np.testing.assert_array_equal(kernel[:, 4:8], w.rnnparam(1, 1, 1))  # reset (Knet id 1)
    np.testing.assert_array_equal(rec[:, 8:], w.rnnparam(1, 6, 1))  # new, recurrent
    assert bias.shape == (2, 12)
    np.testing.assert_array_equal(bias[1, 8:], w.rnnparam(1, 6, 2))  # bRn stays in row 1
    spec = RNNSpec(3, 4, "lstm")
    w = random_weights(spec, 0, dtype=np.float64)
    kernel, rec, bias = keras_weights(w)[0]
    assert bias.shape == (16,)
    np.testing.assert_array_equal(bias[4:8], w.rnnparam(1, 2, 2) + w.rnnparam(1, 6, 2))
    np.testing.assert_array_equal(rec[:, 12:], w.rnnparam(1, 8, 1))


def test_save_and_reload(tmp_path):
    import keras

    rng = np.random.default_rng(4)
    spec = RNNSpec(3, 4, "gru", num_layers=2, bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float32)
    model = to_keras(w, initial_state=True, output="last")
    path = tmp_path / "rnn.keras"
    model.save(path)
    back = keras.models.load_model(path)
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    h0 = rng.standard_normal((4, 2, 4)).astype(np.float32)
    a = keras_forward(model, w, x, h0)
    b = keras_forward(back, w, x, h0)
    np.testing.assert_array_equal(a["y"], b["y"])
    np.testing.assert_array_equal(a["h"], b["h"])


def test_one_and_two_dimensional_inputs():
    rng = np.random.default_rng(5)
    spec = RNNSpec(3, 4, "tanh", num_layers=2)
    w = random_weights(spec, rng, dtype=np.float64)
    model = to_keras(w)
    x2 = rng.standard_normal((3, 5))
    got = keras_forward(model, w, x2)
    assert got["y"].shape == (4, 5)
    np.testing.assert_allclose(got["y"], forward(w, x2).y, rtol=0, atol=1e-12)
    got1 = keras_forward(model, w, x2[:, 0])
    assert got1["y"].shape == (4,)
    assert x_to_keras(x2).shape == (5, 1, 3)


def test_bad_inputs():
    w = random_weights(RNNSpec(3, 4, "lstm"), 0, dtype=np.float32)
    model = to_keras(w)
    with pytest.raises(PortingError, match="batchSizes"):
        keras_forward(model, w, np.zeros((3, 2, 2), np.float32), batch_sizes=[2, 1])
    with pytest.raises(PortingError, match="X = inputSize = 3"):
        keras_forward(model, w, np.zeros((5, 2, 2), np.float32))
    with pytest.raises(PortingError, match="float64 but the weights are float32"):
        keras_forward(model, w, np.zeros((3, 2, 2)))
    with pytest.raises(PortingError, match="output='final'"):
        to_keras(w, output="final")
    with pytest.raises(PortingError, match="expected RNNWeights"):
        to_keras({"w": 1})
    with pytest.raises(PortingError, match=r"expected \(H, B, L or 2L\)"):
        state_to_keras(np.zeros((4, 3, 1), np.float32), w.spec, 2, np.float32)


def test_float64_port_verified_with_float64_tolerance():
    rng = np.random.default_rng(8)
    w = random_weights(RNNSpec(5, 6, "lstm", num_layers=2, bidirectional=True), rng, np.float64)
    x = rng.standard_normal((5, 3, 30))
    v = verify(w, x, to_keras(w, layer_outputs=True))
    assert v.ok, v.text()
    assert v.precision == "float64" and v.tolerance.eps == np.finfo(np.float64).eps


def test_last_step_model_with_initial_states_verified():
    rng = np.random.default_rng(9)
    w = random_weights(RNNSpec(5, 6, "gru", num_layers=2, bidirectional=True), rng)
    x = rng.standard_normal((5, 3, 7)).astype(np.float32)
    h0 = rng.standard_normal((6, 3, 4)).astype(np.float32)
    v = verify(w, x, to_keras(w, output="last", initial_state=True), h=h0)
    assert v.ok, v.text()
    assert set(v.finals) == {"y[:, :, end]", "h"}
    # the same model fed zero states instead of h0 is caught
    wrong = keras_forward(to_keras(w, output="last"), w, x)
    assert not verify(w, x, wrong, h=h0).ok


def test_apply_keras_inside_a_functional_model():
    """The hook a model converter uses: embedding -> RNN (last step) -> dense, as Knet's IMDB
    tutorial computes it (Knet: `W * y[:, :, end] .+ b` with `y = rnn(E[:, tokens])`)."""
    import keras

    from porting.rnn.keras import apply_keras

    rng = np.random.default_rng(10)
    vocab, embed, H, classes = 11, 4, 5, 3
    spec = RNNSpec(embed, H, "lstm", num_layers=2, bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float64)
    E = rng.standard_normal((embed, vocab))  # Knet (embed, vocab), 1-based tokens
    Wd, bd = rng.standard_normal((classes, 2 * H)), rng.standard_normal(classes)
    tokens = rng.integers(1, vocab + 1, size=(2, 6))  # Knet (B, T)
    x = E[:, tokens - 1]  # (embed, B, T)
    want = Wd @ forward(w, x).y[:, :, -1] + bd[:, None]  # (classes, B)

    inp = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(vocab, embed, dtype="float64")
    dense = keras.layers.Dense(classes, dtype="float64")
    last = apply_keras(w, emb(inp), output="last")["y"]
    model = keras.Model(inp, dense(last))
    emb.set_weights([E.T])
    dense.set_weights([Wd.T, bd])
    got = np.asarray(model(tokens - 1)).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
