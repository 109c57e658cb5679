"""What every Flux layer reader shares: the `Found` record, field readers (arrays, biases,
activations, integer tuples, padding) and the refusals (GPU arrays, anonymous functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.flux.functions import ACTIVATIONS, function_name, read_anonymous
from porting.io.bsonjl import Anonymous, JuliaStruct, JuliaType

__all__ = [
    "GPU_HINT",
    "Found",
    "activation",
    "array",
    "bias",
    "find_gpu",
    "is_flux_model",
    "is_optimiser",
]

CONTAINERS = ("Chain",)
GPU_HINT = (
    "it was saved from the GPU: the file holds CuArray device pointers, not the numbers. In "
    "Julia, load it on a machine with a GPU and save it again from the CPU: "
    '`model = cpu(model); BSON.@save "model_cpu.bson" model`'
)


@dataclass
class Found:
    """One converted layer: the model layer and how it was read."""

    layer: Any
    path: str
    what: str
    notes: list[str] = field(default_factory=list)
    # graph wiring, as indices into the list of found layers (-1: the model's input):
    # a merge's inputs, and a branch's first layer's source when it is not the layer before it
    sources: tuple[int, ...] | None = None
    reads: int | None = None
    # a Global/Adaptive pool whose window comes from its input size (`load.resolve_pools`)
    pending: dict | None = None
    connection: str | None = None  # a merge's Flux connection: "add", "vcat" or "cat3"


def _short(x: Any) -> str:
    return x.type.short if isinstance(x, JuliaStruct) and isinstance(x.type, JuliaType) else ""


def _module(x: Any) -> str:
    if isinstance(x, JuliaStruct) and isinstance(x.type, JuliaType):
        return x.type.name.rsplit(".", 1)[0] if "." in x.type.name else ""
    return ""


def is_flux_model(x: Any) -> bool:
    """Whether `x` is a Flux layer or Chain (a struct of module ``Flux``)."""
    return isinstance(x, JuliaStruct) and _module(x).split(".")[0] == "Flux"


def is_optimiser(x: Any) -> bool:
    """Whether `x` is an optimiser's state (Flux.Optimise, Optimisers.jl)."""
    return isinstance(x, JuliaStruct) and any(
        m in x.name for m in ("Flux.Optimise.", "Optimisers.")
    )


def find_gpu(x: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first CuArray under `x` (a model saved from the GPU), or None."""
    if depth > 40:
        return None
    if isinstance(x, JuliaStruct):
        if "CuArray" in x.name:
            return path
        if isinstance(x.type, Anonymous):
            return None
        items: Any = x.data
    elif isinstance(x, (tuple, list)):
        items = x
    else:
        return None
    for i, v in enumerate(items, 1):
        got = find_gpu(v, f"{path}.{i}", depth + 1)
        if got is not None:
            return got
    return None


def _gpu(x: Any, path: str) -> PortingError:
    return PortingError(f"{path}: a {x.name}: {GPU_HINT}")


def array(x: Any, path: str, what: str) -> np.ndarray:
    """A weight array; Tracker's `TrackedArray` unwrapped, a CuArray refused with advice."""
    if isinstance(x, JuliaStruct):
        if _short(x) == "TrackedArray" and len(x.data) >= 2:  # Tracker: (tracker, data, grad)
            return array(x.data[1], path, what)
        if "CuArray" in x.name:
            raise _gpu(x, f"{path}.{what}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise PortingError(
            f"{path}.{what}: a {type(x).__name__ if not isinstance(x, JuliaStruct) else x.name}; "
            "expected a Float32 or Float64 array"
        )
    return x


def bias(x: Any, path: str) -> np.ndarray | None:
    """`false` (Flux >= 0.13) and `Flux.Zeros` (0.11-0.12) are no bias."""
    if x is False or (isinstance(x, JuliaStruct) and _short(x) == "Zeros"):
        return None
    return array(x, path, "bias")


def activation(x: Any, path: str) -> str:
    name = function_name(x)
    if name is None:
        if isinstance(x, JuliaStruct) and isinstance(x.type, Anonymous):
            raise _anonymous_refusal(x.type, path, "as an activation")
        raise PortingError(f"{path}: activation {x!r:.80}; expected a named NNlib function")
    short = name.rsplit(".", 1)[-1]
    if short not in ACTIVATIONS:
        raise PortingError(
            f"{path}: activation {name} has no counterpart here; supported: "
            f"{', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[short]


def _ints(x: Any, path: str, what: str) -> tuple[int, ...]:
    if isinstance(x, np.ndarray):
        x = tuple(x.tolist())
    if isinstance(x, int) and not isinstance(x, bool):
        x = (x,)
    if not isinstance(x, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in x
    ):
        raise PortingError(f"{path}.{what}: {x!r:.80}; expected a tuple of integers")
    return tuple(int(v) for v in x)


def _padding(pad: tuple[int, ...], nd: int, path: str) -> tuple[tuple[int, ...], tuple | None]:
    """Flux's `pad` (N values, or 2N as lo1, hi1, lo2, hi2...) -> (symmetric padding, the
    (lo, hi) pairs when asymmetric else None)."""
    if len(pad) == nd:
        return pad, None
    if len(pad) != 2 * nd:
        raise PortingError(f"{path}.pad: {pad}; expected {nd} or {2 * nd} values")
    pairs = tuple((pad[2 * i], pad[2 * i + 1]) for i in range(nd))
    if all(lo == hi for lo, hi in pairs):
        return tuple(lo for lo, _ in pairs), None
    return (0,) * nd, pairs


def _anonymous_refusal(a: Anonymous, path: str, role: str = "") -> PortingError:
    code = read_anonymous(a)
    return PortingError(
        f"{path}: an anonymous function {code.name} {role + ' ' if role else ''}(written at "
        f"{code.where}; its code: {code.text()[:200]}) is not a pattern porting knows. Its code "
        "is never run. Replace it by the Flux layer it stands for before saving (e.g. "
        "`x -> reshape(x, :, size(x, 4))` by `Flux.flatten`, `x -> maxpool(x, (2, 2))` by "
        "`MaxPool((2, 2))`), or give its arithmetic as a layer of the export JSON"
    )
