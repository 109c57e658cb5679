"""Keras models -> the model description of `porting.model` (the way back: Keras to Knet).

`from_keras(keras_model)` reads a built Keras 3 model of built-in layers (Sequential or
functional, branches included) and returns the `KnetModel` that computes the same thing with
Knet's arithmetic: `porting.model.save_export` writes it for Julia (`julia/`'s importer),
`forward_knet` runs it, `verify_model` checks it layer by layer, `to_keras` takes it back.

>>> import keras
>>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, strides=2,
...     padding="same", name="c"), keras.layers.Flatten(name="f"), keras.layers.Dense(2, name="d")])
>>> [f"{layer.kind} {layer.name}" for layer in from_keras(m).layers]
['zeropad c_pad', 'conv c', 'mat f', 'dense d']
"""

from __future__ import annotations

from porting.fromkeras.convert import from_keras

__all__ = ["from_keras"]
