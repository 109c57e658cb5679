"""Weights inside a loaded JLD2 tree: plain arrays, `Param`s, Knet and CUDA GPU arrays.

`porting.io.load` gives a Julia struct as a dict of its fields, so a weight is found by the
shape of that dict (JLD2 does not keep Julia's type parameters in a form h5py reads;
docs/files.md#knet-save):

- a NumPy array: an `Array{Float32}` saved on the CPU, already Julia-indexed;
- ``{"value": w, "opt": ...}``: AutoGrad's `Param` (its optimiser state `opt` is left out);
- ``{"array": a}``: Knet >= 1.4.4's `JLD2KnetArray` / `JLD2CuArray`, what `Knet.save` and
  `JLD2.@save` write for a GPU array (Knet copies it to the CPU first);
- ``{"ptr": {"ptr", "len", "dev", "parent"}, "dims"}``: a `KnetArray` as older Knet.save wrote
  it. When `ptr.ptr` holds `len` bytes (`dev == -1`: Knet copied the GPU memory into a
  byte vector before saving), those bytes are the array in Julia's column-major order;
  when it holds no bytes, only a GPU address was saved and the weights are not in the file;
- ``{"storage" | "data" | "buf", "dims", ...}``: a CUDA.jl `CuArray` saved as is: a device
  pointer, never the numbers.

>>> import numpy as np
>>> weight({"value": np.ones((2, 3), np.float32), "opt": None}, "w").array.shape
(2, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = ["Weight", "weight", "is_weight", "gpu_kind", "optimiser_kind", "RESAVE"]

RESAVE = (
    "Re-save the model on the CPU with Julia and a GPU: `using Knet; m = cpucopy(model); "
    'Knet.save("model_cpu.jld2", "model", m)` (or `JLD2.@save "model_cpu.jld2" m`); Knet >= '
    "1.4.4's save copies KnetArray/CuArray weights to the CPU itself, CUDA.jl's plain CuArray "
    "needs `Array(w)`"
)

# Knet's optimiser structs (Knet.Train20 / Knet 1.3 update.jl), by their field names.
_OPTIMISERS = {
    "Adam": {"lr", "beta1", "beta2", "eps", "t", "gclip", "fstm", "scndm"},
    "Rmsprop": {"lr", "rho", "eps", "gclip", "G"},
    "Adadelta": {"lr", "rho", "eps", "gclip", "G", "delta"},
    "Adagrad": {"lr", "eps", "gclip", "G"},
    "Momentum": {"lr", "gamma", "gclip", "velocity"},
    "Nesterov": {"lr", "gamma", "gclip", "velocity"},
    "Sgd": {"lr", "gclip"},
}


@dataclass
class Weight:
    """A weight found in the file: the Julia-indexed array and how it was stored."""

    array: np.ndarray
    stored_as: str  # "Array", "Param{Array}", "Param{KnetArray}", ...
    note: str = ""  # how the element type was decided, when the file does not name it


def gpu_kind(node: Any) -> str | None:
    """``"KnetArray"`` / ``"CuArray"`` when `node` is a GPU array saved without its numbers."""
    if not isinstance(node, dict) or "dims" not in node:
        return None
    ptr = node.get("ptr")
    if isinstance(ptr, dict) and {"ptr", "len", "dev"} <= set(ptr):
        return None if isinstance(ptr.get("ptr"), np.ndarray) else "KnetArray"
    if {"storage", "maxsize"} <= set(node) or {"data", "maxsize"} <= set(node):
        return "CuArray"  # CUDA.jl 2-5: a DataRef to device memory
    if "buf" in node or ("ptr" in node and not isinstance(ptr, np.ndarray)):
        return "CuArray"  # CuArrays.jl / CUDAnative era
    return None


def optimiser_kind(node: Any) -> str | None:
    """The Knet optimiser whose fields `node` (a struct as a dict) has, else None."""
    if not isinstance(node, dict):
        return None
    keys = set(node)
    for name, fields in _OPTIMISERS.items():
        if keys == fields:
            return name
    return None


def is_weight(node: Any) -> bool:
    """Whether `node` holds (or wraps) an array: a candidate weight, readable or not."""
    if isinstance(node, np.ndarray):
        return node.dtype.kind in "fc" or node.dtype.kind in "iu"
    if isinstance(node, dict):
        if set(node) == {"value", "opt"}:
            return is_weight(node["value"])
        if set(node) == {"array"}:
            return isinstance(node["array"], np.ndarray)
        return gpu_kind(node) is not None or _knet_bytes(node) is not None
    return False


def _knet_bytes(node: Any):
    if not isinstance(node, dict) or set(node) != {"ptr", "dims"}:
        return None
    ptr = node["ptr"]
    if isinstance(ptr, dict) and isinstance(ptr.get("ptr"), np.ndarray):
        return ptr
    return None


def _dims(node: dict, where: str) -> tuple[int, ...]:
    dims = node.get("dims")
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    if not isinstance(dims, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and d >= 0 for d in dims
    ):
        raise PortingError(f"{where}: a KnetArray with dims {dims!r}; expected a tuple of sizes")
    return tuple(int(d) for d in dims)


def _from_bytes(node: dict, where: str) -> tuple[np.ndarray, str]:
    ptr = _knet_bytes(node)
    assert ptr is not None
    dims = _dims(node, where)
    raw = np.asarray(ptr["ptr"])
    n = math.prod(dims)  # Python ints: no overflow for hostile dims
    nbytes = int(ptr.get("len", raw.size))
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size != nbytes or n == 0:
        raise PortingError(
            f"{where}: a KnetArray of dims {dims} whose saved bytes are {raw.dtype} {raw.shape} "
            f"(len {nbytes}); expected len bytes as a UInt8 vector"
        )
    if nbytes % n:
        raise PortingError(
            f"{where}: a KnetArray of dims {dims} ({n} elements) holding {nbytes} bytes, not a "
            "whole number of bytes per element"
        )
    per = nbytes // n
    # Knet's matrix product and convolution on KnetArrays take Float32 or Float64 only
    # (cuBLAS Sgemm/Dgemm), so the bytes per element name the element type.
    dtypes: dict[int, np.dtype] = {4: np.dtype("<f4"), 8: np.dtype("<f8")}
    dtype = dtypes.get(per)
    if dtype is None:
        raise PortingError(
            f"{where}: a KnetArray of dims {dims} with {per} bytes per element; porting reads "
            "Float32 (4 bytes) or Float64 (8 bytes) weights"
        )
    a = raw.view(dtype).reshape(dims, order="F")  # column-major, as Julia laid it out
    if not np.isfinite(a).all():
        raise PortingError(
            f"{where}: the KnetArray's {nbytes} bytes do not decode to finite "
            f"{'Float32' if per == 4 else 'Float64'} numbers; the file may be damaged"
        )
    note = f"{'Float32' if per == 4 else 'Float64'}: {per} bytes per element"
    return a.astype(dtype.newbyteorder("="), copy=False), note


def weight(node: Any, where: str) -> Weight:
    """The Julia-indexed array stored at `where`, unwrapping `Param` and GPU-array structs.

    Raises `PortingError` naming `where` for a GPU array saved without data (with how to
    re-save it on the CPU), an optimiser state, or anything that is not an array.
    """
    wrapped = ""
    if isinstance(node, dict) and set(node) == {"value", "opt"}:
        node, wrapped = node["value"], "Param"
        where = f"{where}/value"
    if isinstance(node, np.ndarray):
        return Weight(node, f"{wrapped}{{Array}}" if wrapped else "Array")
    kind = gpu_kind(node)
    if kind is not None:
        dims = node.get("dims") if isinstance(node, dict) else None
        raise PortingError(
            f"{where}: a {kind} of size {dims} saved from the GPU without copying it to the "
            f"CPU: the file holds a device pointer, not the weights. {RESAVE}"
        )
    if isinstance(node, dict) and set(node) == {"array"} and isinstance(node["array"], np.ndarray):
        inner = "KnetArray/CuArray (saved through JLD2KnetArray/JLD2CuArray)"
        return Weight(node["array"], f"{wrapped}{{{inner}}}" if wrapped else inner)
    if _knet_bytes(node) is not None:
        a, note = _from_bytes(node, where)
        return Weight(a, f"{wrapped}{{KnetArray}}" if wrapped else "KnetArray", note)
    opt = optimiser_kind(node)
    if opt is not None:
        raise PortingError(
            f"{where}: a Knet {opt} optimiser state, not a weight array; expected the model's "
            "weights"
        )
    got = type(node).__name__ if not isinstance(node, dict) else f"struct {sorted(node)}"
    raise PortingError(f"{where}: expected a weight array, found {got}")
