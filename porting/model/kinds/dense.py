"""The `dense` kind: Knet `f.(w * mat(x) .+ b)`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import porting.model.schema as schema
from porting import layout
from porting.errors import PortingError
from porting.model.layer import (
    ACT_KERAS,
    Example,
    FlatRule,
    KerasLayer,
    Kind,
    Layer,
    activation_name,
    check_probability,
    fmt_size,
    weight_array,
)
from porting.model.stages import ActStage, DenseStage, DropoutStage, Stage

if TYPE_CHECKING:
    from porting.model.planning import Step

__all__ = ["Dense", "KIND"]

# Looked up at call time (tests replace it to prove that broken ports are caught).
_dense_converter = layout.dense_to_tf


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
    flattens = True
    flat_rule = FlatRule.DENSE

    def __post_init__(self) -> None:
        where = self.label
        self.w = weight_array(self.w, "w", where, (2,))
        n_out = self.w.shape[0]
        if self.b is not None:
            self.b = weight_array(self.b, "b", where, (1, 2))
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
        check_probability(self.dropout, where)

    @property
    def bias_vector(self) -> np.ndarray | None:
        return None if self.b is None else self.b.reshape(-1)

    @property
    def k(self) -> int:
        return int(self.w.shape[1]) + (self.b is not None)

    def params(self) -> dict[str, np.ndarray]:
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def stages(self) -> list[Stage]:
        """dropout (identity at inference), w * mat(x) .+ b, the activation."""
        out: list[Stage] = []
        if self.dropout:
            out.append(DropoutStage(role="dropout", p=self.dropout))
        out.append(DenseStage(w=self.w, b=self.b))
        if self.activation != "identity":
            out.append(ActStage(role="act", function=self.activation))
        return out

    def fixed_input_size(self) -> tuple[int, ...] | None:
        return (int(self.w.shape[1]),)

    def check_follows(self, prev: Layer) -> None:
        if prev.kind == "rnn" and getattr(prev, "output", None) == "sequence":
            raise PortingError(
                f"{self.label} follows {prev.label}, which gives every time step: Knet's "
                "w * mat(y) would mix the batch into the features; use TimeDense (w * "
                "reshape(y, H, :), every step) or RNN(..., output='last') (y[:, :, end])"
            )
        if isinstance(prev, Dense) and prev.w.shape[0] != self.w.shape[1]:
            raise PortingError(
                f"{self.label}: w {self.w.shape} expects {self.w.shape[1]} inputs but the "
                f"previous {prev.label} outputs {prev.w.shape[0]} (w {prev.w.shape})"
            )

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        n_in = self.w.shape[1]
        feats = math.prod(size)
        if feats != n_in:
            how = f"{fmt_size(size)} = {feats} features" if len(size) > 1 else f"{feats} features"
            raise PortingError(
                f"{self.label}: w {self.w.shape} expects {n_in} inputs but its input gives "
                f"{how} per sample (after mat); expected w of size ({self.w.shape[0]}, {feats})"
            )
        return (int(self.w.shape[0]),)

    def describe(self) -> str:
        s = f"dense w {self.w.shape}" + ("" if self.b is not None else ", no bias")
        return s + (f", {self.activation}" if self.activation != "identity" else "")


def _weights(layer: Dense, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    """Kernel `dense_to_tf(w, input_shape, spatial)`: `w'`, rows permuted after a flatten."""
    ws = [_dense_converter(layer.w, step.dense_input, spatial)]
    if layer.b is not None:
        ws.append(layer.b.reshape(-1).copy())
    if step.flat_from is not None and len(step.flat_from) > 1:
        # a reshape follows: output units in the Keras Flatten order of the reshaped tensor
        flat = step.flat_from
        order = np.arange(math.prod(flat), dtype=np.float64).reshape((*flat, 1), order="F")
        perm = layout.activations_to_tf(order, spatial).reshape(-1).astype(np.intp)
        ws = [ws[0][:, perm], *(b[perm] for b in ws[1:])]
    return ws


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Dense:
    w = schema.weight(param, where, "a dense layer needs a weight")
    return Dense(
        w,
        param("b"),
        activation=d.get("activation") or "identity",
        dropout=schema.dropout(d.get("dropout"), where),
        name=d.get("name"),
    )


KERAS_LAYERS: tuple[KerasLayer, ...] = (
    KerasLayer("Dense", direct={}),
    KerasLayer("Flatten", direct={}),
    KerasLayer("Dropout"),
    *ACT_KERAS,
)


def _example() -> Example:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 24)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    return [Dense(w, b, activation="sigm")], (4, 3, 2)


KIND = Kind(
    name="dense",
    layer=Dense,
    prefix="dense",
    from_json=_from_json,
    to_json=lambda layer: {"activation": layer.activation, "dropout": layer.dropout},
    weights=_weights,
    knet="`w * mat(x) .+ b`",
    keras="(`Flatten` +) `Dense`, kernel `w'` (rows permuted after a flatten to Keras' (H, W, C) order)",
    schema='"activation", "dropout"',
    keras_layers=KERAS_LAYERS,
    example=_example,
)
