"""The `rnn` and `timedense` kinds: Knet's `RNN` in a model, and a dense layer over every step.

`rnn` wraps porting.rnn: Knet's forward is `porting.rnn.reference.forward`, the Keras layers
`porting.rnn.keras.apply_keras`, the export entry `porting.rnn.export.from_export` (export
version 2). What the model reads from Knet's `y` `(Y, B, T)` is said, never guessed from names:

- `output="sequence"`: every time step (Knet's RNNLM: `w * reshape(y, H, :)`), held in the
  model layout `(T, Y, B)` (see porting.model.kinds.embed);
- `output="last"`: `y[:, :, end]` `(Y, B)` (Knet's IMDB). For a bidirectional RNN that is the
  backward direction after ONE step, not its final state (docs/knet.md#rnn-bidirectional): the Keras side takes step T of the
  full sequence (`Cropping1D` + `Reshape`), never `Bidirectional(return_sequences=False)`.

Tolerances: a row's `K` is the longest sum of one step (`in + H + 2`) and its `S` the magnitude
carried through the recurrence by `porting.rnn.verify.error_bounds` (the same tolerance that
`porting.rnn.verify` uses); the report's notes give, per direction of the last layer, the first
divergent step and the error's growth along the steps read.

A layer may start from a constant initial state `h0`/`c0` per slot (Flux's trained
`state0`), the same for every sample: the Knet side repeats it over the batch, the Keras side
makes it from built-in layers exactly (docs/flux.md#rnn-initial-keras), and the export writes
it with the state policy "initial". A GRU with `spec.reset_after=False` is Flux's GRUv3
(docs/flux.md#flux-gruv3): Keras `GRU(reset_after=False)`, no Knet RNN.

Up to `UNROLL_MAX_STEPS` steps the Keras layers are unrolled, so that the model also exports to
TFLite with builtin operators.

`timedense` is Knet's `w * reshape(y, H, :) .+ b` reshaped back to `(V, B, T)`: the same dense
layer applied at every time step; Keras `Dense` on `(B, T, H)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import numpy.typing as npt

from porting import layout, magnitude
from porting.errors import PortingError
from porting.model import schema
from porting.model.kinds.embed import knet_sequence, model_sequence
from porting.model.layer import (
    ACT_KERAS,
    Example,
    KerasLayer,
    Kind,
    Layer,
    activation_name,
    weight_array,
)
from porting.model.stages import ActStage, Array, KerasContext, KerasTensor, Stage, sub_role
from porting.rnn.params import RNNWeights, pack, unpack
from porting.rnn.spec import RNNSpec

if TYPE_CHECKING:
    from porting.model.planning import Step
    from porting.rnn.diagnosis import RNNDiagnosis
    from porting.rnn.verify import Bounds

__all__ = ["RNN", "RNNStage", "TimeDense", "TimeDenseStage", "KIND_RNN", "KIND_TIMEDENSE"]

OUTPUTS = ("sequence", "last")
UNROLL_MAX_STEPS = 200
"""Up to this many time steps the Keras layers are unrolled (`unroll=True`): the same cell per
step, written out, which TFLite converts with builtin operators only; longer sequences keep
Keras's loop (a TFLite export of those is refused by the converter, with its message)."""


