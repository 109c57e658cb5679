"""A model planned for one input size: every layer's sizes, stages and flatten bookkeeping.

Computed once per command (`plan(model, input_size)`, or `model.plan` when the model was built
with an input size) and passed on to `forward_knet`, `to_keras`, `convert_weights` and
`verify_model`, which all accept `plan=`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from porting._checks import INT_MAX, short_repr
from porting.errors import PortingError
from porting.model.layer import FlatRule, Layer
from porting.model.stages import Stage

__all__ = ["Plan", "Step", "plan", "plan_for", "as_size"]


@dataclass(frozen=True, eq=False)
class Step:
    """One Knet layer in a chain with its per-sample Julia sizes.

    `flat_from` is, for a (features,) output that came from `mat` of a spatial tensor with no
    dense layer since, the Julia size before `mat` (e.g. `(4, 4, 50)`): Keras' `Flatten`
    orders those features differently, so comparisons and the next Dense must know it.
    `dense_input` is the Julia size a Dense's rows are permuted for (None: plain transpose).
    `stages` are the layer's stages, `stage_sizes` each one's (input, output) size (a merge's
    first stage: the list of its inputs' sizes); `sources` the layers it reads (-1: the input).
    """

    layer: Layer
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    flat_from: tuple[int, ...] | None
    dense_input: tuple[int, ...] | None = None
    stages: tuple[Stage, ...] = ()
    stage_sizes: tuple[Any, ...] = ()
    sources: tuple[int, ...] = (-1,)  # the layers it reads (-1: the model's input)

    @property
    def k(self) -> int:
        """Terms summed per output (the layer's first stage that sums any; 1 if none)."""
        for st, (size, _) in zip(self.stages, self.stage_sizes, strict=True):
            k = st.terms(size)
            if k:
                return k
        return 1


@dataclass(frozen=True, eq=False)
class Plan:
    """The steps of a model for `input_size` (one sample, Julia order)."""

    model_id: int
    input_size: tuple[int, ...]
    steps: tuple[Step, ...]

    @property
    def sizes(self) -> list[tuple[int, ...]]:
        return [s.out_size for s in self.steps]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Step:
        return self.steps[i]


def as_size(value: Any, what: str) -> tuple[int, ...]:
    """A per-sample Julia size: 1-4 positive integers."""
    try:
        items = list(value)
    except TypeError:
        items = None
    if items is None or not all(
        isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in items
    ):  # strict: 28.5, "28" and True are not sizes
        raise PortingError(
            f"{what}={short_repr(value)}: expected Julia sizes of one sample, e.g. (28, 28, 1)"[
                :300
            ]
        )
    size = tuple(int(v) for v in items)
    if not 1 <= len(size) <= 4 or any(not 1 <= s <= INT_MAX for s in size):
        raise PortingError(
            f"{what}={short_repr(size)}: expected 1-4 positive sizes of one sample (X1, ..., C), batch left out"[
                :300
            ]
        )
    return size


def _stage_sizes(layer: Layer, stages: tuple[Stage, ...], size: Any) -> tuple[Any, ...]:
    out = []
    for st in stages:
        nxt = st.out_size(size)
        out.append((size if st.merges else tuple(size), tuple(nxt)))
        size = nxt
    return tuple(out)


def check_model(model: Any, what: str = "model") -> None:
    """`PortingError` unless `model` is a `porting.model.KnetModel` (checked by its shape, a
    list of layers and an input size, so that planning never imports the model class)."""
    layers = getattr(model, "layers", None)
    if (
        not isinstance(layers, list)
        or not all(isinstance(layer, Layer) for layer in layers)
        or not hasattr(model, "input_size")
    ):
        raise PortingError(
            f"{what}: expected a porting.model.KnetModel (e.g. from load_export), got "
            f"{type(model).__name__} {short_repr(model, 60)}"
        )


def given_input_size(model: Any, input_size: Any, missing: str) -> Any:
    """`input_size`, or else the model's (`check_model` first); PortingError `missing` when
    neither is set. The size is returned as given (callers check it)."""
    check_model(model)
    size = input_size if input_size is not None else model.input_size
    if size is None:
        raise PortingError(missing)
    return size


def plan(model: Any, input_size: Any = None) -> Plan:
    """Sizes and flatten bookkeeping for every layer of `model` (a KnetModel) on
    `input_size` (default: the model's); `PortingError` naming the first layer whose weights
    do not fit."""
    size = given_input_size(
        model,
        input_size,
        "the model has no input size: pass input_size=(X1, ..., C) (one sample, Julia "
        "order), or give an input to take it from",
    )
    size = as_size(size, "input size")
    steps: list[Step] = []
    sources = getattr(model, "sources", None) or [(i - 1,) for i in range(len(model.layers))]
    for layer, srcs in zip(model.layers, sources, strict=True):
        ins = [size if k < 0 else steps[k].out_size for k in srcs]
        flats = [None if k < 0 else steps[k].flat_from for k in srcs]
        in_size, flat = ins[0], flats[0]
        if layer.merges:
            if len(set(flats)) > 1 or (flat is not None and len(flat) > 1):
                raise PortingError(
                    f"{layer.label}: its inputs are features flattened from a spatial tensor; "
                    "merge before the mat (Keras' Flatten orders them differently)"
                )
            out = tuple(layer.output_size(ins))
            stage_in: Any = ins
        else:
            out = tuple(layer.output_size(in_size))  # validates, naming the layer
            stage_in = in_size
        stages = tuple(layer.stages())
        dense_input = None
        rule = layer.flat_rule
        if rule == FlatRule.MAT:
            flat = in_size if len(in_size) > 1 else flat
        elif rule == FlatRule.DENSE:
            dense_input = in_size if len(in_size) > 1 else flat
            flat = None
        elif rule == FlatRule.RESET:
            flat = None
        elif rule == FlatRule.RESHAPE:
            if len(out) > 1:  # features -> spatial: Keras must hold them in Flatten order
                if flat is not None and tuple(flat) != out:
                    raise PortingError(
                        f"{layer.label}: reshapes features flattened from {flat} into {out}: no "
                        "Keras built-in equivalent (only a dense output, or a mat of the same "
                        "size, can be reshaped)"
                    )
                if flat is None:
                    _features_in_flatten_order(steps, srcs[0], out, layer, sources)
                flat = None
            elif len(in_size) > 1:  # spatial -> features: Knet's mat
                flat = in_size
        steps.append(
            Step(
                layer,
                in_size,
                out,
                flat,
                dense_input,
                stages,
                _stage_sizes(layer, stages, stage_in),
                tuple(srcs),
            )
        )
    return Plan(id(model), size, tuple(steps))


def _features_in_flatten_order(
    steps: list[Step], k: int, target: tuple[int, ...], layer: Layer, sources: Any
) -> None:
    """Mark the dense layer feeding a reshape into `target` (through per-feature layers:
    batchnorm, activation, dropout) as producing `target`'s Keras Flatten order, so that
    Keras's row-major `Reshape` is exact; each of them must be read by the next one only."""
    readers: dict[int, int] = {}
    for srcs in sources:
        for j in srcs:
            readers[j] = readers.get(j, 0) + 1
    chain = []
    while True:
        if k < 0:
            raise PortingError(
                f"{layer.label}: reshapes the model's input into {target}: no Keras built-in "
                "equivalent (reshape the input before passing it)"
            )
        st = steps[k]
        if readers.get(k, 0) != 1 or st.layer.merges:
            raise PortingError(
                f"{layer.label}: {st.layer.label} is read by other layers too: its features "
                f"cannot also be put in the Keras order of {target}"
            )
        chain.append(k)
        if st.layer.flat_rule == FlatRule.DENSE:
            break
        if st.layer.flat_rule != FlatRule.KEEP:
            raise PortingError(
                f"{layer.label}: reshapes the output of {st.layer.label} into {target}: no Keras "
                "built-in equivalent (a dense layer's output, through batchnorm/activation, can be)"
            )
        k = st.sources[0]
    for j in chain:
        steps[j] = dataclasses.replace(steps[j], flat_from=tuple(target))


def plan_for(model: Any, input_size: Any = None, given: Plan | None = None) -> Plan:
    """The plan to use: `given` (checked to be this model's, for this input size), else the
    model's own when the input size is its, else a new one."""
    check_model(model)
    want = None if input_size is None else as_size(input_size, "input size")
    if given is not None:
        if given.model_id != id(model) or (want is not None and want != given.input_size):
            raise PortingError(
                f"plan= was made for another model or input size ({given.input_size}); "
                "make it with porting.model.plan(model, input_size)"
            )
        return given
    own: Plan | None = getattr(model, "plan", None)
    if own is not None and (want is None or want == own.input_size):
        return own
    return plan(model, want)
