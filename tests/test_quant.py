"""porting.quant: the weights a quantized layer computes with, and verification against them.

The NumPy half (quantizer maths, references, diagnosis with known quantized weights) runs
everywhere. The QKeras half needs qkeras and tf_keras and runs in fresh interpreters with
TF_USE_LEGACY_KERAS=1 (QKeras cannot load next to Keras 3); it is skipped when they are not
installed.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from porting import PortingError, layout
from porting.knet import conv4
from porting.quant import (
    diagnose_quantized,
    qkeras_status,
    quantized_bits,
    quantized_relu,
    verify_capture,
    verify_saved,
)
from porting.quant._ref import conv2d_reference, dense_reference, numpy_quantizer, same_pads

ROOT = Path(__file__).resolve().parents[1]
QKERAS, QKERAS_REASON = qkeras_status()
needs_qkeras = pytest.mark.skipif(not QKERAS, reason=QKERAS_REASON)


# --------------------------------------------------------------------------- NumPy maths


def test_quantized_bits_grid_and_clip():
    x = np.array([-3.0, -1.0, -0.53, -0.0625, 0.0, 0.06, 0.07, 0.3, 0.9, 0.93, 5.0])
    q = quantized_bits(x, 4, 0)  # step 1/8, range [-1, 7/8]
    assert q.tolist() == [-1.0, -1.0, -0.5, -0.0, 0.0, 0.0, 0.125, 0.25, 0.875, 0.875, 0.875]
    assert quantized_bits(x, 4, 0, symmetric=True).min() == -0.875
    assert quantized_bits(x, 4, 0, keep_negative=False).tolist()[:4] == [0.0, 0.0, 0.0, 0.0]
    assert quantized_bits(x, 4, 0, keep_negative=False).max() == 0.9375  # step 1/16
    q = quantized_bits(np.linspace(-10, 10, 2001), 6, 2)  # step 1/8, range [-4, 4 - 1/8]
    assert np.unique(q).size == 64 and q.min() == -4 and q.max() == 3.875
    assert np.all(np.round(q * 8) == q * 8)
    # ties go to even, as tf.round does
    assert quantized_bits(np.array([0.0625, 0.1875]), 4, 0).tolist() == [0.0, 0.25]


def test_quantized_relu():
    x = np.array([-1.0, 0.01, 0.04, 0.5, 0.97, 5.0])
    assert quantized_relu(x, 4, 0).tolist() == [0.0, 0.0, 0.0625, 0.5, 0.9375, 0.9375]
    assert quantized_relu(x, 4, 2).max() == 3.75


def test_quantizer_arguments_are_checked():
    with pytest.raises(PortingError, match="bits=1"):
        quantized_bits([0.5], 1)
    with pytest.raises(PortingError, match="integer=4 must be smaller"):
        quantized_bits([0.5], 4, 4)
    assert numpy_quantizer("quantized_bits", {"bits": 4, "integer": 0, "alpha": "auto_po2"}) is None
    assert numpy_quantizer("quantized_po2", {}) is None
    f = numpy_quantizer(
        "quantized_bits",
        {"bits": 4, "integer": 0, "alpha": 1, "symmetric": 0, "keep_negative": True},
    )
    assert f(np.array([0.3]))[0] == 0.25


@pytest.mark.parametrize(
    "n, k, s, d, want",
    [
        (5, 3, 1, 1, (1, 1)),
        (6, 2, 2, 1, (0, 0)),
        (5, 2, 2, 1, (0, 1)),
        (7, 4, 1, 1, (1, 2)),
        (7, 3, 1, 2, (2, 2)),
    ],
)
def test_same_pads_golden(n, k, s, d, want):
    # TensorFlow "SAME": total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0), the odd pixel after
    assert same_pads(n, k, s, d) == want


def _conv_loops(x, k, b, stride, pads):
    """Direct cross-correlation in TF layout, for checking the reference."""
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    kh, kw, _, co = k.shape
    ho = (xp.shape[1] - kh) // stride[0] + 1
    wo = (xp.shape[2] - kw) // stride[1] + 1
    y = np.zeros((x.shape[0], ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw, :]
            y[:, i, j, :] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
    return y + b


@pytest.mark.parametrize(
    "padding, stride", [("valid", (1, 1)), ("same", (1, 1)), ("same", (2, 2)), ("same", (1, 2))]
)
def test_conv2d_reference_matches_loops(padding, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))
    k = rng.standard_normal((2, 3, 3, 4))  # even height: asymmetric SAME padding
    b = rng.standard_normal(4)
    y, m, kk = conv2d_reference(x, k, b, strides=stride, padding=padding)
    pads = (
        [same_pads(x.shape[1 + i], k.shape[i], stride[i], 1) for i in range(2)]
        if padding == "same"
        else [(0, 0)] * 2
    )
    np.testing.assert_allclose(y, _conv_loops(x, k, b, stride, pads), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        m, _conv_loops(np.abs(x), np.abs(k), np.abs(b), stride, pads), rtol=1e-12
    )
    assert kk == 2 * 3 * 3 + 1


def test_dense_reference():
    rng = np.random.default_rng(1)
    x, k, b = rng.standard_normal((5, 8)), rng.standard_normal((8, 3)), rng.standard_normal(3)
    y, m, kk = dense_reference(x, k, b)
    np.testing.assert_allclose(y, x @ k + b)
    assert kk == 9 and np.all(m >= np.abs(y) - 1e-12)
    with pytest.raises(PortingError, match="8 inputs but x has 7"):
        dense_reference(x[:, :7], k)


# --------------------------------------------------------------------------- verification without QKeras


def _fake_capture(reference_weights_quantized: bool = True):
    """What the worker would send back for a QConv2D run in float32: the layer's output is the
    float32 conv of the quantized kernel (the NumPy reference in float32)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 6, 5, 3)).astype(np.float32)
    kf = (rng.standard_normal((3, 3, 3, 4)) * 0.4).astype(np.float32)
    bf = (rng.standard_normal(4) * 0.2).astype(np.float32)
    kq = quantized_bits(kf, 4, 0).astype(np.float32)
    bq = quantized_bits(bf, 4, 0).astype(np.float32)
    # the "layer": float32 arithmetic through the reference conv in float32
    xj = layout.activations_from_tf(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]))
    yj = conv4(layout.kernel_from_tf(kq, mode=1), xj, mode=1, backend="reference")
    y = (layout.activations_to_tf(np.asarray(yj)) + bq).astype(np.float32)
    return {
        "layer": "conv2d",
        "class": "QConv2D",
        "config": {
            "kind": "conv2d",
            "strides": [1, 1],
            "padding": "same",
            "dilation": [1, 1],
            "use_bias": True,
            "activation": "linear",
        },
        "x": x,
        "y": y,
        "y_linear": y,
        "names": ["kernel", "bias"],
        "float": {"kernel": kf, "bias": bf},
        "quantized": {"kernel": kq, "bias": bq},
        "quantizers": {
            "kernel": "quantized_bits(4,0,0,alpha=1)",
            "bias": "quantized_bits(4,0,0,alpha=1)",
        },
        "versions": {},
    }


