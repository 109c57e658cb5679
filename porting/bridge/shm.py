"""What the worker's two processes share: the framed pipe protocol and the shared-memory
segments arrays travel in (see `porting.bridge.worker` for the protocol as a whole).

Segment names carry the owning parent's process id (`pk<pid>_<token>_...`), so segments left
behind by a process that was killed (SIGKILL runs no clean-up) are reclaimed by the next worker
start in any process (`reclaim_orphans`).
"""

from __future__ import annotations

import collections
import glob
import mmap
import os
import pickle
import re
import secrets
import struct
import sys
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
SHM_DIR = "/dev/shm"  # where Linux shows POSIX shared-memory segments as files
_OWNED = re.compile(r"^pk(\d+)_[0-9a-f]{8}_")


def new_prefix() -> str:
    """A fresh segment-name prefix for one worker of this process: `pk<pid>_<token>_`."""
    return f"pk{os.getpid()}_{secrets.token_hex(4)}_"


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
        self._seg: _Segment | None = seg
        self._view: np.ndarray | None = np.ndarray(
            shape, dtype=np.dtype(dtype), buffer=seg.buffer, order=order
        )
        self.__array_interface__: dict | None = self._view.__array_interface__

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
    if not os.path.isdir(SHM_DIR):
        return []
    return glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*"))


def _sweep(prefix: str) -> None:
    for path in _shm_dir_entries(prefix):
        try:
            os.unlink(path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive as far as we can tell
        return True
    return True


def reclaim_orphans() -> list[str]:
    """Unlink the segments of `porting` workers whose parent process no longer exists (it was
    killed before it could clean up); returns their names. Segments of live processes, and
    those we may not remove, are left alone."""
    if not os.path.isdir(SHM_DIR):
        return []
    gone = []
    for name in os.listdir(SHM_DIR):
        m = _OWNED.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            gone.append(name)
        except OSError:
            pass
    return gone
