"""What a wheel ships: the Julia package (issue 3: installed with the Python package, not only
present in a checkout), juliapkg.json and the built-in examples."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_julia_package_and_examples(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (the dev extra)")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("porting-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "porting/_julia/Project.toml",
        "porting/_julia/src/PortingKnet.jl",
        "porting/_julia/test/runtests.jl",
        "porting/juliapkg.json",
        "porting/examples/lenet.npz",
        "porting/examples/lenet.json",
        "porting/examples/lenet_input.npy",
    ]:
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "notebooks/", "benchmarks/")) for n in names)
