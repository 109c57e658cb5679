"""Knet's layer operations written again in PyTorch float64: the independent truth for tests.

Nothing here imports ``porting``: every function is written from Knet.jl's own definitions
(tag v1.4.10, https://github.com/denizyuret/Knet.jl) and from NNlib's CPU kernels that Knet
calls, so that a test comparing ``porting`` against this module compares two implementations
that share no code. The facts, one section per operation: docs/knet.md#conv4, #flip, #padding,
#padding-beyond-kernel, #deconv4, #pool, #pool-nan, #mat, #dense, #layers21, #batchnorm,
#batchnorm-ops21, #activations, #softmax, #ops21-conv, #ops21-pool and #embed.

Conventions
-----------
* **Julia indexing.** Every array argument and result is "Julia-indexed": a NumPy array whose
  shape is Julia's ``size()`` and whose element ``[i-1, j-1, ...]`` is Julia's ``[i, j, ...]``
  (whatever its memory order). Activations are ``(X1, ..., Xd, C, N)``, conv kernels
  ``(W1, ..., Wd, Cin, Cout)``, deconv kernels ``(W1, ..., Wd, Cy, Cx)``. Inside, explicit
  permutes turn them into PyTorch's ``(N, C, X1, ..., Xd)`` and back; Julia's ``X1`` becomes
  PyTorch's first spatial axis, so the choice of which axis is "height" never enters.
* **float64.** Everything is computed in ``torch.float64`` and returned as float64 (Knet would
  return the element type of its input; compare with the tolerance of that type).
* **NumPy in, NumPy out; torch in, torch out.** When the main input (``x``, or ``w`` for
  ``embed``) is a ``torch.Tensor`` the result is a float64 tensor on the autograd graph, so a
  test can take gradients (``deconv4`` must equal the input gradient of ``conv4``).
* **Keywords** ``padding``, ``stride``, ``dilation``, ``window`` take one integer for every
  spatial dimension or one value per dimension (first entry for ``X1``), as Knet does.
  ``conv4``, ``pool`` and ``ops21_conv`` also take ``2*nd`` paddings ``(lo1, hi1, lo2, hi2,
  ...)``: Knet's ``expand`` passes a tuple through unchanged and NNlib's ``check_spdf`` reads a
  ``2*nd`` tuple as asymmetric padding (so for ONE spatial dim, ``padding=(1, 0)`` means lo 1,
  hi 0). ``deconv4`` and ``ops21_pool`` take ``nd`` values only (Knet's ``dcdims`` and the
  window cut index them per dimension).
* **1-based** ``dims`` in ``softmax``, ``logsoftmax``, ``cat``; 1-based indices in ``embed``.
* Bad arguments raise ``ValueError`` (``IndexError`` for an embedding index out of range)
  naming the value received; Knet would fail with an assertion or a ``DimensionMismatch``.

Functions (Knet source, all at tag v1.4.10)
-------------------------------------------
Ops20 (exported by ``Knet``):

* ``conv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1)``:
  ``src/ops20/conv.jl`` ``conv4`` -> ``NNlib.conv(x, w, DenseConvDims(...; flipkernel=mode!=0))``.
  ``mode=0`` (default) is true convolution: the kernel is reversed along every spatial
  dimension; ``mode=1`` is cross-correlation. 1-3 spatial dims; padding may exceed the kernel
  (zeros are padded, then an unpadded convolution runs); ``group != 1`` is rejected as Knet's
  assertion does. ``Yi = 1 + (Xi + 2p - ((Wi-1)d + 1)) // s``.
* ``deconv4(w, x; padding, stride, dilation, mode, alpha)``: ``src/ops20/conv.jl`` ``deconv4``
  (= ``conv4x`` = ``NNlib.∇conv_data`` on an output sized by ``dcdims``): the transpose of
  ``conv4`` with the same flip rule. ``w`` is ``(W..., Cy, Cx)``; the full transposed result is
  computed with ``conv_transposeNd`` and ``padding`` cells are cropped from both ends:
  ``Yi = (Xi-1)s + (Wi-1)d + 1 - 2p``.
* ``pool(x; window=2, padding=0, stride=window, mode=0, maxpoolingNanOpt=1, alpha=1)``:
  ``src/ops20/conv.jl`` ``pool``/``checkpoolopts`` -> NNlib ``maxpool``/``meanpool``
  (NNlib v0.8.21 ``src/impl/pooling_direct.jl``). Modes 0 and 3: max, where padded cells hold
  ``-floatmax`` (NNlib's ``nextfloat(typemin(T))``) and a cell wins only when strictly greater,
  so NaN and ``-Inf`` never win and an all-padding (or all-NaN) window gives ``-floatmax``.
  Mode 1: sum of the real cells divided by ``prod(window)`` (padding counts as zeros). Mode 2
  runs as mode 1, as Knet does on the CPU (with a warning there). Padding may exceed the window.
* ``mat(x; dims=ndims(x)-1)``: ``src/ops20/conv.jl`` ``mat``, a column-major reshape.
* ``dense(w, x, b=None)``: ``w * mat(x) .+ b``, the dense layer of Knet's examples
  (``w`` is ``(out, in)``).
* ``batchnorm(x, moments=None, params=None; training=False, eps=1e-5)`` with ``bnmoments``,
  ``bnparams``, ``BNMoments``: ``src/ops20/batchnorm.jl`` (``batchnorm``, ``bnparams``,
  ``_bnscale``/``_bnbias``, ``_batchnorm4_fused``, ``_update_moments!``, ``_lazy_init!``).
  ``params`` is ONE vector ``[scale (C); bias (C)]``. Statistics are per channel: reduced dims
  ``(2,)`` for ``(C, N)``, ``(1,2,4)`` for 4-D, ``(1,2,3,5)`` for 5-D. Inference:
  ``g .* (x .- mean) .* (1 ./ sqrt.(var .+ eps)) .+ b``; moments are required (Knet asserts),
  and ``mean``/``var`` left as ``None`` become zeros/ones as Knet's lazy initialisation makes
  them. ``training=True``: batch mean and biased variance, and the moments are updated in
  place with ``mean = momentum*batch + (1-momentum)*mean``. In Knet ``training`` defaults to
  ``AutoGrad.recording()``, i.e. false in a plain forward call.
* Activations ``relu`` (``max(x, 0)``, NaN propagates), ``sigm`` (the stable two-branch form),
  ``elu`` (``x >= 0 ? x : exp(x)-1``), ``selu`` (``x >= 0 ? λ x : λα (exp(x)-1)`` with Knet's
  three constants): ``src/ops20/activation.jl``. ``tanh`` is Julia's ``Base.tanh``.
* ``softmax(x; dims=:)``, ``logsoftmax(x; dims=:)``: ``src/ops20/softmax.jl``; ``dims=None``
  means Julia's ``:`` (the whole array, Knet's default; NNlib's default is ``dims=1``).
  Both subtract the maximum first.
* ``leaky_relu(x, alpha=0.2)``: ``examples/dcgan-mnist/dcgan.jl`` (Knet has no leaky relu of
  its own): ``max(0, x) + min(0, x) * alpha``.

Ops21 (``Knet.Ops21``; not exported by ``Knet``):

* ``ops21_conv(w, x; activation, normalization, alpha=1, beta=0, bias, channelmajor=false,
  crosscorrelation=true, dilation=1, groups=1, padding=0, stride=1, z)``:
  ``src/ops21/conv.jl``. Default is **cross-correlation** (no flip). Computes
  ``activation(normalization(alpha*conv(w,x) + beta*z .+ bias))``; ``z`` is used only when
  ``beta != 0`` (with the default ``beta=0`` a given ``z`` is ignored). ``groups`` splits the
  channels into contiguous blocks (``w`` is ``(W..., Cx÷groups, Cy)``); Knet's CPU path
  supports groups for 4-D input only, this one for 1-3 spatial dims.
* ``ops21_pool(x; op="maximum", window=2, padding=0, stride=window, alpha=1)``:
  ``src/ops21/pool.jl``. As ``pool``, but the window is first cut to ``Xi + 2p``
  (``window=typemax(Int)`` is global pooling; ``stride`` defaults to the uncut window).
  ``includePadding=false`` and ``propagateNaN=false`` are not honoured on the CPU (Knet warns):
  the mean counts padding, the max never propagates NaN.
* ``ops21_batchnorm(x, mean_estimate, var_estimate, bias, scale; epsilon=1e-5, update=0,
  use_estimates=true)``: ``src/ops21/batchnorm.jl``. **Bias before scale.** Computes
  ``((x .- mean) ./ sqrt.(epsilon .+ var)) .* scale .+ bias``; the reduced dims (for
  ``use_estimates=false`` or ``update > 0``) are those where ``mean_estimate`` has size 1.
  Arrays broadcast as in Julia (missing trailing dims are 1).
* ``zeropad(x, p)``: ``src/ops21/zeropad.jl`` (``zeropad``, ``padtuple``): zeros around Julia
  dims ``1..n-2``; ``p`` is an int, one int per dim, or one ``(lo, hi)`` pair per dim.
* ``linear(w, x; dims=1)``: ``src/ops21/linear.jl``.
* ``ops21_relu(x; max_value=inf, negative_slope=0, threshold=0)``: ``src/ops21/activation.jl``:
  ``x >= max_value ? max_value : x >= threshold ? x : negative_slope == 0 ? 0 :
  negative_slope*(x - threshold)``, so ``x == threshold`` gives ``x`` and NaN gives 0 when
  ``negative_slope == 0``.
* ``gelu`` (exact: ``x (1 + erf(x/sqrt(2))) / 2``), ``swish`` (``x * sigm(x)``),
  ``hardsigmoid`` (``x <= -3 ? 0 : x >= 3 ? 1 : (x+3)/6``), ``hardswish``
  (``x <= -3 ? 0 : x >= 3 ? x : x(x+3)/6``): ``src/ops21/activation.jl``. Ops21's ``elu``,
  ``selu``, ``sigm`` equal Ops20's.

Layers21 (``Knet.Layers21``), callables with Knet's defaults:

* ``Conv(w; bias=None, ...)``: ``src/layers21/conv.jl``. Keywords as ``ops21_conv``; an
  asymmetric padding ``((lo, hi), ...)`` is applied with ``zeropad`` first, then the
  convolution runs unpadded. Called as ``c(x, z=None)``.
* ``BatchNorm(; mean, var, bias, scale, epsilon=1e-5, dims=None)`` at inference:
  ``src/layers21/batchnorm.jl`` (``initBatchNorm``: missing mean/var/bias/scale become
  0/1/0/1 of size ``(1, ..., C, 1)``; ``dims`` ``(1..n-2, n)`` per channel (default),
  ``(2..n)`` channel-first, ``n`` per activation).
* ``Linear(w; bias=None, activation=None)``: ``src/layers21/linear.jl`` (no bias by default).
* ``ZeroPad(p)``: ``src/layers21/zeropad.jl``.
* ``Add(blocks...; activation=None)``: ``src/layers21/add.jl``: every block gets the same
  input, the outputs are summed, then the activation.
* ``Block(layers...)``: ``src/layers21/block.jl``, a chain. ``Op(f, args...; kw...)``:
  ``src/layers21/op.jl``, ``x -> f(x, args...; kw...)``.
* ``Embed(w)``: ``src/layers21/embed.jl``, and ``embed(w, x)`` = Knet code's ``w[:, x]``: ``w``
  is ``(dim, vocab)``, ``x`` holds 1-based integer indices, the result is
  ``(dim, size(x)...)``.
* ``cat(xs...; dims)``: Julia's ``cat``; channel concatenation is ``dims=ndims(x)-1``
  (``concat_channels``).

Facts in Knet's sources that are easy to get wrong (v1.4.10)
------------------------------------------------------------
* Two defaults for the flip: ``conv4``/``deconv4`` ``mode=0`` flip (true convolution);
  ``Ops21.conv`` and Layers21 ``Conv`` ``crosscorrelation=true`` do not.
* Ops20 ``batchnorm`` packs ``[scale; bias]`` in one vector; Ops21 ``batchnorm`` takes
  ``(mean, var, bias, scale)``: bias first. Both decide training by
  ``Knet.training() = AutoGrad.recording()`` (inside ``@diff`` only, not a global flag); both
  use the biased variance and a momentum (``update``) that weights the NEW batch statistic.
* Ops21 ``conv`` ignores ``z`` unless ``beta != 0`` (default ``beta=0``); the order is
  ``alpha*conv``, ``+ beta*z``, ``.+ bias``, normalization, activation.
* Ops20 ``relu(NaN)`` is NaN; Ops21 ``relu(NaN)`` is 0 (every comparison fails and the
  ``negative_slope == 0`` branch returns zero). Ops21 ``relu`` at ``x == threshold`` returns
  ``x``; below the threshold it returns 0, not ``x - threshold``, unless a slope is given.
* ``softmax``/``logsoftmax`` default to the whole array (``dims=:``).
* ``pool`` mode 2 silently runs as mode 1 on the CPU; Ops21 ``pool``'s documented defaults
  ``includePadding=false``/``propagateNaN=false`` are not what the CPU computes.
* MobileNet (``src/models21/mobilenet.jl``) converted from TF uses asymmetric padding
  ``((p-1, p), (p-1, p))`` for strided convs and ``BatchNorm(epsilon=1e-3, update=0.01)``:
  Layers21 epsilons are not always 1e-5.
* From reading only (no Julia here): Knet's ``expand`` has methods for ``Tuple`` and
  ``Integer`` only, so a ``Vector`` padding/stride in ``conv4``/``pool`` would be a
  ``MethodError`` despite the docstring; and Layers21 ``Conv`` passes a *symmetric*
  ``((p, p), ...)`` tuple of pairs straight to NNlib, whose ``check_spdf`` expects integers.
  This module treats such pairs as the integer ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Add",
    "BNMoments",
    "BatchNorm",
    "Block",
    "Conv",
    "Embed",
    "Linear",
    "Op",
    "ZeroPad",
    "batchnorm",
    "bnmoments",
    "bnparams",
    "cat",
    "concat_channels",
    "conv4",
    "deconv4",
    "dense",
    "elu",
    "embed",
    "gelu",
    "hardsigmoid",
    "hardswish",
    "leaky_relu",
    "linear",
    "logsoftmax",
    "mat",
    "ops21_batchnorm",
    "ops21_conv",
    "ops21_pool",
    "ops21_relu",
    "pool",
    "relu",
    "selu",
    "sigm",
    "softmax",
    "swish",
    "tanh",
    "zeropad",
]

F64 = torch.float64
FLOATMAX = float(np.finfo(np.float64).max)

# Knet's selu constants (src/ops20/activation.jl), used as written, not recomputed.
LAMBDA01 = 1.0507009873554805
ALPHA01 = 1.6732632423543778
LAMBDA_ALPHA01 = 1.7580993408473773

Array = Any  # a NumPy array or a torch tensor, Julia-indexed


# ---------------------------------------------------------------------------------------------
# Conversions


def _t(a: Array, name: str = "x") -> torch.Tensor:
    """A float64 tensor with the same (Julia) indexing; tensors keep their autograd graph."""
    if isinstance(a, torch.Tensor):
        return a.to(F64)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return torch.as_tensor(np.array(arr, dtype=np.float64))


def _ret(t: torch.Tensor, as_torch: bool) -> Array:
    return t if as_torch else t.detach().cpu().numpy().copy()


def _to_nc(t: torch.Tensor) -> torch.Tensor:
    """Julia ``(S1..Sd, C, N)`` -> torch ``(N, C, S1..Sd)`` (also kernels: -> (Cout, Cin, W...))."""
    d = t.ndim - 2
    return t.permute(d + 1, d, *range(d))


def _from_nc(t: torch.Tensor) -> torch.Tensor:
    """torch ``(N, C, S1..Sd)`` -> Julia ``(S1..Sd, C, N)``."""
    d = t.ndim - 2
    return t.permute(*range(2, d + 2), 1, 0)


def _expand(v: Any, nd: int, name: str, minimum: int) -> tuple[int, ...]:
    vals = [v] * nd if isinstance(v, (int, np.integer)) else list(v)
    if len(vals) != nd or not all(isinstance(u, (int, np.integer)) for u in vals):
        raise ValueError(
            f"{name} must be an integer or {nd} integers (one per spatial dim), got {v!r}"
        )
    if any(u < minimum for u in vals):
        raise ValueError(f"{name} entries must be >= {minimum}, got {v!r}")
    return tuple(int(u) for u in vals)


def _pairs(v: Any, nd: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Padding as NNlib's ``check_spdf`` reads it: one int, ``nd`` ints (symmetric) or ``2*nd``
    ints ``(lo1, hi1, lo2, hi2, ...)`` (asymmetric; Knet's ``expand`` passes tuples through)."""
    if not isinstance(v, (int, np.integer)) and len(list(v)) == 2 * nd:
        flat = _expand(v, 2 * nd, name, 0)
        return tuple((flat[2 * i], flat[2 * i + 1]) for i in range(nd))
    return tuple((p, p) for p in _expand(v, nd, name, 0))