def test_verify_capture_quantized_reference_agrees():
    r = verify_capture(_fake_capture())
    assert r.ok, str(r)
    assert r.comparison.tolerance.k == 28
    assert r.weights.changed("kernel") > 0
    assert "OK" in str(r) and r.to_dict()["reference"] == "quantized"


def test_verify_capture_float_reference_names_quantization():
    r = verify_capture(_fake_capture(), reference="float")
    assert not r.ok
    assert r.diagnosis is not None and r.diagnosis.cause == "quantization", str(r.diagnosis)
    assert "quantized weights" in r.diagnosis.evidence
    assert r.diagnosis.finding.explains
    assert json.dumps(r.to_dict(), default=str)


def test_diagnose_quantized_knet_layout():
    # The Knet side computed with quantized weights; the reference used the float ones.
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((3, 3, 2, 3)) * 0.5).astype(np.float32)
    x = rng.uniform(-1, 1, (8, 7, 2, 1)).astype(np.float32)
    wq = quantized_bits(w, 5, 1).astype(np.float32)
    expected = layout.activations_to_tf(np.asarray(conv4(w, x, padding=1, backend="reference")))
    actual = layout.activations_to_tf(np.asarray(conv4(wq, x, padding=1, backend="reference")))
    d = diagnose_quantized(expected, actual, w=w, w_quantized=wq, x=x, padding=1)
    assert d.cause == "quantization", str(d)
    assert d.finding.details["changed"] == int(np.sum(w != wq))
    # no mismatch: the known quantized weights change nothing in the verdict
    d = diagnose_quantized(actual, actual, w=wq, w_quantized=wq, x=x, padding=1)
    assert d.cause == "rounding"
    with pytest.raises(PortingError, match="w_quantized has shape"):
        diagnose_quantized(expected, actual, w=w, w_quantized=wq[..., :2], x=x, padding=1)


