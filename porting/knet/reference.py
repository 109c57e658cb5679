"""NumPy reimplementation of Knet's CPU arithmetic (Knet 1.4.10 -> NNlib; docs/knet.md#conv4,
#nnlib-versions).

Arrays in and out are Julia-indexed (shape = Julia's `size()`). Internally a Julia array of size
`(X1, ..., Xd, C, N)` is handled as its transpose, a C-ordered `(N, C, Xd, ..., X1)` array with
the same bytes, so the usual Fortran-ordered input costs no copy. Results are returned
Fortran-ordered, like Julia's.

Nothing here imports TensorFlow: this is what TensorFlow is checked against.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from porting.geometry import (
    ConvDims,
    ConvGeometry,
    PoolDims,
    PoolGeometry,
    as_conv_dims,
    as_pool_dims,
)
from porting.knet import mlas

NAME = "reference"
DESCRIPTION = "NumPy reimplementation of Knet 1.4.10's CPU arithmetic (NNlib im2col + GEMM)"


# How the convolutions run (all on C-ordered `(N, C, Xd..X1)` data, the transpose of Julia's
# arrays). The work is cut into jobs, each a batch of images and a range of output rows along
# Xd; a job pads just the input rows it reads into reusable per-thread memory; then either
# - "shifted GEMMs" (stride 1 along Xd): a column matrix is built over the inner spatial dims
#   only, over all padded rows of Xd. Kernel row i along Xd then reads that matrix shifted by i
#   rows, a strided view that BLAS takes as it is, so the copy is Kd times smaller than a full
#   im2col and the Kd GEMMs are summed (one add each);
# - "im2col" (everything else, or too few channels for the former to give long GEMMs): the full
#   column matrix, one GEMM (for a 1x1 kernel with stride 1, the input itself).
# Both build their column matrices with one copy from a sliding-window view, batched over images
# (or, for big images, output rows) so that a batch is about `_COL_BYTES`, and both write the
# GEMMs straight into the result, whose transpose is the Fortran-ordered Julia-indexed result.
# 1 MiB (a core's L2 on the Zen 4 the benchmark ran on) keeps a job's column matrix in cache
# from its copy to its GEMMs: on one idle core OpenBLAS's sgemm ran these layers' GEMMs about
# 20% slower once the column block passed 3 MB (README "Performance").
_COL_BYTES = 1 << 20
# Shifted GEMMs need a contraction (inner kernel volume x channels) at least this long to run
# BLAS near its peak; below it, the full im2col's single longer GEMM is faster.
_MIN_SHIFT_ROWS = 64


def _scale(y: np.ndarray, alpha: float) -> np.ndarray:
    """Knet's `lmul!(alpha, y)` in place (docs/knet.md#conv4): each product is formed in
    Float64 and rounded once to y's type (the same numbers as
    `(float64(alpha) * float64(y)).astype(y.dtype)`)."""
    if alpha != 1:
        # Overflow to +-Inf is what Knet gives too (e.g. alpha * -floatmax from a max pool).
        with np.errstate(over="ignore"):
            np.multiply(y, np.float64(alpha), out=y, dtype=np.float64, casting="unsafe")
    return y


def _flip_spatial(wt: np.ndarray, nd: int) -> np.ndarray:
    flip: tuple = (Ellipsis, *([slice(None, None, -1)] * nd))
    return wt[flip]


def _chunks(total: int, step: int) -> list[tuple[int, int]]:
    """Split range(total) into about-equal pieces of at most `step` (no small leftover piece)."""
    pieces = -(-total // max(1, step))
    size = -(-total // pieces)
    return [(a, min(total, a + size)) for a in range(0, total, size)]


def _batches(n: int, rows: int, bytes_per_row: int) -> tuple[list, list]:
    """Image batches and output-row batches whose column matrices are about `_COL_BYTES`."""
    per_image = rows * bytes_per_row
    if per_image <= _COL_BYTES:
        return _chunks(n, _COL_BYTES // per_image), [(0, rows)]
    return _chunks(n, 1), _chunks(rows, _COL_BYTES // bytes_per_row)


# Below this many multiply-adds a convolution runs on the calling thread alone: handing work to
# another thread costs tens of microseconds.
_MIN_THREADED_MACS = 8_000_000
# Convolutions are cut into jobs that threads take in turn as they get free: at least
# `_JOBS_PER_THREAD` a thread where there are images enough, and (by shorter row batches) at
# least `_MIN_JOBS` where each keeps `_JOB_MACS` multiply-adds.
_JOBS_PER_THREAD = 4
_MIN_JOBS = 8
_JOB_MACS = 2_000_000


def _workers(jobs: int, macs: int) -> int:
    """Threads for a convolution of `jobs` independent pieces and `macs` multiply-adds:
    PORTING_THREADS, else the usable cores (at most 4), never more than the pieces; one where
    the BLAS's threads cannot be limited (no threadpoolctl), as two pools would fight."""
    if jobs < 2 or macs < _MIN_THREADED_MACS or _blas_controller() is None:
        return 1
    from porting._transpose import _threads

    return max(1, min(jobs, _threads(None)))


