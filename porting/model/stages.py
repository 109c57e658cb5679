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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from porting import activations, layout, magnitude
from porting.activations import activate
from porting.errors import PortingError
from porting.geometry import ConvGeometry, ConvOp

if TYPE_CHECKING:
    from porting.model.planning import Step

__all__ = [
    "Stage",
    "KernelStage",
    "ConvStage",
    "ActStage",
    "DenseStage",
    "FlattenStage",
    "DropoutStage",
    "KerasContext",
    "KerasTensor",
    "activate",
    "dilate_kernel",
    "labelled_out_size",
    "sub_role",
    "zero_padding",
]

Array = npt.NDArray[Any]
KerasTensor = Any
"""A Keras symbolic tensor (Keras is not imported here: `build` gets the module in `ctx`)."""


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

    placeholder_init = True
    """Build the layers named in `filled` with zeros in place of their random initialisers
    (`restore_initializers` puts the layers' own back before the model is saved); False: the
    layers' own from the start (tests compare the two saved configs)."""

    def __init__(
        self, keras: Any, dtype: str, spatial: str, filled: frozenset[str] = frozenset()
    ) -> None:
        self.keras = keras
        self.dtype = dtype
        self.spatial = spatial
        self.base = ""
        self.used: set[str] = set()
        self.notes: list[str] = []  # what the built-in layers cannot do exactly (warned)
        # the Keras layers whose every weight the caller sets after building (to_keras: the
        # ones named after a Knet layer with weights): drawing random values for them, only to
        # overwrite them, is ResNet50's largest cost in building (benchmarks/bench_fromkeras.py)
        self.filled = filled
        self._swapped: list[tuple[Any, str, Any]] = []

    def start(self, base: str) -> None:
        self.base = base

    def name(self, role: str) -> str:
        """`base` for the layer's main Keras layer (role ""), else `base__role`, made unique."""
        return unique_name(self.base if not role else f"{self.base}__{role}", self.used)

    def make(self, cls: str, role: str, *args: Any, **kwargs: Any) -> Any:
        """A new `keras.layers.<cls>` named for `role`, in the context's dtype."""
        name = self.name(role)
        layer = getattr(self.keras.layers, cls)(*args, name=name, dtype=self.dtype, **kwargs)
        if self.placeholder_init and name in self.filled:
            zeros = self.keras.initializers.Zeros()
            for attr, init in list(vars(layer).items()):
                if attr.endswith("_initializer") and isinstance(
                    init, self.keras.initializers.Initializer
                ):
                    self._swapped.append((layer, attr, init))
                    setattr(layer, attr, zeros)
        return layer

    def restore_initializers(self) -> None:
        """Give the layers built with zeros (`filled`) their own initialisers back: their
        configs, and so a saved `.keras`, are what they would have been."""
        for layer, attr, init in self._swapped:
            setattr(layer, attr, init)
        self._swapped.clear()

    def tf(self, t: tuple[int, ...]) -> tuple[int, ...]:
        return layout.spatial_to_tf(tuple(t), self.spatial)


def sub_role(prefix: str, role: str) -> str:
    """The role of a stage's helper layer: `pad` for a main stage, `pool_pad` under `pool`.

    >>> sub_role("", "pad"), sub_role("pool", "pad")
    ('pad', 'pool_pad')
    """
    return f"{prefix}_{role}" if prefix else role


def zero_padding(ctx: KerasContext, nd: int, pad: tuple[int, ...], role: str) -> Any:
    """A Keras `ZeroPadding{nd}D` layer padding `pad` cells (TensorFlow order) on both sides."""
    arg = pad[0] if nd == 1 else tuple((p, p) for p in pad)
    return ctx.make(f"ZeroPadding{nd}D", role, padding=arg)


@dataclass(frozen=True, eq=False)
class Stage:
    """Base: the identity. `role` is "" for the stage whose Keras layer carries the Knet layer's
    own name, else the suffix of its Keras names (`conv1__pool`, `conv1__act`).

    A stage that `merges` (Add, Concat) takes lists, one entry per input, in `forward`,
    `magnitude`, `build` and `out_size`.
    """

    role: str = ""
    needs_output = False  # magnitude() reads this stage's Knet output
    merges = False  # forward/magnitude/build/out_size take lists (one per input)

    @property
    def linear(self) -> bool:
        """conv4/dense: the part diagnosis recomputes from the weights."""
        return False

    @property
    def nonnegative(self) -> bool:
        """Every output is >= 0 (or NaN): its magnitude is itself."""
        return False

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(size)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        """Knet's computation on the Julia-indexed `x` (`backend`: porting.knet's); the arrays
        a Knet backend computed are appended to `tags` (they carry the backend's name)."""
        return x

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        """The sum of magnitudes `S` after this stage, from the one before it (`s`), this
        stage's Knet output `out` (when `needs_output`) and the working dtype `wd`."""
        return s

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:  # pragma: no cover
        """The Keras layers computing this stage, applied to `t`."""
        raise NotImplementedError

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return None

    def note(self, in_size: tuple[int, ...]) -> str | None:
        """A caveat about this stage for the report (e.g. a geometry cuDNN rejects)."""
        return None


