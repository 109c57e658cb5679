"""The `activation` kind: an element-wise Knet activation, or `softmax` / `logsoftmax(x; dims)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np

import porting.model.schema as schema
from porting.errors import PortingError
from porting.model.layer import ACT_KERAS, Example, Kind, Layer, activation_name, check_real
from porting.model.stages import ActStage, Stage

__all__ = ["Activation", "KIND"]


@dataclass(eq=False)
class Activation(Layer):
    """An element-wise activation, or `softmax(x; dims)` / `logsoftmax(x; dims)` (default
    `dims=1`, Julia's first dimension: the features of a dense output; Knet's own default,
    `dims=:`, the whole array, mixes samples and is refused)."""

    function: str = "identity"
    _: KW_ONLY
    dims: int = 1
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    name: str | None = None
    kind = "activation"
    transparent = True

    def __post_init__(self) -> None:
        self.function = activation_name(self.function, self.label)
        if (
            isinstance(self.dims, bool)
            or not isinstance(self.dims, (int, np.integer))
            or self.dims < 1
        ):
            raise PortingError(
                f"{self.label}: dims={self.dims!r}: expected a Julia dimension >= 1 (softmax or "
                "logsoftmax over the whole array, Knet's default dims=:, mixes samples and has "
                "no Keras equivalent)"
            )
        self._check_relu_keywords()

    def stages(self) -> list[Stage]:
        return [
            ActStage(
                function=self.function,
                dims=self.dims,
                max_value=self.max_value,
                negative_slope=self.negative_slope,
                threshold=self.threshold,
            )
        ]

    def _check_relu_keywords(self) -> None:
        where = self.label
        for key in ("negative_slope", "threshold"):
            check_real(getattr(self, key), where, key)
        if self.max_value is not None:
            check_real(self.max_value, where, "max_value")
        keywords = self.max_value is not None or self.negative_slope or self.threshold
        if keywords and self.function != "relu":
            raise PortingError(
                f"{where}: max_value / negative_slope / threshold are relu's keywords (Ops21); "
                f"got them with {self.function}"
            )
        if self.max_value is not None and self.max_value < self.threshold:
            raise PortingError(
                f"{where}: max_value={self.max_value} < threshold={self.threshold}; expected "
                "max_value >= threshold"
            )

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return ActStage(function=self.function, dims=self.dims).out_size(size)
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    def describe(self) -> str:
        kw = [
            f"{k}={getattr(self, k)}"
            for k in ("max_value", "negative_slope", "threshold")
            if getattr(self, k) not in (None, 0, 0.0)
        ]
        if self.function in ("softmax", "logsoftmax"):
            kw.append(f"dims={self.dims}")
        return self.function + (f"({', '.join(kw)})" if kw else "")


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Activation:
    dims = d.get("dims")
    relu = {
        k: schema.number(d[k], k, where)
        for k in ("max_value", "negative_slope", "threshold")
        if d.get(k) is not None
    }
    return Activation(
        d.get("activation") or "identity",
        dims=1 if dims is None else schema.integer(dims, "dims", where),
        name=d.get("name"),
        **relu,
    )


def _to_json(layer: Activation) -> dict[str, Any]:
    d = {"activation": layer.function, **({"dims": layer.dims} if layer.dims != 1 else {})}
    if layer.max_value is not None:
        d["max_value"] = layer.max_value
    for key in ("negative_slope", "threshold"):
        if getattr(layer, key):
            d[key] = getattr(layer, key)
    return d


def _example() -> Example:
    return [Activation("softmax", dims=3)], (3, 2, 4)


KIND = Kind(
    name="activation",
    layer=Activation,
    prefix="act",
    from_json=_from_json,
    to_json=_to_json,
    knet="`f.(x)`, `softmax(x; dims)`, `logsoftmax(x; dims)`",
    keras="`Activation` / `ReLU` / `Softmax(axis)` (one row per activation below)",
    schema=(
        'name in "activation"; softmax and logsoftmax (since version 2) may carry "dims", '
        'relu "max_value", "negative_slope", "threshold"'
    ),
    keras_layers=ACT_KERAS,
    example=_example,
)
