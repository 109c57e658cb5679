"""Axis-permuting copies (the work behind every layout converter).

`transpose_copy(a, perm)` returns the same array as `np.ascontiguousarray(a.transpose(perm))`
(same values, bytes, dtype and shape, C-contiguous) but always a fresh copy, and for large
arrays faster: on one core 0.9-2x NumPy's own strided copy (2x for 3 channels or 2048-byte
strides), up to about twice that again when a second core is free
(benchmarks/bench_layout.py). NumPy does all the copying; this module only decides the order:

1. The permuted view is reduced to its minimal form: size-1 axes are dropped and neighbouring
   axes that stay adjacent in the source's memory are merged. A Knet activation
   `(X1, X2, C, N)` going to TensorFlow's `(N, H, W, C)` becomes, per image, one 2-D transpose
   `(C, X2*X1) -> (X2*X1, C)`.
2. NumPy copies a block in destination order: its inner loop runs along the destination's last
   axis and reads the source with a stride. That is fast while the source lines one inner loop
   touches stay in L1 until the next steps reuse them. The plan checks this with a small model
   of L1 (64 sets of 12 lines; power-of-two strides pile lines onto a few sets) and picks:
   - "rows": source and destination share their contiguous axis; copy runs of rows.
   - "staged": copy each tile first into a scratch buffer (as runs along the source's fastest
     axis, padded to an odd number of cache lines), then transpose from there. Used where
     NumPy's order fits L1 anyway (the runs then stream from memory: up to 1.35x faster), where
     only tiny blocks would fit (a 2048-byte stride) and for 3-axis permutations (two copies
     with long inner loops instead of one with short).
   - "blocked": cut the inner axes into blocks that fit, tiles of about `_TILE_BYTES`.
   - "natural": NumPy's own order, in large chunks (for threads).
   A short destination axis (e.g. 3 channels) is copied one index at a time, so that NumPy's
   inner loop runs over the long axis instead of over 3 elements. A plan that would need too
   many small calls falls back to NumPy's plain copy ("plain"), cut into a few chunks.
3. Tiles are split over a few threads; NumPy releases the GIL while it copies.

It is a pure copy: every dtype, any permutation, NaN payloads and -0.0 are preserved bit for bit.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = ["transpose_copy"]

# Below this many bytes NumPy's own copy wins (no planning, no thread hand-off) ...
_MIN_BYTES = 1 << 20
# ... and below this many, one thread (handing tiles to another costs more than it saves).
_THREAD_BYTES = 8 << 20
# Bytes per tile when blocking ("blocked", "staged"): large enough that Python's ~1 us per call
# is small next to the copy, small enough that the tile and its scratch stay in L2.
_TILE_BYTES = 128 << 10
# Source bytes per tile staged in one go when NumPy's order would fit L1 anyway (about L2) ...
_STAGE_BYTES = 1 << 20
# ... when NumPy's order reads fewer than this many source rows side by side, or rows shorter
# than this many bytes.
_STAGE_STREAMS = 256
_STAGE_ROW_BYTES = 512
# Bytes per chunk when NumPy's own order is kept ("natural", "rows").
_CHUNK_BYTES = 2 << 20
# L1 data cache model: 64-byte lines, 64 sets of 12 ways (48 KiB, x86 since ~2019; older 8-way
# L1s lose a little, never correctness).
_LINE = 64
_L1_SETS = 64
_L1_WAYS = 12
# Source lines kept "in flight" between reuses, at most (L1 holds 512-768).
_MAX_LINES = 512
# "blocked" needs at least this many elements per inner step; else "staged".
_MIN_INNER = 64
# Destination last axes shorter than this are copied one index at a time ...
_SHORT_INNER = 16
# ... in tiles whose destination (revisited once per index) spans at most this many bytes.
_REPEAT_BYTES = 4 << 20
# NumPy's own order is kept when one outer step reads at most this many source bytes (L2 reuse).
_L2_REUSE = 256 << 10
# Planning is refused (NumPy's plain copy is used) when tiles would average fewer elements.
_MIN_TILE_ELEMS = 2048

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()


def transpose_copy(a, perm, *, threads: int | None = None) -> np.ndarray:
    """Return a C-contiguous copy of `a.transpose(perm)`, never a view of `a`.

    Bit-identical to `np.ascontiguousarray(a.transpose(perm))` for every dtype and
    permutation. `threads` caps the worker threads (default: the `PORTING_THREADS` environment
    variable, else up to 4, limited by the CPUs this process may run on).

    >>> transpose_copy(np.arange(6).reshape(2, 3), (1, 0))
    array([[0, 3],
           [1, 4],
           [2, 5]])
    """
    workers = _threads(threads)  # a bad setting is an error whatever the array
    v = np.asarray(a).transpose(perm)  # validates perm exactly as NumPy does
    if v.dtype.hasobject:
        return v.copy(order="C")
    out = aligned_empty(v.shape, v.dtype)
    if v.nbytes < _MIN_BYTES or v.flags.c_contiguous:
        np.copyto(out, v)
        return out
    shape, strides = _reduce(v.shape, v.strides)
    src = np.lib.stride_tricks.as_strided(v, shape, strides, writeable=False)
    dst = out.reshape(shape)
    src, dst = _widen(src, dst)
    plan = _plan(dst.shape, src.strides, src.itemsize)
    if v.nbytes < _THREAD_BYTES:
        workers = 1
    _run(plan, dst, src, min(workers, len(plan.tiles)))
    return out


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Plan:
    kind: str  # "rows", "natural", "blocked", "staged" or "plain"
    blocks: tuple[int, ...]
    tiles: tuple
    scratch_strides: tuple[int, ...] | None = None  # "staged": bytes, per axis
    scratch_bytes: int = 0


def _reduce(shape, strides) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Drop size-1 axes and merge axes that are adjacent in both source and (C-order) result."""
    s: list[int] = []
    t: list[int] = []
    for n, st in zip(shape, strides, strict=True):
        if n == 1:
            continue
        if s and t[-1] == st * n:
            s[-1] *= n
            t[-1] = st
        else:
            s.append(n)
            t.append(st)
    return tuple(s), tuple(t)


