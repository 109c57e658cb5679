"""The `pool` kind: Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)`: the
layer, its stage (Knet forward, Keras built-ins, magnitudes) and its export schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

import porting.model.schema as schema
from porting import magnitude
from porting.errors import PortingError
from porting.geometry import PoolGeometry, PoolOp
from porting.model.layer import Example, FlatRule, KerasLayer, Kind, Layer, check_real, fmt_size
from porting.model.stages import Array, KerasContext, KerasTensor, Stage, sub_role, zero_padding

__all__ = ["Pool", "PoolStage", "KIND", "pool_json"]

POOL_KEYS = {"window", "padding", "stride", "mode", "alpha"}


@dataclass(frozen=True, eq=False)
class PoolStage(Stage):
    """Knet `pool(x; window, padding, stride, mode, alpha)`; the number of spatial dimensions
    comes from the input."""

    window: Any = 2
    padding: Any = 0
    stride: Any = None
    mode: int = 0
    alpha: float = 1.0
    # the geometry of each number of spatial dimensions, parsed once (`geometry`)
    _geometries: dict[int, PoolGeometry] = field(default_factory=dict, repr=False)

    def geometry(self, nd: int) -> PoolGeometry:
        """The `PoolGeometry` of the keywords for `nd` spatial dimensions, built once."""
        g = self._geometries.get(nd)
        if g is None:
            g = self._geometries[nd] = PoolGeometry.from_knet(
                nd, window=self.window, padding=self.padding, stride=self.stride, mode=self.mode
            )
        return g

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return (*self.geometry(len(size) - 1).output_size(size[:-1]), size[-1])

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting import knet as pknet

        g = self.geometry(x.ndim - 2)
        if g.mode == 2:  # Knet's CPU runs mode 2 as mode 1: the mean of the real cells is
            g = replace(g, mode=1)  # pool(x; mode=1) ./ pool(ones; mode=1) (`_excluding`)
        y = pknet.run_pool(PoolOp.bind(x, g, self.alpha), backend)
        tags.append(y)
        if self.excludes_padding(x.ndim - 2):
            ones = np.ones((*x.shape[:-2], 1, 1), dtype=x.dtype, order="F")
            counted = pknet.run_pool(PoolOp.bind(ones, g, 1.0), backend)
            tags.append(counted)
            out: Array = np.asarray(y) / np.asarray(counted)
            return out
        return np.asarray(y)

    def excludes_padding(self, nd: int) -> bool:
        """Mode 2 with padding: the mean of the real cells of each window, which differs from
        mode 1's (sum / prod(window)) wherever a window holds padding."""
        g = self.geometry(nd)
        return g.mode == 2 and any(g.padding)

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        g = self.geometry(s.ndim - 2)
        m = magnitude.pool(s, g, self.alpha)
        if self.excludes_padding(s.ndim - 2):  # the mean of |x| over the real cells
            ones = np.ones((*s.shape[:-2], 1, 1), dtype=s.dtype, order="F")
            m = m / magnitude.pool(ones, g, 1.0)
        # A max window of padding only gives -floatmax, a constant computed exactly: S = 0.
        return np.maximum(m, 0) if g.is_max else m

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        g = self.geometry(len(in_size) - 1)
        if g.is_max:
            return None
        # mode 2 with padding: the mean of the ones, and the division by it
        return int(np.prod(g.window)) + (2 if self.excludes_padding(len(in_size) - 1) else 0)

    def note(self, in_size: tuple[int, ...]) -> str | None:
        g = self.geometry(len(in_size) - 1)
        if g.mode == 2 and any(g.padding):
            return (
                "pool mode=2 averages the real cells only (cuDNN's exclude-padding mean, Knet's "
                "GPU path); Knet 1.4.10's CPU pool runs mode 2 as mode 1 (padding counted), so "
                "porting computes it as pool(x; mode=1) ./ pool(ones; mode=1), as "
                "PortingKnet.import_model does"
            )
        if any(p >= k for p, k in zip(g.padding, g.window, strict=True)):
            return (
                f"pool padding {g.padding} >= window {g.window}: Knet's CPU path (NNlib) computes "
                "it (windows of padding only give "
                + ("-floatmax" if g.is_max else "0")
                + "); cuDNN, Knet's GPU path, rejects it"
            )
        return None

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        """Keras built-in layers only, so the file loads anywhere: `ZeroPadding` (mean) or
        edge padding (max: `_edge_padding`, padded cells never win) + `MaxPooling` /
        `AveragePooling` "valid"; 3-D pooling in float64 (no TensorFlow CPU kernel) as two 2-D
        poolings (`_pool3d_by_2d`)."""
        nd = len(in_size) - 1
        g = self.geometry(nd)
        window, stride, pad = ctx.tf(g.window), ctx.tf(g.stride), ctx.tf(g.padding)
        size = ctx.tf(in_size[:-1])
        if self.excludes_padding(nd):
            return self._same_average(ctx, t, nd, size, window, stride, pad)
        if any(pad):
            if g.is_max:
                t = _edge_padding(ctx, t, nd, size, pad, sub_role(self.role, "pad"))
            else:  # Knet's CPU mean pooling counts padding as zeros, divides by prod(window)
                t = zero_padding(ctx, nd, pad, sub_role(self.role, "pad"))(t)
        kind = "Max" if g.is_max else "Average"
        padded = tuple(x + 2 * p for x, p in zip(size, pad, strict=True))
        empty = g.is_max and any(p >= k for p, k in zip(pad, window, strict=True))
        main = sub_role(self.role, "pool") if empty else self.role
        if nd == 3 and ctx.dtype == "float64":
            t = _pool3d_by_2d(ctx, t, kind, padded, in_size[-1], window, stride, main)
        else:
            t = ctx.make(
                f"{kind}Pooling{nd}D", main, pool_size=window, strides=stride, padding="valid"
            )(t)
        if empty:
            out = ctx.tf(out_size[:-1])
            t = _all_padding(
                ctx, t, nd, size, window, stride, pad, out, sub_role(self.role, "border")
            )
        if self.alpha != 1:
            t = _alpha(ctx, t, self.alpha, sub_role(self.role, "scale"))
        return t

    def _same_average(
        self,
        ctx: KerasContext,
        t: KerasTensor,
        nd: int,
        size: tuple[int, ...],
        window: tuple[int, ...],
        stride: tuple[int, ...],
        pad: tuple[int, ...],
    ) -> KerasTensor:
        """Mode 2 with padding: Keras' `AveragePooling(padding="same")` averages the real
        cells of each window too, exactly where TensorFlow's "same" padding for this input is
        the symmetric `padding` (docs/tensorflow.md#keras-to-knet); other paddings have no
        built-in Keras layer."""
        same = [_same_pad(n, k, s_) for n, k, s_ in zip(size, window, stride, strict=True)]
        if any(pair != (p, p) for pair, p in zip(same, pad, strict=True)):
            raise PortingError(
                f"pool mode=2 (mean of the real cells) with padding {pad} on spatial size "
                f"{size} (TensorFlow order): Keras' AveragePooling(padding='same') pads "
                f"{tuple(same)} (before, after) there, and no other built-in Keras layer "
                "averages without the padding; expected the padding 'same' gives"
            )
        if nd == 3 and ctx.dtype == "float64":
            raise PortingError(
                "pool mode=2 with padding in 3-D float64: TensorFlow has no CPU kernel for "
                "AveragePooling3D in float64 and the 2-D split does not keep the counts"
            )
        t = ctx.make(
            f"AveragePooling{nd}D", self.role, pool_size=window, strides=stride, padding="same"
        )(t)
        if self.alpha != 1:
            t = _alpha(ctx, t, self.alpha, sub_role(self.role, "scale"))
        return t


