"""A Knet-style model described in Python: layers holding Julia-indexed weights.

The layers are the ones Knet's tutorials build by hand (`Conv`, `Dense`, `pool`, `mat`,
`dropout`, activations), with Knet's exact meaning:

- `Conv(w, b; padding, stride, dilation, mode, alpha, activation, pool)` computes, as Knet's
  tutorial `Conv` does, `f.(pool(conv4(w, x; ...) .+ b))`: the bias is added, then the pool
  (if any), then the activation. `activation_before_pool=True` gives `pool(f.(conv4(w, x) .+ b))`.
  `w` is `(W1, [W2, [W3,]] Cin, Cout)`, `b` `(1, ..., 1, Cout, 1)` (or `(Cout,)`). 1-3 spatial
  dimensions, taken from `w.ndim`.
- `Dense(w, b; activation)` computes `f.(w * mat(x) .+ b)`, `w` of size `(out, in)`.
- `Pool(window=2; padding, stride, mode)`, `Mat()`, `Dropout(p)` (the identity at inference),
  `Activation(name)`.
- Activations: `relu`, `sigm`, `tanh`, `elu`, `softmax` (Knet's `softmax(x; dims=1)`, over the
  first Julia dimension: the features of a dense output), `identity`.

Sizes are Julia's `size()` of ONE sample, batch left out: `input_size=(28, 28, 1)` for MNIST.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> m = KnetModel([
...     Conv(rng.standard_normal((5, 5, 1, 4), np.float32), np.zeros((1, 1, 4, 1), np.float32),
...          activation="relu", pool=dict(window=2)),
...     Dense(rng.standard_normal((10, 576), np.float32), np.zeros(10, np.float32)),
... ], input_size=(28, 28, 1))
>>> m.output_sizes
[(12, 12, 4), (10,)]
"""

from __future__ import annotations

import math
import re
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from porting._checks import FLOAT_DTYPES, describe
from porting.errors import PortingError
from porting.geometry import ConvGeometry, PoolGeometry

__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "Layer",
    "Conv",
    "Dense",
    "Pool",
    "Mat",
    "Dropout",
    "Activation",
    "KnetModel",
    "activation_name",
]

ACTIVATIONS = ("identity", "relu", "sigm", "tanh", "elu", "softmax")
KINDS = ("conv", "dense", "pool", "mat", "dropout", "activation")

_ALIASES = {
    None: "identity",
    "": "identity",
    "none": "identity",
    "linear": "identity",
    "sigmoid": "sigm",
    "σ": "sigm",
    "tanh_fast": "tanh",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def activation_name(value, where: str) -> str:
    """Normalise an activation name (`"Knet.relu"`, `"NNlib.σ"`, `None` ...) to one of
    `ACTIVATIONS`, or raise `PortingError` naming the layer.

    >>> activation_name("Knet.sigm", "dense1"), activation_name(None, "conv1")
    ('sigm', 'identity')
    """
    if value is not None and not isinstance(value, str):
        raise PortingError(
            f"{where}: activation={value!r}: expected a name, one of {', '.join(ACTIVATIONS)}"
        )
    key = value.rsplit(".", 1)[-1].strip().lower() if isinstance(value, str) else value
    key = _ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise PortingError(
            f"{where}: unknown activation {value!r}; expected one of {', '.join(ACTIVATIONS)} "
            "(Knet names; 'sigmoid' is accepted for sigm)"
        )
    return key


def _weight(a, what: str, where: str, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001 - anything that is not an array is the user's input
        raise PortingError(
            f"{where}: {what} must be an array, got {type(a).__name__}: {e}"
        ) from None
    if arr.dtype not in FLOAT_DTYPES:
        raise PortingError(
            f"{where}: {what} is a {describe(arr)}; expected float32 or float64 "
            "(Knet's Array{Float32} or Array{Float64})"
        )
    if arr.ndim not in ndim:
        want = " or ".join(map(str, ndim))
        raise PortingError(f"{where}: {what} has shape {arr.shape}; expected {want} dimensions")
    if arr.size == 0:
        raise PortingError(f"{where}: {what} is empty (shape {arr.shape})")
    return arr


def _fmt_size(size) -> str:
    return "(" + ", ".join(map(str, size)) + (",)" if len(size) == 1 else ")")


# --------------------------------------------------------------------------- layers


@dataclass(eq=False)
class Layer:
    """Base of every layer: a `kind` and a `name` (given or assigned by `KnetModel`)."""

    kind = "layer"
    if TYPE_CHECKING:  # every concrete layer has a `name` field (keyword-only, default None)
        name: str | None

    @property
    def label(self) -> str:
        name = getattr(self, "name", None)
        return f"{self.kind} layer {name!r}" if name else f"{self.kind} layer"

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def describe(self) -> str:
        return self.kind


@dataclass(eq=False)
class Pool(Layer):
    """Knet `pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)`.

    Mode 0 (and 3) max: padded cells never win; mode 1 mean dividing by `prod(window)`
    (padding counts as zeros, as on Knet's CPU); mode 2 runs as mode 1, as Knet's CPU does.
    The number of spatial dimensions comes from the input.
    """

    window: int | tuple = 2
    _: KW_ONLY
    padding: int | tuple = 0
    stride: int | tuple | None = None
    mode: int = 0
    alpha: float = 1.0
    name: str | None = None
    kind = "pool"

    def __post_init__(self):
        lengths = {
            len(v) for v in (self.window, self.padding, self.stride) if isinstance(v, (tuple, list))
        }
        try:
            self.geometry(lengths.pop() if len(lengths) == 1 else 2)
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float, np.number)):
            raise PortingError(f"{self.label}: alpha={self.alpha!r}: expected a real number")

    def geometry(self, nd: int) -> PoolGeometry:
        return PoolGeometry.from_knet(
            nd, window=self.window, padding=self.padding, stride=self.stride, mode=self.mode
        )

    def output_size(self, size):
        if not 2 <= len(size) <= 4:
            raise PortingError(
                f"{self.label}: input of size {_fmt_size(size)} per sample; pool expects "
                "(X1, [X2, [X3,]] C): 1-3 spatial dimensions and channels"
            )
        try:
            geom = self.geometry(len(size) - 1)
            return (*geom.output_size(size[:-1]), size[-1])
        except PortingError as e:
            raise PortingError(f"{self.label} on input size {_fmt_size(size)}: {e}") from None

    def describe(self, nd: int | None = None) -> str:
        if nd is None:
            return f"pool(window={self.window}, padding={self.padding}, mode={self.mode})"
        return repr(self.geometry(nd)).replace("PoolGeometry", "pool")