def _run_jobs(work, jobs: list, workers: int) -> None:
    """`work(take)` on `workers` threads (the caller's among them), each calling `take()` for
    its next job of `jobs` until it gives None: threads that run faster (a core not shared with
    another process) take more jobs, so a busy core delays the result by one job, not by its
    fixed share. OpenBLAS is kept to one thread of its own meanwhile: each thread then runs its
    column copies and its GEMMs at once, where OpenBLAS's own threads would share out each GEMM
    and leave the copies to one core (and wait on each other at every call). Every job writes
    its own part of the result, computed the same whichever thread runs it."""
    counter = itertools.count()

    def take():
        i = next(counter)  # atomic: one C call under the GIL
        return jobs[i] if i < len(jobs) else None

    if workers == 1:
        # OpenBLAS's own threads share out a GEMM's columns, and where they do its kernels can
        # round otherwise (seen on an AMD EPYC: 58% of a small conv's elements moved by an
        # ULP): one BLAS thread here too, so the bits never depend on the thread count
        with _blas_threads(1):
            work(take)
        return
    from porting._transpose import _executor

    with _blas_threads(1):
        pool = _executor(workers - 1)
        pending = [pool.submit(work, take) for _ in range(workers - 1)]
        try:
            work(take)
        finally:
            for fut in pending:  # one no pool thread has started finds no job left: dropped
                if not fut.cancel():
                    fut.result()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list[tuple[Any, int]] = []
_controller: Any = None


