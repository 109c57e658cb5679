"""Knet model -> Keras 3 model (TensorFlow backend), and saving it atomically.

Each Knet layer becomes a few Keras layers named after it (`conv1`, `conv1__pad`,
`conv1__pool`, `conv1__act`, ...), so the correspondence survives a save and reload:

| Knet | Keras |
| --- | --- |
| `conv4(w, x; padding=p, stride, dilation, mode)` | `ZeroPadding{1,2,3}D(p)` + `Conv{1,2,3}D(padding="valid")`, kernel `kernel_to_tf(w, mode, spatial)` (mode 0 rotated 180 degrees). Never "same": Knet's padding is symmetric. Stride > 1 with dilation > 1 (which Keras refuses), and 3-D dilation in float64 (no TF CPU kernel), run the kernel written out dilated (zeros between taps) at dilation 1: the same nonzero products. |
| `.+ b` | the conv's / dense's bias |
| `pool` max, no padding | `MaxPooling{n}D("valid")` |
| `pool` max with padding | `KnetPool` (pads with -Inf: padded cells never win) |
| `pool` mean (modes 1, 2: Knet's CPU) | `ZeroPadding` + `AveragePooling{n}D("valid")`: divides by prod(window), padding counted as zeros |
| `mat` | `Flatten`; the next Dense's kernel rows are permuted to Keras' (H, W, C) order |
| `w * x .+ b` | `Dense`, kernel `w'` (rows permuted after a flatten) |
| relu, sigm, tanh, elu, identity | `Activation` (relu, sigmoid, tanh, elu) / `Identity` |
| `softmax(x; dims=1)` | `Softmax(axis=...)` on the TensorFlow axis of Julia's dimension `dims` |
| `dropout` | `Dropout` (identity at inference) |

`spatial` says which TensorFlow axis Julia's X1 becomes ("reverse", the default: X1 is the
width, as cuDNN reads Knet's memory; "keep": X1 is the height); see `porting.layout`.
TensorFlow and Keras are imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from porting import files, layout
from porting._checks import check_choice
from porting.errors import PortingError
from porting.model.spec import Activation, Conv, Dense, Dropout, KnetModel, Layer, Mat, Pool
from porting.tf import single_output_stride

__all__ = [
    "to_keras",
    "convert_weights",
    "save_keras",
    "export_savedmodel",
    "load_keras",
    "plan",
    "Step",
    "julia_to_tf",
    "tf_to_julia",
    "keras_groups",
]

# The converters, looked up at call time (tests replace them to prove broken ports are caught).
_kernel_converter = layout.kernel_to_tf
_dense_converter = layout.dense_to_tf

# Extra facts about converted models (spatial convention), kept off the Keras object.
_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _import_keras():
    from porting import tf as ptf

    ptf._import_tf()  # quiet TensorFlow import, PortingError when it is missing
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise PortingError(
            f"Keras runs the {keras.backend.backend()!r} backend; porting converts for the "
            "TensorFlow backend (set KERAS_BACKEND=tensorflow)"
        )
    return keras


# --------------------------------------------------------------------------- the plan


@dataclass
class Step:
    """One Knet layer in a chain with its per-sample Julia sizes.

    `flat_from` is, for a (features,) output that came from `mat` of a spatial tensor with no
    dense layer since, the Julia size before `mat` (e.g. `(4, 4, 50)`): Keras' `Flatten`
    orders those features differently, so comparisons and the next Dense must know it.
    `dense_input` is the Julia size a Dense's rows are permuted for (None: plain transpose).
    """

    layer: Layer
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    flat_from: tuple[int, ...] | None
    dense_input: tuple[int, ...] | None = None


def plan(model: KnetModel, input_size=None) -> list[Step]:
    """Sizes and flatten bookkeeping for every layer; `PortingError` if the weights don't chain."""
    size = input_size if input_size is not None else model.input_size
    if size is None:
        raise PortingError(
            "the model has no input size: pass input_size=(X1, ..., C) (one sample, Julia "
            "order), or give an input to take it from"
        )
    sizes = model.sizes(size)
    steps = []
    flat = None
    in_size = tuple(size)
    for layer, out in zip(model.layers, sizes, strict=True):
        dense_input = None
        if isinstance(layer, Mat):
            flat = in_size if len(in_size) > 1 else flat
        elif isinstance(layer, Dense):
            dense_input = in_size if len(in_size) > 1 else flat
            flat = None
        elif isinstance(layer, (Conv, Pool)):
            flat = None
        steps.append(Step(layer, in_size, tuple(out), flat, dense_input))
        in_size = tuple(out)
    return steps


