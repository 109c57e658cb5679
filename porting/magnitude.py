"""The sum of magnitudes `S` that scales every tolerance (porting.tolerance), in one place.

For an output that sums products `w*x`, `S = sum(|w| * |x|)` over the same terms: the same
operation applied to the absolute values, in float64 (it only sets the scale of a bound, so
the order of its own sums does not matter). Pooling and activations carry an incoming `S`
(and an incoming error bound) through; see docs/numerics.md#sum-of-magnitudes and
#propagation.

Arrays are Julia-indexed, as in porting.knet. Nothing here imports TensorFlow.

>>> import numpy as np
>>> from porting.geometry import ConvGeometry
>>> w = np.float32([[-1.0], [2.0]]).reshape(2, 1, 1)
>>> x = np.float32([1.0, -3.0, 4.0]).reshape(3, 1, 1)
>>> conv4(w, x, ConvGeometry.from_knet(1)).ravel().tolist()  # |w| * |x|, rotated kernel: 2*1 + 1*3, 2*3 + 1*4
[5.0, 10.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from porting import activations
from porting.activations import ROUND
from porting.geometry import ConvDims, ConvGeometry, ConvOp, PoolDims, PoolGeometry, as_pool_dims
from porting.knet import reference
from porting.tolerance import check_given

__all__ = [
    "ROUND",
    "absolute",
    "activation",
    "batchnorm",
    "bias",
    "conv4",
    "grouped_conv4",
    "deconv4",
    "dense",
    "pool",
    "of_conv",
    "matmul",
    "of_outputs",
]


def absolute(x: ArrayLike, dtype: DTypeLike = np.float64) -> NDArray[np.floating[Any]]:
    """`|x|` as `dtype` (float64 by default)."""
    a: NDArray[Any] = np.abs(np.asarray(x))  # NumPy's stubs type a ufunc's result as Any
    return a.astype(dtype, copy=False)


def conv4(
    w: ArrayLike,
    x: ArrayLike,
    geom: ConvGeometry | ConvDims,
    alpha: float = 1.0,
    dtype: DTypeLike = np.float64,
    *,
    x_is_magnitude: bool = False,
) -> NDArray[np.floating[Any]]:
    """`S` of Knet `conv4(w, x)`: the same convolution of `|w|` and `|x|` (times `|alpha|`);
    `x` is taken as it is when it already holds magnitudes (a layer's input `S`)."""
    xa = np.asarray(x).astype(dtype, copy=False) if x_is_magnitude else absolute(x, dtype)
    return reference.conv4(absolute(w, dtype), xa, geom, abs(float(alpha)))


def grouped_conv4(
    w: ArrayLike,
    x: ArrayLike,
    geom: ConvGeometry,
    alpha: float,
    dtype: DTypeLike,
    groups: int,
    *,
    x_is_magnitude: bool = False,
) -> NDArray[np.floating[Any]] | None:
    """`S` of a grouped conv4 in one call (`reference.grouped_conv4`), or None: then one
    `conv4` per channel block."""
    xa = np.asarray(x).astype(dtype, copy=False) if x_is_magnitude else absolute(x, dtype)
    return reference.grouped_conv4(absolute(w, dtype), xa, geom, abs(float(alpha)), groups)


def deconv4(
    w: ArrayLike,
    x: ArrayLike,
    geom: ConvGeometry | ConvDims,
    alpha: float = 1.0,
    dtype: DTypeLike = np.float64,
) -> NDArray[np.floating[Any]]:
    """`S` of Knet `deconv4(w, x)`."""
    return reference.deconv4(absolute(w, dtype), absolute(x, dtype), geom, abs(float(alpha)))


def of_conv(op: ConvOp, dtype: DTypeLike = np.float64) -> NDArray[np.floating[Any]]:
    """`S` of a validated Julia-order `ConvOp` (conv4 or deconv4), Julia-indexed."""
    fn = deconv4 if op.dims.transposed else conv4
    return fn(op.w, op.x, op.dims, op.alpha, dtype)


def matmul(
    a: ArrayLike, b: ArrayLike, *, a_is_magnitude: bool = False, dtype: DTypeLike = np.float64
) -> NDArray[np.floating[Any]]:
    """`S` of the matrix product `a @ b`: `|a| @ |b|` (`a` taken as it is when it already holds
    magnitudes, e.g. cached im2col columns)."""
    if a_is_magnitude:
        s: NDArray[np.floating[Any]] = np.asarray(a) @ absolute(b, dtype)
        return s
    return _abs_matmul(np.asarray(a), absolute(b, dtype), np.dtype(dtype))


_BLOCK_BYTES = 8 << 20  # |a| is formed a row block of about this size at a time


def _abs_matmul(
    a: NDArray[Any], b: NDArray[np.floating[Any]], dtype: np.dtype[Any]
) -> NDArray[np.floating[Any]]:
    """`|a| @ b` for a 2-D `a`, without a full-size `|a|`: a large `a` (VGG-16's first dense
    weight is 411 MB) goes through one reused buffer of about `_BLOCK_BYTES`, in blocks of
    rows (C-ordered `a`) or of columns (Fortran-ordered, as a Julia matrix), each block
    contiguous; column blocks add their partial products (S's summation order changes, and S
    only sets the scale of a bound)."""
    if a.ndim != 2 or a.nbytes <= 2 * _BLOCK_BYTES:
        return absolute(a, dtype) @ b
    by_cols = a.flags.f_contiguous and not a.flags.c_contiguous
    if by_cols:  # |a| @ b == (b.T @ |a.T|).T, a.T C-ordered: its row blocks are contiguous
        return _abs_matmul_rows(a.T, b.T, dtype, accumulate=True).T
    return _abs_matmul_rows(a, b, dtype, accumulate=False)


def _abs_matmul_rows(
    a: NDArray[Any], b: NDArray[np.floating[Any]], dtype: np.dtype[Any], accumulate: bool
) -> NDArray[np.floating[Any]]:
    """`|a| @ b` by row blocks of C-ordered `a`; with `accumulate`, `b @ |a|` summed over
    row blocks of `a` (the transposed case of `_abs_matmul`)."""
    rows = max(1, _BLOCK_BYTES // max(1, a.shape[1] * dtype.itemsize))
    buf = np.empty((min(rows, a.shape[0]), a.shape[1]), dtype=dtype)
    rt = np.result_type(dtype, b.dtype)
    out = (
        np.zeros((b.shape[0], a.shape[1]), dtype=rt)
        if accumulate
        else np.empty((a.shape[0], *b.shape[1:]), dtype=rt)
    )
    for r0 in range(0, a.shape[0], rows):
        r1 = min(r0 + rows, a.shape[0])
        blk = buf[: r1 - r0]
        np.abs(a[r0:r1], out=blk, casting="unsafe")
        if accumulate:
            out += b[:, r0:r1] @ blk
        else:
            np.matmul(blk, b, out=out[r0:r1])
    return out


def dense(
    w: ArrayLike, x: ArrayLike, dtype: DTypeLike = np.float64, *, x_is_magnitude: bool = False
) -> NDArray[np.floating[Any]]:
    """`S` of `w * mat(x)` for `w` `(out, in)` and `x` `(in, N)` (or any `(..., N)`, flattened
    column-major as Knet's `mat`: docs/knet.md#dense, #mat); `x` is taken as it is when it
    already holds magnitudes."""
    a = np.asarray(x).astype(dtype, copy=False) if x_is_magnitude else absolute(x, dtype)
    if a.ndim != 2:
        a = a.reshape((-1, a.shape[-1]), order="F")
    return matmul(w, a, a_is_magnitude=False, dtype=dtype)


def of_outputs(
    expected: ArrayLike, magnitude: ArrayLike | None = None
) -> NDArray[np.floating[Any]]:
    """`S` from the outputs: `magnitude` when given (refused if negative), else `|expected|`
    (an element-wise result's own, with K = 1; too strict where a sum cancels, which is why
    porting.compare assumes `comparison.assumed_magnitude` when given no magnitude)."""
    if magnitude is not None:
        check_given(np.asarray(magnitude))
    return absolute(expected if magnitude is None else magnitude)


def bias(
    s: NDArray[np.floating[Any]], b: ArrayLike, channel_axis: int = -2
) -> NDArray[np.floating[Any]]:
    """`S` plus `|b|` broadcast along `channel_axis` (Knet biases are per channel/feature)."""
    shape = [1] * s.ndim
    b = np.asarray(b).reshape(-1)
    shape[channel_axis] = b.size
    return s + absolute(b, s.dtype).reshape(shape)


def pool(
    s: NDArray[np.floating[Any]], geom: PoolGeometry | PoolDims, alpha: float = 1.0
) -> NDArray[np.floating[Any]]:
    """`S` after Knet `pool`: the max of the magnitudes (max pooling) or their mean (mean;
    docs/numerics.md#propagation)."""
    dims = as_pool_dims(geom, s)
    if not dims.is_max:
        return reference.pool(s, dims.with_mode(1), abs(float(alpha)))
    # A window of only padding holds no magnitude: 0, not max pooling's -floatmax.
    out = reference.pool(s, dims, abs(float(alpha)))
    np.maximum(out, 0.0, out=out)
    return out


def batchnorm(
    s: NDArray[np.floating[Any]],
    mean: ArrayLike,
    var: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    channel_axis: int = -2,
    dtype: DTypeLike = np.float64,
) -> NDArray[np.floating[Any]]:
    """`S` after Knet's inference `batchnorm`: `|g| (S_x + |mean|) ivar + |b|`, the sums and
    products the layer forms, their magnitudes (`ivar = 1/sqrt(|var| + eps)` itself rounded:
    covered by K = 4; `scale` None: non-affine, no `g` and no `b`). Per channel (along
    `channel_axis`, Knet's `(..., C, N)` by default) this is `S_x * a + c` with `a = |g| ivar`
    and `c = a |mean| + |b|`, formed in float64 once per channel; the pass over `S_x` then runs
    in `dtype` (a relative rounding of S of order eps only rescales the bound by that much).
    A new array: `s` is never changed in place."""
    ivar = 1.0 / np.sqrt(np.abs(np.asarray(var).astype(np.float64).ravel()) + eps)
    a = ivar if scale is None else np.abs(np.asarray(scale).astype(np.float64).ravel()) * ivar
    c = a * np.abs(np.asarray(mean).astype(np.float64).ravel())
    if scale is not None:
        c = c + np.abs(np.asarray(bias).astype(np.float64).ravel())
    shape = [1] * s.ndim
    shape[channel_axis] = a.size
    y: NDArray[np.floating[Any]] = np.multiply(s, a.astype(dtype).reshape(shape), dtype=dtype)
    y += c.astype(dtype).reshape(shape)
    return y


def activation(
    fn: str, s: NDArray[np.floating[Any]], out: NDArray[np.floating[Any]], dims: int = 1
) -> NDArray[np.floating[Any]]:
    """Carry a magnitude (or error bound) `s` through activation `fn`, whose output is `out`,
    and add the activation's own rounding: the row's rule in porting.activations (relu and
    identity pass it on, sigm scales it by its slope bound 1/4, tanh has slope <= 1, elu <= 1
    with its exp rounding, softmax along Julia dimension `dims` as its Jacobian bounds it;
    docs/numerics.md#propagation; the functions: docs/knet.md#activations, #softmax)."""
    return activations.get(fn).magnitude(s, out, dims)
