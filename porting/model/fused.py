"""Keras layers that are several Knet layers, in a verification against the original Keras
model: `from_keras` makes a Conv2D with TensorFlow's asymmetric "same" padding `<name>_pad`
(zeropad) + `<name>` (conv), a GlobalAveragePooling2D `<name>_pool` + `<name>` (mat), a conv
with a separate softmax `<name>_conv` + `<name>`; the Keras name stays on the last Knet layer,
the one that holds the Keras layer's output.

`verify_model` compares such a Keras layer once, at that last Knet layer: the Keras layer is
fed the Knet inputs of the group's first Knet layer, and the tolerance adds the rounding bound
of the Knet layers before the last, element by element, pushed through the last one's
absolute-value bound as whole-model mode pushes a measured incoming error
(`porting.model.knet_side.magnitude_of` with `e_ins`): the Keras layer never writes out the
intermediate array, so that rounding is a bound, not a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.model import convert as mconvert
from porting.model import knet_side
from porting.model.planning import Plan, Step
from porting.model.report import LayerRow
from porting.tolerance import Tolerance

__all__ = [
    "heads",
    "group_notes",
    "error_bound",
    "carried",
    "padding_split",
    "same_split",
    "keras_same_pads",
    "diagnose_outputs",
]


def heads(steps: Plan, groups: Sequence[Sequence[Any]]) -> list[int]:
    """For each layer, the first Knet layer of its Keras group: a Knet layer without Keras
    layers (`keras_groups`: []) belongs to the next one's group, which it alone must feed."""
    first = list(range(len(steps)))
    for i, group in enumerate(groups):
        if group:
            continue
        readers = [j for j, st in enumerate(steps) if i in st.sources]
        if readers != [i + 1] or tuple(steps[i + 1].sources) != (i,):
            layer = steps[i].layer
            raise PortingError(
                f"{layer.label}: the Keras model has no layer named {layer.name!r} (or "
                f"{layer.name}__*), and it is not one of several Knet layers of one Keras layer "
                "(those feed only the next Knet layer); was the model converted from this one?"
            )
    for i in range(1, len(steps)):
        if not groups[i - 1]:
            first[i] = first[i - 1]
    return first


def group_notes(steps: Plan, groups: Sequence[Sequence[Any]], first: list[int]) -> list[str]:
    """The report's notes naming each Keras layer that is several Knet layers."""
    notes = []
    for i, h in enumerate(first):
        if h != i and groups[i]:
            names = ", ".join(str(steps[j].layer.name) for j in range(h, i + 1))
            notes.append(
                f"Keras layer {steps[i].layer.name} is the Knet layers {names}: compared at "
                "the last (it holds the Keras output), with the others' rounding in its bound"
            )
    return notes


def error_bound(
    steps: Plan,
    step: Step,
    rec: knet_side.KnetRecord,
    x_ins: Sequence[np.ndarray],
    e_ins: Sequence[np.ndarray | None] | None,
    dtype: np.dtype[Any],
    wd: np.dtype[Any],
    precision: str | None,
) -> np.ndarray:
    """The rounding bound of a Knet layer inside a Keras layer's group, with the error that
    reaches it (`e_ins`), element by element in Julia layout: the error its output may carry
    into the next Knet layer of the group. `dtype` is the precision whose eps the tolerances
    use, `wd` the Knet side's, `precision` compare's ("tf32" or None)."""
    scale = knet_side.tolerance_scale(step.k, dtype)
    nonneg = knet_side.nonnegative(steps, step)
    mag = knet_side.magnitude_of(step, x_ins, e_ins, rec.extra, rec.y, scale, wd, nonneg)
    bound: np.ndarray = Tolerance.of(step.k, precision or dtype).bound(mag)
    return bound


def carried(
    steps: Plan,
    step: Step,
    rec: knet_side.KnetRecord,
    x_ins: Sequence[np.ndarray],
    carry: np.ndarray,
    dtype: np.dtype[Any],
    wd: np.dtype[Any],
    spatial: str,
) -> np.ndarray:
    """S (TensorFlow layout) of a group's last Knet layer with the error bound `carry` of the
    Knet layers before it."""
    return knet_side.magnitude_tf(steps, step, x_ins, [carry], rec.extra, rec.y, dtype, wd, spatial)