def _as_pool(value, where: str) -> Pool | None:
    if value is None or isinstance(value, Pool):
        return value
    if isinstance(value, dict):
        allowed = {"window", "padding", "stride", "mode", "alpha"}
        extra = sorted(set(value) - allowed)
        if extra:
            raise PortingError(
                f"{where}: pool has unknown keys {extra}; expected some of {sorted(allowed)}"
            )
        try:
            return Pool(**value, name=None)
        except TypeError as e:
            raise PortingError(f"{where}: pool={value!r}: {e}") from None
    raise PortingError(
        f"{where}: pool={value!r}: expected None, a dict of pool keywords "
        "(window, padding, stride, mode) or a Pool"
    )


@dataclass(eq=False)
class Conv(Layer):
    """A Knet tutorial conv layer: `f.(pool(conv4(w, x; ...) .+ b))`.

    `w` `(W1, ..., Cin, Cout)` (1-3 spatial dimensions), `b` `(1, ..., 1, Cout, 1)`, `(Cout,)`
    or None; conv4 keywords as in Knet (`mode=0` is true convolution, Knet's default).
    `dropout` is the tutorial's `dropout(x, p)` on the input: the identity at inference.
    """

    w: np.ndarray
    b: np.ndarray | None = None
    _: KW_ONLY
    activation: str = "identity"  # None is accepted too (identity)
    pool: Any = None  # a Pool, a dict of pool keywords, or None; a Pool after __init__
    padding: int | tuple = 0
    stride: int | tuple = 1
    dilation: int | tuple = 1
    mode: int = 0
    alpha: float = 1.0
    dropout: float = 0.0
    activation_before_pool: bool = False
    name: str | None = None
    kind = "conv"

    def __post_init__(self):
        where = self.label
        self.w = _weight(self.w, "w", where, (3, 4, 5))
        self.nd = self.w.ndim - 2
        cout = self.w.shape[-1]
        if self.b is not None:
            self.b = _weight(self.b, "b", where, (1, 2, 3, 4, 5))
            extra = [
                n for i, n in enumerate(self.b.shape) if n != 1 and i != max(self.b.ndim - 2, 0)
            ]
            if self.b.size != cout or extra:
                raise PortingError(
                    f"{where}: b has shape {self.b.shape} but w {self.w.shape} has {cout} output "
                    f"channels; expected {(*([1] * self.nd), cout, 1)} or ({cout},)"
                )
            if self.b.dtype != self.w.dtype:
                raise PortingError(
                    f"{where}: b is {self.b.dtype} but w is {self.w.dtype}; expected one element type"
                )
        self.activation = activation_name(self.activation, where)
        self.pool = _as_pool(self.pool, where)
        try:
            self.geometry = ConvGeometry.from_knet(
                self.nd,
                padding=self.padding,
                stride=self.stride,
                dilation=self.dilation,
                mode=self.mode,
            )
        except PortingError as e:
            raise PortingError(f"{where} (w {self.w.shape}): {e}") from None
        if self.pool is not None:
            try:
                self.pool.geometry(self.nd)
            except PortingError as e:
                raise PortingError(f"{where}: pool: {e}") from None
        _check_p(self.dropout, where)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float, np.number)):
            raise PortingError(f"{where}: alpha={self.alpha!r}: expected a real number")

    @property
    def bias_vector(self) -> np.ndarray | None:
        return None if self.b is None else self.b.reshape(-1)

    @property
    def k(self) -> int:
        """Terms summed per output element: kernel volume x Cin (+1 for the bias)."""
        return int(np.prod(self.w.shape[:-1])) + (self.b is not None)

    def params(self):
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def output_size(self, size):
        where = self.label
        cin = self.w.shape[-2]
        if len(size) != self.nd + 1:
            raise PortingError(
                f"{where}: w {self.w.shape} is a {self.nd}-d kernel expecting input "
                f"(X1, ..., C) with {self.nd} spatial dimensions, but the input has size "
                f"{_fmt_size(size)} per sample"
            )
        if size[-1] != cin:
            raise PortingError(
                f"{where}: w {self.w.shape} has {cin} input channels but its input has "
                f"{size[-1]} (size {_fmt_size(size)} per sample); expected Cin == {size[-1]}"
            )
        try:
            out = (*self.geometry.output_size(size[:-1], self.w.shape[:-2]), self.w.shape[-1])
        except PortingError as e:
            raise PortingError(
                f"{where} (w {self.w.shape}) on input size {_fmt_size(size)}: {e}"
            ) from None
        if self.pool is not None:
            try:
                out = (*self.pool.geometry(self.nd).output_size(out[:-1]), out[-1])
            except PortingError as e:
                raise PortingError(
                    f"{where}: its pool on the conv output {_fmt_size(out)}: {e}"
                ) from None
        return out

    def describe(self) -> str:
        g = repr(self.geometry).replace("ConvGeometry", "conv4")
        s = f"{g}, w {self.w.shape}" + ("" if self.b is not None else ", no bias")
        if self.pool is not None:
            s += ", " + self.pool.describe(self.nd)
        if self.activation != "identity":
            s += f", {self.activation}" + (
                " before pool" if self.activation_before_pool and self.pool else ""
            )
        return s


