"""Knet model -> Keras 3 model (TensorFlow backend), and saving it atomically.

Each Knet layer becomes a few Keras layers named after it (`conv1`, `conv1__pad`,
`conv1__pool`, `conv1__act`, ...; every name unique), built by the layer's stages
(porting.model.stages) in Knet's order, so the correspondence survives a save and reload:

| Knet (porting.model) | Keras 3 |
| --- | --- |
<one row per kind: porting.model.kinds.keras_table()>

(the rows are each kind's `Kind.knet` and `Kind.keras` in `porting.model.kinds.KINDS`, put into
this docstring at import; the README's table is checked against them). In detail:

- `conv4(w, x; padding=p, stride, dilation, mode)`: `ZeroPadding{1,2,3}D(p)` +
  `Conv{1,2,3}D(padding="valid")`, kernel `kernel_to_tf(w, mode, spatial)` (mode 0 rotated 180
  degrees). Never "same": Knet's padding is symmetric. Stride > 1 with dilation > 1 (which Keras
  refuses), and 3-D dilation in float64 (no TF CPU kernel), run the kernel written out dilated
  (zeros between taps) at dilation 1: the same nonzero products. `.+ b` is the conv's / dense's
  bias.
- `pool` max, no padding: `MaxPooling{n}D("valid")`; with padding: edge padding (`Cropping` +
  `Concatenate`: a padded cell copies a real cell of every window it is in, so it never wins, as
  in NNlib) + `MaxPooling{n}D("valid")`; windows of padding only (padding >= window) are
  -floatmax. Mean (modes 1, 2: Knet's CPU): `ZeroPadding` + `AveragePooling{n}D("valid")`,
  dividing by prod(window), padding counted as zeros. 3-D `pool` in float64 (no TF CPU kernel):
  `Reshape` + two 2-D poolings + `Reshape` (max is separable; a mean of means).
- `w * x .+ b`: `Dense`, kernel `w'` (rows permuted after a flatten).
- relu, sigm, tanh, elu, identity: `Activation` (relu, sigmoid, tanh, elu) / `Identity`;
  `softmax(x; dims=1)`: `Softmax(axis=...)` on the TensorFlow axis of Julia's dimension `dims`;
  `logsoftmax(x; dims=1)`: `Activation("log_softmax")`, between two `Permute`s when that axis is
  not the last.

Only Keras built-in layers are used, so a saved `.keras` loads with plain
`keras.models.load_model` (safe mode) without porting, on any Keras 3 backend, and exports to a
SavedModel and to TFLite (`export_tflite`). Every Knet operation of the current layer kinds has
a built-in equivalent; a kind that had none would say so at conversion time and offer a custom
layer only as an explicit opt-in.

`spatial` says which TensorFlow axis Julia's X1 becomes ("reverse", the default: X1 is the
width, as cuDNN reads Knet's memory; "keep": X1 is the height); see `porting.layout`.
TensorFlow and Keras are imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from porting import files, layout
from porting._checks import check_choice
from porting._transpose import transpose_copy
from porting.errors import PortingError
from porting.model import kinds
from porting.model.export import atomic_path
from porting.model.kinds import kind_of
from porting.model.planning import Plan, Step, plan, plan_for
from porting.model.spec import KnetModel
from porting.model.stages import KerasContext, tf_axis
from porting.rnn.keras import import_keras

__doc__ = (__doc__ or "").replace(
    "<one row per kind: porting.model.kinds.keras_table()>", kinds.keras_table()
)

__all__ = [
    "to_keras",
    "convert_weights",
    "save_keras",
    "export_savedmodel",
    "export_tflite",
    "load_keras",
    "plan",
    "Plan",
    "Step",
    "julia_to_tf",
    "tf_to_julia",
    "keras_groups",
]

# Extra facts about converted models (spatial convention), kept off the Keras object.
_INFO: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_tf_axis = tf_axis


def tf_sample_shape(size: tuple[int, ...], spatial: str) -> tuple[int, ...]:
    """One sample's Julia size -> its TensorFlow shape under `spatial` (batch left out)."""
    if len(size) == 1:
        return tuple(size)
    return (*layout.spatial_to_tf(tuple(size[:-1]), spatial), size[-1])


_tf_sample_shape = tf_sample_shape


def julia_to_tf(y: np.ndarray, flat_from: tuple[int, ...] | None, spatial: str) -> np.ndarray:
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
            else transpose_copy(y, (1, 0))
        )
    # a new array on a cache line (TensorFlow can share it: keras_graph.as_tensor)
    return transpose_copy(y, tuple(range(y.ndim))[::-1])