def _check_spatial(t: torch.Tensor, op: str, name: str = "x") -> int:
    if not 3 <= t.ndim <= 5:
        raise ValueError(
            f"{op}: {name} must have 3 to 5 dimensions (Julia size (X..., C, N), 1-3 spatial), "
            f"got shape {tuple(t.shape)}"
        )
    return t.ndim - 2


def _jl_bcast(t: torch.Tensor, nd: int, name: str) -> torch.Tensor:
    """Julia broadcasting: missing trailing dimensions have size 1."""
    if t.ndim > nd:
        raise ValueError(f"{name} has {t.ndim} dimensions, more than the input's {nd}")
    return t.reshape(tuple(t.shape) + (1,) * (nd - t.ndim))


def _pad_nc(t: torch.Tensor, lohi: Sequence[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    """Pad the spatial dims of a torch ``(N, C, S...)`` tensor; ``lohi`` in spatial order."""
    pads: list[int] = []
    for lo, hi in reversed(list(lohi)):
        pads += [lo, hi]
    if not any(pads):
        return t
    return F.pad(t, pads, mode="constant", value=value)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


# ---------------------------------------------------------------------------------------------
# Convolution


def _conv_nc(
    wt: torch.Tensor,
    xt: torch.Tensor,
    *,
    padding: tuple[tuple[int, int], ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    flip: bool,
    groups: int,
    op: str,
) -> torch.Tensor:
    """Julia-indexed w, x tensors -> Julia-indexed y; flip=True is true convolution."""
    d = xt.ndim - 2
    for i in range(d):
        ext = (wt.shape[i] - 1) * dilation[i] + 1
        if xt.shape[i] + sum(padding[i]) < ext:
            raise ValueError(
                f"{op}: spatial dim {i + 1}: padded input {xt.shape[i]} + {padding[i]} is "
                f"shorter than the dilated kernel extent {ext} (x shape {tuple(xt.shape)}, "
                f"w shape {tuple(wt.shape)})"
            )
    wn = _to_nc(wt)
    if flip:
        wn = torch.flip(wn, dims=list(range(2, d + 2)))
    xn = _pad_nc(_to_nc(xt), padding)
    y = _CONV[d](xn, wn, stride=stride, dilation=dilation, groups=groups)
    return _from_nc(y)


def conv4(
    w: Array,
    x: Array,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: int = 0,
    alpha: float = 1,
    group: int = 1,
) -> Array:
    """Knet ``conv4``: ``w (W..., Cin, Cout)``, ``x (X..., Cin, N)`` -> ``(Y..., Cout, N)``.

    ``mode=0`` (default) true convolution, ``mode=1`` cross-correlation.

    >>> conv4(np.arange(1.0, 4).reshape(3, 1, 1), np.arange(1.0, 8).reshape(7, 1, 1))[:, 0, 0]
    array([10., 16., 22., 28., 34.])
    """
    as_torch = isinstance(x, torch.Tensor)
    wt, xt = _t(w, "w"), _t(x, "x")
    d = _check_spatial(xt, "conv4")
    if wt.ndim != xt.ndim:
        raise ValueError(
            f"conv4: w shape {tuple(wt.shape)} and x shape {tuple(xt.shape)} differ in rank"
        )
    if group != 1:
        raise ValueError(f"conv4: group must be 1 (Knet asserts it on the CPU), got {group}")
    if mode not in (0, 1):
        raise ValueError(
            f"conv4: mode must be 0 (convolution) or 1 (cross-correlation), got {mode!r}"
        )
    if wt.shape[-2] != xt.shape[-2]:
        raise ValueError(
            f"conv4: w has {wt.shape[-2]} input channels but x has {xt.shape[-2]} "
            f"(w shape {tuple(wt.shape)}, x shape {tuple(xt.shape)})"
        )
    y = _conv_nc(
        wt,
        xt,
        padding=_pairs(padding, d),
        stride=_expand(stride, d, "stride", 1),
        dilation=_expand(dilation, d, "dilation", 1),
        flip=(mode == 0),
        groups=1,
        op="conv4",
    )
    if alpha != 1:
        y = y * alpha
    return _ret(y, as_torch)


def deconv4(
    w: Array,
    x: Array,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: int = 0,
    alpha: float = 1,
    group: int = 1,
) -> Array:
    """Knet ``deconv4``: ``w (W..., Cy, Cx)``, ``x (X..., Cx, N)`` -> ``(Y..., Cy, N)``.

    ``Yi = (Xi-1)*stride + (Wi-1)*dilation + 1 - 2*padding``; the transpose of ``conv4`` with
    the same ``mode`` (0 flips the kernel).
    """
    as_torch = isinstance(x, torch.Tensor)
    wt, xt = _t(w, "w"), _t(x, "x")
    d = _check_spatial(xt, "deconv4")
    if wt.ndim != xt.ndim:
        raise ValueError(
            f"deconv4: w shape {tuple(wt.shape)} and x shape {tuple(xt.shape)} differ in rank"
        )
    if group != 1:
        raise ValueError(f"deconv4: group must be 1 (Knet asserts it on the CPU), got {group}")
    if mode not in (0, 1):
        raise ValueError(f"deconv4: mode must be 0 or 1, got {mode!r}")
    if wt.shape[-1] != xt.shape[-2]:
        raise ValueError(
            f"deconv4: w (W..., Cy, Cx) has Cx={wt.shape[-1]} but x has {xt.shape[-2]} channels "
            f"(w shape {tuple(wt.shape)}, x shape {tuple(xt.shape)})"
        )
    pad = _expand(padding, d, "padding", 0)
    st = _expand(stride, d, "stride", 1)
    dil = _expand(dilation, d, "dilation", 1)
    full = [(xt.shape[i] - 1) * st[i] + (wt.shape[i] - 1) * dil[i] + 1 for i in range(d)]
    for i in range(d):
        if full[i] - 2 * pad[i] < 1:
            raise ValueError(
                f"deconv4: spatial dim {i + 1}: output size {full[i]} - 2*{pad[i]} < 1 "
                f"(x shape {tuple(xt.shape)}, w shape {tuple(wt.shape)})"
            )
    # torch conv_transpose weight is (in=Cx, out=Cy, W...): the same permute as a conv kernel.
    wn = _to_nc(wt)
    if mode == 0:
        wn = torch.flip(wn, dims=list(range(2, d + 2)))
    yn = _CONVT[d](_to_nc(xt), wn, stride=st, dilation=dil)
    assert list(yn.shape[2:]) == full
    crop = tuple(slice(p, n - p) for p, n in zip(pad, full, strict=True))
    yn = yn[(slice(None), slice(None), *crop)]
    y = _from_nc(yn)
    if alpha != 1:
        y = y * alpha
    return _ret(y, as_torch)


# ---------------------------------------------------------------------------------------------
# Pooling


def _pool_nc(
    xt: torch.Tensor,
    window: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    stride: tuple[int, ...],
    is_max: bool,
    op: str,
) -> torch.Tensor:
    d = xt.ndim - 2
    for i in range(d):
        if xt.shape[i] + sum(padding[i]) < window[i]:
            raise ValueError(
                f"{op}: spatial dim {i + 1}: padded input {xt.shape[i]} + {padding[i]} is "
                f"shorter than the window {window[i]} (x shape {tuple(xt.shape)})"
            )
    xn = _to_nc(xt)
    if is_max:
        # NNlib: start at -floatmax, replace only when strictly greater: NaN and -Inf never win
        # (docs/knet.md#pool-nan).
        lowest = torch.full_like(xn, -FLOATMAX)
        xn = torch.where(torch.isnan(xn) | (xn == -math.inf), lowest, xn)
        xn = _pad_nc(xn, padding, value=-FLOATMAX)
    else:
        xn = _pad_nc(xn, padding, value=0.0)
    for i in range(d):
        size = xn.shape[2 + i]
        xn = xn.unfold(2 + i, window[i], min(stride[i], size))
    wdims = tuple(range(2 + d, 2 + 2 * d))
    if is_max:
        y = torch.amax(xn, dim=wdims)
    else:
        y = torch.sum(xn, dim=wdims) / math.prod(window)
    return _from_nc(y)


def pool(
    x: Array,
    *,
    window: Any = 2,
    padding: Any = 0,
    stride: Any = None,
    mode: int = 0,
    maxpoolingNanOpt: int = 1,
    alpha: float = 1,
) -> Array:
    """Knet (Ops20) ``pool`` on the CPU: ``x (X..., C, N)`` -> ``(Y..., C, N)``.

    ``Yi = 1 + (Xi + 2p - window) // stride``; modes 0/3 max, 1 mean counting padding, 2 runs as
    1 (Knet's CPU behaviour).
    """
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    d = _check_spatial(xt, "pool")
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"pool: mode must be 0, 1, 2 or 3, got {mode!r}")
    if maxpoolingNanOpt not in (0, 1):
        raise ValueError(f"pool: maxpoolingNanOpt must be 0 or 1, got {maxpoolingNanOpt!r}")
    win = _expand(window, d, "window", 1)
    st = win if stride is None else _expand(stride, d, "stride", 1)
    y = _pool_nc(xt, win, _pairs(padding, d), st, is_max=mode in (0, 3), op="pool")
    if alpha != 1:
        y = y * alpha
    return _ret(y, as_torch)


def ops21_pool(
    x: Array,
    *,
    op: str = "maximum",
    window: Any = 2,
    padding: Any = 0,
    stride: Any = None,
    alpha: float = 1,
) -> Array:
    """Knet ``Ops21.pool``: ``op="maximum"`` or ``"mean"``; the window is cut to ``Xi + 2p``."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    d = _check_spatial(xt, "ops21_pool")
    if op not in ("maximum", "mean"):
        raise ValueError(f"ops21_pool: op must be 'maximum' or 'mean', got {op!r}")
    win = _expand(window, d, "window", 1)
    st = win if stride is None else _expand(stride, d, "stride", 1)
    pad = _expand(padding, d, "padding", 0)
    win = tuple(min(win[i], xt.shape[i] + 2 * pad[i]) for i in range(d))
    y = _pool_nc(xt, win, tuple((p, p) for p in pad), st, is_max=(op == "maximum"), op="ops21_pool")
    if alpha != 1:
        y = y * alpha
    return _ret(y, as_torch)


# ---------------------------------------------------------------------------------------------
# Reshapes, dense, linear, concatenation, padding


def mat(x: Array, dims: int | None = None) -> Array:
    """Knet ``mat``: join the first ``dims`` dims (default ``ndims-1``) in column-major order."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    nd = xt.ndim
    dims = nd - 1 if dims is None else dims
    if not 0 <= dims <= nd:
        raise ValueError(f"mat: dims must be in 0..{nd}, got {dims}")
    rows = math.prod(xt.shape[:dims]) if dims > 0 else 1
    # Julia column-major reshape == C-order reshape of the reversed-axes view.
    flat = xt.permute(*reversed(range(nd))).reshape(-1)
    cols = flat.numel() // rows if rows else 0
    y = flat.reshape(cols, rows).T
    return _ret(y, as_torch)


def dense(w: Array, x: Array, b: Array | None = None) -> Array:
    """``w * mat(x) .+ b`` with ``w (out, in)``, ``b (out,)`` (or ``(out, 1)``)."""
    as_torch = isinstance(x, torch.Tensor)
    wt = _t(w, "w")
    xm = _t(mat(_t(x, "x")), "x")
    if wt.ndim != 2 or wt.shape[1] != xm.shape[0]:
        raise ValueError(
            f"dense: w shape {tuple(wt.shape)} does not take mat(x) of shape {tuple(xm.shape)}"
        )
    y = wt @ xm
    if b is not None:
        y = y + _jl_bcast(_t(b, "b"), 2, "b")
    return _ret(y, as_torch)


def linear(w: Array, x: Array, dims: int = 1) -> Array:
    """Knet ``Ops21.linear``: ``w (A..., B...)`` times ``x (B..., C...)`` -> ``(A..., C...)``."""
    as_torch = isinstance(x, torch.Tensor)
    wt, xt = _t(w, "w"), _t(x, "x")
    if wt.ndim <= dims:
        raise ValueError(f"linear: ndims(w)={wt.ndim} must be > dims={dims}")
    xs = tuple(xt.shape) + (1,) * max(0, dims - xt.ndim)
    if xs[:dims] != tuple(wt.shape[-dims:]):
        raise ValueError(f"linear: w={tuple(wt.shape)} x={tuple(xt.shape)} dims={dims}")
    a, b = tuple(wt.shape[:-dims]), tuple(wt.shape[-dims:])
    w2 = _t(mat(wt, dims=len(a)), "w")
    x2 = _t(mat(xt.reshape(xs), dims=dims), "x")
    y2 = w2 @ x2
    assert y2.shape[0] == math.prod(a) and math.prod(b) == x2.shape[0]
    out = a + xs[dims:]
    # column-major reshape back
    y = y2.T.reshape(-1).reshape(tuple(reversed(out))).permute(*reversed(range(len(out))))
    return _ret(y, as_torch)


def cat(*xs: Array, dims: int) -> Array:
    """Julia ``cat(xs...; dims)`` with 1-based ``dims``."""
    as_torch = any(isinstance(x, torch.Tensor) for x in xs)
    ts = [_t(x, "x") for x in xs]
    nd = max(t.ndim for t in ts)
    if not 1 <= dims:
        raise ValueError(f"cat: dims must be >= 1 (1-based), got {dims}")
    nd = max(nd, dims)
    ts = [_jl_bcast(t, nd, "x") for t in ts]
    return _ret(torch.cat(ts, dim=dims - 1), as_torch)


def concat_channels(*xs: Array) -> Array:
    """Channel concatenation of ``(X..., C, N)`` arrays: ``cat(xs...; dims=ndims-1)``."""
    nd = np.ndim(xs[0]) if not isinstance(xs[0], torch.Tensor) else xs[0].ndim
    return cat(*xs, dims=nd - 1)


def _padtuple(p: Any, nd: int) -> tuple[tuple[int, int], ...]:
    """Knet ``padtuple``: int / ints per dim / (lo, hi) per dim -> ((lo, hi), ...)."""
    if isinstance(p, (int, np.integer)):
        pairs = [(int(p), int(p))] * nd
    else:
        items = list(p)
        if len(items) != nd:
            raise ValueError(f"padding {p!r} must have {nd} entries (one per spatial dim)")
        pairs = []
        for it in items:
            if isinstance(it, (int, np.integer)):
                pairs.append((int(it), int(it)))
            else:
                lohi = tuple(it)
                if len(lohi) != 2 or not all(isinstance(u, (int, np.integer)) for u in lohi):
                    raise ValueError(f"padding entry {it!r} must be an int or a (lo, hi) pair")
                pairs.append((int(lohi[0]), int(lohi[1])))
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"padding must not be negative, got {p!r}")
    return tuple(pairs)


def _symmetric(p: Any) -> bool:
    if isinstance(p, (int, np.integer)):
        return True
    return all(isinstance(u, (int, np.integer)) or tuple(u)[0] == tuple(u)[1] for u in p)


def zeropad(x: Array, p: Any) -> Array:
    """Knet ``Ops21.zeropad``: zeros around Julia dims ``1..n-2``; ``((lo, hi), ...)`` allowed."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    _check_spatial(xt, "zeropad")
    y = _from_nc(_pad_nc(_to_nc(xt), _padtuple(p, xt.ndim - 2)))
    return _ret(y, as_torch)


# ---------------------------------------------------------------------------------------------
# Batch normalisation


@dataclass
class BNMoments:
    """Knet's ``BNMoments``: running ``mean``/``var`` (any shape with C entries) and momentum."""

    momentum: float = 0.1
    mean: Any = None
    var: Any = None


def bnmoments(*, momentum: float = 0.1, mean: Any = None, var: Any = None) -> BNMoments:
    """Knet ``bnmoments``; ``None`` statistics become zeros/ones at the first call."""
    return BNMoments(momentum=momentum, mean=mean, var=var)


def bnparams(channels: int) -> np.ndarray:
    """Knet ``bnparams(C)``: ONE float64 vector ``[ones(C) (scale); zeros(C) (bias)]``."""
    return np.concatenate([np.ones(channels), np.zeros(channels)])


def _bn_stat_shape(nd: int, c: int) -> tuple[int, ...]:
    # _wsize: (1,...,C,1) for 4-D/5-D; batchnorm2 pads (C, N) to (1, 1, C, N) internally
    return (c, 1) if nd == 2 else (1,) * (nd - 2) + (c, 1)


def batchnorm(
    x: Array,
    moments: BNMoments | None = None,
    params: Array | None = None,
    *,
    training: bool = False,
    eps: float = 1e-5,
) -> Array:
    """Knet (Ops20) ``batchnorm``; ``params = [scale; bias]``; per channel (2-D: per feature)."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    nd = xt.ndim
    if nd not in (2, 4, 5):
        raise ValueError(
            f"batchnorm: x must have 2, 4 or 5 dimensions (Knet: 'Unsupported input dimension'), "
            f"got shape {tuple(xt.shape)}"
        )
    c = xt.shape[-2] if nd > 2 else xt.shape[0]
    sshape = _bn_stat_shape(nd, c)
    reduce = (1,) if nd == 2 else tuple(range(nd - 2)) + (nd - 1,)

    def stat(v: Any, fill: float, name: str) -> torch.Tensor:
        if v is None:
            return torch.full(sshape, fill, dtype=F64)
        vt = _t(v, name)
        if vt.numel() != c:
            raise ValueError(f"batchnorm: {name} has {vt.numel()} entries, expected {c} channels")
        return vt.reshape(sshape)

    g = b = None
    if params is not None:
        pt = _t(params, "params").reshape(-1)
        if pt.numel() != 2 * c:
            raise ValueError(
                f"batchnorm: params must hold 2*C = {2 * c} values [scale; bias], got {pt.numel()}"
            )
        g, b = pt[:c].reshape(sshape), pt[c:].reshape(sshape)

    if training:
        mu = xt.mean(dim=reduce, keepdim=True)
        sigma2 = ((xt - mu) ** 2).mean(dim=reduce, keepdim=True)  # corrected=false
        if moments is not None:
            m = moments.momentum
            old_mean = stat(moments.mean, 0.0, "moments.mean")
            old_var = stat(moments.var, 1.0, "moments.var")
            moments.mean = (m * mu.detach() + (1 - m) * old_mean).numpy().reshape(sshape)
            moments.var = (m * sigma2.detach() + (1 - m) * old_var).numpy().reshape(sshape)
        mean_, ivar = mu, 1 / torch.sqrt(sigma2 + eps)
    else:
        if moments is None:
            raise ValueError("batchnorm: moments must be provided in test mode (Knet asserts this)")
        mean_ = stat(moments.mean, 0.0, "moments.mean")
        ivar = 1 / torch.sqrt(stat(moments.var, 1.0, "moments.var") + eps)
    if g is not None and b is not None:
        y = g * (xt - mean_) * ivar + b
    else:
        y = (xt - mean_) * ivar
    return _ret(y, as_torch)


def ops21_batchnorm(
    x: Array,
    mean_estimate: Array,
    var_estimate: Array,
    bias: Array,
    scale: Array,
    *,
    epsilon: float = 1e-5,
    update: float = 0.0,
    use_estimates: bool = True,
) -> Array:
    """Knet ``Ops21.batchnorm(x, mean, var, bias, scale)``: BIAS BEFORE SCALE.

    ``((x .- mean) ./ sqrt.(epsilon .+ var)) .* scale .+ bias``. With ``update > 0`` the given
    NumPy ``mean_estimate``/``var_estimate`` are updated in place, as Knet does.
    """
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    nd = xt.ndim
    m = _jl_bcast(_t(mean_estimate, "mean_estimate"), nd, "mean_estimate")
    v = _jl_bcast(_t(var_estimate, "var_estimate"), nd, "var_estimate")
    bi = _jl_bcast(_t(bias, "bias"), nd, "bias")
    sc = _jl_bcast(_t(scale, "scale"), nd, "scale")
    if update > 0 or not use_estimates:
        dims = tuple(i for i in range(nd) if m.shape[i] == 1)
        xmean = xt.mean(dim=dims, keepdim=True)
        xvar = ((xt - xmean) ** 2).mean(dim=dims, keepdim=True)
    if update > 0:
        for target, new, name in ((mean_estimate, xmean, "mean"), (var_estimate, xvar, "var")):
            if not isinstance(target, np.ndarray):
                raise ValueError(f"ops21_batchnorm: update > 0 needs a NumPy {name}_estimate")
            old = _jl_bcast(_t(target), nd, name)
            target[...] = (new.detach() * update + old * (1 - update)).numpy().reshape(target.shape)
    if use_estimates:
        y = ((xt - m) / torch.sqrt(epsilon + v)) * sc + bi
    else:
        y = ((xt - xmean) / torch.sqrt(epsilon + xvar)) * sc + bi
    return _ret(y, as_torch)


# ---------------------------------------------------------------------------------------------
# Activations (elementwise on Julia-indexed arrays)


def _elementwise(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Array], Array]:
    def g(x: Array) -> Array:
        return _ret(f(_t(x, "x")), isinstance(x, torch.Tensor))

    g.__name__ = f.__name__
    g.__doc__ = f.__doc__
    return g


def _relu(x: torch.Tensor) -> torch.Tensor:
    """Ops20 ``relu(x) = max(x, 0)`` (Julia's ``max`` propagates NaN)."""
    return torch.where(torch.isnan(x), x, torch.clamp(x, min=0.0))


def _sigm(x: torch.Tensor) -> torch.Tensor:
    """``x >= 0 ? 1/(1+exp(-x)) : exp(x)/(1+exp(x))``."""
    pos = 1 / (1 + torch.exp(-torch.where(x >= 0, x, torch.zeros_like(x))))
    z = torch.exp(torch.where(x >= 0, torch.zeros_like(x), x))
    return torch.where(x >= 0, pos, z / (1 + z))


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` (Base.tanh, broadcast)."""
    return torch.tanh(x)


def _elu(x: torch.Tensor) -> torch.Tensor:
    """``x >= 0 ? x : exp(x) - 1``."""
    return torch.where(x >= 0, x, torch.exp(torch.clamp(x, max=0.0)) - 1)


def _selu(x: torch.Tensor) -> torch.Tensor:
    """``x >= 0 ? λ01*x : λα01*(exp(x) - 1)`` with Knet's constants."""
    neg = LAMBDA_ALPHA01 * (torch.exp(torch.clamp(x, max=0.0)) - 1)
    return torch.where(x >= 0, LAMBDA01 * x, neg)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact gelu ``x * (1 + erf(x / sqrt(2))) / 2``."""
    return x * (1 + torch.special.erf(x / math.sqrt(2))) / 2


def _swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigm(x)``."""
    return x * _sigm(x)


def _hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    """``x <= -3 ? 0 : x >= 3 ? 1 : (x + 3) / 6``."""
    mid = (x + 3) / 6
    return torch.where(x <= -3, torch.zeros_like(x), torch.where(x >= 3, torch.ones_like(x), mid))


def _hardswish(x: torch.Tensor) -> torch.Tensor:
    """``x <= -3 ? 0 : x >= 3 ? x : x * (x + 3) / 6``."""
    mid = x * (x + 3) / 6
    return torch.where(x <= -3, torch.zeros_like(x), torch.where(x >= 3, x, mid))


relu = _elementwise(_relu)
sigm = _elementwise(_sigm)
tanh = _elementwise(_tanh)
elu = _elementwise(_elu)
selu = _elementwise(_selu)
gelu = _elementwise(_gelu)
swish = _elementwise(_swish)
hardsigmoid = _elementwise(_hardsigmoid)
hardswish = _elementwise(_hardswish)


def ops21_relu(
    x: Array, *, max_value: float = math.inf, negative_slope: float = 0, threshold: float = 0
) -> Array:
    """Knet ``Ops21.relu``: ``x >= max_value ? max_value : x >= threshold ? x :
    negative_slope == 0 ? 0 : negative_slope * (x - threshold)``."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    if negative_slope == 0:
        low = torch.zeros_like(xt)
    else:
        low = negative_slope * (xt - threshold)
    y = torch.where(
        xt >= max_value,
        torch.full_like(xt, float(max_value)),
        torch.where(xt >= threshold, xt, low),
    )
    return _ret(y, as_torch)


def leaky_relu(x: Array, alpha: float = 0.2) -> Array:
    """Knet's DCGAN example: ``max.(0, x) .+ min.(0, x) .* alpha`` (Knet has no built-in one)."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    y = torch.clamp(xt, min=0.0) + torch.clamp(xt, max=0.0) * alpha
    return _ret(y, as_torch)


def _softmax_dims(t: torch.Tensor, dims: Any) -> tuple[int, ...]:
    if dims is None:
        return tuple(range(t.ndim))
    ds = [dims] if isinstance(dims, (int, np.integer)) else list(dims)
    if not all(1 <= int(d) for d in ds):
        raise ValueError(f"dims are 1-based Julia dimensions, got {dims!r}")
    # a Julia dim beyond ndims has size 1: normalising over it is elementwise
    return tuple(int(d) - 1 for d in ds if int(d) <= t.ndim)


def softmax(x: Array, dims: Any = None) -> Array:
    """Knet ``softmax(x; dims=:)``; ``dims=None`` is ``:`` (whole array), else 1-based dims."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    ds = _softmax_dims(xt, dims)
    if not ds:
        return _ret(torch.ones_like(xt), as_torch)
    z = xt - torch.amax(xt, dim=ds, keepdim=True)
    e = torch.exp(z)
    return _ret(e / torch.sum(e, dim=ds, keepdim=True), as_torch)


def logsoftmax(x: Array, dims: Any = None) -> Array:
    """Knet ``logsoftmax(x; dims=:)``: ``x .- max`` then ``.- log(sum(exp))``."""
    as_torch = isinstance(x, torch.Tensor)
    xt = _t(x, "x")
    ds = _softmax_dims(xt, dims)
    if not ds:
        return _ret(torch.zeros_like(xt), as_torch)
    z = xt - torch.amax(xt, dim=ds, keepdim=True)
    return _ret(z - torch.log(torch.sum(torch.exp(z), dim=ds, keepdim=True)), as_torch)


# ---------------------------------------------------------------------------------------------
# Ops21 convolution and embeddings


def ops21_conv(
    w: Array,
    x: Array,
    *,
    activation: Callable[[Array], Array] | None = None,
    normalization: Callable[[Array], Array] | None = None,
    alpha: float = 1,
    beta: float = 0,
    bias: Array | None = None,
    channelmajor: bool = False,
    crosscorrelation: bool = True,
    dilation: Any = 1,
    groups: int = 1,
    padding: Any = 0,
    stride: Any = 1,
    z: Array | None = None,
) -> Array:
    """Knet ``Ops21.conv``: ``activation(normalization(alpha*conv(w,x) + beta*z .+ bias))``.

    Default cross-correlation; ``w (W..., Cx÷groups, Cy)``; bias ``(1..., Cy, 1)``.
    """
    as_torch = isinstance(x, torch.Tensor)
    wt, xt = _t(w, "w"), _t(x, "x")
    zt = None if z is None else _t(z, "z")
    bt = None if bias is None else _t(bias, "bias")
    if channelmajor:
        if xt.ndim != 4:
            raise ValueError("ops21_conv: channelmajor is implemented for 4-D tensors only")
        wt, xt = wt.permute(1, 2, 0, 3), xt.permute(1, 2, 0, 3)
        zt = None if zt is None else zt.permute(1, 2, 0, 3)
        bt = None if bt is None else _jl_bcast(bt, 4, "bias").permute(1, 2, 0, 3)
    d = _check_spatial(xt, "ops21_conv")
    if wt.ndim != xt.ndim:
        raise ValueError(
            f"ops21_conv: w shape {tuple(wt.shape)} and x shape {tuple(xt.shape)} differ in rank"
        )
    if groups < 1 or xt.shape[-2] != wt.shape[-2] * groups or wt.shape[-1] % groups:
        raise ValueError(
            f"ops21_conv: x has {xt.shape[-2]} channels, w {tuple(wt.shape)} with groups={groups} "
            f"needs Cx = {wt.shape[-2]}*groups and Cy divisible by groups"
        )
    y = _conv_nc(
        wt,
        xt,
        padding=_pairs(padding, d),
        stride=_expand(stride, d, "stride", 1),
        dilation=_expand(dilation, d, "dilation", 1),
        flip=not crosscorrelation,
        groups=groups,
        op="ops21_conv",
    )
    if alpha != 1:
        y = alpha * y
    if beta != 0 and zt is not None:
        y = y + beta * zt
    if bt is not None:
        y = y + _jl_bcast(bt, y.ndim, "bias")
    # normalization and activation see the (X..., C, N) layout; channel-major goes back last
    out = y
    if normalization is not None:
        out = _t(normalization(out if as_torch else _ret(out, False)), "normalization output")
    if activation is not None:
        out = _t(activation(out if as_torch else _ret(out, False)), "activation output")
    if channelmajor:
        out = out.permute(2, 0, 1, 3)
    return _ret(out, as_torch)


def embed(w: Array, x: Any) -> Array:
    """Knet code's ``w[:, x]``: ``w (dim, vocab)``, ``x`` 1-based integer indices.

    The result is ``(dim, size(x)...)``. An index outside ``1..vocab`` raises ``IndexError``
    naming it (Julia raises a ``BoundsError``).
    """
    as_torch = isinstance(w, torch.Tensor)
    wt = _t(w, "w")
    if wt.ndim != 2:
        raise ValueError(f"embed: w must be a (dim, vocab) matrix, got shape {tuple(wt.shape)}")
    xi = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if xi.dtype.kind not in "iu":
        raise ValueError(f"embed: indices must be integers (1-based, Julia), got dtype {xi.dtype}")
    vocab = wt.shape[1]
    bad = (xi < 1) | (xi > vocab)
    if bad.any():
        pos = tuple(int(i) + 1 for i in np.argwhere(bad)[0])
        raise IndexError(
            f"embed: index {int(xi[tuple(p - 1 for p in pos)])} at Julia position {pos} is "
            f"outside 1..{vocab} (w has {vocab} columns)"
        )
    idx = torch.as_tensor(xi.astype(np.int64) - 1)
    y = wt[:, idx.reshape(-1)].reshape((wt.shape[0], *xi.shape))
    return _ret(y, as_torch)


# ---------------------------------------------------------------------------------------------
# Layers21


class Conv:
    """Layers21 ``Conv(w; bias=None, ...)``: cross-correlation by default, no bias unless given."""

    def __init__(
        self,
        w: Array,
        *,
        bias: Array | None = None,
        crosscorrelation: bool = True,
        channelmajor: bool = False,
        activation: Callable[[Array], Array] | None = None,
        normalization: Callable[[Array], Array] | None = None,
        padding: Any = 0,
        stride: Any = 1,
        dilation: Any = 1,
        groups: int = 1,
        alpha: float = 1,
        beta: float = 0,
    ) -> None:
        self.w, self.bias = w, bias
        self.kw = dict(
            crosscorrelation=crosscorrelation,
            channelmajor=channelmajor,
            activation=activation,
            normalization=normalization,
            stride=stride,
            dilation=dilation,
            groups=groups,
            alpha=alpha,
            beta=beta,
        )
        self.padding = padding

    def __call__(self, x: Array, z: Array | None = None) -> Array:
        padding = self.padding
        if not _symmetric(padding):
            x = zeropad(x, padding)
            padding = 0
        elif not isinstance(padding, (int, np.integer)):
            padding = [u if isinstance(u, (int, np.integer)) else tuple(u)[0] for u in padding]
        return ops21_conv(self.w, x, bias=self.bias, z=z, padding=padding, **self.kw)


class BatchNorm:
    """Layers21 ``BatchNorm`` at inference (``use_estimates`` true, no update)."""

    def __init__(
        self,
        *,
        dims: Any = None,
        mean: Array | None = None,
        var: Array | None = None,
        bias: Array | None = None,
        scale: Array | None = None,
        epsilon: float = 1e-5,
    ) -> None:
        self.dims, self.mean, self.var, self.bias, self.scale = dims, mean, var, bias, scale
        self.epsilon = epsilon

    def __call__(self, x: Array) -> Array:
        shape = tuple(x.shape)
        n = len(shape)
        per_channel = (*range(1, n - 1), n)
        d = self.dims
        if d is None or tuple(np.atleast_1d(d)) == per_channel:
            bsize = tuple(shape[i] if i == n - 2 else 1 for i in range(n))
        elif tuple(np.atleast_1d(d)) == tuple(range(2, n + 1)):
            bsize = tuple(shape[i] if i == 0 else 1 for i in range(n))
        elif tuple(np.atleast_1d(d)) == (n,):
            bsize = tuple(1 if i == n - 1 else shape[i] for i in range(n))
        else:
            raise ValueError(f"BatchNorm: x={shape} dims={d} not supported (as in Knet)")

        def get(v: Any, fill: float, name: str) -> torch.Tensor:
            if v is None:
                return torch.full(bsize, fill, dtype=F64)
            t = _t(v, name)
            if tuple(t.shape) != bsize:
                raise ValueError(f"BatchNorm: {name} has shape {tuple(t.shape)}, expected {bsize}")
            return t

        m, v = get(self.mean, 0.0, "mean"), get(self.var, 1.0, "var")
        b, s = get(self.bias, 0.0, "bias"), get(self.scale, 1.0, "scale")
        return ops21_batchnorm(x, m, v, b, s, epsilon=self.epsilon)


class Linear:
    """Layers21 ``Linear(w; bias=None, activation=None)``: ``activation(linear(w, x) .+ bias)``."""

    def __init__(
        self,
        w: Array,
        *,
        bias: Array | None = None,
        activation: Callable[[Array], Array] | None = None,
    ) -> None:
        self.w, self.bias, self.activation = w, bias, activation

    def __call__(self, x: Array) -> Array:
        as_torch = isinstance(x, torch.Tensor)
        y = _t(linear(self.w, x), "y")
        if self.bias is not None:
            y = y + _jl_bcast(_t(self.bias, "bias"), y.ndim, "bias")
        out = _ret(y, as_torch)
        return out if self.activation is None else self.activation(out)


class ZeroPad:
    """Layers21 ``ZeroPad(p)``."""

    def __init__(self, padding: Any) -> None:
        self.padding = padding

    def __call__(self, x: Array) -> Array:
        return zeropad(x, self.padding)


class Add:
    """Layers21 ``Add(blocks...; activation=None)``: same input to each, sum, then activation."""

    def __init__(
        self, *blocks: Callable[[Array], Array], activation: Callable[[Array], Array] | None = None
    ) -> None:
        if not blocks:
            raise ValueError("Add needs at least one block")
        self.blocks, self.activation = blocks, activation

    def __call__(self, x: Array) -> Array:
        as_torch = isinstance(x, torch.Tensor)
        y = _t(self.blocks[0](x), "block output")
        for blk in self.blocks[1:]:
            y = y + _t(blk(x), "block output")
        out = _ret(y, as_torch)
        return out if self.activation is None else self.activation(out)


class Block:
    """Layers21 ``Block(layers...)``: apply the layers in order."""

    def __init__(self, *layers: Callable[[Array], Array]) -> None:
        self.layers = list(layers)

    def __call__(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer(x)
        return x


class Op:
    """Layers21 ``Op(f, args...; kwargs...)``: ``x -> f(x, args...; kwargs...)``."""

    def __init__(self, f: Callable[..., Array], *args: Any, **kwargs: Any) -> None:
        self.f, self.args, self.kwargs = f, args, kwargs

    def __call__(self, x: Array) -> Array:
        return self.f(x, *self.args, **self.kwargs)


class Embed:
    """Layers21 ``Embed(w)``: ``w (dim, vocab)``; called with 1-based indices."""

    def __init__(self, w: Array) -> None:
        self.w = w

    def __call__(self, x: Any) -> Array:
        return embed(self.w, x)
