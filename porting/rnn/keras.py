"""Knet `RNN` -> Keras 3 layers (SimpleRNN, LSTM, GRU; stacked; Bidirectional), batch-major.

>>> import numpy as np
>>> from porting.rnn import RNNSpec, random_weights
>>> model = to_keras(random_weights(RNNSpec(3, 4, "gru", bidirectional=True), 0))
>>> sorted(model.output), model.output["y"].shape
(['h', 'y'], (None, None, 8))

Importing this module imports Keras (TensorFlow backend). What the conversion does, per slot
(one direction of one layer; docs/knet.md#rnn-packing, #rnn-gates, #rnn-bidirectional and
docs/tensorflow.md#keras-gru, #keras-lstm, #keras-rnn-layout):

- matrices: Keras's `kernel` `(in, gates*H)` and `recurrent_kernel` `(H, gates*H)` hold
  `W'` and `R'` gate block by gate block, which is Knet's `rnnparam(r, slot, id, 1)` as it is;
- gate order: LSTM i, f, n, o is Keras's order too; GRU Knet r, z, n -> Keras z, r, h;
- biases: LSTM and SimpleRNN have one bias, `bW + bR`; GRU is `GRU(reset_after=True)` (Knet
  applies the reset gate after the recurrent matrix AND its bias) with bias `(2, 3H)`:
  row 0 the input biases, row 1 the recurrent ones; a spec with `reset_after=False` (Flux's
  GRUv3) is `GRU(reset_after=False)` with one bias `bW + bR` (`(3H,)`, gates z, r, h);
- skipInput: the first layer's kernel is the identity for every gate (x enters each gate);
- bidirectional: `Bidirectional(merge_mode="concat")`, forward half first, as Knet's `y`;
- initial states: Knet `h`/`c` `(H, B, L or 2L)` -> model inputs `(B, L or 2L, H)`;
  final states come back the same way.

Knet's `y[:, :, end]` (what a model reading "the last step" uses) is NOT Keras's
`Bidirectional(return_sequences=False)` for a bidirectional RNN: Keras's is the concatenation
of the two FINAL states, while Knet's backward half at step T is the backward direction after
reading one step. `to_keras(..., output="last")` computes what Knet computes: every layer
returns sequences and the model takes step T. Sequences must share one length: variable
`batchSizes` are refused (see `porting.rnn.reference.forward`).
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.rnn.params import RNNWeights
from porting.rnn.reference import initial_state

__all__ = [
    "import_keras",
    "KERAS_GATE_ORDER",
    "apply_keras",
    "keras_forward",
    "keras_layers",
    "keras_weights",
    "weights_from_keras",
    "state_from_keras",
    "state_to_keras",
    "to_keras",
    "x_to_keras",
    "y_from_keras",
]

KERAS_GATE_ORDER: dict[str, tuple[int, ...]] = {
    "relu": (0,),
    "tanh": (0,),
    "lstm": (0, 1, 2, 3),
    "gru": (1, 0, 2),
}
"""Keras's gate block k holds Knet's gate `KERAS_GATE_ORDER[type][k]` (0-based)."""


def import_keras() -> Any:
    """Keras on the TensorFlow backend (what porting converts for): MissingDependencyError
    when TensorFlow is missing, PortingError when Keras runs another backend."""
    from porting import tf as ptf

    ptf.import_tf()  # quiet import; MissingDependencyError when TensorFlow is missing
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise PortingError(
            f"Keras runs the {keras.backend.backend()!r} backend; porting converts for the "
            "TensorFlow backend (set KERAS_BACKEND=tensorflow)"
        )
    return keras


def _two_biases(spec) -> bool:
    """Keras `GRU(reset_after=True)` keeps a `(2, 3H)` bias; every other cell one `(gates*H,)`."""
    return bool(spec.rnn_type == "gru" and spec.reset_after)


def _check_weights(weights) -> RNNWeights:
    if not isinstance(weights, RNNWeights):
        raise PortingError(
            f"expected RNNWeights (porting.rnn.unpack), got {type(weights).__name__}"
        )
    return weights


def keras_weights(weights: RNNWeights) -> list[list[np.ndarray]]:
    """Per 0-based slot, the Keras weight list `[kernel, recurrent_kernel, bias]`.

    >>> from porting.rnn import RNNSpec, random_weights
    >>> [a.shape for a in keras_weights(random_weights(RNNSpec(3, 4, "gru"), 0))[0]]
    [(3, 12), (4, 12), (2, 12)]
    """
    spec = _check_weights(weights).spec
    order = KERAS_GATE_ORDER[spec.rnn_type]
    h = spec.hidden_size
    out = []
    for s in range(spec.slots):
        W = weights.W[s]
        if W is None:  # skipInput
            W = np.broadcast_to(np.eye(h, dtype=weights.dtype), (spec.gates, h, h))
        kernel = np.concatenate([W[g].T for g in order], axis=1)
        recurrent = np.concatenate([weights.R[s][g].T for g in order], axis=1)
        bW = np.concatenate([weights.bW[s][g] for g in order])
        bR = np.concatenate([weights.bR[s][g] for g in order])
        bias = np.stack([bW, bR]) if _two_biases(spec) else bW + bR
        out.append([np.ascontiguousarray(kernel), np.ascontiguousarray(recurrent), bias])
    return out


def weights_from_keras(spec, slots, dtype=None) -> RNNWeights:
    """The inverse of `keras_weights`: per 0-based slot a Keras weight list `[kernel,
    recurrent_kernel, bias]` (bias None for `use_bias=False`) -> Knet's `RNNWeights` for `spec`.

    Keras keeps one bias per gate for SimpleRNN and LSTM (Knet's `bW + bR`): it becomes `bW`,
    with `bR` zero, which gives Knet's sum exactly; a GRU's `(2, 3H)` bias is `bW` (row 0) and
    `bR` (row 1). Shapes are checked against `spec` (a PortingError names the slot).

    >>> from porting.rnn import RNNSpec, random_weights
    >>> w = random_weights(RNNSpec(3, 4, "gru"), 0)
    >>> back = weights_from_keras(w.spec, keras_weights(w))
    >>> bool(np.array_equal(back.R[0], w.R[0]) and np.array_equal(back.bR[0], w.bR[0]))
    True
    """
    from porting.rnn.params import weights_from_gates

    if spec.skip_input:
        raise PortingError(
            f"{spec}: skipInput has no Keras counterpart (Keras always has a kernel)"
        )
    order = KERAS_GATE_ORDER[spec.rnn_type]
    g, h = spec.gates, spec.hidden_size
    slots = list(slots)
    if len(slots) != spec.slots:
        raise PortingError(f"{len(slots)} Keras weight lists for {spec}: expected {spec.slots}")
    W, R, bW, bR = [], [], [], []
    for s, ws in enumerate(slots):
        ws = list(ws)
        if len(ws) != 3 or ws[0] is None or ws[1] is None:
            raise PortingError(
                f"Keras weights of {spec.slot_name(s)}: expected [kernel, recurrent_kernel, bias "
                f"or None], got {len(ws)} arrays"
            )
        kernel, recurrent = np.asarray(ws[0]), np.asarray(ws[1])
        bias = None if ws[2] is None else np.asarray(ws[2])
        dt = np.dtype(dtype) if dtype is not None else kernel.dtype
        n_in = spec.matrix_input_size(s)
        gru = _two_biases(spec)
        want = {
            "kernel": (kernel, (n_in, g * h)),
            "recurrent_kernel": (recurrent, (h, g * h)),
            "bias": (bias, ((2, g * h) if gru else (g * h,)) if bias is not None else None),
        }
        for name, (a, shape) in want.items():
            if a is not None and a.shape != shape:
                raise PortingError(
                    f"Keras {name} of {spec.slot_name(s)} has shape {a.shape}; expected {shape} "
                    f"for {spec}"
                )
        inverse = np.argsort(order)  # Knet gate k is Keras block inverse[k]

        def blocks(m, inverse=inverse):  # (rows, gates*H) -> (gates, H, rows), Knet's order
            return np.stack([m[:, b * h : (b + 1) * h].T for b in inverse])

        def gates(v, inverse=inverse):
            return np.stack([v[b * h : (b + 1) * h] for b in inverse])

        W.append(blocks(kernel).astype(dt))
        R.append(blocks(recurrent).astype(dt))
        zero = np.zeros((g, h), dt)
        if bias is None:
            bW.append(zero)
            bR.append(zero.copy())
        elif gru:
            bW.append(gates(bias[0]).astype(dt))
            bR.append(gates(bias[1]).astype(dt))
        else:
            bW.append(gates(bias).astype(dt))
            bR.append(zero)
    return weights_from_gates(spec, W, R, bW, bR)


def _cell_layer(keras, spec, name: str, dtype: str, backwards: bool = False, unroll=False):
    kw = {
        "return_sequences": True,
        "return_state": True,
        "go_backwards": backwards,
        "unroll": bool(unroll),
        "name": name,
        "dtype": dtype,
    }
    if spec.rnn_type in ("relu", "tanh"):
        return keras.layers.SimpleRNN(spec.hidden_size, activation=spec.rnn_type, **kw)
    if spec.rnn_type == "lstm":
        return keras.layers.LSTM(
            spec.hidden_size, activation="tanh", recurrent_activation="sigmoid", **kw
        )
    return keras.layers.GRU(
        spec.hidden_size,
        activation="tanh",
        recurrent_activation="sigmoid",
        reset_after=spec.reset_after,
        **kw,
    )


def keras_layers(weights: RNNWeights, *, name: str = "rnn", unroll: bool = False) -> list:
    """One Keras layer per Knet layer (`Bidirectional` when bidirectional), built, with the
    converted weights, each `return_sequences=True, return_state=True` (`unroll=True`: the
    steps written out, for a known, modest number of steps; TFLite converts it with builtin
    operators only).

    Called as `layer(x, initial_state=[...])`, a layer returns `[sequence, *states]` with the
    states per direction in Keras's order (LSTM: h, c; forward then backward)."""
    keras = import_keras()
    spec = _check_weights(weights).spec
    dtype = str(weights.dtype)
    kw = keras_weights(weights)
    layers = []
    for layer in range(spec.num_layers):
        base = f"{name}_layer{layer + 1}"
        n_in = spec.input_size_of(layer)
        if spec.bidirectional:
            fw = _cell_layer(keras, spec, base + "_forward", dtype, unroll=unroll)
            bw = _cell_layer(keras, spec, base + "_backward", dtype, backwards=True, unroll=unroll)
            lay = keras.layers.Bidirectional(
                fw, backward_layer=bw, merge_mode="concat", name=base, dtype=dtype
            )
            lay.build((None, None, n_in))
            lay.set_weights(kw[2 * layer] + kw[2 * layer + 1])
        else:
            lay = _cell_layer(keras, spec, base, dtype, unroll=unroll)
            lay.build((None, None, n_in))
            lay.set_weights(kw[layer])
        layers.append(lay)
    return layers


def apply_keras(
    weights: RNNWeights,
    x,
    *,
    h0=None,
    c0=None,
    output="sequence",
    name="knet_rnn",
    unroll: bool = False,
    initial=None,
):
    """Apply the converted RNN to a symbolic Keras tensor `x` `(B, T, X)` inside a functional
    model (the hook for a model converter): `h0`/`c0` optional tensors `(B, L or 2L, H)`, or
    `initial(slot, seq, backward)` a function giving the initial states `[h]` (LSTM `[h, c]`,
    each `(B, H)`) of a 0-based slot from that layer's input sequence `seq` `(B, T, in)`.
    Returns a dict of tensors: `y` (`(B, T, Y)`, or `(B, Y)` = Knet's last step with
    `output="last"`), `h` (and `c`) `(B, L or 2L, H)`, and `layer1`, ... each layer's sequence."""
    keras = import_keras()
    spec = _check_weights(weights).spec
    if output not in ("sequence", "last"):
        raise PortingError(f"output={output!r}: expected 'sequence' or 'last'")
    lstm = spec.rnn_type == "lstm"
    if c0 is not None and not lstm:
        raise PortingError(f"c0 given for {spec}: only an LSTM has a cell state")
    seq = x
    hs, cs, seqs = [], [], []
    for layer, lay in enumerate(keras_layers(weights, name=name, unroll=unroll)):
        init = None
        if initial is not None:
            init = []
            for s in range(layer * spec.directions, (layer + 1) * spec.directions):
                init.extend(initial(s, seq, spec.is_backward(s)))
        elif h0 is not None or c0 is not None:
            init = []
            for s in range(layer * spec.directions, (layer + 1) * spec.directions):
                init.append(h0[:, s, :] if h0 is not None else keras.ops.zeros_like(c0[:, s, :]))
                if lstm:
                    init.append(
                        c0[:, s, :] if c0 is not None else keras.ops.zeros_like(h0[:, s, :])
                    )
        res = lay(seq, initial_state=init) if init is not None else lay(seq)
        seq, states = res[0], res[1:]
        per = 2 if lstm else 1
        for d in range(spec.directions):
            hs.append(states[d * per])
            if lstm:
                cs.append(states[d * per + 1])
        seqs.append(seq)
    outputs = {"y": seq if output == "sequence" else seq[:, -1, :]}
    outputs["h"] = keras.ops.stack(hs, axis=1)
    if lstm:
        outputs["c"] = keras.ops.stack(cs, axis=1)
    for i, s in enumerate(seqs):
        outputs[f"layer{i + 1}"] = s
    return outputs


def to_keras(
    weights: RNNWeights,
    *,
    output: str = "sequence",
    initial_state: bool = False,
    layer_outputs: bool = False,
    time_steps: int | None = None,
    name: str = "knet_rnn",
):
    """A Keras model computing Knet's `r(x)`, batch-major.

    Inputs: `x` `(B, T, X)`, and with `initial_state=True` also `h0` (and `c0` for LSTM)
    `(B, L or 2L, H)` (see `state_to_keras`). Outputs, a dict: `y` `(B, T, Y)` for
    `output="sequence"` or `(B, Y)` = Knet's `y[:, :, end]'` for `output="last"`; `h` (and `c`)
    the final states `(B, L or 2L, H)`; with `layer_outputs=True`, `layer1`, `layer2`, ...
    each Knet layer's sequence `(B, T, H or 2H)` (forward half first).
    """
    keras = import_keras()
    spec = _check_weights(weights).spec
    if output not in ("sequence", "last"):
        raise PortingError(f"output={output!r}: expected 'sequence' or 'last'")
    if time_steps is not None and (
        isinstance(time_steps, bool)
        or not isinstance(time_steps, numbers.Integral)
        or int(time_steps) < 1
    ):
        raise PortingError(f"time_steps={time_steps!r}: expected a positive integer or None")
    dtype = str(weights.dtype)
    S, H = spec.slots, spec.hidden_size
    lstm = spec.rnn_type == "lstm"
    x = keras.Input((time_steps, spec.input_size), dtype=dtype, name="x")
    inputs = [x]
    h0 = c0 = None
    if initial_state:
        h0 = keras.Input((S, H), dtype=dtype, name="h0")
        inputs.append(h0)
        if lstm:
            c0 = keras.Input((S, H), dtype=dtype, name="c0")
            inputs.append(c0)
    outputs = apply_keras(weights, x, h0=h0, c0=c0, output=output, name=name)
    if not layer_outputs:
        outputs = {k: v for k, v in outputs.items() if not k.startswith("layer")}
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------- layouts


def x_to_keras(x, spec=None) -> np.ndarray:
    """Knet `x` `(X, B, T)` (or `(X,)`, `(X, B)`) -> Keras `(B, T, X)`.

    >>> x_to_keras(np.zeros((3, 2, 5))).shape, x_to_keras(np.zeros((3, 2))).shape
    ((2, 5, 3), (2, 1, 3))
    """
    a = np.asarray(x)
    if a.ndim not in (1, 2, 3):
        raise PortingError(f"RNN input x has shape {a.shape}: expected (X,), (X, B) or (X, B, T)")
    if spec is not None and a.shape[0] != spec.input_size:
        raise PortingError(
            f"RNN input x has shape {a.shape}: expected X = inputSize = {spec.input_size}"
        )
    a3 = a.reshape(a.shape + (1,) * (3 - a.ndim))
    return np.ascontiguousarray(a3.transpose(1, 2, 0))


def y_from_keras(y, ndim: int = 3) -> np.ndarray:
    """Keras `(B, T, Y)` -> Knet `(Y, B, T)` with `ndim` dimensions like Knet's `x`; a Keras
    `(B, Y)` (output="last") -> Knet `(Y, B)`."""
    a = np.asarray(y)
    if a.ndim == 2:
        return a.T
    out = a.transpose(2, 0, 1)
    return out.reshape(out.shape[:ndim], order="F") if ndim < 3 else out


def state_to_keras(state, spec, batch: int, dtype, name: str = "h") -> np.ndarray:
    """Knet `h`/`c` (None, 0 or `(H, B, L or 2L)`) -> Keras `(B, L or 2L, H)`."""
    return np.ascontiguousarray(initial_state(state, name, spec, batch, dtype).transpose(1, 0, 2))


def state_from_keras(state) -> np.ndarray:
    """Keras `(B, L or 2L, H)` -> Knet `(H, B, L or 2L)`."""
    return np.asarray(state).transpose(2, 0, 1)


def keras_forward(model, weights: RNNWeights, x, h=None, c=None, *, batch_sizes=None) -> dict:
    """Run a `to_keras` model on Knet-layout data; returns its outputs in Knet's layout
    (`y` like Knet's, `h`/`c` `(H, B, L or 2L)`, `layerN` `(H or 2H, B, T)`)."""
    spec = _check_weights(weights).spec
    if batch_sizes is not None:
        raise PortingError(
            f"RNN batchSizes={batch_sizes!r}: variable-length minibatches are not supported; "
            "pad the sequences to one length or run each length separately"
        )
    xk = x_to_keras(x, spec)
    B = xk.shape[0]
    dt = weights.dtype
    if xk.dtype != dt:
        raise PortingError(f"RNN input x is {xk.dtype} but the weights are {dt}")
    feeds = {"x": xk}
    names = {t.name for t in model.inputs}
    if "h0" in names:
        feeds["h0"] = state_to_keras(h, spec, B, dt, "h")
    if "c0" in names:
        feeds["c0"] = state_to_keras(c, spec, B, dt, "c")
    res = model(feeds, training=False)
    out = {}
    for key, val in res.items():
        v = np.asarray(val)
        if key in ("h", "c"):
            out[key] = state_from_keras(v)
        elif key == "y":
            out[key] = y_from_keras(v, np.ndim(x))
        else:
            out[key] = y_from_keras(v, 3)
    return out
