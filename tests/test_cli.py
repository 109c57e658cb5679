import json
import subprocess
import sys

import numpy as np
import pytest

from porting.cli import main


def test_verify_conv_example_exits_0_and_prints_report(capsys):
    assert main(["verify-conv", "--example", "--knet", "reference"]) == 0
    out = capsys.readouterr().out
    assert "seed report 002" in out and "OK: Knet and TensorFlow agree" in out


def test_verify_conv_json(capsys):
    assert main(["verify-conv", "--example", "--knet", "reference", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is True and d["op"] == "conv4" and d["comparison"]["tolerance"]["k"] == 27


def _save(tmp_path, name, a):
    p = tmp_path / name
    np.save(p, a)
    return str(p)


def test_verify_conv_reads_fortran_npy_as_npzjl_writes_them(tmp_path, capsys):
    rng = np.random.default_rng(0)
    w = np.asfortranarray(rng.standard_normal((3, 3, 2, 4)).astype(np.float32))
    x = np.asfortranarray(rng.standard_normal((7, 6, 2, 1)).astype(np.float32))
    pw, px = _save(tmp_path, "w.npy", w), _save(tmp_path, "x.npy", x)
    with open(pw, "rb") as f:
        assert b"'fortran_order': True" in f.read(128)
    assert (
        main(
            [
                "verify-conv",
                "--w",
                pw,
                "--x",
                px,
                "--padding",
                "1",
                "--stride",
                "2,1",
                "--knet",
                "reference",
            ]
        )
        == 0
    )
    assert "OK" in capsys.readouterr().out


def test_verify_conv_exit_1_when_sides_differ(tmp_path, monkeypatch, capsys):
    # A deliberately broken TF side (kernel not rotated) must be reported as a mismatch.
    from dataclasses import replace

    import porting.tf as ptf

    real = ptf.run_conv4  # what verify_conv4 runs on its validated ConvOp

    def broken(op, spatial):
        g = op.dims.geometry
        flipped = replace(g, crosscorrelation=not g.crosscorrelation)
        return real(replace(op, dims=replace(op.dims, geometry=flipped)), spatial)

    monkeypatch.setattr(ptf, "run_conv4", broken)
    rng = np.random.default_rng(1)
    pw = _save(tmp_path, "w.npy", rng.standard_normal((3, 3, 2, 2)))
    px = _save(tmp_path, "x.npy", rng.standard_normal((6, 6, 2, 1)))
    assert main(["verify-conv", "--w", pw, "--x", px, "--knet", "reference"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["verify-conv"], "need both --w"),
        (["verify-conv", "--w", "missing.npy", "--x", "missing.npy"], "no such file"),
    ],
)
def test_bad_input_exits_2(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_unreadable_and_directory_inputs_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    good = _save(tmp_path, "x.npy", np.ones((4, 4, 1, 1)))
    assert main(["verify-conv", "--w", str(bad), "--x", good]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["verify-conv", "--w", str(tmp_path), "--x", good]) == 2
    assert "is a directory" in capsys.readouterr().err
    ints = _save(tmp_path, "i.npy", np.ones((3, 3, 1, 1), dtype=np.int32))
    assert main(["verify-conv", "--w", ints, "--x", good]) == 2
    assert "dtype int32" in capsys.readouterr().err


def test_python_dash_m_porting_runs():
    out = subprocess.run(
        [sys.executable, "-m", "porting", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "verify-conv" in out.stdout


def test_malformed_per_dimension_value_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify-conv", "--example", "--padding", "1,x"])
    assert e.value.code == 2
    assert "'1,x': expected an integer or comma-separated integers" in capsys.readouterr().err


def test_unknown_option_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["verify-conv", "--frobnicate"])
    assert e.value.code == 2


def test_missing_tensorflow_is_one_clear_error_with_exit_2():
    # sys.modules["tensorflow"] = None makes `import tensorflow` fail, as on a machine without it
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from porting.cli import main\n"
        "raise SystemExit(main(['verify-conv', '--example', '--knet', 'reference']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "needs TensorFlow" in out.stderr and "porting[tf-cpu]" in out.stderr
    assert "Traceback" not in out.stderr
