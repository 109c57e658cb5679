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
  In a worker, Julia and TensorFlow never share a process, so the question does not arise.
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

import collections
import glob
import mmap
import os
import pickle
import secrets
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Literal

import numpy as np

from porting.errors import PortingError

try:
    import _posixshmem  # the POSIX half of multiprocessing.shared_memory
except ImportError:  # Windows
    _posixshmem = None

PROTOCOL = 1
ENV_WORKER = "PORTING_JULIA_WORKER"
_HEADER = struct.Struct("<Q")
_MIN_SLOT = 1 << 16
# Results up to this size come back through one reusable segment and are copied out by the
# parent (a copy this small costs less than creating, mapping and unlinking a segment);
# larger ones come back zero-copy in a fresh segment.
SMALL_RESULT = 1 << 18
_SMALL_SLOT = -1  # slot key of the reusable small-result segment
POOL_FREE_SEGMENTS = 4  # free result segments kept mapped for reuse ...
POOL_FREE_BYTES = 1 << 30  # ... holding at most this much memory
_TRACK_PARAM = sys.version_info >= (3, 13)  # SharedMemory(track=False) exists from 3.13


class WorkerStartError(PortingError):
    """The worker process could not start its backend (the message says why)."""


# --------------------------------------------------------------------------- framing


def _write_msg(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_msg(fd: int):
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, n))


# --------------------------------------------------------------------------- shared memory


def _order_of(a: np.ndarray) -> Literal["C", "F"]:
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _order(ref: dict) -> Literal["C", "F"]:
    return "F" if ref["order"] == "F" else "C"


def _header(name: str | None, a: np.ndarray, order: str) -> dict:
    return {"shm": name, "shape": a.shape, "dtype": a.dtype.str, "order": order}


def _check_shareable(a: np.ndarray, what: str) -> None:
    if a.dtype.hasobject:
        raise PortingError(
            f"{what} has dtype {a.dtype}; only numeric arrays can travel to the worker process"
        )


def _disable_resource_tracker() -> None:
    """Worker process only: every segment is owned, and unlinked, by the parent.

    Before Python 3.13 (no `track=False`), SharedMemory registers each segment it creates *or
    attaches* with a per-process resource tracker, which unlinks them all when the process
    exits: the worker's tracker would delete the parent's input segments. The worker is our
    own interpreter, so it simply never registers anything.
    """
    if not _TRACK_PARAM:
        resource_tracker.register = lambda *args, **kwargs: None
        resource_tracker.unregister = lambda *args, **kwargs: None


def _worker_shm(name: str, *, create: bool = False, size: int = 0) -> SharedMemory:
    if _TRACK_PARAM:
        return SharedMemory(name=name, create=create, size=size, track=False)  # type: ignore[call-arg]
    return SharedMemory(name=name, create=create, size=size)


def _attach_and_unlink(name: str):
    """Map a segment the worker made and remove its name at once (the mapping stays valid, and
    with the name gone nothing can leak: the memory goes when both processes unmap it).

    On POSIX this goes straight to shm_open/mmap/shm_unlink (what SharedMemory does inside),
    which skips two round trips to the resource tracker per result on Python < 3.13.
    """
    if _posixshmem is not None:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            mapping = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        _posixshmem.shm_unlink("/" + name)
        return mapping
    shm = SharedMemory(name=name)  # Windows: the segment goes when its last handle closes
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    return shm


class _Segment:
    """A result segment mapped in the parent; reused for a later result once no array views it."""

    __slots__ = ("key", "mapping", "size", "pool")

    def __init__(self, key: str, mapping, pool: _ResultPool):
        self.key = key
        self.mapping = mapping  # an mmap, or a SharedMemory where _posixshmem is missing
        self.size = len(mapping) if isinstance(mapping, mmap.mmap) else mapping.size
        self.pool = pool

    @property
    def buffer(self):
        return self.mapping.buf if isinstance(self.mapping, SharedMemory) else self.mapping

    def close(self) -> None:
        try:
            self.mapping.close()
        except Exception:  # noqa: BLE001 - a mapping still viewed is freed with its last view
            pass


