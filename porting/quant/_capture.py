"""What a QKeras layer really computes with, read from the live layer (QKeras loaded).

This module runs only in a process where QKeras is imported, which means TensorFlow with
`tf_keras` (TF_USE_LEGACY_KERAS=1 set before TensorFlow was imported): the user's own QKeras
process, the worker of `porting.quant` (`python -m porting.quant._worker`), or a notebook
kernel started for it. It never imports QKeras itself; the layer object brings it.
"""

from __future__ import annotations

import numpy as np

from porting.errors import PortingError

SUPPORTED = ("QConv2D", "QDense", "QActivation")


def _tf():
    import tensorflow as tf  # already imported by QKeras

    return tf


def float_input(x) -> np.ndarray:
    """`x` as a float32/float64 ndarray (as given, no copy), or PortingError: the one check of
    a layer input, in the user's process and in the worker."""
    try:
        xa = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise PortingError(f"x must be an array, got {type(x).__name__}: {e}") from None
    if xa.dtype not in (np.float32, np.float64):
        raise PortingError(
            f"x has dtype {xa.dtype} (shape {xa.shape}); expected float32 or float64"
        )
    return xa


def check_layer(layer) -> str:
    """The QKeras class name of `layer`, or PortingError naming what it is instead."""
    cls = type(layer)
    name = cls.__name__
    module = cls.__module__ or ""
    if not module.startswith("qkeras"):
        what = f"{module}.{name}" if module else name
        raise PortingError(
            f"layer {getattr(layer, 'name', '?')!r} is a {what}, not a QKeras layer; a plain Keras "
            "layer computes with get_weights() as they are (expected one of "
            + ", ".join(SUPPORTED)
            + ")"
        )
    if name not in SUPPORTED:
        raise PortingError(
            f"layer {layer.name!r} is a QKeras {name}; supported: {', '.join(SUPPORTED)}"
        )
    return name


def _quantizer_text(q) -> str | None:
    if q is None:
        return None
    try:
        return str(q)
    except Exception:  # noqa: BLE001 - a quantizer without a usable __str__
        return type(q).__name__


def _quantizer_spec(q) -> dict | None:
    if q is None or isinstance(q, str):
        return None if q is None else {"class": q, "config": {}}
    cfg = {}
    if hasattr(q, "get_config"):
        try:
            cfg = {
                k: v
                for k, v in q.get_config().items()
                if isinstance(v, (int, float, str, bool, type(None)))
            }
        except Exception:  # noqa: BLE001 - config is informative only
            cfg = {}
    return {"class": type(q).__name__, "config": cfg}


def _weight_names(layer) -> list[str]:
    out: list[str] = []
    for v in layer.weights:
        n = getattr(v, "name", "")
        out.append(n.split("/")[-1].split(":")[0] or f"w{len(out)}")
    return out


def weights(layer) -> dict:
    """`{"names", "float", "quantized", "quantizers", "quantizer_specs"}` for a built QKeras
    layer: the shadow weights of `get_weights()` and what each quantizer of `get_quantizers()`
    turns them into (a weight without a quantizer is used as it is)."""
    cls = check_layer(layer)
    if cls == "QActivation":
        return {"names": [], "float": {}, "quantized": {}, "quantizers": {}, "quantizer_specs": {}}
    if not layer.built or not layer.weights:
        raise PortingError(
            f"layer {layer.name!r} has no weights yet (not built); call it on an input or build "
            "the model first"
        )
    tf = _tf()
    names = _weight_names(layer)
    values = layer.get_weights()
    quantizers = list(layer.get_quantizers())
    quantizers += [None] * (len(values) - len(quantizers))
    out_float, out_q, texts, specs = {}, {}, {}, {}
    for name, value, q in zip(names, values, quantizers, strict=False):
        out_float[name] = np.asarray(value)
        if q is None:
            out_q[name] = np.asarray(value)
        else:
            out_q[name] = np.asarray(q(tf.convert_to_tensor(value))).astype(value.dtype, copy=False)
        texts[name] = _quantizer_text(q)
        specs[name] = _quantizer_spec(q)
    return {
        "names": names,
        "float": out_float,
        "quantized": out_q,
        "quantizers": texts,
        "quantizer_specs": specs,
    }


def _activation_text(act) -> str:
    if act is None:
        return "linear"
    name = getattr(act, "__name__", None)
    return name if name else _quantizer_text(act) or type(act).__name__


def config(layer) -> dict:
    cls = check_layer(layer)
    if cls == "QConv2D":
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise PortingError(
                f"layer {layer.name!r} uses data_format={layer.data_format!r}; only channels_last "
                "is supported"
            )
        if getattr(layer, "groups", 1) != 1:
            raise PortingError(
                f"layer {layer.name!r} has groups={layer.groups}; only groups=1 is supported"
            )
        return {
            "kind": "conv2d",
            "strides": [int(s) for s in layer.strides],
            "padding": str(layer.padding),
            "dilation": [int(d) for d in layer.dilation_rate],
            "use_bias": bool(layer.use_bias),
            "activation": _activation_text(layer.activation),
        }
    if cls == "QDense":
        return {
            "kind": "dense",
            "use_bias": bool(layer.use_bias),
            "activation": _activation_text(layer.activation),
        }
    q = layer.quantizer
    return {
        "kind": "activation",
        "activation": _quantizer_text(q),
        "quantizer_spec": _quantizer_spec(q),
    }


def capture(layer, x) -> dict:
    """Everything verification needs from a live QKeras layer run on `x` (TF layout):
    weights (float and quantized), configuration, and the layer's outputs: `y` (what it
    returns) and `y_linear` (before its activation, computed by the layer's own `call` with
    the activation switched off for that one call)."""
    cls = check_layer(layer)
    tf = _tf()
    xa = float_input(x)
    dtype = np.dtype(
        getattr(layer, "compute_dtype", None) or getattr(layer, "dtype", "float32") or "float32"
    )
    xa = xa.astype(dtype, copy=False)
    try:
        y = np.asarray(layer(tf.convert_to_tensor(xa)))
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        raise PortingError(
            f"layer {layer.name!r} ({cls}) cannot run on x of shape {xa.shape}: {str(e).splitlines()[0]}"
        ) from None
    w = weights(layer)
    cfg = config(layer)
    y_linear = y
    if cls != "QActivation" and cfg["activation"] != "linear":
        saved = layer.activation
        try:
            layer.activation = None
            y_linear = np.asarray(layer(tf.convert_to_tensor(xa)))
        finally:
            layer.activation = saved
    return {
        "layer": layer.name,
        "class": cls,
        "config": cfg,
        "x": xa,
        "y": y,
        "y_linear": y_linear,
        **w,
        "versions": versions(),
    }


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("tensorflow", "tensorflow-cpu", "tf_keras", "qkeras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
