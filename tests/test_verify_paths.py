"""The shortcuts model verification takes for speed give what the plain paths give:

- each layer run on a doubled batch (Knet's input, Keras's own) equals the two separate calls,
  and models with a layer that could mix samples fall back to separate calls;
- a built-in layer's `call` run directly equals Keras's `__call__`, bit for bit;
- `compare`'s ULP figure equals NumPy's `np.spacing`, and the batchnorm and relu magnitude
  rules equal their formulas written out here.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting.comparison import compare  # noqa: E402
from porting.examples.lenet import lenet, lenet_input  # noqa: E402
from porting.examples.models import EXAMPLES, example_input  # noqa: E402
from porting.model import convert  # noqa: E402
from porting.model import keras_side as ks  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32 = np.float32


def _examples():
    out = [("lenet", lenet(), lenet_input()[..., :2])]
    for name, (make, _) in EXAMPLES.items():
        model = make()
        out.append((name, model, example_input(model)))
    return out


EX = _examples()


@pytest.fixture(scope="module")
def converted():
    return {name: (m, x, convert.to_keras(m)) for name, m, x in EX}


def _tf_input(model, x, km):
    from porting import layout

    if x.ndim > 2:
        t = layout.activations_to_tf(x, "reverse")
    else:
        t = np.ascontiguousarray(x.T)
    conv = getattr(model.layers[0], "keras_input", None)
    t = t if conv is None else conv(t)
    return t.astype(np.dtype(km.inputs[0].dtype), copy=False)


def _chain(groups, model, x_tf):
    """Every group's output on the Keras chain, group by group (run_group)."""
    from porting.model.planning import plan_for

    steps = plan_for(model, None)
    outs = {}
    for i, (step, group) in enumerate(zip(steps, groups, strict=True)):
        feeds = {ks.source_name(steps, k): x_tf if k < 0 else outs[k] for k in step.sources}
        outs[i] = np.asarray(ks.run_group(group, feeds))
    return outs


@pytest.mark.parametrize("name", [e[0] for e in EX])
def test_every_example_runs_on_a_doubled_batch_and_each_half_is_its_own_run(converted, name):
    model, x, km = converted[name]
    groups = convert.keras_groups(km, model)
    assert ks.per_sample(groups, km), [type(lay).__name__ for g in groups for lay in g]
    x_tf = _tf_input(model, x, km)
    # two different inputs: the example's and a scaled one (tokens: shifted indices)
    other = (
        (x_tf + 1) % int(model.layers[0].w.shape[-1])
        if not np.issubdtype(x_tf.dtype, np.floating)
        else (x_tf * F32(0.5)).astype(x_tf.dtype)
    )
    alone = [_chain(groups, model, t) for t in (x_tf, other)]
    both = _chain(groups, model, np.concatenate([x_tf, other]))
    n = x_tf.shape[0]
    for i in both:
        for half, ref in ((both[i][:n], alone[0][i]), (both[i][n:], alone[1][i])):
            # The same float32 computation, perhaps summed in another order (a recurrent
            # layer's batch loop differs): rounding noise, at most a few eps of the outputs'
            # scale, where a sample mixed with another would move by the outputs' own size.
            scale = float(np.abs(ref).max())
            assert np.abs(half - ref).max() <= 64 * np.finfo(F32).eps * scale, (name, i)
    # and the chain's end is what the whole Keras model gives
    whole = np.asarray(km(x_tf, training=False))
    last = alone[0][len(groups) - 1]
    assert np.abs(whole - last).max() <= 64 * np.finfo(F32).eps * float(np.abs(whole).max())


@pytest.mark.parametrize("name", ["lenet", "resnet", "tagger"])
def test_verification_takes_the_doubled_path_and_agrees_with_separate_calls(
    converted, monkeypatch, name
):
    model, x, km = converted[name]
    doubled = verify_model(model, x, keras_model=km)
    assert doubled.ok, str(doubled)
    assert "keras_forward_s" not in doubled.timings  # no separate end-to-end run
    monkeypatch.setattr("porting.model.verify_sides.per_sample", lambda groups, km: False)
    separate = verify_model(model, x, keras_model=km)
    assert separate.ok and "keras_forward_s" in separate.timings
    for a, b in zip(doubled.rows, separate.rows, strict=True):
        # each row compares the same Knet output with Keras on the same Knet input
        assert a.name == b.name and a.k == b.k
        assert a.error_to_tolerance <= 1 and b.error_to_tolerance <= 1
    e2e_a, e2e_b = doubled.end_to_end, separate.end_to_end
    assert e2e_a["max_abs_expected"] == e2e_b["max_abs_expected"]
    tol = 64 * np.finfo(F32).eps * max(1.0, e2e_a["max_abs_expected"])
    assert abs(e2e_a["max_abs_error"] - e2e_b["max_abs_error"]) <= tol


