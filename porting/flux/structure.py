"""Structure files for Flux models: what a file does not say about a model, written in Python.

Two cases (docs/flux.md#structure-files):

- A JLD2 file of ``Flux.state(model)`` holds arrays and numbers, no layer types. The
  structure file builds the model with `porting.flux.build` (Flux's constructors mirrored)
  and names it ``model``; the state is loaded into it as ``Flux.loadmodel!`` does.
- A BSON.jl file holding a user struct (``struct SimpleUNet; down1; ...; end``) holds its
  fields, but not its forward (the struct's call method is Julia code). The structure file
  names the struct's fields in declaration order and writes the forward with them; names the
  output ``model``::

      from porting.flux.structure import Struct, cat
      unet = Struct("SimpleUNet", "down1", "down2", "mid", "up2", "up1", "final")
      h1 = unet.down1(unet.input)
      up = unet.up1(cat(unet.up2(unet.mid(unet.down2(h1))), h1, dims=3))
      model = unet.final(up)

  Each field is converted as the Flux layer or Chain it holds; ``cat(a, b, dims=3)`` joins
  channels (2-D images), ``a + b`` adds. Nothing else is computed, so a forward with other
  steps (a reshape, a crop, a second input) is written for what it is or refused.

A structure file is the user's own Python code, run as such (it is not read from the model
file); its errors are reported with the file's name.
"""

from __future__ import annotations

import os
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from porting.errors import PortingError

__all__ = ["Node", "Struct", "cat", "load_structured", "read_structure", "state_hint"]


@dataclass(eq=False)
class Node:
    """A value in a user struct's forward: the input, a field applied to a value, or a join."""

    op: str  # "input", "field", "cat3", "add"
    struct: Struct | None = None
    name: str = ""
    args: tuple[Node, ...] = ()

    def __add__(self, other: Node) -> Node:
        _check_nodes((self, other), "+")
        return Node("add", self.struct, "+", (self, other))


def cat(*xs: Node, dims: int) -> Node:
    """``cat(xs...; dims = 3)``: the channels of 2-D images (WHCN), joined in order."""
    if dims != 3:
        raise PortingError(
            f"cat(...; dims={dims!r}): only dims=3 (the channels of 2-D images) is converted"
        )
    if len(xs) < 2:
        raise PortingError("cat(...; dims=3) needs two or more values")
    _check_nodes(xs, "cat")
    return Node("cat3", xs[0].struct, "cat", tuple(xs))


def _check_nodes(xs: tuple[Any, ...], what: str) -> None:
    for x in xs:
        if not isinstance(x, Node):
            raise PortingError(
                f"{what}: a {type(x).__name__}; expected values of the forward (the struct's "
                "input, or a field applied to one)"
            )


class Struct:
    """A user struct: its type name (``SimpleUNet`` or ``Main.SimpleUNet``) and its fields in
    declaration order. ``s.input`` is what the forward's first field reads; ``s.name(x)``
    applies the field ``name`` to the value ``x``."""

    def __init__(self, type_name: str, *fields: str):
        if not isinstance(type_name, str) or not type_name:
            raise PortingError(f"Struct: type name {type_name!r}; expected e.g. 'SimpleUNet'")
        bad = [f for f in fields if not isinstance(f, str) or not f.isidentifier()]
        if not fields or bad or len(set(fields)) != len(fields):
            raise PortingError(
                f"Struct({type_name!r}, ...): fields {fields!r}; expected the struct's field "
                "names, each once, in declaration order"
            )
        self.type_name = type_name
        self.fields: tuple[str, ...] = tuple(fields)
        self.input = Node("input", self, "input")

    def __repr__(self) -> str:
        return f"Struct({self.type_name!r}, {', '.join(map(repr, self.fields))})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.__dict__.get("fields", ()):
            raise AttributeError(
                f"{self.__dict__.get('type_name', 'Struct')} has no field {name!r} "
                f"(fields: {', '.join(self.__dict__.get('fields', ()))})"
            )

        def apply(x: Node) -> Node:
            _check_nodes((x,), f"{self.type_name}.{name}")
            return Node("field", self, name, (x,))

        return apply


