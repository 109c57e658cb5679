"""BSON.jl files (``BSON.@save``, ``bson(path, ...)``): decoded into a plain tree, nothing run.

The bytes are ordinary BSON, read with pymongo's ``bson`` module. BSON.jl then marks Julia
values with a ``tag`` field (docs/flux.md#bson-files); this module turns each tagged document into a
plain Python value and never evaluates anything the file holds:

- ``array`` -> a Julia-indexed NumPy array (Fortran order, shape = Julia's ``size``) for the
  numeric element types; its byte length is checked against ``prod(size) * sizeof(eltype)``;
  an array of non-bits elements -> a list in Julia's linear order (its length checked too);
- ``struct`` -> `JuliaStruct` (its type and its fields in declaration order; BSON.jl stores no
  field names); a primitive struct (``Float32``, ``Int32``...) -> a Python number;
- ``datatype`` -> `JuliaType`; ``unionall`` -> `JuliaType` named after its body;
- ``tuple`` / ``svec`` -> tuple; ``symbol`` -> `Symbol`; ``ref`` -> `JuliaRef` (a module
  path, never resolved);
- ``jl_anonymous`` (the type of an anonymous function or closure) -> `Anonymous`: its name and
  the raw decoded tree of its ``TypeName`` (which holds the method's lowered code, to read and
  report, never to run);
- ``backref`` -> the shared object of the top-level ``_backrefs`` list (1-based): decoded once
  and shared (a DAG stays a DAG), a reference cycle refused, except inside the code of an
  anonymous function (a ``TypeName`` points back at itself), where it becomes `Cycle`;
- a document without a tag (a ``Dict{Symbol}``) -> dict.

Unknown tags, array element types outside the numeric table, sizes that disagree with the
data, over-deep nesting and the bytes/objects budgets raise `PortingError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from porting import files
from porting.errors import PortingError
from porting.io._core import MAX_DEPTH, Budget, corrupt, file_size, missing_dependency

__all__ = [
    "Anonymous",
    "Cycle",
    "JuliaRef",
    "JuliaStruct",
    "JuliaType",
    "Symbol",
    "decode",
    "load_bson",
]

# Julia's bits element types -> little-endian NumPy dtypes (BSON.jl reinterprets the array's
# memory as UInt8: the machine's order, little-endian on every platform Julia runs on).
ELTYPES = {
    "Core.Bool": "|b1",
    "Core.Int8": "|i1",
    "Core.UInt8": "|u1",
    "Core.Int16": "<i2",
    "Core.UInt16": "<u2",
    "Core.Int32": "<i4",
    "Core.UInt32": "<u4",
    "Core.Int64": "<i8",
    "Core.UInt64": "<u8",
    "Core.Float16": "<f2",
    "Core.Float32": "<f4",
    "Core.Float64": "<f8",
}
_COMPLEX = {"Core.Float32": "<c8", "Core.Float64": "<c16"}
TAGS = (
    "array",
    "struct",
    "datatype",
    "unionall",
    "tuple",
    "svec",
    "symbol",
    "ref",
    "backref",
    "jl_anonymous",
    "jl_bottom_type",
)
MAX_DIMS = 32


class Symbol(str):
    """A Julia `Symbol` (``:relu``)."""

    def __repr__(self) -> str:
        return f":{str.__str__(self)}"


@dataclass(frozen=True)
class JuliaType:
    """A Julia datatype: `name` its path without a leading ``Main`` before ``Core``/``Base``
    (``"Flux.Dense"``, ``"Core.Float32"``), `params` its type parameters (decoded values)."""

    name: str
    params: tuple = ()

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}{{{', '.join(map(_type_text, self.params))}}}"


@dataclass(frozen=True)
class JuliaRef:
    """A ``ref`` tag: a module or global by path (``("Main", "Core")``); never resolved."""

    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.path)


@dataclass(eq=False)
class Anonymous:
    """The type of an anonymous function or closure (``jl_anonymous``): `name` Julia's
    generated name (``"#3#4"``), `typename` the decoded ``TypeName`` (its methods' lowered code
    is in there, as `JuliaStruct` values of ``Core.Expr`` and others), `params` the type's
    parameters (a closure's captured variables' types)."""

    name: str
    typename: Any
    params: tuple = ()

    def __str__(self) -> str:
        return f"anonymous function {self.name}"


@dataclass(frozen=True)
class Cycle:
    """Where the code of an anonymous function points back at an object being decoded."""

    ref: int


@dataclass(eq=False)
class JuliaStruct:
    """A Julia struct: its `type` and its field values in declaration order."""

    type: Any  # JuliaType, Anonymous (a function value), or what the file had
    data: tuple = field(default_factory=tuple)

    @property
    def name(self) -> str:
        t = self.type
        return t.name if isinstance(t, (JuliaType, Anonymous)) else str(t)

    def __repr__(self) -> str:
        return f"JuliaStruct({self.name}, {len(self.data)} fields)"


def _type_text(x: Any) -> str:
    if isinstance(x, (JuliaType, JuliaRef, Anonymous)):
        return str(x)
    if isinstance(x, JuliaStruct):
        return f"<{x.name}>"
    return repr(x)[:40]


def _type_name(parts: Any, where: str, p: Path) -> str:
    if not isinstance(parts, list) or not parts or not all(isinstance(s, str) for s in parts):
        raise PortingError(
            f"{p}: {where}: a datatype name {str(parts)[:80]!r}; expected a list of names"
        )
    names = list(parts)
    if len(names) > 1 and names[0] == "Main" and names[1] in ("Core", "Base"):
        names = names[1:]
    return ".".join(names)


# --------------------------------------------------------------------------------------------


def load_bson(p: Path, budget: Budget) -> dict[str, Any]:
    """The top-level entries of a BSON.jl file, decoded (see the module docstring)."""
    try:
        import bson
    except ImportError:
        raise missing_dependency("pymongo", "bson") from None
    size = file_size(p)
    budget.take("the file", (size,), 1, "read whole before decoding")
    budget.used -= size  # a bound on what decoding may hold; the arrays are charged below
    with files.open_input(p) as fh:
        raw = fh.read()
    if len(raw) < 5 or int.from_bytes(raw[:4], "little") != len(raw):
        n = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else None
        raise corrupt(p, "bson", f"the document claims {n} bytes but the file has {len(raw)}")
    try:
        doc = bson.decode(raw)
    except Exception as e:  # bson.errors.InvalidBSON and whatever a corrupt file provokes
        raise corrupt(p, "bson", e) from None
    return decode(doc, p, budget)


def decode(doc: dict, p: Path, budget: Budget) -> dict[str, Any]:
    """Decode a raw BSON.jl document (as pymongo returns it) into the plain tree."""
    refs = doc.get("_backrefs", [])
    if not isinstance(refs, list):
        raise PortingError(f"{p}: _backrefs is a {type(refs).__name__}; expected a list")
    d = _Decoder(p, budget, refs)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "_backrefs":
            continue
        out[key] = d.value(value, key, 0)
    return out


_PENDING = object()


class _Decoder:
    def __init__(self, p: Path, budget: Budget, refs: list) -> None:
        self.p = p
        self.budget = budget
        self.refs = refs
        self.done: dict[int, Any] = {}
        self.code = 0  # > 0 while inside an anonymous function's TypeName

    def fail(self, where: str, what: str) -> PortingError:
        return PortingError(f"{self.p}: at {where}: {what}")

    def value(self, x: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(
                where, f"nested deeper than {MAX_DEPTH} levels; expected a model's few levels"
            )
        self.budget.visit(where)
        if isinstance(x, dict):
            tag = x.get("tag")
            if tag is None:
                return {str(k): self.value(v, f"{where}.{k}", depth + 1) for k, v in x.items()}
            if not isinstance(tag, str) or tag not in TAGS:
                raise self.fail(
                    where,
                    f"unknown BSON.jl tag {str(tag)[:40]!r}; expected one of {', '.join(TAGS)}",
                )
            return getattr(self, "_" + tag)(x, where, depth)
        if isinstance(x, list):
            return [self.value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x, 1)]
        if x is None or isinstance(x, (bool, int, float, str, bytes)):
            return x
        raise self.fail(where, f"a BSON {type(x).__name__} value; BSON.jl never writes one")

    def _get(self, x: dict, key: str, where: str, types: tuple) -> Any:
        if key not in x:
            raise self.fail(where, f"a {x.get('tag')!r} document without {key!r}")
        v = x[key]
        if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
            raise self.fail(
                where,
                f"{x.get('tag')!r} field {key!r} is a {type(v).__name__}; expected "
                f"{' or '.join(t.__name__ for t in types)}",
            )
        return v

    # ---- tags (BSON.jl src/extensions.jl, src/anonymous.jl, src/read.jl)

    def _backref(self, x: dict, where: str, depth: int) -> Any:
        i = self._get(x, "ref", where, (int,))
        if not 1 <= i <= len(self.refs):
            raise self.fail(where, f"backref {i}; the file has {len(self.refs)} shared objects")
        got = self.done.get(i)
        if got is _PENDING:
            if self.code:
                return Cycle(i)
            raise self.fail(
                where,
                f"backref {i} refers to an object that contains itself (a reference cycle); "
                "a model's layers never do",
            )
        if got is not None:
            return got
        self.done[i] = _PENDING
        v = self.value(self.refs[i - 1], f"_backrefs[{i}]", depth + 1)
        self.done[i] = v
        return v

    def _symbol(self, x: dict, where: str, depth: int) -> Symbol:
        return Symbol(self._get(x, "name", where, (str,)))

    def _tuple(self, x: dict, where: str, depth: int) -> tuple:
        data = self._get(x, "data", where, (list,))
        return tuple(self.value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(data, 1))

    _svec = _tuple

    def _ref(self, x: dict, where: str, depth: int) -> JuliaRef:
        path = self._get(x, "path", where, (list,))
        if not all(isinstance(s, str) for s in path):
            raise self.fail(where, "a ref whose path is not a list of names")
        return JuliaRef(tuple(path))

    def _jl_bottom_type(self, x: dict, where: str, depth: int) -> JuliaType:
        return JuliaType("Union{}")

    def _datatype(self, x: dict, where: str, depth: int) -> JuliaType:
        name = _type_name(self._get(x, "name", where, (list,)), where, self.p)
        params = self._get(x, "params", where, (list, dict))
        if isinstance(params, dict):  # older writers: the parameters as one Vector{Any/Int}
            got = self.value(params, f"{where}{{}}", depth + 1)
            items = tuple(got.tolist() if isinstance(got, np.ndarray) else got)
            return JuliaType(name, items if isinstance(got, (list, np.ndarray)) else (got,))
        return JuliaType(
            name, tuple(self.value(v, f"{where}{{{i}}}", depth + 1) for i, v in enumerate(params))
        )

    def _unionall(self, x: dict, where: str, depth: int) -> JuliaType:
        body = self.value(self._get(x, "body", where, (dict,)), f"{where}.body", depth + 1)
        return body if isinstance(body, JuliaType) else JuliaType("UnionAll")

    def _jl_anonymous(self, x: dict, where: str, depth: int) -> Anonymous:
        self.code += 1
        try:
            tn = self.value(self._get(x, "typename", where, (dict,)), where, depth + 1)
            params = self._get(x, "params", where, (list,))
            ps = tuple(self.value(v, where, depth + 1) for v in params)
        finally:
            self.code -= 1
        name = "#?"
        if isinstance(tn, JuliaStruct) and len(tn.data) > 1 and isinstance(tn.data[1], Symbol):
            name = str(tn.data[1])
        return Anonymous(name, tn, ps)

    def _struct(self, x: dict, where: str, depth: int) -> Any:
        t = self.value(self._get(x, "type", where, (dict,)), f"{where}.type", depth + 1)
        data = self._get(x, "data", where, (list, bytes))
        if isinstance(data, bytes):  # a primitive type: its bits
            return self._primitive(t, data, where)
        fields = tuple(self.value(v, f"{where}.{i}", depth + 1) for i, v in enumerate(data, 1))
        return JuliaStruct(t, fields)

    def _primitive(self, t: Any, data: bytes, where: str) -> Any:
        name = t.name if isinstance(t, JuliaType) else None
        dt = ELTYPES.get(name or "")
        if dt is not None and np.dtype(dt).itemsize == len(data):
            return np.frombuffer(data, dt)[0].item()
        # a pointer, a Char or another primitive: its bits, kept as bytes
        return JuliaStruct(t, (bytes(data),))

    def _array(self, x: dict, where: str, depth: int) -> Any:
        t = self.value(self._get(x, "type", where, (dict,)), f"{where}.type", depth + 1)
        size = self._get(x, "size", where, (list,))
        if len(size) > MAX_DIMS or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size
        ):
            raise self.fail(
                where, f"array size {str(size)[:80]}; expected up to {MAX_DIMS} counts >= 0"
            )
        shape = tuple(int(s) for s in size)
        n = math.prod(shape)
        data = self._get(x, "data", where, (bytes, list))
        if isinstance(data, list):  # non-bits elements, stored one by one
            if len(data) != n:
                raise self.fail(
                    where, f"array of size {shape} holds {len(data)} elements; expected {n}"
                )
            self.budget.visit(where, len(data))
            return [self.value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(data, 1)]
        dt = self._eltype(t, where)
        self.budget.take(where, shape, dt.itemsize, f"Array{{{_type_text(t)}}}")
        if len(data) != n * dt.itemsize:
            raise self.fail(
                where,
                f"array of size {shape} and element type {_type_text(t)} ({dt.itemsize} bytes "
                f"each) needs {n * dt.itemsize} bytes of data; the file has {len(data)}",
            )
        a = np.frombuffer(data, dt).reshape(shape, order="F")
        return a.astype(dt.newbyteorder("="), copy=True, order="F")

    def _eltype(self, t: Any, where: str) -> np.dtype:
        if isinstance(t, JuliaType):
            if t.name in ELTYPES:
                return np.dtype(ELTYPES[t.name])
            if t.name == "Base.Complex" and len(t.params) == 1:
                inner = t.params[0]
                if isinstance(inner, JuliaType) and inner.name in _COMPLEX:
                    return np.dtype(_COMPLEX[inner.name])
        raise self.fail(
            where,
            f"an array of element type {_type_text(t)}; expected numbers "
            f"({', '.join(n.split('.')[1] for n in ELTYPES)}, ComplexF32/64)",
        )
