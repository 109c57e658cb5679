"""`import porting` stays light: no TensorFlow, no juliacall, no Julia download."""

import json
import subprocess
import sys

HEAVY = ["tensorflow", "keras", "juliacall", "juliapkg", "h5py", "scipy", "matplotlib", "rich"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_porting_pulls_in_no_framework():
    mods = _modules_after(
        "import porting, porting.layout, porting.knet, porting.comparison, porting.geometry; "
        "porting.compare, porting.diagnose, porting.model, porting.testing"
    )
    loaded = sorted(m for m in HEAVY if m in mods)
    assert loaded == [], f"import porting imported {loaded}"


def test_reference_conv4_runs_without_tensorflow():
    code = (
        "import numpy as np, porting.knet as k\n"
        "y = k.conv4(np.ones((3,3,1,1)), np.ones((4,4,1,1)), backend='reference')\n"
        "assert y.shape == (2,2,1,1) and float(y[0,0,0,0]) == 9.0\n"
    )
    mods = _modules_after(code)
    assert "tensorflow" not in mods
    assert "juliacall" not in mods
    # the reference asked for by name never touches the Julia bridge, not even its discovery
    assert not any(m == "porting.bridge" or m.startswith("porting.bridge.") for m in mods)


def test_cli_help_is_light():
    mods = _modules_after("from porting.cli import build_parser; build_parser()")
    loaded = sorted(m for m in ["tensorflow", "juliacall", "keras"] if m in mods)
    assert loaded == [], f"building the CLI parser imported {loaded}"