def tf_to_julia(t: np.ndarray, flat_from: tuple[int, ...] | None, spatial: str) -> np.ndarray:
    """Inverse of `julia_to_tf`."""
    t = np.asarray(t)
    if t.ndim > 2:
        return layout.activations_from_tf(t, spatial)
    if flat_from is not None and len(flat_from) > 1:
        n = t.shape[0]
        shp = tf_sample_shape(flat_from, spatial)
        full = layout.activations_from_tf(t.reshape((n, *shp)), spatial)
        return full.reshape((-1, n), order="F")
    return np.asfortranarray(t.T)


# --------------------------------------------------------------------------- weights


def convert_weights(
    model: KnetModel,
    *,
    spatial: str = "reverse",
    input_size: Any = None,
    dtype: npt.DTypeLike | None = None,
    plan: Plan | None = None,
) -> dict[str, list[np.ndarray]]:
    """Every weight in Keras layout: `{layer name: [kernel, (bias)]}`, NumPy arrays, each kind
    converting its own (porting.model.kinds: conv kernels `kernel_to_tf(w, mode, spatial)`,
    mode 0 rotated, times `alpha`; dense kernels `dense_to_tf(w, input_shape, spatial)` with
    rows permuted after a flatten)."""
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    dt = np.dtype(dtype) if dtype is not None else model.dtype
    return dict(_layer_weights(plan_for(model, input_size, plan), spatial, dt))


