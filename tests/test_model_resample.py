"""The resampling kinds (`upsample`, `pixelshuffle`) against independent implementations.

Oracles, none of them porting's own code:

- PyTorch float64 `torch.nn.functional.interpolate` (modes nearest, linear, bilinear,
  trilinear, `align_corners` True and False) and `torch.pixel_shuffle`. Why they compute what
  NNlib computes (NNlib v0.9.22 src/upsample.jl; Flux v0.16.5 src/layers/upsample.jl calls it
  with NNlib's default `align_corners=true`): NNlib's linear kernel takes, per axis, the source
  index `ratio * i` with `ratio = (in - 1) / (out - 1)` (aligned corners) or `max(0, ratio *
  (i + 1/2) - 1/2)` with `ratio = in / out`, the neighbours `floor(index)` and the next one
  clamped to the last cell, weights `1 - λ` and `λ`; PyTorch's `upsample_linear` family
  (given `size`, so that its scale is `in / out`) uses the same source index, the same clamp
  and the same weights, one axis after another. `nearest` with an integer factor is
  `floor(i * in / out)`, a repeat, in both.
- Layout: a Julia-indexed array `(X1, ..., Xd, C, N)` read in reverse axis order is torch's
  `(N, C, Xd, ..., X1)` (`_torch`), so torch's last axis is X1. `torch.pixel_shuffle` on
  `(N, r^2 C, X2, X1)` gives `out[n, c, h r + i, w r + j] = in[n, c r^2 + i r + j, h, w]`:
  with `h, i` along X2 and `w, j` along X1 that is NNlib's channel `j + r i + r^2 c` (0-based),
  the sub-position along X1 fastest and the output channel slowest (NNlib's reshape to
  `(X1, X2, r, r, C, N)`, column-major).
- Hand-derived: NNlib's and Flux's docstring examples (`upsample_bilinear([1 2 3; 4 5 6],
  (2, 3))`, `upsample_nearest`, `pixel_shuffle` of `10i + j + c/10`), and a 3-D pixel shuffle
  from the index formula, looped.

Then the conversion: the Keras model of each case against the oracle, float32 and float64, both
spatial conventions, and the verification.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from porting.errors import PortingError
from porting.model import (
    KnetModel,
    PixelShuffle,
    Upsample,
    forward_knet,
    load_export,
    save_export,
    to_keras,
    verify_model,
)

torch = pytest.importorskip("torch", reason="torch is the independent oracle")
F = torch.nn.functional

DTYPES = (np.float32, np.float64)


def _torch(x):
    """Julia-indexed (X1, ..., Xd, C, N) -> torch (N, C, Xd, ..., X1), float64."""
    x = np.asarray(x, np.float64)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(tuple(range(x.ndim))[::-1])))


def _julia(t):
    a = t.numpy()
    return a.transpose(tuple(range(a.ndim))[::-1])


def torch_upsample(x, mode, out, align_corners):
    """The float64 oracle: `out` the output's spatial sizes in Julia order."""
    nd = x.ndim - 2
    tm = "nearest" if mode == "nearest" else ("linear", "bilinear", "trilinear")[nd - 1]
    kw = {} if mode == "nearest" else {"align_corners": align_corners}
    return _julia(F.interpolate(_torch(x), size=tuple(out[::-1]), mode=tm, **kw))


def _model(layer, size, dtype):
    return KnetModel([layer], input_size=size, dtype=dtype)


def _tol(dtype, want, k=8):
    """k roundings of the output's scale: each output is a convex combination of at most 2^d
    inputs, computed in d nested two-term steps (a wrong index or weight moves it by O(1))."""
    return k * np.finfo(dtype).eps * max(1.0, float(np.abs(want).max()))


def _keras_out(model, x, spatial="reverse"):
    from porting import layout

    km = to_keras(model, spatial=spatial)
    return layout.activations_from_tf(np.asarray(km(layout.activations_to_tf(x, spatial))), spatial)


