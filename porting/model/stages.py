"""The stages a Knet layer computes, in its order, each with every concern in one place.

A layer kind (porting.model.kinds) says what Knet computes as an ordered list of stages, for
example Knet's tutorial `Conv`: `conv4(w, x) .+ b`, then `pool`, then the activation. A stage
knows, for its own operation:

- `out_size(size)`: the per-sample Julia size after it;
- `forward(x, backend, tags)`: what Knet computes (porting.knet; Julia-indexed NumPy);
- `magnitude(s, out, wd)`: the sum of magnitudes `S` carried through it (porting.magnitude);
- `build(ctx, t, in_size, out_size)`: the Keras 3 layers computing it, applied to tensor `t`;
- `terms(in_size)`: the number of terms `K` it sums per output (None: it sums none).

Nothing here imports TensorFlow or Keras: `build` receives the `keras` module in `ctx`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from porting import layout, magnitude
from porting.errors import PortingError
from porting.geometry import ConvGeometry

__all__ = [
    "Stage",
    "KernelStage",
    "ConvStage",
    "ActStage",
    "DenseStage",
    "FlattenStage",
    "DropoutStage",
    "KerasContext",
    "activate",
]


# Knet's selu constants (ops20/activation.jl): λ01 and λ01 * α01, rounded to the element type.
SELU_LAMBDA = 1.0507009873554805
SELU_LAMBDA_ALPHA = 1.7580993408473773


def activate(name: str, x: np.ndarray, dims: int = 1) -> np.ndarray:
    """Knet's activation `name` on a Julia-indexed array, in x's dtype (a new array)."""
    t = x.dtype.type
    if name == "identity":
        return x
    if name == "relu":
        return np.maximum(x, t(0))
    if name == "tanh":
        return np.tanh(x)
    with np.errstate(over="ignore"):
        if name == "sigm":
            # Knet: x >= 0 ? 1/(1+exp(-x)) : (z = exp(x); z/(1+z))
            z = np.exp(-np.abs(x))
            return np.where(x >= 0, t(1) / (t(1) + z), z / (t(1) + z)).astype(x.dtype, copy=False)
        if name == "gelu":  # Ops21: x * (1 + erf(x / T(sqrt(2)))) / 2, exact (erf)
            from scipy.special import erf

            return (x * (t(1) + erf(x / t(np.sqrt(2)))) / t(2)).astype(x.dtype, copy=False)
        if name == "swish":  # Ops21: x * sigm(x)
            return (x * activate("sigm", x)).astype(x.dtype, copy=False)
        if name == "hardsigmoid":  # Ops21: x <= -3 ? 0 : x >= 3 ? 1 : (x + 3) / 6
            mid = (x + t(3)) / t(6)
            return np.where(x <= -3, t(0), np.where(x >= 3, t(1), mid)).astype(x.dtype, copy=False)
        if name == "hardswish":  # Ops21: x <= -3 ? 0 : x >= 3 ? x : x * (x + 3) / 6
            mid = x * (x + t(3)) / t(6)
            return np.where(x <= -3, t(0), np.where(x >= 3, x, mid)).astype(x.dtype, copy=False)
        if name == "selu":
            # Knet: x >= 0 ? T(λ01) * x : T(λα01) * (exp(x) - 1)
            neg = t(SELU_LAMBDA_ALPHA) * (np.exp(np.minimum(x, t(0))) - t(1))
            return np.where(x >= 0, t(SELU_LAMBDA) * x, neg).astype(x.dtype, copy=False)
        if name == "elu":
            return np.where(x >= 0, x, np.exp(np.minimum(x, t(0))) - t(1)).astype(
                x.dtype, copy=False
            )
        if name == "softmax":
            axis = dims - 1
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
        if name == "logsoftmax":  # Knet: z = x .- maximum(x; dims); z .- log.(sum(exp.(z); dims))
            axis = dims - 1
            z = x - x.max(axis=axis, keepdims=True)
            return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    raise PortingError(f"unknown activation {name!r}")  # pragma: no cover - validated earlier


def unique_name(name: str, used: set[str]) -> str:
    """`name`, or `name__2`, `name__3`, ... when taken; recorded in `used`."""
    out, n = name, 1
    while out in used:
        n += 1
        out = f"{name}__{n}"
    used.add(out)
    return out


class KerasContext:
    """What a stage needs to build its Keras layers: the `keras` module, the dtype, the spatial
    convention, and the name of the Knet layer being built (every generated name is unique)."""

    def __init__(self, keras, dtype: str, spatial: str):
        self.keras = keras
        self.dtype = dtype
        self.spatial = spatial
        self.base = ""
        self.used: set[str] = set()
        self.notes: list[str] = []  # what the built-in layers cannot do exactly (warned)

    def start(self, base: str) -> None:
        self.base = base

    def name(self, role: str) -> str:
        """`base` for the layer's main Keras layer (role ""), else `base__role`, made unique."""
        return unique_name(self.base if not role else f"{self.base}__{role}", self.used)

    def make(self, cls: str, role: str, *args, **kwargs):
        return getattr(self.keras.layers, cls)(
            *args, name=self.name(role), dtype=self.dtype, **kwargs
        )

    def tf(self, t: tuple[int, ...]) -> tuple[int, ...]:
        return layout.spatial_to_tf(tuple(t), self.spatial)


