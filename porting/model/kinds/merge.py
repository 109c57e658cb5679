"""The merge kinds of residual and branching graphs: `add`, `mul` and `concat`.

- `Add(inputs; activation)`: `f.(x1 .+ x2 .+ ...)`, the elementwise sum of earlier layers'
  outputs (a residual block's `relu.(shortcut(x) .+ main(x))`), then the activation. Keras:
  `Add` (+ `Activation`).
- `Mul(inputs)`: `x1 .* x2 .* ...`, the elementwise product, with Julia's broadcasting: a
  dimension of size 1 in one input stretches over the others' (squeeze-and-excite's per-channel
  gate, `(1, 1, C, N) .* (X1, X2, C, N)`). Keras: `Multiply`, which broadcasts alike.
- `Concat(inputs)`: Knet's `cat(x1, x2, ...; dims=ndims(x)-1)`, along the channels (the
  features of a dense output). Keras: `Concatenate(axis=-1)`.

`inputs` names earlier layers (or "input", the model's input). Any other layer reads the layer
before it unless `KnetModel(..., inputs={name: source})` says otherwise (a projection shortcut).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import (
    ACT_KERAS,
    Example,
    KerasLayer,
    Kind,
    Layer,
    activation_name,
    fmt_size,
)
from porting.model.stages import ActStage, Array, KerasContext, KerasTensor, Stage

if TYPE_CHECKING:
    from porting.diagnosis import Diagnosis
    from porting.model.planning import Step

__all__ = ["Add", "Concat", "Mul", "MergeStage", "KIND_ADD", "KIND_CONCAT", "KIND_MUL"]


@dataclass(frozen=True, eq=False)
class MergeStage(Stage):
    """Sum, broadcast product or channel concatenation of several inputs (lists in, one out)."""

    op: str = "add"
    merges = True

    def out_size(self, sizes: Any) -> tuple[int, ...]:
        sizes = [tuple(s) for s in sizes]
        first: tuple[int, ...] = sizes[0]
        if self.op == "add":
            bad = [s for s in sizes if s != first]
            if bad:
                raise PortingError(
                    f"adds inputs of sizes {', '.join(map(fmt_size, sizes))} per sample; "
                    "expected one size"
                )
            return first
        if self.op == "mul":
            return _broadcast_size(sizes)
        bad = [s for s in sizes if s[:-1] != first[:-1] or len(s) != len(first)]
        if bad:
            raise PortingError(
                f"concatenates inputs of sizes {', '.join(map(fmt_size, sizes))} per sample "
                "along the channels; expected equal sizes apart from the channels"
            )
        return (*first[:-1], sum(s[-1] for s in sizes))

    def forward(self, xs: Any, backend: str, tags: list[Array]) -> Array:
        if self.op == "add":
            y: Array = xs[0]
            for x in xs[1:]:
                y = y + x  # left to right, as Julia's `x1 .+ x2 .+ x3`
            return y
        if self.op == "mul":
            y = xs[0]
            for x in xs[1:]:
                y = y * x  # left to right, broadcasting, as Julia's `x1 .* x2 .* x3`
            return y
        return np.concatenate(xs, axis=-2)

    def magnitude(self, ss: Any, out: Array | None, wd: npt.DTypeLike) -> Array:
        if self.op == "add":
            total: Array = ss[0]
            for s in ss[1:]:
                total = total + s
            return total
        if self.op == "mul":  # |x1 x2| <= S1 S2; an error e1 in x1 moves the product by e1 |x2|
            prod: Array = ss[0]
            for s in ss[1:]:
                prod = prod * s
            return prod
        return np.concatenate(ss, axis=-2)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return len(in_size) if self.op in ("add", "mul") else None

    def build(
        self, ctx: KerasContext, ts: Any, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        if self.op == "add":
            return ctx.make("Add", self.role)(list(ts))
        if self.op == "mul":
            return ctx.make("Multiply", self.role)(list(ts))
        return ctx.make("Concatenate", self.role, axis=-1)(list(ts))


def _broadcast_size(sizes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The size of Julia's `x1 .* x2 .* ...` per sample: along each dimension the inputs agree
    or have size 1 (one rank for all: Keras's `Multiply` broadcasts within a rank only)."""
    if len({len(s) for s in sizes}) > 1 or any(
        len({n for n in dim if n != 1}) > 1 for dim in zip(*sizes, strict=True)
    ):
        raise PortingError(
            f"multiplies inputs of sizes {', '.join(map(fmt_size, sizes))} per sample; expected "
            "one rank, and along each dimension one size or 1 (broadcast)"
        )
    return tuple(max(dim) for dim in zip(*sizes, strict=True))


def _names(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) < 2:
        raise PortingError(
            f"{where}: inputs={value!r}: expected a list of two or more layer names (or 'input')"
        )
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise PortingError(f"{where}: inputs={value!r}: expected layer names (strings)")
    return tuple(value)


@dataclass(eq=False)
class Add(Layer):
    """`f.(x1 .+ x2 .+ ...)` over the outputs of the layers named in `inputs`."""

    inputs: tuple[str, ...] | list[str] = ()
    _: KW_ONLY
    activation: str = "identity"
    name: str | None = None
    kind = "add"
    merges = True

    def __post_init__(self) -> None:
        self.inputs = _names(self.inputs, self.label)
        self.activation = activation_name(self.activation, self.label)

    def stages(self) -> list[Stage]:
        out: list[Stage] = [MergeStage(op="add")]
        if self.activation != "identity":
            out.append(ActStage(role="act", function=self.activation))
        return out

    def output_size(self, sizes: Any) -> tuple[int, ...]:
        try:
            return MergeStage(op="add").out_size(sizes)
        except PortingError as e:
            raise PortingError(f"{self.label} of {list(self.inputs)}: {e}") from None

    def describe(self) -> str:
        act = f", {self.activation}" if self.activation != "identity" else ""
        return f"add({', '.join(self.inputs)}){act}"


