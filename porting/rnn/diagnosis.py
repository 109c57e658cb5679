"""Why a port of a Knet `RNN` disagrees with Knet: each usual mistake recomputed and matched.

>>> import numpy as np
>>> from porting.rnn import RNNSpec, RNNWeights, random_weights, forward
>>> w = random_weights(RNNSpec(3, 4, "gru"), 0)
>>> x = np.random.default_rng(0).standard_normal((3, 2, 6)).astype(np.float32)
>>> swapped = RNNWeights(w.spec, *(tuple(a[[1, 0, 2]] for a in t) for t in (w.W, w.R, w.bW, w.bR)))
>>> diagnose(w, x, forward(swapped, x).y).cause
'gate_order'

Each cause is a hypothesis about how the port computes, recomputed by the NumPy reference in
float64 from the Knet weights and compared with what the port gave (`observed`: Knet-layout `y`
`(Y, B, T)` or its last step `(Y, B)`). A hypothesis explains the observation when every
element is within the tolerance that porting.rnn.verify carries through the recurrence
(docs/numerics.md#rnn-tolerance) for the correct RNN (a hypothesis that comes close is scored
again under its own carried tolerance, as its values may differ a lot from the correct ones);
the causes are ranked by their largest
error/tolerance ratio, and `rounding` (the port is correct) wins ties. The time-major hypothesis
assumes zero initial states (the given ones do not fit a batch of size T). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from porting.errors import PortingError
from porting.rnn.params import RNNWeights
from porting.rnn.reference import _run, initial_state, x_to_batch_major
from porting.rnn.verify import _as64, error_bounds

__all__ = ["CAUSES", "CAUSE_MEANING", "RNNDiagnosis", "RNNFinding", "diagnose"]

CAUSE_MEANING = {
    "rounding": "no bug: the port agrees with Knet within the carried floating-point tolerance",
    "gate_order": "gates in the wrong order (Knet/cuDNN GRU is r, z, n but Keras's is z, r, h; "
    "LSTM is i, f, n, o in both)",
    "bias_one_only": "only one of each gate's two biases used (Knet adds bW AND bR)",
    "bias_twice": "biases counted twice (Keras LSTM/SimpleRNN: bias = bW + bR, once; GRU: row 0 "
    "bW, row 1 bR)",
    "gru_bias_merged": "GRU biases merged into one (bRn must stay inside r .* (Rn h + bRn): "
    "Keras GRU bias (2, 3H), row 1 the recurrent biases)",
    "gru_reset_before": "GRU with reset_after=False (reset applied before the recurrent matrix); "
    "Knet's GRU is Keras GRU(reset_after=True)",
    "directions_swapped": "forward and backward directions swapped (Knet slots alternate: "
    "1 = forward layer 1, 2 = backward layer 1, ...)",
    "transposed": "a transposed matrix used untransposed (rnnparam returns W' (in, H), which IS "
    "Keras's kernel; R' likewise)",
    "time_major": "time-major data given to a batch-major model (Keras wants (B, T, X): Knet's "
    "(X, B, T) reversed is (T, B, X))",
    "last_step_final_state": "Keras Bidirectional(return_sequences=False) (the final states) "
    "taken for Knet's y[:, :, end], whose backward half has read one step only",
    "initial_state_zero": "started from a zero state, not the layer's initial state (Flux's "
    "trained state0, which Flux.reset! restores; docs/flux.md#recurrent-flux)",
    "unknown": "no recomputed cause explains the difference",
}
CAUSES = tuple(CAUSE_MEANING)

RESCORE = 1e4
"""A hypothesis within this ratio of the observation under the correct RNN's tolerance is
scored again under its own (its values, and so its rounding, may differ a lot)."""


@dataclass(frozen=True)
class RNNFinding:
    """One hypothesis: its cause, detail, and largest error/tolerance ratio against the
    observation (<= 1: it explains it)."""

    cause: str
    detail: str
    ratio: float

    @property
    def explains(self) -> bool:
        return self.ratio <= 1.0


@dataclass(frozen=True)
class RNNDiagnosis:
    cause: str
    detail: str
    findings: tuple[RNNFinding, ...]  # ranked, best first

    @property
    def meaning(self) -> str:
        return CAUSE_MEANING[self.cause]

    def text(self) -> str:
        lines = [f"cause: {self.cause}" + (f" ({self.detail})" if self.detail else "")]
        lines.append(f"  {self.meaning}")
        for f in self.findings[:6]:
            mark = "explains" if f.explains else "no"
            lines.append(f"  {f.cause:<22} {f.detail:<40} ratio {f.ratio:.3g} ({mark})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict:
        """JSON-ready: the cause, its meaning and detail, and the ranked findings."""
        return {
            "cause": self.cause,
            "meaning": self.meaning,
            "detail": self.detail,
            "findings": [
                {"cause": f.cause, "detail": f.detail, "ratio": f.ratio, "explains": f.explains}
                for f in self.findings
            ],
        }


def _map(w: RNNWeights, fn) -> RNNWeights:
    """Apply fn(name, slot, array) to every array (None kept)."""
    parts: list = []
    for name in ("W", "R", "bW", "bR"):
        t = getattr(w, name)
        parts.append(tuple(None if a is None else fn(name, s, a) for s, a in enumerate(t)))
    return RNNWeights(w.spec, parts[0], parts[1], parts[2], parts[3])


def _hypotheses(w: RNNWeights, last_step: bool, has_state: bool = False):
    """Yield (cause, detail, weights, variant) with variant in {None, 'reset_before',
    'time_major', 'final_state', 'zero_state'}."""
    spec = w.spec
    g = spec.gates
    yield "rounding", "", w, None
    names = spec.gate_names
    if g > 1:
        for perm in itertools.permutations(range(g)):
            if perm == tuple(range(g)):
                continue
            detail = "gates read as " + ",".join(names[p] for p in perm)
            yield "gate_order", detail, _map(w, lambda n, s, a, p=perm: a[list(p)]), None
    zero = _map(w, lambda n, s, a: np.zeros_like(a) if n == "bR" else a)
    yield "bias_one_only", "input biases bW only", zero, None
    yield (
        "bias_one_only",
        "recurrent biases bR only",
        _map(w, lambda n, s, a: np.zeros_like(a) if n == "bW" else a),
        None,
    )
    if spec.rnn_type == "gru" and spec.reset_after:
        # Keras row 0 = bW + bR and row 1 = bR: bR counted twice
        twice = _map(w, lambda n, s, a: a + w.bR[s] if n == "bW" else a)
        yield "bias_twice", "bW + bR in row 0 and bR in row 1", twice, None
        merged = _map(
            w, lambda n, s, a: a + w.bR[s] if n == "bW" else (np.zeros_like(a) if n == "bR" else a)
        )
        yield "gru_bias_merged", "bW + bR in row 0, row 1 zero", merged, None
        yield "gru_reset_before", "GRU(reset_after=False), bias bW + bR", w, "reset_before"
    else:
        yield (
            "bias_twice",
            "bias 2(bW + bR)",
            _map(w, lambda n, s, a: 2 * a if n[0] == "b" else a),
            None,
        )
    if spec.bidirectional:

        def swap(n, s, a):
            return getattr(w, n)[s ^ 1]

        yield "directions_swapped", "forward <-> backward weights", _map(w, swap), None
    tr = _map(
        w, lambda n, s, a: a.transpose(0, 2, 1) if a.ndim == 3 and a.shape[1] == a.shape[2] else a
    )
    yield "transposed", "every square matrix transposed", tr, None
    yield "time_major", "x given as (T, B, X) to a (B, T, X) model", w, "time_major"
    if last_step and spec.bidirectional:
        yield "last_step_final_state", "concatenated final states", w, "final_state"
    if has_state:
        yield "initial_state_zero", "h = c = 0 at the first step", w, "zero_state"


def _observed_y(observed, weights, x, h, c):
    if isinstance(observed, dict):
        if "y" not in observed:
            raise PortingError(f"diagnose: observed has {sorted(observed)}, expected 'y'")
        return np.asarray(observed["y"])
    if hasattr(observed, "inputs") and hasattr(observed, "predict"):
        from porting.rnn.keras import keras_forward

        return np.asarray(keras_forward(observed, weights, x, h, c)["y"])
    return np.asarray(observed)


def diagnose(weights: RNNWeights, x, observed, h=None, c=None) -> RNNDiagnosis:
    """Name the mistake that makes a port give `observed` for input `x` (Knet layout; `h`, `c`
    Knet's initial states). `observed`: the port's `y` in Knet's layout (`(Y, B, T)`, or the last
    step `(Y, B)`), a dict with `y`, or a `to_keras`-style model (run here)."""
    if not isinstance(weights, RNNWeights):
        raise PortingError(f"diagnose: expected RNNWeights, got {type(weights).__name__}")
    spec = weights.spec
    xa = np.asarray(x)
    if xa.ndim != 3:
        raise PortingError(f"diagnose: x has shape {xa.shape}, expected (X, B, T)")
    _, B, T = xa.shape
    obs = _observed_y(observed, weights, x, h, c)
    Y = spec.output_size
    last_step = obs.shape == (Y, B) and obs.shape != (Y, B, T)
    if not last_step and obs.shape != (Y, B, T):
        raise PortingError(
            f"diagnose: observed y has shape {obs.shape}, expected {(Y, B, T)} or its last "
            f"step {(Y, B)} (Knet layout)"
        )
    if not np.issubdtype(obs.dtype, np.floating):
        raise PortingError(f"diagnose: observed y has element type {obs.dtype}: expected floats")
    bounds = error_bounds(weights, x, h, c)
    from porting.tolerance import Tolerance

    tol_obj = Tolerance.of(bounds.k, obs.dtype)
    last_slots = range(spec.slots - spec.directions, spec.slots)
    E = np.concatenate([bounds.Eh[s] for s in last_slots], axis=2)  # (T, B, Y)
    tol = tol_obj.bound(E)
    obs_tby = obs.T[None] if last_step else obs.transpose(2, 1, 0)
    if last_step:
        tol = tol[-1:]
    w64 = weights.astype(np.float64)
    xs = x_to_batch_major(xa.astype(np.float64), spec, np.float64)
    h0 = initial_state(_as64(h), "h", spec, B, np.float64)
    c0 = initial_state(_as64(c), "c", spec, B, np.float64)

    def score(pred, tol_):
        diff = np.abs(obs_tby.astype(np.float64) - pred)
        if np.isnan(diff).any():
            return np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.max(np.where(diff == 0, 0.0, diff / tol_)))

    def own_tolerance(wh, variant):
        """The hypothesis's own carried tolerance (its trajectory may differ a lot)."""
        if variant == "time_major":
            b = error_bounds(wh, xa.transpose(0, 2, 1))
            Eh = np.concatenate([b.Eh[s] for s in last_slots], axis=2).transpose(1, 0, 2)
        else:
            b = error_bounds(wh, x, h, c)
            Eh = np.concatenate([b.Eh[s] for s in last_slots], axis=2)
        t = tol_obj.bound(Eh)
        return t[-1:] if last_step else t

    findings = []
    has_state = bool(np.any(h0) or np.any(c0))
    for cause, detail, wh, variant in _hypotheses(w64, last_step, has_state):
        if variant == "time_major":
            xt = np.ascontiguousarray(xs.transpose(1, 0, 2))  # batch <-> time
            zt = np.zeros((spec.slots, T, spec.hidden_size))
            out, *_ = _run(wh, xt, zt, zt.copy(), trace=False)
            out = out.transpose(1, 0, 2)
            hN = None
        elif variant == "zero_state":
            z = np.zeros_like(h0)
            out, hN, *_ = _run(wh, xs, z, z.copy(), trace=False)
        else:
            out, hN, *_ = _run(
                wh,
                xs,
                h0,
                c0,
                trace=False,
                reset_after=False if variant == "reset_before" else None,
            )
        if variant == "final_state":
            assert hN is not None
            pred = np.concatenate([hN[s] for s in last_slots], axis=1)[None]
        else:
            pred = out[-1:] if last_step else out
        if variant == "final_state":  # each slot's final state carries its own bound
            Efin = [bounds.Eh[s][0 if spec.is_backward(s) else -1] for s in last_slots]
            ratio = score(pred, tol_obj.bound(np.concatenate(Efin, axis=1))[None])
        else:
            ratio = score(pred, tol)
        if 1 < ratio < RESCORE and variant in (None, "time_major") and cause != "rounding":
            ratio = min(ratio, score(pred, own_tolerance(wh, variant)))
        findings.append(RNNFinding(cause, detail, ratio))
    order = sorted(range(len(findings)), key=lambda i: (findings[i].ratio, i))
    ranked = tuple(findings[i] for i in order)
    best = ranked[0]
    if best.explains:
        return RNNDiagnosis(best.cause, best.detail, ranked)
    return RNNDiagnosis("unknown", f"closest: {best.cause} (ratio {best.ratio:.3g})", ranked)