@dataclass(frozen=True, eq=False)
class RNNStage(Stage):
    """Knet `r(x)` on a model-layout sequence `(T, X, B)`; `y` every step or the last one."""

    weights: Any = None
    output: str = "sequence"
    h0: Any = None  # (H, slots): the initial state every sample starts from; None: zero
    c0: Any = None  # (H, slots), LSTM only
    # the Knet-layout input of the last forward (the tolerance re-runs the recurrence on it)
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> RNNSpec:
        spec: RNNSpec = self.weights.spec
        return spec

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        spec = self.spec
        if len(size) != 2 or size[1] != spec.input_size:
            raise PortingError(
                f"its input has size {size} per sample; expected (T, {spec.input_size}): a "
                f"sequence of inputSize = {spec.input_size} features per step ({spec})"
            )
        y = spec.output_size
        return (int(size[0]), y) if self.output == "sequence" else (y,)

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        from porting.rnn.reference import forward

        xk = knet_sequence(x)
        self.seen["x"] = xk
        h, c = self.states(int(xk.shape[1]))
        y = forward(self.weights, xk, h=h, c=c).y  # (Y, B, T): Knet's y
        return model_sequence(y) if self.output == "sequence" else np.asfortranarray(y[:, :, -1])

    def states(self, batch: int) -> tuple[Array | None, Array | None]:
        """Knet's `r.h`, `r.c` `(H, B, L or 2L)` for a batch: the initial states repeated for
        every sample (None: zero)."""
        spec = self.spec
        shape = (spec.hidden_size, batch, spec.slots)
        dt = self.weights.dtype
        return tuple(  # type: ignore[return-value]
            None if s is None else np.broadcast_to(s[:, None, :], shape).astype(dt)
            for s in (self.h0, self.c0)
        )

    def _bounds(self) -> Bounds:
        from porting.rnn.verify import error_bounds

        if "bounds" not in self.seen or self.seen.get("bounds_of") is not self.seen.get("x"):
            h, c = self.states(int(self.seen["x"].shape[1]))
            self.seen["bounds"] = error_bounds(self.weights, self.seen["x"], h, c)
            self.seen["bounds_of"] = self.seen["x"]
        bounds: Bounds = self.seen["bounds"]
        return bounds

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        """The carried magnitude `E` of the last layer's directions (porting.rnn.verify), in
        the model layout. An error arriving from the layer before (whole mode) is added
        through `|W|` of the first layer's input matrices, step by step (not carried)."""
        spec = self.spec
        b = self._bounds()
        last = range(spec.slots - spec.directions, spec.slots)
        E = np.concatenate([b.Eh[s_] for s_ in last], axis=2)  # (T, B, Y)
        xk = self.seen["x"]
        incoming = np.asarray(s, np.float64) - np.abs(model_sequence(xk).astype(np.float64))
        if incoming.max(initial=0.0) > 0:  # |W e| <= max|W| * sum|e| per pre-activation
            ws = [self.weights.W[d] for d in range(spec.directions)]
            gain = max((float(np.abs(w).max()) for w in ws if w is not None), default=1.0)
            E = E + gain * np.clip(incoming, 0, None).sum(axis=1)[:, :, None]
        E = E.transpose(0, 2, 1)  # (T, Y, B)
        out_e = E if self.output == "sequence" else E[-1]
        return np.asarray(out_e, dtype=wd)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        spec = self.spec
        return max(spec.input_size_of(lay) for lay in range(spec.num_layers)) + spec.hidden_size + 2

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        from porting.rnn.keras import apply_keras

        w = self.weights
        if str(w.dtype) != ctx.dtype:
            w = w.astype(np.dtype(ctx.dtype))
        steps = int(in_size[0])
        initial = None
        if self.h0 is not None or self.c0 is not None:

            def initial(slot: int, seq: KerasTensor, backward: bool) -> list[KerasTensor]:
                return self._initial_keras(ctx, slot, seq, backward, steps)

        y = apply_keras(
            w,
            t,
            output="sequence",
            name=ctx.name(sub_role(self.role, "rnn")),
            unroll=steps <= UNROLL_MAX_STEPS,
            initial=initial,
        )["y"]
        if self.output == "sequence":
            return ctx.make("Identity", self.role)(y)
        y = ctx.make("Cropping1D", sub_role(self.role, "last_step"), (steps - 1, 0))(y)
        return ctx.make("Reshape", self.role, (self.spec.output_size,))(y)

    def _initial_keras(
        self, ctx: KerasContext, slot: int, seq: KerasTensor, backward: bool, steps: int
    ) -> list[KerasTensor]:
        """A slot's constant initial states from built-in layers
        (docs/flux.md#rnn-initial-keras): the first step the slot reads (`Cropping1D` +
        `Reshape`), `tanh` of it (finite for every finite or infinite input), then `Dense`
        with a zero kernel and the state as its bias: exactly the state for every sample, and
        NaN only where that step holds a NaN, which makes every output of the slot NaN in
        Knet/Flux too (`W * x` mixes all inputs)."""
        spec = self.spec
        n_in = spec.input_size_of(spec.layer_of(slot))
        role = sub_role(self.role, f"state{slot + 1}")
        crop = (steps - 1, 0) if backward else (0, steps - 1)
        u = ctx.make("Cropping1D", f"{role}_step", crop)(seq)
        u = ctx.make("Reshape", f"{role}_flat", (n_in,))(u)
        u = ctx.make("Activation", f"{role}_tanh", "tanh")(u)
        dt = np.dtype(ctx.dtype)
        out = []
        for name, s in (("h", self.h0), ("c", self.c0)):
            if name == "c" and spec.rnn_type != "lstm":
                continue
            value = np.zeros(spec.hidden_size, dt) if s is None else s[:, slot].astype(dt)
            d = ctx.make("Dense", f"{role}_{name}", spec.hidden_size)
            d.build((None, n_in))
            d.set_weights([np.zeros((n_in, spec.hidden_size), dt), value])
            out.append(d(u))
        return out

    def note(self, in_size: tuple[int, ...]) -> str | None:
        if self.output == "last" and self.spec.bidirectional:
            return (
                "reads y[:, :, end] as Knet does: the backward half is the backward direction "
                "after one step (not its final state h)"
            )
        return None


