"""QKeras model files: their quantized weights and a layer's verification, the layer run in a
fresh interpreter with TF_USE_LEGACY_KERAS=1 (porting.quant._worker).
"""

from __future__ import annotations

import os

from porting._checks import check_choice
from porting.errors import PortingError
from porting.quant.results import QuantizedWeights, QuantReport
from porting.quant.verify import REFERENCES, verify_capture

__all__ = ["load_quantized_weights", "verify_saved"]


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
