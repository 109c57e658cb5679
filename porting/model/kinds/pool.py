"""The `pool` kind: Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)`."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import porting.model.schema as schema
from porting.errors import PortingError
from porting.geometry import PoolGeometry
from porting.model.layer import Kind, Layer, check_real, fmt_size
from porting.model.stages import PoolStage

__all__ = ["Pool", "KIND", "pool_json"]

POOL_KEYS = {"window", "padding", "stride", "mode", "alpha"}


@dataclass(eq=False)
class Pool(Layer):
    """Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)`.

    Mode 0 (and 3) max: padded cells never win; mode 1 mean dividing by `prod(window)`
    (padding counts as zeros, as on Knet's CPU); mode 2 runs as mode 1, as Knet's CPU does.
    The number of spatial dimensions comes from the input.
    """

    window: int | tuple = 2
    _: KW_ONLY
    padding: int | tuple = 0
    stride: int | tuple | None = None
    mode: int = 0
    alpha: float = 1.0
    name: str | None = None
    kind = "pool"
    needs_spatial = True
    flat_rule = "reset"

    def __post_init__(self):
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

    def stages(self):
        return [self.stage()]

    def output_size(self, size):
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


def as_pool(value, where: str) -> Pool | None:
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


def _val(v):
    return list(v) if isinstance(v, tuple) else v


def pool_json(p: Pool) -> dict:
    """A pool's keywords as the export writes them (stride always given)."""
    return {
        "window": _val(p.window),
        "padding": _val(p.padding),
        "stride": _val(p.window if p.stride is None else p.stride),
        "mode": p.mode,
        **({"alpha": p.alpha} if p.alpha != 1 else {}),
    }


def _from_json(d: dict, where: str, param) -> Pool:
    kw = schema.keywords(d.get("pool"), where, "pool", POOL_KEYS)
    return Pool(**kw, name=d.get("name"))


KIND = Kind(
    name="pool",
    layer=Pool,
    prefix="pool",
    from_json=_from_json,
    to_json=lambda layer: {"pool": pool_json(layer)},
)
