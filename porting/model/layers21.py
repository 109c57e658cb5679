"""Layers21's composition helpers, `Block` and `Op`, mapped onto the layer table's rows.

- `Block(layers...; name)`: Layers21's `Block`, a chain (`x = l(x)` for every layer in order).
  A model does not hold a block as one node: `KnetModel` flattens blocks (nested ones too) into
  its chain, so every layer inside keeps its own row in the verification report (the first
  divergent layer is named, not just "the block"). The block's `name` is for display only, as
  in Knet; layer names stay the layers' own.
- `AddBranches(branches...; activation, name)`: Layers21's `Add`, every branch reading the same
  input (see the class).
- `Op(f, *args, **kw)`: Layers21's `Op`, `x -> f(x, args...; kw...)`. Only the functions whose
  computation is an existing row are accepted, and `Op` returns that row's layer (no kind of
  its own): activations (`Op("relu", max_value=6)`, `Op("logsoftmax", dims=1)`, ...) ->
  `Activation`; `reshape2d` / `mat` (with the default dims) -> `Mat`; `pool` with
  `op="maximum"|"mean"` and a finite `window` -> `Pool` (mode 0 / 1); `zeropad` -> `ZeroPad`;
  `dropout` -> `Dropout`; `reshape` with `(X1, ..., C, ":")` -> `Reshape`.
  Anything else is refused by name.

docs/knet.md#layers21.

>>> b = Block(Op("reshape2d"), Op("relu"), name="top")
>>> [layer.kind for layer in expand_blocks([b])[0]]
['mat', 'activation']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from porting.errors import PortingError
from porting.model.kinds.activation import Activation
from porting.model.kinds.dropout import Dropout
from porting.model.kinds.mat import Mat
from porting.model.kinds.pool import Pool
from porting.model.kinds.reshape import Reshape
from porting.model.kinds.zeropad import ZeroPad
from porting.model.layer import ACTIVATIONS, Layer, activation_name, set_link

__all__ = ["AddBranches", "Block", "Op", "expand_blocks"]

_OPS = ("reshape2d", "mat", "pool", "zeropad", "dropout", "reshape", *ACTIVATIONS)
_POOL_OPS = {"maximum": 0, "max": 0, "mean": 1}


class Block:
    """Layers21 `Block(layers...; name=None)`: the layers (or blocks) applied in order."""

    def __init__(self, *layers: Any, name: str | None = None) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Layer, Block, AddBranches)):
                raise PortingError(
                    f"Block{'' if name is None else f' {name!r}'}: item {i + 1} is a "
                    f"{type(layer).__name__}; expected porting.model layers, Blocks or AddBranches"
                )
        if name is not None and not isinstance(name, str):
            raise PortingError(f"Block name={name!r}: expected a string")
        self.layers = list(layers)
        self.name = name

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def __repr__(self) -> str:
        return f"Block({self.name!r}, {len(self.layers)} items)"


class AddBranches:
    """Layers21 `Add(blocks...; activation=None)`: every branch (a layer, a `Block`, or None for
    Knet's `identity`) reads the same input; the outputs are summed left to right, then the
    activation. `KnetModel` lays the branches out one after the other, each with its own rows,
    wires each branch's first layer to the shared input and ends with an `add` layer (named
    `name`) reading the branches' last layers: a residual block `Add(Block(conv, bn, relu,
    conv, bn), None; activation="relu")`."""

    def __init__(
        self, *branches: Any, activation: str | None = None, name: str | None = None
    ) -> None:
        where = f"AddBranches{'' if name is None else f' {name!r}'}"
        if len(branches) < 2:
            raise PortingError(
                f"{where}: {len(branches)} branch(es); expected two or more (layers, Blocks, or "
                "None for identity)"
            )
        for i, b in enumerate(branches):
            if b is not None and not isinstance(b, (Layer, Block, AddBranches)):
                raise PortingError(
                    f"{where}: branch {i + 1} is a {type(b).__name__}; expected a porting.model "
                    "layer, a Block, an AddBranches or None (identity)"
                )
        self.branches = list(branches)
        self.activation = activation_name(activation, where)
        self.name = name

    def __repr__(self) -> str:
        return f"AddBranches({self.name!r}, {len(self.branches)} branches)"


def _has_branches(items: Iterable[Any], stack: tuple[int, ...] = ()) -> bool:
    for item in items:
        if isinstance(item, AddBranches):
            return True
        if isinstance(item, Block):
            if id(item) in stack:
                raise PortingError(f"{item!r} contains itself; expected a tree of blocks")
            if _has_branches(item.layers, (*stack, id(item))):
                return True
    return False


def expand_blocks(layers: Iterable[Any]) -> tuple[list[Any], dict[str, str]]:
    """`layers` with every `Block` replaced by its layers, in order (recursively), and every
    `AddBranches` by its branches and an `add` layer; returns the layers and the wiring
    `{layer name: source name}` of the branches that do not read the layer before them. Other
    items are left for `KnetModel` to check. With branches, unnamed layers are named here as
    `KnetModel` names them (the wiring needs the names)."""
    from porting.model.kinds import KINDS
    from porting.model.kinds.merge import Add

    out: list[Any] = []
    wiring: dict[str, str] = {}
    stack: list[int] = []  # ids of the blocks being expanded (a block inside itself is refused)
    naming = _has_branches(layers)
    counts: dict[str, int] = {}
    seen: set[str] = set()

    def push(layer: Any) -> str:
        if naming and isinstance(layer, Layer) and layer.kind in KINDS:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            if layer.name is None:
                name = f"{KINDS[layer.kind].prefix}{counts[layer.kind]}"
                while name in seen:
                    name += "_"
                set_link(layer, "name", name)
            seen.add(str(layer.name))
        out.append(layer)
        return str(getattr(layer, "name", None))

    def walk(items: Iterable[Any], src: str) -> str:
        for item in items:
            if isinstance(item, Block):
                if id(item) in stack:
                    raise PortingError(f"{item!r} contains itself; expected a tree of blocks")
                stack.append(id(item))
                src = walk(item.layers, src)
                stack.pop()
            elif isinstance(item, AddBranches):
                ends = []
                for branch in item.branches:
                    if branch is None:
                        ends.append(src)
                        continue
                    start = len(out)
                    end = walk([branch], src)
                    before = str(out[start - 1].name) if start else "input"
                    if len(out) > start and src != before:
                        wiring[str(out[start].name)] = src
                    ends.append(end)
                src = push(Add(ends, activation=item.activation, name=item.name))
            else:
                src = push(item)
        return src

    walk(layers, "input")
    return out, wiring


def Op(f: Any, *args: Any, name: str | None = None, **kw: Any) -> Layer:  # noqa: N802 - Knet's name
    """Layers21 `Op(f, args...; kw...)` as the row computing the same thing (see the module).

    `f` is a name (`"relu"`, `"Knet.Ops21.pool"`, `"reshape2d"` ...)."""
    if not isinstance(f, str):
        raise PortingError(f"Op(f={f!r}): expected a function name, one of {', '.join(_OPS)}"[:300])
    key = f.rsplit(".", 1)[-1].strip()
    where = f"Op({f!r})"
    if key in ("reshape2d", "mat"):
        if args or set(kw) - {"dims"} or kw.get("dims") not in (None,):
            raise PortingError(
                f"{where}: args {args!r}, keywords {kw!r}: expected none (the default dims, "
                "ndims(x)-1: Knet's mat); another dims has no Mat row"
            )
        return Mat(name=name)
    if key == "pool":
        op = kw.pop("op", "maximum")
        op_name = op.rsplit(".", 1)[-1] if isinstance(op, str) else op
        if op_name not in _POOL_OPS:
            raise PortingError(f"{where}: op={op!r}; expected 'maximum' or 'mean' (Ops21 pool)")
        extra = set(kw) - {"window", "padding", "stride", "alpha"}
        if args or extra:
            raise PortingError(
                f"{where}: unexpected {'arguments ' + repr(args) if args else sorted(extra)}; "
                "expected the keywords op, window, padding, stride, alpha"
            )
        return Pool(mode=_POOL_OPS[op_name], name=name, **kw)
    if key == "dropout":  # Ops21 dropout(x, p): the identity at inference
        if len(args) != 1 or kw:
            raise PortingError(f"{where}: expected one argument, the probability p")
        return Dropout(args[0], name=name)
    if key == "reshape":  # reshape(x, (X1, ..., C, :)): the batch last, as a Colon
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else None
        if dims is None or kw or not dims or dims[-1] != ":":
            raise PortingError(
                f"{where}: arguments {args!r}: expected one tuple (X1, ..., C, ':') with the "
                "batch dimension last as ':' (Knet's reshape(x, (dims..., :)))"
            )
        return Reshape(tuple(dims[:-1]), name=name)
    if key == "zeropad":
        if len(args) != 1 or kw:
            raise PortingError(f"{where}: expected one argument, the padding (Ops21 zeropad)")
        return ZeroPad(args[0], name=name)
    if args:
        raise PortingError(f"{where}: positional arguments {args!r}; an activation takes none")
    if key in ("softmax", "logsoftmax") and kw.get("dims") is None:
        raise PortingError(
            f"{where}: no dims; Knet's {key} defaults to dims=: (the whole array, mixing the "
            f"samples), which has no Keras equivalent; expected Op({f!r}, dims=1) (per sample)"
        )
    try:
        fn = activation_name(f, where)
    except PortingError:
        raise PortingError(
            f"{where}: no layer computes it; expected one of {', '.join(_OPS)}"
        ) from None
    return Activation(fn, name=name, **kw)