def test_a_layer_that_may_mix_samples_gets_separate_calls():
    import keras

    inp = keras.Input((4,))
    a = keras.layers.Dense(3, name="d1")(inp)
    b = keras.layers.Concatenate(axis=0, name="c")([a, a])
    km = keras.Model(inp, b)
    assert not ks.per_sample([[km.get_layer("d1"), km.get_layer("c")]], km)
    ok = keras.Model(inp, a)
    assert ks.per_sample([[ok.get_layer("d1")]], ok)
    lstm_in = keras.Input((5, 2), batch_size=1)
    st = keras.layers.LSTM(3, stateful=True, name="s")
    sm = keras.Model(lstm_in, st(lstm_in))
    assert not ks.per_sample([[sm.get_layer("s")]], sm)
    lam = keras.layers.Lambda(lambda t: t - keras.ops.mean(t, axis=0), name="lam")
    lm = keras.Model(inp, lam(inp))
    assert not ks.per_sample([[lm.get_layer("lam")]], lm)
    # a group list that does not end at the model's output
    assert not ks.per_sample([[km.get_layer("d1")]], km)


@pytest.mark.parametrize("name", [e[0] for e in EX])
def test_direct_call_equals_keras_call_bit_for_bit(converted, monkeypatch, name):
    model, x, km = converted[name]
    groups = convert.keras_groups(km, model)
    x_tf = _tf_input(model, x, km)
    used = []
    real = ks._direct

    def spy(lay, args, kwargs):
        d = real(lay, args, kwargs)
        used.append((type(lay).__name__, d))
        return d

    monkeypatch.setattr(ks, "_direct", spy)
    fast = _chain(groups, model, x_tf)
    monkeypatch.setattr(ks, "_direct", lambda lay, args, kwargs: False)
    slow = _chain(groups, model, x_tf)
    for i in slow:
        np.testing.assert_array_equal(fast[i], slow[i], err_msg=f"{name} group {i}")
    kinds = {k for k, d in used if d}
    if name in ("lenet", "cnn-bn", "resnet", "layers21"):
        assert "Conv2D" in kinds, used
    if name in ("cnn-bn", "resnet", "dcgan"):
        assert "BatchNormalization" in kinds, used


def test_direct_call_is_not_taken_for_another_dtype_or_a_mask():
    import keras

    lay = keras.layers.Dense(2, name="dd")
    lay.build((None, 3))
    assert ks._direct(lay, (np.zeros((1, 3), F32),), {})
    assert not ks._direct(lay, (np.zeros((1, 3), np.float64),), {})
    assert not ks._direct(lay, (np.zeros((1, 3), F32),), {"training": False})
    assert not ks._direct(lay, (np.zeros((1, 3), F32),), {"mask": np.ones((1, 3), bool)})
    assert ks._direct(lay, (np.zeros((1, 3), F32),), {"mask": None})
    assert not ks._direct(lay, ([[0.0, 0.0, 0.0]],), {})  # no dtype: let Keras convert it
    half = keras.layers.Dense(2, dtype="mixed_float16")
    half.build((None, 3))
    assert not ks._direct(half, (np.zeros((1, 3), np.float16),), {})
    emb = keras.layers.Embedding(5, 2)
    emb.build((None, 3))
    assert not ks._direct(emb, (np.zeros((1, 3), np.int32),), {})  # not in the list


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_max_ulp_is_numpys_spacing(dtype):
    rng = np.random.default_rng(0)
    fi = np.finfo(dtype)
    e = np.concatenate(
        [
            rng.standard_normal(5000) * 10.0 ** rng.integers(-3, 4, 5000),
            [0.0, -0.0, fi.tiny, -fi.tiny, fi.tiny / 8, fi.smallest_subnormal, 1.0, -2.0],
            [fi.max / 4, -fi.max / 4],
        ]
    ).astype(dtype)
    steps = rng.integers(0, 7, e.size).astype(dtype)
    a = (e + steps * np.spacing(np.abs(e))).astype(dtype)
    c = compare(e, a, k=1 << 20)
    d = np.abs(a.astype(np.float64) - e.astype(np.float64))
    want = float(np.max(d / np.spacing(np.abs(e)).astype(np.float64)))
    assert c.max_ulp == want


