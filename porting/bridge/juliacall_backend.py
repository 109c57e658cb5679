"""Knet (or NNlib) in this Python process through juliacall.

Nothing here runs at import: `JuliacallBackend.load()` imports juliacall, and only after
discovery found a Julia executable and the settings of `juliacall_env.launch_environment` are
in place, so that juliacall starts the Julia and project discovery checked and juliacall and
juliapkg never download anything: `PYTHON_JULIAPKG_OFFLINE=yes` always; with juliacall >= 0.9.28
and an existing project, `PYTHON_JULIACALL_EXE` and `PYTHON_JULIACALL_PROJECT` together (one
alone is completed, never left alone: juliacall refuses that); otherwise juliapkg's own settings,
`PYTHON_JULIAPKG_EXE` only when juliapkg would pick another Julia by itself (setting it when it
changes nothing makes juliapkg resolve again). The rules: docs/julia-versions.md#juliacall-env,
#juliapkg-env.

`import juliacall` is attempted once per process: if it fails, Julia may be half started
(`jl_init` cannot run twice; docs/julia-versions.md#signals), so later calls repeat the first
error instead of importing again.

It then `include`s `src/PortingKnet.jl` (see `porting.bridge.paths`) and calls its `conv4`,
`deconv4`, `pool` and `mat` with Knet's keywords. Arrays go in through `to_julia_layout` (no copy
for Fortran-ordered input) and come back through `from_julia` (no copy). Julia exceptions become
`PortingError` with Julia's own message kept.

In a process that also holds TensorFlow, prefer the worker (`porting.bridge.worker`): see there.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np

from porting.bridge import discovery as _disc
from porting.bridge.arrays import from_julia, to_julia_layout
from porting.bridge.juliacall_env import effective_settings, launch_environment
from porting.errors import PortingError
from porting.geometry import ConvGeometry, PoolGeometry


def configure_environment(d: _disc.Discovery, environ=None) -> dict[str, str | None]:
    """Set the variables that keep juliacall/juliapkg offline and on the discovered Julia and
    project, by the installed juliacall's rules (`juliacall_env.launch_environment`).

    Changes `environ` (default `os.environ`) and returns what changed (None = removed).
    Refuses when no Julia was found: importing juliacall then would make juliapkg download one.
    """
    if d.julia is None or d.julia.path is None:
        raise PortingError(
            "juliacall cannot start without a Julia executable: " + d.reason + "; importing "
            "juliacall now would download Julia, which porting never does implicitly: "
            + _disc.INSTALL_HINT
        )
    if environ is None:
        environ = os.environ
    launch = launch_environment(
        d.julia.path, d.project, d.juliacall, effective_settings(environ, sys._xoptions)
    )
    return launch.apply(environ)


def _julia_message(e: BaseException) -> str:
    """Julia's own formatted message for a juliacall `JuliaError` (str() gives showerror)."""
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - formatting a Julia error must not hide it
        text = repr(e)
    return text.strip() or type(e).__name__


class _Session:
    """The one Julia of this process: juliacall imported, PortingKnet included (once)."""

    def __init__(self):
        self.lock = threading.RLock()  # juliacall is not thread-safe
        self.mod: Any = None
        self.select_fn: Any = None
        self.selected: str | None = None
        self.environment: dict[str, str | None] = {}
        self.failed: str | None = None  # why `import juliacall` failed (never retried)

    def boot(self, discovery: _disc.Discovery | None, package) -> None:
        if self.mod is not None:
            return
        if self.failed is not None:
            raise PortingError(self.failed)
        from porting.bridge.paths import julia_source_file

        source = julia_source_file(package)
        if sys.modules.get("juliacall") is None:  # not yet imported (by us or the user)
            d = discovery or _disc.discover()
            if d.juliacall is None:
                raise PortingError(
                    f"the Julia backend needs juliacall, which is not installed: "
                    f"{_disc.JULIACALL_HINT}"
                )
            if not d.usable:
                raise PortingError(f"the Julia backend cannot start: {d.reason}")
            self.environment = configure_environment(d)
        try:
            import juliacall  # deliberately lazy: this starts Julia
        except Exception as e:  # noqa: BLE001 - juliapkg/juliacall raise plain Exceptions
            self.failed = (
                f"juliacall could not start Julia: {type(e).__name__}: {_julia_message(e)}; "
                "run `porting doctor` to see which Julia and project it used, and "
                "`porting doctor --install-julia` to install the Julia packages (this process "
                "will not import juliacall again: Julia cannot be started twice in one process)"
            )
            raise PortingError(self.failed) from None
        jl = juliacall.Main
        try:
            jl.include(str(source))
            self.select_fn = jl.seval("PortingKnet.select_backend!")
            self.mod = jl.PortingKnet
        except Exception as e:  # noqa: BLE001 - JuliaError and conversion errors alike
            raise PortingError(f"loading {source} in Julia failed: {_julia_message(e)}") from None

    def select(self, name: str) -> None:
        """PortingKnet.select_backend!: "julia" (Knet, or Julia's error saying why not),
        "julia-nnlib" (NNlib even where Knet is installed), "auto"."""
        if self.selected == name:
            return
        try:
            self.select_fn(name)
        except Exception as e:  # noqa: BLE001
            raise PortingError(
                f"backend {name!r} is not available in Julia: {_julia_message(e)}"
            ) from None
        self.selected = name


_session = _Session()


class JuliacallBackend:
    """The Julia side in this process: `conv4/deconv4/pool/mat` on Julia-indexed arrays.

    `select` is the backend asked for ("julia", "julia-nnlib" or "auto"); `name` is what
    PortingKnet reports after loading: "julia" (Knet) or "julia-nnlib" (NNlib). Several
    instances share the process's one Julia session.
    """

    def __init__(
        self,
        discovery: _disc.Discovery | None = None,
        julia_package=None,
        select: str = "auto",
    ):
        if select not in ("auto", "julia", "julia-nnlib"):
            raise PortingError(f"select={select!r}: expected 'auto', 'julia' or 'julia-nnlib'")
        self._discovery = discovery
        self._package = julia_package
        self.select = select
        self.name: str | None = None
        self.versions: dict[str, str] = {}
        self.copies = 0  # inputs that had to be made Fortran-ordered (see to_julia_layout)

    @property
    def environment(self) -> dict[str, str | None]:
        """The juliacall/juliapkg variables set before juliacall was imported."""
        return dict(_session.environment)

    def load(self) -> JuliacallBackend:
        with _session.lock:
            _session.boot(self._discovery, self._package)
            if self.name is not None:
                return self
            _session.select(self.select)
            mod = _session.mod
            try:
                name = str(mod.backend_name())
                versions = {
                    str(k).lower(): str(v) for k, v in mod.versions().items() if v is not None
                }
            except Exception as e:  # noqa: BLE001
                raise PortingError(f"PortingKnet.versions() failed: {_julia_message(e)}") from None
            if name not in ("julia", "julia-nnlib"):
                raise PortingError(
                    f"PortingKnet.backend_name() returned {name!r}; expected 'julia' or "
                    "'julia-nnlib'"
                )
            self.name, self.versions = name, versions
            return self

    # ------------------------------------------------------------------ calls

    def _arg(self, a: np.ndarray, name: str) -> np.ndarray:
        out, copied = to_julia_layout(a, name)
        self.copies += copied
        return out

    def _call(self, op: str, args: tuple, kwargs: dict, dtype: np.dtype) -> np.ndarray:
        self.load()
        with _session.lock:
            _session.select(self.select)
            try:
                y = getattr(_session.mod, op)(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - juliacall.JuliaError carries Julia's message
                if type(e).__name__ == "JuliaError":
                    raise PortingError(f"Knet {op} failed in Julia: {_julia_message(e)}") from None
                raise PortingError(
                    f"Knet {op} through juliacall failed: {type(e).__name__}: {e}"
                ) from None
            return from_julia(y, dtype=dtype, name=f"{op} result")

    def conv4(self, w, x, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
        return self._conv("conv4", w, x, geom, alpha)

    def deconv4(self, w, x, geom: ConvGeometry, alpha: float = 1.0) -> np.ndarray:
        return self._conv("deconv4", w, x, geom, alpha)

    def _conv(self, op: str, w, x, geom: ConvGeometry, alpha: float) -> np.ndarray:
        kw = dict(
            padding=geom.padding,
            stride=geom.stride,
            dilation=geom.dilation,
            mode=geom.mode,
            alpha=alpha,
        )
        return self._call(op, (self._arg(w, "w"), self._arg(x, "x")), kw, np.asarray(x).dtype)

    def pool(self, x, geom: PoolGeometry, alpha: float = 1.0) -> np.ndarray:
        kw = dict(
            window=geom.window,
            padding=geom.padding,
            stride=geom.stride,
            mode=geom.mode,
            alpha=alpha,
        )
        return self._call("pool", (self._arg(x, "x"),), kw, np.asarray(x).dtype)

    def mat(self, x, dims: int) -> np.ndarray:
        return self._call("mat", (self._arg(x, "x"),), {"dims": int(dims)}, np.asarray(x).dtype)

    def info(self) -> dict:
        return {"backend": self.name, "versions": dict(self.versions), "process": "in-process"}


_shared: dict[str, JuliacallBackend] = {}
_shared_lock = threading.Lock()


def shared_backend(
    discovery: _disc.Discovery | None = None, select: str = "auto"
) -> JuliacallBackend:
    """The in-process Julia backend for `select` (one Julia session serves them all)."""
    with _shared_lock:
        backend = _shared.get(select)
        if backend is None:
            backend = _shared[select] = JuliacallBackend(discovery, select=select)
    return backend.load()
