"""`porting._malloc`: the `porting` command keeps freed memory in its process (glibc's trim and
mmap thresholds), the Python API never touches the caller's malloc, and PORTING_MALLOC is
checked like every setting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from porting import _malloc
from porting.errors import PortingError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_sets_the_thresholds_on_glibc(monkeypatch):
    monkeypatch.delenv("PORTING_MALLOC", raising=False)
    assert _malloc.keep_freed_memory() is True


def test_system_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("PORTING_MALLOC", "system")
    called = []
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a, **k: called.append(a))
    assert _malloc.keep_freed_memory() is False and called == []


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("PORTING_MALLOC", "jemalloc")
    with pytest.raises(PortingError, match=r"PORTING_MALLOC='jemalloc'.*'keep', 'system'"):
        _malloc.keep_freed_memory()


def test_only_the_command_line_sets_it(monkeypatch):
    from porting import cli

    calls = []
    monkeypatch.setattr(_malloc, "keep_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["doctor", "--json"]) in (0, 1)  # in-process: a caller's process
    assert calls == []


def test_the_command_refuses_a_bad_setting_with_exit_2():
    env = {**os.environ, "PORTING_MALLOC": "tcmalloc"}
    p = subprocess.run(
        [sys.executable, "-m", "porting", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr
    assert "PORTING_MALLOC='tcmalloc'" in p.stderr and "Traceback" not in p.stderr
