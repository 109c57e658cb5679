"""Layer-by-layer verification of a converted model: Knet side vs Keras side, same input.

Two modes:

- `mode="each"` (per-layer isolation): every Keras layer group is fed the *Knet* output of the
  previous layer (converted to TensorFlow layout), so each row measures that layer's own error
  and a broken layer cannot hide behind, or blame, its neighbours. The Keras model is also run
  end to end, as it will be in use, for the end-to-end drift: when every layer computes each
  sample on its own (`keras_side.per_sample`), in the same calls, as the second half of a
  doubled batch (Knet's input in the first half, the Keras chain's own output in the second),
  which costs much less than a second pass of per-layer calls; otherwise as a separate call of
  the whole model after the layers.
- `mode="whole"`: the Keras model runs end to end, as it will in use; errors propagate.

Tolerance of a row (through `porting.compare`, `tol = (sqrt(K) + 2) * eps * S`): `K` is the
number of terms a layer sums per output (conv: kernel volume x Cin, dense: in-features, +1 for
the bias; mean pool: window) and `S`, per output element, the same layer applied to magnitudes
(`conv4(|w|, |x|) .+ |b|`, `|w| * mat(|x|) .+ |b|`, pooled the same way) and passed through
each activation's Lipschitz bound, plus the activation's own rounding where it has some.

Whole-model mode adds the error that *arrives* at a layer. The incoming error is measured, not
modelled: `E = |Keras input - Knet input|` of that layer, element by element, is pushed through
the layer's absolute-value bound (`conv4(|w|, E)`, `|w| * E`, max over the pooling window,
Lipschitz constants of the activations: relu, tanh, elu 1, sigm 1/4, softmax's first-order
bound) and added to the tolerance (`S += bound(E) / ((sqrt(K) + 2) eps)`). That bound holds for
any incoming error, so a correct float32 model is never flagged however deep it is, while a
layer whose own error exceeds its rounding budget still is; after a diverging layer the next
ones carry its error in their budget, so the first divergent layer is the one named.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from porting import layout
from porting._checks import check_choice
from porting.comparison import compare
from porting.errors import PortingError
from porting.model import convert as mconvert
from porting.model import fused, knet_side
from porting.model.forward import backend_of, check_input, forward_steps
from porting.model.keras_side import run_group, source_name
from porting.model.kinds import kind_of
from porting.model.planning import Plan, Step, given_input_size
from porting.model.report import LayerRow, ModelReport
from porting.model.spec import KnetModel
from porting.model.verify_sides import AdvanceFn, EachMode, Run, WholeMode

__all__ = ["verify_model", "ModelReport", "LayerRow", "default_input", "MODES"]

MODES = ("each", "whole")


# --------------------------------------------------------------------------- running


def default_input(
    model: KnetModel, input_size: Any = None, *, batch: int = 2, seed: int = 0
) -> np.ndarray:
    """A deterministic Julia-indexed input `(input_size..., batch)` in the model's dtype:
    uniform in [-1, 1) from `np.random.default_rng(seed)`."""
    size = given_input_size(
        model,
        input_size,
        "no input given and the model has no input_size; pass x (Julia-indexed, batch "
        "last) or input_size=(X1, ..., C)",
    )
    # uniform floats, or the first layer's own kind of input (token indices: kinds.embed)
    x: np.ndarray = model.layers[0].default_input(tuple(size), batch, seed, model.dtype)
    return x


@contextlib.contextmanager
def _no_tf32(allow: bool, notes: list[str]) -> Iterator[None]:
    """TensorFlow enables TF32 on Ampere+ GPUs; verification runs in true float32 unless told."""
    from porting import tf as ptf

    tf = ptf.import_tf()
    cfg = tf.config.experimental
    before = cfg.tensor_float_32_execution_enabled()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and before and not allow:
        cfg.enable_tensor_float_32_execution(False)
        notes.append(
            "TF32 was disabled while verifying (TensorFlow enables it by default on this GPU); "
            "a model run with TF32 differs by about 1e-4 relative: verify with allow_tf32=True "
            "to check it at TF32 tolerance"
        )
    try:
        yield
    finally:
        if gpus and before and not allow:
            cfg.enable_tensor_float_32_execution(True)


def _keras_dtype(keras_model: Any) -> np.dtype[Any]:
    dt: np.dtype[Any] = np.dtype(keras_model.inputs[0].dtype)
    return dt


ProgressFn = Callable[[str, int, int], None]


def verify_model(
    model: KnetModel,
    x: Any = None,
    *,
    keras_model: Any = None,
    mode: str = "each",
    spatial: str | None = None,
    knet: str = "auto",
    allow_tf32: bool = False,
    progress: ProgressFn | None = None,
    diagnose: bool = True,
    plan: Plan | None = None,
    ulps: bool = True,
    compiled: bool = False,
) -> ModelReport:
    """Run the Knet side and the Keras side of `model` on `x` and compare every layer.

    `x` is Julia-indexed `(X1, ..., C, N)` in the model's dtype (default: `default_input`).
    `keras_model` defaults to `to_keras(model, spatial=spatial)`; a model loaded from disk works
    too (layers are matched by name), and so does the original of a `from_keras` model: a Keras
    layer that became several Knet layers is one row, at the last (porting.model.fused). `spatial` defaults to the convention the Keras model was
    converted with, else "reverse". `knet` picks the Knet backend (`porting.knet`). `progress`,
    if given, is called as `progress(description, done, total)` as the work advances (the CLI
    draws a bar with it). `plan` is the model's plan for `x`'s size (made here when not given).
    `ulps=False` leaves out the rows' secondary ULP figure (`max_ulp` NaN; the end-to-end one
    stays), for callers that do not report it (`verify_data`): a third fewer passes.
    `compiled=True` runs the Keras side of doubled "each" mode as compiled graphs
    (porting.model.keras_graph: the same numbers, traced once per Keras model), for callers
    that verify many batches with one model (`verify_data`); one call pays the trace.
    The Knet side runs on a second thread, a few layers ahead of the comparison, when the NumPy
    reference computes it (porting.model.knet_side.Ahead; the same numbers;
    `PORTING_THREADS=1` keeps it on the calling thread).
    Returns a `ModelReport`; `report.ok` is True when every layer is within its tolerance.
    """
    check_choice(mode, "mode", MODES)
    if progress is not None and not callable(progress):
        raise PortingError(
            f"progress={progress!r}: expected None or a function (description, done, total)"
        )
    t_start = time.perf_counter()
    if x is None:
        x = default_input(model)
    x, steps = check_input(model, x, plan)
    if keras_model is None:
        spatial = spatial or "reverse"
        keras_model = mconvert.to_keras(model, spatial=spatial, plan=steps)
    else:
        spatial = spatial or mconvert.spatial_of(keras_model)
    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    groups = mconvert.keras_groups(keras_model, model)
    heads = fused.heads(steps, groups)
    kdt = _keras_dtype(keras_model)
    if not np.issubdtype(kdt, np.floating):  # token indices in: the weights' type is the layers'
        kdt = np.dtype(keras_model.outputs[0].dtype)
    in_dt = np.dtype(keras_model.inputs[0].dtype)
    want = (x.shape[-1], *mconvert.tf_sample_shape(tuple(x.shape[:-1]), spatial))
    have = tuple(keras_model.inputs[0].shape)
    if len(have) != len(want) or any(
        h is not None and h != w for h, w in zip(have[1:], want[1:], strict=True)
    ):
        raise PortingError(
            f"the Keras model takes input {have} but x {x.shape} is {want} in TensorFlow layout "
            f"(spatial={spatial!r}); was it converted with another spatial convention or input size?"
        )
    notes: list[str] = mconvert.conversion_notes(keras_model)
    notes.extend(fused.group_notes(steps, groups, heads))
    timings: dict[str, float] = {}
    lower = kdt if kdt.itemsize <= model.dtype.itemsize else model.dtype
    wd = model.dtype
    precision = "tf32" if allow_tf32 else None
    total = len(steps) + 2
    done = 0

    def advance(desc: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(desc, done, total)

    with _no_tf32(allow_tf32, notes):
        # The Knet side runs layer by layer inside the comparison (porting.model.knet_side),
        # and each Knet output is dropped once no later layer reads it: peak memory stays near
        # one layer's arrays instead of every layer's output at once.
        knet_done: dict[int, np.ndarray] = {}
        tags: list[Any] = []
        knet_steps = forward_steps(steps, x, knet, True, knet_done, tags)
        records = knet_side.records(
            steps, knet_steps, knet_done, x, tags, spatial, lower, wd, mode == "each"
        )
        # on a second thread beside Keras (unless verify_data already gives each batch one)
        side: Generator[knet_side.KnetRecord, None, None] | knet_side.Ahead = (
            knet_side.Ahead(records, depth=2)
            if not knet_side.ON_CALLER.get() and _overlapped(knet)
            else records
        )
        try:
            run = Run(
                steps,
                groups,
                heads,
                keras_model,
                model,
                x,
                mode,
                spatial,
                kdt,
                in_dt,
                lower,
                precision,
                bool(ulps),
                bool(compiled),
            )
            rows, first_bad, diag_arrays, final_actual = _compare_layers(
                run, side, knet_done, notes, timings, advance
            )
        finally:
            side.close()

    diagnosis = None
    first_i = next((r.index for r in rows if not r.ok), None)
    if first_i is not None and heads[first_i] != first_i:  # several Knet layers: outputs only
        diagnose = False
        assert first_bad is not None and diag_arrays is not None  # set at the first row not ok
        row = next(r for r in rows if r.index == first_i)
        diagnosis = fused.diagnose_outputs(
            steps,
            heads[first_i],
            first_i,
            groups[first_i],
            row,
            diag_arrays,
            first_bad,
            spatial,
            notes,
        )
    if diagnose and first_i is not None:
        assert diag_arrays is not None  # set with first_bad, at the first row not ok
        diagnosis = _diagnose_layer_kind(
            steps, first_i, groups[first_i], diag_arrays[0], diag_arrays[1], spatial, kdt, notes
        )
    if diagnosis is None and diagnose and first_i is not None:
        src = steps[first_i].sources[0]
        assert diag_arrays is not None and first_bad is not None  # set at the first row not ok
        x_in, y_first = diag_arrays[0][0], diag_arrays[1]
        in_flat = None if src < 0 else steps[src].flat_from
        diagnosis = _diagnose_layer(
            source_name(steps, src),
            steps[first_i],
            groups[first_i],
            x_in,
            in_flat,
            y_first,
            next(r for r in rows if r.index == first_i),
            first_bad,
            spatial,
            kdt,
            notes,
        )
    expected_final = mconvert.julia_to_tf(knet_done[len(steps) - 1], steps[-1].flat_from, spatial)
    end = _end_to_end(expected_final, final_actual)
    first = next((r.name for r in rows if not r.ok), None)
    backend, backend_reason = backend_of(tags)
    ok = first is None
    for step in steps:
        for st, (size, _) in zip(step.stages, step.stage_sizes, strict=True):
            note = st.note(size)
            if note is not None and note not in notes:
                notes.append(
                    note if note.startswith("pool mode=2") else f"{step.layer.name}: {note}"
                )
    if kdt != model.dtype:
        notes.append(
            f"Knet side in {model.dtype}, Keras side in {kdt}: tolerances use {lower}'s eps"
        )
    report = ModelReport(
        ok=ok,
        mode=mode,
        spatial=spatial,
        rows=rows,
        first_divergent=first,
        end_to_end=end,
        knet_backend=backend,
        knet_backend_reason=backend_reason,
        dtypes={"knet": str(model.dtype), "keras": str(kdt)},
        input_shape=tuple(x.shape),
        versions=_versions(),
        timings=timings,
        diagnosis=diagnosis,
        notes=notes,
        outputs=(expected_final, np.asarray(final_actual)),
    )
    report.timings["total_s"] = time.perf_counter() - t_start
    return report


def _compare_layers(
    run: Run,
    side: Iterator[knet_side.KnetRecord],
    knet_done: dict[int, np.ndarray],
    notes: list[str],
    timings: dict[str, float],
    advance: AdvanceFn,
) -> tuple[
    list[LayerRow],
    tuple[np.ndarray, Any] | None,
    tuple[list[np.ndarray], np.ndarray] | None,
    np.ndarray,
]:
    """The comparison loop of `verify_model`: one `LayerRow` per layer, from the Knet records
    `side` yields (porting.model.knet_side) and the Keras side that the mode's runner gives
    (`EachMode`, `WholeMode`). Returns the rows, the first divergent layer's (Keras output, S)
    and (Knet inputs, Knet output), and the Keras model's final output."""
    steps, x = run.steps, run.x
    x_tf = _keras_input(run)
    ends = list(range(len(steps)))  # where each layer's Keras group is compared
    for i in reversed(range(len(steps) - 1)):
        ends[i] = i if run.groups[i] else ends[i + 1]
    last_use = {k: ends[i] for i, st in enumerate(steps) for k in st.sources}
    keras_side: EachMode | WholeMode = (
        EachMode(run, x_tf, last_use)
        if run.mode == "each"
        else WholeMode(run, x_tf, last_use, timings, advance)
    )
    advance("comparing layers")
    rows: list[LayerRow] = []
    t_knet = 0.0
    first_bad: tuple[np.ndarray, Any] | None = None  # the first divergent layer's (Keras output, S)
    diag_arrays: tuple[list[np.ndarray], np.ndarray] | None = (
        None  # and its (Knet inputs, Knet output)
    )
    carry: np.ndarray | None = None  # the error bound of a group's Knet layers so far
    for seg in keras_side.segments:
        # the segment's Knet records first (the compiled Keras side runs a segment at once)
        recs: list[knet_side.KnetRecord | None] = [next(side) for _ in seg]
        t_knet += sum(r.knet_s for r in recs if r is not None)
        keras_side.prepare(seg, recs)
        for pos, i in enumerate(seg):
            rec, recs[pos] = recs[pos], None
            assert rec is not None
            step, group = steps[i], run.groups[i]
            x_ins = [x if k < 0 else knet_done[k] for k in step.sources]
            if not group:  # compared with the Keras layer at the group's last Knet layer
                e_ins = keras_side.incoming(step, x_ins, carry)
                carry = fused.error_bound(
                    steps, step, rec, x_ins, e_ins, run.tol_dtype, run.model.dtype, run.precision
                )
                del x_ins, rec
                advance(f"ran {step.layer.name}")
                continue
            a_i, mag_tf = keras_side.output(i, step, group, rec, x_ins, carry)
            carry = None
            row = _row(run, i, step, group, rec, a_i, mag_tf)
            rows.append(row)
            layer = step.layer
            if layer.verify_notes_of_output:  # per-step figures (porting.model.kinds.rnn)
                a_j = mconvert.tf_to_julia(a_i, step.flat_from, run.spatial)
                notes.extend(layer.verify_notes(x_ins[0], a_j, str(layer.name)))
            if not row.ok and first_bad is None:
                first_bad = (a_i, mag_tf)
                h = run.heads[i]  # a group's first Knet layer's inputs (the layer's own, mostly)
                diag_ins = (
                    x_ins if h == i else [x if k < 0 else knet_done[k] for k in steps[h].sources]
                )
                diag_arrays = (list(diag_ins), rec.y)
            expected = rec.expected
            del x_ins, rec
            for j in {*step.sources, *steps[run.heads[i]].sources, i}:  # no later layer reads
                if j >= 0 and last_use.get(j, -1) <= i:
                    keras_side.drop(j)
                    if j != run.last:
                        knet_done.pop(j, None)
            keras_side.keep(i, step, a_i, expected)
            del expected
            advance(f"compared {layer.name}")
    timings["knet_forward_s"] = t_knet
    final_actual = keras_side.final(timings, advance)
    return rows, first_bad, diag_arrays, final_actual


