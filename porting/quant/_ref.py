"""The NumPy side of quantized-layer verification: QKeras' two common quantizers as plain
maths, and the float64 reference of a Conv2D / Dense layer in TensorFlow layout.

Nothing here imports TensorFlow or QKeras. The convolution goes through porting.knet's NumPy
reference (cross-correlation, `mode=1`), with TensorFlow's "SAME" padding applied to the input
first, so asymmetric padding (even kernels, strides) is reproduced exactly
(docs/tensorflow.md#same-padding).

>>> quantized_bits(np.array([0.30, -0.52, 1.7]), bits=4, integer=0)
array([ 0.25 , -0.5  ,  0.875])
"""

from __future__ import annotations

import math

import numpy as np

from porting import layout, magnitude
from porting._checks import as_float_array
from porting.errors import PortingError
from porting.geometry import check_operands

__all__ = [
    "quantized_bits",
    "quantized_relu",
    "numpy_quantizer",
    "same_pads",
    "conv2d_reference",
    "dense_reference",
]


def _int(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise PortingError(f"{name}={v!r}: expected an integer >= {lo}")
    return int(v)


def quantized_bits(
    x, bits: int, integer: int = 0, symmetric: bool = False, keep_negative: bool = True
) -> np.ndarray:
    """QKeras `quantized_bits(bits, integer, symmetric, keep_negative, alpha=1)` in NumPy.

    Fixed point with `bits` bits of which `integer` are integer bits (plus the sign bit when
    `keep_negative`): values are rounded to the nearest multiple of
    `2^(integer - bits + keep_negative)` (ties to even, as `tf.round`) and clipped to
    `[-2^integer, 2^integer - step]` (`[-(2^integer - step), ...]` when `symmetric`, `[0, ...]`
    without `keep_negative`). Only `alpha=1` (or None): QKeras' "auto" scales depend on the data.
    """
    bits = _int(bits, "bits", 2)
    integer = _int(integer, "integer", 0)
    if integer >= bits:
        raise PortingError(f"integer={integer} must be smaller than bits={bits}")
    a = np.asarray(x, dtype=np.float64)
    step = 2.0 ** (integer - bits + int(bool(keep_negative)))
    hi = 2.0**integer - step
    lo = (-hi if symmetric else -(2.0**integer)) if keep_negative else 0.0
    return np.clip(np.round(a / step) * step, lo, hi)


def quantized_relu(x, bits: int, integer: int = 0) -> np.ndarray:
    """QKeras `quantized_relu(bits, integer)` in NumPy: relu, then rounded to multiples of
    `2^(integer - bits)` and clipped to `[0, 2^integer - step]`."""
    bits = _int(bits, "bits", 1)
    integer = _int(integer, "integer", 0)
    a = np.asarray(x, dtype=np.float64)
    step = 2.0 ** (integer - bits)
    return np.clip(np.round(a / step) * step, 0.0, 2.0**integer - step)


def numpy_quantizer(class_name: str, config: dict):
    """A NumPy function for a QKeras quantizer given its class name and `get_config()`, or
    None when it is not one of the plain cases reproduced here."""
    cfg = dict(config or {})
    if cfg.get("use_stochastic_rounding") or cfg.get("qnoise_factor", 1.0) not in (1, 1.0, None):
        return None
    if class_name == "quantized_bits":
        if cfg.get("alpha") not in (None, 1, 1.0, "1"):
            return None
        bits, integer = cfg.get("bits", 8), cfg.get("integer", 0)
        symmetric, keep_negative = (
            bool(cfg.get("symmetric", 0)),
            bool(cfg.get("keep_negative", True)),
        )
        if not isinstance(bits, int) or bits < 2:
            return None
        return lambda v: quantized_bits(v, bits, integer, symmetric, keep_negative)
    if class_name == "quantized_relu":
        if (
            cfg.get("use_sigmoid")
            or cfg.get("negative_slope")
            or cfg.get("relu_upper_bound") is not None
        ):
            return None
        bits, integer = cfg.get("bits", 8), cfg.get("integer", 0)
        return lambda v: quantized_relu(v, bits, integer)
    return None


def same_pads(n: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding `(before, after)` for one axis: the odd pixel goes after
    (docs/tensorflow.md#same-padding).

    >>> same_pads(6, 2, 2, 1), same_pads(5, 3, 1, 1)
    ((0, 0), (1, 1))
    """
    span = (k - 1) * dilation + 1
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + span - n, 0)
    return total // 2, total - total // 2


def conv2d_reference(x, kernel, bias=None, *, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """Keras Conv2D (channels_last) in float64: `(y, magnitude, k)`.

    `x` `(N, H, W, Cin)`, `kernel` `(kh, kw, Cin, Cout)`, `bias` `(Cout,)`; `magnitude` is the
    same layer on |x|, |kernel|, |bias| (what porting.compare's tolerance scales with) and `k`
    the number of terms summed per output (kernel volume x Cin, +1 with a bias).
    """
    x = as_float_array(x, "x", ndim=4).astype(np.float64)
    kernel = as_float_array(kernel, "kernel", ndim=4).astype(np.float64)
    check_operands(kernel, x, op="Conv2D", order="tf")
    padding = str(padding).lower()
    if padding == "same":
        pads = [
            same_pads(x.shape[1 + i], kernel.shape[i], strides[i], dilation[i]) for i in range(2)
        ]
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    elif padding != "valid":
        raise PortingError(f"padding={padding!r}: expected 'valid' or 'same'")
    from porting.geometry import ConvGeometry
    from porting.knet import reference

    # Julia order with spatial="reverse": (W, H) -> (X1, X2) (docs/layout.md#width-axis);
    # cross-correlation is mode=1 (docs/knet.md#flip).
    geom = ConvGeometry.from_knet(
        2,
        padding=0,
        stride=layout.spatial_from_tf(tuple(strides)),
        dilation=layout.spatial_from_tf(tuple(dilation)),
        mode=1,
    )
    xj = layout.activations_from_tf(x)
    wj = layout.kernel_from_tf(kernel, mode=1)
    y = layout.activations_to_tf(reference.conv4(wj, xj, geom, 1.0))
    m = layout.activations_to_tf(magnitude.conv4(wj, xj, geom, 1.0))
    k = int(np.prod(kernel.shape[:-1]))
    return _with_bias(y, m, k, bias)


def dense_reference(x, kernel, bias=None):
    """Keras Dense in float64 on the last axis of `x`: `(y, magnitude, k)` (see conv2d_reference)."""
    x = as_float_array(x, "x").astype(np.float64)
    kernel = as_float_array(kernel, "kernel", ndim=2).astype(np.float64)
    if x.shape[-1] != kernel.shape[0]:
        raise PortingError(
            f"kernel has {kernel.shape[0]} inputs but x has {x.shape[-1]} features "
            f"(kernel {kernel.shape} is (in, out), x {x.shape})"
        )
    y = x @ kernel
    m = magnitude.matmul(x, kernel)
    k = kernel.shape[0]
    return _with_bias(y, m, k, bias)


def _with_bias(y: np.ndarray, m: np.ndarray, k: int, bias) -> tuple[np.ndarray, np.ndarray, int]:
    """`(y, magnitude, k)` of a layer output with Keras' `bias` (or None) added on the last
    axis: one more term per output."""
    if bias is None:
        return y, m, k
    b = np.asarray(bias, dtype=np.float64).reshape(-1)
    return y + b, magnitude.bias(m, b, channel_axis=-1), k + 1
