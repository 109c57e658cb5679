"""The `upsample` kind: NNlib's `upsample_nearest` and `upsample_linear` (bilinear,
trilinear), which Flux's `Upsample(mode; scale or size)` calls (docs/flux.md#upsample-flux).

- `nearest`: every cell repeated `scale` times along each spatial dimension (integer scales;
  `size` must be a multiple of the input size). Keras: `UpSampling{n}D(size)`, a copy: exact.
- `bilinear` / `trilinear` (NNlib's `upsample_linear`, whatever the number of spatial
  dimensions): one linear interpolation per spatial dimension, X1 first, with NNlib's source
  index `ratio * i` (`align_corners=True`, `ratio = (in - 1) / (out - 1)`: Flux's, since Flux
  passes none and NNlib's default is true) or `max(0, ratio * (i + 1/2) - 1/2)`
  (`align_corners=False`, half-pixel centres, `ratio = in / out`: Keras's). The output size is
  `floor(scale * in)` or `size`.

Keras's `UpSampling2D(interpolation="bilinear")` computes half-pixel centres only, in float32
(TensorFlow's resize kernel rounds a float64 input to float32): it is used for
`align_corners=False` with integer scales on two spatial dimensions in float32. Every other case
is built as what it is, a fixed linear map per spatial axis: `Permute` the axis last, a
`Dense(out, use_bias=False)` whose kernel is NNlib's interpolation matrix (two nonzero weights
per column, computed in the model's element type as NNlib computes them), `Permute` back:
built-in layers, exact up to the order of two roundings (docs/tensorflow.md#keras-upsampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from porting._checks import check_fits_memory, short_repr
from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer, fmt_size
from porting.model.stages import Array, KerasContext, KerasTensor, Stage, sub_role

__all__ = ["Upsample", "UpsampleStage", "KIND", "interpolation_matrix"]

MODES = ("nearest", "bilinear", "trilinear")


def _positive_int(v: object) -> bool:
    return bool(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1)


def _positive_real(v: object) -> bool:
    return bool(
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool)
        and 0 < v < 2**31
        and math.isfinite(float(v))
    )


def _weights(n_in: int, n_out: int, align_corners: bool, dtype: Any) -> tuple[Array, ...]:
    """`(i0, i1, l0, l1)` per output cell, computed in `dtype` as NNlib's `source_idx_and_λ`
    (NNlib v0.9.22 src/upsample.jl): `ratio` in `dtype`, the source index `ratio * i` (aligned
    corners) or `max(0, ratio * (i + 1/2) - 1/2)`, `l1 = index - floor(index)`, `l0 = 1 - l1`;
    the last cell's right neighbour is itself."""
    t = np.dtype(dtype).type
    if align_corners:
        ratio = t((n_in - 1) / (n_out - 1)) if n_out > 1 else t(0)
        real = ratio * np.arange(n_out).astype(t)
    else:
        ratio = t(n_in / n_out)
        real = np.maximum(t(0), ratio * (np.arange(n_out).astype(t) + t(0.5)) - t(0.5))
    i0 = np.floor(real).astype(np.int64)
    i1 = i0 + (i0 < n_in - 1)
    l1 = (real - i0.astype(t)).astype(t)
    return i0, i1, (t(1) - l1).astype(t), l1


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool, dtype: Any) -> Array:
    """NNlib's linear interpolation along one axis as an `(n_out, n_in)` matrix `M` (`y = M x`),
    in `dtype` (`_weights`); where both neighbours are one cell, its two weights are summed."""
    i0, i1, l0, l1 = _weights(n_in, n_out, align_corners, dtype)
    m = np.zeros((n_out, n_in), dtype=np.dtype(dtype))
    rows = np.arange(n_out)
    m[rows, i0] += l0
    m[rows, i1] += l1
    return m


def _interpolate(x: Array, axis: int, n_out: int, align_corners: bool, dtype: Any) -> Array:
    """`l0 * x[i0] + l1 * x[i1]` along `axis`, in `dtype`: NNlib's kernel for that axis."""
    i0, i1, l0, l1 = _weights(x.shape[axis], n_out, align_corners, dtype)
    shape = [1] * x.ndim
    shape[axis] = n_out
    a = np.take(x, i0, axis=axis)
    b = np.take(x, i1, axis=axis)
    return np.asarray(l0.reshape(shape) * a + l1.reshape(shape) * b, dtype=np.dtype(dtype))


