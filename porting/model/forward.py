"""The Knet side of a model: run it layer by layer with `porting.knet`, Julia-indexed.

`conv4`, `pool` and `mat` run on the chosen Knet backend (Julia when available, else porting's
NumPy reference); bias additions, matrix products and activations are computed here in the
model's element type with Knet's formulas (`sigm` as Knet's numerically stable form, `elu` as
`exp(x) - 1`, `softmax` with the maximum subtracted).

>>> import numpy as np
>>> from porting.model import KnetModel, Dense
>>> m = KnetModel([Dense(np.eye(3, dtype=np.float32), activation="relu")], input_size=(3,))
>>> out = forward_knet(m, np.float32([[1, -2, 3]]).T)
>>> out[-1].ravel().tolist(), out.names
([1.0, 0.0, 3.0], ['dense1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from porting._checks import as_float_array
from porting.errors import PortingError
from porting.model.spec import Conv, Dense, KnetModel

__all__ = ["forward_knet", "KnetOutputs", "activate"]


@dataclass
class KnetOutputs:
    """Every layer's output (Julia-indexed, batch last) and which Knet backend computed them.

    Index by position or layer name: `out[-1]`, `out["conv1"]`. `extras[i]` holds, for conv
    layers, the activation's output before pooling when the activation comes first (used for
    tolerances).
    """

    names: list[str]
    outputs: list[np.ndarray]
    input: np.ndarray
    backend: str
    backend_reason: str
    extras: list[dict] = field(default_factory=list)

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.outputs[self.names.index(key)]
        return self.outputs[key]

    def __len__(self):
        return len(self.outputs)

    def __iter__(self):
        return iter(self.outputs)

    @property
    def final(self) -> np.ndarray:
        return self.outputs[-1]


def activate(name: str, x: np.ndarray, dims: int = 1) -> np.ndarray:
    """Knet's activation `name` on a Julia-indexed array, in x's dtype (a new array)."""
    t = x.dtype.type
    if name == "identity":
        return x
    if name == "relu":
        return np.maximum(x, t(0))
    if name == "tanh":
        return np.tanh(x)
    with np.errstate(over="ignore"):
        if name == "sigm":
            # Knet: x >= 0 ? 1/(1+exp(-x)) : (z = exp(x); z/(1+z))
            z = np.exp(-np.abs(x))
            return np.where(x >= 0, t(1) / (t(1) + z), z / (t(1) + z)).astype(x.dtype, copy=False)
        if name == "elu":
            return np.where(x >= 0, x, np.exp(np.minimum(x, t(0))) - t(1)).astype(
                x.dtype, copy=False
            )
        if name == "softmax":
            axis = dims - 1
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
    raise PortingError(f"unknown activation {name!r}")  # pragma: no cover - validated earlier


def _bias(b: np.ndarray, ndim: int) -> np.ndarray:
    """Conv bias `(Cout,)` -> broadcastable `(1, ..., Cout, 1)`."""
    shape = [1] * ndim
    shape[-2] = b.size
    return b.reshape(-1).reshape(shape)


def _run_layer(layer, x, backend, keep):
    from porting import knet as pknet

    used = None
    extra = {}
    if isinstance(layer, Conv):
        y = pknet.conv4(
            layer.w,
            x,
            padding=layer.padding,
            stride=layer.stride,
            dilation=layer.dilation,
            mode=layer.mode,
            alpha=layer.alpha,
            backend=backend,
        )
        used = y
        y = np.asarray(y)
        if layer.b is not None:
            y = y + _bias(layer.b, y.ndim)
        steps = ["act", "pool"] if layer.activation_before_pool else ["pool", "act"]
        for step in steps:
            if step == "pool" and layer.pool is not None:
                p = layer.pool
                y = np.asarray(
                    pknet.pool(
                        y,
                        window=p.window,
                        padding=p.padding,
                        stride=p.stride,
                        mode=p.mode,
                        alpha=p.alpha,
                        backend=backend,
                    )
                )
            elif step == "act" and layer.activation != "identity":
                y = activate(layer.activation, y)
                if keep and layer.activation_before_pool and layer.pool is not None:
                    extra["act_out"] = y
        return y, used, extra
    if isinstance(layer, Dense):
        x2 = x if x.ndim == 2 else np.asarray(pknet.mat(x, backend="reference"))
        y = layer.w @ x2
        if layer.b is not None:
            y += layer.bias_vector[:, None]
        return activate(layer.activation, y), None, extra
    kind = layer.kind
    if kind == "pool":
        y = pknet.pool(
            x,
            window=layer.window,
            padding=layer.padding,
            stride=layer.stride,
            mode=layer.mode,
            alpha=layer.alpha,
            backend=backend,
        )
        return np.asarray(y), y, extra
    if kind == "mat":
        return np.asarray(pknet.mat(x, backend="reference")), None, extra
    if kind == "dropout":
        return x, None, extra
    if kind == "activation":
        return activate(layer.function, x, layer.dims), None, extra
    raise PortingError(f"{layer.label}: unknown layer kind {kind!r}")  # pragma: no cover


def check_input(model: KnetModel, x) -> np.ndarray:
    """`x` as a Julia-indexed batch `(X1, ..., C, N)` that fits `model`, or `PortingError`."""
    x = as_float_array(x, "x", ndim=(2, 3, 4, 5))
    if x.dtype != model.dtype:
        raise PortingError(
            f"x is {x.dtype} but the model's weights are {model.dtype}; Knet needs one element "
            f"type (convert x with .astype(np.{model.dtype}))"
        )
    if model.input_size is not None and tuple(x.shape[:-1]) != model.input_size:
        if tuple(x.shape) == model.input_size:
            raise PortingError(
                f"x has size {x.shape}, one sample without the batch dimension; expected "
                f"{(*model.input_size, 'N')} (add one with x[..., None])"
            )
        raise PortingError(
            f"x has size {x.shape}; the model expects {(*model.input_size, 'N')} "
            "(Julia sizes, batch last)"
        )
    model.sizes(x.shape[:-1])  # names the first layer that does not fit
    return x


def forward_knet(
    model: KnetModel, x, backend: str = "auto", *, keep_extras: bool = False
) -> KnetOutputs:
    """Run the Knet side of `model` on `x` (Julia-indexed, `(X1, ..., C, N)`), layer by layer.

    `backend` is passed to `porting.knet` ("auto": Julia when available, else the reference).
    Returns `KnetOutputs`: every layer's output, Julia-indexed, and the backend that ran.
    """
    x = check_input(model, x)
    outputs, extras = [], []
    used = None
    y = x
    for layer in model.layers:
        y, tagged, extra = _run_layer(layer, y, backend, keep_extras)
        if tagged is not None and used is None:
            used = tagged
        outputs.append(y)
        extras.append(extra)
    if used is not None:
        name, reason = used.backend, used.backend_reason
    else:
        name, reason = "reference", "dense-only model: NumPy matrix products and activations"
    return KnetOutputs(
        names=[layer.name for layer in model.layers],
        outputs=outputs,
        input=x,
        backend=name,
        backend_reason=reason,
        extras=extras,
    )
