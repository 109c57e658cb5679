"""The Knet side of a model verification, one layer at a time.

`verify_model` compares, layer by layer, what Knet computes with what Keras computes. The Knet
side of a layer (its forward pass, its output in TensorFlow layout, and in "each" mode the sums
of magnitudes `S` of its tolerance) depends only on the Knet side of earlier layers, never on
Keras: `records` yields it layer by layer, so that verification holds only the arrays that
later layers still read.

`Ahead` runs it on a second thread, a record or two ahead of the comparison, when the NumPy
reference computes it: on two cores TensorFlow's calls on a batch of two and the reference's
(onnxruntime's convolutions, NumPy between them) each keep one core busy for much of the time,
so Keras's layer i overlaps Knet's layer i+1. (An earlier measurement, when NumPy's BLAS ran
the convolutions on every core, found no gain.) Julia is called only from the thread that
started it, so the Julia backends stay on the caller's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import queue
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from porting.model import convert as mconvert
from porting.tolerance import Tolerance

if TYPE_CHECKING:
    from porting.model.planning import Plan, Step

__all__ = [
    "KnetRecord",
    "records",
    "tolerance_scale",
    "magnitude_of",
    "magnitude_tf",
    "nonnegative",
    "Ahead",
    "ON_CALLER",
]

# The incoming error is carried into the tolerance through float arithmetic of its own (divided
# by the tolerance's `(sqrt(K)+2) eps`, then multiplied back): 0.1% more covers that rounding.
SAFETY = 1.001


@functools.lru_cache(maxsize=256)  # one per (K, precision): the same few in every model
def tolerance_scale(k: int, dtype: np.dtype) -> float:
    """How many units of `S` one unit of absolute error is, for a K-term layer whose
    tolerance is `porting.tolerance.Tolerance.of(k, dtype)`: `SAFETY / scale` (an error bound
    `e` enters `S` as `e * tolerance_scale`, so that `scale * S` covers it)."""
    return SAFETY / Tolerance.of(k, dtype).scale


def magnitude_of(
    step: Step,
    x_ins: Sequence[Any],
    e_ins: Sequence[Any] | None,
    extra: dict[int, np.ndarray],
    y_out: np.ndarray,
    scale: float,
    wd: np.dtype[Any],
    nonnegative: Sequence[bool] | None = None,
) -> Any:
    """S for one layer (Julia layout): its stages applied to |x| (+ e_in * scale) of each of its
    inputs, in Knet's order, each stage with its own rule (porting.magnitude; no TensorFlow).
    `nonnegative[j]` says that input j is known to be >= 0 (a relu's output), so that |x| is x
    itself and is not formed."""
    ss = []
    for j, x_in in enumerate(x_ins):
        s = np.asarray(x_in, dtype=wd)
        if not (nonnegative is not None and nonnegative[j]):  # else |x| is x (stages never
            s = np.abs(s)  # change their input in place)
        if e_ins is not None and e_ins[j] is not None:
            s = s + e_ins[j].astype(wd, copy=False) * wd.type(scale)
        ss.append(s)
    s_all: Any = ss if step.layer.merges else ss[0]
    last = len(step.stages) - 1
    for j, stage in enumerate(step.stages):
        out = y_out if j == last else extra.get(j)
        s_all = stage.magnitude(s_all, out, wd)
    return s_all


def magnitude_tf(
    steps: Plan | Sequence[Step],
    step: Step,
    x_ins: Sequence[Any],
    e_ins: Sequence[Any] | None,
    extra: dict[int, np.ndarray],
    y_out: np.ndarray,
    dtype: np.dtype[Any],
    wd: np.dtype[Any],
    spatial: str,
) -> np.ndarray:
    """S of `step` (`magnitude_of`, with the incoming errors `e_ins` when given: whole-model
    mode) in TensorFlow layout, as `porting.compare` takes it beside the layer's output; the
    one place both verification modes compute it. `dtype` is the precision whose eps the
    tolerances use."""
    scale = tolerance_scale(step.k, dtype)
    mag = magnitude_of(step, x_ins, e_ins, extra, y_out, scale, wd, nonnegative(steps, step))
    return mconvert.julia_to_tf(mag, step.flat_from, spatial)


def nonnegative(steps: Plan | Sequence[Step], step: Step) -> list[bool]:
    """For each input of `step`: whether the layer that produced it ends in a stage whose
    outputs are never negative (a relu), so that its |x| is x itself."""
    return [k >= 0 and steps[k].stages[-1].nonnegative for k in step.sources]


@dataclass
class KnetRecord:
    """One layer's Knet side: its output (Julia layout and TensorFlow layout), the inner stage
    outputs its magnitudes read, its `S` in TensorFlow layout (None when the caller computes
    it: whole-model mode adds the measured incoming error first), and seconds spent."""

    y: np.ndarray
    extra: dict[int, np.ndarray]
    expected: np.ndarray
    mag_tf: np.ndarray | None
    knet_s: float


def records(
    steps: Plan | Sequence[Step],
    knet_steps: Iterator[tuple[int, np.ndarray, dict[int, np.ndarray]]],
    knet_done: dict[int, np.ndarray],
    x: np.ndarray,
    tags: list[Any],
    spatial: str,
    dtype: np.dtype[Any],
    wd: np.dtype[Any],
    with_magnitude: bool,
) -> Generator[KnetRecord, None, None]:
    """Each layer's `KnetRecord`, in order, from `knet_steps` (`forward_steps`, which stores
    every output in `knet_done`, where later layers read their inputs); with `with_magnitude`
    ("each" mode), also its `S` without incoming error (`magnitude_tf`)."""
    for step in steps:
        t0 = time.perf_counter()
        _, y, extra = next(knet_steps)
        del tags[1:]  # the first names the backend; the others would keep outputs alive
        knet_s = time.perf_counter() - t0
        expected = mconvert.julia_to_tf(y, step.flat_from, spatial)
        mag_tf = None
        if with_magnitude:
            x_ins = [x if k < 0 else knet_done[k] for k in step.sources]
            mag_tf = magnitude_tf(steps, step, x_ins, None, extra, y, dtype, wd, spatial)
            del x_ins
        yield KnetRecord(y, extra, expected, mag_tf, knet_s)


ON_CALLER = contextvars.ContextVar("porting_knet_side_on_caller", default=False)
"""True where the Knet side stays on the calling thread (verify_data's batches run two at a
time already: a thread each is enough)."""


class Ahead:
    """Iterate a generator on a worker thread, at most `depth` items beyond the one being
    made: `next()` gives them in order, an exception raised there is raised here, and `close()`
    stops the worker (after the item in hand) and closes the generator. The worker runs in a
    copy of the caller's context (porting.knet.mlas's kernel choice and prepared weights)."""

    _END = object()

    def __init__(self, gen: Generator[Any, None, None], depth: int = 1) -> None:
        self.gen = gen
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(
            target=ctx.run, args=(self._fill,), name="porting-knet-side", daemon=True
        )
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self.gen:
                if not self._put((True, item)):
                    return
                del item
            self._put((True, self._END))
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
            self._put((False, e))

    def __iter__(self) -> Ahead:
        return self

    def __next__(self) -> Any:
        if self.stop.is_set():
            raise StopIteration
        ok, item = self.q.get()
        if not ok:
            self.stop.set()
            raise item
        if item is self._END:
            self.stop.set()
            raise StopIteration
        return item

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():  # it may be waiting to put an item
            with contextlib.suppress(queue.Empty):
                self.q.get(timeout=0.05)
        self.gen.close()
        while True:  # what it left behind is freed now
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
