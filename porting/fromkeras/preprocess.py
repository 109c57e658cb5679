"""Keras' preprocessing layers -> the `affine` kind (Knet's `x .* s .+ b`, per channel), and the
shape layers of a squeeze-and-excite block (`Reshape` of pooled channels).

- `Rescaling(scale, offset)` computes `x * scale + offset` in the layer's dtype (scale and
  offset cast to it), a scalar or one value per channel: exactly the affine kind.
- `Normalization(axis=-1, mean, variance, invert)` computes `(x - mean) / max(sqrt(var),
  epsilon)` with Keras' `epsilon()` (1e-7 unless `keras.config.set_epsilon` changed it), or
  `mean + x * max(sqrt(var), epsilon)` when `invert`; the first becomes `s = 1 / d`,
  `b = -mean / d` with `d = max(sqrt(var), epsilon)` formed in the layer's dtype as Keras forms
  it (a division replaced by a product: the outputs agree within a few eps of `|x| s + |b|`),
  the inverted one is exact.

docs/tensorflow.md#keras-to-knet gives the sources (keras 3.15 `rescaling.py`,
`normalization.py`).
"""

from __future__ import annotations

import numpy as np

from porting.errors import PortingError
from porting.fromkeras.graph import Node
from porting.fromkeras.layers import Context, _config, _finish, _passes_flat, _where
from porting.model import Affine, Reshape
from porting.model.layer import Layer

__all__ = ["normalization", "rescaling", "reshape"]


def _dtype(node: Node) -> np.dtype:
    return np.dtype(getattr(node.layer, "compute_dtype", "float32"))


def _per_channel(node: Node, what: str, value: object, channels: int) -> np.ndarray:
    """`value` (a number, or per channel along the last axis) as a float64 vector of length
    1 or `channels`, or `PortingError` naming it."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PortingError(
            f"{_where(node)}: {what}={value!r}: expected a number or one per channel"[:300]
        ) from None
    lead = a.shape[:-1] if a.ndim else ()
    if any(n != 1 for n in lead) or a.reshape(-1).size not in (1, channels):
        raise PortingError(
            f"{_where(node)}: {what} has shape {a.shape}; expected a number or one value per "
            f"channel of the last axis ({channels}), the per-channel affine Knet's x .* s .+ b "
            "broadcasts"
        )
    a = a.reshape(-1)
    if not np.isfinite(a).all():
        raise PortingError(f"{_where(node)}: {what} holds non-finite values; expected finite")
    return a


def _affine(node: Node, cx: Context, scale: np.ndarray, bias: np.ndarray) -> list[Layer]:
    n = max(scale.size, bias.size)
    scale, bias = np.broadcast_to(scale, (n,)).copy(), np.broadcast_to(bias, (n,)).copy()
    layer = Affine(scale, bias, name=cx.name(node.name))
    if n == 1:  # one value for all: the features keep their places
        return _passes_flat(node, cx, [layer])
    if cx.flat_from.get(node.inputs[0]) is not None:
        raise PortingError(
            f"{_where(node)}: per-feature values after a Flatten; Keras' Flatten orders the "
            "features (H, W, C) and Knet's mat (X1, X2, C), which porting does not permute "
            "here: rescale before the Flatten"
        )
    return _finish(node, cx, [layer])


def _channels_last(node: Node, scale: np.ndarray) -> None:
    import keras

    if scale.size > 1 and keras.config.image_data_format() != "channels_last":
        raise PortingError(
            f"{_where(node)}: per-channel values with image_data_format "
            f"{keras.config.image_data_format()!r}; expected 'channels_last' (the layout "
            "porting maps Knet's (X1, X2, C, N) to)"
        )


def rescaling(node: Node, cx: Context) -> list[Layer]:
    """`Rescaling`: `x * scale + offset`, scale and offset cast to the layer's dtype first."""
    _config(node)
    dt = _dtype(node)
    c = node.in_shapes[0][-1]
    # what its call multiplies by: Keras' cast of a Python number goes through a float32
    # tensor, so Rescaling(1 / 255) scales a float64 model by float32(1 / 255)
    cast = node.layer.backend.cast
    vs = []
    for what in ("scale", "offset"):
        value = getattr(node.layer, what)
        _per_channel(node, what, value, c)  # checked before Keras sees it
        vs.append(_per_channel(node, what, np.asarray(cast(value, dt.name)), c).astype(dt))
    scale, offset = vs
    _channels_last(node, scale)
    return _affine(node, cx, scale, offset)


