"""What the `layernorm` and `groupnorm` kinds share: normalisation by a sample's own statistics.

Both normalise groups of elements of one sample by the group's mean and biased variance
(`var(x; corrected=false)`), computed in the element type of `x`, then apply a per-element
(layernorm) or per-channel (groupnorm) scale and bias. The denominator is one of (the `formula`
names; docs/flux.md#normalisation-flux says which Flux version computes which):

- `"var"`:  `sqrt(var + eps)` (Flux GroupNorm/InstanceNorm always; LayerNorm from 0.16.11;
  Keras's LayerNormalization and GroupNormalization);
- `"eps2"`: `sqrt(var + eps^2)` (Flux LayerNorm 0.15.0-0.16.10, `eps^2` formed in the element
  type);
- `"std"`:  `sqrt(var) + eps` (Flux LayerNorm up to 0.14: `std(x) + eps`).

A layer is two stages: `CaptureStage` (Knet forward: the identity) holds the input for the
magnitude, which needs the signed values and not only `|x|`, and `NormStage` computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError
from porting.model.layer import check_real
from porting.model.stages import Array, KerasContext, KerasTensor, Stage

__all__ = [
    "FORMULAS",
    "CaptureStage",
    "NormStage",
    "affine_params",
    "check_dtype_and_eps",
    "group_view",
    "normalise",
]

FORMULAS = ("var", "eps2", "std")


def check_dtype_and_eps(
    scale: np.ndarray | None, bias: np.ndarray | None, eps: float, where: str
) -> None:
    """A norm layer's last checks: its scale and bias (checked arrays, both or neither) share
    one element type, and its `eps` is a positive real number."""
    if scale is not None and bias is not None and scale.dtype != bias.dtype:
        raise PortingError(
            f"{where}: scale is {scale.dtype}, bias {bias.dtype}; expected one element type"
        )
    check_real(eps, where, "eps")
    if not eps > 0:
        raise PortingError(f"{where}: eps={eps!r}: expected a positive number")


def affine_params(scale: np.ndarray | None, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    """A norm layer's `params()`: its scale and bias, or nothing without the affine part."""
    if scale is None or bias is None:
        return {}
    return {"scale": scale, "bias": bias}


