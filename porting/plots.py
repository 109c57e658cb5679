"""Pictures of how two results differ, written to image files (matplotlib; nothing is displayed).

- `ulp_histogram(expected, actual, path, k=..., magnitude=...)`: the errors in ULPs of the
  output, stacked by how many binades the sum of magnitudes `S = sum(|w*x|)` lies above the
  output, next to the errors scaled by `eps * S` with porting.compare's bound drawn in. It shows
  why float32 errors cluster in a few peaks: the spacing of float32 numbers doubles with every
  binade, so one ULP of the partial sums (near `S`) is `2^g` ULPs of an output `g` binades
  smaller.
- `error_heatmap(expected, actual, path, ...)`: where the errors are, for TensorFlow-layout
  outputs `(N, H, W, C)`, next to the two outputs, so border-only (padding) errors and mirror
  images (kernel flips) can be seen.
- `layer_errors(report, path)`: per-layer error / tolerance of a model verification, log scale,
  the tolerance at 1, the first divergent layer marked.
- `diagnosis_plot(diagnosis, path)`: the heatmap and histogram of a `porting.diagnose` result.

Each function returns the path written. The format comes from the suffix (`.png`, `.svg` or
`.pdf`); the file is written to a temporary file beside it and moved into place, so a failure
leaves no partial file. PNG files carry a `porting` text chunk with the figures' numbers (JSON).
matplotlib is imported only here, inside the functions (`pip install 'porting[plots]'`).

>>> import numpy as np, os, tempfile
>>> e = np.float64([[1.0, 2.0], [3.0, 4.0]]); a = (e + 2.0**-22).astype(np.float32)
>>> os.path.basename(ulp_histogram(e, a, os.path.join(tempfile.mkdtemp(), "h.png")))
'h.png'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from porting import files
from porting.comparison import Comparison, compare
from porting.errors import PortingError

__all__ = [
    "ulp_histogram",
    "error_heatmap",
    "layer_errors",
    "diagnosis_plot",
    "check_path",
    "FORMATS",
]

FORMATS = ("png", "svg", "pdf")
_GAP_MAX = 5  # binade gaps >= this share one colour
_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#d62728")


# --------------------------------------------------------------------------- files


def _target(path) -> tuple[Path, str]:
    p = files.as_path(path, "path", "a file path such as 'errors.png'")
    try:
        is_dir = p.is_dir()
    except (OSError, ValueError):
        is_dir = False  # too long, unreadable: files.output_file names it below
    if is_dir:
        raise PortingError(
            f"{p} is a directory; expected an image file path such as {p / 'errors.png'}"
        )
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise PortingError(
            f"{p}: unknown image format {p.suffix or '(no suffix)'!r}; expected a path ending in "
            + ", ".join("." + f for f in FORMATS)
        )
    files.output_file(p, what="plot")
    return p, fmt


def _mpl():
    try:
        import matplotlib
    except ImportError:
        from porting.errors import MissingDependencyError

        raise MissingDependencyError(
            "plots need matplotlib: pip install 'porting[plots]'"
        ) from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def _new_figure(figsize):
    _, Figure, FigureCanvasAgg = _mpl()
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # Agg: no display, no pyplot state
    return fig


def _save(fig, target: Path, fmt: str, summary: dict) -> str:
    """Write `fig` with `porting.files.atomic_write`; PNGs get `summary` as a JSON text chunk
    named `porting`."""
    metadata = None
    if fmt == "png":
        metadata = {"Software": "porting", "porting": json.dumps(summary, default=_json_default)}
    try:
        with files.atomic_write(target, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, metadata=metadata)
    except OSError as e:
        raise PortingError(f"cannot write {target}: {e}") from None
    return str(target)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        v = float(o)
        return v if math.isfinite(v) else str(v)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _finite_or_str(v: float):
    return float(v) if math.isfinite(v) else str(v)


# --------------------------------------------------------------------------- error arrays


@dataclass
class _Errors:
    """Element-wise error figures of `actual` against `expected` (float64 arrays)."""

    comparison: Comparison
    expected: np.ndarray
    actual: np.ndarray
    error: np.ndarray  # |actual - expected|, NaN where either is not finite
    magnitude: np.ndarray  # S per element
    tolerance: np.ndarray  # porting.compare's, per element
    spacing: np.ndarray  # ULP of the lower precision at |expected|
    eps: float
    factor: float

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.error / self.tolerance


def _storage(precision: str) -> np.dtype:
    return np.dtype(np.float32) if precision in ("tf32", "bfloat16") else np.dtype(precision)


def _errors(expected, actual, *, k, magnitude, precision) -> _Errors:
    c = compare(expected, actual, k=k, magnitude=magnitude, precision=precision)  # validates
    e = np.asarray(expected).astype(np.float64)
    a = np.asarray(actual).astype(np.float64)
    t = c.tolerance
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e)
    err[~(np.isfinite(e) & np.isfinite(a))] = np.nan
    mag = np.abs(np.asarray(magnitude, dtype=np.float64)) if magnitude is not None else np.abs(e)
    tol = t.bound(mag)
    lower = _storage(t.precision)
    with np.errstate(over="ignore", invalid="ignore"):
        spacing = np.spacing(np.abs(e).astype(lower)).astype(np.float64)
    if t.precision == "tf32":
        spacing = spacing * 2.0**13  # TF32 keeps 10 of float32's 23 mantissa bits
    return _Errors(c, e, a, err, mag, tol, spacing, t.eps, t.factor)


# --------------------------------------------------------------------------- histogram


def _binade(v: np.ndarray) -> np.ndarray:
    """Exponent `e` with `2^e <= v < 2^(e+1)` (v > 0)."""
    return np.frexp(v)[1] - 1


def ulp_histogram(
    expected,
    actual,
    path,
    *,
    k: int = 1,
    magnitude=None,
    precision=None,
    title: str | None = None,
) -> str:
    """Histogram of the errors in ULPs, with the reason for its peaks and the error bound.

    `expected` and `actual` have one shape (any layout); `k`, `magnitude` (sum of |w*x| per
    element, e.g. the conv applied to |w| and |x|) and `precision` mean what they mean in
    porting.compare, whose tolerance `(sqrt(K)+2) * eps * S` is drawn. Without `magnitude`,
    `S = |expected|` and the binade stacking has nothing to show. Returns the path written.

    Left panel: |error| in ULPs of the output (lower precision, at |expected|), on octave
    bins, each bar stacked by `g = binade(S) - binade(|expected|)`: an error of about one ULP
    of `S` is `2^g` ULPs of the output, hence peaks at 1, 2, 4, 8 ULP. Right panel: |error| /
    (eps * S), the scale on which the bound is one number, `sqrt(K) + 2`.
    """
    target, fmt = _target(path)
    er = _errors(expected, actual, k=k, magnitude=magnitude, precision=precision)
    fig = _new_figure((15.5, 4.6))
    summary = _draw_histogram(fig, er, magnitude is not None, title)
    return _save(fig, target, fmt, summary)


def _draw_histogram(fig, er: _Errors, magnitude_given: bool, title: str | None) -> dict:
    """The three histogram panels into `fig` (a Figure or SubFigure); returns the summary."""
    magnitude = True if magnitude_given else None
    c = er.comparison
    finite = np.isfinite(er.error)
    err = er.error[finite]
    n_zero = int(np.sum(err == 0))
    nz = finite & (er.error > 0) & (er.spacing > 0) & np.isfinite(er.spacing)
    ulp = er.error[nz] / er.spacing[nz]
    mag = er.magnitude[nz]
    ev = np.abs(er.expected[nz])
    gap = np.zeros(ulp.shape, dtype=int)
    ok_gap = (mag > 0) & (ev > 0)
    gap[ok_gap] = np.clip(_binade(mag[ok_gap]) - _binade(ev[ok_gap]), 0, _GAP_MAX)
    with np.errstate(divide="ignore", invalid="ignore"):
        normal = np.abs(er.expected) >= np.finfo(_storage(c.tolerance.precision)).tiny
        tol_ulp = (er.tolerance / er.spacing)[finite & normal]  # outputs of 0 have no ULP scale
        scaled = err[err > 0] / (er.eps * er.magnitude[finite][err > 0])
    tol_ulp = tol_ulp[np.isfinite(tol_ulp)]
    scaled = scaled[np.isfinite(scaled)]
    bound_ulp_median = float(np.median(tol_ulp)) if tol_ulp.size else float("nan")
    bound_ulp_min = float(np.min(tol_ulp)) if tol_ulp.size else float("nan")
    bound_scaled = er.factor

    ax0, ax1, ax2 = fig.subplots(1, 3)
    binade_counts = _raw_error_panel(ax0, er, nz, c.tolerance.precision)
    gap_counts: dict[str, int] = {}
    peaks: list[float] = []
    if ulp.size:
        lo = math.floor(math.log2(ulp.min()) * 2) / 2 - 0.25
        hi = math.ceil(math.log2(ulp.max()) * 2) / 2 + 0.25
        edges = 2.0 ** np.arange(lo, hi + 0.5, 0.5)  # half-octave bins centred on powers of 2
        stacks, labels, colors = [], [], []
        for g in range(_GAP_MAX + 1):
            sel = ulp[gap == g]
            if sel.size == 0:
                continue
            stacks.append(sel)
            gap_counts[str(g)] = int(sel.size)
            more = "+" if g == _GAP_MAX else ""
            if magnitude is None:
                labels.append("S = |expected| (no magnitude given)")
            elif g == 0:
                labels.append("S in the binade of |y|")
            else:
                labels.append(
                    f"S {g}{more} binade{'s' if g > 1 else ''} above |y|: 1 ULP of S = {2**g}{more} ULP of y"
                )
            colors.append(_COLORS[g])
        ax1.hist(stacks, bins=edges, stacked=True, label=labels, color=colors)
        counts, _ = np.histogram(ulp, bins=edges)
        centres = np.sqrt(edges[:-1] * edges[1:])
        top = np.argsort(counts)[::-1][:4]
        peaks = sorted(float(centres[i]) for i in top if counts[i] > 0)
        ax1.set_xscale("log", base=2)
        if np.isfinite(bound_ulp_median):
            ax1.axvline(bound_ulp_median, color="k", ls="--", lw=1.2)
            ax1.text(
                bound_ulp_median,
                0.3,
                f" bound: {bound_ulp_median:.3g} ULP\n (median over\n elements)",
                transform=ax1.get_xaxis_transform(),
                va="center",
                ha="left",
                fontsize=8,
            )
        ax1.legend(
            fontsize=7, loc="upper right", title="where S = sum |w*x| lies", title_fontsize=7
        )
    else:
        ax1.text(0.5, 0.5, "no nonzero errors", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel(f"|actual - expected| in ULPs of the output ({c.tolerance.precision})")
    ax1.set_title("in ULPs of y: large where the sum cancels (S >> |y|)", fontsize=10)

    if scaled.size:
        lo = math.floor(math.log10(min(scaled.min(), bound_scaled)) * 4) / 4
        hi = math.ceil(math.log10(max(scaled.max(), bound_scaled)) * 4) / 4 + 0.25
        ax2.hist(scaled, bins=10.0 ** np.arange(lo, hi + 0.125, 0.125), color="#7f7f7f")
        ax2.set_xscale("log")
    ax2.axvline(bound_scaled, color="#d62728", lw=1.5)
    ax2.text(
        bound_scaled,
        0.97,
        f" bound sqrt(K)+2 = {bound_scaled:.3g}\n (K = {c.tolerance.k})",
        transform=ax2.get_xaxis_transform(),
        va="top",
        ha="left",
        fontsize=8,
        color="#d62728",
    )
    ax2.set_xlabel("|actual - expected| / (eps * S)")
    ax2.set_title("errors scaled by the sum of magnitudes S", fontsize=10)

    n_bad = c.n_mismatched
    verdict = (
        f"all {c.n_elements} within the bound: rounding, not a bug"
        if c.ok
        else f"{n_bad} of {c.n_elements} outside the bound"
    )
    fig.suptitle(
        title
        or f"{verdict}; {n_zero} exact, max {c.max_ulp:.3g} ULP, "
        f"tolerance (sqrt(K)+2)*eps*S, S = {'sum |w*x|' if magnitude is not None else '|expected|'}",
        fontsize=10,
    )
    summary = {
        "plot": "ulp_histogram",
        "n_elements": c.n_elements,
        "n_exact": n_zero,
        "n_outside_bound": n_bad,
        "ok": c.ok,
        "max_ulp": _finite_or_str(c.max_ulp),
        "precision": c.tolerance.precision,
        "k": c.tolerance.k,
        "bound_scaled": bound_scaled,
        "bound_ulp_median": _finite_or_str(bound_ulp_median),
        "bound_ulp_min": _finite_or_str(bound_ulp_min),
        "binade_gap_counts": gap_counts,
        "output_binade_counts": binade_counts,
        "peaks_ulp": peaks,
        "magnitude_given": magnitude is not None,
    }
    return summary


def _raw_error_panel(ax, er: _Errors, nz: np.ndarray, precision: str) -> dict[str, int]:
    """|error| on a log axis, stacked by the binade of |expected|, with each binade's spacing
    drawn: the peaks of a hand-drawn error histogram sit on these lines."""
    err = er.error[nz]
    ev = np.abs(er.expected[nz])
    counts: dict[str, int] = {}
    if err.size == 0:
        ax.text(0.5, 0.5, "no nonzero errors", ha="center", va="center", transform=ax.transAxes)
        return counts
    b = np.where(ev > 0, _binade(np.where(ev > 0, ev, 1.0)), np.iinfo(np.int32).min)
    values, n = np.unique(b[ev > 0], return_counts=True)
    shown = [int(v) for v in values[np.argsort(n)[::-1][:5]]]
    shown.sort(reverse=True)
    lo = math.floor(math.log2(err.min()) * 4) / 4 - 0.125
    hi = math.ceil(math.log2(err.max()) * 4) / 4 + 0.125
    edges = 2.0 ** np.arange(lo, hi + 0.25, 0.25)  # quarter-octave bins
    stacks, labels, colors = [], [], []
    lower = _storage(precision)
    for i, e in enumerate(shown):
        sel = err[b == e]
        counts[str(e)] = int(sel.size)
        step = float(np.spacing(lower.type(2.0**e)))
        if precision == "tf32":
            step *= 2.0**13
        stacks.append(sel)
        labels.append(f"|y| in [2^{e}, 2^{e + 1}): spacing 2^{int(round(math.log2(step)))}")
        colors.append(_COLORS[i])
        ax.axvline(step, color=_COLORS[i], ls=":", lw=1.2)
    rest = ~np.isin(b, shown)
    if rest.any():
        stacks.append(err[rest])
        counts["other"] = int(rest.sum())
        labels.append("other binades")
        colors.append("#bbbbbb")
    ax.hist(stacks, bins=edges, stacked=True, label=labels, color=colors)
    ax.set_xscale("log", base=2)
    ax.legend(
        fontsize=7, loc="upper left", title=f"{precision} numbers are spaced by", title_fontsize=7
    )
    ax.set_xlabel("|actual - expected|")
    ax.set_ylabel("elements")
    ax.set_title("raw errors: peaks at the spacing of each binade", fontsize=10)
    return counts


# --------------------------------------------------------------------------- heatmap


def _select(a: np.ndarray, batch: int | None, channel: int | None) -> np.ndarray:
    """(N, *spatial, C) -> the spatial grid of one sample/channel, or the max over them (None)."""
    if batch is not None:
        a = a[batch : batch + 1]
    if channel is not None:
        a = a[..., channel : channel + 1]
    return np.max(a, axis=(0, a.ndim - 1))


def _check_index(v, n: int, name: str, shape) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not -n <= v < n:
        raise PortingError(
            f"{name}={v!r}: expected None or an index in [0, {n}) for an output of shape {shape}"
        )
    return int(v) % n


def _as_2d(m: np.ndarray) -> np.ndarray:
    if m.ndim == 1:
        return m[None, :]
    if m.ndim == 3:  # (D, H, W): worst over depth
        return np.nanmax(m, axis=0)
    return m


def error_heatmap(
    expected,
    actual,
    path,
    *,
    k: int = 1,
    magnitude=None,
    precision=None,
    batch: int | None = None,
    channel: int | None = None,
    title: str | None = None,
) -> str:
    """Where the errors are: |error| / tolerance over the spatial grid, beside both outputs.

    `expected` and `actual` are TensorFlow-layout outputs, `(N, H, W, C)` (also `(N, W, C)`,
    `(N, D, H, W, C)` shown as the max over depth, or a dense `(N, features)` shown as an
    `N x features` grid). `batch` and `channel` pick one sample and channel; None (default)
    shows the worst over all of them in the error panel, and the sample and channel of the
    worst element in the two value panels. `k`, `magnitude`, `precision`: as in
    porting.compare, whose tolerance is the unit of the colour scale (white = at the bound,
    red = outside). Returns the path written.
    """
    target, fmt = _target(path)
    er = _errors(expected, actual, k=k, magnitude=magnitude, precision=precision)
    fig = _new_figure((12, 4.0))
    summary = _draw_heatmap(fig, er, batch, channel, title)
    return _save(fig, target, fmt, summary)


def _draw_heatmap(fig, er: _Errors, batch, channel, title: str | None) -> dict:
    """The three heatmap panels into `fig` (a Figure or SubFigure); returns the summary."""
    shape = er.expected.shape
    if er.expected.ndim < 2 or er.expected.ndim > 5:
        raise PortingError(
            f"expected has shape {shape}; expected a TensorFlow-layout output (N, H, W, C), "
            "(N, W, C), (N, D, H, W, C) or (N, features)"
        )
    ratio = er.ratio
    dense = er.expected.ndim == 2
    if dense:  # (N, F) -> (1, N, F, 1): one "image" of samples x features
        ratio = ratio[None, :, :, None]
        e4, a4 = er.expected[None, :, :, None], er.actual[None, :, :, None]
        batch = channel = None
    else:
        e4, a4 = er.expected, er.actual
        batch = _check_index(batch, shape[0], "batch", shape)
        channel = _check_index(channel, shape[-1], "channel", shape)
    bad_ratio = np.where(np.isnan(ratio), np.inf, ratio)  # NaN/Inf mismatches count as worst
    worst = np.unravel_index(int(np.argmax(bad_ratio)), bad_ratio.shape)
    n_show = batch if batch is not None else int(worst[0])
    c_show = channel if channel is not None else int(worst[-1])
    emap = _as_2d(_select(bad_ratio, batch, channel))
    ev = _as_2d(e4[n_show, ..., c_show])
    av = _as_2d(a4[n_show, ..., c_show])

    outside = emap > 1
    h, w = emap.shape
    border = np.zeros_like(outside)
    if h > 2 and w > 2:
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    elif h <= 2:
        border[:, 0] = border[:, -1] = True
    n_out = int(outside.sum())
    n_out_border = int((outside & border).sum())

    matplotlib, _, _ = _mpl()
    from matplotlib.colors import Normalize, TwoSlopeNorm

    axes = fig.subplots(1, 3)
    vmin = float(np.nanmin([np.nanmin(ev), np.nanmin(av)]))
    vmax = float(np.nanmax([np.nanmax(ev), np.nanmax(av)]))
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin == vmax:
        vmin, vmax = (vmin - 1, vmax + 1) if math.isfinite(vmin) else (-1.0, 1.0)
    where = "sample and channel" if not dense else "outputs"
    sel = f"n={n_show}, c={c_show}" if not dense else "samples x features"
    for ax, data, name in ((axes[0], ev, "expected"), (axes[1], av, "actual")):
        im = ax.imshow(data, cmap="viridis", norm=Normalize(vmin, vmax), interpolation="nearest")
        ax.set_title(f"{name} ({sel})", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    with np.errstate(divide="ignore"):
        logr = np.log10(np.where(emap > 0, emap, np.nan))
    finite = logr[np.isfinite(logr)]
    span = max(1.0, float(np.max(np.abs(finite))) if finite.size else 1.0)
    logr = np.where(np.isposinf(emap), span, logr)
    logr = np.where(emap == 0, -span, logr)
    im = axes[2].imshow(
        logr,
        cmap="RdBu_r",
        norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span),
        interpolation="nearest",
    )
    cb = fig.colorbar(im, ax=axes[2], shrink=0.8)
    cb.set_label("log10(|error| / tolerance); > 0 is outside", fontsize=8)
    which = (f"n={batch}" if batch is not None else "max over samples") + (
        f", c={channel}" if channel is not None else ", max over channels"
    )
    axes[2].set_title(f"|error| / tolerance ({which if not dense else sel})", fontsize=10)
    ys, xs = np.nonzero(outside)
    if 0 < xs.size <= 400:
        axes[2].scatter(xs, ys, marker="x", s=12, c="k", linewidths=0.8)
    for ax in axes:
        if dense:
            ax.set_xlabel("feature")
            ax.set_ylabel("sample")
        else:
            ax.set_xlabel("W (TF axis -2)")
            ax.set_ylabel("H (TF axis 1)" if er.expected.ndim >= 4 else "")
    where_text = f"{n_out} of {h * w} positions outside the bound" + (
        f", {n_out_border} of them on the border ({100.0 * n_out_border / n_out:.0f}%)"
        if n_out
        else ""
    )
    depth = " (max over depth)" if er.expected.ndim == 5 else ""
    fig.suptitle(
        title or f"where the errors are{depth}: {where_text}; values shown for the {where} {sel}",
        fontsize=10,
    )
    summary = {
        "plot": "error_heatmap",
        "shape": list(shape),
        "map_shape": [int(h), int(w)],
        "batch": batch,
        "channel": channel,
        "shown": [n_show, c_show] if not dense else None,
        "n_positions_outside": n_out,
        "n_border_outside": n_out_border,
        "max_error_to_tolerance": _finite_or_str(float(np.max(bad_ratio))),
        "ok": er.comparison.ok,
    }
    return summary


# --------------------------------------------------------------------------- per layer


def _layer_rows(report) -> tuple[list[tuple[str, float, bool | None]], str | None]:
    """(name, error/tolerance, ok) per layer, and the first divergent layer's name."""
    rows = getattr(report, "rows", None)
    first = getattr(report, "first_divergent", None)
    items = rows if rows is not None else report
    if isinstance(items, dict):
        items = list(items.items())
    out: list[tuple[str, float, bool | None]] = []
    try:
        seq = list(items)
    except TypeError:
        raise PortingError(
            f"report must be a model verification report (porting.model.verify_model), a list of "
            f"(name, error/tolerance) pairs or a dict; got {type(report).__name__}"
        ) from None
    for i, item in enumerate(seq):
        if hasattr(item, "error_to_tolerance"):
            name = str(getattr(item, "name", i))
            ratio = item.error_to_tolerance
            ok = getattr(item, "ok", None)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            name, ratio = str(item[0]), item[1]
            ok = None
        else:
            raise PortingError(
                f"layer {i}: {item!r} is neither a report row nor a (name, error/tolerance) pair"
            )
        try:
            ratio = float(ratio)
        except (TypeError, ValueError):
            raise PortingError(
                f"layer {name!r}: error/tolerance {ratio!r} is not a number"
            ) from None
        if math.isnan(ratio) or ratio < 0:
            raise PortingError(f"layer {name!r}: error/tolerance {ratio!r}; expected a number >= 0")
        out.append((name, ratio, ok))
    if not out:
        raise PortingError("report has no layers to plot")
    if first is None:
        first = next((n for n, r, ok in out if (ok is False) or (ok is None and r > 1)), None)
    return out, first