def _sub(prefix: str, role: str) -> str:
    """The role of a stage's helper layer: `pad` for a main stage, `pool_pad` under `pool`."""
    return f"{prefix}_{role}" if prefix else role


@dataclass(frozen=True, eq=False)
class Stage:
    """Base: the identity. `role` is "" for the stage whose Keras layer carries the Knet layer's
    own name, else the suffix of its Keras names (`conv1__pool`, `conv1__act`)."""

    role: str = ""
    linear = False  # conv4/dense: the part diagnosis recomputes from the weights
    needs_output = False  # magnitude() reads this stage's Knet output
    merges = False  # forward/magnitude/build/out_size take lists (one per input)
    nonnegative = False  # every output is >= 0 (or NaN): its magnitude is itself

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(size)

    def forward(self, x: np.ndarray, backend: str, tags: list) -> np.ndarray:
        return x

    def magnitude(self, s: np.ndarray, out: np.ndarray | None, wd) -> np.ndarray:
        return s

    def build(self, ctx: KerasContext, t, in_size, out_size):  # pragma: no cover
        raise NotImplementedError

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return None

    def note(self, in_size: tuple[int, ...]) -> str | None:
        """A caveat about this stage for the report (e.g. a geometry cuDNN rejects)."""
        return None


# --------------------------------------------------------------------------- conv4 .+ b


def _bias(b: np.ndarray, ndim: int) -> np.ndarray:
    """Conv bias `(Cout,)` -> broadcastable `(1, ..., Cout, 1)`."""
    shape = [1] * ndim
    shape[-2] = b.size
    return b.reshape(-1).reshape(shape)


