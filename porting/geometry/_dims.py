"""Geometries bound to their operands' sizes: `ConvDims` and `PoolDims` (NNlib's
`DenseConvDims` / `PoolDims`; docs/knet.md#conv4, #deconv4, #pool), with the conversions they
need (docs/layout.md#width-axis). Part of porting.geometry."""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from porting.errors import PortingError
from porting.geometry._keywords import (
    ConvGeometry,
    PoolGeometry,
    _fmt,
    _spatial_to_tf,
)

if TYPE_CHECKING:
    from typing_extensions import Self

Order = Literal["julia", "tf"]
G = TypeVar("G", ConvGeometry, PoolGeometry)


_ELEMENT_LIMIT = 1 << 62  # any array with more elements cannot exist on any machine


def _split_x(x_shape: tuple[int, ...], order: Order) -> tuple[tuple[int, ...], int, int]:
    """An input shape's spatial sizes, channels and batch, in the axis order `order`."""
    if order == "julia":
        return tuple(x_shape[:-2]), int(x_shape[-2]), int(x_shape[-1])
    return tuple(x_shape[1:-1]), int(x_shape[-1]), int(x_shape[0])


class _Bound(Generic[G]):
    """What `ConvDims` and `PoolDims` share: a geometry `G` bound to an input and output
    size in the axis order `order`, with the geometry's accessors (for the backends)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # the subclasses are dataclasses
    geometry: G
    x_spatial: tuple[int, ...]
    y_spatial: tuple[int, ...]
    batch: int
    order: Order

    @property
    def _y_channels(self) -> int:
        raise NotImplementedError

    @property
    def nd(self) -> int:
        return self.geometry.nd

    @property
    def padding(self) -> tuple[int, ...]:
        return self.geometry.padding

    @property
    def stride(self) -> tuple[int, ...]:
        return self.geometry.stride

    @property
    def mode(self) -> int:
        return self.geometry.mode

    @property
    def y_shape(self) -> tuple[int, ...]:
        if self.order == "julia":
            return (*self.y_spatial, self._y_channels, self.batch)
        return (self.batch, *self.y_spatial, self._y_channels)

    def _tf_extra(self, spatial: str) -> dict[str, tuple[int, ...]]:
        """Further spatial fields that `to_tf` reorders (a kernel)."""
        return {}

    def to_tf(self, spatial: str) -> Self:
        """The TensorFlow side of these dims: TF axis order; a conv's geometry becomes
        cross-correlation (the kernel is rotated for mode 0 by `porting.layout.kernel_to_tf`)."""
        if self.order != "julia":
            raise ValueError("to_tf: these dims are already in TensorFlow order")
        return replace(
            self,
            geometry=self.geometry.to_tf(spatial),
            x_spatial=_spatial_to_tf(self.x_spatial, spatial),
            y_spatial=_spatial_to_tf(self.y_spatial, spatial),
            order="tf",
            **self._tf_extra(spatial),
        )

    def tf_paddings(self) -> list[list[int]]:
        """`tf.pad`'s paddings for a TensorFlow-order input `(N, *X, C)`: Knet's symmetric
        padding on each spatial axis, none on the batch and channel axes (docs/knet.md#padding,
        docs/tensorflow.md#explicit-padding).

        >>> g = ConvGeometry.from_knet(1, padding=2)
        >>> ConvDims.bind(g, (3, 1, 2), (5, 1, 2)).to_tf("reverse").tf_paddings()
        [[0, 0], [2, 2], [0, 0]]
        >>> g = PoolGeometry.from_knet(1, padding=1)
        >>> PoolDims.bind(g, (5, 1, 2)).to_tf("keep").tf_paddings()
        [[0, 0], [1, 1], [0, 0]]
        """
        if self.order != "tf":
            raise ValueError("tf_paddings: call to_tf(spatial) first")
        return [[0, 0], *([p, p] for p in self.padding), [0, 0]]

    def knet_keywords(self) -> dict[str, int | tuple[int, ...]]:
        """Julia keywords that give these dims."""
        return self.geometry.knet_keywords()


@dataclass(frozen=True)
class ConvDims(_Bound[ConvGeometry]):
    """A conv4/deconv4 geometry bound to its operands' sizes (NNlib's `DenseConvDims`).

    `x_spatial`, `kernel` and `y_spatial` are spatial sizes in the axis order `order`
    ("julia": `(X1, X2, ...)`; "tf": TensorFlow's). The attributes `padding`, `stride`,
    `dilation`, `mode` and `crosscorrelation` make it usable wherever a `ConvGeometry` is.
    """

    geometry: ConvGeometry
    x_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    y_spatial: tuple[int, ...]
    channels_in: int  # x's channels
    channels_out: int  # y's channels
    batch: int
    transposed: bool = False
    order: Order = "julia"

    @classmethod
    def bind(
        cls,
        geometry: ConvGeometry,
        w_shape: tuple[int, ...],
        x_shape: tuple[int, ...],
        *,
        transposed: bool = False,
        order: Order = "julia",
    ) -> ConvDims:
        """Bind `geometry` to operand shapes already checked by `check_operands`; computes
        (and validates) the output size once."""
        xs, cx, n = _split_x(x_shape, order)
        ks = tuple(w_shape[:-2])
        if transposed:
            ys = geometry.transpose_output_size(xs, ks)
            cy = w_shape[-2]
        else:
            ys = geometry.output_size(xs, ks)
            cy = w_shape[-1]
        if math.prod(ys) * cy * n > _ELEMENT_LIMIT:
            raise PortingError(
                f"the output would have {math.prod(ys) * cy * n} elements (spatial {ys}, "
                f"{cy} channels, batch {n}); expected a size an array can have"
            )
        return cls(geometry, xs, ks, ys, cx, int(cy), n, transposed, order)

    # ---- accessors (the ConvGeometry interface, for the backends)
    @property
    def dilation(self) -> tuple[int, ...]:
        return self.geometry.dilation

    @property
    def crosscorrelation(self) -> bool:
        return self.geometry.crosscorrelation

    def effective_kernel(self, kernel: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return self.geometry.effective_kernel(self.kernel if kernel is None else kernel)

    # ---- sizes
    @property
    def terms(self) -> int:
        """K, the number of products summed per output (at most): kernel volume x channels."""
        return math.prod(self.kernel) * self.channels_in

    @property
    def w_shape(self) -> tuple[int, ...]:
        cin, cout = self.channels_in, self.channels_out
        return (*self.kernel, *((cout, cin) if self.transposed else (cin, cout)))

    @property
    def x_shape(self) -> tuple[int, ...]:
        if self.order == "julia":
            return (*self.x_spatial, self.channels_in, self.batch)
        return (self.batch, *self.x_spatial, self.channels_in)

    @property
    def _y_channels(self) -> int:
        return self.channels_out

    # ---- conversions
    def _tf_extra(self, spatial: str) -> dict[str, tuple[int, ...]]:
        return {"kernel": _spatial_to_tf(self.kernel, spatial)}

    def __repr__(self) -> str:
        g = self.geometry
        op = "deconv4" if self.transposed else "conv4"
        side = "" if self.order == "julia" else " (TensorFlow order)"
        return (
            f"ConvDims({op}{side} x {self.x_shape}, w {self.w_shape} -> y {self.y_shape}; "
            f"padding={_fmt(g.padding)}, stride={_fmt(g.stride)}, dilation={_fmt(g.dilation)}, "
            f"mode={g.mode})"
        )


@dataclass(frozen=True)
class PoolDims(_Bound[PoolGeometry]):
    """A pool geometry bound to its input's size (NNlib's `PoolDims`); see `ConvDims`."""

    geometry: PoolGeometry
    x_spatial: tuple[int, ...]
    y_spatial: tuple[int, ...]
    channels: int
    batch: int
    order: Order = "julia"

    @classmethod
    def bind(
        cls, geometry: PoolGeometry, x_shape: tuple[int, ...], *, order: Order = "julia"
    ) -> PoolDims:
        xs, c, n = _split_x(x_shape, order)
        return cls(geometry, xs, geometry.output_size(xs), c, n, order)

    @property
    def window(self) -> tuple[int, ...]:
        return self.geometry.window

    @property
    def is_max(self) -> bool:
        return self.geometry.is_max

    @property
    def _y_channels(self) -> int:
        return self.channels

    def with_mode(self, mode: int) -> PoolDims:
        return replace(self, geometry=replace(self.geometry, mode=mode))

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"PoolDims(pool y {self.y_shape}; window={_fmt(g.window)}, padding={_fmt(g.padding)}, "
            f"stride={_fmt(g.stride)}, mode={g.mode})"
        )


def as_conv_dims(
    geom: ConvGeometry | ConvDims,
    w: NDArray[np.floating[Any]],
    x: NDArray[np.floating[Any]],
    *,
    transposed: bool = False,
) -> ConvDims:
    """`geom` as Julia-order `ConvDims` for Julia-indexed `w`, `x` (a `ConvDims` passes)."""
    if isinstance(geom, ConvDims):
        return geom
    return ConvDims.bind(geom, w.shape, x.shape, transposed=transposed)


def as_pool_dims(geom: PoolGeometry | PoolDims, x: NDArray[np.floating[Any]]) -> PoolDims:
    """`geom` as Julia-order `PoolDims` for Julia-indexed `x` (a `PoolDims` passes)."""
    if isinstance(geom, PoolDims):
        return geom
    return PoolDims.bind(geom, x.shape)
