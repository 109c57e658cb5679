"""The reference's Float32 convolutions on onnxruntime's compiled kernels (MLAS), where installed.

`porting.knet.reference` computes a convolution as NNlib does on the CPU: each output is a sum
of `K` products formed in the element type (docs/knet.md#conv4). Which order the BLAS sums
them in was never part of that: Knet's own result depends on the OpenBLAS Julia loads, ours on
the one NumPy ships, and the rounding bound the tolerance rests on holds for every order
(docs/numerics.md#summation-order). So the same sums may come from another well-kept kernel,
and onnxruntime's CPU `Conv` (Microsoft's MLAS: im2col and an AVX-512/AVX2 SGEMM, or with the
weights fixed a direct convolution in a channel-blocked layout) runs them at TensorFlow's speed where NumPy's OpenBLAS runs at half of it
(benchmarks/bench_conv4.py, README "Performance"). It shares no code with TensorFlow's
kernels (oneDNN, Eigen), so the check stays a comparison of two implementations.

Used for Float32 cross-correlations with nonnegative padding of at least `MIN_MACS`
multiply-adds, and for every grouped one (Ops21's groups, depthwise convolutions: NumPy runs
one conv4 per channel block, hundreds of calls for a MobileNet layer), when `onnxruntime` and
`onnx` import (`pip install "porting[fast]"`); Float64 (no MLAS kernel), crops and small
convolutions stay on NumPy. `PORTING_CONV_KERNEL`: "auto" (that
rule), "numpy" (never), "onnxruntime" (every Float32 convolution it can run; an error if it is
missing). `kernel("numpy")` does the same for a block of code: checking an ONNX file under
onnxruntime needs a Knet side computed by other code (porting.model.onnx_out).

Two ways to run, each giving the same bits for the same call whatever the thread count or the
batch it is part of (each image's sums are computed alone):
- by default the kernel is an input of the session, one session per geometry (sizes are left
  free), so a one-off convolution costs no preparation;
- inside `reusing_weights()` (verify-data over many batches; the benchmark), for a call of
  at least `REUSE_MIN_POSITIONS` output positions (so the choice follows from the call's
  sizes, batch included), a session per kernel holds its weights as a constant, which lets onnxruntime prepare them once (the
  blocked layout); the kernel's bytes are its key (a SHA-1 digest per call, 1-3% of the
  convolution's time), so an array changed in place is never served a stale session. The two
  ways sum in different orders: their results differ by rounding, within the same bound.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from porting import settings
from porting.errors import PortingError

KERNELS = ("auto", "numpy", "onnxruntime")
# Below this many multiply-adds NumPy's own convolution takes well under a millisecond and
# onnxruntime's per-call overhead (tens of microseconds) would be a fair part of it.
MIN_MACS = 1 << 22
# Inside `reusing_weights()`, a convolution with fewer output positions (batch x output
# pixels) than this runs one-off: each kernel element serves that many multiply-adds, and
# hashing it (about 2 ns a weight) would pass 4% of the convolution below 4096 (ResNet-50's
# 7x7 stage at batch 4: 196 positions, the hash 3x the convolution; README "Performance").
REUSE_MIN_POSITIONS = 4096
# Constant-weight sessions are kept up to this many bytes of weights (each holds its prepared
# copy); the least recently used go first.
_REUSE_BYTES = 1 << 30
_GEOMETRY_SESSIONS = 64

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("kernel", default=None)
_reuse: contextvars.ContextVar[WeightSessions | None] = contextvars.ContextVar(
    "reuse", default=None
)
_lock = threading.Lock()
_geometry: OrderedDict[tuple, Any] = OrderedDict()
_ort: Any = None  # the module, once imported; False when it failed
_ort_error = ""


def _parse_kernel(value: object) -> str | None:
    text = str(value).strip().lower()
    return text if text in KERNELS else None


def setting() -> str:
    """The kernel asked for: `kernel(...)`'s, else PORTING_CONV_KERNEL, else "auto"."""
    forced = _override.get()
    if forced is not None:
        return forced
    return settings.read(
        "PORTING_CONV_KERNEL", _parse_kernel, "auto", "one of " + ", ".join(map(repr, KERNELS))
    )


