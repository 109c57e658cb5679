"""The reference conv4/deconv4 on several threads (porting.knet.reference: image batches, or one
image's row batches, shared between threads, each with the BLAS kept to one thread): the same
bits as on the calling thread alone, and within the float32 tolerance of the PyTorch float64
oracle (tests/knet_torch.py, itself checked against NNlib's golden vectors)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from porting import compare
from porting.knet import conv4, deconv4
from porting.knet import reference as ref

torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
threadpoolctl = pytest.importorskip("threadpoolctl", reason="threads need threadpoolctl")

import knet_torch as K  # noqa: E402  (tests/ is on sys.path; needs torch)

F32 = np.float32

CASES = {  # name: (w size, x size, keywords); threaded below the size threshold (set to 1)
    "batches": ((3, 3, 16, 24), (20, 18, 16, 6), dict(padding=1)),
    "one-image-rows": ((7, 7, 3, 8), (120, 200, 3, 1), dict(padding=3)),  # > _COL_BYTES
    "strided-dilated": ((3, 3, 8, 16), (33, 31, 8, 12), dict(padding=2, stride=2, dilation=2)),
    "crosscorrelation-3d": ((3, 3, 3, 4, 8), (14, 12, 10, 4, 3), dict(padding=1, mode=1)),
}


def _single(monkeypatch):
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1 << 62)


def _blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


@pytest.mark.parametrize("name", CASES)
def test_threaded_conv4_is_bitwise_the_single_threaded_one(name, monkeypatch):
    wsize, xsize, kw = CASES[name]
    rng = np.random.default_rng(11)
    w = np.asfortranarray(rng.standard_normal(wsize, dtype=F32))
    x = np.asfortranarray(rng.standard_normal(xsize, dtype=F32))
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1)  # threaded whatever the size
    used = []
    real = ref._run_jobs
    monkeypatch.setattr(
        ref, "_run_jobs", lambda work, jobs, n: used.append(n) or real(work, jobs, n)
    )
    before = _blas_threads()
    y = conv4(w, x, backend="reference", **kw)
    assert _blas_threads() == before  # the BLAS's own limit is restored
    assert used and (used[0] > 1 or ref._workers(99, 1 << 40) == 1)  # threaded where it can be
    _single(monkeypatch)
    y1 = conv4(w, x, backend="reference", **kw)
    np.testing.assert_array_equal(y, y1)
    want = K.conv4(w.astype(np.float64), x.astype(np.float64), **kw)
    k = int(np.prod(wsize[:-1]))
    mag = K.conv4(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), **kw)
    assert compare(want, y, k=k, magnitude=mag).ok


def test_threaded_deconv4_matches_torch(monkeypatch):
    rng = np.random.default_rng(12)
    w = np.asfortranarray(rng.standard_normal((5, 5, 24, 16), dtype=F32))  # (W.., Cy, Cx)
    x = np.asfortranarray(rng.standard_normal((20, 22, 16, 5), dtype=F32))
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1)
    y = deconv4(w, x, padding=2, backend="reference")
    _single(monkeypatch)
    np.testing.assert_array_equal(y, deconv4(w, x, padding=2, backend="reference"))
    want = K.deconv4(w.astype(np.float64), x.astype(np.float64), padding=2)
    mag = K.deconv4(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), padding=2)
    assert compare(want, y, k=5 * 5 * 16, magnitude=mag).ok


def test_concurrent_callers_share_one_blas_limit():
    """Convolutions called from several threads at once: every result right, the BLAS's limit
    restored when the last one ends."""
    rng = np.random.default_rng(13)
    w = np.asfortranarray(rng.standard_normal((3, 3, 16, 24), dtype=F32))
    xs = [np.asfortranarray(rng.standard_normal((20, 18, 16, 6), dtype=F32)) for _ in range(4)]
    want = [conv4(w, x, padding=1, backend="reference") for x in xs]
    ref._MIN_THREADED_MACS, saved = 1, ref._MIN_THREADED_MACS
    before = _blas_threads()
    got: dict[int, np.ndarray] = {}

    def run(i):
        for _ in range(3):
            got[i] = conv4(w, xs[i], padding=1, backend="reference")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:
        ref._MIN_THREADED_MACS = saved
    for i, y in enumerate(want):
        np.testing.assert_array_equal(got[i], y)
    assert _blas_threads() == before
