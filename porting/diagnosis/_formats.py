"""Lower-precision formats and weight quantizers, as NumPy functions on float arrays.

Used by the `precision` and `quantization` hypotheses: each function returns float64 values
that are exactly representable in the format (or on the quantizer's grid), so a convolution
computed from them in float64 is what a side computing with those inputs would get, up to
its own accumulation rounding.

>>> float(to_format(np.array([1.0 + 2.0**-9]), "bfloat16")[0])
1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FORMATS", "to_format", "representable", "Quantizer", "quantizers"]

# name -> (explicit mantissa bits, description); TF32 keeps 10 bits (docs/numerics.md#tf32)
FORMATS = {
    "float16": (10, "float16 (IEEE half: 10-bit mantissa, 5-bit exponent)"),
    "bfloat16": (7, "bfloat16 (7-bit mantissa, float32's exponent range)"),
    "tf32": (10, "TF32 (TensorFloat-32: 10-bit mantissa inputs, float32 accumulation)"),
    "float32": (23, "float32"),
    # the same formats reached by truncation (rounding toward zero), as some conversions do
    "tf32_rz": (10, "TF32, truncated"),
    "bfloat16_rz": (7, "bfloat16, truncated"),
}


def _round_mantissa(a: np.ndarray, bits: int, truncate: bool = False) -> np.ndarray:
    """Round to nearest (ties to even), or toward zero with `truncate`, keeping `bits` explicit
    mantissa bits in float32's exponent range."""
    with np.errstate(over="ignore"):
        f = np.asarray(a, dtype=np.float32)
    u = f.view(np.uint32)
    shift = np.uint32(23 - bits)
    if shift == 0:
        return f.astype(np.float64)
    if truncate:
        bias: np.ndarray = np.zeros_like(u)
    else:
        lsb = (u >> shift) & np.uint32(1)
        bias = np.uint32((1 << (int(shift) - 1)) - 1) + lsb
    rounded = (u + bias) & ~np.uint32((1 << int(shift)) - 1)
    finite = np.isfinite(f)
    out = np.where(finite, rounded, u).view(np.float32)
    return out.astype(np.float64)


def to_format(a, name: str) -> np.ndarray:
    """Values of `a` rounded into format `name` (see FORMATS), returned as float64."""
    a = np.asarray(a, dtype=np.float64)
    if name == "float16":
        with np.errstate(over="ignore"):
            return a.astype(np.float16).astype(np.float64)
    if name == "float32":
        with np.errstate(over="ignore"):
            return a.astype(np.float32).astype(np.float64)
    return _round_mantissa(a, FORMATS[name][0], truncate=name.endswith("_rz"))


