"""Quantized layers (QKeras): the weights a layer really computes with, and verification.

A QKeras layer keeps float "shadow" weights and computes with `quantizer(weight)`;
`get_weights()` returns the shadow weights, so a reference built from them disagrees with the
layer (seed report 001; docs/numerics.md#quantized). Verify against the quantized weights
instead:

- `quantized_weights(layer)`: a `QuantizedWeights` with both sets, per weight name, for a
  QKeras `QConv2D`, `QDense` (or `QActivation`, which has none), in the process that holds
  the layer (QKeras loaded).
- `verify_layer(layer, x)`: runs the layer on `x` (TF layout) and compares it with a float64
  NumPy reference computed from the quantized weights (`reference="float"` reproduces the
  mistake of using the shadow weights, and the diagnosis then names `quantization`).
- `verify_saved(path, layer_name, x)` and `load_quantized_weights(path)`: the same for a QKeras
  model saved to a file, done in a fresh interpreter (see below).
- `diagnose_quantized(expected, actual, w=, w_quantized=, x=, ...)`: `porting.diagnose` with
  the known quantized weights as context (NumPy only).
- `quantized_bits`, `quantized_relu`: QKeras' two common quantizers as NumPy maths;
  `conv2d_reference`, `dense_reference`: Keras Conv2D / Dense in float64 NumPy.

QKeras 0.9 runs on `tf_keras` (Keras 2) and needs `TF_USE_LEGACY_KERAS=1` set before
TensorFlow is imported; a process that already imported TensorFlow with Keras 3 cannot load
it. `verify_saved` and `load_quantized_weights` therefore start a new interpreter
(`PORTING_QKERAS_PYTHON`, else this one) with that variable set, and compare the numbers here.
Install: `install_hint()` gives the command for this environment. With the `tensorflow` wheel,
`pip install 'porting[quant]'`; with `tensorflow-cpu`, that extra would pull the full
`tensorflow` wheel next to it (tf_keras requires it), so QKeras is installed without its
dependencies instead (README "Quantized layers").

Nothing here imports TensorFlow or QKeras at import time.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from porting._checks import check_choice
from porting.errors import PortingError
from porting.quant._hint import install_hint
from porting.quant._ref import (
    conv2d_reference,
    dense_reference,
    numpy_quantizer,
    quantized_bits,
    quantized_relu,
)

__all__ = [
    "QuantizedWeights",
    "QuantReport",
    "quantized_weights",
    "verify_layer",
    "verify_capture",
    "verify_saved",
    "load_quantized_weights",
    "diagnose_quantized",
    "qkeras_status",
    "install_hint",
    "quantized_bits",
    "quantized_relu",
    "conv2d_reference",
    "dense_reference",
    "REFERENCES",
]

REFERENCES = ("quantized", "float")
PYTHON_ENV = "PORTING_QKERAS_PYTHON"


# --------------------------------------------------------------------------- results


@dataclass
class QuantizedWeights:
    """The weights of one QKeras layer: `float` (get_weights(), the shadow weights) and
    `quantized` (what the layer computes with), by weight name ("kernel", "bias"), with the
    quantizer applied to each (None: used as is)."""

    layer: str
    cls: str
    names: list[str]
    float: dict[str, np.ndarray]
    quantized: dict[str, np.ndarray]
    quantizers: dict[str, str | None]

    def __getitem__(self, name: str) -> np.ndarray:
        """The quantized weight `name`: what the layer computes with."""
        if name not in self.quantized:
            raise PortingError(f"layer {self.layer!r} has no weight {name!r}; it has {self.names}")
        return self.quantized[name]

    def changed(self, name: str) -> int:
        """How many entries of weight `name` the quantizer changed."""
        return int(np.sum(self.float[name] != self.quantized[name]))

    def __str__(self) -> str:
        lines = [f"{self.cls} {self.layer!r}:"]
        for n in self.names:
            f, q = self.float[n], self.quantized[n]
            lines.append(
                f"  {n} {tuple(f.shape)}: quantizer {self.quantizers.get(n) or 'none'}; "
                f"{self.changed(n)} of {f.size} entries changed, max |float - quantized| "
                f"{float(np.max(np.abs(f.astype(np.float64) - q))) if f.size else 0.0:.3g}, "
                f"{np.unique(q).size} distinct values"
            )
        return "\n".join(lines)


@dataclass
class QuantReport:
    """Outcome of verifying one QKeras layer against a NumPy reference."""

    ok: bool
    layer: str
    cls: str
    reference: str  # "quantized" or "float": which weights the reference used
    comparison: Any  # porting.compare.Comparison
    weights: QuantizedWeights
    config: dict
    shapes: dict[str, tuple[int, ...]]
    versions: dict[str, str]
    diagnosis: Any = None
    notes: list[str] = field(default_factory=list)
    # arrays for plots: TF layout, the layer's output before its activation and the reference
    expected: np.ndarray | None = field(default=None, repr=False)
    actual: np.ndarray | None = field(default=None, repr=False)
    magnitude: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = self.diagnosis
        return {
            "ok": self.ok,
            "layer": self.layer,
            "class": self.cls,
            "reference": self.reference,
            "comparison": self.comparison.to_dict(),
            "quantizers": self.weights.quantizers,
            "config": self.config,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "versions": self.versions,
            "diagnosis": d.to_dict() if hasattr(d, "to_dict") else d,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        if self.config.get("kind") == "activation":
            which = f"the NumPy form of its quantizer {self.config.get('activation')}"
        elif self.reference == "quantized":
            which = "the quantized weights (quantizer(weight))"
        else:
            which = "the float shadow weights (get_weights())"
        head = "OK" if self.ok else "MISMATCH"
        lines = [
            f"{head}: QKeras {self.cls} {self.layer!r} vs a reference with {which}",
            *("  " + line for line in str(self.weights).splitlines()[1:]),
            *("  " + line for line in str(self.comparison).splitlines()),
        ]
        if self.diagnosis is not None:
            lines.append("  diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


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


# --------------------------------------------------------------------------- diagnosis


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


# --------------------------------------------------------------------------- other process


def load_quantized_weights(
    path, *, python: str | None = None, timeout: float = 300
) -> dict[str, QuantizedWeights]:
    """The quantized and float weights of every QConv2D / QDense layer of a QKeras model file
    (`.h5` or a SavedModel/`.keras` that QKeras' `load_qmodel` reads), by layer name, read in
    a fresh interpreter with TF_USE_LEGACY_KERAS=1 (QKeras cannot load next to Keras 3)."""
    from porting.quant import _worker

    result, arrays = _worker.run(
        {"task": "weights", "model": _model_path(path)}, {}, python=python, timeout=timeout
    )
    out = {}
    for entry in result["layers"]:
        name = entry["layer"]
        out[name] = QuantizedWeights(
            layer=name,
            cls=entry["class"],
            names=entry["names"],
            float={n: arrays[f"{name}/float/{n}"] for n in entry["names"]},
            quantized={n: arrays[f"{name}/quantized/{n}"] for n in entry["names"]},
            quantizers=entry["quantizers"],
        )
    return out


def verify_saved(
    path,
    layer: str,
    x,
    *,
    reference: str = "quantized",
    diagnose: bool = True,
    python: str | None = None,
    timeout: float = 300,
) -> QuantReport:
    """`verify_layer` for layer `layer` of a QKeras model file: the layer runs in a fresh
    interpreter with TF_USE_LEGACY_KERAS=1; the reference, comparison and diagnosis run here."""
    from porting.quant import _capture, _worker

    check_choice(reference, "reference", REFERENCES)
    if not isinstance(layer, str) or not layer:
        raise PortingError(f"layer={layer!r}: expected a layer name")
    xa = _capture.float_input(x)
    result, arrays = _worker.run(
        {"task": "capture", "model": _model_path(path), "layer": layer},
        {"x": xa},
        python=python,
        timeout=timeout,
    )
    names = result["names"]
    cap = {
        **result,
        "x": arrays["x"],
        "y": arrays["y"],
        "y_linear": arrays["y_linear"],
        "float": {n: arrays[f"float/{n}"] for n in names},
        "quantized": {n: arrays[f"quantized/{n}"] for n in names},
    }
    return verify_capture(cap, reference=reference, diagnose=diagnose)


def _model_path(path) -> str:
    try:
        p = os.fspath(path)
    except TypeError:
        raise PortingError(f"path={path!r}: expected a path to a QKeras model file") from None
    if not os.path.exists(p):
        raise PortingError(
            f"{p}: no such file or directory; expected a saved QKeras model (.h5, .keras or SavedModel)"
        )
    return os.path.abspath(p)
