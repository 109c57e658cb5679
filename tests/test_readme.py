"""The README runs as written: every ```python block is executed (each in a fresh namespace,
in a temporary directory holding the files it loads), and the test functions it defines are
called. Also: the README points to every notebook, and the license matches pyproject.toml."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    out = []
    for m in BLOCK.finditer(README):
        heading = [h for h in re.findall(r"^#+ (.+)$", README[: m.start()], re.M)][-1]
        line = README[: m.start()].count("\n") + 1
        out.append(pytest.param(m.group(1), id=f"line{line}-{heading[:30]}"))
    return out


BLOCKS = _blocks()


def test_every_python_block_is_collected():
    assert len(BLOCKS) == README.count("```python") >= 4


@pytest.fixture
def fixtures_dir(tmp_path, monkeypatch):
    """The files the Tour loads: a Knet kernel and input as NPZ.jl writes them (Fortran
    order, Julia sizes)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "w.npy", np.asfortranarray(rng.standard_normal((3, 3, 2, 4), np.float32)))
    np.save(tmp_path / "x.npy", np.asfortranarray(rng.standard_normal((8, 7, 2, 2), np.float32)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_block_runs(code, fixtures_dir, capsys):
    pytest.importorskip("tensorflow", reason="the README's examples run TensorFlow")
    if "hypothesis" in code:
        pytest.importorskip("hypothesis", reason="the property-test example needs hypothesis")
    ns: dict = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), ns)
    tests = {k: v for k, v in ns.items() if k.startswith("test_") and callable(v)}
    for fn in tests.values():
        params = inspect.signature(fn).parameters
        if "port_checks" in params:
            from porting.testing._record import Recorder

            with Recorder() as rec:
                fn(port_checks=rec)
        else:
            fn()
    if "print(c.ok, d.cause)" in code:  # the Tour's last line says what it shows
        assert capsys.readouterr().out.rstrip().endswith("True rounding")


def test_readme_points_to_every_notebook():
    section = README.split("## Notebooks", 1)[1]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"`{nb.name}`" in section, nb.name


def test_license_file_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.M)
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text
    assert "[LICENSE](LICENSE)" in README


def test_readme_exit_code_table_lists_what_the_cli_returns():
    from porting import cli

    table = README.split("| exit code | meaning |", 1)[1].split("\n\n", 1)[0]
    for code in (
        cli.EXIT_OK,
        cli.EXIT_DIFFER,
        cli.EXIT_BAD_INPUT,
        cli.EXIT_INTERNAL,
        cli.EXIT_INTERRUPTED,
        cli.EXIT_PIPE_CLOSED,
        cli.EXIT_TERMINATED,
    ):
        assert f"\n| {code} |" in table


def test_no_install_hint_pulls_full_tensorflow_next_to_the_cpu_wheel():
    # README: porting[quant] only next to porting[tf]; the tensorflow-cpu command uses --no-deps
    quant = README.split("## Quantized layers", 1)[1].split("\n## ", 1)[0]
    assert "pip install --no-deps qkeras" in quant
    assert "next to `porting[tf]`" in quant