def representable(a: np.ndarray, name: str) -> float:
    """Fraction of the finite values of `a` that are exactly representable in format `name`."""
    a = np.asarray(a, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0
    return float(np.mean(to_format(finite, name) == finite))


@dataclass(frozen=True)
class Quantizer:
    """One candidate weight quantizer: `apply(w)` maps TF-layout kernels `(..., Cin, Cout)`
    (or dense kernels `(out, in)` with `channel_axis=0`) onto its grid."""

    name: str  # short, for JSON
    description: str  # for the evidence sentence
    apply: Callable[[np.ndarray, int], np.ndarray]


def _per_channel(w: np.ndarray, axis: int, fn) -> np.ndarray:
    """Reduce |w| over every axis except `axis` with `fn`, keeping dims for broadcasting."""
    axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    return fn(np.abs(w), axis=axes, keepdims=True)


def _fixed(frac_bits: int, clip: float | None, symmetric: bool = False):
    step = 2.0**-frac_bits

    def apply(w, axis):
        q = np.round(w / step) * step
        if clip is not None:
            q = np.clip(q, -clip + (step if symmetric else 0.0), clip - step)
        return q

    return apply


def _scaled(bits: int, per_channel: bool):
    levels = 2 ** (bits - 1) - 1

    def apply(w, axis):
        m = _per_channel(w, axis, np.max) if per_channel else np.max(np.abs(w))
        scale = np.where(m > 0, m / levels, 1.0)
        return np.round(w / scale) * scale

    return apply


def _po2(min_exp: int | None, log_domain: bool):
    def apply(w, axis):
        a = np.abs(w)
        with np.errstate(divide="ignore"):
            lg = np.log2(np.where(a > 0, a, 1.0))
        if log_domain:
            e = np.round(lg)
        else:  # nearest power of two in the linear domain: 2^e or 2^(e+1)
            lo = np.floor(lg)
            e = np.where(a - 2.0**lo > 2.0 ** (lo + 1) - a, lo + 1, lo)
        if min_exp is not None:
            e = np.maximum(e, min_exp)
        return np.where(a > 0, np.sign(w) * 2.0**e, 0.0)

    return apply


def _binary(scaled: bool):
    def apply(w, axis):
        s = np.where(w >= 0, 1.0, -1.0)
        return s * _per_channel(w, axis, np.mean) if scaled else s

    return apply


def _ternary(threshold: float, scaled: bool):
    def apply(w, axis):
        t = threshold * np.max(np.abs(w))
        q = np.where(np.abs(w) > t, np.sign(w), 0.0)
        if scaled:
            kept = np.abs(q)
            axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
            num = np.sum(np.abs(w) * kept, axis=axes, keepdims=True)
            den = np.maximum(np.sum(kept, axis=axes, keepdims=True), 1.0)
            q = q * (num / den)
        return q

    return apply


def quantizers(w: np.ndarray) -> list[Quantizer]:
    """Candidate quantizers for weights `w`: the grids of QKeras' quantized_bits (fixed point,
    optionally clipped), per-tensor and per-channel symmetric integer scaling (TFLite-style),
    powers of two (quantized_po2), binary and ternary. Only those that change `w` are kept."""
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    # clipping ranges 2^i that can matter: up to the largest weight; down to the smallest
    # per-channel maximum (a per-channel power-of-two scale, QKeras alpha="auto_po2")
    chmax = np.max(np.abs(w).reshape(-1, w.shape[-1]), axis=0) if w.ndim >= 2 else np.array([amax])
    chmax = chmax[chmax > 0]
    i_lo = int(np.floor(np.log2(chmax.min()))) if chmax.size else 0
    i_hi = max(int(np.ceil(np.log2(amax))) if amax > 0 else 0, 0)
    out: list[Quantizer] = []
    for f in range(-2, 17):
        step = 2.0**-f
        if step > 4 * max(amax, 1e-300):
            continue
        out.append(
            Quantizer(f"fixed_2^-{f}", f"weights rounded to multiples of 2^{-f}", _fixed(f, None))
        )
        for i in range(max(i_lo, -8), min(i_hi, 4) + 1):
            clip = 2.0**i
            if clip < amax + step and clip >= 2 * step:
                bits = f + i + 1
                qk = f" (QKeras quantized_bits({bits}, {i}))" if i >= 0 else ""
                qks = f" (QKeras quantized_bits({bits}, {i}, symmetric=1))" if i >= 0 else ""
                out.append(
                    Quantizer(
                        f"fixed_2^-{f}_clip_2^{i}",
                        f"weights rounded to multiples of 2^{-f} and clipped to [-2^{i}, 2^{i}){qk}",
                        _fixed(f, clip),
                    )
                )
                out.append(
                    Quantizer(
                        f"fixed_2^-{f}_clip_2^{i}_sym",
                        f"weights rounded to multiples of 2^{-f} and clipped symmetrically to "
                        f"+-(2^{i} - 2^{-f}){qks}",
                        _fixed(f, clip, symmetric=True),
                    )
                )
    for bits in range(2, 17):
        for per_channel in (False, True):
            where = "per output channel" if per_channel else "per tensor"
            out.append(
                Quantizer(
                    f"int{bits}_{'channel' if per_channel else 'tensor'}",
                    f"weights quantized to {bits}-bit symmetric integers scaled by max|w| {where}",
                    _scaled(bits, per_channel),
                )
            )
    for log_domain in (True, False):
        kind = "log" if log_domain else "linear"
        out.append(
            Quantizer(
                f"po2_{kind}",
                f"weights rounded to signed powers of two ({kind} rounding)",
                _po2(None, log_domain),
            )
        )
        for e in range(-16, 0):
            if 2.0**e < amax:
                out.append(
                    Quantizer(
                        f"po2_{kind}_min_2^{e}",
                        f"weights rounded to signed powers of two ({kind} rounding), exponent >= {e} "
                        "(QKeras quantized_po2)",
                        _po2(e, log_domain),
                    )
                )
    out.append(Quantizer("binary", "weights binarized to +-1 (QKeras binary)", _binary(False)))
    out.append(
        Quantizer(
            "binary_scaled", "weights binarized to +-mean|w| per output channel", _binary(True)
        )
    )
    for t in (0.33, 0.5, 0.7):
        out.append(
            Quantizer(
                f"ternary_{t}",
                f"weights ternarized to -1, 0, 1 (threshold {t} max|w|)",
                _ternary(t, False),
            )
        )
        out.append(
            Quantizer(
                f"ternary_{t}_scaled",
                f"weights ternarized to 0 and +-mean|w| per output channel (threshold {t} max|w|)",
                _ternary(t, True),
            )
        )
    return out
