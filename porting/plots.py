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
from pathlib import Path

import numpy as np

from porting import files
from porting._checks import short_repr
from porting._plot_draw import (
    draw_heatmap,
    draw_histogram,
    error_figures,
    finite_or_str,
    mpl,
)
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


def _new_figure(figsize):
    _, Figure, FigureCanvasAgg = mpl()
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


# --------------------------------------------------------------------------- histogram


def ulp_histogram(
    expected,
    actual,
    path,
    *,
    k: int | None = None,
    magnitude=None,
    precision=None,
    title: str | None = None,
) -> str:
    """Histogram of the errors in ULPs, with the reason for its peaks and the error bound.

    `expected` and `actual` have one shape (any layout); `k`, `magnitude` (sum of |w*x| per
    element, e.g. the conv applied to |w| and |x|) and `precision` mean what they mean in
    porting.compare, whose tolerance `(sqrt(K)+2) * eps * S` is drawn; without them, compare's
    assumption (K = 4096, S = sqrt(K) * max|expected| everywhere). Returns the path written.

    Left panel: |error| in ULPs of the output (lower precision, at |expected|), on octave
    bins, each bar stacked by `g = binade(S) - binade(|expected|)`: an error of about one ULP
    of `S` is `2^g` ULPs of the output, hence peaks at 1, 2, 4, 8 ULP. Right panel: |error| /
    (eps * S), the scale on which the bound is one number, `sqrt(K) + 2`.
    """
    target, fmt = _target(path)
    er = error_figures(expected, actual, k=k, magnitude=magnitude, precision=precision)
    fig = _new_figure((15.5, 4.6))
    summary = draw_histogram(fig, er, magnitude is not None, title)
    return _save(fig, target, fmt, summary)


# --------------------------------------------------------------------------- heatmap


def error_heatmap(
    expected,
    actual,
    path,
    *,
    k: int | None = None,
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
    er = error_figures(expected, actual, k=k, magnitude=magnitude, precision=precision)
    fig = _new_figure((12, 4.0))
    summary = draw_heatmap(fig, er, batch, channel, title)
    return _save(fig, target, fmt, summary)


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
                f"layer {i}: {short_repr(item)} is neither a report row nor a (name, error/tolerance) pair"
            )
        try:
            ratio = float(ratio)
        except (TypeError, ValueError):
            raise PortingError(
                f"layer {name!r}: error/tolerance {short_repr(ratio)} is not a number"
            ) from None
        if math.isnan(ratio) or ratio < 0:
            raise PortingError(
                f"layer {name!r}: error/tolerance {short_repr(ratio)}; expected a number >= 0"
            )
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
        "error_to_tolerance": [finite_or_str(float(r)) for r in ratios],
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
    er = error_figures(e, a, **kw)
    fig = _new_figure((15.5, 9.2))
    top, bottom = fig.subfigures(2, 1)
    summary = {"plot": "diagnosis", "cause": diagnosis.cause}
    if np.ndim(e) >= 2:
        summary["heatmap"] = draw_heatmap(top, er, None, None, None)
    summary["histogram"] = draw_histogram(bottom, er, kw["magnitude"] is not None, None)
    fig.suptitle(f"diagnosis: {diagnosis.cause}: {_short(diagnosis)}", fontsize=10)
    return _save(fig, target, fmt, summary)


def _short(diagnosis, limit: int = 110) -> str:
    text = str(getattr(diagnosis, "evidence", ""))
    return text if len(text) <= limit else text[: limit - 3] + "..."