def normalization(node: Node, cx: Context) -> list[Layer]:
    """`Normalization`: the mean and variance its `call` uses (`layer.mean`, `layer.variance`,
    which Keras refreshes from the weights when it adapts or loads, not on `set_weights`)."""
    import keras

    layer = node.layer
    cfg = _config(node)
    rank = len(node.in_shapes[0])
    axis = cfg.get("axis", (-1,))
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    if axis not in ((-1,), (rank,), ()):
        raise PortingError(
            f"{_where(node)}: axis={cfg.get('axis')!r}; expected -1 (one mean and variance per "
            "channel, the last axis) or None (one for all): Knet's per-channel x .* s .+ b"
        )
    if getattr(layer, "mean", None) is None or getattr(layer, "variance", None) is None:
        raise PortingError(f"{_where(node)}: has no mean and variance; build or adapt it first")
    dt = _dtype(node)
    c = node.in_shapes[0][-1]
    mean = _per_channel(node, "mean", np.asarray(layer.mean), c).astype(dt)
    var = _per_channel(node, "variance", np.asarray(layer.variance), c).astype(dt)
    stored = [np.asarray(w).reshape(-1) for w in layer.get_weights()[:2]]
    if len(stored) == 2 and not (
        np.array_equal(stored[0].astype(dt), np.broadcast_to(mean, stored[0].shape))
        and np.array_equal(stored[1].astype(dt), np.broadcast_to(var, stored[1].shape))
    ):
        raise PortingError(
            f"{_where(node)}: its mean/variance weights differ from the values its call uses "
            "(Keras' set_weights does not refresh them, loading or adapting does): call "
            "layer.finalize_state() after set_weights, so that the model computes what a saved "
            "and reloaded copy computes"
        )
    if (var < 0).any():
        raise PortingError(f"{_where(node)}: variance holds negative values; expected >= 0")
    d = np.maximum(np.sqrt(var), dt.type(keras.config.epsilon()))  # in dt, as Keras forms it
    _channels_last(node, d)
    if cfg.get("invert"):  # mean + x * d: the same two roundings as x .* d .+ mean
        return _affine(node, cx, d, mean)
    d64 = d.astype(np.float64)
    s = (1.0 / d64).astype(dt)
    b = (-mean.astype(np.float64) / d64).astype(dt)
    return _affine(node, cx, s, b)


def reshape(node: Node, cx: Context) -> list[Layer]:
    """`Reshape` of one sample's values where Keras' row-major order and Julia's column-major
    one agree: features `(C,)` -> `(1, ..., 1, C)` (squeeze-and-excite), or a size whose
    dimensions other than the channels are all 1 either way."""
    _config(node)
    src, dst = node.in_shapes[0], node.out_shape

    def one_run(shape: tuple[int, ...]) -> bool:
        return all(n == 1 for n in shape[:-1])

    if src == dst:
        return _passes_flat(node, cx, [Reshape(cx.julia_size(dst), name=cx.name(node.name))])
    if not (one_run(src) and one_run(dst)) or cx.flat_from.get(node.inputs[0]) is not None:
        raise PortingError(
            f"{_where(node)}: reshapes {src} to {dst} per sample; only a reshape whose dimensions "
            "other than the last are 1 (features (C,) to (1, 1, C), as squeeze-and-excite) keeps "
            "Keras' row-major order in Julia's column-major one"
        )
    return _finish(node, cx, [Reshape(cx.julia_size(dst), name=cx.name(node.name))])
