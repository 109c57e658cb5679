"""What every layer kind shares: the `Layer` base, activation names, argument checks.

A layer kind lives in one file under `porting.model.kinds`; this module holds only what those
files have in common, so that they never import one another, the model or its export.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from porting._checks import FLOAT_DTYPES, describe, read_only, short_repr
from porting.activations import ACTIVATIONS, canonical
from porting.errors import PortingError

if TYPE_CHECKING:
    from porting.model.stages import Stage

__all__ = [
    "ACTIVATIONS",
    "ACT_KERAS",
    "Example",
    "FlatRule",
    "KerasLayer",
    "Kind",
    "Layer",
    "activation_name",
    "check_probability",
    "check_real",
    "fmt_size",
    "set_link",
    "weight_array",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def activation_name(value: object, where: str) -> str:
    """Normalise an activation name (`"Knet.relu"`, `"NNlib.σ"`, `None` ...) to one of
    `ACTIVATIONS` (porting.activations' table), or raise `PortingError` naming the layer.

    >>> activation_name("Knet.sigm", "dense1"), activation_name(None, "conv1")
    ('sigm', 'identity')
    """
    return canonical(value, where)


def weight_array(a: object, what: str, where: str, ndim: tuple[int, ...]) -> np.ndarray:
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


def fmt_size(size: Sequence[int]) -> str:
    """A Julia size as Julia prints it: `(3, 4)`, `(5,)`."""
    return "(" + ", ".join(map(str, size)) + (",)" if len(size) == 1 else ")")


def check_probability(p: object, where: str, key: str = "dropout") -> None:
    if (
        isinstance(p, bool)
        or not isinstance(p, (int, float, np.number))
        or not 0 <= p < 1  # before float(): a 5000-digit integer overflows it
        or not math.isfinite(float(p))
    ):
        raise PortingError(f"{where}: {key}={short_repr(p)}: expected a probability 0 <= p < 1")


def check_real(value: object, where: str, key: str) -> None:
    """A finite real number (not a boolean), or `PortingError` naming `key`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not -(2**1023) < value < 2**1023  # float() of a larger integer overflows
        or not math.isfinite(float(value))
    ):
        raise PortingError(f"{where}: {key}={short_repr(value)}: expected a finite real number")


class FlatRule(str, Enum):
    """How the plan tracks a `mat`'s input through a layer, for the order of Keras' `Flatten`
    (porting.model.planning): the input size a `dense` layer's weights were written for."""

    KEEP = "keep"  # sizes pass through: what the layer reads is what it gives on
    RESET = "reset"  # a spatial output: nothing flattened reaches past it
    MAT = "mat"  # a `mat`: records its spatial input
    DENSE = "dense"  # a dense layer: consumes the recorded input
    RESHAPE = "reshape"  # features -> spatial (held in Flatten order) or spatial -> features