def _check_p(p, where):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0 <= p < 1:
        raise PortingError(f"{where}: dropout={p!r}: expected a probability 0 <= p < 1")


@dataclass(eq=False)
class Dense(Layer):
    """A Knet dense layer: `f.(w * mat(x) .+ b)`, `w` of size `(out, in)`, `b` `(out,)`,
    `(out, 1)` or None. Inputs with more than two dimensions are flattened with Knet's `mat`
    (column-major: X1 fastest). `dropout` on the input is the identity at inference."""

    w: np.ndarray
    b: np.ndarray | None = None
    _: KW_ONLY
    activation: str = "identity"  # None is accepted too (identity)
    dropout: float = 0.0
    name: str | None = None
    kind = "dense"

    def __post_init__(self):
        where = self.label
        self.w = _weight(self.w, "w", where, (2,))
        n_out = self.w.shape[0]
        if self.b is not None:
            self.b = _weight(self.b, "b", where, (1, 2))
            if self.b.shape not in ((n_out,), (n_out, 1)):
                raise PortingError(
                    f"{where}: b has shape {self.b.shape} but w {self.w.shape} has {n_out} "
                    f"outputs; expected ({n_out},) or ({n_out}, 1)"
                )
            if self.b.dtype != self.w.dtype:
                raise PortingError(
                    f"{where}: b is {self.b.dtype} but w is {self.w.dtype}; expected one element type"
                )
        self.activation = activation_name(self.activation, where)
        _check_p(self.dropout, where)

    @property
    def bias_vector(self):
        return None if self.b is None else self.b.reshape(-1)

    @property
    def k(self) -> int:
        return int(self.w.shape[1]) + (self.b is not None)

    def params(self):
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def output_size(self, size):
        n_in = self.w.shape[1]
        feats = math.prod(size)
        if feats != n_in:
            how = f"{_fmt_size(size)} = {feats} features" if len(size) > 1 else f"{feats} features"
            raise PortingError(
                f"{self.label}: w {self.w.shape} expects {n_in} inputs but its input gives "
                f"{how} per sample (after mat); expected w of size ({self.w.shape[0]}, {feats})"
            )
        return (int(self.w.shape[0]),)

    def describe(self) -> str:
        s = f"dense w {self.w.shape}" + ("" if self.b is not None else ", no bias")
        return s + (f", {self.activation}" if self.activation != "identity" else "")


