"""The `zeropad` kind: Layers21's `ZeroPad(padding)`, zeros around the spatial dimensions,
possibly asymmetric: `padding` is an integer (every side), one integer per Julia spatial
dimension, or `((lo1, hi1), (lo2, hi2), ...)` per Julia spatial dimension (Julia order).
Keras: `ZeroPadding{1,2,3}D` with the pairs in TensorFlow's axis order (exact: no arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting import layout
from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer, fmt_size
from porting.model.stages import Array, KerasContext, KerasTensor, Stage

__all__ = ["ZeroPad", "ZeroPadStage", "KIND"]


def _pairs(padding: object, nd: int, where: str) -> tuple[tuple[int, int], ...]:
    def one(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise PortingError(
                f"{where}: padding={padding!r}: expected non-negative integers, an integer per "
                "spatial dimension, or (lo, hi) pairs"
            )
        return int(v)

    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        return ((one(padding),) * 2,) * nd
    if not isinstance(padding, (list, tuple)) or len(padding) != nd:
        raise PortingError(
            f"{where}: padding={padding!r}: expected an integer, {nd} integers or {nd} (lo, hi) "
            f"pairs for an input with {nd} spatial dimensions"
        )
    out = []
    for p in padding:
        if isinstance(p, (list, tuple)):
            if len(p) != 2:
                raise PortingError(f"{where}: padding={padding!r}: expected (lo, hi) pairs")
            out.append((one(p[0]), one(p[1])))
        else:
            out.append((one(p), one(p)))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ZeroPadStage(Stage):
    padding: Any = 0

    def pairs(self, nd: int) -> tuple[tuple[int, int], ...]:
        return _pairs(self.padding, nd, "zeropad")

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        nd = len(size) - 1
        if nd < 1:
            raise PortingError(
                f"its input has size {fmt_size(size)} per sample; expected (X1, ..., C)"
            )
        pairs = self.pairs(nd)
        return (*(x + lo + hi for x, (lo, hi) in zip(size[:-1], pairs, strict=True)), size[-1])

    def _pad(self, x: Array) -> Array:
        nd = x.ndim - 2
        return np.pad(x, [*self.pairs(nd), (0, 0), (0, 0)])

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        return self._pad(x)

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        return self._pad(s)

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        nd = len(in_size) - 1
        pairs = layout.spatial_to_tf(self.pairs(nd), ctx.spatial)
        return ctx.make(f"ZeroPadding{nd}D", self.role, pairs[0] if nd == 1 else pairs)(t)


@dataclass(eq=False)
class ZeroPad(Layer):
    """Layers21 `ZeroPad(padding)`: zeros around the spatial dimensions (see the module)."""

    padding: Any = 0
    _: KW_ONLY
    name: str | None = None
    kind = "zeropad"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        nd = len(self.padding) if isinstance(self.padding, (list, tuple)) else 2
        self.padding = (
            tuple(tuple(p) if isinstance(p, list) else p for p in self.padding)
            if isinstance(self.padding, (list, tuple))
            else self.padding
        )
        _pairs(self.padding, nd, self.label)

    def stages(self) -> list[Stage]:
        return [ZeroPadStage(padding=self.padding)]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return ZeroPadStage(padding=self.padding).out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label} on input size {fmt_size(size)}: {e}") from None

    def describe(self) -> str:
        return f"zeropad({self.padding})"


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> ZeroPad:
    p = d.get("padding")
    if isinstance(p, list):
        p = tuple(
            tuple(schema.integer(v, "padding", where) for v in q)
            if isinstance(q, list)
            else schema.integer(q, "padding", where)
            for q in p
        )
    else:
        p = schema.integer(p, "padding", where)
    return ZeroPad(p, name=d.get("name"))


def _to_json(layer: ZeroPad) -> dict[str, Any]:
    p = layer.padding
    return {
        "padding": [list(q) if isinstance(q, tuple) else q for q in p]
        if isinstance(p, tuple)
        else p
    }


def _example() -> Example:
    return [ZeroPad(((1, 0), (0, 2)))], (3, 2, 2)


KIND = Kind(
    name="zeropad",
    layer=ZeroPad,
    prefix="zeropad",
    from_json=_from_json,
    to_json=_to_json,
    knet="Layers21's `ZeroPad`",
    keras="`ZeroPadding{n}D` (asymmetric pairs)",
    schema='"padding" (since version 2)',
    keras_layers=tuple(KerasLayer(f"ZeroPadding{d}D", direct={}) for d in (1, 2, 3)),
    example=_example,
)
