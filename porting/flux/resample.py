"""Flux's resampling layers -> the `upsample` and `pixelshuffle` kinds
(docs/flux.md#upsample-flux, #pixelshuffle-flux).

``Upsample{mode, S, T}(scale, size)`` (Flux 0.12 to 0.16, src/layers/upsample.jl): the mode is
the struct's first type parameter (a Symbol: ``:nearest``, ``:bilinear``, ``:trilinear``), the
fields are ``scale`` and ``size``, one of them ``nothing``. Flux calls NNlib's
``upsample_nearest`` or ``upsample_bilinear``/``upsample_trilinear`` without ``align_corners``,
whose default is ``true`` (and before NNlib 0.8.20, which added the keyword, corners were always
aligned). ``PixelShuffle(r)``: NNlib's ``pixel_shuffle(x, r)``.
"""

from __future__ import annotations

from typing import Any

from porting.errors import PortingError
from porting.flux.fields import Found, _short
from porting.io.bsonjl import JuliaStruct, JuliaType

__all__ = ["pixelshuffle", "upsample"]

_MODES = ("nearest", "bilinear", "trilinear")


def _value(v: Any, path: str, what: str) -> Any:
    """A field of numbers: an integer, a float, a tuple of them, or None (``nothing``)."""
    if v is None:
        return None
    items = v if isinstance(v, tuple) else (v,)
    if not items or not all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        raise PortingError(
            f"{path}.{what}: {v!r:.80}; expected nothing, a number or a tuple of numbers"
        )
    return v


def upsample(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``Upsample{mode}(scale, size)`` -> `Upsample(mode, scale=..., size=...,
    align_corners=True)`."""
    from porting.model import Upsample

    t = x.type
    mode = t.params[0] if isinstance(t, JuliaType) and t.params else None
    if not isinstance(mode, str) or str(mode) not in _MODES:
        raise PortingError(
            f"{path}: Flux.Upsample with mode {mode!r:.60}; expected :nearest, :bilinear or "
            ":trilinear (the struct's first type parameter)"
        )
    if len(x.data) != 2:
        raise PortingError(
            f"{path}: Flux.Upsample with {len(x.data)} fields; expected (scale, size)"
        )
    scale = _value(x.data[0], path, "scale")
    size = _value(x.data[1], path, "size")
    if size is not None and not isinstance(size, tuple):
        size = (size,)
    if size is not None and not all(isinstance(v, int) for v in size):
        raise PortingError(f"{path}.size: {size!r:.80}; expected a tuple of integers")
    if mode == "nearest" and scale is not None:
        vals = scale if isinstance(scale, tuple) else (scale,)
        if not all(isinstance(v, int) for v in vals):
            raise PortingError(
                f"{path}: Flux.Upsample(:nearest, scale = {scale}): NNlib's upsample_nearest "
                "takes integer scales only (Flux itself cannot run this layer); use integers "
                "or :bilinear"
            )
    try:
        layer = Upsample(str(mode), scale=scale, size=size, align_corners=True)
    except PortingError as e:
        raise PortingError(f"{path}: Flux.Upsample: {e}") from None
    what = f"scale = {scale}" if scale is not None else f"size = {size}"
    note = "" if mode == "nearest" else " (NNlib's align_corners = true)"
    out.append(Found(layer, path, f"Flux.Upsample(:{mode}, {what}){note}"))


def pixelshuffle(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``PixelShuffle(r)`` -> `PixelShuffle(r)`."""
    from porting.model import PixelShuffle

    if len(x.data) != 1 or isinstance(x.data[0], bool) or not isinstance(x.data[0], int):
        raise PortingError(
            f"{path}: Flux.{_short(x)} with fields {x.data!r:.80}; expected (r,), an integer"
        )
    try:
        layer = PixelShuffle(x.data[0])
    except PortingError as e:
        raise PortingError(f"{path}: Flux.PixelShuffle: {e}") from None
    out.append(Found(layer, path, f"Flux.PixelShuffle({x.data[0]})"))
