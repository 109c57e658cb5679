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


def _cell_fields(cell: JuliaStruct, path: str) -> tuple[Any, Any, Any, Any, Any, list]:
    """(σ or None, Wi, Wh, b, Wh_h̃ or None, [initial state arrays]) of a Flux recurrent cell,
    by version (docs/flux.md#recurrent-flux): Flux 0.11 ``RNNCell(σ, Wi, Wh, b, h)``,
    ``LSTMCell(Wi, Wh, b, h, c)``, ``GRUCell(Wi, Wh, b, h)``; 0.12-0.14 the same with
    ``state0`` (a tuple ``(h0, c0)`` for LSTM) in place of the states, ``GRUv3Cell(Wi, Wh, b,
    Wh_h̃, state0)``; 0.15 on no state (zeros): ``RNNCell(σ, Wi, Wh, bias)``, ``LSTMCell(Wi,
    Wh, bias)``, ``GRUCell(Wi, Wh, b)``, ``GRUv3Cell(Wi, Wh, b, Wh_h̃)``."""
    kind = _short(cell)
    d = list(cell.data)
    sigma = None
    if kind == "RNNCell":
        if not d:
            raise PortingError(f"{path}: Flux.RNNCell with no fields")
        sigma, d = d[0], d[1:]
    need = 4 if kind == "GRUv3Cell" else 3
    if len(d) < need or len(d) > need + 2:
        raise PortingError(
            f"{path}: Flux.{kind} with {len(cell.data)} fields; expected "
            f"{need + (kind == 'RNNCell')}-{need + 2 + (kind == 'RNNCell')}"
        )
    wi = array(d[0], path, "Wi")
    wh = array(d[1], path, "Wh")
    b = bias(d[2], path)
    wh_n = None
    if kind == "GRUv3Cell":
        wh_n = array(d[3], path, "Wh_h̃")
        d = d[:3] + d[4:]
    states: list = []
    for v in d[3:]:
        states.extend(v if isinstance(v, tuple) else [v])
    return sigma, wi, wh, b, wh_n, states


def _initial(states: list, kind: str, h: int, dt: Any, where: str) -> list[np.ndarray | None]:
    """[h0, c0 (LSTM)] as `(H,)` arrays of the weights' type, None where zero: Flux's `state0`
    is `(H, 1)` (0.12-0.14; `(H,)` in 0.11), the same for every sample of a batch."""
    names = ["h0", "c0"] if kind == "LSTMCell" else ["h0"]
    if states and len(states) != len(names):
        raise PortingError(
            f"{where}: the initial state has {len(states)} arrays; expected {len(names)} "
            f"({', '.join(names)})"
        )
    out: list[np.ndarray | None] = []
    for name, s in zip(names, states or [None] * len(names), strict=True):
        if s is None:
            out.append(None)
            continue
        a = array(s, where, name)
        if a.shape not in ((h,), (h, 1)):
            raise PortingError(
                f"{where}: {name} (state0) has size {a.shape}; expected ({h}, 1) (or ({h},)): "
                "one initial state that every sample starts from"
            )
        if a.dtype != dt:
            raise PortingError(f"{where}: {name} (state0) is {a.dtype} but Wi is {dt}")
        if not np.all(np.isfinite(a)):
            raise PortingError(f"{where}: {name} (state0) holds non-finite values")
        out.append(a.reshape(h) if np.any(a) else None)
    return out


def recurrent(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``Recur(cell, state)`` (Flux 0.12-0.14; ``Recur(cell, init, state)`` in 0.11) and the
    0.15+ layers ``RNN``/``LSTM``/``GRU``/``GRUv3`` (one field: the cell) -> the rnn kind, one
    layer, every step read (``output="sequence"``), starting from the trained initial state
    (``state0``, 0.11: ``init``: what ``Flux.reset!`` restores; never the saved ``state``, the
    last batch's) or, from 0.15 on, from zero (``initialstates``)."""
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
    sigma, wi, wh, b, wh_n, states = _cell_fields(cell, path)
    if wrapper == "Recur" and len(x.data) == 3:  # Flux 0.11: Recur(cell, init, state)
        init = x.data[1]
        states = list(init) if isinstance(init, tuple) else [init]
    g = _GATES[kind]
    rows_h = 2 if kind == "GRUv3Cell" else g  # GRUv3: Wh holds r, z (0.15+: a third, unused)
    if wi.ndim != 2 or wh.ndim != 2 or wi.shape[0] % g:
        raise PortingError(
            f"{where}: Wi {wi.shape}, Wh {wh.shape}; expected ({g}H, in) and ({rows_h}H, H)"
        )
    h = wi.shape[0] // g
    if wh.shape not in ((rows_h * h, h), (g * h, h)):
        raise PortingError(f"{where}: Wh {wh.shape}; expected ({rows_h * h}, {h})")
    if b is not None and b.shape != (g * h,):
        raise PortingError(f"{where}: bias {b.shape}; expected ({g * h},)")
    if wh_n is not None and wh_n.shape != (h, h):
        raise PortingError(f"{where}: Wh_h̃ {wh_n.shape}; expected ({h}, {h})")
    dt = wi.dtype
    for name, a in (("Wh", wh), ("bias", b), ("Wh_h̃", wh_n)):
        if a is not None and a.dtype != dt:
            raise PortingError(f"{where}: {name} is {a.dtype} but Wi is {dt}")
    if kind == "RNNCell":
        act = activation(sigma, f"{path}.σ")
        if act not in ("tanh", "relu"):
            raise PortingError(
                f"{where}: σ = {act}; the rnn kind (cuDNN's) computes tanh or relu cells only"
            )
        rnn_type = act
    else:
        rnn_type = "lstm" if kind == "LSTMCell" else "gru"
    h0, c0 = (_initial(states, kind, h, dt, where) + [None])[:2]
    bw = np.zeros((g, h), dt) if b is None else b.reshape(g, h)
    R = wh.reshape(-1, h, h)[:g]
    if wh_n is not None:  # GRUv3: r and z from Wh, the new gate's matrix is Wh_h̃
        R = np.concatenate([wh.reshape(-1, h, h)[:2], wh_n[None]])
    weights = RNNWeights(
        RNNSpec(int(wi.shape[1]), h, rnn_type, reset_after=kind != "GRUv3Cell"),
        W=(wi.reshape(g, h, -1),),
        R=(R,),
        bW=(bw,),
        bR=(np.zeros((g, h), dt),),
    )
    # Flux's gate blocks (LSTM i, f, c, o; GRU r, z, n) are Knet's/cuDNN's order; Flux has
    # one bias (the input bias here, the recurrent one zero); Flux's GRU resets the recurrent
    # product, as cuDNN does; GRUv3 resets h before Wh_h̃ (spec reset_after=False)
    # (docs/flux.md#recurrent-flux, #flux-gruv3)
    start = "from a zero state" if h0 is None and c0 is None else "from its trained state0"
    out.append(
        Found(
            RNN.from_weights(weights, output="sequence", h0=h0, c0=c0),
            path,
            f"{where.split(': ', 1)[1]} {wi.shape[1]} => {h}: every step, {start}",
        )
    )
