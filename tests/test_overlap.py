"""The two sides of a verification side by side: the Knet side on a second thread
(`knet_side.Ahead`), two batches of `verify_data` at once, and NumPy arrays handed to
TensorFlow without a copy (`keras_graph.as_tensor`, on the 64-byte-aligned arrays
`_transpose.aligned_empty` makes).

These are speed paths, so the tests check that they compute exactly what the plain paths
compute (reports equal field by field, arrays bit for bit), that they were really taken, and
that TensorFlow was given only memory it can share (it aborts the process otherwise).
"""

from __future__ import annotations

import contextvars
import threading

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import _transpose  # noqa: E402
from porting.model import keras_graph, knet_side, to_keras, verify_model  # noqa: E402
from porting.model import verify as mverify  # noqa: E402
from porting.model import verify_data as vd  # noqa: E402


def _report(r):
    d = r.to_dict()
    return {k: v for k, v in d.items() if k not in ("timings", "environment")}


# ------------------------------------------------------------------ arrays to TensorFlow


def _shares(a, t):
    """Whether tensor `t` reads `a`'s memory: a change to `a` shows in `t`."""
    before = float(np.asarray(t).flat[0])
    a.flat[0] += 1
    after = float(np.asarray(t).flat[0])
    a.flat[0] -= 1
    return after != before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_arrays_are_shared_with_tensorflow(dtype):
    a = _transpose.aligned_empty((5, 7, 3), dtype)
    a[...] = np.arange(a.size, dtype=dtype).reshape(a.shape)
    assert _transpose.address(a) % 64 == 0 and a.flags.c_contiguous
    t = keras_graph.as_tensor(a)
    assert t.dtype.as_numpy_dtype == dtype and tuple(t.shape) == a.shape
    assert _shares(a, t)
    assert np.array_equal(np.asarray(t), a)


def test_other_arrays_are_copied_with_the_same_values():
    buf = _transpose.aligned_empty((4 * 105 + 1,), np.float32)
    buf[...] = np.arange(buf.size)
    off = buf[1:].reshape(4, 105)  # 4 bytes past a 64-byte boundary
    assert _transpose.address(off) % 64 == 4
    ro = _transpose.aligned_empty((3, 4), np.float32)
    ro[...] = 2.5
    ro.flags.writeable = False
    strided = _transpose.aligned_empty((6, 8), np.float32)
    strided[...] = np.arange(48).reshape(6, 8)
    ints = _transpose.aligned_empty((3, 3), np.int32)
    ints[...] = 7
    for a in (off, strided[:, ::2], ints):
        t = keras_graph.as_tensor(a)
        assert np.array_equal(np.asarray(t), a) and np.asarray(t).dtype == a.dtype
        assert not _shares(a, t)
    t = keras_graph.as_tensor(ro)
    assert np.array_equal(np.asarray(t), ro)
    empty = keras_graph.as_tensor(np.zeros((0, 3), np.float32))
    assert tuple(empty.shape) == (0, 3)


@pytest.mark.parametrize(
    "shape, perm",
    [((3, 4, 5, 2), (3, 1, 0, 2)), ((64, 64, 16, 8), (3, 1, 0, 2)), ((7, 9), (1, 0))],
)
def test_layout_copies_start_on_a_cache_line(shape, perm):
    a = np.asfortranarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    out = _transpose.transpose_copy(a, perm)
    assert _transpose.address(out) % 64 == 0
    want = np.ascontiguousarray(a.transpose(perm))
    assert out.flags.c_contiguous and out.dtype == want.dtype
    assert np.array_equal(out, want)


def test_a_graph_run_leaves_the_fed_arrays_as_they_were():
    """TensorFlow reads Knet's outputs in place: it must never write them."""
    from porting import layout
    from porting.examples.models import EXAMPLES
    from porting.model import convert as mconvert
    from porting.model import forward_knet

    model = EXAMPLES["resnet"][0]()
    km = to_keras(model)
    steps = model.plan
    x = np.asfortranarray(np.random.default_rng(5).random((*model.input_size, 3), np.float32))
    x_tf = layout.activations_to_tf(x)
    outs = forward_knet(model, x)
    knet_tf = {
        i: mconvert.julia_to_tf(o, st.flat_from, "reverse")
        for i, (o, st) in enumerate(zip(outs, steps, strict=True))
    }
    assert all(_transpose.address(a) % 64 == 0 for a in knet_tf.values() if a.size)
    copies = {i: a.copy() for i, a in knet_tf.items()}
    x_copy = x_tf.copy()
    groups = mconvert.keras_groups(km, model)
    last_use = {k: i for i, st in enumerate(steps) for k in st.sources}
    side = keras_graph.GraphSide(steps, groups, km, x_tf, last_use, np.dtype(np.float32))
    for seg in side.segments:
        side.run(seg, knet_tf)
    assert np.array_equal(x_tf, x_copy)
    for i, a in knet_tf.items():
        assert np.array_equal(a, copies[i]), i


