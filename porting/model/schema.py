"""Strict readers for the export's JSON values: an integer is an integer (a boolean, a string
or 2.0 is not one), a number is finite, and every error names the offending key.

>>> integer(3, "conv.mode", "conv layer 'conv1'")
3
>>> integer(True, "conv.mode", "conv layer 'conv1'")
Traceback (most recent call last):
...
porting.errors.PortingError: conv layer 'conv1': conv.mode = True: expected an integer, got a boolean
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from porting.errors import PortingError

__all__ = ["integer", "integers", "number", "text", "keywords", "size", "dropout"]


def _show(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _bad(value: object, key: str, where: str, want: str) -> PortingError:
    got = ""
    if isinstance(value, bool):
        got = ", got a boolean"
    elif isinstance(value, str):
        got = ", got a string"
    elif isinstance(value, float) and not math.isfinite(value):
        got = ", got a non-finite number"
    elif isinstance(value, float):
        got = ", got a fractional number" if not value.is_integer() else ", got a float"
    return PortingError(f"{where}: {key} = {_show(value)}: expected {want}{got}")


def integer(value: object, key: str, where: str) -> int:
    """A JSON integer (not a boolean, string or float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(value, key, where, "an integer")
    if abs(value) > 2**62:
        raise PortingError(f"{where}: {key} = {_show(value)}: expected an integer below 2^62")
    return value


def integers(value: object, key: str, where: str) -> int | tuple[int, ...]:
    """An integer, or a list of integers (one per spatial dimension)."""
    if isinstance(value, list):
        if not value:
            raise PortingError(f"{where}: {key} = []: expected an integer or a list of integers")
        return tuple(integer(v, f"{key}[{i + 1}]", where) for i, v in enumerate(value))
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(value, key, where, "an integer or a list of integers")
    return integer(value, key, where)


def number(value: object, key: str, where: str) -> float:
    """A finite JSON number (not a boolean; NaN and Infinity refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(value, key, where, "a finite number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(value, key, where, "a finite number")
    return float(value) if isinstance(value, float) else value


def text(value: object, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise PortingError(f"{where}: {key} = {_show(value)}: expected a string")
    return value


def size(value: object, key: str, where: str) -> tuple[int, ...]:
    """A list of positive integers (Julia sizes)."""
    if not isinstance(value, list):
        raise PortingError(f"{where}: {key} = {_show(value)}: expected a list of integers")
    out = tuple(integer(v, f"{key}[{i + 1}]", where) for i, v in enumerate(value))
    bad = [s for s in out if s < 1]
    if bad:
        raise PortingError(f"{where}: {key} = {_show(value)}: expected positive sizes")
    return out


_KEYWORD_TYPES: dict[str, Callable[[object, str, str], Any]] = {
    "padding": integers,
    "stride": integers,
    "dilation": integers,
    "window": integers,
    "mode": integer,
    "groups": integer,
    "alpha": number,
}


def keywords(d: object, where: str, section: str, allowed: set[str]) -> dict[str, Any]:
    """The Knet keywords in object `section`: integers or lists of them, `mode` an integer,
    `alpha` a finite number; null means "not set"."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise PortingError(f"{where}: '{section}' = {_show(d)}; expected an object of keywords")
    extra = sorted(set(d) - allowed)
    if extra:
        raise PortingError(
            f"{where}: '{section}' has unknown keys {extra}; expected some of {sorted(allowed)}"
        )
    return {k: _KEYWORD_TYPES[k](v, f"{section}.{k}", where) for k, v in d.items() if v is not None}


def weight(param: Callable[[str], Any], where: str, need: str = "a weight") -> Any:
    """`param("w")`, the layer's weight from the export; PortingError when it has none
    (`need` says what the layer needs, e.g. "an embedding needs w (dim, vocab)")."""
    w = param("w")
    if w is None:
        raise PortingError(f"{where}: has no params.w; {need}")
    return w


def dropout(value: object, where: str) -> float:
    """A layer's `dropout`: a finite number (null: 0; the range is the layer's check)."""
    if value is None:
        return 0.0
    return float(number(value, "dropout", where))
