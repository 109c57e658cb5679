"""porting.rnn.verify: per-step reports, first divergent step, growth, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.rnn import RNNSpec, RNNWeights, forward, random_weights
from porting.rnn.verify import SlotSteps, error_bounds, verify


def _actual(w, x, **kw):
    """A float32 "port": the reference run in float32 (different rounding from the float64
    side that verify computes), every layer given."""
    out = forward(w, x, trace=True, **kw)
    d = w.spec.directions
    act = {"y": out.y, "h": out.h}
    if out.c is not None:
        act["c"] = out.c
    for layer in range(w.spec.num_layers):
        act[f"layer{layer + 1}"] = np.concatenate(out.slots[layer * d : (layer + 1) * d])
    return act


def _with_R(w: RNNWeights, slot: int, delta: float) -> RNNWeights:
    R = list(w.R)
    R[slot] = R[slot].copy()
    R[slot][0, 0, 0] += delta
    return RNNWeights(w.spec, w.W, tuple(R), w.bW, w.bR)


@pytest.mark.parametrize("rt", ["relu", "tanh", "lstm", "gru"])
def test_float32_port_passes(rt):
    rng = np.random.default_rng(0)
    w = random_weights(RNNSpec(5, 6, rt, num_layers=2, bidirectional=True), rng)
    x = rng.standard_normal((5, 3, 25)).astype(np.float32)
    v = verify(w, x, _actual(w, x, h=0, c=0 if rt == "lstm" else None))
    assert v.ok, v.text()
    assert v.first_divergent is None
    assert set(v.finals) == ({"h", "c"} if rt == "lstm" else {"h"})


def test_first_divergent_step_of_a_recurrent_error():
    # With zero initial state, R first matters at the second step read: forward t=2,
    # backward t=T-1.
    rng = np.random.default_rng(1)
    spec = RNNSpec(4, 5, "lstm", bidirectional=True)
    w = random_weights(spec, rng)
    x = rng.standard_normal((4, 2, 12)).astype(np.float32)
    wrong_fw = _with_R(w, 0, 0.5)
    v = verify(w, x, _actual(wrong_fw, x))
    assert not v.ok
    assert v.slots[0].first_divergent == 2
    assert v.slots[1].first_divergent is None
    assert v.first_divergent == ("layer 1 forward", 2)
    wrong_bw = _with_R(w, 1, 0.5)
    v = verify(w, x, _actual(wrong_bw, x))
    assert v.slots[0].first_divergent is None
    assert v.slots[1].first_divergent == 11
    assert "DIVERGES from step t=11 (read 2th, backward)" in v.text()


def test_only_last_step_given():
    rng = np.random.default_rng(2)
    w = random_weights(RNNSpec(3, 4, "gru", bidirectional=True), rng)
    x = rng.standard_normal((3, 2, 6)).astype(np.float32)
    y = forward(w, x).y
    v = verify(w, x, {"y": y[:, :, -1]})
    assert v.ok and "y[:, :, end]" in v.finals and not v.slots
    # the final states in place of the last step (Keras's return_sequences=False): caught
    h = forward(w, x, h=0).h
    v = verify(w, x, {"y": np.concatenate([h[:, :, 0], h[:, :, 1]])})
    assert not v.ok


def test_growth_factor_and_reading_order():
    T = 30
    err = 1e-6 * 1.1 ** np.arange(T)
    s = SlotSteps(0, "layer 1 forward", False, err, err / 1e-3, np.full(T, 1e-3))
    assert s.growth == pytest.approx(1.1, rel=1e-9)
    b = SlotSteps(1, "layer 1 backward", True, err[::-1].copy(), err / 1e-3, np.full(T, 1e-3))
    assert b.growth == pytest.approx(1.1, rel=1e-9)
    assert b.reading_order[0] == T - 1


def test_tolerance_grows_with_an_amplifying_recurrence():
    # a tanh RNN with large recurrent weights amplifies perturbations: its carried bound grows
    rng = np.random.default_rng(3)
    spec = RNNSpec(4, 16, "tanh")
    w = random_weights(spec, rng)
    x = rng.standard_normal((4, 2, 40)).astype(np.float32)
    small = error_bounds(RNNWeights(spec, w.W, tuple(0.1 * r for r in w.R), w.bW, w.bR), x)
    large = error_bounds(RNNWeights(spec, w.W, tuple(4.0 * r for r in w.R), w.bW, w.bR), x)
    e_small, e_large = small.Eh[0].max(axis=(1, 2)), large.Eh[0].max(axis=(1, 2))
    assert e_large[-1] / e_large[0] > 10 * (e_small[-1] / e_small[0])


def test_bad_actuals():
    rng = np.random.default_rng(4)
    w = random_weights(RNNSpec(3, 4, "lstm"), rng)
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    with pytest.raises(PortingError, match="expected at least 'y'"):
        verify(w, x, {"h": np.zeros((4, 2, 1))})
    with pytest.raises(PortingError, match=r"actual layer1 has shape \(4, 5, 2\)"):
        verify(w, x, {"y": np.zeros((4, 2, 5), np.float32), "layer1": np.zeros((4, 5, 2))})
    with pytest.raises(PortingError, match=r"actual y has shape \(4, 2, 4\)"):
        verify(w, x, {"y": np.zeros((4, 2, 4), np.float32)})
    with pytest.raises(PortingError, match="expected RNNWeights"):
        verify(None, x, {"y": x})
