"""The probe: start the discovered Julia once and check that `porting`'s Julia side works there.

This is the one step of finding Julia that starts Julia and writes a file. `probe_julia()` runs
`julia --project=<juliacall's project> -e ...` in a subprocess (never juliacall, never an
install: `JULIA_PKG_OFFLINE=true`): it includes the PortingKnet package, reports Julia, Knet,
NNlib and PythonCall versions, and checks that the PythonCall in that project is the version the
installed juliacall pins (juliacall refuses to start otherwise;
docs/julia-versions.md#pythoncall-pin). Results are cached in memory and
in `PORTING_CACHE_DIR` (default `~/.cache/porting`), keyed by the executable, the Julia project's
manifest, the package sources and the juliacall version, so a new Python process does not pay
Julia's start-up again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from porting import settings
from porting.bridge.discovery import Discovery, _tail, describe_exit, discover, run_command
from porting.errors import PortingError

DEFAULT_PROBE_TIMEOUT = 300.0
ENV_PROBE_TIMEOUT = "PORTING_JULIA_PROBE_TIMEOUT"
ENV_CACHE_DIR = "PORTING_CACHE_DIR"


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


# Each top-level statement below runs in the newest world age, so `PortingKnet.versions()` is
# called in a statement after the one that `include`d it (from Julia 1.12 a call in the same
# statement would see the old world and fail: docs/julia-versions.md#world-age); `invokelatest`
# makes that explicit. PythonCall's
# version is read from its own Project.toml without loading it (nor Pkg).
_PROBE_SCRIPT = r"""
porting_probe_loaded = try
    include(raw"{source}")
    true
catch err
    println("porting-probe:error-begin")
    showerror(stdout, err)
    println()
    println("porting-probe:error-end")
    false
end
if porting_probe_loaded
    try
        for (k, v) in Base.invokelatest(PortingKnet.versions)
            v === nothing && continue
            println("porting-probe:", lowercase(string(k)), "=", replace(string(v), "\n" => " "))
        end
        println("porting-probe:backend=", Base.invokelatest(PortingKnet.backend_name))
    catch err
        println("porting-probe:error-begin")
        showerror(stdout, err)
        println()
        println("porting-probe:error-end")
    end
end
let entry = Base.find_package("PythonCall")
    if entry === nothing
        println("porting-probe:pythoncall=missing")
    else
        toml = joinpath(dirname(dirname(entry)), "Project.toml")
        m = isfile(toml) ? match(r"(?m)^version\s*=\s*\"([^\"]+)\"", read(toml, String)) : nothing
        println("porting-probe:pythoncall=", m === nothing ? "unknown" : m.captures[1])
    end
end
println("porting-probe:julia=", VERSION)
"""

_probe_memory: dict[str, Probe] = {}


def _cache_dir() -> Path:
    explicit = settings.text(ENV_CACHE_DIR)
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
    The PythonCall found must be the version the installed juliacall pins.
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
    timeout = settings.seconds(ENV_PROBE_TIMEOUT, DEFAULT_PROBE_TIMEOUT, explicit=timeout)
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
    else:
        problem = _pythoncall_problem(d, versions.get("pythoncall"))
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


def _pythoncall_problem(d: Discovery, found: str | None) -> str | None:
    """juliacall starts only with the PythonCall version it pins (`=0.9.28` in its own
    juliapkg.json): a different one in the project makes `import juliacall` fail."""
    if found == "missing":
        return (
            f"PythonCall (juliacall's Julia half) is not installed in the Julia project "
            f"{d.project}: run `porting doctor --install-julia`"
        )
    if d.juliacall is None or found in (None, "", "found", "unknown"):
        return None
    wanted = d.juliacall_range.pythoncall if d.juliacall_range is not None else d.juliacall
    if wanted and found != wanted:
        return (
            f"the Julia project {d.project} has PythonCall {found}, but juliacall {d.juliacall} "
            f"needs PythonCall {wanted} exactly and would fail to start: run "
            "`porting doctor --install-julia` (or reinstall the juliacall that matches)"
        )
    return None