class _Sealing(type):
    """Seals every layer once its constructor (and `__post_init__`) has run: its arrays are
    read-only copies from then on (`read_only`) and assigning a field raises `PortingError`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
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
    is `(features,)`; the last two may be properties where the layer's fields decide), and, as
    `stages()`, what Knet computes, in order.
    """

    kind: ClassVar[str] = "layer"
    transparent: ClassVar[bool] = False
    # How the plan tracks a `mat`'s input for Keras' Flatten order (`FlatRule`).
    flat_rule: ClassVar[FlatRule] = FlatRule.KEEP
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """copy.deepcopy and pickle: the copy is sealed too (its arrays read-only again)."""
        self.__dict__.update(state)
        self._seal()

    @property
    def needs_spatial(self) -> bool:
        """Its input must be `(X1, ..., C)` (a kind sets `needs_spatial = True`)."""
        return False

    @property
    def flattens(self) -> bool:
        """Its output is `(features,)` (a kind sets `flattens = True`)."""
        return False

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

    # What model verification (porting.model.verify) asks of a kind, with the defaults that
    # every kind taking real-valued activations keeps.

    integer_input: ClassVar[bool] = False
    """True when, as the first layer, it reads integer token indices (porting.model.forward)."""

    def default_input(
        self, size: tuple[int, ...], batch: int, seed: int, dtype: DTypeLike
    ) -> np.ndarray:
        """A deterministic model input `(size..., batch)` when this layer comes first:
        uniform in [-1, 1) from `np.random.default_rng(seed)`, in `dtype` (Fortran order)."""
        rng = np.random.default_rng(seed)
        return np.asfortranarray(rng.uniform(-1.0, 1.0, size=(*size, batch)).astype(dtype))

    def keras_input(self, x_tf: np.ndarray) -> np.ndarray:
        """The Keras model's input for Knet's input `x_tf` (already in TensorFlow layout) when
        this layer comes first: the same values by default."""
        return x_tf

    verify_notes_of_output: ClassVar[bool] = False
    """True when `verify_notes` reports on the Keras side's output (per-step figures of a
    recurrent layer); verification then converts that output back to the model layout."""

    def verify_notes(self, x_in: np.ndarray, actual: np.ndarray, name: str) -> list[str]:
        """Notes for the verification report from the layer's Knet input `x_in` and the Keras
        side's output `actual` (model layout); asked only when `verify_notes_of_output`."""
        return []


@dataclass(frozen=True)
class KerasLayer:
    """A Keras built-in layer class a kind's stages build, and how verification may run it.

    - `name`: the Keras class name (`"Conv2D"`);
    - `per_sample`: at inference it computes each sample of a batch from that sample alone
      (batch normalisation uses its moving statistics), so verification may run two inputs as
      the halves of one doubled batch (porting.model.keras_side.per_sample);
    - `direct`: the keyword arguments its `call` takes at inference when verification may call
      `call` itself, skipping `__call__`'s bookkeeping (a stateless or inference-only layer,
      whose `call` is what `__call__` runs once inputs are converted and masks and `training`
      resolved); None: always through `__call__`.
    """

    name: str
    per_sample: bool = True
    direct: Mapping[str, Any] | None = field(default=None, compare=False)


def _direct(*names: str, **call_kwargs: Any) -> tuple[KerasLayer, ...]:
    return tuple(KerasLayer(n, direct=dict(call_kwargs)) for n in names)


# What the activation stage (porting.model.stages.ActStage) builds: every kind with an
# activation lists these among its `keras_layers`.
ACT_KERAS: tuple[KerasLayer, ...] = (
    *_direct("Activation", "ReLU", "LeakyReLU", "Identity"),
    KerasLayer("Softmax"),
    KerasLayer("Permute"),
)

# A kind's small example: its layers (the layers it needs before it included) and the input
# size of one sample, for the contract test (tests/test_kinds_contract.py).
Example = tuple[list["Layer"], tuple[int, ...]]


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
      `param(what)` reads params.<what> from the `.npz`, or None);
    - `knet`, `keras`: what it computes in Knet and what it becomes in Keras, one line each
      (the README's and porting.model.convert's tables, checked by tests/test_kinds_contract.py);
    - `schema`: its keys in the export's JSON, one phrase (porting.model.export's docstring);
    - `keras_layers`: every Keras layer class its stages build, with how verification may run
      it (`KerasLayer`; the contract test checks the list is complete);
    - `diagnose(step, x_ins_tf, expected_tf, actual_tf, spatial)`: the kind's own causes for
      its divergent layer (porting.diagnosis' layer-level functions), or None: the conv/dense
      diagnosis applies;
    - `example()`: a small instance (`Example`) the contract test builds, converts, verifies
      and round-trips.
    """

    name: str
    layer: type[Layer]
    prefix: str
    from_json: Callable[..., Layer]
    to_json: Callable[[Any], dict[str, Any]]
    weights: Callable[..., list[np.ndarray]] | None = None
    knet: str = ""
    keras: str = ""
    schema: str = ""
    keras_layers: tuple[KerasLayer, ...] = ()
    diagnose: Callable[..., Any] | None = None
    example: Callable[[], Example] | None = None
