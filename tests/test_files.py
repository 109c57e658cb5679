"""porting.files and every writer built on it: nothing a user had is lost, one class per test.

The writers (`.keras`, SavedModel, export `.npz`/`.json`, plots, `save_npz`) all go through
`porting.files.atomic_write`; the Keras objects here are stand-ins that write what Keras would
(the write path, not Keras, is under test).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from porting import files
from porting import io as pio
from porting.errors import PortingError
from porting.model import convert as mconvert

ROOT = Path(__file__).resolve().parents[1]


class FakeKeras:
    """Writes a `.keras` file / a SavedModel directory the way Keras lays them out."""

    def save(self, path):
        assert str(path).endswith(".keras")
        Path(path).write_bytes(b"PK\x03\x04 new model")

    def export(self, path, format=None, verbose=None):  # noqa: A002
        d = Path(path)
        d.mkdir()
        (d / "saved_model.pb").write_bytes(b"graph")
        (d / "fingerprint.pb").write_bytes(b"fp")
        (d / "variables").mkdir()
        (d / "variables" / "variables.index").write_bytes(b"idx")
        (d / "assets").mkdir()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------------
# 1. Replacing an output keeps its permission bits (every writer)


def test_replacing_a_file_keeps_its_permission_bits(tmp_path):
    from porting.model import save_export
    from porting.model.spec import Dense, KnetModel

    writers = {
        "m.keras": lambda p: mconvert.save_keras(FakeKeras(), p),
        "w.npz": lambda p: pio.save_npz(p, {"w": np.ones(2)}),
        "e.json": lambda p: save_export(
            KnetModel([Dense(np.ones((2, 3), np.float32), None)]), p.with_suffix("")
        ),
    }
    for name, write in writers.items():
        target = tmp_path / name
        target.write_bytes(b"old")
        target.chmod(0o600)
        write(target)
        assert target.read_bytes() != b"old", name
        assert _mode(target) == 0o600, (name, oct(_mode(target)))
    # a new file gets the umask's default, not the temporary's 0600
    mask = os.umask(0o022)
    try:
        pio.save_npz(tmp_path / "new.npz", {"w": np.ones(2)})
    finally:
        os.umask(mask)
    assert _mode(tmp_path / "new.npz") == 0o644
    assert not [n for n in _names(tmp_path) if "porting-tmp" in n]
    # a symbolic link is written through: the file it points to is replaced, the link kept
    real = tmp_path / "real.npz"
    pio.save_npz(real, {"w": np.ones(2)})
    (tmp_path / "link.npz").symlink_to(real)
    pio.save_npz(tmp_path / "link.npz", {"w": np.zeros(5)})
    assert (tmp_path / "link.npz").is_symlink()
    assert pio.load(real)["w"].shape == (5,)


# ---------------------------------------------------------------------------------------------
# 2. --savedmodel over an existing directory


def test_savedmodel_directory_is_replaced_only_when_it_holds_a_savedmodel(tmp_path):
    sm = tmp_path / "sm"
    mconvert.export_savedmodel(FakeKeras(), sm)
    sm.chmod(0o750)
    (sm / "saved_model.pb").write_bytes(b"old graph")
    mconvert.export_savedmodel(FakeKeras(), sm)  # its own entries: replaced, mode kept
    assert (sm / "saved_model.pb").read_bytes() == b"graph" and _mode(sm) == 0o750
    assert _names(tmp_path) == ["sm"]
    # anything a SavedModel export does not write is never deleted: refused before work
    for extra in ("notes.txt", "variables/mine.bin"):
        (sm / extra).write_text("keep me")
        with pytest.raises(PortingError, match="does not write") as info:
            mconvert.export_savedmodel(FakeKeras(), sm)
        assert extra in str(info.value)
        assert (sm / extra).read_text() == "keep me"
        (sm / extra).unlink()
    # the same through the CLI: exit 2, nothing written, nothing lost
    (sm / "notes.txt").write_text("keep me")
    r = _cli(
        "convert", "--example", "lenet", "--savedmodel", str(sm), "-o", str(tmp_path / "o.keras")
    )
    assert r.returncode == 2 and "notes.txt" in r.stderr
    assert (sm / "notes.txt").read_text() == "keep me" and not (tmp_path / "o.keras").exists()


# ---------------------------------------------------------------------------------------------
# 3. Outputs that are inputs, or that coincide or nest: exit 2 before any work


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "porting", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )


def test_outputs_colliding_with_inputs_or_each_other_are_refused(tmp_path):
    from porting.examples.lenet import lenet
    from porting.model import save_export

    exp = tmp_path / "exp"
    exp.mkdir()
    json_path, npz_path = save_export(lenet(), exp / "m")
    before = {p: Path(p).read_bytes() for p in (json_path, npz_path)}
    (tmp_path / "alias.keras").symlink_to(json_path)
    np.save(tmp_path / "e.npy", np.ones((1, 2, 2, 1)))
    (tmp_path / "e.png").symlink_to(tmp_path / "e.npy")
    sm = tmp_path / "sm"
    sm.mkdir()
    cases = [
        (["convert", json_path, "-o", str(tmp_path / "alias.keras")], "is also the input"),
        (["convert", json_path, "--savedmodel", str(exp)], "holding the input"),
        (
            ["convert", json_path, "--savedmodel", str(sm), "-o", str(sm / "m.keras")],
            "inside --savedmodel",
        ),
        (
            ["convert", json_path, "--savedmodel", str(tmp_path), "-o", str(tmp_path / "m.keras")],
            "holding the input",
        ),
        (
            [
                "diagnose",
                str(tmp_path / "e.npy"),
                str(tmp_path / "e.npy"),
                "--plot",
                str(tmp_path / "e.png"),
            ],
            "is also the input",
        ),
    ]
    for args, expect in cases:
        listing = sorted(str(p) for p in tmp_path.rglob("*"))
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert expect in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing written
    assert {p: Path(p).read_bytes() for p in (json_path, npz_path)} == before
    with pytest.raises(PortingError, match="inside --savedmodel"):
        files.check_distinct(
            {},
            {"-o": tmp_path / "sm" / "a.keras", "--savedmodel": tmp_path / "sm"},
            directories=("--savedmodel",),
        )
    with pytest.raises(PortingError, match="are the same path"):
        files.check_distinct({}, {"a": tmp_path / "x", "b": tmp_path / "." / "x"})


# ---------------------------------------------------------------------------------------------
# 4. Interrupted writes: SIGTERM cleans up like Ctrl-C; SIGKILL leftovers are swept


_WRITER = """
import os, signal, sys, time
from pathlib import Path
from porting import files
target = Path(sys.argv[1])
with files.atomic_write(target) as tmp:
    tmp.write_bytes(b"half")
    print(tmp, flush=True)
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_killed_writes_leave_the_target_and_no_temporaries(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def killed_run(sig: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _WRITER, str(target), sig],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip

    r = killed_run("SIGTERM")  # cleanup runs: the temporary is gone, the target intact ...
    assert r.returncode == -signal.SIGTERM  # ... and the process still ends by SIGTERM
    assert _names(tmp_path) == ["model.keras"] and target.read_bytes() == b"old"
    r = killed_run("SIGKILL")  # no cleanup possible: the temporary stays ...
    assert r.returncode == -signal.SIGKILL
    left = Path(r.stdout.strip())
    assert left.exists() and target.read_bytes() == b"old"
    lookalike = tmp_path / ".model.keras.mine.tmp"  # not one of porting's names
    lookalike.write_text("user file")
    mconvert.save_keras(FakeKeras(), target)  # ... until the next write to that target
    assert _names(tmp_path) == sorted([lookalike.name, "model.keras"])
    lookalike.unlink()
    assert target.read_bytes() == b"PK\x03\x04 new model"
    # a directory moved aside by a run killed before the new one went in is put back
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    sm = tmp_path / "sm"
    aside = files.temp_path(sm).name.replace(".porting-tmp", ".old.porting-tmp")
    aside = aside.replace(f"-{os.getpid()}-", f"-{pid}-")
    (tmp_path / aside).mkdir()
    (tmp_path / aside / "saved_model.pb").write_bytes(b"old graph")
    assert files.sweep_stale(sm) == [tmp_path / aside]
    assert (sm / "saved_model.pb").read_bytes() == b"old graph"
    # the CLI turns SIGTERM into the same cleanup and exits 143
    code = "import os, signal; from porting import cli; import porting.commands.doctor as d; "
    code += "d.run = lambda a: os.kill(os.getpid(), signal.SIGTERM); raise SystemExit(cli.main(['doctor']))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 143 and "terminated" in r.stderr


def test_temporary_names_fit_and_are_recognised(tmp_path):
    for name in ("m.keras", "x" * 250 + ".keras", "ü" * 100 + ".npz"):
        target = tmp_path / name
        tmp = files.temp_path(target, ".keras")
        assert len(os.fsencode(tmp.name)) <= files.NAME_MAX
        tmp.write_bytes(b"x")
        os.utime(tmp, (0, 0))  # older than a day: stale whoever made it
        assert files.sweep_stale(target) == [tmp]
    with pytest.raises(ValueError):
        files.temp_path(tmp_path / "a", "../evil")


# ---------------------------------------------------------------------------------------------
# 5. A staged write (written ahead, kept or dropped later): convert --to knet --verify's export


def _small_model():
    from porting.model.spec import Dense, KnetModel

    rng = np.random.default_rng(0)
    return KnetModel([Dense(rng.standard_normal((4, 3)).astype(np.float32), None)])


def test_a_staged_file_is_moved_in_on_commit_and_leaves_nothing_on_discard(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    kept = files.StagedFile(target)
    kept.path.write_bytes(b"new")
    assert target.read_bytes() == b"old"  # nothing changes before the commit
    kept.sync()
    kept.commit()
    assert target.read_bytes() == b"new" and _mode(target) == 0o600
    dropped = files.StagedFile(target)
    dropped.path.write_bytes(b"never")
    dropped.discard()
    assert target.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]
    # a commit with nothing written is an error, and the target stays
    with pytest.raises(PortingError, match="produced no output"):
        files.StagedFile(target).commit()
    assert target.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("background", [False, True])
def test_a_staged_export_writes_what_save_export_writes_or_nothing(tmp_path, background):
    from porting.model import load_export, save_export
    from porting.model.export import stage_export

    model = _small_model()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_export(model, tmp_path / "a" / "m")
    staged = stage_export(model, tmp_path / "b" / "m", background=background)
    assert staged.commit() == (str(tmp_path / "b" / "m.json"), str(tmp_path / "b" / "m.npz"))
    for name in ("m.json", "m.npz"):  # byte for byte what the one-step writer writes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    np.testing.assert_array_equal(load_export(tmp_path / "b" / "m").layers[0].w, model.layers[0].w)
    (tmp_path / "c").mkdir()
    stage_export(model, tmp_path / "c" / "m", background=background).discard()
    assert _names(tmp_path / "c") == []


def test_a_failed_background_write_is_raised_at_commit_and_leaves_nothing(tmp_path, monkeypatch):
    from porting.model import export

    def full_disk(f, **arrays):
        f.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.np, "savez", full_disk)
    staged = export.stage_export(_small_model(), tmp_path / "m", background=True)
    with pytest.raises(OSError, match="No space left"):
        staged.commit()
    assert _names(tmp_path) == []
    # and the one-step writer says the same, leaving nothing
    with pytest.raises(OSError, match="No space left"):
        export.save_export(_small_model(), tmp_path / "m")
    assert _names(tmp_path) == []
