"""The `linear` kind: Layers21 `Linear(w; bias=nothing, activation=nothing, dropout=0)`.

Knet computes `activation(linear(w, dropout(x)) .+ bias)` with Ops21's `linear(w, x; dims=1)`:
`w` of size `(out, in)` times `x` of size `(in, N)`. Unlike the tutorial `Dense` there is no
bias unless one is given, no `mat`: an input with more than one dimension per sample is NOT
flattened (Ops21 contracts `w`'s last dimension with `x`'s first; Knet's own models put
`reshape2d` (`Mat` here) before every `Linear`), so such an input is refused here, and the
activation is called on the whole array, not broadcast (a `softmax`/`logsoftmax` activation
would normalise over the whole array, Knet's `dims=:`, and is refused: add an `Activation`
layer with `dims=1`). docs/knet.md#layers21.

On a `(features, N)` input the computation is the dense stage's (`w * x .+ b`), so the stages,
Keras layers (`Dense`), magnitudes and diagnosis are the dense kind's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import porting.model.schema as schema
from porting.errors import PortingError
from porting.model.kinds import dense
from porting.model.kinds.dense import Dense
from porting.model.layer import Example, FlatRule, Kind, fmt_size

__all__ = ["Linear", "KIND"]

_NORMALISING = ("softmax", "logsoftmax")


@dataclass(eq=False, init=False)
class Linear(Dense):
    """Layers21 `Linear(w; bias=None, activation=None, dropout=0)`: `w` `(out, in)`, `bias`
    `(out,)` or `(out, 1)` (none by default); its input must be `(in,)` per sample."""

    kind = "linear"
    flattens = True
    flat_rule = FlatRule.DENSE

    def __init__(
        self,
        w: np.ndarray,
        *,
        bias: np.ndarray | None = None,
        activation: str | None = None,
        dropout: float = 0.0,
        name: str | None = None,
    ) -> None:
        self.name = name
        ndim = getattr(w, "ndim", None)
        if isinstance(ndim, int) and ndim > 2:
            raise PortingError(
                f"{self.label}: w has shape {getattr(w, 'shape', '?')}; expected (out, in): "
                "a Linear whose w has more than 2 dimensions (outputsize a tuple) has a "
                "multi-dimensional output, which porting does not convert"
            )
        self.w = w
        self.b = bias
        self.activation = "identity" if activation is None else activation
        self.dropout = dropout
        self.__post_init__()
        if self.activation in _NORMALISING:
            raise PortingError(
                f"{self.label}: activation={self.activation!r}: Layers21 Linear calls it on the "
                "whole output (Knet's default dims=:, mixing the samples); expected an "
                f"element-wise activation, and an Activation({self.activation!r}, dims=1) layer "
                "after the Linear for the per-sample one"
            )

    @property
    def bias(self) -> np.ndarray | None:
        return self.b

    def params(self) -> dict[str, np.ndarray]:
        """Layers21's field names: `w` and `bias`."""
        return {"w": self.w} if self.b is None else {"w": self.w, "bias": self.b}

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if len(size) != 1:
            raise PortingError(
                f"{self.label}: its input has size {fmt_size(size)} per sample; expected "
                f"({self.w.shape[1]},): Layers21 Linear does not flatten (Ops21 linear contracts "
                "w's last dimension with the input's first); put Mat() (Knet's reshape2d) before it"
            )
        return super().output_size(size)

    def describe(self) -> str:
        s = f"linear w {self.w.shape}" + (", bias" if self.b is not None else ", no bias")
        return s + (f", {self.activation}" if self.activation != "identity" else "")


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Linear:
    w = schema.weight(param, where, "a linear layer needs a weight")
    return Linear(
        w,
        bias=param("bias"),
        activation=d.get("activation") or "identity",
        dropout=schema.dropout(d.get("dropout"), where),
        name=d.get("name"),
    )


def _to_json(layer: Linear) -> dict[str, Any]:
    return {"activation": layer.activation, "dropout": layer.dropout}


def _example() -> Example:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    return [Linear(w, bias=rng.standard_normal(3).astype(np.float32), activation="elu")], (5,)


KIND = Kind(
    name="linear",
    layer=Linear,
    prefix="linear",
    from_json=_from_json,
    to_json=_to_json,
    weights=dense._weights,
    knet="Layers21's `Linear`: `w * x .+ bias`",
    keras="`Dense` (its input is already `(features, N)`: no flatten)",
    schema='params w and, only when it has one, bias; "activation", "dropout" (since version 2)',
    keras_layers=dense.KERAS_LAYERS,
    example=_example,
)
