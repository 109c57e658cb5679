"""A built Keras 3 model as a list of nodes in call order, each naming the nodes it reads.

This is the only module of `porting.fromkeras` that looks at how Keras wires a functional
model. Keras 3 keeps, on every symbolic tensor, the layer that produced it
(`KerasTensor._keras_history`: the same record `Functional.get_config()` serialises as
`keras_history`); there is no other public way to walk a model that is already built, so the
access is isolated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from porting._text import printable
from porting.errors import PortingError

__all__ = ["Node", "nodes"]

INPUT = "input"


@dataclass(frozen=True)
class Node:
    """One call of a Keras layer: the layer, the names of the layers it reads (`"input"`: the
    model's input) and the TensorFlow shapes of its inputs and output (batch left out)."""

    layer: Any
    inputs: tuple[str, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return str(self.layer.name)

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__


def _shape(t, where: str) -> tuple[int, ...]:
    shape = tuple(t.shape)[1:]
    if any(s is None for s in shape):
        raise PortingError(
            f"{where}: its tensor has shape {tuple(t.shape)}; expected every dimension but the "
            "batch known (build the model with a fixed input size, e.g. keras.Input((224, 224, 3)))"
        )
    return tuple(int(s) for s in shape)


def _producer(t) -> Any:
    history = getattr(t, "_keras_history", None)
    if history is None:  # pragma: no cover - every symbolic tensor of a built model has one
        raise PortingError("a tensor of the Keras model has no producing layer")
    return history[0]


def nodes(model) -> list[Node]:
    """The layers of `model` (a built Keras 3 `Model` or `Sequential` with one input and one
    output), in an order where every layer comes after the layers it reads, ending with the
    layer that gives the model's output."""
    import keras

    if not isinstance(model, keras.Model):
        raise PortingError(
            f"expected a Keras 3 keras.Model (Sequential or functional), got "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise PortingError(
            f"Keras model {printable(model.name)!r} is not built: give it an input "
            "(keras.Input((H, W, C))) before converting"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise PortingError(
            f"Keras model {printable(model.name)!r} has {len(inputs)} inputs and {len(outputs)} "
            "outputs; expected one of each (a Knet chain reads one array and returns one)"
        )
    source = _producer(inputs[0])
    order: list[Node] = []
    seen: dict[int, str] = {id(source): INPUT}
    stack: list[tuple[Any, bool]] = [(_producer(outputs[0]), False)]
    while stack:  # depth-first from the output: a topological order of what feeds it
        layer, expanded = stack.pop()
        if id(layer) in seen and not expanded:
            continue
        where = f"Keras layer {printable(layer.name)!r} ({type(layer).__name__})"
        calls = getattr(layer, "_inbound_nodes", [])
        if len(calls) != 1:
            raise PortingError(
                f"{where} is called {len(calls)} times; expected once (a shared layer has no "
                "counterpart in a Knet chain: give each call its own layer)"
            )
        tensors = list(layer.input) if isinstance(layer.input, (list, tuple)) else [layer.input]
        producers = [_producer(t) for t in tensors]
        if not expanded:
            stack.append((layer, True))
            stack.extend((p, False) for p in reversed(producers) if id(p) not in seen)
            continue
        if id(layer) in seen:
            continue
        seen[id(layer)] = str(layer.name)
        order.append(
            Node(
                layer=layer,
                inputs=tuple(seen[id(p)] for p in producers),
                in_shapes=tuple(_shape(t, where) for t in tensors),
                out_shape=_shape(layer.output, where),
            )
        )
    return order
