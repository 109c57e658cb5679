"""Knet recurrent networks (`RNN`: relu, tanh, LSTM, GRU; stacked, bidirectional, skipInput).

>>> import numpy as np
>>> from porting.rnn import RNNSpec, unpack, forward
>>> spec = RNNSpec(input_size=3, hidden_size=4, rnn_type="gru")
>>> w = unpack(spec, np.zeros(spec.param_length, np.float32))
>>> forward(w, np.ones((3, 2, 5), np.float32)).y.shape
(4, 2, 5)

- `spec`: `RNNSpec`, the validated hyperparameters;
- `params`: Knet's packed weight vector <-> `RNNWeights` (per slot, per gate);
- `reference`: the NumPy forward (`forward`);
- `keras` (imports Keras): conversion to Keras 3 layers and models;
- `verify`: per-layer, per-time-step comparison with tolerances carried through the recurrence;
- `diagnosis`: the usual porting mistakes, detected by recomputation;
- `export`: an `rnn` layer of a Julia export (`from_export`).

The facts: docs/knet.md#rnn, #rnn-packing, #rnn-gates, #rnn-bidirectional;
docs/tensorflow.md#keras-gru, #keras-lstm, #keras-rnn-layout; docs/numerics.md#rnn-tolerance.

Nothing imported here imports TensorFlow.
"""

from __future__ import annotations

from porting.rnn.export import RNNExport, from_export
from porting.rnn.params import RNNWeights, pack, random_weights, unpack, weights_from_gates
from porting.rnn.reference import RNNOutput, forward
from porting.rnn.spec import GATE_NAMES, RNN_TYPES, RNNSpec

__all__ = [
    "GATE_NAMES",
    "RNN_TYPES",
    "RNNExport",
    "RNNOutput",
    "RNNSpec",
    "RNNWeights",
    "forward",
    "from_export",
    "pack",
    "random_weights",
    "unpack",
    "weights_from_gates",
]