@dataclass(eq=False)
class RNN(Layer):
    """Knet's `RNN` in a model: `w` Knet's packed weight vector `r.w` (any shape holding
    `spec.param_length` values, e.g. `(1, 1, n)`) and `spec` its hyperparameters
    (`porting.rnn.RNNSpec`, or Knet's field names as a dict). `output` says what the model
    reads from `y`: "sequence" (every step) or "last" (`y[:, :, end]`). `h0`, `c0` (LSTM): the
    initial state every sequence starts from, the same for every sample, `(H, L or 2L)` (for
    one slot `(H,)` or `(H, 1)` too; Flux's trained `state0`); None: zero (Knet's
    `nothing`/`0`). An exported Knet state array is refused (it fixes the batch)."""

    w: np.ndarray
    spec: Any
    _: KW_ONLY
    output: str = "sequence"
    h0: np.ndarray | None = None
    c0: np.ndarray | None = None
    name: str | None = None
    kind = "rnn"
    rnn_weights: Any = None  # porting.rnn.RNNWeights, set from w and spec

    def __post_init__(self) -> None:
        where = self.label
        if isinstance(self.spec, dict):
            self.spec = RNNSpec.from_knet(self.spec)
        if not isinstance(self.spec, RNNSpec):
            raise PortingError(
                f"{where}: spec={self.spec!r}: expected a porting.rnn.RNNSpec or Knet's field "
                "names as a dict"[:300]
            )
        self.w = weight_array(self.w, "w", where, (1, 2, 3))
        try:
            self.rnn_weights = unpack(self.spec, self.w)
        except PortingError as e:
            raise PortingError(f"{where}: {e}") from None
        self.h0 = _initial_state(self.h0, "h0", self.spec, self.w.dtype, where)
        if self.c0 is not None and self.spec.rnn_type != "lstm":
            raise PortingError(f"{where}: c0 given for {self.spec}: only an LSTM has a cell state")
        self.c0 = _initial_state(self.c0, "c0", self.spec, self.w.dtype, where)
        self._seen: dict[str, Any] = {}
        if self.output not in OUTPUTS:
            raise PortingError(
                f"{where}: output={self.output!r}: expected 'sequence' (every step of y) or "
                "'last' (y[:, :, end])"
            )

    @classmethod
    def from_weights(cls, weights: RNNWeights, **kw: Any) -> RNN:
        """From unpacked `porting.rnn.RNNWeights` (packed here in Knet's layout)."""
        return cls(pack(weights), weights.spec, **kw)

    def params(self) -> dict[str, np.ndarray]:
        """`w`, and the initial states as the export holds them, `(H, 1, L or 2L)`."""
        out = {"w": self.w}
        for key, s in (("h", self.h0), ("c", self.c0)):
            if s is not None:
                out[key] = s[:, None, :]
        return out

    def stages(self) -> list[Stage]:
        # one cache per layer: the tolerance's float64 run is reused by verify_notes
        return [
            RNNStage(
                weights=self.rnn_weights,
                output=self.output,
                h0=self.h0,
                c0=self.c0,
                seen=self._seen,
            )
        ]

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return self.stages()[0].out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    @property
    def flattens(self) -> bool:
        return self.output == "last"

    verify_notes_of_output: ClassVar[bool] = True

    def verify_notes(self, x_in: np.ndarray, actual: np.ndarray, name: str) -> list[str]:
        """Per-step figures (porting.rnn.verify) for the report's notes: `x_in` the layer's
        Knet input `(T, X, B)`, `actual` the Keras side's output in the model layout."""
        from porting.rnn.verify import verify

        xk = knet_sequence(x_in).astype(self.rnn_weights.dtype, copy=False)
        a = np.asarray(actual)
        y = knet_sequence(a) if self.output == "sequence" else a
        seen = self._seen
        same = "bounds" in seen and seen.get("bounds_of") is not None
        same = (
            same and seen["bounds_of"].shape == xk.shape and np.array_equal(seen["bounds_of"], xk)
        )
        h, c = cast(RNNStage, self.stages()[0]).states(int(xk.shape[1]))
        v = verify(self.rnn_weights, xk, {"y": y}, h, c, bounds=seen["bounds"] if same else None)
        lines = [
            f"{name}: {v.spec} per step: {'OK' if v.ok else 'MISMATCH'}, {v.tolerance.formula}"
        ]
        for s in v.slots:
            lines.append(f"{name}: {s.line()}; error along the steps read: {s.profile(6)}")
        for key, (err, ratio) in v.finals.items():
            lines.append(f"{name}: {key}: max error {err:.3g} (ratio {ratio:.3g})")
        if not v.ok:  # the usual porting mistakes, recomputed (porting.rnn.diagnosis)
            from porting.rnn.diagnosis import diagnose

            try:
                d = diagnose(self.rnn_weights, xk, y, h, c)
                lines.append(f"{name}: RNN diagnosis: {d.cause} ({d.meaning})")
            except PortingError as e:  # a diagnosis never hides the report
                lines.append(f"{name}: no RNN diagnosis: {e}"[:300])
        return lines

    def describe(self) -> str:
        what = "every step" if self.output == "sequence" else "y[:, :, end]"
        start = "" if self.h0 is None and self.c0 is None else ", from its initial state"
        return f"rnn {self.spec}, reads {what}{start}"


