"""NumPy reimplementation of Knet's CPU arithmetic (Knet 1.4.10 -> NNlib).

Arrays in and out are Julia-indexed (shape = Julia's `size()`). Internally a Julia array of size
`(X1, ..., Xd, C, N)` is handled as its transpose, a C-ordered `(N, C, Xd, ..., X1)` array with
the same bytes, so the usual Fortran-ordered input costs no copy. Results are returned
Fortran-ordered, like Julia's.

Nothing here imports TensorFlow: this is what TensorFlow is checked against.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from porting.geometry import ConvGeometry, PoolGeometry

NAME = "reference"
DESCRIPTION = "NumPy reimplementation of Knet 1.4.10's CPU arithmetic (NNlib im2col + GEMM)"


# Bytes of im2col (or col2im) matrix handled per GEMM batch: big enough that the GEMMs run near
# BLAS's peak, small enough that the copy and the GEMM reading it share the last-level cache.
_COL_BYTES = 4 << 20


def _scale(y: np.ndarray, alpha: float) -> np.ndarray:
    """Knet's `lmul!(alpha, y)` in place: each product is formed in Float64 and rounded once to
    y's type (the same numbers as `(float64(alpha) * float64(y)).astype(y.dtype)`)."""
    if alpha != 1:
        np.multiply(y, np.float64(alpha), out=y, dtype=np.float64, casting="unsafe")
    return y


def _flip_spatial(wt: np.ndarray, nd: int) -> np.ndarray:
    return wt[(Ellipsis, *([slice(None, None, -1)] * nd))]


def _c_order(xt: np.ndarray) -> np.ndarray:
    """`xt` as a C-contiguous `(N, C, Xd..X1)` array: free for Julia's (Fortran-ordered) arrays."""
    return xt if xt.flags.c_contiguous else np.ascontiguousarray(xt)