def layer_errors(report, path, *, title: str | None = None) -> str:
    """Per-layer bars of the largest |error| / tolerance, log scale, with the tolerance at 1.

    `report` is a `porting.model.verify_model` report (its rows and `first_divergent`), or a
    list of `(layer name, error/tolerance)` pairs, or a dict of them. Bars above 1 are red; the
    first divergent layer is hatched and labelled: the layers after it may only carry its
    error. Returns the path written.
    """
    target, fmt = _target(path)
    rows, first = _layer_rows(report)
    names = [r[0] for r in rows]
    ratios = np.array([r[1] for r in rows])
    oks = [r[2] if r[2] is not None else bool(r[1] <= 1) for r in rows]
    positive = ratios[(ratios > 0) & np.isfinite(ratios)]
    floor = min(float(positive.min()) / 4 if positive.size else 1e-3, 1e-2)
    finite_max = float(ratios[np.isfinite(ratios)].max()) if np.isfinite(ratios).any() else 1.0
    ceil_ = max(finite_max, 1.0) * 4
    heights = np.where(ratios > 0, np.minimum(ratios, ceil_), floor)
    heights = np.where(np.isfinite(ratios), heights, ceil_)

    fig = _new_figure((max(6.0, 0.55 * len(rows) + 2.5), 4.2))
    ax = fig.subplots()
    x = np.arange(len(rows))
    colors = ["#2ca02c" if ok else "#d62728" for ok in oks]
    bars = ax.bar(x, heights, bottom=None, color=colors, edgecolor="k", linewidth=0.5)
    i_first = names.index(first) if first in names else None
    if i_first is not None:
        bars[i_first].set_hatch("//")
        bars[i_first].set_edgecolor("k")
        bars[i_first].set_linewidth(1.5)
        ax.annotate(
            "first divergent",
            (x[i_first], heights[i_first]),
            xytext=(0, 16),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            fontweight="bold",
        )
    for xi, r, hgt in zip(x, ratios, heights, strict=True):
        label = "0" if r == 0 else (f"{r:.2g}" if math.isfinite(r) else "inf")
        ax.text(xi, hgt, label, ha="center", va="bottom", fontsize=7, rotation=0)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.text(len(rows) - 0.5, 1.0, "tolerance", ha="right", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, ceil_ * 3)
    ax.set_xticks(
        x, names, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center"
    )
    ax.set_ylabel("max |error| / tolerance")
    verdict = (
        "every layer within its tolerance" if first is None else f"first divergent layer: {first}"
    )
    ax.set_title(title or f"per-layer error ({verdict})", fontsize=10)
    summary = {
        "plot": "layer_errors",
        "layers": names,
        "error_to_tolerance": [_finite_or_str(float(r)) for r in ratios],
        "first_divergent": first,
    }
    return _save(fig, target, fmt, summary)


