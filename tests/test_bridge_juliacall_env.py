"""`porting.bridge.juliacall_env`: Julia compat specifiers and the environment prepared for each
juliacall version, as pure functions (the real packages are exercised in
test_bridge_real_juliacall.py)."""

from __future__ import annotations

import json

import pytest

from porting.bridge.juliacall_env import (
    JuliaCompat,
    effective_settings,
    juliacall_range,
    launch_environment,
    reads_juliacall_pair,
)

# Hand-derived from Pkg's documented specifier rules (caret: the first non-zero part is fixed;
# tilde: major.minor fixed unless only the major is given; hyphen: the upper bound inclusive
# at the precision written).
CASES = [
    ("~1.9, ^1.10.3", (1, 9, 0), True),
    ("~1.9, ^1.10.3", (1, 9, 99), True),
    ("~1.9, ^1.10.3", (1, 8, 5), False),
    ("~1.9, ^1.10.3", (1, 10, 0), False),
    ("~1.9, ^1.10.3", (1, 10, 2), False),
    ("~1.9, ^1.10.3", (1, 10, 3), True),
    ("~1.9, ^1.10.3", (1, 99, 0), True),
    ("~1.9, ^1.10.3", (2, 0, 0), False),
    ("1.6.1 - 1.10.0, ^1.10.3", (1, 6, 0), False),
    ("1.6.1 - 1.10.0, ^1.10.3", (1, 6, 1), True),
    ("1.6.1 - 1.10.0, ^1.10.3", (1, 10, 0), True),
    ("1.6.1 - 1.10.0, ^1.10.3", (1, 10, 1), False),
    ("1.6 - 1.9", (1, 9, 7), True),
    ("1.6 - 1.9", (1, 10, 0), False),
    ("=0.9.28", (0, 9, 28), True),
    ("=0.9.28", (0, 9, 29), False),
    ("0.8, 0.9", (0, 8, 4), True),
    ("0.8, 0.9", (0, 9, 0), True),
    ("0.8, 0.9", (0, 10, 0), False),
    ("^0.0.3", (0, 0, 4), False),
    ("~1", (1, 99, 0), True),
    ("~1", (2, 0, 0), False),
    ("1.6", (1, 99, 0), True),
    ("1.6", (1, 5, 9), False),
]


@pytest.mark.parametrize(("spec", "version", "inside"), CASES)
def test_compat_specifiers(spec, version, inside):
    assert JuliaCompat.parse(spec).contains(version) is inside


@pytest.mark.parametrize("bad", ["", "1.x", ">= 1.6", "~"])
def test_bad_specifiers_are_refused(bad):
    with pytest.raises(ValueError):
        JuliaCompat.parse(bad)


def test_range_from_a_juliapkg_json_file(tmp_path):
    f = tmp_path / "juliapkg.json"
    f.write_text(
        json.dumps({"julia": "~1.9, ^1.10.3", "packages": {"PythonCall": {"version": "=0.9.27"}}})
    )
    r = juliacall_range("0.9.27", str(f))
    assert r is not None and r.compat.text == "~1.9, ^1.10.3" and str(f) in r.source
    assert r.pythoncall == "0.9.27"
    f.write_text("{not json")
    fallback = juliacall_range("0.9.27", str(f))
    assert fallback is not None and "built-in table" in fallback.source


def test_pair_rule_by_version():
    assert not reads_juliacall_pair("0.9.26") and not reads_juliacall_pair("0.9.27")
    assert reads_juliacall_pair("0.9.28") and reads_juliacall_pair("0.9.37")
    assert reads_juliacall_pair(None)  # unknown: the current releases' rule


def test_x_options_win_over_the_environment():
    s = effective_settings(
        {"PYTHON_JULIACALL_EXE": "/env/julia", "PYTHON_JULIAPKG_PROJECT": "/p"},
        {"juliacall-exe": "/x/julia", "juliacall-project": True},  # a bare -X flag is no value
    )
    assert s == {"PYTHON_JULIACALL_EXE": "/x/julia", "PYTHON_JULIAPKG_PROJECT": "/p"}


def test_pair_is_completed_for_new_juliacall(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    for given in ({"PYTHON_JULIACALL_EXE": "/j"}, {"PYTHON_JULIACALL_PROJECT": str(project)}, {}):
        launch = launch_environment("/j", str(project), "0.9.28", given)
        assert launch.route == "juliacall-pair"
        merged = {**given, **launch.set}
        assert "PYTHON_JULIACALL_EXE" in merged and "PYTHON_JULIACALL_PROJECT" in merged
        assert "PYTHON_JULIAPKG_EXE" not in launch.set  # juliapkg is not consulted at all
        assert launch.set["PYTHON_JULIAPKG_OFFLINE"] == "yes"


def test_old_juliacall_gets_juliapkg_settings(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    launch = launch_environment(
        "/j",
        str(project),
        "0.9.27",
        {"PYTHON_JULIACALL_EXE": "/j", "PYTHON_JULIACALL_PROJECT": "proj"},
    )
    assert launch.route == "juliapkg" and launch.unset == ()
    assert launch.set["PYTHON_JULIAPKG_EXE"] == "/j"
    assert launch.set["PYTHON_JULIAPKG_PROJECT"] == str(project)  # absolute, as juliapkg needs


def test_a_missing_project_means_neither_of_the_pair(tmp_path):
    launch = launch_environment(
        "/j", str(tmp_path / "absent"), "0.9.28", {"PYTHON_JULIACALL_EXE": "/j"}
    )
    assert launch.route == "juliapkg" and launch.unset == ("PYTHON_JULIACALL_EXE",)
    assert launch.set["PYTHON_JULIAPKG_EXE"] == "/j"
    env = {"PYTHON_JULIACALL_EXE": "/j"}
    changed = launch.apply(env)
    assert "PYTHON_JULIACALL_EXE" not in env and changed["PYTHON_JULIACALL_EXE"] is None


def test_juliapkg_exe_only_when_it_changes_something(tmp_path):
    project = tmp_path / "proj"
    (project / "pyjuliapkg").mkdir(parents=True)
    meta = {"executable": "/j", "override_executable": None}
    (project / "pyjuliapkg" / "meta.json").write_text(json.dumps(meta))
    same = launch_environment("/j", str(project), "0.9.27", {})
    assert "PYTHON_JULIAPKG_EXE" not in same.set
    other = launch_environment("/other", str(project), "0.9.27", {})
    assert other.set["PYTHON_JULIAPKG_EXE"] == "/other"
    meta["override_executable"] = "/old"  # juliapkg would resolve anyway: say which Julia
    (project / "pyjuliapkg" / "meta.json").write_text(json.dumps(meta))
    assert launch_environment("/j", str(project), "0.9.27", {}).set["PYTHON_JULIAPKG_EXE"] == "/j"