def _initial_state(
    value: Any, name: str, spec: RNNSpec, dtype: np.dtype[Any], where: str
) -> np.ndarray | None:
    """An initial state as `(H, slots)`, read-only (None for None or all zeros)."""
    if value is None:
        return None
    a = weight_array(value, name, where, (1, 2, 3))
    want = (spec.hidden_size, spec.slots)
    if a.ndim == 3 and a.shape[1] == 1:  # the export's (H, 1, L)
        a = a[:, 0, :]
    if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1 and spec.slots == 1):
        a = a.reshape(-1, 1)
    if a.shape != want:
        raise PortingError(
            f"{where}: {name} has shape {a.shape}; expected (H, L or 2L) = {want} for {spec} "
            "(one state per slot, the same for every sample)"
        )
    if a.dtype != dtype:
        raise PortingError(f"{where}: {name} is {a.dtype} but w is {dtype}")
    if not np.all(np.isfinite(a)):
        raise PortingError(f"{where}: {name} holds non-finite values; expected a finite state")
    if not np.any(a):
        return None
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


def _rnn_from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> RNN:
    from porting.rnn.export import from_export

    params = d.get("params")
    if not isinstance(params, dict):
        raise PortingError(f"{where}: params = {params!r}; expected an object with 'w'"[:300])
    arrays = {}
    for key, ref in params.items():
        a = param(key)
        if a is not None and isinstance(ref, dict):
            arrays[ref.get("key")] = a
    r = from_export(d, arrays)
    for state, policy in (("h", r.h_policy), ("c", r.c_policy)):
        if isinstance(getattr(r, state), np.ndarray) and policy != "initial":
            raise PortingError(
                f'{where}: rnn.{state} = "array": the exported RNN holds a state array, which '
                "fixes the batch size; a converted model starts from zero (Knet's nothing or "
                f"0): reset r.{state} before exporting"
            )
    output = d.get("output", "sequence")
    if output not in OUTPUTS:
        raise PortingError(f"{where}: output = {output!r}; expected 'sequence' or 'last'")

    def initial(s: Any, policy: str) -> np.ndarray | None:
        return s if policy == "initial" else None

    return RNN(
        params_w(r.weights),
        r.spec,
        output=output,
        h0=initial(r.h, r.h_policy),
        c0=initial(r.c, r.c_policy),
        name=d.get("name"),
    )