CASES = [
    # (mode, spatial size, scale or None, size or None, align_corners)
    ("bilinear", (3, 4), (2, 3), None, True),
    ("bilinear", (3, 4), (2, 3), None, False),
    ("bilinear", (5, 4), (2.5, 1.5), None, True),
    ("bilinear", (5, 4), None, (7, 3), False),  # downsampling X2
    ("bilinear", (1, 4), 2, None, True),  # a single cell along X1
    ("bilinear", (6,), 2, None, True),  # one spatial dimension: linear
    ("bilinear", (6,), None, (9,), False),
    ("trilinear", (3, 2, 4), (2, 2, 1.5), None, True),
    ("trilinear", (3, 2, 4), 2, None, False),
    ("nearest", (3, 4), (2, 3), None, True),
    ("nearest", (3,), 3, None, True),
    ("nearest", (2, 3, 2), None, (4, 3, 6), True),
]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c[0]}-{c[1]}-{c[4]}-{i}" for i, c in enumerate(CASES)]
)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_upsample_matches_torch_and_converts(case, dtype):
    mode, spatial, scale, size, align = case
    layer = Upsample(mode, scale=scale, size=size, align_corners=align)
    model = _model(layer, (*spatial, 3), dtype)
    x = np.random.default_rng(1).uniform(-1, 1, (*spatial, 3, 2)).astype(dtype)
    out = model.output_sizes[-1][:-1]
    want = torch_upsample(x, mode, out, align)
    got = forward_knet(model, x)[-1]
    assert got.dtype == dtype and got.shape == want.shape
    tol = 0 if mode == "nearest" else _tol(dtype, want)
    assert float(np.abs(got - want).max()) <= tol
    for spatial_ in ("reverse", "keep"):
        k = _keras_out(model, x, spatial_)
        assert float(np.abs(k - want).max()) <= (0 if mode == "nearest" else _tol(dtype, want))
    report = verify_model(model, x)
    assert report.ok, str(report)


def test_align_corners_matters_and_keras_default_is_half_pixel():
    """The two conventions differ by O(1) here (what a port that ignores Flux's default gets
    wrong), and Keras's UpSampling2D(bilinear) is the half-pixel one."""
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(2).uniform(-1, 1, (3, 4, 2, 1)).astype(np.float32)
    a = torch_upsample(x, "bilinear", (6, 8), True)
    b = torch_upsample(x, "bilinear", (6, 8), False)
    assert np.abs(a - b).max() > 0.05
    x_tf = np.ascontiguousarray(x.transpose(3, 1, 0, 2))  # (N, X2, X1, C)
    k = np.asarray(keras.layers.UpSampling2D(2, interpolation="bilinear")(x_tf))
    np.testing.assert_allclose(k.transpose(2, 1, 3, 0), b, atol=1e-6)


def test_nnlib_docstring_examples_by_hand():
    """NNlib v0.9.22 src/upsample.jl's examples: `upsample_bilinear(x, (2, 3))` of
    `[1 2 3; 4 5 6]` and `upsample_nearest(..., (2, 3))`."""
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32).reshape(2, 3, 1, 1)
    y = forward_knet(_model(Upsample("bilinear", scale=(2, 3)), (2, 3, 1), np.float32), x)[-1]
    row = np.arange(9) * 0.25 + 1  # 1.0 1.25 ... 3.0, each row 1 more
    want = np.stack([row + i for i in range(4)])
    np.testing.assert_array_equal(y[:, :, 0, 0], want)
    y = forward_knet(_model(Upsample("nearest", scale=(2, 3)), (2, 3, 1), np.float32), x)[-1]
    want = np.array([[1] * 3 + [2] * 3 + [3] * 3] * 2 + [[4] * 3 + [5] * 3 + [6] * 3] * 2)
    np.testing.assert_array_equal(y[:, :, 0, 0], want)


