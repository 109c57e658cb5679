"""`Flux.state` trees written as JLD2.jl writes them (``jldsave(path; model_state =
Flux.state(model))``), from Python with h5py (no Julia): for the README, examples and tests.

The encoding follows JLD2.jl v0.5.15 (docs/flux.md#flux-state-jld2): ``src/file_header.jl``
(a 512-byte header naming the format, then HDF5), ``src/data/writing_datatypes.jl``
(``commit``: every Julia type a value uses is a committed datatype in ``/_types``, named by
its number, ``00000001`` on, carrying a ``julia_type`` attribute whose value is a Julia
``DataType``, a compound of ``name`` and ``parameters``; ``commit_compound``: an immutable
struct, Tuple or NamedTuple is a compound of its fields, stored inline, with ``field_names``
and ``field_types`` attributes when a field is committed or has no data; ``fieldodr``: a
field of a type without data, such as ``()`` or ``nothing``, is left out of the compound and
appears only in those attributes, its type an empty opaque datatype with attribute
``empty``; a mutable field, such as an ``Array``, is an object reference to a dataset of its
own; ``typename`` and the ``NTuple`` special case for type names) and
``src/data/number_types.jl`` (``Bool`` as an 8-bit bitfield). One simplification, stated:
the ``parameters`` of each ``julia_type`` are left empty (JLD2 writes references to the type
parameters, which Julia needs to rebuild the types and no reader here looks at).

A state tree: a dict is a NamedTuple (field order kept), a tuple a Tuple (``()`` the empty
one, which is what ``Flux.state`` leaves of a function), a NumPy float array an ``Array``
(shape = Julia's size), a Python int an ``Int64``, a `numpy.float32` a ``Float32``, a Python
float a ``Float64``, a bool a ``Bool`` and None ``nothing``.

>>> import os, tempfile
>>> p = save_lenet_state(os.path.join(tempfile.mkdtemp(), "lenet_state.jld2"))
>>> from porting.flux import build as B
>>> m = B.load_jld2(p, B.Chain(B.Conv((5, 5), (1, 6), "relu"), B.MaxPool((2, 2)),
...     B.Conv((5, 5), (6, 16), "relu"), B.MaxPool((2, 2)), B.flatten,
...     B.Dense((256, 120), "relu"), B.Dense((120, 10)), "softmax"), input_size=(28, 28, 1))
>>> m.output_sizes[-1]
(10,)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["LENET_STRUCTURE", "lenet_state", "save_lenet_state", "save_state"]

_HEADER = b"HDF5-based Julia Data Format, version 0.2.0\x00 (Julia 1.10.5 64-bit LE)\x00"

# The structure file of the LeNet below (``porting convert lenet_state.jld2 --structure
# lenet.py``): Flux's constructors, mirrored by porting.flux.build.
LENET_STRUCTURE = """\
from porting.flux.build import Chain, Conv, Dense, MaxPool, flatten