def _layer_weights(
    steps: Plan, spatial: str, dt: np.dtype[Any]
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """`(layer name, [kernel, (bias)])` in Keras layout, one layer at a time."""
    for step in steps:
        convert = kind_of(step.layer).weights
        if convert is None:
            continue
        ws = convert(step.layer, step, spatial, dt)
        # KnetModel names every layer
        yield str(step.layer.name), [w.astype(dt, copy=False) for w in ws]


# --------------------------------------------------------------------------- Keras model


def to_keras(
    model: KnetModel,
    *,
    spatial: str = "reverse",
    input_size: Any = None,
    dtype: npt.DTypeLike | None = None,
    name: str | None = None,
    plan: Plan | None = None,
) -> Any:
    """Build a Keras 3 functional model computing what the Knet `model` computes.

    Input: TensorFlow layout `(N, H, W, C)` of a Julia `(X1, X2, C, N)` batch under `spatial`
    (`porting.layout.activations_to_tf(x, spatial)`). `input_size` (one sample, Julia order)
    defaults to `model.input_size`; `dtype` to the weights' element type; `plan` to the
    model's plan for that input size.

    >>> import numpy as np
    >>> from porting.model import KnetModel, Dense
    >>> km = to_keras(KnetModel([Dense(np.ones((2, 3), np.float32))], input_size=(3,)))
    >>> km.output_shape
    (None, 2)
    """
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    keras = import_keras()
    steps = plan_for(model, input_size, plan)
    dt = np.dtype(dtype) if dtype is not None else model.dtype
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise PortingError(f"dtype={dtype!r}: expected float32 or float64")
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    dts = str(dt)
    in_dtype = getattr(steps[0].layer, "input_dtype", None) or dts  # int32: token indices
    inp = keras.Input(
        shape=tf_sample_shape(steps.input_size, spatial), dtype=in_dtype, name="knet_input"
    )
    filled = frozenset(str(s.layer.name) for s in steps if kind_of(s.layer).weights is not None)
    ctx = KerasContext(keras, dts, spatial, filled)
    ctx.used.add("knet_input")
    tensors: list[Any] = []
    t = inp
    for step in steps:
        name_ = str(step.layer.name)  # KnetModel names every layer
        ctx.start(name_)
        ins = [inp if k < 0 else tensors[k] for k in step.sources]
        t = ins if step.layer.merges else ins[0]
        for stage, (s_in, s_out) in zip(step.stages, step.stage_sizes, strict=True):
            t = stage.build(ctx, t, s_in, s_out)
        tensors.append(t)
    km = keras.Model(inp, t, name=_keras_name(name or model.name))
    ctx.restore_initializers()  # built with zeros: every weight of theirs is set just below
    # Converted and set one layer at a time: a single layer's Keras-layout copy is alive at once
    # (VGG-16's first dense kernel alone is 411 MB).
    for layer_name, ws in _layer_weights(steps, spatial, dt):
        try:
            km.get_layer(layer_name).set_weights(ws)
        except ValueError as e:  # pragma: no cover - shapes are checked by the plan
            raise PortingError(f"layer {layer_name!r}: Keras refused the weights: {e}") from None
        del ws
    for note in ctx.notes:
        warnings.warn(note, stacklevel=2)
    _INFO[km] = {
        "spatial": spatial,
        "knet_names": [s.layer.name for s in steps],
        "notes": list(ctx.notes),
    }
    return km


def _keras_name(name: str) -> str:
    clean = "".join(c if c.isalnum() or c in "_-." else "_" for c in str(name))
    return clean or "knet_model"


def conversion_notes(keras_model: Any) -> list[str]:
    """What `to_keras` said about this model (when converted in this process)."""
    info = _INFO.get(keras_model)
    return list(info["notes"]) if info else []


def spatial_of(keras_model: Any, default: str = "reverse") -> str:
    """The spatial convention a model was converted with (when converted in this process)."""
    info = _INFO.get(keras_model)
    return str(info["spatial"]) if info else default


def keras_groups(keras_model: Any, model: KnetModel) -> list[list[Any]]:
    """For each Knet layer, its Keras layers in call order (found by name: `conv1`,
    `conv1__pad`, ...). A Knet layer without one (`conv1_pad` of a Keras `conv1` that
    `from_keras` made two Knet layers) gets `[]`: it is part of the next Knet layer's group,
    the one that holds the Keras layer's name and output (`porting.model.verify` compares the
    Keras layer there). Raises `PortingError` when the last Knet layer has no Keras counterpart."""
    import keras

    layers = [lay for lay in keras_model.layers if not isinstance(lay, keras.layers.InputLayer)]
    groups = []
    for layer in model.layers:
        group = [
            lay
            for lay in layers
            if lay.name == layer.name or lay.name.startswith(layer.name + "__")
        ]
        groups.append(group)
    if not groups[-1]:
        layer = model.layers[-1]
        raise PortingError(
            f"{layer.label}: the Keras model has no layer named {layer.name!r} (or "
            f"{layer.name}__*); was it converted from this Knet model?"
        )
    return groups


# --------------------------------------------------------------------------- TFLite


def check_tflite_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output `.tflite` path (not a directory, parent exists) before any work."""
    return _check_target_file(path, ".tflite", "TFLite output")


def export_tflite(keras_model: Any, path: str | os.PathLike[str]) -> str:
    """Convert to a TFLite flatbuffer (`tf.lite.TFLiteConverter`, float, no quantisation) and
    write it atomically to `path` (`.tflite`). The converted models use built-in layers only,
    which TFLite's builtin operator set covers."""
    target = check_tflite_path(path)
    from porting import tf as ptf

    tf = ptf.import_tf()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flat = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    except Exception as e:  # noqa: BLE001 - the converter's own failure, reported plainly
        raise PortingError(
            f"TFLite conversion of {keras_model.name!r} failed: {type(e).__name__}: {e}"[:500]
        ) from None
    try:
        with atomic_path(target, ".tflite") as tmp:
            tmp.write_bytes(flat)
    except OSError as e:
        raise PortingError(f"cannot write {target}: {e}") from None
    return str(target)


# --------------------------------------------------------------------------- saving


def _check_target_file(path: str | os.PathLike[str], suffix: str, what: str) -> Path:
    return files.output_file(path, suffix=suffix, what=what)


def check_keras_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output `.keras` path (not a directory, parent exists) before any work."""
    return _check_target_file(path, ".keras", "output")


def save_keras(keras_model: Any, path: str | os.PathLike[str]) -> str:
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


def check_savedmodel_path(path: str | os.PathLike[str]) -> Path:
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


def export_savedmodel(keras_model: Any, directory: str | os.PathLike[str]) -> str:
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


def load_keras(path: str | os.PathLike[str], *, compile: bool = True) -> Any:
    """Load a converted `.keras` model (registers porting's custom layer first).
    `compile=False` leaves out the training configuration (optimizer and its state, loss,
    metrics): what a conversion reads is the layers and their weights; a model trained with a
    loss Keras cannot find (an unregistered function) then loads, and an optimizer's slots
    (Adam: two more copies of the weights) are never built."""
    p = files.input_file(path, "a .keras file (a converted Keras 3 model)")
    import_keras()
    import keras

    import porting.model.keras_layers  # noqa: F401 - registers KnetPool

    try:
        return keras.saving.load_model(p, compile=compile)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is the user's input
        raise PortingError(
            f"{p}: cannot load as a Keras model ({type(e).__name__}: {e})"[:400]
        ) from None
