"""`porting.model.keras_graph`: the compiled Keras side of "each" mode computes what the eager
calls compute, bit for bit, on every shipped example (so that reports do not change with it).

The eager reference is written here from Keras's own layer calls: each group run eagerly on the
doubled batch (Knet's input, then the Keras chain's own output), as `verify_model` ran it
before the graphs.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import layout  # noqa: E402
from porting.examples.lenet import lenet  # noqa: E402
from porting.examples.models import EXAMPLES, example_input  # noqa: E402
from porting.model import convert as mconvert  # noqa: E402
from porting.model import (  # noqa: E402
    forward_knet,
    keras_graph,  # noqa: E402
    to_keras,
)
from porting.model.keras_side import per_sample, run_group, source_name  # noqa: E402

NAMES = sorted([*EXAMPLES, "lenet"])


def _model(name):
    return lenet() if name == "lenet" else EXAMPLES[name][0]()


def _eager(steps, groups, x_tf, knet_tf):
    """Each group eagerly, on the doubled batch (the reference)."""
    n = x_tf.shape[0]
    chain, outs = {}, []
    for i, (step, group) in enumerate(zip(steps, groups, strict=True)):
        feeds = {source_name(steps, j): x_tf if j < 0 else knet_tf[j] for j in step.sources}
        if any(j >= 0 for j in step.sources):
            for j in step.sources:
                name = source_name(steps, j)
                feeds[name] = np.concatenate([feeds[name], x_tf if j < 0 else chain[j]])
            both = np.asarray(run_group(group, feeds))
            a, own = both[:n], both[n:]
        else:
            a = own = np.asarray(run_group(group, feeds))
        chain[i] = own
        outs.append(a)
    return outs, chain[len(steps) - 1]


def _inputs(model, km, batch):
    steps = model.plan
    x = example_input(model, batch=batch)
    if x.shape[-1] != batch:  # token models make their own batch
        x = x[..., :batch]
    outs = forward_knet(model, x)
    x_tf = layout.activations_to_tf(x) if x.ndim > 2 else np.ascontiguousarray(x.T)
    in_dt = np.dtype(km.inputs[0].dtype)
    x_tf = model.layers[0].keras_input(x_tf.astype(in_dt, copy=False))
    kdt = np.dtype(km.outputs[0].dtype)
    knet_tf = {
        i: mconvert.julia_to_tf(o, st.flat_from, "reverse").astype(kdt, copy=False)
        for i, (o, st) in enumerate(zip(outs, steps, strict=True))
    }
    return steps, x_tf, knet_tf, kdt


def _graph(model, km, steps, x_tf, knet_tf, kdt):
    groups = mconvert.keras_groups(km, model)
    last_use = {k: i for i, st in enumerate(steps) for k in st.sources}
    side = keras_graph.GraphSide(steps, groups, km, x_tf, last_use, kdt)
    outs = {}
    for seg in side.segments:
        outs.update(side.run(seg, knet_tf))
    return [outs[i] for i in range(len(steps))], side.final(), side


@pytest.mark.parametrize("name", NAMES)
def test_graph_segments_equal_the_eager_calls_bit_for_bit(name):
    model = _model(name)
    km = to_keras(model)
    groups = mconvert.keras_groups(km, model)
    if not per_sample(groups, km):
        pytest.skip(f"{name}: not every layer is per-sample; verify_model runs it eagerly")
    for batch in (3, 2):  # a second batch size reuses the trace (batch dimension open)
        steps, x_tf, knet_tf, kdt = _inputs(model, km, batch)
        want, want_final = _eager(steps, groups, x_tf, knet_tf)
        got, got_final, _ = _graph(model, km, steps, x_tf, knet_tf, kdt)
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            assert a.shape == b.shape and a.dtype == b.dtype, (name, i)
            assert np.array_equal(a, b, equal_nan=True), (name, i, np.abs(a - b).max())
        assert np.array_equal(want_final, got_final, equal_nan=True), name
    traced = keras_graph._TRACED[km]
    assert traced and all(fn.experimental_get_tracing_count() == 1 for fn in traced.values())


def test_small_segment_budget_splits_the_model_and_changes_no_bit(monkeypatch):
    model = _model("resnet")
    km = to_keras(model)
    groups = mconvert.keras_groups(km, model)
    steps, x_tf, knet_tf, kdt = _inputs(model, km, 4)
    want, want_final = _eager(steps, groups, x_tf, knet_tf)
    one = 3 * 4 * int(np.prod(steps[0].out_size)) * kdt.itemsize
    monkeypatch.setattr(keras_graph, "SEGMENT_BYTES", 2 * one)
    got, got_final, side = _graph(model, km, steps, x_tf, knet_tf, kdt)
    assert len(side.segments) > 3  # resnet's shortcut crosses segments: chains carried over
    assert [i for seg in side.segments for i in seg] == list(range(len(steps)))
    for a, b in zip(want, got, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(want_final, got_final)


def test_verify_data_compiled_and_eager_give_the_same_report(monkeypatch):
    from porting.model import verify_data as vd

    model = _model("resnet")
    km = to_keras(model)
    rng = np.random.default_rng(3)
    x = np.asfortranarray(rng.random((*model.input_size, 23), dtype=np.float32))

    def report(after):
        monkeypatch.setattr(vd, "COMPILE_AFTER", after)
        d = vd.verify_data(model, x, keras_model=km, batch_size=4, k_worst=4).to_dict()
        return {k: v for k, v in d.items() if k not in ("timings", "environment")}

    compiled, eager = report(0), report(10**9)  # 6 batches: compiled, then eagerly
    assert compiled == eager
    assert compiled["ok"] and compiled["n_samples"] == 23
    assert any(k[0] == tuple(range(len(model.plan))) for k in keras_graph._TRACED[km])
