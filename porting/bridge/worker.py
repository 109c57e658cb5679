"""Run the Knet side in a separate Python process; arrays travel through shared memory.

>>> import numpy as np
>>> from porting.geometry import ConvGeometry
>>> with WorkerBackend("reference") as wk:  # doctest: +SKIP
...     wk.conv4(np.ones((3, 3, 2, 4), np.float32), np.ones((8, 6, 2, 5), np.float32),
...              ConvGeometry.from_knet(2, padding=1), 1.0).shape
(8, 6, 4, 5)

Why the worker is the default for the Julia backends
----------------------------------------------------
- Julia brings its own LLVM. Loading it into a process that already holds another LLVM (PyTorch
  wheels, TensorFlow's XLA) has crashed in reported cases, depending on import order, which a
  library cannot control: the user's script or notebook decides when TensorFlow is imported.
  In a worker, Julia and TensorFlow never share a process, so the question does not arise
  (docs/julia-versions.md#llvm-conflict).
- A crash inside Julia (a segfault, an abort, running out of memory) takes down the worker, not
  the user's session: it comes back as a `PortingError` naming the signal, and the next call
  starts a fresh worker.
- The worker is a clean interpreter (`python -c ...`, not multiprocessing's re-import of
  `__main__`), so it never imports TensorFlow or anything else from the user's script, and a
  script without an `if __name__ == "__main__"` guard still works.
- The price is small and measured (`benchmarks/bench_worker.py`, 2-CPU x86 VM): a 256 MB
  array to the worker and a 256 MB result back took 32 ms, against 40 ms for one `np.copyto`
  into touched memory plus one into fresh memory; a small `conv4` pays 60-110 us per call over
  in-process (a bare round trip is 16-60 us). Next to Julia's compilation of each new shape and
  Knet's own work this is noise. Julia's start-up is paid once per worker, as it would be
  in-process; the first call of a new array size also pays for fresh shared-memory pages.
- In-process juliacall remains available (`PORTING_JULIA_WORKER=no`, or `worker=False`) for
  processes that do not load TensorFlow and want to skip the input copy.

The reference backend needs no isolation and stays in-process unless "worker" is asked for.

Protocol
--------
Parent and worker exchange small pickled dicts over the worker's stdin/stdout pipes (the worker
moves its own stdout to stderr at start, so whatever Julia prints never enters the channel).
Array data never goes through the pipe: an array is described by a header (segment name,
shape, dtype, order) and its bytes sit in a `multiprocessing.shared_memory` segment.

- Inputs: the parent keeps one reusable segment per argument position, grown when needed, and
  copies each input into it (one copy); the worker maps it once and keeps the mapping.
- Results up to 256 kB come back through one reusable segment and are copied out (cheaper
  than a new segment). Larger results come back zero-copy: the worker copies the result into a
  free pooled segment the parent offered, or into a new one under a name the parent chose,
  which the parent maps and unlinks at once (nothing can leak once a name is gone). The array
  returned views that mapping; when the last view of it is garbage-collected the segment goes
  back to the pool, already mapped and faulted in both processes, so the next result of a
  similar size costs one plain memcpy. At most 4 free segments (1 GiB) are kept; older ones
  are unmapped on both sides.
- Zero-byte arrays travel as headers only.
- Errors: an exception in the worker comes back as its type, message and traceback and is
  raised as `PortingError` with the original message. A worker that dies (EOF on the pipe) gives
  a `PortingError` with its exit code or signal.
- Shutdown: `close()` (or the context manager, or interpreter exit) asks the worker to exit,
  kills it if it does not, unlinks the input segments and removes any result segment left behind
  by a crash (segment names carry a per-worker prefix).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
import weakref
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from porting.bridge.shm import (
    _MIN_SLOT,
    _SMALL_SLOT,
    PROTOCOL,
    SMALL_RESULT,
    _attach_and_unlink,
    _check_shareable,
    _header,
    _order,
    _order_of,
    _read_msg,
    _ResultPool,
    _Segment,
    _SharedBlock,
    _sweep,
    _write_msg,
    new_prefix,
    reclaim_orphans,
)
from porting.errors import PortingError

__all__ = ["WorkerBackend", "WorkerStartError", "shared_worker", "close_all", "SMALL_RESULT"]

# juliacall's FAQ: Julia's GC uses deliberate segfaults that only Julia's own signal handler
# turns into safepoints; with more than one Julia thread and that handler off, the process dies.
# The worker is a process of its own (its own session, no Ctrl-C from the user's terminal), so
# it lets Julia handle signals unless the user chose otherwise (docs/julia-versions.md#signals).
JULIA_WORKER_ENV = {"PYTHON_JULIACALL_HANDLE_SIGNALS": "yes"}


class WorkerStartError(PortingError):
    """The worker process could not start its backend (the message says why)."""


class _State:
    """Everything the finalizer needs, without a reference to the WorkerBackend itself."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.proc: subprocess.Popen | None = None
        self.rfd: int | None = None
        self.wfd: int | None = None
        self.slots: dict[int, SharedMemory] = {}
        self.pool = _ResultPool()
        self.counter = 0

    def next_name(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}{kind}{self.counter}"

    def stop_process(self, timeout: float = 5.0) -> int | None:
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None and self.wfd is not None:
                try:
                    _write_msg(self.wfd, {"op": "close"})
                except OSError:
                    pass
            self._close_pipes()  # before waiting: the child sees end of input
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        for fd in (self.wfd, self.rfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rfd = self.wfd = None

    def release_slots(self) -> None:
        slots, self.slots = self.slots, {}
        for shm in slots.values():
            try:
                shm.close()
            except Exception:  # noqa: BLE001
                pass
            try:
                shm.unlink()
            except Exception:  # noqa: BLE001
                pass
        _sweep(self.prefix)

    def new_pool(self) -> None:
        """A fresh worker knows none of the old segments: stop offering them."""
        self.pool.close()
        self.pool = _ResultPool()

    def shutdown(self) -> None:
        try:
            self.stop_process()
        finally:
            self.release_slots()
            self.pool.close()


_live: weakref.WeakSet = weakref.WeakSet()


class WorkerBackend:
    """A Knet backend running in a worker process: same `conv4/deconv4/pool/mat` interface.

    `backend` is what the worker hosts: "reference", "julia" / "julia-nnlib" (juliacall in the
    worker), or "package.module:attribute" naming any object with the four functions. The worker
    starts on first use (or `start()`); `name` and `versions` are what it reported.
    `env` adds environment variables for the worker.
    """

    def __init__(self, backend: str = "reference", *, env: dict[str, str] | None = None):
        if not isinstance(backend, str) or not backend:
            raise PortingError(f"backend={backend!r}: expected a backend name for the worker")
        self.backend = backend
        self._env = dict(env or {})
        self._lock = threading.RLock()
        self._state = _State(new_prefix())
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        self.name: str | None = None
        self.versions: dict[str, str] = {}
        self.pid: int | None = None
        self.starts = 0
        _live.add(self)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> WorkerBackend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        proc = self._state.proc
        return proc is not None and proc.poll() is None

    @property
    def segment_prefix(self) -> str:
        """Prefix of every shared-memory segment this worker uses (for leak checks)."""
        return self._state.prefix

    def start(self) -> WorkerBackend:
        with self._lock:
            if self.alive:
                return self
            self._state.stop_process(timeout=1.0)
            reclaim_orphans()  # segments of porting processes that were killed
            env = dict(os.environ)
            if self.backend in ("julia", "julia-nnlib"):
                env.update(_julia_child_env(env))
            env.update(self._env)
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            cmd = [
                sys.executable,
                "-c",
                "import sys; from porting.bridge.worker_child import serve; serve(sys.argv[1:])",
                self.backend,
            ]
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    close_fds=True,
                    start_new_session=(os.name == "posix"),  # the user's Ctrl-C is not the worker's
                )
            except OSError as e:
                raise WorkerStartError(
                    f"cannot start the worker process ({sys.executable}): {e}"
                ) from None
            assert proc.stdin is not None and proc.stdout is not None
            st = self._state
            st.new_pool()
            st.proc = proc
            st.wfd = os.dup(proc.stdin.fileno())
            st.rfd = os.dup(proc.stdout.fileno())
            proc.stdin.close()
            proc.stdout.close()
            proc.stdin = proc.stdout = None
            self.starts += 1
            try:
                hello = _read_msg(st.rfd)
            except (EOFError, OSError):
                rc = st.stop_process(timeout=5.0)
                raise WorkerStartError(
                    f"the worker process for backend {self.backend!r} exited during start-up "
                    f"({_exit_text(rc)}); its error output is above"
                ) from None
            if not hello.get("ok"):
                st.stop_process()
                raise WorkerStartError(
                    f"the worker process could not start backend {self.backend!r}: "
                    f"{hello.get('message')}"
                )
            info = hello["hello"]
            if info.get("protocol") != PROTOCOL:
                st.stop_process()
                raise WorkerStartError(
                    f"worker protocol {info.get('protocol')} != {PROTOCOL}: the worker imported a "
                    "different porting (check PYTHONPATH)"
                )
            self.name = info["backend"]
            self.versions = dict(info.get("versions") or {})
            self.pid = info["pid"]
            return self

    def close(self) -> None:
        """Stop the worker and free every shared-memory segment (idempotent)."""
        with self._lock:
            self._state.shutdown()
            self.pid = None

    # ------------------------------------------------------------------ calls

    def _put(self, index: int, a: np.ndarray) -> dict:
        """Copy an input into this argument position's reusable segment (one copy)."""
        a = np.asarray(a)
        _check_shareable(a, f"argument {index + 1}")
        order = _order_of(a)
        if a.nbytes == 0:
            return _header(None, a, order)
        st = self._state
        shm = st.slots.get(index)
        if shm is None or shm.size < a.nbytes:
            if shm is not None:
                shm.close()
                shm.unlink()
                del st.slots[index]
            size = max(a.nbytes, _MIN_SLOT, 2 * (shm.size if shm is not None else 0))
            shm = SharedMemory(name=st.next_name("i"), create=True, size=size)
            st.slots[index] = shm
        dst = np.ndarray(a.shape, dtype=a.dtype, buffer=shm.buf, order=order)
        np.copyto(dst, a, casting="no")
        del dst
        return _header(shm.name, a, order)

    def _small_slot(self) -> dict:
        st = self._state
        shm = st.slots.get(_SMALL_SLOT)
        if shm is None:
            shm = st.slots[_SMALL_SLOT] = SharedMemory(
                name=st.next_name("r"), create=True, size=SMALL_RESULT
            )
        return {"shm": shm.name, "size": shm.size}

    def _take(self, ref: dict) -> np.ndarray:
        """A result: copied out of the small-result slot, or a zero-copy array on a pooled
        segment (a reused one, or a new one whose name is unlinked at once)."""
        shape, dtype, order = ref["shape"], np.dtype(ref["dtype"]), _order(ref)
        if ref["shm"] is None:
            return np.empty(shape, dtype=dtype, order=order)
        st = self._state
        if ref.get("small"):
            slot = st.slots[_SMALL_SLOT]
            view = np.ndarray(shape, dtype=dtype, buffer=slot.buf, order=order)
            out = view.copy(order="K")
            del view
            return out
        if ref.get("new"):
            seg = _Segment(ref["shm"], _attach_and_unlink(ref["shm"]), st.pool)
        else:
            seg = st.pool.take(ref["shm"])
        return np.asarray(_SharedBlock(seg, shape, dtype, order))

    def _request(self, op: str, arrays: tuple = (), params: dict | None = None) -> dict:
        """Send one operation, return the worker's (successful) reply."""
        with self._lock:
            if not self.alive:
                proc = self._state.proc
                if proc is not None:  # died while idle (killed from outside, out of memory)
                    pid, rc = self.pid, proc.poll()
                    warnings.warn(
                        f"porting: the Knet worker process (pid {pid}) had exited "
                        f"({_exit_text(rc)}) between calls; starting a fresh one",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                self.start()  # first use, or a fresh worker after a crash
            st = self._state
            refs = [self._put(i, a) for i, a in enumerate(arrays)]
            out = st.next_name("o")
            msg = {
                "op": op,
                "arrays": refs,
                "params": params or {},
                "out": out,
                "small": self._small_slot(),
                "pool": st.pool.offer(),
                "drop": st.pool.drop,
            }
            st.pool.drop = []
            try:
                assert st.wfd is not None and st.rfd is not None
                _write_msg(st.wfd, msg)
                reply = _read_msg(st.rfd)
            except (EOFError, OSError):
                raise self._crashed(op) from None
            except BaseException:
                # Interrupted mid-call (Ctrl-C): the channel is out of step; stop this worker.
                st.stop_process(timeout=1.0)
                _sweep(st.prefix + "o")
                raise
            if not reply.get("ok"):
                raise _remote_error(reply, self)
            return reply

    def _call(self, op: str, arrays: tuple, params: dict) -> np.ndarray:
        with self._lock:
            return self._take(self._request(op, arrays, params)["result"])

    def _crashed(self, op: str) -> PortingError:
        st = self._state
        pid = self.pid
        rc = st.stop_process(timeout=5.0)
        _sweep(st.prefix + "o")
        self.pid = None
        return PortingError(
            f"the Knet worker process (backend {self.name or self.backend!r}, pid {pid}) died "
            f"during {op}: {_exit_text(rc)}. A fresh worker will start on the next call; if this "
            "repeats, run the same call in-process (PORTING_JULIA_WORKER=no) to see Julia's own "
            "crash report"
        )

    def conv4(self, w, x, geom, alpha: float = 1.0) -> np.ndarray:
        return self._call("conv4", (w, x), {"geom": geom, "alpha": alpha})

    def deconv4(self, w, x, geom, alpha: float = 1.0) -> np.ndarray:
        return self._call("deconv4", (w, x), {"geom": geom, "alpha": alpha})

    def pool(self, x, geom, alpha: float = 1.0) -> np.ndarray:
        return self._call("pool", (x,), {"geom": geom, "alpha": alpha})

    def mat(self, x, dims: int) -> np.ndarray:
        return self._call("mat", (x,), {"dims": dims})

    def ping(self) -> dict:
        """One round trip with no arrays (measures the bare per-call overhead)."""
        return self._request("ping")["value"]

    def info(self) -> dict:
        return {
            "backend": self.name,
            "versions": dict(self.versions),
            "process": f"worker pid {self.pid}" if self.pid else "worker (not running)",
        }

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else "stopped"
        return f"WorkerBackend({self.backend!r}, {state})"


def _julia_child_env(environ: dict[str, str]) -> dict[str, str]:
    """What a Julia worker needs besides this process's environment: the `-X juliacall-*` /
    `-X juliapkg-*` options of this interpreter as variables (a child does not inherit `-X`),
    and Julia's own signal handling unless the user set it."""
    from porting.bridge.juliacall_env import effective_settings

    out = effective_settings(environ, sys._xoptions)
    for key, value in JULIA_WORKER_ENV.items():
        if key not in environ:
            out[key] = value
    return out


def _exit_text(rc: int | None) -> str:
    from porting.bridge.discovery import describe_exit

    return "exit status unknown" if rc is None else describe_exit(rc)


def _remote_error(reply: dict, worker: WorkerBackend) -> PortingError:
    kind, message = reply.get("type", "Exception"), reply.get("message", "")
    if kind in ("PortingError", "WorkerStartError"):
        err = PortingError(message)
    else:
        err = PortingError(
            f"{kind}: {message} (raised in the worker process running backend "
            f"{worker.name or worker.backend!r})"
        )
    tb = reply.get("traceback")
    if tb and hasattr(err, "add_note"):
        err.add_note("worker traceback:\n" + tb.rstrip())
    return err


_shared: dict[str, WorkerBackend] = {}
_shared_lock = threading.Lock()


def shared_worker(backend: str) -> WorkerBackend:
    """The one long-lived worker per hosted backend, started if needed (closed at exit)."""
    with _shared_lock:
        wk = _shared.get(backend)
        if wk is None:
            wk = _shared[backend] = WorkerBackend(backend)
    return wk.start()


def close_all() -> None:
    """Stop every worker of this process (also runs at interpreter exit)."""
    for wk in list(_live):
        wk.close()
