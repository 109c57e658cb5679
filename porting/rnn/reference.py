"""What Knet's `RNN` computes at inference, in NumPy (Knet.jl v1.4.10, src/ops20/rnn.jl).

>>> from porting.rnn import RNNSpec, random_weights
>>> spec = RNNSpec(3, 4, "lstm", num_layers=2, bidirectional=True)
>>> out = forward(random_weights(spec, 0), np.zeros((3, 2, 5), np.float32), h=0, c=0)
>>> out.y.shape, out.h.shape, out.c.shape
((8, 2, 5), (4, 2, 4), (4, 2, 4))

Arrays in and out are Julia-indexed: `x` `(X, B, T)` (or `(X,)`, `(X, B)`), `y` `(H or 2H, B, T)`
with as many dimensions as `x`, states `(H, B, L or 2L)`. The equations (gates in Knet's order,
see spec.py; docs/knet.md#rnn-gates), with `sigm` the logistic function and both biases of a gate
added:

- relu/tanh: `h = f(W x + R h' + bW + bR)`
- LSTM: `i, f, o = sigm(W. x + R. h' + bW. + bR.)`, `n = tanh(Wn x + Rn h' + bWn + bRn)`,
  `c = f .* c' + i .* n`, `h = o .* tanh(c)`
- GRU: `r, z = sigm(...)`, `n = tanh(Wn x + r .* (Rn h' + bRn) + bWn)`,
  `h = (1 - z) .* n + z .* h'`; with `spec.reset_after=False` (Flux's GRUv3, no Knet RNN)
  `n = tanh(Wn x + Rn (r .* h') + bWn + bRn)`

Layer `l > 1` reads the outputs of layer `l - 1` (both directions concatenated, forward first).
A backward slot reads time steps T, T-1, ..., 1 and its outputs are stored at the step they
belong to, so `y[:, :, T]` of a bidirectional RNN holds the backward direction after ONE step,
not its final state (that is in `h`; docs/knet.md#rnn-bidirectional). skipInput replaces `W x` by `x` in every gate of the first
layer. Dropout applies only while training, so not here.

How it runs: data are held batch-major, `(T, B, features)` C-ordered (the same bytes as a
Fortran-ordered Julia `(features, B, T)` array); per slot, ONE GEMM projects the inputs of all
time steps for all gates (`(T*B, in) @ (in, gates*H)`), then each step does one GEMM
`(B, H) @ (H, gates*H)` for the recurrent part and the gate arithmetic in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from porting.errors import PortingError
from porting.rnn._blas import single_thread
from porting.rnn.params import RNNWeights

__all__ = ["RNNOutput", "forward", "x_to_batch_major"]


@dataclass(frozen=True, eq=False)
class RNNOutput:
    """`y` `(Y, B, T)` (dims as `x`); `h`, `c` the final states `(H, B, L or 2L)` (`c` None
    except for LSTM). Knet writes these to `r.h`/`r.c` unless they were `nothing` (then the
    final states are discarded); here they are always returned.

    With `trace=True`: `slots[s]` `(H, B, T)` the hidden state of 0-based slot `s` at every time
    step (aligned to time: a backward slot's value at t is its state after reading T..t), and for
    LSTM `cells[s]` the same for the cell state."""

    y: np.ndarray
    h: np.ndarray
    c: np.ndarray | None
    slots: tuple[np.ndarray, ...] | None = None
    cells: tuple[np.ndarray, ...] | None = None


def x_to_batch_major(x, spec, dtype) -> np.ndarray:
    """Knet's `x` `(X,)`, `(X, B)` or `(X, B, T)` -> C-ordered `(T, B, X)` in `dtype`."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:  # a ragged list, ...
        raise PortingError(f"RNN input x: expected a numeric array ({e})") from None
    if a.dtype == object or not np.issubdtype(a.dtype, np.floating):
        raise PortingError(
            f"RNN input x has element type {a.dtype}: expected {np.dtype(dtype)} like the weights"
        )
    if a.dtype != dtype:
        raise PortingError(
            f"RNN input x is {a.dtype} but the weights are {np.dtype(dtype)}: Knet requires "
            "one element type (convert x or the weights)"
        )
    if a.ndim not in (1, 2, 3):
        raise PortingError(
            f"RNN input x has shape {a.shape}: expected (X,), (X, B) or (X, B, T) with "
            f"X = inputSize = {spec.input_size}"
        )
    if a.shape[0] != spec.input_size or a.size == 0:
        raise PortingError(
            f"RNN input x has shape {a.shape}: expected (X, B, T) with X = inputSize = "
            f"{spec.input_size} and B, T >= 1 ({spec})"
        )
    a3 = a.reshape(a.shape + (1,) * (3 - a.ndim))
    return np.ascontiguousarray(a3.transpose(2, 1, 0))


def _strip_ones(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    while shape and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def initial_state(value, name: str, spec, batch: int, dtype) -> np.ndarray:
    """Knet's `r.h`/`r.c` (`nothing` = None, `0`, or an array `(H, B, L or 2L)`, trailing
    singleton dimensions optional) -> C-ordered `(slots, B, H)` in `dtype`."""
    shape = (spec.hidden_size, batch, spec.slots)
    if value is None or (np.isscalar(value) and not isinstance(value, str) and value == 0):
        return np.zeros(shape[::-1], dtype)
    a = np.asarray(value)
    if a.dtype == object or not np.issubdtype(a.dtype, np.floating):
        raise PortingError(
            f"RNN initial state {name}: expected nothing, 0 or a float array of size {shape}, "
            f"got {a.dtype} {a.shape}"
        )
    if a.dtype != dtype:
        raise PortingError(
            f"RNN initial state {name} is {a.dtype} but the weights are {np.dtype(dtype)}"
        )
    if a.ndim == 0 or _strip_ones(a.shape) != _strip_ones(shape):
        raise PortingError(
            f"RNN initial state {name} has shape {a.shape}, expected (H, B, L or 2L) = {shape} "
            f"for {spec} and batch size {batch}"
        )
    a3 = a.reshape(shape, order="F") if a.ndim != 3 else a
    return np.ascontiguousarray(a3.transpose(2, 1, 0))


def _slot_matrices(weights: RNNWeights, s: int, reset_after: bool = True):
    """(Wt (in, G*H) or None, Rt (H, G*H), bias added to the projection (G*H,), bRn or None).

    LSTM gates are held as i, f, o, n (Knet's i, f, n, o with the last two exchanged) so that
    the three sigmoid gates are one contiguous block."""
    spec = weights.spec
    g, hsz = spec.gates, spec.hidden_size
    order = [0, 1, 3, 2] if spec.rnn_type == "lstm" else list(range(g))
    W = weights.W[s]
    Wt = None if W is None else np.ascontiguousarray(W[order].reshape(g * hsz, -1).T)
    Rt = np.ascontiguousarray(weights.R[s][order].reshape(g * hsz, hsz).T)
    bias = (weights.bW[s] + weights.bR[s])[order].reshape(-1)
    bRn = None
    if spec.rnn_type == "gru" and reset_after:
        bias = bias.copy()
        bias[2 * hsz :] = weights.bW[s][2]  # bRn stays inside r .* (Rn h + bRn)
        bRn = weights.bR[s][2]
    return Wt, Rt, bias, bRn


def _sigm(a: np.ndarray) -> np.ndarray:
    """Knet's `sigm` (src/ops20/activation.jl), as `1 / (1 + exp(-a))` in place (as accurate for
    a < 0 as Knet's `exp(a) / (1 + exp(a))`; exp overflow gives 0 where Knet gives a subnormal);
    three SIMD passes, about twice as fast as scipy's expit on float32."""
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1
    np.reciprocal(a, out=a)
    return a


def _run_slot(rnn_type, proj, Rt, bRn, h, c, order, out, cell_out, reset_after=True):
    """One slot over time. proj `(T, B, G*H)` (input part + biases), h/c `(B, H)` updated in place;
    writes h at each step into out[t] (a `(T, B, H)` view) and c into cell_out[t] if given."""
    hsz = h.shape[1]
    rec = np.empty(proj.shape[1:], proj.dtype)
    for t in order:
        if rnn_type == "gru" and not reset_after:
            # reset before the matrix (Flux GRUv3, Keras GRU(reset_after=False)):
            # n = tanh(Wn x + bWn + bRn + Rn (r .* h))
            np.matmul(h, Rt[:, : 2 * hsz], out=rec[:, : 2 * hsz])
            rz = _sigm(rec[:, : 2 * hsz] + proj[t, :, : 2 * hsz])
            r, z = rz[:, :hsz], rz[:, hsz:]
            n = np.tanh(proj[t, :, 2 * hsz :] + (r * h) @ Rt[:, 2 * hsz :])
            h[...] = (1 - z) * n + z * h
            out[t] = h
            continue
        np.matmul(h, Rt, out=rec)
        if rnn_type == "lstm":
            rec += proj[t]
            _sigm(rec[:, : 3 * hsz])  # gates held as i, f, o, n (see _slot_matrices)
            np.tanh(rec[:, 3 * hsz :], out=rec[:, 3 * hsz :])
            i, f, o, n = (rec[:, k * hsz : (k + 1) * hsz] for k in range(4))
            c *= f
            i *= n
            c += i
            np.tanh(c, out=h)
            h *= o
            if cell_out is not None:
                cell_out[t] = c
        elif rnn_type == "gru":
            rec[:, 2 * hsz :] += bRn
            rz = rec[:, : 2 * hsz]
            rz += proj[t, :, : 2 * hsz]
            _sigm(rz)
            r, z = rec[:, :hsz], rec[:, hsz : 2 * hsz]
            n = rec[:, 2 * hsz :]
            n *= r
            n += proj[t, :, 2 * hsz :]
            np.tanh(n, out=n)
            # h = (1 - z) .* n + z .* h'
            h *= z
            z -= 1
            z *= n
            h -= z
        else:
            rec += proj[t]
            if rnn_type == "relu":
                np.maximum(rec, 0, out=h)
            else:
                np.tanh(rec, out=h)
        out[t] = h


def _run(
    weights: RNNWeights,
    xs: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    *,
    trace: bool,
    reset_after: bool | None = None,
):
    """Core forward on batch-major data: xs `(T, B, X)`, h0/c0 `(S, B, H)`.
    Returns (out `(T, B, Y)`, hN `(S, B, H)`, cN, slot sequences `(T, B, H)`, cell sequences).
    `reset_after` None: the spec's (a diagnosis may ask for the other GRU variant)."""
    spec = weights.spec
    if reset_after is None:
        reset_after = spec.reset_after
    T, B, _ = xs.shape
    hsz, g, dirs = spec.hidden_size, spec.gates, spec.directions
    dt = weights.dtype
    hN = h0.copy()
    cN = c0.copy()
    seqs: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    inp = xs
    for layer in range(spec.num_layers):
        out = np.empty((T, B, dirs * hsz), dt)
        flat = inp.reshape(T * B, inp.shape[2])
        for d in range(dirs):
            s = layer * dirs + d
            Wt, Rt, bias, bRn = _slot_matrices(weights, s, reset_after)
            if Wt is None:  # skipInput: the input itself enters every gate
                proj = np.tile(inp, (1, 1, g))
            else:
                proj = (flat @ Wt).reshape(T, B, g * hsz)
            proj += bias
            cell_out = np.empty((T, B, hsz), dt) if (trace and spec.rnn_type == "lstm") else None
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            # sigm: exp(-a) -> Inf gives 0; one BLAS thread for the small per-step GEMMs
            with np.errstate(over="ignore"), single_thread(B * hsz * g * hsz):
                _run_slot(
                    spec.rnn_type,
                    proj,
                    Rt,
                    bRn,
                    hN[s],
                    cN[s],
                    order,
                    out[:, :, d * hsz : (d + 1) * hsz],
                    cell_out,
                    reset_after,
                )
            if trace:
                seqs.append(out[:, :, d * hsz : (d + 1) * hsz])
                if cell_out is not None:
                    cells.append(cell_out)
        inp = out
    return inp, hN, cN, seqs, cells


def forward(
    weights: RNNWeights, x, h=None, c=None, *, batch_sizes=None, trace: bool = False
) -> RNNOutput:
    """Knet's `r(x)` with `r.h = h`, `r.c = c` (each `None` for `nothing`, `0`, or an array).

    The computation runs in the weights' element type; `x` (and given states) must have it
    too, as Knet requires. Variable `batchSizes` are refused: Knet's CPU RNN refuses them as
    well (they exist only on the GPU); pad the sequences to one length or run them separately.
    """
    if not isinstance(weights, RNNWeights):
        raise PortingError(
            f"forward: expected RNNWeights (porting.rnn.unpack), got {type(weights).__name__}"
        )
    if batch_sizes is not None:
        raise PortingError(
            f"RNN batchSizes={batch_sizes!r}: variable-length minibatches are not supported "
            "(Knet's CPU RNN refuses them too; they exist only on the GPU). Pad the sequences "
            "to one length or run each length separately"
        )
    spec, dt = weights.spec, weights.dtype
    xs = x_to_batch_major(x, spec, dt)
    B = xs.shape[1]
    h0 = initial_state(h, "h", spec, B, dt)
    c0 = initial_state(c, "c", spec, B, dt)
    out, hN, cN, seqs, cells = _run(weights, xs, h0, c0, trace=trace)
    ndim = np.ndim(x)
    y = out.transpose(2, 1, 0)  # Fortran-ordered (Y, B, T)
    if ndim < 3:
        y = y.reshape(y.shape[:ndim], order="F")
    return RNNOutput(
        y=y,
        h=hN.transpose(2, 1, 0),
        c=cN.transpose(2, 1, 0) if spec.rnn_type == "lstm" else None,
        slots=tuple(a.transpose(2, 1, 0) for a in seqs) if trace else None,
        cells=tuple(a.transpose(2, 1, 0) for a in cells) if trace and cells else None,
    )
