"""`porting convert MODEL.keras --to knet`: exit 0 converted (and verified), 1 a difference,
2 bad input; nothing written unless it succeeded."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from porting import layout  # noqa: E402
from porting.cli import main  # noqa: E402
from porting.model import forward_knet, load_export  # noqa: E402

L = keras.layers


@pytest.fixture
def keras_file(tmp_path):
    rng = np.random.default_rng(0)
    inp = keras.Input((12, 10, 3))
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    x = L.Flatten(name="f")(x)
    out = L.Dense(4, activation="softmax", name="d")(x)
    km = keras.Model(inp, out)
    km.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in km.get_weights()])
    path = tmp_path / "m.keras"
    km.save(path)
    return path, km


def test_convert_to_knet_verifies_and_writes_the_pair(keras_file, tmp_path, capsys):
    path, km = keras_file
    prefix = tmp_path / "knet" / "m"
    prefix.parent.mkdir()
    assert (
        main(["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--json"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["verification"]["ok"]
    assert doc["round_trip"] is None  # asked for with --round-trip
    model = load_export(prefix)
    # the written pair computes what the original Keras model computes
    x = np.random.default_rng(2).standard_normal((10, 12, 3, 2)).astype(np.float32)
    y = forward_knet(model, x)[-1].T
    want = np.asarray(km(layout.activations_to_tf(x)))
    np.testing.assert_allclose(y, want, rtol=0, atol=64 * np.finfo(np.float32).eps)


def test_the_round_trip_is_asked_for_and_reproduces_the_original(keras_file, tmp_path, capsys):
    """--round-trip: the Keras model rebuilt from the Knet one against the original end to
    end, within its bound, reported in the JSON and the text."""
    path, _ = keras_file
    argv = ["convert", str(path), "--to", "knet", "--verify", "--round-trip"]
    assert main([*argv, "--json"]) == 0
    trip = json.loads(capsys.readouterr().out)["round_trip"]
    assert trip["ok"] and trip["rule"] == "64 eps max|y|"
    assert 0 <= trip["max_abs_error"] <= trip["bound"] and trip["bound"] > 0
    assert main(argv) == 0
    assert "Keras rebuilt from the Knet model vs the original" in capsys.readouterr().out


def test_a_kernel_left_unrotated_is_caught(keras_file, tmp_path, monkeypatch, capsys):
    """The usual hand-port mistake: Keras' kernel taken as is for conv4's default mode 0.
    Knet and the Keras model rebuilt from it agree with each other; the original does not, at
    its layer c1 (Knet's c1_pad + c1), named kernel_flip, and end to end (with --round-trip,
    the rebuilt model too)."""
    path, _ = keras_file
    import porting.fromkeras.layers as fl

    real = layout.kernel_from_tf
    monkeypatch.setattr(
        fl.layout, "kernel_from_tf", lambda k, mode=0, spatial="reverse": real(k, 1, spatial)
    )
    prefix = tmp_path / "m"
    argv = ["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--json"]
    assert main([*argv, "--round-trip"]) == 1
    doc = json.loads(capsys.readouterr().out)
    v = doc["verification"]
    assert not v["ok"] and v["first_divergent"] == "c1" and v["diagnosis"]["cause"] == "kernel_flip"
    assert v["end_to_end"]["max_rel_error"] > 0.1  # the outputs move by their own size
    assert not doc["round_trip"]["ok"]
    # nothing written, and the export staged during the verification is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_a_padding_split_on_the_wrong_side_is_caught_at_its_keras_layer(
    keras_file, tmp_path, monkeypatch, capsys
):
    """ "same"'s odd zero put before instead of after: caught at the Keras layer c1, which is
    two Knet layers (c1_pad + c1), and named padding_shift; the rows are Keras's layers."""
    path, _ = keras_file
    import porting.fromkeras.layers as fl

    real = fl.same_padding
    monkeypatch.setattr(fl, "same_padding", lambda *a: real(*a)[::-1])
    prefix = tmp_path / "m"
    assert (
        main(["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--json"]) == 1
    )
    doc = json.loads(capsys.readouterr().out)
    v = doc["verification"]
    assert [r["name"] for r in v["layers"]] == ["c1", "f", "d"]
    assert v["first_divergent"] == "c1" and v["diagnosis"]["cause"] == "padding_shift"
    # nothing written, and the export staged during the verification is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--to", "knet", "-o", "out"], "expected a .keras file"),
        (["--to", "knet", "--tflite", "x.tflite", "-o", "out"], "--tflite is for --to keras"),
        (["--to", "knet"], "nothing to do"),
        (["--to", "knet", "-o", "out", "--round-trip"], "give --verify too"),
        (["--round-trip", "--verify"], "--round-trip checks the way back"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = "m.keras" if "expected a .keras" not in match else "m.npz"
    assert main(["convert", model, *argv]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_corrupt_and_unconvertible_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["convert", str(bad), "--to", "knet", "-o", str(tmp_path / "o")]) == 2
    assert "cannot load as a Keras model" in capsys.readouterr().err
    km = keras.Sequential([keras.Input((4, 4, 2)), L.UnitNormalization(name="ln")])
    km.save(tmp_path / "ln.keras")
    assert (
        main(["convert", str(tmp_path / "ln.keras"), "--to", "knet", "-o", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "'ln' (UnitNormalization)" in err and "no Knet counterpart" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.keras", "ln.keras"]


def test_output_that_is_the_input_is_refused(keras_file, capsys):
    path, _ = keras_file
    prefix = str(path)[: -len(".keras")]
    # -o m.keras would write m.keras.json / .npz: distinct; but the pair's own .json given as
    # MODEL is not a .keras file. The real clash: --input being one of the outputs.
    assert (
        main(
            [
                "convert",
                str(path),
                "--to",
                "knet",
                "-o",
                prefix,
                "--verify",
                "--input",
                prefix + ".npz",
            ]
        )
        == 2
    )
    assert "--input" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_saved_preprocessing_and_excite_model_converts_in_its_dtype(tmp_path, capsys, dtype):
    """Rescaling, Normalization (its statistics reloaded from the file: Keras' load refreshes
    what its call uses), a squeeze-and-excite Multiply and a "same" average, through the file."""
    from tests.test_fromkeras import MODELS

    km = MODELS["excite" if dtype == "float32" else "excite64"]()
    path = tmp_path / "e.keras"
    km.save(path)
    prefix = tmp_path / "e"
    argv = ["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--round-trip"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["round_trip"]["ok"] and doc["verification"]["ok"]
    model = load_export(prefix)
    assert model.dtype == np.dtype(dtype)
    assert [la.kind for la in model.layers if la.kind in ("affine", "mul")] == [
        "affine",
        "affine",
        "mul",
    ]
    x = np.random.default_rng(3).standard_normal((8, 9, 3, 2)).astype(dtype)
    y = forward_knet(model, x)[-1].T
    want = np.asarray(km(layout.activations_to_tf(x)))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, want, rtol=0, atol=64 * eps * np.abs(want).max())


def _renamed_model(tmp_path):
    """A Keras model whose conv is named 'c 1' (Knet's name 'c_1'), weights drawn, saved to
    tmp_path/odd.keras (its path returned)."""
    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same", name="c 1")(inp)
    km = keras.Model(inp, L.Flatten(name="f")(x))
    km.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in km.get_weights()])
    path = tmp_path / "odd.keras"
    km.save(path)
    return path


def test_keras_names_that_are_not_knet_names_are_verified_through_the_rebuilt_model(
    tmp_path, capsys
):
    """'c 1' becomes the Knet name 'c_1': the original's layers cannot be found by name, so
    the layers are compared with the rebuilt Keras model and that one with the original end to
    end (the way every model was checked before), and the report says so."""
    path = _renamed_model(tmp_path)
    assert main(["convert", str(path), "--to", "knet", "--verify", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["round_trip"]["ok"]
    assert any("'c 1'" in n and "rebuilt" in n for n in doc["verification"]["notes"])


def test_the_end_to_end_check_of_renamed_models_reads_the_original(tmp_path, monkeypatch, capsys):
    """With the layers compared against the rebuilt model, only the end-to-end comparison sees
    the original: a kernel left unrotated is caught there (exit 1), not hidden."""
    path = _renamed_model(tmp_path)
    import porting.fromkeras.layers as fl

    real = layout.kernel_from_tf
    monkeypatch.setattr(
        fl.layout, "kernel_from_tf", lambda k, mode=0, spatial="reverse": real(k, 1, spatial)
    )
    assert main(["convert", str(path), "--to", "knet", "--verify", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verification"]["ok"] and not doc["round_trip"]["ok"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3, 11])
def test_the_round_trip_runs_the_rebuilt_model_on_slices_and_still_compares_every_sample(
    batch, dtype
):
    """`round_trip` calls the rebuilt model on slices of the samples (at most
    ROUND_TRIP_SLICES calls, every sample once, in order); a difference in any one sample, or an
    output of another shape, is caught."""
    from porting.commands._to_knet import ROUND_TRIP_SLICES, round_trip

    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3)).astype(dtype)
    x = rng.standard_normal((batch, 5)).astype(dtype)
    want = x.astype(np.float64) @ w.astype(np.float64)  # float64 oracle, rounded to dtype
    calls: list[int] = []

    def rebuilt(s, wrong_sample=None, shape=None):
        calls.append(len(s))
        y = s @ w
        if wrong_sample is not None:
            lo = sum(calls[:-1])
            if lo <= wrong_sample < lo + len(s):
                y[wrong_sample - lo, 0] += 1e-2 * np.max(np.abs(want))
        return y if shape is None else y.reshape(shape)

    got = round_trip(want.astype(dtype), rebuilt, x)
    assert got["ok"], got
    assert sum(calls) == batch and len(calls) == min(batch, ROUND_TRIP_SLICES)
    for k in range(batch):
        calls.clear()
        bad = round_trip(want.astype(dtype), lambda s, k=k: rebuilt(s, wrong_sample=k), x)
        assert not bad["ok"] and bad["max_abs_error"] > bad["bound"] > 0
    flat = round_trip(want.astype(dtype), lambda s: rebuilt(s, shape=(-1,)), x)
    assert not flat["ok"]


def test_a_model_trained_with_an_unregistered_loss_converts(tmp_path, capsys):
    """The training configuration is not loaded (`compile=False`): a loss Keras cannot find by
    name (a plain function) does not stop the conversion, and the optimizer's state is not
    built; the weights are the trained ones."""
    rng = np.random.default_rng(3)

    def my_loss(y, p):
        return keras.ops.mean((y - p) ** 2)

    inp = keras.Input((4,))
    km = keras.Model(inp, L.Dense(3, name="d")(inp))
    km.compile(optimizer="adam", loss=my_loss)
    km.fit(rng.standard_normal((8, 4)), rng.standard_normal((8, 3)), verbose=0)
    path = tmp_path / "trained.keras"
    km.save(path)
    with pytest.raises(TypeError, match="my_loss"):  # what the default load says
        keras.saving.load_model(path)
    prefix = tmp_path / "trained"
    argv = ["convert", str(path), "--to", "knet", "-o", str(prefix), "--verify", "--round-trip"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["round_trip"]["ok"]
    w, b = km.get_layer("d").get_weights()
    loaded = load_export(prefix)
    x = rng.standard_normal((4, 5)).astype(np.float32)  # Julia layout: (features, batch)
    np.testing.assert_allclose(
        forward_knet(loaded, x)[-1], (x.T.astype(np.float64) @ w + b).T, rtol=1e-5, atol=1e-6
    )


def test_an_output_that_cannot_be_written_is_refused_before_the_verification(
    keras_file, tmp_path, capsys, monkeypatch
):
    """The export is staged before the model verifies: a missing directory exits 2 at once,
    the verification never runs, and nothing is written."""
    import porting.model.verify as mverify

    path, _ = keras_file

    def never(*a, **k):
        raise AssertionError("verified before the output was checked")

    monkeypatch.setattr(mverify, "verify_model", never)
    argv = ["convert", str(path), "--to", "knet", "-o", str(tmp_path / "nodir" / "m"), "--verify"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "directory" in err and "nodir" in err and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