@dataclass(frozen=True, eq=False)
class UpsampleStage(Stage):
    """NNlib's upsampling of the spatial dimensions (see the module)."""

    mode: str = "nearest"
    scale: Any = None
    size: Any = None
    align_corners: bool = True

    @property
    def linear_mode(self) -> bool:
        return self.mode != "nearest"

    def sizes(self, in_size: tuple[int, ...]) -> tuple[int, ...]:
        """The output's spatial sizes for a per-sample input `in_size` `(X1, ..., C)`."""
        nd = len(in_size) - 1
        spatial = tuple(int(v) for v in in_size[:-1])
        if nd < 1:
            raise PortingError(
                f"its input has size {fmt_size(in_size)} per sample; expected (X1, ..., C)"
            )
        given = self.size if self.size is not None else self.scale
        many = isinstance(given, tuple)
        if self.linear_mode:
            if many and len(given) != nd:
                key = "size" if self.size is not None else "scale"
                raise PortingError(
                    f"{key}={given}: {len(given)} values for an input with {nd} spatial "
                    f"dimensions (NNlib's upsample_linear needs one per spatial dimension)"
                )
            if self.size is not None:
                out = tuple(self.size)
            else:
                scales = given if many else (given,) * nd
                # NNlib: floor(Int, scale * size(x, i))
                out = tuple(math.floor(float(s) * n) for s, n in zip(scales, spatial, strict=True))
            for n_in, n_out in zip(spatial, out, strict=True):
                if n_out < 1:
                    raise PortingError(
                        f"scale={self.scale} gives an output of size {out} on spatial size "
                        f"{spatial}; expected sizes >= 1"
                    )
                if self.align_corners and n_out == 1 and n_in > 1:
                    raise PortingError(
                        f"output size 1 from {n_in} with align_corners=true: NNlib's ratio "
                        "(in - 1) / (out - 1) divides by zero (its result is undefined)"
                    )
            return out
        # nearest: NNlib scales the first length(scale) dimensions
        if many and len(given) > nd:
            key = "size" if self.size is not None else "scale"
            raise PortingError(
                f"{key}={given}: {len(given)} values for an input with {nd} spatial "
                "dimensions (scaling the channels or the batch has no layer here)"
            )
        if self.size is not None:
            k = len(self.size)
            if any(o % n for o, n in zip(self.size, spatial[:k], strict=True)):
                raise PortingError(
                    f"size={self.size} is not a multiple of the input's spatial size "
                    f"{spatial[:k]} (NNlib's upsample_nearest requires it)"
                )
            return tuple(self.size) + spatial[k:]
        scales = given if many else (given,) * nd
        return tuple(n * s for n, s in zip(spatial, scales, strict=False)) + spatial[len(scales) :]

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return (*self.sizes(size), size[-1])

    def _apply(self, x: Array, dtype: Any) -> Array:
        out = self.sizes(tuple(x.shape[:-1]))
        y = x
        for axis, (n_in, n_out) in enumerate(zip(x.shape[: len(out)], out, strict=True)):
            if self.linear_mode:
                if n_in != n_out:
                    y = _interpolate(y, axis, n_out, self.align_corners, dtype)
            elif n_out != n_in:
                y = np.repeat(y, n_out // n_in, axis=axis)
        return y

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        return self._apply(x, x.dtype)

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        # the weights are >= 0: the interpolation of |x| is the sum of |weight * x|
        return self._apply(np.asarray(s, dtype=wd), wd)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        if not self.linear_mode:
            return None
        changed = sum(a != b for a, b in zip(in_size[:-1], self.sizes(in_size), strict=True))
        return 2**changed if changed else None

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        nd = len(in_size) - 1
        spatial, out = tuple(in_size[:-1]), tuple(out_size[:-1])
        if spatial == out:
            return ctx.make("Identity", self.role)(t)
        if not self.linear_mode:
            factors = ctx.tf(tuple(o // n for o, n in zip(out, spatial, strict=True)))
            return ctx.make(f"UpSampling{nd}D", self.role, size=factors[0] if nd == 1 else factors)(
                t
            )
        integer = all(o % n == 0 for o, n in zip(out, spatial, strict=True))
        if not self.align_corners and nd == 2 and integer and ctx.dtype == "float32":
            factors = ctx.tf(tuple(o // n for o, n in zip(out, spatial, strict=True)))
            return ctx.make("UpSampling2D", self.role, size=factors, interpolation="bilinear")(t)
        return self._build_dense(ctx, t, spatial, out)

    def _build_dense(
        self, ctx: KerasContext, t: KerasTensor, spatial: tuple[int, ...], out: tuple[int, ...]
    ) -> KerasTensor:
        """One `Dense(use_bias=False)` per changed spatial axis (X1 first, as NNlib), holding
        that axis's interpolation matrix, the axis moved last by `Permute` and back."""
        nd = len(spatial)
        julia_of_tf = list(ctx.tf(tuple(range(nd))))  # TF spatial axis k holds Julia axis ...
        order: list[Any] = [*julia_of_tf, "c"]  # per-sample axes, labelled by Julia axis
        steps: list[tuple[str, Any]] = []
        for j in range(nd):
            if spatial[j] == out[j]:
                continue
            if order[-1] != j:
                new = [o for o in order if o != j] + [j]
                steps.append(("Permute", tuple(order.index(o) + 1 for o in new)))
                order = new
            check_fits_memory(
                f"{ctx.base}: the {out[j]} x {spatial[j]} interpolation matrix",
                out[j] * spatial[j] * np.dtype(ctx.dtype).itemsize,
            )
            m = interpolation_matrix(spatial[j], out[j], self.align_corners, ctx.dtype)
            steps.append(("Dense", m))
        target: list[Any] = [*julia_of_tf, "c"]
        if order != target:
            steps.append(("Permute", tuple(order.index(o) + 1 for o in target)))
        for i, (what, arg) in enumerate(steps):
            last = i == len(steps) - 1
            if what == "Permute":
                role = self.role if last else sub_role(self.role, f"permute{i + 1}")
                t = ctx.make("Permute", role, arg)(t)
            else:
                role = self.role if last else sub_role(self.role, f"interpolate{i + 1}")
                dense = ctx.make("Dense", role, int(arg.shape[0]), use_bias=False)
                t = dense(t)
                dense.set_weights([np.ascontiguousarray(arg.T)])
        return t


@dataclass(eq=False)
class Upsample(Layer):
    """NNlib `upsample_nearest` / `upsample_linear` (Flux `Upsample(mode; scale, size)`):
    exactly one of `scale` (a number, or one per spatial dimension, Julia order) and `size`
    (the output's spatial sizes, Julia order). `align_corners` is NNlib's keyword (Flux: true)."""

    mode: str = "nearest"
    _: KW_ONLY
    scale: Any = None
    size: Any = None
    align_corners: bool = True
    name: str | None = None
    kind = "upsample"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        where = self.label
        if self.mode not in MODES:
            raise PortingError(
                f"{where}: mode={short_repr(self.mode)}; expected one of {', '.join(MODES)}"
            )
        if (self.scale is None) == (self.size is None):
            raise PortingError(
                f"{where}: scale={short_repr(self.scale)}, size={short_repr(self.size)}: "
                "expected exactly one of them (as Flux's Upsample)"
            )
        if not isinstance(self.align_corners, (bool, np.bool_)):
            raise PortingError(
                f"{where}: align_corners={short_repr(self.align_corners)}; expected a boolean"
            )
        self.align_corners = bool(self.align_corners)
        if self.size is not None:
            s = tuple(self.size) if isinstance(self.size, (list, tuple)) else None
            if not s or len(s) > 3 or not all(_positive_int(v) for v in s):
                raise PortingError(
                    f"{where}: size={short_repr(self.size)}; expected 1-3 positive integers "
                    "(the output's spatial sizes, Julia order)"
                )
            self.size = tuple(int(v) for v in s)
            return
        ok = _positive_int if self.mode == "nearest" else _positive_real
        want = "positive integers" if self.mode == "nearest" else "positive numbers"
        many = isinstance(self.scale, (list, tuple))
        values = tuple(self.scale) if many else (self.scale,)
        if not values or len(values) > 3 or not all(ok(v) for v in values):
            raise PortingError(
                f"{where}: scale={short_repr(self.scale)}; expected {want} (one, or one per "
                f"spatial dimension){' (nearest repeats cells)' if self.mode == 'nearest' else ''}"
            )
        conv = int if self.mode == "nearest" else _number
        self.scale = tuple(conv(v) for v in values) if many else conv(values[0])

    def stage(self) -> UpsampleStage:
        return UpsampleStage(
            mode=self.mode, scale=self.scale, size=self.size, align_corners=self.align_corners
        )

    def stages(self) -> list[Stage]:
        return [self.stage()]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(size) <= 4:
            raise PortingError(
                f"{self.label}: input of size {fmt_size(size)} per sample; upsample expects "
                "(X1, [X2, [X3,]] C): 1-3 spatial dimensions and channels"
            )
        try:
            return self.stage().out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label} on input size {fmt_size(size)}: {e}") from None

    def describe(self) -> str:
        what = f"scale={self.scale}" if self.scale is not None else f"size={self.size}"
        corners = "" if self.mode == "nearest" else f", align_corners={self.align_corners}"
        return f"upsample(:{self.mode}, {what}{corners})"


def _number(v: Any) -> int | float:
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Upsample:
    mode = schema.text(d.get("mode", "nearest"), "mode", where)
    scale = d.get("scale")
    if isinstance(scale, list):
        scale = tuple(schema.number(v, "scale", where) for v in scale)
    elif scale is not None:
        scale = schema.number(scale, "scale", where)
    if mode == "nearest" and scale is not None:  # integers stay integers
        vals = scale if isinstance(scale, tuple) else (scale,)
        if all(float(v).is_integer() for v in vals):
            scale = tuple(int(v) for v in vals) if isinstance(scale, tuple) else int(scale)
    size = d.get("size")
    size = None if size is None else schema.size(size, "size", where)
    corners = d.get("align_corners", True)
    if not isinstance(corners, bool):
        raise PortingError(f"{where}: align_corners = {short_repr(corners)}: expected a boolean")
    return Upsample(mode, scale=scale, size=size, align_corners=corners, name=d.get("name"))


def _to_json(layer: Upsample) -> dict[str, Any]:
    s = layer.scale
    return {
        "mode": layer.mode,
        "scale": list(s) if isinstance(s, tuple) else s,
        "size": None if layer.size is None else list(layer.size),
        "align_corners": layer.align_corners,
    }


def _diagnose(
    step: Any, x_ins_tf: list[Array], expected_tf: Array, actual_tf: Array, spatial: str
) -> Any:
    """Resampling causes (porting.diagnosis.diagnose_upsample): the other corner convention,
    the other mode."""
    from porting.diagnosis import diagnose_upsample

    layer = step.layer
    return diagnose_upsample(
        x_ins_tf[0],
        actual_tf,
        mode=layer.mode,
        align_corners=layer.align_corners,
        expected=expected_tf,
    )


def _example() -> Example:
    return [
        Upsample("bilinear", scale=(2, 3), name="up"),
        Upsample("nearest", scale=2, name="near"),
    ], (3, 2, 2)


KIND = Kind(
    name="upsample",
    layer=Upsample,
    prefix="upsample",
    from_json=_from_json,
    to_json=_to_json,
    knet="NNlib's `upsample_nearest` / `upsample_linear` (Flux `Upsample`)",
    keras="`UpSampling{n}D` (nearest; bilinear with half-pixel centres in float32); otherwise per axis `Permute` + `Dense(use_bias=False)` holding NNlib's interpolation matrix",
    schema='"mode", "scale" or "size", "align_corners" (since version 2)',
    keras_layers=(
        *(KerasLayer(f"UpSampling{d}D", direct={}) for d in (1, 2, 3)),
        KerasLayer("Dense", direct={}),
        KerasLayer("Permute"),
        KerasLayer("Identity", direct={}),
    ),
    diagnose=_diagnose,
    example=_example,
)
