"""The bridge against the real juliacall and juliapkg Python packages, up to libjulia.

No Julia can be installed where these tests run, and nothing here may download one. So each
released juliacall line that matters (0.9.26, 0.9.27, 0.9.28 for Julia 1.9 and Knet; a current
one for Julia >= 1.10.3), each with the juliapkg pip picks for it (and one with the oldest
juliapkg it allows), is installed from PyPI into a cached folder (`pip install --target`; set
PORTING_TEST_VENVS to move the cache, default ~/.cache/porting-test-venvs), and run in a child
Python with a stand-in `julia`: a small script written here that answers exactly what juliapkg
and juliacall ask before they load libjulia (`julia --version`; the Libdl query for libjulia's
path and Sys.BINDIR) and refuses everything else (no Pkg operation can run). Its "libjulia" is an
empty file, so the run ends where juliacall calls `ctypes.PyDLL` on it: everything before that is
the packages' own code with the environment `porting` prepared. Every stand-in has its own
libjulia path, so the error names the Julia juliacall actually chose.

Skipped, with the reason, when PyPI cannot be reached. The child processes get a proxy that goes
nowhere and `PYTHON_JULIAPKG_OFFLINE=yes`, so a mistake cannot turn into a download.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the stand-in julia is a script")

ROOT = Path(__file__).resolve().parent.parent
KNET19 = "1.9.4"  # a Julia juliacall 0.9.26-0.9.28 accepts ("~1.9, ^1.10.3")
NEW = "1.10.5"  # a Julia every juliacall >= 0.9.26 accepts
CURRENT = "0.9.37"  # the newest juliacall on PyPI when this was written (>= 0.9.29 line)

# (juliacall, juliapkg or None for what pip picks)
RELEASES = [
    ("0.9.26", None),
    ("0.9.27", None),
    ("0.9.27", "0.1.17"),  # the oldest juliapkg juliacall 0.9.26-0.9.28 allow
    ("0.9.28", None),
    (CURRENT, None),
]
IDS = [jc + (f"+juliapkg{jp}" if jp else "") for jc, jp in RELEASES]


def _cache_root() -> Path:
    explicit = os.environ.get("PORTING_TEST_VENVS")
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".cache" / "porting-test-venvs"


def installed(juliacall: str, juliapkg: str | None) -> Path:
    """A folder holding juliacall (and juliapkg, semver, filelock, ...) from PyPI, cached."""
    name = f"juliacall-{juliacall}" + (f"-juliapkg-{juliapkg}" if juliapkg else "")
    target = _cache_root() / name
    if (target / "juliacall" / "__init__.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    reqs = [f"juliacall=={juliacall}"] + ([f"juliapkg=={juliapkg}"] if juliapkg else [])
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-input", "--no-compile", "--target", str(tmp), *reqs]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install {' '.join(reqs)} took over 300 s (PyPI unreachable?)")
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = " ".join(out.stderr.split())[-300:]
        pytest.skip(f"cannot install {' '.join(reqs)} from PyPI (offline?): {tail}")
    try:
        os.replace(tmp, target)
    except OSError:  # another run won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


STANDIN = r"""#!{python}
import json, os, sys
here = os.path.dirname(os.path.realpath(__file__))
with open(os.path.join(here, "standin.json")) as fp:
    cfg = json.load(fp)
args = sys.argv[1:]
script = args[args.index("-e") + 1] if "-e" in args else ""
with open(cfg["log"], "a") as fp:
    fp.write(json.dumps({{"exe": os.path.abspath(sys.argv[0]), "args": args}}) + "\n")
if "--version" in args:
    print("julia version " + cfg["version"])
elif "Libdl" in script and "libjulia" in script:
    sys.stdout.write(cfg["lib"] + "\0" + cfg["bindir"])
else:
    sys.stderr.write("stand-in julia: refusing " + repr(args)[:300] + "\n")
    sys.exit(3)
