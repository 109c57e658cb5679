"""Keras `LayerNormalization` and `GroupNormalization` -> the `layernorm` and `groupnorm` kinds.

Both compute `(x - mean) * rsqrt(var + epsilon)` with the biased variance, then `gamma`, `beta`
(keras/src/ops/nn.py `_layer_normalization` and
keras/src/layers/normalization/group_normalization.py @v3.15.1): the `"var"` formula of the
kinds, Flux's LayerNorm from 0.16.11 and its GroupNorm (docs/tensorflow.md#keras-normalisation).
A LayerNormalization maps when its axes are the leading Julia dimensions of a sample (Flux's
LayerNorm normalises `1:length(size)`); otherwise it is refused with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from porting import layout
from porting.errors import PortingError
from porting.fromkeras.graph import Node
from porting.fromkeras.layers import Context, _config, _finish, _weights, _where
from porting.model import GroupNorm, LayerNorm
from porting.model.layer import Layer

__all__ = ["group_normalization", "layer_normalization"]


def _affine(node: Node, cfg: dict, shape: tuple[int, ...]) -> tuple[list, bool]:
    """[gamma, beta] (ones / zeros for an absent one) and whether the layer has either."""
    w = _weights(node)
    has_scale, has_center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    gamma = w.pop(0) if has_scale else None
    beta = w.pop(0) if has_center else None
    if gamma is None and beta is None:
        return [None, None], False
    like = gamma if gamma is not None else beta
    assert like is not None
    return [
        np.ones(shape, like.dtype) if gamma is None else np.asarray(gamma),
        np.zeros(shape, like.dtype) if beta is None else np.asarray(beta),
    ], True


def layer_normalization(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    if cfg.get("rms_scaling"):
        raise PortingError(
            f"{_where(node)}: rms_scaling=True (no mean subtraction, gamma only) is not Flux's "
            "LayerNorm; no Knet/Flux layer computes it here"
        )
    shape = tuple(int(s) for s in node.in_shapes[0])
    r = len(shape)
    axes = cfg.get("axis", -1)
    axes = [axes] if isinstance(axes, int) else list(axes)
    pos = sorted({a + r + 1 if a < 0 else a for a in axes})
    if not pos or any(not 1 <= a <= r for a in pos):
        raise PortingError(f"{_where(node)}: axis={cfg.get('axis')!r} for inputs of rank {r + 1}")
    julia = cx.julia_size(shape)
    if r == 1:
        dims = [0]
    else:
        order = list(layout.spatial_to_tf(tuple(range(r - 1)), cx.spatial)) + [r - 1]
        dims = sorted(order[a - 1] for a in pos)
    k = len(dims)
    if dims != list(range(k)):
        raise PortingError(
            f"{_where(node)}: axis={cfg.get('axis')!r} normalises Julia dimensions "
            f"{tuple(d + 1 for d in dims)} of a sample of Julia size {julia}; Flux's LayerNorm "
            "(and the layernorm kind) normalise the leading dimensions 1:k only (e.g. the "
            "features of (F,), or a whole (X1, X2, C) sample): reorder the axes before it, or "
            "keep it in Keras"
        )
    size = tuple(julia[:k])
    tf_shape = tuple(shape[a - 1] for a in pos)
    (gamma, beta), affine = _affine(node, cfg, tf_shape)
    if affine:
        flat = cx.flat_from.get(node.inputs[0]) if r == 1 else None
        if flat is not None and len(flat) > 1:  # Keras' Flatten order -> Knet's mat order
            order_ = np.arange(math.prod(flat), dtype=np.float64).reshape((*flat, 1), order="F")
            perm = layout.activations_to_tf(order_, cx.spatial).reshape(-1).astype(np.intp)
            g, b = np.empty_like(gamma), np.empty_like(beta)
            g[perm], b[perm] = gamma, beta
            gamma, beta = g, b
        elif r > 1:
            tf_dims = [order[a - 1] for a in pos]  # the Julia dimension of each gamma axis
            back = list(np.argsort(tf_dims))
            gamma, beta = np.transpose(gamma, back), np.transpose(beta, back)
    layer = LayerNorm(
        size,
        gamma,
        beta,
        eps=float(cfg.get("epsilon", 1e-3)),
        formula="var",
        name=cx.name(node.name),
    )
    return _finish(node, cx, [layer], flat=cx.flat_from.get(node.inputs[0]))


def group_normalization(node: Node, cx: Context) -> list[Layer]:
    cfg = _config(node)
    shape = tuple(int(s) for s in node.in_shapes[0])
    r = len(shape)
    axis = cfg.get("axis", -1)
    if axis not in (-1, r):
        raise PortingError(
            f"{_where(node)}: axis={axis!r}; expected the channel (last) axis, the one Flux's "
            "GroupNorm groups"
        )
    if r < 2:
        raise PortingError(
            f"{_where(node)}: inputs of shape {shape} per sample; Flux's GroupNorm needs "
            "spatial dimensions and channels (X1, ..., C)"
        )
    c = shape[-1]
    groups = int(cfg.get("groups", 32))
    groups = c if groups == -1 else groups
    (gamma, beta), _ = _affine(node, cfg, (c,))
    layer = GroupNorm(
        c, groups, gamma, beta, eps=float(cfg.get("epsilon", 1e-3)), name=cx.name(node.name)
    )
    return _finish(node, cx, [layer])
