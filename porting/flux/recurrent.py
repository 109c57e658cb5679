"""Flux's recurrent layers -> the `rnn` kind (docs/flux.md#recurrent-flux): the
`Recur`-wrapped cells of Flux 0.11-0.14 and the `RNN`/`LSTM`/`GRU` layers of 0.15 on, every
step read, from a zero state; what cannot match (a nonzero `state0`, `GRUv3`,
`return_state`) is refused with the reason."""

from __future__ import annotations

from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.flux.fields import Found, _short, activation, array, bias
from porting.io.bsonjl import JuliaStruct, JuliaType

__all__ = ["recurrent"]

_CELLS = {"RNNCell", "LSTMCell", "GRUCell", "GRUv3Cell"}
_GATES = {"RNNCell": 1, "LSTMCell": 4, "GRUCell": 3, "GRUv3Cell": 3}


def _cell_fields(cell: JuliaStruct, path: str) -> tuple[Any, Any, Any, Any, list]:
    """(σ or None, Wi, Wh, b, [initial state arrays]) of a Flux recurrent cell, by version:
    Flux 0.11 ``RNNCell(σ, Wi, Wh, b, h)``, ``LSTMCell(Wi, Wh, b, h, c)``, ``GRUCell(Wi, Wh, b,
    h)``; 0.12-0.14 the same with ``state0`` (a tuple ``(h0, c0)`` for LSTM) in place of the
    states, ``GRUv3Cell(Wi, Wh, b, Wh_h̃, state0)``; 0.15 on no state (zeros):
    ``RNNCell(σ, Wi, Wh, bias)``, ``LSTMCell(Wi, Wh, bias)``, ``GRUCell(Wi, Wh, b)``."""
    kind = _short(cell)
    d = list(cell.data)
    sigma = None
    if kind == "RNNCell":
        if not d:
            raise PortingError(f"{path}: Flux.RNNCell with no fields")
        sigma, d = d[0], d[1:]
    if kind == "GRUv3Cell":
        raise PortingError(
            f"{path}: Flux.GRUv3Cell applies the reset gate before the recurrent product "
            "(h̃ = tanh(Wi_h x + Wh_h̃ (r .* h) + b_h), Keras' reset_after=False); the rnn kind "
            "computes cuDNN's GRU (r .* (Wh_h h)), which is Flux's GRU/GRUCell. Not convertible "
            "exactly: train a Flux.GRU instead, or wait for a GRUv3 kind"
        )
    if len(d) < 3:
        raise PortingError(f"{path}: Flux.{kind} with {len(cell.data)} fields; expected 3-5")
    wi = array(d[0], path, "Wi")
    wh = array(d[1], path, "Wh")
    b = bias(d[2], path)
    states: list = []
    for v in d[3:]:
        states.extend(v if isinstance(v, tuple) else [v])
    return sigma, wi, wh, b, states


def recurrent(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``Recur(cell, state)`` (Flux 0.12-0.14; ``Recur(cell, init, state)`` in 0.11) and the
    0.15+ layers ``RNN``/``LSTM``/``GRU``/``GRUv3`` (one field: the cell) -> the rnn kind, one
    layer, every step read (``output="sequence"``), starting from zero."""
    from porting.model import RNN
    from porting.rnn import RNNSpec
    from porting.rnn.params import RNNWeights

    wrapper = _short(x)
    if not x.data or not isinstance(x.data[0], JuliaStruct) or _short(x.data[0]) not in _CELLS:
        raise PortingError(
            f"{path}: a Flux.{wrapper} whose first field is not a Flux RNN/LSTM/GRU cell"
        )
    cell = x.data[0]
    kind = _short(cell)
    where = f"{path}: Flux.{wrapper}" + (f"(Flux.{kind})" if wrapper == "Recur" else "")
    if wrapper != "Recur":
        params = x.type.params if isinstance(x.type, JuliaType) else ()
        if params and params[0] is True:
            raise PortingError(
                f"{where} has return_state=true: it returns (output, state), a tuple no layer "
                "after it in a Chain reads as an array; save it with return_state=false"
            )
    sigma, wi, wh, b, states = _cell_fields(cell, path)
    if wrapper == "Recur" and len(x.data) == 3:  # Flux 0.11: Recur(cell, init, state)
        init = x.data[1]
        states = list(init) if isinstance(init, tuple) else [init]
    state_arrays = [array(s, path, "state0") for s in states]
    nonzero = [
        (i, float(np.abs(s).max())) for i, s in enumerate(state_arrays) if s.size and np.any(s)
    ]
    if nonzero:
        names = ["h0", "c0"] if kind == "LSTMCell" else ["h0"]
        shown = ", ".join(
            f"{names[i] if i < len(names) else i} max |.| = {m:.3g}" for i, m in nonzero
        )
        raise PortingError(
            f"{where} starts every sequence (Flux.reset!) from its trained initial state "
            f"state0, which is nonzero ({shown}). The rnn kind (Knet's RNN) starts from a zero "
            "state and cannot hold an initial state, so no converted model matches this one. "
            "A zero state0 converts (as every Flux 0.15+ layer has); an rnn kind with an "
            "initial state is not there yet"
        )
    g = _GATES[kind]
    if wi.ndim != 2 or wh.ndim != 2 or wi.shape[0] % g or wh.shape[0] != wi.shape[0]:
        raise PortingError(
            f"{where}: Wi {wi.shape}, Wh {wh.shape}; expected ({g}H, in) and ({g}H, H)"
        )
    h = wi.shape[0] // g
    if wh.shape[1] != h:
        raise PortingError(f"{where}: Wh {wh.shape}; expected ({g * h}, {h})")
    if b is not None and b.shape != (g * h,):
        raise PortingError(f"{where}: bias {b.shape}; expected ({g * h},)")
    if kind == "RNNCell":
        act = activation(sigma, f"{path}.σ")
        if act not in ("tanh", "relu"):
            raise PortingError(
                f"{where}: σ = {act}; the rnn kind (cuDNN's) computes tanh or relu cells only"
            )
        rnn_type = act
    else:
        rnn_type = "lstm" if kind == "LSTMCell" else "gru"
    dt = wi.dtype
    bw = np.zeros((g, h), dt) if b is None else b.reshape(g, h)
    weights = RNNWeights(
        RNNSpec(int(wi.shape[1]), h, rnn_type),
        W=(wi.reshape(g, h, -1),),
        R=(wh.reshape(g, h, h),),
        bW=(bw,),
        bR=(np.zeros((g, h), dt),),
    )
    # Flux's gate blocks (LSTM i, f, c, o; GRU r, z, n) are Knet's/cuDNN's order; Flux has
    # one bias (the input bias here, the recurrent one zero); Flux's GRU resets the recurrent
    # product, as cuDNN does (docs/flux.md#recurrent-flux)
    out.append(
        Found(
            RNN.from_weights(weights, output="sequence"),
            path,
            f"{where.split(': ', 1)[1]} {wi.shape[1]} => {h}: every step, from a zero state",
        )
    )
