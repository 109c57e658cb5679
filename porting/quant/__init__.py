"""Quantized layers (QKeras): the weights a layer really computes with, and verification.

A QKeras layer keeps float "shadow" weights and computes with `quantizer(weight)`;
`get_weights()` returns the shadow weights, so a reference built from them disagrees with the
layer (seed report 001; docs/numerics.md#quantized). Verify against the quantized weights
instead:

- `quantized_weights(layer)`: a `QuantizedWeights` with both sets, per weight name, for a
  QKeras `QConv2D`, `QDense` (or `QActivation`, which has none), in the process that holds
  the layer (QKeras loaded).
- `verify_layer(layer, x)`: runs the layer on `x` (TF layout) and compares it with a float64
  NumPy reference computed from the quantized weights (`reference="float"` reproduces the
  mistake of using the shadow weights, and the diagnosis then names `quantization`).
- `verify_saved(path, layer_name, x)` and `load_quantized_weights(path)`: the same for a QKeras
  model saved to a file, done in a fresh interpreter (see below).
- `diagnose_quantized(expected, actual, w=, w_quantized=, x=, ...)`: `porting.diagnose` with
  the known quantized weights as context (NumPy only).
- `quantized_bits`, `quantized_relu`: QKeras' two common quantizers as NumPy maths;
  `conv2d_reference`, `dense_reference`: Keras Conv2D / Dense in float64 NumPy.

QKeras 0.9 runs on `tf_keras` (Keras 2) and needs `TF_USE_LEGACY_KERAS=1` set before
TensorFlow is imported; a process that already imported TensorFlow with Keras 3 cannot load
it. `verify_saved` and `load_quantized_weights` therefore start a new interpreter
(`PORTING_QKERAS_PYTHON`, else this one) with that variable set, and compare the numbers here.
Install: `install_hint()` gives the command for this environment. With the `tensorflow` wheel,
`pip install 'porting[quant]'`; with `tensorflow-cpu`, that extra would pull the full
`tensorflow` wheel next to it (tf_keras requires it), so QKeras is installed without its
dependencies instead (README "Quantized layers").

Nothing here imports TensorFlow or QKeras at import time.
"""

from __future__ import annotations

from porting.errors import PortingError  # noqa: F401 - importable from here, as before the split
from porting.quant._hint import install_hint
from porting.quant._ref import (
    conv2d_reference,
    dense_reference,
    numpy_quantizer,  # noqa: F401 - importable from here, as before the split
    quantized_bits,
    quantized_relu,
)
from porting.quant.diagnose import diagnose_quantized
from porting.quant.results import QuantizedWeights, QuantReport
from porting.quant.saved import load_quantized_weights, verify_saved
from porting.quant.verify import (
    REFERENCES,
    qkeras_status,
    quantized_weights,
    verify_capture,
    verify_layer,
)

__all__ = [
    "QuantizedWeights",
    "QuantReport",
    "quantized_weights",
    "verify_layer",
    "verify_capture",
    "verify_saved",
    "load_quantized_weights",
    "diagnose_quantized",
    "qkeras_status",
    "install_hint",
    "quantized_bits",
    "quantized_relu",
    "conv2d_reference",
    "dense_reference",
    "REFERENCES",
]

PYTHON_ENV = "PORTING_QKERAS_PYTHON"
