"""Keras's upsampling layers -> the `upsample` kind (docs/tensorflow.md#keras-upsampling).

`UpSampling1D/2D/3D` with `interpolation="nearest"` (the only one 1D and 3D have) repeat every
cell `size` times: NNlib's `upsample_nearest`, exact. `UpSampling2D(interpolation="bilinear")`
is TensorFlow's bilinear resize with half-pixel centres and no antialiasing: NNlib's
`upsample_linear(x; size, align_corners=false)`, whose source index `max(0, (i + 1/2) in/out -
1/2)` and neighbour clamping are TensorFlow's. The other interpolations (bicubic, lanczos,
area, gaussian, mitchellcubic) have no NNlib counterpart and are refused, saying so.
"""

from __future__ import annotations

from porting.errors import PortingError
from porting.fromkeras.graph import Node
from porting.fromkeras.layers import Context, _config, _finish, _tuple, _where
from porting.model import Upsample
from porting.model.layer import Layer

__all__ = ["upsampling"]


def upsampling(node: Node, cx: Context) -> list[Layer]:
    """`UpSampling{n}D(size, interpolation)` -> `Upsample` (scale in Julia order)."""
    cfg = _config(node)
    nd = len(node.in_shapes[0]) - 1
    interpolation = str(cfg.get("interpolation", "nearest")).lower()
    if interpolation not in ("nearest", "bilinear"):
        raise PortingError(
            f"{_where(node)}: interpolation={interpolation!r} has no Knet/NNlib counterpart "
            "(NNlib upsamples by nearest neighbour or (bi/tri)linear interpolation only); use "
            "'nearest' or 'bilinear'"
        )
    scale = cx.julia(_tuple(cfg.get("size", 2), nd))
    mode = "nearest" if interpolation == "nearest" else "bilinear"
    layer = Upsample(
        mode,
        scale=scale,
        align_corners=False if mode == "bilinear" else True,
        name=cx.name(node.name),
    )
    return _finish(node, cx, [layer])
