"""The reference conv4/deconv4 on several threads (porting.knet.reference: image batches, or one
image's row batches, shared between threads, each with the BLAS kept to one thread): the same
bits as on the calling thread alone, and within the float32 tolerance of the PyTorch float64
oracle (tests/knet_torch.py, itself checked against NNlib's golden vectors). These are NumPy's
kernel's threads: PORTING_CONV_KERNEL=numpy throughout (onnxruntime's: tests/test_mlas.py)."""

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


@pytest.fixture(autouse=True)
def _numpy_kernel(monkeypatch):
    monkeypatch.setenv("PORTING_CONV_KERNEL", "numpy")


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


def test_blas_held_to_one_thread_whichever_thread_calls(monkeypatch):
    """threadpoolctl 3.8 ignores limits set from any Python thread but the first that set one
    (the main thread here, by the first call): a convolution called from another thread still
    runs its GEMMs with OpenBLAS on one thread, and gives the main thread's bits."""
    rng = np.random.default_rng(14)
    w = np.asfortranarray(rng.standard_normal((3, 3, 16, 24), dtype=F32))
    x = np.asfortranarray(rng.standard_normal((20, 18, 16, 6), dtype=F32))
    want = conv4(w, x, padding=1, backend="reference")  # the main thread sets a limit first
    seen: list[list[int]] = []
    real = ref._run_jobs

    def spy(work, jobs, n):
        def counted(take):
            seen.append(_blas_threads())
            return work(take)

        return real(counted, jobs, n)

    monkeypatch.setattr(ref, "_run_jobs", spy)
    before = _blas_threads()
    got = {}
    for threshold in (1 << 62, 1):  # one worker, then several
        monkeypatch.setattr(ref, "_MIN_THREADED_MACS", threshold)
        t = threading.Thread(
            target=lambda: got.update(y=conv4(w, x, padding=1, backend="reference"))
        )
        t.start()
        t.join()
        np.testing.assert_array_equal(got["y"], want)
    assert seen and all(n == [1] * len(n) for n in seen), seen
    assert _blas_threads() == before


# Every job a single output row (or a few), on two threads, against the PyTorch float64 oracle:
# slabs at the top and bottom borders and between, with padding (also beyond the kernel, where
# a slab can hold padding only), strides, dilations, 1-3 spatial dims and both modes.
JOB_CASES = {  # name: (w size, x size, keywords)
    "pad-stride1": ((3, 3, 8, 16), (17, 15, 8, 3), dict(padding=1)),
    "pad-beyond-kernel": ((2, 3, 6, 8), (9, 8, 6, 2), dict(padding=(3, 4))),
    "stride-dilation": (
        (3, 2, 8, 12),
        (21, 19, 8, 3),
        dict(padding=(2, 1), stride=(2, 3), dilation=(1, 2)),
    ),
    "dilated-rows": ((3, 3, 24, 8), (16, 18, 24, 2), dict(padding=2, dilation=(1, 2), mode=1)),
    "1d": ((5, 16, 12), (40, 16, 3), dict(padding=2, stride=1)),
    "1d-strided": ((4, 12, 6), (41, 12, 2), dict(padding=3, stride=3, dilation=2)),
    "3d": ((3, 3, 2, 8, 6), (9, 8, 7, 8, 2), dict(padding=(1, 0, 1), stride=(1, 2, 1))),
    "1x1": ((1, 1, 32, 16), (12, 11, 32, 3), dict()),
}


def _row_jobs(monkeypatch, rows_per_job_small: bool) -> None:
    monkeypatch.setattr(ref, "_JOB_MACS", 1)
    monkeypatch.setattr(ref, "_MIN_JOBS", 10**6 if rows_per_job_small else 5)


