"""Which Knet backend a `backend=` choice gets: "auto" policy (Julia found *and* working, else
the NumPy reference, with the reason), explicit choices, the worker default, and the cache
of resolutions (porting.bridge describes the choices).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from dataclasses import dataclass

from porting import settings
from porting.backends import BACKEND_CHOICES, ENV_WORKER, Resolved
from porting.bridge.discovery import (
    INSTALL_HINT,
    KNET_VERSION,
    Discovery,
    discover,
)
from porting.bridge.probe import Probe, probe_julia
from porting.errors import PortingError

__all__ = ["resolve_backend", "plan_auto", "AutoPlan", "worker_default", "clear_cache"]


def worker_default(worker: bool | None = None) -> bool:
    """Whether Julia runs in a worker process: the `worker` argument, else
    `PORTING_JULIA_WORKER` (yes/no), else yes."""
    if worker is not None and not isinstance(worker, bool):
        raise PortingError(f"worker={worker!r}: expected True or False")
    return settings.flag(ENV_WORKER, True, explicit=worker)


_KEY_ENV = (
    "PATH",
    "PYTHON_JULIACALL_EXE",
    "PYTHON_JULIAPKG_EXE",
    "PYTHON_JULIACALL_PROJECT",
    "PYTHON_JULIAPKG_PROJECT",
    "CONDA_PREFIX",
    "JULIA_DEPOT_PATH",
    "PORTING_JULIA_PACKAGE",
    ENV_WORKER,
)
_KEY_X = ("juliacall-exe", "juliapkg-exe", "juliacall-project", "juliapkg-project")
_cache: dict[tuple, object] = {}
_lock = threading.RLock()


def _key(name: str, worker: bool | None) -> tuple:
    return (
        name,
        worker,
        tuple(os.environ.get(k) for k in _KEY_ENV),
        tuple(sys._xoptions.get(k) for k in _KEY_X),
    )


def clear_cache() -> None:
    """Forget cached resolutions and probes (after installing Julia, or changing settings)."""
    from porting.bridge.probe import clear_probe_cache

    with _lock:
        _cache.clear()
    clear_probe_cache()


def _reference(reason: str) -> Resolved:
    """The NumPy reference, chosen for `reason`; `porting.knet` supplies the module."""
    return Resolved("reference", None, reason)


def _start(backend: str, d: Discovery, in_worker: bool):
    """Start the Julia backend (worker or in-process) and return the implementation."""
    if in_worker:
        from porting.bridge.worker import shared_worker

        return shared_worker(backend)
    from porting.bridge.juliacall_backend import shared_backend

    return shared_backend(d, select=backend)


def _where(impl) -> str:
    pid = getattr(impl, "pid", None)
    return f"in a worker process (pid {pid})" if pid else "in this process (juliacall)"


def _versions(impl) -> str:
    v = getattr(impl, "versions", {}) or {}
    parts = [f"{k} {v[k]}" for k in ("julia", "knet", "nnlib") if k in v]
    return ", ".join(parts)


def _knet_failed(why: str | None) -> bool:
    """PortingKnet's `knet_error` says Knet is installed but did not load (not that it is
    absent, which starts "Knet is not installed")."""
    return bool(why) and not str(why).startswith("Knet is not installed")


def _julia_choice(d: Discovery, p: Probe) -> str:
    assert d.julia is not None
    text = f"Julia {d.julia.version_text} at {d.julia.path} (from {d.julia.via})"
    if p.backend == "julia":
        return f"{text} runs Knet {p.versions.get('knet', KNET_VERSION)}"
    if d.backend == "julia":  # Knet was possible but PortingKnet loaded NNlib only
        why = p.versions.get("knet_error")
        if _knet_failed(why):  # installed but failed to load: Julia's own reason
            return (
                f"{text}: Knet did not load in the Julia project {d.project} [Julia says: {why}], "
                f"so NNlib {p.versions.get('nnlib', '')} runs instead"
            )
        return (
            f"{text}: Knet is not installed in the Julia project {d.project}, so NNlib "
            f"{p.versions.get('nnlib', '')} runs instead (run `porting doctor --install-julia` "
            "for Knet)"
        )
    # docs/julia-versions.md#knet-julia, #nnlib-backend
    return (
        f"{text} is too new for Knet {KNET_VERSION} (Julia <= 1.9 only), so NNlib "
        f"{p.versions.get('nnlib', '')} runs instead: the library Knet's CPU path calls"
    )


@dataclass(frozen=True)
class AutoPlan:
    """What "auto" picks before anything is started: the backend ("julia", "julia-nnlib" or
    "reference"), why, and what to do to get Knet itself."""

    backend: str
    reason: str
    discovery: Discovery
    probe: Probe | None
    advice: tuple[str, ...]


def plan_auto(julia=None, *, probe: bool = True) -> AutoPlan:
    """Decide what "auto" runs: discovery, then (if a usable Julia is found) the cached probe.

    `probe=False` skips starting Julia; the plan then says what discovery alone allows.
    """
    d = discover(julia)
    advice = list(d.advice)
    if not d.usable:
        return AutoPlan("reference", d.reason, d, None, tuple(advice))
    if not probe:
        return AutoPlan(
            d.backend or "reference", d.reason + " (not probed)", d, None, tuple(advice)
        )
    p = probe_julia(d)
    if not p.ok:
        setting = d.julia.setting if d.julia else "Julia"
        advice.insert(0, "run `porting doctor --install-julia` to install the Julia packages")
        return AutoPlan(
            "reference", f"{setting} was found but does not work: {p.problem}", d, p, tuple(advice)
        )
    if p.backend != "julia" and d.backend == "julia":
        why = p.versions.get("knet_error")
        if _knet_failed(why):
            advice.insert(0, f"Knet is installed but did not load; Julia says: {why}")
        else:
            advice.insert(0, "run `porting doctor --install-julia` to install Knet 1.4.10")
    return AutoPlan(p.backend or "julia-nnlib", _julia_choice(d, p), d, p, tuple(advice))


def _auto(worker: bool | None):
    plan = plan_auto()
    if plan.backend == "reference":
        return _reference(plan.reason)
    try:
        impl = _start(plan.backend, plan.discovery, worker_default(worker))
    except PortingError as e:
        reason = f"the Julia backend failed to start: {e}"
        warnings.warn(
            f"porting: {reason}; using the reference backend. Run `porting doctor` to see why.",
            RuntimeWarning,
            stacklevel=4,
        )
        return _reference(reason)
    return Resolved(impl.name, impl, f"{plan.reason}; running {_where(impl)}")


def _explicit(name: str, worker: bool | None):
    d = discover()
    if d.julia is None:
        raise PortingError(
            f"backend={name!r} needs Julia, but {d.reason}. To get it: {INSTALL_HINT}"
        )
    if name == "julia" and d.backend != "julia":  # docs/julia-versions.md#knet-julia
        raise PortingError(
            f"backend='julia' needs Knet {KNET_VERSION}, which installs only on Julia <= 1.9, but "
            f"the Julia found is {d.julia.version_text} ({d.julia.setting}). Use "
            "backend='julia-nnlib' for NNlib (the library Knet's CPU path calls) on this Julia, "
            "or install Julia 1.9 (`juliaup add 1.9`, or `porting doctor --install-julia`) and set "
            "PYTHON_JULIACALL_EXE to it"
        )
    if not d.usable:
        raise PortingError(
            f"backend={name!r} cannot run: {d.reason}. To fix: {'; '.join(d.advice)}"
        )
    p = probe_julia(d)
    if not p.ok:
        raise PortingError(f"backend={name!r}: {d.julia.setting} does not work: {p.problem}")
    if name == "julia" and p.backend != "julia":
        why = p.versions.get("knet_error")
        raise PortingError(
            f"backend='julia' needs Knet {KNET_VERSION}, which is not installed in the Julia "
            f"project {d.project} (Julia {d.julia.version_text} at {d.julia.path})"
            + (f" [Julia says: {why}]" if why else "")
            + ": run `porting doctor --install-julia`, or use backend='julia-nnlib' for NNlib alone"
        )
    impl = _start(name, d, worker_default(worker))
    if name == "julia-nnlib":
        what = f"NNlib {impl.versions.get('nnlib', '')} (Knet's CPU arithmetic, without Knet)"
        assert d.julia is not None
        reason = f"requested; Julia {d.julia.version_text} at {d.julia.path} runs {what}"
    else:
        reason = f"requested; {_julia_choice(d, p)}"
    return Resolved(impl.name, impl, f"{reason}; running {_where(impl)}")


def _worker_backend(worker: bool | None):
    from porting.bridge.worker import shared_worker

    chosen = _auto(worker=True)
    if chosen.name == "reference":
        wk = shared_worker("reference")
        reason = f"reference in a worker process (pid {wk.pid}); {chosen.reason}"
        return Resolved(wk.name or "reference", wk, reason)
    if getattr(chosen.impl, "pid", None):
        return chosen
    wk = shared_worker(chosen.name)
    return Resolved(wk.name or chosen.name, wk, chosen.reason)


def resolve_backend(name: str, *, worker: bool | None = None):
    """`backend=` -> `Resolved(name, impl, reason)`; see the module docstring. Cached per
    settings (environment variables and `-X` options); `clear_cache()` forgets. A reference
    choice has `impl=None` (see the module docstring)."""
    if not isinstance(name, str) or name not in BACKEND_CHOICES:
        raise PortingError(
            f"backend={name!r}: expected one of {', '.join(map(repr, BACKEND_CHOICES))}"
        )
    if name == "reference":
        return _reference("requested")
    key = _key(name, worker)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit  # a cached worker that died restarts on its next call
        if name == "auto":
            resolved = _auto(worker)
        elif name == "worker":
            resolved = _worker_backend(worker)
        else:
            resolved = _explicit(name, worker)
        _cache[key] = resolved
        return resolved
