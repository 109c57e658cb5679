"""Convolution and pooling geometry as small objects (NNlib's `DenseConvDims` / `PoolDims`;
docs/knet.md#conv4, #padding).

Three levels, each built once and passed on:

- `ConvGeometry` / `PoolGeometry`: the keywords (padding, stride, dilation, flip; window, mode),
  parsed and validated from Knet's scalar-or-tuple form by `from_knet`;
- `ConvDims` / `PoolDims`: a geometry bound to its operands' sizes (input, kernel and output
  spatial sizes, channels, batch), with the conversions it needs: `to_tf(spatial)` for
  TensorFlow's axis order, `knet_keywords()` back to Julia's keywords;
- `ConvOp` / `PoolOp`: the validated arrays with their dims and `alpha`, what `porting.knet`,
  `porting.tf`, `porting.magnitude` and `porting.verify` hand to each other.

All spatial tuples of a `*Geometry`/`*Dims` in Julia order are `(X1, X2, ...)`. Geometries that
Knet's CPU path (NNlib) computes are accepted, including padding >= the (dilated) kernel extent
or the pooling window, whose outer outputs see only padding (docs/knet.md#conv-size,
#padding-beyond-kernel, #pool and #pool-nan).

>>> import numpy as np
>>> op = ConvOp.knet(np.ones((3, 3, 2, 4)), np.ones((8, 6, 2, 5)), padding=1)
>>> op.dims
ConvDims(conv4 x (8, 6, 2, 5), w (3, 3, 2, 4) -> y (8, 6, 4, 5); padding=1, stride=1, dilation=1, mode=0)
>>> op.dims.to_tf("reverse").y_shape
(5, 6, 8, 4)
"""

from __future__ import annotations

from porting.geometry._dims import ConvDims, Order, PoolDims, as_conv_dims, as_pool_dims
from porting.geometry._keywords import (
    CONV_DEFAULTS,
    POOL_DEFAULTS,
    POOL_MODES,
    ConvGeometry,
    PoolGeometry,
)
from porting.geometry._ops import ConvOp, PoolOp, check_operands

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "ConvDims",
    "PoolDims",
    "ConvOp",
    "PoolOp",
    "check_operands",
    "as_conv_dims",
    "as_pool_dims",
    "Order",
    "POOL_MODES",
    "CONV_DEFAULTS",
    "POOL_DEFAULTS",
]
