"""Keras' sequence layers -> the model description: Embedding, SimpleRNN / LSTM / GRU,
Bidirectional and TimeDistributed(Dense) (the rows of porting.fromkeras.table for them).

The arithmetic is in docs/tensorflow.md#keras-to-knet (Knet's packed `r.w`, its gate orders
against Keras', and what Knet's RNN does not compute)."""

from __future__ import annotations

import numpy as np

from porting.errors import PortingError
from porting.fromkeras.graph import INPUT, Node
from porting.fromkeras.layers import (
    Context,
    _config,
    _finish,
    _time_dense,
    _weights,
    _where,
)
from porting.model import RNN, Embed
from porting.model.layer import Layer

__all__ = ["embedding", "recurrent", "time_distributed"]

# A sequence is held as Knet's (X, B, T) permuted to the model layout (T, X, B), which is the
# TensorFlow (B, T, X) of the Keras layers (porting.model.kinds.embed); the model's input is
# then (T, B) 1-based token indices (Keras: 0-based).


def embedding(node: Node, cx: Context) -> list[Layer]:
    """`Embedding(vocab, dim)`: Knet's `w[:, x]` with `w` the transposed `(dim, vocab)` table."""
    cfg = _config(node)
    if cfg.get("mask_zero"):
        raise PortingError(
            f"{_where(node)}: mask_zero=True: Keras then hides the steps whose token is 0 from "
            "the layers after it (a mask); Knet's w[:, x] has no padding index and its RNN reads "
            "every step, so a masked model has no Knet counterpart (rebuild it without "
            "mask_zero, e.g. with sequences of one length)"
        )
    if node.inputs[0] != INPUT or len(node.in_shapes[0]) != 1:
        raise PortingError(
            f"{_where(node)}: reads {node.inputs[0]!r} of shape {node.in_shapes[0]} per sample; "
            "expected the model's input, (T,) token indices (Knet's w[:, x] reads the integer "
            "input, so the embedding is the first layer)"
        )
    w = _weights(node)
    if len(w) != 1:
        raise PortingError(
            f"{_where(node)}: has {len(w)} weight arrays; expected the one table (vocab, dim) "
            "(a quantized embedding has no Knet counterpart)"
        )
    layer = Embed(np.ascontiguousarray(w[0].T), name=cx.name(node.name))
    return _finish(node, cx, [layer])


def _function_name(value) -> str:
    if isinstance(value, dict):  # serialised activation object
        value = value.get("config", {}).get("name", value.get("class_name"))
    return str(value)


def _rnn_type(where: str, layer, backward: bool = False) -> str:
    """Knet's rnnType for a Keras SimpleRNN / LSTM / GRU, or `PortingError` saying what of it
    Knet's RNN does not compute."""
    cls = type(layer).__name__
    cfg = dict(layer.get_config())
    act = _function_name(cfg.get("activation", "tanh"))
    rec = _function_name(cfg.get("recurrent_activation", "sigmoid"))
    if cls == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise PortingError(
                f"{where}: activation={act!r}; Knet's RNN computes :tanh or :relu cells only"
            )
        kind = act
    elif act != "tanh" or rec != "sigmoid":
        raise PortingError(
            f"{where}: activation={act!r}, recurrent_activation={rec!r}; Knet's (cuDNN's) "
            f"{cls} computes tanh and sigmoid gates only (Keras' defaults)"
        )
    else:
        kind = cls.lower()
    if cls == "GRU" and not cfg.get("reset_after", True):
        raise PortingError(
            f"{where}: reset_after=False applies the reset gate to h before the recurrent "
            "matrix (r .* h, then R); Knet's (cuDNN's) GRU applies it after the matrix and its "
            "bias (r .* (R h + bR)), which no choice of weights turns into the other: it has no "
            "Knet counterpart (use GRU(reset_after=True), Keras' default)"
        )
    if cfg.get("stateful"):
        raise PortingError(
            f"{where}: stateful=True carries the states from one batch to the next; a converted "
            "Knet model starts every call from zero states (Knet's h = c = nothing)"
        )
    if cfg.get("return_state"):
        raise PortingError(
            f"{where}: return_state=True; a Knet chain layer gives one array (use "
            "return_state=False)"
        )
    if bool(cfg.get("go_backwards")) != backward:
        raise PortingError(
            f"{where}: go_backwards={cfg.get('go_backwards')!r}; a Knet RNN reads time forward "
            "(its backward direction only as half of a Bidirectional with merge_mode='concat')"
        )
    return kind


