"""Output that loads anywhere: converted models hold Keras built-in layers only, so the `.keras`
file loads with plain `keras.models.load_model` (safe mode) in a process that never imports
porting, under the TensorFlow and the PyTorch backends, and the SavedModel and TFLite exports
agree with Knet. Every shipped example (`porting convert --example NAME`: lenet, cnn-bn, resnet,
dcgan, vae, layers21 and any added since) is among the models checked.

Expected values are Knet's, from porting's NumPy reference of Knet's CPU kernels (not from
Keras); the bound is the float32 (or float64) rounding bound of the whole chain:
`sum_i (sqrt(K_i) + 2) * eps * S`, `S` the model run on |w| and |x| (porting.magnitude).
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting.model import (  # noqa: E402
    Activation,
    Add,
    BatchNorm,
    Concat,
    Conv,
    Deconv,
    Dense,
    KnetModel,
    Linear,
    Mat,
    PixelShuffle,
    Pool,
    Upsample,
    convert,
    forward_knet,
)

F32, F64 = np.float32, np.float64


def _models():
    rng = np.random.default_rng(11)

    def w(*shape, dt=F32):
        return np.asfortranarray(rng.standard_normal(shape).astype(dt))

    return {
        # a padded conv followed by a padded max pool inside the layer (two `__pad`s once)
        "conv_padded_maxpool": (
            KnetModel(
                [
                    Conv(
                        w(3, 3, 2, 4),
                        w(1, 1, 4, 1),
                        padding=1,
                        pool=dict(window=3, padding=1, stride=2),
                        activation="relu",
                    ),
                    Pool(window=2, padding=1, mode=1),
                    Dense(w(3, 3 * 2 * 4)),
                ],
                input_size=(7, 6, 2),
            ),
            # all-negative inputs: a zero in the padding would win every border window
            -np.abs(w(7, 6, 2, 3)) - F32(0.5),
        ),
        # batchnorm, a residual Add, a deconvolution and a concatenation (functional model)
        "graph_bn_deconv": (
            KnetModel(
                [
                    Conv(w(3, 3, 2, 3), padding=1, name="c1"),
                    BatchNorm(w(3), np.abs(w(3)) + F32(0.5), np.abs(w(6)) + F32(0.5), name="bn1"),
                    Activation("relu", name="r1"),
                    Conv(w(3, 3, 3, 3), padding=1, name="c2"),
                    Add(["c2", "r1"], activation="relu", name="res"),
                    Deconv(w(2, 2, 2, 3), w(2), stride=2, padding=1, name="up"),
                    Activation("tanh", name="t"),
                    Conv(w(1, 1, 2, 2), name="side"),
                    Concat(["t", "side"], name="cat"),
                ],
                input_size=(5, 4, 2),
                inputs={"side": "up"},
            ),
            w(5, 4, 2, 3),
        ),
        # logsoftmax over a spatial axis (Permute, Activation("log_softmax"), Permute back),
        # Layers21's Linear and a per-sample logsoftmax
        "logsoftmax_linear": (
            KnetModel(
                [
                    Conv(w(3, 3, 2, 3), mode=1, name="c"),
                    Activation("logsoftmax", dims=1, name="ls_x1"),
                    Mat(name="flat"),
                    Linear(w(4, 4 * 3 * 3), bias=w(4), activation="relu", name="fc"),
                    Activation("logsoftmax", dims=1, name="logp"),
                ],
                input_size=(6, 5, 2),
            ),
            w(6, 5, 2, 3),
        ),
        # the resampling kinds: aligned-corner bilinear (Permute + Dense matrices), pixel
        # shuffle (Reshape + Permute), nearest and half-pixel bilinear (UpSampling2D)
        "resample": (
            KnetModel(
                [
                    Conv(w(3, 3, 2, 8), padding=1, activation="relu", name="c"),
                    Upsample("bilinear", scale=(2, 1.5), name="up_aligned"),
                    PixelShuffle(2, name="shuffle"),
                    Upsample("nearest", scale=(1, 2), name="up_nearest"),
                    Upsample("bilinear", scale=2, align_corners=False, name="up_half"),
                ],
                input_size=(4, 3, 2),
            ),
            w(4, 3, 2, 2),
        ),
        "pool1d_max_padded": (
            KnetModel([Pool(window=3, padding=2, stride=2)], input_size=(9, 3)),
            -np.abs(w(9, 3, 2)) - F32(1),
        ),
        "pool3d_float64": (
            KnetModel(
                [
                    Conv(w(2, 2, 2, 1, 2, dt=F64), pool=dict(window=2, padding=1)),
                    Pool(window=(2, 3, 2), padding=(1, 0, 1), stride=(1, 2, 2), mode=1),
                ],
                input_size=(5, 6, 4, 1),
            ),
            -np.abs(w(5, 6, 4, 1, 2, dt=F64)),
        ),
    }


SHIPPED = ("lenet", "cnn-bn", "resnet", "dcgan", "vae", "layers21")


def _shipped_examples():
    """Every example `porting convert --example NAME` converts, built as the command builds it
    (the shipped LeNet export pair and its input; `porting.examples.models`)."""
    from porting.examples.lenet import lenet, lenet_input
    from porting.examples.models import EXAMPLES, example_input

    out = {"example_lenet": (lenet(), lenet_input())}
    for name, (build, _) in EXAMPLES.items():
        m = build()
        out[f"example_{name}"] = (m, example_input(m))
    assert {f"example_{n}" for n in SHIPPED} <= set(out), sorted(out)
    return out


def _chain_bound(model, x, knet):
    """Elementwise end-to-end bound: sum over layers of (sqrt(K)+2) * eps, times S_end, the
    model's stages applied to |w| and |x| (Julia layout), plus a tiny for underflow."""
    eps = float(np.finfo(model.dtype).eps)
    factor = 0.0
    s_in = np.abs(x).astype(F64)
    nodes: list = []
    for i, step in enumerate(model.plan):
        factor += math.sqrt(step.k) + 2
        ins = [s_in if k < 0 else nodes[k] for k in step.sources]
        s = ins if step.layer.merges else ins[0]
        last = len(step.stages) - 1
        for j, st in enumerate(step.stages):
            s = st.magnitude(s, knet[i] if j == last else knet.extras[i].get(j), F64)
        nodes.append(s)
    return factor * eps * nodes[-1] + factor * float(np.finfo(F32).tiny)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("portable")
    out = {}
    for name, (m, x) in {**_models(), **_shipped_examples()}.items():
        km = convert.to_keras(m)
        path = d / f"{name}.keras"
        convert.save_keras(km, path)
        knet = forward_knet(m, x, backend="reference", keep_extras=True)
        flat = m.plan.steps[-1].flat_from
        expected = convert.julia_to_tf(knet.final, flat, "reverse")
        bound = convert.julia_to_tf(_chain_bound(m, x, knet), flat, "reverse")
        x_tf = convert.julia_to_tf(x, None, "reverse")  # (N, F) for a dense-first model
        to_keras_input = getattr(m.layers[0], "keras_input", None)
        if to_keras_input is not None:  # an embedding: Knet's 1-based indices -> 0-based
            x_tf = to_keras_input(x_tf)
        np.save(d / f"{name}_x.npy", x_tf)
        out[name] = dict(
            model=m, keras=km, path=path, x=x, x_tf=x_tf, expected=expected, bound=bound
        )
    return d, out


