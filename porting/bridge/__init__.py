"""The Julia side of `porting`: discovery, the juliacall backend and the worker process.

`resolve_backend(name)` turns `backend=` into an implementation, never downloading anything:

- "auto": Knet (or NNlib) in Julia when Julia is found *and* works (a cached probe), otherwise
  the NumPy reference, with the reason (`Resolved.reason`). The bridge never imports the
  reference itself (`porting.knet` depends on the bridge, not the other way round): a
  reference choice comes back with `impl=None`, which `porting.knet` fills in.
- "julia" / "julia-nnlib": the Julia backend, or a `PortingError` saying what to do.
- "worker": a worker process hosting what "auto" would pick (the reference here, without Julia).

Julia backends run in a worker process by default (`PORTING_JULIA_WORKER=no` for in-process
juliacall); see `porting.bridge.worker` for why.

>>> resolve_backend("auto").reason  # doctest: +SKIP
'no Julia found: PYTHON_JULIACALL_EXE unset, PYTHON_JULIAPKG_EXE unset, no juliapkg environment at /venv/julia_env, `julia` not on PATH'
"""

from __future__ import annotations

from porting.backends import BACKEND_CHOICES, ENV_WORKER, Resolved  # noqa: F401 - as before
from porting.bridge.arrays import from_julia, to_julia_layout
from porting.bridge.discovery import (  # noqa: F401 - INSTALL_HINT, KNET_VERSION: as before
    INSTALL_HINT,
    KNET_VERSION,
    Discovery,
    JuliaCandidate,
    discover,
)
from porting.bridge.paths import julia_package_dir, julia_source_file
from porting.bridge.probe import Probe, probe_julia
from porting.bridge.resolve import AutoPlan, clear_cache, plan_auto, resolve_backend, worker_default

__all__ = [
    "Discovery",
    "JuliaCandidate",
    "Probe",
    "discover",
    "probe_julia",
    "resolve_backend",
    "plan_auto",
    "AutoPlan",
    "worker_default",
    "clear_cache",
    "to_julia_layout",
    "from_julia",
    "julia_package_dir",
    "julia_source_file",
    "WorkerBackend",
    "JuliacallBackend",
    "Resolved",
    "BACKEND_CHOICES",
]


def __getattr__(name):
    if name == "WorkerBackend":
        from porting.bridge.worker import WorkerBackend

        return WorkerBackend
    if name == "JuliacallBackend":
        from porting.bridge.juliacall_backend import JuliacallBackend

        return JuliacallBackend
    raise AttributeError(f"module 'porting.bridge' has no attribute {name!r}")
