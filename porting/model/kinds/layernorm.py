"""The `layernorm` kind: Flux `LayerNorm(size; affine, eps)` (porting.model.kinds._normalise).

Each sample is normalised over its first `length(size)` Julia dimensions (the whole `size`
block, e.g. the features of `(F, N)`, or `(X1, X2, C)` of an image) by its own mean and biased
variance; the denominator is the one of `formula` (`"std"`: Flux <= 0.14, `std + eps`;
`"eps2"`: Flux 0.15.0-0.16.10, `sqrt(var + eps^2)`; `"var"`: Flux >= 0.16.11 and Keras,
`sqrt(var + eps)`: docs/flux.md#normalisation-flux). Affine: Flux's `Scale`, one scale and one
bias per element of `size`: `scale .* y .+ bias`.

Keras: `LayerNormalization(axis=<the TensorFlow axes of those dimensions>, epsilon=eps)` for
`"var"`, `epsilon=eps^2` (formed in the element type) for `"eps2"`; gamma/beta are the scale
and bias transposed to TensorFlow's axis order. `"std"` has no built-in equivalent (refused).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from porting import layout
from porting.errors import PortingError
from porting.model import schema
from porting.model.kinds._normalise import (
    FORMULAS,
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

__all__ = ["LayerNorm", "KIND"]

STD_REFUSAL = (
    "formula 'std' (Flux <= 0.14: (x - mean) / (std + eps)) has no Keras built-in equivalent: "
    "LayerNormalization divides by sqrt(var + epsilon), which differs from std + eps by about "
    "eps/std relative (1e-5 at std 1, far beyond float32 rounding) and no epsilon makes them "
    "agree for every sample; re-save the model from Flux >= 0.16.11 (or 0.15-0.16.10, formula "
    "'eps2') after checking its outputs there, or keep it in Julia"
)


def _tf_axes(size: tuple[int, ...], dims: int, spatial: str) -> list[int]:
    """The Keras axes (batch = 0) of the first `dims` Julia dimensions of a sample `size`."""
    n = len(size)
    if dims == n:
        return list(range(1, n + 1))
    order = layout.spatial_to_tf(tuple(range(n - 1)), spatial)  # Julia spatial axes, TF order
    return sorted(1 + j for j, i in enumerate(order) if i < dims)


def _affine_to_tf(a: np.ndarray, size: tuple[int, ...], spatial: str) -> np.ndarray:
    """A scale/bias of Julia shape `size[:dims]` -> Keras' gamma/beta (TF axis order)."""
    dims, n = a.ndim, len(size)
    if n == 1:
        return a.reshape(-1)
    order = list(layout.spatial_to_tf(tuple(range(n - 1)), spatial)) + [n - 1]
    perm = [i for i in order if i < dims]
    return np.transpose(a, perm)


@dataclass(eq=False)
class LayerNorm(Layer):
    """Flux `LayerNorm(size, λ; affine, eps)` at inference (the λ is a separate activation).

    `size`: Flux's `size` (the leading Julia dimensions normalised together, e.g. `(F,)`);
    `scale`, `bias`: Flux's `Scale` (`diag.scale`, `diag.bias`), each of shape `size`, or both
    None (`affine=false`); `eps`: Flux's `ϵ` (1f-5); `formula`: "var", "eps2" or "std" (which
    Flux version wrote it: see the module docstring).
    """

    size: tuple[int, ...]
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    _: KW_ONLY
    eps: float = 1e-5
    formula: str = "var"
    name: str | None = None
    kind = "layernorm"

    def __post_init__(self) -> None:
        where = self.label
        self.size = schema.size(
            list(self.size) if isinstance(self.size, tuple) else self.size, "size", where
        )
        if self.formula not in FORMULAS:
            raise PortingError(
                f"{where}: formula={self.formula!r}; expected one of {', '.join(FORMULAS)} "
                "(how the Flux version that wrote it adds eps: docs/flux.md#normalisation-flux)"
            )
        if (self.scale is None) != (self.bias is None):
            raise PortingError(f"{where}: scale and bias come together (affine) or not at all")
        if self.scale is not None:
            for key in ("scale", "bias"):
                a = weight_array(getattr(self, key), key, where, (1, 2, 3, 4))
                if tuple(a.shape) != self.size:
                    raise PortingError(
                        f"{where}: {key} has shape {a.shape}; expected size {fmt_size(self.size)}"
                        " (Flux's Scale holds one value per normalised element)"
                    )
                object.__setattr__(self, key, a)
        check_dtype_and_eps(self.scale, self.bias, self.eps, where)

    def params(self) -> dict[str, np.ndarray]:
        return affine_params(self.scale, self.bias)

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        size = tuple(size)
        k = len(self.size)
        if len(size) < k or size[:k] != self.size or len(size) > 4:
            raise PortingError(
                f"{self.label}: its input has size {fmt_size(size)} per sample; expected its "
                f"first {k} dimension(s) to be LayerNorm's size {fmt_size(self.size)} (Flux's "
                "size check)"
            )
        return size

    def stages(self) -> list[Stage]:
        norm = NormStage(
            axes=len(self.size),
            eps=float(self.eps),
            formula=self.formula,
            scale=self.scale,
            bias=self.bias,
            affine_shape=self.size,
            keras=self._keras,
        )
        return [CaptureStage(norm=norm, group_size=math.prod(self.size)), norm]

    def _keras(self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...]) -> KerasTensor:
        if self.formula == "std":
            raise PortingError(f"{self.label}: {STD_REFUSAL}")
        eps = float(self.eps)
        if self.formula == "eps2":
            e = np.dtype(ctx.dtype).type(eps)
            eps = float(e * e)
        return ctx.make(
            "LayerNormalization",
            "",
            axis=_tf_axes(tuple(in_size), len(self.size), ctx.spatial),
            epsilon=eps,
            center=self.scale is not None,
            scale=self.scale is not None,
        )(t)

    def describe(self) -> str:
        affine = "" if self.scale is not None else ", affine=false"
        return f"layernorm({fmt_size(self.size)}, eps={self.eps:g}, {self.formula}{affine})"


