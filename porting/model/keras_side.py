"""The Keras side of a model verification: one Knet layer's group of Keras layers, run eagerly.

`run_group` runs a group layer by layer from each layer's recorded call (its inbound node), as
a functional model runs its graph, on inputs given by Knet layer name. `per_sample` says whether
every layer of a model computes each sample of a batch on its own at inference, so that two
inputs can share one call as the halves of a doubled batch (`verify_model` runs each layer on
Knet's input and on Keras's own so).
"""

from __future__ import annotations

__all__ = ["run_group", "source_name", "per_sample", "PER_SAMPLE"]


def run_group(group, feeds: dict, end=None):
    """Run one Knet layer's Keras group (up to `end`, default its last layer) eagerly, layer by
    layer from each layer's recorded call (its inbound node), as a functional model runs its
    graph; `feeds` gives, by Knet layer name ("knet_input" for the model's input), the value of
    every tensor the group reads from outside (a merge reads several; an edge-padded max pool
    branches inside). A Keras without that record gets a sub-model (single-input groups)."""
    end = end if end is not None else group[-1]
    try:
        values: dict = {}
        out = None
        for lay in group:
            node = lay._inbound_nodes[0]
            for t in node.arguments.keras_tensors:
                if id(t) not in values:
                    op = t._keras_history.operation
                    # the model's input, whatever its name (a Keras model written by hand has
                    # "input_layer", not the "knet_input" of a converted one)
                    src = (
                        "knet_input"
                        if type(op).__name__ == "InputLayer"
                        else op.name.split("__")[0]
                    )
                    values[id(t)] = feeds[src]
            args, kwargs = node.arguments.fill_in(values)
            if lay.__class__.__name__ == "Dropout":
                kwargs = {**kwargs, "training": False}
            if _direct(lay, args, kwargs):
                out = lay.call(*args, **_DIRECT[type(lay).__name__])
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


# Stateless or inference-only built-in layers whose `call` is what `__call__` runs once it has
# converted and cast the inputs, built the layer and resolved masks and `training`: with inputs
# already in the layer's compute dtype, no mask and no other arguments, calling `call` directly
# gives the same numbers without Keras's per-call bookkeeping (a third of the time of a small
# layer's call). The value: the keyword arguments `call` takes for inference.
_DIRECT: dict[str, dict] = {
    **{f"Conv{d}D": {} for d in (1, 2, 3)},
    **{f"ZeroPadding{d}D": {} for d in (1, 2, 3)},
    **{f"Cropping{d}D": {} for d in (1, 2, 3)},
    **{f"MaxPooling{d}D": {} for d in (1, 2, 3)},
    **{f"AveragePooling{d}D": {} for d in (1, 2, 3)},
    **{f"GlobalAveragePooling{d}D": {} for d in (1, 2, 3)},
    "BatchNormalization": {"training": False},
    "Activation": {},
    "ReLU": {},
    "LeakyReLU": {},
    "Dense": {},
    "Add": {},
    "Flatten": {},
    "Identity": {},
}


def _direct(lay, args, kwargs) -> bool:
    """Whether `lay(*args, **kwargs)` may run as `lay.call(...)` (`_DIRECT`)."""
    if type(lay).__name__ not in _DIRECT or len(args) != 1 or not lay.built:
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
        and getattr(v, "_keras_mask", None) is None
        and backend.standardize_dtype(v.dtype) == dtype
        for v in values
    )


def source_name(steps, k: int) -> str:
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
starts every sequence from zero state)."""


def _per_sample_layer(lay) -> bool:
    name = type(lay).__name__
    if name not in PER_SAMPLE or getattr(lay, "stateful", False):
        return False
    if name == "Concatenate":  # joining along the batch axis would mix the halves
        return lay.axis != 0
    inner = [
        getattr(lay, a) for a in ("layer", "forward_layer", "backward_layer") if hasattr(lay, a)
    ]
    return all(_per_sample_layer(i) for i in inner if i is not None)


def per_sample(groups, keras_model) -> bool:
    """True when every layer of `groups` is a built-in Keras layer that computes each sample on
    its own at inference (`PER_SAMPLE`, not stateful, no Concatenate along the batch) and the
    last group ends at the model's single output: then a batch made of two inputs gives, in
    each half, what either input alone gives (up to the order of float operations, which the
    tolerances allow for)."""
    outputs = getattr(keras_model, "outputs", None) or []
    if len(outputs) != 1 or not groups or groups[-1][-1].output is not outputs[0]:
        return False
    return all(_per_sample_layer(lay) for g in groups for lay in g)
