"""Keras layers -> the layers of the model description (`porting.model`): the converters of
convolutions, dense layers, pools and merges, and the helpers the other converters share
(porting.fromkeras.table lists every row; each returns the Knet layers computing what the
Keras layer computes, in order, the last one named after the Keras layer).

The arithmetic each row relies on is in docs/tensorflow.md#keras-to-knet: TensorFlow's "same"
padding (the extra row or column goes at the end), the kernel rotated for `conv4`'s default
mode 0, Keras' `Flatten` order against Knet's `mat`, Keras' batchnorm momentum against Knet's,
and what has no Knet equivalent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting import layout
from porting._text import printable
from porting.errors import PortingError
from porting.fromkeras.graph import INPUT, Node
from porting.model import (
    Activation,
    Add,
    BatchNorm,
    Concat,
    Conv,
    Dense,
    Dropout,
    Mat,
    Mul,
    Pool,
    TimeDense,
    ZeroPad,
)
from porting.model.layer import Layer

__all__ = ["Context", "Converter", "same_padding"]

# Keras activation name -> Knet's (porting.model.ACTIVATIONS); softmax / log_softmax are not
# element-wise and become their own Activation layer over the channel (last) axis.
_ACTIVATIONS = {
    "linear": "identity",
    "relu": "relu",
    "sigmoid": "sigm",
    "tanh": "tanh",
    "elu": "elu",
    "selu": "selu",
    "gelu": "gelu",
    "silu": "swish",
    "swish": "swish",
    "hard_sigmoid": "hardsigmoid",
    "hard_silu": "hardswish",
    "hard_swish": "hardswish",
    "softmax": "softmax",
    "log_softmax": "logsoftmax",
}
_NOT_ELEMENTWISE = ("softmax", "logsoftmax")
_NAME_OK = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class Context:
    """What the conversion knows as it walks the nodes: the spatial convention, the Knet names
    given so far, and for each converted Keras layer the Knet layer holding its output and the
    Julia size before a `Flatten` its output still carries (for the next Dense's rows)."""

    spatial: str
    names: set[str] = field(default_factory=set)
    output_of: dict[str, str] = field(default_factory=lambda: {INPUT: INPUT})
    flat_from: dict[str, tuple[int, ...] | None] = field(default_factory=dict)

    def name(self, keras_name: str, suffix: str = "") -> str:
        """A unique Knet layer name from a Keras one (Knet names: letters, digits, `_.-`;
        `__` is reserved for the Keras layers a Knet layer becomes)."""
        base = _NAME_OK.sub("_", keras_name).replace("__", "_").strip("_.-") or "layer"
        if not base[0].isalnum():
            base = "l" + base
        base += suffix
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def julia_size(self, tf_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One sample's TensorFlow shape `(H, W, C)` -> Julia's size `(X1, X2, C)`."""
        if len(tf_shape) < 2:
            return tuple(tf_shape)
        return (*layout.spatial_from_tf(tuple(tf_shape[:-1]), self.spatial), tf_shape[-1])

    def julia(self, values) -> tuple:
        """Per-axis values given in TensorFlow's spatial order, in Julia's."""
        return tuple(layout.spatial_from_tf(tuple(values), self.spatial))


Converter = Callable[[Node, Context], list[Layer]]


def _where(node: Node) -> str:
    return f"Keras layer {printable(node.name)!r} ({node.class_name})"


def _config(node: Node) -> dict[str, Any]:
    cfg = dict(node.layer.get_config())
    fmt = cfg.get("data_format")
    if fmt not in (None, "channels_last"):
        raise PortingError(
            f"{_where(node)}: data_format={fmt!r}; expected 'channels_last' (Keras' default, "
            "the layout porting maps Knet's (X1, X2, C, N) to)"
        )
    return cfg


def _activation(node: Node, cfg: dict) -> tuple[str, str | None]:
    """(Knet activation fused into the layer, or identity; a separate softmax, or None)."""
    value = cfg.get("activation", "linear")
    if isinstance(value, dict):  # serialised activation object
        value = value.get("config", {}).get("name", value.get("class_name"))
    name = _ACTIVATIONS.get(str(value)) if isinstance(value, str) else None
    if name is None:
        raise PortingError(
            f"{_where(node)}: activation={value!r} has no Knet counterpart here; expected one "
            f"of {', '.join(sorted(_ACTIVATIONS))}"
        )
    if name in _NOT_ELEMENTWISE:
        return "identity", name
    return name, None


def _softmax_layer(function: str, rank: int, name: str) -> Activation:
    # Keras' softmax is over the last axis: the channels, Julia's dimension rank (1 for features)
    return Activation(function, dims=rank, name=name)


def _finish(node: Node, cx: Context, layers: list[Layer], flat: tuple[int, ...] | None = None):
    cx.output_of[node.name] = str(layers[-1].name)
    cx.flat_from[node.name] = flat
    return layers


def same_padding(size: int, window: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's `padding="same"` for one axis: `(before, after)`; the odd cell goes after.

    >>> same_padding(224, 7, 2), same_padding(112, 3, 2), same_padding(8, 3, 1)
    ((2, 3), (0, 1), (1, 1))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _tuple(value, nd: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nd
    return tuple(int(v) for v in value)


def _pad_pairs(node: Node, cfg: dict, nd: int, window, stride, dilation) -> tuple:
    """Per TensorFlow spatial axis, `(before, after)` padding of a conv or pool."""
    padding = cfg.get("padding", "valid")
    size = node.in_shapes[0][:nd]
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":
        return tuple(
            same_padding(n, k, s, d)
            for n, k, s, d in zip(size, window, stride, dilation, strict=True)
        )
    if padding == "causal" and nd == 1:
        return (((window[0] - 1) * dilation[0], 0),)
    raise PortingError(
        f"{_where(node)}: padding={padding!r}; expected 'valid', 'same' or (Conv1D) 'causal'"
    )


def _rank(node: Node, nd: int) -> None:
    have = len(node.in_shapes[0])
    if have != nd + 1:
        raise PortingError(
            f"{_where(node)}: its input has shape {node.in_shapes[0]} per sample; expected "
            f"{nd} spatial dimensions and channels"
        )


def _convolution(node: Node, cx: Context, kernel, bias, groups: int) -> list[Layer]:
    cfg = _config(node)
    nd = kernel.ndim - 2
    _rank(node, nd)
    window = kernel.shape[:nd]
    stride = _tuple(cfg.get("strides", 1), nd)
    dilation = _tuple(cfg.get("dilation_rate", 1), nd)
    pairs = _pad_pairs(node, cfg, nd, window, stride, dilation)
    fused, separate = _activation(node, cfg)
    layers: list[Layer] = []
    if all(lo == hi for lo, hi in pairs):
        padding: Any = cx.julia(lo for lo, _ in pairs)
    else:  # Knet's padding is symmetric: the asymmetric "same" is an explicit zero padding
        layers.append(ZeroPad(cx.julia(pairs), name=cx.name(node.name, "_pad")))
        padding = 0
    name = cx.name(node.name, "" if separate is None else "_conv")
    layers.append(
        Conv(
            owned(layout.kernel_from_tf(kernel, mode=0, spatial=cx.spatial)),
            None if bias is None else owned(layout.bias_from_tf(bias, ndims=nd + 2)),
            padding=padding,
            stride=cx.julia(stride),
            dilation=cx.julia(dilation),
            mode=0,
            groups=groups,
            activation=fused,
            name=name,
        )
    )
    if separate is not None:
        layers.append(_softmax_layer(separate, nd + 1, cx.name(node.name)))
    return _finish(node, cx, layers)


def _weights(node: Node) -> list[np.ndarray]:
    return [owned(np.asarray(w)) for w in node.layer.get_weights()]


def owned(a: np.ndarray) -> np.ndarray:
    """`a`, made read-only, with the arrays it views, when they are fresh NumPy memory that
    only the conversion holds (the copies `get_weights` makes, a layout conversion's output
    or a view of one): the layer built from it keeps it as it is instead of making a read-only
    copy (porting._checks.read_only). Memory NumPy does not own (a buffer of another library)
    is left writable, so the layer copies it."""
    chain = [a]
    while isinstance(chain[-1].base, np.ndarray):
        chain.append(chain[-1].base)
    if chain[-1].base is None:
        for b in reversed(chain):
            b.flags.writeable = False
    return a


def conv(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    w = _weights(node)
    return _convolution(
        node, cx, w[0], w[1] if cfg.get("use_bias", True) else None, cfg.get("groups", 1)
    )


def depthwise(node: Node, cx: Context) -> list[Layer]:
    """`DepthwiseConv2D`: channel c's `depth_multiplier` filters are outputs c*m ... c*m+m-1,
    which is Knet's grouped conv with groups = Cin and w `(W..., 1, Cin*m)`."""
    cfg = _config(node)
    w = _weights(node)
    k = w[0]  # (kh, kw, Cin, m)
    kernel = k.reshape((*k.shape[:-2], 1, k.shape[-2] * k.shape[-1]))
    return _convolution(node, cx, kernel, w[1] if cfg.get("use_bias", True) else None, k.shape[-2])


def dense(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    if len(node.in_shapes[0]) == 2:  # (T, H) per sample: the same dense at every step
        return _time_dense(node, cx, node.layer, cfg)
    if len(node.in_shapes[0]) != 1:
        raise PortingError(
            f"{_where(node)}: its input has shape {node.in_shapes[0]} per sample; Knet's dense "
            "multiplies a matrix of features (it flattens any other input with mat) or, over a "
            "sequence (T, H), each step's; a Keras Dense over the last axis of a larger tensor "
            "has no Knet counterpart: Flatten first"
        )
    w = _weights(node)
    flat = cx.flat_from.get(node.inputs[0])
    fused, separate = _activation(node, cfg)
    # Knet's dense output is (features, N): softmax(x; dims=1) is over the features, as Keras'
    layer = Dense(
        owned(layout.dense_from_tf(w[0], input_shape=flat, spatial=cx.spatial)),
        w[1] if cfg.get("use_bias", True) else None,
        activation=separate or fused,
        name=cx.name(node.name),
    )
    return _finish(node, cx, [layer])


def _time_dense(node: Node, cx: Context, dense_layer, cfg: dict) -> list[Layer]:
    """A Keras Dense at every step of `(T, H)`: Knet's `w * reshape(y, H, :) .+ b`."""
    fused, separate = _activation(node, cfg)
    w = [np.asarray(a) for a in dense_layer.get_weights()]
    layer = TimeDense(
        np.ascontiguousarray(w[0].T),
        w[1] if cfg.get("use_bias", True) else None,
        activation=separate or fused,  # over the features of each step, as Keras' last axis
        name=cx.name(node.name),
    )
    return _finish(node, cx, [layer])


def flatten(node: Node, cx: Context) -> list[Layer]:
    shape = node.in_shapes[0]
    flat = cx.julia_size(shape) if len(shape) > 1 else cx.flat_from.get(node.inputs[0])
    return _finish(node, cx, [Mat(name=cx.name(node.name))], flat=flat)


def _passes_flat(node: Node, cx: Context, layers: list[Layer]) -> list[Layer]:
    """A layer that keeps its input's values in place (dropout, an element-wise activation)."""
    return _finish(node, cx, layers, flat=cx.flat_from.get(node.inputs[0]))


def dropout(node: Node, cx: Context) -> list[Layer]:
    rate = float(_config(node).get("rate", 0.0))
    return _passes_flat(node, cx, [Dropout(rate, name=cx.name(node.name))])


def activation(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    fused, separate = _activation(node, cfg)
    rank = len(node.in_shapes[0])
    layer = (
        Activation(fused, name=cx.name(node.name))
        if separate is None
        else _softmax_layer(separate, rank, cx.name(node.name))
    )
    return _passes_flat(node, cx, [layer]) if separate is None else _finish(node, cx, [layer])


def relu(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    max_value = cfg.get("max_value")
    layer = Activation(
        "relu",
        max_value=None if max_value is None else float(max_value),
        negative_slope=float(cfg.get("negative_slope", 0.0)),
        threshold=float(cfg.get("threshold", 0.0)),
        name=cx.name(node.name),
    )
    return _passes_flat(node, cx, [layer])


def leaky_relu(node: Node, cx: Context) -> list[Layer]:
    slope = float(_config(node).get("negative_slope", 0.3))
    return _passes_flat(
        node, cx, [Activation("relu", negative_slope=slope, name=cx.name(node.name))]
    )


def softmax(node: Node, cx: Context) -> list[Layer]:
    axis = _config(node).get("axis", -1)
    rank = len(node.in_shapes[0])
    if axis not in (-1, rank, [-1], [rank]):
        raise PortingError(
            f"{_where(node)}: axis={axis!r}; only the last (channel / feature) axis is mapped "
            "(Knet's softmax(x; dims) over Julia's channel dimension)"
        )
    return _finish(node, cx, [_softmax_layer("softmax", rank, cx.name(node.name))])


def batchnorm(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    rank = len(node.in_shapes[0])
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, rank):
        raise PortingError(
            f"{_where(node)}: axis={cfg.get('axis')!r}; expected the channel (last) axis, the one "
            "Knet's batchnorm normalises over"
        )
    if cx.flat_from.get(node.inputs[0]) is not None:
        raise PortingError(
            f"{_where(node)}: batch normalization of flattened features; Keras' Flatten orders "
            "them (H, W, C) and Knet's mat (X1, X2, C), so its per-feature statistics would need "
            "the permutation too, which porting does not do yet: normalise before the Flatten"
        )
    w = _weights(node)
    scale = w.pop(0) if cfg.get("scale", True) else None
    center = w.pop(0) if cfg.get("center", True) else None
    mean, var = w
    params = None
    if scale is not None or center is not None:
        params = np.concatenate(
            [
                np.ones_like(mean) if scale is None else scale,
                np.zeros_like(mean) if center is None else center,
            ]
        )
    layer = BatchNorm(
        mean,
        var,
        params,
        eps=float(cfg.get("epsilon", 1e-3)),
        # Keras keeps momentum * running + (1 - momentum) * batch; Knet's bnmoments the reverse
        momentum=1.0 - float(cfg.get("momentum", 0.99)),
        name=cx.name(node.name),
    )
    return _finish(node, cx, [layer])


def zeropad(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    nd = len(node.in_shapes[0]) - 1
    p = cfg["padding"]
    pairs = (tuple(p),) if nd == 1 else tuple(tuple(q) for q in p)
    return _finish(node, cx, [ZeroPad(cx.julia(pairs), name=cx.name(node.name))])


def _pool(mode: int) -> Converter:
    def convert(node: Node, cx: Context) -> list[Layer]:
        cfg = _config(node)
        nd = len(node.in_shapes[0]) - 1
        window = _tuple(cfg.get("pool_size", 2), nd)
        stride = _tuple(cfg.get("strides") or window, nd)
        pairs = _pad_pairs(node, cfg, nd, window, stride, (1,) * nd)
        if any(lo != hi for lo, hi in pairs):
            counted = (
                " (an explicit zero padding before it would be counted in the mean)"
                if mode == 1
                else ""
            )
            raise PortingError(
                f"{_where(node)}: padding='same' here pads {pairs} (before, after) per axis, "
                "more at the end; Knet's pool pads the same on both sides, so it has no Knet "
                f"counterpart{counted} (choose an input size for which 'same' is symmetric, or "
                "'valid')"
            )
        # Keras' "same" average divides by the cells inside the input: Knet's mode 2
        padded = any(lo for lo, _ in pairs)
        layer = Pool(
            cx.julia(window),
            padding=cx.julia(lo for lo, _ in pairs),
            stride=cx.julia(stride),
            mode=2 if mode == 1 and padded else mode,
            name=cx.name(node.name),
        )
        return _finish(node, cx, [layer])

    return convert


def _global_pool(mode: int) -> Converter:
    def convert(node: Node, cx: Context) -> list[Layer]:
        cfg = _config(node)
        size = cx.julia_size(node.in_shapes[0])
        name = cx.name(node.name, "" if cfg.get("keepdims") else "_pool")
        layers: list[Layer] = [Pool(size[:-1], mode=mode, name=name)]
        if not cfg.get("keepdims"):
            layers.append(Mat(name=cx.name(node.name)))
        return _finish(node, cx, layers)

    return convert


def _merge(kind: type[Add] | type[Mul] | type[Concat]) -> Converter:
    def convert(node: Node, cx: Context) -> list[Layer]:
        cfg = _config(node)
        if kind is Concat:
            rank = len(node.in_shapes[0])
            if cfg.get("axis", -1) not in (-1, rank):
                raise PortingError(
                    f"{_where(node)}: axis={cfg.get('axis')!r}; expected the channel (last) "
                    "axis, Knet's cat(...; dims=ndims-1)"
                )
        sources = tuple(cx.output_of[i] for i in node.inputs)
        if INPUT in sources:
            raise PortingError(
                f"{_where(node)}: reads the model's input directly; a Knet merge reads layers "
                "(put a layer, e.g. Activation('linear'), between)"
            )
        return _finish(node, cx, [kind(sources, name=cx.name(node.name))])

    return convert
