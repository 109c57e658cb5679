"""Verify a port of a Knet `RNN` per layer and per time step, with tolerances carried through
the recurrence.

>>> import numpy as np
>>> from porting.rnn import RNNSpec, random_weights, forward
>>> w = random_weights(RNNSpec(3, 4, "gru", bidirectional=True), 0)
>>> x = np.random.default_rng(0).standard_normal((3, 2, 6)).astype(np.float32)
>>> out = forward(w, x, h=0, trace=True)
>>> v = verify(w, x, {"y": out.y, "h": out.h}, h=0)
>>> v.ok, [s.name for s in v.slots]
(True, ['layer 1 forward', 'layer 1 backward'])

The expected side is Knet's arithmetic by the NumPy reference run in float64 from the same
weights; the actual side (a Keras model, or Knet's own float32 output) is compared with it
element by element. For each slot (one direction of one layer) the report gives, per time
step, the largest error and its ratio to the tolerance, the first step whose ratio exceeds 1
(in the slot's reading order: a backward slot reads T first), and the error's growth factor
per step along the reading order (a least-squares fit of log(error)).

The tolerance rule (docs/numerics.md#rnn-tolerance; the single-step formula is
docs/numerics.md#tolerance): the tolerance of an element is `(sqrt(K) + 2) * eps * E`, `K` the
longest sum in one step (`in + H + 2`: the input row, the recurrent row and the two biases of a
gate; the largest over the layers), `eps` that of the actual side's type, and `E` a magnitude
carried through the recurrence:

    E_t = S_t + max over probes p of |J_t e_{t-1}^p|,     e_t^p = J_t e_{t-1}^p + xi_t^p * S_t

- `S_t` is this step's own sum of magnitudes, porting.magnitude's rules applied to the cell:
  `|W||x_t| + |R||h_{t-1}| + |bW| + |bR|` for a gate's pre-activation, the sigm/tanh rules for
  the gates, `|a| S_b + S_a |b|` for products, plus the rounding of each elementwise result;
  this is the error one step adds, as for any other layer.
- `J_t` is the step's linearisation at the reference's values (how a change of `h_{t-1}`,
  `c_{t-1}` and of the layer's input moves `h_t`, `c_t`: the matrices with their signs, the
  gate slopes `s(1-s)`, `1 - tanh^2`, relu's 0/1 with slope 1 within float32's reach of the
  kink). Each of `PROBES` perturbations `e^p` starts at 0 and receives, at every step, that
  step's `S_t` with random signs `xi` (seeded: reports are reproducible): the largest rounding
  a step can make, with the random signs rounding errors have. The probes of a layer's output
  are the next layer's input perturbations. So the carried part grows or shrinks exactly as the
  network's sensitivity to its own state does: it stays bounded for an RNN that forgets and
  grows with one that amplifies (a chaotic RNN, whose float32 result itself is meaningless
  after some steps, gets a growing tolerance and, once errors are no longer small, a mismatch).

Why not a rigorous bound: with `|R|` instead of `R` the carried term multiplies by about the
row sums of `|R|` each step (about `0.9 sqrt(H)` for Knet's xavier initialisation), so a strict
bound exceeds the values themselves after a few steps and would detect nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from porting.errors import PortingError
from porting.magnitude import ROUND
from porting.rnn._blas import single_thread
from porting.rnn.params import RNNWeights
from porting.rnn.reference import initial_state, x_to_batch_major
from porting.tolerance import Tolerance

__all__ = ["RNNVerification", "SlotSteps", "error_bounds", "verify"]


# ----------------------------------------------------------------------------- bounds


@dataclass(frozen=True, eq=False)
class Bounds:
    """Float64 reference values and carried magnitudes, batch-major: per slot `h`, `Eh`
    `(T, B, H)` aligned to time; final `c`, `Ec` `(S, B, H)` (LSTM)."""

    h: tuple[np.ndarray, ...]
    Eh: tuple[np.ndarray, ...]
    c_final: np.ndarray | None
    Ec_final: np.ndarray | None
    k: int


def _split(a, g, H):
    return [a[..., k * H : (k + 1) * H] for k in range(g)]


PROBES = 4
"""Perturbations carried through the recurrence to estimate the error it carries."""


def error_bounds(weights: RNNWeights, x, h=None, c=None, probes: int = PROBES) -> Bounds:
    """Run the RNN in float64 and carry the magnitudes `E` (module docstring) along."""
    if not isinstance(weights, RNNWeights):
        raise PortingError(f"error_bounds: expected RNNWeights, got {type(weights).__name__}")
    spec = weights.spec
    batch = np.shape(x)[1] if np.ndim(x) >= 2 else 1
    with single_thread(int(probes) * batch * spec.hidden_size * spec.gates * spec.hidden_size):
        return _error_bounds(weights, x, h, c, probes)


def _error_bounds(weights: RNNWeights, x, h, c, probes: int) -> Bounds:
    w64 = weights.astype(np.float64)
    spec = w64.spec
    xs = x_to_batch_major(np.asarray(x).astype(np.float64), spec, np.float64)
    T, B, _ = xs.shape
    H, g, dirs = spec.hidden_size, spec.gates, spec.directions
    h0 = initial_state(_as64(h), "h", spec, B, np.float64)
    c0 = initial_state(_as64(c), "c", spec, B, np.float64)
    k = max(spec.input_size_of(lay) for lay in range(spec.num_layers)) + H + 2
    # relu's kink: slope 1 wherever a float32 side may fall on the other side of 0
    margin_unit = Tolerance.of(k, np.float32).factor * float(np.finfo(np.float32).eps)
    rng = np.random.default_rng(0)
    P = int(probes)
    inp, Pinp = xs, np.zeros((P,) + xs.shape)
    hs: list[np.ndarray] = []
    Ehs: list[np.ndarray] = []
    c_fin = np.zeros((spec.slots, B, H))
    Ec_fin = np.zeros((spec.slots, B, H))
    for layer in range(spec.num_layers):
        out = np.empty((T, B, dirs * H))
        Eout = np.empty((T, B, dirs * H))
        Pout = np.empty((P, T, B, dirs * H))
        for d in range(dirs):
            s = layer * dirs + d
            W = w64.W[s]
            R = w64.R[s].reshape(g * H, H)
            Wt = np.tile(np.eye(H), (1, g)) if W is None else W.reshape(g * H, -1).T
            bW, bR = w64.bW[s].reshape(-1), w64.bR[s].reshape(-1)
            flat = inp.reshape(T * B, -1)
            PX = (flat @ Wt).reshape(T, B, g * H)  # W x
            SX = (np.abs(flat) @ np.abs(Wt)).reshape(T, B, g * H)  # |W||x|
            Rt, ARt = R.T, np.abs(R.T)
            hh, cc = h0[s].copy(), c0[s].copy()
            ph, pc = np.zeros((P, B, H)), np.zeros((P, B, H))  # probes of h and c
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            for t in order:
                rec, Srec = hh @ Rt, np.abs(hh) @ ARt
                dq = Pinp[:, t] @ Wt + ph @ Rt  # probes of the pre-activations
                Sc = None
                if spec.rnn_type == "lstm":
                    a = PX[t] + rec + bW + bR
                    Sa = SX[t] + Srec + np.abs(bW) + np.abs(bR)
                    ai, af, an, ao = _split(a, 4, H)
                    i, f, o = expit(ai), expit(af), expit(ao)
                    n = np.tanh(an)
                    Si, Sf, Sn, So = _split(Sa, 4, H)
                    Si, Sf, So = 0.25 * Si + ROUND * i, 0.25 * Sf + ROUND * f, 0.25 * So + ROUND * o
                    Sn = Sn + ROUND * np.abs(n)
                    di, df, dn, do = _split(dq, 4, H)
                    di, df, do = i * (1 - i) * di, f * (1 - f) * df, o * (1 - o) * do
                    dn = (1 - n * n) * dn
                    c_new = f * cc + i * n
                    Sc = Sf * np.abs(cc) + Si * np.abs(n) + i * Sn + np.abs(c_new)
                    dc = df * cc + f * pc + di * n + i * dn
                    tc = np.tanh(c_new)
                    h_new = o * tc
                    Sh = So * np.abs(tc) + o * (Sc + ROUND * np.abs(tc)) + np.abs(h_new)
                    dh = do * tc + o * (1 - tc * tc) * dc
                    Ec_fin[s] = Sc + np.abs(dc).max(axis=0)
                    pc = dc + rng.choice((-1.0, 1.0), dc.shape) * Sc
                    cc = c_new
                elif spec.rnn_type == "gru":
                    a_rz = PX[t, :, : 2 * H] + rec[:, : 2 * H] + bW[: 2 * H] + bR[: 2 * H]
                    S_rz = SX[t, :, : 2 * H] + Srec[:, : 2 * H]
                    S_rz = S_rz + np.abs(bW[: 2 * H]) + np.abs(bR[: 2 * H])
                    r, z = expit(a_rz[:, :H]), expit(a_rz[:, H:])
                    Sr = 0.25 * S_rz[:, :H] + ROUND * r
                    Sz = 0.25 * S_rz[:, H:] + ROUND * z
                    dr, dz = r * (1 - r) * dq[..., :H], z * (1 - z) * dq[..., H : 2 * H]
                    if not spec.reset_after:  # Flux's GRUv3: Rn (r .* h), the reset first
                        Rn, ARn = Rt[:, 2 * H :], ARt[:, 2 * H :]
                        rh = r * hh
                        S_rh = Sr * np.abs(hh) + ROUND * np.abs(rh)
                        d_rh = dr * hh + r * ph
                        b_n = bW[2 * H :] + bR[2 * H :]
                        a_n = PX[t, :, 2 * H :] + b_n + rh @ Rn
                        S_an = SX[t, :, 2 * H :] + np.abs(bW[2 * H :]) + np.abs(bR[2 * H :])
                        S_an = S_an + (np.abs(rh) + S_rh) @ ARn
                        d_an = (dq[..., 2 * H :] - ph @ Rn) + d_rh @ Rn
                    else:  # Knet's (cuDNN's): r .* (Rn h + bRn)
                        inner = rec[:, 2 * H :] + bR[2 * H :]
                        S_in = Srec[:, 2 * H :] + np.abs(bR[2 * H :])
                        d_in = ph @ Rt[:, 2 * H :]
                        a_n = PX[t, :, 2 * H :] + bW[2 * H :] + r * inner
                        S_an = SX[t, :, 2 * H :] + np.abs(bW[2 * H :]) + Sr * np.abs(inner)
                        S_an = S_an + r * S_in + np.abs(r * inner)
                        d_an = (dq[..., 2 * H :] - d_in) + dr * inner + r * d_in
                    n = np.tanh(a_n)
                    Sn = S_an + ROUND * np.abs(n)
                    dn = (1 - n * n) * d_an
                    h_new = (1 - z) * n + z * hh
                    Sh = Sz * (np.abs(n) + np.abs(hh)) + (1 - z) * Sn
                    Sh = Sh + np.abs((1 - z) * n) + np.abs(z * hh)
                    dh = dz * (hh - n) + (1 - z) * dn + z * ph
                else:
                    a = PX[t] + rec + bW + bR
                    Sa = SX[t] + Srec + np.abs(bW) + np.abs(bR)
                    if spec.rnn_type == "relu":
                        h_new = np.maximum(a, 0)
                        Sh = Sa
                        margin = margin_unit * (Sa + np.abs(dq).max(axis=0))
                        dh = (a > -margin) * dq
                    else:
                        h_new = np.tanh(a)
                        Sh = Sa + ROUND * np.abs(h_new)
                        dh = (1 - h_new * h_new) * dq
                hh = h_new
                ph = dh + rng.choice((-1.0, 1.0), dh.shape) * Sh
                out[t, :, d * H : (d + 1) * H] = hh
                Eout[t, :, d * H : (d + 1) * H] = Sh + np.abs(dh).max(axis=0)
                Pout[:, t, :, d * H : (d + 1) * H] = ph
            c_fin[s] = cc
            hs.append(out[:, :, d * H : (d + 1) * H])
            Ehs.append(Eout[:, :, d * H : (d + 1) * H])
        inp, Pinp = out, Pout
    lstm = spec.rnn_type == "lstm"
    return Bounds(tuple(hs), tuple(Ehs), c_fin if lstm else None, Ec_fin if lstm else None, int(k))


def _as64(state):
    if state is None or np.isscalar(state):
        return state
    a = np.asarray(state)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, eq=False)
class SlotSteps:
    """One slot's comparison along time (arrays indexed by 0-based time step)."""

    slot: int
    name: str
    backward: bool
    err: np.ndarray  # (T,) max |actual - expected| over (H, B)
    ratio: np.ndarray  # (T,) max |actual - expected| / tolerance
    tol: np.ndarray  # (T,) tolerance at the worst element

    @property
    def reading_order(self) -> np.ndarray:
        T = self.err.size
        return np.arange(T - 1, -1, -1) if self.backward else np.arange(T)

    @property
    def ok(self) -> bool:
        return bool(np.all(self.ratio <= 1))

    @property
    def first_divergent(self) -> int | None:
        """1-based time step (Julia's t) of the first step read that exceeds its tolerance."""
        for t in self.reading_order:
            if not self.ratio[t] <= 1:
                return int(t) + 1
        return None

    @property
    def growth(self) -> float:
        """Error growth factor per step along the reading order (least squares of log err)."""
        e = self.err[self.reading_order]
        if e.size < 2:
            return 1.0
        floor = max(float(np.max(e)) * 1e-12, np.finfo(np.float64).tiny)
        y = np.log(np.maximum(e, floor))
        s = np.arange(e.size, dtype=np.float64)
        slope = np.polyfit(s, y, 1)[0]
        return float(math.exp(slope))

    def profile(self, points: int = 8) -> str:
        """The error at about `points` steps spread along the reading order."""
        order = self.reading_order
        idx = np.unique(np.linspace(0, order.size - 1, min(points, order.size)).round().astype(int))
        return ", ".join(f"t={order[i] + 1}: {self.err[order[i]]:.2g}" for i in idx)

    def line(self) -> str:
        first = self.first_divergent
        worst = int(np.argmax(self.ratio))
        order = self.reading_order
        status = "ok" if first is None else f"DIVERGES from step t={first}"
        if first is not None and self.backward:
            status += f" (read {int(np.nonzero(order == first - 1)[0][0]) + 1}th, backward)"
        return (
            f"{self.name}: {status}; max error {self.err.max():.3g} (ratio "
            f"{self.ratio.max():.3g} at t={worst + 1}); error at first/last step read "
            f"{self.err[order[0]]:.3g}/{self.err[order[-1]]:.3g}, x{self.growth:.4g} per step"
        )