class _SharedBlock:
    """Lends a result segment to the arrays that view it.

    `np.asarray(block)` makes an array whose `.base` is this object (via
    `__array_interface__`); views of it keep it alive. When the last one goes, the segment
    returns to its pool (already mapped and faulted in both processes, so the next result of a
    similar size costs one plain memcpy), or is unmapped if the worker has been closed.
    """

    def __init__(self, seg: _Segment, shape, dtype, order: Literal["C", "F"]):
        self._seg = seg
        self._view = np.ndarray(shape, dtype=np.dtype(dtype), buffer=seg.buffer, order=order)
        self.__array_interface__ = self._view.__array_interface__

    def __del__(self):
        self.__array_interface__ = None
        self._view = None  # release the buffer export before the segment is reused or closed
        seg, self._seg = self._seg, None
        if seg is not None:
            seg.pool.give_back(seg)


class _ResultPool:
    """Result segments mapped in the parent: free ones are offered to the worker for reuse.

    Keeps at most POOL_FREE_SEGMENTS free segments and POOL_FREE_BYTES in them; older ones are
    unmapped here and their keys sent to the worker (`drop`) so it unmaps them too.
    """

    def __init__(self):
        self.free: dict[str, _Segment] = {}  # oldest first
        self.returned: collections.deque[_Segment] = collections.deque()  # from any thread
        self.drop: list[str] = []
        self.open = True

    def give_back(self, seg: _Segment) -> None:
        if self.open:
            self.returned.append(seg)  # deque.append is atomic; drained under the worker lock
        else:
            seg.close()

    def offer(self) -> list[tuple[str, int]]:
        while self.returned:
            seg = self.returned.popleft()
            self.free[seg.key] = seg
        while self.free and (
            len(self.free) > POOL_FREE_SEGMENTS
            or sum(sg.size for sg in self.free.values()) > POOL_FREE_BYTES
        ):
            key = next(iter(self.free))
            self.free.pop(key).close()
            self.drop.append(key)
        return [(sg.key, sg.size) for sg in self.free.values()]

    def take(self, key: str) -> _Segment:
        return self.free.pop(key)

    def close(self) -> None:
        self.open = False
        self.offer()
        for seg in self.free.values():
            seg.close()
        self.free.clear()
        self.drop.clear()


def _shm_dir_entries(prefix: str) -> list[str]:
    """Leftover segments with this prefix (Linux keeps them as files under /dev/shm)."""
    if not os.path.isdir("/dev/shm"):
        return []
    return glob.glob(os.path.join("/dev/shm", glob.escape(prefix) + "*"))


def _sweep(prefix: str) -> None:
    for path in _shm_dir_entries(prefix):
        try:
            os.unlink(path)
        except OSError:
            pass