def _tf_sample_shape(size: tuple[int, ...], spatial: str) -> tuple[int, ...]:
    if len(size) == 1:
        return tuple(size)
    return (*layout.spatial_to_tf(tuple(size[:-1]), spatial), size[-1])


def julia_to_tf(y: np.ndarray, flat_from, spatial: str) -> np.ndarray:
    """A Julia-indexed layer output `(..., N)` -> the TensorFlow layout Keras produces for it:
    `(N, H, W, C)` for spatial outputs, `(N, F)` for features (in Keras' Flatten order when
    they came from a `mat` of `flat_from`)."""
    y = np.asarray(y)
    if y.ndim > 2:
        return layout.activations_to_tf(y, spatial)
    if flat_from is not None:
        n = y.shape[-1]
        full = y.reshape((*flat_from, n), order="F")
        return (
            layout.activations_to_tf(full, spatial).reshape(n, -1)
            if len(flat_from) > 1
            else y.T.copy()
        )
    return np.ascontiguousarray(y.T)


def tf_to_julia(t: np.ndarray, flat_from, spatial: str) -> np.ndarray:
    """Inverse of `julia_to_tf`."""
    t = np.asarray(t)
    if t.ndim > 2:
        return layout.activations_from_tf(t, spatial)
    if flat_from is not None and len(flat_from) > 1:
        n = t.shape[0]
        shp = _tf_sample_shape(flat_from, spatial)
        full = layout.activations_from_tf(t.reshape((n, *shp)), spatial)
        return full.reshape((-1, n), order="F")
    return np.asfortranarray(t.T)


def _tf_axis(julia_dim: int, size: tuple[int, ...], spatial: str) -> int:
    """TensorFlow axis (of `(N, ...)`) holding Julia's dimension `julia_dim` (1-based)."""
    if len(size) == 1:
        return -1
    nd = len(size) - 1
    j = julia_dim - 1
    if j == nd:
        return -1
    order = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
    return 1 + order.index(j)


# --------------------------------------------------------------------------- weights


