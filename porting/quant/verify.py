"""Verifying a QKeras layer in this process (QKeras loaded): the weights it computes with,
its run against a float64 NumPy reference, and whether QKeras is installed here.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from porting._checks import check_choice
from porting.errors import PortingError
from porting.quant._hint import install_hint
from porting.quant._ref import numpy_quantizer
from porting.quant.diagnose import diagnose_quantized
from porting.quant.results import QuantizedWeights, QuantReport

__all__ = ["REFERENCES", "qkeras_status", "quantized_weights", "verify_layer", "verify_capture"]

REFERENCES = ("quantized", "float")


# --------------------------------------------------------------------------- availability


def qkeras_status() -> tuple[bool, str]:
    """`(installed, reason)`: whether qkeras and tf_keras are installed in this interpreter
    (looked up without importing anything)."""
    missing = [m for m in ("qkeras", "tf_keras") if importlib.util.find_spec(m) is None]
    if missing:
        return False, (
            f"{' and '.join(missing)} not installed in this Python; QKeras support needs: "
            + install_hint()
        )
    return True, "qkeras and tf_keras are installed (QKeras runs with TF_USE_LEGACY_KERAS=1)"


# --------------------------------------------------------------------------- in-process API


def _weights_from(cap: dict) -> QuantizedWeights:
    return QuantizedWeights(
        layer=cap["layer"],
        cls=cap["class"],
        names=list(cap["names"]),
        float=dict(cap["float"]),
        quantized=dict(cap["quantized"]),
        quantizers=dict(cap["quantizers"]),
    )


def quantized_weights(layer) -> QuantizedWeights:
    """The weights a QKeras layer computes with (`quantizer(weight)` for each quantizer of
    `layer.get_quantizers()`), next to its float shadow weights. Call it where the layer lives
    (QKeras loaded); for a saved model see `load_quantized_weights`.

    `qw["kernel"]` is the quantized kernel (Keras layout `(kh, kw, Cin, Cout)` or `(in, out)`),
    `qw.float["kernel"]` what `get_weights()` returns.
    """
    from porting.quant import _capture

    w = _capture.weights(layer)
    return QuantizedWeights(
        layer=layer.name,
        cls=_capture.check_layer(layer),
        names=w["names"],
        float=w["float"],
        quantized=w["quantized"],
        quantizers=w["quantizers"],
    )


def verify_layer(layer, x, *, reference: str = "quantized", diagnose: bool = True) -> QuantReport:
    """Run the QKeras `layer` on `x` (TF layout: `(N, H, W, Cin)` for QConv2D, `(..., in)` for
    QDense) and compare it with a float64 NumPy reference.

    `reference="quantized"` (default) builds the reference from the weights the layer really
    uses; `"float"` from `get_weights()`, the shadow weights (seed 001's mistake: the report
    then fails and its diagnosis names `quantization`). Conv and dense layers are compared
    before their activation (the layer's own `call`, with the activation off for that call);
    a QActivation is compared with the NumPy form of its quantizer when it has one
    (quantized_bits or quantized_relu with alpha 1). The tolerance is porting.compare's, from
    the layer's dtype, K and the sum of magnitudes.
    """
    check_choice(reference, "reference", REFERENCES)
    from porting.quant import _capture

    return verify_capture(_capture.capture(layer, x), reference=reference, diagnose=diagnose)


def verify_capture(
    cap: dict, *, reference: str = "quantized", diagnose: bool = True
) -> QuantReport:
    """The NumPy half of `verify_layer`, on what was captured from a layer (in this process or
    in the worker): reference, comparison and diagnosis."""
    from porting import magnitude
    from porting.comparison import compare
    from porting.quant import _ref

    check_choice(reference, "reference", REFERENCES)
    cfg = cap["config"]
    wts = _weights_from(cap)
    notes: list[str] = []
    x = np.asarray(cap["x"])
    kind = cfg["kind"]
    if kind == "activation":
        spec = cfg.get("quantizer_spec") or {}
        fn = numpy_quantizer(spec.get("class", ""), spec.get("config", {}))
        if fn is None:
            raise PortingError(
                f"layer {cap['layer']!r}: no NumPy form of its quantizer {cfg.get('activation')!r} "
                "(only quantized_bits and quantized_relu with alpha=1 and no stochastic rounding "
                "are reproduced); nothing independent to verify it against"
            )
        expected = fn(x.astype(np.float64))
        mag, k = magnitude.of_outputs(expected), 1  # element-wise: S = |result|
        actual = np.asarray(cap["y"])
        if reference == "float":
            notes.append(
                "a QActivation has no weights: reference='float' is the same as 'quantized'"
            )
    else:
        use = wts.quantized if reference == "quantized" else wts.float
        kernel = use.get("kernel")
        bias = use.get("bias") if cfg.get("use_bias") else None
        if kernel is None:
            raise PortingError(
                f"layer {cap['layer']!r} has no kernel weight (weights: {wts.names})"
            )
        if kind == "conv2d":
            expected, mag, k = _ref.conv2d_reference(
                x,
                kernel,
                bias,
                strides=cfg["strides"],
                padding=cfg["padding"],
                dilation=cfg["dilation"],
            )
        else:
            expected, mag, k = _ref.dense_reference(x, kernel, bias)
        actual = np.asarray(cap["y_linear"])
        if cfg.get("activation", "linear") != "linear":
            notes.append(
                f"compared before the layer's activation {cfg['activation']!r} (the layer's own "
                "call with the activation off); the activation adds no weights"
            )
    if expected.shape != actual.shape:
        raise PortingError(
            f"layer {cap['layer']!r}: reference shape {expected.shape} but the layer returned "
            f"{actual.shape}"
        )
    comparison = compare(expected, actual, k=k, magnitude=mag)
    report = QuantReport(
        ok=comparison.ok,
        layer=cap["layer"],
        cls=cap["class"],
        reference=reference,
        comparison=comparison,
        weights=wts,
        config=dict(cfg),
        shapes={"x": tuple(x.shape), "y": tuple(actual.shape)},
        versions=dict(cap.get("versions", {})),
        notes=notes,
        expected=expected,
        actual=actual,
        magnitude=mag,
    )
    if not report.ok and diagnose and kind != "activation":
        try:
            report.diagnosis = _diagnose_capture(cap, expected, actual, wts, reference)
        except PortingError as e:
            report.notes.append(f"no diagnosis: {e}")
    return report


def _to_knet(cap: dict, wts: QuantizedWeights, reference: str):
    """Julia-indexed arguments for porting.diagnose from a captured Keras layer."""
    from porting import layout
    from porting.quant import _ref

    cfg = cap["config"]
    x = np.asarray(cap["x"], dtype=np.float64)
    use = wts.float if reference == "float" else wts.quantized
    other = wts.quantized if reference == "float" else wts.float
    b_use = use.get("bias") if cfg.get("use_bias") else None
    b_other = other.get("bias") if cfg.get("use_bias") else None
    if cfg["kind"] == "conv2d":
        k = use["kernel"]
        if cfg["padding"].lower() == "same":
            pads = [
                _ref.same_pads(x.shape[1 + i], k.shape[i], cfg["strides"][i], cfg["dilation"][i])
                for i in range(2)
            ]
            x = np.pad(x, [(0, 0), *pads, (0, 0)])
        kw = {
            "padding": 0,
            "stride": layout.spatial_from_tf(tuple(cfg["strides"])),
            "dilation": layout.spatial_from_tf(tuple(cfg["dilation"])),
            "mode": 1,
            "spatial": "reverse",
        }
        conv = lambda w: layout.kernel_from_tf(np.asarray(w, dtype=np.float64), mode=1)  # noqa: E731
        bias = lambda b: None if b is None else layout.bias_from_tf(np.asarray(b, np.float64))  # noqa: E731
        return (
            conv(use["kernel"]),
            conv(other["kernel"]),
            layout.activations_from_tf(x),
            bias(b_use),
            bias(b_other),
            kw,
        )
    if x.ndim != 2:
        raise PortingError(
            f"dense input of shape {x.shape}: the diagnosis handles (N, in) inputs only"
        )
    dense = lambda w: np.ascontiguousarray(np.asarray(w, dtype=np.float64).T)  # noqa: E731
    vec = lambda b: None if b is None else np.asarray(b, np.float64).reshape(-1)  # noqa: E731
    return (
        dense(use["kernel"]),
        dense(other["kernel"]),
        np.ascontiguousarray(x.T),
        vec(b_use),
        vec(b_other),
        {},
    )


def _diagnose_capture(cap, expected, actual, wts, reference):
    w_ref, w_other, xj, b_ref, b_other, kw = _to_knet(cap, wts, reference)
    if reference == "float":
        return diagnose_quantized(
            expected,
            actual,
            w=w_ref,
            w_quantized=w_other,
            x=xj,
            bias=b_ref,
            bias_quantized=b_other,
            **kw,
        )
    from porting.diagnosis import diagnose

    return diagnose(expected, actual, w=w_ref, x=xj, bias=b_ref, **kw)
