"""Hypothesis strategies for property-testing a port: Knet geometries and Julia-indexed arrays.

Needs `hypothesis` (an optional dependency: `pip install hypothesis`); importing this module
without it raises `MissingDependencyError` saying so. Nothing else in `porting` imports it.

- `conv_geometries(nd)`: a Knet `conv4` geometry, `ConvCase(w_size, x_size, keywords)`, with
  sizes Julia's `size()` (`(W1, ..., Cin, Cout)`, `(X1, ..., Cin, N)`) and keywords
  `padding`, `stride`, `dilation` (each an int or a per-dimension tuple, Julia order) and
  `mode` (0 or 1), always one Knet computes: `Xi + 2 padding >= (Wi - 1) dilation + 1`.
- `pool_geometries(nd)`: a Knet `pool` geometry, `PoolCase(x_size, keywords)` with
  `window`, `padding`, `stride` and `mode` (0 max, 1 mean), `Xi + 2 padding >= window`.
- `julia_arrays(shape)`: arrays of that Julia size, float32 or Float64, in either memory order
  (Fortran, as NPZ.jl and Julia write them, or C), with finite values.
- `conv_inputs(nd)`, `pool_inputs(nd)`: a geometry with its arrays: `(w, x, keywords)`,
  `(x, keywords)`, ready for `porting.knet.conv4(w, x, **keywords)` and for the port.

By default the padding stays below the kernel extent / window (what Knet's GPU path, cuDNN,
accepts too); `beyond_extent=True` also draws the larger paddings only Knet's CPU path takes.

    from hypothesis import given
    from porting.testing import assert_layer_ported
    from porting.testing.strategies import conv_inputs

    @given(conv_inputs())
    def test_my_conv_port(case):
        w, x, kw = case
        assert_layer_ported(my_port(w, **kw), x, w=w, **kw)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from porting.errors import MissingDependencyError

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as _e:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingDependencyError(
        "porting.testing.strategies needs hypothesis, an optional dependency: "
        f"pip install hypothesis (or pip install 'porting[dev]'); ({_e})"
    ) from None

__all__ = [
    "ConvCase",
    "PoolCase",
    "conv_geometries",
    "pool_geometries",
    "julia_arrays",
    "conv_inputs",
    "pool_inputs",
    "DTYPES",
]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ConvCase:
    """A Knet `conv4` geometry: Julia sizes of `w` and `x`, and conv4's keywords."""

    w_size: tuple[int, ...]
    x_size: tuple[int, ...]
    keywords: dict[str, Any]


@dataclass(frozen=True)
class PoolCase:
    """A Knet `pool` geometry: the Julia size of `x` and pool's keywords."""

    x_size: tuple[int, ...]
    keywords: dict[str, Any]


def _per_dim(values: list[int]):
    """An int when all dimensions agree (as users write it), else a tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def _padding_and_size(draw, extent: int, max_size: int, beyond_extent: bool, *, cap: bool):
    """A padding (below `extent`, or up to `extent + 1` with `beyond_extent`; at most
    `max_size` with `cap`) and an input size the window fits: `Xi + 2p >= extent`."""
    top = (extent - 1) if not beyond_extent else extent + 1
    p = draw(st.integers(0, max(0, min(top, max_size)) if cap else top))
    lo = max(1, extent - 2 * p)
    return p, draw(st.integers(lo, max(lo, max_size)))


@st.composite
def conv_geometries(
    draw,
    nd: int = 2,
    *,
    max_size: int = 10,
    max_kernel: int = 4,
    max_channels: int = 3,
    max_batch: int = 2,
    max_stride: int = 3,
    max_dilation: int = 2,
    modes: tuple[int, ...] = (0, 1),
    beyond_extent: bool = False,
) -> ConvCase:
    """A `ConvCase` for `nd` spatial dimensions (1-3) that Knet's conv4 computes."""
    kernel, xs, pads, strides, dils = [], [], [], [], []
    for _ in range(nd):
        k = draw(st.integers(1, max_kernel))
        d = draw(st.integers(1, max_dilation)) if k > 1 else 1
        p, x = _padding_and_size(draw, (k - 1) * d + 1, max_size, beyond_extent, cap=True)
        s = draw(st.integers(1, max_stride))
        kernel.append(k)
        xs.append(x)
        pads.append(p)
        strides.append(s)
        dils.append(d)
    cin = draw(st.integers(1, max_channels))
    cout = draw(st.integers(1, max_channels))
    n = draw(st.integers(1, max_batch))
    keywords = {
        "padding": _per_dim(pads),
        "stride": _per_dim(strides),
        "dilation": _per_dim(dils),
        "mode": draw(st.sampled_from(modes)),
    }
    return ConvCase((*kernel, cin, cout), (*xs, cin, n), keywords)


