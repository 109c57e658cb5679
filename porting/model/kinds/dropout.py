"""The `dropout` kind: Knet `dropout(x, p)`, the identity at inference."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import porting.model.schema as schema
from porting.model.layer import Example, KerasLayer, Kind, Layer, check_probability
from porting.model.stages import DropoutStage, Stage

__all__ = ["Dropout", "KIND"]


@dataclass(eq=False)
class Dropout(Layer):
    """Knet `dropout(x, p)`: the identity at inference (kept so the structure matches)."""

    p: float = 0.0
    _: KW_ONLY
    name: str | None = None
    kind = "dropout"
    transparent = True

    def __post_init__(self) -> None:
        check_probability(self.p, self.label)

    def stages(self) -> list[Stage]:
        return [DropoutStage(p=self.p)]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(size)

    def describe(self) -> str:
        return f"dropout(p={self.p}) (identity at inference)"


def _example() -> Example:
    return [Dropout(0.25)], (4,)


KIND = Kind(
    name="dropout",
    layer=Dropout,
    prefix="dropout",
    from_json=lambda d, where, param: Dropout(
        schema.dropout(d.get("dropout"), where), name=d.get("name")
    ),
    to_json=lambda layer: {"dropout": layer.p},
    knet="`dropout(x, p)`",
    keras="`Dropout` (identity at inference)",
    schema='probability in "dropout"',
    keras_layers=(KerasLayer("Dropout"), KerasLayer("Identity", direct={})),
    example=_example,
)
