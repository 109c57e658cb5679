"""The `pixelshuffle` kind: NNlib's `pixel_shuffle(x, r)` (Flux's `PixelShuffle(r)`,
docs/flux.md#pixelshuffle-flux): `(X1, ..., Xd, r^d * C, N)` -> `(r X1, ..., r Xd, C, N)`.

NNlib reshapes the channels to `(r, ..., r, C)` (column-major: the sub-position along X1
varies fastest, the output channel slowest), interleaves each `r` after its spatial dimension
and merges the pairs: `y[i1 + r (x1 - 1), ..., c] = x[x1, ..., i1 + r (i2 - 1) + ... +
r^d (c - 1)]` (1-based `i`). TensorFlow's `depth_to_space` orders the channels the other way
(the output channel fastest), so it is not this; the Keras side is `Reshape` and `Permute`
layers only (no arithmetic: exact), at most four axes per sample, which TFLite's transpose takes
(docs/tensorflow.md#keras-pixel-shuffle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting._checks import short_repr
from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer, fmt_size
from porting.model.stages import Array, KerasContext, KerasTensor, Stage, sub_role

__all__ = ["PixelShuffle", "PixelShuffleStage", "KIND", "pixel_shuffle"]


def pixel_shuffle(x: Array, r: int) -> Array:
    """NNlib's `pixel_shuffle` on a Julia-indexed `x` `(X1, ..., Xd, Cin, N)` (NNlib v0.9.22
    src/upsample.jl): reshape to `(X..., r, ..., r, Cout, N)`, permute to `(r, X1, r, X2, ...,
    Cout, N)`, reshape to `(r X1, ..., r Xd, Cout, N)`, all column-major."""
    d = x.ndim - 2
    sizes, cin, n = x.shape[:d], x.shape[d], x.shape[d + 1]
    cout = cin // r**d
    y = x.reshape((*sizes, *(r,) * d, cout, n), order="F")
    perm = [a for k in range(d) for a in (d + k, k)] + [2 * d, 2 * d + 1]
    y = y.transpose(perm)
    return y.reshape((*(s * r for s in sizes), cout, n), order="F")


@dataclass(frozen=True, eq=False)
class PixelShuffleStage(Stage):
    r: int = 2

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        nd = len(size) - 1
        if nd < 1:
            raise PortingError(
                f"its input has size {fmt_size(size)} per sample; expected (X1, ..., C)"
            )
        cin = size[-1]
        if cin % self.r**nd:
            raise PortingError(
                f"{cin} channels are not divisible by r^d = {self.r**nd} (r={self.r}, "
                f"{nd} spatial dimensions), as NNlib's pixel_shuffle requires"
            )
        return (*(s * self.r for s in size[:-1]), cin // self.r**nd)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        return pixel_shuffle(x, self.r)

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        return pixel_shuffle(s, self.r)

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        """Reshape/Permute steps moving each spatial axis's sub-position next to it."""
        r, nd = self.r, len(in_size) - 1
        if r == 1:
            return ctx.make("Identity", self.role)(t)
        tf_sizes = ctx.tf(tuple(in_size[:-1]))
        julia_of_tf = ctx.tf(tuple(range(nd)))
        cout = out_size[-1]
        # the logical per-sample axes: (label, size); NNlib's channel index, row-major, is
        # (Cout, r of Xd, ..., r of X1)
        axes: list[tuple[Any, int]] = [(("s", k), n) for k, n in enumerate(tf_sizes)]
        axes += [("c", cout)] + [(("r", j), r) for j in reversed(range(nd))]
        steps: list[tuple[str, Any]] = []
        for k in range(nd):
            labels = [a for a, _ in axes]
            at_s = labels.index(("s", k))
            at_r = labels.index(("r", julia_of_tf[k]))
            if at_r == at_s + 1:
                continue
            dims = [n for _, n in axes]
            p = math.prod(dims[: at_s + 1])
            b = math.prod(dims[at_s + 1 : at_r])
            c = math.prod(dims[at_r + 1 :])
            steps.append(("Reshape", (p, b, r, c)))
            steps.append(("Permute", (1, 3, 2, 4)))
            axes = axes[: at_s + 1] + [axes[at_r]] + axes[at_s + 1 : at_r] + axes[at_r + 1 :]
        steps.append(("Reshape", (*(n * r for n in tf_sizes), cout)))
        for i, (what, arg) in enumerate(steps):
            last = i == len(steps) - 1
            role = self.role if last else sub_role(self.role, f"{what.lower()}{i + 1}")
            t = ctx.make(what, role, arg)(t)
        return t


@dataclass(eq=False)
class PixelShuffle(Layer):
    """NNlib `pixel_shuffle(x, r)` (Flux `PixelShuffle(r)`), see the module."""

    r: int = 2
    _: KW_ONLY
    name: str | None = None
    kind = "pixelshuffle"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        r = self.r
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= 2**16:
            raise PortingError(f"{self.label}: r={short_repr(r)}; expected a positive integer")
        self.r = int(r)

    def stages(self) -> list[Stage]:
        return [PixelShuffleStage(r=self.r)]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(size) <= 4:
            raise PortingError(
                f"{self.label}: input of size {fmt_size(size)} per sample; pixel_shuffle "
                "expects (X1, [X2, [X3,]] C): 1-3 spatial dimensions and channels"
            )
        try:
            return PixelShuffleStage(r=self.r).out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label} on input size {fmt_size(size)}: {e}") from None

    def describe(self) -> str:
        return f"pixel_shuffle(r={self.r})"


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> PixelShuffle:
    return PixelShuffle(schema.integer(d.get("r"), "r", where), name=d.get("name"))


def _diagnose(
    step: Any, x_ins_tf: list[Array], expected_tf: Array, actual_tf: Array, spatial: str
) -> Any:
    """Channel-order causes (porting.diagnosis.diagnose_pixel_shuffle): depth_to_space's order,
    the two axes' sub-positions swapped."""
    from porting.diagnosis import diagnose_pixel_shuffle

    return diagnose_pixel_shuffle(
        x_ins_tf[0], actual_tf, r=step.layer.r, spatial=spatial, expected=expected_tf
    )


def _example() -> Example:
    return [PixelShuffle(2, name="shuffle")], (3, 2, 8)


KIND = Kind(
    name="pixelshuffle",
    layer=PixelShuffle,
    prefix="pixelshuffle",
    from_json=_from_json,
    to_json=lambda layer: {"r": layer.r},
    knet="NNlib's `pixel_shuffle(x, r)` (Flux `PixelShuffle`)",
    keras="`Reshape` + `Permute` (NNlib's channel order, not `depth_to_space`'s; exact)",
    schema='"r" (since version 2)',
    keras_layers=(
        KerasLayer("Reshape"),
        KerasLayer("Permute"),
        KerasLayer("Identity", direct={}),
    ),
    diagnose=_diagnose,
    example=_example,
)