def params_w(weights: RNNWeights) -> np.ndarray:
    return pack(weights)


# porting.rnn.keras's layers (a bidirectional or last-step output: Cropping1D + Reshape)
RNN_KERAS: tuple[KerasLayer, ...] = (
    *(KerasLayer(n) for n in ("SimpleRNN", "LSTM", "GRU", "Bidirectional", "Reshape")),
    KerasLayer("Cropping1D", direct={}),
    KerasLayer("Dense", direct={}),  # an initial state: zero kernel, the state as bias
    KerasLayer("Concatenate"),
    *ACT_KERAS,
)


def _rnn_example() -> Example:
    from porting.rnn.params import random_weights

    spec = RNNSpec(3, 4, "lstm", bidirectional=True)
    rng = np.random.default_rng(0)
    w = pack(random_weights(spec, rng, dtype=np.float32))
    h0, c0 = rng.uniform(-1, 1, (2, 4, 2)).astype(np.float32)  # an initial state per slot
    return [RNN(w, spec, output="last", h0=h0, c0=c0)], (5, 3)


def _diagnose(
    step: Step, x_ins_tf: list[Array], expected_tf: Array, actual_tf: Array, spatial: str
) -> RNNDiagnosis | None:
    """The recurrence's usual mistakes (porting.rnn.diagnosis: gate order, biases, directions,
    ...) recomputed from the layer's weights and its Knet input, against the port's output for
    that input (in TensorFlow layout: `(B, T, X)` in, `(B, T, H)` or `(B, H)` out); None when
    no recomputed cause explains the difference."""
    from porting.rnn.diagnosis import diagnose as diagnose_rnn

    def julia(t: np.ndarray) -> np.ndarray:  # TensorFlow layout -> the model's (T, X, B) / (H, B)
        t = np.asarray(t)
        return layout.activations_from_tf(t, spatial) if t.ndim > 2 else t.T

    layer = cast(RNN, step.layer)
    weights = layer.rnn_weights
    a_j = julia(actual_tf)
    y = knet_sequence(a_j) if layer.output == "sequence" else a_j
    x = knet_sequence(julia(x_ins_tf[0])).astype(weights.dtype, copy=False)
    h, c = cast(RNNStage, layer.stages()[0]).states(int(x.shape[1]))
    d = diagnose_rnn(weights, x, y, h, c)
    return None if d.cause == "unknown" else d


KIND_RNN = Kind(
    name="rnn",
    layer=RNN,
    prefix="rnn",
    from_json=_rnn_from_json,
    to_json=lambda layer: {
        "rnn": {
            **layer.spec.to_knet(),
            "h": "nothing" if layer.h0 is None else "initial",
            "c": "nothing" if layer.c0 is None else "initial",
        },
        "output": layer.output,
    },
    knet="Knet's `RNN`",
    keras="Keras recurrent layers (see [Recurrent networks](#recurrent-networks-knet-rnn))",
    schema='Knet\'s `RNN`: the `rnn` object read by porting.rnn.export, and porting\'s "output": "sequence" or "last" (since version 2)',
    keras_layers=RNN_KERAS,
    diagnose=_diagnose,
    example=_rnn_example,
)


# --------------------------------------------------------------------------- timedense