@pytest.mark.filterwarnings("ignore:conv4 padding=3 >= kernel extent")
@pytest.mark.parametrize("one_row", [True, False], ids=["one-row", "few-rows"])
@pytest.mark.parametrize("name", JOB_CASES)
def test_row_jobs_on_threads_match_torch(name, one_row, monkeypatch):
    wsize, xsize, kw = JOB_CASES[name]
    rng = np.random.default_rng(14)
    w = np.asfortranarray(rng.standard_normal(wsize, dtype=F32))
    x = np.asfortranarray(rng.standard_normal(xsize, dtype=F32))
    _row_jobs(monkeypatch, one_row)
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1)
    jobs: list = []
    real = ref._run_jobs
    monkeypatch.setattr(
        ref, "_run_jobs", lambda work, todo, n: jobs.append((todo, n)) or real(work, todo, n)
    )
    y = conv4(w, x, backend="reference", **kw)
    ((todo, n),) = jobs
    rows = [r1 - r0 for _, (r0, r1) in todo]
    assert len(todo) > 1 and (n > 1 or ref._workers(99, 1 << 40) == 1)
    assert max(rows) == 1 if one_row else max(rows) > 1
    _single(monkeypatch)  # the same jobs on the calling thread: the same bits
    np.testing.assert_array_equal(y, conv4(w, x, backend="reference", **kw))
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    want = K.conv4(w64, x64, **kw)
    mag = K.conv4(np.abs(w64), np.abs(x64), **kw)
    assert compare(want, y, k=int(np.prod(wsize[:-1])), magnitude=mag).ok
    # The tolerance is not vacuous: the other mode's answer is rejected.
    other = dict(kw, mode=1 - kw.get("mode", 0))
    if np.prod(wsize[:-2]) > 1:
        assert not compare(
            K.conv4(w64, x64, **other), y, k=int(np.prod(wsize[:-1])), magnitude=mag
        ).ok


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=(3, 2), dilation=(1, 2))])
def test_strided_deconv4_on_threads_matches_torch(kw, monkeypatch):
    """Strided deconv4 runs its image batches as jobs on the threads."""
    rng = np.random.default_rng(15)
    w = np.asfortranarray(rng.standard_normal((3, 4, 12, 8), dtype=F32))  # (W.., Cy, Cx)
    x = np.asfortranarray(rng.standard_normal((9, 7, 8, 6), dtype=F32))
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1)
    used: list = []
    real = ref._run_jobs
    monkeypatch.setattr(
        ref, "_run_jobs", lambda work, todo, n: used.append((len(todo), n)) or real(work, todo, n)
    )
    y = deconv4(w, x, backend="reference", **kw)
    assert used[0][0] > 1 and (used[0][1] > 1 or ref._workers(99, 1 << 40) == 1)
    _single(monkeypatch)
    np.testing.assert_array_equal(y, deconv4(w, x, backend="reference", **kw))
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    want = K.deconv4(w64, x64, **kw)
    mag = K.deconv4(np.abs(w64), np.abs(x64), **kw)
    assert compare(want, y, k=3 * 4 * 8, magnitude=mag).ok


@pytest.mark.parametrize("groups", [2, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_conv_stage_on_row_jobs_matches_torch(groups, dtype, monkeypatch):
    """The model's grouped conv (one conv4 per channel block) on one-row jobs and threads,
    against Ops21's grouped conv written in PyTorch (cross-correlation, Knet Ops21's default)."""
    from porting.geometry import ConvGeometry
    from porting.model.stages import ConvStage

    rng = np.random.default_rng(16 + groups)
    cin, cout = 8, 16
    w = rng.standard_normal((3, 3, cin // groups, cout)).astype(dtype)
    x = np.asfortranarray(rng.standard_normal((14, 13, cin, 3)).astype(dtype))
    _row_jobs(monkeypatch, True)
    monkeypatch.setattr(ref, "_MIN_THREADED_MACS", 1)
    geom = ConvGeometry.from_knet(2, padding=1, stride=(1, 2), dilation=(2, 1), mode=1)
    stage = ConvStage(w=w, b=None, geometry=geom, groups=groups)
    y = stage.forward(x, "reference", [])
    kw = dict(padding=1, stride=(1, 2), dilation=(2, 1), groups=groups)
    want = K.ops21_conv(w.astype(np.float64), x.astype(np.float64), **kw)
    mag = K.ops21_conv(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), **kw)
    assert y.dtype == dtype and y.shape == want.shape
    assert compare(want, y, k=9 * cin // groups, magnitude=mag).ok