def _overlapped(knet: str) -> bool:
    """Whether the Knet side runs beside the Keras side (knet_side.Ahead): with two threads
    to spare (PORTING_THREADS, the CPUs this process may use) and the NumPy reference as the
    backend (which any thread may call; Julia stays on its own thread)."""
    from porting._transpose import _threads
    from porting.knet import backend_name, reference

    return _threads(None) > 1 and backend_name(knet) == reference.NAME


def _keras_input(run: Run) -> np.ndarray:
    """The Keras model's input for Knet's `x`: TensorFlow layout, the Keras input's type, and
    what the first layer makes of it (token indices: 0-based)."""
    x, in_dt = run.x, run.in_dt
    x_tf = layout.activations_to_tf(x, run.spatial) if x.ndim > 2 else np.ascontiguousarray(x.T)
    x_tf = x_tf.astype(in_dt if not np.issubdtype(in_dt, np.floating) else run.kdt, copy=False)
    x_keras: np.ndarray = run.model.layers[0].keras_input(x_tf)
    return x_keras


def _row(
    run: Run,
    i: int,
    step: Step,
    group: list[Any],
    rec: knet_side.KnetRecord,
    a_i: np.ndarray,
    mag_tf: Any,
) -> LayerRow:
    """Layer `i`'s comparison: Knet's output (`rec.expected`, TensorFlow layout) against the
    Keras side's `a_i`, tolerance from the layer's K and `mag_tf`."""
    layer, expected = step.layer, rec.expected
    if a_i.shape != expected.shape:
        raise PortingError(
            f"{layer.label}: the Keras layers {[g.name for g in group]} give shape "
            f"{a_i.shape}, Knet's output is {rec.y.shape} ({expected.shape} in TensorFlow "
            "layout); the Keras model does not match this Knet model"
        )
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # ULPs near 0
        comp = compare(
            expected, a_i, k=step.k, magnitude=mag_tf, precision=run.precision, ulps=run.ulps
        )
    return LayerRow(i, str(layer.name), layer.kind, tuple(rec.y.shape), step.k, comp)


