"""Knet's array operations, with Knet's exact semantics and defaults.

Arrays in and out are Julia-indexed: the shape is Julia's `size()`, e.g. `(X1, X2, C, N)`, and
element `[i-1, j-1, ...]` is Julia's `[i, j, ...]`; C- and Fortran-ordered inputs are both
accepted. Results have the input's dtype and remember the backend that computed them
(`result.backend`).

`conv4` defaults to `mode=0`, which is **true convolution** (the kernel rotated 180 degrees);
TensorFlow, Keras and PyTorch compute cross-correlation, Knet's `mode=1`.

>>> import numpy as np
>>> conv4(np.ones((3, 3, 2, 4), np.float32), np.ones((8, 6, 2, 5), np.float32), padding=1).shape
(8, 6, 4, 5)
"""

from __future__ import annotations

from porting._checks import as_float_array, as_scalar
from porting.errors import PortingError
from porting.geometry import ConvGeometry, PoolGeometry
from porting.knet._backends import BACKEND_CHOICES, KnetResult, resolve, tag

__all__ = ["conv4", "deconv4", "pool", "mat", "KnetResult", "BACKEND_CHOICES"]


def _conv_args(w, x, wname: str, cin_axis: int):
    x = as_float_array(x, "x", ndim=(3, 4, 5))
    w = as_float_array(w, "w", ndim=(3, 4, 5))
    if w.ndim != x.ndim:
        raise PortingError(
            f"w has {w.ndim} dimensions (shape {w.shape}) but x has {x.ndim} (shape {x.shape}); "
            "expected the same rank: spatial dimensions plus two"
        )
    if w.dtype != x.dtype:
        raise PortingError(
            f"w is {w.dtype} but x is {x.dtype}; Knet needs one element type for both "
            "(convert one with .astype)"
        )
    cin = w.shape[cin_axis]
    if cin != x.shape[-2]:
        raise PortingError(
            f"{wname} has {cin} input channels but x has {x.shape[-2]} (w shape {w.shape}, "
            f"x shape {x.shape})"
        )
    return w, x


def conv4(w, x, *, padding=0, stride=1, dilation=1, mode=0, alpha=1, backend="auto"):
    """Knet `conv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)`.

    `w` is `(W1, ..., Cin, Cout)`, `x` is `(X1, ..., Cin, N)`, the result `(Y1, ..., Cout, N)`
    with `Yi = 1 + floor((Xi + 2 padding - ((Wi - 1) dilation + 1)) / stride)`. `mode=0` is
    true convolution (kernel rotated 180 degrees), `mode=1` cross-correlation.
    """
    w, x = _conv_args(w, x, "kernel", -2)
    geom = ConvGeometry.from_knet(
        x.ndim - 2, padding=padding, stride=stride, dilation=dilation, mode=mode
    )
    geom.output_size(x.shape[:-2], w.shape[:-2])  # validates
    alpha = as_scalar(alpha, "alpha")
    b = resolve(backend)
    return tag(b.impl.conv4(w, x, geom, alpha), b)


def deconv4(w, x, *, padding=0, stride=1, dilation=1, mode=0, alpha=1, backend="auto"):
    """Knet `deconv4(w, x; ...)`: transposed convolution (the gradient of conv4 wrt its input).

    `w` is `(W1, ..., Cy, Cx)`, `x` is `(X1, ..., Cx, N)`, the result `(Y1, ..., Cy, N)` with
    `Yi = (Xi - 1) stride + ((Wi - 1) dilation + 1) - 2 padding`. Same flip rule as conv4.
    """
    w, x = _conv_args(w, x, "kernel", -1)
    geom = ConvGeometry.from_knet(
        x.ndim - 2, padding=padding, stride=stride, dilation=dilation, mode=mode
    )
    geom.transpose_output_size(x.shape[:-2], w.shape[:-2])  # validates
    alpha = as_scalar(alpha, "alpha")
    b = resolve(backend)
    return tag(b.impl.deconv4(w, x, geom, alpha), b)


def pool(x, *, window=2, padding=0, stride=None, mode=0, alpha=1, backend="auto"):
    """Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)` on the CPU.

    Modes: 0 and 3 max (padding never wins, NaN never wins); 1 mean dividing by `prod(window)`
    (padding counts as zeros); 2 is run as 1, as Knet's CPU does (with a warning there).
    """
    x = as_float_array(x, "x", ndim=(3, 4, 5))
    geom = PoolGeometry.from_knet(
        x.ndim - 2, window=window, padding=padding, stride=stride, mode=mode
    )
    geom.output_size(x.shape[:-2])  # validates
    alpha = as_scalar(alpha, "alpha")
    b = resolve(backend)
    return tag(b.impl.pool(x, geom, alpha), b)


def mat(x, *, dims=None, backend="auto"):
    """Knet `mat(x; dims=ndims(x)-1)`: `reshape(x, prod(size(x)[1:dims]), :)`, column-major.

    >>> import numpy as np
    >>> mat(np.zeros((5, 4, 3, 2))).shape
    (60, 2)
    """
    x = as_float_array(x, "x")
    if dims is None:
        dims = x.ndim - 1
    if isinstance(dims, bool) or not isinstance(dims, int) or not 0 <= dims <= x.ndim:
        raise PortingError(f"dims={dims!r}: expected an integer from 0 to ndims(x) = {x.ndim}")
    b = resolve(backend)
    return tag(b.impl.mat(x, dims), b)