@dataclass(eq=False)
class Mul(Layer):
    """Julia's `x1 .* x2 .* ...` (broadcasting) over the outputs of the layers in `inputs`."""

    inputs: tuple[str, ...] | list[str] = ()
    _: KW_ONLY
    name: str | None = None
    kind = "mul"
    merges = True

    def __post_init__(self) -> None:
        self.inputs = _names(self.inputs, self.label)

    def stages(self) -> list[Stage]:
        return [MergeStage(op="mul")]

    def output_size(self, sizes: Any) -> tuple[int, ...]:
        try:
            return MergeStage(op="mul").out_size(sizes)
        except PortingError as e:
            raise PortingError(f"{self.label} of {list(self.inputs)}: {e}") from None

    def describe(self) -> str:
        return f"mul({', '.join(self.inputs)}), broadcasting"


@dataclass(eq=False)
class Concat(Layer):
    """Knet's `cat(x1, x2, ...; dims=ndims-1)`: the channels of the layers named in `inputs`."""

    inputs: tuple[str, ...] | list[str] = ()
    _: KW_ONLY
    name: str | None = None
    kind = "concat"
    merges = True

    def __post_init__(self) -> None:
        self.inputs = _names(self.inputs, self.label)

    def stages(self) -> list[Stage]:
        return [MergeStage(op="concat")]

    def output_size(self, sizes: Any) -> tuple[int, ...]:
        try:
            return MergeStage(op="concat").out_size(sizes)
        except PortingError as e:
            raise PortingError(f"{self.label} of {list(self.inputs)}: {e}") from None

    def describe(self) -> str:
        return f"concat({', '.join(self.inputs)}) along the channels"


def _inputs_json(d: dict[str, Any], where: str) -> tuple[str, ...]:
    value = d.get("inputs")
    if not isinstance(value, list):
        raise PortingError(f"{where}: inputs = {value!r}: expected a list of layer names"[:300])
    return tuple(schema.text(v, f"inputs[{i + 1}]", where) for i, v in enumerate(value))


def _diagnose_add(
    step: Step, x_ins_tf: list[Array], expected_tf: Array, actual_tf: Array, spatial: str
) -> Diagnosis | None:
    """Residual causes (porting.diagnosis.diagnose_residual) for a divergent sum of two or more
    inputs: its Knet inputs, Knet output and the port's output for those inputs."""
    from porting.diagnosis import diagnose_residual

    act = getattr(step.layer, "activation", "identity")
    if len(x_ins_tf) < 2 or act in ("softmax", "logsoftmax"):
        return None
    return diagnose_residual(list(x_ins_tf), actual_tf, activation=act, expected=expected_tf)


def _example(cls: type[Add | Mul | Concat], **kw: Any) -> Example:
    """A layer and the one after it merged (any layer kinds would do; these need no weights)."""
    from porting.model.kinds.activation import Activation

    a = Activation("tanh", name="a")
    b = Activation("sigm", name="b")
    return [a, b, cls(["a", "b"], **kw)], (4, 3, 2)


KIND_ADD = Kind(
    name="add",
    layer=Add,
    prefix="add",
    from_json=lambda d, where, param: Add(
        _inputs_json(d, where), activation=d.get("activation") or "identity", name=d.get("name")
    ),
    to_json=lambda layer: {"inputs": list(layer.inputs), "activation": layer.activation},
    knet="`f.(x1 .+ x2 .+ ...)`",
    keras="`Add` (+ `Activation`)",
    schema='"inputs": the layer names it reads; "activation" (since version 2)',
    keras_layers=(KerasLayer("Add", direct={}), *ACT_KERAS),
    diagnose=_diagnose_add,
    example=lambda: _example(Add, activation="relu"),
)


def _mul_example() -> Example:
    """A squeeze-and-excite gate: the global mean of each channel, through a sigmoid, times
    the channels it came from (`(1, 1, C) .* (X1, X2, C)`)."""
    from porting.model.kinds.activation import Activation
    from porting.model.kinds.pool import Pool

    a = Activation("tanh", name="a")
    gate = Pool((4, 3), mode=1, name="squeeze")
    b = Activation("sigm", name="b")
    return [a, gate, b, Mul(["a", "b"])], (4, 3, 2)


KIND_MUL = Kind(
    name="mul",
    layer=Mul,
    prefix="mul",
    from_json=lambda d, where, param: Mul(_inputs_json(d, where), name=d.get("name")),
    to_json=lambda layer: {"inputs": list(layer.inputs)},
    knet="`x1 .* x2 .* ...` (broadcasting)",
    keras="`Multiply` (broadcasting alike: a `(1, 1, C)` gate times `(H, W, C)`)",
    schema='"inputs": the layer names it reads',
    keras_layers=(KerasLayer("Multiply", direct={}),),
    example=_mul_example,
)

KIND_CONCAT = Kind(
    name="concat",
    layer=Concat,
    prefix="concat",
    from_json=lambda d, where, param: Concat(_inputs_json(d, where), name=d.get("name")),
    to_json=lambda layer: {"inputs": list(layer.inputs)},
    knet="`cat(x1, x2, ...; dims=ndims(x)-1)`",
    keras="`Concatenate(axis=-1)`",
    schema='"inputs" (since version 2)',
    keras_layers=(KerasLayer("Concatenate"),),
    example=lambda: _example(Concat),
)
