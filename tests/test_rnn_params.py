"""Knet's packed RNN vector: lengths, offsets and bad input.

The expected offsets come from a transcription, in this test, of the loops in Knet.jl v1.4.10
`rnnparam` (matrix offsets accumulated over (layer, id); biases counted back from the end) and
`getRNNParamsSize`, not from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.rnn import RNNSpec, pack, random_weights, unpack

IDS = {"relu": 2, "tanh": 2, "lstm": 8, "gru": 6}


def knet_params_size(X, H, rt, L, bi, skip):
    coef = IDS[rt] // 2 * (2 if bi else 1)
    winput = 0 if skip else H * X
    n = 0
    for _ in range(L):
        n += coef * (H * H + winput + H + H)
        winput = (2 if bi else 1) * H * H
    return n


def knet_offset(X, H, rt, L, bi, skip, layer, id, par, total):
    """1-based (i1, i2) of rnnparam(r, layer, id, par) as Knet's loops compute them."""
    ids = IDS[rt]
    if par == 1:
        i2 = 0
        length = 0
        for lay in range(1, layer + 1):
            for i in range(1, ids + 1):
                input_layer = lay == 1 or (lay == 2 and bi)
                if input_layer and i <= ids // 2:
                    length = 0 if skip else X * H
                elif lay > 2 and bi and i <= ids // 2:
                    length = 2 * H * H
                else:
                    length = H * H
                i2 += length
                if lay == layer and i == id:
                    return i2 - length + 1, i2
    layers = L * (2 if bi else 1)
    i1 = 1 + total - layers * ids * H + ((id - 1) + ids * (layer - 1)) * H
    return i1, i1 + H - 1


CONFIGS = [
    (X, H, rt, L, bi, skip)
    for rt in ("relu", "lstm", "gru")
    for (X, H) in ((3, 2), (2, 2))
    for L in (1, 3)
    for bi in (False, True)
    for skip in (False, True)
    if not (skip and X != H)
]


@pytest.mark.parametrize("X,H,rt,L,bi,skip", CONFIGS)
def test_offsets_match_knets_loops(X, H, rt, L, bi, skip):
    spec = RNNSpec(X, H, rt, num_layers=L, bidirectional=bi, skip_input=skip)
    n = knet_params_size(X, H, rt, L, bi, skip)
    assert spec.param_length == n
    v = np.arange(1, n + 1, dtype=np.float64)  # entry = its 1-based Julia index
    w = unpack(spec, v.reshape(1, 1, n))
    for layer in range(1, spec.slots + 1):
        for id in range(1, IDS[rt] + 1):
            for par in (1, 2):
                i1, i2 = knet_offset(X, H, rt, L, bi, skip, layer, id, par, n)
                got = w.rnnparam(layer, id, par)
                if i1 > i2:
                    assert got is None and par == 1 and skip
                    continue
                want = v[i1 - 1 : i2]
                if par == 1:  # Knet: reshape(view(w, i1:i2), :, H), column-major
                    want = want.reshape((-1, H), order="F")
                np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pack(w), v)


def test_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(20):
        spec = RNNSpec(
            int(rng.integers(1, 6)),
            int(rng.integers(1, 6)),
            str(rng.choice(["relu", "tanh", "lstm", "gru"])),
            num_layers=int(rng.integers(1, 4)),
            bidirectional=bool(rng.integers(0, 2)),
        )
        v = rng.standard_normal(spec.param_length).astype(np.float32)
        back = pack(unpack(spec, v))
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, v)


def test_lstm_rnnparam_gate_names():
    # LSTM ids 1:4 = W of i, f, n, o; 5:8 = R of the same gates
    spec = RNNSpec(2, 3, "lstm")
    w = random_weights(spec, 0)
    np.testing.assert_array_equal(w.rnnparam(1, 2, 1), w.W[0][1].T)  # forget, input matrix
    np.testing.assert_array_equal(w.rnnparam(1, 8, 1), w.R[0][3].T)  # output, recurrent
    np.testing.assert_array_equal(w.rnnparam(1, 6, 2), w.bR[0][1])  # forget, recurrent bias
    assert w.rnnparam(1, 1, 1).shape == (2, 3)  # transposed: (inputSize, H)