@contextlib.contextmanager
def kernel(name: str) -> Iterator[None]:
    """Run the block's reference convolutions on kernel `name` (one of KERNELS)."""
    if _parse_kernel(name) is None:
        raise PortingError(f"kernel={name!r}: expected one of {', '.join(map(repr, KERNELS))}")
    token = _override.set(str(name).strip().lower())
    try:
        yield
    finally:
        _override.reset(token)


def _runtime() -> Any:
    """onnxruntime (with onnx, which writes the one-node models), or None if either fails."""
    global _ort, _ort_error
    if _ort is None:
        with _lock:
            if _ort is None:
                try:
                    import onnx  # noqa: F401  (the models are written with onnx.helper)
                    import onnxruntime as ort

                    # One CPU arena shared by porting's sessions (see `_session`), grown by
                    # what is asked (not doubled); registered once per process.
                    info = ort.OrtMemoryInfo(
                        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
                    )
                    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                    _ort = ort
                except Exception as e:  # ImportError, or a broken install's own error
                    _ort, _ort_error = False, f"{type(e).__name__}: {e}"
    return _ort or None


def available() -> bool:
    return _runtime() is not None


def describe() -> str:
    """Which kernel the reference's Float32 convolutions use here, in words."""
    chosen = setting()
    if chosen == "numpy":
        return "numpy (PORTING_CONV_KERNEL or kernel('numpy'))"
    ort = _runtime()
    if ort is None:
        return f"numpy (onnxruntime unavailable: {_ort_error})"
    rule = "all Float32" if chosen == "onnxruntime" else f">= {MIN_MACS} multiply-adds"
    return f"onnxruntime {ort.__version__} (MLAS) for Float32 convolutions of {rule}; else numpy"


class WeightSessions:
    """Constant-weight sessions kept by `reusing_weights()`, least recently used first."""

    def __init__(self) -> None:
        self.sessions: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    def get(self, key: tuple, make: Any, nbytes: int) -> Any:
        with self.lock:
            hit = self.sessions.get(key)
            if hit is not None:
                self.sessions.move_to_end(key)
                return hit[0]
        made = make()
        with self.lock:
            if key not in self.sessions:
                self.sessions[key] = (made, nbytes)
                self.nbytes += nbytes
                while self.nbytes > _REUSE_BYTES and len(self.sessions) > 1:
                    _, (_, gone) = self.sessions.popitem(last=False)
                    self.nbytes -= gone
            return self.sessions[key][0]


@contextlib.contextmanager
def reusing_weights(sessions: WeightSessions | None = None) -> Iterator[WeightSessions]:
    """Within the block, convolutions keep a prepared session per kernel (see the module's
    note) in `sessions` (default: a fresh set, dropped when the block ends; an enclosing
    block's when nested). Pass the same `WeightSessions` to several blocks to share them."""
    current = _reuse.get()
    if sessions is None and current is not None:
        yield current
        return
    token = _reuse.set(sessions if sessions is not None else WeightSessions())
    try:
        yield _reuse.get()  # type: ignore[misc]
    finally:
        _reuse.reset(token)


def _model(
    nd: int,
    pad: Sequence[int],
    stride: Sequence[int],
    dil: Sequence[int],
    groups: int,
    w: np.ndarray | None,
) -> bytes:
    from onnx import TensorProto, helper

    free = ["n", "c", *(f"x{i}" for i in range(nd))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, free)]
    init = []
    if w is None:
        kdims = ["f", "c", *(f"k{i}" for i in range(nd))]
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, kdims))
    else:
        t = TensorProto()
        t.name, t.data_type = "w", TensorProto.FLOAT
        t.dims.extend(w.shape)
        t.raw_data = w.tobytes()
        init.append(t)
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        pads=[*pad, *pad],  # begins then ends, both symmetric here
        strides=list(stride),
        dilations=list(dil),
        group=groups,
    )
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "porting_conv", inputs, [out], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime >= 1.18 reads IR 8 (opset 17)
    return bytes(model.SerializeToString())


