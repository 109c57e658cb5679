"""`porting.flux.build`: Flux's constructors in Python and a `Flux.state` tree loaded into
them as ``Flux.loadmodel!`` does (Flux v0.14.25 ``src/loading.jl``: the same children's names
at every level, arrays of the same size, ``state`` keeping arrays and numbers and turning
functions into ``()``). The numbers are checked against the PyTorch float64 oracle of
test_flux (written from Flux/NNlib's definitions), never against porting's own forward."""

from __future__ import annotations

import numpy as np
import pytest
from test_flux import _lenet_oracle, assert_close, flux_forward, keras_forward

from porting.errors import PortingError
from porting.examples import flux as fx
from porting.flux import build as B


def _arr(d):
    return np.frombuffer(d["data"], "<f4").reshape(d["size"], order="F")


def lenet_builder():
    return B.Chain(
        B.Conv((5, 5), (1, 6), "relu"),
        B.MaxPool((2, 2)),
        B.Conv((5, 5), (6, 16), "relu"),
        B.MaxPool((2, 2)),
        B.flatten,
        B.Dense((256, 120), "relu"),
        B.Dense((120, 10)),
        "softmax",
    )


def lenet_state(seed=3):
    """`Flux.state` of fx.lenet(seed): NamedTuples as dicts, functions as ()."""
    c1, _, c2, _, _, d1, d2, _ = fx.lenet(seed)["data"][0]["data"]

    def conv(c):
        return {
            "σ": (),
            "weight": _arr(c["data"][1]),
            "bias": _arr(c["data"][2]),
            "stride": (1, 1),
            "pad": (0, 0, 0, 0),
            "dilation": (1, 1),
            "groups": 1,
        }

    def dense(d):
        return {"weight": _arr(d["data"][0]), "bias": _arr(d["data"][1]), "σ": ()}

    return {"layers": (conv(c1), (), conv(c2), (), (), dense(d1), dense(d2), ())}


def test_lenet_state_matches_flux_oracle():
    model = B.load_state(lenet_builder(), lenet_state(3), input_size=(28, 28, 1))
    assert model.output_sizes[-1] == (10,)
    x = np.random.default_rng(1).uniform(-1, 1, (28, 28, 1, 2)).astype(np.float32)
    want = flux_forward(_lenet_oracle(fx.lenet(3)), x)
    assert_close(keras_forward(model, x), want)


def test_batchnorm_and_pool_state_of_flux_016():
    """Flux 0.16 (Functors 0.5) gives a pool's fields too: accepted when they agree."""
    rng = np.random.default_rng(2)
    mu, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    bn = {
        "λ": (),
        "β": beta.astype(np.float32),
        "γ": gamma.astype(np.float32),
        "μ": mu.astype(np.float32),
        "σ²": var.astype(np.float32),
        "ϵ": 1e-5,
        "momentum": 0.1,
        "affine": True,
        "track_stats": True,
        "active": None,
        "chs": 3,
    }
    pool = {"k": (2, 2), "pad": (0, 0, 0, 0), "stride": (2, 2)}
    model = B.load_state(
        B.Chain(B.BatchNorm(3, "relu"), B.MeanPool((2, 2))),
        {"layers": (bn, pool)},
        input_size=(4, 6, 3),
    )
    x = rng.uniform(-1, 1, (4, 6, 3, 2)).astype(np.float32)
    want = flux_forward(
        [("bn", mu, var, gamma, beta, 1e-5, "relu"), ("meanpool", 2, 0)], x.astype(np.float64)
    )
    assert_close(keras_forward(model, x), want)


def _bad(state_edit, match):
    s = lenet_state()
    state_edit(s)
    with pytest.raises(PortingError, match=match) as e:
        B.load_state(lenet_builder(), s)
    return str(e.value)


def test_every_mismatch_is_named():
    def missing(s):
        del s["layers"][0]["bias"]

    msg = _bad(missing, "missing bias")
    assert "state.layers[1]" in msg

    def extra(s):
        s["layers"][5]["outpad"] = (0, 0)

    assert "not in the model outpad" in _bad(extra, "do not match")

    def size(s):
        s["layers"][5]["weight"] = np.zeros((120, 255), np.float32)

    msg = _bad(size, "DimensionMismatch")
    assert "state.layers[6].weight: size (120, 255) in the state, (120, 256) in the model" in msg

    def count(s):
        s["layers"] = s["layers"][:-1]

    assert "7 layers, the model 8" in _bad(count, "layers")

    def stride(s):
        s["layers"][0]["stride"] = (2, 2)

    assert "stride=(2, 2)" in _bad(stride, "in the model")

    def func(s):
        s["layers"] = s["layers"][:7] + ({"weight": np.zeros(3, np.float32)},)

    _bad(func, "expected \\(\\) \\(the function softmax\\)")

    def not_nt(s):
        s["layers"] = ({"a": 1},) + s["layers"][1:]

    _bad(not_nt, "do not match")

    def wrong_type(s):
        s["layers"][6]["bias"] = "zeros"

    _bad(wrong_type, "expected a float array")


def test_builder_refuses_bad_arguments():
    with pytest.raises(PortingError, match="in => out"):
        B.Dense(3)
    with pytest.raises(PortingError, match="groups=4"):
        B.Conv((3, 3), (6, 6), groups=4)
    with pytest.raises(PortingError, match="activation 'mish'"):
        B.Dense((2, 2), "mish")
    with pytest.raises(PortingError, match="expected a layer built by porting.flux.build"):
        B.Chain(B.Dense((2, 2)), 3)