def test_no_custom_layers_and_unique_names(saved):
    import keras

    _, out = saved
    for name, o in out.items():
        layers = o["keras"].layers
        assert all(type(lay).__module__.startswith("keras.") for lay in layers), name
        names = [lay.name for lay in layers]
        assert len(names) == len(set(names)), name
        assert isinstance(layers[0], keras.layers.InputLayer)


def _within(actual, o, what):
    err = np.abs(np.asarray(actual, F64) - o["expected"].astype(F64))
    assert actual.shape == o["expected"].shape, what
    bad = err > o["bound"]
    assert not bad.any(), f"{what}: {bad.sum()} elements beyond the bound, max err {err.max():.3g}"


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_plain_keras_loads_it_without_porting_on_two_backends(saved, backend):
    if backend == "torch":
        pytest.importorskip("torch", reason="the PyTorch Keras backend needs torch")
    d, out = saved
    script = textwrap.dedent(
        f"""
        import os, sys, json
        os.environ["KERAS_BACKEND"] = {backend!r}
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import numpy as np
        import keras
        assert keras.backend.backend() == {backend!r}
        d = {str(d)!r}
        for name in {sorted(out)!r}:
            km = keras.models.load_model(os.path.join(d, name + ".keras"))  # safe_mode default
            y = keras.ops.convert_to_numpy(km(np.load(os.path.join(d, name + "_x.npy"))))
            np.save(os.path.join(d, name + "_{backend}.npy"), y)
        assert not any(m == "porting" or m.startswith("porting.") for m in sys.modules)
        print(json.dumps("ok"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(d),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == "ok"
    for name, o in out.items():
        _within(np.load(d / f"{name}_{backend}.npy"), o, f"{name} under {backend}")


def test_padded_max_pool_borders_are_exactly_knet(saved):
    """Border windows of an all-negative input: Knet's maximum of the real cells, bit for bit
    (a zero padding would give 0 there)."""
    _, out = saved
    o = out["pool1d_max_padded"]
    y = np.asarray(o["keras"](o["x_tf"]))
    np.testing.assert_array_equal(y, o["expected"])
    assert (y < 0).all()


def test_savedmodel_and_tflite_agree_with_knet(saved, tmp_path):
    import tensorflow as tf

    _, out = saved
    float32 = (
        "conv_padded_maxpool",
        "pool1d_max_padded",
        "graph_bn_deconv",
        "logsoftmax_linear",
        "resample",
    )
    for name in float32:
        o = out[name]
        sm = convert.export_savedmodel(o["keras"], tmp_path / f"{name}_sm")
        loaded = tf.saved_model.load(sm)
        _within(np.asarray(loaded.serve(o["x_tf"])), o, f"{name} SavedModel")
        path = convert.export_tflite(o["keras"], tmp_path / f"{name}.tflite")
        interp = tf.lite.Interpreter(model_path=path)
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], o["x_tf"].shape)
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], o["x_tf"].astype(F32))
        interp.invoke()
        y = interp.get_tensor(interp.get_output_details()[0]["index"])
        _within(y, o, f"{name} TFLite")


def test_models_verify_layer_by_layer(saved):
    from porting.model.verify import verify_model

    _, out = saved
    for name, o in out.items():
        for mode in ("each", "whole"):
            report = verify_model(o["model"], o["x"], keras_model=o["keras"], mode=mode)
            assert report.ok, f"{name} {mode}\n{report}"