def test_batchnorm_and_relu_magnitudes_are_their_formulas():
    from porting.model import Activation, BatchNorm
    from porting.model.planning import plan_for
    from porting.model.spec import KnetModel

    rng = np.random.default_rng(3)
    c = 6
    mean = rng.standard_normal(c).astype(F32)
    var = (0.5 + rng.random(c)).astype(F32)
    params = np.concatenate([rng.standard_normal(c), rng.standard_normal(c)]).astype(F32)
    bn = BatchNorm(mean.reshape(1, 1, c, 1), var.reshape(1, 1, c, 1), params)
    model = KnetModel([bn, Activation("relu")], input_size=(4, 5, c))
    (bn_step, relu_step) = plan_for(model, None)
    s = np.abs(rng.standard_normal((4, 5, c, 2))).astype(F32)
    got = bn_step.stages[0].magnitude(s, None, np.dtype(F32))
    g, b = params[:c].astype(np.float64), params[c:].astype(np.float64)
    ivar = 1 / np.sqrt(var.astype(np.float64) + 1e-5)
    sh = (1, 1, c, 1)
    want = np.abs(g).reshape(sh) * (s + np.abs(mean).reshape(sh)) * ivar.reshape(sh)
    want += np.abs(b).reshape(sh)
    assert got.dtype == F32 and got.shape == s.shape
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(F32).eps)
    assert got is not s and np.all(s >= 0)  # a new array; the input untouched
    # a plain relu passes S on (slope 1, exact)
    assert relu_step.stages[0].magnitude(s, s, np.dtype(F32)) is s


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_magnitude_matmul_in_blocks_is_abs_w_times_abs_x(monkeypatch, order, dtype):
    from porting import magnitude

    monkeypatch.setattr(magnitude, "_BLOCK_BYTES", 1000)  # many blocks, and a ragged last one
    rng = np.random.default_rng(1)
    w = np.asarray(rng.standard_normal((37, 301)), order=order)
    x = rng.standard_normal((301, 3))
    got = magnitude.matmul(w, x, dtype=dtype)
    want = np.abs(w) @ np.abs(x)  # float64, the textbook definition
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=301 * np.finfo(dtype).eps)
    # a dense layer's S goes through it: x as Knet's (features, batch)
    got_dense = magnitude.dense(w, x, dtype)
    np.testing.assert_allclose(got_dense, want, rtol=301 * np.finfo(dtype).eps)


@pytest.mark.parametrize("mode", ["each", "whole"])
def test_relu_outputs_are_their_own_magnitudes(converted, monkeypatch, mode):
    from porting.model import knet_side
    from porting.model.stages import ActStage

    model, x, km = converted["resnet"]
    taken = []
    real = knet_side.magnitude_of

    def spy(*args):
        taken.append(any(args[7] or []))
        return real(*args)

    monkeypatch.setattr(knet_side, "magnitude_of", spy)
    fast = verify_model(model, x, keras_model=km, mode=mode)
    assert sum(taken) >= 5  # the layers after a relu took |x| = x
    monkeypatch.setattr(ActStage, "nonnegative", property(lambda self: False))
    slow = verify_model(model, x, keras_model=km, mode=mode)
    assert fast.ok and slow.ok
    for a, b in zip(fast.rows, slow.rows, strict=True):
        assert a.comparison.worst_tolerance == b.comparison.worst_tolerance, a.name
        assert a.error_to_tolerance == b.error_to_tolerance, a.name


@pytest.mark.parametrize("name", ["lenet", "resnet", "tagger"])
def test_the_paired_calls_of_a_large_input_agree_with_the_doubled_batch(
    converted, monkeypatch, name
):
    """From `PAIRED_ELEMENTS` input elements on, each group runs twice (Knet's input, then the
    chain's own outputs kept as tensors) instead of once on a doubled batch: the same rows and
    the same end-to-end output, up to the order of float operations."""
    import porting.model.verify_sides as vs

    model, x, km = converted[name]
    monkeypatch.setattr(vs, "PAIRED_ELEMENTS", 1 << 60)
    doubled = verify_model(model, x, keras_model=km)
    monkeypatch.setattr(vs, "PAIRED_ELEMENTS", 0)
    paired = verify_model(model, x, keras_model=km)
    assert doubled.ok and paired.ok, str(paired)
    assert "keras_forward_s" not in paired.timings  # the chain went along, not run again
    assert [r.name for r in paired.rows] == [r.name for r in doubled.rows]
    for a, b in zip(doubled.rows, paired.rows, strict=True):
        assert a.error_to_tolerance <= 1 and b.error_to_tolerance <= 1
    knet_a, keras_a = doubled.outputs
    knet_b, keras_b = paired.outputs
    np.testing.assert_array_equal(knet_a, knet_b)  # the Knet side is the same computation
    tol = 64 * np.finfo(F32).eps * max(1.0, float(np.abs(keras_a).max()))
    assert np.abs(np.asarray(keras_a) - np.asarray(keras_b)).max() <= tol


def test_a_large_input_takes_the_paired_calls(monkeypatch):
    from porting.model import verify_sides as vs

    model = lenet()
    n = 1 + vs.PAIRED_ELEMENTS // (28 * 28)  # just above the threshold
    x = np.random.default_rng(0).standard_normal((28, 28, 1, n)).astype(F32)
    seen = []
    real = vs.EachMode.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append(self.paired)

    monkeypatch.setattr(vs.EachMode, "__init__", spy)
    report = verify_model(model, x, keras_model=convert.to_keras(model))
    assert report.ok and seen == [True]
    seen.clear()
    verify_model(model, x[..., :2], keras_model=convert.to_keras(model))
    assert seen == [False]  # a small input keeps the doubled batch
