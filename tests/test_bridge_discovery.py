"""Finding Julia without side effects, the verdicts, the probe and `resolve_backend`'s messages.

Every Julia here is a fake: a tiny shell script in tmp_path that prints what `julia --version`
(and the probe) would. Nothing imports juliacall; the settings come from monkeypatched
environment variables and PATH.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import pytest

import porting.bridge as bridge
from porting.bridge import discovery, probe
from porting.errors import PortingError

pytestmark = pytest.mark.skipif(
    os.name != "posix", reason="fake Julia executables are shell scripts"
)

SETTINGS = (
    "PYTHON_JULIACALL_EXE",
    "PYTHON_JULIAPKG_EXE",
    "PYTHON_JULIACALL_PROJECT",
    "PYTHON_JULIAPKG_PROJECT",
    "PORTING_JULIA_WORKER",
    "PORTING_JULIA_TIMEOUT",
    "PORTING_JULIA_PROBE_TIMEOUT",
)


def fake_julia(path, version="1.9.4", *, probe: dict | None = None, body: str | None = None):
    """Write an executable shell script that answers `--version` (and optionally the probe)."""
    if body is None:
        probe_lines = ""
        if probe is not None:
            probe_lines = "".join(f'echo "porting-probe:{k}={v}"\n' for k, v in probe.items())
        body = (
            'for a in "$@"; do\n'
            f'  if [ "$a" = "--version" ]; then echo "julia version {version}"; exit 0; fi\n'
            "done\n" + probe_lines
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


GOOD_PROBE = {
    "julia": "1.9.4",
    "knet": "1.4.10",
    "nnlib": "0.8.21",
    "backend": "julia",
    "pythoncall": "found",
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real Julia, juliapkg environment, juliacall or cache can leak into these tests."""
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("PYTHON_JULIAPKG_PROJECT", str(tmp_path / "julia_env"))
    monkeypatch.setenv("PORTING_CACHE_DIR", str(tmp_path / "cache"))
    pkg = tmp_path / "jlpkg"
    (pkg / "src").mkdir(parents=True)
    (pkg / "src" / "PortingKnet.jl").write_text("module PortingKnet end\n")
    monkeypatch.setenv("PORTING_JULIA_PACKAGE", str(pkg))
    for key in list(sys._xoptions):
        if key.startswith(("juliacall-", "juliapkg-")):
            monkeypatch.delitem(sys._xoptions, key)
    monkeypatch.setattr(discovery, "dist_version", lambda name: None)
    bridge.clear_cache()
    yield bindir
    bridge.clear_cache()


def protect_env(monkeypatch, *keys):
    """Have monkeypatch restore these variables, whatever the code under test sets."""
    for key in keys:
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.setenv(key, "placeholder")
            monkeypatch.delenv(key)


def with_juliacall(monkeypatch, version="0.9.27"):
    real = {"juliacall": version, "juliapkg": "0.1.17"}
    monkeypatch.setattr(discovery, "dist_version", lambda name: real.get(name))


# --------------------------------------------------------------------------- where Julia is found


def test_no_julia_anywhere_names_every_place_looked(tmp_path):
    d = discovery.discover()
    assert d.julia is None and d.backend is None and not d.usable
    assert d.reason.startswith("no Julia found: ")
    for part in ("PYTHON_JULIACALL_EXE unset", "PYTHON_JULIAPKG_EXE unset", "`julia` not on PATH"):
        assert part in d.reason
    assert f"no juliapkg environment at {tmp_path / 'julia_env'}" in d.reason
    assert any("porting doctor --install-julia" in a for a in d.advice)


def test_julia_on_path(isolated):
    exe = fake_julia(isolated / "julia", "1.9.4")
    d = discovery.discover()
    assert d.julia is not None and d.julia.path == str(exe)
    assert d.julia.version == (1, 9, 4) and d.julia.source == "PATH"
    assert d.julia.setting == f"`julia` on PATH ({exe})"
    assert d.backend == "julia" and d.knet_possible


def test_order_argument_then_juliacall_then_juliapkg_then_path(tmp_path, isolated, monkeypatch):
    fake_julia(isolated / "julia", "1.11.2")
    pkg_exe = fake_julia(tmp_path / "pkgexe" / "julia", "1.9.3")
    call_exe = fake_julia(tmp_path / "callexe" / "julia", "1.9.2")
    arg_exe = fake_julia(tmp_path / "arg" / "julia", "1.9.1")
    assert discovery.discover().julia.version == (1, 11, 2)
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(pkg_exe))
    assert discovery.discover().julia.source == "PYTHON_JULIAPKG_EXE"
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(call_exe))
    d = discovery.discover()
    assert d.julia.source == "PYTHON_JULIACALL_EXE" and d.julia.version == (1, 9, 2)
    assert d.julia.setting == f"PYTHON_JULIACALL_EXE={call_exe}"
    d = discovery.discover(julia=str(arg_exe))
    assert d.julia.source == "argument" and d.julia.version == (1, 9, 1)


