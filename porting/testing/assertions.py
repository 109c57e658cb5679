"""Assertions for users' own test suites: is my port right? (pytest-friendly AssertionError)

Three forms, from the most to the least information `porting` has to work with:

- `assert_model_ported(knet_model, keras_model, x)`: runs both sides of a whole model
  (`porting.model.verify_model`), derives every layer's tolerance itself (K and the sums of
  magnitudes from the weights) and on failure shows the layer-by-layer report with the
  diagnosed cause.
- `assert_layer_ported(keras_layer, x, w=..., b=..., **keywords)`: one conv4, dense or pool
  layer from its Knet weights and keywords, tolerance derived the same way.
- `assert_ported_close(expected, actual)`: two arrays and nothing else. K and the magnitudes
  are unknown, so it assumes them (see `ASSUMED_K` and the function's docstring): right for
  telling a correct port from a broken one (kernel flip, swapped H/W, padding shift, flatten
  order), too loose to judge precision (TF32); pass `k=` and `magnitude=` for the exact bound
  (docs/numerics.md#tolerance, #sum-of-magnitudes, #bugs).

Messages are the report; under `pytest -q` (with the plugin, `porting.testing.plugin`) they
are shortened to the verdict, the worst element and the cause. Every check is recorded for
the plugin's `port_checks` fixture and `--porting-report=FILE`.

>>> import numpy as np
>>> assert_ported_close(np.float32([1, 2]), np.float32([1, 2])).ok
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from porting._checks import short_repr
from porting.comparison import ASSUMED_K
from porting.errors import PortingError
from porting.testing._record import Check, record, verbosity
from porting.tolerance import check_k

__all__ = [
    "ASSUMED_K",
    "assert_ported_close",
    "assert_conv4_ported",
    "assert_layer_ported",
    "assert_model_ported",
]


def _short(lines: list[str]) -> str:
    return "\n".join(lines)


def _fail(long: str, short: str) -> AssertionError:
    from porting._text import fit

    return AssertionError(fit(short if verbosity() < 0 else long, 80))


# causes the outputs alone can show; "precision" cannot be judged against an assumed K and S
_STRUCTURAL = ("kernel_flip", "spatial_transpose", "padding_shift", "flatten_order", "layout")


def _summary(diag) -> str:
    """A diagnosis in a few words: its cause and confidence."""
    if diag is None:
        return "not diagnosed"
    return f"{diag.cause} (confidence {diag.confidence:.2f})"


def _cause(expected, actual, k, magnitude) -> Any:
    """`porting.diagnose` on the outputs alone; None when it cannot say (odd shapes)."""
    try:
        from porting.diagnosis import diagnose

        with np.errstate(all="ignore"):
            return diagnose(expected, actual, k=k, magnitude=magnitude)
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the failure itself
        return None


def assert_ported_close(
    expected, actual=None, *, k: int | None = None, magnitude=None, precision=None, label=None
):
    """Assert that `actual` (the port's result) matches `expected` (the Knet side's), both in
    the same layout, within a floating-point tolerance (`porting.compare`):

        |expected - actual| <= (sqrt(K) + 2) * eps * S      element by element

    with `eps` that of the lower-precision side (or `precision=`, e.g. "tf32").

    **What it assumes when K and the magnitudes are unknown** (the bare call), as
    `porting.compare` does (one rule for the whole library): every element is a sum of at most
    K = `ASSUMED_K` (4096) products, and the sum of their magnitudes is
    S = sqrt(K) * max|expected| everywhere, the size a sum of K random-sign terms has when it
    cancels down to the largest output. So the tolerance is about K * eps * max|expected|
    (float32: 5e-4 of the largest output; Float64: 9e-13). Correct float32 and Float64 ports
    of conv/dense stacks stay far inside it; a kernel flip, swapped H/W, a padding shift or a
    wrong flatten order changes outputs by a sizeable fraction of max|expected| and fails. It
    cannot tell TF32 or half precision from float32: pass `k=` (terms per element) and
    `magnitude=` (the op applied to |w| and |x|) for the exact bound, or use
    `assert_layer_ported` / `assert_model_ported`, which derive both. With `k` alone,
    S = sqrt(k) * max|expected|; with `magnitude` alone, K = `ASSUMED_K`.

    Also accepts a report from `verify_conv4` (or anything with `.ok`) as the only argument.
    Returns the comparison (or report); its text states the assumption. `label` names the
    check in the plugin's report.

    >>> import numpy as np
    >>> c = assert_ported_close(np.float64([1.0, -2.0]), np.float32([1.0, -2.0000002]))
    >>> "K=4096 assumed" in str(c)
    True
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    if actual is None and hasattr(expected, "ok"):
        return _assert_report(expected, label)
    from porting.comparison import compare, float_operand

    e = float_operand(expected, "expected")
    a = float_operand(actual, "actual")
    k_used = check_k(k) if k is not None else ASSUMED_K  # a positive integer <= 2**53
    if e.shape != a.shape:
        msg = (
            f"ported results differ in shape: expected {e.shape}, actual {a.shape}; a layout "
            "mix-up? Knet's (X1, X2, C, N) is TensorFlow's (N, X2, X1, C) through "
            "porting.layout.activations_to_tf (dense: (out, N) is (N, out))"
        )
        record(
            Check(
                kind="close",
                ok=False,
                label=label or "assert_ported_close",
                shape=tuple(e.shape),
                max_abs_error=None,
                error_to_tolerance=None,
                tolerance="",
                cause="layout",
            )
        )
        raise _fail(msg, msg)
    assumed = magnitude is None  # compare's rule for "nothing else known" (ASSUMED_K, S)
    report = compare(e, a, k=k, magnitude=magnitude, precision=precision)
    cause = None
    if not report.ok:
        diag = _cause(e, a, k, magnitude)
        if diag is not None and diag.cause in _STRUCTURAL and diag.confidence >= 0.5:
            cause = diag.cause
            report.notes.append(f"likely cause: {diag}".splitlines()[0])
        else:
            report.notes.append(
                "likely cause: not determined from the outputs alone; assert_layer_ported or "
                "assert_model_ported recompute from the weights and name it"
            )
    record(
        Check(
            kind="close",
            ok=bool(report.ok),
            label=label or "assert_ported_close",
            shape=tuple(report.shape),
            max_abs_error=report.max_abs_error,
            # NaN/Inf at different places: no finite figure says how far off that is
            error_to_tolerance=math.inf
            if report.n_nonfinite_mismatched
            else report.max_error_to_tolerance,
            tolerance=report.tolerance.formula,
            cause=cause,
            detail=[f"{report.n_nonfinite_mismatched} NaN/Inf mismatches"]
            if report.n_nonfinite_mismatched
            else [],
        )
    )
    if not report.ok:
        text = str(report)
        head = text.splitlines()
        short = [
            f"ported results differ: {head[0]}",
            *[ln for ln in head if ln.lstrip().startswith(("worst at", "note: likely cause"))],
            f"  tolerance (sqrt(K)+2)*eps*S, eps={report.tolerance.eps:.3g} "
            f"({report.tolerance.precision}), K={k_used}"
            + (" assumed" if k is None else "")
            + (", S = sqrt(K)*max|expected| assumed" if assumed else ", S given"),
        ]
        raise _fail("ported results differ\n" + text, _short(short))
    return report