def _slot_weights(layer) -> list:
    ws = [np.asarray(w) for w in layer.get_weights()]
    return ws if len(ws) == 3 else [*ws, None]  # use_bias=False: Knet's biases are zero


def recurrent(node: Node, cx: Context) -> list[Layer]:
    """SimpleRNN / LSTM / GRU(reset_after=True), and their `Bidirectional(merge_mode="concat")`:
    one Knet `RNN` layer (one layer, one or two directions) holding the packed `r.w`."""
    from porting.rnn import RNNSpec
    from porting.rnn.keras import weights_from_keras

    where = _where(node)
    if len(node.in_shapes[0]) != 2:
        raise PortingError(
            f"{where}: its input has shape {node.in_shapes[0]} per sample; expected (T, X): a "
            "sequence of X features per step"
        )
    layer = node.layer
    if node.class_name == "Bidirectional":
        forward, backward = layer.forward_layer, layer.backward_layer
        if layer.merge_mode != "concat":
            raise PortingError(
                f"{where}: merge_mode={layer.merge_mode!r}; Knet's bidirectional y is the "
                "concatenation, forward half first (merge_mode='concat')"
            )
        if type(forward).__name__ not in _RNN_CLASSES or type(backward) is not type(forward):
            raise PortingError(
                f"{where}: wraps {type(forward).__name__} and {type(backward).__name__}; "
                f"expected one of {', '.join(_RNN_CLASSES)} in both directions"
            )
        kinds = {
            _rnn_type(f"{where} forward", forward),
            _rnn_type(f"{where} backward", backward, backward=True),
        }
        if len(kinds) != 1 or forward.units != backward.units:
            raise PortingError(
                f"{where}: the two directions differ ({forward.units} and {backward.units} "
                "units); Knet's bidirectional RNN has one cell type and size for both"
            )
        cells = [forward, backward]
    else:
        kinds = {_rnn_type(where, layer)}
        cells = [layer]
    sequences = bool(cells[0].get_config().get("return_sequences"))
    if len(cells) == 2 and not sequences:
        raise PortingError(
            f"{where}: return_sequences=False concatenates the backward direction's FINAL state "
            "(after reading all T steps); Knet's RNN gives y[:, :, end], whose backward half has "
            "read one step only, so no Knet RNN output computes it (use "
            "return_sequences=True and read the steps you need after it)"
        )
    spec = RNNSpec(
        int(node.in_shapes[0][1]),
        int(cells[0].units),
        kinds.pop(),
        bidirectional=len(cells) == 2,
    )
    weights = weights_from_keras(spec, [_slot_weights(c) for c in cells])
    rnn = RNN.from_weights(
        weights, output="sequence" if sequences else "last", name=cx.name(node.name)
    )
    return _finish(node, cx, [rnn])


_RNN_CLASSES = ("SimpleRNN", "LSTM", "GRU")


def time_distributed(node: Node, cx: Context) -> list[Layer]:
    inner = node.layer.layer
    if type(inner).__name__ != "Dense" or len(node.in_shapes[0]) != 2:
        raise PortingError(
            f"{_where(node)}: wraps {type(inner).__name__} over an input of shape "
            f"{node.in_shapes[0]} per sample; only TimeDistributed(Dense) over a sequence (T, H) "
            "has a Knet counterpart here (Knet's w * reshape(y, H, :) .+ b)"
        )
    return _time_dense(node, cx, inner, dict(inner.get_config()))
