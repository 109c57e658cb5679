"""Which implementation computes the Knet side.

- "reference": the NumPy reimplementation in `porting.knet.reference` (always available).
- "julia" / "julia-nnlib": Knet itself (or NNlib, on a Julia too new for Knet) through juliacall;
  provided by `porting.bridge` when a Julia installation is found (in a worker process by
  default; `PORTING_JULIA_WORKER=no` for in-process).
- "worker": what "auto" would pick, run in a separate process (`porting.bridge.worker`).
- "auto": the best available, with the reason recorded in the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from porting._checks import short_repr
from porting.backends import BACKEND_CHOICES, Resolved
from porting.errors import PortingError

__all__ = ["BACKEND_CHOICES", "Resolved", "KnetResult", "resolve", "tag"]


def _reference() -> Resolved:
    from porting.knet import reference

    return Resolved(reference.NAME, reference, "requested")


def resolve(backend: str) -> Resolved:
    """Turn a `backend=` argument into an implementation; never downloads anything."""
    if not isinstance(backend, str) or backend not in BACKEND_CHOICES:
        raise PortingError(
            f"backend={short_repr(backend)}: expected one of {', '.join(map(repr, BACKEND_CHOICES))}"
        )
    if backend == "reference":
        return _reference()
    from porting.bridge import resolve_backend  # imports no Julia; discovery only

    chosen = resolve_backend(backend)
    if chosen.impl is None:  # the bridge fell back to the reference, with its reason
        from porting.knet import reference

        return Resolved(reference.NAME, reference, chosen.reason)
    return chosen


class KnetResult(np.ndarray):
    """A Julia-indexed result array that remembers which backend computed it (`.backend`) and
    why that backend was picked (`.backend_reason`)."""

    backend: str | None = None
    backend_reason: str | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.backend = getattr(obj, "backend", None)
        self.backend_reason = getattr(obj, "backend_reason", None)


def tag(y: np.ndarray, resolved: Resolved) -> KnetResult:
    out = np.asarray(y).view(KnetResult)
    out.backend = resolved.name
    out.backend_reason = resolved.reason
    return out
