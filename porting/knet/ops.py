"""Knet's array operations (`conv4`, `deconv4`, `pool`, `mat`) on the backend `backend=` picks
(porting.knet describes the array convention and the flip).

>>> import numpy as np
>>> mat(np.zeros((5, 4, 3, 2))).shape
(60, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from porting._checks import as_float_array, short_repr
from porting.errors import PortingError
from porting.geometry import ConvOp, PoolOp
from porting.knet._backends import resolve, tag

__all__ = ["conv4", "deconv4", "pool", "mat", "run_conv4", "run_deconv4", "run_pool"]


def conv4(
    w: Any,
    x: Any,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: Any = 0,
    alpha: Any = 1,
    backend: str = "auto",
) -> np.ndarray:
    """Knet `conv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)`.

    `w` is `(W1, ..., Cin, Cout)`, `x` is `(X1, ..., Cin, N)`, the result `(Y1, ..., Cout, N)`
    with `Yi = 1 + floor((Xi + 2 padding - ((Wi - 1) dilation + 1)) / stride)`. `mode=0` is
    true convolution (kernel rotated 180 degrees), `mode=1` cross-correlation. Padding at
    least the kernel extent is computed as Knet's CPU does (outer outputs 0, with a warning).
    (docs/knet.md#conv4, #conv-size, #flip and #padding-beyond-kernel)
    """
    op = ConvOp.knet(
        w, x, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha
    )
    return run_conv4(op, backend)


def run_conv4(op: ConvOp, backend: str = "auto") -> np.ndarray:
    """`conv4` of an already validated `porting.geometry.ConvOp` (Julia order)."""
    b = resolve(backend)
    return tag(b.impl.conv4(op.w, op.x, op.dims, op.alpha), b)


def run_grouped_conv4(
    w: np.ndarray, x: np.ndarray, geometry: Any, alpha: float, groups: int, backend: str = "auto"
) -> np.ndarray | None:
    """A grouped conv4 (Ops21's `groups`) of a model's checked arrays in one call, where the
    backend chosen is the reference and onnxruntime's kernels take it (porting.knet.mlas);
    None otherwise: the caller runs one conv4 per channel block."""
    from porting.knet import reference

    b = resolve(backend)
    if b.name != reference.NAME:
        return None
    y = reference.grouped_conv4(w, x, geometry, float(alpha), int(groups))
    return None if y is None else tag(y, b)


def deconv4(
    w: Any,
    x: Any,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: Any = 0,
    alpha: Any = 1,
    backend: str = "auto",
) -> np.ndarray:
    """Knet `deconv4(w, x; ...)`: transposed convolution (the gradient of conv4 wrt its input).

    `w` is `(W1, ..., Cy, Cx)`, `x` is `(X1, ..., Cx, N)`, the result `(Y1, ..., Cy, N)` with
    `Yi = (Xi - 1) stride + ((Wi - 1) dilation + 1) - 2 padding`. Same flip rule as conv4
    (docs/knet.md#deconv4).
    """
    op = ConvOp.knet(
        w,
        x,
        padding=padding,
        stride=stride,
        dilation=dilation,
        mode=mode,
        alpha=alpha,
        transposed=True,
    )
    return run_deconv4(op, backend)


def run_deconv4(op: ConvOp, backend: str = "auto") -> np.ndarray:
    """`deconv4` of an already validated transposed `porting.geometry.ConvOp` (Julia order)."""
    b = resolve(backend)
    return tag(b.impl.deconv4(op.w, op.x, op.dims, op.alpha), b)


def pool(
    x: Any,
    *,
    window: Any = 2,
    padding: Any = 0,
    stride: Any = None,
    mode: Any = 0,
    alpha: Any = 1,
    backend: str = "auto",
) -> np.ndarray:
    """Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)` on the CPU.

    Modes: 0 and 3 max (padding never wins, NaN never wins); 1 mean dividing by `prod(window)`
    (padding counts as zeros); 2 is run as 1, as Knet's CPU does (with a warning there).
    Windows of only padding (padding >= window) give -floatmax (max) or 0 (mean), as NNlib.
    (docs/knet.md#pool, #pool-nan and #padding-beyond-kernel)
    """
    op = PoolOp.knet(x, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    return run_pool(op, backend)


def run_pool(op: PoolOp, backend: str = "auto") -> np.ndarray:
    """`pool` of an already validated `porting.geometry.PoolOp` (Julia order)."""
    b = resolve(backend)
    return tag(b.impl.pool(op.x, op.dims, op.alpha), b)


def mat(x: Any, *, dims: int | None = None, backend: str = "auto") -> np.ndarray:
    """Knet `mat(x; dims=ndims(x)-1)`: `reshape(x, prod(size(x)[1:dims]), :)`, column-major
    (docs/knet.md#mat).

    >>> import numpy as np
    >>> mat(np.zeros((5, 4, 3, 2))).shape
    (60, 2)
    """
    x = as_float_array(x, "x")
    if dims is None:
        dims = x.ndim - 1
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or not 0 <= dims <= x.ndim:
        raise PortingError(
            f"dims={short_repr(dims)}: expected an integer from 0 to ndims(x) = {x.ndim}"
        )
    dims = int(dims)  # a NumPy integer is an integer
    b = resolve(backend)
    return tag(b.impl.mat(x, dims), b)