def test_existing_juliapkg_environment_is_used_before_path(tmp_path, isolated):
    fake_julia(isolated / "julia", "1.11.2")
    installed = fake_julia(
        tmp_path / "julia_env" / "pyjuliapkg" / "install" / "bin" / "julia", "1.9.4"
    )
    d = discovery.discover()
    assert d.julia.path == str(installed) and d.julia.source == "juliapkg environment"
    # juliapkg's meta file, when present, names the executable it resolved
    recorded = fake_julia(tmp_path / "elsewhere" / "julia", "1.9.3")
    meta = tmp_path / "julia_env" / "pyjuliapkg" / "meta.json"
    meta.write_text(
        json.dumps({"meta_version": 5, "executable": str(recorded), "version": "1.9.3"})
    )
    d = discovery.discover()
    assert d.julia.path == str(recorded) and "meta.json" in d.julia.setting


def test_stale_juliapkg_meta_falls_through_to_path(tmp_path, isolated):
    meta = tmp_path / "julia_env" / "pyjuliapkg" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"executable": str(tmp_path / "gone" / "julia")}))
    exe = fake_julia(isolated / "julia", "1.9.4")
    d = discovery.discover()
    assert d.julia.path == str(exe)
    assert any("gone" in line and "no such file" in line for line in d.looked)


def test_project_follows_juliapkg_rules(tmp_path, monkeypatch):
    assert discovery.juliapkg_project() == (
        str(tmp_path / "julia_env"),
        f"PYTHON_JULIAPKG_PROJECT={tmp_path / 'julia_env'}",
    )
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", str(tmp_path / "p2"))
    assert discovery.juliapkg_project()[1].startswith("PYTHON_JULIACALL_PROJECT=")


# --------------------------------------------------------------------------- bad settings


def test_explicit_setting_not_executable_is_quoted_and_not_replaced(
    tmp_path, isolated, monkeypatch
):
    fake_julia(isolated / "julia", "1.9.4")  # a good Julia on PATH must not be used instead
    plain = tmp_path / "x" / "julia"
    plain.parent.mkdir()
    plain.write_text("not a program")
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(plain))
    d = discovery.discover()
    assert d.julia is None and not d.usable
    assert d.reason.startswith(f"PYTHON_JULIACALL_EXE={plain}: not an executable file")
    assert "fix it or unset it" in d.reason


def test_explicit_setting_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(tmp_path / "nope" / "julia"))
    d = discovery.discover()
    assert f"PYTHON_JULIAPKG_EXE={tmp_path / 'nope' / 'julia'}: no such file" in d.reason


def test_explicit_setting_is_a_directory(tmp_path, monkeypatch):
    fake_julia(tmp_path / "jl" / "bin" / "julia")
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(tmp_path / "jl"))
    d = discovery.discover()
    assert "is a directory" in d.reason and "did you mean" in d.reason


def test_argument_problem_quotes_the_argument(tmp_path):
    d = discovery.discover(julia=str(tmp_path / "missing"))
    assert d.reason.startswith(f"julia={tmp_path / 'missing'} (argument): no such file")


def test_garbage_version_output(tmp_path, monkeypatch):
    exe = fake_julia(tmp_path / "g" / "julia", body='echo "hello world"\n')
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(exe))
    d = discovery.discover()
    assert "printed 'hello world'; expected 'julia version X.Y.Z'" in d.reason


def test_nonzero_exit(tmp_path, monkeypatch):
    exe = fake_julia(tmp_path / "e" / "julia", body='echo "libjulia missing" >&2\nexit 3\n')
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(exe))
    d = discovery.discover()
    assert "failed with exit code 3: libjulia missing" in d.reason


