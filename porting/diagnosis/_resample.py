"""Resampling causes, by recomputation in float64 (TensorFlow layout, channels last).

- `diagnose_upsample`: `upsample_align_corners`, a linear upsampling computed with the other
  corner convention (Flux's `Upsample(:bilinear)` is NNlib's `align_corners = true`, Keras's
  `UpSampling2D(interpolation="bilinear")` half-pixel centres: docs/flux.md#upsample-flux), and
  `upsample_mode`, nearest where linear was meant (Keras's default `interpolation`) or linear
  (half-pixel) where nearest was.
- `diagnose_pixel_shuffle`: `pixel_shuffle_order`, the channels read in TensorFlow's
  `depth_to_space` order (the output channel fastest) instead of NNlib's (the sub-position
  along X1 fastest, the output channel slowest), or the sub-positions of the two axes swapped
  (docs/tensorflow.md#keras-pixel-shuffle).

The recomputation is written here from NNlib's definitions (NNlib v0.9.22 src/upsample.jl), not
taken from porting.model (which sits above this package).
"""

from __future__ import annotations

import numpy as np

from porting.diagnosis._core import _output_array
from porting.diagnosis._layers import _check_shapes, _finish, _Hyp
from porting.diagnosis._result import Diagnosis
from porting.errors import PortingError

__all__ = ["diagnose_pixel_shuffle", "diagnose_upsample"]


def _linear(x: np.ndarray, axis: int, n_out: int, align: bool) -> np.ndarray:
    """Linear interpolation of float64 `x` along `axis` to `n_out` cells (NNlib's source
    index, neighbours and weights)."""
    n_in = x.shape[axis]
    i = np.arange(n_out, dtype=np.float64)
    if align:
        real = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        real = np.maximum(0.0, (i + 0.5) * (n_in / n_out) - 0.5)
    i0 = np.floor(real).astype(np.int64)
    i1 = i0 + (i0 < n_in - 1)
    lam = real - i0
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = lam.reshape(shape)
    return (1 - lam) * np.take(x, i0, axis=axis) + lam * np.take(x, i1, axis=axis)


def _resample(x: np.ndarray, out: tuple[int, ...], how: str) -> np.ndarray:
    """`x` (N, S..., C) resampled to spatial size `out`: how = "aligned", "half" or "nearest"
    (NNlib's `floor(i * in / out)`)."""
    y = x
    for k, n_out in enumerate(out):
        axis = k + 1
        n_in = y.shape[axis]
        if n_in == n_out:
            continue
        if how == "nearest":
            src = np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64)
            y = np.take(y, np.minimum(src, n_in - 1), axis=axis)
        else:
            y = _linear(y, axis, n_out, how == "aligned")
    return y


def diagnose_upsample(
    x, actual, *, mode: str, align_corners: bool = True, expected=None
) -> Diagnosis:
    """Why a port of NNlib's upsampling of `x` gives `actual` (both TensorFlow layout `(N,
    S..., C)`; the output size is `actual`'s). `mode` is the kind's (`nearest`, `bilinear`,
    `trilinear`), `align_corners` NNlib's keyword. Causes: `rounding`,
    `upsample_align_corners`, `upsample_mode`, `unknown`."""
    x64 = _output_array(x, "x").astype(np.float64)
    a = _output_array(actual, "actual")
    if (
        a.ndim != x64.ndim
        or a.ndim < 3
        or a.shape[0] != x64.shape[0]
        or a.shape[-1] != x64.shape[-1]
    ):
        raise PortingError(
            f"actual has shape {a.shape} and x {x64.shape}; expected (N, S..., C) for both, "
            "the same N and C"
        )
    out = tuple(int(n) for n in a.shape[1:-1])
    linear = mode != "nearest"
    meant = ("aligned" if align_corners else "half") if linear else "nearest"
    if expected is None:
        e = _resample(x64, out, meant).astype(a.dtype)
    else:
        e = _output_array(expected, "expected")
        _check_shapes(e, a, "expected")
    mag = _resample(np.abs(x64), out, meant)
    k = 2 ** (x64.ndim - 2) if linear else 1
    hyps = []
    alternatives = (
        [
            ("upsample_align_corners", "half" if align_corners else "aligned"),
            ("upsample_mode", "nearest"),
        ]
        if linear
        else [("upsample_mode", "half")]
    )
    texts = {
        "half": "linear interpolation with half-pixel centres (align_corners=false: Keras's "
        "UpSampling2D(interpolation='bilinear'))",
        "aligned": "linear interpolation with aligned corners (align_corners=true: Flux's "
        "Upsample(:bilinear))",
        "nearest": "nearest-neighbour copies (Keras's UpSampling default interpolation)",
    }
    for cause, how in alternatives:
        hyps.append(
            _Hyp(
                cause=cause,
                name=how,
                text=texts[how],
                pred=_resample(x64, out, how),
                mag=_resample(np.abs(x64), out, how),
                k=k,
            )
        )
    basis = f"recomputation of the {mode} upsampling to {out} from its input"
    return _finish(e, a, mag, k, hyps, basis, [])


