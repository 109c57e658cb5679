"""The worker-process protocol, with the NumPy reference backend behind it.

Results through the worker must be bit-identical to the in-process reference, arrays must
travel through shared memory (only small headers through the pipe), errors and crashes must
come back as PortingError, and no shared-memory segment may outlive the worker.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from porting.bridge import worker as W
from porting.bridge.worker import WorkerBackend, WorkerStartError
from porting.errors import PortingError
from porting.geometry import ConvGeometry, PoolGeometry
from porting.knet import reference as R

pytestmark = pytest.mark.skipif(
    os.name != "posix", reason="worker tests use POSIX shared memory paths"
)

HELPER = """
import os
import numpy as np
from porting.errors import PortingError
from porting.knet import reference

NAME = "helper"
VERSIONS = {"helper": "1"}

def conv4(w, x, geom, alpha):
    if alpha == 2.0:
        raise PortingError("kernel has 3 input channels but x has 4 (from the helper)")
    if alpha == 3.0:
        raise ValueError("something deep went wrong")
    if alpha == 4.0:
        os.abort()
    if alpha == 5.0:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    return reference.conv4(w, x, geom, alpha)

deconv4 = reference.deconv4
pool = reference.pool
mat = reference.mat
"""


def segments(prefix: str) -> list[str]:
    return (
        sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
        if os.path.isdir("/dev/shm")
        else []
    )


@pytest.fixture(scope="module")
def helper_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("helper")
    (d / "porting_test_helper.py").write_text(HELPER)
    return {"PYTHONPATH": str(d)}


@pytest.fixture(scope="module")
def wk():
    w = WorkerBackend("reference")
    w.start()
    yield w
    w.close()
    assert segments(w.segment_prefix) == []


def data(shape, dtype, order, seed):
    rng = np.random.default_rng(seed)
    return np.array(rng.standard_normal(shape), dtype=dtype, order=order)


def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


# --------------------------------------------------------------------------- bit-identical results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_conv4_deconv4_pool_mat_match_in_process(wk, dtype, order):
    w = data((3, 3, 2, 4), dtype, order, 1)
    x = data((9, 7, 2, 3), dtype, order, 2)
    g = ConvGeometry.from_knet(2, padding=1, stride=(1, 2), mode=0)
    assert same(wk.conv4(w, x, g, 1.0), R.conv4(w, x, g, 1.0))
    assert same(wk.conv4(w, x, g, 0.5), R.conv4(w, x, g, 0.5))
    wd = data((3, 3, 4, 2), dtype, order, 3)
    gd = ConvGeometry.from_knet(2, stride=2, mode=1)
    assert same(wk.deconv4(wd, x, gd, 1.0), R.deconv4(wd, x, gd, 1.0))
    for mode in (0, 1):
        gp = PoolGeometry.from_knet(2, window=3, padding=1, stride=2, mode=mode)
        assert same(wk.pool(x, gp, 1.0), R.pool(x, gp, 1.0))
    for dims in (0, 1, 3, 4):
        assert same(wk.mat(x, dims), R.mat(x, dims))


def test_results_are_julia_indexed_and_fortran_ordered(wk):
    w = data((3, 3, 2, 4), np.float32, "F", 4)
    x = data((8, 6, 2, 5), np.float32, "F", 5)
    y = wk.conv4(w, x, ConvGeometry.from_knet(2, padding=1), 1.0)
    assert y.shape == (8, 6, 4, 5) and y.flags.f_contiguous and y.dtype == np.float32


def test_1d_and_3d_convolutions(wk):
    for nd in (1, 3):
        w = data((2,) * nd + (2, 3), np.float64, "F", 6)
        x = data((5,) * nd + (2, 2), np.float64, "F", 7)
        g = ConvGeometry.from_knet(nd, padding=1, dilation=2)
        assert same(wk.conv4(w, x, g, 1.0), R.conv4(w, x, g, 1.0))


def test_zero_d_and_empty_arrays(wk):
    scalar = np.array(2.5)
    assert same(wk.mat(scalar, 0), R.mat(scalar, 0))  # (1, 1)
    empty = np.zeros((3, 0), np.float32)
    out = wk.mat(empty, 1)
    assert out.shape == (3, 0) and out.dtype == np.float32
    assert same(out, R.mat(empty, 1))


def test_large_result_is_zero_copy_shared_memory_and_unlinked(wk):
    x = data((200, 150, 2, 2), np.float64, "F", 8)  # 960 kB: above the small-result slot
    assert x.nbytes > W.SMALL_RESULT
    y = wk.mat(x, 3)
    assert isinstance(y.base, W._SharedBlock) and y.flags.f_contiguous
    assert same(y, R.mat(x, 3))
    assert not [s for s in segments(wk.segment_prefix) if "_o" in s]  # name already unlinked
    view = y[10:20]
    del y
    assert float(view.sum()) == float(R.mat(x, 3)[10:20].sum())  # the view keeps the memory


def test_result_segments_are_reused_only_once_free(wk):
    a = data((200, 150, 2, 2), np.float64, "F", 20)
    b = data((200, 150, 2, 2), np.float64, "F", 21)
    ya = wk.mat(a, 3)
    yb = wk.mat(b, 3)  # ya is still alive: yb must not reuse its memory
    assert not np.shares_memory(ya, yb)
    assert same(ya, R.mat(a, 3)) and same(yb, R.mat(b, 3))
    key_a = ya.base._seg.key
    del ya  # its segment goes back to the pool ...
    yc = wk.mat(b, 3)  # ... and the next result of that size lands in it
    assert yc.base._seg.key == key_a
    assert same(yc, R.mat(b, 3)) and same(yb, R.mat(b, 3))


def test_result_pool_is_bounded(wk, monkeypatch):
    from porting.bridge import shm

    monkeypatch.setattr(shm, "POOL_FREE_SEGMENTS", 1)
    xs = [data((100 + 20 * i, 150, 2, 2), np.float64, "F", 30 + i) for i in range(4)]
    ys = [wk.mat(x, 3) for x in xs]  # four live results, four segments
    segs = [y.base._seg for y in ys]
    del ys
    wk.ping()
    assert len(wk._state.pool.offer()) <= 1
    closed = [seg.mapping.closed for seg in segs]
    assert sum(closed) >= 3  # unmapped here, and dropped in the worker by the next request


def test_closing_unmaps_free_result_segments():
    w = WorkerBackend("reference")
    y = w.mat(data((300, 300, 1, 1), np.float64, "F", 40), 3)
    seg = y.base._seg
    del y
    w.ping()
    w.close()
    assert seg.mapping.closed


def test_small_results_are_plain_arrays(wk):
    x = data((4, 4, 1, 1), np.float32, "F", 9)
    y = wk.mat(x, 3)
    assert y.base is None or not isinstance(y.base, W._SharedBlock)
    assert same(y, R.mat(x, 3))


def test_input_slots_grow_and_are_reused(wk):
    small = data((4, 4, 2, 1), np.float64, "F", 10)
    big = data((64, 64, 2, 4), np.float64, "F", 11)
    before = set(segments(wk.segment_prefix))
    for a in (small, big, small, big):
        assert same(wk.mat(a, 3), R.mat(a, 3))
    after = set(segments(wk.segment_prefix))
    assert len(after) <= len(before) + 1  # one slot grew (old one unlinked), nothing piles up


def test_only_headers_go_through_the_pipe(wk, monkeypatch):
    sizes = []
    real = W._write_msg

    def spy(fd, obj):
        sizes.append(len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)))
        real(fd, obj)

    monkeypatch.setattr(W, "_write_msg", spy)
    x = data((128, 128, 4, 4), np.float64, "F", 12)  # 2 MB
    assert same(wk.mat(x, 3), R.mat(x, 3))
    assert sizes and max(sizes) < 2000


def test_ping_and_info(wk):
    assert wk.ping()["pid"] == wk.pid != os.getpid()
    assert wk.name == "reference" and wk.info()["backend"] == "reference"


# --------------------------------------------------------------------------- errors and crashes


@pytest.fixture()
def helper(helper_env, tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    (d / "porting_test_helper2.py").write_text(
        HELPER + "\nimport sys\nimpl = sys.modules[__name__]\n"
    )
    w = WorkerBackend("porting_test_helper2:impl", env={"PYTHONPATH": str(d)})
    yield w
    w.close()
    assert segments(w.segment_prefix) == []


def test_errors_come_back_as_porting_error(helper):
    w = np.ones((3, 3, 2, 2), np.float32)
    x = np.ones((5, 5, 2, 1), np.float32)
    g = ConvGeometry.from_knet(2)
    with pytest.raises(PortingError) as e:
        helper.conv4(w, x, g, 2.0)
    assert str(e.value) == "kernel has 3 input channels but x has 4 (from the helper)"
    with pytest.raises(
        PortingError, match=r"^ValueError: something deep went wrong \(raised in the worker"
    ):
        helper.conv4(w, x, g, 3.0)
    # the worker is still fine afterwards
    assert same(helper.conv4(w, x, g, 1.0), R.conv4(w, x, g, 1.0))
    assert helper.name == "helper" and helper.versions == {"helper": "1"}


def test_crash_during_a_call_is_a_clear_error_then_a_fresh_worker(helper):
    w = np.ones((3, 3, 2, 2), np.float64)
    x = np.ones((5, 5, 2, 1), np.float64)
    g = ConvGeometry.from_knet(2)
    helper.start()
    pid = helper.pid
    with pytest.raises(PortingError) as e:
        helper.conv4(w, x, g, 4.0)  # os.abort() in the worker
    msg = str(e.value)
    assert f"pid {pid}) died during conv4: killed by SIGABRT" in msg
    assert "fresh worker" in msg
    assert not helper.alive
    assert same(helper.conv4(w, x, g, 1.0), R.conv4(w, x, g, 1.0))
    assert helper.pid != pid and helper.starts == 2


def test_worker_killed_between_calls_restarts_with_a_warning(helper):
    helper.start()
    pid = helper.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while helper._state.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    x = np.ones((4, 3, 1, 1))
    with pytest.warns(RuntimeWarning, match="killed by SIGKILL"):
        y = helper.mat(x, 3)
    assert same(y, R.mat(x, 3)) and helper.pid != pid


def test_backend_that_cannot_load_is_a_start_error():
    w = WorkerBackend("no_such_module_anywhere:impl")
    with pytest.raises(
        WorkerStartError,
        match="could not start backend 'no_such_module_anywhere:impl'.*No module named",
    ):
        w.start()
    w.close()
    with pytest.raises(WorkerStartError, match="the worker hosts 'reference', 'julia'"):
        WorkerBackend("tensorflow").start()


def test_object_arrays_are_refused(wk):
    with pytest.raises(PortingError, match="only numeric arrays"):
        wk.mat(np.array([object()]), 1)


# --------------------------------------------------------------------------- shutdown


def test_close_is_idempotent_and_frees_everything():
    w = WorkerBackend("reference")
    with w:
        x = data((300, 300, 1, 1), np.float64, "F", 13)
        y = w.mat(x, 3)
        proc = w._state.proc
        assert segments(w.segment_prefix)  # input slots exist while running
    assert proc.poll() is not None  # exited
    assert segments(w.segment_prefix) == []
    w.close()
    assert same(y, R.mat(x, 3))  # the result outlives the worker


def test_interpreter_exit_cleans_up_without_close(tmp_path):
    script = textwrap.dedent(
        """
        import json, numpy as np
        from porting.bridge.worker import WorkerBackend
        w = WorkerBackend("reference")
        y = w.mat(np.ones((300, 300, 1, 1)), 3)
        print(json.dumps({"prefix": w.segment_prefix, "pid": w.pid}))
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "leaked" not in out.stderr and "resource_tracker" not in out.stderr, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker pid {info['pid']} still running after its parent exited")
    assert segments(info["prefix"]) == []


