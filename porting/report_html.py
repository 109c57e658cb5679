"""A verification report as one self-contained HTML page (no network resources).

`write_report(report, path)` takes a `porting.model.verify_data.DataReport` and writes, in
order: the verdict, per-layer bars of the worst error / tolerance (log scale, the tolerance at
1), the end-to-end error histogram in ULPs, the worst sample's error map at its worst layer,
the tables behind them (layers, worst samples, classifier agreement) and the environment.
Plots are PNG images embedded as `data:` URLs (matplotlib, drawn without pyplot); a
Content-Security-Policy forbids every other source, so the page loads nothing. Every text
taken from a model or a file is escaped, control characters shown as escapes
(`porting._text.printable`). The file is written atomically.

>>> page_text("<b>\\x1b</b>")
'&lt;b&gt;\\\\x1b&lt;/b&gt;'
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np

from porting._text import printable

__all__ = ["write_report", "render", "page_text"]

_FLOOR = 1e-9  # bars of 0 drawn at this height on the log scale (labelled "0")


def page_text(text: Any) -> str:
    """`text` fit for HTML: control characters as escapes, then HTML-escaped."""
    return html.escape(printable(str(text)), quote=True)


def _label(text: Any, limit: int = 40) -> str:
    """A name fit for a plot label: control characters escaped, `$` literal (never mathtext),
    cut to `limit` characters (the tables below the plots show it whole)."""
    t = printable(str(text))
    t = t if len(t) <= limit else t[: limit - 3] + "..."
    return t.replace("$", r"\$")


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _layer_bars(report) -> str:
    names = [_label(s.name) for s in report.layers]
    vals = np.array([s.worst_ratio for s in report.layers], dtype=np.float64)
    shown = np.where(vals > _FLOOR, vals, np.nan)  # an exact layer has no bar
    colors = ["#2e7d32" if s.ok else "#c62828" for s in report.layers]
    fig = _figure(8, max(2.0, 0.28 * len(names) + 1.0))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(shown, nan=0.0), color=colors, left=_FLOOR * 0.5)
    ax.set_xscale("log")
    ax.axvline(1.0, color="#000000", linewidth=1.5, linestyle="--")
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()
    ax.set_xlim(_FLOOR * 0.5, max(10.0, float(np.nanmax(vals, initial=0.0)) * 3))
    ax.set_xlabel("worst error / tolerance over all samples (log scale; 1 = the tolerance)")
    for yi, v in zip(y, vals, strict=True):
        if v <= _FLOOR:
            ax.text(_FLOOR, yi, "0 (exact)", va="center", fontsize=8)
    return _png(fig)


def _ulp_hist(report) -> str:
    from porting.model.verify_data import ULP_EDGES

    counts = np.asarray(report.ulp_histogram)
    labels = []
    for lo, hi in zip(ULP_EDGES[:-1], ULP_EDGES[1:], strict=True):
        a = math.ceil(lo)
        if not math.isfinite(hi):
            labels.append(f">{a - 1}")
            continue
        b = math.floor(hi)
        labels.append(str(a) if a == b else f"{a}-{b}")
    last = max([i for i, c in enumerate(counts) if c] + [4])
    counts, labels = counts[: last + 1], labels[: last + 1]
    fig = _figure(8, 3)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(counts)), np.maximum(counts, 0), color="#1565c0")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xticks(np.arange(len(counts)), labels=labels, rotation=45, fontsize=8)
    ax.set_xlabel("end-to-end error in ULPs of the Knet output")
    ax.set_ylabel("output elements")
    return _png(fig)


def _error_map(em: dict, port: str = "keras") -> str:
    img = np.asarray(em["image"], dtype=np.float64)
    fig = _figure(5, 4)
    ax = fig.add_subplot()
    top = float(img.max()) if img.size else 0.0
    top = float(img.max()) if img.size else 0.0
    im = ax.imshow(
        img,
        cmap="magma",
        aspect="auto" if img.shape[0] == 1 else "equal",
        interpolation="nearest",
        vmin=0.0,
        vmax=top if top > 0 else 1.0,
    )
    fig.colorbar(im, ax=ax, label="|ONNX - Knet|" if port == "onnx" else "|Keras - Knet|")
    ax.set_title(f"{_label(em['layer'])}, sample {em['sample']}", fontsize=9)
    return _png(fig)


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:70em;color:#111}
.verdict{padding:.8em 1em;font-size:1.3em;font-weight:bold;border-radius:4px}
.ok{background:#e8f5e9;color:#1b5e20}.bad{background:#ffebee;color:#b71c1c}
.partial{background:#fff8e1;color:#8d6e00}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
font-size:.9em;text-align:left}td.n{text-align:right;font-family:monospace}
tr.no td{background:#ffebee}img{max-width:100%}code{font-size:.9em}
"""