# --------------------------------------------------------------------------- parent side


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
            for fd in (self.wfd, self.rfd):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.rfd = self.wfd = None
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        for fd in (self.wfd, self.rfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rfd = self.wfd = None
        return rc

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
        self._state = _State(f"pk{secrets.token_hex(4)}_")
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
            env = dict(os.environ)
            env.update(self._env)
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            cmd = [
                sys.executable,
                "-c",
                "import sys; from porting.bridge.worker import serve; serve(sys.argv[1:])",
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


# --------------------------------------------------------------------------- worker side


def _load_backend(spec: str):
    if spec == "reference":
        from porting.knet import reference

        return reference, "reference", {}
    if spec in ("julia", "julia-nnlib"):
        from porting.bridge.juliacall_backend import JuliacallBackend

        impl = JuliacallBackend(select=spec).load()  # "julia" raises Julia's reason if no Knet
        return impl, impl.name, impl.versions
    if ":" in spec:
        import importlib

        module, _, attr = spec.partition(":")
        impl = getattr(importlib.import_module(module), attr)
        name = getattr(impl, "NAME", None) or spec
        return impl, str(name), dict(getattr(impl, "VERSIONS", {}) or {})
    raise PortingError(
        f"backend={spec!r}: the worker hosts 'reference', 'julia', 'julia-nnlib' or "
        "'module:attribute'"
    )


class _Server:
    def __init__(self, impl):
        self.impl = impl
        self.inputs: dict[int, SharedMemory] = {}  # argument position -> mapped slot
        self.results: dict[str, SharedMemory] = {}  # pooled result segments, by key

    def array(self, index: int, ref: dict) -> np.ndarray:
        if ref["shm"] is None:
            return np.empty(ref["shape"], dtype=np.dtype(ref["dtype"]), order=_order(ref))
        shm = self.inputs.get(index)
        if shm is None or shm.name != ref["shm"].lstrip("/"):
            if shm is not None:
                try:
                    shm.close()
                except BufferError:
                    pass  # still viewed by a live array; the mapping goes with it
            shm = self.inputs[index] = _worker_shm(ref["shm"])
        return np.ndarray(
            ref["shape"], dtype=np.dtype(ref["dtype"]), buffer=shm.buf, order=_order(ref)
        )

    def publish(self, y, msg: dict) -> dict:
        """Put a result where the parent can see it: the small-result slot, a free pooled
        segment the parent offered, or a new segment (kept mapped here for later reuse)."""
        y = np.asarray(y)
        _check_shareable(y, "the result")
        order = _order_of(y)
        if y.nbytes == 0:
            return _header(None, y, order)
        small = msg.get("small")
        if small is not None and y.nbytes <= small["size"]:
            slot = self.inputs.get(_SMALL_SLOT)
            if slot is None or slot.name != small["shm"]:
                slot = self.inputs[_SMALL_SLOT] = _worker_shm(small["shm"])
            self._copy(y, slot, order)
            return dict(_header(slot.name, y, order), small=True)
        fits = [
            (size, key)
            for key, size in msg.get("pool", ())
            if key in self.results and y.nbytes <= size <= 2 * y.nbytes
        ]
        if fits:
            key = min(fits)[1]
            self._copy(y, self.results[key], order)
            return _header(key, y, order)
        key = msg["out"]
        shm = _worker_shm(key, create=True, size=y.nbytes)
        try:
            self._copy(y, shm, order)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        self.results[key] = shm  # the parent maps it by name, then unlinks the name
        return dict(_header(key, y, order), new=True)

    @staticmethod
    def _copy(y: np.ndarray, shm: SharedMemory, order: Literal["C", "F"]) -> None:
        dst = np.ndarray(y.shape, dtype=y.dtype, buffer=shm.buf, order=order)
        np.copyto(dst, y, casting="no")
        del dst

    def drop(self, keys) -> None:
        for key in keys:
            shm = self.results.pop(key, None)
            if shm is not None:
                try:
                    shm.close()
                except BufferError:
                    pass

    def handle(self, msg: dict) -> dict:
        self.drop(msg.get("drop", ()))
        op = msg["op"]
        if op == "ping":
            return {"ok": True, "value": {"pid": os.getpid(), "time": time.time()}}
        if op not in ("conv4", "deconv4", "pool", "mat"):
            raise PortingError(f"unknown worker operation {op!r}")
        arrays = [self.array(i, ref) for i, ref in enumerate(msg["arrays"])]
        p = msg["params"]
        fn = getattr(self.impl, op)
        if op == "mat":
            y = fn(arrays[0], p["dims"])
        else:
            y = fn(*arrays, p["geom"], p["alpha"])
        result = self.publish(y, msg)
        del arrays, y
        return {"ok": True, "result": result}


def serve(argv: list[str]) -> None:
    """Worker entry point: `python -c "...serve(sys.argv[1:])" BACKEND`."""
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # whatever Python or Julia prints goes to stderr, never into the channel
    _disable_resource_tracker()
    spec = argv[0] if argv else "reference"
    try:
        impl, name, versions = _load_backend(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        _write_msg(wfd, {"ok": False, "type": type(e).__name__, "message": str(e)})
        return
    _write_msg(
        wfd,
        {
            "ok": True,
            "hello": {
                "protocol": PROTOCOL,
                "backend": name,
                "versions": versions,
                "pid": os.getpid(),
            },
        },
    )
    server = _Server(impl)
    while True:
        try:
            msg = _read_msg(rfd)
        except EOFError:
            return  # the parent went away
        if msg.get("op") == "close":
            return
        try:
            reply = server.handle(msg)
        except Exception as e:  # noqa: BLE001 - every error goes back to the caller
            reply = {
                "ok": False,
                "type": type(e).__name__,
                "message": str(e),
                "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
            }
            e.__traceback__ = None  # drop frames that still view the input segments
        try:
            _write_msg(wfd, reply)
        except OSError:
            return  # the parent went away
