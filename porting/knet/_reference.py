"""NumPy reimplementation of Knet's CPU arithmetic (Knet 1.4.10 -> NNlib).

Arrays in and out are Julia-indexed (shape = Julia's `size()`). Internally a Julia array of size
`(X1, ..., Xd, C, N)` is handled as its transpose, a C-ordered `(N, C, Xd, ..., X1)` array with
the same bytes, so the usual Fortran-ordered input costs no copy. Results are returned
Fortran-ordered, like Julia's.

Nothing here imports TensorFlow: this is what TensorFlow is checked against.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from porting.geometry import ConvGeometry, PoolGeometry

NAME = "reference"
DESCRIPTION = "NumPy reimplementation of Knet 1.4.10's CPU arithmetic (NNlib im2col + GEMM)"


def _scale(y: np.ndarray, alpha: float) -> np.ndarray:
    """Knet's `lmul!(alpha, y)`: the product is formed in Float64 and rounded once to y's type."""
    if alpha == 1:
        return y
    return (np.float64(alpha) * y.astype(np.float64)).astype(y.dtype, order="K")


def _flip_spatial(wt: np.ndarray, nd: int) -> np.ndarray:
    return wt[(Ellipsis, *([slice(None, None, -1)] * nd))]


def conv4(w: np.ndarray, x: np.ndarray, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha)`, Julia-indexed in and out."""
    nd = geom.nd
    xt = x.T  # (N, Cin, Xd..X1)
    wt = w.T  # (Cout, Cin, Wd..W1)
    if not geom.crosscorrelation:
        wt = _flip_spatial(wt, nd)  # mode 0: true convolution
    pad = geom.padding[::-1]
    stride = geom.stride[::-1]
    dil = geom.dilation[::-1]
    xp = np.pad(xt, [(0, 0), (0, 0), *((p, p) for p in pad)]) if any(pad) else xt
    kext = tuple((k - 1) * d + 1 for k, d in zip(wt.shape[2:], dil, strict=True))
    cols = sliding_window_view(xp, kext, axis=tuple(range(2, 2 + nd)))
    # cols: (N, Cin, Y'..., Kext...) -> stride the outputs, dilate the window
    idx = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in stride),
        *(slice(None, None, d) for d in dil),
    )
    cols = cols[idx]
    y = np.tensordot(cols, wt, axes=([1, *range(2 + nd, 2 + 2 * nd)], [1, *range(2, 2 + nd)]))
    # y: (N, Yd..Y1, Cout) -> Julia (Y1..Yd, Cout, N)
    y = np.moveaxis(y, -1, 1)
    return _scale(np.asfortranarray(y.T), alpha)


def deconv4(w: np.ndarray, x: np.ndarray, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
    """Knet `deconv4(w, x; ...)`: the gradient of conv4 with respect to its input.

    `w` is `(W1, ..., Cy, Cx)` and `x` is `(X1, ..., Cx, N)`; the result is `(Y1, ..., Cy, N)`.
    """
    nd = geom.nd
    xt = x.T  # (N, Cx, Xd..X1)
    wt = w.T  # (Cx, Cy, Wd..W1)
    if not geom.crosscorrelation:
        wt = _flip_spatial(wt, nd)
    stride = geom.stride[::-1]
    dil = geom.dilation[::-1]
    pad = geom.padding[::-1]
    ksz = wt.shape[2:]
    xs = xt.shape[2:]
    full = tuple((xi - 1) * s + (k - 1) * d + 1 for xi, s, k, d in zip(xs, stride, ksz, dil, strict=True))
    n, cy = xt.shape[0], wt.shape[1]
    out = np.zeros((n, cy, *full), dtype=x.dtype)
    # One GEMM per kernel offset, scattered into the strided output positions it reaches.
    xmat = np.moveaxis(xt, 1, -1)  # (N, Xd..X1, Cx)
    for off in itertools.product(*(range(k) for k in ksz)):
        contrib = xmat @ wt[(slice(None), slice(None), *off)]  # (N, X..., Cy)
        target = (
            slice(None),
            slice(None),
            *(slice(o * d, o * d + (xi - 1) * s + 1, s) for o, d, xi, s in zip(off, dil, xs, stride, strict=True)),
        )
        out[target] += np.moveaxis(contrib, -1, 1)
    crop = (slice(None), slice(None), *(slice(p, f - p) for p, f in zip(pad, full, strict=True)))
    return _scale(np.asfortranarray(out[crop].T), alpha)


def pool(x: np.ndarray, geom: PoolGeometry, alpha: float = 1.0) -> np.ndarray:
    """Knet `pool(x; window, padding, stride, mode, alpha)` on the CPU.

    Modes 0 and 3: max, padded cells never win, NaN never wins (NNlib compares with `>`).
    Modes 1 and 2: mean dividing by `prod(window)`, padding counted as zeros (Knet's CPU runs
    mode 2 as mode 1).
    """
    nd = geom.nd
    xt = x.T  # (N, C, Xd..X1)
    win = geom.window[::-1]
    stride = geom.stride[::-1]
    pad = geom.padding[::-1]
    if geom.is_max:
        fill = -np.inf
        src = np.where(np.isnan(xt), -np.inf, xt) if np.isnan(xt).any() else xt
    else:
        fill = 0.0
        src = xt
    xp = (
        np.pad(src, [(0, 0), (0, 0), *((p, p) for p in pad)], constant_values=fill)
        if any(pad)
        else src
    )
    cols = sliding_window_view(xp, win, axis=tuple(range(2, 2 + nd)))
    cols = cols[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    if geom.is_max:
        y = cols.max(axis=axes)
    else:
        y = cols.sum(axis=axes, dtype=x.dtype) * x.dtype.type(1.0 / np.prod(win))
    return _scale(np.asfortranarray(y.T), alpha)


def mat(x: np.ndarray, dims: int) -> np.ndarray:
    """Knet `mat(x; dims)`: `reshape(x, prod(size(x)[1:dims]), :)` in column-major order."""
    rows = int(np.prod(x.shape[:dims])) if dims > 0 else 1
    return np.reshape(x, (rows, -1), order="F")
