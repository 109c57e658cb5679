"""The Knet side of a model: run it layer by layer with `porting.knet`, Julia-indexed.

Each layer runs its stages (porting.model.stages) in order: `conv4` and `pool` on the chosen
Knet backend (Julia when available, else porting's NumPy reference); `mat`, bias additions,
matrix products and activations in the model's element type with Knet's formulas (`sigm` as
Knet's numerically stable form, `elu` as `exp(x) - 1`, `softmax` with the maximum subtracted).

>>> import numpy as np
>>> from porting.model import KnetModel, Dense
>>> m = KnetModel([Dense(np.eye(3, dtype=np.float32), activation="relu")], input_size=(3,))
>>> out = forward_knet(m, np.float32([[1, -2, 3]]).T)
>>> out[-1].ravel().tolist(), out.names
([1.0, 0.0, 3.0], ['dense1'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting._checks import as_float_array
from porting.activations import activate
from porting.errors import PortingError
from porting.model.planning import Plan, plan_for
from porting.model.spec import KnetModel

__all__ = ["forward_knet", "KnetOutputs", "activate", "check_input"]


@dataclass
class KnetOutputs:
    """Every layer's output (Julia-indexed, batch last) and which Knet backend computed them.

    Index by position or layer name: `out[-1]`, `out["conv1"]`. `extras[i]` holds, for layer
    `i`, with `keep_extras=True`, the Knet output of each inner stage whose magnitude reads its
    own output (an activation before a pool), keyed by stage index (used for tolerances).
    """

    names: list[str]
    outputs: list[np.ndarray]
    input: np.ndarray
    backend: str
    backend_reason: str
    extras: list[dict[int, np.ndarray]] = field(default_factory=list)

    def __getitem__(self, key: int | str) -> np.ndarray:
        if isinstance(key, str):
            return self.outputs[self.names.index(key)]
        return self.outputs[key]

    def __len__(self) -> int:
        return len(self.outputs)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.outputs)

    @property
    def final(self) -> np.ndarray:
        return self.outputs[-1]


def check_input(model: KnetModel, x: Any, plan: Plan | None = None) -> tuple[np.ndarray, Plan]:
    """`x` as a Julia-indexed batch `(X1, ..., C, N)` that fits `model`, and the model's plan
    for it (`plan` when given), or `PortingError` naming the first layer that does not fit."""
    first = model.layers[0]
    if getattr(first, "integer_input", False):  # token indices (porting.model.kinds.embed)
        x = first.check_input(x)
    else:
        x = as_float_array(x, "x", ndim=(2, 3, 4, 5))
    if x.dtype != model.dtype and not getattr(first, "integer_input", False):
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
    return x, plan_for(model, x.shape[:-1], plan)


def forward_knet(
    model: KnetModel,
    x: Any,
    backend: str = "auto",
    *,
    keep_extras: bool = False,
    plan: Plan | None = None,
) -> KnetOutputs:
    """Run the Knet side of `model` on `x` (Julia-indexed, `(X1, ..., C, N)`), layer by layer.

    `backend` is passed to `porting.knet` ("auto": Julia when available, else the reference).
    `plan` is the model's plan for this input size (made here when not given).
    Returns `KnetOutputs`: every layer's output, Julia-indexed, and the backend that ran.
    """
    x, plan = check_input(model, x, plan)
    done: dict[int, np.ndarray] = {}
    extras: list[dict[int, np.ndarray]] = []
    tags: list[Any] = []
    for _, _, extra in forward_steps(plan, x, backend, keep_extras, done, tags):
        extras.append(extra)
    name, reason = backend_of(tags)
    return KnetOutputs(
        names=[str(step.layer.name) for step in plan],
        outputs=[done[i] for i in range(len(plan))],
        input=x,
        backend=name,
        backend_reason=reason,
        extras=extras,
    )


def forward_steps(
    plan: Plan,
    x: np.ndarray,
    backend: str,
    keep_extras: bool,
    done: dict[int, np.ndarray],
    tags: list[Any],
) -> Iterator[tuple[int, np.ndarray, dict[int, np.ndarray]]]:
    """`forward_knet` one layer at a time, for a checked `x`: yields `(i, output, extras)` in
    order after storing the output in `done[i]`; a layer reads its inputs from `done`, so a
    caller may delete the entries no later layer reads (verification keeps memory low so).
    `tags` collects the arrays that name the backend (`backend_of`)."""
    for i, step in enumerate(plan):
        extra: dict[int, np.ndarray] = {}
        last = len(step.stages) - 1
        ins = [x if k < 0 else done[k] for k in step.sources]
        y: Any = ins if step.layer.merges else ins[0]
        for j, stage in enumerate(step.stages):
            y = stage.forward(y, backend, tags)
            if keep_extras and stage.needs_output and j != last:
                extra[j] = y
        done[i] = y
        yield i, y, extra


def backend_of(tags: list[Any]) -> tuple[str, str]:
    """The backend name and reason that `forward_steps`' first tag carries."""
    if tags:
        return tags[0].backend, tags[0].backend_reason
    return "reference", "dense-only model: NumPy matrix products and activations"