# --------------------------------------------------------------------------- conv4 .+ b


def _bias(b: Array, ndim: int) -> Array:
    """Conv bias `(Cout,)` -> broadcastable `(1, ..., Cout, 1)`."""
    shape = [1] * ndim
    shape[-2] = b.size
    return b.reshape(-1).reshape(shape)


def dilate_kernel(k: Array, dilation: tuple[int, ...]) -> Array:
    """A TF kernel `(H, W, Cin, Cout)` written out dilated: zeros between the taps.

    >>> dilate_kernel(np.float32([1, 2]).reshape(2, 1, 1), (3,)).ravel().tolist()
    [1.0, 0.0, 0.0, 2.0]
    """
    nd = len(dilation)
    ext = [(n - 1) * d + 1 for n, d in zip(k.shape[:nd], dilation, strict=True)]
    out = np.zeros((*ext, *k.shape[nd:]), dtype=k.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = k
    return out


def needs_written_dilation(geom: ConvGeometry, dtype: npt.DTypeLike) -> bool:
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
    geometry: ConvGeometry = ConvGeometry((0,), (1,), (1,))  # always given by the kind
    alpha: float = 1.0

    @property
    def nd(self) -> int:
        return int(self.w.ndim) - 2


@dataclass(frozen=True, eq=False)
class ConvStage(KernelStage):
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha) .+ b`."""

    groups: int = 1  # Ops21's groups: channels split into contiguous blocks (depthwise: Cin)

    @property
    def linear(self) -> bool:
        return self.groups == 1  # diagnosis's conv hypotheses are those of an ungrouped conv

    def _blocks(self, c_in: int) -> list[tuple[slice, slice]]:
        """(input channel slice, output channel slice) of every group."""
        ci, co = c_in // self.groups, self.w.shape[-1] // self.groups
        return [
            (slice(g * ci, (g + 1) * ci), slice(g * co, (g + 1) * co)) for g in range(self.groups)
        ]

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        nd = self.nd
        return (*self.geometry.output_size(size[:-1], self.w.shape[:nd]), int(self.w.shape[-1]))

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting import knet as pknet

        def conv(w: Array, x: Array) -> Array:
            y = pknet.run_conv4(ConvOp.bind(w, x, self.geometry, self.alpha), backend)
            tags.append(y)
            return np.asarray(y)

        grouped = None
        if self.groups > 1:  # all groups in one call, where onnxruntime computes
            grouped = pknet.run_grouped_conv4(
                self.w, x, self.geometry, self.alpha, self.groups, backend
            )
        if self.groups == 1:
            y = conv(self.w, x)
        elif grouped is not None:
            tags.append(grouped)
            y = np.asarray(grouped)
        else:  # one conv4 per group, outputs side by side (NNlib's / Keras's groups)
            parts = [
                conv(np.asfortranarray(self.w[..., o]), np.asfortranarray(x[..., i, :]))
                for i, o in self._blocks(x.shape[-2])
            ]
            y = np.concatenate(parts, axis=-2)
        if self.b is not None:
            y = y + _bias(self.b, y.ndim)
        return y

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        # conv4(|w|, |x|) in the model's element type: S only sets the scale of the bound (a
        # relative error of 1e-6 in S is immaterial) and float32 halves the cost of the check.
        grouped = None
        if self.groups > 1:
            grouped = magnitude.grouped_conv4(
                self.w, s, self.geometry, self.alpha, wd, self.groups, x_is_magnitude=True
            )
        if self.groups == 1:
            s = magnitude.conv4(self.w, s, self.geometry, self.alpha, wd, x_is_magnitude=True)
        elif grouped is not None:
            s = grouped
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

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return int(np.prod(self.w.shape[:-1])) + (self.b is not None)

    def note(self, in_size: tuple[int, ...]) -> str | None:
        extent = self.geometry.effective_kernel(self.w.shape[: self.nd])
        if any(p >= k for p, k in zip(self.geometry.padding, extent, strict=True)):
            return (
                f"conv padding {self.geometry.padding} >= the dilated kernel extent {extent}: "
                "Knet's CPU path (NNlib) computes it (the outer outputs see only padding); "
                "cuDNN, Knet's GPU path, may reject it"
            )
        return None

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:
        from porting.tf import single_output_stride

        g = self.geometry
        nd = self.nd
        kernel = self.w.shape[:nd]
        pad = ctx.tf(g.padding)
        if any(pad):
            t = zero_padding(ctx, nd, pad, sub_role(self.role, "pad"))(t)
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
            t = ctx.make(
                f"Cropping{nd}D", sub_role(self.role, "crop"), crop[0] if nd == 1 else crop
            )(t)
        return t

    def keras_kernel(
        self, spatial: str, dtype: npt.DTypeLike, converter: Callable[[Array, int, str], Array]
    ) -> Array:
        """The Keras kernel: `converter(w, mode, spatial)` (mode 0 rotated), times `alpha`,
        written out dilated where the Keras layer runs at dilation 1."""
        k = converter(self.w, self.geometry.mode, spatial)
        if self.alpha != 1:
            k = (np.float64(self.alpha) * k.astype(np.float64)).astype(k.dtype)
        if needs_written_dilation(self.geometry, dtype):
            k = dilate_kernel(k, layout.spatial_to_tf(self.geometry.dilation, spatial))
        return k

    def diagnose_kwargs(self, x_in: Array, step: Step) -> dict[str, Any]:
        """porting.diagnose's arguments for this conv4 on its Knet input `x_in`."""
        return dict(w=self.w, x=x_in, bias=self.b, geometry=self.geometry, alpha=self.alpha)


# --------------------------------------------------------------------------- activations


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
    """A Knet activation (a row of porting.activations' table): element-wise, or along Julia
    dimension `dims` (`softmax(x; dims)`)."""

    function: str = "identity"
    dims: int = 1
    # Ops21 relu keywords: x >= max_value ? max_value : x >= threshold ? x :
    # negative_slope * (x - threshold)   (None / 0 / 0: the plain relu)
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    needs_output = True

    @property
    def row(self) -> activations.Activation:
        return activations.get(self.function)

    @property
    def plain(self) -> bool:
        return self.max_value is None and self.negative_slope == 0 and self.threshold == 0

    @property
    def relu_keywords(self) -> bool:
        """Ops21's relu with `max_value`, `negative_slope` or `threshold`."""
        return self.function == "relu" and not self.plain

    @property
    def nonnegative(self) -> bool:
        return self.row.nonnegative and not self.relu_keywords

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if not self.row.elementwise and self.dims > len(size):
            raise PortingError(
                f"{self.function} over dims={self.dims} but the input has size {_fmt(size)} per sample; "
                f"expected dims <= {len(size)} (the batch dimension cannot be normalised over)"
            )
        return tuple(size)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        if self.relu_keywords:
            return activations.relu_keywords_forward(
                x, self.max_value, self.negative_slope, self.threshold
            )
        return self.row.forward(x, self.dims)

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        row = self.row
        if row.passes_magnitude and not self.relu_keywords:  # slope <= 1, exact: S passes on
            return s
        if self.relu_keywords:
            return activations.relu_keywords_magnitude(s, self.negative_slope, self.threshold)
        return row.magnitude(s, np.asarray(out, dtype=wd), self.dims)

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:
        if self.relu_keywords:
            return self._build_relu_keywords(ctx, t)
        keras = self.row.keras
        if keras.float64_note is not None and ctx.dtype == "float64":
            ctx.notes.append(f"{ctx.base}: {keras.float64_note}")
        if keras.composite == "gelu_tanh":
            return build_gelu_tanh(ctx, self.role, t)
        args = () if keras.activation is None else (keras.activation,)
        if keras.axis == "keyword":
            axis = tf_axis(self.dims, in_size, ctx.spatial)
            return ctx.make(keras.layer, self.role, *args, axis=axis)(t)
        if keras.axis == "last":
            axis = tf_axis(self.dims, in_size, ctx.spatial)
            return build_on_last_axis(ctx, self.role, t, axis, keras.layer, *args)
        return ctx.make(keras.layer, self.role, *args)(t)

    def _build_relu_keywords(self, ctx: KerasContext, t: KerasTensor) -> KerasTensor:
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


def build_gelu_tanh(ctx: KerasContext, role: str, t: KerasTensor) -> KerasTensor:
    """``0.5x (1 + tanh(λ x (1 + α x²)))`` (NNlib's gelu, the tanh approximation) in
    built-in layers: `Multiply` for the products, `Rescaling` (``scale * x + offset``) for the
    constants, `Activation("tanh")`; the last `Multiply` is the layer's output."""
    x2 = ctx.make("Multiply", sub_role(role, "x2"))([t, t])
    p = ctx.make(
        "Rescaling", sub_role(role, "poly"), scale=activations.GELU_TANH_ALPHA, offset=1.0
    )(x2)
    u = ctx.make("Multiply", sub_role(role, "inner"))([t, p])
    u = ctx.make("Rescaling", sub_role(role, "scale"), scale=activations.GELU_TANH_LAMBDA)(u)
    h = ctx.make("Activation", sub_role(role, "tanh"), "tanh")(u)
    h = ctx.make("Rescaling", sub_role(role, "half"), scale=0.5, offset=0.5)(h)
    return ctx.make("Multiply", role)([t, h])


def build_on_last_axis(
    ctx: KerasContext, role: str, t: KerasTensor, axis: int, layer: str, *args: Any
) -> KerasTensor:
    """A Keras built-in working on the last axis only (`Activation("log_softmax")`:
    `keras.ops.log_softmax`) applied along `axis`: another axis is moved last by a `Permute`
    and back by its inverse (built-in layers only)."""
    rank = len(t.shape) - 1  # without the batch
    if axis in (-1, rank):
        return ctx.make(layer, role, *args)(t)
    perm = tuple(i for i in range(1, rank + 1) if i != axis) + (axis,)
    inverse = tuple(perm.index(i) + 1 for i in range(1, rank + 1))
    t = ctx.make("Permute", sub_role(role, "to_last"), perm)(t)
    t = ctx.make(layer, role, *args)(t)
    return ctx.make("Permute", sub_role(role, "from_last"), inverse)(t)


def _fmt(size: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, size)) + (",)" if len(size) == 1 else ")")


# --------------------------------------------------------------------------- dense, mat, dropout


@dataclass(frozen=True, eq=False)
class DenseStage(Stage):
    """Knet `w * mat(x) .+ b`, `w` of size `(out, in)`."""

    w: Any = None
    b: Any = None
    linear = True

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return (int(self.w.shape[0]),)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting import knet as pknet

        x2 = x if x.ndim == 2 else np.asarray(pknet.mat(x, backend="reference"))
        y: Array = self.w @ x2
        if self.b is not None:
            y += self.b.reshape(-1)[:, None]
        return y

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        s = magnitude.dense(self.w, s, wd, x_is_magnitude=True)
        return s if self.b is None else magnitude.bias(s, self.b, channel_axis=0)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return int(self.w.shape[1]) + (self.b is not None)

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:
        if len(in_size) > 1:
            t = ctx.make("Flatten", sub_role(self.role, "flatten"))(t)
        return ctx.make("Dense", self.role, int(self.w.shape[0]), use_bias=self.b is not None)(t)

    def diagnose_kwargs(self, x_in: Array, step: Step) -> dict[str, Any]:
        """porting.diagnose's arguments for this `w * mat(x)` on its Knet input `x_in`."""
        x_arg = x_in
        if x_in.ndim == 2 and step.dense_input is not None:  # give diagnose mat's input
            x_arg = x_in.reshape((*step.dense_input, x_in.shape[-1]), order="F")
        return dict(w=self.w, x=x_arg, bias=self.b)


@dataclass(frozen=True, eq=False)
class FlattenStage(Stage):
    """Knet `mat(x)`: `reshape(x, :, N)` in column-major order (X1 fastest)."""

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(size),)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting import knet as pknet

        return np.asarray(pknet.mat(x, backend="reference"))

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        return s.reshape((-1, s.shape[-1]), order="F")

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:
        return ctx.make("Flatten", self.role)(t)


@dataclass(frozen=True, eq=False)
class DropoutStage(Stage):
    """Knet `dropout(x, p)`: the identity at inference (Keras `Dropout`, kept for structure)."""

    p: float = 0.0

    def build(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        in_size: tuple[int, ...],
        out_size: tuple[int, ...],
    ) -> KerasTensor:
        if self.p:
            return ctx.make("Dropout", self.role, float(self.p))(t)
        return ctx.make("Identity", self.role)(t)


def labelled_out_size(label: str, stage: Stage, size: tuple[int, ...]) -> tuple[int, ...]:
    """The output size of a one-stage layer (its `label`) on input `size`: `stage.out_size`,
    its refusal prefixed with the layer's label."""
    try:
        return stage.out_size(tuple(size))
    except PortingError as e:
        raise PortingError(f"{label}: {e}") from None