@dataclass(eq=False)
class Mat(Layer):
    """Knet `mat(x)`: `reshape(x, :, N)` in column-major order (X1 fastest)."""

    _: KW_ONLY
    name: str | None = None
    kind = "mat"

    def output_size(self, size):
        return (math.prod(size),)


@dataclass(eq=False)
class Dropout(Layer):
    """Knet `dropout(x, p)`: the identity at inference (kept so the structure matches)."""

    p: float = 0.0
    _: KW_ONLY
    name: str | None = None
    kind = "dropout"

    def __post_init__(self):
        _check_p(self.p, self.label)

    def output_size(self, size):
        return tuple(size)

    def describe(self):
        return f"dropout(p={self.p}) (identity at inference)"


@dataclass(eq=False)
class Activation(Layer):
    """An element-wise activation, or `softmax(x; dims)` (default `dims=1`, Julia's first
    dimension: the features of a dense output)."""

    function: str = "identity"
    _: KW_ONLY
    dims: int = 1
    name: str | None = None
    kind = "activation"

    def __post_init__(self):
        self.function = activation_name(self.function, self.label)
        if (
            isinstance(self.dims, bool)
            or not isinstance(self.dims, (int, np.integer))
            or self.dims < 1
        ):
            raise PortingError(
                f"{self.label}: dims={self.dims!r}: expected a Julia dimension >= 1 (softmax "
                "over the whole array, Knet's dims=:, mixes samples and has no Keras equivalent)"
            )

    def output_size(self, size):
        if self.function == "softmax" and self.dims > len(size):
            raise PortingError(
                f"{self.label}: softmax over dims={self.dims} but the input has size "
                f"{_fmt_size(size)} per sample; expected dims <= {len(size)} (the batch "
                "dimension cannot be normalised over)"
            )
        return tuple(size)

    def describe(self):
        return self.function + (f"(dims={self.dims})" if self.function == "softmax" else "")


# --------------------------------------------------------------------------- model


_PREFIX = {
    "conv": "conv",
    "dense": "dense",
    "pool": "pool",
    "mat": "mat",
    "dropout": "dropout",
    "activation": "act",
}