def _assert_report(report, label):
    __tracebackhide__ = True
    if not isinstance(report.ok, (bool, np.bool_)):  # "no" or [1] is no verdict: never a pass
        raise PortingError(
            f"{type(report).__name__}.ok = {short_repr(report.ok)}: expected True or False (a "
            "report from verify_conv4, verify_model, compare or diagnose)"
        )
    comp = getattr(report, "comparison", None)
    diag = getattr(report, "diagnosis", None)
    record(
        Check(
            kind=getattr(report, "op", "report"),
            ok=bool(report.ok),
            label=label or f"verify_{getattr(report, 'op', 'report')}",
            shape=tuple(comp.shape) if comp is not None else None,
            max_abs_error=getattr(comp, "max_abs_error", None),
            error_to_tolerance=getattr(comp, "max_error_to_tolerance", None),
            tolerance=comp.tolerance.formula if comp is not None else "",
            cause=getattr(diag, "cause", None),
        )
    )
    if not report.ok:
        text = str(report)
        lines = text.splitlines()
        short = [lines[0]] + [ln for ln in lines if "diagnosis:" in ln or "worst at" in ln]
        raise _fail("ported results differ\n" + text, _short(short))
    return report


def assert_conv4_ported(w, x, **kwargs):
    """Run `porting.verify_conv4(w, x, **kwargs)` (Knet's conv4 against TensorFlow on the same
    Julia-indexed arrays) and assert that both sides agree; returns the report."""
    __tracebackhide__ = True
    from porting.verify import verify_conv4

    label = kwargs.pop("label", None)
    return _assert_report(verify_conv4(w, x, **kwargs), label)


# --------------------------------------------------------------------------- one layer

_OPS = ("conv4", "dense", "pool")
_CONV_KEYS = {"padding", "stride", "dilation", "mode", "alpha"}
_POOL_KEYS = {"window", "padding", "stride", "mode", "alpha"}


def _layer_tf(y_julia: np.ndarray, spatial: str) -> np.ndarray:
    from porting import layout

    if y_julia.ndim == 2:
        return np.ascontiguousarray(y_julia.T)
    return layout.activations_to_tf(y_julia, spatial)