def _shuffle(x: np.ndarray, r: int, order: str) -> np.ndarray:
    """Pixel shuffle of `x` (N, S1, ..., Sd, Cin) by `r`; `order` of the channel index: "nnlib"
    (TF spatial axes in `tf_axes`' order, see `diagnose_pixel_shuffle`), "depth_to_space"
    (sub-positions of S1..Sd, slowest first, then the output channel)."""
    n, sizes, cin = x.shape[0], x.shape[1:-1], x.shape[-1]
    d = len(sizes)
    cout = cin // r**d
    if order == "depth_to_space":  # channel = (i_S1, ..., i_Sd, c) row-major
        y = x.reshape((n, *sizes, *(r,) * d, cout))
    else:  # channel = (c, i_a, ..., i_b) row-major, axes given by `order`
        axes = [int(v) for v in order.split(",")]
        y = x.reshape((n, *sizes, cout, *(r,) * d))
        # bring the sub-positions to (i_S1, ..., i_Sd) order, the channel last
        sub = [1 + d + 1 + axes.index(k) for k in range(d)]
        y = y.transpose([0, *range(1, d + 1), *sub, 1 + d])
    perm = [0] + [a for k in range(d) for a in (1 + k, 1 + d + k)] + [1 + 2 * d]
    y = y.transpose(perm)
    return y.reshape((n, *(s * r for s in sizes), cout))


def diagnose_pixel_shuffle(
    x, actual, *, r: int, spatial: str = "reverse", expected=None
) -> Diagnosis:
    """Why a port of NNlib's `pixel_shuffle(x, r)` gives `actual` (TensorFlow layout, `(N,
    S..., r^d C)` -> `(N, r S..., C)`; `spatial` the mapping of Julia's axes onto TensorFlow's,
    porting.layout's). Causes: `rounding`, `pixel_shuffle_order`, `unknown`."""
    x64 = _output_array(x, "x").astype(np.float64)
    a = _output_array(actual, "actual")
    d = x64.ndim - 2
    if (
        d < 1
        or x64.shape[-1] % r**d
        or a.shape
        != (
            x64.shape[0],
            *(s * r for s in x64.shape[1:-1]),
            x64.shape[-1] // r**d,
        )
    ):
        raise PortingError(
            f"x has shape {x64.shape} and actual {a.shape}; expected (N, S..., r^d C) and "
            f"(N, r S..., C) for r={r}"
        )
    # NNlib's channel, row-major: (c, r of Xd, ..., r of X1); TF axis k holds Julia axis
    # d - 1 - k under "reverse", k under "keep"
    julia = [d - 1 - k if spatial == "reverse" else k for k in range(d)]
    nnlib = ",".join(str(julia.index(j)) for j in reversed(range(d)))
    if expected is None:
        e = _shuffle(x64, r, nnlib).astype(a.dtype)
    else:
        e = _output_array(expected, "expected")
        _check_shapes(e, a, "expected")
    mag = np.abs(e.astype(np.float64))
    hyps = [
        _Hyp(
            cause="pixel_shuffle_order",
            name="depth_to_space",
            text="TensorFlow's depth_to_space channel order (the output channel fastest)",
            pred=_shuffle(x64, r, "depth_to_space"),
            mag=mag,
            k=1,
        )
    ]
    if d == 2:
        swapped = ",".join(reversed(nnlib.split(",")))
        hyps.append(
            _Hyp(
                cause="pixel_shuffle_order",
                name="axes_swapped",
                text="NNlib's order with the sub-positions of the two spatial axes swapped",
                pred=_shuffle(x64, r, swapped),
                mag=mag,
                k=1,
            )
        )
    basis = f"recomputation of pixel_shuffle(x, {r}) from its input"
    return _finish(e, a, mag, 1, hyps, basis, [])
