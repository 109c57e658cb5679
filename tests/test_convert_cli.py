"""`porting convert`: exit 0 converted (and verified), 1 verification failed, 2 bad input; no
output file unless it succeeded."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import layout  # noqa: E402
from porting.cli import main  # noqa: E402
from porting.model import Conv, Dense, KnetModel, Mat, save_export  # noqa: E402
from porting.model.kinds import conv as kconv  # noqa: E402

F32 = np.float32


def test_readme_command_in_a_subprocess(tmp_path):
    """The README's main-job command, exactly as a user runs it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "porting",
            "convert",
            "--example",
            "lenet",
            "-o",
            "lenet.keras",
            "--verify",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK: the Keras model computes what the Knet model computes" in r.stdout
    assert "wrote lenet.keras" in r.stdout and (tmp_path / "lenet.keras").stat().st_size > 100_000
    assert r.stderr.strip() == "" or "Traceback" not in r.stderr


def test_example_json_both_modes_and_savedmodel(tmp_path, capsys):
    out = tmp_path / "m.keras"
    assert (
        main(
            [
                "convert",
                "-o",
                str(out),
                "--verify",
                "--mode",
                "whole",
                "--json",
                "--savedmodel",
                str(tmp_path / "sm"),
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert (
        d["ok"]
        and d["verification"]["mode"] == "whole"
        and d["verification"]["first_divergent"] is None
    )
    assert [row["name"] for row in d["verification"]["layers"]] == [
        "conv1",
        "conv2",
        "dense1",
        "dense2",
    ]
    assert d["written"] == {"keras": str(out), "savedmodel": str(tmp_path / "sm")}
    assert (tmp_path / "sm" / "saved_model.pb").exists()
    assert (
        main(["convert", "--example", "lenet", "--verify", "--mode", "each", "--spatial", "keep"])
        == 0
    )
    assert "spatial='keep'" in capsys.readouterr().out


def test_export_with_input_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    m = KnetModel(
        [
            Conv(
                rng.standard_normal((3, 3, 2, 4), F32),
                rng.standard_normal((1, 1, 4, 1), F32),
                padding=1,
                activation="relu",
                pool=dict(window=3, padding=1, stride=2),
            ),
            Mat(),
            Dense(rng.standard_normal((3, 3 * 4 * 4), F32), activation="softmax"),
        ]
    )
    save_export(m, tmp_path / "model")  # no input size recorded
    np.save(tmp_path / "x.npy", np.asfortranarray(rng.standard_normal((5, 7, 2, 2)).astype(F32)))
    out = tmp_path / "out.keras"
    assert main(["convert", str(tmp_path / "model.json"), "-o", str(out)]) == 2
    assert "--input" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "convert",
                str(tmp_path / "model"),
                "-o",
                str(out),
                "--input",
                str(tmp_path / "x.npy"),
                "--verify",
            ]
        )
        == 0
    )
    assert out.exists()
    assert (
        main(["convert", str(tmp_path / "model.npz"), "-o", str(out), "--input-size", "5,7,2"]) == 0
    )


