"""The worker process: loads the backend it hosts and answers the parent's requests.

Started by `porting.bridge.worker.WorkerBackend` as `python -c "...serve(sys.argv[1:])"
BACKEND`; see that module for the protocol. For a Julia backend the parent has already set the
juliacall environment (`juliacall_env`) and a signal configuration juliacall documents as safe
(docs/julia-versions.md#signals).
"""

from __future__ import annotations

import os
import time
import traceback
from multiprocessing.shared_memory import SharedMemory
from typing import Literal

import numpy as np

from porting.bridge.shm import (
    _SMALL_SLOT,
    PROTOCOL,
    _check_shareable,
    _disable_resource_tracker,
    _header,
    _order,
    _order_of,
    _read_msg,
    _worker_shm,
    _write_msg,
)
from porting.errors import PortingError


def _load_backend(spec: str):
    if spec == "reference":
        import importlib

        # by name: the bridge never imports porting.knet statically (porting.knet depends on it)
        reference = importlib.import_module("porting.knet.reference")
        return reference, "reference", {}
    if spec in ("julia", "julia-nnlib"):
        from porting.bridge.juliacall_backend import JuliacallBackend

        impl = JuliacallBackend(select=spec).load()  # "julia" raises Julia's reason if no Knet
        return impl, impl.name, impl.versions
    if ":" in spec:
        import importlib

        module, _, attr = spec.partition(":")
        impl = getattr(importlib.import_module(module), attr)
        name = getattr(impl, "NAME", None) or spec
        return impl, str(name), dict(getattr(impl, "VERSIONS", {}) or {})
    raise PortingError(
        f"backend={spec!r}: the worker hosts 'reference', 'julia', 'julia-nnlib' or "
        "'module:attribute'"
    )


class _Server:
    def __init__(self, impl):
        self.impl = impl
        self.inputs: dict[int, SharedMemory] = {}  # argument position -> mapped slot
        self.results: dict[str, SharedMemory] = {}  # pooled result segments, by key

    def array(self, index: int, ref: dict) -> np.ndarray:
        if ref["shm"] is None:
            return np.empty(ref["shape"], dtype=np.dtype(ref["dtype"]), order=_order(ref))
        shm = self.inputs.get(index)
        if shm is None or shm.name != ref["shm"].lstrip("/"):
            if shm is not None:
                try:
                    shm.close()
                except BufferError:
                    pass  # still viewed by a live array; the mapping goes with it
            shm = self.inputs[index] = _worker_shm(ref["shm"])
        return np.ndarray(
            ref["shape"], dtype=np.dtype(ref["dtype"]), buffer=shm.buf, order=_order(ref)
        )

    def publish(self, y, msg: dict) -> dict:
        """Put a result where the parent can see it: the small-result slot, a free pooled
        segment the parent offered, or a new segment (kept mapped here for later reuse)."""
        y = np.asarray(y)
        _check_shareable(y, "the result")
        order = _order_of(y)
        if y.nbytes == 0:
            return _header(None, y, order)
        small = msg.get("small")
        if small is not None and y.nbytes <= small["size"]:
            slot = self.inputs.get(_SMALL_SLOT)
            if slot is None or slot.name != small["shm"]:
                slot = self.inputs[_SMALL_SLOT] = _worker_shm(small["shm"])
            self._copy(y, slot, order)
            return dict(_header(slot.name, y, order), small=True)
        fits = [
            (size, key)
            for key, size in msg.get("pool", ())
            if key in self.results and y.nbytes <= size <= 2 * y.nbytes
        ]
        if fits:
            key = min(fits)[1]
            self._copy(y, self.results[key], order)
            return _header(key, y, order)
        key = msg["out"]
        shm = _worker_shm(key, create=True, size=y.nbytes)
        try:
            self._copy(y, shm, order)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        self.results[key] = shm  # the parent maps it by name, then unlinks the name
        return dict(_header(key, y, order), new=True)

    @staticmethod
    def _copy(y: np.ndarray, shm: SharedMemory, order: Literal["C", "F"]) -> None:
        dst = np.ndarray(y.shape, dtype=y.dtype, buffer=shm.buf, order=order)
        np.copyto(dst, y, casting="no")
        del dst

    def drop(self, keys) -> None:
        for key in keys:
            shm = self.results.pop(key, None)
            if shm is not None:
                try:
                    shm.close()
                except BufferError:
                    pass

    def handle(self, msg: dict) -> dict:
        self.drop(msg.get("drop", ()))
        op = msg["op"]
        if op == "ping":
            return {"ok": True, "value": {"pid": os.getpid(), "time": time.time()}}
        if op not in ("conv4", "deconv4", "pool", "mat"):
            raise PortingError(f"unknown worker operation {op!r}")
        arrays = [self.array(i, ref) for i, ref in enumerate(msg["arrays"])]
        p = msg["params"]
        fn = getattr(self.impl, op)
        if op == "mat":
            y = fn(arrays[0], p["dims"])
        else:
            y = fn(*arrays, p["geom"], p["alpha"])
        result = self.publish(y, msg)
        del arrays, y
        return {"ok": True, "result": result}


def serve(argv: list[str]) -> None:
    """Worker entry point: `python -c "...serve(sys.argv[1:])" BACKEND`."""
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # whatever Python or Julia prints goes to stderr, never into the channel
    _disable_resource_tracker()
    spec = argv[0] if argv else "reference"
    try:
        impl, name, versions = _load_backend(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        _write_msg(wfd, {"ok": False, "type": type(e).__name__, "message": str(e)})
        return
    _write_msg(
        wfd,
        {
            "ok": True,
            "hello": {
                "protocol": PROTOCOL,
                "backend": name,
                "versions": versions,
                "pid": os.getpid(),
            },
        },
    )
    server = _Server(impl)
    while True:
        try:
            msg = _read_msg(rfd)
        except EOFError:
            return  # the parent went away
        if msg.get("op") == "close":
            return
        try:
            reply = server.handle(msg)
        except Exception as e:  # noqa: BLE001 - every error goes back to the caller
            reply = {
                "ok": False,
                "type": type(e).__name__,
                "message": str(e),
                "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
            }
            e.__traceback__ = None  # drop frames that still view the input segments
        try:
            _write_msg(wfd, reply)
        except OSError:
            return  # the parent went away
