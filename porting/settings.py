"""Settings read from the environment, each with one parser and one error that quotes its source.

Every `PORTING_*` variable is read through `read` (or one of the typed helpers below), so a bad
value is reported the same way wherever it is used, naming the variable and what it holds:

>>> import os
>>> os.environ["PORTING_EXAMPLE_SECONDS"] = "soon"
>>> seconds("PORTING_EXAMPLE_SECONDS", 5.0)
Traceback (most recent call last):
    ...
porting.errors.PortingError: PORTING_EXAMPLE_SECONDS='soon': expected a number of seconds > 0
>>> del os.environ["PORTING_EXAMPLE_SECONDS"]
>>> seconds("PORTING_EXAMPLE_SECONDS", 5.0)
5.0

An explicit argument always wins over the environment; `explicit` takes it, and an error about
it says "argument" instead of the variable name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

from porting.errors import PortingError

T = TypeVar("T")

_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")


def _source(name: str, explicit: object) -> tuple[object, str] | None:
    if explicit is not None:
        return explicit, f"{name.lower().removeprefix('porting_')} argument"
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip(), name


def read(
    name: str,
    parse: Callable[[object], T | None],
    default: T,
    expected: str,
    *,
    explicit: object = None,
) -> T:
    """`explicit` if given, else environment variable `name`, else `default`.

    `parse` returns the parsed value or None when the value is not acceptable; the error then
    quotes the value, where it came from, and `expected`.
    """
    found = _source(name, explicit)
    if found is None:
        return default
    value, where = found
    try:
        parsed = parse(value)
    except (ValueError, TypeError, OverflowError):
        parsed = None
    if parsed is None:
        raise PortingError(f"{where}={value!r}: expected {expected}") from None
    return parsed


def _parse_flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def flag(name: str, default: bool, *, explicit: bool | None = None) -> bool:
    """A yes/no setting: 1/yes/true/on or 0/no/false/off (any case)."""
    return read(
        name, _parse_flag, default, "yes or no (1/0, true/false, on/off)", explicit=explicit
    )


def _parse_positive(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) and number > 0 else None


def seconds(name: str, default: float, *, explicit: float | None = None) -> float:
    """A positive, finite number of seconds."""
    return read(name, _parse_positive, default, "a number of seconds > 0", explicit=explicit)


def _parse_count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if len(text) > 30 or not text.isdigit():
            return None
        number = int(text)
    return number if number >= 1 else None


def count(name: str, default: int, *, explicit: int | None = None) -> int:
    """A whole number >= 1 (threads, nodes, ...)."""
    return read(name, _parse_count, default, "a whole number >= 1", explicit=explicit)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}  # fmt: skip


def _parse_bytes(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    text = str(value).strip().lower().replace(" ", "")
    if len(text) > 40:
        return None
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :]
    if unit not in _UNITS or not digits:
        return None
    try:
        number = float(digits)
    except ValueError:  # "1.2.3", "1e", ...
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    size = number * _UNITS[unit]
    if size < 1 or (_UNITS[unit] == 1 and not number.is_integer()):
        return None  # a fraction of a byte is no size (1.5 is not silently 1)
    return int(size)


def size_bytes(name: str, default: int, *, explicit: int | str | None = None) -> int:
    """A size in bytes: an integer, or a number with a unit (`512M`, `2GiB`, `64kB`)."""
    return read(
        name,
        _parse_bytes,
        default,
        "a size > 0 in bytes, e.g. 2000000000 or 2GiB",
        explicit=explicit,
    )


def text(name: str, default: str | None = None, *, explicit: str | None = None) -> str | None:
    """A free-text setting (a path, a name); empty counts as unset."""
    found = _source(name, explicit)
    return default if found is None else str(found[0])
