"""Every layer kind converted to Keras agrees with the Knet reference; Knet's flatten order is
proven on a non-square multi-channel input under both spatial conventions."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from porting import layout  # noqa: E402
from porting.model import Activation, Conv, Dense, Dropout, KnetModel, Mat, Pool, forward_knet  # noqa: E402
from porting.model.convert import julia_to_tf, to_keras  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402

F32, F64 = np.float32, np.float64


def _x(rng, size, dtype=F32, batch=2):
    return np.asfortranarray(rng.standard_normal((*size, batch)).astype(dtype))


def _check(model, x, spatial="reverse", modes=("each",)):
    """Verify in the given modes; also compare the Keras output with the Knet output directly."""
    km = to_keras(model, spatial=spatial, input_size=x.shape[:-1])
    for mode in modes:
        report = verify_model(model, x, keras_model=km, mode=mode, spatial=spatial)
        assert report.ok, str(report)
        if mode == "each":  # whole mode: exact layers pass the incoming error on, ratio -> 1
            assert max(r.error_to_tolerance for r in report.rows) < 0.5, str(report)
    x_tf = layout.activations_to_tf(x, spatial) if x.ndim > 2 else np.ascontiguousarray(x.T)
    y = np.asarray(km(x_tf))
    expected = julia_to_tf(forward_knet(model, x).final, None, spatial)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(expected).max()))
    return report


CONVS = [
    # (w size, x size, keywords)
    ((3, 2, 4), (11, 2), dict(padding=1, stride=2, mode=0)),
    ((3, 2, 4), (13, 2), dict(padding=2, dilation=2, mode=1)),
    ((3, 2, 3, 4), (9, 7, 3), dict(padding=(1, 0), stride=(2, 1), mode=0)),
    ((3, 3, 2, 3), (10, 9, 2), dict(padding=1, dilation=(1, 2), mode=1)),
    (
        (3, 2, 2, 3),
        (11, 9, 2),
        dict(padding=(2, 1), stride=2, dilation=2, mode=0),
    ),  # stride + dilation
    ((2, 3, 2, 2, 3), (6, 5, 4, 2), dict(padding=1, mode=0)),
    (
        (2, 2, 2, 2, 2),
        (7, 6, 5, 2),
        dict(padding=(1, 0, 1), stride=(1, 2, 1), dilation=(2, 1, 1), mode=1),
    ),
]


@pytest.mark.parametrize(
    "wsize,xsize,kw", CONVS, ids=[f"{len(c[0]) - 2}d-{i}" for i, c in enumerate(CONVS)]
)
@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_conv_layers(wsize, xsize, kw, spatial):
    rng = np.random.default_rng(abs(hash((wsize, xsize))) % 2**32)
    cout = wsize[-1]
    bshape = (*([1] * (len(wsize) - 2)), cout, 1)
    m = KnetModel(
        [Conv(rng.standard_normal(wsize, F32), rng.standard_normal(bshape, F32), **kw)],
        input_size=xsize,
    )
    _check(m, _x(rng, xsize), spatial)


def test_conv_float64_and_3d_dilation_in_float64():
    rng = np.random.default_rng(5)
    m = KnetModel(
        [
            Conv(
                rng.standard_normal((2, 2, 2, 2, 3)),
                rng.standard_normal((1, 1, 1, 3, 1)),
                dilation=2,
                padding=1,
                activation="elu",
            )
        ],
        input_size=(6, 5, 5, 2),
    )
    r = _check(m, _x(rng, (6, 5, 5, 2), F64))
    assert r.dtypes == {"knet": "float64", "keras": "float64"}


POOLS = [
    ((8, 7, 3), dict(window=2)),
    ((8, 7, 3), dict(window=3, padding=1, stride=2)),  # max with padding: padded cells never win
    ((8, 7, 3), dict(window=(3, 2), padding=(1, 1), mode=1)),  # mean counts padding as zeros
    ((9, 3), dict(window=3, padding=2, stride=1)),
    ((9, 3), dict(window=2, padding=1, mode=1)),
    ((6, 5, 4, 2), dict(window=2, padding=1)),
    ((6, 5, 4, 2), dict(window=(2, 3, 2), mode=1)),
]


@pytest.mark.parametrize("xsize,kw", POOLS)
def test_pool_layers(xsize, kw):
    rng = np.random.default_rng(
        len(xsize) * 10 + kw["window"] if isinstance(kw["window"], int) else 3
    )
    m = KnetModel([Pool(**kw)], input_size=xsize)
    x = _x(rng, xsize) - 3.0  # all negative: a zero pad before a max pool would win everywhere
    _check(m, x, modes=("each", "whole"))


def test_pool_max_padding_never_wins_on_negative_input():
    m = KnetModel([Pool(window=3, padding=1, stride=1)], input_size=(4, 4, 1))
    x = -np.ones((4, 4, 1, 1), F32)
    y = np.asarray(to_keras(m)(layout.activations_to_tf(x)))
    assert (y == -1).all()  # a ZeroPadding + MaxPooling port would give 0 at the border


def test_pool_float64_3d_and_alpha_and_mode2():
    rng = np.random.default_rng(9)
    m = KnetModel(
        [Pool(window=2, padding=1), Pool(window=2, mode=2, alpha=0.5)],
        input_size=(6, 5, 4, 2),
        dtype=F64,
    )
    r = _check(m, _x(rng, (6, 5, 4, 2), F64))
    assert r.ok
    # without padding mode 2 is mode 1's mean exactly: nothing to note
    assert not any("mode=2" in n for n in r.notes)


@pytest.mark.parametrize("act", ["relu", "sigm", "tanh", "elu", "softmax", "identity"])
def test_dense_with_each_activation(act):
    rng = np.random.default_rng(11)
    m = KnetModel(
        [Dense(3 * rng.standard_normal((7, 5), F32), rng.standard_normal(7, F32), activation=act)],
        input_size=(5,),
    )
    _check(m, _x(rng, (5,), batch=4), modes=("each", "whole"))


def test_activation_layers_on_conv_outputs_and_dropout_ignored():
    rng = np.random.default_rng(12)
    m = KnetModel(
        [
            Conv(
                rng.standard_normal((3, 3, 2, 4), F32),
                rng.standard_normal((1, 1, 4, 1), F32),
                activation="sigm",
                pool=dict(window=2, mode=1),
                activation_before_pool=True,
                dropout=0.4,
            ),
            Activation("softmax", dims=3),  # over channels
            Activation("softmax"),  # Knet's dims=1: over X1
            Dropout(0.9),
            Activation("tanh"),
        ],
        input_size=(9, 8, 2),
    )
    for spatial in ("reverse", "keep"):
        _check(m, _x(rng, (9, 8, 2)), spatial, modes=("each", "whole"))


@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_flatten_order_on_non_square_multichannel_input(spatial):
    """Dense rows pick Julia features by their column-major index: Keras must pick the same."""
    x_size = (5, 3, 4)  # X1 != X2, C > 1
    n_feat = int(np.prod(x_size))
    rng = np.random.default_rng(13)
    x = _x(rng, x_size, batch=2)
    picks = np.array([0, 1, 5, 17, 31, 59])
    w = np.zeros((picks.size, n_feat), F32)
    w[np.arange(picks.size), picks] = 1
    for layers in ([Mat(), Dense(w)], [Dense(w)]):  # explicit mat, and Dense's implicit mat
        m = KnetModel(layers, input_size=x_size)
        km = to_keras(m, spatial=spatial)
        y = np.asarray(km(layout.activations_to_tf(x, spatial)))
        np.testing.assert_array_equal(y.T, x.reshape(n_feat, 2, order="F")[picks])
        _check(m, x, spatial, modes=("each", "whole"))
    # the same with a conv in front, channel count and sizes all different
    m = KnetModel(
        [
            Conv(rng.standard_normal((2, 3, 4, 3), F32), padding=(0, 1)),
            Mat(),
            Dropout(0.1),
            Dense(rng.standard_normal((6, 4 * 3 * 3), F32)),
        ],
        input_size=x_size,
    )
    _check(m, x, spatial, modes=("each", "whole"))


@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_conv_with_a_single_output_along_a_strided_axis(spatial):
    # TF 2.21's oneDNN conv returned garbage for this geometry (one output along the strided
    # axis); the converter runs that axis at stride 1 and crops, which must be exact.
    rng = np.random.default_rng(17)
    w = rng.standard_normal((3, 3, 1, 2), F32)
    b = rng.standard_normal((1, 1, 2, 1), F32)
    m = KnetModel(
        [Conv(w, b, padding=(2, 1), stride=(1, 2), dilation=(2, 1), mode=1)], input_size=(2, 2, 1)
    )
    assert m.output_sizes == [(2, 1, 2)]
    km = to_keras(m, spatial=spatial)
    assert any(lay.name == "conv1__crop" for lay in km.layers)
    for _ in range(3):  # the bad kernel gave different values on each call
        _check(m, _x(rng, (2, 2, 1)), spatial)