def test_resolve_worker_backend_runs_reference_behind_a_worker():
    import porting.bridge as bridge
    from porting.knet import conv4

    r = bridge.resolve_backend("worker")
    assert r.name == "reference" and r.reason.startswith("reference in a worker process (pid ")
    w = np.ones((3, 3, 2, 4), np.float32)
    x = data((8, 6, 2, 5), np.float32, "C", 14)
    y = conv4(w, x, padding=1, backend="worker")
    assert y.backend == "reference"
    assert np.array_equal(y, conv4(w, x, padding=1, backend="reference"))


# --------------------------------------------------------------------------- killed processes


def test_worker_killed_during_a_call_leaves_no_result_segment(helper):
    """SIGKILL of the worker mid-call: its result segments are gone (pooled ones were unlinked
    when mapped; a new one is swept by name), only the parent's reusable input slots stay, and
    close() removes those."""
    g = ConvGeometry.from_knet(2)
    w = np.ones((3, 3, 2, 2), np.float64)
    x = data((300, 300, 2, 1), np.float64, "F", 50)  # results big enough for pooled segments
    y = helper.conv4(w, x, g, 1.0)
    assert same(y, R.conv4(w, x, g, 1.0))
    prefix = helper.segment_prefix
    with pytest.raises(PortingError, match="killed by SIGKILL"):
        helper.conv4(w, x, g, 5.0)  # the worker SIGKILLs itself
    left = segments(prefix)
    assert left and all(n[len(prefix)] in "ir" for n in left), left  # input / small slots only
    helper.close()
    assert segments(prefix) == []
    assert same(y, R.conv4(w, x, g, 1.0))  # a result already returned stays valid


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="segments are listed in /dev/shm")
def test_segments_of_a_killed_parent_are_reclaimed_by_the_next_start():
    """SIGKILL of the parent runs no clean-up. Python's resource tracker (a helper process)
    normally unlinks what it created; when that is killed too (a process group killed at once,
    the OOM killer, a container stopped), the segments stay in /dev/shm. The next worker start,
    in any process, reclaims segments whose owner process is gone."""
    script = textwrap.dedent(
        """
        import json, os, signal, sys, numpy as np
        from multiprocessing import resource_tracker
        from porting.bridge.worker import WorkerBackend
        w = WorkerBackend("reference")
        y = w.mat(np.ones((300, 300, 1, 1)), 3)
        print(json.dumps({"prefix": w.segment_prefix, "pid": w.pid}), flush=True)
        tracker = resource_tracker._resource_tracker._pid
        if tracker is not None:
            os.kill(tracker, signal.SIGKILL)
            os.waitpid(tracker, 0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
        timeout=120,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert segments(info["prefix"]), "the killed parent should have left its input slot behind"
    with WorkerBackend("reference") as wk:
        assert wk.alive
        assert segments(info["prefix"]) == []
    deadline = time.monotonic() + 10  # the orphaned worker exits on EOF
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"orphaned worker pid {info['pid']} still running")


def test_reclaim_leaves_live_owners_alone():
    from porting.bridge import shm

    with WorkerBackend("reference") as wk:
        wk.mat(np.ones((300, 300, 1, 1)), 3)
        mine = segments(wk.segment_prefix)
        assert mine
        shm.reclaim_orphans()
        assert segments(wk.segment_prefix) == mine
