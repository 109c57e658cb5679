"""Knet's array operations, with Knet's exact semantics and defaults.

Arrays in and out are Julia-indexed: the shape is Julia's `size()`, e.g. `(X1, X2, C, N)`, and
element `[i-1, j-1, ...]` is Julia's `[i, j, ...]`; C- and Fortran-ordered inputs are both
accepted. Results (`KnetResult`, an ndarray) have the input's dtype and remember the backend
that computed them (`result.backend`).

`conv4` defaults to `mode=0`, which is **true convolution** (the kernel rotated 180 degrees);
TensorFlow, Keras and PyTorch compute cross-correlation, Knet's `mode=1` (docs/knet.md#flip).

>>> import numpy as np
>>> conv4(np.ones((3, 3, 2, 4), np.float32), np.ones((8, 6, 2, 5), np.float32), padding=1).shape
(8, 6, 4, 5)
"""

from __future__ import annotations

from porting.knet._backends import BACKEND_CHOICES, KnetResult
from porting.knet.ops import (
    conv4,
    deconv4,
    mat,
    pool,
    run_conv4,
    run_deconv4,
    run_grouped_conv4,
    run_pool,
)

__all__ = [
    "conv4",
    "deconv4",
    "pool",
    "mat",
    "run_conv4",
    "run_deconv4",
    "run_grouped_conv4",
    "run_pool",
    "KnetResult",
    "BACKEND_CHOICES",
    "backend_name",
]


def backend_name(backend: str = "auto") -> str:
    """The implementation `backend` picks, as a call would pick it ("reference" for the NumPy
    reimplementation, "julia" / "julia-nnlib" / "worker" for Knet), without running anything
    and never downloading."""
    from porting.knet._backends import resolve

    return resolve(backend).name
