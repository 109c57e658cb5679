"""The `groupnorm` kind: Flux `GroupNorm(C, G)` and `InstanceNorm(C)` with each sample's own
statistics (porting.model.kinds._normalise).

The channels `C` of a sample `(X1, ..., C)` are split into `G` groups of `C/G` consecutive
channels (Julia's column-major `reshape(x, X..., C÷G, G, N)`); each group (all its spatial
positions and channels) is normalised by its own mean and biased variance, `(x - mean) /
sqrt(var + eps)` in the element type, then `γ .* y .+ β` per channel (Flux's `affine`).
`InstanceNorm(C)` is `G = C`. Running statistics (`track_stats=true` at inference) are the
`batchnorm` kind, not this one.

Keras: `GroupNormalization(groups=G, axis=-1, epsilon=eps)` (groups consecutive along the
channels too, `rsqrt(var + epsilon)`: keras/src/layers/normalization/group_normalization.py
@v3.15.1), gamma/beta the per-channel γ/β.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError
from porting.model import schema
from porting.model.kinds._normalise import (
    CaptureStage,
    NormStage,
    affine_params,
    check_dtype_and_eps,
)
from porting.model.layer import Example, KerasLayer, Kind, Layer, fmt_size, weight_array
from porting.model.stages import KerasContext, KerasTensor, Stage

if TYPE_CHECKING:
    from porting.diagnosis import Diagnosis
    from porting.model.planning import Step

__all__ = ["GroupNorm", "KIND"]


@dataclass(eq=False)
class GroupNorm(Layer):
    """Flux `GroupNorm(channels, groups; affine, eps)` / `InstanceNorm(channels)` (groups =
    channels) at inference with each sample's own statistics (the λ is a separate activation).

    `channels`, `groups`: Flux's `chs` and `G` (`G` divides `chs`); `scale`, `bias`: Flux's `γ`,
    `β` (`(C,)`), or both None (`affine=false`); `eps`: Flux's `ϵ` (1f-5).
    """

    channels: int
    groups: int
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    _: KW_ONLY
    eps: float = 1e-5
    name: str | None = None
    kind = "groupnorm"
    needs_spatial = True

    def __post_init__(self) -> None:
        where = self.label
        self.channels = schema.integer(self.channels, "channels", where)
        self.groups = schema.integer(self.groups, "groups", where)
        if self.channels < 1 or self.groups < 1 or self.channels % self.groups:
            raise PortingError(
                f"{where}: groups={self.groups} for channels={self.channels}; expected a "
                "positive number of groups that divides the channels (Flux's GroupNorm check)"
            )
        if (self.scale is None) != (self.bias is None):
            raise PortingError(f"{where}: scale and bias come together (affine) or not at all")
        if self.scale is not None:
            for key in ("scale", "bias"):
                a = weight_array(getattr(self, key), key, where, (1, 2))
                if a.size != self.channels or (a.ndim == 2 and 1 not in a.shape):
                    raise PortingError(
                        f"{where}: {key} has shape {a.shape}; expected ({self.channels},): one "
                        "value per channel"
                    )
                object.__setattr__(self, key, a.reshape(-1))
        check_dtype_and_eps(self.scale, self.bias, self.eps, where)

    def params(self) -> dict[str, np.ndarray]:
        return affine_params(self.scale, self.bias)

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        size = tuple(size)
        if len(size) < 2 or len(size) > 4 or size[-1] != self.channels:
            raise PortingError(
                f"{self.label}: its input has size {fmt_size(size)} per sample; expected "
                f"(X1, ..., {self.channels}): 1 to 3 spatial dimensions and {self.channels} "
                "channels (Flux normalises over the spatial dimensions and each group's channels)"
            )
        return size

    def stages(self) -> list[Stage]:
        norm = NormStage(
            axes=-1,  # set per input: every dimension but the groups and the batch
            groups=self.groups,
            eps=float(self.eps),
            scale=self.scale,
            bias=self.bias,
            affine_shape=(),
            keras=self._keras,
        )
        return [CaptureStage(norm=norm), norm]

    def _keras(self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...]) -> KerasTensor:
        return ctx.make(
            "GroupNormalization",
            "",
            groups=int(self.groups),
            axis=-1,
            epsilon=float(self.eps),
            center=self.scale is not None,
            scale=self.scale is not None,
        )(t)

    def describe(self) -> str:
        affine = "" if self.scale is not None else ", affine=false"
        what = "instance" if self.groups == self.channels else f"{self.groups} groups"
        return f"groupnorm({self.channels} channels, {what}, eps={self.eps:g}{affine})"


def _weights(layer: GroupNorm, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    if layer.scale is None or layer.bias is None:
        return []
    return [np.array(layer.scale, dtype=dtype), np.array(layer.bias, dtype=dtype)]


def _diagnose(
    step: Step, x_ins_tf: list[Any], expected_tf: Any, actual_tf: Any, spatial: str
) -> Diagnosis | None:
    """Normalisation causes (porting.diagnosis.diagnose_normalisation: epsilon, grouping) for
    a divergent groupnorm, from its Knet input and output (TensorFlow layout)."""
    from porting.diagnosis import diagnose_normalisation

    layer = cast(GroupNorm, step.layer)
    return diagnose_normalisation(
        x_ins_tf[0],
        actual_tf,
        groups=int(layer.groups),
        scale=None if layer.scale is None else np.asarray(layer.scale, np.float64),
        bias=None if layer.bias is None else np.asarray(layer.bias, np.float64),
        eps=float(layer.eps),
        expected=expected_tf,
    )


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> GroupNorm:
    for key in ("channels", "groups"):
        if d.get(key) is None:
            raise PortingError(f'{where}: needs "{key}"')
    eps = d.get("eps")
    return GroupNorm(
        schema.integer(d["channels"], "channels", where),
        schema.integer(d["groups"], "groups", where),
        param("scale"),
        param("bias"),
        eps=1e-5 if eps is None else schema.number(eps, "eps", where),
        name=d.get("name"),
    )


def _example() -> Example:
    rng = np.random.default_rng(0)
    c = 4
    scale = rng.uniform(0.5, 1.5, c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    return [GroupNorm(c, 2, scale, bias)], (5, 3, c)


KIND = Kind(
    name="groupnorm",
    layer=GroupNorm,
    prefix="gn",
    from_json=_from_json,
    to_json=lambda layer: {"channels": layer.channels, "groups": layer.groups, "eps": layer.eps},
    weights=_weights,
    knet="Flux `GroupNorm(C, G)` / `InstanceNorm(C)` (G = C), each sample's own statistics",
    keras="`GroupNormalization(groups=G, epsilon=eps)`, gamma/beta = γ/β",
    schema='params scale, bias; "channels", "groups", "eps"',
    keras_layers=(KerasLayer("GroupNormalization", direct={}),),
    diagnose=_diagnose,
    example=_example,
)