def _alpha(ctx: KerasContext, t: KerasTensor, alpha: float, role: str) -> KerasTensor:
    """`alpha * t` by `Rescaling`, alpha as a one-element array in the model's dtype (Keras
    casts a Python number, and saves a 0-d array as one, through float32)."""
    return ctx.make("Rescaling", role, np.array([alpha], dtype=ctx.dtype))(t)


def _same_pad(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis, `(before, after)`: the odd cell goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _crop(
    ctx: KerasContext, t: KerasTensor, nd: int, axis: int, lo: int, hi: int, role: str
) -> KerasTensor:
    """Crop `lo` cells from the start and `hi` from the end of TF spatial axis `axis` (0-based)."""
    crops = [(0, 0)] * nd
    crops[axis] = (lo, hi)
    arg = crops[0] if nd == 1 else tuple(crops)
    return ctx.make(f"Cropping{nd}D", role, arg)(t)


def _edge_padding(
    ctx: KerasContext, t: KerasTensor, nd: int, size: Sequence[int], pad: tuple[int, ...], role: str
) -> KerasTensor:
    """`t` padded by repeating its edge cells (`Cropping` + `Concatenate`, no arithmetic).

    For max pooling this is exactly Knet's padding, where padded cells never win: a window
    that holds a padded cell and any real cell holds the edge cell the padded one copies
    (its start is at most window-1 cells before the edge), so the maximum is over real cells
    only. Windows holding nothing but padding (padding >= window) are set by `_all_padding`.
    """
    size = list(size)
    for a, p in enumerate(pad):
        if not p:
            continue
        n = size[a]
        lo = _crop(ctx, t, nd, a, 0, n - 1, f"{role}_edge{a + 1}_lo")
        hi = _crop(ctx, t, nd, a, n - 1, 0, f"{role}_edge{a + 1}_hi")
        t = ctx.make("Concatenate", f"{role}{a + 1}", axis=a + 1)([lo] * p + [t] + [hi] * p)
        size[a] = n + 2 * p
    return t


def _all_padding(
    ctx: KerasContext,
    y: KerasTensor,
    nd: int,
    size: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    out: tuple[int, ...],
    role: str,
) -> KerasTensor:
    """Outputs whose window lies entirely in the padding are -floatmax, NNlib's starting value
    (only when padding >= window): those border slabs are replaced by `0 * tanh(y) - floatmax`
    (tanh keeps +-Inf finite), joined with `Concatenate`."""
    dt = np.dtype(ctx.dtype)
    big = np.finfo(dt).max
    for a, (n, k, s, p, o) in enumerate(zip(size, window, stride, pad, out, strict=True)):
        left = max(0, -(-(p - k + 1) // s))  # i with i*s - p + k - 1 < 0
        right = max(0, o - ((n - 1 + p) // s + 1))  # i with i*s - p > n - 1
        if not (left or right):
            continue
        parts: list[KerasTensor | None] = []
        for side, count, (c_lo, c_hi) in (
            ("lo", left, (0, o - left)),
            ("hi", right, (o - right, 0)),
        ):
            if not count:
                parts.append(None)
                continue
            c = _crop(ctx, y, nd, a, c_lo, c_hi, f"{role}_empty{a + 1}_{side}")
            c = ctx.make("Activation", f"{role}_empty{a + 1}_{side}_bounded", "tanh")(c)
            parts.append(
                ctx.make(
                    "Rescaling",
                    f"{role}_empty{a + 1}_{side}_fill",
                    np.array([0], dt),
                    np.array([-big], dt),
                )(c)
            )
        mid = _crop(ctx, y, nd, a, left, right, f"{role}_real{a + 1}")
        pieces = [x for x in (parts[0], mid, parts[1]) if x is not None]
        y = ctx.make("Concatenate", f"{role}_out{a + 1}", axis=a + 1)(pieces)
    return y


def _pool3d_by_2d(
    ctx: KerasContext,
    t: KerasTensor,
    kind: str,
    size: tuple[int, ...],
    channels: int,
    window: tuple[int, ...],
    stride: tuple[int, ...],
    role: str,
) -> KerasTensor:
    """3-D pooling (TensorFlow axes a, b, c) as a 2-D pooling over (a, b) with (c, channels)
    merged, then one over c: max is separable exactly; mean becomes a mean of means (the same
    terms, rounded in another order: within the mean's tolerance)."""
    a, b, c = size
    (wa, wb, wc), (sa, sb, sc) = window, stride
    oa, ob, oc = (1 + (n - w) // s for n, w, s in zip(size, window, stride, strict=True))
    t = ctx.make("Reshape", sub_role(role, "merge_c"), (a, b, c * channels))(t)
    t = ctx.make(
        f"{kind}Pooling2D",
        sub_role(role, "ab"),
        pool_size=(wa, wb),
        strides=(sa, sb),
        padding="valid",
    )(t)
    t = ctx.make("Reshape", sub_role(role, "merge_ab"), (oa * ob, c, channels))(t)
    t = ctx.make(
        f"{kind}Pooling2D", sub_role(role, "c"), pool_size=(1, wc), strides=(1, sc), padding="valid"
    )(t)
    return ctx.make("Reshape", role, (oa, ob, oc, channels))(t)


@dataclass(eq=False)
class Pool(Layer):
    """Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)`.

    Mode 0 (and 3) max: padded cells never win; mode 1 mean dividing by `prod(window)`
    (padding counts as zeros, as on Knet's CPU); mode 2 the mean of the real cells of each
    window (cuDNN's exclude-padding mean, Knet's GPU path; Knet's CPU runs mode 2 as mode 1,
    so porting and PortingKnet.import_model compute `pool(x; mode=1) ./ pool(ones; mode=1)`).
    The number of spatial dimensions comes from the input.
    """

    window: int | tuple[int, ...] = 2
    _: KW_ONLY
    padding: int | tuple[int, ...] = 0
    stride: int | tuple[int, ...] | None = None
    mode: int = 0
    alpha: float = 1.0
    name: str | None = None
    kind = "pool"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        lengths = {
            len(v) for v in (self.window, self.padding, self.stride) if isinstance(v, (tuple, list))
        }
        try:
            self.geometry(lengths.pop() if len(lengths) == 1 else 2)
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None
        check_real(self.alpha, self.label, "alpha")

    def geometry(self, nd: int) -> PoolGeometry:
        return PoolGeometry.from_knet(
            nd, window=self.window, padding=self.padding, stride=self.stride, mode=self.mode
        )

    def stage(self, role: str = "") -> PoolStage:
        return PoolStage(
            role=role,
            window=self.window,
            padding=self.padding,
            stride=self.stride,
            mode=self.mode,
            alpha=self.alpha,
        )

    def stages(self) -> list[Stage]:
        return [self.stage()]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(size) <= 4:
            raise PortingError(
                f"{self.label}: input of size {fmt_size(size)} per sample; pool expects "
                "(X1, [X2, [X3,]] C): 1-3 spatial dimensions and channels"
            )
        try:
            geom = self.geometry(len(size) - 1)
            return (*geom.output_size(size[:-1]), size[-1])
        except PortingError as e:
            raise PortingError(f"{self.label} on input size {fmt_size(size)}: {e}") from None

    def describe(self, nd: int | None = None) -> str:
        if nd is None:
            return f"pool(window={self.window}, padding={self.padding}, mode={self.mode})"
        return repr(self.geometry(nd)).replace("PoolGeometry", "pool")


def as_pool(value: object, where: str) -> Pool | None:
    """A conv layer's `pool=`: None, a Pool, or a dict of pool keywords."""
    if value is None or isinstance(value, Pool):
        return value
    if isinstance(value, dict):
        extra = sorted(set(value) - POOL_KEYS)
        if extra:
            raise PortingError(
                f"{where}: pool has unknown keys {extra}; expected some of {sorted(POOL_KEYS)}"
            )
        try:
            return Pool(**value, name=None)
        except TypeError as e:
            raise PortingError(f"{where}: pool={value!r}: {e}") from None
    raise PortingError(
        f"{where}: pool={value!r}: expected None, a dict of pool keywords "
        "(window, padding, stride, mode) or a Pool"
    )


def _val(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def pool_json(p: Pool) -> dict[str, Any]:
    """A pool's keywords as the export writes them (stride always given)."""
    return {
        "window": _val(p.window),
        "padding": _val(p.padding),
        "stride": _val(p.window if p.stride is None else p.stride),
        "mode": p.mode,
        **({"alpha": p.alpha} if p.alpha != 1 else {}),
    }


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Pool:
    kw = schema.keywords(d.get("pool"), where, "pool", POOL_KEYS)
    return Pool(**kw, name=d.get("name"))


# What a pool stage builds (a conv layer's pool too): the poolings, edge padding (Cropping +
# Concatenate), mean padding, alpha (Rescaling), 3-D float64 pooling (Reshape + 2-D poolings).
KERAS_LAYERS: tuple[KerasLayer, ...] = (
    *(
        KerasLayer(f"{p}{d}D", direct={})
        for p in ("MaxPooling", "AveragePooling", "GlobalAveragePooling", "ZeroPadding", "Cropping")
        for d in (1, 2, 3)
    ),
    KerasLayer("Concatenate"),
    KerasLayer("Rescaling"),
    KerasLayer("Reshape"),
    KerasLayer("Activation", direct={}),
)


def _example() -> Example:
    return [Pool(window=2, padding=1, name="pool")], (5, 4, 2)


KIND = Kind(
    name="pool",
    layer=Pool,
    prefix="pool",
    from_json=_from_json,
    to_json=lambda layer: {"pool": pool_json(layer)},
    knet="`pool` max / mean",
    keras='`MaxPooling{n}D` / `AveragePooling{n}D("valid")`; max padding by repeating edge cells (a padded cell never wins), mean padding as zeros (counted, as Knet\'s CPU); mode 2 `AveragePooling{n}D("same")` where "same" pads as Knet',
    schema='keywords in "pool"',
    keras_layers=KERAS_LAYERS,
    example=_example,
)
