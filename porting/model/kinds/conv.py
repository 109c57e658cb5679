"""The `conv` kind: Knet's tutorial `Conv`, `f.(pool(conv4(w, x; ...) .+ b))`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import porting.model.schema as schema
from porting import layout
from porting.errors import PortingError
from porting.model.kinds._convolution import check_input_rank, conv_geometry, kernel_and_bias
from porting.model.kinds.pool import KERAS_LAYERS as POOL_KERAS
from porting.model.kinds.pool import POOL_KEYS, as_pool, pool_json
from porting.model.layer import (
    ACT_KERAS,
    Example,
    FlatRule,
    KerasLayer,
    Kind,
    Layer,
    activation_name,
    check_probability,
    check_real,
    fmt_size,
)
from porting.model.stages import ActStage, ConvStage, DropoutStage, Stage

if TYPE_CHECKING:
    from porting.model.planning import Step

__all__ = ["Conv", "KIND"]

# Looked up at call time (tests replace it to prove that broken ports are caught).
_kernel_converter = layout.kernel_to_tf


@dataclass(eq=False)
class Conv(Layer):
    """A Knet tutorial conv layer: `f.(pool(conv4(w, x; ...) .+ b))`.

    `w` `(W1, ..., Cin, Cout)` (1-3 spatial dimensions), `b` `(1, ..., 1, Cout, 1)`, `(Cout,)`
    or None; conv4 keywords as in Knet (`mode=0` is true convolution, Knet's default).
    `dropout` is the tutorial's `dropout(x, p)` on the input: the identity at inference.
    `activation_before_pool=True` gives `pool(f.(conv4(w, x) .+ b))` (Knet's `lenet.jl`).
    `groups` is Ops21's: channels in contiguous blocks, `w` `(W..., Cin/groups, Cout)`
    (depthwise: groups = Cin); Keras `Conv{n}D(groups=...)`.
    """

    w: np.ndarray
    b: np.ndarray | None = None
    _: KW_ONLY
    activation: str = "identity"  # None is accepted too (identity)
    pool: Any = None  # a Pool, a dict of pool keywords, or None; a Pool after __init__
    padding: int | tuple[int, ...] = 0
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    mode: int = 0
    alpha: float = 1.0
    dropout: float = 0.0
    activation_before_pool: bool = False
    groups: int = 1
    name: str | None = None
    kind = "conv"
    needs_spatial = True
    flat_rule = FlatRule.RESET

    def __post_init__(self) -> None:
        where = self.label
        self.w, self.b = kernel_and_bias(self.w, self.b, where, -1)
        self.nd = self.w.ndim - 2
        cout = self.w.shape[-1]
        self.activation = activation_name(self.activation, where)
        self.pool = as_pool(self.pool, where)
        self.geometry = conv_geometry(self)
        if self.pool is not None:
            try:
                self.pool.geometry(self.nd)
            except PortingError as e:
                raise PortingError(f"{where}: pool: {e}") from None
        check_probability(self.dropout, where)
        check_real(self.alpha, where, "alpha")
        g = self.groups
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 or cout % g:
            raise PortingError(
                f"{where}: groups={g!r}: expected a positive integer dividing the {cout} output "
                "channels (Ops21's groups: w is (W..., Cin/groups, Cout))"
            )
        self.groups = int(g)

    @property
    def bias_vector(self) -> np.ndarray | None:
        return None if self.b is None else self.b.reshape(-1)

    @property
    def k(self) -> int:
        """Terms summed per output element: kernel volume x Cin (+1 for the bias)."""
        return int(np.prod(self.w.shape[:-1])) + (self.b is not None)

    def params(self) -> dict[str, np.ndarray]:
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def conv_stage(self) -> ConvStage:
        return ConvStage(
            w=self.w, b=self.b, geometry=self.geometry, alpha=self.alpha, groups=self.groups
        )

    def stages(self) -> list[Stage]:
        """dropout (identity at inference), conv4 .+ b, then pool and activation in the
        layer's order."""
        out: list[Stage] = []
        if self.dropout:
            out.append(DropoutStage(role="dropout", p=self.dropout))
        out.append(self.conv_stage())
        pool = [self.pool.stage("pool")] if self.pool is not None else []
        act = (
            [ActStage(role="act", function=self.activation)]
            if self.activation != "identity"
            else []
        )
        out += act + pool if self.activation_before_pool else pool + act
        return out

    @property
    def in_channels(self) -> int:
        return int(self.w.shape[-2]) * self.groups

    def check_follows(self, prev: Layer) -> None:
        if isinstance(prev, Conv) and prev.w.shape[-1] != self.in_channels:
            raise PortingError(
                f"{self.label}: w {self.w.shape} has {self.in_channels} input channels but "
                f"the previous {prev.label} outputs {prev.w.shape[-1]} (w {prev.w.shape}); "
                f"expected Cin == {prev.w.shape[-1]}"
            )

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        where = self.label
        cin = self.in_channels
        check_input_rank(self.w, where, size)
        if size[-1] != cin:
            raise PortingError(
                f"{where}: w {self.w.shape} (groups={self.groups}) has {cin} input channels but its input has "
                f"{size[-1]} (size {fmt_size(size)} per sample); expected Cin == {size[-1]}"
            )
        try:
            out = (*self.geometry.output_size(size[:-1], self.w.shape[:-2]), self.w.shape[-1])
        except PortingError as e:
            raise PortingError(
                f"{where} (w {self.w.shape}) on input size {fmt_size(size)}: {e}"
            ) from None
        if self.pool is not None:
            try:
                out = (*self.pool.geometry(self.nd).output_size(out[:-1]), out[-1])
            except PortingError as e:
                raise PortingError(
                    f"{where}: its pool on the conv output {fmt_size(out)}: {e}"
                ) from None
        return out

    def describe(self) -> str:
        g = repr(self.geometry).replace("ConvGeometry", "conv4")
        s = f"{g}, w {self.w.shape}" + ("" if self.b is not None else ", no bias")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.pool is not None:
            s += ", " + self.pool.describe(self.nd)
        if self.activation != "identity":
            s += f", {self.activation}" + (
                " before pool" if self.activation_before_pool and self.pool else ""
            )
        return s


# --------------------------------------------------------------------------- weights


def _weights(layer: Conv, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    """Kernel `kernel_to_tf(w, mode, spatial)` (mode 0 rotated) times `alpha`, and the bias."""
    ws = [layer.conv_stage().keras_kernel(spatial, dtype, _kernel_converter)]
    if layer.b is not None:
        ws.append(layer.b.reshape(-1).copy())
    return ws


# --------------------------------------------------------------------------- export schema

_ORDERS = ("pool-activation", "activation-pool")


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Conv:
    w = schema.weight(param, where, "a conv layer needs a weight")
    conv = schema.keywords(
        d.get("conv"), where, "conv", {"padding", "stride", "dilation", "mode", "alpha", "groups"}
    )
    pool = d.get("pool")
    if pool is not None:
        pool = schema.keywords(pool, where, "pool", POOL_KEYS)
    order = d.get("order")
    order = "pool-activation" if order is None else schema.text(order, "order", where)
    if order not in _ORDERS:
        raise PortingError(
            f"{where}: order {order!r}; expected 'pool-activation' (Knet tutorial) or "
            "'activation-pool'"
        )
    return Conv(
        w,
        param("b"),
        activation=d.get("activation") or "identity",
        pool=pool,
        dropout=schema.dropout(d.get("dropout"), where),
        activation_before_pool=(order == "activation-pool"),
        name=d.get("name"),
        **conv,
    )


def _to_json(layer: Conv) -> dict[str, Any]:
    def val(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    d: dict[str, Any] = {"activation": layer.activation}
    # from the parsed geometry (scalars where every dimension agrees), not the raw keywords
    d["conv"] = {k: val(v) for k, v in layer.geometry.knet_keywords().items()}
    if layer.alpha != 1:
        d["conv"]["alpha"] = layer.alpha
    if layer.groups != 1:
        d["conv"]["groups"] = layer.groups
    d["pool"] = None if layer.pool is None else pool_json(layer.pool)
    d["order"] = "activation-pool" if layer.activation_before_pool else "pool-activation"
    d["dropout"] = layer.dropout
    return d


def _example() -> Example:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    b = rng.standard_normal((1, 1, 4, 1)).astype(np.float32)
    return [Conv(w, b, padding=1, activation="relu", pool=dict(window=2))], (6, 5, 2)


KIND = Kind(
    name="conv",
    layer=Conv,
    prefix="conv",
    from_json=_from_json,
    to_json=_to_json,
    weights=_weights,
    knet="`conv4(w, x; ...) .+ b`, Ops21 `groups`",
    keras='`ZeroPadding{n}D` + `Conv{n}D(padding="valid", groups=...)` (never "same"; `mode=0` kernels rotated)',
    schema='keywords in "conv" and "pool", "activation", "dropout", "order"',
    keras_layers=(
        *(KerasLayer(f"Conv{d}D", direct={}) for d in (1, 2, 3)),
        *POOL_KERAS,
        *ACT_KERAS,
    ),
    example=_example,
)
