"""Knet models in, verified Keras 3 models out.

>>> import numpy as np
>>> from porting.model import KnetModel, Conv, Dense
>>> rng = np.random.default_rng(0)
>>> m = KnetModel([
...     Conv(rng.standard_normal((3, 3, 1, 4), np.float32), np.zeros((1, 1, 4, 1), np.float32),
...          activation="relu", pool=dict(window=2)),
...     Dense(rng.standard_normal((2, 144), np.float32), np.zeros(2, np.float32)),
... ], input_size=(14, 14, 1))
>>> forward_knet(m, rng.standard_normal((14, 14, 1, 3), np.float32))[-1].shape
(2, 3)

- `KnetModel` (spec; a chain, or a graph with `Add`/`Mul`/`Concat` merges and `inputs=`) and
  the layers of the table `porting.model.kinds.KINDS` (`Conv`, `Deconv`, `Dense`, `Pool`, `Mat`,
  `Reshape`, `Dropout`, `Activation`, `BatchNorm`, `Affine`, `Add`, `Mul`, `Concat`, `ZeroPad`,
  Layers21's `Linear`, ...; exported from it, not listed here), and `Block` / `AddBranches` / `Op`
  (porting.model.layers21, which build those layers): each kind defined in one file under
  `porting.model.kinds`, its Knet computation as ordered stages (`porting.model.stages`).
- `model_from_doc(doc, arrays, ...)`: the model an export document describes, its weights given
  as arrays (`load_export` reads both from disk).
- `plan(model, input_size)`: the model planned once for an input size (sizes, stages, flatten
  bookkeeping); `forward_knet`, `to_keras`, `convert_weights`, `verify_model` take `plan=`.
- `load_export(prefix)` / `save_export(model, prefix)`: the `.npz` + `.json` pair the Julia side
  writes (`PortingKnet.export_model`).
- `forward_knet(model, x)`: every layer's Knet output, Julia-indexed.
- `to_keras(model, spatial=...)` (Keras built-in layers only: the file loads anywhere),
  `save_keras(km, path)` (atomic), `export_savedmodel`, `export_tflite`, `load_keras`
  (TensorFlow imported on use only); `export_onnx(km, path)` and `verify_onnx(model, path, x)`
  (porting.model.onnx_out: the `onnx` extra).
- `verify_model(model, x, keras_model=..., mode="each"|"whole")`: layer-by-layer report.
- Recurrent models: `Embed`, `RNN`, `TimeDense`; their input is `(T, B)` token indices and a
  sequence is held as `(T, X, B)`: `knet_sequence(a)` gives Knet's `(X, B, T)`,
  `model_sequence` the reverse.
"""

from typing import TYPE_CHECKING, Any

from porting.model import kinds as _kinds
from porting.model.export import load_export, model_from_doc, save_export
from porting.model.forward import KnetOutputs, forward_knet
from porting.model.kinds import *  # noqa: F403 - the layer classes, one per kind (and merges)
from porting.model.kinds.embed import knet_sequence, model_sequence
from porting.model.planning import Plan, plan
from porting.model.spec import ACTIVATIONS, AddBranches, Block, KnetModel, Op

if TYPE_CHECKING:  # imported on first use (`__getattr__`): they import TensorFlow's helpers
    from porting.model.convert import (
        convert_weights,
        export_savedmodel,
        export_tflite,
        load_keras,
        save_keras,
        to_keras,
    )
    from porting.model.onnx_out import export_onnx, verify_onnx
    from porting.model.verify import ModelReport, default_input, verify_model

__all__ = [
    "ACTIVATIONS",
    "KnetModel",
    "Block",
    "AddBranches",
    "Op",
    "KnetOutputs",
    "knet_sequence",
    "model_sequence",
    "Plan",
    "plan",
    "default_input",
    "forward_knet",
    "load_export",
    "model_from_doc",
    "save_export",
    "to_keras",
    "save_keras",
    "export_savedmodel",
    "export_tflite",
    "export_onnx",
    "verify_onnx",
    "load_keras",
    "convert_weights",
    "verify_model",
    "ModelReport",
]
__all__ += _kinds.__all__  # the layer classes of the table (porting.model.kinds.KINDS)

_LAZY = {
    "to_keras": "porting.model.convert",
    "save_keras": "porting.model.convert",
    "export_savedmodel": "porting.model.convert",
    "export_tflite": "porting.model.convert",
    "export_onnx": "porting.model.onnx_out",
    "verify_onnx": "porting.model.onnx_out",
    "load_keras": "porting.model.convert",
    "convert_weights": "porting.model.convert",
    "verify_model": "porting.model.verify",
    "default_input": "porting.model.verify",
    "ModelReport": "porting.model.verify",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'porting.model' has no attribute {name!r}")
