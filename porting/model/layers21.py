"""Layers21's composition helpers, `Block` and `Op`, mapped onto the layer table's rows.

- `Block(layers...; name)`: Layers21's `Block`, a chain (`x = l(x)` for every layer in order).
  A model does not hold a block as one node: `KnetModel` flattens blocks (nested ones too) into
  its chain, so every layer inside keeps its own row in the verification report (the first
  divergent layer is named, not just "the block"). The block's `name` is for display only, as
  in Knet; layer names stay the layers' own.
- `Op(f, *args, **kw)`: Layers21's `Op`, `x -> f(x, args...; kw...)`. Only the functions whose
  computation is an existing row are accepted, and `Op` returns that row's layer (no kind of
  its own): activations (`Op("relu", max_value=6)`, `Op("logsoftmax", dims=1)`, ...) ->
  `Activation`; `reshape2d` / `mat` (with the default dims) -> `Mat`; `pool` with
  `op="maximum"|"mean"` and a finite `window` -> `Pool` (mode 0 / 1); `zeropad` -> `ZeroPad`.
  Anything else is refused by name.

docs/knet.md#layers21.

>>> b = Block(Op("reshape2d"), Op("relu"), name="top")
>>> [layer.kind for layer in expand_blocks([b])]
['mat', 'activation']
"""

from __future__ import annotations

from porting.errors import PortingError
from porting.model.kinds.activation import Activation
from porting.model.kinds.mat import Mat
from porting.model.kinds.pool import Pool
from porting.model.kinds.zeropad import ZeroPad
from porting.model.layer import ACTIVATIONS, Layer, activation_name

__all__ = ["Block", "Op", "expand_blocks"]

_OPS = ("reshape2d", "mat", "pool", "zeropad", *ACTIVATIONS)
_POOL_OPS = {"maximum": 0, "max": 0, "mean": 1}


class Block:
    """Layers21 `Block(layers...; name=None)`: the layers (or blocks) applied in order."""

    def __init__(self, *layers, name: str | None = None):
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Layer, Block)):
                raise PortingError(
                    f"Block{'' if name is None else f' {name!r}'}: item {i + 1} is a "
                    f"{type(layer).__name__}; expected porting.model layers or Blocks"
                )
        if name is not None and not isinstance(name, str):
            raise PortingError(f"Block name={name!r}: expected a string")
        self.layers = list(layers)
        self.name = name

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        return f"Block({self.name!r}, {len(self.layers)} items)"


def expand_blocks(layers) -> list:
    """`layers` with every `Block` replaced by its layers, in order (recursively); other items
    are left for `KnetModel` to check."""
    out: list = []
    stack: list[int] = []  # ids of the blocks being expanded (a block inside itself is refused)

    def add(items):
        for item in items:
            if isinstance(item, Block):
                if id(item) in stack:
                    raise PortingError(f"{item!r} contains itself; expected a tree of blocks")
                stack.append(id(item))
                add(item.layers)
                stack.pop()
            else:
                out.append(item)

    add(layers)
    return out


def Op(f, *args, name: str | None = None, **kw) -> Layer:  # noqa: N802 - Knet's name
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
