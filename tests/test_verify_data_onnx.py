"""`porting verify-data SOURCE PORT.onnx`: an ONNX port checked on a data set under onnxruntime.

The figures are checked against what is computed here without the code under test: the file's
outputs from a plain onnxruntime session made in the test, the Knet outputs from
`forward_knet`, and their differences, argmax and top-5 sets with NumPy. A port with a
transposed kernel must be caught; a file that is not ONNX, is truncated or belongs to another
model is refused with exit 2, naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'porting[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
pytest.importorskip("tensorflow", reason="TensorFlow is not installed")

from porting.cli import main  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.examples.models import EXAMPLES, example_input  # noqa: E402
from porting.knet import mlas  # noqa: E402
from porting.model import convert as mconvert  # noqa: E402
from porting.model import onnx_out  # noqa: E402
from porting.model.forward import forward_knet  # noqa: E402
from porting.model.verify_data import verify_data  # noqa: E402

NAMES = ["lenet", "resnet", "dcgan", "tagger"]  # conv classifiers, an image output, tokens


def _model(name):
    if name == "lenet":
        from porting.examples.lenet import lenet

        return lenet()
    return EXAMPLES[name][0]()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {n: onnx_out.export_onnx(mconvert.to_keras(_model(n)), d / f"{n}.onnx") for n in NAMES}


def _data(model, n, seed=0):
    if model.layers[0].integer_input:
        x = np.concatenate([example_input(model, seed=seed + i) for i in range(n // 3 + 1)], -1)
        return np.ascontiguousarray(x[..., :n])
    rng = np.random.default_rng(seed)
    return np.asfortranarray(rng.random((*model.input_size, n)).astype(model.dtype))


def _reference(model, path, x, batch=None):
    """The file's outputs (a session made here) and Knet's, both in TensorFlow layout, computed
    `batch` samples at a time as verify-data does (onnxruntime's kernels round differently at
    other batch sizes)."""
    n = x.shape[-1]
    if batch is not None and batch < n:
        parts = [_reference(model, path, x[..., i : i + batch]) for i in range(0, n, batch)]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_tf = mconvert.julia_to_tf(x, None, "reverse") if x.ndim > 2 else np.ascontiguousarray(x.T)
    if model.layers[0].integer_input:  # Knet's 1-based token indices, Keras's 0-based
        x_in = (x_tf - 1).astype(np.int32)
    else:
        x_in = x_tf.astype(np.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: x_in})[0]
    step = model.plan[len(model.plan) - 1]
    with mlas.kernel("numpy"):  # an ONNX file is checked against NumPy's kernels (onnx_out)
        want = mconvert.julia_to_tf(forward_knet(model, x)[-1], step.flat_from, "reverse")
    return want, got


def _json(capsys, argv, code):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == code, out.err[-2000:]
    return json.loads(out.out)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_example_onnx_port_on_generated_data(name, onnx_files, tmp_path, capsys):
    model = _model(name)
    x = _data(model, 11)
    np.save(tmp_path / "x.npy", x)
    argv = ["verify-data", "--example", name, onnx_files[name], "--data", str(tmp_path / "x.npy")]
    rep = _json(capsys, [*argv, "--batch-size", "4", "--worst", "3", "--json"], 0)
    assert rep["ok"] and rep["port_format"] == "onnx" and rep["per_layer"] is False
    assert rep["n_samples"] == 11 and rep["mode"] == "end-to-end"
    assert "no per-layer rows" in rep["verdict"]
    assert any("per-layer rows are not available" in n for n in rep["notes"])
    (row,) = rep["layers"]  # the one row: the end-to-end output
    assert row["name"] == "(end to end)" and row["kind"] == "onnx" and row["ok"]
    assert sum(row["histogram"]["counts"]) == 3  # one figure per batch: 4 + 4 + 3
    assert 0 <= row["worst_error_to_tolerance"] < 1
    want, got = _reference(model, onnx_files[name], x, batch=4)
    d = np.abs(want.astype(np.float64) - got.astype(np.float64)).reshape(11, -1)
    assert rep["end_to_end"]["max_abs_error"] == pytest.approx(float(d.max()), rel=0, abs=0)
    assert row["worst_abs_error"] == pytest.approx(float(d.max()), rel=0, abs=0)
    peak = np.abs(want.astype(np.float64)).reshape(11, -1).max(axis=1)
    rel = d.max(axis=1) / peak
    assert [w["index"] for w in rep["worst_samples"]] == list(np.argsort(-rel, kind="stable")[:3])
    c = rep["classifier"]
    if want.ndim == 2:  # lenet, resnet: 10 classes
        agree = float(np.mean(want.argmax(1) == got.argmax(1)))
        assert c["top1_agreement"] == agree == 1.0
        t5 = [
            set(np.argsort(-w)[:5]) == set(np.argsort(-g)[:5])
            for w, g in zip(want, got, strict=True)
        ]
        assert c["top5_agreement"] == float(np.mean(t5))
    else:
        assert c is None


def test_a_transposed_kernel_is_caught(tmp_path, capsys):
    from porting.examples.lenet import lenet

    model = lenet()
    km = mconvert.to_keras(model)
    layer = next(la for la in km.layers if la.__class__.__name__ == "Conv2D")
    w, *rest = layer.get_weights()
    layer.set_weights([np.ascontiguousarray(w.transpose(1, 0, 2, 3)), *rest])
    path = onnx_out.export_onnx(km, tmp_path / "bad.onnx")
    x = _data(model, 40, seed=2)
    np.save(tmp_path / "x.npy", x)
    rep = _json(
        capsys,
        [
            "verify-data",
            "--example",
            "lenet",
            path,
            "--data",
            str(tmp_path / "x.npy"),
            "--json",
            "--batch-size",
            "16",
        ],
        1,
    )
    assert not rep["ok"] and rep["verdict"].startswith("MISMATCH: the ONNX port")
    assert rep["first_divergent"] == "(end to end)"
    want, got = _reference(model, path, x, batch=16)
    differ = np.flatnonzero(want.argmax(1) != got.argmax(1))
    assert rep["classifier"]["top1_disagree"] == differ.size
    assert rep["classifier"]["top1_disagree_samples"] == differ.tolist()
    assert rep["layers"][0]["worst_error_to_tolerance"] > 1
    assert rep["layers"][0]["batches_over_tolerance"] == 3


def test_api_refuses_two_ports_and_reads_spatial(onnx_files):
    model = _model("resnet")
    x = _data(model, 3)
    with pytest.raises(PortingError, match="not both"):
        verify_data(model, x, onnx=onnx_files["resnet"], keras_model=mconvert.to_keras(model))
    # converted with "reverse": read as "julia" the 16x16 input still fits, and the error says
    # mismatch (a square image cannot tell the conventions apart by shape alone)
    r = verify_data(model, x, onnx=onnx_files["resnet"], spatial="reverse")
    assert r.ok and r.port == "onnx" and r.error_map is not None
    assert r.error_map["layer"] == "(end to end)"
    assert "ONNX" in r.error_map["what"]


def _hostile_files(tmp_path, onnx_files):
    not_onnx = tmp_path / "text.onnx"
    not_onnx.write_text("this is not a protobuf\n" * 10)
    raw = open(onnx_files["resnet"], "rb").read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(raw[: len(raw) // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    return {
        "not ONNX": (not_onnx, "onnxruntime cannot load"),
        "truncated": (truncated, "onnxruntime cannot load"),
        "empty": (empty, "onnxruntime cannot load|empty"),
        "another model's input": (onnx_files["lenet"], r"takes input \['N', 28, 28, 1\]"),
        "missing": (tmp_path / "missing.onnx", "missing.onnx"),
    }


@pytest.mark.parametrize(
    "case", ["not ONNX", "truncated", "empty", "another model's input", "missing"]
)
def test_hostile_onnx_exit_2_naming_the_problem(case, onnx_files, tmp_path, capsys):
    path, why = _hostile_files(tmp_path, onnx_files)[case]
    path = Path(path)
    np.save(tmp_path / "x.npy", _data(_model("resnet"), 4))
    rc = main(["verify-data", "--example", "resnet", str(path), "--data", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert re.search(why, err), err
    assert path.name in err
    assert not (tmp_path / "report.html").exists()


def test_html_report_for_an_onnx_port(onnx_files, tmp_path, capsys):
    from porting.report_html import page_text

    x = _data(_model("resnet"), 9)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.html"
    argv = ["verify-data", "--example", "resnet", onnx_files["resnet"], "--data"]
    rc = main([*argv, str(tmp_path / "x.npy"), "--report", str(out), "--batch-size", "4"])
    text = capsys.readouterr().out
    assert rc == 0 and f"wrote {out}" in text
    page = out.read_text(encoding="utf-8")
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "<link" not in page
    assert "End to end: worst error / tolerance" in page
    assert "per-layer rows are not available" in page
    assert page_text("(end to end)") in page and "ONNX port" in page
    order = [page.index(k) for k in ('id="verdict"', 'id="layer-bars"', 'id="error-map"')]
    assert order == sorted(order)


def test_onnx_report_in_chromium(onnx_files, tmp_path):
    from porting.report_html import write_report
    from tests.test_report_html import BLUE, GREEN, RED, _open, _rows_with

    model = _model("resnet")
    r = verify_data(model, _data(model, 8), onnx=onnx_files["resnet"], batch_size=4)
    page = tmp_path / "onnx.html"
    write_report(r, page)
    img, console = _open(page, tmp_path, "onnx")
    assert console == []
    green_rows, n_green = _rows_with(img, GREEN)
    blue_rows, n_blue = _rows_with(img, BLUE)
    assert n_green > 200 and n_blue > 2000  # the one bar and the histogram are drawn
    assert green_rows.max() < blue_rows.min()
    assert _rows_with(img, RED)[1] == 0