def _session(blob: bytes, threads: int) -> Any:
    ort = _runtime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Threads that spin between calls would take the cores TensorFlow and NumPy run on next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Every session allocates from the one arena `_runtime` registered: its memory is that
    # of the largest convolution's temporaries, not a sum over the sessions kept. (Without an
    # arena each call's large temporaries were mapped and unmapped anew: up to 30 ms on a
    # 4 ms convolution; with an arena per session, 400 MB for 30 kernels. README "Performance".)
    so.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


def _threads() -> int:
    from porting._transpose import _threads as usable

    return usable(None)


def correlate(
    wt: np.ndarray,
    xt: np.ndarray,
    pad: Sequence[int],
    stride: Sequence[int],
    dil: Sequence[int],
    out: np.ndarray,
    groups: int = 1,
) -> bool:
    """`reference._correlate`'s cross-correlation on onnxruntime, written into `out`, when the
    kernel setting and the call allow it (see the module's note); False leaves it to NumPy.

    Same arguments: `wt` `(F, C / groups, Kd..K1)`, `xt` `(N, C, Xd..X1)`, `out` a C-contiguous
    `(N, F, Yd..Y1)` Float32 array, tuples in that reversed order; `groups` splits the
    channels into contiguous blocks, block g of the outputs reading block g of the inputs
    (Ops21's and NNlib's groups, ONNX's `group`).
    """
    chosen = setting()
    if chosen == "numpy" or xt.dtype != np.float32 or wt.dtype != np.float32:
        return False
    if min(pad, default=0) < 0 or not 1 <= len(pad) <= 3 or out.size == 0:
        return False
    macs = out.size * (wt.size // wt.shape[0])
    if chosen == "auto" and macs < MIN_MACS and groups == 1:
        return False  # (a grouped call always: NumPy's way is one conv4 per channel block)
    if _runtime() is None:
        if chosen == "onnxruntime":
            raise PortingError(
                "PORTING_CONV_KERNEL='onnxruntime': onnxruntime (with onnx) does not import "
                f"here ({_ort_error}); pip install 'porting[fast]', or use 'auto' or 'numpy'"
            )
        return False
    nd = len(pad)
    geometry = (nd, tuple(pad), tuple(stride), tuple(dil), groups, _threads())
    w = np.ascontiguousarray(wt)
    x = np.ascontiguousarray(xt)
    held = _reuse.get()
    if held is not None and out.size // wt.shape[0] < REUSE_MIN_POSITIONS:
        held = None  # hashing the kernel would cost a fair part of the convolution: one-off
    if held is None:
        with _lock:
            sess = _geometry.get(geometry)
            if sess is not None:
                _geometry.move_to_end(geometry)
        if sess is None:
            sess = _session(_model(nd, pad, stride, dil, groups, None), geometry[-1])
            with _lock:
                _geometry[geometry] = sess
                while len(_geometry) > _GEOMETRY_SESSIONS:
                    _geometry.popitem(last=False)
        feeds = {"x": x, "w": w}
    else:
        # SHA-1 (not for security): half BLAKE2's time here, with the CPUs' SHA instructions
        digest = hashlib.sha1(w.data.cast("B"), usedforsecurity=False).digest()
        key = (geometry, w.shape, digest)
        sess = held.get(
            key,
            lambda: _session(_model(nd, pad, stride, dil, groups, w), geometry[-1]),
            w.nbytes,
        )
        feeds = {"x": x}
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    binding.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    sess.run_with_iobinding(binding)
    return True
