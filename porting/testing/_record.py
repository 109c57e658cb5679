"""Where port checks are recorded: the pytest plugin's fixture and `--porting-report`.

Every `porting.testing.assert_*` call builds one `Check` and hands it to each active
`Recorder`; with none active (the default), recording costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Check", "Recorder", "record", "verbosity"]


@dataclass
class Check:
    """One port check: what was compared, whether it passed, its worst error and the cause."""

    kind: str  # "close", "conv4", "layer", "model"
    ok: bool
    label: str
    shape: tuple[int, ...] | None
    max_abs_error: float | None
    error_to_tolerance: float | None  # worst |e - a| / tol: < 1 within bounds
    tolerance: str  # how the tolerance was derived
    cause: str | None = None  # the diagnosed cause when it failed
    test: str | None = None  # the pytest node id, filled in by the recorder
    detail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        for key in ("max_abs_error", "error_to_tolerance"):
            v = d[key]
            if v is not None and not math.isfinite(v):
                d[key] = str(v)  # JSON has no NaN/Infinity: "nan", "inf" as strings
        return d


class Recorder:
    """Collects the checks made while it is active (`with recorder:`); `checks` holds them."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.test: str | None = None

    def add(self, check: Check) -> None:
        if check.test is None:
            check.test = self.test
        self.checks.append(check)

    def __enter__(self) -> Recorder:
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def __len__(self) -> int:
        return len(self.checks)

    def __iter__(self):
        return iter(self.checks)

    def __getitem__(self, i):
        return self.checks[i]


_ACTIVE: list[Recorder] = []
_STATE: dict[str, Any] = {"verbosity": 0, "test": None}


def record(check: Check) -> None:
    """Hand `check` to every active recorder (the current test's id attached)."""
    if check.test is None:
        check.test = _STATE["test"]
    for r in list(_ACTIVE):
        r.add(check)


def verbosity() -> int:
    """pytest's verbosity when the plugin runs (-q: -1), else 0: short messages under -q."""
    return int(_STATE["verbosity"] or 0)
