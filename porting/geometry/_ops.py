"""Operations validated once: `ConvOp` / `PoolOp` (the arrays, their dims and `alpha`) and
the one operand check, `check_operands`. Part of porting.geometry."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from porting._checks import as_float_array, as_scalar
from porting.errors import PortingError
from porting.geometry._dims import ConvDims, Order, PoolDims
from porting.geometry._keywords import ConvGeometry, PoolGeometry


@functools.lru_cache(maxsize=1)
def _physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits(shape: tuple[int, ...], dtype: np.dtype[np.floating[Any]], what: str) -> None:
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


def check_operands(
    w: NDArray[np.floating[Any]],
    x: NDArray[np.floating[Any]],
    *,
    op: str,
    transposed: bool = False,
    order: Order = "julia",
    same_dtype: bool = True,
) -> None:
    """The one rank / element type / channel check of a conv4 or deconv4's operands.

    Julia order: `w` `(W1.., Cin, Cout)` (deconv4: `(W1.., Cy, Cx)`), `x` `(X1.., C, N)`
    (docs/knet.md#conv4, #deconv4);
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
class ConvOp:
    """A conv4 (or deconv4) call validated once: its arrays, their `ConvDims` and `alpha`.

    `w` and `x` are float32/float64 ndarrays of one dtype, in the axis order of `dims`.
    """

    w: NDArray[np.floating[Any]]
    x: NDArray[np.floating[Any]]
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
        return cls._bound(wa, xa, geom, as_scalar(alpha, "alpha"), transposed, order, name)

    @classmethod
    def bind(
        cls,
        w: object,
        x: object,
        geometry: ConvGeometry,
        alpha: float = 1.0,
        *,
        transposed: bool = False,
        order: Order = "julia",
    ) -> ConvOp:
        """The call of an already parsed `geometry` (a layer's, built once) on `w` and `x`:
        the arrays are checked as `knet` checks them, the keywords are not parsed again."""
        name = "deconv4" if transposed else "conv4"
        xa = as_float_array(x, "x", ndim=(3, 4, 5))
        wa = as_float_array(w, "w", ndim=(3, 4, 5))
        check_operands(wa, xa, op=name, transposed=transposed, order=order)
        if geometry.nd != xa.ndim - 2:
            raise PortingError(
                f"{name}: a {geometry.nd}-d geometry for x of shape {xa.shape}; expected "
                f"{xa.ndim - 2} spatial dimensions"
            )
        return cls._bound(wa, xa, geometry, as_scalar(alpha, "alpha"), transposed, order, name)

    @classmethod
    def _bound(
        cls,
        w: np.ndarray,
        x: np.ndarray,
        geometry: ConvGeometry,
        alpha: float,
        transposed: bool,
        order: Order,
        name: str,
    ) -> ConvOp:
        dims = ConvDims.bind(geometry, w.shape, x.shape, transposed=transposed, order=order)
        _check_fits(dims.y_shape, x.dtype, f"the {name} output")
        return cls(w, x, dims, alpha)

    def astype(self, dtype: np.dtype[np.floating[Any]]) -> ConvOp:
        """The same call on arrays converted to `dtype` (no copy when they already are)."""
        return replace(self, w=self.w.astype(dtype, copy=False), x=self.x.astype(dtype, copy=False))


@dataclass(frozen=True)
class PoolOp:
    """A pool call validated once: its input, its `PoolDims` and `alpha`."""

    x: NDArray[np.floating[Any]]
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
        return cls.bind(xa, geom, as_scalar(alpha, "alpha"), order=order)

    @classmethod
    def bind(
        cls, x: object, geometry: PoolGeometry, alpha: float = 1.0, *, order: Order = "julia"
    ) -> PoolOp:
        """The pool of an already parsed `geometry` on `x` (checked as `knet` checks it)."""
        xa = as_float_array(x, "x", ndim=(3, 4, 5))
        if geometry.nd != xa.ndim - 2:
            raise PortingError(
                f"pool: a {geometry.nd}-d geometry for x of shape {xa.shape}; expected "
                f"{xa.ndim - 2} spatial dimensions"
            )
        dims = PoolDims.bind(geometry, xa.shape, order=order)
        _check_fits(dims.y_shape, xa.dtype, "the pool output")
        return cls(xa, dims, as_scalar(alpha, "alpha"))
