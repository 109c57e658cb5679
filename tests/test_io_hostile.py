"""porting.io and the CLI's inputs against hostile files: one test per class of failure.

Every fixture is built here, tiny, and every failure must be one `PortingError` (CLI: exit 2)
naming the file and what was expected: no traceback, no hang, no unbounded allocation, no
file outside the one given ever opened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io as pyio
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from porting import io as pio
from porting.errors import PortingError

_spec = importlib.util.spec_from_file_location(
    "julia_like_fixtures", Path(__file__).parent / "fixtures_io" / "julia_like.py"
)
jl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jl)

ROOT = Path(__file__).resolve().parents[1]


def porting_error(fn, *args, **kwargs) -> str:
    with pytest.raises(PortingError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return str(err)


@contextlib.contextmanager
def julia_h5(path: Path, kind: str = "jld2"):
    """An HDF5 file behind the 512-byte header JLD2 (or MAT.jl) writes."""
    with h5py.File(path, "w", userblock_size=512, libver="latest") as f:
        yield f
    header = jl.jld2_header() if kind == "jld2" else jl.matjl_header()
    with open(path, "r+b") as fh:
        fh.write(header)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "porting", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a guard against the hang being tested, not a timing assertion
        env=env,
        cwd=ROOT,
    )


def npy_header_only(path: Path, shape: tuple, dtype: str = "<f8") -> Path:
    """An .npy whose header claims `shape` but which holds no data."""
    buf = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": True, "shape": shape}
    )
    path.write_bytes(buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# 1. The size budget is checked from headers, before anything is read


def _budget_cases(tmp: Path) -> list[tuple[Path, dict, str]]:
    cases = []
    # .npy and .npz members whose headers claim 8 GiB
    cases.append((npy_header_only(tmp / "huge.npy", (2**20, 2**10)), {}, "huge"))
    buf = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": True, "shape": (2**20, 2**10)}
    )
    with zipfile.ZipFile(tmp / "huge.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", buf.getvalue() + b"\x00" * 64)
    cases.append((tmp / "huge.npz", {}, "w"))
    # HDF5 (JLD2, MAT v7.3): chunked with a fill value and no chunk written: 16 GiB claimed
    for kind, name in (("jld2", "huge.jld2"), ("mat73", "huge.mat")):
        with julia_h5(tmp / name, kind) as f:
            ds = f.create_dataset("w", shape=(2**16, 2**16), dtype="f4", chunks=(64, 64))
            ds.attrs["MATLAB_class"] = np.bytes_(b"single")
        cases.append((tmp / name, {}, "w"))
    # gzip: 40 MB of zeros stored in a few kB, against a 10 MB budget (argument)
    with julia_h5(tmp / "gzip.jld2") as f:
        f.create_dataset("z", data=np.zeros((1000, 10000), np.float32), compression="gzip")
    cases.append((tmp / "gzip.jld2", {"max_bytes": "10MiB"}, "z"))
    # safetensors: a real tensor over a small budget
    header = json.dumps({"t": {"dtype": "F32", "shape": [4, 256], "data_offsets": [0, 4096]}})
    raw = header.encode()
    (tmp / "t.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4096))
    cases.append((tmp / "t.safetensors", {"max_bytes": 1000}, "t"))
    # MAT v5: a compressed variable that inflates to 32 MB, and a sparse matrix whose dense
    # size is 8 TB
    scipy.io.savemat(tmp / "zeros.mat", {"z": np.zeros((2000, 2000))}, do_compression=True)
    cases.append((tmp / "zeros.mat", {"max_bytes": "8MiB"}, "element 1"))
    s = scipy.sparse.csc_matrix(([1.0], ([0], [0])), shape=(10**6, 10**6))
    scipy.io.savemat(tmp / "sparse.mat", {"s": s})
    cases.append((tmp / "sparse.mat", {}, "s"))
    return cases


def test_size_budget_refuses_claims_before_reading(tmp_path, monkeypatch):
    for path, kwargs, member in _budget_cases(tmp_path):
        msg = porting_error(pio.load, path, **kwargs)
        assert str(path) in msg and repr(member) in msg, msg
        assert "over the size limit" in msg and "PORTING_MAX_LOAD_BYTES" in msg, msg
    # the environment variable sets the default, the argument wins over it, NumPy ints count
    np.save(tmp_path / "w.npy", np.ones((16, 16)))  # 2048 bytes
    monkeypatch.setenv("PORTING_MAX_LOAD_BYTES", "1k")
    msg = porting_error(pio.load, tmp_path / "w.npy")
    assert "2048 bytes" in msg and "1024 bytes" in msg
    assert pio.load(tmp_path / "w.npy", max_bytes=np.int64(4096))["w"].shape == (16, 16)
    monkeypatch.setenv("PORTING_MAX_LOAD_BYTES", "lots")
    msg = porting_error(pio.load, tmp_path / "w.npy")
    assert "PORTING_MAX_LOAD_BYTES='lots'" in msg


# ---------------------------------------------------------------------------------------------
# 2. HDF5 links never lead out of the file; DAGs are walked once; cycles and floods refused


def test_hdf5_links_stay_inside_the_file(tmp_path):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.arange(3.0)
    cases = {
        "ext": (
            lambda f: f.__setitem__("w", h5py.ExternalLink(str(secret), "/data")),
            "external link",
        ),
        "soft_out": (lambda f: f.__setitem__("w", h5py.SoftLink("/missing/x")), "does not exist"),
        "storage": (
            lambda f: f.create_dataset(
                "w", shape=(3,), dtype="<f8", external=[(str(secret), 0, 24)]
            ),
            "external files",
        ),
    }
    for kind in ("jld2", "mat73"):
        for name, (make, expect) in cases.items():
            path = tmp_path / f"{name}.{'jld2' if kind == 'jld2' else 'mat'}"
            with julia_h5(path, kind) as f:
                make(f)
            msg = porting_error(pio.load, path)
            assert str(path) in msg and "'w'" in msg and expect in msg, msg
        # a soft link inside the file is read as its target, through the same value
        path = tmp_path / f"soft_in.{'jld2' if kind == 'jld2' else 'mat'}"
        with julia_h5(path, kind) as f:
            f["a"] = np.arange(6.0).reshape(2, 3)
            f["b"] = h5py.SoftLink("/a")
        out = pio.load(path)
        assert out["b"] is out["a"] and out["a"].shape == (3, 2)


def _dag(path: Path, levels: int) -> None:
    """levels datasets, each an array of two references to the next: 2**levels paths."""
    with julia_h5(path) as f:
        f["leaf"] = np.arange(4.0)
        below = f["leaf"].ref
        for i in range(levels):
            f.create_dataset(f"n{i}", data=np.array([below, below], dtype=h5py.ref_dtype))
            below = f[f"n{i}"].ref
        f.create_dataset("top", data=np.array([below], dtype=h5py.ref_dtype))


def test_reference_graphs_are_walked_once_and_bounded(tmp_path):
    _dag(tmp_path / "dag.jld2", 40)  # 2**40 paths from /top to /leaf
    assert (tmp_path / "dag.jld2").stat().st_size < 100_000
    out = pio.load(tmp_path / "dag.jld2")
    node = out["top"][0]
    for _ in range(40):  # each object converted once: both references give the same value
        assert isinstance(node, list) and len(node) == 2 and node[0] is node[1]
        node = node[0]
    np.testing.assert_array_equal(node, np.arange(4.0))
    # flattening the DAG would expand every path: refused at the object limit
    msg = porting_error(pio.flatten, out, max_objects=10_000)
    assert "more than 10000 paths" in msg
    # the object budget bounds the walk itself
    msg = porting_error(pio.load, tmp_path / "dag.jld2", max_objects=20)
    assert "more than 20 objects" in msg and "PORTING_MAX_LOAD_OBJECTS" in msg
    # a reference back to an object being read is a cycle
    with julia_h5(tmp_path / "cycle.jld2") as f:
        ds = f.create_dataset("loop", shape=(1,), dtype=h5py.ref_dtype)
        ds[0] = ds.ref
    msg = porting_error(pio.load, tmp_path / "cycle.jld2")
    assert "cycle" in msg and "'loop" in msg
    for kind, suffix in (("jld2", "jld2"), ("mat73", "mat")):
        with julia_h5(tmp_path / f"groups.{suffix}", kind) as f:  # a group linked into itself
            g = f.create_group("g")
            g["x"] = np.ones(2)
            g["loop"] = g
        msg = porting_error(pio.load, tmp_path / f"groups.{suffix}")
        assert "cycle" in msg and "loop" in msg
        with julia_h5(tmp_path / f"soft.{suffix}", kind) as f:  # soft links pointing at each other
            f["a"] = h5py.SoftLink("/b")
            f["b"] = h5py.SoftLink("/a")
        msg = porting_error(pio.load, tmp_path / f"soft.{suffix}")
        assert "soft links nest" in msg


# ---------------------------------------------------------------------------------------------
# 3. Only regular files are opened


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifos_and_devices_are_refused_at_once(tmp_path):
    fifo = tmp_path / "w.npy"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a FIFO"), (Path(os.devnull), "a character device")):
        msg = porting_error(pio.load, path)
        assert what in msg
    np.save(tmp_path / "x.npy", np.ones((4, 4, 1, 1), np.float32))
    os.mkfifo(tmp_path / "m.json")
    for args in (
        ["verify-conv", "--w", str(fifo), "--x", str(tmp_path / "x.npy")],
        ["diagnose", str(fifo), str(tmp_path / "x.npy")],
        ["convert", str(tmp_path / "m.json"), "--verify"],
    ):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "FIFO" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# 4. Messages say what the file is; values come back as what they are


def test_messages_name_what_the_file_is(tmp_path):
    (tmp_path / "text.npy").write_bytes(b"just some text, not an array\n")
    msg = porting_error(pio.load, tmp_path / "text.npy")
    assert "not a .npy file" in msg and "pickle" not in msg
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    msg = porting_error(pio.load, tmp_path / "obj.npy")
    assert "Python objects" in msg and "allow_pickle" not in msg
    with zipfile.ZipFile(tmp_path / "mixed.npz", "w") as z:
        z.writestr("w.npy", _npy_bytes(np.ones(3)))
        z.writestr("readme.txt", b"hello")
    msg = porting_error(pio.load, tmp_path / "mixed.npz")
    assert "'readme.txt' is not a .npy array" in msg and "pickle" not in msg
    # safetensors: a dtype porting does not read is named, not "corrupt"
    header = json.dumps({"t": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})
    (tmp_path / "f8.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header.encode() + b"\x00\x01"
    )
    msg = porting_error(pio.load, tmp_path / "f8.safetensors")
    assert "dtype F8_E4M3" in msg and "corrupt" not in msg


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def test_bfloat16_big_endian_and_integer_scalars_come_back_as_values(tmp_path):
    # bfloat16: the top 16 bits of a float32 (hand-made bits of exactly representable values)
    values = np.float32([1.5, -2.0, 3.140625, 0.0, 65280.0])
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"b": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + bits.tobytes()
    )
    got = pio.load(tmp_path / "bf.safetensors")["b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)
    # the budget counts what is kept: 5 float32 values are 20 bytes, not the 10 stored
    with pytest.raises(PortingError, match="b"):
        pio.load(tmp_path / "bf.safetensors", max_bytes=19)
    assert pio.load(tmp_path / "bf.safetensors", max_bytes=20)["b"].shape == (5,)
    # big-endian arrays in every format: converted to native order, same values
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    np.save(tmp_path / "big.npy", big)
    np.savez(tmp_path / "big.npz", big=big)
    with julia_h5(tmp_path / "big.jld2") as f:
        f.create_dataset("big", data=big.T)  # Julia writes dims reversed
    with julia_h5(tmp_path / "big.mat", "mat73") as f:
        f.create_dataset("big", data=big.T)
        f["big"].attrs["MATLAB_class"] = np.bytes_(b"single")
    for name in ("big.npy", "big.npz", "big.jld2", "big.mat"):
        got = pio.load(tmp_path / name)["big"]
        assert got.dtype == np.dtype("=f4") and got.dtype.isnative, name
        np.testing.assert_array_equal(got, np.arange(6, dtype=np.float32).reshape(2, 3))
    # a Julia Int stored as a scalar is a Python int, not a NumPy scalar or a float
    with julia_h5(tmp_path / "n.jld2") as f:
        f.create_dataset("n", data=np.int64(7))
    n = pio.load(tmp_path / "n.jld2")["n"]
    assert type(n) is int and n == 7


# ---------------------------------------------------------------------------------------------
# 5. Paths the system cannot use, and malformed structures inside valid containers


def test_unusable_paths_are_named(tmp_path, monkeypatch):
    long = tmp_path / ("w" * 5000 + ".npy")
    msg = porting_error(pio.load, long)
    assert "file name too long" in msg and ("5000" in msg or "5004" in msg)
    r = cli("verify-conv", "--w", str(long), "--x", str(long))
    assert r.returncode == 2 and "too long" in r.stderr and "Traceback" not in r.stderr
    r = cli("convert", "--example", "lenet", "-o", str(tmp_path / ("m" * 5000 + ".keras")))
    assert r.returncode == 2 and "too long" in r.stderr and "Traceback" not in r.stderr
    through_file = tmp_path / "file.npy"
    np.save(through_file, np.ones(2))
    msg = porting_error(pio.load, through_file / "w.npy")
    assert "not a directory" in msg
    locked = tmp_path / "locked"
    locked.mkdir()
    np.save(locked / "w.npy", np.ones(2))
    locked.chmod(0)
    try:
        if os.geteuid() == 0:  # root reads any directory: make stat fail as it would for a user
            real_stat = os.stat

            def stat(path, *a, **k):
                if str(path).startswith(str(locked) + os.sep):
                    raise PermissionError(13, "Permission denied", str(path))
                return real_stat(path, *a, **k)

            monkeypatch.setattr(os, "stat", stat)
        msg = porting_error(pio.load, locked / "w.npy")
        assert "permission denied" in msg and "locked" in msg
        monkeypatch.undo()
        r = cli("diagnose", str(locked / "w.npy"), str(through_file))
        if os.geteuid() != 0:
            assert r.returncode == 2 and "permission denied" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        locked.chmod(0o755)


def test_malformed_structures_are_named(tmp_path):
    # a MATLAB v7.3 sparse matrix whose row indices leave the matrix
    with julia_h5(tmp_path / "sp.mat", "mat73") as f:
        g = f.create_group("s")
        g.attrs["MATLAB_class"] = np.bytes_(b"double")
        g.attrs["MATLAB_sparse"] = np.uint64(3)
        g["jc"] = np.array([0, 1, 2], np.uint64)
        g["ir"] = np.array([0, 7], np.uint64)
        g["data"] = np.array([1.0, 2.0])
    msg = porting_error(pio.load, tmp_path / "sp.mat")
    assert "'s'" in msg and "sparse" in msg and "row indices" in msg
    # an .npy header with an impossible shape, a safetensors entry past the end of its data
    npy_header_only(tmp_path / "neg.npy", (3,))
    data = bytearray((tmp_path / "neg.npy").read_bytes())
    (tmp_path / "neg.npy").write_bytes(bytes(data).replace(b"(3,)", b"(-3,)"))
    msg = porting_error(pio.load, tmp_path / "neg.npy")
    assert "neg.npy" in msg and ("shape" in msg or "header" in msg)
    header = json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "cut.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\0" * 8
    )
    msg = porting_error(pio.load, tmp_path / "cut.safetensors")
    assert "'t'" in msg and "truncated" in msg


# ---------------------------------------------------------------------------------------------
# 6. JSON from a user's file: finite, bounded, shallow


def _export(tmp: Path, layers_text: str) -> Path:
    np.savez(tmp / "m.npz", w=np.ones((3, 2), np.float32))
    text = (
        '{"format": "porting-knet-export", "version": 1, "npz": "m.npz", "layers": '
        + layers_text
        + "}"
    )
    (tmp / "m.json").write_text(text)
    return tmp / "m.json"


@pytest.mark.parametrize(
    "layers, expect",
    [
        ("[" * 5000 + "]" * 5000, "nested deeper"),
        ('[{"name": "d", "kind": "dropout", "dropout": ' + "9" * 5000 + "}]", "5000 digits"),
        ('[{"name": "d", "kind": "dropout", "dropout": NaN}]', "NaN"),
        ('[{"name": "d", "kind": "dropout", "dropout": -Infinity}]', "-Infinity"),
        ('[{"name": "d", "kind": "dropout", "dropout": 1e999}]', "1e999"),
    ],
)
def test_export_json_is_finite_bounded_and_shallow(tmp_path, layers, expect):
    from porting.model import load_export

    path = _export(tmp_path, layers)
    msg = porting_error(load_export, path)
    assert str(path) in msg and expect in msg, msg
    r = cli("convert", str(path), "--verify")
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# 7. Real files written by Julia: every one is read or refused, and the process survives


from golden_paths import golden_dir  # noqa: E402  (tests/ is on sys.path)

GOLDEN = golden_dir()
_REAL = (
    sorted(
        p
        for sub in ("real-models", "jld2", "mat")
        for p in (GOLDEN / sub).rglob("*")
        if p.is_file() and p.suffix != ".md"
    )
    if GOLDEN
    else []
)

_PROBE = """
import json, sys
from porting import io
from porting.errors import PortingError
try:
    out = io.load(sys.argv[1])
    print(json.dumps({"ok": sorted(map(str, out)), "flat": sorted(io.flatten(out))[:400]}))
