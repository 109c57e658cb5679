"""The `reshape` kind: Knet's `reshape(x, X1, ..., C, :)` of a dense output into a spatial
tensor (the DCGAN generator's `reshape(dense(z), 4, 4, 50, :)`), column-major as Julia's.

Keras's `Reshape` is row-major over `(H, W, C)`, so the features must already be in that order:
the plan marks the dense layer before it (through batchnorm, activation and dropout layers) as
producing the target's Keras `Flatten` order (`flat_from`), and that dense layer's output units
(and a batchnorm's per-feature values) are permuted accordingly; then `Reshape` is exact. Only
that case (or features that came from a `mat` of the same size) has a built-in equivalent;
others are refused at conversion, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer, fmt_size
from porting.model.stages import Array, KerasContext, KerasTensor, Stage

__all__ = ["Reshape", "ReshapeStage", "KIND"]


@dataclass(frozen=True, eq=False)
class ReshapeStage(Stage):
    size: Any = ()

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(size) != math.prod(self.size):
            raise PortingError(
                f"reshape to {fmt_size(self.size)} ({math.prod(self.size)} values per sample) "
                f"but its input has size {fmt_size(size)} ({math.prod(size)} values)"
            )
        return tuple(self.size)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        return x.reshape((*self.size, x.shape[-1]), order="F")

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        return s.reshape((*self.size, s.shape[-1]), order="F")

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        shape = tuple(out_size)
        tf_shape = shape if len(shape) == 1 else (*ctx.tf(shape[:-1]), shape[-1])
        return ctx.make("Reshape", self.role, tf_shape)(t)


@dataclass(eq=False)
class Reshape(Layer):
    """Knet `reshape(x, size..., :)`: `size` is one sample's Julia size, e.g. `(4, 4, 50)`."""

    size: tuple[int, ...] = ()
    _: KW_ONLY
    name: str | None = None
    kind = "reshape"
    flat_rule = FlatRule.RESHAPE

    def __post_init__(self) -> None:
        try:
            self.size = tuple(int(s) for s in self.size)
        except (TypeError, ValueError):
            raise PortingError(f"{self.label}: size={self.size!r}: expected integers") from None
        if not 1 <= len(self.size) <= 4 or any(s < 1 for s in self.size):
            raise PortingError(
                f"{self.label}: size={self.size}: expected 1-4 positive sizes of one sample"
            )

    @property
    def needs_spatial(self) -> bool:
        return False

    @property
    def flattens(self) -> bool:
        return len(self.size) == 1

    def stages(self) -> list[Stage]:
        return [ReshapeStage(size=self.size)]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return ReshapeStage(size=self.size).out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    def describe(self) -> str:
        return f"reshape to {fmt_size(self.size)}"


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Reshape:
    return Reshape(schema.size(d.get("size"), "size", where), name=d.get("name"))


def _example() -> Example:
    """A dense layer's features reshaped (a reshape of the model's input has no Keras layer)."""
    from porting.model.kinds.dense import Dense

    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    return [Dense(w, rng.standard_normal(12).astype(np.float32)), Reshape((3, 2, 2))], (5,)


KIND = Kind(
    name="reshape",
    layer=Reshape,
    prefix="reshape",
    from_json=_from_json,
    to_json=lambda layer: {"size": list(layer.size)},
    knet="`reshape(x, size..., :)`",
    keras="`Reshape` (features in Keras' (H, W, C) order: the layer before is permuted)",
    schema='"size" (since version 2)',
    keras_layers=(KerasLayer("Reshape"),),
    example=_example,
)