def test_wrong_length_says_expected_and_formula():
    spec = RNNSpec(3, 5, "gru", num_layers=2)
    with pytest.raises(PortingError) as e:
        unpack(spec, np.zeros(329, np.float32))
    msg = str(e.value)
    assert "length 329, expected 330" in msg
    assert "3*(5*3 + 5*5 + 2*5) + 3*(5*5 + 5*5 + 2*5) = 330" in msg


@pytest.mark.parametrize(
    "w, match",
    [
        (np.zeros((2, 165)), "expected a vector"),
        (np.zeros(330, np.int32), "expected Float32 or Float64"),
        (np.array(["a"] * 330), "numeric array"),
        (np.float64(1.0), "expected a vector"),
    ],
)
def test_bad_packed_vectors(w, match):
    with pytest.raises(PortingError, match=match):
        unpack(RNNSpec(3, 5, "gru", num_layers=2), w)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"rnn_type": "lstmx"}, "expected one of :relu, :tanh, :lstm, :gru"),
        ({"rnn_type": 4}, "rnnType=4"),
        ({"num_layers": 0}, "numLayers=0"),
        ({"hidden_size": 2.5}, "hiddenSize=2.5"),
        ({"bidirectional": "yes"}, "bidirectional='yes'"),
        ({"skip_input": True}, "needs inputSize == hiddenSize"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_bad_specs(kw, match):
    base = {"input_size": 3, "hidden_size": 4}
    with pytest.raises(PortingError, match=match):
        RNNSpec(**(base | kw))


def test_from_knet_fields():
    s = RNNSpec.from_knet(
        {
            "inputSize": 4,
            "hiddenSize": 4,
            "mode": 2,
            "numLayers": 2,
            "direction": 1,
            "inputMode": 1,
            "dropout": 0.1,
            "algo": 0,
            "seed": 0,
        }
    )
    assert str(s) == "LSTM(input=4,hidden=4,bidirectional,layers=2,dropout=0.1,skipinput)"
    assert RNNSpec.from_knet(s.to_knet()) == s
    assert (
        RNNSpec.from_knet({"inputSize": 1, "hiddenSize": 2, "rnnType": ":tanh"}).rnn_type == "tanh"
    )
    with pytest.raises(PortingError, match="not a Knet RNN hyperparameter"):
        RNNSpec.from_knet({"inputSize": 4, "hiddenSize": 4, "cells": 3})
    with pytest.raises(PortingError, match="hidden_size is missing"):
        RNNSpec.from_knet({"inputSize": 4})


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 1, 1), "layer=0: expected 1:2"),
        ((3, 1, 1), "layer=3: expected 1:2"),
        ((1, 9, 1), "id=9: expected 1:8"),
        ((1, 1, 3), "par=3: expected 1:2"),
        ((1.0, 1, 1), "layer=1.0: expected an integer"),
    ],
)
def test_rnnparam_index_errors(args, match):
    w = random_weights(RNNSpec(3, 4, "lstm", bidirectional=True), 0)
    with pytest.raises(PortingError, match=match):
        w.rnnparam(*args)


def test_weights_shape_checked():
    from porting.rnn import weights_from_gates

    spec = RNNSpec(3, 4, "gru")
    w = random_weights(spec, 0)
    with pytest.raises(
        PortingError, match=r"W\[0\] \(layer 1\) has shape \(3, 3, 4\), expected \(3, 4, 3\)"
    ):
        weights_from_gates(spec, [w.W[0].transpose(0, 2, 1)], w.R, w.bW, w.bR)


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, porting.rnn, porting.rnn.verify, porting.rnn.diagnosis; "
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'torch', 'juliacall')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_single_blas_thread_is_restored():
    from porting.rnn._blas import SMALL_GEMM, _local_setter, single_thread

    a = np.random.default_rng(0).standard_normal((64, 64))
    want = a @ a
    fn = _local_setter()
    before = fn(0) if fn is not None else None
    if fn is not None:
        fn(before)
    with single_thread(1):
        np.testing.assert_array_equal(a @ a, want)
    with single_thread(SMALL_GEMM):  # large steps: left alone
        pass
    if fn is not None:
        assert fn(before) == before  # the thread's own count is back
