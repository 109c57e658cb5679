"""The `activation` kind: an element-wise Knet activation, or `softmax(x; dims)`."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np

import porting.model.schema as schema
from porting.errors import PortingError
from porting.model.layer import Kind, Layer, activation_name
from porting.model.stages import ActStage

__all__ = ["Activation", "KIND"]


@dataclass(eq=False)
class Activation(Layer):
    """An element-wise activation, or `softmax(x; dims)` (default `dims=1`, Julia's first
    dimension: the features of a dense output)."""

    function: str = "identity"
    _: KW_ONLY
    dims: int = 1
    name: str | None = None
    kind = "activation"
    transparent = True

    def __post_init__(self):
        self.function = activation_name(self.function, self.label)
        if (
            isinstance(self.dims, bool)
            or not isinstance(self.dims, (int, np.integer))
            or self.dims < 1
        ):
            raise PortingError(
                f"{self.label}: dims={self.dims!r}: expected a Julia dimension >= 1 (softmax "
                "over the whole array, Knet's dims=:, mixes samples and has no Keras equivalent)"
            )

    def stages(self):
        return [ActStage(function=self.function, dims=self.dims)]

    def output_size(self, size):
        try:
            return ActStage(function=self.function, dims=self.dims).out_size(size)
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    def describe(self):
        return self.function + (f"(dims={self.dims})" if self.function == "softmax" else "")


def _from_json(d: dict, where: str, param) -> Activation:
    dims = d.get("dims")
    return Activation(
        d.get("activation") or "identity",
        dims=1 if dims is None else schema.integer(dims, "dims", where),
        name=d.get("name"),
    )


def _to_json(layer: Activation) -> dict:
    return {"activation": layer.function, **({"dims": layer.dims} if layer.dims != 1 else {})}


KIND = Kind(
    name="activation",
    layer=Activation,
    prefix="act",
    from_json=_from_json,
    to_json=_to_json,
)
