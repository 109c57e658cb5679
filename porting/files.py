"""Files in and out: what `porting` opens, and the one way it writes.

Inputs (`input_file`): only a regular file is opened. A FIFO, a device or a socket is refused
before anything reads from it (reading a FIFO blocks until a writer comes, forever if none
does), and so is a path the system cannot look up (too long, in an unreadable directory).

Outputs (`atomic_write`): one durability rule for every file or directory `porting` writes
(`.keras`, SavedModel directories, `.npz`/`.json` exports, plots):

1. the new content goes to a temporary name in the target's own directory
   (``.<name>.<host>-<pid>-<random>.porting-tmp``), never to the target itself;
2. it is flushed to disk (``fsync`` of every file, then of the directory);
3. it takes the permission bits of the file it replaces (a ``0600`` model stays ``0600``),
   or the default ones (``0666`` less the umask) for a new file;
4. it is renamed over the target (``os.replace``: atomic on POSIX), so a reader sees the old
   content or the new one, never a mix; a failure, Ctrl-C or SIGTERM removes the temporary;
5. before writing, temporary files that a killed run (SIGKILL, power loss) left for the same
   target are removed: those whose process is gone from this host, or older than a day.

`StagedFile`: the same rule in two steps, for output written before it is known to be kept.

`check_distinct` refuses an output that is one of the inputs, or two outputs that are the same
or nested, before any work is done. `loads_json` parses JSON the way every input file is read:
no NaN/Infinity literals, no huge integers, no unbounded nesting.

>>> import os, tempfile
>>> d = tempfile.mkdtemp(); target = os.path.join(d, "out.txt")
>>> with atomic_write(target) as tmp:
...     _ = tmp.write_text("hello")
>>> open(target).read(), sorted(os.listdir(d))
('hello', ['out.txt'])
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from porting._checks import short_repr
from porting.errors import PortingError

__all__ = [
    "Terminated",
    "input_file",
    "output_file",
    "output_dir",
    "atomic_write",
    "StagedFile",
    "sweep_stale",
    "check_distinct",
    "loads_json",
    "terminate_as_interrupt",
]

TEMP_SUFFIX = ".porting-tmp"
STALE_AFTER_S = 24 * 3600  # a temporary this old is stale whoever wrote it
NAME_MAX = 255  # bytes in one path component on the file systems porting targets
JSON_MAX_DEPTH = 64  # an export nests 4 levels; nothing legitimate comes near this
JSON_MAX_DIGITS = 30  # any size, count or key porting reads fits in 30 digits


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM inside `terminate_as_interrupt`, so the same cleanup
    as Ctrl-C runs (temporaries removed, workers stopped). The CLI exits 143."""


# --------------------------------------------------------------------------------------------
# Paths and what they are


