"""`porting diagnose`: exit codes (0 rounding, 1 a bug, 2 bad input) and JSON output."""

import json

import numpy as np
import pytest

from porting import knet, layout
from porting.cli import main
from porting.examples import seed002


def _save(tmp_path, name, a):
    p = tmp_path / name
    np.save(p, a)
    return str(p)


@pytest.fixture
def seed002_files(tmp_path):
    ex = seed002()
    w, x = ex["w"], ex["x"]
    e = layout.activations_to_tf(
        np.asarray(knet.conv4(w, x, padding=1, backend="reference")), "keep"
    )
    bad = np.asarray(ex["tf_printed"], dtype=np.float32).reshape(1, 5, 5, 1)
    return {
        "e": _save(tmp_path, "expected.npy", e),
        "bad": _save(tmp_path, "actual.npy", bad),
        "good": _save(tmp_path, "good.npy", e.astype(np.float32)),
        "w": _save(tmp_path, "w.npy", w),  # Fortran-ordered, as NPZ.jl writes
        "x": _save(tmp_path, "x.npy", x),
    }


def test_kernel_flip_exits_1_and_names_the_cause(seed002_files, capsys):
    f = seed002_files
    argv = [
        "diagnose",
        f["e"],
        f["bad"],
        "--w",
        f["w"],
        "--x",
        f["x"],
        "--padding",
        "1",
        "--spatial",
        "keep",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("cause: kernel_flip") and "rotating the kernel 180 degrees" in out


def test_rounding_exits_0(seed002_files, capsys):
    f = seed002_files
    assert (
        main(
            [
                "diagnose",
                f["e"],
                f["good"],
                "--w",
                f["w"],
                "--x",
                f["x"],
                "--padding",
                "1",
                "--spatial",
                "keep",
            ]
        )
        == 0
    )
    assert "cause: rounding" in capsys.readouterr().out
    assert main(["diagnose", f["e"], f["good"]]) == 0  # outputs only
    capsys.readouterr()


def test_json_output(seed002_files, capsys):
    f = seed002_files
    assert (
        main(
            [
                "diagnose",
                f["e"],
                f["bad"],
                "--w",
                f["w"],
                "--x",
                f["x"],
                "--padding",
                "1",
                "--spatial",
                "keep",
                "--json",
            ]
        )
        == 1
    )
    d = json.loads(capsys.readouterr().out)
    assert d["cause"] == "kernel_flip" and d["ok"] is False
    assert d["comparison"]["tolerance"]["k"] == 27
    assert isinstance(d["alternatives"], list) and d["evidence"]


def test_outputs_only_with_k(seed002_files, capsys):
    f = seed002_files
    assert main(["diagnose", f["e"], f["bad"], "--k", "27", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["cause"] == "kernel_flip" and "outputs only" in d["basis"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--w", "W"], "both --w"),
        (["--bias", "B"], "--bias needs --w"),
        (["--w", "MISSING", "--x", "MISSING"], "no such file"),
        (["--w", "W", "--x", "X", "--padding", "9"], "conv4(w, x) gives (1, 21, 21, 1)"),
        (["--w", "W", "--x", "X", "--padding", "-1"], "padding=-1"),
    ],
)
def test_bad_input_exits_2(seed002_files, extra, match, capsys):
    f = seed002_files
    extra = [
        f["w"] if a == "W" else f["x"] if a == "X" else f["w"] if a == "B" else a for a in extra
    ]
    assert main(["diagnose", f["e"], f["bad"], *extra]) == 2
    assert match in capsys.readouterr().err


def test_bad_arrays_exit_2(tmp_path, seed002_files, capsys):
    ints = _save(tmp_path, "i.npy", np.ones((1, 5, 5, 1), dtype=np.int32))
    assert main(["diagnose", ints, seed002_files["bad"]]) == 2
    assert "dtype int32" in capsys.readouterr().err
    assert main(["diagnose", str(tmp_path / "nope.npy"), seed002_files["bad"]]) == 2
    assert "no such file" in capsys.readouterr().err
    # expected in Julia layout while w and x say otherwise
    julia = _save(tmp_path, "julia.npy", np.ones((5, 5, 1, 1)))
    f = seed002_files
    assert (
        main(
            [
                "diagnose",
                julia,
                f["bad"],
                "--w",
                f["w"],
                "--x",
                f["x"],
                "--padding",
                "1",
                "--spatial",
                "keep",
            ]
        )
        == 2
    )
    assert "expected has shape (5, 5, 1, 1)" in capsys.readouterr().err


def test_usage_errors_exit_2(seed002_files):
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", seed002_files["e"]])
    assert exc.value.code == 2
    for extra in (["--mode", "3"], ["--padding", "1,a"]):
        with pytest.raises(SystemExit) as exc:
            main(["diagnose", seed002_files["e"], seed002_files["bad"], *extra])
        assert exc.value.code == 2


def test_verify_conv_prints_the_cause_when_the_sides_differ(tmp_path, monkeypatch, capsys):
    # verify-conv calls porting.diagnose on a mismatch: a TF side without the kernel rotation
    from dataclasses import replace

    import porting.tf as ptf

    real = ptf.run_conv4

    def broken(op, spatial):
        g = op.dims.geometry
        flipped = replace(g, crosscorrelation=not g.crosscorrelation)
        return real(replace(op, dims=replace(op.dims, geometry=flipped)), spatial)

    monkeypatch.setattr(ptf, "run_conv4", broken)
    rng = np.random.default_rng(3)
    pw = _save(tmp_path, "w.npy", np.asfortranarray(rng.standard_normal((3, 2, 2, 3))))
    px = _save(tmp_path, "x.npy", np.asfortranarray(rng.standard_normal((7, 6, 2, 2))))
    argv = ["verify-conv", "--w", pw, "--x", px, "--padding", "1", "--knet", "reference"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "diagnosis: kernel_flip" in out and "rotating the kernel 180 degrees" in out
    assert main([*argv, "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["diagnosis"]["cause"] == "kernel_flip"


def test_plot_writes_a_png(seed002_files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    f = seed002_files
    out = tmp_path / "d.png"
    argv = [
        "diagnose",
        f["e"],
        f["bad"],
        "--w",
        f["w"],
        "--x",
        f["x"],
        "--padding",
        "1",
        "--spatial",
        "keep",
    ]
    assert main([*argv, "--plot", str(out)]) == 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {out}" in capsys.readouterr().out
    assert main([*argv, "--plot", str(tmp_path / "missing" / "d.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a diagnosis of outputs with different shapes has nothing to draw: said, and exit 1 stays
    julia = _save(tmp_path, "julia.npy", np.asarray(np.load(f["e"])).reshape(5, 5, 1, 1))
    assert main(["diagnose", f["e"], julia, "--plot", str(out)]) == 1
    assert "no plot" in capsys.readouterr().err
