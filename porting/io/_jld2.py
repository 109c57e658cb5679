"""JLD2 (``JLD2.save``, ``jldsave``, ``@save``, ``Knet.save``): HDF5 behind a 512-byte Julia
header, committed datatypes under ``/_types``, dims reversed as for MAT v7.3 (docs/files.md#jld2,
#hdf5-reversed).

Julia type names (``julia_type`` attributes of committed datatypes) are read from the file's
bytes by `porting.io._h5raw` (docs/files.md#jld2-type-names), never through h5py's low-level
attribute API (which crashed the process on a real file). Everything else goes through h5py's
high-level API and the shared `Walker` (links, references, budgets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.io import _h5raw
from porting.io._core import (
    MAX_DEPTH,
    Budget,
    complex_from_record,
    corrupt,
    julia_view,
    numeric,
    python_scalar,
    short,
)
from porting.io._hdf5 import Walker, open_h5

_DICT_TYPES = ("Base.Dict", "Base.IdDict", "Base.ImmutableDict", "Base.WeakKeyDict")
_TUPLE_TYPES = ("Core.Tuple", "Tuple", "NTuple", "Core.NTuple")

# Why whole structs fail and plain arrays work: docs/files.md#jld2-functions
ADVICE = (
    "JLD2 files holding whole Julia structs (for example a layer with a function-typed field "
    "such as f=relu) cannot be read outside Julia. Export plain arrays instead, in Julia: "
    'jldsave("w.jld2"; w1=Array(value(model.layers[1].w)), b1=Array(value(model.layers[1].b)), '
    '...) (or with FileIO: save("w.jld2", Dict("w1" => Array(value(model.layers[1].w)), ...))), '
    'or porting\'s Julia exporter: PortingKnet.export_model("model", model) (julia/ folder; '
    "writes model.npz + model.json), "
    'or NPZ.jl: npzwrite("w.npz", Dict("w1" => Array(value(model.layers[1].w)), ...))'
)


def load_jld2(p: Path, budget: Budget) -> dict[str, Any]:
    f = open_h5(p, "jld2")
    try:
        return _Reader(f, p, budget).group(f, "", 0)
    except PortingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise corrupt(p, "jld2", e) from None
    finally:
        f.close()


def load_jld2_entries(p: Path, budget: Budget) -> dict[str, Any]:
    """Each top-level entry read on its own; one that cannot be read is its `PortingError`."""
    f = open_h5(p, "jld2")
    try:
        reader = _Reader(f, p, budget)
        out: dict[str, Any] = {}
        for k in reader.w.keys(f):
            if k == "_types":
                continue
            try:
                out[k] = reader.object(reader.w.child(f, k, k), k, 1)
            except PortingError as e:
                out[k] = e
            except Exception as e:  # noqa: BLE001 - one entry's failure is reported, not raised
                out[k] = reader.unreadable(k, None, e)
        return out
    finally:
        f.close()


def function_name(jtype: str) -> str:
    module, _, fname = jtype.rpartition(".")
    fname = fname.lstrip("#")
    return f"{module}.{fname}" if module else fname


def ghost(jtype: str | None) -> Any:
    """The value of a type without data, by its JLD2 type name: ``nothing``, ``()`` (the
    empty Tuple, what ``Flux.state`` leaves of a function), the empty NamedTuple, else a
    function (docs/flux.md#flux-state-jld2)."""
    if jtype in (None, "Core.Nothing"):
        return None
    if jtype in ("Tuple", "Core.Tuple"):
        return ()
    if jtype == "Core.NamedTuple":
        return {}
    return function_name(jtype)


def decode(x) -> str:
    if isinstance(x, np.ndarray):
        x = x[()] if x.ndim == 0 else x.ravel()[0]
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, np.bytes_)) else str(x)


def type_names(path: Path) -> dict[str, str]:
    """Every committed datatype under ``/_types`` to its Julia type name, read from the bytes.

    A diagnostic view of what a JLD2 file holds (``{"00000001": "Core.DataType", ...}``)."""
    f = open_h5(path, "jld2")
    try:
        r = _Reader(f, path, Budget(path))
        types = f.get("_types")
        if types is None:
            return {}
        return {k: r.type_name(types[k].id) or "" for k in types.keys()}
    finally:
        f.close()