def _dilate(k: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """A TF kernel `(H, W, Cin, Cout)` written out dilated: zeros between the taps."""
    nd = len(dilation)
    ext = [(n - 1) * d + 1 for n, d in zip(k.shape[:nd], dilation, strict=True)]
    out = np.zeros((*ext, *k.shape[nd:]), dtype=k.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = k
    return out


def needs_written_dilation(geom: ConvGeometry, dtype) -> bool:
    """Stride > 1 with dilation > 1 (Keras refuses it) and 3-D dilation in float64 (no TF CPU
    kernel) run the kernel written out dilated at dilation 1: the same nonzero products."""
    dilated = max(geom.dilation) > 1
    return dilated and (max(geom.stride) > 1 or (geom.nd == 3 and np.dtype(dtype) == np.float64))


@dataclass(frozen=True, eq=False)
class KernelStage(Stage):
    """What the conv4 and deconv4 stages hold: the kernel `w` (1-3 spatial dimensions), the
    bias `b` (or None), the `ConvGeometry` of the Knet keywords and `alpha`."""

    w: Any = None
    b: Any = None
    geometry: Any = None
    alpha: float = 1.0

    @property
    def nd(self) -> int:
        return self.w.ndim - 2


@dataclass(frozen=True, eq=False)
class ConvStage(KernelStage):
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha) .+ b`."""

    groups: int = 1  # Ops21's groups: channels split into contiguous blocks (depthwise: Cin)

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.groups == 1  # diagnosis's conv hypotheses are those of an ungrouped conv

    def _blocks(self, c_in: int):
        """(input channel slice, output channel slice) of every group."""
        ci, co = c_in // self.groups, self.w.shape[-1] // self.groups
        return [
            (slice(g * ci, (g + 1) * ci), slice(g * co, (g + 1) * co)) for g in range(self.groups)
        ]

    def out_size(self, size):
        nd = self.nd
        return (*self.geometry.output_size(size[:-1], self.w.shape[:nd]), int(self.w.shape[-1]))

    def forward(self, x, backend, tags):
        from porting import knet as pknet

        g = self.geometry

        def conv(w, x):
            y = pknet.conv4(w, x, **g.knet_keywords(), alpha=self.alpha, backend=backend)
            tags.append(y)
            return np.asarray(y)

        if self.groups == 1:
            y = conv(self.w, x)
        else:  # one conv4 per group, outputs side by side (NNlib's / Keras's groups)
            parts = [
                conv(np.asfortranarray(self.w[..., o]), np.asfortranarray(x[..., i, :]))
                for i, o in self._blocks(x.shape[-2])
            ]
            y = np.concatenate(parts, axis=-2)
        if self.b is not None:
            y = y + _bias(self.b, y.ndim)
        return y

    def magnitude(self, s, out, wd):
        # conv4(|w|, |x|) in the model's element type: S only sets the scale of the bound (a
        # relative error of 1e-6 in S is immaterial) and float32 halves the cost of the check.
        if self.groups == 1:
            s = magnitude.conv4(self.w, s, self.geometry, self.alpha, wd, x_is_magnitude=True)
        else:
            s = np.concatenate(
                [
                    magnitude.conv4(
                        self.w[..., o],
                        s[..., i, :],
                        self.geometry,
                        self.alpha,
                        wd,
                        x_is_magnitude=True,
                    )
                    for i, o in self._blocks(s.shape[-2])
                ],
                axis=-2,
            )
        return s if self.b is None else magnitude.bias(s, self.b)

    def terms(self, in_size):
        return int(np.prod(self.w.shape[:-1])) + (self.b is not None)

    def note(self, in_size):
        extent = self.geometry.effective_kernel(self.w.shape[: self.nd])
        if any(p >= k for p, k in zip(self.geometry.padding, extent, strict=True)):
            return (
                f"conv padding {self.geometry.padding} >= the dilated kernel extent {extent}: "
                "Knet's CPU path (NNlib) computes it (the outer outputs see only padding); "
                "cuDNN, Knet's GPU path, may reject it"
            )
        return None

    def build(self, ctx, t, in_size, out_size):
        from porting.tf import single_output_stride

        g = self.geometry
        nd = self.nd
        kernel = self.w.shape[:nd]
        pad = ctx.tf(g.padding)
        if any(pad):
            t = _zero_padding(ctx, nd, pad, _sub(self.role, "pad"))(t)
        written = needs_written_dilation(g, ctx.dtype)
        # Axes with a single output run at stride 1 (TF's oneDNN conv can return garbage for a
        # strided axis of output length 1; see porting.tf.single_output_stride) and a Cropping
        # layer keeps that one output: the same products, so the same numbers.
        y_size = g.output_size(in_size[:-1], kernel)
        stride = single_output_stride(y_size, g.stride)
        t = ctx.make(
            f"Conv{nd}D",
            self.role,
            filters=int(self.w.shape[-1]),
            kernel_size=ctx.tf(g.effective_kernel(kernel) if written else kernel),
            strides=ctx.tf(stride),
            dilation_rate=1 if written else ctx.tf(g.dilation),
            padding="valid",
            use_bias=self.b is not None,
            **({"groups": self.groups} if self.groups > 1 else {}),
        )(t)
        if stride != g.stride:
            padded = [x + 2 * p for x, p in zip(in_size[:-1], g.padding, strict=True)]
            extent = g.effective_kernel(kernel)
            # stride-1 length minus the one output kept, on the axes that were changed
            extra = [
                (xp - k + 1) - 1 if s != s0 else 0
                for xp, k, s, s0 in zip(padded, extent, stride, g.stride, strict=True)
            ]
            crop = tuple((0, c) for c in ctx.tf(tuple(extra)))
            t = ctx.make(f"Cropping{nd}D", _sub(self.role, "crop"), crop[0] if nd == 1 else crop)(t)
        return t

    def keras_kernel(self, spatial: str, dtype, converter) -> np.ndarray:
        """The Keras kernel: `converter(w, mode, spatial)` (mode 0 rotated), times `alpha`,
        written out dilated where the Keras layer runs at dilation 1."""
        k = converter(self.w, self.geometry.mode, spatial)
        if self.alpha != 1:
            k = (np.float64(self.alpha) * k.astype(np.float64)).astype(k.dtype)
        if needs_written_dilation(self.geometry, dtype):
            k = _dilate(k, layout.spatial_to_tf(self.geometry.dilation, spatial))
        return k

    def diagnose_kwargs(self, x_in, step) -> dict:
        g = self.geometry
        return dict(w=self.w, x=x_in, bias=self.b, **g.knet_keywords(), alpha=self.alpha)


def _zero_padding(ctx: KerasContext, nd: int, pad: tuple[int, ...], role: str):
    arg = pad[0] if nd == 1 else tuple((p, p) for p in pad)
    return ctx.make(f"ZeroPadding{nd}D", role, padding=arg)


# --------------------------------------------------------------------------- activations


_KERAS_ACTIVATIONS = {
    "relu": "relu",
    "sigm": "sigmoid",
    "tanh": "tanh",
    "elu": "elu",
    "selu": "selu",
    "gelu": "gelu",  # keras.activations.gelu: exact (erf) by default, as Knet's
    "swish": "swish",
    "hardsigmoid": "hard_sigmoid",  # relu6(x + 3) / 6
    "hardswish": "hard_swish",
}


def tf_axis(julia_dim: int, size: tuple[int, ...], spatial: str) -> int:
    """TensorFlow axis (of `(N, ...)`) holding Julia's dimension `julia_dim` (1-based)."""
    if len(size) == 1:
        return -1
    nd = len(size) - 1
    j = julia_dim - 1
    if j == nd:
        return -1
    order = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
    return 1 + order.index(j)


@dataclass(frozen=True, eq=False)
class ActStage(Stage):
    """An element-wise Knet activation, or `softmax(x; dims)`."""

    function: str = "identity"
    dims: int = 1
    # Ops21 relu keywords: x >= max_value ? max_value : x >= threshold ? x :
    # negative_slope * (x - threshold)   (None / 0 / 0: the plain relu)
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    needs_output = True

    @property
    def plain(self) -> bool:
        return self.max_value is None and self.negative_slope == 0 and self.threshold == 0

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        # max(0, x), 1/(1 + exp(-x)), exp(x - m) / sum: never below 0 (NaN stays NaN)
        return (self.function == "relu" and self.plain) or self.function in ("sigm", "softmax")

    def out_size(self, size):
        if self.function in ("softmax", "logsoftmax") and self.dims > len(size):
            raise PortingError(
                f"{self.function} over dims={self.dims} but the input has size {_fmt(size)} per sample; "
                f"expected dims <= {len(size)} (the batch dimension cannot be normalised over)"
            )
        return tuple(size)

    def forward(self, x, backend, tags):
        if self.function == "relu" and not self.plain:
            t = x.dtype.type
            below = (
                t(self.negative_slope) * (x - t(self.threshold))
                if self.negative_slope
                else np.zeros_like(x)
            )
            y = np.where(x >= t(self.threshold), x, below)
            if self.max_value is not None:
                y = np.where(x >= t(self.max_value), t(self.max_value), y)
            return y.astype(x.dtype, copy=False)
        return activate(self.function, x, self.dims)

    def magnitude(self, s, out, wd):
        fn = self.function
        if fn in ("identity", "relu") and self.plain:  # slope <= 1, exact: S passes on
            return s
        out = np.asarray(out, dtype=wd)
        if fn == "selu":
            # slope <= λα01 (x < 0) or λ01, and the rounding of exp and two products
            # (for out < 0, λα01 exp(x) = out + λα01)
            a = np.abs(out) + np.where(out < 0, out + SELU_LAMBDA_ALPHA, 0)
            return SELU_LAMBDA_ALPHA * s + magnitude.ROUND * a
        if fn == "relu" and not self.plain:  # slope <= max(1, |negative_slope|), x - threshold
            return max(1.0, abs(self.negative_slope)) * (s + abs(self.threshold))
        if fn == "gelu":  # slope <= 1.13; erf and the products round relative to |x| <= s
            return 1.13 * s + magnitude.ROUND * np.abs(out)
        if fn == "swish":  # slope <= 1.1; exp and the products
            return 1.1 * s + magnitude.ROUND * np.abs(out)
        if fn == "hardsigmoid":  # (x + 3) / 6: magnitudes of the terms
            return (s + 3.0) / 6.0
        if fn == "hardswish":  # x * (x + 3) / 6
            return s * (s + 3.0) / 6.0
        if fn == "logsoftmax":
            return logsoftmax_magnitude(s, out, self.dims)
        return magnitude.activation(fn, s, out, self.dims)

    def build(self, ctx, t, in_size, out_size):
        fn = self.function
        if fn == "identity":
            return ctx.make("Identity", self.role)(t)
        if fn == "softmax":
            return ctx.make("Softmax", self.role, axis=tf_axis(self.dims, in_size, ctx.spatial))(t)
        if fn == "logsoftmax":
            return build_logsoftmax(ctx, self.role, t, tf_axis(self.dims, in_size, ctx.spatial))
        if fn == "relu" and not self.plain:
            if self.threshold < 0 and self.max_value is not None:
                ctx.notes.append(
                    f"{ctx.base}: relu threshold={self.threshold} < 0 with max_value: Keras's "
                    "ReLU clips to [0, max_value], so threshold < x < 0 gives 0 where Knet "
                    "gives x (no exact built-in there)"
                )
            if self.threshold != 0:
                ctx.notes.append(
                    f"{ctx.base}: relu threshold={self.threshold}: Keras's ReLU gives 0 at "
                    "x == threshold where Knet gives x (no exact built-in there; other inputs "
                    "agree)"
                )
            return ctx.make(
                "ReLU",
                self.role,
                max_value=self.max_value,
                negative_slope=float(self.negative_slope),
                threshold=float(self.threshold),
            )(t)
        if fn == "gelu" and ctx.dtype == "float64":
            ctx.notes.append(
                f"{ctx.base}: Keras's built-in gelu runs TensorFlow's erf, which in float64 is "
                "accurate to about 1e-9 only (Knet's erf to float64's eps): no exact built-in; "
                "verification in float64 will show it"
            )
        return ctx.make("Activation", self.role, _KERAS_ACTIVATIONS[fn])(t)


def logsoftmax_magnitude(s: np.ndarray, out: np.ndarray, dims: int) -> np.ndarray:
    """S after Knet's `logsoftmax(x; dims)`, `y = z .- L`, `z = x .- max`, `L = log(sum(exp(z)))`
    (docs/numerics.md#propagation): an input error `e` moves `y_i` by at most
    `e_i + sum_j p_j e_j` (`p = exp(y)`, the Jacobian `I - p'`); its own rounding is that of
    `z_i` (`|z_i| <= |y_i| + L`), of `L` (`exp` and a sum of `n` terms: `n` in absolute terms,
    as `log` turns a relative error into an absolute one) and of the final subtraction (`|y_i|`).
    `L = -max(y)` (the largest `z` is 0)."""
    axis = dims - 1
    n = out.shape[axis]
    p = np.exp(out)
    first = s + (p * s).sum(axis=axis, keepdims=True)
    a = np.abs(out)
    big_l = -out.max(axis=axis, keepdims=True)
    return first + magnitude.ROUND * 2 * (a + big_l) + n


def build_logsoftmax(ctx: KerasContext, role: str, t, axis: int):
    """Keras's built-in `Activation("log_softmax")` (`keras.ops.log_softmax`: the maximum
    subtracted, then the log of the sum of exponentials, as Knet) works on the last axis; another
    axis is moved last by a `Permute` and back by its inverse (built-in layers only)."""
    rank = len(t.shape) - 1  # without the batch
    if axis in (-1, rank):
        return ctx.make("Activation", role, "log_softmax")(t)
    perm = tuple(i for i in range(1, rank + 1) if i != axis) + (axis,)
    inverse = tuple(perm.index(i) + 1 for i in range(1, rank + 1))
    t = ctx.make("Permute", _sub(role, "to_last"), perm)(t)
    t = ctx.make("Activation", role, "log_softmax")(t)
    return ctx.make("Permute", _sub(role, "from_last"), inverse)(t)


def _fmt(size) -> str:
    return "(" + ", ".join(map(str, size)) + (",)" if len(size) == 1 else ")")


# --------------------------------------------------------------------------- dense, mat, dropout


@dataclass(frozen=True, eq=False)
class DenseStage(Stage):
    """Knet `w * mat(x) .+ b`, `w` of size `(out, in)`."""

    w: Any = None
    b: Any = None
    linear = True

    def out_size(self, size):
        return (int(self.w.shape[0]),)

    def forward(self, x, backend, tags):
        from porting import knet as pknet

        x2 = x if x.ndim == 2 else np.asarray(pknet.mat(x, backend="reference"))
        y = self.w @ x2
        if self.b is not None:
            y += self.b.reshape(-1)[:, None]
        return y

    def magnitude(self, s, out, wd):
        s = magnitude.dense(self.w, s, wd, x_is_magnitude=True)
        return s if self.b is None else magnitude.bias(s, self.b, channel_axis=0)

    def terms(self, in_size):
        return int(self.w.shape[1]) + (self.b is not None)

    def build(self, ctx, t, in_size, out_size):
        if len(in_size) > 1:
            t = ctx.make("Flatten", _sub(self.role, "flatten"))(t)
        return ctx.make("Dense", self.role, int(self.w.shape[0]), use_bias=self.b is not None)(t)

    def diagnose_kwargs(self, x_in, step) -> dict:
        x_arg = x_in
        if x_in.ndim == 2 and step.dense_input is not None:  # give diagnose mat's input
            x_arg = x_in.reshape((*step.dense_input, x_in.shape[-1]), order="F")
        return dict(w=self.w, x=x_arg, bias=self.b)


@dataclass(frozen=True, eq=False)
class FlattenStage(Stage):
    """Knet `mat(x)`: `reshape(x, :, N)` in column-major order (X1 fastest)."""

    def out_size(self, size):
        return (math.prod(size),)

    def forward(self, x, backend, tags):
        from porting import knet as pknet

        return np.asarray(pknet.mat(x, backend="reference"))

    def magnitude(self, s, out, wd):
        return s.reshape((-1, s.shape[-1]), order="F")

    def build(self, ctx, t, in_size, out_size):
        return ctx.make("Flatten", self.role)(t)


@dataclass(frozen=True, eq=False)
class DropoutStage(Stage):
    """Knet `dropout(x, p)`: the identity at inference (Keras `Dropout`, kept for structure)."""

    p: float = 0.0

    def build(self, ctx, t, in_size, out_size):
        if self.p:
            return ctx.make("Dropout", self.role, float(self.p))(t)
        return ctx.make("Identity", self.role)(t)
