"""TensorFlow ops on TensorFlow-layout NumPy arrays, with Knet's geometry expressed exactly.

`conv`, `conv_transpose` and `pool` take channels-last arrays, `(N, *spatial, C)` with 1-3
spatial dimensions chosen by rank, and return NumPy arrays of the input's dtype. They compute
cross-correlation, as TensorFlow does (Knet `mode=1`); `knet_conv4_via_tf` and friends take
Julia-indexed Knet arrays, convert them with `porting.layout` (rotating mode-0 kernels) and call
these. TensorFlow is imported on first use, never by `import porting`.

>>> import numpy as np
>>> conv(np.ones((2, 8, 6, 3), np.float32), np.ones((3, 3, 3, 4), np.float32), padding=1).shape
(2, 8, 6, 4)

How Knet's geometry is expressed in TensorFlow:

- Padding is symmetric in Knet: the input is padded explicitly (`tf.pad`) and the op runs
  "VALID". "SAME" is never used: it puts the odd extra row at the bottom/right
  (docs/tensorflow.md#same-padding, #explicit-padding).
- Stride and dilation together: `tf.nn.convolution` refuses them; `tf.nn.conv1d`/`conv2d`
  accept them on every CPU kernel (oneDNN and Eigen, float32 and float64; checked against the
  reference in tests/test_agreement.py), so 1-D and 2-D use those. The CPU Conv3D kernel only
  supports dilation in oneDNN float32, so a dilated 3-D conv runs `tf.nn.convolution` at stride
  1 (which TF lowers to space_to_batch + undilated Conv3D: the same products, no extra terms)
  and keeps every `stride`-th output, which are exactly the strided conv's outputs
  (docs/tensorflow.md#stride-with-dilation).
- Transposed conv with dilation: the CPU backprop-input kernels refuse dilation (except oneDNN
  float32), so it is computed as what it is by definition, the gradient with respect to the
  input of the dilated conv above (`tf.GradientTape`), which uses only kernels every build has
  (docs/tensorflow.md#dilated-transpose).
- Max pooling: NNlib's maxpool starts each window at `nextfloat(typemin(T))` = -floatmax and
  keeps `xv > m`, so NaN never wins and a window holding only NaN/-Inf gives -floatmax, not
  -Inf. NaN is mapped to -Inf before pooling and the result is clamped at -floatmax (TF's
  MaxPool also starts from the lowest finite value; the clamp makes every path agree). Padding
  at least the window (which NNlib computes) gives windows of only padding: -Inf there, so
  -floatmax after the clamp, as NNlib; mean pooling pads zeros, so 0. Convolutions pad zeros
  explicitly whatever the padding. (docs/tensorflow.md#explicit-padding, #maxpool-start;
  docs/knet.md#pool-nan, #padding-beyond-kernel)
- `alpha` is applied as Knet's `lmul!` does: the product in float64, rounded once
  (docs/knet.md#conv4).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import warnings
from typing import Any

import numpy as np

from porting._checks import user_stacklevel
from porting.geometry import ConvDims, ConvOp, PoolDims, PoolOp

__all__ = [
    "conv",
    "conv_transpose",
    "pool",
    "knet_conv4_via_tf",
    "knet_deconv4_via_tf",
    "knet_pool_via_tf",
    "run_conv4",
    "run_deconv4",
    "run_pool",
    "versions",
    "import_tf",
]

# Lines TensorFlow 2.21 writes to stderr at import before its logging is set up, so that
# TF_CPP_MIN_LOG_LEVEL cannot silence them; dropped while that variable asks for quiet.
_IMPORT_NOISE = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called",
    "This TensorFlow binary is optimized to use available CPU instructions",
)


@contextlib.contextmanager
def _drop_native_stderr_lines(patterns: tuple[str, ...]):
    """Capture file descriptor 2 (where TF's C++ logs go); re-emit every line but `patterns`."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(p in line for p in patterns))
            if kept:
                os.write(2, kept.encode())


def import_tf() -> Any:
    """Import TensorFlow quietly (TF_CPP_MIN_LOG_LEVEL=2 unless the user set it)."""
    loaded = sys.modules.get("tensorflow")
    if loaded is not None and hasattr(loaded, "nn"):
        return loaded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() not in ("", "0")
    try:
        with _drop_native_stderr_lines(_IMPORT_NOISE) if quiet else contextlib.nullcontext():
            import tensorflow as tf
    except ImportError as e:
        from porting.errors import MissingDependencyError

        raise MissingDependencyError(
            f"this needs TensorFlow, which could not be imported ({e}); install it with "
            '`pip install "porting[tf-cpu]"` (CPU wheel) or `pip install "porting[tf]"`'
        ) from None
    return tf


_import_tf = import_tf  # the old private name, for callers written before `import_tf`


def versions() -> dict[str, str | None]:
    """Versions of TensorFlow and Keras (None when Keras is not installed)."""
    tf = import_tf()
    try:
        import keras

        keras_version = keras.__version__
    except ImportError:
        keras_version = None
    return {"tensorflow": tf.__version__, "keras": keras_version}


# --------------------------------------------------------------------------- helpers


def _scale(tf, y, alpha: float, dtype: np.dtype):
    """Knet's `lmul!(alpha, y)`: the product formed in float64 and rounded once to `dtype`."""
    if alpha == 1:
        return y
    return tf.cast(tf.cast(y, tf.float64) * alpha, dtype)


def _to_numpy(y, dtype: np.dtype) -> np.ndarray:
    out = np.asarray(y)
    if out.dtype != dtype:  # TF changed the dtype behind our back: never report such numbers
        raise RuntimeError(
            f"TensorFlow returned {out.dtype} for a {dtype} computation; this is a TensorFlow "
            "bug (porting.tf passes tensors to avoid the known one), please report it"
        )
    return out


def _pad(tf: Any, x: Any, dims: ConvDims | PoolDims, value: float) -> Any:
    """Knet's symmetric padding of a TF-layout tensor, explicitly (never "SAME";
    docs/knet.md#padding, docs/tensorflow.md#explicit-padding)."""
    if not any(dims.padding):
        return x
    return tf.pad(x, dims.tf_paddings(), constant_values=value)


def _every(y, stride: tuple[int, ...]):
    """Keep every stride-th element along each spatial axis: `y[:, ::s1, ::s2, :]`."""
    if all(s == 1 for s in stride):
        return y
    return y[(slice(None), *(slice(None, None, s) for s in stride), slice(None))]


# --------------------------------------------------------------------------- convolution


def _conv_valid(tf, x, w, stride: tuple[int, ...], dilation: tuple[int, ...]):
    """Cross-correlation of an already padded `x` with `w`, "VALID", any stride and dilation."""
    nd = len(stride)
    dilated = any(d > 1 for d in dilation)
    if nd == 1:
        return tf.nn.conv1d(x, w, stride=list(stride), padding="VALID", dilations=list(dilation))
    if nd == 2:
        return tf.nn.conv2d(
            x, w, strides=[1, *stride, 1], padding="VALID", dilations=[1, *dilation, 1]
        )
    if not dilated:
        return tf.nn.conv3d(
            x, w, strides=[1, *stride, 1], padding="VALID", dilations=[1, 1, 1, 1, 1]
        )
    # Conv3D on the CPU has no dilation (bar oneDNN float32;
    # docs/tensorflow.md#stride-with-dilation, #no-float64-3d): the stride-1 dilated conv (space
    # to batch + undilated Conv3D, the same products) then every stride-th output. Output i of
    # the strided conv is output i*stride of the stride-1 conv, and the counts agree:
    # ceil((Xp - Kext + 1) / s) == 1 + floor((Xp - Kext) / s).
    return _dilated_then_subsampled(tf, x, w, stride, dilation)


def _dilated_then_subsampled(tf, x, w, stride, dilation):
    y = tf.nn.convolution(x, w, strides=1, padding="VALID", dilations=list(dilation))
    return _every(y, stride)


def conv(
    x: Any, w: Any, *, padding: Any = 0, stride: Any = 1, dilation: Any = 1, alpha: Any = 1
) -> np.ndarray:
    """Cross-correlation in TensorFlow with Knet's symmetric padding, stride and dilation.

    `x` is `(N, *spatial, Cin)`, `w` is `(*K, Cin, Cout)` (TensorFlow layout, 1-3 spatial
    dimensions); the result is `(N, *Y, Cout)`, `Yi = 1 + (Xi + 2 p - ((Ki-1) d + 1)) // s`,
    in the input's dtype. `padding`, `stride` and `dilation` are scalars or one value per
    spatial axis in TensorFlow's order. This is Knet's `conv4(...; mode=1)`.

    >>> conv(np.ones((1, 5, 5, 3)), np.ones((3, 3, 3, 1)), padding=1)[0, :2, :2, 0]
    array([[12., 18.],
           [18., 27.]])
    """
    op = _tf_layout_op(w, x, padding, stride, dilation, alpha, transposed=False)
    return _conv(op.x, op.w, op.dims, op.alpha)


def _tf_layout_op(
    w: Any, x: Any, padding: Any, stride: Any, dilation: Any, alpha: Any, *, transposed: bool
) -> ConvOp:
    """`conv` / `conv_transpose`'s arguments validated once: TensorFlow-layout arrays and
    per-dimension values in TF order, cross-correlation (Knet `mode=1`)."""
    return ConvOp.knet(
        w,
        x,
        padding=padding,
        stride=stride,
        dilation=dilation,
        mode=1,
        alpha=alpha,
        transposed=transposed,
        order="tf",
        op="conv_transpose" if transposed else "conv",
    )


def _conv(x: np.ndarray, w: np.ndarray, dims: ConvDims, alpha: float) -> np.ndarray:
    """`conv` on validated TF-layout arrays whose TF-order `dims` are already computed."""
    tf = import_tf()
    out = dims.y_spatial
    xt = _pad(tf, tf.convert_to_tensor(x), dims, 0.0)
    stride = single_output_stride(out, dims.stride)
    y = _conv_valid(tf, xt, tf.convert_to_tensor(w), stride, dims.dilation)
    if stride != dims.stride:
        y = y[(slice(None), *(slice(0, o) for o in out), slice(None))]
    return _to_numpy(_scale(tf, y, alpha, x.dtype), x.dtype)


def single_output_stride(out: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """The strides to run with: 1 along every axis that has a single output.

    TF 2.21's oneDNN CPU convolution returns uninitialised memory (values up to 1e30, different
    on each call) for some strided convolutions whose output is one element long along a
    strided axis (seen with dilation and padding on the other axis; `TF_ENABLE_ONEDNN_OPTS=0`
    avoids it). Along such an axis the stride does not matter: its one output is output 0 of
    the stride-1 convolution, the same products in the same order, so it is run at stride 1 and
    the first output kept (docs/tensorflow.md#onednn-single-output).
    """
    return tuple(1 if o == 1 else s for o, s in zip(out, stride, strict=True))


def conv_transpose(
    x: Any, w: Any, *, padding: Any = 0, stride: Any = 1, dilation: Any = 1, alpha: Any = 1
) -> np.ndarray:
    """Transposed convolution: the gradient of `conv(y, w, ...)` with respect to `y`.

    `x` is `(N, *spatial, Cx)`, `w` is the kernel of the forward conv that maps Cy to Cx, in
    TensorFlow conv layout `(*K, Cy, Cx)`; the result is `(N, *Y, Cy)` with
    `Yi = (Xi - 1) s + (Ki - 1) d + 1 - 2 p`: the full transposed conv with `padding` cropped
    from both ends. This is Knet's `deconv4(...; mode=1)` in TensorFlow layout.

    >>> conv_transpose(np.ones((1, 3, 3, 1)), np.ones((2, 2, 4, 1)), stride=2).shape
    (1, 6, 6, 4)
    """
    op = _tf_layout_op(w, x, padding, stride, dilation, alpha, transposed=True)
    return _conv_transpose(op.x, op.w, op.dims, op.alpha)


def _conv_transpose(x: np.ndarray, w: np.ndarray, dims: ConvDims, alpha: float) -> np.ndarray:
    """`conv_transpose` on validated TF-layout arrays with TF-order `dims`."""
    tf = import_tf()
    kext = dims.effective_kernel()
    full = tuple(
        (xi - 1) * s + k for xi, s, k in zip(dims.x_spatial, dims.stride, kext, strict=True)
    )
    full_shape = (x.shape[0], *full, w.shape[-2])
    xt, wt = tf.convert_to_tensor(x), tf.convert_to_tensor(w)
    if all(d == 1 for d in dims.dilation):
        y = tf.nn.conv_transpose(
            xt, wt, output_shape=full_shape, strides=list(dims.stride), padding="VALID"
        )
    else:
        # The CPU backprop-input kernels refuse dilation, so take the gradient of the forward
        # conv built from kernels that exist everywhere (stride-1 dilated conv, then every
        # stride-th output); its adjoint is exactly the transposed conv.
        z = tf.zeros(full_shape, dtype=xt.dtype)
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = _dilated_then_subsampled(tf, z, wt, dims.stride, dims.dilation)
        y = tape.gradient(out, z, output_gradients=xt)
    crop = (slice(None), *(slice(p, f - p) for p, f in zip(dims.padding, full, strict=True)))
    return _to_numpy(_scale(tf, y[(*crop, slice(None))], alpha, x.dtype), x.dtype)


# --------------------------------------------------------------------------- pooling


def _pool_by_slices(tf, x, window, stride, out_size, combine):
    """Pool by combining one strided slice per window offset (exact for max; a sum for mean)."""
    acc = None
    for off in itertools.product(*(range(k) for k in window)):
        part = x[
            (
                slice(None),
                *(
                    slice(o, o + (y - 1) * s + 1, s)
                    for o, y, s in zip(off, out_size, stride, strict=True)
                ),
                slice(None),
            )
        ]
        acc = part if acc is None else combine(acc, part)
    return acc


def _native_pool_ok(nd: int, dtype: np.dtype) -> bool:
    # TF 2.21 has no float64 MaxPool3D/AvgPool3D kernel on the CPU (nor on the GPU;
    # docs/tensorflow.md#no-float64-3d).
    return dtype == np.float32 or nd < 3


def pool(
    x: Any,
    *,
    window: Any = 2,
    padding: Any = 0,
    stride: Any = None,
    mode: Any = 0,
    alpha: Any = 1,
) -> np.ndarray:
    """Knet's CPU `pool` on a TensorFlow-layout array `(N, *spatial, C)`.

    - `mode=0` or `3`: max; padded cells never win, NaN never wins (NNlib compares with `>`),
      a window of only NaN/-Inf or only padding gives -floatmax (bit-exact with Knet's CPU;
      docs/knet.md#pool-nan, docs/tensorflow.md#maxpool-start).
    - `mode=1`: mean dividing by `prod(window)`, padding counted as zeros (docs/knet.md#pool,
      docs/tensorflow.md#pooling-padding).
    - `mode=2`: Knet's CPU warns and runs mode 1; so does this (with a warning).

    `stride` defaults to `window`. Parameters are scalars or one value per spatial axis in
    TensorFlow's order. The result has the input's dtype.

    >>> pool(np.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    op = PoolOp.knet(
        x, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha, order="tf"
    )
    return _pool(op.x, op.dims, op.alpha)


def _pool(x: np.ndarray, geom: PoolDims, alpha: float) -> np.ndarray:
    """`pool` on a validated TF-layout array with TF-order dims. Warns for mode 2."""
    out_size = geom.y_spatial
    if geom.mode == 2:
        warnings.warn(
            "pool mode=2 (average excluding padding) exists only on Knet's GPU (cuDNN); Knet's "
            "CPU warns and runs mode=1 (padding counted as zeros), and so does porting. "
            + (
                "With padding=0 both modes give the same numbers: pass mode=1 to silence this."
                if not any(geom.padding)
                else "If the Knet model ran on a GPU, its averages near the border divide by "
                "the number of real cells instead: compare against a GPU run, or pass mode=1 "
                "if the CPU behaviour is what you want."
            ),
            UserWarning,
            stacklevel=user_stacklevel(),  # the first caller outside porting
        )
    tf = import_tf()
    # A tensor, never the NumPy array: TF 2.21's eager MaxPool returns float32 for a float64
    # NumPy input on every call but the first in a process (docs/tensorflow.md#maxpool-float64).
    xt = tf.convert_to_tensor(x)
    native = _native_pool_ok(geom.nd, x.dtype)
    ksize, strides = list(geom.window), list(geom.stride)
    if geom.is_max:
        neg_inf = tf.constant(-np.inf, dtype=xt.dtype)
        xt = tf.where(tf.math.is_nan(xt), neg_inf, xt)
        xp = _pad(tf, xt, geom, -np.inf)
        if native:
            y = tf.nn.max_pool(xp, ksize=ksize, strides=strides, padding="VALID")
        else:
            y = _pool_by_slices(tf, xp, geom.window, geom.stride, out_size, tf.maximum)
        # NNlib's starting value: a window of only NaN/-Inf gives -floatmax.
        y = tf.maximum(y, tf.constant(np.finfo(x.dtype).min, dtype=xt.dtype))
    else:
        xp = _pad(tf, xt, geom, 0.0)
        if native:
            # "VALID" windows are all full, so AvgPool divides by prod(window): padding counts.
            y = tf.nn.avg_pool(xp, ksize=ksize, strides=strides, padding="VALID")
        else:
            total = _pool_by_slices(tf, xp, geom.window, geom.stride, out_size, tf.add)
            y = total / tf.constant(float(np.prod(geom.window)), dtype=xt.dtype)
    return _to_numpy(_scale(tf, y, alpha, x.dtype), x.dtype)


# --------------------------------------------------------------------------- Knet arrays


def _layout():
    from porting import layout

    return layout


def knet_conv4_via_tf(
    w: Any,
    x: Any,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: Any = 0,
    alpha: Any = 1,
    spatial: str = "reverse",
) -> np.ndarray:
    """Knet `conv4(w, x; ...)` computed by TensorFlow; Julia-indexed in, TensorFlow layout out.

    `w` `(W1, ..., Cin, Cout)` and `x` `(X1, ..., Cin, N)` are converted with
    `porting.layout` (`kernel_to_tf` rotates mode-0 kernels), per-dimension parameters are
    reordered with `spatial_to_tf`, and `conv` runs. The result is `(N, *Y, Cout)` in TF order.

    >>> knet_conv4_via_tf(np.ones((3, 3, 2, 4)), np.ones((8, 6, 2, 5)), padding=1).shape
    (5, 6, 8, 4)
    """
    _check_spatial(spatial)
    op = ConvOp.knet(
        w, x, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha
    )
    return run_conv4(op, spatial)


def _check_spatial(spatial: str) -> None:
    from porting._checks import check_choice

    check_choice(spatial, "spatial", _layout().SPATIAL_CHOICES)


def run_conv4(op: ConvOp, spatial: str = "reverse") -> np.ndarray:
    """`knet_conv4_via_tf` of an already validated Julia-order `porting.geometry.ConvOp`."""
    return _conv(*_tf_side(op, spatial))


def _tf_side(op: ConvOp, spatial: str) -> tuple[np.ndarray, np.ndarray, ConvDims, float]:
    """A Julia-order conv4/deconv4 op as `_conv`/`_conv_transpose` take it: `x` and `w` in
    TensorFlow layout (a mode-0 kernel rotated), the dims in TF order, `alpha`."""
    layout = _layout()
    return (
        layout.activations_array_to_tf(op.x, spatial),
        layout.kernel_array_to_tf(op.w, op.dims.mode, spatial),
        op.dims.to_tf(spatial),
        op.alpha,
    )


def knet_deconv4_via_tf(
    w: Any,
    x: Any,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: Any = 0,
    alpha: Any = 1,
    spatial: str = "reverse",
) -> np.ndarray:
    """Knet `deconv4(w, x; ...)` computed by TensorFlow; Julia-indexed in, TensorFlow layout out.

    `w` is `(W1, ..., Cy, Cx)`, `x` `(X1, ..., Cx, N)`; the result is `(N, *Y, Cy)` in TF order.

    >>> knet_deconv4_via_tf(np.ones((2, 2, 3, 4)), np.ones((5, 4, 4, 1)), stride=2).shape
    (1, 8, 10, 3)
    """
    _check_spatial(spatial)
    op = ConvOp.knet(
        w,
        x,
        padding=padding,
        stride=stride,
        dilation=dilation,
        mode=mode,
        alpha=alpha,
        transposed=True,
    )
    return run_deconv4(op, spatial)


def run_deconv4(op: ConvOp, spatial: str = "reverse") -> np.ndarray:
    """`knet_deconv4_via_tf` of an already validated Julia-order transposed `ConvOp`."""
    return _conv_transpose(*_tf_side(op, spatial))


def knet_pool_via_tf(
    x: Any,
    *,
    window: Any = 2,
    padding: Any = 0,
    stride: Any = None,
    mode: Any = 0,
    alpha: Any = 1,
    spatial: str = "reverse",
) -> np.ndarray:
    """Knet's CPU `pool(x; ...)` computed by TensorFlow; Julia-indexed in, TF layout out.

    >>> knet_pool_via_tf(np.ones((6, 4, 3, 2)), window=2).shape
    (2, 2, 3, 3)
    """
    _check_spatial(spatial)
    op = PoolOp.knet(x, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    return run_pool(op, spatial)


def run_pool(op: PoolOp, spatial: str = "reverse") -> np.ndarray:
    """`knet_pool_via_tf` of an already validated Julia-order `porting.geometry.PoolOp`."""
    x_tf = _layout().activations_array_to_tf(op.x, spatial)
    return _pool(x_tf, op.dims.to_tf(spatial), op.alpha)