def same_split(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's `padding="same"` on one axis, `(before, after)`: the odd cell after
    (docs/tensorflow.md#same-padding).

    >>> same_split(8, 3, 2, 1), same_split(9, 3, 2, 1), same_split(224, 7, 2, 1)
    ((0, 1), (1, 1), (2, 3))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def keras_same_pads(keras_layer: Any, spatial: str) -> tuple[tuple[int, int], ...] | None:
    """The (before, after) zeros per Julia spatial axis that a Keras conv with
    `padding="same"` adds to its input; None for another layer or padding."""
    from porting import layout

    cfg = keras_layer.get_config()
    if cfg.get("padding") != "same" or "kernel_size" not in cfg:
        return None
    size = tuple(int(n) for n in keras_layer.input.shape[1:-1])
    nd = len(size)

    def per_axis(v: Any) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * nd

    window, stride = per_axis(cfg["kernel_size"]), per_axis(cfg.get("strides", 1))
    dilation = per_axis(cfg.get("dilation_rate", 1))
    pairs = tuple(
        same_split(n, k, s, d) for n, k, s, d in zip(size, window, stride, dilation, strict=True)
    )
    return tuple(layout.spatial_from_tf(pairs, spatial))


def padding_split(
    steps: Plan,
    h: int,
    i: int,
    keras_layer: Any,
    x_head: np.ndarray,
    actual: np.ndarray,
    row: LayerRow,
    mag_tf: Any,
    spatial: str,
) -> Any:
    """The `padding_shift` diagnosis of a Keras conv with `padding="same"` that is a Knet
    zeropad (layer `h`) + conv (layer `i`): recomputed with TensorFlow's own split of the
    zeros on the zeropad's input `x_head`, the Knet layers give the Keras output within the
    float bound. None when that is not so (or the group is not such a pair)."""
    from porting.comparison import compare
    from porting.diagnosis import Diagnosis, Finding

    head = steps[h].layer
    pads = keras_same_pads(keras_layer, spatial)
    if head.kind != "zeropad" or pads is None:
        return None
    have = steps[h].stages[0].pairs(x_head.ndim - 2)  # type: ignore[attr-defined]
    if tuple(have) == pads:
        return None
    y = np.pad(x_head, [*pads, (0, 0), (0, 0)])
    for j in range(h + 1, i + 1):
        for st in steps[j].stages:
            y = st.forward(y, "reference", [])
    fixed = mconvert.julia_to_tf(y, steps[i].flat_from, spatial)
    if fixed.shape != actual.shape:
        return None
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        c = compare(fixed, actual, k=row.k, magnitude=mag_tf)
    if not c.ok:
        return None
    evidence = (
        f"Knet layer {head.name} pads {tuple(have)} (before, after per Julia axis) where "
        f"TensorFlow's 'same' for Keras layer {keras_layer.name} pads {pads}: with that split "
        f"the Knet layers give the Keras output within the float bound (max "
        f"{c.max_error_to_tolerance:.2g} of it); move the odd zero after, as TensorFlow does"
    )
    finding = Finding(
        cause="padding_shift",
        score=1.0,
        evidence=evidence,
        hypothesis=f"same_split_{'_'.join(map(str, pads))}",
        explains=True,
        max_error_to_tolerance=c.max_error_to_tolerance,
        details={"pads": pads, "knet_pads": tuple(have)},
    )
    return Diagnosis(
        cause="padding_shift",
        confidence=1.0,
        evidence=evidence,
        alternatives=[],
        basis="recomputation",
        comparison=row.comparison,
        finding=finding,
    )


# Knet activations porting.diagnose recomputes after a linear stage (its `activation`)
_DIAGNOSE_ACT = {"identity": None, "relu": "relu", "sigm": "sigmoid", "tanh": "tanh"}


def _linear_last(
    steps: Plan,
    h: int,
    i: int,
    x_head: np.ndarray,
    expected: np.ndarray,
    actual: np.ndarray,
    spatial: str,
) -> Any:
    """`porting.diagnose` by recomputation with the weights of the group's last Knet layer
    when it is a conv or dense (with at most a plain activation after), fed the Knet layers
    before it run on `x_head` (their split being right, the Keras layer computes the same
    linear map on it): a kernel left unrotated, transposed axes, ... None otherwise."""
    from porting.diagnosis import diagnose

    step = steps[i]
    stages = list(step.stages)
    if step.layer.merges or not stages or not stages[0].linear:
        return None
    act: str | None = None
    if len(stages) > 2:
        return None
    if len(stages) == 2:
        after = stages[1]
        name = getattr(after, "function", None)
        if name not in _DIAGNOSE_ACT or not getattr(after, "plain", False):
            return None
        act = _DIAGNOSE_ACT[name]
    x_in = x_head
    for j in range(h, i):
        for st in steps[j].stages:
            x_in = st.forward(x_in, "reference", [])
    lin: Any = stages[0]  # conv4 or w * mat(x): both give diagnose_kwargs
    d = diagnose(
        expected, actual, spatial=spatial, activation=act, **lin.diagnose_kwargs(x_in, step)
    )
    return None if d.cause in ("unknown", "rounding") else d


def diagnose_outputs(
    steps: Plan,
    h: int,
    i: int,
    group: Sequence[Any],
    row: LayerRow,
    arrays: tuple[list[np.ndarray], np.ndarray],
    bad: tuple[np.ndarray, Any],
    spatial: str,
    notes: list[str],
) -> Any:
    """The diagnosis of a Keras layer that is Knet layers `h`..`i` (`arrays`: the Knet inputs
    of layer `h` and the output of layer `i`; `bad`: Keras's output and S): a conv's "same"
    padding split another way (`padding_split`), else `porting.diagnose` on the outputs alone."""
    from porting.diagnosis import diagnose

    try:
        actual, mag_tf = bad
        split = padding_split(steps, h, i, group[-1], arrays[0][0], actual, row, mag_tf, spatial)
        if split is not None:
            return split
        expected = mconvert.julia_to_tf(arrays[1], steps[i].flat_from, spatial)
        by_weights = _linear_last(steps, h, i, arrays[0][0], expected, actual, spatial)
        if by_weights is not None:
            return by_weights
        return diagnose(expected, actual, k=row.k, magnitude=mag_tf)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never hide the report itself
        notes.append(f"no diagnosis for {steps[i].layer.name}: {type(e).__name__}: {e}"[:300])
        return None