def _diagnose_layer_kind(
    steps: Plan,
    i: int,
    group: list[Any],
    x_ins_julia: list[np.ndarray],
    y_knet: np.ndarray,
    spatial: str,
    kdt: np.dtype[Any],
    notes: list[str],
) -> Any:
    """The kind's own causes (its row's `diagnose`: batchnorm, residual sum) for layer `i`, its
    Keras group run on its Knet inputs `x_ins_julia` (one per source; Knet output `y_knet`);
    None for kinds without one, or when no such cause is found."""
    step = steps[i]
    kind_diagnose = kind_of(step.layer).diagnose
    if kind_diagnose is None:
        return None
    try:
        x_ins: list[np.ndarray] = []
        feeds: dict[str, np.ndarray] = {}
        for k, x_j in zip(step.sources, x_ins_julia, strict=True):
            t = mconvert.julia_to_tf(x_j, None if k < 0 else steps[k].flat_from, spatial)
            x_ins.append(t)
            feeds[source_name(steps, k)] = t.astype(kdt, copy=False)
        actual = np.asarray(run_group(group, feeds))
        expected = mconvert.julia_to_tf(y_knet, step.flat_from, spatial)
        d = kind_diagnose(step, x_ins, expected, actual, spatial)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never hide the report itself
        notes.append(f"no diagnosis for {step.layer.name}: {type(e).__name__}: {e}"[:300])
        return None
    return None if d is None or d.cause == "unknown" else d


