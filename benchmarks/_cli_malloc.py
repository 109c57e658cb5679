"""glibc's malloc set as the `porting` command sets it for its own process (porting._malloc),
for a benchmark's child process: every contestant alike, and a `--baseline` checkout that has
no porting._malloc gets the same settings."""

from __future__ import annotations

import ctypes
import platform


def as_the_command() -> None:
    try:
        from porting._malloc import keep_freed_memory
    except ImportError:  # an older checkout: the same two settings, directly
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        return
    keep_freed_memory()
