"""Explain a mismatch between a Knet result and its port: `diagnose(expected, actual, ...)`.

The answer is a `Diagnosis` whose `cause` is one of `CAUSES`: `rounding` (no bug: within the
floating-point bound of porting.compare), `kernel_flip`, `spatial_transpose`, `padding_shift`,
`flatten_order`, `precision`, `quantization`, `layout`, or `unknown`, with numeric evidence and
the ranked alternatives. Nothing here imports TensorFlow.

The module itself is callable, so `porting.diagnose(...)` works whether or not
`porting.diagnose` was imported as a module first.
"""

from __future__ import annotations

from porting._callable import make_callable
from porting.diagnose._core import K_ASSUMED, MAX_POSITIONS, diagnose
from porting.diagnose._result import CAUSE_MEANING, CAUSES, Diagnosis, Finding

__all__ = [
    "diagnose",
    "Diagnosis",
    "Finding",
    "CAUSES",
    "CAUSE_MEANING",
    "K_ASSUMED",
    "MAX_POSITIONS",
]


make_callable(__name__, "diagnose")
