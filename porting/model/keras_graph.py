"""The Keras side of an "each"-mode verification as compiled TensorFlow graphs.

When every layer computes each sample on its own (`keras_side.per_sample`), `verify_model`
runs each Keras layer group once on a doubled batch: Knet's input in the first half (the
layer's own error) and the Keras chain's own output in the second (the end-to-end drift).
Run eagerly, that is a Python call per layer and per TensorFlow op, and for small layers the
calls cost more than the arithmetic (Keras's eager `Conv2D` alone builds a `tf.function`
wrapper on every call, about 4 ms). Here consecutive layers are taken together as *segments*
and each segment is one `tf.function` (traced once per model, the batch dimension left open, kept for the
life of the Keras model), with the same group calls (`keras_side.run_group`) and the same
doubled batches inside, so the verification computes what the eager calls compute: the same
ops on the same values. (Graph mode lets TensorFlow rewrite the graph; on every shipped example
the outputs are checked bit for bit against the eager calls: tests/test_keras_graph.py.)
Tracing costs a few seconds per model (docs/tensorflow.md#keras-graph), so `verify_model`
compiles only when asked (`compiled=True`), as `verify_data` does for a data set of more than a
few batches.

A segment holds the outputs of its layers for one batch at a time (Knet's, in TensorFlow layout,
and both halves of Keras's), so segments are cut at `SEGMENT_BYTES`: a small model is one
graph, a large one (ResNet-50 at 224x224) several, and peak memory stays near a segment's
arrays instead of growing to the whole model's.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from porting._transpose import address
from porting.model.keras_side import run_group, source_name

if TYPE_CHECKING:
    from porting.model.planning import Plan

__all__ = ["GraphSide", "SEGMENT_BYTES"]

SEGMENT_BYTES = 48 << 20
"""Largest sum of one batch's layer outputs (Knet's and the doubled Keras batch) in a segment."""

# traced segment functions, per Keras model (they hold its layers; dropped with the model)
_TRACED: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
# each traced function's concrete function (the input signature gives it exactly one)
_CONCRETE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class GraphSide:
    """The Keras outputs of a plan's layers on a batch, one compiled segment at a time.

    `steps`, `groups` as in `verify_model`; `x_tf` the Keras input; `last_use[j]` the last layer
    reading layer j's output; `kdt` the Keras layers' float type (Knet's outputs are fed in it).
    """

    def __init__(
        self,
        steps: Plan,
        groups: Sequence[Sequence[Any]],
        keras_model: Any,
        x_tf: np.ndarray,
        last_use: dict[int, int],
        kdt: np.dtype[Any],
    ) -> None:
        self.steps, self.groups, self.x_tf, self.last_use, self.kdt = (
            steps,
            groups,
            x_tf,
            last_use,
            kdt,
        )
        self.last = len(steps) - 1
        try:
            self.cache = _TRACED.setdefault(keras_model, {})
        except TypeError:  # pragma: no cover - a model that takes no weak reference
            self.cache = {}
        self.segments = _segments(steps, int(x_tf.shape[0]), kdt)
        self.chain: dict[int, Any] = {}  # the Keras chain's outputs later segments read

    def run(self, seg: Sequence[int], knet_tf: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Layer i's Keras output on Knet's inputs, for each i of segment `seg`; `knet_tf[j]` is
        Knet's output of every layer j the segment reads (TensorFlow layout). Keeps the chain's
        outputs that later layers read (and the last layer's)."""
        import tensorflow as tf

        seg = tuple(seg)
        first, end = seg[0], seg[-1]
        knet_in = sorted({j for i in seg for j in self.steps[i].sources if j >= 0})
        chain_in = sorted({j for i in seg for j in self.steps[i].sources if 0 <= j < first})
        chain_out = tuple(i for i in seg if self.last_use.get(i, -1) > end or i == self.last)
        key = (seg, tuple(knet_in), tuple(chain_in), chain_out, str(self.kdt))
        feeds = tuple(as_tensor(knet_tf[j].astype(self.kdt, copy=False)) for j in knet_in)
        chains = tuple(self.chain[j] for j in chain_in)
        fn = self.cache.get(key)
        if fn is None:
            # one trace for every batch size (the batch dimension left open), and no autograph:
            # the segment's Python has no tensor-dependent control flow to convert
            def spec(a: Any) -> Any:
                return tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))

            signature = (spec(self.x_tf), tuple(map(spec, feeds)), tuple(map(spec, chains)))
            fn = tf.function(
                self._segment_fn(seg, knet_in, chain_in, chain_out),
                input_signature=signature,
                autograph=False,
            )
            fn = self.cache.setdefault(key, fn)
        # its one concrete function, called directly: the polymorphic call would match the
        # arguments against its traces every time (about half of a small segment's Python)
        call = _CONCRETE.get(fn)
        if call is None:
            call = _CONCRETE.setdefault(fn, fn.get_concrete_function())
        outs, owns = call(as_tensor(self.x_tf), feeds, chains)
        for i, own in zip(chain_out, owns, strict=True):
            self.chain[i] = own
        return {i: np.asarray(a) for i, a in zip(seg, outs, strict=True)}

    def _segment_fn(
        self,
        seg: tuple[int, ...],
        knet_in: list[int],
        chain_in: list[int],
        chain_out: tuple[int, ...],
    ) -> Any:
        steps, groups = self.steps, self.groups

        def segment(x_tf: Any, feeds: Sequence[Any], chains: Sequence[Any]) -> Any:
            import tensorflow as tf

            knet = dict(zip(knet_in, feeds, strict=True))
            chain = dict(zip(chain_in, chains, strict=True))
            n = tf.shape(x_tf)[0]
            outs = []
            for i in seg:
                step = steps[i]
                fed = {source_name(steps, j): x_tf if j < 0 else knet[j] for j in step.sources}
                if any(j >= 0 for j in step.sources):  # Knet's input, then the chain's own
                    for j in step.sources:
                        name = source_name(steps, j)
                        fed[name] = tf.concat([fed[name], x_tf if j < 0 else chain[j]], 0)
                    both = run_group(groups[i], fed)
                    a_i, own = both[:n], both[n:]
                else:  # the model's input is Knet's and Keras's alike
                    a_i = own = run_group(groups[i], fed)
                chain[i] = own
                outs.append(a_i)
            return tuple(outs), tuple(chain[i] for i in chain_out)

        return segment

    def drop(self, j: int) -> None:
        if j != self.last:
            self.chain.pop(j, None)

    def final(self) -> np.ndarray:
        out: np.ndarray = np.asarray(self.chain[self.last])
        return out


