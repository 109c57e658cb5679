"""What every layer kind shares: the `Layer` base, activation names, argument checks.

A layer kind lives in one file under `porting.model.kinds`; this module holds only what those
files have in common, so that they never import one another, the model or its export.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from porting._checks import FLOAT_DTYPES, describe, read_only, short_repr
from porting.errors import PortingError

if TYPE_CHECKING:
    from porting.model.stages import Stage

__all__ = [
    "ACTIVATIONS",
    "Kind",
    "Layer",
    "activation_name",
    "check_probability",
    "check_real",
    "fmt_size",
    "set_link",
    "weight_array",
]

ACTIVATIONS = (
    "identity",
    "relu",
    "sigm",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "swish",
    "hardsigmoid",
    "hardswish",
    "softmax",
    "logsoftmax",
)

_ALIASES = {
    None: "identity",
    "": "identity",
    "none": "identity",
    "linear": "identity",
    "sigmoid": "sigm",
    "σ": "sigm",
    "tanh_fast": "tanh",
    "tanh_": "tanh",
    "silu": "swish",
    "hard_sigmoid": "hardsigmoid",
    "hard_swish": "hardswish",
    "log_softmax": "logsoftmax",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


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


def weight_array(a, what: str, where: str, ndim: tuple[int, ...]) -> np.ndarray:
    """`a` as a float32/float64 array with one of `ndim` dimensions, or `PortingError`."""
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


def fmt_size(size) -> str:
    """A Julia size as Julia prints it: `(3, 4)`, `(5,)`."""
    return "(" + ", ".join(map(str, size)) + (",)" if len(size) == 1 else ")")


def check_probability(p, where: str, key: str = "dropout") -> None:
    if (
        isinstance(p, bool)
        or not isinstance(p, (int, float, np.number))
        or not 0 <= p < 1  # before float(): a 5000-digit integer overflows it
        or not math.isfinite(float(p))
    ):
        raise PortingError(f"{where}: {key}={short_repr(p)}: expected a probability 0 <= p < 1")


def check_real(value, where: str, key: str) -> None:
    """A finite real number (not a boolean), or `PortingError` naming `key`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not -(2**1023) < value < 2**1023  # float() of a larger integer overflows
        or not math.isfinite(float(value))
    ):
        raise PortingError(f"{where}: {key}={short_repr(value)}: expected a finite real number")


class _Sealing(type):
    """Seals every layer once its constructor (and `__post_init__`) has run: its arrays are
    read-only copies from then on (`read_only`) and assigning a field raises `PortingError`."""

    def __call__(cls, *args, **kwargs):
        layer = super().__call__(*args, **kwargs)
        layer._seal()
        return layer


@dataclass(eq=False)
class Layer(metaclass=_Sealing):
    """Base of every layer: a `kind` and a `name` (given or assigned by `KnetModel`).

    A layer is a value once built: assigning any field afterwards (`conv.mode = 1`) raises
    `PortingError` (its derived parts, such as a conv's geometry, and every model planned
    with it, would otherwise keep the old meaning), and its arrays are read-only copies
    (writing `conv.w[0] = 1` raises NumPy's read-only error; writing into the array you passed
    in does not reach the layer). A changed layer is a new one: `dataclasses.replace(conv,
    mode=1)`, in a new `KnetModel`.

    A kind says, as class attributes, how it sits in a chain (`transparent`: sizes and links
    pass through it; `needs_spatial`: its input must be `(X1, ..., C)`; `flattens`: its output
    is `(features,)`), and, as `stages()`, what Knet computes, in order.
    """

    kind: ClassVar[str] = "layer"
    transparent: ClassVar[bool] = False
    needs_spatial: ClassVar[bool] = False
    flattens: ClassVar[bool] = False
    # How the plan tracks a `mat`'s input for Keras' Flatten order: "keep" (passes through),
    # "reset" (a spatial output), "mat" (records its input), "dense" (consumes it).
    flat_rule: ClassVar[str] = "keep"
    # A merge (Add, Concat) reads several earlier outputs, named in its `inputs`; its
    # `output_size` and first stage take lists.
    merges: ClassVar[bool] = False
    # The layer it reads when not the one before it (set by KnetModel(inputs=...)).
    input_from: ClassVar[str | None] = None
    if TYPE_CHECKING:  # every concrete layer has a `name` field (keyword-only, default None)
        name: str | None

    def _seal(self) -> None:
        for key, value in vars(self).items():
            if isinstance(value, np.ndarray):
                object.__setattr__(self, key, read_only(value, f"{self.label}: {key}"))
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_sealed"):
            raise PortingError(
                f"{self.label}: {key} cannot be changed after the layer is built (a model "
                f"planned with it would keep the old one); build a changed layer with "
                f"dataclasses.replace(layer, {key}=...) and a new KnetModel from it"
            )
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        if self.__dict__.get("_sealed"):
            self.__setattr__(key, None)  # refused, with the same message
        object.__delattr__(self, key)

    def __setstate__(self, state: dict) -> None:
        """copy.deepcopy and pickle: the copy is sealed too (its arrays read-only again)."""
        self.__dict__.update(state)
        self._seal()

    @property
    def label(self) -> str:
        name = getattr(self, "name", None)
        return f"{self.kind} layer {name!r}" if name else f"{self.kind} layer"

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def stages(self) -> list[Stage]:  # pragma: no cover
        """Knet's computation for this layer, as ordered stages (porting.model.stages)."""
        raise NotImplementedError

    def fixed_input_size(self) -> tuple[int, ...] | None:
        """The input size the layer's weights fix when it comes first (a dense layer's)."""
        return None

    def check_follows(self, prev: Layer) -> None:
        """Checks against the previous non-transparent layer that need no input size."""

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def describe(self) -> str:
        return self.kind


def set_link(layer: Layer, key: str, value: str) -> None:
    """What a model sets on a layer it takes in (its `name` when none was given, its
    `input_from`): wiring, which no stage or plan computes from."""
    if key not in ("name", "input_from"):  # pragma: no cover - a programming error
        raise ValueError(key)
    object.__setattr__(layer, key, value)


@dataclass(frozen=True)
class Kind:
    """One row of the layer table (porting.model.kinds.KINDS): a kind's entry for every concern
    that is not a stage of its Knet computation.

    - `layer`: its class (its `stages()` give Knet forward, Keras build and magnitudes);
    - `prefix`: the name `KnetModel` gives unnamed layers (`conv` -> conv1, conv2, ...);
    - `weights(layer, step, spatial, dtype)`: its weights in Keras layout (None: it has none);
    - `from_json(d, where, param)` / `to_json(layer)`: the export schema (porting.model.export;
      `param(what)` reads params.<what> from the `.npz`, or None).
    """

    name: str
    layer: type[Layer]
    prefix: str
    from_json: Callable[..., Layer]
    to_json: Callable[[Any], dict]
    weights: Callable[..., list[np.ndarray]] | None = None