@dataclass(frozen=True, eq=False)
class RNNVerification:
    """The result of `verify`: per-slot steps, final-state checks, and how the tolerance was
    derived."""

    spec: object
    precision: str
    tolerance: Tolerance
    slots: tuple[SlotSteps, ...]
    finals: dict = field(default_factory=dict)  # name -> (max err, max ratio)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.slots) and all(r <= 1 for _, r in self.finals.values())

    @property
    def first_divergent(self) -> tuple[str, int] | None:
        """(slot name, 1-based step) of the lowest layer's first divergent step."""
        for s in self.slots:
            if s.first_divergent is not None:
                return s.name, s.first_divergent
        return None

    def text(self) -> str:
        lines = [
            f"{self.spec}: {'OK' if self.ok else 'MISMATCH'} ({self.precision} against Knet's "
            "arithmetic in float64)",
            f"tolerance {self.tolerance.formula}",
        ]
        for s in self.slots:
            lines += ["  " + s.line(), "    error along the steps read: " + s.profile()]
        for name, (err, ratio) in self.finals.items():
            lines.append(f"  final {name}: max error {err:.3g} (ratio {ratio:.3g})")
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _steps(slot, name, backward, actual_tbh, expected_tbh, tol_tbh) -> SlotSteps:
    diff = np.abs(actual_tbh.astype(np.float64) - expected_tbh)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(diff == 0, 0.0, diff / tol_tbh)
    r = np.where(np.isnan(diff), np.inf, r)
    T = diff.shape[0]
    ratio = r.reshape(T, -1).max(axis=1)
    worst = r.reshape(T, -1).argmax(axis=1)
    err = np.where(np.isnan(diff), np.inf, diff).reshape(T, -1).max(axis=1)
    tol = tol_tbh.reshape(T, -1)[np.arange(T), worst]
    return SlotSteps(slot, name, backward, err, ratio, tol)


