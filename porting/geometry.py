"""Convolution and pooling geometry as small objects (NNlib's `DenseConvDims` / `PoolDims`).

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
#padding, #pool and #pool-nan).

>>> import numpy as np
>>> op = ConvOp.knet(np.ones((3, 3, 2, 4)), np.ones((8, 6, 2, 5)), padding=1)
>>> op.dims
ConvDims(conv4 x (8, 6, 2, 5), w (3, 3, 2, 4) -> y (8, 6, 4, 5); padding=1, stride=1, dilation=1, mode=0)
>>> op.dims.to_tf("reverse").y_shape
(5, 6, 8, 4)
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from porting._checks import as_float_array, as_scalar, check_choice, int_tuple, user_stacklevel
from porting.errors import PortingError

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "ConvDims",
    "PoolDims",
    "ConvOp",
    "PoolOp",
    "check_operands",
    "POOL_MODES",
]

Order = Literal["julia", "tf"]

_ELEMENT_LIMIT = 1 << 62  # any array with more elements cannot exist on any machine


@functools.lru_cache(maxsize=1)
def _physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits(shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """Refuse an output larger than this machine's memory before allocating it (a padding of
    10**6 must be a clear error, not a MemoryError deep in NumPy)."""
    need = math.prod(shape) * dtype.itemsize
    have = _physical_memory()
    if have is not None and need > have:
        raise PortingError(
            f"{what} would be an array of shape {shape} ({need / 2**30:.3g} GiB of {dtype}), "
            f"more than this machine's {have / 2**30:.3g} GiB of memory; expected a geometry "
            "whose output fits (check padding, stride and the input size)"
        )


def _fmt(t: tuple[int, ...]) -> str:
    return str(t[0]) if len(set(t)) == 1 else str(t)


def _spatial_to_tf(values: tuple[int, ...], spatial: str) -> tuple[int, ...]:
    """Per-dimension values in TensorFlow's order: porting.layout's one mapping."""
    from porting.layout import spatial_to_tf

    return spatial_to_tf(values, spatial)


# Knet's CPU path computes geometries whose outer outputs see only padding; Knet's GPU path
# (cuDNN) refuses padding >= the pooling window and may refuse it for convolutions. One
# warning per kind and process.
_warned: set[str] = set()


def _warn_padding_only(kind: str, detail: str) -> None:
    if kind in _warned:
        return
    _warned.add(kind)
    gpu = (
        "Knet's GPU path (cuDNN) refuses padding >= window"
        if kind == "pool"
        else "Knet's GPU path (cuDNN) may refuse it"
    )
    warnings.warn(
        f"{detail}: some outputs see nothing but padding. Knet's CPU path (NNlib) computes "
        f"them ({'-floatmax for max pooling, 0 for mean' if kind == 'pool' else 'zeros'}), "
        f"and so does porting; {gpu}, so a model meant for the GPU should use a smaller "
        "padding. (This warning is shown once.)",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of a Knet `conv4`: symmetric padding, stride, dilation, and the flip.

    `crosscorrelation` is True for Knet `mode=1` (what TensorFlow computes) and False for
    `mode=0`, Knet's default, which is true convolution (kernel rotated 180 degrees).

    >>> ConvGeometry.from_knet(2, padding=1)
    ConvGeometry(2-d, padding=1, stride=1, dilation=1, mode=0 convolution)
    """

    padding: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    crosscorrelation: bool = False

    @classmethod
    def from_knet(
        cls,
        nd: int,
        *,
        padding: object = 0,
        stride: object = 1,
        dilation: object = 1,
        mode: object = 0,
    ) -> ConvGeometry:
        check_choice(mode, "mode", (0, 1))
        return cls(
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=int_tuple(stride, nd, "stride", minimum=1),
            dilation=int_tuple(dilation, nd, "dilation", minimum=1),
            crosscorrelation=(mode == 1),
        )

    @property
    def nd(self) -> int:
        return len(self.padding)

    @property
    def mode(self) -> int:
        return 1 if self.crosscorrelation else 0

    def effective_kernel(self, kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial extent of a dilated kernel: `(Wi - 1) * dilation + 1`."""
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, self.dilation, strict=True))

    def output_size(self, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - ((Wi - 1) d + 1)) / s)`; raises if any Yi < 1.

        The only requirement is NNlib's, `Xi + 2 p >= (Wi - 1) d + 1`; padding at least the
        kernel extent is computed (with a one-time warning: cuDNN may refuse it).

        >>> ConvGeometry.from_knet(1, padding=2).output_size((3,), (3,))
        (5,)
        """
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.effective_kernel(kernel), self.padding, self.stride, strict=True)
        ):
            if x + 2 * p < k:
                raise PortingError(
                    f"spatial dimension {i + 1}: input size {x} with padding {p} is smaller than "
                    f"the {'dilated ' if self.dilation[i] > 1 else ''}kernel extent {k}; "
                    "expected Xi + 2*padding >= (Wi-1)*dilation + 1"
                )
            if p >= k:
                _warn_padding_only(
                    "conv", f"conv4 padding={p} >= kernel extent {k} in spatial dimension {i + 1}"
                )
            out.append(1 + (x + 2 * p - k) // s)
        return tuple(out)

    def transpose_output_size(
        self, spatial: tuple[int, ...], kernel: tuple[int, ...]
    ) -> tuple[int, ...]:
        """Knet `deconv4`: `Yi = (Xi - 1) s + ((Wi - 1) d + 1) - 2 p`; raises if any Yi < 1."""
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.effective_kernel(kernel), self.padding, self.stride, strict=True)
        ):
            y = (x - 1) * s + k - 2 * p
            if y < 1:
                raise PortingError(
                    f"spatial dimension {i + 1}: padding {p} is too large for deconv4 with input "
                    f"size {x}, kernel extent {k} and stride {s} (output size would be {y}); "
                    "expected 2*padding < (Xi-1)*stride + (Wi-1)*dilation + 1"
                )
            out.append(y)
        return tuple(out)

    def knet_keywords(self) -> dict[str, object]:
        """The Knet keywords that build this geometry (scalars where all dimensions agree)."""
        return {
            "padding": _compact(self.padding),
            "stride": _compact(self.stride),
            "dilation": _compact(self.dilation),
            "mode": self.mode,
        }

    def to_tf(self, spatial: str) -> ConvGeometry:
        """The same geometry with per-dimension values in TensorFlow's axis order, as
        cross-correlation (the TF kernel is rotated by `porting.layout.kernel_to_tf`)."""
        return ConvGeometry(
            padding=_spatial_to_tf(self.padding, spatial),
            stride=_spatial_to_tf(self.stride, spatial),
            dilation=_spatial_to_tf(self.dilation, spatial),
            crosscorrelation=True,
        )

    def __repr__(self) -> str:
        kind = "cross-correlation" if self.crosscorrelation else "convolution"
        return (
            f"ConvGeometry({self.nd}-d, padding={_fmt(self.padding)}, stride={_fmt(self.stride)}, "
            f"dilation={_fmt(self.dilation)}, mode={self.mode} {kind})"
        )


