"""Drawing for porting.plots: the element-wise error figures and the two panels they feed
(the ULP histogram and the error heatmap). matplotlib objects come in from porting.plots, which
imports matplotlib and writes the files; nothing here imports it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from porting import magnitude as S
from porting._checks import short_repr
from porting.comparison import Comparison, assumed_magnitude, compare
from porting.errors import PortingError

_GAP_MAX = 5  # binade gaps >= this share one colour
_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#d62728")


def mpl():
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


def finite_or_str(v: float):
    return float(v) if math.isfinite(v) else str(v)


# --------------------------------------------------------------------------- error arrays


@dataclass
class Errors:
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


def error_figures(expected, actual, *, k, magnitude, precision) -> Errors:
    c = compare(expected, actual, k=k, magnitude=magnitude, precision=precision)  # validates
    if magnitude is None:  # the S compare assumed, drawn as compare judged
        magnitude = assumed_magnitude(expected, c.tolerance.k)
    e = np.asarray(expected).astype(np.float64)
    a = np.asarray(actual).astype(np.float64)
    t = c.tolerance
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e)
    err[~(np.isfinite(e) & np.isfinite(a))] = np.nan
    mag = S.of_outputs(e, magnitude)
    tol = t.bound(mag)
    lower = _storage(t.precision)
    with np.errstate(over="ignore", invalid="ignore"):
        spacing = np.spacing(np.abs(e).astype(lower)).astype(np.float64)
    if t.precision == "tf32":
        # TF32 keeps 10 of float32's 23 mantissa bits (docs/numerics.md#tf32)
        spacing = spacing * 2.0**13
    return Errors(c, e, a, err, mag, tol, spacing, t.eps, t.factor)


def _binade(v: np.ndarray) -> np.ndarray:
    """Exponent `e` with `2^e <= v < 2^(e+1)` (v > 0)."""
    return np.frexp(v)[1] - 1


def _bound_line(ax, x, label, *, y, va, color, label_color=None, **line) -> None:
    """A vertical line at `x` with `label` beside it, at height `y` in axes units."""
    ax.axvline(x, color=color, **line)
    text_kw = {} if label_color is None else {"color": label_color}
    ax.text(
        x, y, label, transform=ax.get_xaxis_transform(), va=va, ha="left", fontsize=8, **text_kw
    )


def draw_histogram(fig, er: Errors, magnitude_given: bool, title: str | None) -> dict:
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
                labels.append("S = sqrt(K) max|expected| (assumed: no magnitude given)")
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
            _bound_line(
                ax1,
                bound_ulp_median,
                f" bound: {bound_ulp_median:.3g} ULP\n (median over\n elements)",
                y=0.3,
                va="center",
                color="k",
                ls="--",
                lw=1.2,
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
    _bound_line(
        ax2,
        bound_scaled,
        f" bound sqrt(K)+2 = {bound_scaled:.3g}\n (K = {c.tolerance.k})",
        y=0.97,
        va="top",
        color="#d62728",
        lw=1.5,
        label_color="#d62728",
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
        "max_ulp": finite_or_str(c.max_ulp),
        "precision": c.tolerance.precision,
        "k": c.tolerance.k,
        "bound_scaled": bound_scaled,
        "bound_ulp_median": finite_or_str(bound_ulp_median),
        "bound_ulp_min": finite_or_str(bound_ulp_min),
        "binade_gap_counts": gap_counts,
        "output_binade_counts": binade_counts,
        "peaks_ulp": peaks,
        "magnitude_given": magnitude is not None,
    }
    return summary


def _raw_error_panel(ax, er: Errors, nz: np.ndarray, precision: str) -> dict[str, int]:
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


def _select(a: np.ndarray, batch: int | None, channel: int | None) -> np.ndarray:
    """(N, *spatial, C) -> the spatial grid of one sample/channel, or the max over them (None)."""
    if batch is not None:
        a = a[batch : batch + 1]
    if channel is not None:
        a = a[..., channel : channel + 1]
    return np.max(a, axis=(0, a.ndim - 1))


def check_index(v, n: int, name: str, shape) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not -n <= v < n:
        raise PortingError(
            f"{name}={short_repr(v)}: expected None or an index in [0, {n}) for an output of shape {shape}"
        )
    return int(v) % n


def _as_2d(m: np.ndarray) -> np.ndarray:
    if m.ndim == 1:
        return m[None, :]
    if m.ndim == 3:  # (D, H, W): worst over depth
        return np.nanmax(m, axis=0)
    return m


def draw_heatmap(fig, er: Errors, batch, channel, title: str | None) -> dict:
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
        batch = check_index(batch, shape[0], "batch", shape)
        channel = check_index(channel, shape[-1], "channel", shape)
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

    matplotlib, _, _ = mpl()
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
        "max_error_to_tolerance": finite_or_str(float(np.max(bad_ratio))),
        "ok": er.comparison.ok,
    }
    return summary
