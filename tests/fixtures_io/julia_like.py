"""Write files laid out the way Julia packages write them, without Julia.

No Julia is available here, so these writers reproduce, with h5py and NumPy, the on-disk layout
of the Julia writers as read from their sources (docs/files.md#npz, #mat-v73, #jld2,
#hdf5-reversed):

- NPZ.jl ``npzwrite``: ``.npy`` with ``fortran_order: True`` and shape = Julia's ``size()``.
- MAT.jl ``matwrite`` (v7.3, HDF5): a 512-byte user block holding ``"MATLAB 7.3 MAT-file"`` and
  the bytes ``02 49 4D`` at offsets 125-127; every array stored with its dims reversed
  (column-major bytes); ``MATLAB_class`` string attributes; logicals as uint8 with
  ``MATLAB_int_decode = 1``; strings as UInt16 code units ``(1, n)`` with
  ``MATLAB_int_decode = 2``; empties as their dims with ``MATLAB_empty = 1``; scalars as
  1-element 1-D arrays; Dicts as groups with ``MATLAB_class = "struct"`` and a ``MATLAB_fields``
  attribute; cell arrays as object references into ``/#refs#`` (which starts with the canonical
  empty ``a``).
- JLD2: a 512-byte header ``"HDF5-based Julia Data Format, version 0.1.x\\0 (Julia ...)\\0"``;
  bits arrays as plain datasets with dims reversed; ``Bool`` as a 1-byte bitfield; every
  non-primitive type committed under ``/_types/0000000N`` with a ``julia_type`` attribute whose
  value is a Julia ``DataType`` (compound ``name`` = variable-length string, ``parameters`` =
  variable-length list of object references), the first committed type being that DataType
  compound itself; tuples as compounds with members ``"1"``, ``"2"``...; arrays inside them as
  object references to unnamed datasets; a ``Dict`` as a scalar reference (committed type with
  ``julia_type = Base.Dict`` and ``written_type = Core.Array``) to an unnamed vector of
  ``Base.Pair`` compounds ``(first, second)``; singletons (a function such as ``relu``) as
  null-dataspace datasets of a committed 1-byte opaque type with an ``empty`` attribute.

What could not be reproduced from sources alone is marked where it happens (the exact way a
struct with a function-typed field defeats h5py).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import h5py
import numpy as np
from h5py import h5a, h5d, h5s, h5t

# ---------------------------------------------------------------------------------------------
# NPZ.jl


def write_npy_like_npzjl(path, julia_array: np.ndarray) -> Path:
    """``npzwrite(path, x)``: Fortran-ordered .npy whose shape is Julia's size(x)."""
    path = Path(path)
    np.save(path, np.asfortranarray(julia_array))
    return path


def npy_header(path) -> dict:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return {"shape": shape, "fortran_order": fortran, "descr": dtype}


# ---------------------------------------------------------------------------------------------
# MAT.jl v7.3


def matjl_header() -> bytes:
    """The 512 bytes MAT.jl writes over the HDF5 user block when it closes a v7.3 file."""
    magic = bytearray(512)
    ident = b"MATLAB 7.3 MAT-file"
    magic[: len(ident)] = ident
    magic[125] = 0x02
    magic[126] = 0x49  # 'I'
    magic[127] = 0x4D  # 'M'
    return bytes(magic)


def matlab_header() -> bytes:
    """The header MATLAB itself writes (text padded with spaces, version 0x0200, 'IM')."""
    text = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
        b"HDF5 schema 1.00 ."
    )
    head = bytearray(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    return bytes(head.ljust(512, b"\x00"))


_MAT_CLASS = {
    np.dtype(np.float64): "double",
    np.dtype(np.float32): "single",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint64): "uint64",
}


def _set_str_attr(obj, key: str, value: str) -> None:
    obj.attrs.create(key, np.bytes_(value.encode("ascii")))


