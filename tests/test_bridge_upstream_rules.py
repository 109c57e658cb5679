"""Bridge rules that come from upstream behaviour (juliacall, juliapkg, Julia, Knet), checked
without Julia: the probe script's world age, PythonCall's version, Julia's own reason when Knet
fails to load, one `import juliacall` per process, the worker's signal setting, the Julia
package's compat and stdlib loading, and the bare-softmax export.

The Julia code is parsed with tree-sitter-julia (never run here); see julia/README.md for what
has and has not been run with a real Julia.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading Project.toml needs tomli on 3.10")

import porting.bridge as bridge
from porting.bridge import discovery, probe
from porting.errors import PortingError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.name != "posix", reason="fake Julia executables are scripts")


def fake_julia(path: Path, version: str = "1.9.4", probe_lines: dict | None = None) -> Path:
    lines = "".join(f'echo "porting-probe:{k}={v}"\n' for k, v in (probe_lines or {}).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = "--version" ] && {{ echo "julia version {version}"; exit 0; }}; done\n'
        + lines
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    for key in (
        "PYTHON_JULIACALL_EXE",
        "PYTHON_JULIAPKG_EXE",
        "PYTHON_JULIACALL_PROJECT",
        "PORTING_JULIA_WORKER",
        "PYTHON_JULIACALL_HANDLE_SIGNALS",
    ):
        monkeypatch.delenv(key, raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("PYTHON_JULIAPKG_PROJECT", str(tmp_path / "julia_env"))
    monkeypatch.setenv("PORTING_CACHE_DIR", str(tmp_path / "cache"))
    for key in list(sys._xoptions):
        if key.startswith(("juliacall-", "juliapkg-")):
            monkeypatch.delitem(sys._xoptions, key)
    monkeypatch.setattr(discovery, "dist_version", lambda name: None)
    bridge.clear_cache()
    yield bindir
    bridge.clear_cache()


def with_juliacall(monkeypatch, version: str) -> None:
    real = {"juliacall": version, "juliapkg": "0.1.17"}
    monkeypatch.setattr(discovery, "dist_version", lambda name: real.get(name))


GOOD = {"julia": "1.9.4", "knet": "1.4.10", "nnlib": "0.8.21", "backend": "julia"}


# --------------------------------------------------------------------------- item 4: world age


def _julia_parser():
    ts = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed")
    tsj = pytest.importorskip("tree_sitter_julia", reason="tree-sitter-julia is not installed")
    return ts.Parser(ts.Language(tsj.language()))


def test_probe_calls_portingknet_in_a_later_world_than_the_include():
    """From Julia 1.12 a function defined by `include` cannot be called from the same top-level
    statement (it runs in the world age the statement started in). The probe must call
    PortingKnet in a later top-level statement, through `invokelatest`."""
    parser = _julia_parser()
    source = probe._PROBE_SCRIPT.replace("{source}", "/x/src/module.jl")
    tree = parser.parse(source.encode())
    assert not tree.root_node.has_error
    statements = [n.text.decode() for n in tree.root_node.children if n.is_named]
    with_include = [s for s in statements if "include(" in s]
    assert len(with_include) == 1
    assert "PortingKnet." not in with_include[0]  # no call in the statement that defines it
    calls = re.findall(r"(\S*)PortingKnet\.(\w+)", source)
    assert calls and all(prefix.endswith("invokelatest(") for prefix, _ in calls), calls


# --------------------------------------------------------------------------- item 5: PythonCall


@pytest.mark.parametrize(("found", "ok"), [("0.9.28", True), ("0.9.27", False)])
def test_probe_compares_pythoncall_with_the_installed_juliacall(isolated, monkeypatch, found, ok):
    """juliacall 0.9.28 pins PythonCall =0.9.28; another PythonCall in the project makes
    `import juliacall` fail, so the probe must say so before anything starts it."""
    with_juliacall(monkeypatch, "0.9.28")
    fake_julia(isolated / "julia", probe_lines={**GOOD, "pythoncall": found})
    p = probe.probe_julia(discovery.discover())
    assert p.ok is ok
    if not ok:
        assert "PythonCall 0.9.27" in p.problem and "needs PythonCall 0.9.28" in p.problem
        assert "--install-julia" in p.problem
        plan = bridge.plan_auto()
        assert plan.backend == "reference" and "PythonCall 0.9.27" in plan.reason


# --------------------------------------------------------------------------- item 8: Julia's reason


def test_auto_passes_on_why_an_installed_knet_did_not_load(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.27")
    why = "Knet is installed but failed to load: LoadError: InitError: CUDA driver too old"
    fake_julia(
        isolated / "julia",
        probe_lines={**GOOD, "backend": "julia-nnlib", "knet": "", "knet_error": why},
    )
    plan = bridge.plan_auto()
    assert plan.backend == "julia-nnlib"
    assert f"[Julia says: {why}]" in plan.reason
    assert "not installed" not in plan.reason.replace(why, "")
    assert any(why in a for a in plan.advice)
    assert not any("to install Knet" in a for a in plan.advice)


def test_auto_still_says_install_when_knet_is_absent(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.27")
    why = "Knet is not installed in the active Julia environment (/p)"
    fake_julia(
        isolated / "julia",
        probe_lines={**GOOD, "backend": "julia-nnlib", "knet": "", "knet_error": why},
    )
    plan = bridge.plan_auto()
    assert "Knet is not installed in the Julia project" in plan.reason
    assert "--install-julia" in plan.reason
    assert any("to install Knet" in a for a in plan.advice)


# --------------------------------------------------------------------------- item 9: one import


class _CountingFinder:
    """A meta-path finder that fails every `import juliacall`, counting the attempts (as a
    juliacall whose start failed after `jl_init` would: it must not be imported again)."""

    def __init__(self):
        self.attempts = 0

    def find_spec(self, name, path=None, target=None):
        if name == "juliacall":
            self.attempts += 1
            raise ImportError("simulated: Julia failed to start")
        return None


def test_a_failed_juliacall_import_is_not_retried(isolated, monkeypatch):
    from porting.bridge import juliacall_backend as jb

    with_juliacall(monkeypatch, "0.9.27")
    fake_julia(isolated / "julia", probe_lines=GOOD)
    for key in ("PYTHON_JULIAPKG_OFFLINE", "PYTHON_JULIAPKG_EXE", "PYTHON_JULIACALL_EXE"):
        if key in os.environ:  # have monkeypatch restore whatever the code under test sets
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.setenv(key, "placeholder")
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", "placeholder")
    monkeypatch.delenv("PYTHON_JULIACALL_PROJECT")
    monkeypatch.delitem(sys.modules, "juliacall", raising=False)
    finder = _CountingFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.setattr(jb, "_session", jb._Session())
    monkeypatch.setattr(jb, "_shared", {})
    backend = jb.JuliacallBackend(select="julia-nnlib")
    with pytest.raises(PortingError, match="simulated: Julia failed to start") as first:
        backend.load()
    with pytest.raises(PortingError) as second:
        jb.JuliacallBackend(select="julia").load()
    assert finder.attempts == 1
    assert str(second.value) == str(first.value)
    assert "will not import juliacall again" in str(second.value)


def test_julia_worker_lets_julia_handle_signals(monkeypatch):
    """juliacall's FAQ: with Julia threads, PYTHON_JULIACALL_HANDLE_SIGNALS=yes, or the GC's
    safepoint segfaults kill the process. The worker sets it unless the user chose; -X options
    (not inherited by a child) become variables."""
    from porting.bridge import worker as W

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, env=None, **kw):
        seen["env"] = env
        raise Stop

    monkeypatch.setattr(W.subprocess, "Popen", fake_popen)
    monkeypatch.setitem(sys._xoptions, "juliacall-exe", "/opt/julia-1.9/bin/julia")
    for name, expected in (("julia", "yes"), ("julia-nnlib", "yes"), ("reference", None)):
        with pytest.raises(Stop):
            W.WorkerBackend(name).start()
        assert seen["env"].get("PYTHON_JULIACALL_HANDLE_SIGNALS") == expected
        if expected:
            assert seen["env"]["PYTHON_JULIACALL_EXE"] == "/opt/julia-1.9/bin/julia"
    monkeypatch.setenv("PYTHON_JULIACALL_HANDLE_SIGNALS", "no")  # the user's choice stays
    with pytest.raises(Stop):
        W.WorkerBackend("julia").start()
    assert seen["env"]["PYTHON_JULIACALL_HANDLE_SIGNALS"] == "no"


# --------------------------------------------------------------------------- item 11: the package


def test_julia_package_allows_julia_16_like_knet():
    """Knet 1.4.10 supports Julia 1.6; nothing in PortingKnet needs 1.7."""
    project = tomllib.loads((ROOT / "julia" / "Project.toml").read_text())
    assert project["compat"]["julia"] == "1.6"


def test_stdlibs_are_loaded_by_uuid_not_through_load_path():
    """`using LinearAlgebra` looks the name up through LOAD_PATH; an embedding without `@stdlib`
    there (and a project that does not list it) would fail to include the module."""
    parser = _julia_parser()
    src = (ROOT / "julia" / "src" / "PortingKnet.jl").read_text()
    assert not parser.parse(src.encode()).root_node.has_error
    project = tomllib.loads((ROOT / "julia" / "Project.toml").read_text())
    for name in ("LinearAlgebra", "TOML"):
        assert not re.search(rf"^\s*(using|import)\s+{name}\b", src, re.M), name
        uuid = project["deps"][name]
        assert f'Base.PkgId(Base.UUID("{uuid}"), "{name}")' in src, name
    backend = (ROOT / "julia" / "src" / "backend.jl").read_text()
    assert "Base.require(TOML_ID)" in backend and "TOML.parsefile" not in backend
    for jl in (ROOT / "julia" / "src").glob("*.jl"):
        text = jl.read_text()
        assert not re.search(r"^\s*(using|import)\s+(LinearAlgebra|TOML)\b", text, re.M), jl


# --------------------------------------------------------------------------- item 12: softmax


def test_bare_softmax_is_refused_at_export_naming_the_layer():
    """Knet's `softmax(x)` normalizes over the whole array (dims=:); the export format can only
    say per sample (dims=1). The exporter must not write dims=1 for it silently."""
    parser = _julia_parser()
    src = (ROOT / "julia" / "src" / "export.jl").read_text()
    assert not parser.parse(src.encode()).root_node.has_error
    body = src[src.index("function _function_layer(") :]
    body = body[: body.index("\nend\n")]
    refuse = body.index("if name === :softmax && opts.softmax_dims === nothing")
    record = body.index('_layer("activation", "function"; activation=ACTIVATIONS[name], dims=1)')
    assert refuse < record  # checked before anything is recorded
    message = body[refuse:record]
    assert "throw(ArgumentError(" in message and "layer $index" in message
    assert "softmax_dims=1" in message
    assert "softmax_dims=nothing" in src[: src.index("function export_model(")]  # documented