def _describe(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def as_path(path: Any, what: str, expected: str) -> Path:
    """`path` as a `Path`, or a PortingError naming `what` when it is not a path at all."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise PortingError(f"{what}={short_repr(path)}: expected a file path ({expected})")
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise PortingError(f"{what}={path!r}: expected a file path ({expected})") from None
    if "\x00" in str(p):
        raise PortingError(f"{what} {str(p)!r}: a path cannot contain a NUL byte")
    return p


def _shown(p: Path) -> str:
    s = str(p)
    return s if len(s) <= 300 else f"{s[:120]}...{s[-60:]} ({len(s)} characters)"


def _os_problem(p: Path, e: OSError, expected: str, what: str) -> PortingError:
    prefix = f"{what}: " if what else ""
    if e.errno == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(c)) for c in p.parts), default=0)
        return PortingError(
            f"{prefix}{_shown(p)}: file name too long (longest component {longest} bytes, path "
            f"{len(os.fsencode(str(p)))} bytes; the system allows {NAME_MAX} per name); "
            f"expected {expected}"
        )
    if e.errno == errno.ENOENT:
        return PortingError(f"{prefix}{_shown(p)}: no such file; expected {expected}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PortingError(
            f"{prefix}{_shown(p)}: permission denied (it, or a directory on its path, is not "
            f"readable); expected {expected}"
        )
    if e.errno == errno.ELOOP:
        return PortingError(f"{prefix}{_shown(p)}: too many levels of symbolic links")
    if e.errno == errno.ENOTDIR:
        return PortingError(
            f"{prefix}{_shown(p)}: a component of the path is not a directory; expected {expected}"
        )
    return PortingError(f"{prefix}{_shown(p)}: {e.strerror or e}; expected {expected}")


def _stat(p: Path, expected: str, what: str) -> os.stat_result | None:
    """`os.stat(p)`, None when it does not exist, PortingError for any other failure."""
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _os_problem(p, e, expected, what) from None
    except ValueError as e:  # embedded NUL and the like
        raise PortingError(f"{what} {_shown(p)}: {e}; expected {expected}") from None


def input_file(path: Any, expected: str, *, what: str = "") -> Path:
    """`path`, checked to be an existing regular file (symbolic links followed).

    Refused with a `PortingError` that says what it is instead: missing, a directory, a FIFO,
    a device, a socket, unreadable, or a name too long for the system.
    """
    p = as_path(path, what or "path", expected)
    st = _stat(p, expected, what)
    prefix = f"{what}: " if what else ""
    if st is None:
        raise PortingError(f"{prefix}{_shown(p)}: no such file; expected {expected}")
    if not stat.S_ISREG(st.st_mode):
        raise PortingError(f"{prefix}{_shown(p)} is {_describe(st.st_mode)}; expected {expected}")
    if not os.access(p, os.R_OK):
        raise PortingError(f"{prefix}{_shown(p)}: permission denied; expected {expected}")
    return p


def open_input(p: Path) -> Any:
    """Open a checked input for binary reading without ever blocking on a FIFO swapped in after
    the check (``O_NONBLOCK``, then the open file is checked again)."""
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PortingError(f"{_shown(p)} is {_describe(st.st_mode)}; expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_name(p: Path, expected: str, what: str) -> None:
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise _os_problem(p, OSError(errno.ENAMETOOLONG, "File name too long"), expected, what)


def _real_target(p: Path) -> Path:
    """A target that is a symbolic link is written through: the file it points to is replaced
    and the link kept."""
    try:
        if p.is_symlink():
            return Path(os.path.realpath(p))
    except OSError:
        pass
    return p


def output_file(path: Any, *, suffix: str | None = None, what: str = "output") -> Path:
    """Validate an output file path before any work: a name the system accepts, ending in
    `suffix` (when given), not a directory or special file, in an existing writable directory."""
    expected = f"a {suffix} file path" if suffix else "a file path"
    p = as_path(path, what, expected)
    _check_name(p, expected, what)
    st = _stat(p, expected, what)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise PortingError(f"{what} {_shown(p)} is a directory; expected {expected}")
    if suffix is not None and p.suffix != suffix:
        raise PortingError(f"{what} {_shown(p)}: expected a file name ending in {suffix}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise PortingError(
            f"{what} {_shown(p)} exists and is {_describe(st.st_mode)}; expected {expected} "
            "(porting only replaces regular files)"
        )
    _check_parent(_real_target(p), what, expected)
    return p


def output_dir(path: Any, *, what: str = "output directory") -> Path:
    """Validate an output directory path (it may exist) before any work."""
    expected = "a directory path"
    p = as_path(path, what, expected)
    _check_name(p, expected, what)
    st = _stat(p, expected, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise PortingError(
            f"{what} {_shown(p)} exists as {_describe(st.st_mode)}; expected {expected}"
        )
    _check_parent(p, what, expected)
    return p


def _check_parent(p: Path, what: str, expected: str) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    st = _stat(parent, expected, what)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise PortingError(f"{what} {_shown(p)}: directory {_shown(parent)} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PortingError(
            f"{what} {_shown(p)}: directory {_shown(parent)} is not writable (permission denied)"
        )


# --------------------------------------------------------------------------------------------
# Inputs vs outputs


def _key(p: Path) -> str:
    return os.path.normcase(os.path.realpath(p))


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def check_distinct(
    inputs: Mapping[str, Any], outputs: Mapping[str, Any], *, directories: tuple[str, ...] = ()
) -> None:
    """Refuse, before any work, an output that is one of the inputs, two outputs that are the
    same path, or a path inside an output directory (names in `directories`: those outputs are
    directories that get replaced, so anything inside them would be lost).

    Paths are compared after resolving symbolic links, and by inode when both exist (hard links).
    """
    ins = {k: Path(os.fspath(v)) for k, v in inputs.items() if v is not None}
    outs = {k: Path(os.fspath(v)) for k, v in outputs.items() if v is not None}

    def same(a: Path, b: Path) -> bool:
        if _key(a) == _key(b):
            return True
        try:
            return os.path.samefile(a, b)
        except (OSError, ValueError):
            return False

    for o, op in outs.items():
        for i, ip in ins.items():
            if same(op, ip):
                raise PortingError(
                    f"{o} {op} is also the input {i} ({ip}); writing it would destroy the "
                    "input: choose another output path"
                )
            if o in directories and _inside(_key(ip), _key(op)):
                raise PortingError(
                    f"{o} {op} would replace a directory holding the input {i} ({ip}); "
                    "choose another output directory"
                )
    names = list(outs)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            pa, pb = outs[a], outs[b]
            if same(pa, pb):
                raise PortingError(
                    f"{a} and {b} are the same path ({pa}); give two different paths"
                )
            for d, other, dp, op in ((a, b, pa, pb), (b, a, pb, pa)):
                if d in directories and _inside(_key(op), _key(dp)):
                    raise PortingError(
                        f"{other} {op} is inside {d} {dp}, which is replaced as a whole; "
                        "write it somewhere else"
                    )


# --------------------------------------------------------------------------------------------
# Temporary names and the sweep


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _stem(name: str) -> str:
    """The target's name as used in its temporaries, short enough that they fit NAME_MAX."""
    if len(name.encode()) <= 150:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{name[:80]}~{digest}"


def temp_path(target: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `target` that `sweep_stale` recognises; `suffix` is for
    writers that insist on one (Keras wants ``.keras``)."""
    if not re.fullmatch(r"(\.[A-Za-z0-9]{1,16})?", suffix):
        raise ValueError(f"suffix {suffix!r}: expected '' or a short extension such as '.keras'")
    return target.with_name(
        f".{_stem(target.name)}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
        f"{suffix}"
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    except OSError:
        return True
    return True


def sweep_stale(target: Any) -> list[Path]:
    """Remove temporaries a killed run left for `target`; returns what was removed.

    A temporary is stale when the process that made it is gone from this host, or when it is
    older than a day (a process id may be reused; another host's run cannot be checked).
    Only names this module makes are touched.
    """
    t = Path(os.fspath(target))
    parent = t.parent if str(t.parent) else Path(".")
    pattern = re.compile(
        r"^\." + re.escape(_stem(t.name)) + r"\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d{1,10})-"
        r"[0-9a-f]{12}(?:\.old)?" + re.escape(TEMP_SUFFIX) + r"(?:\.[A-Za-z0-9]{1,16})?$"
    )
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    now = time.time()
    host = _host()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        old = now - st.st_mtime > STALE_AFTER_S
        dead = m["host"] == host and not _pid_alive(int(m["pid"]))
        if not (old or dead):
            continue
        path = Path(entry.path)
        try:
            if ".old" + TEMP_SUFFIX in entry.name and not os.path.lexists(t):
                # a run killed between moving the old directory aside and moving the new one
                # in: the old one is the user's data, put it back
                os.replace(path, t)
                removed.append(path)
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


# --------------------------------------------------------------------------------------------
# SIGTERM as Ctrl-C


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt(*, redeliver: bool = False) -> Iterator[None]:
    """Inside this block SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread,
    so every ``finally``/``except BaseException`` cleanup runs as it does for Ctrl-C. Outside
    the main thread, or when a handler other than the default is installed (the CLI's own, a
    host application's), nothing changes.

    With `redeliver`, a `Terminated` that leaves the block is turned back into the signal once
    the cleanup has run, so a program that did not ask for the exception still ends the way
    SIGTERM ends it (the library's writes use this; the CLI catches `Terminated` and exits 143).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, AttributeError):
        yield
        return
    if previous not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except Terminated:
        signal.signal(signal.SIGTERM, previous)
        if redeliver:
            os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# The atomic write


def _fsync_path(p: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(p, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath), directory=True)


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), since
    setting it even briefly races with other threads creating files."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _install(tmp: Path, t: Path, *, directory: bool) -> None:
    """Move the finished `tmp` onto `t` (the module docstring's steps 2-4); on any failure
    `tmp` is removed and `t` left as it was."""
    parent = t.parent if str(t.parent) else Path(".")
    aside: Path | None = None
    try:
        if not tmp.exists():
            raise PortingError(f"{t}: the writer produced no output")
        try:
            old_mode = stat.S_IMODE(os.stat(t).st_mode)
        except FileNotFoundError:
            old_mode = None
        _fsync_tree(tmp) if directory else _fsync_path(tmp)
        default = (0o777 if directory else 0o666) & ~_umask()
        os.chmod(tmp, old_mode if old_mode is not None else default)
        if directory and old_mode is not None:
            # swap atomically where possible (the target is never missing), else move the
            # old directory aside first (a kill in between is repaired by `sweep_stale`)
            aside = tmp.with_name(tmp.name.replace(TEMP_SUFFIX, ".old" + TEMP_SUFFIX, 1))
            if _exchange(tmp, t):
                os.replace(tmp, aside)
            else:
                os.replace(t, aside)
                os.replace(tmp, t)
        else:
            os.replace(tmp, t)
        _fsync_path(parent, directory=True)
    except BaseException:
        _remove(tmp)
        if aside is not None and not os.path.lexists(t):
            with contextlib.suppress(OSError):
                os.replace(aside, t)
            aside = None
        raise
    if aside is not None:
        _remove(aside)


@contextlib.contextmanager
def atomic_write(target: Any, *, directory: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target` (ending in `suffix`), which the writer creates (a
    directory with `directory=True`); when the block ends normally it is moved onto `target`
    under the module docstring's rule, on any failure removed. A directory is replaced whole:
    swapped in one step where Linux ``renameat2`` allows, else the old one is moved aside first
    (a kill in between is repaired by the next write), then removed; callers check first that
    it holds nothing they did not write."""
    staged = StagedFile(target, suffix)
    with terminate_as_interrupt(redeliver=True):
        try:
            yield staged.path
        except BaseException:
            staged.discard()
            raise
        _install(staged.path, staged.target, directory=directory)


class StagedFile:
    """A file written before it is known to be kept (module docstring): `path`, a temporary
    beside `target` named as `atomic_write`'s; `sync()` flushes it (from any thread),
    `commit()` moves it onto `target` under the rule above, `discard()` removes it."""

    def __init__(self, target: Any, suffix: str = "") -> None:
        self.target = _real_target(Path(os.fspath(target)))
        sweep_stale(self.target)
        self.path = temp_path(self.target, suffix)

    def sync(self) -> None:
        _fsync_path(self.path)

    def commit(self) -> None:
        with terminate_as_interrupt(redeliver=True):
            _install(self.path, self.target, directory=False)

    def discard(self) -> None:
        _remove(self.path)


# --------------------------------------------------------------------------------------------
# JSON from a file a user gave


def _no_constant(name: str) -> Any:
    raise _JSONRefused(f"the literal {name}; expected finite numbers")


class _JSONRefused(ValueError):
    pass


def _int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > JSON_MAX_DIGITS:
        raise _JSONRefused(
            f"an integer of {len(digits)} digits ({text[:12]}...); expected at most "
            f"{JSON_MAX_DIGITS} digits"
        )
    return int(text)


def _float(text: str) -> float:
    if len(text) > 400:
        raise _JSONRefused(
            f"a number written with {len(text)} characters ({text[:12]}...); expected at most 400"
        )
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _JSONRefused(f"the number {text[:40]}, which overflows; expected finite numbers")
    return value


class _Refused:
    """Stands for a refused value while `_refused_at` looks for where it was."""


def _refused_at(text: str) -> str | None:
    """The key path (``layers[1].conv.alpha``) of the first value `loads_json` refuses."""

    def mark(value: str) -> Any:
        try:
            return _float(value) if any(c in value for c in ".eE") else _int(value)
        except _JSONRefused:
            return _Refused()

    try:
        tree = json.loads(
            text, parse_constant=lambda _: _Refused(), parse_int=mark, parse_float=mark
        )
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Refused):
            return path or "the top level"
        if isinstance(node, dict):
            items = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (stops counting past the limit)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > JSON_MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(text: str, where: str) -> Any:
    """Parse JSON from a user's file; a `PortingError` naming `where` for anything that is not
    plain, finite JSON: NaN/Infinity literals, numbers that overflow, integers of more than
    `JSON_MAX_DIGITS` digits, nesting deeper than `JSON_MAX_DEPTH`."""
    if _depth(text) > JSON_MAX_DEPTH:
        raise PortingError(
            f"{where}: JSON nested deeper than {JSON_MAX_DEPTH} levels; expected the flat "
            "structure porting writes"
        )
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float)
    except _JSONRefused as e:
        at = _refused_at(text)
        raise PortingError(f"{where}: {f'{at}: ' if at else ''}JSON holds {e}") from None
    except RecursionError:
        raise PortingError(f"{where}: JSON nested too deeply") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise PortingError(
            f"{where}: cannot read as JSON ({e}); the file may be truncated"
        ) from None
