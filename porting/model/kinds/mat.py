"""The `mat` kind: Knet `mat(x)`, `reshape(x, :, N)` in column-major order (X1 fastest)."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer
from porting.model.stages import FlattenStage, Stage

__all__ = ["Mat", "KIND"]


@dataclass(eq=False)
class Mat(Layer):
    """Knet `mat(x)`: `reshape(x, :, N)` in column-major order (X1 fastest)."""

    _: KW_ONLY
    name: str | None = None
    kind = "mat"
    flattens = True
    flat_rule = FlatRule.MAT

    def stages(self) -> list[Stage]:
        return [FlattenStage()]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(size),)


def _example() -> Example:
    return [Mat()], (3, 2, 2)


KIND = Kind(
    name="mat",
    layer=Mat,
    prefix="mat",
    from_json=lambda d, where, param: Mat(name=d.get("name")),
    to_json=lambda layer: {},
    knet="`mat`",
    keras="`Flatten`; the next Dense's kernel rows are permuted to Keras' (H, W, C) order",
    schema="no keys",
    keras_layers=(KerasLayer("Flatten", direct={}),),
    example=_example,
)
