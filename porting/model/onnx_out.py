"""A converted Keras model written as ONNX, and that file checked end to end against Knet.

`export_onnx(keras_model, path)` writes the model through Keras's own exporter
(`model.export(path, format="onnx")`, which runs tf2onnx on the TensorFlow backend), into a
temporary file renamed over `path` (`porting.files.atomic_write`). `verify_onnx(model, path, x)`
runs that file under onnxruntime and compares its output with the Knet side's, end to end.

The end-to-end tolerance is the whole-model rule of `porting.model.verify` (mode "whole") with
the incoming error of every layer taken as the largest its inputs may carry rather than as
measured: the model input's rounding to the file's type, then, layer by layer, the layer's own
budget `(sqrt(K)+2)*eps*S` with `S` the layer on `|x| + E_in / ((sqrt(K)+2)*eps)`. A file whose
every layer stays within its rounding budget passes, whatever runtime ran it; one layer off by
more than its budget (a wrong kernel, a transposed axis) does not. Only the Knet side is read,
so nothing here trusts the Keras model's own numbers.

The packages (onnx, onnxruntime, tf2onnx) come with the `onnx` extra: `pip install
'porting[onnx]'`; a missing one is a `PortingError` saying so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from porting import files, layout
from porting._checks import check_choice
from porting.comparison import Comparison, compare
from porting.errors import PortingError

if TYPE_CHECKING:
    from porting.model.planning import Plan
    from porting.model.spec import KnetModel

_StrPath = str | os.PathLike[str]

__all__ = ["check_onnx_path", "export_onnx", "run_onnx", "verify_onnx", "OnnxCheck", "OnnxPort"]

INSTALL = "pip install 'porting[onnx]' (the packages onnx, onnxruntime and tf2onnx)"


def _require(*names: str) -> None:
    """Import each named package or say what to install (before any work is done)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise PortingError(
                f"ONNX support needs the package {name!r}, which is not importable ({e}); "
                f"install it with {INSTALL}"
            ) from None


def check_onnx_path(path: _StrPath) -> Path:
    """Validate an output `.onnx` path (not a directory, parent exists) and that the ONNX
    packages are importable, before any work."""
    target = files.output_file(path, suffix=".onnx", what="ONNX output")
    _require("onnx", "onnxruntime", "tf2onnx")
    return target


class _Rejected(Exception):
    """Raised inside the atomic write to drop a file whose check failed."""

    def __init__(self, check: Any) -> None:
        super().__init__("the ONNX file differs from the Knet side")
        self.check = check


@overload
def export_onnx(
    keras_model: Any, path: _StrPath, check: None = None, keep_on_mismatch: bool = False
) -> str: ...


@overload
def export_onnx(
    keras_model: Any, path: _StrPath, check: Callable[[Path], Any], keep_on_mismatch: bool = False
) -> tuple[str | None, Any]: ...


def export_onnx(
    keras_model: Any,
    path: _StrPath,
    check: Callable[[Path], Any] | None = None,
    keep_on_mismatch: bool = False,
) -> str | tuple[str | None, Any]:
    """Write `keras_model` as an ONNX file at `path` (atomically; the batch dimension stays
    dynamic) and return the path. Keras's exporter (tf2onnx underneath) does the conversion;
    its failure, or a file onnxruntime cannot load, is a `PortingError` and leaves no file.

    With `check`, a function of the temporary file's path returning something with `.ok` (e.g.
    `lambda p: verify_onnx(model, p, x)`), the file is renamed into place only when the check
    is ok (or `keep_on_mismatch`); the result is then `(path or None, check result)`."""
    target = check_onnx_path(path)
    from porting import tf as ptf

    tf = ptf.import_tf()
    keras_model = _without_grouped_convs(keras_model)
    spec = keras_model.inputs[0]
    signature = [
        tf.TensorSpec(
            shape=tuple(spec.shape), dtype=spec.dtype, name=getattr(spec, "name", None) or "x"
        )
    ]
    quiet = logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    result = None
    try:
        with files.atomic_write(target, suffix=".onnx") as tmp:
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # np.object, in Keras's patch
                    keras_model.export(
                        str(tmp), format="onnx", verbose=False, input_signature=signature
                    )
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - the converter's own failure, reported plainly
                raise PortingError(
                    f"ONNX conversion of {keras_model.name!r} failed: {type(e).__name__}: {e}"[:500]
                ) from None
            if not tmp.is_file():
                raise PortingError(f"ONNX conversion of {keras_model.name!r} wrote no file")
            what = f"the ONNX conversion of {keras_model.name!r}"
            if np.dtype(spec.dtype) == np.float64:  # no double Conv/Gemm kernels in onnxruntime
                what += " (float64: onnxruntime has float32 kernels only for most operators; "
                what += "convert with --dtype float32 / dtype='float32')"
            _session(tmp, what)  # it loads, or no file is written
            if check is not None:
                result = check(tmp)
                if hasattr(result, "path"):
                    result.path = str(target)  # what the user will find, not the temporary
                if not result.ok and not keep_on_mismatch:
                    raise _Rejected(result)
    except _Rejected as r:
        return None, r.check
    except OSError as e:
        raise PortingError(f"cannot write {target}: {e}") from None
    finally:
        quiet.setLevel(level)
    if check is not None:
        return str(target), result
    return str(target)