"""


def standin(folder: Path, version: str, log: Path) -> Path:
    """A stand-in Julia at folder/bin/julia with its own (empty) libjulia."""
    bindir = folder / "bin"
    bindir.mkdir(parents=True)
    lib = folder / "lib" / "libjulia.so.1"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    cfg = {"version": version, "lib": str(lib), "bindir": str(bindir), "log": str(log)}
    (bindir / "standin.json").write_text(json.dumps(cfg))
    exe = bindir / "julia"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(0o755)
    return exe


DRIVER = textwrap.dedent(
    r"""
    import json, os, sys
    target, root, site, mode = sys.argv[1:5]
    sys.path[:0] = [p for p in (target, root) if p]
    sys.path.append(site)  # numpy for porting; no .pth files are processed (-S)
    out = {}
    try:
        if mode == "porting":  # what the worker (or in-process backend) does
            from porting.bridge import discovery
            from porting.bridge.juliacall_backend import JuliacallBackend
            d = discovery.discover()
            out["chosen"] = d.julia.path if d.julia else None
            out["project"] = d.project
            out["usable"], out["reason"] = d.usable, d.reason
            r = getattr(d, "juliacall_range", None)
            out["range"] = None if r is None else r.to_dict()
            if hasattr(discovery, "juliacall_supports"):
                from porting.commands import doctor
                report = doctor.collect(probe=False)
                out["doctor_range"] = report["juliacall"].get("julia_range")
            b = JuliacallBackend(d, select="julia-nnlib")
            try:
                b.load()
                out["error"] = None
            except Exception as e:
                out["error"] = f"{type(e).__name__}: {e}"
            out["environment"] = b.environment
        elif mode == "worker":  # the default: Julia in a worker process
            from porting.bridge.worker import WorkerBackend
            w = WorkerBackend("julia-nnlib")
            try:
                w.start()
                out["error"] = None
            except Exception as e:
                out["error"] = f"{type(e).__name__}: {e}"
            finally:
                w.close()
        elif mode == "juliacall":  # a plain juliacall user in the same Python environment
            try:
                import juliacall
                out["error"] = None
            except Exception as e:
                out["error"] = f"{type(e).__name__}: {e}"
        elif mode == "resolve":  # juliapkg alone, offline
            import juliapkg
            import juliapkg.deps
            out["deps_files"] = juliapkg.deps.deps_files()
            try:
                juliapkg.resolve()
                out["error"] = None
                out["executable"] = juliapkg.executable()
            except Exception as e:
                out["error"] = f"{type(e).__name__}: {e}"
    finally:
        print("DRIVER-RESULT " + json.dumps(out))
    """
)


class Sandbox:
    """One child-Python world: stand-in Julias, a depot, a project, a log of Julia calls."""

    def __init__(self, tmp: Path, target: Path):
        self.tmp = tmp
        self.target = target
        self.log = tmp / "julia-calls.jsonl"
        self.project = tmp / "project"
        self.path_dir = tmp / "path"
        self.path_dir.mkdir()
        self.env = {
            "PATH": str(self.path_dir),
            "HOME": str(tmp / "home"),
            "JULIA_DEPOT_PATH": str(tmp / "depot"),
            "PYTHON_JULIAPKG_PROJECT": str(self.project),
            "PORTING_CACHE_DIR": str(tmp / "cache"),
            "PYTHONNOUSERSITE": "1",
            "PYTHON_JULIAPKG_OFFLINE": "yes",
            # a proxy that goes nowhere: no download can happen even by mistake
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "no_proxy": "",
            "NO_PROXY": "",
        }

    def julia(self, name: str, version: str, *, on_path: bool = False) -> Path:
        exe = standin(self.tmp / name, version, self.log)
        if on_path:  # as `julia` on PATH; juliapkg and discovery see this path
            link = self.path_dir / "julia"
            link.symlink_to(exe)
            return link
        return exe

    def run(
        self, mode: str, *, root: bool = True, xopts: tuple[str, ...] = (), **env: str | None
    ) -> dict:
        import numpy

        site = str(Path(numpy.__file__).resolve().parent.parent)
        full = dict(self.env)
        for key, value in env.items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        cmd = [sys.executable, "-S", *(f"-X{x}" for x in xopts), "-c", DRIVER, str(self.target)]
        cmd += [str(ROOT) if root else "", site, mode]
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=full, cwd=self.tmp, timeout=120
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("DRIVER-RESULT ")]
        assert lines, f"driver failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
        return json.loads(lines[-1][len("DRIVER-RESULT ") :])

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text().splitlines()]

    def libdl_calls(self) -> list[dict]:
        return [c for c in self.calls() if any("Libdl" in a for a in c["args"])]


def lib_of(exe: Path) -> str:
    return str(Path(os.path.realpath(exe)).parent.parent / "lib" / "libjulia.so.1")


def reached_libjulia(result: dict, exe: Path) -> None:
    """juliacall got as far as loading the libjulia of the stand-in `exe`, and no further."""
    err = result["error"]
    assert err is not None, result
    assert lib_of(exe) in err, err  # ctypes could not load our empty file: that is the end
    assert "OSError" in err, err


@pytest.fixture(params=RELEASES, ids=IDS)
def box(request, tmp_path):
    juliacall, juliapkg = request.param
    sb = Sandbox(tmp_path, installed(juliacall, juliapkg))
    sb.juliacall = juliacall
    sb.julia_version = NEW if juliacall == CURRENT else KNET19
    return sb


# --------------------------------------------------------------------------- the checks


def test_julia_range_is_read_from_the_installed_juliacall(box):
    """Item 2: the table comes from the installed juliacall's own juliapkg.json."""
    exe = box.julia("a", box.julia_version)
    r = box.run("porting", PYTHON_JULIAPKG_EXE=str(exe))
    data = json.loads((box.target / "juliacall" / "juliapkg.json").read_text())
    assert r["range"]["julia"] == data["julia"]
    assert r["range"]["source"].endswith(str(box.target / "juliacall" / "juliapkg.json"))
    assert r["range"]["pythoncall"] == box.juliacall
    assert r["doctor_range"] == r["range"]  # what `porting doctor --json` reports
    expected = "^1.10.3" if box.juliacall == CURRENT else "~1.9, ^1.10.3"
    assert data["julia"] == expected


