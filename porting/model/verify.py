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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting import layout
from porting._checks import check_choice
from porting.comparison import Comparison, compare
from porting.errors import PortingError
from porting.model import convert as mconvert
from porting.model import knet_side
from porting.model.forward import backend_of, check_input, forward_steps
from porting.model.keras_side import per_sample, run_group, source_name
from porting.model.planning import Plan, given_input_size
from porting.model.spec import KnetModel

__all__ = ["verify_model", "ModelReport", "LayerRow", "default_input", "MODES"]

MODES = ("each", "whole")


@dataclass
class LayerRow:
    """One Knet layer's comparison."""

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]  # Julia size of the output, batch last
    k: int
    comparison: Comparison

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def max_abs_error(self) -> float:
        return self.comparison.max_abs_error

    @property
    def error_to_tolerance(self) -> float:
        return self.comparison.max_error_to_tolerance

    def to_dict(self) -> dict:
        c = self.comparison
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "k": self.k,
            "ok": self.ok,
            "max_abs_error": c.max_abs_error,
            "max_rel_error": c.max_rel_error,
            "max_ulp": c.max_ulp,
            "error_to_tolerance": c.max_error_to_tolerance,
            "n_mismatched": c.n_mismatched,
            "comparison": c.to_dict(),
        }


@dataclass
class ModelReport:
    """What `verify_model` compared and how each layer fared (`str()` is a readable table)."""

    ok: bool
    mode: str
    spatial: str
    rows: list[LayerRow]
    first_divergent: str | None
    end_to_end: dict
    knet_backend: str
    knet_backend_reason: str
    dtypes: dict[str, str]
    input_shape: tuple[int, ...]
    versions: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    diagnosis: Any = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        diag = self.diagnosis
        return {
            "ok": self.ok,
            "mode": self.mode,
            "spatial": self.spatial,
            "first_divergent": self.first_divergent,
            "end_to_end": self.end_to_end,
            "knet_backend": self.knet_backend,
            "knet_backend_reason": self.knet_backend_reason,
            "dtypes": self.dtypes,
            "input_shape": list(self.input_shape),
            "layers": [r.to_dict() for r in self.rows],
            "timings": self.timings,
            "diagnosis": diag.to_dict() if hasattr(diag, "to_dict") else diag,
            "notes": self.notes,
            "versions": self.versions,
        }

    def _headline(self) -> str:
        what = (
            "each layer fed the Knet input"
            if self.mode == "each"
            else "whole model, errors propagate"
        )
        if self.ok:
            return f"OK: the Keras model computes what the Knet model computes ({what})"
        return f"MISMATCH: first divergent layer {self.first_divergent!r} ({what})"

    def _footer(self) -> list[str]:
        e = self.end_to_end
        lines = [
            f"end to end: max abs error {e['max_abs_error']:.3g} "
            f"({e['max_rel_error']:.3g} of max |output| {e['max_abs_expected']:.3g}), "
            f"max {e['max_ulp']:.3g} ULP",
            f"Knet side: backend {self.knet_backend!r} ({self.knet_backend_reason}), "
            f"{self.dtypes['knet']}; Keras side: {self.dtypes['keras']}, spatial={self.spatial!r} "
            f"({'X1 is the width' if self.spatial == 'reverse' else 'X1 is the height'}); "
            f"input {self.input_shape}",
            "tolerance per layer: (sqrt(K)+2)*eps*S, S = the layer on |w|, |x| (+|b|)"
            + (
                "; plus the incoming error pushed through the layer's bound"
                if self.mode == "whole"
                else ""
            ),
        ]
        if self.diagnosis is not None:
            lines.append("diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        lines += [f"note: {n}" for n in self.notes]
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return lines

    COLUMNS = ("layer", "kind", "shape (Julia)", "K", "max abs err", "err / tol", "ok")

    def table(self) -> list[tuple[str, ...]]:
        """One row of plain strings per layer, under `COLUMNS` (for any presentation)."""
        return [
            (
                r.name,
                r.kind,
                str(r.shape),
                str(r.k),
                f"{r.max_abs_error:.3g}",
                f"{r.error_to_tolerance:.3g}",
                "yes" if r.ok else "NO",
            )
            for r in self.rows
        ]

    def headline(self) -> str:
        return self._headline()

    def footer(self) -> list[str]:
        return self._footer()

    def __str__(self) -> str:
        """Plain text: the headline, an aligned table, the footer."""
        rows = [self.COLUMNS, *self.table()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.COLUMNS))]
        right = {3, 4, 5}

        def line(r):
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        out = [self._headline(), line(rows[0]), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in rows[1:]]
        return "\n".join(out + self._footer())


