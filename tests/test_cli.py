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


# --------------------------------------------------------------------------- exit codes


def _strict_json(text):
    def bad(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=bad)


def test_internal_error_exits_3_with_one_line_and_how_to_report(monkeypatch, capsys):
    """A bug in porting is never exit 1 ("the sides differ") nor a traceback."""
    import porting.verify

    def bug(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(porting.verify, "verify_conv4", bug)
    monkeypatch.delenv("PORTING_DEBUG", raising=False)
    assert main(["verify-conv", "--example"]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error" in err and "ZeroDivisionError" in err and "report it" in err
    monkeypatch.setenv("PORTING_DEBUG", "1")
    assert main(["verify-conv", "--example"]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_closed_stdout_pipe_ends_quietly():
    # the reader is gone before porting writes: `porting ... --json | head` with head done
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "porting",
            "verify-conv",
            "--example",
            "--knet",
            "reference",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert err == "", err


def test_sizes_and_counts_out_of_range_exit_2_naming_the_value(tmp_path, capsys):
    from porting.model import Conv, KnetModel, save_export

    with pytest.raises(SystemExit) as e:
        main(["verify-conv", "--example", "--padding", "9" * 5000])
    assert e.value.code == 2 and "expected an integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["verify-conv", "--example", "--stride", "1," + "9" * 30])
    assert (
        e.value.code == 2 and "999999999999999999999999999999: too large" in capsys.readouterr().err
    )
    e_npy = _save(tmp_path, "e.npy", np.float32([[1, 2, 3]]))
    with pytest.raises(SystemExit) as e:
        main(["diagnose", e_npy, e_npy, "--k", str(10**30)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(10**30) in err and "at most" in err
    # --input-size whose arrays cannot fit in memory: refused before allocating
    m = KnetModel([Conv(np.ones((3, 3, 1, 2), np.float32), np.zeros((1, 1, 2, 1), np.float32))])
    save_export(m, tmp_path / "conv")
    argv = ["convert", str(tmp_path / "conv"), "--verify", "--input-size", "200000,200000,1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--input-size 200000,200000,1" in err and "of memory" in err


def test_a_list_where_a_string_is_expected_exits_2(tmp_path, capsys):
    from porting.examples.lenet import lenet_prefix

    doc = json.loads(lenet_prefix().with_suffix(".json").read_text())
    (tmp_path / "lenet.npz").write_bytes(lenet_prefix().with_suffix(".npz").read_bytes())
    for mutate, named in [
        (lambda d: d["layers"][0]["params"]["w"].__setitem__("key", ["conv1.w"]), "['conv1.w']"),
        (lambda d: d["layers"][0]["params"]["w"].__setitem__("eltype", ["Float32"]), "eltype"),
        (lambda d: d.__setitem__("name", ["lenet"]), "name = ['lenet']"),
    ]:
        d = json.loads(json.dumps(doc))
        mutate(d)
        (tmp_path / "lenet.json").write_text(json.dumps(d))
        assert main(["convert", str(tmp_path / "lenet.json"), "--verify"]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err


def test_json_is_strict_even_with_nan_and_inf(tmp_path, capsys):
    e = _save(tmp_path, "e.npy", np.float32([[1.0, 2.0, 3.0, 4.0]]))
    a = _save(tmp_path, "a.npy", np.float32([[1.0, np.inf, np.nan, 4.0]]))
    assert main(["diagnose", e, a, "--json"]) == 1
    d = _strict_json(capsys.readouterr().out)
    assert d["ok"] is False
    nan = _save(tmp_path, "n.npy", np.float32([[np.nan, np.nan]]))
    main(["diagnose", nan, nan, "--json"])
    _strict_json(capsys.readouterr().out)
    assert main(["verify-conv", "--example", "--knet", "reference", "--json"]) == 0
    d = _strict_json(capsys.readouterr().out)
    assert "example" in d and "mode=0" in d["example"]["explanation"]
    from porting.commands._common import strict_json

    assert strict_json({"a": float("nan"), "b": [np.float32("inf"), -np.inf]}) == {
        "a": "nan",
        "b": ["inf", "-inf"],
    }


# --------------------------------------------------------------------------- first contact


def test_verify_conv_example_explains_the_seed(capsys):
    assert main(["verify-conv", "--example", "--knet", "reference"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "seed report 002" in out and "194.694" in out and "-168.019" in out  # the report
    assert "mode=0, true convolution" in out and "rotates the kernel" in out  # what was done
    assert "symmetrically" in out and "now agree" in out


def test_text_output_fits_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # an 80-column terminal
    assert main(["verify-conv", "--example", "--knet", "reference"]) == 0
    long = [line for line in capsys.readouterr().out.splitlines() if len(line) > 80]
    assert not long, long
    assert main(["convert", "--example", "lenet", "--verify", "--knet", "reference"]) == 0
    long = [line for line in capsys.readouterr().out.splitlines() if len(line) > 80]
    assert not long, long
    # into a pipe or a file (no terminal, no COLUMNS): lines stay whole, for grep
    monkeypatch.delenv("COLUMNS")
    assert main(["verify-conv", "--example", "--knet", "reference"]) == 0
    assert any(len(line) > 80 for line in capsys.readouterr().out.splitlines())


def test_convert_says_when_the_input_was_generated(tmp_path, capsys):
    from porting.model import Conv, KnetModel, save_export

    rng = np.random.default_rng(0)
    m = KnetModel(
        [Conv(rng.standard_normal((3, 3, 1, 2)).astype(np.float32))], input_size=(9, 8, 1)
    )
    save_export(m, tmp_path / "m")
    assert main(["convert", str(tmp_path / "m"), "--verify", "--knet", "reference"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Input: generated (no --input given)" in out
    assert main(["convert", str(tmp_path / "m"), "--verify", "--knet", "reference", "--json"]) == 0
    d = _strict_json(capsys.readouterr().out)
    assert d["input"].startswith("generated")
    assert any("input generated" in n for n in d["verification"]["notes"])
    x = _save(tmp_path, "x.npy", rng.standard_normal((9, 8, 1, 1)).astype(np.float32))
    argv = ["convert", str(tmp_path / "m"), "--verify", "--knet", "reference", "--input", x]
    assert main(argv) == 0
    assert "generated" not in capsys.readouterr().out


def test_quant_install_hint_keeps_the_cpu_wheel(monkeypatch):
    import porting.quant as q
    from porting.quant import _hint

    versions = {"tensorflow-cpu": "2.21.0"}
    monkeypatch.setattr(_hint, "_dist_version", lambda name: versions.get(name))
    hint = q.install_hint()
    assert "pip install --no-deps qkeras==0.9.0" in hint and '"tf_keras~=2.21.0"' in hint
    assert "pip install 'porting[quant]'" not in hint
    installed, reason = q.qkeras_status()
    if not installed:
        assert "pip install 'porting[quant]'" not in reason and "--no-deps" in reason
    versions = {"tensorflow": "2.21.0"}
    assert "pip install 'porting[quant]'" in q.install_hint()  # the extra is right here


def test_a_file_name_the_system_refuses_exits_2_in_one_short_line(tmp_path, capsys):
    e = _save(tmp_path, "e.npy", np.float32([1.0]))
    long = str(tmp_path / ("a" * 5000 + ".npy"))
    assert main(["diagnose", long, e]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 500 and "Traceback" not in err
    # the fallback for any other refusal of the system: the name cut, its length said
    from porting.cli import _short

    assert _short("a" * 5000) == "a" * 60 + "... (5000 characters)"
