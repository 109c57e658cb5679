"""The two Keras sides of `verify_model`'s comparison loop (porting.model.verify): "each" mode
feeds every Keras layer group Knet's inputs (`EachMode`), "whole" mode runs the Keras model
once, end to end, and adds the measured incoming error to each layer's S (`WholeMode`); and
`Run`, what one call compares. The loop itself and the diagnosis stay in porting.model.verify.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from porting._transpose import aligned_empty
from porting.model import convert as mconvert
from porting.model import fused, knet_side
from porting.model.keras_graph import GraphSide, as_tensor
from porting.model.keras_side import per_sample, run_group, source_name
from porting.model.planning import Plan, Step
from porting.model.spec import KnetModel

__all__ = ["AdvanceFn", "Run", "EachMode", "WholeMode", "one_by_one"]

AdvanceFn = Callable[[str], None]

PAIRED_ELEMENTS = 1 << 17
"""Elements of the Keras input (the whole batch) from which "each" mode runs a group's two
inputs as two calls rather than one doubled batch (`EachMode`): about one 224x224x3 image, or
a CIFAR-sized batch of 43. On ResNet50 at 224x224 the two calls took 0.88-0.90 s against the
doubled batch's 1.23-1.26 s at batch 2, 0.61 against 0.68 s at batch 1 (benchmarks/
bench_fromkeras.py; fresh processes, alternated)."""


@dataclass(frozen=True)
class Run:
    """What one `verify_model` call compares: the plan, the Keras groups and models, the input,
    and the settings derived from them."""

    steps: Plan
    groups: list[list[Any]]
    heads: list[int]  # each layer's first Knet layer of its Keras group (itself, mostly)
    keras_model: Any
    model: KnetModel
    x: np.ndarray
    mode: str
    spatial: str
    kdt: np.dtype[Any]  # the Keras layers' float type
    in_dt: np.dtype[Any]  # the Keras input's type (int32 for token indices)
    tol_dtype: np.dtype[Any]  # the lower of the two precisions: the tolerances use its eps
    precision: str | None
    ulps: bool  # the rows' ULP figure (compare's ulps=)
    compiled: bool  # the doubled "each" mode's Keras side as compiled graphs (keras_graph)

    @property
    def last(self) -> int:
        return len(self.steps) - 1


class EachMode:
    """The Keras side in "each" mode: every group is fed the Knet outputs it reads (TensorFlow
    layout), so a row measures that layer's own error; S comes with the Knet record.

    With per-sample layers (`keras_side.per_sample`) the Keras chain's own run goes along with
    the isolated ones, group by group, so the original is never run whole: for a small input
    every group runs once on a doubled batch, Knet's input in the first half and the chain's
    own in the second (per-call overhead dominates; with `compiled`, in compiled segments of
    layers: porting.model.keras_graph); for a large one (`PAIRED_ELEMENTS`) each group runs
    twice, on Knet's input and on the chain's own outputs, which stay TensorFlow tensors (the
    copies of a doubled batch and of converting it would cost more than a second call).
    Otherwise the whole model runs after the layers."""

    def __init__(self, run: Run, x_tf: np.ndarray, last_use: dict[int, int]) -> None:
        self.run, self.x_tf, self.last_use = run, x_tf, last_use
        self.doubled = per_sample(run.groups, run.keras_model)
        self.paired = self.doubled and x_tf.size >= PAIRED_ELEMENTS
        self.tf_done: dict[int, np.ndarray] = {}  # Knet outputs in TF layout still to be fed
        self.chain: dict[int, Any] = {}  # the Keras chain's own outputs still to be read
        self.seconds = 0.0
        self.graph = (
            GraphSide(run.steps, run.groups, run.keras_model, x_tf, last_use, run.kdt)
            if run.compiled and self.doubled and all(run.groups)
            else None
        )
        self.segments: list[tuple[int, ...]] = (
            self.graph.segments if self.graph is not None else one_by_one(run.steps)
        )
        self.pending: dict[int, np.ndarray] = {}  # a segment's outputs still to be compared

    def prepare(self, seg: tuple[int, ...], recs: list[knet_side.KnetRecord | None]) -> None:
        """Run segment `seg` of the compiled side, its Knet records `recs` in hand."""
        if self.graph is None:
            return
        t0 = time.perf_counter()
        knet_tf = dict(self.tf_done)
        for i, rec in zip(seg, recs, strict=True):
            assert rec is not None
            knet_tf[i] = rec.expected
        self.pending = self.graph.run(seg, knet_tf)
        self.seconds += time.perf_counter() - t0

    def output(
        self,
        i: int,
        step: Step,
        group: list[Any],
        rec: knet_side.KnetRecord,
        x_ins: list[np.ndarray],
        carry: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """Layer `i`'s Keras output on Knet's inputs (those of its group's first Knet layer),
        and its S (from the Knet record, or with `carry`, the error bound of the group's Knet
        layers before it)."""
        if self.graph is not None:  # compiled only where every Knet layer is a Keras group
            return self.pending.pop(i), rec.mag_tf
        t0 = time.perf_counter()
        run = self.run
        steps, x_tf, kdt = run.steps, self.x_tf, run.kdt
        sources = steps[run.heads[i]].sources
        feeds = {
            source_name(steps, j): x_tf if j < 0 else self.tf_done[j].astype(kdt, copy=False)
            for j in sources
        }
        if self.paired and any(j >= 0 for j in sources):
            a_i = np.asarray(run_group(group, _tensors(feeds)))
            own = run_group(
                group, {source_name(steps, j): x_tf if j < 0 else self.chain[j] for j in sources}
            )
        elif self.doubled and any(j >= 0 for j in sources):
            for j in sources:
                name = source_name(steps, j)
                feeds[name] = _stacked(feeds[name], x_tf if j < 0 else self.chain[j])
            both = np.asarray(run_group(group, _tensors(feeds)))
            n = x_tf.shape[0]
            a_i, own = both[:n], both[n:]
        else:  # the model's input is Knet's and Keras's alike
            a_i = own = np.asarray(run_group(group, _tensors(feeds)))
        if self.doubled and (i in self.last_use or i == self.run.last):
            self.chain[i] = own
        del own
        self.seconds += time.perf_counter() - t0
        if carry is None:
            return a_i, rec.mag_tf
        return a_i, fused.carried(
            steps, step, rec, x_ins, carry, run.tol_dtype, run.model.dtype, run.spatial
        )

    def incoming(
        self, step: Step, x_ins: list[np.ndarray], carry: np.ndarray | None
    ) -> list[np.ndarray | None] | None:
        """The error reaching a Knet layer inside a group: none at its first (each layer is
        fed Knet's inputs), else the bound carried from the one before."""
        return None if carry is None else [carry]

    def keep(self, i: int, step: Step, a_i: np.ndarray, expected: np.ndarray) -> None:
        if i in self.last_use:  # a later layer is fed Knet's output
            self.tf_done[i] = expected

    def drop(self, j: int) -> None:
        self.tf_done.pop(j, None)
        if j != self.run.last:
            self.chain.pop(j, None)
        if self.graph is not None:
            self.graph.drop(j)

    def final(self, timings: dict[str, float], advance: AdvanceFn) -> np.ndarray:
        """The Keras model's own output, end to end."""
        run = self.run
        timings["keras_layers_s"] = self.seconds
        advance("Keras side, end to end")
        if self.graph is not None:
            return self.graph.final()
        if self.doubled:
            chained: np.ndarray = np.asarray(self.chain[run.last])
            return chained
        # the whole Keras model, run last, for the end-to-end drift (its kernels warm)
        t0 = time.perf_counter()
        final_actual = np.asarray(run.keras_model(self.x_tf, training=False))
        timings["keras_forward_s"] = time.perf_counter() - t0
        return final_actual


class WholeMode:
    """The Keras side in "whole" mode: the Keras model runs once, end to end, and every layer's
    S adds the error measured at its inputs (`E = |Keras input - Knet input|`)."""

    def __init__(
        self,
        run: Run,
        x_tf: np.ndarray,
        last_use: dict[int, int],
        timings: dict[str, float],
        advance: AdvanceFn,
    ) -> None:
        import keras  # imported by to_keras / the caller's model already

        self.run, self.last_use = run, last_use
        advance("Keras side")
        t0 = time.perf_counter()
        compared = [i for i, g in enumerate(run.groups) if g]
        probe = keras.Model(run.keras_model.inputs[0], [run.groups[i][-1].output for i in compared])
        outs = probe(x_tf, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        self.actual = {i: np.asarray(t) for i, t in zip(compared, outs, strict=True)}
        timings["keras_forward_s"] = time.perf_counter() - t0
        x = run.x
        # x as Keras sees it (None: exactly Knet's, token indices or the same float type)
        floating = np.issubdtype(x.dtype, np.floating)
        self.x_j = x.astype(run.kdt).astype(x.dtype) if floating and run.kdt != x.dtype else None
        self.actual_j: dict[int, np.ndarray] = {}  # Keras outputs still to be read (Julia layout)
        self.segments = one_by_one(run.steps)

    def prepare(self, seg: tuple[int, ...], recs: list[knet_side.KnetRecord | None]) -> None:
        """Nothing to do: the Keras model ran once, end to end."""

    def output(
        self,
        i: int,
        step: Step,
        group: list[Any],
        rec: knet_side.KnetRecord,
        x_ins: list[np.ndarray],
        carry: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Layer `i`'s output in the Keras model's own run, and its S with the incoming error
        (measured, or with `carry`, the bound carried through its group's Knet layers)."""
        run = self.run
        e_ins = self.incoming(step, x_ins, carry)
        mag_tf = knet_side.magnitude_tf(
            run.steps,
            step,
            x_ins,
            e_ins,
            rec.extra,
            rec.y,
            run.tol_dtype,
            run.model.dtype,
            run.spatial,
        )
        return self.actual[i], mag_tf

    def incoming(
        self, step: Step, x_ins: list[np.ndarray], carry: np.ndarray | None
    ) -> list[np.ndarray | None]:
        """The error reaching `step`: measured at its inputs (`|Keras - Knet|`), or inside a
        group the bound carried from the Knet layer before."""
        if carry is not None:
            return [carry]
        wd = self.run.model.dtype
        e_ins: list[np.ndarray | None] = []
        for j, x_in in zip(step.sources, x_ins, strict=True):
            a_src = self.x_j if j < 0 else self.actual_j.get(j)
            e_ins.append(
                None
                if a_src is None
                else np.abs(a_src.astype(wd, copy=False) - np.asarray(x_in, dtype=wd))
            )
        return e_ins

    def keep(self, i: int, step: Step, a_i: np.ndarray, expected: np.ndarray) -> None:
        if i in self.last_use:  # a later layer's incoming error reads it
            self.actual_j[i] = mconvert.tf_to_julia(a_i, step.flat_from, self.run.spatial)

    def drop(self, j: int) -> None:
        self.actual_j.pop(j, None)

    def final(self, timings: dict[str, float], advance: AdvanceFn) -> np.ndarray:
        return self.actual[self.run.last]


def _tensors(feeds: dict[str, Any]) -> dict[str, Any]:
    """The NumPy feeds of a group as tensors, sharing memory where TensorFlow can take it
    (keras_graph.as_tensor: no copy made holding the GIL, which the Knet side's thread needs)."""
    return {k: as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in feeds.items()}


def _stacked(a: np.ndarray, b: Any) -> np.ndarray:
    """`np.concatenate([a, b])` (the doubled batch) into memory TensorFlow can share."""
    b = np.asarray(b)
    out = aligned_empty((a.shape[0] + b.shape[0], *a.shape[1:]), np.result_type(a, b))
    np.concatenate([a, b], out=out)
    return out


def one_by_one(steps: Plan) -> list[tuple[int, ...]]:
    return [(i,) for i in range(len(steps))]