def _weights(layer: LayerNorm, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    """gamma, beta in TensorFlow's axis order (Keras' Flatten order after a `mat`)."""
    if layer.scale is None or layer.bias is None:
        return []
    vs = [layer.scale, layer.bias]
    flat = step.flat_from if len(step.in_size) == 1 else None
    if flat is not None and len(flat) > 1:
        order = np.arange(math.prod(flat), dtype=np.float64).reshape((*flat, 1), order="F")
        perm = layout.activations_to_tf(order, spatial).reshape(-1).astype(np.intp)
        return [np.array(v.reshape(-1)[perm], dtype=dtype) for v in vs]
    return [np.array(_affine_to_tf(v, step.in_size, spatial), dtype=dtype) for v in vs]


def _diagnose(
    step: Step, x_ins_tf: list[Any], expected_tf: Any, actual_tf: Any, spatial: str
) -> Diagnosis | None:
    """Normalisation causes (porting.diagnosis.diagnose_normalisation: epsilon and its
    placement) for a divergent layernorm, from its Knet input and output (TensorFlow layout)."""
    from porting.diagnosis import diagnose_normalisation

    layer = cast(LayerNorm, step.layer)
    x = np.asarray(x_ins_tf[0])
    axes = tuple(_tf_axes(step.in_size, len(layer.size), spatial)) if x.ndim > 2 else (1,)
    g = b = None
    if layer.scale is not None:
        shape = [1] * x.ndim
        for ax in axes:
            shape[ax] = x.shape[ax]
        g, b = (w.reshape(shape) for w in _weights(layer, step, spatial, np.float64))
    return diagnose_normalisation(
        x,
        actual_tf,
        axes=axes,
        scale=g,
        bias=b,
        eps=float(layer.eps),
        formula=layer.formula,
        expected=expected_tf,
    )


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> LayerNorm:
    size = d.get("size")
    if size is None:
        raise PortingError(f'{where}: needs "size" (the Julia dimensions normalised together)')
    eps = d.get("eps")
    formula = d.get("formula", "var")
    return LayerNorm(
        schema.size(size, "size", where),
        param("scale"),
        param("bias"),
        eps=1e-5 if eps is None else schema.number(eps, "eps", where),
        formula=schema.text(formula, "formula", where),
        name=d.get("name"),
    )


def _example() -> Example:
    rng = np.random.default_rng(0)
    size = (4, 3)
    scale = rng.uniform(0.5, 1.5, size).astype(np.float32)
    bias = rng.standard_normal(size).astype(np.float32)
    return [LayerNorm(size, scale, bias)], (*size, 2)


KIND = Kind(
    name="layernorm",
    layer=LayerNorm,
    prefix="ln",
    from_json=_from_json,
    to_json=lambda layer: {
        "size": list(layer.size),
        "eps": layer.eps,
        "formula": layer.formula,
    },
    weights=_weights,
    knet="Flux `LayerNorm(size; eps)`: normalise over the first `length(size)` dims, then `Scale`",
    keras="`LayerNormalization(axis=those axes, epsilon=eps)` (`eps^2` for Flux 0.15-0.16.10; Flux <= 0.14's `std + eps` refused)",
    schema='params scale, bias; "size", "eps", "formula" ("var", "eps2" or "std")',
    keras_layers=(KerasLayer("LayerNormalization", direct={}),),
    diagnose=_diagnose,
    example=_example,
)