except PortingError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.mark.skipif(
    GOLDEN is None, reason="shared/golden (real Julia files) is not beside the repo"
)
@pytest.mark.parametrize("path", _REAL, ids=lambda p: p.name)
def test_real_julia_files_never_crash_the_process(path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, f"{path.name}: exit {r.returncode}\n{r.stderr[-2000:]}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    if path.suffix == ".bson":
        assert "ok" in result, result  # BSON.jl files decode whole (porting.io.bsonjl)
    elif "error" in result:
        assert str(path) in result["error"]


@pytest.mark.skipif(
    GOLDEN is None, reason="shared/golden (real Julia files) is not beside the repo"
)
def test_real_knet_files_read_as_their_sources_describe():
    """Contents named in shared/golden/real-models/README.md (what the authors saved)."""
    real = GOLDEN / "real-models"
    q = pio.load(real / "hamzaco_Comp-541-Term-Project__model_eh1_eg01.jld2")
    assert {"q_networks", "accuracies", "best_model_index"} <= set(q)
    lenet = pio.load(real / "OsmanMutlu_Comp508-final__model.jld2")["wcnn"]
    assert isinstance(lenet, list) and len(lenet) == 8  # w1, b1, ..., w4, b4
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in lenet)
    helferlein = pio.load(real / "KnetML_NNHelferlein.jl__test_save_lenet.jld2")
    names = {v for v in _leaves(helferlein) if isinstance(v, str)}
    assert "Knet.Ops20.relu" in names  # a function field's type name, read from the bytes
    gpu = real / "KnetML_NNHelferlein.jl__data_testdata_dummy_mlp.jld2"
    msg = porting_error(pio.load, gpu)
    assert str(gpu) in msg