def as_tensor(a: np.ndarray) -> Any:
    """`a` as a TensorFlow tensor, sharing its memory where TensorFlow can take it as it is
    (DLPack: a writeable, C-contiguous, non-empty float array starting on a 64-byte boundary,
    as porting's layout copies are), else converted (a copy, made holding the GIL: 0.3-1.5 ms
    per MB-sized layer input where sharing takes microseconds). TensorFlow aborts the process
    on a DLPack array that is not aligned for its CPU kernels (Eigen's 64 bytes at most), so
    nothing else is passed that way."""
    import tensorflow as tf

    if (
        a.size
        and a.flags.c_contiguous
        and a.flags.writeable
        and a.dtype in _SHARED_DTYPES
        and address(a) % 64 == 0
    ):
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.convert_to_tensor(a)


_SHARED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _segments(steps: Plan, n: int, kdt: np.dtype[Any]) -> list[tuple[int, ...]]:
    """Consecutive layers whose outputs on `n` samples (Knet's in TensorFlow layout plus both
    halves of Keras's, in `kdt`) stay within `SEGMENT_BYTES` together; a layer larger than that
    is a segment of its own."""
    out: list[tuple[int, ...]] = []
    cur: list[int] = []
    size = 0
    for i, step in enumerate(steps):
        b = 3 * n * int(np.prod(step.out_size)) * kdt.itemsize
        if cur and size + b > SEGMENT_BYTES:
            out.append(tuple(cur))
            cur, size = [], 0
        cur.append(i)
        size += b
    if cur:
        out.append(tuple(cur))
    return out
