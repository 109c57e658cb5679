"""Saving converted models: the .keras file reloads in a fresh process with the same outputs,
saving is atomic, SavedModel export works, weight conversion matches porting.layout bit for bit."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import PortingError, layout  # noqa: E402
from porting.model import Conv, Dense, KnetModel, Pool, convert  # noqa: E402

F32 = np.float32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The example LeNet and a model with a padded max pool (both stock Keras layers only)."""
    from porting.examples.lenet import lenet, lenet_input

    d = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(0)
    custom = KnetModel(
        [
            Conv(rng.standard_normal((3, 3, 2, 4), F32), padding=1, stride=(1, 2), dilation=(2, 1)),
            Pool(window=3, padding=1, stride=2),
            Dense(rng.standard_normal((5, 3 * 2 * 4), F32)),
        ],
        input_size=(8, 7, 2),
    )
    xc = np.asfortranarray(rng.standard_normal((8, 7, 2, 3)).astype(F32))
    out = {}
    for name, (m, x) in {"lenet": (lenet(), lenet_input()), "custom": (custom, xc)}.items():
        km = convert.to_keras(m)
        path = d / f"{name}.keras"
        convert.save_keras(km, path)
        x_tf = layout.activations_to_tf(x)
        np.save(d / f"{name}_x.npy", x_tf)
        out[name] = (m, km, path, x_tf, np.asarray(km(x_tf)))
    return d, out


def test_reload_in_a_fresh_process_gives_the_same_outputs(models):
    d, out = models
    script = textwrap.dedent(
        f"""
        import os, sys, numpy as np
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        d = {str(d)!r}
        # stock layers only: plain Keras loads both, without porting
        for name in ("lenet", "custom"):
            km = keras.saving.load_model(os.path.join(d, name + ".keras"))
            x = np.load(os.path.join(d, name + "_x.npy"))
            np.save(os.path.join(d, name + "_y.npy"), np.asarray(km(x)))
        assert "porting" not in sys.modules
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name, (_, _, _, _, y) in out.items():
        np.testing.assert_array_equal(np.load(d / f"{name}_y.npy"), y)  # bit-identical


def test_saved_model_reloads_in_process_and_verifies(models):
    from porting.model.verify import verify_model

    _, out = models
    m, km, path, x_tf, y = out["custom"]
    km2 = convert.load_keras(path)
    np.testing.assert_array_equal(np.asarray(km2(x_tf)), y)
    assert verify_model(m, keras_model=km2, x=layout.activations_from_tf(x_tf)).ok


def test_atomic_save_leaves_nothing_on_failure(models, tmp_path, monkeypatch):
    _, out = models
    km = out["lenet"][1]
    target = tmp_path / "model.keras"
    real_save = type(km).save

    def crash(self, filepath, *a, **k):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("disk full, simulated")

    monkeypatch.setattr(type(km), "save", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        convert.save_keras(km, target)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary left behind
    # an existing file survives a failed overwrite untouched
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        convert.save_keras(km, target)
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(type(km), "save", real_save)
    convert.save_keras(km, target)
    assert target.stat().st_size > 1000 and len(list(tmp_path.iterdir())) == 1


def test_save_path_mistakes(models, tmp_path):
    km = models[1]["lenet"][1]
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(PortingError, match="is a directory"):
        convert.save_keras(km, tmp_path / "dir.keras")
    with pytest.raises(PortingError, match="ending in .keras"):
        convert.save_keras(km, tmp_path / "model.h5")
    with pytest.raises(PortingError, match="does not exist"):
        convert.save_keras(km, tmp_path / "nowhere" / "m.keras")
    (tmp_path / "f").write_text("x")
    with pytest.raises(PortingError, match="exists as a file"):
        convert.export_savedmodel(km, tmp_path / "f")


def test_savedmodel_export(models, tmp_path):
    import tensorflow as tf

    _, out = models
    _, km, _, x_tf, y = out["lenet"]
    path = convert.export_savedmodel(km, tmp_path / "sm")
    convert.export_savedmodel(km, tmp_path / "sm")  # replacing an existing SavedModel is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(np.asarray(loaded.serve(x_tf)), y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "shape", [(3, 3, 64, 128), (7, 7, 3, 64), (5, 16, 8), (2, 3, 2, 16, 24), (3, 3, 512, 96)]
)
def test_kernel_conversion_is_bit_identical_to_a_plain_permuted_copy(shape):
    rng = np.random.default_rng(1)
    nd = len(shape) - 2
    for order in "FC":
        w = np.array(rng.standard_normal(shape, dtype=np.float32), order=order)
        for mode in (0, 1):
            for spatial in ("reverse", "keep"):
                axes = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
                v = w.transpose([*axes, nd, nd + 1])
                want = np.ascontiguousarray(np.flip(v, tuple(range(nd))) if mode == 0 else v)
                got = layout.kernel_to_tf(w, mode, spatial)
                assert got.shape == want.shape and got.flags.c_contiguous
                np.testing.assert_array_equal(got, want)


def test_weights_in_keras_layout():
    rng = np.random.default_rng(2)
    m = KnetModel(
        [
            Conv(
                rng.standard_normal((3, 2, 2, 4), F32),
                rng.standard_normal((1, 1, 4, 1), F32),
                alpha=2,
            ),
            Dense(rng.standard_normal((3, 6 * 4 * 4), F32)),
        ],
        input_size=(8, 5, 2),
    )
    ws = convert.convert_weights(m, spatial="reverse")
    np.testing.assert_array_equal(
        ws["conv1"][0], 2 * layout.kernel_to_tf(m["conv1"].w, 0, "reverse")
    )
    np.testing.assert_array_equal(ws["conv1"][1], m["conv1"].b.ravel())
    np.testing.assert_array_equal(
        ws["dense1"][0], layout.dense_to_tf(m["dense1"].w, (6, 4, 4), "reverse")
    )