def read_structure(path: str | os.PathLike) -> Any:
    """Run the structure file and return its ``model``: a `porting.flux.build.Chain` or the
    output `Node` of a user struct's forward."""
    p = Path(os.fspath(path))
    if p.suffix.lower() != ".py":
        raise PortingError(f"--structure {p}: a Flux structure file is Python (.py)")
    if not p.is_file():
        raise PortingError(f"--structure {p}: no such file")
    try:
        ns = runpy.run_path(str(p), run_name="porting_structure")
    except PortingError as e:
        raise PortingError(f"--structure {p}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's code: reported with its file
        raise PortingError(f"--structure {p}: running it failed: {type(e).__name__}: {e}") from None
    from porting.flux.build import Chain

    model = ns.get("model")
    if not isinstance(model, (Chain, Node)):
        raise PortingError(
            f"--structure {p}: defines no `model` (got {type(model).__name__}); expected "
            "`model = Chain(...)` (porting.flux.build, for a Flux.state JLD2 file) or the "
            "output of a user struct's forward (porting.flux.structure.Struct, for a BSON file)"
        )
    return model


def wire(node: Node, value: Any, path: str, out: list) -> None:
    """Append to `out` (a list of `Found`) the layers of the forward that ends in `node`, the
    struct's fields read from `value` (the struct as read from the file)."""
    from porting.flux.recognise import _merge, _rewire, layers_of
    from porting.io.bsonjl import JuliaStruct

    s = node.struct
    if s is None:
        raise PortingError(f"{path}: the structure's model is not a value of a Struct's forward")
    if not isinstance(value, JuliaStruct):
        raise PortingError(f"{path}: a {type(value).__name__}; expected the struct {s.type_name}")
    got = value.name
    if got != s.type_name and got.rsplit(".", 1)[-1] != s.type_name.rsplit(".", 1)[-1]:
        raise PortingError(
            f"{path}: the file holds a {got}, the structure file describes {s.type_name}"
        )
    if len(value.data) != len(s.fields):
        raise PortingError(
            f"{path}: {got} has {len(value.data)} fields in the file, the structure file names "
            f"{len(s.fields)} ({', '.join(s.fields)})"
        )
    done: dict[int, int] = {}  # id(node) -> index of its last layer in `out` (-1 the input)
    used: set[str] = set()

    def visit(n: Node) -> int:
        if id(n) in done:
            return done[id(n)]
        if n.struct is not s:
            raise PortingError(f"{path}: the forward mixes values of two Structs")
        if n.op == "input":
            done[id(n)] = -1
            return -1
        srcs = tuple(visit(a) for a in n.args)
        if n.op == "field":
            if n.name in used:
                raise PortingError(
                    f"{path}.{n.name}: applied twice in the forward; a field's layers are "
                    "converted once (write the forward with each field once)"
                )
            used.add(n.name)
            src = srcs[0]
            start = len(out)
            before = start - 1
            layers_of(value.data[s.fields.index(n.name)], f"{path}.{n.name}", out)
            if len(out) == start:  # identity
                done[id(n)] = src
                return src
            if before != src:  # the field reads `src`, not the layer converted before it
                if out[start].reads is None and out[start].sources is None:
                    out[start].reads = src
                _rewire(out[start:], before, src)
            done[id(n)] = len(out) - 1
            return done[id(n)]
        what = "cat(...; dims=3)" if n.op == "cat3" else "+"
        out.append(_merge(n.op, srcs, path, f"{what} in the forward of {s.type_name}"))
        done[id(n)] = len(out) - 1
        return done[id(n)]

    visit(node)
    if not out:
        raise PortingError(f"{path}: the forward applies no field")


def load_structured(
    path: str | os.PathLike,
    structure: Any,
    key: str | None = None,
    input_size=None,
    flux_version=None,
) -> Any:  # porting.flux.load.FluxModel
    """A model whose structure the file does not hold, from a structure file's ``model``
    (`porting.flux.structure.read_structure`): a `porting.flux.build.Chain` for a JLD2 file
    of ``Flux.state`` (entry `key`, default ``model_state``), or the output of a user
    struct's forward (`porting.flux.structure.Struct`) for a BSON.jl file (entry `key`).
    `flux_version`: the Flux that saved it (a LayerNorm needs it: porting.flux.norms)."""
    from porting import io
    from porting.flux.build import Chain, state_layers
    from porting.flux.fields import GPU_HINT, find_gpu
    from porting.flux.load import (
        SOURCE,
        STATE_SOURCE,
        FluxModel,
        _assemble,
        _pick_key,
        read,
        select,
    )

    p = str(os.fspath(path))
    if isinstance(structure, Chain):
        fmt = io.detect_format(p)
        if fmt != "jld2":
            raise PortingError(
                f"{p}: a Chain structure (porting.flux.build) is for a JLD2 file of Flux.state; "
                + (
                    "a BSON.jl file holds its layers itself (convert it without --structure)"
                    if fmt == "bson"
                    else f"this is a {fmt} file"
                )
            )
        tree = io.load(p, format="jld2")
        key = key or "model_state"
        if key not in tree:
            raise PortingError(
                f"{p}: no entry {key!r}; the file holds {', '.join(map(repr, tree)) or 'nothing'}"
                " (give --key NAME, the name given to jldsave)"
            )
        found = state_layers(structure, tree[key], f"{p}:{key}", flux_version)
        kind = STATE_SOURCE
    else:
        if io.detect_format(p) != "bson":
            raise PortingError(
                f"{p}: a Struct structure (porting.flux.structure) wires a user struct in a "
                "BSON.jl file; for a JLD2 file of Flux.state the structure file builds "
                "`model = Chain(...)` with porting.flux.build"
            )
        tree = read(p)
        key = key or _pick_key(tree, p)
        node = select(tree, key, p)
        gpu = find_gpu(node, key.replace("/", "."))
        if gpu is not None:
            raise PortingError(f"{p}: {gpu} is a CuArray: {GPU_HINT}")
        found = []
        from porting.flux.norms import flux_version as version

        with version(flux_version):
            wire(structure, node, key.replace("/", "."), found)
        kind = SOURCE + ", a user struct wired by its structure file"
    model = _assemble(found, p, input_size)
    model.source = f"{p} --key {key}"
    return FluxModel(model, p, key, found, [], kind)


_FLUX_FIELDS = {"weight", "σ", "λ", "β", "γ", "μ", "σ²"}


def state_entries(tree: dict) -> list[str]:
    """The top-level entries of a JLD2 file that look like a ``Flux.state`` tree: a NamedTuple
    ``(layers = ...)`` (a Chain) somewhere holding a layer with Flux's field names."""

    def flux_like(v: Any, depth: int = 0) -> bool:
        if depth > 12:
            return False
        if isinstance(v, dict):
            if _FLUX_FIELDS & set(v):
                return True
            return any(flux_like(x, depth + 1) for x in v.values())
        if isinstance(v, (tuple, list)):
            return any(flux_like(x, depth + 1) for x in v)
        return False

    return [
        k
        for k, v in tree.items()
        if isinstance(v, dict) and "layers" in v and flux_like(v["layers"])
    ]


def state_hint(path: str | os.PathLike) -> str:
    """A sentence for a JLD2 file that holds a Flux.state tree (else "")."""
    from porting import io

    try:
        found = state_entries(io.load(path, format="jld2"))
    except PortingError:
        return ""
    if not found:
        return ""
    return (
        f"{', '.join(map(repr, found))} looks like Flux.state (NamedTuples with Flux's field "
        "names, no layer types): give its structure as a Python file, --structure model.py "
        "with `model = Chain(...)` of porting.flux.build (docs/flux.md#structure-files)"
    )