def _dilate(k: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """A TF kernel `(H, W, Cin, Cout)` written out dilated: zeros between the taps."""
    nd = len(dilation)
    ext = [(n - 1) * d + 1 for n, d in zip(k.shape[:nd], dilation, strict=True)]
    out = np.zeros((*ext, *k.shape[nd:]), dtype=k.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = k
    return out


def _needs_written_dilation(layer: Conv, dtype: np.dtype) -> bool:
    g = layer.geometry
    dilated = max(g.dilation) > 1
    return dilated and (max(g.stride) > 1 or (layer.nd == 3 and dtype == np.float64))


def convert_weights(
    model: KnetModel, *, spatial: str = "reverse", input_size=None, dtype=None
) -> dict:
    """Every weight in Keras layout: `{layer name: [kernel, (bias)]}`, NumPy arrays.

    Conv kernels: `kernel_to_tf(w, mode, spatial)` (mode 0 rotated), times `alpha`; dense
    kernels: `dense_to_tf(w, input_shape, spatial)` with rows permuted after a flatten.
    """
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    dt = np.dtype(dtype) if dtype is not None else model.dtype
    out = {}
    for step in plan(model, input_size):
        layer = step.layer
        if isinstance(layer, Conv):
            k = _kernel_converter(layer.w, layer.mode, spatial)
            if layer.alpha != 1:
                k = (np.float64(layer.alpha) * k.astype(np.float64)).astype(k.dtype)
            if _needs_written_dilation(layer, dt):
                k = _dilate(k, layout.spatial_to_tf(layer.geometry.dilation, spatial))
            ws = [k]
        elif isinstance(layer, Dense):
            ws = [_dense_converter(layer.w, step.dense_input, spatial)]
        else:
            continue
        if layer.b is not None:
            ws.append(layer.b.reshape(-1).copy())
        out[layer.name] = [w.astype(dt, copy=False) for w in ws]
    return out


# --------------------------------------------------------------------------- Keras layers


def _pool_layers(keras, pool: Pool, nd: int, name: str, main_name: str, dtype: str, spatial: str):
    g = pool.geometry(nd)
    window = layout.spatial_to_tf(g.window, spatial)
    stride = layout.spatial_to_tf(g.stride, spatial)
    pad = layout.spatial_to_tf(g.padding, spatial)
    padded = any(pad)
    out = []
    custom = (g.is_max and padded) or (nd == 3 and dtype == "float64")
    if custom:
        from porting.model.keras_layers import KnetPool

        out.append(
            KnetPool(
                window, stride, pad, mode="max" if g.is_max else "mean", name=main_name, dtype=dtype
            )
        )
    else:
        if padded:
            out.append(_zero_padding(keras, nd, pad, f"{name}__pad", dtype))
        cls = {
            (True, 1): keras.layers.MaxPooling1D,
            (True, 2): keras.layers.MaxPooling2D,
            (True, 3): keras.layers.MaxPooling3D,
            (False, 1): keras.layers.AveragePooling1D,
            (False, 2): keras.layers.AveragePooling2D,
            (False, 3): keras.layers.AveragePooling3D,
        }[(g.is_max, nd)]
        out.append(
            cls(pool_size=window, strides=stride, padding="valid", name=main_name, dtype=dtype)
        )
    if pool.alpha != 1:
        out.append(keras.layers.Rescaling(float(pool.alpha), name=f"{name}__scale", dtype=dtype))
    return out


def _zero_padding(keras, nd: int, pad: tuple[int, ...], name: str, dtype: str):
    cls = {
        1: keras.layers.ZeroPadding1D,
        2: keras.layers.ZeroPadding2D,
        3: keras.layers.ZeroPadding3D,
    }[nd]
    arg = pad[0] if nd == 1 else tuple((p, p) for p in pad)
    return cls(padding=arg, name=name, dtype=dtype)


def _activation_layer(
    keras, fn: str, name: str, dtype: str, size: tuple[int, ...], spatial: str, dims: int = 1
):
    if fn == "identity":
        return keras.layers.Identity(name=name, dtype=dtype)
    if fn == "softmax":
        return keras.layers.Softmax(axis=_tf_axis(dims, size, spatial), name=name, dtype=dtype)
    keras_name = {"relu": "relu", "sigm": "sigmoid", "tanh": "tanh", "elu": "elu"}[fn]
    return keras.layers.Activation(keras_name, name=name, dtype=dtype)


def _layers_for(keras, step: Step, spatial: str, dtype: str):
    """[(keras layer, weights or None)] for one Knet layer, in call order."""
    layer = step.layer
    name = str(layer.name)  # KnetModel names every layer
    out: list[tuple[Any, Any]] = []
    if isinstance(layer, Conv):
        nd = layer.nd
        g = layer.geometry
        if layer.dropout:
            out.append(
                (keras.layers.Dropout(layer.dropout, name=f"{name}__dropout", dtype=dtype), None)
            )
        pad = layout.spatial_to_tf(g.padding, spatial)
        if any(pad):
            out.append((_zero_padding(keras, nd, pad, f"{name}__pad", dtype), None))
        written = _needs_written_dilation(layer, np.dtype(dtype))
        conv_cls = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[nd]
        kernel_size = layout.spatial_to_tf(
            g.effective_kernel(layer.w.shape[:nd]) if written else layer.w.shape[:nd], spatial
        )
        # Axes with a single output run at stride 1 (TF's oneDNN conv can return garbage for a
        # strided axis of output length 1; see porting.tf.single_output_stride) and a Cropping
        # layer keeps that one output: the same products, so the same numbers.
        y_size = g.output_size(step.in_size[:-1], layer.w.shape[:nd])
        stride = single_output_stride(y_size, g.stride)
        conv = conv_cls(
            filters=int(layer.w.shape[-1]),
            kernel_size=kernel_size,
            strides=layout.spatial_to_tf(stride, spatial),
            dilation_rate=1 if written else layout.spatial_to_tf(g.dilation, spatial),
            padding="valid",
            use_bias=layer.b is not None,
            name=name,
            dtype=dtype,
        )
        out.append((conv, "weights"))
        if stride != g.stride:
            padded = [x + 2 * p for x, p in zip(step.in_size[:-1], g.padding, strict=True)]
            extent = g.effective_kernel(layer.w.shape[:nd])
            # stride-1 length minus the one output kept, on the axes that were changed
            extra = [
                (xp - k + 1) - 1 if s != s0 else 0
                for xp, k, s, s0 in zip(padded, extent, stride, g.stride, strict=True)
            ]
            crop = tuple((0, c) for c in layout.spatial_to_tf(tuple(extra), spatial))
            crop_cls = {
                1: keras.layers.Cropping1D,
                2: keras.layers.Cropping2D,
                3: keras.layers.Cropping3D,
            }[nd]
            out.append(
                (crop_cls(crop[0] if nd == 1 else crop, name=f"{name}__crop", dtype=dtype), None)
            )
        conv_size = (*g.output_size(step.in_size[:-1], layer.w.shape[:nd]), layer.w.shape[-1])
        act = None
        if layer.activation != "identity":
            act_size = conv_size if layer.activation_before_pool else step.out_size
            act = _activation_layer(
                keras, layer.activation, f"{name}__act", dtype, act_size, spatial
            )
        if act is not None and layer.activation_before_pool:
            out.append((act, None))
        if layer.pool is not None:
            out += [
                (lay, None)
                for lay in _pool_layers(
                    keras, layer.pool, nd, name, f"{name}__pool", dtype, spatial
                )
            ]
        if act is not None and not layer.activation_before_pool:
            out.append((act, None))
    elif isinstance(layer, Dense):
        if layer.dropout:
            out.append(
                (keras.layers.Dropout(layer.dropout, name=f"{name}__dropout", dtype=dtype), None)
            )
        if len(step.in_size) > 1:
            out.append((keras.layers.Flatten(name=f"{name}__flatten", dtype=dtype), None))
        dense = keras.layers.Dense(
            int(layer.w.shape[0]), use_bias=layer.b is not None, name=name, dtype=dtype
        )
        out.append((dense, "weights"))
        if layer.activation != "identity":
            out.append(
                (
                    _activation_layer(
                        keras, layer.activation, f"{name}__act", dtype, step.out_size, spatial
                    ),
                    None,
                )
            )
    elif isinstance(layer, Pool):
        nd = len(step.in_size) - 1
        out += [(lay, None) for lay in _pool_layers(keras, layer, nd, name, name, dtype, spatial)]
    elif isinstance(layer, Mat):
        out.append((keras.layers.Flatten(name=name, dtype=dtype), None))
    elif isinstance(layer, Dropout):
        if layer.p:
            out.append((keras.layers.Dropout(layer.p, name=name, dtype=dtype), None))
        else:
            out.append((keras.layers.Identity(name=name, dtype=dtype), None))
    elif isinstance(layer, Activation):
        out.append(
            (
                _activation_layer(
                    keras, layer.function, name, dtype, step.in_size, spatial, layer.dims
                ),
                None,
            )
        )
    else:  # pragma: no cover - KnetModel only holds the kinds above
        raise PortingError(f"{layer.label}: cannot convert a {layer.kind} layer")
    return out


def to_keras(model: KnetModel, *, spatial: str = "reverse", input_size=None, dtype=None, name=None):
    """Build a Keras 3 functional model computing what the Knet `model` computes.

    Input: TensorFlow layout `(N, H, W, C)` of a Julia `(X1, X2, C, N)` batch under `spatial`
    (`porting.layout.activations_to_tf(x, spatial)`). `input_size` (one sample, Julia order)
    defaults to `model.input_size`; `dtype` to the weights' element type.

    >>> import numpy as np
    >>> from porting.model import KnetModel, Dense
    >>> km = to_keras(KnetModel([Dense(np.ones((2, 3), np.float32))], input_size=(3,)))
    >>> km.output_shape
    (None, 2)
    """
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    keras = _import_keras()
    steps = plan(model, input_size)
    dt = np.dtype(dtype) if dtype is not None else model.dtype
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise PortingError(f"dtype={dtype!r}: expected float32 or float64")
    weights = convert_weights(model, spatial=spatial, input_size=steps[0].in_size, dtype=dt)
    dts = str(dt)
    inp = keras.Input(
        shape=_tf_sample_shape(steps[0].in_size, spatial), dtype=dts, name="knet_input"
    )
    t = inp
    for step in steps:
        for lay, w in _layers_for(keras, step, spatial, dts):
            t = lay(t)
            if w is not None:
                try:
                    lay.set_weights(weights[step.layer.name])
                except ValueError as e:  # pragma: no cover - shapes are checked by plan()
                    raise PortingError(
                        f"{step.layer.label}: Keras refused the weights: {e}"
                    ) from None
    km = keras.Model(inp, t, name=_keras_name(name or model.name))
    _INFO[km] = {"spatial": spatial, "knet_names": [s.layer.name for s in steps]}
    return km


def _keras_name(name: str) -> str:
    clean = "".join(c if c.isalnum() or c in "_-." else "_" for c in str(name))
    return clean or "knet_model"


def spatial_of(keras_model, default: str = "reverse") -> str:
    """The spatial convention a model was converted with (when converted in this process)."""
    info = _INFO.get(keras_model)
    return info["spatial"] if info else default


def keras_groups(keras_model, model: KnetModel) -> list[list]:
    """For each Knet layer, its Keras layers in call order (found by name: `conv1`,
    `conv1__pad`, ...). Raises `PortingError` when a Knet layer has no Keras counterpart."""
    layers = [lay for lay in keras_model.layers if not isinstance(lay, _input_layer_cls())]
    groups = []
    for layer in model.layers:
        group = [
            lay
            for lay in layers
            if lay.name == layer.name or lay.name.startswith(layer.name + "__")
        ]
        if not group:
            raise PortingError(
                f"{layer.label}: the Keras model has no layer named {layer.name!r} (or "
                f"{layer.name}__*); was it converted from this Knet model?"
            )
        groups.append(group)
    return groups


def _input_layer_cls():
    import keras

    return keras.layers.InputLayer


# --------------------------------------------------------------------------- saving


def _check_target_file(path, suffix: str, what: str) -> Path:
    return files.output_file(path, suffix=suffix, what=what)


def check_keras_path(path) -> Path:
    """Validate an output `.keras` path (not a directory, parent exists) before any work."""
    return _check_target_file(path, ".keras", "output")


def save_keras(keras_model, path) -> str:
    """Save as `.keras` with `porting.files.atomic_write`: written to a temporary file in the
    same directory, flushed, given the replaced file's permission bits, then moved over `path`.
    A failure leaves no file (and any old one intact)."""
    target = check_keras_path(path)
    try:
        with (
            files.atomic_write(target, suffix=".keras") as tmp,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            keras_model.save(tmp)
    except OSError as e:
        raise PortingError(f"cannot write {target}: {e}") from None
    return str(target)


# What a TensorFlow SavedModel export writes at the top of its directory; a directory holding
# anything else is not replaced (it would be lost with it).
_SAVEDMODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb", "variables",
     "assets", "assets.extra"}
)  # fmt: skip


def _foreign_entries(p: Path) -> list[str]:
    """Entries of directory `p` that a SavedModel export does not write."""
    foreign = []
    for entry in sorted(os.listdir(p)):
        if entry not in _SAVEDMODEL_ENTRIES:
            foreign.append(entry)
        elif entry == "variables":
            sub = p / entry
            if not sub.is_dir() or sub.is_symlink():
                foreign.append(entry)
            else:
                foreign += [
                    f"variables/{e}"
                    for e in sorted(os.listdir(sub))
                    if not e.startswith("variables.")
                ]
        elif (p / entry).is_symlink():
            foreign.append(entry)
    return foreign


def check_savedmodel_path(path) -> Path:
    """Validate a SavedModel output directory before any work. An existing directory is
    replaced only when it is empty or holds nothing but a SavedModel's own entries
    (`saved_model.pb`, `fingerprint.pb`, `variables/variables.*`, `assets/`...); anything else
    in it is refused, never deleted."""
    p = files.output_dir(path, what="SavedModel directory")
    try:
        exists = p.is_dir()
        foreign = _foreign_entries(p) if exists else []
    except OSError as e:
        raise PortingError(
            f"SavedModel directory {p}: cannot list it ({e.strerror or e}); expected a new or "
            "an existing SavedModel directory"
        ) from None
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise PortingError(
            f"SavedModel directory {p} exists and holds files a SavedModel export does not "
            f"write ({shown}); refusing to replace it, since they would be lost (choose a new "
            "path, or move them)"
        )
    return p


def export_savedmodel(keras_model, directory) -> str:
    """Export a TensorFlow SavedModel (`model.export`) into `directory`, built in a temporary
    sibling directory and moved into place with `porting.files.atomic_write`; an existing
    SavedModel there is replaced (its directory's permission bits kept), anything else refused
    by `check_savedmodel_path`."""
    target = check_savedmodel_path(directory)
    try:
        with (
            files.atomic_write(target, directory=True) as tmp,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            keras_model.export(str(tmp), format="tf_saved_model", verbose=False)
    except OSError as e:
        raise PortingError(f"cannot write SavedModel {target}: {e}") from None
    return str(target)


def load_keras(path):
    """Load a converted `.keras` model (registers porting's custom layer first)."""
    p = files.input_file(path, "a .keras file (a converted Keras 3 model)")
    _import_keras()
    import keras

    import porting.model.keras_layers  # noqa: F401 - registers KnetPool

    try:
        return keras.saving.load_model(p)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is the user's input
        raise PortingError(
            f"{p}: cannot load as a Keras model ({type(e).__name__}: {e})"[:400]
        ) from None
