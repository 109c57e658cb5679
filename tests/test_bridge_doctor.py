"""`porting doctor`: its JSON report, its exit codes, and `--install-julia` failing fast."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import pytest

import porting.bridge as bridge
from porting.bridge import discovery
from porting.commands import doctor

SETTINGS = (
    "PYTHON_JULIACALL_EXE",
    "PYTHON_JULIAPKG_EXE",
    "PYTHON_JULIACALL_PROJECT",
    "PORTING_JULIA_WORKER",
)


def fake_julia(path, version="1.9.4", probe: dict | None = None):
    lines = "".join(f'echo "porting-probe:{k}={v}"\n' for k, v in (probe or {}).items())
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
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("PYTHON_JULIAPKG_PROJECT", str(tmp_path / "julia_env"))
    monkeypatch.setenv("PORTING_CACHE_DIR", str(tmp_path / "cache"))
    pkg = tmp_path / "jlpkg" / "src"
    pkg.mkdir(parents=True)
    (pkg / "PortingKnet.jl").write_text("module PortingKnet end\n")
    monkeypatch.setenv("PORTING_JULIA_PACKAGE", str(pkg.parent))
    real = discovery.dist_version
    monkeypatch.setattr(
        discovery,
        "dist_version",
        lambda name: None if name in ("juliacall", "juliapkg") else real(name),
    )
    bridge.clear_cache()
    yield bindir
    bridge.clear_cache()


def with_juliacall(monkeypatch, version="0.9.27"):
    real = discovery.dist_version
    fake = {"juliacall": version, "juliapkg": "0.1.17"}
    monkeypatch.setattr(discovery, "dist_version", lambda name: fake.get(name) or real(name))


def run_json(capsys, *argv) -> tuple[int, dict]:
    code = doctor.main(["--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_json_report_without_julia(capsys):
    code, r = run_json(capsys)
    assert code == 0
    for key in (
        "python",
        "numpy",
        "tensorflow",
        "keras",
        "juliacall",
        "julia",
        "knet",
        "nnlib",
        "auto",
        "advice",
        "ok",
    ):
        assert key in r, key
    assert r["python"]["version"].count(".") == 2
    assert r["juliacall"]["version"] is None and r["juliacall"]["pin"] == ">=0.9.26,<0.9.29"
    assert r["julia"]["found"] is False and "`julia` not on PATH" in r["julia"]["looked"]
    assert r["knet"] is None and r["nnlib"] is None
    assert r["auto"]["backend"] == "reference"
    assert r["auto"]["reason"].startswith("no Julia found: PYTHON_JULIACALL_EXE unset")
    assert any("porting[julia]" in a for a in r["advice"])
    assert any("--install-julia" in a for a in r["advice"])
    assert "every installed Python package" in r["juliapkg_json_note"]


def test_json_report_tensorflow_version_from_metadata(capsys):
    _, r = run_json(capsys)
    tf = r["tensorflow"]
    if tf is not None:
        assert tf["distribution"].startswith(("tensorflow", "tf-nightly"))
        assert tf["version"][0].isdigit()


def test_json_report_with_a_working_julia(isolated, monkeypatch, capsys):
    with_juliacall(monkeypatch)
    exe = fake_julia(
        isolated / "julia",
        probe={
            "julia": "1.9.4",
            "knet": "1.4.10",
            "nnlib": "0.8.21",
            "pythoncall": "found",
            "backend": "julia",
        },
    )
    code, r = run_json(capsys)
    assert code == 0
    assert r["julia"]["executable"] == str(exe) and r["julia"]["version"] == "1.9.4"
    assert r["julia"]["found_via"] == f"`julia` on PATH ({exe})"
    assert r["julia"]["juliacall_compatible"] is True
    assert r["knet"] == "1.4.10" and r["nnlib"] == "0.8.21"
    assert r["auto"]["backend"] == "julia" and r["auto"]["runs_in"] == "worker process"
    assert r["juliacall"]["in_pin"] is True


def test_julia_without_juliacall_still_reports_knet_and_nnlib(isolated, capsys):
    fake_julia(
        isolated / "julia",
        probe={
            "julia": "1.9.4",
            "nnlib": "0.8.21",
            "knet_error": "Knet is not installed in the active Julia environment",
            "pythoncall": "missing",
            "backend": "julia-nnlib",
        },
    )
    code, r = run_json(capsys)
    assert code == 0 and r["auto"]["backend"] == "reference"
    assert r["auto"]["reason"].endswith("but juliacall is not installed")
    assert r["nnlib"] == "0.8.21" and r["knet"] is None
    assert r["knet_error"] == "Knet is not installed in the active Julia environment"
    assert any("PythonCall" in a for a in r["advice"])


def test_json_report_no_probe_does_not_start_julia(isolated, monkeypatch, capsys, tmp_path):
    with_juliacall(monkeypatch, "0.9.30")
    marker = tmp_path / "started"
    exe = isolated / "julia"
    exe.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = "--version" ] && { echo "julia version 1.11.2"; exit 0; }; done\n'
        f'touch "{marker}"\n'
    )
    exe.chmod(0o755)
    code, r = run_json(capsys, "--no-probe")
    assert code == 0 and not marker.exists()
    assert r["knet"] is None and r["probe"] is None
    assert "too new for Knet" in r["auto"]["reason"]


def test_json_report_quotes_a_bad_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(tmp_path / "nope"))
    code, r = run_json(capsys)
    assert code == 0  # the reference backend still works
    assert r["auto"]["reason"].startswith(f"PYTHON_JULIACALL_EXE={tmp_path / 'nope'}: no such file")


def test_julia_argument_wins(tmp_path, monkeypatch, capsys):
    exe = fake_julia(tmp_path / "mine" / "julia", "1.9.2")
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(tmp_path / "nope"))
    _, r = run_json(capsys, "--julia", str(exe))
    assert r["julia"]["version"] == "1.9.2" and r["julia"]["found_via"].endswith("(argument)")


def test_tensorflow_is_optional_with_the_usual_install_hint(monkeypatch, capsys):
    """Without TensorFlow (metadata says it is absent) doctor exits 0 and says how to get it
    the way every other message does: pip install 'porting[tf-cpu]'."""
    real = discovery.dist_version
    monkeypatch.setattr(
        discovery,
        "dist_version",
        lambda name: None if name.startswith(("tensorflow", "tf-", "julia")) else real(name),
    )
    code, r = run_json(capsys)
    assert code == 0 and r["ok"] and r["missing_required"] == [] and r["tensorflow"] is None
    hints = [a for a in r["advice"] if "TensorFlow" in a]
    assert len(hints) == 1 and "optional" in hints[0]
    assert "pip install 'porting[tf-cpu]'" in hints[0]
    assert not any("pip install tensorflow" in a for a in r["advice"])
    monkeypatch.setenv("COLUMNS", "200")
    assert doctor.main(["--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "not installed (optional: pip install 'porting[tf-cpu]')" in out
    assert "missing (required)" not in out


def test_missing_numpy_still_exits_1(monkeypatch, capsys):
    real = discovery.dist_version
    monkeypatch.setattr(
        discovery, "dist_version", lambda name: None if name == "numpy" else real(name)
    )
    code, r = run_json(capsys)
    assert code == 1 and r["missing_required"] == ["numpy"] and not r["ok"]


def test_json_reports_the_julia_range_of_the_installed_juliacall(isolated, monkeypatch, capsys):
    with_juliacall(monkeypatch, "0.9.27")
    fake_julia(isolated / "julia", "1.10.4")
    _, r = run_json(capsys, "--no-probe")
    rng = r["juliacall"]["julia_range"]
    assert rng["juliacall"] == "0.9.27" and rng["julia"] == "~1.9, ^1.10.3"
    assert "built-in table" in rng["source"]  # juliacall is not really installed here
    assert r["julia"]["juliacall_compatible"] is True  # 1.10.4 is in "^1.10.3"


def test_table_output_reads_well(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    for text in (
        "Python",
        "NumPy",
        "TensorFlow",
        "Keras",
        "juliacall",
        "Julia",
        'backend="auto"',
        "why",
        "to do",
    ):
        assert text in out
    assert "porting[julia]" in out  # rich markup must not eat the brackets


def test_through_the_cli(capsys):
    cli = pytest.importorskip("porting.cli")
    assert cli.main(["doctor", "--json", "--no-probe"]) == 0
    assert json.loads(capsys.readouterr().out)["auto"]["backend"] == "reference"


# --------------------------------------------------------------------------- --install-julia


def test_install_without_juliacall_says_pip_install(capsys):
    assert doctor.main(["--install-julia"]) == 2
    err = capsys.readouterr().err
    assert "juliacall is not installed: pip install 'porting[julia]'" in err


def test_install_with_a_juliacall_outside_the_pin(monkeypatch, capsys):
    with_juliacall(monkeypatch, "0.9.30")
    assert doctor.main(["--install-julia"]) == 2
    assert (
        "juliacall 0.9.30 is installed, but Knet 1.4.10 needs Julia <= 1.9"
        in capsys.readouterr().err
    )


def test_install_refuses_an_explicit_julia_too_new(tmp_path, monkeypatch, capsys):
    with_juliacall(monkeypatch)
    exe = fake_julia(tmp_path / "new" / "julia", "1.11.2")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(exe))
    monkeypatch.setattr(
        doctor, "check_network", lambda *a, **k: pytest.fail("must not reach the network")
    )
    assert doctor.main(["--install-julia"]) == 2
    err = capsys.readouterr().err
    assert f"PYTHON_JULIAPKG_EXE={exe} is Julia 1.11.2" in err and "Julia <= 1.9" in err


def test_install_offline_fails_fast_with_exit_2(monkeypatch, capsys):
    with_juliacall(monkeypatch)
    calls = []

    def offline(*args, **kwargs):
        calls.append(1)
        return False, ["julialang-s3.julialang.org:443 unreachable (Name or service not known)"]

    monkeypatch.setattr(doctor, "check_network", offline)
    monkeypatch.setattr(
        doctor.subprocess, "run", lambda *a, **k: pytest.fail("must not start the install")
    )
    t0 = time.monotonic()
    assert doctor.main(["--install-julia"]) == 2
    assert time.monotonic() - t0 < 5 and calls == [1]
    err = capsys.readouterr().err
    assert "cannot reach the Julia servers, so nothing was installed" in err
    assert "julialang-s3.julialang.org:443 unreachable" in err
    assert "PYTHON_JULIACALL_EXE" in err and "reference backend" in err


def test_install_offline_through_the_cli(monkeypatch, capsys):
    cli = pytest.importorskip("porting.cli")
    with_juliacall(monkeypatch)
    monkeypatch.setattr(
        doctor, "check_network", lambda *a, **k: (False, ["pkg.julialang.org:443 unreachable"])
    )
    assert cli.main(["doctor", "--install-julia"]) == 2
    assert "cannot reach the Julia servers" in capsys.readouterr().err


def test_check_network_refused_port():
    ok, lines = doctor.check_network((("127.0.0.1", 9),), timeout=1.0)
    assert not ok and lines[0].startswith("127.0.0.1:9 unreachable")


def test_check_network_needs_a_tls_handshake_not_just_a_tcp_connect():
    """A proxy that accepts every connection (as some sandboxes do) is not the Julia servers."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def accept_and_hang_up():
        conn, _ = server.accept()
        conn.close()

    threading.Thread(target=accept_and_hang_up, daemon=True).start()
    port = server.getsockname()[1]
    ok, lines = doctor.check_network((("127.0.0.1", port),), timeout=2.0)
    server.close()
    assert not ok and "unreachable" in lines[0]