class _Reader:
    def __init__(self, f, p: Path, budget: Budget) -> None:
        self.w = Walker(f, p, "jld2", budget)
        self.p = p
        self.names: dict[int, str | None] = {}
        self.fields: dict[int, dict[str, tuple[str | None, Any]]] = {}

    # ------------------------------------------------------------------ type names

    def type_name(self, tid) -> str | None:
        """The Julia type name JLD2 recorded on a committed datatype (``"Base.Dict"``)."""
        try:
            if not tid.committed():
                return None
            addr = int(self.w.h5py.h5o.get_info(tid).addr)
        except Exception:  # noqa: BLE001 - a type name is a hint; missing it is not an error
            return None
        if addr not in self.names:
            self.names[addr] = _h5raw.string_attribute(self.p, addr, "julia_type") or None
        return self.names[addr]

    def unreadable(self, name: str, jtype: str | None, e: BaseException) -> PortingError:
        what = f"Julia type {jtype}" if jtype else "a Julia object"
        return PortingError(
            f"{self.p}: {name!r} ({what}) cannot be read with h5py ({short(e)}). {ADVICE}"
        )

    # ------------------------------------------------------------------ objects

    def group(self, g, prefix: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.w.keys(g):
            if k == "_types" and not prefix:
                continue
            name = f"{prefix}{k}"
            out[k] = self.object(self.w.child(g, k, name), name, depth + 1)
        return out

    def object(self, obj, name: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise PortingError(
                f"{self.p}: {name!r} nests deeper than {MAX_DEPTH} levels (a self-referencing "
                f"Julia object?). {ADVICE}"
            )
        return self.w.once(obj, name, lambda: self._object(obj, name, depth))

    def _object(self, obj, name: str, depth: int) -> Any:
        h5py = self.w.h5py
        if isinstance(obj, h5py.Group):
            return self.group(obj, name + "/", depth)
        if isinstance(obj, h5py.Datatype):  # a reference to a type (a type parameter)
            return self.type_name(obj.id) or "DataType"
        tid = obj.id.get_type()
        jtype = self.type_name(tid)
        try:
            if obj.shape is None:  # HDF5 null dataspace: a Julia singleton (nothing, a function)
                if "dimensions" in obj.attrs:
                    return None
                return ghost(jtype)
            data = self.w.data(obj, name)
        except PortingError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self.unreadable(name, jtype, e) from None
        value = self.convert(data, tid, jtype, obj, name, depth)
        if jtype in _DICT_TYPES or (jtype and jtype.endswith("Dict") and isinstance(value, list)):
            return self.pairs_to_dict(value, name, jtype)
        return value

    def convert(self, data, tid, jtype, obj, name: str, depth: int) -> Any:
        from h5py import h5t

        cls = tid.get_class()
        if isinstance(data, np.void) and data.dtype.names:  # a scalar compound: one record
            return self.record(data, tid, jtype, obj, name, depth)
        if isinstance(data, np.ndarray) and data.dtype.names:
            if data.ndim == 0:
                return self.record(data[()], tid, jtype, obj, name, depth)
            names = set(data.dtype.names)
            if names == {"re", "im"}:  # Array{Complex{T}}
                return numeric(complex_from_record(data, "re", "im"), self.p, name).T
            flat = data.ravel(order="C")  # Julia's linear order
            self.w.budget.visit(name, flat.size)  # each record becomes a Python value
            member_types = self.member_types(tid) if jtype else {}
            return [
                self.record(r, tid, jtype, obj, f"{name}[{i}]", depth, member_types)
                for i, r in enumerate(flat, start=1)
            ]
        if cls == h5t.REFERENCE:
            if isinstance(data, np.ndarray):
                self.w.budget.visit(name, data.size)
                return [
                    self.member(r, f"{name}[{i}]", depth)
                    for i, r in enumerate(data.ravel(order="C"), start=1)
                ]
            return self.member(data, name, depth)
        if cls == h5t.STRING or isinstance(data, (bytes, str)):
            if isinstance(data, np.ndarray) and data.ndim > 0:  # Array{String}
                return [decode(x) for x in data.ravel(order="C")]
            return decode(data)
        if cls == h5t.BITFIELD or jtype == "Core.Bool":
            data = np.asarray(data).astype(bool)
        if cls == h5t.OPAQUE:
            raise self.unreadable(name, jtype, TypeError("opaque Julia bits"))
        a = np.asarray(data)
        if a.dtype.kind == "O":  # variable-length sequences
            self.w.budget.visit(name, a.size)
            return [self.member(x, f"{name}[{i}]", depth) for i, x in enumerate(a.ravel(), 1)]
        a = numeric(a, self.p, name)
        if "dimensions" in obj.attrs:  # JLD2's zero-dimensional Array{T,0}
            dims = tuple(int(d) for d in np.asarray(obj.attrs["dimensions"]).ravel())[::-1]
            if int(np.prod(dims, dtype=object)) != a.size:
                raise PortingError(
                    f"{self.p}: {name!r}: 'dimensions' {dims} do not match its {a.size} values"
                )
            return a.reshape(dims, order="F") if dims else a.reshape(())
        return julia_view(a)

    def member_types(self, tid) -> dict[str, str | None]:
        """Every field of a JLD2 struct type, in order, to its Julia type name where JLD2
        recorded one (``field_names`` / ``field_types`` attributes, written when a field's type
        is committed or has no data at all, like ``f::typeof(relu)``). Empty when JLD2 wrote
        neither."""
        return {n: name for n, (name, _) in self.members(tid).items()}

    def members(self, tid) -> dict[str, tuple[str | None, Any]]:
        """`member_types` with each field's committed type (None where not committed): a
        compound's member is a copy that HDF5 no longer ties to the committed type, which
        only ``field_types`` names; a nested struct's own fields are read from it."""
        out: dict[str, tuple[str | None, Any]] = {}
        try:
            if not tid.committed():
                return out
            h5py = self.w.h5py
            addr = int(h5py.h5o.get_info(tid).addr)
            if addr in self.fields:
                return self.fields[addr]
            dt = h5py.Datatype(tid)
            if "field_types" not in dt.attrs or "field_names" not in dt.attrs:
                return out
            names = [decode(n) for n in np.asarray(dt.attrs["field_names"]).ravel()]
            refs = np.asarray(dt.attrs["field_types"]).ravel()
            for n, r in zip(names, refs, strict=False):
                target = self.w.f[r] if r else None
                if isinstance(target, h5py.Datatype):
                    out[n] = (self.type_name(target.id), target.id)
                else:
                    out[n] = (None, None)
            self.fields[addr] = out
        except Exception:  # noqa: BLE001 - hints only
            return {}
        return out

    def record(
        self, rec, tid, jtype, obj, name: str, depth: int, member_types: dict | None = None
    ) -> Any:
        names = list(rec.dtype.names or ())
        if set(names) == {"re", "im"} or (jtype or "").startswith("Base.Complex"):
            return complex(rec["re"], rec["im"])
        if names == ["name", "parameters"]:  # a Julia DataType value stored inline
            return decode(rec["name"])
        members = self.members(tid) if jtype else {}
        if member_types is None:
            member_types = {n: t for n, (t, _) in members.items()}
        values = {}
        for i, n in enumerate(names):
            try:
                mtid = members.get(n, (None, None))[1] or tid.get_member_type(i)
            except Exception:  # noqa: BLE001
                mtid = None
            values[n] = self.field(rec[n], mtid, member_types.get(n), obj, f"{name}.{n}", depth)
        for n, jt in member_types.items():  # fields with no data: singletons such as relu
            if n not in values:
                values[n] = ghost(jt)
        order = list(member_types) or names
        if jtype in _TUPLE_TYPES or (order and all(n.isdigit() for n in order)):
            return tuple(values[n] for n in sorted(order, key=int))
        if (jtype or "").endswith(".Pair") or order == ["first", "second"]:
            return (values.get("first"), values.get("second"))
        return {n: values[n] for n in order if n in values}

    def field(self, v, mtid, jtype, obj, name: str, depth: int) -> Any:
        from h5py import h5t

        if isinstance(v, np.void) and v.dtype.names:
            return self.record(v, mtid, jtype, obj, name, depth)
        if mtid is not None and mtid.get_class() == h5t.BITFIELD:
            return bool(v)
        if mtid is not None and mtid.get_class() == h5t.OPAQUE:
            return None  # bits of a type h5py cannot interpret; a ghost field
        return self.member(v, name, depth)

    def member(self, v, name: str, depth: int) -> Any:
        h5py = self.w.h5py
        if isinstance(v, h5py.Reference):
            if not v:
                return None  # an undefined (#undef) field or a null reference
            return self.object(self.w.deref(v, name), name, depth + 1)
        if isinstance(v, (bytes, np.bytes_, str)):
            return decode(v)
        if isinstance(v, np.ndarray):
            if v.dtype.kind == "O":
                return [self.member(x, f"{name}[{i}]", depth) for i, x in enumerate(v.ravel(), 1)]
            return julia_view(numeric(v, self.p, name) if v.dtype.kind in "biufc" else v)
        return python_scalar(v)

    def pairs_to_dict(self, value: Any, name: str, jtype: str | None) -> dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, list) and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            out = {}
            for k, v in value:
                key = k if isinstance(k, (str, int, float, bool, tuple)) or k is None else str(k)
                out[key] = v
            return out
        raise PortingError(
            f"{self.p}: {name!r} is a {jtype} but its stored pairs could not be decoded "
            f"(got {type(value).__name__}). {ADVICE}"
        )
