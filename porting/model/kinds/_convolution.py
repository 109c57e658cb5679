"""What the `conv` and `deconv` kinds check alike: the kernel, the bias against the kernel's
output channels, and the geometry of the Knet keywords."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from porting.errors import PortingError
from porting.geometry import ConvGeometry
from porting.model.layer import fmt_size, weight_array


def kernel_and_bias(
    w: object, b: object, where: str, out_axis: int, layout_note: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """`w` (1-3 spatial dimensions) and `b` (`(1, ..., 1, Cout, 1)`, `(Cout,)` or None, with
    `Cout = w.shape[out_axis]` and w's element type) as checked arrays. `layout_note` (e.g.
    " (deconv4's w is (W..., Cout, Cin))") follows the channel count in the bias error."""
    w = weight_array(w, "w", where, (3, 4, 5))
    if b is None:
        return w, None
    nd = w.ndim - 2
    cout = w.shape[out_axis]
    b = weight_array(b, "b", where, (1, 2, 3, 4, 5))
    extra = [n for i, n in enumerate(b.shape) if n != 1 and i != max(b.ndim - 2, 0)]
    if b.size != cout or extra:
        raise PortingError(
            f"{where}: b has shape {b.shape} but w {w.shape} has {cout} output "
            f"channels{layout_note}; expected {(*([1] * nd), cout, 1)} or ({cout},)"
        )
    if b.dtype != w.dtype:
        raise PortingError(f"{where}: b is {b.dtype} but w is {w.dtype}; expected one element type")
    return w, b


class _ConvKeywords(Protocol):
    """A conv-like layer: its checked kernel, Knet keywords and label (read only)."""

    @property
    def w(self) -> np.ndarray: ...
    @property
    def padding(self) -> object: ...
    @property
    def stride(self) -> object: ...
    @property
    def dilation(self) -> object: ...
    @property
    def mode(self) -> object: ...
    @property
    def label(self) -> str: ...


def conv_geometry(layer: _ConvKeywords) -> ConvGeometry:
    """The `ConvGeometry` of `layer`'s Knet keywords (padding, stride, dilation, mode) for its
    kernel `w`, its errors naming the layer and the kernel."""
    w = layer.w
    try:
        return ConvGeometry.from_knet(
            w.ndim - 2,
            padding=layer.padding,
            stride=layer.stride,
            dilation=layer.dilation,
            mode=layer.mode,
        )
    except PortingError as e:
        raise PortingError(f"{layer.label} (w {w.shape}): {e}") from None


def check_input_rank(w: np.ndarray, where: str, size: Sequence[int]) -> None:
    """PortingError unless the per-sample input `size` is `(X1, ..., C)` with as many spatial
    dimensions as the kernel `w`."""
    nd = w.ndim - 2
    if len(size) != nd + 1:
        raise PortingError(
            f"{where}: w {w.shape} is a {nd}-d kernel expecting input "
            f"(X1, ..., C) with {nd} spatial dimensions, but the input has size "
            f"{fmt_size(size)} per sample"
        )