class KnetModel:
    """A chain of Knet layers (Knet's tutorial `Chain`), with Julia-indexed weights.

    `input_size` is Julia's size of one sample, batch left out (`(28, 28, 1)`); when given,
    every layer's sizes are checked now (`output_sizes`), otherwise on the first input.
    Unnamed layers get `conv1`, `pool1`, `dense1`, ... Every weight must share one dtype, which
    is the model's (`dtype=` sets it for a model without weights; default float32).
    """

    source: str | None = None  # the export prefix it was loaded from, if any

    def __init__(self, layers, input_size=None, *, name: str = "knet_model", dtype=None):
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise PortingError(
                f"layers must be a list of porting.model layers, got {type(layers).__name__}"
            )
        if not layers:
            raise PortingError("a model needs at least one layer")
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise PortingError(
                    f"layer {i + 1} is a {type(layer).__name__}; expected Conv, Dense, Pool, Mat, "
                    "Dropout or Activation from porting.model"
                )
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            if layer.name is None:
                layer.name = f"{_PREFIX[layer.kind]}{counts[layer.kind]}"
                while layer.name in seen:
                    layer.name += "_"
            if (
                not isinstance(layer.name, str)
                or not _NAME_RE.match(layer.name)
                or "__" in layer.name
            ):
                raise PortingError(
                    f"layer {i + 1} ({layer.kind}): name {layer.name!r}; expected letters, digits, "
                    "'_', '.', '-' (no '__'), starting with a letter or digit"
                )
            if layer.name in seen:
                raise PortingError(
                    f"layer {i + 1} ({layer.kind}): name {layer.name!r} is used twice"
                )
            seen.add(layer.name)
        self.layers = list(layers)
        self.name = name
        dtypes = {p.dtype for layer in self.layers for p in layer.params().values()}
        if len(dtypes) > 1:
            raise PortingError(
                f"the weights mix {', '.join(sorted(map(str, dtypes)))}; Knet needs one element "
                "type (convert with .astype)"
            )
        if dtype is not None:
            want = np.dtype(dtype)
            if want not in FLOAT_DTYPES or (dtypes and dtypes != {want}):
                raise PortingError(
                    f"dtype={dtype!r}: expected float32 or float64, matching the weights "
                    f"({', '.join(map(str, dtypes)) or 'none'})"
                )
            dtypes = {want}
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        self._check_chain()
        self.input_size = None
        self.output_sizes = None
        if input_size is not None:
            self.input_size = _as_size(input_size, "input_size")
            self.output_sizes = self.sizes(self.input_size)

    def _check_chain(self) -> None:
        """Checks that need no input size: conv -> conv channels, dense -> dense features."""
        prev = None
        for layer in self.layers:
            if (
                isinstance(layer, Conv)
                and isinstance(prev, Conv)
                and prev.w.shape[-1] != layer.w.shape[-2]
            ):
                raise PortingError(
                    f"{layer.label}: w {layer.w.shape} has {layer.w.shape[-2]} input channels but "
                    f"the previous {prev.label} outputs {prev.w.shape[-1]} (w {prev.w.shape}); "
                    f"expected Cin == {prev.w.shape[-1]}"
                )
            if (
                isinstance(layer, Dense)
                and isinstance(prev, Dense)
                and prev.w.shape[0] != layer.w.shape[1]
            ):
                raise PortingError(
                    f"{layer.label}: w {layer.w.shape} expects {layer.w.shape[1]} inputs but the "
                    f"previous {prev.label} outputs {prev.w.shape[0]} (w {prev.w.shape})"
                )
            if layer.kind in ("conv", "dense", "pool", "mat"):
                prev = layer
        # Conv after a dense output/mat has no spatial dimensions left.
        flat = False
        for layer in self.layers:
            if layer.kind in ("conv", "pool") and flat:
                raise PortingError(
                    f"{layer.label} follows a dense or mat layer, whose output is (features, N); "
                    f"expected (X1, ..., C, N) for a {layer.kind}"
                )
            if layer.kind in ("dense", "mat"):
                flat = True

    def sizes(self, input_size) -> list[tuple[int, ...]]:
        """Every layer's output size (one sample) for `input_size`; raises `PortingError` naming
        the first layer whose weights do not fit."""
        size = _as_size(input_size, "input size")
        out = []
        for layer in self.layers:
            size = layer.output_size(size)
            out.append(size)
        return out

    @property
    def n_params(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params().values())

    @property
    def nd(self) -> int | None:
        """Spatial dimensions of the input (from the first conv or pool), None for dense only."""
        if self.input_size is not None:
            return len(self.input_size) - 1 if len(self.input_size) > 1 else None
        for layer in self.layers:
            if isinstance(layer, Conv):
                return layer.nd
            if layer.kind in ("dense", "mat"):
                return None
        return None

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return self.layers[key]

    def __repr__(self):
        return (
            f"KnetModel({self.name!r}, {len(self.layers)} layers, {self.n_params} {self.dtype} "
            f"weights, input_size={self.input_size})"
        )

    def __str__(self):
        lines = [repr(self)]
        sizes = self.output_sizes or [None] * len(self.layers)
        for layer, size in zip(self.layers, sizes, strict=True):
            tail = f" -> {_fmt_size(size)}" if size else ""
            lines.append(f"  {layer.name}: {layer.describe()}{tail}")
        return "\n".join(lines)

    # loading / saving lives in porting.model.export
    @classmethod
    def load(cls, path) -> KnetModel:
        """Load a model from the `.npz` + `.json` export (`path` = prefix, .json or .npz)."""
        from porting.model.export import load_export

        return load_export(path)

    def save(self, prefix) -> tuple[str, str]:
        """Write the `.npz` + `.json` export pair, as `PortingKnet.export_model` does."""
        from porting.model.export import save_export

        return save_export(self, prefix)


def _as_size(value, what: str) -> tuple[int, ...]:
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise PortingError(
            f"{what}={value!r}: expected Julia sizes of one sample, e.g. (28, 28, 1)"
        ) from None
    if not 1 <= len(size) <= 4 or any(s < 1 for s in size):
        raise PortingError(
            f"{what}={size}: expected 1-4 positive sizes of one sample (X1, ..., C), batch left out"
        )
    return size
