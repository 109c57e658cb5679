"""Keep freed memory in the process, for the `porting` command (glibc only).

A verification allocates and frees the same few megabyte-sized arrays for every layer of every
batch (Knet outputs, their TensorFlow-layout copies, the sums of magnitudes, the comparisons'
buffers). glibc's malloc gives freed memory back to the kernel (trimming the heap, and with two
threads each thread's arena too), so the next array of that size page-faults its memory in
again, zeroed by the kernel. `verify-data` on 10,000 CIFAR-sized samples of the `resnet` example
took 200,000-470,000 minor page faults and 0.9-1.4 s of system time that way; with freed memory
kept (a trim threshold of 512 MB, and `mmap` only for blocks of 32 MB and more) 21,000 faults
and 0.5-0.6 s, and 0.2-0.3 s less wall time in 4.4-5.0 s (six runs alternated; peak memory the
same, 701-703 MB). These are glibc's `mallopt` settings `M_TRIM_THRESHOLD` and
`M_MMAP_THRESHOLD` (the ones its `MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_`
environment variables set at start-up), and they hold for the whole process, so only the
command line sets them, for its own process: the Python API leaves the caller's malloc alone.
`PORTING_MALLOC=system` leaves glibc's defaults in the command too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from porting import settings

__all__ = ["keep_freed_memory", "TRIM_THRESHOLD", "MMAP_THRESHOLD"]

TRIM_THRESHOLD = 512 << 20
"""Free memory at the top of a heap that glibc keeps before giving it back to the kernel."""
MMAP_THRESHOLD = 32 << 20
"""Blocks at least this large are mapped on their own (and unmapped when freed): glibc's own
ceiling for its adaptive threshold on 64-bit systems, fixed."""

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
CHOICES = ("keep", "system")


def _parse(value: object) -> str | None:
    v = str(value).strip().lower()
    return v if v in CHOICES else None


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds for this process (PORTING_MALLOC "keep", the
    default; "system" leaves them); returns whether they were set (False elsewhere than glibc
    on Linux, or where glibc refused)."""
    choice = settings.read("PORTING_MALLOC", _parse, "keep", "one of 'keep', 'system'")
    if choice == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )
