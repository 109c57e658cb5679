"""Find Julia without side effects: nothing imported from juliacall or juliapkg, nothing downloaded.

`discover()` looks, in this order, at

1. the `julia` argument (`porting doctor --julia PATH`),
2. `-X juliacall-exe` / `PYTHON_JULIACALL_EXE`,
3. `-X juliapkg-exe` / `PYTHON_JULIAPKG_EXE`,
4. an existing juliapkg environment: the executable recorded in its `pyjuliapkg/meta.json`, then
   the Julia juliapkg installed in `pyjuliapkg/install/bin`,
5. `julia` on `PATH`,

runs `<julia> --version` (with a timeout) on the first one that is set, and decides: Julia <= 1.9
can run Knet 1.4.10 (backend "julia"); Julia >= 1.10, where Knet cannot install, gets NNlib, the
library Knet's CPU path calls (backend "julia-nnlib"). The installed juliacall version is read
from its metadata (not imported) and checked against the compatibility matrix below. An explicit
setting (1-3) that does not work stops the search: it is reported, quoting where it came from,
never silently replaced by another Julia.

`probe_julia()` then checks that the Julia found actually works: it starts it once in a
subprocess, includes the PortingKnet package and reports Julia, Knet, NNlib and PythonCall
versions. Probes are cached in memory and in `PORTING_CACHE_DIR` (default
`~/.cache/porting`), keyed by the executable, the Julia project's manifest and the package
sources, so a new Python process does not pay Julia's start-up again.

>>> d = discover()
>>> d.backend, d.usable  # doctest: +SKIP
(None, False)
>>> d.reason  # doctest: +SKIP
'no Julia found: PYTHON_JULIACALL_EXE unset, PYTHON_JULIAPKG_EXE unset, no juliapkg environment at /venv/julia_env, `julia` not on PATH'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from porting.errors import PortingError

Version = tuple[int, int, int]

KNET_VERSION = "1.4.10"
KNET_MAX_JULIA: tuple[int, int] = (1, 9)  # Knet 1.4.10 resolves only on Julia <= 1.9
JULIACALL_PIN = ">=0.9.26,<0.9.29"  # the porting[julia] extra, see pyproject.toml

# juliacall version range (lo inclusive, hi exclusive) -> Julia range it runs (lo inclusive,
# hi exclusive). See docs/julia-versions.md#juliacall-julia.
JULIACALL_MATRIX: tuple[tuple[Version, Version | None, Version, Version | None, str], ...] = (
    ((0, 9, 29), None, (1, 10, 3), None, "Julia >= 1.10.3"),
    ((0, 9, 26), (0, 9, 29), (1, 9, 0), (1, 10, 0), "Julia ~1.9 (1.9.x)"),
    ((0, 9, 25), (0, 9, 26), (1, 6, 1), (1, 10, 1), "Julia 1.6.1 to 1.10.0"),
)

DEFAULT_VERSION_TIMEOUT = 20.0
DEFAULT_PROBE_TIMEOUT = 300.0
ENV_VERSION_TIMEOUT = "PORTING_JULIA_TIMEOUT"
ENV_PROBE_TIMEOUT = "PORTING_JULIA_PROBE_TIMEOUT"
ENV_CACHE_DIR = "PORTING_CACHE_DIR"

INSTALL_HINT = (
    "run `porting doctor --install-julia` (downloads Julia 1.9 and Knet 1.4.10 through juliapkg), "
    "or set PYTHON_JULIACALL_EXE to a Julia 1.9 executable you installed"
)
JULIACALL_HINT = "pip install 'porting[julia]' (juliacall" + JULIACALL_PIN + ")"

_VERSION_RE = re.compile(r"^julia version (\d+)\.(\d+)\.(\d+)(\S*)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- small helpers


def parse_version(text: str) -> Version | None:
    """`"0.9.27"` -> `(0, 9, 27)`; `None` when it does not start with three numbers."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def format_version(v: Version | None) -> str:
    return "?" if v is None else ".".join(map(str, v))


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


def env_seconds(name: str, default: float) -> float:
    """A timeout from the environment, quoting the variable when it is not a positive number."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PortingError(f"{name}={raw}: expected a positive number of seconds")
    return value


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


def juliapkg_project() -> tuple[str, str]:
    """The Julia project juliacall will use, and where that choice came from.

    Mirrors juliapkg's rules without importing it: `PYTHON_JULIACALL_PROJECT` (juliacall >=
    0.9.28), `PYTHON_JULIAPKG_PROJECT`, else `<prefix>/julia_env` in a virtual or conda
    environment, else `<depot>/environments/pyjuliapkg`.
    """
    for xkey, envkey in (
        ("juliacall-project", "PYTHON_JULIACALL_PROJECT"),
        ("juliapkg-project", "PYTHON_JULIAPKG_PROJECT"),
    ):
        value, where = _option(xkey, envkey)
        if value:
            return os.path.abspath(os.path.expanduser(value)), where
    if sys.prefix != sys.base_prefix:
        return os.path.join(sys.prefix, "julia_env"), f"virtual environment {sys.prefix}"
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        return os.path.join(conda, "julia_env"), f"CONDA_PREFIX={conda}"
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

    @property
    def knet_possible(self) -> bool:
        return self.julia is not None and self.backend == "julia"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["julia"] = None if self.julia is None else _candidate_dict(self.julia)
        d["candidates"] = [_candidate_dict(c) for c in self.candidates]
        d["looked"] = list(self.looked)
        d["advice"] = list(self.advice)
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


def juliacall_supports(juliacall: str, julia: Version) -> tuple[bool | None, str]:
    """Whether juliacall `juliacall` runs Julia `julia`, per the matrix; None when unknown."""
    jc = parse_version(juliacall)
    if jc is None:
        return None, f"juliacall {juliacall}: version not understood"
    for lo, hi, jlo, jhi, text in JULIACALL_MATRIX:
        if jc >= lo and (hi is None or jc < hi):
            ok = julia >= jlo and (jhi is None or julia < jhi)
            return ok, f"juliacall {juliacall} runs {text}"
    return None, f"juliacall {juliacall} is older than the compatibility table (0.9.25)"


def knet_backend_for(version: Version) -> str:
    """Backend name for this Julia: "julia" when Knet 1.4.10 can install (<= 1.9), else "julia-nnlib"."""
    return "julia" if version[:2] <= KNET_MAX_JULIA else "julia-nnlib"


def discover(julia: str | os.PathLike | None = None, *, timeout: float | None = None) -> Discovery:
    """Find Julia and decide what the Julia backend could be. Never imports juliacall.

    `julia` is an explicit executable (it wins over every environment variable); `timeout`
    bounds `julia --version` (default `PORTING_JULIA_TIMEOUT`, else 20 s).
    """
    if timeout is None:
        timeout = env_seconds(ENV_VERSION_TIMEOUT, DEFAULT_VERSION_TIMEOUT)
    project, project_source = juliapkg_project()
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
    for xkey, envkey in (
        ("juliacall-exe", "PYTHON_JULIACALL_EXE"),
        ("juliapkg-exe", "PYTHON_JULIAPKG_EXE"),
    ):
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

    jc = dist_version("juliacall")
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
    def result(backend, usable, reason, advice, jc_problem=None) -> Discovery:
        return Discovery(
            chosen, candidates, looked, project, project_source, juliacall, jc_problem,
            backend, usable, reason, tuple(advice),
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
    supported, text = juliacall_supports(juliacall, chosen.version)
    if supported is False:
        if backend == "julia":
            fix = f"install juliacall{JULIACALL_PIN} (pip install 'porting[julia]')"
        else:
            fix = (
                "use a Julia 1.9 for Knet (pip install 'porting[julia]' pins a juliacall for it), "
                "or juliacall>=0.9.29 for NNlib on this Julia"
            )
        problem = f"{text}, not Julia {chosen.version_text}"
        return result(backend, False, f"{where}, but {problem}", [fix, *advice], problem)
    note = None if supported else text
    return result(backend, True, f"{where}, juliacall {juliacall}: {what}", advice, note)


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class Probe:
    """Whether the Julia found works: PortingKnet loads and says which backend it is."""

    ok: bool
    backend: str | None  # PortingKnet.backend_name(): "julia" or "julia-nnlib"
    # julia, knet, nnlib, pythoncall, and what PortingKnet.versions() adds (knet_error, ...)
    versions: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


_PROBE_SCRIPT = r"""
try
    include(raw"{source}")
    for (k, v) in PortingKnet.versions()
        v === nothing && continue
        println("porting-probe:", lowercase(string(k)), "=", replace(string(v), "\n" => " "))
    end
    println("porting-probe:backend=", PortingKnet.backend_name())
catch err
    println("porting-probe:error-begin")
    showerror(stdout, err)
    println()
    println("porting-probe:error-end")
