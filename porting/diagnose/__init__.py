"""Explain a mismatch between a Knet result and its port: `diagnose(expected, actual, ...)`.

The answer is a `Diagnosis` whose `cause` is one of `CAUSES`: `rounding` (no bug: within the
floating-point bound of porting.compare), `kernel_flip`, `spatial_transpose`, `padding_shift`,
`flatten_order`, `precision`, `quantization`, `layout`, or `unknown`, with numeric evidence and
the ranked alternatives. Nothing here imports TensorFlow.

The module itself is callable, so `porting.diagnose(...)` works whether or not
`porting.diagnose` was imported as a module first.
"""

from __future__ import annotations

import sys
import types

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


class _CallableModule(types.ModuleType):
    """`import porting.diagnose` binds the module as `porting.diagnose`; calling it calls
    `diagnose` so that `porting.diagnose(expected, actual)` works either way."""

    def __call__(self, *args, **kwargs):
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