@st.composite
def pool_geometries(
    draw,
    nd: int = 2,
    *,
    max_size: int = 10,
    max_window: int = 4,
    max_channels: int = 3,
    max_batch: int = 2,
    max_stride: int = 3,
    modes: tuple[int, ...] = (0, 1),
    beyond_extent: bool = False,
) -> PoolCase:
    """A `PoolCase` for `nd` spatial dimensions (1-3) that Knet's pool computes (`stride`
    defaults to the window in Knet; drawn explicitly here)."""
    wins, xs, pads, strides = [], [], [], []
    for _ in range(nd):
        win = draw(st.integers(1, max_window))
        p, x = _padding_and_size(draw, win, max_size, beyond_extent, cap=False)
        xs.append(x)
        wins.append(win)
        pads.append(p)
        strides.append(draw(st.integers(1, max_stride)))
    c = draw(st.integers(1, max_channels))
    n = draw(st.integers(1, max_batch))
    keywords = {
        "window": _per_dim(wins),
        "padding": _per_dim(pads),
        "stride": _per_dim(strides),
        "mode": draw(st.sampled_from(modes)),
    }
    return PoolCase((*xs, c, n), keywords)


@st.composite
def julia_arrays(
    draw,
    shape,
    dtype=None,
    *,
    order: str | None = None,
    bound: float = 10.0,
) -> np.ndarray:
    """An array of Julia size `shape`: `dtype` float32 or float64 (drawn when None), memory
    order "F" (as Julia and NPZ.jl write it) or "C" (drawn when None), finite values in
    [-bound, bound], none subnormal (TensorFlow's CPU kernels read subnormal inputs as zero:
    docs/tensorflow.md#subnormal-inputs). The indices mean the same in either order:
    `a[i, j, c, n]` is Julia's `a[i+1, j+1, c+1, n+1]`."""
    dt = np.dtype(draw(st.sampled_from(DTYPES))) if dtype is None else np.dtype(dtype)
    if dt not in DTYPES:
        from porting.errors import PortingError

        raise PortingError(f"dtype={dtype!r}: expected float32 or float64 (Knet's element types)")
    elements = st.floats(
        -bound,
        bound,
        width=8 * dt.itemsize,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )
    a = draw(hnp.arrays(dt, tuple(shape), elements=elements))
    memory = draw(st.sampled_from(("F", "C"))) if order is None else order
    return np.asfortranarray(a) if memory == "F" else np.ascontiguousarray(a)


@st.composite
def conv_inputs(draw, nd: int = 2, dtype=None, **geometry) -> tuple[np.ndarray, np.ndarray, dict]:
    """`(w, x, keywords)`: a `conv_geometries(nd, **geometry)` case with its arrays, one dtype
    for both (drawn when None), each in either memory order."""
    case = draw(conv_geometries(nd, **geometry))
    dt = np.dtype(draw(st.sampled_from(DTYPES))) if dtype is None else np.dtype(dtype)
    w = draw(julia_arrays(case.w_size, dt))
    x = draw(julia_arrays(case.x_size, dt))
    return w, x, dict(case.keywords)


@st.composite
def pool_inputs(draw, nd: int = 2, dtype=None, **geometry) -> tuple[np.ndarray, dict]:
    """`(x, keywords)`: a `pool_geometries(nd, **geometry)` case with its input array."""
    case = draw(pool_geometries(nd, **geometry))
    x = draw(julia_arrays(case.x_size, dtype))
    return x, dict(case.keywords)
