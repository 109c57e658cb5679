"""Layer-by-layer verification: the example verifies in both modes, ports broken on purpose are
caught at the right layer, and correct float32 models are never flagged in whole-model mode."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import PortingError, layout  # noqa: E402
from porting.model import Conv, Dense, KnetModel, Mat, Pool, convert  # noqa: E402
from porting.model.kinds import conv as kconv  # noqa: E402
from porting.model.kinds import dense as kdense  # noqa: E402
from porting.model.verify import default_input, verify_model  # noqa: E402

F32 = np.float32


@pytest.fixture(scope="module")
def lenet():
    from porting.examples.lenet import lenet, lenet_input

    return lenet(), lenet_input()


@pytest.mark.parametrize("mode", ["each", "whole"])
@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_example_verifies(lenet, mode, spatial):
    model, x = lenet
    report = verify_model(model, x, mode=mode, spatial=spatial)
    assert report.ok, str(report)
    assert report.first_divergent is None
    assert [r.name for r in report.rows] == ["conv1", "conv2", "dense1", "dense2"]
    assert [r.k for r in report.rows] == [5 * 5 * 1 + 1, 5 * 5 * 20 + 1, 800 + 1, 128 + 1]
    assert report.end_to_end["max_rel_error"] < 1e-5
    assert report.knet_backend and report.versions["tensorflow"]
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is True and d["layers"][1]["shape"] == [4, 4, 50, 4] and d["mode"] == mode
    text = str(report)
    assert text.startswith("OK") and "conv2" in text and "err / tol" in text


def _broken(monkeypatch, what):
    if what == "kernel not rotated":
        monkeypatch.setattr(
            kconv,
            "_kernel_converter",
            lambda w, mode, spatial: layout.kernel_to_tf(w, 1, spatial),
        )
    elif what == "flatten rows not permuted":
        monkeypatch.setattr(
            kdense, "_dense_converter", lambda w, input_shape, spatial: np.ascontiguousarray(w.T)
        )
    elif what == "H and W swapped":
        monkeypatch.setattr(
            kconv,
            "_kernel_converter",
            lambda w, mode, spatial: layout.kernel_to_tf(
                w, mode, "keep" if spatial == "reverse" else "reverse"
            ),
        )


@pytest.mark.parametrize("mode", ["each", "whole"])
@pytest.mark.parametrize(
    "what,first,cause",
    [
        ("kernel not rotated", "conv1", "kernel_flip"),
        ("flatten rows not permuted", "dense1", "flatten_order"),
        ("H and W swapped", "conv1", "spatial_transpose"),
    ],
)
def test_broken_ports_are_caught_at_the_right_layer(lenet, monkeypatch, mode, what, first, cause):
    model, x = lenet
    _broken(monkeypatch, what)
    report = verify_model(model, x, mode=mode)
    assert not report.ok
    assert report.first_divergent == first, str(report)
    bad = next(r for r in report.rows if r.name == first)
    assert bad.error_to_tolerance > 100  # a layout bug is the size of the values, not of rounding
    if mode == "each":  # isolation: only the layers the bug touches are flagged
        broken_kind = "dense" if "flatten" in what else "conv"
        assert all(r.ok for r in report.rows if r.kind != broken_kind), str(report)
    assert str(report).startswith(f"MISMATCH: first divergent layer {first!r}")
    assert report.diagnosis is not None and report.diagnosis.cause == cause, report.notes
    assert report.to_dict()["diagnosis"]["cause"] == cause and f"diagnosis: {cause}" in str(report)


def test_flatten_bug_is_caught_after_a_non_square_conv(monkeypatch):
    """Non-square, multi-channel conv output before the dense: the row permutation matters."""
    rng = np.random.default_rng(2)
    m = KnetModel(
        [
            Conv(rng.standard_normal((3, 2, 3, 5), F32), padding=1),
            Mat(),
            Dense(rng.standard_normal((4, 5 * 6 * 5), F32)),
        ],
        input_size=(5, 5, 3),
    )
    _broken(monkeypatch, "flatten rows not permuted")
    for spatial in ("reverse", "keep"):
        r = verify_model(m, mode="each", spatial=spatial)
        assert r.first_divergent == "dense1" and [x.ok for x in r.rows] == [True, True, False]


def test_deep_float32_stack_is_not_flagged_in_whole_mode():
    """Errors propagate through 8 layers; the propagated allowance keeps correct ones passing,
    while the tolerance stays tight enough to catch a bug (error/tol well below 1)."""
    rng = np.random.default_rng(3)
    layers, c = [], 3
    for i in range(6):
        co = 8 + 4 * i
        w = rng.standard_normal((3, 3, c, co), F32) * np.float32(np.sqrt(2 / (9 * c)))
        layers.append(
            Conv(
                w,
                rng.standard_normal((1, 1, co, 1), F32) * F32(0.1),
                padding=1,
                activation=("relu", "tanh", "elu", "sigm")[i % 4],
                pool=dict(window=2, mode=1) if i in (1, 3) else None,
            )
        )
        c = co
    layers += [
        Pool(window=3, padding=1),
        Dense(rng.standard_normal((10, 2 * 1 * c), F32) * F32(0.1)),
    ]
    m = KnetModel(layers, input_size=(16, 14, 3))
    x = np.asfortranarray(rng.uniform(-1, 1, (16, 14, 3, 3)).astype(F32))
    whole = verify_model(m, x, mode="whole")
    assert whole.ok, str(whole)
    assert whole.rows[-1].error_to_tolerance < 0.9
    each = verify_model(m, x, mode="each")
    assert each.ok and max(r.error_to_tolerance for r in each.rows) < 0.5, str(each)


def test_float64_knet_against_float32_keras():
    rng = np.random.default_rng(4)
    m = KnetModel(
        [
            Conv(
                rng.standard_normal((3, 3, 2, 4)),
                rng.standard_normal((1, 1, 4, 1)),
                activation="tanh",
                pool=dict(window=2),
            ),
            Dense(rng.standard_normal((3, 24)), activation="softmax"),
        ],
        input_size=(8, 7, 2),
    )
    km = convert.to_keras(m, dtype="float32")
    for mode in ("each", "whole"):
        r = verify_model(m, default_input(m), keras_model=km, mode=mode)
        assert r.ok, str(r)
        assert r.dtypes == {"knet": "float64", "keras": "float32"}
        assert any("float32's eps" in n for n in r.notes)


def test_verifies_a_keras_model_given_separately_and_spatial_mismatch_is_named(lenet):
    model, x = lenet
    km = convert.to_keras(model, spatial="keep")
    assert verify_model(model, x, keras_model=km).spatial == "keep"  # remembered
    from porting import PortingError

    with pytest.raises(PortingError, match="mode='sideways'"):
        verify_model(model, x, keras_model=km, mode="sideways")
    other = KnetModel([Dense(np.ones((2, 3), F32), name="zzz")], input_size=(3,))
    with pytest.raises(PortingError, match="no layer named 'zzz'"):
        verify_model(other, keras_model=km)


def test_progress_is_reported_through_a_callback(lenet):
    model, x = lenet
    calls = []
    assert verify_model(model, x[..., :1], progress=lambda *a: calls.append(a)).ok
    assert calls[-1][1:] == (len(model.layers) + 2, len(model.layers) + 2)
    assert [c[1] for c in calls] == list(range(1, len(model.layers) + 3))
    with pytest.raises(PortingError, match="progress=True"):
        verify_model(model, x[..., :1], progress=True)
