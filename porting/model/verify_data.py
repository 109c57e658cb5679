"""Verify a port on a data set: batches stream through both sides, every layer is compared.

`verify_data(model, data, keras_model=...)` reads `data` a batch at a time
(porting.model.datasets: `.npy`/`.npz` memory-mapped, folders of them, folders of images) and
for each batch

- runs `verify_model` (the public layer-by-layer check: every layer against its floating-point
  tolerance `(sqrt(K)+2) eps S`), keeping per layer the batch's worst error / tolerance and the
  sample where it occurred;
- takes the final outputs that check compared (`ModelReport.outputs`: Knet's and the port's
  own chain, end to end) for the figures per sample, which `verify_model` reports only per
  batch: each sample's max error, its error in ULPs of the Knet output, and for a classifier (a
  final output `(classes, N)`) whether the top-1 class and the top-5 set agree. (No second
  forward pass on either side.)

An ONNX port (`onnx=PATH`) runs under onnxruntime (porting.model.onnx_out.OnnxPort) and is
checked end to end only, under `verify_onnx`'s whole-model tolerance: the file's intermediate
tensors do not map to Knet layers, so the report has one row, the end-to-end output, and says
so. Everything else (per-sample errors, top-1/top-5, the worst samples) is the same.

Memory stays flat: one batch's arrays at a time, and fixed-size summaries (histograms, the k
worst samples, at most `MAX_LISTED` disagreeing samples by index) accumulate across batches.

The distribution per layer is over batches: each batch contributes its worst error / tolerance
(with `batch_size=1` that is one figure per sample). Ctrl-C (KeyboardInterrupt) ends the loop:
the report of the batches finished so far comes back, marked `partial`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from porting.errors import PortingError
from porting.knet import mlas
from porting.model import knet_side
from porting.model.data_tally import (
    MAX_LISTED,
    RATIO_EDGES,
    ULP_EDGES,
    Batch,
    LayerSummary,
    Tally,
)

if TYPE_CHECKING:
    from porting.model.datasets import DataSource, ImageOptions
    from porting.model.planning import Plan
    from porting.model.spec import KnetModel

__all__ = ["verify_data", "DataReport", "LayerSummary", "ULP_EDGES", "RATIO_EDGES", "MAX_LISTED"]

E2E_ROW = "(end to end)"  # the one row of an ONNX port's report
COMPILE_AFTER = 4  # batches beyond which the Keras side is compiled (the same numbers)
_THREADS = 2  # batches checked at once (two threads) once the Keras side is compiled
_AHEAD = 1  # batches submitted beyond the one being summarised

ProgressFn = Callable[[int, int], None]


@dataclass
class DataReport:
    """What `verify_data` saw (`str()` is a readable summary, `to_dict()` JSON data)."""

    ok: bool
    partial: bool
    n_samples: int  # samples compared
    n_total: int  # samples in the data set
    batch_size: int
    data: str
    mode: str
    spatial: str
    layers: list[LayerSummary]
    end_to_end: dict[str, Any]
    classifier: dict[str, Any] | None
    worst_samples: list[dict[str, Any]]
    ulp_histogram: np.ndarray
    error_map: dict[str, Any] | None
    environment: dict[str, Any]
    timings: dict[str, float]
    first_divergent: str | None = None
    diagnosis: Any = None
    notes: list[str] = field(default_factory=list)
    port: str = "keras"  # "onnx": checked end to end only (one row, no per-layer rows)

    def verdict(self) -> str:
        seen = (
            f"{self.n_samples} of {self.n_total} samples"
            if self.partial
            else f"{self.n_samples} samples"
        )
        part = "PARTIAL (interrupted): " if self.partial else ""
        if self.port == "onnx":
            within = "within" if self.ok else "outside"
            return (
                f"{part}{'OK' if self.ok else 'MISMATCH'}: the ONNX port's end-to-end output "
                f"{within} its tolerance on {seen} (no per-layer rows for an ONNX port)"
            )
        if self.ok:
            return f"{part}OK: every layer within its tolerance on {seen}"
        bad = sum(not s.ok for s in self.layers)
        return (
            f"{part}MISMATCH: {bad} layer(s) outside tolerance on {seen}; first divergent "
            f"layer {self.first_divergent!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        diag = self.diagnosis
        return {
            "ok": self.ok,
            "partial": self.partial,
            "verdict": self.verdict(),
            "n_samples": self.n_samples,
            "n_total": self.n_total,
            "batch_size": self.batch_size,
            "data": self.data,
            "mode": self.mode,
            "spatial": self.spatial,
            "first_divergent": self.first_divergent,
            "layers": [s.to_dict() for s in self.layers],
            "end_to_end": self.end_to_end,
            "classifier": self.classifier,
            "worst_samples": self.worst_samples,
            "ulp_histogram": {
                "edges": ULP_EDGES.tolist(),
                "counts": self.ulp_histogram.tolist(),
            },
            "error_map": None
            if self.error_map is None
            else {k: v for k, v in self.error_map.items() if k != "image"},
            "environment": self.environment,
            "timings": self.timings,
            "diagnosis": diag.to_dict() if hasattr(diag, "to_dict") else diag,
            "notes": self.notes,
            "port_format": self.port,
            "per_layer": self.port != "onnx",
        }

    def __str__(self) -> str:
        from porting._text import printable

        out = [self.verdict(), f"data: {printable(self.data)}"]
        w = max([len(printable(s.name)) for s in self.layers] + [5])
        out.append(
            f"{'layer'.ljust(w)}  {'kind':<10} {'worst err/tol':>13} {'median<=':>9} "
            f"{'sample':>7}  ok"
        )
        for s in self.layers:
            out.append(
                f"{printable(s.name).ljust(w)}  {printable(s.kind):<10} {s.worst_ratio:>13.3g} "
                f"{s.quantile(0.5):>9.2g} {str(s.worst_sample):>7}  {'yes' if s.ok else 'NO'}"
            )
        e = self.end_to_end
        out.append(
            f"end to end: max abs error {e['max_abs_error']:.3g} (sample {e['worst_sample']}), "
            f"max {e['max_ulp']:.3g} ULP, max relative {e['max_rel_error']:.3g}"
        )
        c = self.classifier
        if c is not None:
            t5 = f"{c['top5_agreement']:.4%}" if c["top5_agreement"] is not None else "n/a"
            out.append(
                f"classifier ({c['classes']} classes): top-1 agreement {c['top1_agreement']:.4%} "
                f"({c['top1_disagree']} differ), top-5 agreement {t5}"
            )
            if c["top1_disagree_samples"]:
                out.append(f"  top-1 differs at samples {c['top1_disagree_samples'][:20]}")
        if self.worst_samples:
            out.append("worst samples (end to end):")
            for ws in self.worst_samples:
                out.append(
                    f"  #{ws['index']} {printable(ws['label'])}: max abs error "
                    f"{ws['max_abs_error']:.3g}, {ws['max_ulp']:.3g} ULP, relative "
                    f"{ws['rel_error']:.3g}"
                )
        t = self.timings
        checking = "both sides" if self.port == "onnx" else "verify_model"
        out.append(
            f"{t.get('samples_per_s', 0):.1f} samples/s ({t.get('total_s', 0):.2f} s; "
            f"{checking} {t.get('verify_s', 0):.2f} s, reading {t.get('read_s', 0):.2f} s)"
        )
        env = self.environment
        other = "ONNX port under onnxruntime" if self.port == "onnx" else "Keras side"
        out.append(
            f"Knet side: backend {env.get('knet_backend')!r}; {other} {env.get('dtypes')}; "
            f"spatial={self.spatial!r}, mode={self.mode!r}, batch {self.batch_size}"
        )
        if self.diagnosis is not None:
            out.append("diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        out += [f"note: {printable(n)}" for n in self.notes]
        return "\n".join(out)


# --------------------------------------------------------------------------- running


def _as_source(
    data: Any, model: KnetModel, plan: Plan, layout: str, spatial: str, images: ImageOptions | None
) -> DataSource:
    from porting.model import datasets

    # token indices (porting.model.kinds.embed) are integers; every other input is the weights'
    dtype = np.dtype(np.int64 if getattr(model.layers[0], "integer_input", False) else model.dtype)

    if isinstance(data, datasets.DataSource):
        return data
    if isinstance(data, np.ndarray):
        src = datasets.DataSource(
            "<array>", "array", tuple(plan.input_size), dtype, layout, spatial
        )
        datasets._add_chunk(src, "<array>", data)
        src.n = sum(c.n for c in src._chunks)
        if not src.n:
            raise PortingError("the data array holds no samples")
        return src
    return datasets.open_data(
        data, tuple(plan.input_size), dtype, layout=layout, spatial=spatial, images=images
    )


def verify_data(
    model: KnetModel,
    data: Any,
    *,
    keras_model: Any = None,
    batch_size: int = 32,
    mode: str = "each",
    spatial: str | None = None,
    knet: str = "auto",
    layout: str = "julia",
    images: ImageOptions | None = None,
    classifier: bool | None = None,
    k_worst: int = 10,
    progress: ProgressFn | None = None,
    plan: Plan | None = None,
    limit: int | None = None,
    onnx: Any = None,
) -> DataReport:
    """Verify `keras_model` (default: `to_keras(model)`) against the Knet `model` on every
    sample of `data`: a path (porting.model.datasets.open_data), a `DataSource`, or an array of
    samples (Julia-indexed, batch last; `layout="nhwc"` for batch-first TensorFlow layout).

    `batch_size` samples go through both sides at a time; `mode` is `verify_model`'s; `images`
    an `ImageOptions` for a folder of images; `classifier` forces (True) or turns off (False) the
    top-1/top-5 figures (default: a final output `(classes, N)` with 2 or more classes);
    `progress(done, total)` is called after each batch; `limit` stops after that many samples.
    `onnx`, the path of an ONNX file, checks that file under onnxruntime instead of a Keras
    model, end to end only (`mode` does not apply; the report's one row is the end-to-end
    output); `spatial` is then the convention it was converted with (default "reverse").
    Once the Keras side is compiled, two batches are checked at once on two threads (the NumPy
    reference and a compiled or ONNX port; `PORTING_THREADS=1` for one); the report is the
    same. A KeyboardInterrupt returns the report so far with `partial=True`.

    >>> import numpy as np
    >>> from porting.model import KnetModel, Dense
    >>> m = KnetModel([Dense(np.eye(3, dtype=np.float32))], input_size=(3,))
    >>> r = verify_data(m, np.ones((3, 10), np.float32), batch_size=4)  # doctest: +SKIP
    >>> r.ok, r.n_samples  # doctest: +SKIP
    (True, 10)
    """
    from porting._checks import check_choice
    from porting.model import convert as mconvert
    from porting.model.forward import backend_of, check_input
    from porting.model.planning import plan_for
    from porting.model.verify import MODES, verify_model

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise PortingError(f"batch_size {batch_size!r}: expected a positive integer")
    check_choice(mode, "mode", MODES)
    if not isinstance(k_worst, int) or isinstance(k_worst, bool) or k_worst < 0:
        raise PortingError(f"k_worst {k_worst!r}: expected a non-negative integer")
    if model.input_size is None and plan is None and not isinstance(data, np.ndarray):
        raise PortingError("the model records no input size; pass plan=plan(model, input_size)")
    if plan is None:
        size = model.input_size if model.input_size is not None else np.asarray(data).shape[:-1]
        plan = plan_for(model, tuple(size), None)
    steps = list(plan)
    port = None
    mode_note: str | None = None
    if onnx is not None:
        from porting.model.onnx_out import OnnxPort

        if keras_model is not None:
            raise PortingError("give keras_model= or onnx=, not both: one port at a time")
        spatial = spatial or "reverse"
        port = OnnxPort(onnx, plan, spatial)
        out_dt = port.out_dtype
        summaries = [LayerSummary(len(steps) - 1, E2E_ROW, "onnx")]
        if mode != "each":
            mode_note = f"mode={mode!r} applies to a Keras port; an ONNX port is checked end to end"
        mode = "end-to-end"
    else:
        if keras_model is None:
            keras_model = mconvert.to_keras(model, spatial=spatial or "reverse", plan=plan)
        spatial = spatial or mconvert.spatial_of(keras_model)
        kdt = np.dtype(keras_model.inputs[0].dtype) if keras_model.inputs else model.dtype
        out_dt = np.dtype(np.float32) if kdt.kind != "f" else kdt
        summaries = [
            LayerSummary(i, str(st.layer.name), st.layer.kind) for i, st in enumerate(steps)
        ]
    src = _as_source(data, model, plan, layout, spatial, images)
    n_total = src.n if limit is None else min(src.n, int(limit))
    lower = model.dtype if np.dtype(model.dtype).itemsize <= out_dt.itemsize else out_dt

    tally = Tally(summaries, src.label, lower, classifier, k_worst)
    first_bad: str | None = None
    diagnosis = None
    notes = list(src.notes)
    if port is not None and mode_note is not None:
        notes.append(mode_note)
    if port is not None:
        notes.append(
            f"ONNX port {port.path}: checked end to end under onnxruntime (the whole-model "
            "tolerance of porting.model.onnx_out: every layer's rounding budget carried through "
            "the later layers); per-layer rows are not available (the file's intermediate "
            "tensors do not map to Knet layers), so the one row is the end-to-end output"
        )
    versions: dict[str, Any] = {}
    backend = ("", "")
    dtypes: dict[str, str] = {}
    t = {"verify_s": 0.0, "read_s": 0.0}
    t_start = time.perf_counter()
    done = 0
    partial = False
    # many batches: the Keras side as compiled graphs (traced once, then much cheaper per
    # batch than eager calls; porting.model.keras_graph); a few: eagerly, as verify_model
    compiled = n_total > COMPILE_AFTER * batch_size
    batches = src.batches(batch_size)
    # several batches: each convolution keeps onnxruntime's prepared form of its kernel
    # (porting.knet.mlas: the NumPy side's throughput doubles); one batch: one-off sessions
    prepared = contextlib.ExitStack()
    if n_total > batch_size:
        prepared.enter_context(mlas.reusing_weights())

    def check(lo: int, xb: np.ndarray, diagnose: bool) -> Batch:
        """One batch through both sides (any thread: nothing here is shared but read-only)."""
        if port is not None:
            tags: list[Any] = []
            xb, _ = check_input(model, xb, plan)
            comp, expected, actual = port.check(model, xb, plan, knet, tags, ulps=False)
            return Batch(
                lo,
                int(xb.shape[-1]),
                [(comp, comp.ok)],
                expected,
                actual,
                None if comp.ok else E2E_ROW,
                None,
                [],
                {**_versions(), **port.versions()},
                backend_of(tags),
                {"knet": str(model.dtype), "onnx": str(port.out_dtype)},
            )
        rep = verify_model(
            model,
            xb,
            keras_model=keras_model,
            mode=mode,
            spatial=spatial,
            knet=knet,
            diagnose=diagnose,
            plan=plan,
            ulps=False,  # the rows' ULP figure is not reported here
            compiled=compiled,
        )
        # the end-to-end outputs verify_model compared (Knet's and the port's own chain)
        assert rep.outputs is not None
        return Batch(
            lo,
            int(xb.shape[-1]),
            [(row.comparison, row.ok) for row in rep.rows],
            *rep.outputs,
            None if rep.ok else rep.first_divergent,
            rep.diagnosis,
            rep.notes,
            rep.versions,
            (rep.knet_backend, rep.knet_backend_reason),
            rep.dtypes,
        )

    # Two batches in flight once the Keras side is compiled (its graphs are traced by the
    # first batch, alone): each side leaves the other core mostly idle on a batch of its own
    # (small calls, Python between them), so batch b+1's Knet side runs beside batch b's Keras
    # side and comparisons. The same numbers: each batch is checked on its own, and the
    # results are taken in order.
    ahead = (
        _AHEAD
        if compiled
        and n_total > 2 * batch_size
        and _threads() > 1
        and _shareable(model, keras_model, port, mode, knet)
        else 0
    )
    pool = (
        concurrent.futures.ThreadPoolExecutor(_threads(), thread_name_prefix="porting-verify-data")
        if ahead
        else None
    )
    in_flight: collections.deque[concurrent.futures.Future[Batch]] = collections.deque()
    read = 0  # samples read so far

    def next_batch() -> tuple[int, np.ndarray] | None:
        nonlocal read
        if read >= n_total:
            return None
        t0 = time.perf_counter()
        try:
            lo, xb = next(batches)
        except StopIteration:
            read = n_total
            return None
        if lo + xb.shape[-1] > n_total:
            xb = xb[..., : n_total - lo]
        read = lo + int(xb.shape[-1])
        t["read_s"] += time.perf_counter() - t0
        return lo, xb

    t_loop = time.perf_counter()
    try:
        while done < n_total:
            if pool is None or done == 0:  # the first batch alone: it traces the graphs
                got = next_batch()
                if got is None:
                    break
                b = check(*got, diagnosis is None)
            else:
                while len(in_flight) <= ahead:
                    got = next_batch()
                    if got is None:
                        break
                    ctx = contextvars.copy_context()  # reusing_weights() holds in the worker
                    ctx.run(knet_side.ON_CALLER.set, True)  # one thread per batch
                    lo_b, x_b = got
                    in_flight.append(pool.submit(ctx.run, check, lo_b, x_b, diagnosis is None))
                    del got, x_b
                if not in_flight:
                    break
                b = in_flight.popleft().result()
            if b.first_bad is not None and first_bad is None:
                first_bad, diagnosis = b.first_bad, b.diagnosis
            for note in b.notes:
                if note not in notes and len(notes) < 50:
                    notes.append(note)
            versions, backend, dtypes = b.versions, b.backend, b.dtypes
            tally.add(b.lo, b.n, b.checks, b.expected, b.actual)
            done += b.n
            del b
            if progress is not None:
                progress(done, n_total)
    except KeyboardInterrupt:
        partial = True
    finally:
        if pool is not None:  # a batch still running finishes before its sessions close
            for fut in in_flight:
                fut.cancel()
            pool.shutdown(wait=True)
        prepared.close()
        t["verify_s"] = time.perf_counter() - t_loop - t["read_s"]
    if done == 0 and not partial:
        raise PortingError(f"{src.path}: no samples were read")
    error_map = None
    if done and not partial:
        try:
            error_map = _error_map(model, keras_model, port, src, summaries, plan, spatial, knet)
        except KeyboardInterrupt:
            partial = True
    elif partial and done:
        notes.append("interrupted: no error map (it needs one more forward pass)")

    total_s = time.perf_counter() - t_start
    t["total_s"] = total_s
    t["samples_per_s"] = done / total_s if total_s > 0 else 0.0
    ok = done > 0 and all(s.ok for s in summaries)
    env = {
        "knet_backend": backend[0],
        "knet_backend_reason": backend[1],
        # whose kernels ran the reference's convolutions (porting.knet.mlas)
        "conv_kernel": (
            "numpy (the ONNX port runs on onnxruntime's)" if port is not None else mlas.describe()
        )
        if backend[0] == "reference"
        else None,
        "dtypes": dtypes,
        "versions": versions,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }
    return DataReport(
        ok=ok,
        partial=partial,
        n_samples=done,
        n_total=n_total,
        batch_size=batch_size,
        data=src.describe(),
        mode=mode,
        spatial=spatial,
        layers=summaries,
        end_to_end=tally.end_to_end,
        classifier=tally.classifier_figures(done),
        worst_samples=tally.worst(),
        ulp_histogram=tally.ulp_histogram,
        error_map=error_map,
        environment=env,
        timings=t,
        first_divergent=first_bad,
        diagnosis=diagnosis,
        notes=notes,
        port="onnx" if port is not None else "keras",
    )


def _shareable(model: KnetModel, keras_model: Any, port: Any, mode: str, knet: str) -> bool:
    """Whether two batches may be checked at once: the Knet side on the NumPy reference (Julia
    is called from its own thread only) and the port an ONNX file (onnxruntime's sessions run
    from any thread) or the compiled graphs of "each" mode (porting.model.keras_graph); eager
    Keras calls and "whole" mode's probe models stay on one thread."""
    from porting.model import convert as mconvert
    from porting.model.keras_side import per_sample
    from porting.model.verify import _overlapped

    if not _overlapped(knet):
        return False
    if port is not None:
        return True
    groups = mconvert.keras_groups(keras_model, model)
    return mode == "each" and all(groups) and per_sample(groups, keras_model)