model = Chain(
    Conv((5, 5), (1, 6), "relu"),
    MaxPool((2, 2)),
    Conv((5, 5), (6, 16), "relu"),
    MaxPool((2, 2)),
    flatten,
    Dense((256, 120), "relu"),
    Dense((120, 10)),
    "softmax",
)
"""


def lenet_state(seed: int = 0) -> dict:
    """``Flux.state`` (Flux 0.14) of `porting.examples.flux.lenet(seed)` (the same weights):
    a Conv's fields ``σ, weight, bias, stride, pad, dilation, groups``, a Dense's ``weight,
    bias, σ``; a MaxPool, ``flatten`` and ``softmax`` are ``()``."""
    from porting.examples import flux as fx

    def arr(d: dict) -> np.ndarray:
        return np.frombuffer(d["data"], "<f4").reshape(d["size"], order="F").copy()

    c1, _, c2, _, _, d1, d2, _ = fx.lenet(seed)["data"][0]["data"]

    def conv(c: dict) -> dict:
        w, b = arr(c["data"][1]), arr(c["data"][2])
        return {"σ": (), "weight": w, "bias": b, "stride": (1, 1), "pad": (0, 0, 0, 0),
                "dilation": (1, 1), "groups": 1}  # fmt: skip

    def dense(d: dict) -> dict:
        return {"weight": arr(d["data"][0]), "bias": arr(d["data"][1]), "σ": ()}

    return {"layers": (conv(c1), (), conv(c2), (), (), dense(d1), dense(d2), ())}


def save_lenet_state(path: str | os.PathLike, seed: int = 0) -> str:
    """Write ``jldsave(path; model_state = Flux.state(lenet))`` and return the path."""
    return save_state(path, {"model_state": lenet_state(seed)})


class _Writer:
    def __init__(self, f: Any) -> None:
        import h5py

        self.h5py = h5py
        self.f = f
        self.types = f.create_group("_types")
        self.committed: dict[Any, Any] = {}  # a type's signature -> its committed Datatype
        self.count = 0
        vlen_ref = h5py.vlen_dtype(h5py.ref_dtype)
        self.dt_numpy = np.dtype([("name", h5py.string_dtype("utf-8")), ("parameters", vlen_ref)])
        self.datatype = self._commit_tid(h5py.h5t.py_create(self.dt_numpy, logical=True))
        self._julia_type(self.datatype, "Core.DataType")

    # ------------------------------------------------------------------ types

    def _commit_tid(self, tid: Any) -> Any:
        self.count += 1
        name = f"{self.count:08d}".encode()
        tid = tid.copy()
        tid.commit(self.types.id, name)
        return self.types[name.decode()]

    def _julia_type(self, dt: Any, name: str) -> None:
        # In memory: a C string pointer for ``name`` and an empty hvl_t (length 0, no
        # pointer) for ``parameters``, written through HDF5's own conversions.
        import ctypes

        h5py = self.h5py
        h5t = h5py.h5t
        text = ctypes.create_string_buffer(name.encode("utf-8"))
        string = h5t.C_S1.copy()
        string.set_size(h5t.VARIABLE)
        string.set_cset(h5t.CSET_UTF8)
        mtype = h5t.create(h5t.COMPOUND, 24)
        mtype.insert(b"name", 0, string)
        mtype.insert(b"parameters", 8, h5t.vlen_create(h5t.STD_REF_OBJ))
        buf = np.zeros((), dtype=[("name", "<u8"), ("len", "<u8"), ("p", "<u8")])
        buf["name"] = ctypes.addressof(text)
        attr = h5py.h5a.create(
            dt.id, b"julia_type", self.datatype.id, h5py.h5s.create(h5py.h5s.SCALAR)
        )
        try:
            attr.write(buf, mtype=mtype)
        finally:
            attr.close()

    def ghost(self, name: str) -> Any:
        """The committed empty type of a value without data (``()``, ``nothing``)."""
        key = ("ghost", name)
        if key not in self.committed:
            dt = self._commit_tid(self.h5py.h5t.create(self.h5py.h5t.OPAQUE, 1))
            dt.attrs.create("empty", np.uint8(1))
            self._julia_type(dt, name)
            self.committed[key] = dt
        return self.committed[key]

    def layout(self, v: Any) -> tuple[Any, Any, Any]:
        """(the HDF5 type of a field holding `v` or None for no data, its NumPy format, the
        committed Datatype or None)."""
        h5t = self.h5py.h5t
        if v is None:
            return None, None, self.ghost("Core.Nothing")
        if isinstance(v, (bool, np.bool_)):
            return h5t.STD_B8LE, "u1", None
        if isinstance(v, (int, np.integer)):
            return h5t.STD_I64LE, "<i8", None
        if isinstance(v, np.float32):
            return h5t.IEEE_F32LE, "<f4", None
        if isinstance(v, float):
            return h5t.IEEE_F64LE, "<f8", None
        if isinstance(v, np.ndarray):
            return h5t.STD_REF_OBJ, "<u8", None
        if isinstance(v, (tuple, dict)):
            dt = self.compound(v)
            if dt.attrs.get("empty") is not None:
                return None, None, dt
            return dt.id, self.numpy_format(v), dt
        raise TypeError(f"no JLD2 encoding here for {type(v).__name__}")

    def _fields(self, v: tuple | dict) -> list[tuple[str, Any]]:
        return (
            [(str(i), x) for i, x in enumerate(v, 1)] if isinstance(v, tuple) else list(v.items())
        )

    def numpy_format(self, v: tuple | dict) -> np.dtype:
        names, formats = [], []
        for n, x in self._fields(v):
            _, fmt, _ = self.layout(x)
            if fmt is not None:
                names.append(n)
                formats.append(fmt)
        return np.dtype({"names": names, "formats": formats})  # packed, as the HDF5 compound

    def _signature(self, v: Any) -> Any:
        if isinstance(v, (tuple, dict)):
            kind = "nt" if isinstance(v, dict) else "tuple"
            return (kind, tuple((n, self._signature(x)) for n, x in self._fields(v)))
        if isinstance(v, np.ndarray):
            return ("array", v.dtype.str, v.ndim)
        return type(v).__name__

    def compound(self, v: tuple | dict) -> Any:
        key = self._signature(v)
        if key in self.committed:
            return self.committed[key]
        h5t = self.h5py.h5t
        if isinstance(v, dict):
            name = "Core.NamedTuple"
        elif len(v) > 1 and len({self._signature(x) for x in v}) == 1:
            name = "NTuple"
        else:
            name = "Tuple"
        members, field_names, field_types, nondefault = [], [], [], False
        for n, x in self._fields(v):
            tid, _, dt = self.layout(x)
            field_names.append(n)
            field_types.append(dt.ref if dt is not None else None)
            nondefault = nondefault or dt is not None
            if tid is not None:
                members.append((n, tid))
        if not members:  # no field holds data: the whole value is a ghost
            self.committed[key] = self.ghost(name)
            return self.committed[key]
        size = sum(t.get_size() for _, t in members)
        tid = h5t.create(h5t.COMPOUND, size)
        offset = 0
        for n, t in members:
            tid.insert(n.encode(), offset, t)
            offset += t.get_size()
        dt = self._commit_tid(tid)
        self._julia_type(dt, name)
        if nondefault:
            dt.attrs.create(
                "field_names", np.array(field_names, dtype=self.h5py.string_dtype("utf-8"))
            )
            refs = np.array([r if r is not None else self.h5py.Reference() for r in field_types])
            dt.attrs.create("field_types", refs.astype(self.h5py.ref_dtype))
        self.committed[key] = dt
        return dt

    # ------------------------------------------------------------------ values

    def array(self, a: np.ndarray) -> int:
        """An anonymous dataset holding `a` (Julia's size; HDF5 sees the dims reversed), as
        the address its object reference holds."""
        ds = self.f.create_dataset(None, data=np.ascontiguousarray(np.asarray(a).T))
        _keep_anonymous(ds.id.id)
        return int(self.h5py.h5o.get_info(ds.id).addr)

    def record(self, v: tuple | dict) -> np.ndarray:
        fmt = self.numpy_format(v)
        rec = np.zeros((), dtype=fmt)
        for n, x in self._fields(v):
            if n not in (fmt.names or ()):
                continue
            if isinstance(x, np.ndarray):
                rec[n] = self.array(x)
            elif isinstance(x, (tuple, dict)):
                rec[n] = self.record(x)
            else:
                rec[n] = x
        return rec

    def entry(self, name: str, v: Any) -> None:
        h5py = self.h5py
        if isinstance(v, np.ndarray):
            self.f.create_dataset(name, data=np.ascontiguousarray(v.T))
            return
        tid, _, dt = self.layout(v)
        if tid is None:  # a ghost at the top level: a dataset with a null dataspace
            space = h5py.h5s.create(h5py.h5s.NULL)
            h5py.h5d.create(self.f.id, name.encode(), dt.id, space)
            return
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        ds = h5py.h5d.create(self.f.id, name.encode(), tid, space)
        buf = self.record(v) if isinstance(v, (tuple, dict)) else np.array(v, dtype=_scalar(v))
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(buf), mtype=tid)


def _hdf5_library() -> Any:
    """The HDF5 library h5py runs on (loaded already), for the one call h5py does not wrap."""
    import ctypes

    import h5py

    paths = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = [ln.split()[-1] for ln in maps if "libhdf5" in ln and "hdf5_hl" not in ln]
    except OSError:
        pass
    here = os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs")
    if os.path.isdir(here):
        paths += [os.path.join(here, n) for n in os.listdir(here) if n.startswith("libhdf5-")]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.H5Oincr_refcount.argtypes = [ctypes.c_int64]
            return lib
        except (OSError, AttributeError):
            continue
    raise RuntimeError("the HDF5 library h5py uses was not found (H5Oincr_refcount)")


def _keep_anonymous(hid: int) -> None:
    """JLD2 writes an array as an object no group links to, reached by references only. The
    HDF5 library deletes such an object when it is closed unless its count is raised
    (``H5Oincr_refcount``, which h5py does not wrap)."""
    if _hdf5_library().H5Oincr_refcount(hid) < 0:
        raise RuntimeError("H5Oincr_refcount failed")


def _scalar(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "u1"
    if isinstance(v, (int, np.integer)):
        return "<i8"
    return "<f4" if isinstance(v, np.float32) else "<f8"


def save_state(path: str | os.PathLike, entries: dict[str, Any]) -> str:
    """Write `entries` (name -> state tree) as a JLD2 file and return its path."""
    import h5py

    p = str(os.fspath(path))
    with h5py.File(p, "w", userblock_size=512, libver=("v108", "latest")) as f:
        w = _Writer(f)
        for name, v in entries.items():
            w.entry(name, v)
    with open(p, "r+b") as fh:
        fh.write(_HEADER.ljust(512, b"\x00"))
    return p
