"""`diagnose_quantized`: porting.diagnose with a QKeras layer's known quantized weights as
one more hypothesis, tested by recomputation (NumPy only).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from porting.errors import PortingError

__all__ = ["diagnose_quantized"]


def diagnose_quantized(
    expected,
    actual,
    *,
    w,
    w_quantized,
    x,
    bias=None,
    bias_quantized=None,
    padding=0,
    stride=1,
    dilation=1,
    mode=0,
    alpha=1,
    spatial: str = "reverse",
):
    """`porting.diagnose` for a reference built with float weights `w` when one side may have
    computed with `w_quantized` (a QKeras layer's `quantizer(weight)`): the known quantized
    weights are tested as one more hypothesis, by recomputation.

    Arguments as in porting.diagnose (`expected`, `actual` in TF layout; `w`, `x` Julia-indexed:
    conv `(W1, W2, Cin, Cout)` / `(X1, X2, Cin, N)`, dense `(out, in)` / `(in, N)`), plus
    `w_quantized` (and `bias_quantized`) of `w`'s (and `bias`'s) shape. When recomputing with
    the quantized weights reproduces `actual` within porting.compare's bound, the cause is
    `quantization`, with that as evidence; otherwise porting.diagnose's answer stands, with
    the quantized hypothesis among the alternatives.
    """
    from porting import layout, magnitude
    from porting._checks import as_float_array
    from porting.comparison import compare
    from porting.diagnosis import Finding, diagnose
    from porting.geometry import ConvGeometry
    from porting.knet import reference

    d = diagnose(
        expected,
        actual,
        w=w,
        x=x,
        bias=bias,
        padding=padding,
        stride=stride,
        dilation=dilation,
        mode=mode,
        alpha=alpha,
        spatial=spatial,
    )
    wf = as_float_array(w, "w").astype(np.float64)
    wq = as_float_array(w_quantized, "w_quantized").astype(np.float64)
    if wq.shape != wf.shape:
        raise PortingError(
            f"w_quantized has shape {wq.shape} but w has {wf.shape}; expected the same"
        )
    if (bias is None) != (bias_quantized is None) and bias_quantized is not None:
        raise PortingError("bias_quantized given without bias; pass both or neither")
    xa = as_float_array(x, "x").astype(np.float64)
    bq = (
        None
        if bias is None
        else np.asarray(bias_quantized if bias_quantized is not None else bias, np.float64)
    )
    if wf.ndim == 2:  # dense: w (out, in), x (in, N) or (X1, X2, C, N)
        x2 = xa if xa.ndim == 2 else xa.reshape((-1, xa.shape[-1]), order="F")
        pred = (wq @ x2).T
        mag = magnitude.dense(wq, x2).T
        k = wf.shape[1]
        if bq is not None:
            pred = pred + bq.reshape(-1)
            mag = magnitude.bias(mag, bq, channel_axis=-1)
            k += 1
    else:
        nd = wf.ndim - 2
        geom = ConvGeometry.from_knet(
            nd, padding=padding, stride=stride, dilation=dilation, mode=mode
        )
        a = float(alpha)
        yj = reference.conv4(wq, xa, geom, a)
        mj = magnitude.conv4(wq, xa, geom, a)
        k = int(np.prod(wf.shape[:-1]))
        if bq is not None:
            bv = layout.bias_to_tf(bq)
            shape = [1] * yj.ndim
            shape[-2] = bv.size
            yj = yj + bv.reshape(shape)
            mj = magnitude.bias(mj, bv)
            k += 1
        pred = layout.activations_to_tf(yj, spatial)
        mag = layout.activations_to_tf(mj, spatial)
    act = np.asarray(actual)
    if pred.shape != act.shape:
        return d
    c = compare(pred, act, k=k, magnitude=mag)
    changed = int(np.sum(wf != wq))
    diff = float(np.max(np.abs(wf - wq))) if wf.size else 0.0
    levels = int(np.unique(wq).size)
    what = (
        f"recomputing with the quantized weights (quantizer(weight), not the float shadow weights "
        f"of get_weights(): {changed} of {wf.size} entries differ, by up to {diff:.3g}; "
        f"{levels} distinct values)"
    )
    if d.cause == "rounding" or changed == 0:
        return d
    if c.ok:
        finding = Finding(
            cause="quantization",
            score=1.0,
            evidence=f"{what} reproduces actual to {c.max_ulp:.3g} ULP ({c.max_error_to_tolerance:.2g} "
            "of the float tolerance): verify against the quantized weights",
            hypothesis="known_quantized_weights",
            explains=True,
            max_error_to_tolerance=c.max_error_to_tolerance,
            max_ulp=c.max_ulp,
            details={"changed": changed, "max_weight_change": diff, "levels": levels},
        )
        previous = [
            f
            for f in ([d.finding] if d.finding is not None else []) + list(d.alternatives)
            if f is not None and f.cause != "quantization"
        ]
        seen, alternatives = set(), []
        for f in previous:
            if f.cause not in seen:
                seen.add(f.cause)
                alternatives.append(f)
        return replace(
            d,
            cause="quantization",
            confidence=1.0,
            evidence=finding.evidence,
            finding=finding,
            alternatives=alternatives,
        )
    finding = Finding(
        cause="quantization",
        score=0.0,
        evidence=f"{what} does not reproduce actual either (max error {c.max_error_to_tolerance:.3g} "
        "of the tolerance)",
        hypothesis="known_quantized_weights",
        explains=False,
        max_error_to_tolerance=c.max_error_to_tolerance,
        max_ulp=c.max_ulp,
    )
    alts = [f for f in d.alternatives if f.cause != "quantization"] + [finding]
    return replace(d, alternatives=alts)