def test_check_network_gives_up_after_the_timeout(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(1.5)
        raise OSError("too late")

    monkeypatch.setattr(doctor.socket, "create_connection", hang)
    t0 = time.monotonic()
    ok, lines = doctor.check_network((("pkg.julialang.org", 443),), timeout=0.3)
    assert not ok and time.monotonic() - t0 < 1.5
    assert lines == ["pkg.julialang.org:443 no answer within 0.3 s"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell fakes")
def test_doctor_never_imports_juliacall_or_tensorflow(tmp_path):
    import subprocess

    code = (
        "import sys, json\n"
        "from porting.commands import doctor\n"
        "doctor.main(['--json', '--no-probe'])\n"
        "print(json.dumps([m for m in ('juliacall', 'juliapkg', 'tensorflow', 'keras') if m in sys.modules]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=root),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_install_runs_juliapkg_with_the_settings_carried_over(
    isolated, monkeypatch, capsys, tmp_path
):
    """Online (faked): juliapkg runs in a subprocess, not offline, aimed at juliacall's project;
    afterwards the probe decides whether 'auto' now picks Knet."""
    import subprocess as sp

    with_juliacall(monkeypatch)
    fake_julia(
        isolated / "julia",
        probe={
            "julia": "1.9.4",
            "knet": "1.4.10",
            "nnlib": "0.8.21",
            "pythoncall": "found",
            "backend": "julia",
        },
    )
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", str(tmp_path / "jcproj"))
    monkeypatch.delenv("PYTHON_JULIAPKG_PROJECT")
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", "yes")
    monkeypatch.setattr(doctor, "check_network", lambda *a, **k: (True, ["ok"]))
    seen = {}

    def fake_run(cmd, env=None, **kwargs):
        seen["cmd"], seen["env"] = cmd, env
        return sp.CompletedProcess(cmd, 0)

    monkeypatch.setattr(doctor.subprocess, "run", fake_run)
    assert doctor.main(["--install-julia"]) == 0
    out = capsys.readouterr().out
    assert "juliapkg.json" in out and "every installed Python package" in out
    assert "backend 'auto' now picks 'julia'" in out
    script = seen["cmd"][-1]
    assert "juliapkg.resolve()" in script
    # Knet and its Julia bound go into the project's own juliapkg file, before resolving
    assert script.index('juliapkg.require_julia("~1.9")') < script.index("juliapkg.resolve()")
    assert (
        'juliapkg.add("Knet", "1902f260-5fb4-5aff-8c31-6271790ab950", version="=1.4.10")' in script
    )
    assert seen["env"]["PYTHON_JULIAPKG_OFFLINE"] == "no"
    assert seen["env"]["PYTHON_JULIAPKG_PROJECT"] == str(tmp_path / "jcproj")
    from porting.bridge.paths import juliapkg_json

    root = str(juliapkg_json().parent.parent)  # juliapkg finds porting/juliapkg.json from here
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == root


def test_install_makes_a_relative_project_absolute(isolated, monkeypatch, tmp_path):
    """juliapkg refuses a relative PYTHON_JULIAPKG_PROJECT ("must be an absolute path")."""
    monkeypatch.chdir(tmp_path)
    env = doctor.install_environment(
        {"PYTHON_JULIAPKG_PROJECT": "rel/proj"}, None, "rel/proj", "/src/checkout"
    )
    assert env["PYTHON_JULIAPKG_PROJECT"] == str(tmp_path / "rel" / "proj")
    assert env["PYTHONPATH"] == "/src/checkout"


def test_shipped_juliapkg_json_has_no_julia_bound_and_no_knet():
    """juliapkg intersects the "julia" bound of every juliapkg.json on sys.path: a "~1.9" here
    would make every resolve with juliacall >= 0.9.29 ("^1.10.3") fail. Knet 1.4.10 (Julia <= 1.9
    only) is added by --install-julia to that project alone."""
    from porting.bridge.paths import juliapkg_json

    spec = json.loads(juliapkg_json().read_text())
    assert "julia" not in spec
    pkgs = spec["packages"]
    assert "Knet" not in pkgs
    assert pkgs["NNlib"]["version"] == "0.8, 0.9"
    assert pkgs["NNlib"]["uuid"] == "872c559c-99b0-510c-b3b7-b6c96a88d5cd"
    assert pkgs["NPZ"]["uuid"] == "15e1cf62-19b3-5cfa-8e77-841668bca605"
    assert pkgs["JSON"]["uuid"] == "682c06a0-de6a-54ab-a142-c8b1cf79cde6"