def group_view(x: Array, groups: int | None) -> Array:
    """`x` (Julia-indexed, `(size..., N)`) as the array whose leading dimensions hold the
    elements normalised together: itself for a layer norm; for a group norm (`groups` given)
    the channels split into `(C/G, G)` the way Julia's column-major `reshape` splits them."""
    if groups is None:
        return x
    *sp, c, n = x.shape
    return x.reshape((*sp, c // groups, groups, n), order="F")


def _stats(x: Array, axes: int) -> tuple[Array, Array]:
    ax = tuple(range(axes))
    mu = x.mean(axis=ax, keepdims=True, dtype=x.dtype)
    dev = x - mu
    var = (dev * dev).mean(axis=ax, keepdims=True, dtype=x.dtype)
    return mu, var


def _inverse(var: Array, eps: float, formula: str) -> Array:
    t = var.dtype.type
    e = t(eps)
    if formula == "var":
        out: Array = t(1) / np.sqrt(var + e)
    elif formula == "eps2":
        out = t(1) / np.sqrt(var + e * e)
    else:
        out = t(1) / (np.sqrt(var) + e)
    return out


def normalise(x: Array, axes: int, groups: int | None, eps: float, formula: str) -> Array:
    """`(x - mean) / den` over the first `axes` dimensions of `group_view(x)`, in `x`'s dtype
    (the shape of `x` kept)."""
    xv = group_view(x, groups)
    mu, var = _stats(xv, axes)
    y: Array = (xv - mu) * _inverse(var, eps, formula)
    return y.reshape(x.shape, order="F") if groups is not None else y


@dataclass(frozen=True, eq=False)
class NormStage(Stage):
    """The normalisation and its affine part; a kind gives `axes` (or `groups`), the shape of
    its scale and bias (`affine_shape`: leading Julia dimensions; per channel with `groups`)
    and the function building its Keras layer (`keras(ctx, t, in_size)`)."""

    axes: int = 1  # -1 with `groups`: every dimension of the group view but (G, N)
    groups: int | None = None
    eps: float = 1e-5
    formula: str = "var"
    scale: Any = None  # None: not affine
    bias: Any = None
    affine_shape: tuple[int, ...] = ()  # scale's shape without the batch dimension
    keras: Any = None  # (ctx, t, in_size) -> KerasTensor

    def n_axes(self, ndim: int) -> int:
        """How many leading dimensions of `group_view` of an `ndim`-dimensional `x` are
        normalised together."""
        return self.axes if self.axes >= 0 else ndim - 1

    def _affine(self, a: Any, x: Array) -> Array:
        """`a` (scale or bias) in `x`'s dtype, shaped to broadcast on `x`: `affine_shape`
        leading (layernorm), or one value per channel (groupnorm)."""
        arr: Array = np.asarray(a).astype(x.dtype, copy=False)
        if self.groups is not None:
            shape = [1] * x.ndim
            shape[-2] = arr.size
            return arr.reshape(shape)
        return arr.reshape((*self.affine_shape, *([1] * (x.ndim - len(self.affine_shape)))))

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        """Flux's arithmetic: normalise, then `scale .* y .+ bias` (Flux's `Scale`; for the
        channels of a group norm `γ .* y .+ β`)."""
        y = normalise(x, self.n_axes(x.ndim), self.groups, self.eps, self.formula)
        if self.scale is None:
            return y
        g, b = self._affine(self.scale, x), self._affine(self.bias, x)
        out: Array = g * y + b
        return out

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        return s  # formed by the CaptureStage before it, from the signed input

    def magnitude_of_input(self, s: Array, x: Array, wd: npt.DTypeLike) -> Array:
        """`S` of the output from the input `x` and its magnitudes `s` (`|x|`, plus the
        incoming errors; docs/numerics.md#norm-tolerance): with `z` the normalised value and `a = 1/den` of its group,

            S_y = |scale| a (s + mean(s) + f |z| mean(|z| s)) + |bias|

        the first-order change of `y` under a change of `x` bounded by `s` (the deviation and
        the mean it subtracts; the variance through `den`, `f = 1` for `var`/`eps2`,
        `f = (sigma + eps) / sigma` for `std`), which also bounds the rounding of the sums
        (K = the group's size + 4). In float64, then `wd`."""
        x64 = group_view(np.asarray(x, dtype=np.float64), self.groups)
        s64 = group_view(np.asarray(s, dtype=np.float64), self.groups)
        n = self.n_axes(np.ndim(x))
        ax = tuple(range(n))
        mu, var = _stats(x64, n)
        a = _inverse(var, self.eps, self.formula)
        z = np.abs((x64 - mu) * a)
        f: Any = 1.0
        if self.formula == "std":
            sigma = np.sqrt(var)
            f = (sigma + self.eps) / np.maximum(sigma, np.finfo(np.float64).tiny)
        core = a * (
            s64 + s64.mean(axis=ax, keepdims=True) + f * z * (z * s64).mean(axis=ax, keepdims=True)
        )
        core = core.reshape(x.shape, order="F") if self.groups is not None else core
        if self.scale is not None:
            core = np.abs(self._affine(self.scale, core)) * core + np.abs(
                self._affine(self.bias, core)
            )
        y: Array = core.astype(wd, copy=False)
        return y

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        return self.keras(ctx, t, in_size)


@dataclass(frozen=True, eq=False)
class CaptureStage(Stage):
    """Before a `NormStage`: the identity in Knet's forward and in Keras, whose Knet output
    (the layer's input, kept by verification) gives the norm's magnitudes their signs."""

    norm: NormStage = NormStage()
    group_size: int = 1  # without `norm.groups`: the elements normalised together
    needs_output = True

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        if out is None:  # pragma: no cover - verification keeps every needs_output stage's
            raise PortingError("normalisation magnitude: the layer's input was not kept")
        return self.norm.magnitude_of_input(s, out, wd)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        n = self.group_size
        if self.norm.groups is not None:  # every position of the group's channels
            n = math.prod(in_size[:-1]) * (in_size[-1] // self.norm.groups)
        return n + 4  # the mean's and the variance's sums, den, scale, bias

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        return t