def _compact(t: tuple[int, ...]) -> int | tuple[int, ...]:
    return t[0] if len(set(t)) == 1 else t


POOL_MODES = {0: "max", 1: "mean (padding counted)", 2: "mean (CPU runs mode 1)", 3: "max"}


@dataclass(frozen=True)
class PoolGeometry:
    """Geometry of a Knet `pool`: window, symmetric padding, stride (defaults to window), mode.

    >>> PoolGeometry.from_knet(2, window=3, padding=1)
    PoolGeometry(2-d, window=3, padding=1, stride=3, mode=0 max)
    """

    window: tuple[int, ...]
    padding: tuple[int, ...]
    stride: tuple[int, ...]
    mode: int = 0

    @classmethod
    def from_knet(
        cls,
        nd: int,
        *,
        window: object = 2,
        padding: object = 0,
        stride: object = None,
        mode: object = 0,
    ) -> PoolGeometry:
        check_choice(mode, "mode", tuple(POOL_MODES))
        win = int_tuple(window, nd, "window", minimum=1)
        return cls(
            window=win,
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=win if stride is None else int_tuple(stride, nd, "stride", minimum=1),
            mode=int(mode),  # type: ignore[call-overload]
        )

    @property
    def nd(self) -> int:
        return len(self.window)

    @property
    def is_max(self) -> bool:
        return self.mode in (0, 3)

    def output_size(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - window) / s)`; raises if any Yi < 1.

        The only requirement is NNlib's, `Xi + 2 p >= window`; padding >= window is computed
        (windows of only padding give -floatmax for max pooling, 0 for mean), with a one-time
        warning that cuDNN refuses it.
        """
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.window, self.padding, self.stride, strict=True)
        ):
            if x + 2 * p < k:
                raise PortingError(
                    f"spatial dimension {i + 1}: input size {x} with padding {p} is smaller than "
                    f"the pooling window {k}; expected Xi + 2*padding >= window"
                )
            if p >= k:
                _warn_padding_only(
                    "pool", f"pool padding={p} >= window {k} in spatial dimension {i + 1}"
                )
            out.append(1 + (x + 2 * p - k) // s)
        return tuple(out)

    def knet_keywords(self) -> dict[str, object]:
        """The Knet keywords that build this geometry."""
        return {
            "window": _compact(self.window),
            "padding": _compact(self.padding),
            "stride": _compact(self.stride),
            "mode": self.mode,
        }

    def to_tf(self, spatial: str) -> PoolGeometry:
        """The same geometry with per-dimension values in TensorFlow's axis order."""
        return PoolGeometry(
            window=_spatial_to_tf(self.window, spatial),
            padding=_spatial_to_tf(self.padding, spatial),
            stride=_spatial_to_tf(self.stride, spatial),
            mode=self.mode,
        )

    def __repr__(self) -> str:
        return (
            f"PoolGeometry({self.nd}-d, window={_fmt(self.window)}, padding={_fmt(self.padding)}, "
            f"stride={_fmt(self.stride)}, mode={self.mode} {POOL_MODES[self.mode].split(' (')[0]})"
        )


# --------------------------------------------------------------------------- operands


def check_operands(
    w: np.ndarray,
    x: np.ndarray,
    *,
    op: str,
    transposed: bool = False,
    order: Order = "julia",
    same_dtype: bool = True,
) -> None:
    """The one rank / element type / channel check of a conv4 or deconv4's operands.

    Julia order: `w` `(W1.., Cin, Cout)` (deconv4: `(W1.., Cy, Cx)`), `x` `(X1.., C, N)`;
    TensorFlow order: `w` `(*K, Cin, Cout)` (transposed: `(*K, Cy, Cx)`), `x` `(N, *X, C)`.
    """
    where = "Julia-indexed" if order == "julia" else "TensorFlow layout, channels last"
    w_layout = (
        ("(W1, ..., Cy, Cx)" if transposed else "(W1, ..., Cin, Cout)")
        if order == "julia"
        else ("(*K, Cy, Cx)" if transposed else "(*K, Cin, Cout)")
    )
    if w.ndim != x.ndim:
        raise PortingError(
            f"{op}: w has {w.ndim} dimensions (shape {w.shape}) but x has {x.ndim} "
            f"(shape {x.shape}); expected the same rank: spatial dimensions plus two "
            f"(w as {w_layout}, {where})"
        )
    if same_dtype and w.dtype != x.dtype:
        raise PortingError(
            f"{op}: w is {w.dtype} but x is {x.dtype}; Knet needs one element type for both "
            "(convert one with .astype)"
        )
    cin = w.shape[-1] if transposed else w.shape[-2]
    cx = x.shape[-2] if order == "julia" else x.shape[-1]
    if cin != cx:
        if order == "julia":
            what = "input channels"
        else:
            what = "Cx channels" if transposed else "input channels (Cin)"
        raise PortingError(
            f"{op}: kernel has {cin} {what} but x has {cx} (w shape {w.shape} as {w_layout}, "
            f"x shape {x.shape}, {where})"
        )


@dataclass(frozen=True)
class ConvDims:
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
        xs = tuple(x_shape[:-2]) if order == "julia" else tuple(x_shape[1:-1])
        cx = x_shape[-2] if order == "julia" else x_shape[-1]
        n = x_shape[-1] if order == "julia" else x_shape[0]
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
        return cls(geometry, xs, ks, ys, int(cx), int(cy), int(n), transposed, order)

    @classmethod
    def of(
        cls,
        w: object,
        x: object,
        *,
        padding: object = 0,
        stride: object = 1,
        dilation: object = 1,
        mode: object = 0,
        transposed: bool = False,
    ) -> ConvDims:
        """NNlib's `DenseConvDims(x, w; ...)`: the dims of Julia-indexed `w` and `x` under
        Knet's keywords, validated (`ConvOp.knet` keeps the arrays too).

        >>> ConvDims.of(np.ones((2, 1, 3)), np.ones((4, 1, 2)), padding=1).y_shape
        (5, 3, 2)
        """
        return ConvOp.knet(
            w,
            x,
            padding=padding,
            stride=stride,
            dilation=dilation,
            mode=mode,
            transposed=transposed,
        ).dims

    # ---- accessors (the ConvGeometry interface, for the backends)
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
    def dilation(self) -> tuple[int, ...]:
        return self.geometry.dilation

    @property
    def crosscorrelation(self) -> bool:
        return self.geometry.crosscorrelation

    @property
    def mode(self) -> int:
        return self.geometry.mode

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
    def y_shape(self) -> tuple[int, ...]:
        if self.order == "julia":
            return (*self.y_spatial, self.channels_out, self.batch)
        return (self.batch, *self.y_spatial, self.channels_out)

    # ---- conversions
    def to_tf(self, spatial: str) -> ConvDims:
        """The TensorFlow side of these dims: TF axis order, cross-correlation (the kernel is
        rotated for mode 0 by `porting.layout.kernel_to_tf`)."""
        if self.order != "julia":
            raise ValueError("to_tf: these dims are already in TensorFlow order")
        return replace(
            self,
            geometry=self.geometry.to_tf(spatial),
            x_spatial=_spatial_to_tf(self.x_spatial, spatial),
            kernel=_spatial_to_tf(self.kernel, spatial),
            y_spatial=_spatial_to_tf(self.y_spatial, spatial),
            order="tf",
        )

    def tf_paddings(self) -> list[list[int]]:
        """`tf.pad`'s paddings for a TensorFlow-order input `(N, *X, C)`: Knet's symmetric
        padding on each spatial axis, none on the batch and channel axes.

        >>> ConvOp.knet(np.ones((3, 1, 2)), np.ones((5, 1, 2)), padding=2).dims.to_tf(
        ...     "reverse").tf_paddings()
        [[0, 0], [2, 2], [0, 0]]
        """
        if self.order != "tf":
            raise ValueError("tf_paddings: call to_tf(spatial) first")
        return [[0, 0], *([p, p] for p in self.padding), [0, 0]]

    def knet_keywords(self) -> dict[str, object]:
        """Julia keywords (`padding`, `stride`, `dilation`, `mode`) that give these dims."""
        return self.geometry.knet_keywords()

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
class PoolDims:
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
        xs = tuple(x_shape[:-2]) if order == "julia" else tuple(x_shape[1:-1])
        c = x_shape[-2] if order == "julia" else x_shape[-1]
        n = x_shape[-1] if order == "julia" else x_shape[0]
        return cls(geometry, xs, geometry.output_size(xs), int(c), int(n), order)

    @classmethod
    def of(
        cls,
        x: object,
        *,
        window: object = 2,
        padding: object = 0,
        stride: object = None,
        mode: object = 0,
    ) -> PoolDims:
        """NNlib's `PoolDims(x, window; ...)` for a Julia-indexed `x` under Knet's keywords.

        >>> PoolDims.of(np.ones((5, 4, 3, 2)), window=2).y_shape
        (2, 2, 3, 2)
        """
        return PoolOp.knet(x, window=window, padding=padding, stride=stride, mode=mode).dims

    @property
    def nd(self) -> int:
        return self.geometry.nd

    @property
    def window(self) -> tuple[int, ...]:
        return self.geometry.window

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
    def is_max(self) -> bool:
        return self.geometry.is_max

    @property
    def y_shape(self) -> tuple[int, ...]:
        if self.order == "julia":
            return (*self.y_spatial, self.channels, self.batch)
        return (self.batch, *self.y_spatial, self.channels)

    def to_tf(self, spatial: str) -> PoolDims:
        if self.order != "julia":
            raise ValueError("to_tf: these dims are already in TensorFlow order")
        return replace(
            self,
            geometry=self.geometry.to_tf(spatial),
            x_spatial=_spatial_to_tf(self.x_spatial, spatial),
            y_spatial=_spatial_to_tf(self.y_spatial, spatial),
            order="tf",
        )

    def tf_paddings(self) -> list[list[int]]:
        """`tf.pad`'s paddings for a TensorFlow-order input `(N, *X, C)`: Knet's symmetric
        padding on each spatial axis, none on the batch and channel axes.

        >>> PoolOp.knet(np.ones((5, 1, 2)), padding=1).dims.to_tf("keep").tf_paddings()
        [[0, 0], [1, 1], [0, 0]]
        """
        if self.order != "tf":
            raise ValueError("tf_paddings: call to_tf(spatial) first")
        return [[0, 0], *([p, p] for p in self.padding), [0, 0]]

    def with_mode(self, mode: int) -> PoolDims:
        return replace(self, geometry=replace(self.geometry, mode=mode))

    def knet_keywords(self) -> dict[str, object]:
        return self.geometry.knet_keywords()

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"PoolDims(pool y {self.y_shape}; window={_fmt(g.window)}, padding={_fmt(g.padding)}, "
            f"stride={_fmt(g.stride)}, mode={g.mode})"
        )


def as_conv_dims(
    geom: ConvGeometry | ConvDims, w: np.ndarray, x: np.ndarray, *, transposed: bool = False
) -> ConvDims:
    """`geom` as Julia-order `ConvDims` for Julia-indexed `w`, `x` (a `ConvDims` passes)."""
    if isinstance(geom, ConvDims):
        return geom
    return ConvDims.bind(geom, w.shape, x.shape, transposed=transposed)


def as_pool_dims(geom: PoolGeometry | PoolDims, x: np.ndarray) -> PoolDims:
    """`geom` as Julia-order `PoolDims` for Julia-indexed `x` (a `PoolDims` passes)."""
    if isinstance(geom, PoolDims):
        return geom
    return PoolDims.bind(geom, x.shape)


# --------------------------------------------------------------------------- bound operations


@dataclass(frozen=True)
class ConvOp:
    """A conv4 (or deconv4) call validated once: its arrays, their `ConvDims` and `alpha`.

    `w` and `x` are float32/float64 ndarrays of one dtype, in the axis order of `dims`.
    """

    w: np.ndarray
    x: np.ndarray
    dims: ConvDims
    alpha: float = 1.0

    @classmethod
    def knet(
        cls,
        w: object,
        x: object,
        *,
        padding: object = 0,
        stride: object = 1,
        dilation: object = 1,
        mode: object = 0,
        alpha: object = 1,
        transposed: bool = False,
        order: Order = "julia",
        op: str | None = None,
    ) -> ConvOp:
        """Validate Knet's arguments (Julia-indexed arrays, Knet keywords) once.

        `order="tf"` takes TensorFlow-layout arrays and per-dimension values in TF order.
        """
        name = op or ("deconv4" if transposed else "conv4")
        xa = as_float_array(x, "x", ndim=(3, 4, 5))
        wa = as_float_array(w, "w", ndim=(3, 4, 5))
        check_operands(wa, xa, op=name, transposed=transposed, order=order)
        geom = ConvGeometry.from_knet(
            xa.ndim - 2, padding=padding, stride=stride, dilation=dilation, mode=mode
        )
        dims = ConvDims.bind(geom, wa.shape, xa.shape, transposed=transposed, order=order)
        _check_fits(dims.y_shape, xa.dtype, f"the {name} output")
        return cls(wa, xa, dims, as_scalar(alpha, "alpha"))

    def astype(self, dtype: np.dtype) -> ConvOp:
        """The same call on arrays converted to `dtype` (no copy when they already are)."""
        return replace(self, w=self.w.astype(dtype, copy=False), x=self.x.astype(dtype, copy=False))


@dataclass(frozen=True)
class PoolOp:
    """A pool call validated once: its input, its `PoolDims` and `alpha`."""

    x: np.ndarray
    dims: PoolDims
    alpha: float = 1.0

    @classmethod
    def knet(
        cls,
        x: object,
        *,
        window: object = 2,
        padding: object = 0,
        stride: object = None,
        mode: object = 0,
        alpha: object = 1,
        order: Order = "julia",
    ) -> PoolOp:
        xa = as_float_array(x, "x", ndim=(3, 4, 5))
        geom = PoolGeometry.from_knet(
            xa.ndim - 2, window=window, padding=padding, stride=stride, mode=mode
        )
        dims = PoolDims.bind(geom, xa.shape, order=order)
        _check_fits(dims.y_shape, xa.dtype, "the pool output")
        return cls(xa, dims, as_scalar(alpha, "alpha"))
