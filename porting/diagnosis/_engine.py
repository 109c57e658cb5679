"""Cross-correlation in TensorFlow layout, at chosen output positions, in float64.

The diagnosis recomputes what a TensorFlow side with a given mistake would have produced.
TensorFlow computes cross-correlation on `(N, *spatial, C)` inputs with `(*kernel, Cin, Cout)`
kernels and allows asymmetric padding (its "SAME" puts the odd pixel at the end), which Knet's
conv4 cannot express (docs/tensorflow.md#same-padding, docs/knet.md#padding), so the
recomputation works in TF layout with `(lo, hi)` padding per axis.

Only the output positions being checked are computed (im2col rows gathered at those positions,
then one matrix product per candidate kernel), so a hypothesis on a large layer costs a sample,
not a full convolution. Every array here is float64: a prediction only needs to be more exact
than the side it is compared with.

>>> x = np.arange(16.0).reshape(1, 4, 4, 1); k = np.ones((2, 2, 1, 1))
>>> g = Grid(((0, 0), (0, 0)), (1, 1), (1, 1))
>>> g.output_shape(x.shape, k.shape)
(1, 3, 3, 1)
>>> float(Windows(x, k.shape[:-2], g, all_positions((1, 3, 3, 1))).apply(k)[0, 0])
10.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from porting import magnitude as S

__all__ = ["Grid", "Windows", "all_positions", "sample_positions"]


@dataclass(frozen=True)
class Grid:
    """Padding `(lo, hi)`, stride and dilation per TF spatial axis."""

    pads: tuple[tuple[int, int], ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]

    def output_shape(self, x_shape, k_shape) -> tuple[int, ...] | None:
        """TF output shape `(N, *Y, Cout)`, or None when some Yi < 1."""
        ys = []
        for n, k, (lo, hi), s, d in zip(
            x_shape[1:-1], k_shape[:-2], self.pads, self.stride, self.dilation, strict=True
        ):
            span = n + lo + hi - ((k - 1) * d + 1)
            if span < 0 or lo < 0 or hi < 0:
                return None
            ys.append(span // s + 1)
        return (x_shape[0], *ys, k_shape[-1])

    def describe(self) -> str:
        return ", ".join(f"({lo}, {hi})" for lo, hi in self.pads)


def all_positions(out_shape) -> np.ndarray:
    """Every `(n, y1, ..., yd)` of an output of shape `(N, *Y, C)`, as rows."""
    grids = np.indices(out_shape[:-1]).reshape(len(out_shape) - 1, -1)
    return np.ascontiguousarray(grids.T)


def sample_positions(out_shape, limit: int, seed: int = 0) -> np.ndarray:
    """All positions when there are at most `limit`, else the whole spatial rim of the first
    sample (where padding mistakes show) plus a fixed random sample of the rest."""
    total = int(np.prod(out_shape[:-1]))
    if total <= limit:
        return all_positions(out_shape)
    rng = np.random.default_rng(seed)
    spatial = out_shape[1:-1]
    rim = []
    for ax, n in enumerate(spatial):
        for edge in sorted({0, n - 1}):
            other = [rng.integers(0, m, size=limit // (8 * len(spatial))) for m in spatial]
            other[ax] = np.full_like(other[ax], edge)
            rim.append(np.stack([np.zeros_like(other[0]), *other], axis=1))
    rest = np.stack([rng.integers(0, m, size=limit) for m in out_shape[:-1]], axis=1)
    pos = np.concatenate([*rim, rest])[:limit]
    return np.unique(pos, axis=0)


class Windows:
    """im2col rows of `x` (TF layout) at `positions` of the output grid: one row per position,
    `prod(kernel) * Cin` columns in the order of a C-ordered `(*kernel, Cin)` kernel."""

    def __init__(self, x: np.ndarray, ksize: tuple[int, ...], grid: Grid, positions: np.ndarray):
        nd = len(ksize)
        pad = [(0, 0), *grid.pads, (0, 0)]
        xp = np.pad(x, pad) if any(lo or hi for lo, hi in grid.pads) else x
        p = positions.shape[0]
        index = [positions[:, 0].reshape((p,) + (1,) * nd)]
        for i in range(nd):
            start = positions[:, 1 + i] * grid.stride[i]
            offs = np.arange(ksize[i]) * grid.dilation[i]
            shape = [1] * nd
            shape[i] = ksize[i]
            index.append(start.reshape((p,) + (1,) * nd) + offs.reshape((1, *shape)))
        cols = xp[tuple(index)]  # (P, *ksize, Cin)
        self.cols = cols.reshape(p, -1)
        self._abs: np.ndarray | None = None

    def apply(self, kernel: np.ndarray) -> np.ndarray:
        """`(P, Cout)` outputs of `kernel` `(*ksize, Cin, Cout)` at the positions."""
        return self.cols @ kernel.reshape(-1, kernel.shape[-1])

    def magnitude(self, kernel: np.ndarray) -> np.ndarray:
        """`(P, Cout)` sums of |w*x|: the magnitudes the tolerance scales with."""
        if self._abs is None:
            self._abs = S.absolute(self.cols)
        return S.matmul(self._abs, kernel.reshape(-1, kernel.shape[-1]), a_is_magnitude=True)