def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (made once), or None without it."""
    global _controller
    if _controller is None:
        try:
            import threadpoolctl
        except ImportError:
            _controller = False
        else:
            _controller = threadpoolctl.ThreadpoolController()
    return _controller or None


def _set_blas_threads(lib: Any, n: int) -> None:
    """Set one BLAS library's thread count from whichever thread calls. threadpoolctl 3.8
    lets only one Python thread (the first that ever sets a limit: the main thread, mostly)
    change OpenBLAS's process-wide count and silently ignores the others, so a convolution
    called from another thread would run its GEMMs on OpenBLAS's own threads, with other bits
    (tests/test_reference_threads.py). `_blas_threads` counts its users under one lock, so the
    fight that rule prevents does not arise here; the library's own setter is called
    (threadpoolctl's unrestricted one where it has it)."""
    setter = getattr(lib, "_real_set_num_threads", None) or lib.set_num_threads
    setter(n)


@contextlib.contextmanager
def _blas_threads(n: int):
    """NumPy's BLAS limited to `n` threads while any convolution runs on its own threads
    (threadpoolctl's view of the libraries). Nested and concurrent uses share one limit,
    restored when the last one ends."""
    global _blas_users, _blas_saved
    controller = _blas_controller()
    with _blas_lock:
        if _blas_users == 0 and controller is not None:
            libs = controller.select(user_api="blas").lib_controllers
            _blas_saved = [(lib, lib.get_num_threads()) for lib in libs]
            for lib, _ in _blas_saved:
                _set_blas_threads(lib, n)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, was in _blas_saved:
                    if was is not None:
                        _set_blas_threads(lib, was)
                _blas_saved = []


class _Scratch(threading.local):
    """Per-thread reusable work memory for the padded input and the column matrices.

    Fresh large arrays on every call cost page faults, and whether glibc hands back recycled or
    new pages depends on the process's allocation history (up to 30% of a conv4 here). Only
    the result is allocated per call; up to `limit` bytes of work memory stay cached per thread.
    """

    limit = 64 << 20
    buf: np.ndarray | None = None

    def arrays(self, dtype: Any, *shapes: tuple[int, ...]) -> list[np.ndarray]:
        """Uninitialised arrays of `shapes`, disjoint, valid until this thread's next call."""
        dtype = np.dtype(dtype)
        sizes = [-(-math.prod(sh) * dtype.itemsize // 64) * 64 for sh in shapes]
        total = sum(sizes)
        buf = self.buf
        if buf is None or buf.size < total:
            buf = np.empty(total, np.uint8)
            if total <= self.limit:
                self.buf = buf
        out, offset = [], 0
        for sh, size in zip(shapes, sizes, strict=True):
            nbytes = math.prod(sh) * dtype.itemsize
            out.append(buf[offset : offset + nbytes].view(dtype).reshape(sh))
            offset += size
        return out


_scratch = _Scratch()


class _Padder:
    """Copies slabs (a batch of images, a range of rows along Xd) into a zero-bordered buffer
    (cropping negative padding): each job pads only the rows its outputs read.

    With nothing to pad and a C-contiguous input, the input's own rows are used instead.
    """

    def __init__(self, xt: np.ndarray, pad: Sequence[int]) -> None:
        crop = tuple(
            slice(-p, xi + p) if p < 0 else slice(None)
            for p, xi in zip(pad, xt.shape[2:], strict=True)
        )
        self.x = xt[(slice(None), slice(None), *crop)]
        self.pos = tuple(max(p, 0) for p in pad)
        self.copy = any(self.pos) or not self.x.flags.c_contiguous
        self.spatial = tuple(xi + 2 * p for xi, p in zip(self.x.shape[2:], self.pos, strict=True))
        self.inner = tuple(  # where the input's inner spatial dims go
            slice(p, p + xi) for p, xi in zip(self.pos[1:], self.x.shape[3:], strict=True)
        )

    def size(self, nb: int, rows: int) -> int:
        """Scratch elements for slabs of `nb` images and `rows` rows (0 when none is copied)."""
        return nb * self.x.shape[1] * rows * math.prod(self.spatial[1:]) if self.copy else 0

    def slab(self, buf: np.ndarray, n0: int, n1: int, a: int, b: int) -> np.ndarray:
        """Rows a..b-1 (padded coordinates, along Xd) of images n0..n1-1, padded, as a
        C-contiguous `(m, C, b - a, ..)` array in the flat `buf` (or a view of the input)."""
        x, pos0, x0 = self.x, self.pos[0], self.x.shape[2]
        if not self.copy:
            return x[n0:n1, :, a:b]
        shape = (n1 - n0, x.shape[1], b - a, *self.spatial[1:])
        xp = buf[: math.prod(shape)].reshape(shape)
        lo, hi = min(max(a, pos0), b), max(min(b, pos0 + x0), a)  # the rows inside the image
        xp[:, :, : lo - a] = 0
        xp[:, :, hi - a :] = 0
        if hi > lo:
            mid = xp[:, :, lo - a : hi - a]
            everything = [slice(None)] * mid.ndim
            for j in range(1, len(self.pos)):
                p, xi = self.pos[j], x.shape[2 + j]
                if p:  # the two borders of inner spatial dim j
                    mid[(*everything[: 2 + j], slice(0, p))] = 0
                    mid[(*everything[: 2 + j], slice(p + xi, None))] = 0
            mid[(slice(None), slice(None), slice(None), *self.inner)] = x[
                n0:n1, :, lo - pos0 : hi - pos0
            ]
        return xp


def _windows(
    xp: np.ndarray,
    dims: range,
    ys: Sequence[int],
    ks: Sequence[int],
    stride: Sequence[int],
    dil: Sequence[int],
) -> np.ndarray:
    """View `(N, C, ..., Y_j..., K_j...)` over spatial `dims` of xp: `xp[..., y*s + k*d, ...]`."""
    if not dims:
        return xp
    kext = [(ks[j] - 1) * dil[j] + 1 for j in dims]
    v = sliding_window_view(xp, kext, axis=tuple(2 + j for j in dims))
    idx = [slice(None)] * xp.ndim + [slice(None, None, dil[j]) for j in dims]
    for j in dims:
        idx[2 + j] = slice(0, (ys[j] - 1) * stride[j] + 1, stride[j])
    return v[tuple(idx)]


def _correlate(
    wt: np.ndarray,
    xt: np.ndarray,
    pad: Sequence[int],
    stride: Sequence[int],
    dil: Sequence[int],
    out: np.ndarray,
) -> np.ndarray:
    """Cross-correlation on C-ordered data, written into `out`: see the note on `_COL_BYTES`.

    `out[n, f, y] = sum over c, k of wt[f, c, k] * x[n, c, y*stride + k*dil - pad]`, x being zero
    outside its bounds (negative `pad` crops). `wt` is `(F, C, Kd..K1)`, `xt` `(N, C, Xd..X1)`,
    `out` a C-contiguous `(N, F, Yd..Y1)` array; tuples are in that same (reversed) order.
    """
    if mlas.correlate(wt, xt, pad, stride, dil, out):  # Float32 on onnxruntime, if it can
        return out
    n, c = xt.shape[:2]
    f, nd = wt.shape[0], xt.ndim - 2
    ks, ys = wt.shape[2:], out.shape[2:]
    yin = math.prod(ys[1:])
    isz = xt.dtype.itemsize
    out3 = out.reshape(n, f, ys[0] * yin)
    padder = _Padder(xt, pad)
    inner = math.prod(ks[1:]) * c  # contraction length of a shifted GEMM
    shifted = stride[0] == 1 and ks[0] > 1 and inner >= _MIN_SHIFT_ROWS
    if shifted:
        # col[b, k_inner.., c, h, y_inner..] = xp[b, c, h, y*s + k*d ...] over all padded rows
        # h; kernel row i along Xd reads it from row i*d on.
        rows, halo = inner, (ks[0] - 1) * dil[0]
        direct = nd == 1 or (all(k == 1 for k in ks[1:]) and all(s == 1 for s in stride[1:]))
        wms = [np.moveaxis(wt[:, :, i], 1, -1) for i in range(ks[0])]
        dims = range(1, nd)
    else:
        # Full im2col: col[b, k.., c, y..] = xp[b, c, y*s + k*d ...].
        rows, halo = math.prod(ks) * c, 0
        direct = all(k == 1 for k in ks) and all(s == 1 for s in stride)  # 1x1: x is col
        wms = [np.moveaxis(wt, 1, -1)]
        dims = range(nd)
    wms = [np.ascontiguousarray(w).reshape(f, rows) for w in wms]
    ext0 = (ks[0] - 1) * dil[0]  # a slab of output rows r0..r1-1 reads input rows
    img, rws = _batches(n, ys[0], rows * yin * isz)  # r0*s .. (r1-1)*s + ext0 (padded)
    macs = n * f * rows * len(wms) * ys[0] * yin
    # Enough jobs for threads to even out their speeds. Shorter row batches (for few images)
    # follow from the sizes alone, never from the thread count: the rows of a job set the
    # GEMMs' shapes, and so possibly the bits of the result; image batches do not.
    want = min(_MIN_JOBS, macs // _JOB_MACS)
    if n * len(rws) < want:
        rws = _chunks(ys[0], min(rws[0][1] - rws[0][0], max(1, ys[0] * n // want)))
    workers = _workers(n * len(rws), macs)
    if workers > 1:  # image batches small enough for each thread to get several
        per = n * len(rws) // (workers * _JOBS_PER_THREAD)
        img = _chunks(n, max(1, min(img[0][1] - img[0][0], per)))
    jobs = [(b, r) for b in img for r in rws]
    nb, rb = img[0][1] - img[0][0], rws[0][1] - rws[0][0]
    hb = (rb - 1) * stride[0] + ext0 + 1  # the most rows a slab holds

    def work(take) -> None:
        xbuf, buf, tmp = _scratch.arrays(
            xt.dtype,
            (padder.size(nb, hb),),
            (0,) if direct else (nb * rows * (rb + halo) * yin,),
            (nb * f * rb * yin,) if len(wms) > 1 else (0,),
        )
        while (job := take()) is not None:
            (n0, n1), (r0, r1) = job
            m = n1 - n0
            xp = padder.slab(xbuf, n0, n1, r0 * stride[0], (r1 - 1) * stride[0] + ext0 + 1)
            view = _windows(xp, dims, (r1 - r0, *ys[1:]), ks, stride, dil)
            part = view.transpose(0, *range(nd + 2, nd + 2 + len(dims)), 1, *range(2, nd + 2))
            h = r1 - r0 + halo
            col: np.ndarray
            if direct:  # the (padded) input itself is the column matrix
                col = part.reshape(m, rows, h * yin)
            else:
                col = buf[: part.size].reshape(part.shape)
                np.copyto(col, part)
                col = col.reshape(m, rows, h * yin)
            p = (r1 - r0) * yin
            o = out3[n0:n1, :, r0 * yin : r1 * yin]
            np.matmul(wms[0], col[:, :, :p], out=o)
            if len(wms) > 1:
                t = tmp[: m * f * p].reshape(m, f, p)
                for i in range(1, len(wms)):
                    s = i * dil[0] * yin
                    np.matmul(wms[i], col[:, :, s : s + p], out=t)
                    np.add(o, t, out=o)

    _run_jobs(work, jobs, workers)
    return out


def conv4(
    w: np.ndarray, x: np.ndarray, geom: ConvGeometry | ConvDims, alpha: float = 1.0
) -> np.ndarray:
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha)`, Julia-indexed in and out.

    `w` and `x` are float ndarrays of one dtype whose shapes fit `geom` (as `porting.knet`
    checks); a `ConvDims` brings its output size, a `ConvGeometry` is bound here. Computed on the transposes (`x.T` is `(N, Cin, Xd..X1)`, C-ordered for Julia's arrays) and
    written into a C-ordered `(N, Cout, Yd..Y1)` array whose transpose is the Fortran-ordered
    Julia-indexed result, so nothing is copied on the way out.
    """
    dims = as_conv_dims(geom, w, x)
    nd = dims.nd
    xt = x.T  # (N, Cin, Xd..X1), C-ordered for Julia's (Fortran-ordered) arrays
    wt = w.T  # (Cout, Cin, Wd..W1)
    if not dims.crosscorrelation:
        wt = _flip_spatial(wt, nd)  # mode 0: true convolution (docs/knet.md#flip)
    ys = dims.y_spatial[::-1]
    out = np.empty((xt.shape[0], wt.shape[0], *ys), dtype=x.dtype)
    _correlate(wt, xt, dims.padding[::-1], dims.stride[::-1], dims.dilation[::-1], out)
    return _scale(out, alpha).T


def grouped_conv4(
    w: np.ndarray, x: np.ndarray, geom: ConvGeometry, alpha: float, groups: int
) -> np.ndarray | None:
    """Ops21's grouped conv4 (`groups` contiguous channel blocks, as NNlib's) in one call on
    onnxruntime's kernels (porting.knet.mlas), Julia-indexed like `conv4`; None where that
    kernel does not take it (Float64, a crop, no onnxruntime, ...): the caller then runs one
    conv4 per group. `w` is `(W..., Cin / groups, Cout)`."""
    ci = x.shape[-2] // groups
    dims = as_conv_dims(geom, w, x[..., :ci, :])  # sizes as one group's conv4 has them
    xt, wt = x.T, w.T
    if not dims.crosscorrelation:
        wt = _flip_spatial(wt, dims.nd)
    out = np.empty((xt.shape[0], wt.shape[0], *dims.y_spatial[::-1]), dtype=x.dtype)
    pad, stride, dil = dims.padding[::-1], dims.stride[::-1], dims.dilation[::-1]
    if not mlas.correlate(wt, xt, pad, stride, dil, out, groups=groups):
        return None
    return _scale(out, alpha).T


def deconv4(
    w: np.ndarray, x: np.ndarray, geom: ConvGeometry | ConvDims, alpha: float = 1.0
) -> np.ndarray:
    """Knet `deconv4(w, x; ...)`: the gradient of conv4 with respect to its input.

    `w` is `(W1, ..., Cy, Cx)` and `x` is `(X1, ..., Cx, N)`; the result is `(Y1, ..., Cy, N)`.
    With stride 1 this is a cross-correlation with the other flip and padding
    `(Wi-1)*dilation - padding` (negative: a crop), run by the conv4 code; with a stride, one
    GEMM per batch gives every kernel offset's contribution, scattered into the strided outputs.
    """
    dims = as_conv_dims(geom, w, x, transposed=True)
    nd = dims.nd
    xt = x.T  # (N, Cx, Xd..X1)
    wt = w.T  # (Cx, Cy, Wd..W1)
    stride = dims.stride[::-1]
    dil = dims.dilation[::-1]
    pad = dims.padding[::-1]
    ksz = wt.shape[2:]
    xs = xt.shape[2:]
    n, cx, cy = xt.shape[0], wt.shape[0], wt.shape[1]
    ys = dims.y_spatial[::-1]
    if all(s == 1 for s in stride):
        # The adjoint of correlating with k is correlating with k rotated 180 degrees
        # (docs/knet.md#deconv4, #flip).
        wc = wt.swapaxes(0, 1)  # (Cy, Cx, Wd..W1)
        if dims.crosscorrelation:
            wc = _flip_spatial(wc, nd)
        out = np.empty((n, cy, *ys), dtype=x.dtype)
        cpad = tuple((k - 1) * d - p for k, d, p in zip(ksz, dil, pad, strict=True))
        _correlate(wc, xt, cpad, stride, dil, out)
        return _scale(out, alpha).T
    if not dims.crosscorrelation:
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
    jobs = _chunks(n, _COL_BYTES // max(1, per_image))
    workers = _workers(n, n * len(offsets) * cy * cx * npos)
    if workers > 1:  # image batches (each its own part of acc) small enough to share out
        per = max(1, min(jobs[0][1] - jobs[0][0], n // (workers * _JOBS_PER_THREAD)))
        jobs = _chunks(n, per)
        workers = min(workers, len(jobs))

    def work(take) -> None:
        while (job := take()) is not None:
            n0, n1 = job
            z = np.matmul(wm, np.reshape(xt[n0:n1], (n1 - n0, cx, npos)))
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

    _run_jobs(work, jobs, workers)
    crop = (slice(None), slice(None), *(slice(p, fl - p) for p, fl in zip(pad, full, strict=True)))
    out = acc if not any(pad) else np.ascontiguousarray(acc[crop])
    return _scale(out, alpha).T


def pool(x: np.ndarray, geom: PoolGeometry | PoolDims, alpha: float = 1.0) -> np.ndarray:
    """Knet `pool(x; window, padding, stride, mode, alpha)` on the CPU.

    Modes 0 and 3: max, padded cells never win, NaN never wins (NNlib compares with `>`), and a
    window holding only NaN/-Inf gives -floatmax (NNlib's starting value), not -Inf.
    Modes 1 and 2: mean dividing by `prod(window)`, padding counted as zeros (Knet's CPU runs
    mode 2 as mode 1). Windows holding only padding (padding >= window, which NNlib computes)
    give -floatmax (max) or 0 (mean). (docs/knet.md#pool, #pool-nan and #padding-beyond-kernel)
    """
    geom = as_pool_dims(geom, x)
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
    if geom.is_max:
        # NNlib's maxpool_direct! starts each window at nextfloat(typemin(T)) = -floatmax and
        # keeps `xv > m`: NaN and -Inf never win, and a window of only those gives -floatmax
        # (docs/knet.md#pool-nan). A max is exact in any order, so it is taken one window
        # offset at a time: one strided slice per offset into the output (3x3 windows: 9
        # passes), several times faster than reducing a strided window view.
        out_size = [(n - w) // st + 1 for n, w, st in zip(xp.shape[2:], win, stride, strict=True)]
        y = np.full((*xp.shape[:2], *out_size), np.finfo(x.dtype).min, dtype=x.dtype)
        for offset in np.ndindex(*win):
            part = xp[
                (
                    slice(None),
                    slice(None),
                    *(
                        slice(o, o + (m - 1) * st + 1, st)
                        for o, m, st in zip(offset, out_size, stride, strict=True)
                    ),
                )
            ]
            np.maximum(y, part, out=y)
        return _scale(np.asfortranarray(y.T), alpha)
    cols = sliding_window_view(xp, win, axis=tuple(range(2, 2 + nd)))
    cols = cols[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    y = cols.sum(axis=axes, dtype=x.dtype) * x.dtype.type(1.0 / np.prod(win))
    return _scale(np.asfortranarray(y.T), alpha)


def mat(x: np.ndarray, dims: int) -> np.ndarray:
    """Knet `mat(x; dims)`: `reshape(x, prod(size(x)[1:dims]), :)` in column-major order
    (docs/knet.md#mat)."""
    rows = int(np.prod(x.shape[:dims])) if dims > 0 else 1
    return np.reshape(x, (rows, -1), order="F")