def test_only_juliacall_exe_set_as_porting_advises(box):
    """Item 1: PYTHON_JULIACALL_EXE alone (porting's own hint). juliacall >= 0.9.28 refuses one
    of the pair alone; < 0.9.28 ignores it. Either way juliacall must reach this Julia."""
    box.project.mkdir()
    exe = box.julia("a", box.julia_version)
    r = box.run("porting", PYTHON_JULIACALL_EXE=str(exe))
    assert r["chosen"] == str(exe) and r["usable"], r["reason"]
    assert "must be set together" not in (r["error"] or "")
    reached_libjulia(r, exe)
    for call in box.libdl_calls():
        assert call["exe"] == str(exe) and f"--project={box.project}" in call["args"]


def test_only_juliacall_project_set(box):
    box.project.mkdir()
    exe = box.julia("a", box.julia_version, on_path=True)
    r = box.run("porting", PYTHON_JULIACALL_PROJECT=str(box.project), PYTHON_JULIAPKG_PROJECT=None)
    assert r["chosen"] == str(exe) and r["project"] == str(box.project)
    reached_libjulia(r, exe)
    for call in box.libdl_calls():
        assert f"--project={box.project}" in call["args"]


def test_the_julia_checked_is_the_julia_juliacall_starts(box):
    """Item 6: with both PYTHON_JULIACALL_EXE and PYTHON_JULIAPKG_EXE set to different Julias,
    discovery must choose the one this juliacall version actually starts."""
    box.project.mkdir()
    a = box.julia("a", box.julia_version)
    b = box.julia("b", box.julia_version)
    r = box.run("porting", PYTHON_JULIACALL_EXE=str(a), PYTHON_JULIAPKG_EXE=str(b))
    reached_libjulia(r, Path(r["chosen"]))
    expected = b if box.juliacall in ("0.9.26", "0.9.27") else a
    assert r["chosen"] == str(expected)


def test_an_installed_environment_is_not_resolved_again(box):
    """Item 7: after an install, juliapkg's meta.json names the Julia; porting must not set
    PYTHON_JULIAPKG_EXE (juliapkg would resolve again, offline now and online on the next plain
    import, deleting the Manifest)."""
    exe = box.julia("a", box.julia_version, on_path=True)
    first = box.run("resolve")  # what an install leaves: meta.json, made by juliapkg itself
    assert first["error"] is None and first["executable"] == str(exe), first
    meta_file = box.project / "pyjuliapkg" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["offline"] = False  # an online install records this
    meta_file.write_text(json.dumps(meta))
    before = meta_file.read_bytes()
    r = box.run("porting")
    assert r["chosen"] == str(exe) and r["usable"], r["reason"]
    reached_libjulia(r, exe)
    assert meta_file.read_bytes() == before  # juliapkg did not resolve again
    assert "PYTHON_JULIAPKG_EXE" not in r["environment"], r["environment"]
    plain = box.run("juliacall")  # a plain juliacall user afterwards: still no re-resolve
    reached_libjulia(plain, exe)
    assert meta_file.read_bytes() == before


def test_porting_does_not_break_resolution_for_other_juliacall_users(box):
    """Item 3: juliapkg intersects the Julia bound of every juliapkg.json on sys.path; with
    porting importable, a plain juliapkg resolve must still work (here: juliacall >= 0.9.29 and
    Julia 1.10 would meet "~1.9" from porting and fail)."""
    exe = box.julia("a", box.julia_version, on_path=True)
    r = box.run("resolve")
    assert str(ROOT / "porting" / "juliapkg.json") in r["deps_files"]
    assert r["error"] is None, r["error"]
    assert r["executable"] == str(exe)
    plain = box.run("juliacall")
    reached_libjulia(plain, exe)


