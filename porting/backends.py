"""The `backend=` names and the record of a choice, shared by `porting.knet` and the bridge.

A leaf module (no imports from the rest of `porting`): `porting.knet` reads the names from here
and imports `porting.bridge` only when a call asks for a backend other than the reference, and
the bridge never imports `porting.knet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKEND_CHOICES = ("auto", "reference", "julia", "julia-nnlib", "worker")
ENV_WORKER = "PORTING_JULIA_WORKER"  # yes/no: Julia in a worker process (read via porting.settings)


@dataclass(frozen=True)
class Resolved:
    """A backend picked for a call: the implementation and why it was picked.

    `impl` is None when the bridge chose the NumPy reference (the caller supplies it)."""

    name: str
    impl: Any  # module or object with conv4/deconv4/pool/mat
    reason: str