def _without_grouped_convs(keras_model: Any) -> Any:
    """The model with every grouped Conv1D/Conv2D whose groups are its input channels (Knet's
    depthwise conv4) as the equivalent DepthwiseConv1D/2D, same weights: Keras runs grouped
    convolutions on TensorFlow's CPU through an XLA function, which tf2onnx cannot convert.
    The same model when it has none; other grouped convolutions are refused by name."""
    import keras

    grouped = [
        layer
        for layer in keras_model.layers
        if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D)
        and getattr(layer, "groups", 1) > 1
    ]
    if not grouped:
        return keras_model
    depthwise: dict[str, Any] = {}
    for layer in grouped:
        cfg = layer.get_config()
        cin = int(layer.kernel.shape[-2]) * layer.groups
        if layer.groups != cin or isinstance(layer, keras.layers.Conv3D):
            raise PortingError(
                f"{layer.name}: a convolution in {layer.groups} groups of {cin // layer.groups} "
                "channels has no ONNX conversion here (only depthwise ones, groups = input "
                "channels, are rewritten for tf2onnx)"
            )
        cls = keras.layers.DepthwiseConv2D
        if isinstance(layer, keras.layers.Conv1D):
            cls = keras.layers.DepthwiseConv1D
        depthwise[layer.name] = cls(
            kernel_size=cfg["kernel_size"],
            strides=cfg["strides"],
            padding=cfg["padding"],
            depth_multiplier=cfg["filters"] // cin,
            dilation_rate=cfg["dilation_rate"],
            activation=cfg["activation"],
            use_bias=cfg["use_bias"],
            name=layer.name,
            dtype=layer.dtype_policy,
        )

    def clone(layer: Any) -> Any:
        return depthwise.get(layer.name) or layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(keras_model, clone_function=clone)
    for old, new in zip(keras_model.layers, copy.layers, strict=True):
        weights = old.get_weights()
        if old.name in depthwise:  # (K.., 1, C*M) -> (K.., C, M): output c*M + m is group c's
            kernel = weights[0]
            m = kernel.shape[-1] // depthwise[old.name].kernel.shape[-2]
            weights[0] = kernel.reshape(*kernel.shape[:-2], kernel.shape[-1] // m, m)
        new.set_weights(weights)
    return copy


def _session(path: _StrPath, what: str = "") -> Any:
    _require("onnxruntime")
    import onnxruntime as ort

    p = files.input_file(path, "an ONNX file (.onnx)", what="ONNX model")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a hostile or broken file: onnxruntime's own word
        raise PortingError(
            f"{what or p}: onnxruntime cannot load the ONNX model: {type(e).__name__}: {e}"[:500]
        ) from None


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def run_onnx(path: _StrPath, x_tf: np.ndarray) -> np.ndarray:
    """The ONNX file's output for a TensorFlow-layout batch `x_tf` (onnxruntime, CPU)."""
    sess = _session(path)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise PortingError(f"{path}: expected an ONNX model with one input, it has {len(inputs)}")
    want = _ORT_TYPES.get(inputs[0].type)
    if want is None:
        raise PortingError(f"{path}: input type {inputs[0].type} is not one porting feeds")
    x = np.ascontiguousarray(x_tf, dtype=want)
    rank = len(inputs[0].shape)
    if x.ndim != rank:
        raise PortingError(
            f"{path}: the ONNX model takes rank-{rank} input {inputs[0].shape}, the batch is "
            f"{x.shape} in TensorFlow layout"
        )
    try:
        return np.asarray(sess.run(None, {inputs[0].name: x})[0])
    except Exception as e:  # noqa: BLE001 - a shape the file does not take, said plainly
        raise PortingError(
            f"{path}: onnxruntime failed on input {x.shape}: {type(e).__name__}: {e}"[:500]
        ) from None


@dataclass
class OnnxCheck:
    """`verify_onnx`'s verdict: the ONNX output against Knet's under the end-to-end tolerance."""

    path: str
    comparison: Comparison
    input_shape: tuple[int, ...]
    onnx_dtype: str

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "path": self.path,
            "ok": self.ok,
            "input_shape": list(self.input_shape),
            "onnx_dtype": self.onnx_dtype,
            "max_abs_error": c.max_abs_error,
            "error_to_tolerance": c.max_error_to_tolerance,
            "comparison": c.to_dict(),
        }

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"{verdict}: ONNX file {self.path} under onnxruntime vs the Knet side, end to end "
            f"(input {self.input_shape}): max abs error {self.comparison.max_abs_error:.3g}, "
            f"error / tolerance {self.comparison.max_error_to_tolerance:.3g}"
        )