def _threads() -> int:
    """Batches checked at once: `_THREADS`, at most PORTING_THREADS or the usable CPUs."""
    from porting._transpose import _threads as usable

    return min(_THREADS, usable(None))


def _versions() -> dict[str, Any]:
    """Versions for an ONNX port's report: TensorFlow's only when it is loaded already (the
    ONNX path never imports it)."""
    import sys

    from porting.verify import versions

    try:
        return versions(tensorflow="tensorflow" in sys.modules)
    except Exception:  # noqa: BLE001 - versions are informative only
        return versions(tensorflow=False)


def _error_map(
    model: KnetModel,
    keras_model: Any,
    port: Any,
    src: DataSource,
    summaries: list[LayerSummary],
    plan: Plan,
    spatial: str,
    knet: str,
) -> dict[str, Any] | None:
    """The worst layer's error at its worst sample, as a 2-D map (max over channels) of the
    absolute error (ULPs mislead near zero): the Keras model run up to that layer (errors
    propagate), against Knet; for an ONNX `port`, its end-to-end output."""
    from porting import layout as playout
    from porting.model import convert as mconvert
    from porting.model.forward import forward_knet

    worst = max(summaries, key=lambda s: s.worst_ratio)
    if worst.worst_sample is None:
        return None
    _, x1 = next(src.batches(1, start=worst.worst_sample))
    outs = forward_knet(model, x1, knet, plan=plan)
    step = list(plan)[worst.index]
    expected = mconvert.julia_to_tf(outs[worst.index], step.flat_from, spatial)
    if port is not None:
        actual = port.run(port.tf_input(model, x1))
        return _map_of(expected, actual, worst, src, "|ONNX - Knet|", "the ONNX file end to end")
    import keras

    groups = mconvert.keras_groups(keras_model, model)
    probe = keras.Model(keras_model.inputs[0], groups[worst.index][-1].output)
    x_tf = playout.activations_to_tf(x1, spatial) if x1.ndim > 2 else np.ascontiguousarray(x1.T)
    to_keras_input = getattr(model.layers[0], "keras_input", None)
    if to_keras_input is not None:
        x_tf = to_keras_input(x_tf)
    else:
        x_tf = x_tf.astype(np.dtype(keras_model.inputs[0].dtype), copy=False)
    actual = np.asarray(probe(x_tf, training=False))
    return _map_of(
        expected,
        actual,
        worst,
        src,
        "|Keras - Knet|",
        "the Keras model run end to end up to the layer",
    )


def _map_of(
    expected: np.ndarray,
    actual: np.ndarray,
    worst: LayerSummary,
    src: DataSource,
    what_err: str,
    how: str,
) -> dict[str, Any] | None:
    """The error map of one sample's `expected` and `actual` (TensorFlow layout, batch 1)."""
    if actual.shape != expected.shape or worst.worst_sample is None:
        return None
    err = np.abs(expected[0].astype(np.float64) - actual[0].astype(np.float64))
    err = np.nan_to_num(err, nan=0.0, posinf=0.0)
    if err.ndim >= 3:
        img = err.max(axis=tuple(range(2, err.ndim)))
        what = "max over channels, (H, W)"
    elif err.ndim == 2:
        img = err
        what = "(H, W)"
    else:
        img = err.reshape(1, -1)
        what = "features in a row"
    return {
        "layer": worst.name,
        "sample": worst.worst_sample,
        "label": src.label(worst.worst_sample),
        "what": f"absolute error {what_err}, {how}; {what}",
        "max_abs_error": float(img.max()) if img.size else 0.0,
        "shape": list(img.shape),
        "image": img,
    }