def _pixel_input(sizes, c, n=2, dtype=np.float64):
    return np.random.default_rng(3).uniform(-1, 1, (*sizes, c, n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sizes, r, c", [((3, 2), 2, 8), ((2, 3), 3, 9), ((4, 1), 2, 4)])
def test_pixel_shuffle_matches_torch_and_converts(sizes, r, c, dtype):
    x = _pixel_input(sizes, c, dtype=dtype)
    model = _model(PixelShuffle(r), (*sizes, c), dtype)
    want = _julia(torch.pixel_shuffle(_torch(x), r))
    got = forward_knet(model, x)[-1]
    np.testing.assert_array_equal(got, want)
    for spatial in ("reverse", "keep"):
        np.testing.assert_array_equal(_keras_out(model, x, spatial), want)
    assert verify_model(model, x).ok


def test_pixel_shuffle_docstring_examples_by_hand():
    """NNlib's examples: `x = [10i + j + c/10 for i in 1:2, j in 1:3, c in 1:4]` shuffled by 2
    is 4x6 with rows `11.1 11.3 12.1 12.3 13.1 13.3` / `11.2 11.4 ...`; the 1-D `y = [i + c/10
    for i in 1:3, c in 1:6]` becomes 6x3 with rows `1.1 1.3 1.5`, `1.2 1.4 1.6`, `2.1 ...`."""
    i, j, c = np.meshgrid(np.arange(1, 3), np.arange(1, 4), np.arange(1, 5), indexing="ij")
    x = (10 * i + j + c / 10).reshape(2, 3, 4, 1)
    y = forward_knet(_model(PixelShuffle(2), (2, 3, 4), np.float64), x)[-1][:, :, 0, 0]
    np.testing.assert_allclose(y[0], [11.1, 11.3, 12.1, 12.3, 13.1, 13.3])
    np.testing.assert_allclose(y[1], [11.2, 11.4, 12.2, 12.4, 13.2, 13.4])
    np.testing.assert_allclose(y[2], [21.1, 21.3, 22.1, 22.3, 23.1, 23.3])
    i, c = np.meshgrid(np.arange(1, 4), np.arange(1, 7), indexing="ij")
    x1 = (i + c / 10).reshape(3, 6, 1)
    y1 = forward_knet(_model(PixelShuffle(2), (3, 6), np.float64), x1)[-1][:, :, 0]
    np.testing.assert_allclose(y1[:3], [[1.1, 1.3, 1.5], [1.2, 1.4, 1.6], [2.1, 2.3, 2.5]])
    assert y1.shape == (6, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pixel_shuffle_3d_from_the_index_formula(dtype):
    """`y[i1 + r x1, i2 + r x2, i3 + r x3, c] = x[x1, x2, x3, i1 + r i2 + r^2 i3 + r^3 c]`
    (0-based), looped; and the Keras side (the 3-D case has the most Reshape/Permute steps)."""
    r, sizes, cout = 2, (2, 3, 2), 2
    x = _pixel_input(sizes, cout * r**3, n=1, dtype=dtype)
    want = np.zeros((*(s * r for s in sizes), cout, 1), dtype)
    for x1, x2, x3, i1, i2, i3, c in itertools.product(
        *(range(s) for s in sizes), range(r), range(r), range(r), range(cout)
    ):
        ch = i1 + r * i2 + r * r * i3 + r**3 * c
        want[i1 + r * x1, i2 + r * x2, i3 + r * x3, c, 0] = x[x1, x2, x3, ch, 0]
    model = _model(PixelShuffle(r), (*sizes, cout * r**3), dtype)
    np.testing.assert_array_equal(forward_knet(model, x)[-1], want)
    for spatial in ("reverse", "keep"):
        np.testing.assert_array_equal(_keras_out(model, x, spatial), want)


def test_keras_layers_and_depth_to_space_differs():
    """The Keras side is built-in Reshape/Permute (never a Lambda), at most 4 axes per sample,
    and TensorFlow's depth_to_space orders the channels otherwise (it would be wrong)."""
    tf = pytest.importorskip("tensorflow")
    x = _pixel_input((3, 2), 8, dtype=np.float32)
    model = _model(PixelShuffle(2), (3, 2, 8), np.float32)
    km = to_keras(model)
    kinds = {type(la).__name__ for la in km.layers}
    assert kinds <= {"InputLayer", "Reshape", "Permute"}
    assert all(len(la.output.shape) <= 5 for la in km.layers)
    x_tf = np.ascontiguousarray(x.transpose(3, 1, 0, 2))
    d2s = np.asarray(tf.nn.depth_to_space(x_tf, 2))
    assert not np.array_equal(d2s, np.asarray(km(x_tf)))


def test_upsample_keras_layers_by_case():
    def classes(layer, size, dtype=np.float32):
        return [type(la).__name__ for la in to_keras(_model(layer, size, dtype)).layers[1:]]

    assert classes(Upsample("nearest", scale=2), (3, 4, 2)) == ["UpSampling2D"]
    assert classes(Upsample("bilinear", scale=2, align_corners=False), (3, 4, 2)) == [
        "UpSampling2D"
    ]
    # float64 (TensorFlow's resize rounds to float32) and aligned corners: the matrices
    assert "Dense" in classes(
        Upsample("bilinear", scale=2, align_corners=False), (3, 4, 2), np.float64
    )
    assert "Dense" in classes(Upsample("bilinear", scale=2), (3, 4, 2))
    assert classes(Upsample("bilinear", scale=1), (3, 4, 2)) == ["Identity"]


def test_export_round_trip(tmp_path):
    layers = [
        Upsample("bilinear", scale=(2.5, 2), name="a"),
        Upsample("nearest", size=(10, 8), name="b"),
        PixelShuffle(2, name="c"),
    ]
    model = KnetModel(layers, input_size=(2, 2, 4))
    save_export(model, tmp_path / "m")
    back = load_export(tmp_path / "m")
    assert [la.describe() for la in back.layers] == [la.describe() for la in model.layers]
    x = _pixel_input((2, 2), 4, dtype=np.float32)
    for a, b in zip(forward_knet(model, x), forward_knet(back, x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Upsample("cubic", scale=2), "mode='cubic'"),
        (lambda: Upsample("nearest"), "exactly one"),
        (lambda: Upsample("nearest", scale=2, size=(4, 4)), "exactly one"),
        (lambda: Upsample("nearest", scale=1.5), "positive integers"),
        (lambda: Upsample("bilinear", scale=0), "positive numbers"),
        (lambda: Upsample("bilinear", scale=float("nan")), "positive numbers"),
        (lambda: Upsample("bilinear", scale=True), "positive numbers"),
        (lambda: Upsample("bilinear", size=(4, -1)), "positive integers"),
        (lambda: Upsample("bilinear", scale=2, align_corners="yes"), "boolean"),
        (lambda: PixelShuffle(0), "positive integer"),
        (lambda: PixelShuffle(2.0), "positive integer"),
        (lambda: KnetModel([PixelShuffle(2)], input_size=(3, 3, 6)), "not divisible"),
        (
            lambda: KnetModel([Upsample("bilinear", scale=(2, 2, 2))], input_size=(3, 3, 2)),
            "3 values",
        ),
        (lambda: KnetModel([Upsample("nearest", size=(5, 4))], input_size=(3, 2, 1)), "multiple"),
        (
            lambda: KnetModel([Upsample("bilinear", size=(1, 4))], input_size=(3, 2, 1)),
            "divides by zero",
        ),
        (lambda: KnetModel([Upsample("bilinear", scale=0.1)], input_size=(3, 2, 1)), ">= 1"),
        (lambda: KnetModel([Upsample("nearest", scale=2)], input_size=(5,)), "spatial"),
    ],
)
def test_bad_arguments_are_one_porting_error(build, match):
    with pytest.raises(PortingError, match=match):
        build()


# ---------------------------------------------------------------- diagnosis of wrong ports


def _wrong_port(kind):
    """Hand-written Keras ports with the usual mistakes (layers named after the Knet layer)."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    if kind == "pixel":
        inp = keras.Input((3, 4, 8))  # (X2, X1, C) of a Julia (4, 3, 8) sample
        t = L.Reshape((3, 4, 2, 2, 2), name="ps__split")(inp)  # depth_to_space's order
        t = L.Permute((1, 3, 2, 4, 5), name="ps__move")(t)
        return keras.Model(inp, L.Reshape((6, 8, 2), name="ps")(t))
    inp = keras.Input((3, 4, 2))
    interpolation = "bilinear" if kind == "half" else "nearest"
    return keras.Model(inp, L.UpSampling2D(2, interpolation=interpolation, name="up")(inp))


@pytest.mark.parametrize(
    "port, cause",
    [
        ("half", "upsample_align_corners"),
        ("nearest", "upsample_mode"),
        ("pixel", "pixel_shuffle_order"),
    ],
)
def test_hand_ports_with_the_usual_mistakes_are_named(port, cause):
    if port == "pixel":
        model = KnetModel([PixelShuffle(2, name="ps")], input_size=(4, 3, 8))
        x = _pixel_input((4, 3), 8, dtype=np.float32)
        layer = "ps"
    else:  # Flux's Upsample(:bilinear, scale = 2): aligned corners
        model = KnetModel([Upsample("bilinear", scale=2, name="up")], input_size=(4, 3, 2))
        x = np.random.default_rng(6).uniform(-1, 1, (4, 3, 2, 2)).astype(np.float32)
        layer = "up"
    report = verify_model(model, x, keras_model=_wrong_port(port))
    assert not report.ok
    assert report.first_divergent == layer
    assert report.diagnosis is not None and report.diagnosis.cause == cause, str(report)


def test_diagnose_functions_on_torch_computed_ports():
    """The port's output computed by PyTorch (align_corners=False for an aligned layer), in
    TensorFlow layout; and a correct output is `rounding`."""
    from porting.diagnosis import diagnose_pixel_shuffle, diagnose_upsample

    x = np.random.default_rng(7).uniform(-1, 1, (5, 3, 2, 2))  # Julia (X1, X2, C, N)
    tf = lambda a: np.ascontiguousarray(a.transpose(3, 1, 0, 2))  # noqa: E731
    wrong = torch_upsample(x, "bilinear", (10, 6), False)
    right = torch_upsample(x, "bilinear", (10, 6), True)
    d = diagnose_upsample(tf(x), tf(wrong), mode="bilinear", align_corners=True)
    assert d.cause == "upsample_align_corners" and d.finding.explains
    assert diagnose_upsample(tf(x), tf(right), mode="bilinear").cause == "rounding"
    xs = _pixel_input((3, 2), 8)
    good = _julia(torch.pixel_shuffle(_torch(xs), 2))
    assert diagnose_pixel_shuffle(tf(xs), tf(good), r=2).cause == "rounding"
    with pytest.raises(PortingError, match="expected"):
        diagnose_pixel_shuffle(tf(xs), tf(good)[:, :-1], r=2)


@pytest.mark.parametrize(
    "kind, key, value, match",
    [
        ("upsample", "mode", "bicubic", "mode='bicubic'"),
        ("upsample", "scale", "2", "finite number"),
        ("upsample", "scale", [2, None], "finite number"),
        ("upsample", "size", [4, 0], "size"),
        ("upsample", "align_corners", 1, "boolean"),
        ("pixelshuffle", "r", True, "integer"),
        ("pixelshuffle", "r", -3, "positive integer"),
    ],
)
def test_forged_export_entries_are_refused(tmp_path, kind, key, value, match):
    import json

    layer = Upsample("bilinear", scale=2) if kind == "upsample" else PixelShuffle(2)
    save_export(KnetModel([layer], input_size=(4, 4, 4)), tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["layers"][0][key] = value
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(PortingError, match=match):
        load_export(tmp_path / "m")


def test_cli_refuses_a_forged_export_exit_2_nothing_written(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    save_export(KnetModel([Upsample("nearest", scale=2)], input_size=(4, 4, 4)), tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["layers"][0]["scale"] = 10**400  # a number no float holds
    (tmp_path / "m.json").write_text(json.dumps(doc))
    before = sorted(p.name for p in tmp_path.iterdir())
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "porting",
            "convert",
            str(tmp_path / "m.json"),
            "-o",
            str(tmp_path / "o.keras"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=600,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "scale" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_pixel_shuffle_diagnosis_follows_the_spatial_convention():
    """Under spatial="keep" (X1 is TensorFlow's first spatial axis) the correct port is
    `rounding` and depth_to_space's order is still named."""
    from porting import layout
    from porting.diagnosis import diagnose_pixel_shuffle

    tf = pytest.importorskip("tensorflow")
    x = _pixel_input((3, 2), 8, dtype=np.float32)
    model = _model(PixelShuffle(2), (3, 2, 8), np.float32)
    x_tf = layout.activations_to_tf(x, "keep")
    right = np.asarray(to_keras(model, spatial="keep")(x_tf))
    assert diagnose_pixel_shuffle(x_tf, right, r=2, spatial="keep").cause == "rounding"
    wrong = np.asarray(tf.nn.depth_to_space(x_tf, 2))
    d = diagnose_pixel_shuffle(x_tf, wrong, r=2, spatial="keep")
    assert d.cause == "pixel_shuffle_order" and d.finding.hypothesis == "depth_to_space"
