"""Julia functions stored in a model file, by their type name, to porting activations.

JLD2 stores a function held in a struct field (`f=relu`) as an instance of its type, which has
no data (docs/files.md#jld2-functions); `porting.io.load` gives back the type's name, for example
``"Knet.Ops20.relu"``. The
name alone decides the activation: a name in `ACTIVATIONS` maps to porting's, a name Knet or
NNlib exports that `porting.model` cannot run yet is refused by name, and an anonymous function
or a closure (``"Main.#12#13"``, a struct of captured values) is refused with the fix.

>>> activation("Knet.Ops20.relu", "q_networks/1/layers/1/f")
'relu'
>>> activation("Base.identity", "layers/4/f")
'identity'
"""

from __future__ import annotations

from typing import Any

from porting.errors import PortingError

__all__ = ["ACTIVATIONS", "NOT_CONVERTIBLE", "activation", "is_function_name"]

# Full type names (module path + function name) as JLD2 records them, to porting.model names.
# Knet 1.3 defined its functions in module Knet, Knet 1.4 in Knet.Ops20 / Knet.Ops21; NNlib
# and Base provide the rest. `tanh` is defined in Base.Math (Base re-exports it).
_KNET_MODULES = ("Knet", "Knet.Ops20", "Knet.Ops21")
ACTIVATIONS: dict[str, str] = {
    "Base.identity": "identity",
    "Core.identity": "identity",
    "Base.tanh": "tanh",
    "Base.Math.tanh": "tanh",
    "NNlib.relu": "relu",
    "NNlib.σ": "sigm",
    "NNlib.sigmoid": "sigm",
    "NNlib.elu": "elu",
    "NNlib.tanh_fast": "tanh",
}
for _m in _KNET_MODULES:
    ACTIVATIONS[f"{_m}.relu"] = "relu"
    ACTIVATIONS[f"{_m}.sigm"] = "sigm"
    ACTIVATIONS[f"{_m}.elu"] = "elu"

# Functions Knet (1.3 / Ops20 / Ops21) or NNlib export that are not porting.model activations.
_OTHER = (
    "selu",
    "gelu",
    "swish",
    "hardsigmoid",
    "hardswish",
    "invx",
    "softmax",
    "logsoftmax",
    "logp",
    "logsumexp",
    "leakyrelu",
    "softplus",
    "softsign",
    "relu6",
    "celu",
    "mish",
    "tanhshrink",
)
NOT_CONVERTIBLE: set[str] = {f"{m}.{f}" for m in (*_KNET_MODULES, "NNlib") for f in _OTHER}
NOT_CONVERTIBLE |= {"Base.exp", "Base.Math.exp", "Base.abs", "Base.sqrt", "Base.Math.sqrt"}

_SUPPORTED = "identity, relu, sigm, tanh, elu"
_FIX = (
    "give the activation yourself in a structure file (--structure S.json, each layer's "
    '"activation"), or re-save the model in Julia with a named Knet function (relu, sigm, '
    "tanh, elu, identity) in that field"
)


def is_function_name(value: Any) -> bool:
    """True when `value` looks like a Julia function's type name as `porting.io.load` gives it
    (``"Module.name"``)."""
    return isinstance(value, str) and "." in value and not value.startswith(".")


def _anonymous(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    # Julia names anonymous functions and closures "#12#13" / "var\"#f#3\""; porting.io strips
    # the leading "#", which leaves a name starting with a digit or holding a "#".
    return "#" in last or last[:1].isdigit()


def activation(value: Any, where: str) -> str:
    """The porting.model activation for the function stored at `where` (a path in the file).

    `value` is what `porting.io.load` read for that field: a type name, ``None`` (a field
    holding `nothing`: no activation, the identity), or a dict (a closure's captured values).
    Raises `PortingError` naming the function and the fix for anything else.
    """
    if value is None:
        return "identity"
    if isinstance(value, dict):
        fields = ", ".join(map(str, list(value)[:6])) or "no fields"
        raise PortingError(
            f"{where}: the activation is a Julia object with fields ({fields}), not a named "
            f"function (a closure or a callable struct); porting cannot know what it computes. "
            f"Fix: {_FIX}"
        )
    if not isinstance(value, str):
        raise PortingError(
            f"{where}: the activation is a {type(value).__name__} ({value!r:.60}), not a "
            f"function; expected one of {_SUPPORTED}. Fix: {_FIX}"
        )
    if value in ACTIVATIONS:
        return ACTIVATIONS[value]
    if value in NOT_CONVERTIBLE:
        raise PortingError(
            f"{where}: activation {value} is a known Julia function but porting.model cannot "
            f"convert it yet (it converts {_SUPPORTED}). Fix: {_FIX}"
        )
    if _anonymous(value):
        raise PortingError(
            f"{where}: activation {value!r} is an anonymous function or closure (for example "
            f"x -> max(0, x)); its code is not in the file. Fix: {_FIX}"
        )
    raise PortingError(
        f"{where}: unknown activation function {value!r}; porting converts Knet's "
        f"{_SUPPORTED} (Knet.Ops20.relu, Base.identity, NNlib.σ, ...). Fix: {_FIX}"
    )
