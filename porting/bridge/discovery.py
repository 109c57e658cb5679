"""Find Julia: nothing imported from juliacall or juliapkg, nothing downloaded, nothing written.

`discover()` looks, in this order, at

1. the `julia` argument (`porting doctor --julia PATH`),
2. the explicit settings juliacall itself would use, in the installed juliacall's order:
   `-X juliacall-exe` / `PYTHON_JULIACALL_EXE`, then `-X juliapkg-exe` / `PYTHON_JULIAPKG_EXE`
   for juliacall >= 0.9.28; the other way round for older juliacall, which ignores
   `PYTHON_JULIACALL_EXE` (porting then passes it on to juliapkg, see `juliacall_env`),
3. an existing juliapkg environment: the executable recorded in its `pyjuliapkg/meta.json`, then
   the Julia juliapkg installed in `pyjuliapkg/install/bin`,
4. `julia` on `PATH`,

runs `<julia> --version` (with a timeout; the only process it starts) on the first one that is
set, and decides: Julia <= 1.9 can run Knet 1.4.10 (backend "julia"); Julia >= 1.10, where Knet
cannot install, gets NNlib, the library Knet's CPU path calls (backend "julia-nnlib";
docs/julia-versions.md#knet-julia, #nnlib-backend). The installed juliacall version is read from
its metadata (not imported) and the Julia range it accepts from its own `juliapkg.json`
(`juliacall_env.juliacall_range`; docs/julia-versions.md#juliacall-julia). An explicit setting that
does not work stops the search: it is reported, quoting where it came from, never silently
replaced by another Julia.

Whether the Julia found actually works is the probe's question (`porting.bridge.probe`): it is
the one step that starts Julia and writes a cache, and it runs only when asked.

>>> d = discover()
>>> d.backend, d.usable  # doctest: +SKIP
(None, False)
>>> d.reason  # doctest: +SKIP
'no Julia found: PYTHON_JULIACALL_EXE unset, PYTHON_JULIAPKG_EXE unset, no juliapkg environment at /venv/julia_env, `julia` not on PATH'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from porting import settings
from porting.bridge.juliacall_env import (
    JuliacallRange,
    Version,
    format_version,
    juliacall_range,
    parse_version,
    reads_juliacall_pair,
)

KNET_VERSION = "1.4.10"
# Knet 1.4.10 resolves only on Julia <= 1.9 (docs/julia-versions.md#knet-julia)
KNET_MAX_JULIA: tuple[int, int] = (1, 9)
# the porting[julia] extra, see pyproject.toml: the juliacalls that run Julia 1.9
# (docs/julia-versions.md#juliacall-julia)
JULIACALL_PIN = ">=0.9.26,<0.9.29"

DEFAULT_VERSION_TIMEOUT = 20.0
ENV_VERSION_TIMEOUT = "PORTING_JULIA_TIMEOUT"

INSTALL_HINT = (
    "run `porting doctor --install-julia` (downloads Julia 1.9 and Knet 1.4.10 through juliapkg), "
    "or set PYTHON_JULIACALL_EXE to a Julia 1.9 executable you installed"
)
JULIACALL_HINT = "pip install 'porting[julia]' (juliacall" + JULIACALL_PIN + ")"

_VERSION_RE = re.compile(r"^julia version (\d+)\.(\d+)\.(\d+)(\S*)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- small helpers


def dist_version(name: str) -> str | None:
    """Installed version of a distribution, read from its metadata (the module is not imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _option(xkey: str, envkey: str) -> tuple[str | None, str]:
    """A juliacall/juliapkg-style setting: `-X key=value` first, then the environment variable.

    Returns the value and where it came from, quoted for messages (`PYTHON_JULIACALL_EXE=/x`).
    """
    value = sys._xoptions.get(xkey)
    if isinstance(value, str):
        return value, f"-X {xkey}={value}"
    value = os.environ.get(envkey)
    if value is not None:
        return value, f"{envkey}={value}"
    return None, envkey


def describe_exit(returncode: int) -> str:
    """`-11` -> `killed by signal SIGSEGV`; `3` -> `exit code 3`."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def run_command(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, str]:
    """Run `cmd`, return (returncode, stdout, stderr); on timeout kill its whole process group.

    Killing the group (not just the child) matters: a wrapper script's own children would
    otherwise keep the pipes open and the wait would outlast the timeout.
    """
    posix = os.name == "posix"
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        encoding="utf-8",
        errors="replace",
        start_new_session=posix,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            pass
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        raise
    return proc.returncode, out or "", err or ""


def _tail(text: str, n: int = 300) -> str:
    text = " ".join(text.strip().split())
    return text if len(text) <= n else "..." + text[-n:]


# --------------------------------------------------------------------------- juliapkg's state


def juliapkg_project(juliacall: str | None = None) -> tuple[str, str]:
    """The Julia project juliacall `juliacall` will use, and where that choice came from.

    Mirrors juliacall's and juliapkg's rules without importing them
    (docs/julia-versions.md#juliacall-env, #juliapkg-env): for juliacall >= 0.9.28
    `PYTHON_JULIACALL_PROJECT` first, then `PYTHON_JULIAPKG_PROJECT`; older juliacall reads only
    juliapkg's setting (porting passes `PYTHON_JULIACALL_PROJECT` on when that is unset); else
    `<prefix>/julia_env` in a virtual or conda environment, else
    `<depot>/environments/pyjuliapkg`. Relative settings are made absolute (juliapkg requires
    that).
    """
    order = [
        ("juliacall-project", "PYTHON_JULIACALL_PROJECT"),
        ("juliapkg-project", "PYTHON_JULIAPKG_PROJECT"),
    ]
    if not reads_juliacall_pair(juliacall):
        order.reverse()
    for xkey, envkey in order:
        value, where = _option(xkey, envkey)
        if value:
            return os.path.abspath(os.path.expanduser(value)), where
    if sys.prefix != sys.base_prefix:
        return os.path.join(sys.prefix, "julia_env"), f"virtual environment {sys.prefix}"
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        return os.path.abspath(os.path.join(conda, "julia_env")), f"CONDA_PREFIX={conda}"
    depot_env = os.environ.get("JULIA_DEPOT_PATH")
    if depot_env:
        depot = depot_env.split(os.pathsep)[0]
        where = f"JULIA_DEPOT_PATH={depot_env}"
    else:
        depot = os.path.join(os.path.expanduser("~"), ".julia")
        where = "default depot ~/.julia"
    return os.path.abspath(os.path.join(depot, "environments", "pyjuliapkg")), where


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class JuliaCandidate:
    """One Julia executable looked at, with where its path came from."""

    source: str  # "argument", "PYTHON_JULIACALL_EXE", "juliapkg environment", "PATH", ...
    setting: str  # the value and where it came from, e.g. "PYTHON_JULIACALL_EXE=/x/julia"
    path: str | None = None  # the executable, resolved
    version: Version | None = None
    version_text: str | None = None  # as Julia printed it, e.g. "1.10.0-rc1"
    problem: str | None = None  # why it cannot be used, quoting `setting`
    explicit: bool = False  # an argument or environment variable (never skipped silently)

    @property
    def ok(self) -> bool:
        return self.problem is None and self.version is not None

    @property
    def via(self) -> str:
        """Where the path came from, without repeating it: `PYTHON_JULIACALL_EXE`, `-X
        juliacall-exe`, `argument`, `juliapkg environment`, `` `julia` on PATH ``."""
        if self.source == "PATH":
            return "`julia` on PATH"
        if self.explicit:
            return self.setting.split("=", 1)[0]
        return self.source


@dataclass(frozen=True)
class Discovery:
    """Everything `discover()` found, the verdict and the reason for it."""

    julia: JuliaCandidate | None  # the Julia that would be used
    candidates: tuple[JuliaCandidate, ...]  # every executable looked at, in order
    looked: tuple[str, ...]  # one line per place looked, e.g. "`julia` not on PATH"
    project: str  # the Julia project juliacall would activate
    project_source: str
    juliacall: str | None  # installed juliacall version (metadata only)
    juliacall_problem: str | None
    backend: str | None  # "julia" (Knet possible), "julia-nnlib" (Julia >= 1.10) or None
    usable: bool  # Julia found and juliacall can run it (the probe says whether it works)
    reason: str
    advice: tuple[str, ...] = ()
    juliacall_range: JuliacallRange | None = None  # the Julia versions that juliacall accepts

    @property
    def knet_possible(self) -> bool:
        return self.julia is not None and self.backend == "julia"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["julia"] = None if self.julia is None else _candidate_dict(self.julia)
        d["candidates"] = [_candidate_dict(c) for c in self.candidates]
        d["looked"] = list(self.looked)
        d["advice"] = list(self.advice)
        d["juliacall_range"] = (
            None if self.juliacall_range is None else self.juliacall_range.to_dict()
        )
        return d


def _candidate_dict(c: JuliaCandidate) -> dict:
    d = asdict(c)
    d["version"] = None if c.version is None else format_version(c.version)
    return d


# --------------------------------------------------------------------------- inspecting one exe


def _resolve_path(value: str) -> str | None:
    value = os.path.expanduser(value)
    if os.sep in value or (os.altsep and os.altsep in value):
        return os.path.abspath(value)
    return shutil.which(value) or (os.path.abspath(value) if os.path.exists(value) else None)


def inspect_julia(
    value: str, source: str, setting: str, *, explicit: bool, timeout: float
) -> JuliaCandidate:
    """Check one executable: exists, is executable, answers `--version` in time."""

    def bad(problem: str, path: str | None = None) -> JuliaCandidate:
        return JuliaCandidate(
            source, setting, path, problem=f"{setting}: {problem}", explicit=explicit
        )

    if not value.strip():
        return bad("empty; expected the path of a Julia executable")
    path = _resolve_path(value)
    if path is None or not os.path.exists(path):
        return bad("no such file" if path is None or os.sep in value else "not found on PATH")
    if os.path.isdir(path):
        hint = os.path.join(path, "bin", "julia")
        extra = f" (did you mean {hint}?)" if os.path.isfile(hint) else ""
        return bad(f"is a directory, not an executable file{extra}", path)
    if not os.access(path, os.X_OK):
        return bad("not an executable file", path)
    try:
        rc, out, err = run_command([path, "--startup-file=no", "--version"], timeout)
    except subprocess.TimeoutExpired:
        return bad(f"`julia --version` did not answer within {timeout:g} s", path)
    except OSError as e:
        return bad(f"cannot be run: {e.strerror or e}", path)
    if rc != 0:
        detail = _tail(err or out)
        return bad(
            f"`julia --version` failed with {describe_exit(rc)}"
            + (f": {detail}" if detail else ""),
            path,
        )
    first = (out.strip().splitlines() or [""])[0]
    m = _VERSION_RE.match(first.strip())
    if not m:
        return bad(
            f"`julia --version` printed {_tail(first, 80)!r}; expected 'julia version X.Y.Z' "
            "(is this Julia?)",
            path,
        )
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    text = f"{m.group(1)}.{m.group(2)}.{m.group(3)}{m.group(4)}"
    return JuliaCandidate(source, setting, path, version, text, None, explicit)


# --------------------------------------------------------------------------- the verdict


def juliacall_supports(
    juliacall: str, julia: Version, jrange: JuliacallRange | None = None
) -> tuple[bool | None, str]:
    """Whether juliacall `juliacall` runs Julia `julia`, per the Julia range it declares (its own
    `juliapkg.json` when installed, see `juliacall_env.juliacall_range`); None when unknown
    (docs/julia-versions.md#juliacall-julia)."""
    if jrange is None:
        jrange = juliacall_range(juliacall)
    if jrange is None:
        if parse_version(juliacall) is None:
            return None, f"juliacall {juliacall}: version not understood"
        return None, f"juliacall {juliacall} is older than the compatibility table (0.9.25)"
    ok = jrange.compat.contains(julia)
    return ok, f"juliacall {juliacall} runs Julia {jrange.compat.text!r} (from {jrange.source})"


def knet_backend_for(version: Version) -> str:
    """Backend name for this Julia: "julia" when Knet 1.4.10 can install (<= 1.9), else
    "julia-nnlib" (docs/julia-versions.md#knet-julia, #nnlib-backend)."""
    return "julia" if version[:2] <= KNET_MAX_JULIA else "julia-nnlib"


def discover(julia: str | os.PathLike | None = None, *, timeout: float | None = None) -> Discovery:
    """Find Julia and decide what the Julia backend could be. Never imports juliacall.

    `julia` is an explicit executable (it wins over every environment variable); `timeout`
    bounds `julia --version` (default `PORTING_JULIA_TIMEOUT`, else 20 s).
    """
    timeout = settings.seconds(ENV_VERSION_TIMEOUT, DEFAULT_VERSION_TIMEOUT, explicit=timeout)
    jc = dist_version("juliacall")
    pair = reads_juliacall_pair(jc)
    project, project_source = juliapkg_project(jc)
    looked: list[str] = []
    candidates: list[JuliaCandidate] = []
    chosen: JuliaCandidate | None = None
    stop_reason: str | None = None

    def consider(value: str, source: str, setting: str, explicit: bool) -> bool:
        nonlocal chosen, stop_reason
        c = inspect_julia(value, source, setting, explicit=explicit, timeout=timeout)
        candidates.append(c)
        if c.ok:
            chosen = c
            looked.append(f"{setting}: Julia {c.version_text}")
            return True
        looked.append(c.problem or setting)
        if explicit:
            stop_reason = (
                f"{c.problem} (an explicit setting is used as given, never replaced by another "
                "Julia: fix it or unset it)"
            )
            return True
        return False

    # 1-3: explicit settings
    explicit_settings: list[tuple[str | None, str, str]] = []
    if julia is not None:
        explicit_settings.append(
            (os.fspath(julia), "argument", f"julia={os.fspath(julia)} (argument)")
        )
    exe_order = [("juliacall-exe", "PYTHON_JULIACALL_EXE"), ("juliapkg-exe", "PYTHON_JULIAPKG_EXE")]
    # juliacall < 0.9.28 starts juliapkg's Julia; PYTHON_JULIACALL_EXE is ours to pass on
    # (docs/julia-versions.md#juliacall-env)
    if not pair:
        exe_order.reverse()
    for xkey, envkey in exe_order:
        value, where = _option(xkey, envkey)
        explicit_settings.append((value, envkey, where))
    done = False
    for value, source, setting in explicit_settings:
        if value is None:
            looked.append(f"{source} unset")
            continue
        if consider(value, source, setting, True):
            done = True
            break

    # 4: an existing juliapkg environment
    if not done:
        prefix = os.path.join(project, "pyjuliapkg")
        meta_file = os.path.join(prefix, "meta.json")
        seen: set[str] = set()
        found_any = False
        exe = None
        try:
            with open(meta_file, encoding="utf-8") as fp:
                exe = json.load(fp).get("executable")
        except (OSError, ValueError, AttributeError):
            exe = None
        if isinstance(exe, str) and exe:
            found_any = True
            seen.add(os.path.abspath(exe))
            done = consider(
                exe,
                "juliapkg environment",
                f"juliapkg meta file {meta_file}: executable={exe}",
                False,
            )
        installed = os.path.join(
            prefix, "install", "bin", "julia.exe" if os.name == "nt" else "julia"
        )
        if not done and os.path.exists(installed) and os.path.abspath(installed) not in seen:
            found_any = True
            done = consider(
                installed, "juliapkg environment", f"juliapkg's own Julia {installed}", False
            )
        if not found_any:
            looked.append(f"no juliapkg environment at {project}")

    # 5: PATH
    if not done:
        on_path = shutil.which("julia")
        if on_path is None:
            looked.append("`julia` not on PATH")
        else:
            done = consider(on_path, "PATH", f"`julia` on PATH ({on_path})", False)

    return _verdict(
        chosen, stop_reason, tuple(candidates), tuple(looked), project, project_source, jc
    )


def _verdict(
    chosen: JuliaCandidate | None,
    stop_reason: str | None,
    candidates: tuple[JuliaCandidate, ...],
    looked: tuple[str, ...],
    project: str,
    project_source: str,
    juliacall: str | None,
) -> Discovery:
    jrange = juliacall_range(juliacall) if juliacall is not None else None

    def result(backend, usable, reason, advice, jc_problem=None) -> Discovery:
        return Discovery(
            chosen, candidates, looked, project, project_source, juliacall, jc_problem,
            backend, usable, reason, tuple(advice), jrange,
        )  # fmt: skip

    if chosen is None:
        if stop_reason is not None:
            return result(None, False, stop_reason, [INSTALL_HINT])
        reason = "no Julia found: " + ", ".join(looked)
        if juliacall is not None:
            reason += (
                f" (juliacall {juliacall} is installed, but importing it now would download Julia; "
                "porting never does that implicitly)"
            )
            todo = [INSTALL_HINT]
        else:
            todo = [JULIACALL_HINT, f"then {INSTALL_HINT}"]
        return result(None, False, reason, todo)

    assert chosen.version is not None and chosen.path is not None
    where = f"Julia {chosen.version_text} at {chosen.path} (from {chosen.via})"
    backend = knet_backend_for(chosen.version)
    if backend == "julia":
        what = f"Knet {KNET_VERSION} can run on it (backend 'julia')"
        advice: list[str] = []
    else:
        what = (
            f"Julia {chosen.version_text} is too new for Knet {KNET_VERSION} (which installs only on "
            "Julia <= 1.9): NNlib, the library Knet's CPU path calls, will run instead "
            "(backend 'julia-nnlib')"
        )
        advice = [
            "for Knet itself, install Julia 1.9 (e.g. `juliaup add 1.9`, or "
            "`porting doctor --install-julia`) and set PYTHON_JULIACALL_EXE to it"
        ]
    if juliacall is None:
        return result(
            backend, False, f"{where}, but juliacall is not installed", [JULIACALL_HINT, *advice]
        )
    supported, text = juliacall_supports(juliacall, chosen.version, jrange)
    if supported is False:
        if backend == "julia":
            fix = f"install juliacall{JULIACALL_PIN} (pip install 'porting[julia]')"
        else:
            fix = (
                "use a Julia 1.9 for Knet (pip install 'porting[julia]' pins a juliacall for it), "
                "or a juliacall whose juliapkg.json accepts this Julia for NNlib"
            )
        problem = f"{text}, not Julia {chosen.version_text}"
        return result(backend, False, f"{where}, but {problem}", [fix, *advice], problem)
    note = None if supported else text
    return result(backend, True, f"{where}, juliacall {juliacall}: {what}", advice, note)
