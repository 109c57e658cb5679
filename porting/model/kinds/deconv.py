"""The `deconv` kind: `f.(deconv4(w, x; padding, stride, dilation, mode, alpha) .+ b)`.

Knet's `deconv4(w, x)` (docs/knet.md#deconv4) is the transpose of `conv4(w, .)` with the
same mode: `w` is `(W1, ..., Cout, Cin)` and the output `(X-1)*stride + (W-1)*dilation + 1 -
2*padding` along each spatial dimension. Keras: `Conv{1,2,3}DTranspose(padding="valid")`, the
kernel `kernel_to_tf(w, mode, spatial)` (mode 0 rotated, as for conv4: Keras's kernel
`(H, W, out, in)` has the same channel order as Knet's), then `Cropping` of `padding` cells on
each side (Keras's `same` equals Knet's symmetric padding only when `W - stride == 2 padding`;
valid + crop is exact for every case). A dilated kernel runs written out dilated (zeros between
the taps) at dilation 1, which Keras accepts with any stride: the same nonzero products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from porting import layout, magnitude
from porting.errors import PortingError
from porting.geometry import ConvOp
from porting.model import schema
from porting.model.kinds._convolution import check_input_rank, conv_geometry, kernel_and_bias
from porting.model.layer import (
    ACT_KERAS,
    Example,
    FlatRule,
    KerasLayer,
    Kind,
    Layer,
    activation_name,
    check_real,
    fmt_size,
)
from porting.model.stages import (
    ActStage,
    Array,
    KerasContext,
    KerasTensor,
    KernelStage,
    Stage,
    dilate_kernel,
    sub_role,
)

if TYPE_CHECKING:
    from porting.model.planning import Step

__all__ = ["Deconv", "DeconvStage", "KIND"]

# Looked up at call time (tests may replace it to prove that broken ports are caught).
_kernel_converter = layout.kernel_to_tf


@dataclass(frozen=True, eq=False)
class DeconvStage(KernelStage):
    """Knet `deconv4(w, x; padding, stride, dilation, mode, alpha) .+ b`."""

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        g = self.geometry
        return (*g.transpose_output_size(size[:-1], self.w.shape[: self.nd]), int(self.w.shape[-2]))

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting import knet as pknet

        op = ConvOp.bind(self.w, x, self.geometry, self.alpha, transposed=True)
        y = pknet.run_deconv4(op, backend)
        tags.append(y)
        y = np.asarray(y)
        if self.b is not None:
            shape = [1] * y.ndim
            shape[-2] = self.b.size
            y = y + self.b.reshape(shape)
        return y

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        s = magnitude.deconv4(self.w, s, self.geometry, self.alpha, dtype=wd)
        return s if self.b is None else magnitude.bias(s, self.b)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        # each output sums at most every tap of every input channel
        return int(np.prod(self.w.shape[: self.nd])) * int(self.w.shape[-1]) + (self.b is not None)

    def keras_kernel(self, spatial: str, converter: Callable[[Array, int, str], Array]) -> Array:
        g = self.geometry
        k = converter(self.w, g.mode, spatial)
        if self.alpha != 1:
            k = (np.float64(self.alpha) * k.astype(np.float64)).astype(k.dtype)
        if max(g.dilation) > 1:
            k = dilate_kernel(k, layout.spatial_to_tf(g.dilation, spatial))
        return k

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        g = self.geometry
        nd = self.nd
        kernel = g.effective_kernel(self.w.shape[:nd])  # written out dilated
        t = ctx.make(
            f"Conv{nd}DTranspose",
            self.role,
            filters=int(self.w.shape[-2]),
            kernel_size=ctx.tf(kernel),
            strides=ctx.tf(g.stride),
            padding="valid",
            use_bias=self.b is not None,
        )(t)
        pad = ctx.tf(g.padding)
        if any(pad):
            crop = tuple((p, p) for p in pad)
            t = ctx.make(
                f"Cropping{nd}D", sub_role(self.role, "crop"), crop[0] if nd == 1 else crop
            )(t)
        return t


@dataclass(eq=False)
class Deconv(Layer):
    """A deconvolution layer: `f.(deconv4(w, x; ...) .+ b)`, `w` `(W1, ..., Cout, Cin)` (1-3
    spatial dimensions), `b` `(1, ..., 1, Cout, 1)`, `(Cout,)` or None; deconv4 keywords as in
    Knet (`mode=0`, Knet's default, is the transpose of true convolution)."""

    w: np.ndarray
    b: np.ndarray | None = None
    _: KW_ONLY
    activation: str = "identity"
    padding: int | tuple[int, ...] = 0
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    mode: int = 0
    alpha: float = 1.0
    name: str | None = None
    kind = "deconv"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        where = self.label
        self.w, self.b = kernel_and_bias(
            self.w, self.b, where, -2, " (deconv4's w is (W..., Cout, Cin))"
        )
        self.nd = self.w.ndim - 2
        self.activation = activation_name(self.activation, where)
        self.geometry = conv_geometry(self)
        check_real(self.alpha, where, "alpha")

    def params(self) -> dict[str, np.ndarray]:
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def deconv_stage(self) -> DeconvStage:
        return DeconvStage(w=self.w, b=self.b, geometry=self.geometry, alpha=self.alpha)

    def stages(self) -> list[Stage]:
        out: list[Stage] = [self.deconv_stage()]
        if self.activation != "identity":
            out.append(ActStage(role="act", function=self.activation))
        return out

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        where = self.label
        cin = self.w.shape[-1]
        check_input_rank(self.w, where, size)
        if size[-1] != cin:
            raise PortingError(
                f"{where}: w {self.w.shape} (deconv4: (W..., Cout, Cin)) has {cin} input channels "
                f"but its input has {size[-1]} (size {fmt_size(size)} per sample)"
            )
        try:
            return self.deconv_stage().out_size(tuple(size))
        except PortingError as e:
            raise PortingError(
                f"{where} (w {self.w.shape}) on input size {fmt_size(size)}: {e}"
            ) from None

    def describe(self) -> str:
        g = repr(self.geometry).replace("ConvGeometry", "deconv4")
        s = f"{g}, w {self.w.shape}" + ("" if self.b is not None else ", no bias")
        return s + (f", {self.activation}" if self.activation != "identity" else "")


def _weights(layer: Deconv, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    ws = [layer.deconv_stage().keras_kernel(spatial, _kernel_converter)]
    if layer.b is not None:
        ws.append(layer.b.reshape(-1).copy())
    return ws


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Deconv:
    w = schema.weight(param, where, "a deconv layer needs a weight")
    kw = schema.keywords(
        d.get("deconv"), where, "deconv", {"padding", "stride", "dilation", "mode", "alpha"}
    )
    return Deconv(
        w, param("b"), activation=d.get("activation") or "identity", name=d.get("name"), **kw
    )


def _to_json(layer: Deconv) -> dict[str, Any]:
    def val(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    d: dict[str, Any] = {"activation": layer.activation}
    # from the parsed geometry (scalars where every dimension agrees), not the raw keywords
    d["deconv"] = {k: val(v) for k, v in layer.geometry.knet_keywords().items()}
    if layer.alpha != 1:
        d["deconv"]["alpha"] = layer.alpha
    return d


def _example() -> Example:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)  # (W1, W2, Cout, Cin)
    b = rng.standard_normal((1, 1, 2, 1)).astype(np.float32)
    return [Deconv(w, b, stride=2, padding=1, activation="tanh")], (4, 3, 3)


KIND = Kind(
    name="deconv",
    layer=Deconv,
    prefix="deconv",
    from_json=_from_json,
    to_json=_to_json,
    weights=_weights,
    knet="`deconv4`",
    keras='`Conv{n}DTranspose("valid")` + `Cropping{n}D` of the padding',
    schema='keywords in "deconv", "activation" (since version 2)',
    keras_layers=(
        *(KerasLayer(f"Conv{d}DTranspose") for d in (1, 2, 3)),
        *(KerasLayer(f"Cropping{d}D", direct={}) for d in (1, 2, 3)),
        *ACT_KERAS,
    ),
    example=_example,
)
