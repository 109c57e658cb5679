"""`from_keras`: walk the Keras graph (porting.fromkeras.graph), convert each layer
(porting.fromkeras.layers) and wire the Knet layers as the Keras ones are wired."""

from __future__ import annotations

import numpy as np

from porting import layout
from porting._checks import check_choice
from porting._text import printable
from porting.errors import PortingError
from porting.fromkeras.graph import INPUT, nodes
from porting.fromkeras.layers import Context
from porting.fromkeras.table import convert_node
from porting.model import KnetModel
from porting.model.layer import Layer

__all__ = ["from_keras"]

_FLOATS = ("float32", "float64")


def _dtype(keras_model) -> np.dtype:
    # The InputLayer computes nothing, and Keras does not save its policy: a float64 model
    # reloaded from its .keras file has a float32 InputLayer (its layers cast their input).
    names = {
        getattr(getattr(layer, "dtype_policy", None), "name", "float32")
        for layer in keras_model.layers
        if type(layer).__name__ != "InputLayer"
    } or {"float32"}
    bad = sorted(n for n in names if n not in _FLOATS)
    if bad or len(names) > 1:
        raise PortingError(
            f"Keras model {printable(keras_model.name)!r} computes in {', '.join(sorted(names))}; "
            "expected one of float32 or float64 throughout (Knet's Array{Float32} / "
            "Array{Float64}; mixed precision has no Knet counterpart)"
        )
    return np.dtype(names.pop())


def from_keras(keras_model, *, spatial: str = "reverse") -> KnetModel:
    """The Knet model (porting.model description) computing what `keras_model` computes.

    `keras_model` is a built Keras 3 model with one input and one output, of Keras' built-in
    layers (porting.fromkeras.table.CONVERTERS lists them). `spatial` says which Julia axis
    the TensorFlow width becomes ("reverse", the default: X1 is the width, as cuDNN reads
    Knet's memory). Each Knet layer is named after the Keras layer it comes from; where one
    Keras layer needs two Knet layers (an asymmetric "same" padding before a conv, a softmax
    after a dense), the extra one is named `<name>_pad` / `<name>_dense` and the Keras name
    stays on the layer that gives its output. Raises `PortingError` naming the first layer
    that has no Knet counterpart and why.
    """
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    graph = nodes(keras_model)  # first: it checks that keras_model is a built Keras model
    dtype = _dtype(keras_model)
    cx = Context(spatial=spatial)
    input_shape = tuple(int(s) for s in keras_model.inputs[0].shape[1:])
    layers: list[Layer] = []
    wiring: dict[str, str] = {}
    for node in graph:
        converted = convert_node(node, cx)
        first = converted[0]
        if not getattr(first, "merges", False):
            source = cx.output_of[node.inputs[0]]
            before = str(layers[-1].name) if layers else INPUT
            if source != before:
                wiring[str(first.name)] = source
        layers.extend(converted)
    if not layers:
        raise PortingError(
            f"Keras model {printable(keras_model.name)!r} has no layers after its input"
        )
    name = cx.name(keras_model.name or "keras_model")
    return KnetModel(
        layers, input_size=cx.julia_size(input_shape), name=name, dtype=dtype, inputs=wiring
    )
