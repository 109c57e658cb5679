"""Converters between Knet's Julia-indexed layout and TensorFlow's layout.

"Julia-indexed" means a NumPy array whose shape equals Julia's `size()` and whose element
`[i-1, j-1, ...]` equals Julia's `[i, j, ...]`, whatever its memory order (NPZ.jl writes such
arrays Fortran-ordered; juliacall hands them over zero-copy). See docs/layout.md#julia-indexed
and #juliacall-arrays.

Every function takes `spatial`, which says how Julia's spatial axes `(X1, X2, X3)` map onto
TensorFlow's:

- `spatial="reverse"` (default): X1 is the width, as cuDNN (Knet's GPU path) reads the memory,
  so TF `(N, H, W, C) = (N, X2, X1, C)` and 3-D TF `(N, D, H, W, C) = (N, X3, X2, X1, C)`.
- `spatial="keep"`: X1 is the height: TF `(N, X1, X2, C)`.

(docs/layout.md#width-axis)

Convolution agrees under either choice when everything is mapped the same way; flatten order,
per-axis parameters and image orientation do not. All round trips are bit-exact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from porting._checks import as_float_array, check_choice, short_repr
from porting.errors import PortingError

SPATIAL_CHOICES = ("reverse", "keep")

T = TypeVar("T")

__all__ = [
    "activations_to_tf",
    "activations_array_to_tf",
    "kernel_array_to_tf",
    "activations_from_tf",
    "kernel_to_tf",
    "kernel_from_tf",
    "bias_to_tf",
    "bias_from_tf",
    "dense_to_tf",
    "dense_from_tf",
    "spatial_to_tf",
    "spatial_from_tf",
    "SPATIAL_CHOICES",
]


def _check_spatial(spatial: str) -> None:
    check_choice(spatial, "spatial", SPATIAL_CHOICES)


def _spatial_order(nd: int, spatial: str) -> list[int]:
    """Julia spatial axis indices (0-based) in TensorFlow order."""
    _check_spatial(spatial)
    axes = list(range(nd))
    return axes[::-1] if spatial == "reverse" else axes


def spatial_to_tf(values: tuple[T, ...], spatial: str = "reverse") -> tuple[T, ...]:
    """Per-dimension parameters (padding, stride, ...) from Julia order to TF order.

    >>> spatial_to_tf((1, 2), "reverse")
    (2, 1)
    """
    if not isinstance(values, (tuple, list)):
        raise PortingError(
            f"values={short_repr(values)}: expected a tuple of per-dimension values, Julia order"
        )
    return tuple(values[i] for i in _spatial_order(len(values), spatial))


def spatial_from_tf(values: tuple[T, ...], spatial: str = "reverse") -> tuple[T, ...]:
    """Inverse of `spatial_to_tf` (both mappings are their own inverse)."""
    return spatial_to_tf(values, spatial)


def _transpose_copy(a: np.ndarray, perm: list[int]) -> np.ndarray:
    """`np.ascontiguousarray(a.transpose(perm))`, done in cache-sized blocks when it pays."""
    from porting._transpose import transpose_copy

    return transpose_copy(a, perm)


def _check_ndim(a: np.ndarray, name: str, lo: int = 3, hi: int = 5) -> int:
    if not lo <= a.ndim <= hi:
        raise PortingError(
            f"{name} has {a.ndim} dimensions (shape {a.shape}); expected {lo} to {hi} "
            "(1-3 spatial dimensions, then channels and batch)"
        )
    return a.ndim - 2


# --------------------------------------------------------------------------- activations


def activations_to_tf(x: ArrayLike, spatial: str = "reverse") -> np.ndarray:
    """Knet `(X1, X2, C, N)` -> TensorFlow `(N, H, W, C)` (C-contiguous copy).

    Works for 1-3 spatial dimensions: `(X1, C, N) -> (N, X1, C)`,
    `(X1, X2, X3, C, N) -> (N, X3, X2, X1, C)` with `spatial="reverse"`.

    >>> activations_to_tf(np.zeros((5, 4, 3, 2))).shape
    (2, 4, 5, 3)
    >>> activations_to_tf(np.zeros((5, 4, 3, 2)), spatial="keep").shape
    (2, 5, 4, 3)
    """
    return activations_array_to_tf(as_float_array(x, "activations"), spatial)


def activations_array_to_tf(a: np.ndarray, spatial: str) -> np.ndarray:
    """`activations_to_tf` of an array already validated (float, any memory order): for
    callers that hold a checked `porting.geometry` op or their own checked array.

    >>> activations_array_to_tf(np.zeros((5, 4, 3, 2)), "reverse").shape
    (2, 4, 5, 3)
    """
    nd = _check_ndim(a, "activations")
    perm = [nd + 1, *_spatial_order(nd, spatial), nd]
    return _transpose_copy(a, perm)


def activations_from_tf(x: ArrayLike, spatial: str = "reverse") -> np.ndarray:
    """TensorFlow `(N, H, W, C)` -> Knet `(X1, X2, C, N)` (Fortran-contiguous, Julia-indexed).

    >>> activations_from_tf(np.zeros((2, 4, 5, 3))).shape
    (5, 4, 3, 2)
    """
    a = as_float_array(x, "activations")
    nd = _check_ndim(a, "activations")
    # Julia axis j (spatial) sits at TF position 1 + order.index(j).
    order = _spatial_order(nd, spatial)
    perm = [1 + order.index(j) for j in range(nd)] + [nd + 1, 0]
    # Fortran-contiguous result == C-contiguous array of the reversed permutation, transposed.
    return _transpose_copy(a, perm[::-1]).T


# --------------------------------------------------------------------------- kernels


def _rotate180(a: np.ndarray, spatial_axes: list[int]) -> np.ndarray:
    return np.flip(a, axis=tuple(spatial_axes))


def kernel_to_tf(w: ArrayLike, mode: int = 0, spatial: str = "reverse") -> np.ndarray:
    """Knet conv kernel `(W1, W2, Cin, Cout)` -> TensorFlow `(H, W, Cin, Cout)`.

    Knet `mode=0` (the default) is true convolution, so the kernel is rotated 180 degrees to get
    the cross-correlation kernel TensorFlow uses; `mode=1` is already cross-correlation
    (docs/knet.md#flip, docs/layout.md#kernels).

    >>> w = np.arange(4.0).reshape(2, 2, 1, 1)
    >>> kernel_to_tf(w, mode=1, spatial="keep")[..., 0, 0]
    array([[0., 1.],
           [2., 3.]])
    >>> kernel_to_tf(w, mode=0, spatial="keep")[..., 0, 0]
    array([[3., 2.],
           [1., 0.]])
    """
    check_choice(mode, "mode", (0, 1))
    return kernel_array_to_tf(as_float_array(w, "kernel"), mode, spatial)


def kernel_array_to_tf(a: np.ndarray, mode: int, spatial: str) -> np.ndarray:
    """`kernel_to_tf` of an array already validated (float, `mode` 0 or 1)."""
    nd = _check_ndim(a, "kernel")
    perm = [*_spatial_order(nd, spatial), nd, nd + 1]
    if mode == 0:
        # Rotating every spatial axis commutes with permuting them: flip the view, copy once.
        a = _rotate180(a, list(range(nd)))
    from porting._transpose import kernel_copy

    return kernel_copy(a.transpose(perm))


def kernel_from_tf(w: ArrayLike, mode: int = 0, spatial: str = "reverse") -> np.ndarray:
    """TensorFlow kernel `(H, W, Cin, Cout)` -> Knet `(W1, W2, Cin, Cout)` for `conv4(...; mode)`.

    >>> kernel_from_tf(np.zeros((3, 5, 2, 4))).shape
    (5, 3, 2, 4)
    """
    check_choice(mode, "mode", (0, 1))
    a = as_float_array(w, "kernel")
    nd = _check_ndim(a, "kernel")
    if mode == 0:
        a = _rotate180(a, list(range(nd)))
    order = _spatial_order(nd, spatial)
    perm = [order.index(j) for j in range(nd)] + [nd, nd + 1]
    return _transpose_copy(a, perm[::-1]).T


# --------------------------------------------------------------------------- biases


def bias_to_tf(b: ArrayLike) -> np.ndarray:
    """Knet bias (conv `(1, 1, C, 1)`, dense `(C,)` or `(C, 1)`) -> TensorFlow `(C,)`.

    >>> bias_to_tf(np.zeros((1, 1, 8, 1))).shape
    (8,)
    """
    a = as_float_array(b, "bias")
    if a.ndim == 1:
        return a.copy()
    channel_axis = a.ndim - 2
    extra = [n for i, n in enumerate(a.shape) if i != channel_axis and n != 1]
    if extra:
        raise PortingError(
            f"bias has shape {a.shape}; expected a vector (C,), a column (C, 1) or a conv bias "
            "(1, ..., 1, C, 1) with every axis but the channel axis of size 1"
        )
    return np.ascontiguousarray(a.reshape(-1))


def bias_from_tf(b: ArrayLike, ndims: int = 4) -> np.ndarray:
    """TensorFlow bias `(C,)` -> Knet: `(1, 1, C, 1)` for `ndims=4`, `(C,)` for `ndims=1`.

    `ndims` is the number of dimensions of the activations the bias is added to (3-5 for
    conv layers with 1-3 spatial dimensions, 1 for a dense layer's vector bias).

    >>> bias_from_tf(np.zeros(8)).shape
    (1, 1, 8, 1)
    """
    a = as_float_array(b, "bias", ndim=1)
    check_choice(ndims, "ndims", (1, 2, 3, 4, 5))  # an integer: not True, 4.0 or an array
    ndims = int(ndims)
    if ndims == 1:
        return a.copy()
    if ndims not in (2, 3, 4, 5):
        raise PortingError(
            f"ndims={short_repr(ndims)}: expected 1 (dense) or 2-5 (activations' ndims)"
        )
    shape = [1] * ndims
    shape[ndims - 2] = a.shape[0]
    return a.copy().reshape(shape)


# --------------------------------------------------------------------------- dense


def _dense_operands(
    w: ArrayLike, name: str, input_shape: Any, spatial: str, *, in_axis: int
) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """The checked 2-d weight (inputs along `in_axis`) and `input_shape` (None when not given)
    of `dense_to_tf` / `dense_from_tf`."""
    _check_spatial(spatial)
    a = as_float_array(w, name, ndim=2)
    if input_shape is None:
        return a, None
    return a, _check_dense_input_shape(input_shape, a.shape[in_axis])


def _check_dense_input_shape(input_shape: Any, n_in: int) -> tuple[int, ...]:
    expected = "expected the Julia size of one sample before mat, e.g. (X1, X2, C)"
    try:
        items = list(input_shape)
    except TypeError:
        raise PortingError(f"input_shape={short_repr(input_shape)}: {expected}") from None
    if isinstance(input_shape, (str, bytes)) or not all(
        isinstance(s, (numbers.Integral, np.integer)) and not isinstance(s, bool) and int(s) >= 1
        for s in items
    ):  # strict: "abc", 2.0, True and -2 are not sizes
        raise PortingError(
            f"input_shape={short_repr(input_shape)}: {expected}, every entry an integer >= 1"
        )
    shape = tuple(int(s) for s in items)
    if not 2 <= len(shape) <= 4 or math.prod(shape) != n_in:
        raise PortingError(
            f"input_shape={short_repr(shape)} (product {short_repr(math.prod(shape))}) does not "
            f"match the dense weight's {n_in} inputs; expected the Julia size (X1, ..., C) of "
            "one sample before mat"
        )
    return shape


def dense_to_tf(
    w: ArrayLike, input_shape: Sequence[int] | None = None, spatial: str = "reverse"
) -> np.ndarray:
    """Knet dense weight `(out, in)` -> Keras `Dense` kernel `(in, out)`.

    When the Dense follows a conv output flattened with Knet's `mat`, pass `input_shape`, the
    Julia size of one sample before `mat` (e.g. `(X1, X2, C)`): Knet orders features with X1
    fastest, Keras `Flatten` on NHWC with C fastest, so the rows are permuted, not just
    transposed. Without `input_shape` the kernel is only transposed.

    >>> dense_to_tf(np.zeros((10, 60)), input_shape=(5, 4, 3)).shape
    (60, 10)
    """
    a, shape = _dense_operands(w, "dense weight", input_shape, spatial, in_axis=1)
    if shape is None:
        return _transpose_copy(a, [1, 0])  # a copy even when a.T is already C-contiguous
    n_out, n_in = a.shape
    nd = len(shape) - 1
    # Column-major feature index over (X1, ..., Xd, C) == C-order index over (C, Xd, ..., X1)
    # (docs/layout.md#flatten-order, #dense-after-conv).
    w5 = a.reshape((n_out, *shape[::-1]))  # axes: out, C, Xd, ..., X1
    # Julia spatial axis j sits at position 1 + (nd - j) in w5; channel at 1.
    tf_spatial = [1 + nd - j for j in _spatial_order(nd, spatial)]
    perm = [*tf_spatial, 1, 0]
    return _transpose_copy(w5, perm).reshape(n_in, n_out)


def dense_from_tf(
    kernel: ArrayLike, input_shape: Sequence[int] | None = None, spatial: str = "reverse"
) -> np.ndarray:
    """Keras `Dense` kernel `(in, out)` -> Knet dense weight `(out, in)` (inverse of `dense_to_tf`).

    >>> dense_from_tf(np.zeros((60, 10)), input_shape=(5, 4, 3)).shape
    (10, 60)
    """
    a, shape = _dense_operands(kernel, "dense kernel", input_shape, spatial, in_axis=0)
    if shape is None:
        return _transpose_copy(a, [1, 0])  # a copy even when a.T is already C-contiguous
    n_in, n_out = a.shape
    nd = len(shape) - 1
    order = _spatial_order(nd, spatial)
    tf_shape = [shape[j] for j in order] + [shape[-1], n_out]
    k = a.reshape(tf_shape)  # axes: TF spatial..., C, out
    # target axes: out, C, Xd, ..., X1
    perm = [nd + 1, nd] + [order.index(j) for j in range(nd - 1, -1, -1)]
    return _transpose_copy(k, perm).reshape(n_out, n_in)
