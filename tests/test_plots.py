"""porting.plots: valid image files with the right content, atomic writes, PortingError on bad
paths. NumPy-only inputs (no TensorFlow): the errors are made by hand or by the reference conv."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (a matplotlib dependency)

from porting import PortingError, layout, plots  # noqa: E402
from porting.knet import conv4  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_summary(path) -> dict:
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    assert os.path.getsize(path) > 5_000  # a real figure, not an empty canvas
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 300 and im.size[1] > 200
        return json.loads(im.text["porting"])


def _conv_case(mode_actual: int = 1, rng_seed: int = 0, channels: int = 4):
    """A float32 conv computed two ways (reference in float32 with a different summation order
    than the float64 truth), in TF layout, with its sum of magnitudes."""
    rng = np.random.default_rng(rng_seed)
    w = (rng.standard_normal((3, 3, 2, channels)) * 0.5).astype(np.float32)
    x = rng.uniform(-1, 4, (12, 10, 2, 2)).astype(np.float32)
    truth = conv4(
        w.astype(np.float64), x.astype(np.float64), padding=1, mode=1, backend="reference"
    )
    port = conv4(w, x, padding=1, mode=mode_actual, backend="reference")
    mag = conv4(
        np.abs(w).astype(np.float64),
        np.abs(x).astype(np.float64),
        padding=1,
        mode=1,
        backend="reference",
    )
    e = layout.activations_to_tf(np.asarray(truth))
    a = layout.activations_to_tf(np.asarray(port))
    m = layout.activations_to_tf(np.asarray(mag))
    return e, a, m


def test_ulp_histogram_writes_png_with_bound(tmp_path):
    e, a, m = _conv_case()
    out = plots.ulp_histogram(e, a, tmp_path / "h.png", k=18, magnitude=m)
    assert out == str(tmp_path / "h.png")
    s = _png_summary(out)
    assert s["plot"] == "ulp_histogram"
    assert s["ok"] is True and s["n_outside_bound"] == 0
    assert s["k"] == 18 and s["precision"] == "float32"
    assert s["bound_scaled"] == pytest.approx(np.sqrt(18) + 2)
    # the bound in ULPs of the output is at least the scaled bound (S >= |y|)
    assert s["bound_ulp_min"] >= s["bound_scaled"] * 0.5
    assert sum(s["binade_gap_counts"].values()) == s["n_elements"] - s["n_exact"]
    assert s["magnitude_given"] is True
    # no temporary files left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]


def test_ulp_histogram_peaks_sit_on_binade_spacings(tmp_path):
    # float32 vs float32 in another order: every error is a whole number of output ULPs.
    rng = np.random.default_rng(1)
    y = rng.uniform(0.3, 3.0, 4000).astype(np.float32)
    steps = rng.choice([1, 1, 1, 2], size=y.size)
    a = (y + steps * np.spacing(y)).astype(np.float32)
    s = _png_summary(plots.ulp_histogram(y, a, tmp_path / "p.png", k=9))
    assert s["max_ulp"] == 2.0
    assert set(s["output_binade_counts"]) <= {"-2", "-1", "0", "1"}
    # peaks at 1 and 2 ULP (half-octave bins centred on powers of two)
    assert any(abs(p - 1.0) < 0.05 for p in s["peaks_ulp"])
    assert any(abs(p - 2.0) < 0.1 for p in s["peaks_ulp"])


def test_ulp_histogram_counts_outside_bound(tmp_path):
    e, a, m = _conv_case(mode_actual=0)  # kernel flip: errors of the size of the values
    s = _png_summary(plots.ulp_histogram(e, a, tmp_path / "flip.png", k=18, magnitude=m))
    assert s["ok"] is False and s["n_outside_bound"] > s["n_elements"] // 2


def test_heatmap_shape_and_border_only_errors(tmp_path):
    rng = np.random.default_rng(2)
    e = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    a = e.copy()
    a[:, 0, :, :] += 0.5  # a padding-like mistake: only the top row differs
    a[1, :, -1, 2] -= 0.25  # and the right column of one channel
    s = _png_summary(plots.error_heatmap(e, a, tmp_path / "map.png", k=9))
    assert s["plot"] == "error_heatmap"
    assert s["shape"] == [2, 9, 7, 3] and s["map_shape"] == [9, 7]
    assert s["n_positions_outside"] == 7 + 8
    assert s["n_border_outside"] == s["n_positions_outside"]
    # one sample and channel
    s = _png_summary(plots.error_heatmap(e, a, tmp_path / "one.png", k=9, batch=0, channel=1))
    assert s["n_positions_outside"] == 7 and s["shown"] == [0, 1]


def test_heatmap_shows_kernel_flip_everywhere(tmp_path):
    e, a, m = _conv_case(mode_actual=0)
    s = _png_summary(plots.error_heatmap(e, a, tmp_path / "flip.png", k=18, magnitude=m))
    assert s["map_shape"] == [10, 12]  # (H, W) = (X2, X1) with spatial="reverse"
    assert s["n_positions_outside"] > 0.9 * 10 * 12
    assert s["n_border_outside"] < s["n_positions_outside"]


def test_heatmap_other_ranks(tmp_path):
    rng = np.random.default_rng(3)
    d = rng.standard_normal((4, 6))  # dense (N, features)
    s = _png_summary(plots.error_heatmap(d, d + 1e-3, tmp_path / "dense.png"))
    assert s["map_shape"] == [4, 6]
    v = rng.standard_normal((2, 3, 5, 4, 2))  # 3-d conv output: max over depth
    s = _png_summary(plots.error_heatmap(v, v, tmp_path / "vol.png"))
    assert s["map_shape"] == [5, 4] and s["n_positions_outside"] == 0
    with pytest.raises(PortingError, match="channel=5"):
        plots.error_heatmap(v, v, tmp_path / "bad.png", channel=5)


def test_layer_errors_marks_first_divergent(tmp_path):
    rows = [
        ("conv1", 0.2),
        ("pool1", 0.0),
        ("conv2", 30.0),
        ("dense1", 2e3),
        ("dense2", float("inf")),
    ]
    s = _png_summary(plots.layer_errors(rows, tmp_path / "layers.png"))
    assert s["layers"] == ["conv1", "pool1", "conv2", "dense1", "dense2"]
    assert s["first_divergent"] == "conv2"
    assert (
        s["error_to_tolerance"][:4] == [0.2, 0.0, 30.0, 2000.0]
        and s["error_to_tolerance"][4] == "inf"
    )
    s = _png_summary(plots.layer_errors({"a": 0.5, "b": 0.9}, tmp_path / "ok.png"))
    assert s["first_divergent"] is None


def test_layer_errors_takes_report_rows(tmp_path):
    class Row:
        def __init__(self, name, r, ok):
            self.name, self.error_to_tolerance, self.ok = name, r, ok

    class Report:
        rows = [Row("c1", 0.1, True), Row("c2", 0.9, True), Row("d1", 5.0, False)]
        first_divergent = "d1"

    s = _png_summary(plots.layer_errors(Report(), tmp_path / "r.png"))
    assert s["first_divergent"] == "d1" and s["layers"] == ["c1", "c2", "d1"]


def test_svg_and_pdf(tmp_path):
    svg = plots.layer_errors([("a", 0.5), ("b", 3.0)], tmp_path / "h.svg")
    assert open(svg, "rb").read(200).lstrip().startswith((b"<?xml", b"<svg"))
    pdf = plots.layer_errors([("a", 1.5)], tmp_path / "l.pdf")
    assert open(pdf, "rb").read(5) == b"%PDF-"


@pytest.mark.parametrize(
    "name, match",
    [
        ("missing_dir/out.png", "does not exist"),
        ("out.jpeg", "unknown image format"),
        ("out", "unknown image format"),
        (".", "is a directory"),
    ],
)
def test_bad_paths(tmp_path, name, match):
    e = np.ones((1, 3, 3, 1), np.float32)
    target = tmp_path / name if name != "." else tmp_path
    for fn in (
        lambda: plots.ulp_histogram(e, e, target),
        lambda: plots.error_heatmap(e, e, target),
        lambda: plots.layer_errors([("a", 1.0)], target),
    ):
        with pytest.raises(PortingError, match=match):
            fn()


def test_bad_inputs(tmp_path):
    p = tmp_path / "x.png"
    with pytest.raises(PortingError, match="shape"):
        plots.ulp_histogram(np.ones((2, 3)), np.ones((3, 2)), p)
    with pytest.raises(PortingError, match="dtype"):
        plots.ulp_histogram(np.ones(3, int), np.ones(3, int), p)
    with pytest.raises(PortingError, match="no layers"):
        plots.layer_errors([], p)
    with pytest.raises(PortingError, match="not a number"):
        plots.layer_errors([("a", "big")], p)
    with pytest.raises(PortingError, match="neither"):
        plots.layer_errors([object()], p)
    with pytest.raises(PortingError, match="porting.diagnose result"):
        plots.diagnosis_plot(object(), p)
    assert not p.exists()


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    p = tmp_path / "keep.png"
    p.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(PortingError, match="disk full"):
        plots.layer_errors([("a", 1.0)], p)
    assert p.read_bytes() == b"old"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["keep.png"]


def test_diagnosis_plot(tmp_path):
    diagnose = pytest.importorskip("porting.diagnosis")
    e, a, m = _conv_case(mode_actual=0)
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 3, 2, 4)) * 0.5).astype(np.float32)  # as in _conv_case
    x = rng.uniform(-1, 4, (12, 10, 2, 2)).astype(np.float32)
    d = diagnose.diagnose(e.astype(np.float32), a, w=w, x=x, padding=1, mode=1)
    s = _png_summary(plots.diagnosis_plot(d, tmp_path / "d.png"))
    assert s["plot"] == "diagnosis" and s["cause"] == d.cause
    assert s["heatmap"]["n_positions_outside"] > 0 and s["heatmap"]["map_shape"] == [10, 12]
    assert s["histogram"]["ok"] is False
    assert plots.check_path(tmp_path / "ok.svg") == str(tmp_path / "ok.svg")
    with pytest.raises(PortingError, match="unknown image format"):
        plots.check_path(tmp_path / "bad.txt")


def test_import_plots_is_light():
    code = (
        "import sys, porting.plots\n"
        "bad = [m for m in ('matplotlib', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_diagnose_plot(tmp_path, capsys):
    from porting.cli import main

    e, a, m = _conv_case(mode_actual=0)
    np.save(tmp_path / "e.npy", e.astype(np.float32))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "m.npy", m)
    out = tmp_path / "d.png"
    code = main(
        [
            "diagnose",
            str(tmp_path / "e.npy"),
            str(tmp_path / "a.npy"),
            "--k",
            "18",
            "--magnitude",
            str(tmp_path / "m.npy"),
            "--plot",
            str(out),
        ]
    )
    assert code == 1
    s = _png_summary(out)
    assert s["plot"] == "diagnosis" and s["heatmap"]["shape"] == [2, 10, 12, 4]
    assert "plot written to" in capsys.readouterr().out
    # a bad path is refused before the diagnosis runs
    code = main(
        [
            "diagnose",
            str(tmp_path / "e.npy"),
            str(tmp_path / "a.npy"),
            "--plot",
            str(tmp_path / "no" / "d.png"),
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