def _as_tbh(a, what: str, want: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != want:
        raise PortingError(f"actual {what} has shape {arr.shape}, expected {want} (Knet layout)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise PortingError(f"actual {what} has element type {arr.dtype}: expected floats")
    return arr.transpose(2, 1, 0)


def verify(
    weights: RNNWeights, x, actual, h=None, c=None, *, precision=None, bounds: Bounds | None = None
) -> RNNVerification:
    """Compare `actual` (a dict in Knet's layout: `y`, and optionally `h`, `c`, `layer1`,
    `layer2`, ... each `(H or 2H, B, T)`, as `keras.keras_forward` returns; or a `to_keras`
    model, run here) with Knet's arithmetic, per slot and time step.

    `y` may be the full sequence (compared as the last layer's slots) or Knet's last step
    `(Y, B)`. `precision` defaults to the actual side's float type. `bounds`: the result of
    `error_bounds(weights, x, h, c)` when the caller has it already (computed here otherwise)."""
    if not isinstance(weights, RNNWeights):
        raise PortingError(f"verify: expected RNNWeights, got {type(weights).__name__}")
    if not isinstance(actual, dict):
        from porting.rnn.keras import keras_forward

        actual = keras_forward(actual, weights, x, h, c)
    spec = weights.spec
    if "y" not in actual:
        raise PortingError(f"verify: actual has {sorted(actual)}, expected at least 'y'")
    xs = np.asarray(x)
    x3 = xs.reshape(xs.shape + (1,) * (3 - xs.ndim)) if xs.ndim in (1, 2) else xs
    if xs.ndim not in (1, 2, 3):
        raise PortingError(f"RNN input x has shape {xs.shape}: expected (X,), (X, B) or (X, B, T)")
    _, B, T = x3.shape
    ydt = np.asarray(actual["y"]).dtype
    prec = np.dtype(precision) if precision is not None else ydt
    if not np.issubdtype(prec, np.floating):
        raise PortingError(f"verify: precision {prec}: expected a float type")
    if bounds is None:
        bounds = error_bounds(weights, x, h, c)
    tolerance = Tolerance.of(bounds.k, prec, "carried through the recurrence (porting.rnn.verify)")
    H, dirs = spec.hidden_size, spec.directions
    steps: list[SlotSteps] = []
    notes: list[str] = []
    for s in range(spec.slots):
        layer = spec.layer_of(s)
        key = f"layer{layer + 1}"
        d = s % dirs
        if key in actual:
            got = _as_tbh(actual[key], key, (dirs * H, B, T))[:, :, d * H : (d + 1) * H]
        elif layer == spec.num_layers - 1 and np.ndim(actual["y"]) == xs.ndim and xs.ndim == 3:
            got = _as_tbh(actual["y"], "y", (dirs * H, B, T))[:, :, d * H : (d + 1) * H]
        else:
            continue
        tol = tolerance.bound(bounds.Eh[s])
        steps.append(_steps(s, spec.slot_name(s), spec.is_backward(s), got, bounds.h[s], tol))
    finals: dict[str, tuple[float, float]] = {}
    y = np.asarray(actual["y"])
    last = np.concatenate([bounds.h[s][-1] for s in range(spec.slots - dirs, spec.slots)], axis=1)
    Elast = np.concatenate([bounds.Eh[s][-1] for s in range(spec.slots - dirs, spec.slots)], axis=1)
    if xs.ndim == 3 and y.ndim == 2:  # Knet's y[:, :, end]
        if y.shape != (dirs * H, B):
            raise PortingError(
                f"actual y has shape {y.shape}, expected {(dirs * H, B)} (last step)"
            )
        finals["y[:, :, end]"] = _final(y.T, last, tolerance.bound(Elast))
    elif not steps or xs.ndim < 3:
        want = (dirs * H, B, T)[: xs.ndim]
        if y.shape != want:
            raise PortingError(f"actual y has shape {y.shape}, expected {want}")
        y3 = y.reshape((dirs * H, B, 1), order="F") if xs.ndim < 3 else y
        finals["y"] = _final(y3[:, :, -1].T, last, tolerance.bound(Elast))
    hfin = np.stack([bounds.h[s][0 if spec.is_backward(s) else -1] for s in range(spec.slots)])
    Ehfin = np.stack([bounds.Eh[s][0 if spec.is_backward(s) else -1] for s in range(spec.slots)])
    if actual.get("h") is not None:
        finals["h"] = _final(
            _as_tbh(actual["h"], "h", (H, B, spec.slots)), hfin, tolerance.bound(Ehfin)
        )
    if actual.get("c") is not None and bounds.c_final is not None and bounds.Ec_final is not None:
        finals["c"] = _final(
            _as_tbh(actual["c"], "c", (H, B, spec.slots)),
            bounds.c_final,
            tolerance.bound(bounds.Ec_final),
        )
    if not steps:
        notes.append("no per-step sequences given (only y's last step or final states)")
    elif len(steps) < spec.slots:
        notes.append("lower layers not given (pass a model built with layer_outputs=True)")
    return RNNVerification(spec, str(prec), tolerance, tuple(steps), finals, tuple(notes))


def _final(actual, expected, tol) -> tuple[float, float]:
    diff = np.abs(np.asarray(actual, np.float64) - expected)
    if np.isnan(diff).any():
        return math.inf, math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(diff == 0, 0.0, diff / tol)
    return float(diff.max()), float(r.max())