# --------------------------------------------------------------------------- running


def default_input(
    model: KnetModel, input_size=None, *, batch: int = 2, seed: int = 0
) -> np.ndarray:
    """A deterministic Julia-indexed input `(input_size..., batch)` in the model's dtype:
    uniform in [-1, 1) from `np.random.default_rng(seed)`."""
    size = given_input_size(
        model,
        input_size,
        "no input given and the model has no input_size; pass x (Julia-indexed, batch "
        "last) or input_size=(X1, ..., C)",
    )
    first = model.layers[0]
    if hasattr(first, "default_input"):  # token indices (porting.model.kinds.embed)
        return first.default_input(size, batch, seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(*size, batch)).astype(model.dtype)
    return np.asfortranarray(x)


@contextlib.contextmanager
def _no_tf32(allow: bool, notes: list[str]):
    """TensorFlow enables TF32 on Ampere+ GPUs; verification runs in true float32 unless told."""
    from porting import tf as ptf

    tf = ptf._import_tf()
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


def _keras_dtype(keras_model) -> np.dtype:
    return np.dtype(keras_model.inputs[0].dtype)


ProgressFn = Callable[[str, int, int], None]


def verify_model(
    model: KnetModel,
    x=None,
    *,
    keras_model=None,
    mode: str = "each",
    spatial: str | None = None,
    knet: str = "auto",
    allow_tf32: bool = False,
    progress: ProgressFn | None = None,
    diagnose: bool = True,
    plan: Plan | None = None,
) -> ModelReport:
    """Run the Knet side and the Keras side of `model` on `x` and compare every layer.

    `x` is Julia-indexed `(X1, ..., C, N)` in the model's dtype (default: `default_input`).
    `keras_model` defaults to `to_keras(model, spatial=spatial)`; a model loaded from disk works
    too (layers are matched by name). `spatial` defaults to the convention the Keras model was
    converted with, else "reverse". `knet` picks the Knet backend (`porting.knet`). `progress`,
    if given, is called as `progress(description, done, total)` as the work advances (the CLI
    draws a bar with it). `plan` is the model's plan for `x`'s size (made here when not given).
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
    timings: dict[str, float] = {}
    lower = kdt if kdt.itemsize <= model.dtype.itemsize else model.dtype
    eps = float(np.finfo(lower).eps)
    wd = model.dtype
    precision = "tf32" if allow_tf32 else None
    total = len(steps) + 2
    done = 0

    def advance(desc):
        nonlocal done
        done += 1
        if progress is not None:
            progress(desc, done, total)

    with _no_tf32(allow_tf32, notes):
        # The Knet side runs layer by layer inside the comparison (porting.model.knet_side),
        # and each Knet output is dropped once no later layer reads it: peak memory stays near
        # one layer's arrays instead of every layer's output at once.
        knet_done: dict[int, np.ndarray] = {}
        tags: list = []
        knet_steps = forward_steps(steps, x, knet, True, knet_done, tags)
        side = knet_side.records(
            steps, knet_steps, knet_done, x, tags, spatial, eps, wd, mode == "each"
        )
        try:
            run = _Run(
                steps, groups, keras_model, model, x, mode, spatial, kdt, in_dt, eps, precision
            )
            rows, first_bad, diag_arrays, final_actual = _compare_layers(
                run, side, knet_done, notes, timings, advance
            )
        finally:
            side.close()

    diagnosis = None
    first_i = next((i for i, r in enumerate(rows) if not r.ok), None)
    if diagnose and first_i is not None:
        assert diag_arrays is not None  # set with first_bad, at the first row not ok
        diagnosis = _diagnose_layer_kind(
            steps, first_i, groups[first_i], diag_arrays[0], diag_arrays[1], spatial, kdt, notes
        )
    if diagnosis is None and diagnose and first_i is not None:
        src = steps[first_i].sources[0]
        assert diag_arrays is not None  # set with first_bad, at the first row not ok
        x_in, y_first = diag_arrays[0][0], diag_arrays[1]
        in_flat = None if src < 0 else steps[src].flat_from
        diagnosis = _diagnose_layer(
            source_name(steps, src),
            steps[first_i],
            groups[first_i],
            x_in,
            in_flat,
            y_first,
            rows[first_i],
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
    )
    report.timings["total_s"] = time.perf_counter() - t_start
    return report


@dataclass(frozen=True)
class _Run:
    """What one `verify_model` call compares: the plan, the Keras groups and models, the input,
    and the settings derived from them."""

    steps: Plan
    groups: list
    keras_model: Any
    model: KnetModel
    x: np.ndarray
    mode: str
    spatial: str
    kdt: np.dtype  # the Keras layers' float type
    in_dt: np.dtype  # the Keras input's type (int32 for token indices)
    eps: float  # of the lower of the two precisions
    precision: str | None


def _compare_layers(run: _Run, side, knet_done: dict, notes: list, timings: dict, advance):
    """The comparison loop of `verify_model`: one `LayerRow` per layer, from the Knet records
    `side` yields (porting.model.knet_side) and the Keras side run here. Returns the rows, the
    first divergent layer's (Keras output, S) and (Knet inputs, Knet output), and the Keras
    model's final output."""
    import keras  # imported by to_keras / the caller's model already

    steps, groups, keras_model, model, x = run.steps, run.groups, run.keras_model, run.model, run.x
    mode, spatial, kdt, in_dt, eps = run.mode, run.spatial, run.kdt, run.in_dt, run.eps
    precision, wd = run.precision, model.dtype

    x_tf = layout.activations_to_tf(x, spatial) if x.ndim > 2 else np.ascontiguousarray(x.T)
    x_tf = x_tf.astype(in_dt if not np.issubdtype(in_dt, np.floating) else kdt, copy=False)
    to_keras_input = getattr(model.layers[0], "keras_input", None)
    if to_keras_input is not None:  # Knet's 1-based indices -> Keras's 0-based
        x_tf = to_keras_input(x_tf)
    actual: list = []
    final_actual = None
    if mode == "whole":
        advance("Keras side")
        t0 = time.perf_counter()
        probe = keras.Model(keras_model.inputs[0], [g[-1].output for g in groups])
        outs = probe(x_tf, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        actual = [np.asarray(t) for t in outs]
        final_actual = actual[-1]
        timings["keras_forward_s"] = time.perf_counter() - t0
    advance("comparing layers")

    rows: list[LayerRow] = []
    x_j = x.astype(kdt).astype(x.dtype) if kdt != x.dtype else None  # x as Keras sees it
    if not np.issubdtype(x.dtype, np.floating):
        x_j = None  # token indices reach Keras exactly
    actual_j: dict[int, np.ndarray] = {}  # whole mode: Keras outputs still to be read
    tf_done: dict[int, np.ndarray] = {}  # each mode: Knet outputs in TF layout still to be fed
    # Each mode, per-sample layers: every group runs once on a doubled batch, Knet's input in
    # the first half and the Keras chain's own in the second, so the end-to-end run shares the
    # isolated runs' calls (keras_side.per_sample); `chain` holds the outputs still to be read.
    doubled = mode == "each" and per_sample(groups, keras_model)
    chain: dict[int, Any] = {}
    n = x_tf.shape[0]
    last_use = {k: i for i, st in enumerate(steps) for k in st.sources}
    t_keras_each = t_knet = 0.0
    # the first divergent layer's (Keras output, S) and (Knet inputs, Knet output)
    first_bad: tuple | None = None
    diag_arrays: tuple | None = None
    for i, (step, group) in enumerate(zip(steps, groups, strict=True)):
        layer = step.layer
        rec = next(side)
        t_knet += rec.knet_s
        y_knet, expected = rec.y, rec.expected
        x_ins = [x if k < 0 else knet_done[k] for k in step.sources]
        k = step.k
        if mode == "each":
            t0 = time.perf_counter()
            feeds = {
                source_name(steps, j): x_tf if j < 0 else tf_done[j].astype(kdt, copy=False)
                for j in step.sources
            }
            if doubled and any(j >= 0 for j in step.sources):
                for j in step.sources:
                    name = source_name(steps, j)
                    feeds[name] = np.concatenate([feeds[name], x_tf if j < 0 else chain[j]])
                both = np.asarray(run_group(group, feeds))
                a_i, own = both[:n], both[n:]
            else:  # the model's input is Knet's and Keras's alike
                a_i = own = np.asarray(run_group(group, feeds))
            if doubled and (i in last_use or i == len(steps) - 1):
                chain[i] = own
            del own
            t_keras_each += time.perf_counter() - t0
            mag_tf = rec.mag_tf
        else:
            a_i = actual[i]
            e_ins = []
            for j, x_in in zip(step.sources, x_ins, strict=True):
                a_src = x_j if j < 0 else actual_j.get(j)
                e_ins.append(
                    None
                    if a_src is None
                    else np.abs(a_src.astype(wd, copy=False) - np.asarray(x_in, dtype=wd))
                )
            scale = knet_side.tolerance_scale(k, eps)
            nonneg = knet_side.nonnegative(steps, step)
            mag = knet_side.magnitude_of(step, x_ins, e_ins, rec.extra, y_knet, scale, wd, nonneg)
            mag_tf = mconvert.julia_to_tf(mag, step.flat_from, spatial)
            del mag, e_ins
        if a_i.shape != expected.shape:
            raise PortingError(
                f"{layer.label}: the Keras layers {[g.name for g in group]} give shape "
                f"{a_i.shape}, Knet's output is {y_knet.shape} ({expected.shape} in TensorFlow "
                "layout); the Keras model does not match this Knet model"
            )
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # ULPs near 0
            comp = compare(expected, a_i, k=k, magnitude=mag_tf, precision=precision)
        rows.append(LayerRow(i, str(layer.name), layer.kind, tuple(y_knet.shape), k, comp))
        if hasattr(layer, "verify_notes"):  # per-step figures (porting.model.kinds.rnn)
            a_j = mconvert.tf_to_julia(a_i, step.flat_from, spatial)
            notes.extend(layer.verify_notes(x_ins[0], a_j, str(layer.name)))
        if not comp.ok and first_bad is None:
            first_bad = (a_i, mag_tf)
            diag_arrays = (list(x_ins), y_knet)
        if mode == "each" and i in last_use:
            tf_done[i] = expected
        for j in {*step.sources, i}:  # outputs no later layer reads
            if j >= 0 and last_use.get(j, -1) <= i:
                tf_done.pop(j, None)
                if j != len(steps) - 1:
                    chain.pop(j, None)
                    knet_done.pop(j, None)
        del x_ins, rec
        if mode == "whole":
            if i in last_use:
                actual_j[i] = mconvert.tf_to_julia(a_i, step.flat_from, spatial)
            for src in [s for s in actual_j if last_use[s] <= i]:
                del actual_j[src]
        advance(f"compared {layer.name}")
    timings["knet_forward_s"] = t_knet
    if mode == "each":
        timings["keras_layers_s"] = t_keras_each
        advance("Keras side, end to end")
        if doubled:
            final_actual = chain[len(steps) - 1]
        else:  # the whole Keras model, run last, for the end-to-end drift (its kernels warm)
            t0 = time.perf_counter()
            final_actual = np.asarray(keras_model(x_tf, training=False))
            timings["keras_forward_s"] = time.perf_counter() - t0
    return rows, first_bad, diag_arrays, final_actual


def _diagnose_layer_kind(steps, i, group, x_ins_julia, y_knet, spatial, kdt, notes):
    """Batchnorm and residual-sum causes (porting.diagnosis._model) for layer `i`, its Keras
    group run on its Knet inputs `x_ins_julia` (one per source; Knet output `y_knet`); None for
    other kinds, or when no such cause is found."""
    step = steps[i]
    if step.layer.kind == "rnn":
        return _diagnose_rnn(steps, step, group, x_ins_julia[0], spatial, kdt, notes)
    if step.layer.kind not in ("batchnorm", "add"):
        return None
    try:
        from porting.diagnosis._model import diagnose_step
        from porting.model.kinds import batchnorm as kbn

        x_ins, feeds = [], {}
        for k, x_j in zip(step.sources, x_ins_julia, strict=True):
            t = mconvert.julia_to_tf(x_j, None if k < 0 else steps[k].flat_from, spatial)
            x_ins.append(t)
            feeds[source_name(steps, k)] = t.astype(kdt, copy=False)
        actual = np.asarray(run_group(group, feeds))
        expected = mconvert.julia_to_tf(y_knet, step.flat_from, spatial)
        d = diagnose_step(
            step,
            x_ins,
            expected,
            actual,
            lambda: kbn._weights(step.layer, step, spatial, np.float64),
        )
    except Exception as e:  # noqa: BLE001 - a diagnosis must never hide the report itself
        notes.append(f"no diagnosis for {step.layer.name}: {type(e).__name__}: {e}"[:300])
        return None
    return None if d is None or d.cause == "unknown" else d


def _diagnose_rnn(steps, step, group, x_in, spatial, kdt, notes):
    """An RNN row: its Keras layers run on the Knet input and the recurrence's usual mistakes
    recomputed (porting.rnn.diagnosis: gate order, biases, directions, ...); None when no
    recomputed cause explains the difference."""
    try:
        from porting.model.kinds.embed import knet_sequence
        from porting.rnn.diagnosis import diagnose as diagnose_rnn

        src = step.sources[0]
        x_tf = mconvert.julia_to_tf(x_in, None if src < 0 else steps[src].flat_from, spatial)
        actual = np.asarray(run_group(group, {source_name(steps, src): x_tf.astype(kdt)}))
        a_j = mconvert.tf_to_julia(actual, step.flat_from, spatial)
        weights = step.layer.rnn_weights
        y = knet_sequence(a_j) if step.layer.output == "sequence" else a_j
        d = diagnose_rnn(weights, knet_sequence(x_in).astype(weights.dtype, copy=False), y)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never hide the report itself
        notes.append(f"no RNN diagnosis for {step.layer.name}: {type(e).__name__}: {e}"[:300])
        return None
    return None if d.cause == "unknown" else d


def _diagnose_layer(src_name, step, group, x_in, in_flat, y_knet, row, bad, spatial, kdt, notes):
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
        linear = [(j, st) for j, st in enumerate(step.stages) if st.linear]
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


def _end_to_end(expected: np.ndarray, actual: np.ndarray) -> dict:
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


def _versions() -> dict:
    from porting.verify import versions

    try:
        return versions()
    except Exception:  # noqa: BLE001 - versions are informative only
        return versions(tensorflow=False)
