"""The `embed` kind: Knet `w[:, x]` (1-based), against PyTorch float64 and hand values; the
Keras `Embedding` (0-based, weight w'); bad indices; the export schema row."""

import json

import numpy as np
import pytest

from porting.errors import PortingError
from porting.model import Embed, KnetModel, forward_knet, load_export, save_export
from porting.model.kinds.embed import knet_sequence


def _model(dim=5, vocab=9, steps=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((dim, vocab)).astype(dtype)
    return KnetModel([Embed(w, name="emb")], input_size=(steps,)), w


def test_embed_matches_torch_float64():
    torch = pytest.importorskip("torch", reason="PyTorch is the independent implementation")
    model, w = _model()
    rng = np.random.default_rng(1)
    x = rng.integers(1, 10, size=(4, 3))  # (T, B), 1-based
    y = knet_sequence(forward_knet(model, x)[-1])  # Knet's (dim, B, T)
    # Knet: w[:, xk] with xk = x' of size (B, T); torch's embedding is 0-based on w' (vocab, dim)
    t = torch.nn.functional.embedding(
        torch.from_numpy(np.ascontiguousarray(x.T) - 1), torch.from_numpy(w.T.copy())
    )  # (B, T, dim)
    np.testing.assert_array_equal(y, t.numpy().transpose(2, 0, 1))
    # a hand value: step 2 of sequence 3 is column x[2, 3] of w
    np.testing.assert_array_equal(y[:, 2, 1], w[:, x[1, 2] - 1])


@pytest.mark.parametrize(
    "bad, where",
    [(0, "index 0 at x[2, 3]"), (10, "index 10 at x[2, 3]"), (-4, "index -4 at x[2, 3]")],
)
def test_index_out_of_range_is_named(bad, where):
    model, _ = _model()
    x = np.ones((4, 3), np.int64)
    x[1, 2] = bad
    with pytest.raises(PortingError, match=r"out of range; expected 1 <= index <= 9") as e:
        forward_knet(model, x)
    assert where in str(e.value)


def test_float_or_misshapen_input_refused():
    model, _ = _model()
    with pytest.raises(PortingError, match="expected integer token indices"):
        forward_knet(model, np.ones((4, 3)))
    with pytest.raises(PortingError, match=r"expected \(T, B\)"):
        forward_knet(model, np.ones((4, 3, 2), np.int64))


def test_embed_must_come_first():
    from porting.model import Dense

    with pytest.raises(PortingError, match="must be the first layer"):
        KnetModel([Dense(np.ones((3, 3))), Embed(np.ones((2, 3)))])


def test_keras_embedding_is_an_exact_copy():
    pytest.importorskip("tensorflow")
    from porting.model import to_keras, verify_model

    model, w = _model(dtype=np.float32)
    km = to_keras(model)
    lay = km.get_layer("emb")
    assert type(lay).__name__ == "Embedding" and lay.mask_zero is False
    np.testing.assert_array_equal(lay.get_weights()[0], w.T)
    assert str(km.inputs[0].dtype) == "int32"
    x = np.array([[1, 9], [3, 2], [9, 1], [5, 5]])
    report = verify_model(model, x, keras_model=km)
    assert report.ok and report.rows[0].k == 1 and report.rows[0].max_abs_error == 0.0
    # the Keras model takes 0-based indices (TensorFlow layout (B, T))
    out = np.asarray(km(np.ascontiguousarray(x.T - 1).astype("int32")))
    np.testing.assert_array_equal(out.transpose(2, 0, 1), knet_sequence(forward_knet(model, x)[-1]))


def test_export_round_trip_writes_version_2(tmp_path):
    model, w = _model()
    jpath, _ = save_export(model, tmp_path / "m")
    doc = json.loads(open(jpath).read())
    assert doc["version"] == 2 and doc["layers"][0]["kind"] == "embed"
    back = load_export(tmp_path / "m")
    np.testing.assert_array_equal(back["emb"].w, w)
    x = np.array([[2, 3], [4, 5], [6, 7], [8, 9]])
    np.testing.assert_array_equal(forward_knet(back, x)[-1], forward_knet(model, x)[-1])


def test_a_vector_of_indices_is_one_step():
    """Knet's w[:, x] for x (B,) is (dim, B): here the model's one-step sequence (1, dim, B)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 6))
    model = KnetModel([Embed(w)], input_size=(1,))
    x = np.array([6, 1, 4])
    y = forward_knet(model, x)[-1]
    assert y.shape == (1, 3, 3)
    np.testing.assert_array_equal(y[0], w[:, x - 1])
    with pytest.raises(PortingError, match=r"index 7 at x\[2\]"):
        forward_knet(model, np.array([1, 7]))