def _write_user_block(path, header: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.write(header)


def write_mat73(path, variables: dict, *, header: bytes | None = None) -> Path:
    """``matwrite(path, variables)`` as MAT.jl writes v7.3. Arrays are given Julia-indexed."""
    path = Path(path)
    state = {"refcounter": 0}
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            _m_write(f, f, name, value, state)
    _write_user_block(path, header if header is not None else matjl_header())
    return path


def _m_write(f, parent, name, value, state) -> None:
    if isinstance(value, dict):
        g = parent.create_group(name)
        _set_str_attr(g, "MATLAB_class", "struct")
        for k, v in value.items():
            _m_write(f, g, k, v, state)
        fields = np.empty(len(value), dtype=h5py.vlen_dtype(np.dtype("S1")))
        for i, k in enumerate(value):
            fields[i] = np.frombuffer(k.encode("ascii"), dtype="S1")
        g.attrs.create("MATLAB_fields", fields)
        return
    if isinstance(value, str):
        if not value:
            ds = parent.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
            _set_str_attr(ds, "MATLAB_class", "char")
            ds.attrs.create("MATLAB_empty", np.uint8(1))
            return
        codes = np.array([[ord(c) for c in value]], dtype=np.uint16)  # Julia (1, n)
        ds = parent.create_dataset(name, data=np.ascontiguousarray(codes.T))
        _set_str_attr(ds, "MATLAB_class", "char")
        ds.attrs.create("MATLAB_int_decode", np.int32(2))
        return
    if hasattr(value, "tocsc"):  # SparseMatrixCSC: group with 0-based ir/jc, nrows attribute
        csc = value.tocsc()
        g = parent.create_group(name)
        _set_str_attr(g, "MATLAB_class", _MAT_CLASS[csc.dtype])
        g.attrs.create("MATLAB_sparse", np.uint64(csc.shape[0]))
        if csc.nnz:
            g.create_dataset("data", data=csc.data)
            g.create_dataset("ir", data=csc.indices.astype(np.uint64))
        g.create_dataset("jc", data=csc.indptr.astype(np.uint64))
        return
    if isinstance(value, list):
        refs_group = f.require_group("#refs#")
        if "a" not in refs_group:
            e = refs_group.create_dataset("a", data=np.zeros(2, dtype=np.uint64))
            _set_str_attr(e, "MATLAB_class", "canonical empty")
            e.attrs.create("MATLAB_empty", np.uint8(0))
        refs = []
        for item in value:
            state["refcounter"] += 1
            item_name = str(state["refcounter"])
            _m_write(f, refs_group, item_name, item, state)
            refs.append(refs_group[item_name].ref)
        ds = parent.create_dataset(name, data=np.array(refs, dtype=h5py.ref_dtype))
        _set_str_attr(ds, "MATLAB_class", "cell")
        return
    a = np.asarray(value)
    if a.ndim == 0:
        a = a.reshape(1)  # MAT.jl's toarray(x) = [x]
    if a.dtype == np.bool_:
        ds = _mat_array(parent, name, a.astype(np.uint8))
        _set_str_attr(ds, "MATLAB_class", "logical")
        ds.attrs.create("MATLAB_int_decode", np.int32(1))
        return
    if a.size == 0:
        ds = parent.create_dataset(name, data=np.array(a.shape, dtype=np.uint64))
        ds.attrs.create("MATLAB_empty", np.uint8(1))
        _set_str_attr(ds, "MATLAB_class", _MAT_CLASS[a.dtype])
        return
    if a.dtype.kind == "c":
        base = a.real.dtype
        ctype = np.dtype([("real", base), ("imag", base)])
        rec = np.empty(a.shape, dtype=ctype)
        rec["real"], rec["imag"] = a.real, a.imag
        ds = _mat_array(parent, name, rec)
        _set_str_attr(ds, "MATLAB_class", _MAT_CLASS[base])
        return
    ds = _mat_array(parent, name, a)
    _set_str_attr(ds, "MATLAB_class", _MAT_CLASS[a.dtype])


def _mat_array(parent, name, julia_array):
    # Column-major bytes of Julia size (X1,...,Xn) = C-order array of shape (Xn,...,X1).
    return parent.create_dataset(name, data=np.ascontiguousarray(julia_array.T))


# ---------------------------------------------------------------------------------------------
# JLD2


def jld2_header(julia: str = "1.9.4") -> bytes:
    text = f"HDF5-based Julia Data Format, version 0.1.5\x00 (Julia {julia} 64-bit LE)\x00"
    return text.encode("ascii").ljust(512, b"\x00")


def _libhdf5():
    """The libhdf5 h5py runs on (Linux): used to keep unnamed objects alive like JLD2 does."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libhdf5" in line and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        if "_hl" in os.path.basename(path):
            continue
        try:
            lib = ctypes.CDLL(path)
            lib.H5Oincr_refcount.argtypes = [ctypes.c_int64]
            lib.H5Oincr_refcount.restype = ctypes.c_int
            return lib
        except (OSError, AttributeError):
            continue
    return None


_JL_ELTYPE = {
    np.dtype(np.float32): "Core.Float32",
    np.dtype(np.float64): "Core.Float64",
    np.dtype(np.int64): "Core.Int64",
    np.dtype(np.int32): "Core.Int32",
    np.dtype(np.bool_): "Core.Bool",
}


class Jld2Writer:
    """Write a JLD2-shaped HDF5 file. Values are given Julia-indexed (shape = Julia's size)."""

    def __init__(self, path, *, header: bytes | None = None):
        self.path = Path(path)
        self.header = header if header is not None else jld2_header()
        self.f = h5py.File(self.path, "w", userblock_size=512, libver="latest")
        self.types = self.f.create_group("_types")
        self._ntypes = 0
        self._nobjects = 0
        self._keep: list = []
        self._lib = _libhdf5()
        self._vstr = h5t.C_S1.copy()
        self._vstr.set_size(h5t.VARIABLE)
        self._vstr.set_cset(h5t.CSET_UTF8)
        self._dt_tid = h5t.create(h5t.COMPOUND, 8 + 16)  # char* name; hvl_t parameters
        self._dt_tid.insert(b"name", 0, self._vstr)
        self._dt_tid.insert(b"parameters", 8, h5t.vlen_create(h5t.STD_REF_OBJ))
        # /_types/00000001: the DataType compound, itself typed by julia_type = Core.DataType.
        name = self._next_type_name()
        self._dt_tid.commit(self.types.id, name.encode())
        self.datatype_type = self.types[name]
        self._write_datatype_attr(self.datatype_type, b"julia_type", "Core.DataType", [])

    # -- plumbing ------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.f:
            self.f.close()
            self.f = None
            _write_user_block(self.path, self.header)

    def _next_type_name(self) -> str:
        self._ntypes += 1
        return f"{self._ntypes:08d}"

    def _datatype_buffer(self, jname: str, params: list[int]):
        name = ctypes.create_string_buffer(jname.encode("utf-8"))
        refs = np.array(params, dtype="<u8")
        buf = np.zeros((), dtype=[("name", "<u8"), ("len", "<u8"), ("ptr", "<u8")])
        buf["name"] = ctypes.addressof(name)
        buf["len"] = len(params)
        buf["ptr"] = refs.ctypes.data if len(params) else 0
        self._keep.extend([name, refs])
        return buf

    def _write_datatype_attr(self, obj, attr: bytes, jname: str, params: list[int]) -> None:
        a = h5a.create(obj.id, attr, self.datatype_type.id, h5s.create(h5s.SCALAR))
        a.write(self._datatype_buffer(jname, params), mtype=self._dt_tid)
        a.close()

    def _keep_unnamed(self, dsid) -> int:
        """JLD2 leaves referenced objects unnamed; libhdf5 deletes unnamed objects on close
        unless their reference count is raised (else, fallback: name them under /_types)."""
        if self._lib is not None and self._lib.H5Oincr_refcount(dsid.id) >= 0:
            pass
        else:
            self._nobjects += 1
            h5py.h5o.link(dsid, self.types.id, f"obj{self._nobjects}".encode())
        return h5py.h5o.get_info(dsid).addr

    def addr(self, obj) -> int:
        return h5py.h5o.get_info(obj.id).addr

    # -- type descriptions ---------------------------------------------------------------------
    def _type_value_ds(self, jname: str, params: list[int]):
        ds = h5d.create(self.f.id, None, self.datatype_type.id, h5s.create(h5s.SCALAR))
        ds.write(h5s.ALL, h5s.ALL, self._datatype_buffer(jname, list(params)), mtype=self._dt_tid)
        self._keep_unnamed(ds)
        return ds

    def type_value(self, jname: str, params: list[int] = ()) -> int:
        """An unnamed dataset holding a Julia DataType value (as write_ref(f, T) stores it)."""
        return h5py.h5o.get_info(self._type_value_ds(jname, list(params))).addr

    def int_value(self, n: int) -> int:
        ds = self.f.create_dataset(None, data=np.int64(n))
        return self._keep_unnamed(ds.id)

    def array_type(self, a: np.ndarray) -> int:
        """The DataType value of Array{T,N}: name Core.Array, parameters [T, N]."""
        return self.type_value(
            "Core.Array", [self.type_value(_JL_ELTYPE[a.dtype]), self.int_value(a.ndim)]
        )

    def commit(
        self, dtype, jname: str, params: list[int] = (), *, written_type=None
    ) -> h5py.Datatype:
        name = self._next_type_name()
        if isinstance(dtype, h5t.TypeID):
            dtype.commit(self.types.id, name.encode())
        else:
            self.types[name] = np.dtype(dtype)
        committed = self.types[name]
        self._write_datatype_attr(committed, b"julia_type", jname, list(params))
        if written_type is not None:
            self._write_datatype_attr(committed, b"written_type", *written_type)
        return committed

    # -- values --------------------------------------------------------------------------------
    def _array_dataset(self, parent, name, a: np.ndarray):
        a = np.asarray(a)
        data = np.ascontiguousarray(a.T)  # Julia column-major bytes = C order, dims reversed
        if a.dtype == np.bool_:
            space = h5s.create_simple(data.shape) if data.ndim else h5s.create(h5s.SCALAR)
            tid = h5t.STD_B8LE.copy()
            ds = h5d.create(parent.id, name.encode() if name else None, tid, space)
            ds.write(h5s.ALL, h5s.ALL, data.astype(np.uint8), mtype=h5t.NATIVE_B8)
            return ds
        if name is None:
            return self.f.create_dataset(None, data=data).id
        return parent.create_dataset(name, data=data).id

    def unnamed_array(self, a) -> h5py.Reference:
        dsid = self._array_dataset(self.f, None, np.asarray(a))
        self._keep_unnamed(dsid)
        return h5py.h5r.create(dsid, b".", h5py.h5r.OBJECT)

    def array(self, name: str, a) -> None:
        """``jldsave(path; name=a)`` for a bits array (or number: a scalar dataspace)."""
        a = np.asarray(a)
        if a.ndim == 0 and a.dtype != np.bool_:
            self.f.create_dataset(name, data=a)
            return
        self._array_dataset(self.f, name, a)

    def string(self, name: str, s: str) -> None:
        raw = s.encode("utf-8")
        tid = h5t.C_S1.copy()
        tid.set_size(len(raw))
        tid.set_cset(h5t.CSET_UTF8)
        tid.set_strpad(h5t.STR_NULLPAD)
        ds = h5d.create(self.f.id, name.encode(), tid, h5s.create(h5s.SCALAR))
        ds.write(h5s.ALL, h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)

    def tuple_(self, name: str, items: list) -> None:
        """A Tuple: committed compound with members "1", "2", ...; arrays by reference."""
        fields, values, params = [], [], []
        for i, item in enumerate(items, start=1):
            a = np.asarray(item)
            if a.ndim == 0:
                fields.append((str(i), a.dtype))
                values.append(a[()])
                params.append(self.type_value(_JL_ELTYPE[a.dtype]))
            else:
                fields.append((str(i), h5py.ref_dtype))
                values.append(self.unnamed_array(a))
                params.append(self.array_type(a))
        committed = self.commit(fields, "Core.Tuple", params)
        ds = self.f.create_dataset(name, shape=(), dtype=committed)
        ds[()] = np.array(tuple(values), dtype=committed.dtype)

    def dict_(self, name: str, d: dict) -> None:
        """A Dict{String,Array}: written as Vector{Pair{String,Array}} behind a reference."""
        first = next(iter(d.values()))
        string_t = self.type_value("Core.String")
        value_t = self.array_type(np.asarray(first))
        pair_t = self.commit(
            [("first", h5py.string_dtype()), ("second", h5py.ref_dtype)],
            "Base.Pair",
            [string_t, value_t],
        )
        pairs = np.empty(len(d), dtype=pair_t.dtype)
        for i, (k, v) in enumerate(d.items()):
            pairs[i] = (k, self.unnamed_array(v))
        pairs_ds = self.f.create_dataset(None, shape=(len(d),), dtype=pair_t)
        pairs_ds[...] = pairs
        self._keep_unnamed(pairs_ds.id)
        dict_t = self.commit(
            h5t.STD_REF_OBJ.copy(),
            "Base.Dict",
            [string_t, value_t],
            written_type=("Core.Array", [self.addr(pair_t), self.int_value(1)]),
        )
        ds = self.f.create_dataset(name, shape=(), dtype=dict_t)
        ds[()] = pairs_ds.ref

    def ref_vector(self, name: str, arrays: list) -> None:
        """A Vector{Matrix{Float32}}: dataset of references + julia_type attribute (a ref)."""
        refs = np.array([self.unnamed_array(a) for a in arrays], dtype=h5py.ref_dtype)
        ds = self.f.create_dataset(name, data=refs)
        a = np.asarray(arrays[0])
        eltype = self._type_value_ds(
            "Core.Array", [self.type_value(_JL_ELTYPE[a.dtype]), self.int_value(a.ndim)]
        )
        ds.attrs.create(
            "julia_type", h5py.h5r.create(eltype, b".", h5py.h5r.OBJECT), dtype=h5py.ref_dtype
        )

    def singleton(self, jname: str) -> h5py.Reference:
        """A ghost value such as ``relu``: null dataspace, committed 1-byte opaque, `empty`."""
        opaque = h5t.create(h5t.OPAQUE, 1)
        committed = self.commit(opaque, jname)
        committed.attrs.create("empty", np.uint8(1))
        ds = h5d.create(self.f.id, None, committed.id, h5s.create(h5s.NULL))
        self._keep_unnamed(ds)
        return h5py.h5r.create(ds, b".", h5py.h5r.OBJECT)

    def struct(self, name: str | None, jname: str, fields: dict) -> h5py.Reference | None:
        """A mutable struct with untyped fields: committed compound of references.

        Field values: arrays (stored unnamed, by reference), ``h5py.Reference`` (already
        written: a nested struct or a singleton), or ``None`` (an #undef field).
        """
        refs = {}
        for k, v in fields.items():
            if v is None:
                refs[k] = h5py.Reference()
            elif isinstance(v, h5py.Reference):
                refs[k] = v
            else:
                refs[k] = self.unnamed_array(v)
        committed = self.commit([(k, h5py.ref_dtype) for k in fields], jname, [])
        value = np.array(tuple(refs.values()), dtype=committed.dtype)
        if name is None:
            ds = self.f.create_dataset(None, shape=(), dtype=committed)
            ds[()] = value
            self._keep_unnamed(ds.id)
            return h5py.h5r.create(ds.id, b".", h5py.h5r.OBJECT)
        ds = self.f.create_dataset(name, shape=(), dtype=committed)
        ds[()] = value
        return None

    def struct_with_ghost_field(self, name: str, jname: str, fields: dict, ghost: tuple) -> None:
        """``struct Dense{F}; w; b; f::F; end`` with ``f = relu``: the field has no data, so it
        is left out of the compound; JLD2 then records every field in ``field_names`` and
        ``field_types`` (references to committed types; null where none was committed)."""
        gname, gtype = ghost
        ghost_t = self.commit(h5t.create(h5t.OPAQUE, 1), gtype)
        ghost_t.attrs.create("empty", np.uint8(1))
        committed = self.commit([(k, h5py.ref_dtype) for k in fields], jname, [])
        names = [*fields, gname]
        committed.attrs.create(
            "field_names", np.array(names, dtype=object), dtype=h5py.string_dtype()
        )
        types = np.array([h5py.Reference()] * len(fields) + [ghost_t.ref], dtype=h5py.ref_dtype)
        committed.attrs.create("field_types", types, dtype=h5py.ref_dtype)
        refs = tuple(self.unnamed_array(v) for v in fields.values())
        ds = self.f.create_dataset(name, shape=(), dtype=committed)
        ds[()] = np.array(refs, dtype=committed.dtype)

    # -- the cases h5py cannot read --------------------------------------------------------------
    def function_by_name(self, jname: str) -> h5py.Reference:
        """A function stored as its DataType value ("JLD2 only stores functions by name").

        APPROXIMATION: h5py cannot convert the variable-length list of references inside such
        a value and raises ``TypeError: Unknown reference type``. Whether Knet/JLD2 versions
        reach exactly this representation for ``f=relu`` could not be checked without Julia.
        """
        ds = h5d.create(self.f.id, None, self.datatype_type.id, h5s.create(h5s.SCALAR))
        params = [self.type_value("Core.Float32")]
        ds.write(h5s.ALL, h5s.ALL, self._datatype_buffer(jname, params), mtype=self._dt_tid)
        self._keep_unnamed(ds)
        return h5py.h5r.create(ds, b".", h5py.h5r.OBJECT)

    def struct_with_opaque_field(self, name: str, jname: str, w: np.ndarray, fname: str) -> None:
        """A struct whose function-typed field is stored inline as bits h5py cannot convert.

        APPROXIMATION: a tagged 1-byte opaque member (libhdf5 finds no conversion path and
        h5py raises a TypeError on read); stands in for the dataset h5py fails to read.
        """
        opaque = h5t.create(h5t.OPAQUE, 1)
        opaque.set_tag(fname.encode())
        ctype = h5t.create(h5t.COMPOUND, 9)
        ctype.insert(b"w", 0, h5t.STD_REF_OBJ)
        ctype.insert(b"f", 8, opaque)
        committed = self.commit(ctype, jname, [])
        h5d.create(self.f.id, name.encode(), committed.id, h5s.create(h5s.SCALAR))
        self.unnamed_array(w)  # the weight exists in the file; the struct cannot be read