def _chunks(total: int, step: int) -> list[tuple[int, int]]:
    """Split range(total) into about-equal pieces of at most `step` (no small leftover piece)."""
    pieces = -(-total // max(1, step))
    size = -(-total // pieces)
    return [(a, min(total, a + size)) for a in range(0, total, size)]


def _valid(xlen: int, ylen: int, shift: int, s: int) -> tuple[int, int, int]:
    """Outputs `[lo, hi)` whose input index `y*s + shift` lies in `[0, xlen)`, and that index at lo."""
    lo = max(0, -(shift // s))
    hi = max(lo, min(ylen, (xlen - 1 - shift) // s + 1))
    return lo, hi, lo * s + shift


def _correlate(
    wt: np.ndarray,
    xt: np.ndarray,
    pad: tuple[int, ...],
    stride: tuple[int, ...],
    dil: tuple[int, ...],
    out: np.ndarray,
) -> np.ndarray:
    """Cross-correlation on C-ordered `(N, C, Xd..X1)` data by im2col + GEMM, written into `out`.

    `out[n, f, y] = sum over c, k of wt[f, c, k] * x[n, c, y*stride + k*dil - pad]`, where x is
    zero outside its bounds (`pad` may be negative: that crops). `wt` is `(F, C, Kd..K1)`, `out`
    a C-contiguous `(N, F, Yd..Y1)` array. Padding is never materialised: each kernel offset
    copies the in-bounds part of its shifted input into the column matrix, whose out-of-bounds
    parts are zero. Images (or, for big images, output rows) are batched so that one column
    matrix is about `_COL_BYTES`, and one `np.matmul` per batch writes straight into `out`.
    """
    n, c = xt.shape[:2]
    f = wt.shape[0]
    xs, ys = xt.shape[2:], out.shape[2:]
    offsets = list(itertools.product(*(range(k) for k in wt.shape[2:])))
    rows = len(offsets) * c  # contraction length K
    wm = np.ascontiguousarray(np.moveaxis(wt, 1, -1)).reshape(f, rows)  # (F, (offset, c))
    rest = math.prod(ys[1:])
    row_bytes = rows * rest * xt.dtype.itemsize  # column matrix bytes per output row of one image
    if row_bytes * ys[0] <= _COL_BYTES:
        img_chunks = _chunks(n, _COL_BYTES // (row_bytes * ys[0]))
        row_chunks = [(0, ys[0])]
    else:
        img_chunks = _chunks(n, 1)
        row_chunks = _chunks(ys[0], _COL_BYTES // row_bytes)
    nb = img_chunks[0][1] - img_chunks[0][0]
    rb = row_chunks[0][1] - row_chunks[0][0]
    # Zeros once: with whole images per batch, every batch writes the same in-bounds parts, so the
    # out-of-bounds parts stay zero; with row batches the zero parts move and are rewritten.
    buf = np.zeros(nb * rows * rb * rest, dtype=xt.dtype)
    rezero = len(row_chunks) > 1
    # Per offset and spatial dim (except the first, which is batched): (lo, hi, input start).
    ranges = [
        [
            _valid(xs[j], ys[j], k[j] * dil[j] - pad[j], stride[j])
            for j in range(1, len(ys))
        ]
        for k in offsets
    ]
    out4 = out.reshape(n, f, ys[0], rest)
    for n0, n1 in img_chunks:
        xb = xt[n0:n1]
        for r0, r1 in row_chunks:
            col = buf[: (n1 - n0) * rows * (r1 - r0) * rest].reshape(
                n1 - n0, len(offsets), c, r1 - r0, *ys[1:]
            )
            for q, k in enumerate(offsets):
                lo, hi, start = _valid(xs[0], r1, k[0] * dil[0] - pad[0], stride[0])
                if lo < r0:
                    start += (r0 - lo) * stride[0]
                    lo = r0
                dims = [(lo - r0, max(lo, hi) - r0, start), *ranges[q]]
                dst = col[:, q]
                if any(h <= lo_ for lo_, h, _ in dims):
                    dst[...] = 0
                    continue
                dst[(slice(None), slice(None), *(slice(lo_, h) for lo_, h, _ in dims))] = xb[
                    (
                        slice(None),
                        slice(None),
                        *(
                            slice(a, a + (h - lo_ - 1) * s + 1, s)
                            for (lo_, h, a), s in zip(dims, stride, strict=True)
                        ),
                    )
                ]
                if rezero:
                    for j, (lo_, h, _) in enumerate(dims):
                        lead = (slice(None), slice(None), *([slice(None)] * j))
                        if lo_ > 0:
                            dst[(*lead, slice(0, lo_))] = 0
                        if h < dst.shape[2 + j]:
                            dst[(*lead, slice(h, None))] = 0
            np.matmul(
                wm,
                col.reshape(n1 - n0, rows, (r1 - r0) * rest),
                out=out4[n0:n1, :, r0:r1].reshape(n1 - n0, f, (r1 - r0) * rest),
            )
    return out


def conv4(w: np.ndarray, x: np.ndarray, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha)`, Julia-indexed in and out.

    Computed on the transposes (`x.T` is `(N, Cin, Xd..X1)`, C-ordered for Julia's arrays) and
    written into a C-ordered `(N, Cout, Yd..Y1)` array whose transpose is the Fortran-ordered
    Julia-indexed result, so nothing is copied on the way out.
    """
    nd = geom.nd
    xt = _c_order(x.T)  # (N, Cin, Xd..X1)
    wt = w.T  # (Cout, Cin, Wd..W1)
    if not geom.crosscorrelation:
        wt = _flip_spatial(wt, nd)  # mode 0: true convolution
    ys = geom.output_size(x.shape[:-2], w.shape[:-2])[::-1]
    out = np.empty((xt.shape[0], wt.shape[0], *ys), dtype=x.dtype)
    _correlate(wt, xt, geom.padding[::-1], geom.stride[::-1], geom.dilation[::-1], out)
    return _scale(out, alpha).T


def deconv4(w: np.ndarray, x: np.ndarray, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
    """Knet `deconv4(w, x; ...)`: the gradient of conv4 with respect to its input.

    `w` is `(W1, ..., Cy, Cx)` and `x` is `(X1, ..., Cx, N)`; the result is `(Y1, ..., Cy, N)`.
    With stride 1 this is a cross-correlation with the other flip and padding
    `(Wi-1)*dilation - padding` (negative: a crop), run by the conv4 code; with a stride, one
    GEMM per batch gives every kernel offset's contribution, scattered into the strided outputs.
    """
    nd = geom.nd
    xt = _c_order(x.T)  # (N, Cx, Xd..X1)
    wt = w.T  # (Cx, Cy, Wd..W1)
    stride = geom.stride[::-1]
    dil = geom.dilation[::-1]
    pad = geom.padding[::-1]
    ksz = wt.shape[2:]
    xs = xt.shape[2:]
    n, cx, cy = xt.shape[0], wt.shape[0], wt.shape[1]
    ys = geom.transpose_output_size(x.shape[:-2], w.shape[:-2])[::-1]
    if all(s == 1 for s in stride):
        # The adjoint of correlating with k is correlating with k rotated 180 degrees.
        wc = wt.swapaxes(0, 1)  # (Cy, Cx, Wd..W1)
        if geom.crosscorrelation:
            wc = _flip_spatial(wc, nd)
        out = np.empty((n, cy, *ys), dtype=x.dtype)
        cpad = tuple((k - 1) * d - p for k, d, p in zip(ksz, dil, pad, strict=True))
        _correlate(wc, xt, cpad, stride, dil, out)
        return _scale(out, alpha).T
    if not geom.crosscorrelation:
        wt = _flip_spatial(wt, nd)
    full = tuple(
        (xi - 1) * s + (k - 1) * d + 1 for xi, s, k, d in zip(xs, stride, ksz, dil, strict=True)
    )
    offsets = list(itertools.product(*(range(k) for k in ksz)))
    # (offset, Cy) x Cx: one GEMM gives every offset's contribution at every input position.
    wm = np.ascontiguousarray(np.moveaxis(wt, 0, -1).transpose(*range(1, nd + 1), 0, nd + 1))
    wm = wm.reshape(len(offsets) * cy, cx)
    npos = math.prod(xs)
    acc = np.zeros((n, cy, *full), dtype=x.dtype)
    per_image = len(offsets) * cy * npos * x.dtype.itemsize
    for n0, n1 in _chunks(n, _COL_BYTES // max(1, per_image)):
        z = np.matmul(wm, xt[n0:n1].reshape(n1 - n0, cx, npos))
        z = z.reshape(n1 - n0, len(offsets), cy, *xs)
        for q, off in enumerate(offsets):
            target = (
                slice(n0, n1),
                slice(None),
                *(
                    slice(o * d, o * d + (xi - 1) * s + 1, s)
                    for o, d, xi, s in zip(off, dil, xs, stride, strict=True)
                ),
            )
            acc[target] += z[:, q]
    crop = (slice(None), slice(None), *(slice(p, fl - p) for p, fl in zip(pad, full, strict=True)))
    out = acc if not any(pad) else np.ascontiguousarray(acc[crop])
    return _scale(out, alpha).T


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