def assert_layer_ported(
    keras_layer,
    x,
    *,
    w=None,
    b=None,
    op: str | None = None,
    spatial: str = "reverse",
    knet: str = "auto",
    label: str | None = None,
    **keywords,
):
    """Assert that `keras_layer` computes what one Knet layer computes on `x`.

    The Knet side is given as Knet holds it, Julia-indexed: `x` `(X1, X2, C, N)` (or
    `(in, N)` for a dense layer), `w` `(W1, W2, Cin, Cout)` for `conv4`, `(out, in)` for a
    dense layer (`w * mat(x)`), none for `pool`; `b` the bias (any shape with one entry per
    output channel/feature). `keywords` are Knet's: `padding`, `stride`, `dilation`, `mode`,
    `alpha` for conv4; `window`, `padding`, `stride`, `mode`, `alpha` for pool. `op` is
    inferred (2-d `w`: dense, more dims: conv4, no `w`: pool).

    `keras_layer` is anything callable on the TensorFlow-layout input (`N, H, W, C` as
    `porting.layout.activations_to_tf(x, spatial)` makes it; for dense on a 4-d `x`, the
    same, so a `Flatten` + `Dense` port is checked with its flatten order). Its output is
    compared, in TensorFlow layout, with a tolerance from K (terms per output: kernel volume
    x Cin, in-features, window for mean pool; +1 with a bias) and S (the layer applied to
    |w|, |x|, |b|). On failure the message names the diagnosed cause (`porting.diagnose`).
    Returns the `Comparison`.
    """
    __tracebackhide__ = True
    from porting import knet as pknet
    from porting import layout
    from porting import magnitude as pmag
    from porting._checks import check_choice
    from porting.comparison import compare
    from porting.geometry import ConvGeometry, PoolGeometry

    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    xa = np.asarray(x)
    wa = None if w is None else np.asarray(w)
    if op is None:
        op = "pool" if wa is None else ("dense" if wa.ndim == 2 else "conv4")
    check_choice(op, "op", _OPS)
    allowed = _POOL_KEYS if op == "pool" else _CONV_KEYS if op == "conv4" else set()
    unknown = sorted(set(keywords) - allowed)
    if unknown:
        raise PortingError(
            f"{', '.join(unknown)}: not a Knet keyword of {op}; expected "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    if op != "pool" and wa is None:
        raise PortingError(f"op={op!r} needs w= (Knet's weights, Julia-indexed)")
    if op == "pool" and (wa is not None or b is not None):
        raise PortingError("op='pool' takes no w= or b=")

    bias = None if b is None else np.asarray(b).reshape(-1)
    if op == "conv4":
        assert wa is not None
        y = np.asarray(pknet.conv4(wa, xa, backend=knet, **keywords))
        nd = xa.ndim - 2
        geom = ConvGeometry.from_knet(nd, **{kk: v for kk, v in keywords.items() if kk != "alpha"})
        s = pmag.conv4(wa, xa, geom, keywords.get("alpha", 1.0))
        k = int(np.prod(wa.shape[:-1]))
        if bias is not None:
            shape = [1] * y.ndim
            shape[-2] = bias.size
            y = y + bias.astype(y.dtype).reshape(shape)
            s = pmag.bias(s, bias)
            k += 1
        what = f"conv4 w {wa.shape}"
    elif op == "dense":
        assert wa is not None
        x2 = xa if xa.ndim == 2 else np.asarray(pknet.mat(xa, backend="reference"))
        if wa.shape[1] != x2.shape[0]:
            raise PortingError(
                f"w has shape {wa.shape} (out, in) but mat(x) has {x2.shape[0]} features "
                f"(x shape {xa.shape})"
            )
        y = wa @ x2
        s = pmag.dense(wa, x2)
        k = int(wa.shape[1])
        if bias is not None:
            y = y + bias.astype(y.dtype)[:, None]
            s = pmag.bias(s, bias, channel_axis=0)
            k += 1
        what = f"dense w {wa.shape}"
    else:
        y = np.asarray(pknet.pool(xa, backend=knet, **keywords))
        geom_p = PoolGeometry.from_knet(
            xa.ndim - 2, **{kk: v for kk, v in keywords.items() if kk != "alpha"}
        )
        s = pmag.pool(pmag.absolute(xa), geom_p, keywords.get("alpha", 1.0))
        k = 1 if geom_p.is_max else int(np.prod(geom_p.window))
        what = f"pool {geom_p}"

    x_tf = np.ascontiguousarray(xa.T) if xa.ndim == 2 else layout.activations_to_tf(xa, spatial)
    actual = np.asarray(keras_layer(x_tf))
    expected = _layer_tf(y, spatial)
    s_tf = _layer_tf(s, spatial)
    if actual.shape != expected.shape:
        check = Check(
            kind="layer",
            ok=False,
            label=label or what,
            shape=tuple(expected.shape),
            max_abs_error=None,
            error_to_tolerance=None,
            tolerance="",
            cause="layout",
        )
        record(check)
        msg = (
            f"layer not ported: {what}: the Keras side gives shape {actual.shape}, Knet's output "
            f"is {y.shape} (Julia), {expected.shape} in TensorFlow layout (spatial={spatial!r})"
        )
        raise _fail(msg, msg)
    with np.errstate(all="ignore"):
        report = compare(expected, actual, k=k, magnitude=s_tf)
    diag = None
    if not report.ok:
        from porting.diagnosis import diagnose

        kw: dict[str, Any] = {"spatial": spatial}
        if op == "conv4":
            kw.update(w=wa, x=xa, bias=b, **keywords)
        elif op == "dense":
            kw.update(w=wa, x=xa, bias=b)
        else:
            kw.update(k=k, magnitude=s_tf)
        try:
            with np.errstate(all="ignore"):
                diag = diagnose(expected, actual, **kw)
        except Exception as e:  # noqa: BLE001 - the comparison stands without a diagnosis
            report.notes.append(f"no diagnosis: {type(e).__name__}: {e}"[:200])
    record(
        Check(
            kind="layer",
            ok=bool(report.ok),
            label=label or what,
            shape=tuple(report.shape),
            max_abs_error=report.max_abs_error,
            error_to_tolerance=report.max_error_to_tolerance,
            tolerance=report.tolerance.formula,
            cause=getattr(diag, "cause", None),
        )
    )
    if not report.ok:
        head = f"layer not ported: {what} (Knet side: {knet}, spatial={spatial!r})"
        text = "\n".join([head, str(report)])
        cause_line = f"  cause: {diag}" if diag is not None else "  cause: not diagnosed"
        long = text + "\n" + cause_line.replace("\n", "\n    ")
        first = str(report).splitlines()
        short = [head, first[0], f"  cause: {_summary(diag)} (without -q: the full report)"]
        raise _fail(long, _short(short))
    return report


# --------------------------------------------------------------------------- a whole model


def assert_model_ported(knet_model, keras_model, x=None, **kwargs):
    """Assert that `keras_model` computes what `knet_model` (a `porting.model.KnetModel`, e.g.
    from `load_export`) computes on `x` (Julia-indexed, batch last; default: a generated input,
    which the message then says), layer by layer.

    Runs `porting.model.verify_model(knet_model, x, keras_model=keras_model, **kwargs)`
    (`mode="each"` by default: every layer fed the Knet input, so the first divergent layer is
    the broken one; `mode="whole"` for end to end), which derives each layer's K and sums of
    magnitudes from the weights. On failure the message is the layer-by-layer report with the
    diagnosed cause. Returns the `ModelReport`.
    """
    __tracebackhide__ = True
    from porting.model import verify_model

    label = kwargs.pop("label", None)
    generated = x is None
    if generated:
        from porting.model.verify import default_input

        x = default_input(knet_model)
    report = verify_model(knet_model, x, keras_model=keras_model, **kwargs)
    if generated:
        report.notes.append(
            f"input generated (no x given): uniform in [-1, 1), size {tuple(np.shape(x))}, "
            "seed 0 (porting.model.verify.default_input)"
        )
    diag = report.diagnosis
    worst = max(report.rows, key=lambda r: r.error_to_tolerance, default=None)
    first = next((r for r in report.rows if not r.ok), None)
    row = first or worst
    record(
        Check(
            kind="model",
            ok=bool(report.ok),
            label=label or f"model ({len(report.rows)} layers, mode={report.mode})",
            shape=tuple(report.input_shape),
            max_abs_error=row.max_abs_error if row is not None else None,
            error_to_tolerance=row.error_to_tolerance if row is not None else None,
            tolerance="per layer: (sqrt(K)+2)*eps*S, S = the layer on |w|, |x| (+|b|)",
            cause=getattr(diag, "cause", None),
            detail=[
                f"{r.name}: {r.error_to_tolerance:.3g} of tolerance{'' if r.ok else ' FAIL'}"
                for r in report.rows
            ],
        )
    )
    if not report.ok:
        text = str(report)
        lines = text.splitlines()
        short = [lines[0]]
        if first is not None:
            short.append(
                f"  {first.name}: max abs error {first.max_abs_error:.3g}, "
                f"{first.error_to_tolerance:.3g} x its tolerance"
            )
        short.append(f"  cause: {_summary(diag)} (without -q: the full report)")
        raise _fail("Keras model does not compute the Knet model\n" + text, _short(short))
    return report