@dataclass(frozen=True, eq=False)
class TimeDenseStage(Stage):
    """`w * reshape(y, H, :) .+ b` on `(T, H, B)` -> `(T, V, B)`."""

    w: Any = None
    b: Any = None
    linear = False

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        h = int(self.w.shape[1])
        if len(size) != 2 or size[1] != h:
            raise PortingError(
                f"its input has size {size} per sample; expected (T, {h}): a sequence of {h} "
                f"features per step (w {self.w.shape})"
            )
        return (int(size[0]), int(self.w.shape[0]))

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        yk = knet_sequence(x)  # (H, B, T)
        h, b, t = yk.shape
        z = self.w @ yk.reshape((h, b * t), order="F")
        if self.b is not None:
            z += self.b.reshape(-1)[:, None]
        return model_sequence(z.reshape((-1, b, t), order="F"))

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        sk = knet_sequence(s)
        h, b, t = sk.shape
        m = magnitude.dense(self.w, sk.reshape((h, b * t), order="F"), wd)
        if self.b is not None:
            m = magnitude.bias(m, self.b, channel_axis=0)
        return model_sequence(np.asarray(m).reshape((-1, b, t), order="F")).astype(wd)

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return int(self.w.shape[1]) + (self.b is not None)

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        return ctx.make("Dense", self.role, int(self.w.shape[0]), use_bias=self.b is not None)(t)


@dataclass(eq=False)
class TimeDense(Layer):
    """A dense layer at every time step: Knet's `w * reshape(y, H, :) .+ b` (RNNLM), `w`
    `(V, H)`, `b` `(V,)` or None, then the activation (`softmax` over V)."""

    w: np.ndarray
    b: np.ndarray | None = None
    _: KW_ONLY
    activation: str = "identity"
    name: str | None = None
    kind = "timedense"

    def __post_init__(self) -> None:
        where = self.label
        self.w = weight_array(self.w, "w", where, (2,))
        if self.b is not None:
            self.b = weight_array(self.b, "b", where, (1, 2))
            if self.b.size != self.w.shape[0] or (self.b.ndim == 2 and self.b.shape[1] != 1):
                raise PortingError(
                    f"{where}: b has shape {self.b.shape} but w {self.w.shape} has "
                    f"{self.w.shape[0]} outputs; expected ({self.w.shape[0]},)"
                )
            if self.b.dtype != self.w.dtype:
                raise PortingError(f"{where}: b is {self.b.dtype} but w is {self.w.dtype}")
        self.activation = activation_name(self.activation, where)

    def params(self) -> dict[str, np.ndarray]:
        return {"w": self.w} if self.b is None else {"w": self.w, "b": self.b}

    def stages(self) -> list[Stage]:
        out: list[Stage] = [TimeDenseStage(w=self.w, b=self.b)]
        if self.activation != "identity":
            out.append(ActStage(role="act", function=self.activation, dims=2))
        return out

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return TimeDenseStage(w=self.w, b=self.b).out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    def describe(self) -> str:
        s = f"dense over every step, w {self.w.shape}"
        return s + (f", {self.activation}" if self.activation != "identity" else "")


def _td_weights(
    layer: TimeDense, step: Step, spatial: str, dtype: npt.DTypeLike
) -> list[np.ndarray]:
    ws = [np.ascontiguousarray(layer.w.T)]
    if layer.b is not None:
        ws.append(layer.b.reshape(-1).copy())
    return ws


def _td_from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> TimeDense:
    w = schema.weight(param, where, "a timedense layer needs a weight")
    return TimeDense(
        w, param("b"), activation=d.get("activation") or "identity", name=d.get("name")
    )


def _td_example() -> Example:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    return [TimeDense(w, rng.standard_normal(2).astype(np.float32))], (5, 3)


KIND_TIMEDENSE = Kind(
    name="timedense",
    layer=TimeDense,
    prefix="timedense",
    from_json=_td_from_json,
    to_json=lambda layer: {"activation": layer.activation},
    weights=_td_weights,
    knet="`w * reshape(y, H, :) .+ b`",
    keras="`Dense` per step",
    schema='a dense layer over every time step: params w, b; "activation" (since version 2)',
    keras_layers=(KerasLayer("Dense", direct={}), *ACT_KERAS),
    example=_td_example,
)
