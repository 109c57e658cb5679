"""Knet weights -> Keras weights, fast: one pass over each kernel, no intermediate copies.

`kernel_to_keras(w, mode, spatial)` returns exactly `porting.layout.kernel_to_tf(w, mode,
spatial)` (bit for bit; tests check it) but builds the result in one copy: the mode-0 rotation
and the axis permutation are both expressed as a strided *view* of `w`, and that view is copied
in cache-sized tiles (all kernel taps x a block of input channels x a block of output channels),
split over a few threads (NumPy releases the GIL while it copies). `porting.layout` copies
twice for mode 0 (transpose, then flip) and copies in NumPy's default order, whose source
stride along the output channels is a whole `(W..., Cin)` slab.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from porting import layout
from porting._checks import as_float_array, check_choice

__all__ = ["kernel_to_keras", "dense_to_keras"]

_MIN_BYTES = 1 << 18  # below this NumPy's single copy wins
_TILE_ELEMS = 1 << 15  # elements per tile: source and destination stay in L1/L2
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="porting-weights")
    return _pool


def _threads() -> int:
    env = os.environ.get("PORTING_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(4, os.cpu_count() or 1))


def _kernel_view(w: np.ndarray, mode: int, spatial: str) -> np.ndarray:
    """`kernel_to_tf(w, mode, spatial)` as a view of `w` (no copy)."""
    nd = w.ndim - 2
    order = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
    v = w.transpose([*order, nd, nd + 1])
    if mode == 0:
        flip: tuple = (*([slice(None, None, -1)] * nd), Ellipsis)
        v = v[flip]
    return v


def kernel_to_keras(w, mode: int = 0, spatial: str = "reverse") -> np.ndarray:
    """Knet kernel `(W1, ..., Cin, Cout)` -> Keras `(H, W, Cin, Cout)` (C-contiguous copy);
    identical to `porting.layout.kernel_to_tf`.

    >>> w = np.asfortranarray(np.arange(8.0).reshape(2, 2, 1, 2))
    >>> (kernel_to_keras(w) == layout.kernel_to_tf(w)).all()
    np.True_
    """
    check_choice(mode, "mode", (0, 1))
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    w = as_float_array(w, "kernel", ndim=(3, 4, 5))
    v = _kernel_view(w, mode, spatial)
    if v.nbytes < _MIN_BYTES:
        return np.ascontiguousarray(v)
    out = np.empty(v.shape, dtype=v.dtype)
    cin, cout = v.shape[-2], v.shape[-1]
    taps = int(np.prod(v.shape[:-2]))
    # Destination (taps, Cin, Cout) is written along Cout; the source's Cout stride is large,
    # so a tile takes a block of Cout and enough Cin that its source rows are reused from L1.
    bo = min(cout, 16)
    bi = max(1, min(cin, _TILE_ELEMS // (bo * taps)))
    tiles = [
        (slice(i, i + bi), slice(o, o + bo)) for o in range(0, cout, bo) for i in range(0, cin, bi)
    ]
    n = min(_threads(), len(tiles))

    def run(part):
        copyto = np.copyto
        for ci, co in part:
            copyto(out[..., ci, co], v[..., ci, co])

    if n <= 1:
        run(tiles)
    else:
        step = -(-len(tiles) // n)
        parts = [tiles[k : k + step] for k in range(0, len(tiles), step)]
        futures = [_executor().submit(run, p) for p in parts[1:]]
        run(parts[0])
        for f in futures:
            f.result()
    return out


def dense_to_keras(w, input_shape=None, spatial: str = "reverse") -> np.ndarray:
    """Knet dense weight `(out, in)` -> Keras kernel `(in, out)`, rows permuted to Keras'
    `Flatten` order when `input_shape` (Julia size before `mat`) is given: `porting.layout`."""
    return layout.dense_to_tf(w, input_shape=input_shape, spatial=spatial)
