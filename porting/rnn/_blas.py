"""One BLAS thread for the calling thread, where NumPy's OpenBLAS allows it.

A recurrent layer runs one small GEMM per time step (`(B, H) @ (H, gates*H)`). OpenBLAS splits
each one over all its threads and spin-waits for them, which costs more than it gains for such
small products, and many times more on a loaded machine (measured on 2 shared cores: 0.2 ms per
step on one thread, 1 to 5 ms on two). OpenBLAS >= 0.3.27 has `openblas_set_num_threads_local`,
which changes the count for the calling thread only; elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os

import numpy as np

SMALL_GEMM = 1 << 24
"""Multiply-adds per step below which the time loop runs BLAS on one thread."""


@functools.lru_cache(maxsize=1)
def _local_setter():
    base = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in ("numpy.libs/libscipy_openblas*", "numpy/.dylibs/libscipy_openblas*"):
        for path in sorted(glob.glob(os.path.join(base, pattern))):
            try:
                fn = ctypes.CDLL(path).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int]
            return fn
    return None


@contextlib.contextmanager
def single_thread(macs_per_step: int):
    """Run the block with one BLAS thread (this thread only) if each step's GEMM is small."""
    fn = _local_setter() if macs_per_step < SMALL_GEMM else None
    if fn is None:
        yield
        return
    prev = fn(1)
    try:
        yield
    finally:
        fn(prev)