def test_diagnose_quantized_dense():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 10)) * 0.3  # Knet (out, in)
    x = rng.uniform(-1, 1, (10, 3))  # (in, N)
    wq = quantized_bits(w, 4, 0)
    expected = (w @ x).T
    actual = (wq @ x).T.astype(np.float32)
    d = diagnose_quantized(expected, actual, w=w, w_quantized=wq, x=x)
    assert d.cause == "quantization", str(d)


def test_verify_checks_arguments(tmp_path):
    with pytest.raises(PortingError, match="reference='shadow'"):
        verify_capture(_fake_capture(), reference="shadow")
    with pytest.raises(PortingError, match="no such file"):
        verify_saved(tmp_path / "missing.h5", "conv2d", np.zeros((1, 3, 3, 1), np.float32))
    model = tmp_path / "m.h5"
    model.write_bytes(b"")
    with pytest.raises(PortingError, match="dtype int64"):
        verify_saved(model, "conv2d", np.zeros((1, 3, 3, 1), np.int64))
    with pytest.raises(PortingError, match="python=/nonexistent/python: not an executable"):
        verify_saved(
            model, "conv2d", np.zeros((1, 3, 3, 1), np.float32), python="/nonexistent/python"
        )


def test_import_quant_is_light():
    code = "import sys, porting.quant\nassert not [m for m in ('tensorflow', 'qkeras', 'keras') if m in sys.modules]"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- QKeras (fresh interpreters)

_BUILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: QKeras runs on tf_keras
    import numpy as np
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu
    import porting.quant as pq

    rng = np.random.default_rng(0)
    inp = tf.keras.Input((6, 5, 3))
    h = QConv2D(4, (2, 3), strides=(2, 1), padding="same", name="conv2d",
                kernel_quantizer=quantized_bits(4, 0, alpha=1),
                bias_quantizer=quantized_bits(4, 0, alpha=1))(inp)
    h = QActivation("quantized_relu(4,0)", name="act")(h)
    h = tf.keras.layers.Flatten()(h)
    out = QDense(3, name="dense", activation="quantized_relu(6,2)",
                 kernel_quantizer=quantized_bits(6, 0, alpha=1),
                 bias_quantizer=quantized_bits(6, 0, alpha=1))(h)
    model = tf.keras.Model(inp, out)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(np.float32) for w in ws])
    x = rng.uniform(-1, 1, (2, 6, 5, 3)).astype(np.float32)
    conv = model.get_layer("conv2d")
    qw = pq.quantized_weights(conv)
    res = {"names": qw.names, "quantizers": qw.quantizers}
    # the extraction against the NumPy maths of quantized_bits(4, 0)
    res["kernel_matches_numpy"] = bool(np.array_equal(qw["kernel"], pq.quantized_bits(qw.float["kernel"], 4, 0)))
    res["kernel_changed"] = qw.changed("kernel")
    res["float_is_get_weights"] = bool(np.array_equal(qw.float["kernel"], conv.get_weights()[0]))
    # QKeras quantizers against the NumPy maths over a wide range
    grid = np.linspace(-6, 6, 4801).astype(np.float32)
    res["bits_grid_equal"] = all(
        np.array_equal(quantized_bits(*a, alpha=1)(tf.constant(grid)).numpy(), pq.quantized_bits(grid, *a))
        for a in [(4, 0), (6, 2), (8, 3), (5, 1, 1), (3, 0, 0, 0)]
    ) and all(
        np.array_equal(quantized_relu(*a)(tf.constant(grid)).numpy(), pq.quantized_relu(grid, *a))
        for a in [(4, 0), (4, 2), (8, 0), (3, 1)]
    )
    r = pq.verify_layer(conv, x)
    res["quantized_ok"] = r.ok
    res["quantized_k"] = r.comparison.tolerance.k
    r = pq.verify_layer(conv, x, reference="float")
    res["float_ok"] = r.ok
    res["float_cause"] = r.diagnosis.cause if r.diagnosis is not None else None
    r = pq.verify_layer(model.get_layer("act"), rng.uniform(-2, 2, (2, 3, 5, 4)).astype(np.float32))
    res["act_ok"] = r.ok
    xd = rng.uniform(-1, 1, (4, 60)).astype(np.float32)
    r = pq.verify_layer(model.get_layer("dense"), xd)
    res["dense_ok"] = r.ok
    res["dense_notes"] = r.notes
    r = pq.verify_layer(model.get_layer("dense"), xd, reference="float")
    res["dense_float_cause"] = r.diagnosis.cause if r.diagnosis is not None else None
    try:
        pq.verify_layer(model.get_layer("flatten"), x)
    except pq.PortingError as e:
        res["plain_layer_error"] = str(e)
    model.save(sys.argv[1])
    np.save(sys.argv[2], x)
    print("RESULT " + json.dumps(res))
    """
)


@pytest.fixture(scope="module")
def qkeras_model(tmp_path_factory):
    if not QKERAS:
        pytest.skip(QKERAS_REASON)
    d = tmp_path_factory.mktemp("qkeras")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    script = d / "build.py"
    script.write_text(_BUILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(d / "model.h5"), str(d / "x.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=d,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"QKeras build script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return d / "model.h5", np.load(d / "x.npy"), json.loads(lines[-1][len("RESULT ") :])


@needs_qkeras
def test_qkeras_quantized_weights_in_process(qkeras_model):
    _, _, res = qkeras_model
    assert res["names"] == ["kernel", "bias"]
    assert res["quantizers"]["kernel"].startswith("quantized_bits(4,0")
    assert res["kernel_matches_numpy"] and res["kernel_changed"] > 0
    assert res["float_is_get_weights"]
    assert res["bits_grid_equal"]


@needs_qkeras
def test_qkeras_verify_layer_in_process(qkeras_model):
    _, _, res = qkeras_model
    assert res["quantized_ok"] is True
    assert res["quantized_k"] == 2 * 3 * 3 + 1
    assert res["float_ok"] is False and res["float_cause"] == "quantization"
    assert res["act_ok"] is True
    assert res["dense_ok"] is True and any(
        "before the layer's activation" in n for n in res["dense_notes"]
    )
    assert res["dense_float_cause"] == "quantization"
    assert "not a QKeras layer" in res["plain_layer_error"]


@needs_qkeras
def test_qkeras_saved_model_through_worker(qkeras_model):
    path, x, _ = qkeras_model
    r = verify_saved(path, "conv2d", x, reference="float")
    assert not r.ok and r.diagnosis.cause == "quantization"
    assert r.versions.get("qkeras") == "0.9.0" or "qkeras" in r.versions
    assert np.array_equal(r.weights["kernel"], quantized_bits(r.weights.float["kernel"], 4, 0))
    # the parent process never imported TensorFlow or QKeras for this
    assert "qkeras" not in sys.modules


def test_worker_reports_missing_qkeras(tmp_path, monkeypatch):
    # A qkeras that cannot be imported (shadowing any installed one): a PortingError that says
    # what to install, from the worker's own interpreter, without TensorFlow being loaded.
    fake = tmp_path / "shadow" / "qkeras"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no qkeras here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "shadow"))
    model = tmp_path / "m.h5"
    model.write_bytes(b"not a model")
    with pytest.raises(PortingError, match=r"cannot import QKeras .*porting\[quant\]"):
        verify_saved(model, "conv2d", np.zeros((1, 3, 3, 1), np.float32))
