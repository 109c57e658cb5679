"""The `batchnorm` kind: Knet `batchnorm(x, moments, params; eps=1e-5)` at inference.

Knet (ops20/batchnorm.jl, docs/knet.md#batchnorm) normalises each channel (the
second-to-last Julia dimension: C of `(X1, ..., C, N)`, the features of a `(F, N)` dense output)
with the running statistics of `bnmoments`, in the element type `T` of `x`:

    ivar = 1 ./ sqrt.(var .+ T(eps));   y = g .* (x .- mean) .* ivar .+ b

`params` is `bnparams(C)`: ONE vector of length 2C, the scale `g` in the first half and the bias
`b` in the second; without it (non-affine) `y = (x .- mean) .* ivar`. Keras:
`BatchNormalization(epsilon=eps, momentum=1 - Knet's momentum)` (Keras weights the OLD value:
Knet's 0.1 is Keras 0.9; Keras's defaults 1e-3 / 0.99 would be wrong), weights
`[gamma, beta, moving_mean, moving_variance]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from porting import layout, magnitude
from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, KerasLayer, Kind, Layer, check_real, fmt_size, weight_array
from porting.model.stages import Array, KerasContext, KerasTensor, Stage, labelled_out_size

if TYPE_CHECKING:
    from porting.diagnosis import Diagnosis
    from porting.model.planning import Step

__all__ = ["BatchNorm", "BatchNormStage", "KIND"]


def _channel_shape(c: int, ndim: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector on a Julia `(..., C, N)` array."""
    shape = [1] * ndim
    shape[-2] = c
    return tuple(shape)


@dataclass(frozen=True, eq=False)
class BatchNormStage(Stage):
    """Knet's inference batchnorm, every concern of it."""

    mean: Any = None
    var: Any = None
    scale: Any = None  # None: non-affine
    bias: Any = None
    eps: float = 1e-5
    momentum: float = 0.1

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        c = size[-1]
        if c != self.channels:
            what = "features" if len(size) == 1 else "channels"
            raise PortingError(
                f"its input has {c} {what} (size {fmt_size(size)} per sample) but the moments "
                f"hold {self.channels}; expected the number of {what}"
            )
        return tuple(size)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        t = x.dtype.type
        shape = _channel_shape(self.channels, x.ndim)
        mean = self.mean.reshape(shape).astype(x.dtype, copy=False)
        ivar: Array = t(1) / np.sqrt(
            self.var.reshape(shape).astype(x.dtype, copy=False) + t(self.eps)
        )
        if self.scale is None:
            y: Array = (x - mean) * ivar
            return y
        g = self.scale.reshape(shape).astype(x.dtype, copy=False)
        b = self.bias.reshape(shape).astype(x.dtype, copy=False)
        y = g * (x - mean) * ivar + b
        return y

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        """`S = |g| (S_x + |mean|) ivar + |b|` (porting.magnitude.batchnorm)."""
        return magnitude.batchnorm(
            s, self.mean, self.var, self.scale, self.bias, self.eps, dtype=wd
        )

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return 4  # x - mean, * ivar (itself from sqrt and a division), * g, + b

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        return ctx.make(
            "BatchNormalization",
            self.role,
            axis=-1,
            epsilon=float(self.eps),
            momentum=float(1.0 - self.momentum),
            center=self.scale is not None,
            scale=self.scale is not None,
        )(t)


def _vector(a: object, what: str, where: str) -> np.ndarray:
    a = weight_array(a, what, where, (1, 2, 3, 4, 5))
    extra = [n for i, n in enumerate(a.shape) if n != 1 and i != max(a.ndim - 2, 0)]
    if extra and a.ndim > 1:
        raise PortingError(
            f"{where}: {what} has shape {a.shape}; expected one value per channel: (C,), (C, 1) "
            "or (1, ..., C, 1) as bnmoments stores it"
        )
    return a


