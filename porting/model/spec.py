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

Each layer class is defined, with everything about its kind, in `porting.model.kinds`.
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

from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from porting._checks import FLOAT_DTYPES, short_repr
from porting.errors import PortingError
from porting.model import kinds as _kinds
from porting.model.kinds import *  # noqa: F403 - the layer classes, one per kind (and merges)
from porting.model.kinds import KINDS, kind_of
from porting.model.layer import (
    ACTIVATIONS,
    NAME_RE,
    FlatRule,
    Layer,
    activation_name,
    fmt_size,
    set_link,
)
from porting.model.layers21 import AddBranches, Block, Op, expand_blocks
from porting.model.planning import Plan, as_size, plan

__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "Layer",
    "Block",
    "AddBranches",
    "Op",
    "KnetModel",
    "activation_name",
]
__all__ += _kinds.__all__  # the layer classes of the table (porting.model.kinds)


class _Layers(list[Any]):
    """A model's layers: a list (so that `model.layers + [...]` builds a new one) that refuses
    to change in place."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PortingError(
            "a model's layers cannot be changed after it is built (its plan and every converted "
            "model are made from them); build a changed model: model.replace(layers=new_layers) "
            "or KnetModel(new_layers, input_size=...)"
        )

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return (list, (list(self),))


def _rebuild(
    layers: list[Any],
    input_size: tuple[int, ...] | None,
    name: str,
    dtype: np.dtype[Any],
    inputs: dict[str, str],
) -> KnetModel:
    return KnetModel(layers, input_size, name=name, dtype=dtype, inputs=inputs)


class KnetModel:
    """A chain of Knet layers (Knet's tutorial `Chain`), with Julia-indexed weights.

    `input_size` is Julia's size of one sample, batch left out (`(28, 28, 1)`); when given,
    the model is planned now (`plan`: every layer's sizes, checked; `output_sizes`), otherwise
    on the first input. Unnamed layers get `conv1`, `pool1`, `dense1`, ... Every weight must
    share one dtype, which is the model's (`dtype=` sets it for a model without weights;
    default float32). Loading and saving: `porting.model.load_export` / `save_export`.

    A model is a graph: every layer reads the layer before it, except merges (`Add`, `Concat`,
    which name their `inputs`) and layers given another source in `inputs={name: source}`
    (`source` a layer before it, or "input": the model's input), e.g. a projection shortcut.

    A model never changes once built, nor do its layers: assigning `model.layers`,
    `model.input_size`, ... or a layer's field, or writing into a layer's (read-only) arrays,
    raises an error instead of leaving the plan and converted models describing the old
    model. Build a changed one with `model.replace(layers=...)` (layers changed with
    `dataclasses.replace(layer, mode=1)`) or `KnetModel(new_layers, input_size=...)`.
    `copy.deepcopy` and pickle rebuild the model, with a fresh plan.
    """

    source: str | None = None  # the export prefix it was loaded from, if any

    def __init__(
        self,
        layers: Any,
        input_size: Any = None,
        *,
        name: str = "knet_model",
        dtype: npt.DTypeLike | None = None,
        inputs: dict[str, str] | None = None,
    ) -> None:
        if isinstance(layers, Block):
            layers = [layers]
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise PortingError(
                f"layers must be a list of porting.model layers, got {type(layers).__name__}"
            )
        # Layers21 Blocks / AddBranches: their layers, one row each, and the branches' wiring
        layers, wiring = expand_blocks(layers)
        if not layers:
            raise PortingError("a model needs at least one layer")
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer) or layer.kind not in KINDS:
                raise PortingError(
                    f"layer {i + 1} is a {type(layer).__name__}; expected one of "
                    f"{', '.join(k.layer.__name__ for k in KINDS.values())} from porting.model"
                )
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            if layer.name is None:
                auto = f"{kind_of(layer).prefix}{counts[layer.kind]}"
                while auto in seen:
                    auto += "_"
                set_link(layer, "name", auto)
            if (
                not isinstance(layer.name, str)
                or not NAME_RE.match(layer.name)
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
        self.layers: list[Any] = _Layers(layers)
        if not isinstance(name, str) or not name:
            raise PortingError(f"name={short_repr(name)}: expected a non-empty string")
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
        self.inputs = self._resolve_inputs(inputs, seen, wiring)
        self.sources = self._sources()
        self._check_chain()
        self.input_size: tuple[int, ...] | None = None
        self.output_sizes: list[tuple[int, ...]] | None = None
        self.plan: Plan | None = None
        if input_size is not None:
            self.input_size = as_size(input_size, "input_size")
            self.plan = plan(self, self.input_size)
            self.output_sizes = self.plan.sizes
        self._built = True

    def __setattr__(self, key: str, value: Any) -> None:
        if key != "source" and self.__dict__.get("_built"):
            raise PortingError(
                f"model {self.name!r}: {key} cannot be changed after the model is built (its "
                "plan and every converted model are made from the layers it was built with); "
                f"build a changed one: model.replace({key}=...), or "
                "KnetModel(new_layers, input_size=...)"
            )
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        self.__setattr__(key, None)  # refused once built, with the same message
        object.__delattr__(self, key)

    def replace(self, **changes: Any) -> KnetModel:
        """A new model, built (checked and planned) from this one's arguments with `changes`:
        `layers`, `input_size`, `name`, `dtype`, `inputs`. A model never changes once built.
        With new `layers` and no `inputs`, a layer whose name stays reads what it read before,
        unless it says otherwise (its own `input_from`).

        >>> import dataclasses
        >>> from porting.examples.lenet import lenet
        >>> m = lenet()
        >>> flipped = [dataclasses.replace(c, mode=1) if c.kind == "conv" else c for c in m]
        >>> m.replace(layers=flipped)[0].mode, m[0].mode
        (1, 0)
        """
        keys = {"layers", "input_size", "name", "dtype", "inputs"}
        unknown = sorted(set(changes) - keys)
        if unknown:
            raise PortingError(
                f"replace({', '.join(unknown)}=...): expected some of {', '.join(sorted(keys))}"
            )
        args = {
            "layers": list(self.layers),
            "input_size": self.input_size,
            "name": self.name,
            "dtype": None,
            "inputs": dict(self.inputs),
            **changes,
        }
        layers = args.pop("layers")
        if "layers" in changes and "inputs" not in changes and isinstance(layers, (list, tuple)):
            names = {getattr(layer, "name", None) for layer in layers}
            args["inputs"] = {k: v for k, v in self.inputs.items() if k in names}
            for layer in layers:
                if isinstance(layer, Layer) and layer.name and layer.input_from is not None:
                    args["inputs"][layer.name] = layer.input_from
        if args["dtype"] is None and not any(
            isinstance(layer, Layer) and layer.params() for layer in layers
        ):
            args["dtype"] = self.dtype
        return KnetModel(layers, **args)

    def __reduce__(
        self,
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any] | None]:
        """copy, deepcopy and pickle rebuild the model (checked and planned afresh: a copy
        never carries a plan made for another object)."""
        state = {"source": self.source} if "source" in self.__dict__ else None
        return (
            _rebuild,
            (list(self.layers), self.input_size, self.name, self.dtype, dict(self.inputs)),
            state,
        )

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        if state:
            self.source = state["source"]

    def _resolve_inputs(
        self, inputs: Any, names: set[str], wiring: dict[str, str] | None = None
    ) -> dict[str, str]:
        if inputs is None:
            inputs = {
                layer.name: layer.input_from
                for layer in self.layers
                if getattr(layer, "input_from", None) is not None
            }
        if not isinstance(inputs, dict):
            raise PortingError(
                f"inputs={inputs!r}: expected a dict {{layer name: source layer name}}"[:300]
            )
        out: dict[str, str] = {}
        for k, v in {**(wiring or {}), **inputs}.items():
            if k not in names:
                raise PortingError(f"inputs: no layer named {k!r}; the layers are {sorted(names)}")
            if not isinstance(v, str):
                raise PortingError(f"inputs[{k!r}] = {v!r}: expected a layer name or 'input'")
            out[k] = v
        for layer in self.layers:  # recorded on the layer too: the export writes it
            if layer.name in out:
                set_link(layer, "input_from", out[str(layer.name)])
        return out

    def _sources(self) -> list[tuple[int, ...]]:
        """For every layer, the indices of the layers it reads (-1: the model's input)."""
        index: dict[str, int] = {}
        out = []
        for i, layer in enumerate(self.layers):
            if layer.merges:
                names = tuple(layer.inputs)
            elif layer.name in self.inputs:
                names = (self.inputs[str(layer.name)],)
            else:
                names = (str(self.layers[i - 1].name) if i else "input",)
            srcs = []
            for n in names:
                if n == "input":
                    srcs.append(-1)
                elif n in index:
                    srcs.append(index[n])
                else:
                    raise PortingError(
                        f"{layer.label} reads {n!r}, which is not a layer before it (layers are "
                        "in the order they compute; 'input' is the model's input)"
                    )
            out.append(tuple(srcs))
            index[str(layer.name)] = i
        read = {k for srcs in out for k in srcs}
        unused = [str(layer.name) for i, layer in enumerate(self.layers[:-1]) if i not in read]
        if unused:
            raise PortingError(
                f"layers {unused} are computed but never read (the output is the last layer's); "
                "expected every layer to feed the output: check the inputs of the layers after them"
            )
        return out

    def _check_chain(self) -> None:
        """Checks that need no input size: conv -> conv channels, dense -> dense features
        (through transparent layers, along each layer's first source), and no spatial layer
        after a flattening one."""
        flat: list[bool] = []
        for i, layer in enumerate(self.layers):
            srcs = self.sources[i]
            j = srcs[0]
            while j >= 0 and self.layers[j].transparent:
                j = self.sources[j][0]
            if j >= 0:
                layer.check_follows(self.layers[j])
            before = any(flat[k] for k in srcs if k >= 0)
            if layer.needs_spatial and before:
                raise PortingError(
                    f"{layer.label} follows a dense or mat layer, whose output is (features, N); "
                    f"expected (X1, ..., C, N) for a {layer.kind}"
                )
            if layer.flattens:
                flat.append(True)
            elif layer.flat_rule in (FlatRule.RESET, FlatRule.RESHAPE):  # a spatial output
                flat.append(False)
            else:
                flat.append(before)

    def sizes(self, input_size: Any) -> list[tuple[int, ...]]:
        """Every layer's output size (one sample) for `input_size`; raises `PortingError` naming
        the first layer whose weights do not fit."""
        return plan(self, input_size).sizes

    @property
    def n_params(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params().values())

    @property
    def nd(self) -> int | None:
        """Spatial dimensions of the input (from the first conv or pool), None for dense only."""
        if self.input_size is not None:
            return len(self.input_size) - 1 if len(self.input_size) > 1 else None
        for layer in self.layers:
            nd: int | None = getattr(layer, "nd", None)
            if nd is not None:
                return nd
            if layer.flattens:
                return None
        return None

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return self.layers[key]

    def __repr__(self) -> str:
        return (
            f"KnetModel({self.name!r}, {len(self.layers)} layers, {self.n_params} {self.dtype} "
            f"weights, input_size={self.input_size})"
        )

    def __str__(self) -> str:
        lines = [repr(self)]
        sizes: list[Any] = self.output_sizes or [None] * len(self.layers)
        for i, (layer, size) in enumerate(zip(self.layers, sizes, strict=True)):
            tail = f" -> {fmt_size(size)}" if size else ""
            if not layer.merges and self.sources[i] != (i - 1,):
                k = self.sources[i][0]
                tail = f" (reads {'input' if k < 0 else self.layers[k].name})" + tail
            lines.append(f"  {layer.name}: {layer.describe()}{tail}")
        return "\n".join(lines)