# ------------------------------------------------------------------ Ahead


def test_ahead_gives_the_items_in_order_from_another_thread():
    where = []

    def gen():
        for i in range(20):
            where.append(threading.current_thread().name)
            yield i

    assert list(knet_side.Ahead(gen(), depth=2)) == list(range(20))
    assert set(where) == {"porting-knet-side"}


def test_ahead_raises_the_generators_error_here():
    def gen():
        yield 1
        raise ValueError("layer 2 broke")

    it = knet_side.Ahead(gen())
    assert next(it) == 1
    with pytest.raises(ValueError, match="layer 2 broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_ahead_close_stops_the_worker_and_closes_the_generator():
    made, closed = [], []

    def gen():
        try:
            for i in range(10**6):
                made.append(i)
                yield i
        finally:
            closed.append(True)

    it = knet_side.Ahead(gen(), depth=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed == [True] and not it.thread.is_alive()
    assert len(made) <= 6  # at most the queue's item and the one in hand beyond those taken


def test_ahead_runs_in_the_callers_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="unset")
    var.set("the caller's")

    def gen():
        yield var.get()

    assert list(knet_side.Ahead(gen())) == ["the caller's"]


# ------------------------------------------------------------------ verify_model, verify_data


@pytest.mark.parametrize("name", ["lenet", "resnet"])
@pytest.mark.parametrize("mode", ["each", "whole"])
def test_verify_model_overlapped_equals_one_thread(name, mode, monkeypatch):
    from porting.examples.lenet import lenet
    from porting.examples.models import EXAMPLES

    model = lenet() if name == "lenet" else EXAMPLES[name][0]()
    km = to_keras(model)
    used = []

    class Counting(knet_side.Ahead):
        def __init__(self, gen, depth=1):
            used.append(True)
            super().__init__(gen, depth)

    monkeypatch.setattr(knet_side, "Ahead", Counting)
    overlapped = verify_model(model, keras_model=km, mode=mode)
    assert used == [True]
    monkeypatch.setattr(mverify, "_overlapped", lambda knet: False)
    serial = verify_model(model, keras_model=km, mode=mode)
    assert used == [True]
    assert overlapped.ok and _report(overlapped) == _report(serial)
    np.testing.assert_array_equal(overlapped.outputs[1], serial.outputs[1])


def test_one_thread_setting_turns_the_overlap_off(monkeypatch):
    monkeypatch.setenv("PORTING_THREADS", "1")
    assert not mverify._overlapped("reference")
    assert vd._threads() == 1
    monkeypatch.setenv("PORTING_THREADS", "2")
    assert mverify._overlapped("reference") and vd._threads() == 2


def test_verify_data_two_batches_at_once_equals_one(monkeypatch):
    from porting.examples.models import EXAMPLES

    model = EXAMPLES["resnet"][0]()
    km = to_keras(model)
    x = np.asfortranarray(np.random.default_rng(8).random((*model.input_size, 45), np.float32))
    threads: set[str] = set()
    real = mverify.verify_model

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(mverify, "verify_model", spy)
    monkeypatch.setenv("PORTING_THREADS", "2")
    two = vd.verify_data(model, x, keras_model=km, batch_size=4, k_worst=5)
    assert any(t.startswith("porting-verify-data") for t in threads)
    threads.clear()
    monkeypatch.setattr(vd, "_THREADS", 1)
    one = vd.verify_data(model, x, keras_model=km, batch_size=4, k_worst=5)
    assert threads == {threading.current_thread().name}
    assert two.ok and two.n_samples == 45 and _report(two) == _report(one)


def test_interrupt_while_two_batches_run_gives_the_batches_done(monkeypatch):
    from porting.model import KnetModel
    from porting.model.kinds.dense import Dense

    monkeypatch.setenv("PORTING_THREADS", "2")
    model = KnetModel([Dense(np.eye(12, dtype=np.float32))], input_size=(12,))
    x = np.asfortranarray(np.random.default_rng(4).standard_normal((12, 120)).astype(np.float32))

    def stop_after_three(done, total):
        if done >= 30:
            raise KeyboardInterrupt

    r = vd.verify_data(model, x, batch_size=10, progress=stop_after_three)
    assert r.partial and r.n_samples == 30 and r.n_total == 120
    assert sum(r.layers[0].histogram) == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("porting-verify-data")]
