"""The Keras classes `from_keras` converts, one row each (`CONVERTERS[class name](node, cx)`
returns the Knet layers computing what the Keras layer computes, in order; the last one is
named after the Keras layer), and those refused with a reason of their own (`REFUSED`).

A converter lives in the module of its topic (porting.fromkeras.layers: convolutions, dense,
pools, merges and the shared helpers; porting.fromkeras.sequences: embeddings and recurrent
layers; porting.fromkeras.resample: upsampling; porting.fromkeras.preprocess: Rescaling,
Normalization and Reshape; porting.fromkeras.norms: layer and group normalisation); its row
is added here.
"""

from __future__ import annotations

from porting.errors import PortingError
from porting.fromkeras.graph import Node
from porting.fromkeras.layers import (
    Context,
    Converter,
    _global_pool,
    _merge,
    _pool,
    _where,
    activation,
    batchnorm,
    conv,
    dense,
    depthwise,
    dropout,
    flatten,
    leaky_relu,
    relu,
    softmax,
    zeropad,
)
from porting.fromkeras.norms import group_normalization, layer_normalization
from porting.fromkeras.preprocess import normalization, rescaling, reshape
from porting.fromkeras.resample import upsampling
from porting.fromkeras.sequences import embedding, recurrent, time_distributed
from porting.model import Add, Concat, Mul
from porting.model.layer import Layer

__all__ = ["CONVERTERS", "REFUSED", "convert_node"]


REFUSED: dict[str, str] = {
    "Masking": "a mask makes the layers after it skip the masked steps; Knet's RNN reads every "
    "step of every sequence, so a masked model has no Knet counterpart",
}
"""Keras classes refused with a reason of their own (every other class not in CONVERTERS is
refused with the list of what converts)."""


CONVERTERS: dict[str, Converter] = {
    "Conv1D": conv,
    "Conv2D": conv,
    "Conv3D": conv,
    "DepthwiseConv2D": depthwise,
    "Dense": dense,
    "Flatten": flatten,
    "Dropout": dropout,
    "SpatialDropout1D": dropout,
    "SpatialDropout2D": dropout,
    "SpatialDropout3D": dropout,
    "Activation": activation,
    "ReLU": relu,
    "LeakyReLU": leaky_relu,
    "Softmax": softmax,
    "BatchNormalization": batchnorm,
    "LayerNormalization": layer_normalization,
    "GroupNormalization": group_normalization,
    "ZeroPadding1D": zeropad,
    "ZeroPadding2D": zeropad,
    "ZeroPadding3D": zeropad,
    "MaxPooling1D": _pool(0),
    "MaxPooling2D": _pool(0),
    "MaxPooling3D": _pool(0),
    "AveragePooling1D": _pool(1),
    "AveragePooling2D": _pool(1),
    "AveragePooling3D": _pool(1),
    "GlobalMaxPooling1D": _global_pool(0),
    "GlobalMaxPooling2D": _global_pool(0),
    "GlobalMaxPooling3D": _global_pool(0),
    "GlobalAveragePooling1D": _global_pool(1),
    "GlobalAveragePooling2D": _global_pool(1),
    "GlobalAveragePooling3D": _global_pool(1),
    "Add": _merge(Add),
    "Concatenate": _merge(Concat),
    "Multiply": _merge(Mul),
    "Rescaling": rescaling,
    "Normalization": normalization,
    "Reshape": reshape,
    "Embedding": embedding,
    "SimpleRNN": recurrent,
    "LSTM": recurrent,
    "GRU": recurrent,
    "Bidirectional": recurrent,
    "TimeDistributed": time_distributed,
    "UpSampling1D": upsampling,
    "UpSampling2D": upsampling,
    "UpSampling3D": upsampling,
}


def convert_node(node: Node, cx: Context) -> list[Layer]:
    """The Knet layers of one Keras layer, or `PortingError` saying why it has none."""
    layer = node.layer
    module = type(layer).__module__
    if not module.startswith("keras."):
        raise PortingError(
            f"{_where(node)} is defined in {module!r}, not by Keras; only Keras' built-in "
            "layers have a known arithmetic (port a custom layer by hand)"
        )
    if node.class_name in REFUSED:
        raise PortingError(f"{_where(node)}: {REFUSED[node.class_name]}")
    convert = CONVERTERS.get(node.class_name)
    if convert is None:
        raise PortingError(
            f"{_where(node)}: {node.class_name} has no Knet counterpart in porting yet; the "
            f"layers converted are {', '.join(sorted(CONVERTERS))}"
        )
    try:
        return convert(node, cx)
    except PortingError as e:
        msg = str(e)
        if not msg.startswith("Keras layer"):
            msg = f"{_where(node)}: {msg}"
        raise PortingError(msg) from None