def _table(head: list[str], rows: list[list[Any]], bad: list[bool] | None = None) -> str:
    out = [
        "<table><thead><tr>",
        *(f"<th>{page_text(h)}</th>" for h in head),
        "</tr></thead><tbody>",
    ]
    for i, r in enumerate(rows):
        cls = ' class="no"' if bad and bad[i] else ""
        cells = "".join(
            f'<td class="n">{page_text(_fmt(c))}</td>'
            if isinstance(c, (int, float))
            else f"<td>{page_text(c)}</td>"
            for c in r
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def render(report, title: str = "porting: verification report") -> str:
    """The page for `report` (a DataReport), as text."""
    return _render(report, title)


def _render(report, title: str) -> str:
    cls = "partial" if report.partial else ("ok" if report.ok else "bad")
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{page_text(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{page_text(title)}</h1>",
        f'<p class="verdict {cls}" id="verdict">{page_text(report.verdict())}</p>',
        f"<p>Data: {page_text(report.data)}</p>",
    ]
    e = report.end_to_end
    parts.append(
        "<p>End to end: max abs error "
        f"{page_text(_fmt(float(e['max_abs_error'])))} (sample {page_text(e['worst_sample'])}), "
        f"max {page_text(_fmt(float(e['max_ulp'])))} ULP, max relative "
        f"{page_text(_fmt(float(e['max_rel_error'])))}.</p>"
    )
    c = report.classifier
    if c is not None:
        t5 = (
            "n/a (5 classes or fewer)"
            if c["top5_agreement"] is None
            else f"{c['top5_agreement']:.4%}"
        )
        differ = c["top1_disagree_samples"][:50]
        parts.append(
            f"<p>Classifier ({page_text(c['classes'])} classes): top-1 agreement "
            f"{page_text(format(c['top1_agreement'], '.4%'))} ({page_text(c['top1_disagree'])} samples "
            f"differ{': ' + page_text(differ) if differ else ''}), top-5 agreement {page_text(t5)} "
            f"({page_text(c['top5_rule'])}).</p>"
        )
    port = getattr(report, "port", "keras")
    parts += [
        "<h2>Per layer: worst error / tolerance</h2>"
        if port != "onnx"
        else "<h2>End to end: worst error / tolerance</h2><p>An ONNX port is checked end to "
        "end under onnxruntime: per-layer rows are not available, the one bar is the output "
        "(see the notes).</p>",
        f'<img id="layer-bars" alt="per-layer worst error over tolerance" src="{_layer_bars(report)}">',
        "<h2>End-to-end error histogram (ULPs)</h2>",
        f'<img id="ulp-histogram" alt="error histogram in ULPs" src="{_ulp_hist(report)}">',
    ]
    em = report.error_map
    if em is not None:
        parts += [
            "<h2>Worst sample's error map</h2>",
            f"<p>Layer {page_text(em['layer'])}, sample {page_text(em['sample'])} "
            f"({page_text(em['label'])}): {page_text(em['what'])}; max "
            f"{page_text(_fmt(float(em['max_abs_error'])))}"
            + (
                " (this sample run alone agrees exactly at this layer; the table's figure comes "
                "from its batch)"
                if not em["max_abs_error"]
                else ""
            )
            + ".</p>",
            f'<img id="error-map" alt="error map" src="{_error_map(em, port)}">',
        ]
    parts.append("<h2>Layers</h2>" if port != "onnx" else "<h2>End-to-end row</h2>")
    parts.append(
        _table(
            [
                "layer",
                "kind",
                "worst err / tol",
                "median <=",
                "p99 <=",
                "worst sample",
                "max abs error",
                "batches over",
                "ok",
            ],
            [
                [
                    s.name,
                    s.kind,
                    s.worst_ratio,
                    s.quantile(0.5),
                    s.quantile(0.99),
                    "" if s.worst_sample is None else s.worst_sample,
                    s.worst_abs_error,
                    s.batches_over,
                    "yes" if s.ok else "NO",
                ]
                for s in report.layers
            ],
            [not s.ok for s in report.layers],
        )
    )
    if report.worst_samples:
        parts.append("<h2>Worst samples (end to end)</h2>")
        parts.append(
            _table(
                ["index", "sample", "max abs error", "max ULP", "relative"],
                [
                    [w["index"], w["label"], w["max_abs_error"], w["max_ulp"], w["rel_error"]]
                    for w in report.worst_samples
                ],
            )
        )
    env = report.environment
    rows = [
        ["Knet backend", f"{env.get('knet_backend')} ({env.get('knet_backend_reason')})"],
        *([["convolutions", env["conv_kernel"]]] if env.get("conv_kernel") else []),
        ["dtypes", env.get("dtypes")],
        ["mode, spatial, batch", f"{report.mode}, {report.spatial}, {report.batch_size}"],
        ["platform", f"{env.get('platform')} ({env.get('cpus')} CPUs)"],
        *[[k, v] for k, v in (env.get("versions") or {}).items()],
        [
            "time",
            f"{report.timings.get('total_s', 0):.2f} s, "
            f"{report.timings.get('samples_per_s', 0):.1f} samples/s",
        ],
    ]
    parts += ["<h2>Environment</h2>", _table(["what", "value"], rows)]
    if report.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{page_text(n)}</li>" for n in report.notes]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(report, path, *, title: str = "porting: verification report") -> str:
    """Write `render(report)` to `path` atomically; returns the path written."""
    from porting import files

    target = files.output_file(path, what="--report")
    text = render(report, title)
    with files.atomic_write(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return str(target)
