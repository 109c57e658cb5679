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


def test_knet_output_in_julia_layout_is_accepted_and_said(
    seed002_files, tmp_path, capsys, monkeypatch
):
    """A Knet output saved from Julia (Y1, Y2, C, N) is read as such, and the output says how
    each file was read; where the shape cannot tell, --expected-layout decides."""
    monkeypatch.setenv("COLUMNS", "300")  # one line per statement, for the asserts
    f = seed002_files
    knet_julia = _save(tmp_path, "knet.npy", np.asfortranarray(seed002_knet_julia()))
    ctx = ["--w", f["w"], "--x", f["x"], "--padding", "1", "--spatial", "keep"]
    assert main(["diagnose", knet_julia, f["good"], *ctx]) == 0
    out = capsys.readouterr().out
    assert "cause: rounding" in out
    assert "Julia layout (5, 5, 1, 1), compared as TensorFlow (1, 5, 5, 1)" in out
    assert "TensorFlow layout (1, 5, 5, 1)" in out and "Julia-indexed" in out
    assert main(["diagnose", knet_julia, f["bad"], *ctx, "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["cause"] == "kernel_flip"
    assert d["inputs"]["expected"]["layout"] == "julia" and d["inputs"]["actual"]["layout"] == "tf"
    # outputs only: the shapes tell which one is Julia
    assert main(["diagnose", knet_julia, f["good"], "--spatial", "keep"]) == 0
    assert "Julia layout (5, 5, 1, 1)" in capsys.readouterr().out
    # a shape that is the Knet output's size in both layouts: --expected-layout decides
    rng = np.random.default_rng(0)
    w = np.asfortranarray(rng.standard_normal((1, 1, 2, 2)))
    x = np.asfortranarray(rng.standard_normal((2, 2, 2, 2)))
    y = np.asarray(knet.conv4(w, x, mode=1, backend="reference"))  # (2, 2, 2, 2)
    pw, px, py = (_save(tmp_path, n, a) for n, a in (("w2.npy", w), ("x2.npy", x), ("y2.npy", y)))
    pa = _save(tmp_path, "a2.npy", layout.activations_to_tf(y).astype(np.float32))
    argv = ["diagnose", py, pa, "--w", pw, "--x", px, "--mode", "1"]
    assert main(argv) == 2
    assert "--expected-layout" in capsys.readouterr().err
    assert main([*argv, "--expected-layout", "julia", "--actual-layout", "tf"]) == 0
    assert "--expected-layout julia" in capsys.readouterr().out


def seed002_knet_julia():
    ex = seed002()
    return np.asarray(knet.conv4(ex["w"], ex["x"], padding=1, backend="reference"))


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
    argv = ["diagnose", f["e"], julia, "--actual-layout", "tf", "--plot", str(out)]
    assert main(argv) == 1
    assert "no plot" in capsys.readouterr().err


def test_dense_output_in_julia_layout(tmp_path, capsys, monkeypatch):
    """A dense layer's Knet output (out, N) is read as Julia and compared as (N, out)."""
    monkeypatch.setenv("COLUMNS", "300")
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 5))
    x = rng.standard_normal((5, 2))
    y = w @ x  # Knet: w * x, (out, N), computed here by hand
    pw, px = _save(tmp_path, "w.npy", w), _save(tmp_path, "x.npy", x)
    py = _save(tmp_path, "y.npy", y)
    good = _save(tmp_path, "good.npy", np.ascontiguousarray(y.T).astype(np.float32))
    assert main(["diagnose", py, good, "--w", pw, "--x", px]) == 0
    out = capsys.readouterr().out
    assert "Julia layout (3, 2), compared as TensorFlow (2, 3)" in out
    bad = _save(tmp_path, "bad.npy", np.ascontiguousarray(y.T[:, ::-1]).astype(np.float32))
    assert main(["diagnose", py, bad, "--w", pw, "--x", px]) == 1
