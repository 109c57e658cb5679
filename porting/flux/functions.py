"""Julia functions found in a Flux model: named ones by name, anonymous ones read as code.

A named function is an empty struct whose type is ``NNlib.#relu`` (``Base.#identity``,
``Flux.#flatten``...): `function_name` gives ``"NNlib.relu"``. An anonymous function or closure
(`porting.io.bsonjl.Anonymous`) is never run: `read_anonymous` finds its method's lowered code in
the decoded tree and `anonymous_layer` recognises the few one-line patterns Flux users wrote
before Flux had a layer for them (docs/flux.md#anonymous-functions):

- ``x -> reshape(x, :, size(x, 4))``: `Flux.flatten` (a `Mat` layer);
- ``x -> maxpool(x, (2, 2))``: `MaxPool((2, 2))` (NNlib's default stride is the window);
- ``x -> reshape(x, (7, 7, 64, :))``: a `Reshape` to one sample's size ``(7, 7, 64)``.

Anything else is refused with what it is, where it was written and what to use instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from porting.io.bsonjl import Anonymous, JuliaStruct, JuliaType, Symbol

__all__ = ["Code", "anonymous_layer", "function_name", "is_function", "read_anonymous"]

# NNlib / Flux / Base activation names -> porting.model activation names
ACTIVATIONS = {
    "identity": "identity",
    "relu": "relu",
    "σ": "sigm",
    "sigmoid": "sigm",
    "sigmoid_fast": "sigm",
    "tanh": "tanh",
    "tanh_fast": "tanh",
    "elu": "elu",
    "selu": "selu",
    "swish": "swish",
    # NNlib's gelu is the tanh approximation in every release (v0.9.28 on an alias of
    # gelu_tanh, whose type a file then names); gelu_erf (v0.9.28 on) is the exact one
    "gelu": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "gelu_sigmoid": "gelu_tanh",
    "gelu_erf": "gelu",
    "hardσ": "hardsigmoid",
    "hardsigmoid": "hardsigmoid",
    "hardswish": "hardswish",
    "softmax": "softmax",
    "logsoftmax": "logsoftmax",
}


def is_function(x: Any) -> bool:
    """Whether `x` is a named Julia function value (an empty struct of a ``#name`` type)."""
    return (
        isinstance(x, JuliaStruct)
        and isinstance(x.type, JuliaType)
        and x.type.short.startswith("#")
        and not x.data
    )


def function_name(x: Any) -> str | None:
    """``"NNlib.relu"`` for the value of ``NNlib.relu``; None for anything else."""
    if not is_function(x):
        return None
    module, _, short = x.type.name.rpartition(".")
    return f"{module}.{short[1:]}" if module else short[1:]


@dataclass
class Code:
    """An anonymous function's lowered code, as text lines, and where it was written."""

    name: str
    file: str
    line: int | None
    statements: list[str]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def text(self) -> str:
        return "; ".join(self.statements)


def _find(x: Any, pred, depth: int = 0):
    if depth > 12:
        return None
    if pred(x):
        return x
    items = x.data if isinstance(x, JuliaStruct) else x if isinstance(x, (list, tuple)) else ()
    for v in items:
        got = _find(v, pred, depth + 1)
        if got is not None:
            return got
    return None


def _short(x: Any) -> str:
    return x.name.rsplit(".", 1)[-1] if isinstance(x, JuliaStruct) else ""


def _show(x: Any, depth: int = 0) -> str:
    if depth > 8:
        return "..."
    n = _short(x)
    if n == "GlobalRef" and len(x.data) == 2:
        return str(x.data[1])
    if n == "SlotNumber" and x.data:
        return "x" if x.data[0] == 2 else f"_{x.data[0]}"
    if n == "SSAValue" and x.data:
        return f"%{x.data[0]}"
    if n == "ReturnNode" and x.data:
        return f"return {_show(x.data[0], depth + 1)}"
    if n == "Expr" and len(x.data) == 2 and isinstance(x.data[1], list):
        head, args = x.data
        shown = [_show(a, depth + 1) for a in args]
        if head == "call" and shown:
            return f"{shown[0]}({', '.join(shown[1:])})"
        if head == "return":
            return f"return {', '.join(shown)}"
        return f"{head}({', '.join(shown)})"
    if isinstance(x, Symbol):
        return f":{x}"
    if isinstance(x, JuliaStruct):
        return f"<{x.name}>"
    return repr(x)[:40]


def read_anonymous(a: Anonymous) -> Code:
    """The lowered code of `a`'s (first) method, as text: read, never run."""
    meth = _find(a.typename, lambda v: _short(v) == "Method")
    file, line, statements = "an unknown place", None, []
    if meth is not None:
        d = meth.data
        if len(d) > 3:
            file = str(d[2])
            line = d[3] if isinstance(d[3], int) else None
        info = _find(meth, lambda v: _short(v) == "CodeInfo")
        if info is not None and info.data and isinstance(info.data[0], list):
            statements = [_show(s) for s in info.data[0]]
    return Code(a.name, file, line, statements)


def anonymous_layer(code: Code) -> tuple[str, dict] | None:
    """A recognised pattern: ``("flatten", {})``, ``("maxpool", {"window": (2, 2)})`` or
    ``("reshape", {"size": (7, 7, 64)})``; None otherwise."""
    s = code.statements
    if s == ["size(x, 4)", "reshape(x, :, %1)", "return %2"]:
        return "flatten", {}
    if len(s) == 3 and s[1:] == ["maxpool(x, %1)", "return %2"] and s[0].startswith("tuple("):
        window = _ints(s[0][len("tuple(") : -1])
        if window:
            return "maxpool", {"window": window}
    if len(s) == 3 and s[1:] == ["reshape(x, %1)", "return %2"] and s[0].startswith("tuple("):
        parts = s[0][len("tuple(") : -1].split(", ")
        if parts and parts[-1] == ":":
            size = _ints(", ".join(parts[:-1]))
            if size:
                return "reshape", {"size": size}
    return None


def _ints(text: str) -> tuple[int, ...] | None:
    try:
        out = tuple(int(t) for t in text.split(", "))
    except ValueError:
        return None
    return out if out and all(v > 0 for v in out) else None
