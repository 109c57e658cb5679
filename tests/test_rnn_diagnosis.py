"""porting.rnn.diagnosis on ports made wrong on the Keras side (a reduced
benchmarks/bench_rnn.py): Keras computes the observation, the diagnosis recomputes in NumPy."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from porting.errors import PortingError
from porting.rnn import RNNSpec, forward, random_weights
from porting.rnn.diagnosis import CAUSES, diagnose

pytest.importorskip("tensorflow", reason="the wrong ports are computed by Keras")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rnn.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_rnn", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_cause_recognised_on_a_reduced_benchmark(bench):
    res = bench.run(4, seed=11)
    table = bench.format_table(res["confusion"], "seed 11")
    for cause in bench.BROKEN:
        assert cause in CAUSES
        row = res["confusion"][cause]
        assert sum(row.values()) == 4
        assert row[cause] >= 3, table  # the full benchmark measures the rate
    assert res["confusion"]["correct"] == Counter({"rounding": 4}), table


def test_broken_cases_are_genuine(bench):
    """A broken port really differs from Knet beyond the tolerance; a correct one really
    differs a little (float32 Keras against the float64 recomputation)."""
    rng = np.random.default_rng(3)
    for cause in bench.BROKEN:
        w, x, last = bench.make_case(rng, cause)
        obs = bench.keras_observation(w, x, cause, last)
        d = diagnose(w, x, obs)
        rounding = next(f for f in d.findings if f.cause == "rounding")
        assert rounding.ratio > 1, (cause, d.text())
    w = random_weights(RNNSpec(4, 5, "lstm", num_layers=2, bidirectional=True), rng)
    x = rng.standard_normal((4, 3, 9)).astype(np.float32)
    obs = bench.keras_observation(w, x, "correct", False)
    y64 = forward(w.astype(np.float64), x.astype(np.float64)).y
    assert 0 < np.abs(obs - y64).max() < 1e-4
    assert diagnose(w, x, obs).cause == "rounding"


def test_gru_keras_order_taken_as_knets():
    # the notebook's first mistake: Knet's r, z, n loaded into Keras's z, r, h blocks as is
    from porting.rnn import RNNWeights

    rng = np.random.default_rng(5)
    w = random_weights(RNNSpec(3, 4, "gru", bidirectional=True), rng)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    swap = RNNWeights(w.spec, *(tuple(a[[1, 0, 2]] for a in t) for t in (w.W, w.R, w.bW, w.bR)))
    d = diagnose(w, x, {"y": forward(swap, x).y})
    assert (d.cause, d.detail) == ("gate_order", "gates read as z,r,n")
    assert "gate_order" in d.text()


def test_unknown_when_nothing_fits():
    rng = np.random.default_rng(6)
    w = random_weights(RNNSpec(3, 4, "lstm"), rng)
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    d = diagnose(w, x, forward(w, x).y + np.float32(0.3))
    assert d.cause == "unknown"
    assert d.detail.startswith("closest:")


def test_bad_inputs():
    w = random_weights(RNNSpec(3, 4, "lstm"), 0)
    x = np.zeros((3, 2, 5), np.float32)
    with pytest.raises(PortingError, match=r"expected \(X, B, T\)"):
        diagnose(w, x[:, :, 0], np.zeros((4, 2), np.float32))
    with pytest.raises(PortingError, match=r"expected \(4, 2, 5\) or its last step \(4, 2\)"):
        diagnose(w, x, np.zeros((4, 5, 2), np.float32))
    with pytest.raises(PortingError, match="expected 'y'"):
        diagnose(w, x, {"h": 1})
    with pytest.raises(PortingError, match="expected floats"):
        diagnose(w, x, np.zeros((4, 2, 5), np.int32))
