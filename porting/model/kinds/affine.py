"""The `affine` kind: a per-channel scale and shift, Knet's `x .* s .+ b`.

`s` and `b` hold one value per channel (the second-to-last Julia dimension: C of
`(X1, ..., C, N)`, the features of a `(F, N)` dense output) or one value for all of them, and
broadcast as `reshape(s, 1, ..., C, 1)`. In the element type of `x`, every output is one
product and one sum: `x * s` rounded, then `+ b` rounded (Julia's broadcast fuses the loop,
not the arithmetic: no fused multiply-add). This is what Keras' preprocessing layers compute
at inference: `Rescaling(scale, offset)` is `x * scale + offset` (the same two roundings), and
`Normalization` is `(x - mean) / max(sqrt(var), epsilon)`, which porting.fromkeras writes as
`s = 1 / max(sqrt(var), epsilon)`, `b = -mean * s` (docs/tensorflow.md#keras-to-knet).

Keras: `Rescaling(scale=s, offset=b)` with per-channel arrays (the last axis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError
from porting.model.layer import Example, KerasLayer, Kind, Layer, fmt_size, weight_array
from porting.model.stages import Array, KerasContext, KerasTensor, Stage, labelled_out_size

__all__ = ["Affine", "AffineStage", "KIND"]


def _broadcast(v: Array, ndim: int) -> Array:
    """A per-channel vector `(C,)` (or `(1,)`) as `(1, ..., C, 1)` for a Julia `ndim` array."""
    shape = [1] * ndim
    shape[-2] = v.size
    return v.reshape(shape)


@dataclass(frozen=True, eq=False)
class AffineStage(Stage):
    """`x .* s .+ b`, per channel."""

    scale: Any = None  # (C,) or (1,)
    bias: Any = None

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        n = int(self.scale.size)
        if n not in (1, size[-1]):
            what = "features" if len(size) == 1 else "channels"
            raise PortingError(
                f"its input has {size[-1]} {what} (size {fmt_size(size)} per sample) but s "
                f"and b hold {n} values; expected one per {what[:-1]} or one for all"
            )
        return tuple(size)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        s = _broadcast(self.scale.astype(x.dtype, copy=False), x.ndim)
        b = _broadcast(self.bias.astype(x.dtype, copy=False), x.ndim)
        y: Array = x * s
        y += b
        return y

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        a = _broadcast(np.abs(self.scale).astype(s.dtype), s.ndim)
        c = _broadcast(np.abs(self.bias).astype(s.dtype), s.ndim)
        m: Array = s * a + c
        return m

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return 2

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        # Arrays, even for one value: Keras casts a Python number (and saves a 0-d array as
        # one) through a float32 tensor, so a float64 model would scale by the float32 value.
        dt = np.dtype(ctx.dtype)
        return ctx.make("Rescaling", self.role, self.scale.astype(dt), self.bias.astype(dt))(t)


@dataclass(eq=False)
class Affine(Layer):
    """Knet `x .* s .+ b` with `s` (`scale`) and `b` (`bias`) per channel: `(C,)`, or `(1,)`
    for every channel; both of one float element type and one length."""

    scale: np.ndarray
    bias: np.ndarray
    _: KW_ONLY
    name: str | None = None
    kind = "affine"

    def __post_init__(self) -> None:
        where = self.label
        self.scale = weight_array(self.scale, "scale", where, (0, 1)).reshape(-1)
        self.bias = weight_array(self.bias, "bias", where, (0, 1)).reshape(-1)
        if self.scale.shape != self.bias.shape:
            raise PortingError(
                f"{where}: scale has {self.scale.size} values but bias {self.bias.size}; "
                "expected one length (one per channel, or one for all)"
            )
        if self.scale.dtype != self.bias.dtype:
            raise PortingError(
                f"{where}: scale is {self.scale.dtype} and bias {self.bias.dtype}; expected one "
                "element type"
            )
        if not (np.isfinite(self.scale).all() and np.isfinite(self.bias).all()):
            raise PortingError(f"{where}: scale or bias holds non-finite values; expected finite")

    def check_follows(self, prev: Layer) -> None:
        if prev.kind == "mat" and self.scale.size > 1:
            raise PortingError(
                f"{self.label}: a per-feature scale after mat; Keras' Flatten orders the "
                "features (H, W, C) and Knet's mat (X1, X2, C), so the values would need that "
                "permutation, which porting does not do: scale before the mat"
            )

    def params(self) -> dict[str, np.ndarray]:
        return {"scale": self.scale, "bias": self.bias}

    def stage(self) -> AffineStage:
        return AffineStage(scale=self.scale, bias=self.bias)

    def stages(self) -> list[Stage]:
        return [self.stage()]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return labelled_out_size(self.label, self.stage(), size)

    def describe(self) -> str:
        n = self.scale.size
        return f"x .* s .+ b ({n} channels)" if n > 1 else "x .* s .+ b (one s, b for all)"


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Affine:
    s, b = param("scale"), param("bias")
    if s is None or b is None:
        raise PortingError(f"{where}: an affine layer needs params.scale and params.bias")
    return Affine(s, b, name=d.get("name"))


def _example() -> Example:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    return [Affine(s, b)], (4, 5, 3)


KIND = Kind(
    name="affine",
    layer=Affine,
    prefix="affine",
    from_json=_from_json,
    to_json=lambda layer: {},
    knet="`x .* s .+ b` per channel",
    keras="`Rescaling(scale=s, offset=b)` (per-channel arrays; Keras' `Normalization` is one)",
    schema="params scale and bias (one value per channel, or one for all)",
    keras_layers=(KerasLayer("Rescaling"),),
    example=_example,
)