def test_install_step_sees_porting_juliapkg_json_from_a_checkout(box):
    """Item 10: --install-julia's juliapkg subprocess finds porting/juliapkg.json through the
    PYTHONPATH it is given, whatever the current directory."""
    from porting.commands import doctor

    env = doctor.install_environment(box.env, None, None, str(ROOT))
    env["PYTHON_JULIAPKG_OFFLINE"] = "yes"  # the test never goes online
    r = box.run("resolve", root=False, PYTHONPATH=env["PYTHONPATH"])
    assert str(ROOT / "porting" / "juliapkg.json") in r["deps_files"]


def test_no_stand_in_was_asked_to_install_anything(box):
    """The stand-in refuses everything but --version and the Libdl query; make sure the runs
    above would notice: a Pkg script is refused with exit 3."""
    exe = box.julia("a", box.julia_version)
    out = subprocess.run([str(exe), "-e", 'import Pkg; Pkg.add("Knet")'], capture_output=True)
    assert out.returncode == 3


def test_the_worker_reaches_the_julia_given_as_an_x_option(box):
    """The default route: a worker process. `-X juliacall-exe=...` is not inherited by a child,
    so the parent passes it on; the worker's juliacall must start that Julia, with Julia's own
    signal handling on (a value juliacall accepts)."""
    box.project.mkdir()
    exe = box.julia("a", box.julia_version)
    other = box.julia("b", box.julia_version, on_path=True)  # what juliapkg would find alone
    r = box.run("worker", xopts=(f"juliacall-exe={exe}",), PYTHONPATH=str(box.target))
    assert "could not start backend 'julia-nnlib'" in r["error"], r["error"]
    assert lib_of(exe) in r["error"] and lib_of(other) not in r["error"], r["error"]
    assert "must be set together" not in r["error"]


def test_install_step_against_the_real_juliapkg(box):
    """`--install-julia`'s own script and environment, run by the real juliapkg up to the first
    Julia Pkg operation (which the stand-in refuses): Knet and Julia ~1.9 go into the project's
    own juliapkg file, porting/juliapkg.json is found through PYTHONPATH (cwd elsewhere), and the
    project juliapkg writes asks for all of them. The explicit Julia is passed as
    PYTHON_JULIAPKG_EXE, so juliapkg never looks for (or downloads) another one."""
    from porting.commands import doctor

    exe = box.julia("a", box.julia_version)
    env = doctor.install_environment(box.env, str(exe), str(box.project), str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], str(box.target)))
    out = subprocess.run(
        [sys.executable, "-S", "-c", doctor._INSTALL_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=box.tmp,
        timeout=120,
    )
    assert out.returncode != 0  # the stand-in refused the Pkg step
    own = json.loads((box.project / "pyjuliapkg" / "juliapkg.json").read_text())
    assert own["julia"] == "~1.9"
    assert own["packages"]["Knet"]["version"] == "=1.4.10"
    if box.juliacall == CURRENT:  # "^1.10.3": Knet's project cannot use this juliacall
        assert "'julia' compat entries have empty intersection" in out.stderr
        return
    assert "stand-in julia: refusing" in out.stderr, out.stderr[-2000:]
    pkg_calls = [c for c in box.calls() if any("Pkg." in a for a in c["args"])]
    assert pkg_calls and pkg_calls[0]["exe"] == str(exe)
    script = pkg_calls[0]["args"][-1]
    for name in ("Knet", "NNlib", "NPZ", "JSON", "PythonCall"):
        assert f'name="{name}"' in script, name
    project_toml = (box.project / "Project.toml").read_text()
    assert "Knet" in project_toml and "NNlib" in project_toml


def test_compat_reading_agrees_with_juliapkg():
    """porting's reading of Julia compat specifiers against juliapkg's own `Compat` (an
    implementation we did not write), on specifiers juliacall, porting and Knet use."""
    from porting.bridge.juliacall_env import JuliaCompat

    target = installed(CURRENT, None)
    specs = ["~1.9, ^1.10.3", "1.6.1 - 1.10.0, ^1.10.3", "^1.10.3", "=0.9.28", "0.8, 0.9",
             "0.21, 1", "~1", "1.6", "^0.0.3", "1.6 - 1.9"]  # fmt: skip
    versions = [(1, 6, 0), (1, 6, 1), (1, 8, 5), (1, 9, 0), (1, 9, 4), (1, 10, 0), (1, 10, 2),
                (1, 10, 3), (1, 11, 2), (2, 0, 0), (0, 0, 3), (0, 0, 4), (0, 8, 4), (0, 9, 28),
                (0, 9, 29), (0, 21, 4), (0, 10, 0)]  # fmt: skip
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "from juliapkg.compat import Compat, Version\n"
        f"specs, versions = {specs!r}, {versions!r}\n"
        "print(json.dumps([[Version(*v) in Compat.parse(s) for v in versions] for s in specs]))\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = json.loads(out.stdout)
    ours = [[JuliaCompat.parse(s).contains(v) for v in versions] for s in specs]
    assert ours == theirs
