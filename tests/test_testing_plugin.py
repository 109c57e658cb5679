"""The pytest plugin (porting.testing.plugin): registered through the pytest11 entry point,
inactive unless used, a fixture recording port checks, --porting-report writing strict JSON
and a self-contained HTML page, and short messages under -q."""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_TESTS = textwrap.dedent(
    """
    import numpy as np
    from porting.testing import assert_ported_close


    def test_good(port_checks):
        e = np.float32([1.0, -2.0, 3.0])
        assert_ported_close(e, e.copy(), label="good port")
        assert len(port_checks) == 1 and port_checks[0].ok
        assert port_checks[0].label == "good port"


    def test_bad():
        e = np.float32([1.0, -2.0, 3.0])
        assert_ported_close(e, e[::-1].copy(), label="mirrored port")


    def test_nan_error():
        e = np.float32([1.0, 2.0])
        assert_ported_close(e, np.float32([1.0, np.inf]), label="inf")
    """
)


def _entry_point_installed() -> bool:
    eps = metadata.entry_points(group="pytest11")
    return any(ep.value == "porting.testing.plugin" for ep in eps)


def _pytest(tmp_path, *args):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    plugin = [] if _entry_point_installed() else ["-p", "porting.testing.plugin"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _strict(text):
    def bad(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=bad)


def test_entry_point_is_declared_for_the_plugin_module():
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads TOML")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"porting": "porting.testing.plugin"}
    import porting.testing.plugin as plugin

    assert callable(plugin.pytest_addoption) and callable(plugin.port_checks)


def test_report_json_and_html(tmp_path):
    report = tmp_path / "ports.json"
    out = _pytest(tmp_path, "-q", f"--porting-report={report}")
    assert out.returncode == 1, out.stdout + out.stderr  # test_bad and test_nan_error fail
    assert "2 failed, 1 passed" in out.stdout
    doc = _strict(report.read_text())
    assert doc["summary"] == {"checks": 3, "passed": 1, "failed": 2}
    by_label = {c["label"]: c for c in doc["checks"]}
    good, bad, inf = by_label["good port"], by_label["mirrored port"], by_label["inf"]
    assert good["ok"] and good["test"] == "test_user.py::test_good"
    assert good["error_to_tolerance"] < 1 and "K=4096 assumed" in good["tolerance"]
    assert not bad["ok"] and bad["error_to_tolerance"] > 1 and bad["max_abs_error"] == 2.0
    assert not inf["ok"] and inf["error_to_tolerance"] == "inf"  # strict JSON: a string
    html = report.with_suffix(".html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "mirrored port" in html
    assert "<script" not in html and "http" not in html  # self-contained
    assert "porting: 3 port checks, 2 failed" in out.stdout


def test_quiet_keeps_messages_short_and_verbose_gives_the_report(tmp_path):
    quiet = _pytest(tmp_path, "-q", "-k", "bad")
    full = _pytest(tmp_path, "-k", "bad")
    assert "ported results differ: DIFFER" in quiet.stdout
    assert "sqrt(K)*max|expected| assumed" in quiet.stdout  # the assumption, even short
    assert "error / tolerance at worst element" not in quiet.stdout
    assert "error / tolerance at worst element" in full.stdout


def test_inactive_unless_used(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    out = _pytest(tmp_path, "-q", "test_plain.py")
    assert out.returncode == 0 and "porting:" not in out.stdout
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.html"))


def test_report_to_a_missing_folder_is_a_usage_error(tmp_path):
    out = _pytest(tmp_path, "-q", f"--porting-report={tmp_path / 'nope' / 'r.json'}")
    assert out.returncode == 4 and "does not exist" in out.stderr


def test_recorder_outside_pytest_and_strict_json(tmp_path):
    import numpy as np

    from porting.testing import _record, assert_ported_close
    from porting.testing.plugin import write_report

    with _record.Recorder() as rec:
        assert_ported_close(np.float64([1.0]), np.float64([1.0]))
        with pytest.raises(AssertionError):
            assert_ported_close(np.float64([1.0]), np.float64([np.nan]))
    assert [c.ok for c in rec] == [True, False]
    rec.checks[1].error_to_tolerance = float("nan")  # as a NaN comparison may leave it
    path, html = write_report(rec.checks, tmp_path / "r.json")
    doc = _strict(path.read_text())
    assert doc["checks"][1]["error_to_tolerance"] == "nan" and html.exists()


def test_the_plugin_is_light_to_load():
    """It loads with every pytest session where porting is installed: NumPy and pytest only."""
    code = (
        "import sys, porting.testing.plugin\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'hypothesis', 'juliacall',"
        " 'porting.model', 'porting.diagnosis') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


HOSTILE = {
    "ESC": ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    "NUL": ("a\x00b", "a\\x00b"),
    "CR": ("ok\rFAKE", "ok\\rFAKE"),
    "LF": ("one\ntwo", "one\\ntwo"),
    "BEL": ("ding\x07", "ding\\x07"),
    "C1 CSI": ("x\x9b2J", "x\\x9b2J"),
    "RLO": ("abc\u202edef", "abc\\u202edef"),
    "LRI": ("\u2066x\u2069", "\\u2066x\\u2069"),
    "lone surrogate": ("bad\udcff", "bad\\udcff"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_report_shows_control_characters_visibly(tmp_path, name):
    """A test id or label holding terminal controls (ESC), NUL, a carriage return or a bidi
    override reaches neither file raw: both show the same visible escape, as the CLI does."""
    from porting.testing._record import Check
    from porting.testing.plugin import write_report

    raw, shown = HOSTILE[name]
    check = Check(
        kind="close",
        ok=False,
        label=f"<b>{raw}</b>",
        shape=(2,),
        max_abs_error=1.0,
        error_to_tolerance=2.0,
        tolerance=f"tol {raw}",
        cause=raw,
        test=f"test_x.py::test_y[{raw}]",
        detail=[raw],
    )
    path, html_path = write_report([check], tmp_path / "ports.json")
    for p in (path, html_path):
        data = p.read_bytes()
        text = data.decode("utf-8")  # valid UTF-8: no lone surrogate written
        bad = [c for c in text if not (c.isprintable() or c in "\n ")]
        assert bad == [], (p.name, bad)
    doc = _strict(path.read_text(encoding="utf-8"))
    c = doc["checks"][0]
    assert c["test"] == f"test_x.py::test_y[{shown}]" and c["label"] == f"<b>{shown}</b>"
    assert c["cause"] == shown and c["tolerance"] == f"tol {shown}" and c["detail"] == [shown]
    page = html_path.read_text(encoding="utf-8")
    assert f"test_x.py::test_y[{shown}]" in page
    assert f"&lt;b&gt;{shown}&lt;/b&gt;" in page  # escaped for HTML as well


def test_report_through_pytest_shows_a_hostile_label_visibly(tmp_path):
    (tmp_path / "test_hostile.py").write_text(
        "import numpy as np\n"
        "from porting.testing import assert_ported_close\n\n"
        "def test_it():\n"
        "    e = np.float32([1.0])\n"
        "    assert_ported_close(e, e.copy(), label='\\x1b[31mred\\x00\\r\\u202e')\n"
    )
    report = tmp_path / "ports.json"
    plugin = [] if _entry_point_installed() else ["-p", "porting.testing.plugin"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-q"]
        + [f"--porting-report={report}", "test_hostile.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    shown = "\\x1b[31mred\\x00\\r\\u202e"
    assert _strict(report.read_text(encoding="utf-8"))["checks"][0]["label"] == shown
    page = report.with_suffix(".html").read_bytes()
    assert b"\x1b" not in page and b"\x00" not in page and b"\r" not in page
    assert shown.encode() in page and "\u202e".encode() not in page