# --------------------------------------------------------------------------- diagnosis


def check_path(path) -> str:
    """Raise PortingError unless `path` can take a figure (.png, .svg or .pdf, in an existing
    directory, not a directory itself); return it as a string. For commands that validate
    their output path before the work."""
    return str(_target(path)[0])


def diagnosis_plot(diagnosis, path) -> str:
    """The picture of a `porting.diagnose` result: where the errors are (both outputs and the
    error / tolerance map) above their histograms (raw, in ULPs, scaled by the sum of
    magnitudes, with the bound), titled with the cause. Returns the path written."""
    for attr in ("expected", "actual", "cause"):
        if not hasattr(diagnosis, attr):
            raise PortingError(
                f"diagnosis must be a porting.diagnose result, got {type(diagnosis).__name__}"
            )
    target, fmt = _target(path)
    e, a = diagnosis.expected, diagnosis.actual
    if e is None or a is None or np.shape(e) != np.shape(a):
        raise PortingError(
            f"cannot plot this diagnosis ({diagnosis.cause}): the two outputs have different "
            f"shapes {np.shape(e)} and {np.shape(a)}, so there are no element-wise errors"
        )
    comp = getattr(diagnosis, "comparison", None)
    kw: dict = {"k": 1, "precision": None, "magnitude": None}
    if comp is not None:
        kw.update(k=comp.tolerance.k, precision=comp.tolerance.precision)
    mag = getattr(diagnosis, "magnitude", None)
    if mag is not None and np.shape(mag) == np.shape(e):
        kw["magnitude"] = mag
    er = _errors(e, a, **kw)
    fig = _new_figure((15.5, 9.2))
    top, bottom = fig.subfigures(2, 1)
    summary = {"plot": "diagnosis", "cause": diagnosis.cause}
    if np.ndim(e) >= 2:
        summary["heatmap"] = _draw_heatmap(top, er, None, None, None)
    summary["histogram"] = _draw_histogram(bottom, er, kw["magnitude"] is not None, None)
    fig.suptitle(f"diagnosis: {diagnosis.cause}: {_short(diagnosis)}", fontsize=10)
    return _save(fig, target, fmt, summary)


def _short(diagnosis, limit: int = 110) -> str:
    text = str(getattr(diagnosis, "evidence", ""))
    return text if len(text) <= limit else text[: limit - 3] + "..."