end
println("porting-probe:pythoncall=", Base.find_package("PythonCall") === nothing ? "missing" : "found")
println("porting-probe:julia=", VERSION)
"""

_probe_memory: dict[str, Probe] = {}


def _cache_dir() -> Path:
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "porting"


def _stamp(path: Path | str) -> list:
    try:
        st = os.stat(path)
        return [str(path), st.st_mtime_ns, st.st_size]
    except OSError:
        return [str(path), None, None]


def _probe_key(d: Discovery, source: Path) -> str:
    assert d.julia is not None and d.julia.path is not None
    sources = sorted(source.parent.glob("*.jl"))
    parts = [
        _stamp(os.path.realpath(d.julia.path)),
        d.project,
        _stamp(os.path.join(d.project, "Manifest.toml")),
        [_stamp(p) for p in sources],
        d.juliacall,
        sys.version_info[:2],
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _parse_probe(out: str) -> tuple[dict[str, str], str | None, str | None]:
    versions: dict[str, str] = {}
    backend = None
    error_lines: list[str] = []
    in_error = False
    error = None
    for line in out.splitlines():
        if line == "porting-probe:error-begin":
            in_error = True
            continue
        if line == "porting-probe:error-end":
            in_error = False
            error = "\n".join(error_lines).strip()
            continue
        if in_error:
            error_lines.append(line)
            continue
        if line.startswith("porting-probe:") and "=" in line:
            key, _, value = line[len("porting-probe:") :].partition("=")
            if key == "backend":
                backend = value.strip()
            else:
                versions[key.strip()] = value.strip()
    if in_error:  # the end marker never came
        error = "\n".join(error_lines).strip()
    return versions, backend, error


def probe_julia(
    d: Discovery | None = None,
    *,
    timeout: float | None = None,
    refresh: bool = False,
    disk_cache: bool = True,
) -> Probe:
    """Start the discovered Julia once and check that PortingKnet loads (cached).

    Runs `julia --project=<juliacall's project> -e 'include(PortingKnet.jl); ...'` in a
    subprocess; never imports juliacall, never installs anything (`JULIA_PKG_OFFLINE=true`).
    """
    from porting.bridge.paths import julia_source_file

    if d is None:
        d = discover()
    if d.julia is None or d.julia.path is None:
        return Probe(False, None, {}, d.reason)
    try:
        source = julia_source_file()
    except PortingError as e:
        return Probe(False, None, {"julia": d.julia.version_text or "?"}, str(e))
    key = _probe_key(d, source)
    if not refresh:
        if key in _probe_memory:
            return _probe_memory[key]
        if disk_cache:
            hit = _disk_cache_get(key)
            if hit is not None:
                _probe_memory[key] = hit
                return hit
    if timeout is None:
        timeout = env_seconds(ENV_PROBE_TIMEOUT, DEFAULT_PROBE_TIMEOUT)
    env = dict(os.environ)
    env["JULIA_PKG_OFFLINE"] = "true"  # never let Pkg reach the network from a probe
    cmd = [
        d.julia.path,
        "--startup-file=no",
        "--history-file=no",
        f"--project={d.project}",
        "-e",
        _PROBE_SCRIPT.replace("{source}", str(source)),
    ]
    t0 = time.perf_counter()
    try:
        rc, out, err = run_command(cmd, timeout, env)
    except subprocess.TimeoutExpired:
        result = Probe(
            False, None, {"julia": d.julia.version_text or "?"},
            f"{d.julia.setting}: loading PortingKnet did not finish within {timeout:g} s "
            f"(set {ENV_PROBE_TIMEOUT} to wait longer; the first load precompiles Knet)",
            time.perf_counter() - t0,
        )  # fmt: skip
        _probe_memory[key] = result  # not written to disk: a slow first load may be faster later
        return result
    except OSError as e:
        return Probe(False, None, {}, f"{d.julia.setting}: cannot be run: {e}")
    seconds = time.perf_counter() - t0
    versions, backend, error = _parse_probe(out)
    versions.setdefault("julia", d.julia.version_text or "?")
    problem = None
    if error is not None:
        problem = f"loading {source.name} in Julia {versions['julia']} failed: {error}"
    elif rc != 0:
        problem = f"Julia {versions['julia']} failed with {describe_exit(rc)}: {_tail(err or out)}"
    elif backend not in ("julia", "julia-nnlib"):
        problem = (
            f"PortingKnet.backend_name() said {backend!r}; expected 'julia' or 'julia-nnlib' "
            f"(stderr: {_tail(err)})"
        )
    elif versions.get("pythoncall") == "missing":
        problem = (
            f"PythonCall (juliacall's Julia half) is not installed in the Julia project "
            f"{d.project}: run `porting doctor --install-julia`"
        )
    result = Probe(problem is None, backend, versions, problem, seconds)
    _probe_memory[key] = result
    if disk_cache:
        _disk_cache_put(key, result)
    return result


def _disk_cache_get(key: str) -> Probe | None:
    try:
        with open(_cache_dir() / "julia-probe.json", encoding="utf-8") as fp:
            entry = json.load(fp).get(key)
        if not isinstance(entry, dict):
            return None
        entry = dict(entry, cached=True)
        return Probe(**entry)
    except (OSError, ValueError, TypeError):
        return None


def _disk_cache_put(key: str, result: Probe) -> None:
    path = _cache_dir() / "julia-probe.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, encoding="utf-8") as fp:
                data = json.load(fp)
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data = dict(list(data.items())[-15:])  # keep the file small
        data[key] = {k: v for k, v in result.to_dict().items() if k != "cached"}
        from porting.files import atomic_write

        with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as fp:
            json.dump(data, fp)
    except OSError:
        pass  # a cache that cannot be written is only slower


def clear_probe_cache() -> None:
    """Forget in-memory probe results (the disk cache is keyed by file stamps)."""
    _probe_memory.clear()
