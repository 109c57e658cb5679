"""The Keras side of a model verification: one Knet layer's group of Keras layers, run eagerly.

`run_group` runs a group layer by layer from each layer's recorded call (its inbound node), as
a functional model runs its graph, on inputs given by Knet layer name. `per_sample` says whether
every layer of a model computes each sample of a batch on its own at inference, so that two
inputs can share one call as the halves of a doubled batch (`verify_model` runs each layer on
Knet's input and on Keras's own so).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["run_group", "source_name", "per_sample", "PER_SAMPLE"]


def run_group(group: Sequence[Any], feeds: dict[str, Any], end: Any = None) -> Any:
    """Run one Knet layer's Keras group (up to `end`, default its last layer) eagerly, layer by
    layer from each layer's recorded call (its inbound node), as a functional model runs its
    graph; `feeds` gives, by Knet layer name ("knet_input" for the model's input), the value of
    every tensor the group reads from outside (a merge reads several; an edge-padded max pool
    branches inside). A Keras without that record gets a sub-model (single-input groups)."""
    end = end if end is not None else group[-1]
    try:
        values: dict[int, Any] = {}
        out: Any = None
        for lay in group:
            node, sources = _recorded_call(lay)
            for t, src in sources:
                if id(t) not in values:
                    values[id(t)] = feeds[src.split("__")[0]]
            args, kwargs = node.arguments.fill_in(values)
            if lay.__class__.__name__ == "Dropout":
                kwargs = {**kwargs, "training": False}
            if _direct(lay, args, kwargs):
                out = lay.call(*args, **_direct_calls()[type(lay).__name__])
            else:
                out = lay(*args, **kwargs)
            if isinstance(out, (list, tuple)):  # a recurrent layer returning its states too
                for t_out, v in zip(node.outputs, out, strict=False):
                    values[id(t_out)] = v
                out = out[0]
            else:
                values[id(node.outputs[0])] = out
            if lay is end:
                break
        return out
    except (AttributeError, IndexError, TypeError):  # pragma: no cover - another Keras
        import keras

        (x,) = feeds.values()
        # Layers are in topological order: the group's first layer reads the group's input.
        return keras.Model(group[0].input, end.output)(x, training=False)


@functools.cache
def _direct_calls() -> dict[str, dict[str, Any]]:
    """Keras class name -> the keyword arguments its `call` takes at inference, for the layers
    the kinds declare callable directly (`porting.model.layer.KerasLayer.direct`): with inputs
    already in the layer's compute dtype, no mask and no other arguments, calling `call` gives
    the same numbers without Keras's per-call bookkeeping (a third of the time of a small
    layer's call)."""
    from porting.model.kinds import KINDS

    return {
        kl.name: dict(kl.direct)
        for kind in KINDS.values()
        for kl in kind.keras_layers
        if kl.direct is not None
    }


@functools.cache
def _declared_per_sample() -> dict[str, bool]:
    """The Keras classes the kinds build, and whether each is per-sample at inference
    (`KerasLayer.per_sample`; it overrides `PER_SAMPLE`)."""
    from porting.model.kinds import KINDS

    return {kl.name: kl.per_sample for kind in KINDS.values() for kl in kind.keras_layers}


def _direct(lay: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Whether `lay(*args, **kwargs)` may run as `lay.call(...)` (`_direct_calls`)."""
    if type(lay).__name__ not in _direct_calls() or len(args) != 1 or not lay.built:
        return False
    if any(k not in ("mask", "training") or v is not None for k, v in kwargs.items()):
        return False  # only the defaults a functional node records (mask=None)
    dtype = lay.compute_dtype
    if lay.variable_dtype != dtype:  # a mixed-precision policy: __call__ casts
        return False
    from keras import backend

    values = args[0] if isinstance(args[0], (list, tuple)) else args
    return all(
        hasattr(v, "dtype")
        and _keras_mask(v) is None
        and backend.standardize_dtype(v.dtype) == dtype
        for v in values
    )


# Keras 3 has no public API for a layer's recorded call in its functional model (its inbound
# node), for the layer that produced a symbolic tensor, or for the mask an eager call attaches
# to its output: these two functions are the only places that read Keras's private attributes,
# so that another Keras breaks them alone (run_group then falls back to a sub-model).


def _recorded_call(lay: Any) -> tuple[Any, list[tuple[Any, str]]]:
    """`lay`'s first inbound node, and for each symbolic tensor it reads, the name of the layer
    that produced it (Keras 3: `Operation._inbound_nodes`, `KerasTensor._keras_history`); the
    model's input is "knet_input" whatever its name (a Keras model written by hand calls it
    "input_layer", not the "knet_input" of a converted one)."""
    node = lay._inbound_nodes[0]

    def source(t: Any) -> str:
        op = t._keras_history.operation
        return "knet_input" if type(op).__name__ == "InputLayer" else str(op.name)

    return node, [(t, source(t)) for t in node.arguments.keras_tensors]


def _keras_mask(value: Any) -> Any:
    """The mask Keras attached to an eager value (`_keras_mask`), or None."""
    return getattr(value, "_keras_mask", None)


def source_name(steps: Any, k: int) -> str:
    return "knet_input" if k < 0 else str(steps[k].layer.name)


PER_SAMPLE = frozenset(
    {
        "Activation", "Add", "Average", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "BatchNormalization", "Bidirectional", "Concatenate", "Conv1D",
        "Conv1DTranspose", "Conv2D", "Conv2DTranspose", "Conv3D", "Conv3DTranspose",
        "Cropping1D", "Cropping2D", "Cropping3D", "Dense", "DepthwiseConv1D", "DepthwiseConv2D",
        "Dropout", "ELU", "Embedding", "Flatten", "GRU", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Identity", "LSTM", "LayerNormalization",
        "LeakyReLU", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Maximum", "Minimum",
        "Multiply", "PReLU", "Permute", "ReLU", "Rescaling", "Reshape", "SeparableConv1D",
        "SeparableConv2D", "SimpleRNN", "Softmax", "Subtract", "TimeDistributed",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    }
)  # fmt: skip
"""Keras's built-in layers that, at inference, compute each sample of a batch from that sample
alone (batch normalisation uses its moving statistics; a recurrent layer that is not stateful
starts every sequence from zero state): for Keras models written by hand. The layers porting's
kinds build are declared with their kind (`porting.model.layer.KerasLayer.per_sample`)."""


def _per_sample_layer(lay: Any) -> bool:
    name = type(lay).__name__
    if not _declared_per_sample().get(name, name in PER_SAMPLE) or getattr(lay, "stateful", False):
        return False
    if name == "Concatenate":  # joining along the batch axis would mix the halves
        return bool(lay.axis != 0)
    inner = [
        getattr(lay, a) for a in ("layer", "forward_layer", "backward_layer") if hasattr(lay, a)
    ]
    return all(_per_sample_layer(i) for i in inner if i is not None)


def per_sample(groups: Sequence[Sequence[Any]], keras_model: Any) -> bool:
    """True when every layer of `groups` is a built-in Keras layer that computes each sample on
    its own at inference (declared so by its kind, or in `PER_SAMPLE`; not stateful, no
    Concatenate along the batch) and the last group ends at the model's single output: then a batch made of two inputs gives, in
    each half, what either input alone gives (up to the order of float operations, which the
    tolerances allow for)."""
    outputs = getattr(keras_model, "outputs", None) or []
    if len(outputs) != 1 or not groups or groups[-1][-1].output is not outputs[0]:
        return False
    return all(_per_sample_layer(lay) for g in groups for lay in g)
