"""Scoring a prediction against `actual`: errors in units of porting.compare's tolerance."""

from __future__ import annotations

import numpy as np

from porting.diagnosis._result import _storage

BIG = 1e30  # error/tolerance recorded for a NaN/Inf that the other side does not share

# The facts behind the advice: kernel_flip docs/knet.md#flip, docs/layout.md#kernels;
# spatial_transpose docs/layout.md#width-axis; padding_shift docs/knet.md#padding,
# docs/tensorflow.md#same-padding, #explicit-padding; flatten_order docs/layout.md#flatten-order,
# #dense-after-conv.
ADVICE = {
    "kernel_flip": (
        "Knet's conv4 mode=0 is true convolution: rotate the kernel for TensorFlow with "
        "porting.layout.kernel_to_tf(w, mode=0)"
    ),
    "spatial_transpose": (
        "convert x, the kernel and per-axis padding/stride/dilation with one spatial= choice "
        "(porting.layout)"
    ),
    "padding_shift": (
        "Knet pads symmetrically: give TensorFlow explicit paddings [[0,0],[p,p],[p,p],[0,0]] "
        "(or ZeroPadding2D + 'valid'), never 'SAME'"
    ),
    "flatten_order": (
        "permute the Dense kernel's rows, not just transpose it: "
        "porting.layout.dense_to_tf(w, input_shape=(X1, X2, C))"
    ),
    "precision": (
        "one side computed in lower precision: compare with that format's tolerance, or run it "
        "in float32 (mixed-precision policy off; "
        "tf.config.experimental.enable_tensor_float_32_execution(False))"
    ),
    "quantization": (
        "one side computed with quantized weights: verify against the weights the layer "
        "really uses (QKeras: quantizer(weight), not get_weights())"
    ),
    "layout": "convert with porting.layout.activations_to_tf / activations_from_tf",
}


def ratio(actual: np.ndarray, pred: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """|actual - pred| / tol, with shared NaN/Inf counted as agreement and others as BIG."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.abs(actual - pred) / tol
    bad = ~np.isfinite(r)
    if bad.any():
        same = (np.isnan(actual) & np.isnan(pred)) | (actual == pred)
        r = np.where(bad, np.where(same, 0.0, BIG), r)
    return r


def misfit(r: np.ndarray) -> float:
    """Mean of log2(1 + error/tolerance): 0 for a perfect fit, <= 1 within the bound."""
    if r.size == 0:
        return float("inf")
    return float(np.mean(np.log2(1.0 + np.minimum(r, BIG))))


def ulps(actual: np.ndarray, pred: np.ndarray, precision: str) -> np.ndarray:
    """|actual - pred| in ULPs of `precision` at |pred| (finite elements only, flat)."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(actual - pred)
        sp = np.spacing(np.abs(pred).astype(_storage(precision))).astype(np.float64)
        u = d / sp
    return u[np.isfinite(u)]


def max_ulp(actual: np.ndarray, pred: np.ndarray, precision: str) -> float:
    u = ulps(actual, pred, precision)
    return float(u.max()) if u.size else 0.0


def ulp_text(actual: np.ndarray, pred: np.ndarray, precision: str) -> str:
    """'median 0.5 ULP, max 3 ULP' (ULPs mislead where sums cancel; the ratio is the test)."""
    u = ulps(actual, pred, precision)
    if not u.size:
        return "no finite values"
    return f"median {np.median(u):.2g} ULP, max {u.max():.3g} ULP"


def partial_score(m: float, m0: float, cap: float = 0.95) -> float:
    """Fraction of the baseline misfit `m0` removed by a hypothesis with misfit `m`."""
    if not np.isfinite(m) or m0 <= 0:
        return 0.0
    return cap * float(np.clip(1.0 - m / m0, 0.0, 1.0))


def fmt_ratio(v: float) -> str:
    return ">1e30" if v >= BIG else f"{v:.2g}"