@dataclass(eq=False)
class BatchNorm(Layer):
    """Knet `batchnorm(x, moments, params; eps=1e-5)` at inference (running statistics).

    `mean`, `var`: `moments.mean` / `moments.var` (`(1, 1, C, 1)`, `(C, 1)` or `(C,)`);
    `bnparams`: Knet's `params`, `bnparams(C)`: one vector `[scale; bias]` of length 2C, or
    None (non-affine);
    `momentum`: bnmoments' (0.1), kept for the Keras layer's training behaviour.
    """

    mean: np.ndarray
    var: np.ndarray
    bnparams: np.ndarray | None = None
    _: KW_ONLY
    eps: float = 1e-5
    momentum: float = 0.1
    name: str | None = None
    kind = "batchnorm"

    def __post_init__(self) -> None:
        where = self.label
        self.mean = _vector(self.mean, "mean", where)
        self.var = _vector(self.var, "var", where)
        c = self.mean.size
        if self.var.size != c:
            raise PortingError(
                f"{where}: var has {self.var.size} values but mean has {c}; expected one per channel"
            )
        if self.bnparams is not None:
            p = weight_array(self.bnparams, "bnparams", where, (1, 2))
            if p.size != 2 * c or (p.ndim == 2 and 1 not in p.shape):
                raise PortingError(
                    f"{where}: bnparams has shape {p.shape}; expected bnparams(C): one "
                    f"vector of 2C = {2 * c} values, scale first, then bias"
                )
            self.bnparams = p
        dtypes = {a.dtype for a in self.params().values()}
        if len(dtypes) > 1:
            raise PortingError(
                f"{where}: mean, var and params mix {', '.join(sorted(map(str, dtypes)))}; "
                "expected one element type"
            )
        if (self.var < 0).any() or not np.isfinite(self.var).all():
            raise PortingError(f"{where}: var holds negative or non-finite values; expected >= 0")
        check_real(self.eps, where, "eps")
        if not self.eps > 0:
            raise PortingError(f"{where}: eps={self.eps!r}: expected a positive number")
        check_real(self.momentum, where, "momentum")
        if not 0 <= self.momentum <= 1:
            raise PortingError(f"{where}: momentum={self.momentum!r}: expected 0 <= momentum <= 1")

    def params(self) -> dict[str, np.ndarray]:
        d = {"mean": self.mean, "var": self.var}
        if self.bnparams is not None:
            d["bnparams"] = self.bnparams
        return d

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def stage(self) -> BatchNormStage:
        c = self.channels
        p = None if self.bnparams is None else self.bnparams.reshape(-1)
        return BatchNormStage(
            mean=self.mean.reshape(-1),
            var=self.var.reshape(-1),
            scale=None if p is None else p[:c],
            bias=None if p is None else p[c:],
            eps=float(self.eps),
            momentum=float(self.momentum),
        )

    def stages(self) -> list[Stage]:
        return [self.stage()]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return labelled_out_size(self.label, self.stage(), size)

    def describe(self) -> str:
        affine = "" if self.bnparams is not None else ", non-affine"
        return f"batchnorm({self.channels} channels, eps={self.eps:g}{affine})"


def _weights(layer: BatchNorm, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    """Keras order: gamma, beta (affine only), moving mean, moving variance; per feature in
    Keras' Flatten order when the input came from a `mat` of a spatial tensor."""
    st = layer.stage()
    vs = ([st.scale, st.bias] if st.scale is not None else []) + [st.mean, st.var]
    flat = step.flat_from if len(step.in_size) == 1 else None
    if flat is not None and len(flat) > 1:
        order = np.arange(math.prod(flat), dtype=np.float64).reshape((*flat, 1), order="F")
        perm = layout.activations_to_tf(order, spatial).reshape(-1).astype(np.intp)
        vs = [v[perm] for v in vs]
    return [np.array(v, dtype=dtype) for v in vs]


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> BatchNorm:
    mean, var = param("mean"), param("var")
    if mean is None or var is None:
        raise PortingError(f"{where}: needs params.mean and params.var (the running moments)")
    eps = d.get("eps")
    momentum = d.get("momentum")
    return BatchNorm(
        mean,
        var,
        param("bnparams"),
        eps=1e-5 if eps is None else schema.number(eps, "eps", where),
        momentum=0.1 if momentum is None else schema.number(momentum, "momentum", where),
        name=d.get("name"),
    )


def _diagnose(
    step: Step, x_ins_tf: list[Array], expected_tf: Array, actual_tf: Array, spatial: str
) -> Diagnosis | None:
    """Batchnorm causes (porting.diagnosis.diagnose_batchnorm) for a divergent batchnorm layer:
    its Knet input, Knet output and the port's output for that input, in TensorFlow layout."""
    from porting.diagnosis import diagnose_batchnorm

    if len(step.stages) != 1:
        return None
    ws = _weights(cast(BatchNorm, step.layer), step, spatial, np.float64)
    g, b = (ws[0], ws[1]) if len(ws) == 4 else (None, None)
    return diagnose_batchnorm(
        x_ins_tf[0],
        actual_tf,
        mean=ws[-2],
        var=ws[-1],
        scale=g,
        bias=b,
        eps=float(cast(BatchNormStage, step.stages[0]).eps),
        expected=expected_tf,
    )


def _example() -> Example:
    rng = np.random.default_rng(0)
    c = 3
    mean = rng.standard_normal(c).astype(np.float32)
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    params = rng.standard_normal(2 * c).astype(np.float32)
    return [BatchNorm(mean, var, params)], (4, 3, c)


KIND = Kind(
    name="batchnorm",
    layer=BatchNorm,
    prefix="bn",
    from_json=_from_json,
    to_json=lambda layer: {"eps": layer.eps, "momentum": layer.momentum},
    weights=_weights,
    knet="`batchnorm(x, moments, params)`",
    keras="`BatchNormalization(epsilon=Knet's 1e-5, momentum=1 - Knet's 0.1)`, gamma/beta from `[scale; bias]`",
    schema='params mean, var, bnparams; "eps", "momentum" (since version 2)',
    keras_layers=(KerasLayer("BatchNormalization", direct={"training": False}),),
    diagnose=_diagnose,
    example=_example,
)