def _diagnose_layer(
    src_name: str,
    step: Step,
    group: list[Any],
    x_in: np.ndarray,
    in_flat: tuple[int, ...] | None,
    y_knet: np.ndarray,
    row: LayerRow,
    bad: tuple[np.ndarray, Any],
    spatial: str,
    kdt: np.dtype[Any],
    notes: list[str],
) -> Any:
    """`porting.diagnose` on the first divergent layer.

    For a layer with a linear stage (`conv4(w, x) .+ b`, `w * mat(x) .+ b`) that part is
    diagnosed with the weights and the layer's Knet input, so that hypotheses (kernel flip,
    transposed axes, flatten order, ...) are tested by recomputation: the Keras layers up to the
    conv/dense one are run on the Knet input. When that part agrees, the pooling or activation
    after it is at fault, and the layer's outputs are diagnosed on their own.
    """

    from porting.diagnosis import diagnose

    layer = step.layer
    expected = mconvert.julia_to_tf(y_knet, step.flat_from, spatial)
    try:
        linear: list[tuple[int, Any]] = [(j, st) for j, st in enumerate(step.stages) if st.linear]
        linear = [] if step.layer.merges else linear
        if linear:
            j, lin = linear[0]
            by_name = {lay.name: lay for lay in group}
            end = by_name.get(f"{layer.name}__crop", by_name.get(str(layer.name)))
            t = mconvert.julia_to_tf(x_in, in_flat, spatial).astype(kdt, copy=False)
            a_lin = np.asarray(run_group(group, {src_name: t}, end))
            # the Knet side of the stages up to the linear one, on the reference backend
            e_lin = x_in
            for st in step.stages[: j + 1]:
                e_lin = st.forward(e_lin, "reference", [])
            e_lin_tf = (
                layout.activations_to_tf(e_lin, spatial)
                if e_lin.ndim > 2
                else np.ascontiguousarray(e_lin.T)
            )
            d = diagnose(e_lin_tf, a_lin, spatial=spatial, **lin.diagnose_kwargs(x_in, step))
            if d.cause != "rounding":
                return d
            what = "conv4" if e_lin.ndim > 2 else "w * mat(x)"
            notes.append(
                f"{layer.name}: its {what} .+ b part agrees; the difference comes after it "
                "(pooling or activation)"
            )
        actual, mag_tf = bad
        return diagnose(expected, actual, k=row.k, magnitude=mag_tf)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never hide the report itself
        notes.append(f"no diagnosis for {layer.name}: {type(e).__name__}: {e}"[:300])
        return None


def _end_to_end(expected: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        c = compare(expected, actual)
    peak = float(np.max(np.abs(expected))) if expected.size else 0.0
    return {
        "max_abs_error": c.max_abs_error,
        "max_abs_expected": peak,
        "max_rel_error": c.max_abs_error / peak if peak else 0.0,
        "max_ulp": c.max_ulp,
        "shape_tf": list(expected.shape),
    }


def _versions() -> dict[str, Any]:
    from porting.verify import versions

    try:
        return versions()
    except Exception:  # noqa: BLE001 - versions are informative only
        return versions(tensorflow=False)