def end_to_end(
    model: KnetModel,
    x: np.ndarray,
    steps: Plan,
    spatial: str,
    knet: str,
    dtype: npt.DTypeLike,
    tags: list[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Knet's final output in TensorFlow layout, its end-to-end `S` (see the module note) and
    the last layer's K, for a checked Julia-indexed `x` computed against a model in `dtype`;
    `tags` (a list), when given, receives the first array that names the Knet backend
    (`porting.model.forward.backend_of`)."""
    from porting.knet import mlas
    from porting.model import convert as mconvert
    from porting.model import knet_side
    from porting.model.forward import forward_steps
    from porting.tolerance import Tolerance

    wd = model.dtype
    lower = np.dtype(dtype) if np.dtype(dtype).itemsize <= wd.itemsize else wd
    done: dict[int, np.ndarray] = {}
    budget: dict[int, np.ndarray] = {}
    tags = [] if tags is None else tags
    e_x = None
    if np.issubdtype(x.dtype, np.floating) and np.dtype(dtype) != x.dtype:
        e_x = np.abs(x.astype(dtype).astype(wd) - x.astype(wd))  # the input's own rounding
    last_use = {k: i for i, st in enumerate(steps) for k in st.sources}
    mag = y = None
    # The file runs on onnxruntime's kernels, so the Knet side's convolutions must not
    # (porting.knet.mlas): NumPy's, a second implementation.
    with mlas.kernel("numpy"):
        for i, y, extra in forward_steps(steps, x, knet, True, done, tags):
            step = steps[i]
            del tags[1:]
            x_ins = [x if k < 0 else done[k] for k in step.sources]
            e_ins = [e_x if k < 0 else budget[k] for k in step.sources]
            scale = knet_side.tolerance_scale(step.k, lower)
            nonneg = knet_side.nonnegative(steps, step)
            mag = knet_side.magnitude_of(step, x_ins, e_ins, extra, y, scale, wd, nonneg)
            if i in last_use:
                tol = Tolerance.of(step.k, lower)
                budget[i] = np.asarray(mag, dtype=wd) * wd.type(tol.scale) + wd.type(tol.floor)
            for j in {*step.sources, i}:
                if j >= 0 and last_use.get(j, -1) <= i and j != len(steps) - 1:
                    done.pop(j, None)
                    budget.pop(j, None)
            del x_ins, e_ins
    assert y is not None and mag is not None  # a plan has at least one step
    last = steps[-1]
    expected = mconvert.julia_to_tf(y, last.flat_from, spatial)
    return expected, mconvert.julia_to_tf(mag, last.flat_from, spatial), last.k


def verify_onnx(
    model: KnetModel,
    path: _StrPath,
    x: Any = None,
    *,
    spatial: str = "reverse",
    knet: str = "auto",
    plan: Plan | None = None,
) -> OnnxCheck:
    """Run the ONNX file at `path` under onnxruntime on `x` (Julia-indexed, batch last; default
    `porting.model.verify.default_input`) and compare its output with `model`'s Knet side, end
    to end, under the whole-model tolerance of the module note. `spatial` is the convention the
    file was converted with."""
    from porting.model.forward import check_input
    from porting.model.verify import default_input

    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    sess = _session(path)
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    in_dt = _ORT_TYPES.get(inp.type)
    out_dt = _ORT_TYPES.get(out.type)
    if in_dt is None or out_dt is None or not np.issubdtype(out_dt, np.floating):
        raise PortingError(f"{path}: input {inp.type}, output {out.type}: not a converted model")
    if x is None:
        x = default_input(model, plan.input_size if plan is not None else None)
    x, steps = check_input(model, x, plan)
    x_tf = layout.activations_to_tf(x, spatial) if x.ndim > 2 else np.ascontiguousarray(x.T)
    to_keras_input = getattr(model.layers[0], "keras_input", None)
    if to_keras_input is not None:  # Knet's 1-based token indices -> Keras's 0-based
        x_tf = to_keras_input(x_tf)
    actual = run_onnx(path, x_tf.astype(in_dt, copy=False))
    expected, mag, k = end_to_end(model, x, steps, spatial, knet, np.dtype(out_dt))
    if actual.shape != expected.shape:
        raise PortingError(
            f"{path}: the ONNX output has shape {actual.shape}, Knet's is {expected.shape} in "
            "TensorFlow layout; the file does not match this model"
        )
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        comp = compare(expected, actual, k=k, magnitude=mag)
    comp.notes.append(
        "end-to-end tolerance: every layer's rounding budget (sqrt(K)+2)*eps*S, pushed through "
        "the later layers' bounds"
    )
    return OnnxCheck(str(path), comp, tuple(x.shape), np.dtype(out_dt).name)


def _dim(d: Any) -> int | None:
    """An ONNX input dimension: its size, or None when symbolic (a name) or unknown."""
    return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


class OnnxPort:
    """An ONNX file opened once under onnxruntime as the port of `steps`' model, checked up
    front: one input of a type porting feeds, of the TensorFlow-layout shape the model's
    samples have under `spatial` (the batch dimension free), a floating-point output. Anything
    else (not an ONNX file, a truncated one, another model's input) is a `PortingError` naming
    the file and what was expected. `check(model, x, ...)` runs one batch against Knet, end to
    end, under `verify_onnx`'s tolerance."""

    def __init__(self, path: _StrPath, steps: Plan, spatial: str) -> None:
        from porting.model import convert as mconvert

        check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
        self.path = str(path)
        self.session = _session(path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise PortingError(
                f"{path}: an ONNX model with {len(inputs)} inputs and {len(outputs)} outputs; "
                "expected a converted model (one input, one output)"
            )
        inp, out = inputs[0], outputs[0]
        in_dt, out_dt = _ORT_TYPES.get(inp.type), _ORT_TYPES.get(out.type)
        if in_dt is None or out_dt is None or not np.issubdtype(out_dt, np.floating):
            raise PortingError(
                f"{path}: input {inp.type}, output {out.type}: not a converted model (expected "
                "a float or integer input and a floating-point output)"
            )
        self.input_name = inp.name
        self.in_dtype, self.out_dtype = np.dtype(in_dt), np.dtype(out_dt)
        want = mconvert.tf_sample_shape(tuple(steps.input_size), spatial)
        have = [_dim(d) for d in (inp.shape or [])]
        if len(have) != len(want) + 1 or any(
            h is not None and h != w for h, w in zip(have[1:], want, strict=True)
        ):
            shown = ["N" if d is None else d for d in have]
            raise PortingError(
                f"{path}: the ONNX model takes input {shown}, but the model's samples are "
                f"{list(want)} in TensorFlow layout (spatial={spatial!r}, batch first); the "
                "file is not a port of this model, or was converted with another --spatial"
            )
        self.spatial = spatial

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": str(onnxruntime.__version__)}

    def run(self, x_tf: np.ndarray) -> np.ndarray:
        """The file's output for a TensorFlow-layout batch."""
        x = np.ascontiguousarray(x_tf, dtype=self.in_dtype)
        try:
            return np.asarray(self.session.run(None, {self.input_name: x})[0])
        except Exception as e:  # noqa: BLE001 - a batch the file does not take, said plainly
            raise PortingError(
                f"{self.path}: onnxruntime failed on input {x.shape}: {type(e).__name__}: {e}"[:500]
            ) from None

    def tf_input(self, model: KnetModel, x: np.ndarray) -> np.ndarray:
        """The file's input for a checked Julia-indexed batch `x` of `model`."""
        x_tf = (
            layout.activations_to_tf(x, self.spatial) if x.ndim > 2 else np.ascontiguousarray(x.T)
        )
        to_keras_input = getattr(model.layers[0], "keras_input", None)
        if to_keras_input is not None:  # Knet's 1-based token indices -> Keras's 0-based
            x_tf = to_keras_input(x_tf)
        return x_tf.astype(self.in_dtype, copy=False)

    def check(
        self,
        model: KnetModel,
        x: np.ndarray,
        steps: Plan,
        knet: str,
        tags: list[Any],
        ulps: bool = True,
    ) -> tuple[Comparison, np.ndarray, np.ndarray]:
        """The batch `x` (checked, Julia-indexed) through the file and through Knet: the
        end-to-end comparison, Knet's output and the file's (TensorFlow layout)."""
        actual = self.run(self.tf_input(model, x))
        expected, mag, k = end_to_end(model, x, steps, self.spatial, knet, self.out_dtype, tags)
        if actual.shape != expected.shape:
            raise PortingError(
                f"{self.path}: the ONNX output has shape {actual.shape}, Knet's is "
                f"{expected.shape} in TensorFlow layout; the file does not match this model"
            )
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            comp = compare(expected, actual, k=k, magnitude=mag, ulps=ulps)
        return comp, expected, actual