def _widen(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """When both sides share a short contiguous last axis (2, 4 or 8 bytes in all), copy each
    such run as one unsigned integer: one axis less, and a longer inner loop."""
    if src.ndim < 2 or src.strides[-1] != src.itemsize or src.shape[-1] < 2:
        return src, dst
    nbytes = src.shape[-1] * src.itemsize
    if nbytes not in (2, 4, 8):
        return src, dst
    u = np.dtype(f"u{nbytes}")
    return src.view(u)[..., 0], dst.view(u)[..., 0]


def _balanced(n: int, cap: int, multiple: int = 1) -> int:
    """A block <= cap splitting n into equal-ish pieces, rounded up to `multiple` when it can
    be (49 with cap 16 -> 13; 196 with cap 24, multiple 16 -> 16)."""
    cap = max(1, min(n, cap))
    if cap == n:
        return n
    b = -(-n // -(-n // cap))
    if multiple > 1 and cap >= multiple:
        b = max(multiple, b - b % multiple)
    return b


def _fits(strides, blocks, axes, conflicts: bool = True) -> bool:
    """Whether the source lines one step of the loops over `axes` (with these blocks) touches
    fit L1 together, set by set when `conflicts`."""
    count = math.prod(blocks[ax] for ax in axes)
    if count > 64 * _MAX_LINES:  # more lines than L1 holds, unless strides are 0: not worth it
        return False
    off = np.zeros(1, dtype=np.int64)
    for ax in axes:
        step = np.arange(blocks[ax], dtype=np.int64) * strides[ax]
        off = (off[:, None] + step[None, :]).ravel()
    lines = np.unique(off // _LINE)
    if lines.size > _MAX_LINES:
        return False
    return not conflicts or int(np.bincount(lines % _L1_SETS).max()) <= _L1_WAYS


def _grow(shape, strides, blocks, inner, per_line, conflicts) -> None:
    """Largest blocks for the inner axes (innermost first) whose lines fit L1."""
    last = len(shape) - 1
    for ax in reversed(inner):
        mult = per_line if ax == last else 1
        cap = shape[ax]
        best = 1
        while cap >= 1:
            blocks[ax] = _balanced(shape[ax], cap, mult)
            if _fits(strides, blocks, inner, conflicts):
                best = blocks[ax]
                break
            cap //= 2
        blocks[ax] = best
        if best < shape[ax]:
            return  # axes further out stay at 1


def _fill_outer(shape, blocks, upto: int, elems: int, budget: int) -> None:
    for ax in range(upto - 1, -1, -1):
        blocks[ax] = min(shape[ax], max(1, budget // elems))
        elems *= blocks[ax]


@functools.lru_cache(maxsize=64)
def _plan(shape: tuple, strides: tuple, itemsize: int) -> _Plan:
    """How to copy: tiles and their kind (cached: converters see the same shapes again)."""
    nd = len(shape)
    if nd <= 1:
        return _finish("rows", shape, list(shape))
    last = nd - 1
    per_line = max(1, _LINE // itemsize)
    tile = max(1, _TILE_BYTES // itemsize)
    chunk = max(1, _CHUNK_BYTES // itemsize)
    blocks = [1] * nd
    r = min(range(nd), key=lambda i: (abs(strides[i]), -i))  # the source's fastest axis
    if r == last:
        # Rows run contiguously on both sides: NumPy copies rows, several rows per call.
        blocks[last] = shape[last]
        _fill_outer(shape, blocks, last, shape[last], chunk)
        return _finish("rows", shape, blocks)
    inner = list(range(r + 1, nd))
    reps = 1
    if shape[last] < _SHORT_INNER and shape[last - 1] >= _SHORT_INNER:
        # Copied one index at a time, so that NumPy's inner loop runs along the next axis; the
        # passes revisit the same destination lines, so tiles are `reps` times smaller.
        inner.remove(last)
        reps = shape[last]
        tile = chunk = max(per_line, _REPEAT_BYTES // itemsize // reps)
    full = [1] * nd
    for ax in inner:
        full[ax] = shape[ax]
    dense = bool(inner) and abs(strides[inner[-1]]) < _LINE  # the inner loop reads whole lines
    reuse = shape[r] * math.prod(full) * reps * itemsize  # source bytes per outer index
    l2_reuse = reuse <= _L2_REUSE and shape[inner[-1] if inner else r] >= _MIN_INNER
    l1_fits = bool(inner) and _fits(strides, full, inner)
    streams = math.prod(full)  # source rows NumPy's order reads side by side
    stage_pays = streams < _STAGE_STREAMS or shape[r] * itemsize < _STAGE_ROW_BYTES
    if (l1_fits or l2_reuse) and stage_pays and not dense and reps == 1 and shape[r] >= per_line:
        # NumPy's order would do, but reading the source as long runs first (into an L2-sized
        # scratch) and transposing from there is faster when NumPy's order reads fewer rows
        # side by side or short rows (measured: 0.7-0.96x the time; 1.04-1.10x otherwise).
        stage = max(1, _STAGE_BYTES // itemsize)
        for ax in inner:
            blocks[ax] = shape[ax]
        blocks[r] = _balanced(shape[r], max(per_line, stage // math.prod(full)), per_line)
        _fill_outer(shape, blocks, r, math.prod(blocks), stage)
        return _staged(shape, blocks, r, itemsize)
    if not inner or dense or l2_reuse or l1_fits:
        # NumPy's own order: what the inner loop reads stays in L1, or at least in L2.
        for ax in inner:
            blocks[ax] = shape[ax]
        blocks[r] = _balanced(shape[r], max(per_line, chunk // math.prod(full)), per_line)
        _fill_outer(shape, blocks, r, math.prod(blocks), chunk)
        return _finish("natural", shape, blocks)
    _grow(shape, strides, blocks, inner, per_line, conflicts=True)
    step = math.prod(blocks[ax] for ax in inner)
    kind = "blocked"
    if reps == 1 and shape[r] >= per_line and (len(inner) > 1 or step < _MIN_INNER):
        # Stage through scratch: set conflicts would leave tiny blocks, or several inner axes
        # would give NumPy short inner loops.
        for ax in inner:
            blocks[ax] = 1
        _grow(shape, strides, blocks, inner, per_line, conflicts=False)
        step = math.prod(blocks[ax] for ax in inner)
        kind = "staged"
    if kind == "staged":
        chunk = max(1, _STAGE_BYTES // itemsize)
    blocks[r] = _balanced(shape[r], max(per_line, tile // step), per_line)
    if all(blocks[ax] == shape[ax] for ax in [r, *inner]):
        _fill_outer(shape, blocks, r, math.prod(blocks), chunk)  # whole outer steps
    else:
        _fill_outer(shape, blocks, r, math.prod(blocks), tile)
    if kind == "staged":
        return _staged(shape, blocks, r, itemsize)
    return _finish(kind, shape, blocks)


def _staged(shape, blocks, r: int, itemsize: int) -> _Plan:
    plan = _finish("staged", shape, blocks)
    if plan.kind == "staged":
        strides, nbytes = _scratch_layout(blocks, r, itemsize)
        plan = replace(plan, scratch_strides=strides, scratch_bytes=nbytes)
    return plan


def _finish(kind, shape, blocks) -> _Plan:
    per_axis: list[Sequence] = []
    for n, b in zip(shape, blocks, strict=True):
        if b == 1 and n > 1:
            per_axis.append(range(n))
        else:
            per_axis.append([slice(i, min(i + b, n)) for i in range(0, n, b)])
    count = math.prod(len(p) for p in per_axis)
    if count > 1 and count * _MIN_TILE_ELEMS > math.prod(shape):
        # Too many small calls: NumPy's plain copy, cut along the first axis for threads.
        n = shape[0]
        step = -(-n // min(n, 8))
        tiles = [(slice(i, min(i + step, n)),) for i in range(0, n, step)]
        return _Plan("plain", tuple(blocks), tuple(tiles))
    return _Plan(kind, tuple(blocks), tuple(itertools.product(*per_axis)))


def _pad(nbytes: int) -> int:
    """Round a stride up to an odd number of cache lines (rows then spread over all L1 sets)."""
    if nbytes < _LINE:
        return nbytes
    lines = -(-nbytes // _LINE)
    return (lines + 1 - lines % 2) * _LINE


def _scratch_layout(blocks, r: int, itemsize: int) -> tuple[tuple[int, ...], int]:
    """Byte strides of a scratch tile: destination order with r moved innermost.

    Source -> scratch then copies runs along r (contiguous on both sides), and scratch ->
    destination is a 2-D transpose whose inner loop runs over all the axes after r at once
    (they are contiguous in scratch, and in the destination when their blocks are full). Only
    the stride after r is padded, to keep set conflicts away.
    """
    order = [ax for ax in range(len(blocks)) if ax != r] + [r]  # slowest first
    out = [0] * len(blocks)
    size = itemsize
    for ax in reversed(order):
        out[ax] = size
        size *= blocks[ax]
        if ax == r:
            size = _pad(size)
    return tuple(out), size


# --------------------------------------------------------------------------- running


def _threads(requested: int | None) -> int:
    """The number of threads to copy with: `threads=`, else PORTING_THREADS, else up to 4."""
    from porting import settings

    if requested is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return settings.count("PORTING_THREADS", min(4, cpus))
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
        raise PortingError(f"threads={requested!r}: expected a positive integer")
    return int(requested)


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="porting-copy")
            _pool_size = workers
        return _pool


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """`np.empty(shape, dtype)` starting on a 64-byte boundary (a cache line; the alignment
    TensorFlow needs to take an array's memory as it is: porting.model.keras_graph)."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    buf = np.empty(nbytes + _LINE, dtype=np.uint8)
    skip = -address(buf) % _LINE
    return buf[skip : skip + nbytes].view(dt).reshape(shape)


def address(a: np.ndarray) -> int:
    """Where `a`'s first element lies in memory (cheaper than `a.ctypes.data`)."""
    addr: int = a.__array_interface__["data"][0]
    return addr


def _scratch(nbytes: int) -> np.ndarray:
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes + _LINE, dtype=np.uint8)
        _local.buf = buf
    skip = (-buf.ctypes.data) % _LINE  # start on a cache line
    return buf[skip:]


def _copy_tiles(plan: _Plan, tiles, dst: np.ndarray, src: np.ndarray) -> None:
    """Copy the tiles `tiles` yields (an iterator shared between threads, or a list)."""
    copyto = np.copyto
    if plan.kind != "staged":
        for idx in tiles:
            copyto(dst[idx], src[idx])
        return
    assert plan.scratch_strides is not None
    sstrides = plan.scratch_strides
    buf = _scratch(plan.scratch_bytes)
    base = np.ndarray((1,), dtype=src.dtype, buffer=buf)  # carries dtype and data pointer
    views: dict = {}  # scratch view per tile shape (edge tiles are smaller)
    for idx in tiles:
        d = dst[idx]
        view = views.get(d.shape)
        if view is None:
            strides = [st for st, i in zip(sstrides, idx, strict=True) if type(i) is not int]
            view = views[d.shape] = np.lib.stride_tricks.as_strided(base, d.shape, strides)
        copyto(view, src[idx])  # runs along the source's fastest axis
        copyto(d, view)  # the transpose, from L1/L2 without set conflicts


class _Shared:
    """An iterator over tiles that several threads can draw from."""

    def __init__(self, tiles):
        self._it = iter(tiles)
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            return next(self._it)


def _run(plan: _Plan, dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    """Copy every tile of `plan`, on `threads` threads (this one included)."""
    if threads == 1:
        _copy_tiles(plan, plan.tiles, dst, src)
        return
    # Threads draw tiles from one queue: a thread that gets no CPU (a busy machine) leaves its
    # share to the others instead of holding everyone up.
    shared = _Shared(plan.tiles)
    pool = _executor(threads - 1)
    futures = [pool.submit(_copy_tiles, plan, shared, dst, src) for _ in range(threads - 1)]
    _copy_tiles(plan, shared, dst, src)
    for f in futures:
        if not f.cancel():  # a helper that never started (pool busy elsewhere) is not awaited
            f.result()


# --------------------------------------------------------------------------- conv kernels

_KERNEL_MIN_BYTES = 1 << 18  # below this NumPy's single copy wins
_KERNEL_TILE_ELEMS = 1 << 15  # elements per tile: source and destination stay in L1/L2


def kernel_copy(v: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """C-contiguous copy of a kernel view `(taps..., Cin, Cout)` whose Cout stride is large
    (a Knet kernel `(W..., Cin, Cout)`, Fortran-ordered, permuted and possibly rotated).

    The destination is written along Cout, where the source's stride is a whole `(W..., Cin)`
    slab; each tile takes a block of Cout and enough Cin that its source lines are reused from
    L1, and the tiles are shared out over the copy threads. Bit-exact (NumPy copies).
    """
    if v.nbytes < _KERNEL_MIN_BYTES:
        return np.array(v, order="C", copy=True)  # always a copy, even of a contiguous view
    out = np.empty(v.shape, dtype=v.dtype)
    cin, cout = v.shape[-2], v.shape[-1]
    taps = int(np.prod(v.shape[:-2]))
    bo = min(cout, 16)
    bi = max(1, min(cin, _KERNEL_TILE_ELEMS // (bo * taps)))
    tiles = [
        (slice(i, i + bi), slice(o, o + bo)) for o in range(0, cout, bo) for i in range(0, cin, bi)
    ]
    n = min(_threads(threads), len(tiles))
    if n <= 1:
        _kernel_tiles(out, v, tiles)
        return out
    # Threads draw tiles from one queue (as in `_run`): on a busy machine a thread that gets no
    # CPU leaves its share to the others instead of holding the copy up (a static split made
    # the caller wait for it).
    shared = _Shared(tiles)
    pool = _executor(n - 1)
    futures = [pool.submit(_kernel_tiles, out, v, shared) for _ in range(n - 1)]
    _kernel_tiles(out, v, shared)
    for f in futures:
        if not f.cancel():  # a helper that never started (pool busy elsewhere) is not awaited
            f.result()
    return out


def _kernel_tiles(out: np.ndarray, v: np.ndarray, tiles) -> None:
    """Copy the `(Cin block, Cout block)` tiles `tiles` yields (a list or a `_Shared`)."""
    copyto = np.copyto
    for ci, co in tiles:
        copyto(out[..., ci, co], v[..., ci, co])
