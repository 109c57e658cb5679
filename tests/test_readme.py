"""The README runs as written: every ```python and ```bash (or ```sh) block is run as a person
copies it, alone, in a fresh empty directory with nothing prepared for it: a python block with
`python block.py`, or, when it defines `test_` functions, with pytest on it; a bash block with
`bash -e`. A block that cannot run there says why on the line just above it,

    <!-- readme-test: skip, needs network (pip) -->

and is skipped with that reason (a ```julia block needs such a line). Also: the README points
to every notebook, and the license matches pyproject.toml."""

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^<!-- readme-test: skip, needs (?P<needs>[^\n]+?) -->$")
RUN = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
TIMEOUT = 900


def _fences():
    """(language, code, skip reason or None, line, heading) of every fenced block."""
    out = []
    for m in FENCE.finditer(README):
        before = README[: m.start()]
        heading = re.findall(r"^#+ (.+)$", before, re.M)[-1]
        above = before.rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.match(above)
        line = before.count("\n") + 1
        out.append((m.group(1), m.group(2), marker and marker["needs"], line, heading))
    return out


FENCES = _fences()
BLOCKS = [
    pytest.param(RUN[lang], code, needs, id=f"line{line}-{lang}-{heading[:30]}")
    for lang, code, needs, line, heading in FENCES
    if lang in RUN
]


def test_every_block_is_collected_and_every_marker_is_on_a_block():
    assert len(BLOCKS) == sum(lang in RUN for lang, *_ in FENCES) >= 8
    assert sum(lang == "python" for lang, *_ in FENCES) >= 4
    marked = sum(needs is not None for _, _, needs, _, _ in FENCES)
    assert marked == len(re.findall(r"^<!-- readme-test:", README, re.M)), (
        "a readme-test marker must be on the line just above a fenced block, written "
        "'<!-- readme-test: skip, needs WHAT -->'"
    )
    for lang, _, needs, line, _ in FENCES:
        if lang == "julia":  # no Julia here: such a block says so
            assert needs is not None, f"README line {line}: a julia block without a marker"


def _entry_point_installed() -> bool:
    eps = metadata.entry_points(group="pytest11")
    return any(ep.value == "porting.testing.plugin" for ep in eps)


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's porting, nothing else
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False
    )


@pytest.mark.parametrize(("runner", "code", "needs"), BLOCKS)
def test_readme_block_runs_in_an_empty_directory(runner, code, needs, tmp_path):
    if needs is not None:
        pytest.skip(f"the README says this block needs {needs}")
    pytest.importorskip("tensorflow", reason="the README's examples run TensorFlow")
    if "hypothesis" in code:
        pytest.importorskip("hypothesis", reason="the property-test example needs hypothesis")
    work = tmp_path / "fresh"
    work.mkdir()  # empty: the block brings everything it uses
    if runner == "bash":
        if re.search(r"^porting\b", code, re.M) and shutil.which("porting") is None:
            pytest.skip("the porting command is not on PATH (pip install porting)")
        script = tmp_path / "block.sh"
        script.write_text(code)
        out = _run(["bash", "-e", str(script)], work)
    elif re.search(r"^def test_", code, re.M):  # a test file: what a person runs is pytest
        (work / "test_readme_block.py").write_text(code)
        plugin = [] if _entry_point_installed() else ["-p", "porting.testing.plugin"]
        args = [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-q"]
        out = _run([*args, "test_readme_block.py"], work)
        assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-3000:]
    else:
        script = tmp_path / "block.py"  # outside the directory it runs in
        script.write_text(code)
        out = _run([sys.executable, str(script)], work)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    if "print(c.ok, d.cause)" in code:  # the Tour's last line says what it shows
        assert out.stdout.rstrip().endswith("True rounding"), out.stdout[-1000:]


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