def _leaves(tree, seen=None):
    seen = set() if seen is None else seen
    if id(tree) in seen:
        return
    seen.add(id(tree))
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v, seen)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v, seen)
    else:
        yield tree


# ---------------------------------------------------------------------------------------------
# 8. Reading JLD2 type names from the bytes: any corruption gives None, never an exception


def test_type_name_reader_survives_any_corruption(tmp_path):
    hypothesis = pytest.importorskip("hypothesis", reason="property test needs hypothesis")
    from hypothesis import strategies as st

    from porting.io import _h5raw

    real = (
        GOLDEN / "real-models" / "KnetML_NNHelferlein.jl__test_save_lenet.jld2" if GOLDEN else None
    )
    if real is None or not real.is_file():
        real = tmp_path / "m.jld2"
        with jl.Jld2Writer(real) as f:
            f.struct("layer", "Main.Conv", {"w": np.ones((2, 2), np.float32)})
    with h5py.File(real, "r") as f:
        addrs = [h5py.h5o.get_info(f["_types"][k].id).addr for k in f["_types"]]
    names = [_h5raw.string_attribute(real, a, "julia_type") for a in addrs]
    assert names[0] == "Core.DataType" and all(isinstance(n, str) and n for n in names)
    data = real.read_bytes()
    target = tmp_path / "mutated.jld2"

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(st.sampled_from(addrs), st.data(), st.booleans())
    def check(addr, draw, truncate):
        # most edits land in the object header and the heap the reader walks
        near = st.integers(512 + addr, min(512 + addr + 160, len(data) - 1))
        anywhere = st.integers(0, len(data) - 1)
        edits = draw.draw(
            st.lists(
                st.tuples(st.one_of(near, anywhere), st.integers(0, 255)), min_size=1, max_size=6
            )
        )
        mutated = bytearray(data)
        for at, value in edits:
            mutated[at] = value
        if truncate:
            mutated = mutated[: edits[0][0]]
        target.write_bytes(bytes(mutated))
        got = _h5raw.string_attribute(target, addr, "julia_type")
        assert got is None or isinstance(got, str)

    check()