def test_hanging_julia_times_out(tmp_path, monkeypatch):
    exe = fake_julia(tmp_path / "h" / "julia", body="/bin/sleep 30\n")  # child keeps the pipes
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(exe))
    t0 = time.monotonic()
    d = discovery.discover(timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert f"PYTHON_JULIACALL_EXE={exe}: `julia --version` did not answer within 0.5 s" in d.reason


def test_timeout_setting_quotes_the_variable(monkeypatch):
    monkeypatch.setenv("PORTING_JULIA_TIMEOUT", "soon")
    with pytest.raises(
        PortingError, match="PORTING_JULIA_TIMEOUT='soon': expected a number of seconds > 0"
    ):
        discovery.discover()


def test_path_julia_that_fails_is_reported_not_fatal(isolated):
    fake_julia(isolated / "julia", body="exit 1\n")
    d = discovery.discover()
    assert d.julia is None and "`julia` on PATH" in d.reason and "exit code 1" in d.reason


# --------------------------------------------------------------------------- verdicts


def test_julia_19_with_juliacall_is_usable_for_knet(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.27")
    fake_julia(isolated / "julia", "1.9.4")
    d = discovery.discover()
    assert d.usable and d.backend == "julia"
    assert "juliacall 0.9.27" in d.reason and "Knet 1.4.10 can run" in d.reason


def test_julia_too_new_for_knet_gets_nnlib(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.30")
    fake_julia(isolated / "julia", "1.11.2")
    d = discovery.discover()
    assert d.usable and d.backend == "julia-nnlib" and not d.knet_possible
    assert "too new for Knet 1.4.10" in d.reason and "julia-nnlib" in d.reason
    assert any("Julia 1.9" in a for a in d.advice)


def test_julia_without_juliacall(isolated):
    fake_julia(isolated / "julia", "1.9.4")
    d = discovery.discover()
    assert not d.usable and d.backend == "julia"
    assert d.reason.endswith("but juliacall is not installed")
    assert any("porting[julia]" in a for a in d.advice)


def test_juliacall_without_julia_says_no_download(monkeypatch):
    with_juliacall(monkeypatch)
    d = discovery.discover()
    assert d.julia is None and "juliacall 0.9.27 is installed" in d.reason
    assert "would download Julia" in d.reason


@pytest.mark.parametrize(
    ("juliacall", "julia", "ok"),
    # The "julia" entry of juliacall's own juliapkg.json, per release (read from the wheels on
    # PyPI): 0.9.25 "1.6.1 - 1.10.0, ^1.10.3"; 0.9.26-0.9.28 "~1.9, ^1.10.3"; >= 0.9.29
    # "^1.10.3". Here juliacall is not installed, so the built-in copy of that table is used.
    [
        ("0.9.27", (1, 9, 4), True),
        ("0.9.27", (1, 8, 5), False),
        ("0.9.27", (1, 10, 2), False),
        ("0.9.27", (1, 10, 4), True),
        ("0.9.28", (1, 11, 2), True),
        ("0.9.26", (1, 9, 0), True),
        ("0.9.29", (1, 10, 3), True),
        ("0.9.29", (1, 10, 2), False),
        ("0.9.31", (1, 9, 4), False),
        ("0.9.25", (1, 6, 0), False),
        ("0.9.25", (1, 6, 7), True),
        ("0.9.25", (1, 10, 0), True),
        ("0.9.25", (1, 10, 1), False),
        ("0.9.25", (1, 11, 0), True),
        ("0.9.25", (2, 0, 0), False),
        ("0.9.10", (1, 9, 4), None),
    ],
)
def test_juliacall_matrix(juliacall, julia, ok):
    ok_found, text = discovery.juliacall_supports(juliacall, julia)
    assert ok_found is ok
    if ok is not None:
        assert "built-in table" in text


def test_juliacall_incompatible_with_julia(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.27")
    fake_julia(isolated / "julia", "1.10.2")
    d = discovery.discover()
    assert not d.usable
    assert "juliacall 0.9.27 runs Julia '~1.9, ^1.10.3'" in d.reason
    assert "not Julia 1.10.2" in d.reason
    assert d.juliacall_problem


def test_discovery_is_json_serialisable(isolated):
    fake_julia(isolated / "julia", "1.9.4")
    d = discovery.discover().to_dict()
    assert json.loads(json.dumps(d))["julia"]["version"] == "1.9.4"


# --------------------------------------------------------------------------- the probe


def test_probe_reads_versions_and_caches(isolated, monkeypatch, tmp_path):
    with_juliacall(monkeypatch)
    counter = tmp_path / "runs"
    fake_julia(
        isolated / "julia",
        body=(
            'for a in "$@"; do [ "$a" = "--version" ] && { echo "julia version 1.9.4"; exit 0; }; done\n'
            f'echo x >> "{counter}"\n'
            + "".join(f'echo "porting-probe:{k}={v}"\n' for k, v in GOOD_PROBE.items())
        ),
    )
    d = discovery.discover()
    p = probe.probe_julia(d)
    assert p.ok and p.backend == "julia" and p.versions["knet"] == "1.4.10"
    assert probe.probe_julia(d) is p  # memory cache
    probe.clear_probe_cache()
    again = probe.probe_julia(d)  # disk cache: Julia is not started again
    assert again.ok and again.cached
    assert counter.read_text().count("x") == 1
    assert probe.probe_julia(d, refresh=True).ok
    assert counter.read_text().count("x") == 2


def test_probe_reports_julias_error_message(isolated, monkeypatch):
    with_juliacall(monkeypatch)
    body = (
        'for a in "$@"; do [ "$a" = "--version" ] && { echo "julia version 1.9.4"; exit 0; }; done\n'
        'echo "porting-probe:error-begin"\n'
        'echo "ArgumentError: Package NNlib not found in current path."\n'
        'echo "porting-probe:error-end"\n'
        'echo "porting-probe:pythoncall=found"\n'
    )
    fake_julia(isolated / "julia", body=body)
    p = probe.probe_julia(discovery.discover())
    assert not p.ok and "Package NNlib not found in current path." in p.problem


def test_probe_without_pythoncall(isolated, monkeypatch):
    with_juliacall(monkeypatch)
    fake_julia(isolated / "julia", probe={**GOOD_PROBE, "pythoncall": "missing"})
    p = probe.probe_julia(discovery.discover())
    assert not p.ok and "PythonCall" in p.problem and "--install-julia" in p.problem


# --------------------------------------------------------------------------- resolve_backend


def test_auto_without_julia_is_the_reference_with_the_reason():
    r = bridge.resolve_backend("auto")
    assert r.name == "reference"
    assert r.reason.startswith("no Julia found: PYTHON_JULIACALL_EXE unset")
    assert "`julia` not on PATH" in r.reason


def test_auto_result_carries_the_reason():
    import numpy as np

    from porting.knet import conv4

    y = conv4(np.ones((3, 3, 1, 1)), np.ones((4, 4, 1, 1)))
    assert y.backend == "reference"
    assert getattr(y, "backend_reason", "no Julia found").startswith("no Julia found")


def test_explicit_julia_without_julia_says_what_to_do():
    with pytest.raises(PortingError) as e:
        bridge.resolve_backend("julia")
    msg = str(e.value)
    assert msg.startswith("backend='julia' needs Julia, but no Julia found")
    assert "porting doctor --install-julia" in msg and "PYTHON_JULIACALL_EXE" in msg


def test_explicit_julia_on_a_julia_too_new_for_knet(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.30")
    fake_julia(isolated / "julia", "1.11.2")
    with pytest.raises(PortingError) as e:
        bridge.resolve_backend("julia")
    msg = str(e.value)
    assert "installs only on Julia <= 1.9" in msg and "1.11.2" in msg
    assert "backend='julia-nnlib'" in msg and "PYTHON_JULIACALL_EXE" in msg


def test_explicit_julia_with_knet_missing(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.27")
    probe = {k: v for k, v in GOOD_PROBE.items() if k != "knet"}
    probe.update(backend="julia-nnlib", knet_error="Knet is not installed in the active Julia env")
    fake_julia(isolated / "julia", probe=probe)
    with pytest.raises(PortingError) as e:
        bridge.resolve_backend("julia")
    msg = str(e.value)
    assert "needs Knet 1.4.10, which is not installed in the Julia project" in msg
    assert "[Julia says: Knet is not installed in the active Julia env]" in msg
    assert "porting doctor --install-julia" in msg and "backend='julia-nnlib'" in msg


def test_explicit_julia_without_juliacall(isolated):
    fake_julia(isolated / "julia", "1.9.4")
    with pytest.raises(
        PortingError, match=r"cannot run: .*juliacall is not installed.*porting\[julia\]"
    ):
        bridge.resolve_backend("julia-nnlib")


def test_auto_falls_back_when_the_julia_probe_fails(isolated, monkeypatch):
    with_juliacall(monkeypatch)
    answer = 'for a in "$@"; do [ "$a" = "--version" ] && { echo "julia version 1.9.4"; exit 0; }; done\n'
    fake_julia(isolated / "julia", body=answer + 'echo "segmentation fault" >&2\nexit 1\n')
    r = bridge.resolve_backend("auto")
    assert r.name == "reference" and "was found but does not work" in r.reason
    assert "failed with exit code 1: segmentation fault" in r.reason


def test_auto_falls_back_with_a_warning_when_julia_cannot_start_in_process(isolated, monkeypatch):
    """Probe says yes, but juliacall cannot start: reference, a warning, and juliacall never
    actually imported (it is blocked here, as it is absent)."""
    from porting.bridge import juliacall_backend

    with_juliacall(monkeypatch)
    fake_julia(isolated / "julia", probe=GOOD_PROBE)
    monkeypatch.setitem(sys.modules, "juliacall", None)  # any import attempt fails
    monkeypatch.setattr(juliacall_backend, "_shared", {})
    monkeypatch.setattr(juliacall_backend, "_session", juliacall_backend._Session())
    protect_env(
        monkeypatch, "PYTHON_JULIAPKG_OFFLINE", "PYTHON_JULIAPKG_EXE", "PYTHON_JULIACALL_EXE"
    )
    monkeypatch.setenv("PORTING_JULIA_WORKER", "no")
    with pytest.warns(RuntimeWarning, match="using the reference backend"):
        r = bridge.resolve_backend("auto")
    assert r.name == "reference" and "the Julia backend failed to start" in r.reason


def test_auto_falls_back_when_the_julia_worker_cannot_start(isolated, monkeypatch):
    """Default worker mode: the worker reports why Julia could not start (here: no juliacall
    in the worker's environment) and "auto" falls back to the reference with that reason."""
    with_juliacall(monkeypatch)  # this process believes juliacall is there; the worker knows better
    fake_julia(isolated / "julia", probe=GOOD_PROBE)
    with pytest.warns(RuntimeWarning, match="using the reference backend"):
        r = bridge.resolve_backend("auto")
    assert r.name == "reference"
    assert "could not start backend 'julia'" in r.reason
    assert "needs juliacall, which is not installed" in r.reason


def test_plan_auto_picks_julia_when_probe_succeeds(isolated, monkeypatch):
    with_juliacall(monkeypatch)
    fake_julia(isolated / "julia", probe=GOOD_PROBE)
    plan = bridge.plan_auto()
    assert plan.backend == "julia" and "runs Knet 1.4.10" in plan.reason


def test_plan_auto_nnlib_on_new_julia(isolated, monkeypatch):
    with_juliacall(monkeypatch, "0.9.30")
    fake_julia(
        isolated / "julia",
        "1.11.2",
        probe={**GOOD_PROBE, "backend": "julia-nnlib", "julia": "1.11.2"},
    )
    plan = bridge.plan_auto()
    assert plan.backend == "julia-nnlib" and "too new for Knet" in plan.reason


def test_worker_setting_is_validated(monkeypatch):
    monkeypatch.setenv("PORTING_JULIA_WORKER", "maybe")
    with pytest.raises(PortingError, match="PORTING_JULIA_WORKER='maybe': expected yes or no"):
        bridge.worker_default()
    monkeypatch.setenv("PORTING_JULIA_WORKER", "no")
    assert bridge.worker_default() is False
    assert bridge.worker_default(True) is True


def test_unknown_backend_name():
    with pytest.raises(PortingError, match="backend='cuda': expected one of"):
        bridge.resolve_backend("cuda")


def test_julia_package_location_setting_is_quoted(tmp_path, monkeypatch):
    from porting.bridge import paths

    monkeypatch.setenv("PORTING_JULIA_PACKAGE", str(tmp_path / "nowhere"))
    with pytest.raises(
        PortingError, match=r"PORTING_JULIA_PACKAGE=.*nowhere: no src/PortingKnet\.jl there"
    ):
        paths.julia_package_dir()
    monkeypatch.delenv("PORTING_JULIA_PACKAGE")
    found = paths.julia_package_dir()  # the installed package data, else this checkout's julia/
    assert (found / "src" / "PortingKnet.jl").is_file()


def test_probe_script_is_valid_julia():
    """The probe's Julia code is never run here, so at least parse it (tree-sitter-julia)."""
    tsj = pytest.importorskip("tree_sitter_julia")
    ts = pytest.importorskip("tree_sitter")
    parser = ts.Parser(ts.Language(tsj.language()))
    source = probe._PROBE_SCRIPT.replace("{source}", "/some/where/PortingKnet.jl")
    tree = parser.parse(source.encode())
    assert not tree.root_node.has_error
    assert parser.parse(b'println("unclosed').root_node.has_error  # the check can fail