def test_failed_verification_exits_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        kconv, "_kernel_converter", lambda w, mode, spatial: layout.kernel_to_tf(w, 1, spatial)
    )
    out = tmp_path / "bad.keras"
    assert main(["convert", "-o", str(out), "--verify"]) == 1
    text = capsys.readouterr().out
    assert "MISMATCH: first divergent layer 'conv1'" in text and "nothing written" in text
    assert not out.exists()
    assert main(["convert", "-o", str(out), "--verify", "--keep-on-mismatch", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and d["verification"]["first_divergent"] == "conv1" and out.exists()


def _export(tmp_path, layers, arrays, name="m"):
    np.savez(tmp_path / f"{name}.npz", **{k: np.asfortranarray(v) for k, v in arrays.items()})
    doc = {"format": "porting-knet-export", "version": 1, "input_size": [8, 8, 1], "layers": layers}
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return str(tmp_path / name)


def _p(key, a):
    return {"key": key, "size": list(a.shape), "eltype": "Float32"}


@pytest.mark.parametrize(
    "case",
    [
        "unknown kind",
        "channels",
        "dense size",
        "truncated",
        "model is dir",
        "output is dir",
        "output suffix",
        "input dtype",
        "no action",
        "both",
    ],
)
def test_bad_input_exits_2_with_no_output(tmp_path, capsys, case):
    w = np.ones((3, 3, 1, 4), F32)
    conv = {
        "name": "c1",
        "kind": "conv",
        "params": {"w": _p("w", w)},
        "activation": "relu",
        "conv": {},
        "pool": None,
    }
    out = tmp_path / "out.keras"
    args = None
    if case == "unknown kind":
        model, expect = (
            _export(tmp_path, [conv, {"name": "rnn1", "kind": "lstm"}], {"w": w}),
            "rnn1",
        )
    elif case == "channels":
        w2 = np.ones((3, 3, 5, 2), F32)
        layers = [conv, {"name": "c2", "kind": "conv", "params": {"w": _p("w2", w2)}}]
        model, expect = (
            _export(tmp_path, layers, {"w": w, "w2": w2}),
            "'c2': w (3, 3, 5, 2) has 5 input channels",
        )
    elif case == "dense size":
        wd = np.ones((10, 100), F32)
        layers = [conv, {"name": "fc", "kind": "dense", "params": {"w": _p("wd", wd)}}]
        model, expect = _export(tmp_path, layers, {"w": w, "wd": wd}), "(6, 6, 4) = 144 features"
    elif case == "truncated":
        model = _export(tmp_path, [conv], {"w": w})
        data = (tmp_path / "m.npz").read_bytes()
        (tmp_path / "m.npz").write_bytes(data[:200])
        expect = "m.npz"
    elif case == "model is dir":
        (tmp_path / "modeldir").mkdir()
        model, expect = str(tmp_path / "modeldir"), "is a directory"
    elif case == "output is dir":
        model = _export(tmp_path, [conv], {"w": w})
        out = tmp_path / "outdir.keras"
        out.mkdir()
        expect = "is a directory"
    elif case == "output suffix":
        model, expect = _export(tmp_path, [conv], {"w": w}), ".keras"
        out = tmp_path / "out.h5"
    elif case == "input dtype":
        model = _export(tmp_path, [conv], {"w": w})
        np.save(tmp_path / "x.npy", np.ones((8, 8, 1, 2)))
        args = ["convert", model, "-o", str(out), "--input", str(tmp_path / "x.npy")]
        expect = "float64"
    elif case == "no action":
        args, expect = ["convert", "--example", "lenet"], "nothing to do"
    else:
        model = _export(tmp_path, [conv], {"w": w})
        args, expect = ["convert", model, "--example", "lenet", "-o", str(out)], "not both"
    if args is None:
        args = ["convert", model, "-o", str(out), "--verify"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "porting convert: error:" in err and expect in err, err
    assert "Traceback" not in err
    assert not (out.exists() and out.is_file())
    assert not any(
        p.suffix in (".keras", ".tmp") or ".tmp" in p.name
        for p in tmp_path.iterdir()
        if p.is_file()
    )


@pytest.mark.parametrize("example", ["cnn-bn", "resnet", "dcgan", "vae", "layers21"])
def test_batchnorm_and_resnet_examples_convert_and_verify(example, tmp_path, capsys):
    out = tmp_path / f"{example}.keras"
    assert main(["convert", "--example", example, "--verify", "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["written"]["keras"] == str(out)
    kinds = {row["kind"] for row in doc["verification"]["layers"]}
    assert ("batchnorm" in kinds or example == "vae") and (example != "resnet" or "add" in kinds)
    assert example not in ("dcgan", "vae") or "deconv" in kinds
    # the file reloads with plain Keras (built-in layers only) and gives the same numbers
    import keras

    from porting.examples.models import EXAMPLES, example_input

    model = EXAMPLES[example][0]()
    x = example_input(model)
    x_tf = layout.activations_to_tf(x) if x.ndim > 2 else np.ascontiguousarray(x.T)
    km = keras.models.load_model(out)
    y = np.asarray(km(x_tf))
    from porting.model import forward_knet
    from porting.model.convert import julia_to_tf

    expected = julia_to_tf(forward_knet(model, example_input(model)).final, None, "reverse")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
