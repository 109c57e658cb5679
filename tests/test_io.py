"""porting.io: weight files written the way Julia writes them come back Julia-indexed.

Every file here is laid out as the Julia package writes it (see tests/fixtures_io/julia_like.py
for what is reproduced and what is approximated). The check that matters is element placement:
a value put at Julia index [2,3,1,1] must come back at NumPy index [1,2,0,0].
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from porting import io as pio
from porting.errors import PortingError

_spec = importlib.util.spec_from_file_location(
    "julia_like_fixtures", Path(__file__).parent / "fixtures_io" / "julia_like.py"
)
jl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jl)

KNOWN = 42.0  # placed at Julia index [2,3,1,1] == NumPy [1,2,0,0]


def julia_weights(seed: int, shape=(5, 4, 3, 2), dtype=np.float32) -> np.ndarray:
    """A Julia-indexed array (X1, X2, C, N) with KNOWN at Julia [2,3,1,1]."""
    w = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    w[1, 2, 0, 0] = KNOWN
    return np.asfortranarray(w)


def assert_julia_indexed(got, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert got[1, 2, 0, 0] == KNOWN
    np.testing.assert_array_equal(got, want)


def porting_error(fn, *args, **kwargs) -> PortingError:
    with pytest.raises(PortingError) as info:
        fn(*args, **kwargs)
    err = info.value
    # No deep traceback: either raised directly, or `raise ... from None` inside an except.
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return err


# ---------------------------------------------------------------------------------------------
# .npy / .npz (NPZ.jl)


def test_npy_written_like_npzjl_is_fortran_ordered_and_julia_indexed(tmp_path):
    w = julia_weights(0)
    path = jl.write_npy_like_npzjl(tmp_path / "conv1_w.npy", w)
    header = jl.npy_header(path)
    assert header["fortran_order"] is True
    assert header["shape"] == (5, 4, 3, 2)
    out = pio.load(path)
    assert list(out) == ["conv1_w"]
    assert_julia_indexed(out["conv1_w"], w)
    assert out["conv1_w"].flags.f_contiguous


def test_npy_c_ordered_from_numpy_gives_the_same_logical_array(tmp_path):
    w = julia_weights(1)
    np.save(tmp_path / "w.npy", np.ascontiguousarray(w))
    assert jl.npy_header(tmp_path / "w.npy")["fortran_order"] is False
    assert_julia_indexed(pio.load(tmp_path / "w.npy")["w"], w)


def test_npz_members_each_julia_indexed(tmp_path):
    w = julia_weights(2)
    b = np.random.default_rng(2).standard_normal(3)
    np.savez(tmp_path / "model.npz", w1=np.asfortranarray(w), b1=b)
    out = pio.load(tmp_path / "model.npz")
    assert sorted(out) == ["b1", "w1"]
    assert_julia_indexed(out["w1"], w)
    assert out["b1"].shape == (3,)
    np.testing.assert_array_equal(out["b1"], b)


# ---------------------------------------------------------------------------------------------
# MAT v5 (scipy) and v7.3 (MAT.jl's HDF5)


def test_mat5_keeps_julia_sizes_and_reads_structs_cells_strings(tmp_path):
    w = julia_weights(3)
    b = np.random.default_rng(3).standard_normal(4)
    scipy.io.savemat(
        tmp_path / "w5.mat",
        {
            "w": w,
            "b": b.reshape(4, 1),  # MAT.jl writes a Julia Vector as an n x 1 matrix
            "lr": np.array([[0.5]]),
            "layer": {"w": w, "act": "relu"},
            "c": np.array([b.reshape(4, 1), "x"], dtype=object),
        },
    )
    assert pio.detect_format(tmp_path / "w5.mat") == "mat5"
    out = pio.load(tmp_path / "w5.mat")
    assert sorted(out) == ["b", "c", "layer", "lr", "w"]  # no __header__ etc.
    assert_julia_indexed(out["w"], w)
    assert out["b"].shape == (4, 1)  # documented: v5 vectors come back (n, 1), not squeezed
    np.testing.assert_array_equal(out["b"][:, 0], b)
    assert out["lr"].shape == (1, 1) and out["lr"][0, 0] == 0.5
    assert out["layer"]["act"] == "relu"
    assert_julia_indexed(out["layer"]["w"], w)
    assert isinstance(out["c"], list) and out["c"][1] == "x"
    np.testing.assert_array_equal(out["c"][0][:, 0], b)


@pytest.mark.parametrize("header", ["MAT.jl", "MATLAB"])
def test_mat73_as_matjl_writes_it_reverses_dims(tmp_path, header):
    rng = np.random.default_rng(4)
    w = julia_weights(4)
    b = rng.standard_normal(3)
    path = jl.write_mat73(
        tmp_path / "w73.mat",
        {
            "w": w,
            "b": b,
            "lr": 0.5,
            "mask": np.array([True, False, True]),
            "act": "relu",
            "none": np.zeros((0, 3), dtype=np.float32),
            "blank": "",
            "z": np.array([1 + 2j, 3 - 1j]),
            "layer": {"w": w, "inner": {"k": np.int32(3)}},
            "cells": [w, "x", 2.0],
        },
        header=jl.matjl_header() if header == "MAT.jl" else jl.matlab_header(),
    )
    with h5py.File(path, "r") as f:  # on disk: dims reversed, MATLAB attributes present
        assert f["w"].shape == (2, 3, 4, 5)
        assert f["w"][0, 0, 2, 1] == KNOWN
        assert f["w"].attrs["MATLAB_class"] == b"single"
        assert f["mask"].attrs["MATLAB_class"] == b"logical"
    assert pio.detect_format(path) == "mat73"
    out = pio.load(path)
    assert sorted(out) == ["act", "b", "blank", "cells", "layer", "lr", "mask", "none", "w", "z"]
    assert_julia_indexed(out["w"], w)
    assert out["w"].flags.f_contiguous
    assert out["b"].shape == (3,)  # a 1-D dataset stays 1-D
    np.testing.assert_array_equal(out["b"], b)
    assert out["lr"].shape == (1,) and out["lr"][0] == 0.5  # MAT.jl's [x]
    assert out["mask"].dtype == np.bool_ and out["mask"].tolist() == [True, False, True]
    assert out["act"] == "relu" and out["blank"] == ""
    assert out["none"].shape == (0, 3) and out["none"].dtype == np.float32
    np.testing.assert_array_equal(out["z"], [1 + 2j, 3 - 1j])
    assert_julia_indexed(out["layer"]["w"], w)
    np.testing.assert_array_equal(out["layer"]["inner"]["k"], [3])
    assert len(out["cells"]) == 3 and out["cells"][1] == "x"
    assert_julia_indexed(out["cells"][0], w)


def test_mat73_matrix_placement_non_square(tmp_path):
    # Dense weight (out=3, in=5): Julia w[3,5] must come back at [2,4].
    w = np.arange(15, dtype=np.float64).reshape((3, 5), order="F")
    path = jl.write_mat73(tmp_path / "dense.mat", {"w": w})
    with h5py.File(path, "r") as f:
        assert f["w"].shape == (5, 3)
    got = pio.load(path)["w"]
    assert got.shape == (3, 5) and got[2, 4] == w[2, 4] == 14.0 and got[1, 0] == 1.0


def test_mat73_sparse_matrix_comes_back_dense(tmp_path):
    import scipy.sparse

    dense = np.zeros((4, 3))
    dense[3, 1] = KNOWN  # Julia [4,2]
    dense[0, 2] = -1.0
    path = jl.write_mat73(tmp_path / "sp.mat", {"s": scipy.sparse.csc_matrix(dense)})
    got = pio.load(path)["s"]
    assert got.shape == (4, 3) and got[3, 1] == KNOWN
    np.testing.assert_array_equal(got, dense)


# ---------------------------------------------------------------------------------------------
# JLD2


def write_jld2_model(path, w, b):
    with jl.Jld2Writer(path) as f:
        f.array("w", w)
        f.array("b", b)
        f.array("lr", 0.1)
        f.array("epochs", np.int64(7))
        f.array("mask", np.array([[True, False, True]]))
        f.string("name", "lenet")
        f.tuple_("wb", [w, b])
        f.tuple_("sizes", [np.int64(3), 0.5])
        f.dict_("weights", {"w1": w, "b1": b.reshape(3, 1)})
        f.ref_vector("ws", [w[:, :, 0, 0], w[:, :, 1, 1]])
        relu = f.singleton("NNlib.#relu")
        param = f.struct(None, "AutoGrad.Param", {"value": w, "opt": None})
        f.struct("layer", "Main.Conv", {"w": param, "b": b, "f": relu})
        f.struct_with_ghost_field("dense", "Main.Dense", {"w": w, "b": b}, ("f", "NNlib.#relu"))
        f.array("layers/1/w", w)  # FileIO save(path, Dict("layers/1/w" => w)) makes groups
    return Path(path)


@pytest.fixture
def jld2_model(tmp_path):
    w = julia_weights(5)
    b = np.random.default_rng(5).standard_normal(3).astype(np.float32)
    return write_jld2_model(tmp_path / "model.jld2", w, b), w, b


def test_jld2_fixture_is_laid_out_like_jld2(jld2_model):
    path, _, _ = jld2_model
    assert path.read_bytes()[:29] == b"HDF5-based Julia Data Format,"
    with h5py.File(path, "r") as f:
        assert f["w"].shape == (2, 3, 4, 5) and f["w"][0, 0, 2, 1] == KNOWN
        assert f["mask"].id.get_type().get_class() == h5py.h5t.BITFIELD
        types = f["_types"]
        assert sorted(types)[0] == "00000001"
        assert f["wb"].id.get_type().committed()
        # h5py cannot read a julia_type attribute whole (its `parameters` member is a
        # variable-length list of references): the loader must read only its `name`.
        with pytest.raises(TypeError):
            types["00000001"].attrs["julia_type"]
        assert types["00000001"].attrs.get_id("julia_type").shape == ()


def test_jld2_arrays_numbers_strings(jld2_model):
    path, w, b = jld2_model
    out = pio.load(path)
    assert "_types" not in out
    assert_julia_indexed(out["w"], w)
    assert out["w"].flags.f_contiguous
    np.testing.assert_array_equal(out["b"], b)
    assert out["lr"] == 0.1 and isinstance(out["lr"], float)
    assert out["epochs"] == 7 and isinstance(out["epochs"], int)
    assert out["mask"].dtype == np.bool_ and out["mask"].tolist() == [[True, False, True]]
    assert out["name"] == "lenet"
    assert_julia_indexed(out["layers"]["1"]["w"], w)


def test_jld2_tuples_dicts_and_reference_arrays_are_followed(jld2_model):
    path, w, b = jld2_model
    out = pio.load(path)
    assert isinstance(out["wb"], tuple) and len(out["wb"]) == 2
    assert_julia_indexed(out["wb"][0], w)
    np.testing.assert_array_equal(out["wb"][1], b)
    assert out["sizes"] == (3, 0.5)
    assert sorted(out["weights"]) == ["b1", "w1"]
    assert_julia_indexed(out["weights"]["w1"], w)
    assert out["weights"]["b1"].shape == (3, 1)
    assert isinstance(out["ws"], list) and [a.shape for a in out["ws"]] == [(5, 4), (5, 4)]
    assert out["ws"][0][1, 2] == KNOWN
    np.testing.assert_array_equal(out["ws"][1], w[:, :, 1, 1])


def test_jld2_readable_struct_becomes_nested_dict(jld2_model):
    path, w, b = jld2_model
    layer = pio.load(path)["layer"]
    assert sorted(layer) == ["b", "f", "w"]
    assert layer["f"] == "NNlib.relu"  # a singleton function comes back as its name
    assert layer["w"]["opt"] is None  # an #undef / null reference
    assert_julia_indexed(layer["w"]["value"], w)
    assert pio.flatten({"layer": layer}).keys() == {"layer.w.value", "layer.b"}


def test_jld2_struct_with_dataless_function_field_uses_field_types(jld2_model):
    path, w, b = jld2_model
    with h5py.File(path, "r") as f:  # the ghost field is absent from the compound itself
        assert f["dense"].dtype.names == ("w", "b")
    dense = pio.load(path)["dense"]
    assert list(dense) == ["w", "b", "f"]
    assert dense["f"] == "NNlib.relu"
    assert_julia_indexed(dense["w"], w)
    np.testing.assert_array_equal(dense["b"], b)


@pytest.mark.parametrize("variant", ["function_by_name", "opaque_field"])
def test_jld2_struct_with_function_field_h5py_cannot_read_gives_export_advice(tmp_path, variant):
    w = julia_weights(6)
    path = tmp_path / "knet_model.jld2"
    with jl.Jld2Writer(path) as f:
        f.array("ok", w)
        if variant == "function_by_name":
            relu = f.function_by_name("NNlib.#relu")
            f.struct("dense", "Main.Dense", {"w": w, "b": w[:, 0, 0, 0], "f": relu})
        else:
            f.struct_with_opaque_field("dense", "Main.Dense", w, "relu")
    with h5py.File(path, "r") as h5:  # the premise: h5py itself fails somewhere in `dense`
        with pytest.raises((TypeError, OSError, KeyError)):
            obj = h5["dense"][()]
            h5[obj["f"]][()]
    err = porting_error(pio.load, path)
    msg = str(err)
    assert str(path) in msg and "'dense" in msg
    assert "jldsave(" in msg and "npzwrite(" in msg and "PortingKnet.export_model" in msg
    assert "value(model.layers[1].w)" in msg


# ---------------------------------------------------------------------------------------------
# safetensors


def test_safetensors_are_returned_as_stored(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    t = rng.standard_normal((2, 3, 4)).astype(np.float32)  # PyTorch layout, row-major
    t[1, 2, 3] = KNOWN
    save_file({"layer.weight": t}, str(tmp_path / "m.safetensors"))
    assert pio.detect_format(tmp_path / "m.safetensors") == "safetensors"
    out = pio.load(tmp_path / "m.safetensors")
    assert out["layer.weight"].shape == (2, 3, 4)  # not reversed: the writer's own order
    assert out["layer.weight"][1, 2, 3] == KNOWN
    np.testing.assert_array_equal(out["layer.weight"], t)


# ---------------------------------------------------------------------------------------------
# Bad input: one PortingError naming the path and what was expected


def test_missing_file_and_directory(tmp_path):
    err = porting_error(pio.load, tmp_path / "nope.npz")
    assert "nope.npz" in str(err) and "no such file" in str(err)
    err = porting_error(pio.load, tmp_path)
    assert str(tmp_path) in str(err) and "is a directory" in str(err)
    assert "expected a weight file" in str(err)
    (tmp_path / "empty.jld2").write_bytes(b"")
    err = porting_error(pio.load, tmp_path / "empty.jld2")
    assert "empty.jld2 is empty (0 bytes)" in str(err)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_files_each_format(tmp_path):
    w = julia_weights(8)
    npy = _truncate(jl.write_npy_like_npzjl(tmp_path / "w.npy", w))
    np.savez(tmp_path / "w.npz", w=w)
    npz = _truncate(tmp_path / "w.npz")
    mat = _truncate(jl.write_mat73(tmp_path / "w.mat", {"w": w}))
    jld = _truncate(write_jld2_model(tmp_path / "m.jld2", w, w[:3, 0, 0, 0].copy()))
    from safetensors.numpy import save_file

    save_file({"w": w}, str(tmp_path / "w.safetensors"))
    st = _truncate(tmp_path / "w.safetensors")
    for path in (npy, npz, mat, jld, st):
        err = porting_error(pio.load, path)
        assert str(path) in str(err)
        assert "truncated or corrupt" in str(err)


def test_hdf5_with_bad_bytes_in_superblock(tmp_path):
    w = julia_weights(9)
    path = write_jld2_model(tmp_path / "bad.jld2", w, w[:3, 0, 0, 0].copy())
    data = bytearray(path.read_bytes())
    data[512 + 8 : 512 + 48] = bytes(range(40))  # clobber the superblock after the signature
    path.write_bytes(bytes(data))
    err = porting_error(pio.load, path)
    assert str(path) in str(err) and "a JLD2 file" in str(err)


def test_unknown_format_and_unrecognised_magic(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01not a weight file at all" * 4)
    err = porting_error(pio.load, path)
    assert "weights.bin" in str(err) and "unknown format" in str(err)
    assert ".npy" in str(err) and "format=" in str(err)
    err = porting_error(pio.load, path, format="pickle")
    assert "format='pickle'" in str(err)


def test_plain_hdf5_without_header_asks_for_format(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.ones((2, 3))
    err = porting_error(pio.load, path)
    assert "plain.h5" in str(err) and "format='jld2'" in str(err)
    assert pio.load(path, format="jld2")["w"].shape == (3, 2)  # read as Julia wrote it


def test_non_numeric_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    err = porting_error(pio.load, tmp_path / "obj.npy")
    assert "obj.npy" in str(err) and "expected numbers" in str(err)
    np.save(tmp_path / "names.npy", np.array(["conv", "dense"]))
    err = porting_error(pio.load, tmp_path / "names.npy")
    assert "names.npy" in str(err) and "<U5" in str(err) and "expected numbers" in str(err)
    np.savez(tmp_path / "mixed.npz", w=np.ones(2), labels=np.array(["a"]))
    err = porting_error(pio.load, tmp_path / "mixed.npz")
    assert "'labels'" in str(err)


# ---------------------------------------------------------------------------------------------
# Format detection, save_npz, flatten


def test_magic_bytes_win_over_extension_and_format_overrides(tmp_path):
    w = julia_weights(10)
    np.savez(tmp_path / "w.npz", w=w)
    renamed = tmp_path / "weights.dat"
    os.replace(tmp_path / "w.npz", renamed)
    assert pio.detect_format(renamed) == "npz"
    assert_julia_indexed(pio.load(renamed)["w"], w)
    mat73 = jl.write_mat73(tmp_path / "x.bin", {"w": w})
    assert pio.detect_format(mat73) == "mat73"
    assert pio.detect_format(mat73, format="mat") == "mat73"
    scipy.io.savemat(tmp_path / "v5.bin", {"w": w})
    assert pio.detect_format(tmp_path / "v5.bin", format="mat") == "mat5"


def test_save_npz_round_trip_keeps_julia_order(tmp_path):
    w = julia_weights(11)
    b = np.random.default_rng(11).standard_normal(3)
    path = pio.save_npz(tmp_path / "out.npz", {"conv": {"w": w, "b": b}, "lr": 0.5})
    import zipfile

    with zipfile.ZipFile(path) as z:
        with z.open("conv.w.npy") as fh:
            version = np.lib.format.read_magic(fh)
            assert version == (1, 0)
            shape, fortran, _ = np.lib.format.read_array_header_1_0(fh)
    assert shape == (5, 4, 3, 2) and fortran is True  # what NPZ.jl writes and reads
    out = pio.load(path)
    assert sorted(out) == ["conv.b", "conv.w", "lr"]
    assert_julia_indexed(out["conv.w"], w)
    np.testing.assert_array_equal(out["conv.b"], b)
    assert out["lr"].shape == () and out["lr"] == 0.5


def test_save_npz_is_atomic(tmp_path, monkeypatch):
    path = pio.save_npz(tmp_path / "w.npz", {"w": np.ones((2, 2))})
    before = path.read_bytes()
    calls = {"n": 0}
    real = np.lib.format.write_array

    def failing(fh, a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(fh, a, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        pio.save_npz(path, {"a": np.zeros(3), "b": np.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]  # no temp file left


def test_save_npz_refuses_bad_input(tmp_path):
    err = porting_error(pio.save_npz, tmp_path / "x.npz", {"names": np.array(["a", "b"])})
    assert "'names'" in str(err) and "expected numbers" in str(err)
    err = porting_error(pio.save_npz, tmp_path, {"w": np.ones(2)})
    assert "is a directory" in str(err)
    err = porting_error(pio.save_npz, tmp_path / "missing" / "x.npz", {"w": np.ones(2)})
    assert "does not exist" in str(err)
    assert list(tmp_path.iterdir()) == []


def test_flatten_names_nested_values_julia_style():
    w = np.ones((2, 2))
    flat = pio.flatten({"layers": ({"w": w, "f": "NNlib.relu"}, {"w": 2 * w}), "lr": 0.1})
    assert sorted(flat) == ["layers.1.w", "layers.2.w", "lr"]
    assert flat["layers.2.w"][0, 0] == 2.0 and flat["lr"].shape == ()
    err = porting_error(pio.flatten, {"a.b": w, "a": {"b": w}})
    assert "'a.b'" in str(err)


def test_import_porting_io_stays_light():
    code = (
        "import porting.io, sys, json;"
        "print(json.dumps([m for m in ('h5py', 'scipy', 'safetensors') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
