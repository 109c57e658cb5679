"""`convert --onnx`: every shipped example written as ONNX agrees with the Knet side under
onnxruntime (an engine that shares no code with TensorFlow, Keras or porting), and the bad
cases (a wrong kernel, a missing package, a bad path) fail plainly with nothing written."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'porting[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
pytest.importorskip("tensorflow", reason="TensorFlow is not installed")

from porting.cli import main  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.examples.models import EXAMPLES, example_input  # noqa: E402
from porting.model import convert as mconvert  # noqa: E402
from porting.model import onnx_out  # noqa: E402
from porting.model.forward import forward_knet  # noqa: E402

F32 = np.float32
NAMES = ["lenet", *EXAMPLES]


def _model(name):
    if name == "lenet":
        from porting.examples.lenet import lenet

        return lenet()
    return EXAMPLES[name][0]()


def _tf_input(model, x):
    x_tf = mconvert.julia_to_tf(x, None, "reverse") if x.ndim > 2 else np.ascontiguousarray(x.T)
    to_keras_input = getattr(model.layers[0], "keras_input", None)
    return to_keras_input(x_tf) if to_keras_input is not None else x_tf


@pytest.mark.parametrize("name", NAMES)
def test_every_example_as_onnx_agrees_with_knet(name, tmp_path):
    """The file under onnxruntime against the Knet forward: within the end-to-end tolerance
    (verify_onnx), and within a plain bound stated here: float32 rounding of a few hundred
    operations on outputs of magnitude max |y| (as the TFLite tests bound theirs)."""
    model = _model(name)
    path = onnx_out.export_onnx(mconvert.to_keras(model), tmp_path / f"{name}.onnx")
    assert path == str(tmp_path / f"{name}.onnx")
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # no temporary left
    x = example_input(model, seed=3, batch=3)
    check = onnx_out.verify_onnx(model, path, x)
    assert check.ok, str(check.comparison)
    assert check.input_shape == tuple(x.shape) and check.onnx_dtype == "float32"
    want = forward_knet(model, x)[-1]  # Julia-indexed; the ONNX output is TensorFlow's layout
    y = onnx_out.run_onnx(path, _tf_input(model, x))
    if want.ndim == 3:  # rnnlm/tagger's per-step dense: Knet's (T, V, B), Keras's (B, T, V)
        got = y.transpose(1, 2, 0)
    else:
        got = mconvert.tf_to_julia(y, None, "reverse") if y.ndim > 2 else y.T
    assert got.shape == want.shape
    bound = 256 * np.finfo(F32).eps * max(float(np.abs(want).max()), 1.0)
    assert float(np.abs(got - want).max()) <= bound


def _transposed_conv(km):
    """The classic port bug: the first conv kernel's two spatial axes swapped."""
    layer = next(la for la in km.layers if la.__class__.__name__ == "Conv2D")
    w, *rest = layer.get_weights()
    layer.set_weights([np.ascontiguousarray(w.transpose(1, 0, 2, 3)), *rest])
    return km


def test_a_wrong_kernel_is_caught_end_to_end(tmp_path):
    from porting.examples.lenet import lenet, lenet_input

    model = lenet()
    path = onnx_out.export_onnx(_transposed_conv(mconvert.to_keras(model)), tmp_path / "bad.onnx")
    check = onnx_out.verify_onnx(model, path, lenet_input())
    assert not check.ok
    assert check.comparison.max_error_to_tolerance > 10
    assert "MISMATCH" in str(check) and check.to_dict()["ok"] is False


def test_cli_writes_and_verifies(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    argv = ["convert", "--example", "lenet", "--onnx", str(out), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["written"] == {"onnx": str(out)}
    assert doc["onnx"]["ok"] and doc["onnx"]["path"] == str(out)
    assert doc["onnx"]["error_to_tolerance"] < 1
    assert out.is_file()


def test_cli_mismatch_keeps_the_old_file_and_writes_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    real = mconvert.to_keras
    monkeypatch.setattr(mconvert, "to_keras", lambda *a, **k: _transposed_conv(real(*a, **k)))
    assert main(["convert", "--example", "lenet", "--onnx", str(out)]) == 1
    text = capsys.readouterr().out
    assert "MISMATCH" in text and "not kept" in text
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    new = tmp_path / "kept.onnx"
    argv = ["convert", "--example", "lenet", "--onnx", str(new), "--keep-on-mismatch"]
    assert main(argv) == 1
    assert new.is_file()


def test_missing_package_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = importlib.import_module

    def no_tf2onnx(name, *a, **k):
        if name == "tf2onnx":
            raise ImportError("No module named 'tf2onnx'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_tf2onnx)
    out = tmp_path / "m.onnx"
    assert main(["convert", "--example", "lenet", "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tf2onnx" in err and "pip install 'porting[onnx]'" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "case", ["directory", "same-as-keras", "no-parent", "wrong-suffix-is-fine-but-dir"]
)
def test_bad_onnx_paths_fail_before_any_work(case, tmp_path, capsys):
    keras_out = tmp_path / "m.keras"
    target = {
        "directory": tmp_path,
        "same-as-keras": keras_out,
        "no-parent": tmp_path / "missing" / "m.onnx",
        "wrong-suffix-is-fine-but-dir": tmp_path / "sub",
    }[case]
    if case == "wrong-suffix-is-fine-but-dir":
        target.mkdir()
    argv = ["convert", "--example", "lenet", "-o", str(keras_out), "--onnx", str(target)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--onnx" in err or "ONNX" in err or str(target) in err
    assert not keras_out.exists()


def test_a_hostile_file_is_refused_plainly(tmp_path):
    from porting.examples.lenet import lenet

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(PortingError, match="onnxruntime cannot load"):
        onnx_out.verify_onnx(lenet(), junk)
    with pytest.raises(PortingError, match="spatial"):
        onnx_out.verify_onnx(lenet(), junk, spatial="sideways")
