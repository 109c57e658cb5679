"""The NumPy reference of Knet's RNN against PyTorch (float64) and hand-derived values.

PyTorch's nn.RNN/LSTM/GRU use cuDNN's gate order and two biases per gate, as Knet does, so
Knet's per-gate matrices map directly onto `weight_ih_l{k}{_reverse}` etc.; skipInput (no
PyTorch equivalent) is Knet's definition, "x itself enters every gate", written as identity
input matrices.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.rnn import RNNSpec, forward, random_weights

torch = pytest.importorskip("torch", reason="PyTorch is the independent implementation")


def torch_forward(w, x, h0=None, c0=None):
    """Knet-indexed x (X, B, T) -> (y (Y, B, T), h (H, B, S), c) by torch in float64."""
    spec = w.spec
    cls = {"relu": torch.nn.RNN, "tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
    kw = {"nonlinearity": spec.rnn_type} if spec.rnn_type in ("relu", "tanh") else {}
    g, H = spec.gates, spec.hidden_size
    in0 = spec.input_size
    mod = cls[spec.rnn_type](
        in0, H, num_layers=spec.num_layers, bidirectional=spec.bidirectional, bias=True, **kw
    ).double()
    with torch.no_grad():
        for s in range(spec.slots):
            k, d = divmod(s, spec.directions)
            sfx = f"l{k}" + ("_reverse" if d else "")
            Wm = w.W[s]
            if Wm is None:  # skipInput: x enters every gate unchanged
                Wm = np.stack([np.eye(H)] * g)
            getattr(mod, "weight_ih_" + sfx).copy_(
                torch.from_numpy(Wm.reshape(g * H, -1).astype(np.float64))
            )
            getattr(mod, "weight_hh_" + sfx).copy_(
                torch.from_numpy(w.R[s].reshape(g * H, H).astype(np.float64))
            )
            getattr(mod, "bias_ih_" + sfx).copy_(
                torch.from_numpy(w.bW[s].reshape(-1).astype(np.float64))
            )
            getattr(mod, "bias_hh_" + sfx).copy_(
                torch.from_numpy(w.bR[s].reshape(-1).astype(np.float64))
            )
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 1, 0)).astype(np.float64))
        B = x.shape[1]
        z = np.zeros((spec.slots, B, H))
        hh = torch.from_numpy(z if h0 is None else h0.transpose(2, 1, 0).astype(np.float64).copy())
        if spec.rnn_type == "lstm":
            cc = torch.from_numpy(
                z if c0 is None else c0.transpose(2, 1, 0).astype(np.float64).copy()
            )
            y, (hn, cn) = mod(xt, (hh, cc))
            cnp = cn.numpy().transpose(2, 1, 0)
        else:
            y, hn = mod(xt, hh)
            cnp = None
    return y.numpy().transpose(2, 1, 0), hn.numpy().transpose(2, 1, 0), cnp


CASES = [
    (rt, layers, bi, skip)
    for rt in ("relu", "tanh", "lstm", "gru")
    for layers in (1, 2, 3)
    for bi in (False, True)
    for skip in (False, True)
]


@pytest.mark.parametrize("rt,layers,bi,skip", CASES)
def test_reference_matches_torch_float64(rt, layers, bi, skip):
    rng = np.random.default_rng(hash((rt, layers, bi, skip)) % 2**32)
    H = int(rng.integers(1, 9))
    X = H if skip else int(rng.integers(1, 9))
    B, T = int(rng.integers(1, 5)), int(rng.integers(1, 8))
    spec = RNNSpec(X, H, rt, num_layers=layers, bidirectional=bi, skip_input=skip)
    w = random_weights(spec, rng, dtype=np.float64)
    x = rng.standard_normal((X, B, T))
    given = rng.integers(0, 2) == 1
    h0 = rng.standard_normal((H, B, spec.slots)) if given else None
    c0 = rng.standard_normal((H, B, spec.slots)) if given and rt == "lstm" else None
    out = forward(w, x, h0, c0)
    ty, th, tc = torch_forward(w, x, h0, c0)
    assert out.y.shape == (spec.output_size, B, T)
    np.testing.assert_allclose(out.y, ty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.h, th, rtol=1e-12, atol=1e-12)
    if rt == "lstm":
        np.testing.assert_allclose(out.c, tc, rtol=1e-12, atol=1e-12)
    else:
        assert out.c is None


@pytest.mark.parametrize("rt", ["lstm", "gru", "tanh"])
def test_reference_float32_close_to_torch(rt):
    rng = np.random.default_rng(5)
    spec = RNNSpec(6, 5, rt, num_layers=2, bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float32)
    x = rng.standard_normal((6, 3, 20)).astype(np.float32)
    out = forward(w, x)
    assert out.y.dtype == np.float32
    ty, _, _ = torch_forward(w, x)
    np.testing.assert_allclose(out.y, ty, rtol=0, atol=2e-5)


def test_bidirectional_last_step_is_not_final_backward_state():
    rng = np.random.default_rng(1)
    spec = RNNSpec(3, 4, "lstm", bidirectional=True)
    w = random_weights(spec, rng, dtype=np.float64)
    x = rng.standard_normal((3, 2, 6))
    out = forward(w, x, h=0)
    H = 4
    # forward half of the last step is the forward final state ...
    np.testing.assert_array_equal(out.y[:H, :, -1], out.h[:, :, 0])
    # ... the backward final state sits at the FIRST step, not the last
    np.testing.assert_array_equal(out.y[H:, :, 0], out.h[:, :, 1])
    assert np.abs(out.y[H:, :, -1] - out.h[:, :, 1]).max() > 1e-3


def test_one_and_two_dimensional_inputs():
    rng = np.random.default_rng(2)
    spec = RNNSpec(3, 4, "gru", num_layers=2)
    w = random_weights(spec, rng, dtype=np.float64)
    x2 = rng.standard_normal((3, 5))
    y2 = forward(w, x2).y
    assert y2.shape == (4, 5)
    np.testing.assert_array_equal(y2, forward(w, x2[:, :, None]).y[:, :, 0])
    y1 = forward(w, x2[:, 0]).y
    assert y1.shape == (4,)
    np.testing.assert_allclose(y1, y2[:, 0], rtol=1e-14)  # one column: another BLAS path


def test_hand_computed_relu_and_gru_step():
    # relu, X=2, H=1: packed [W(1x2), R, bW, bR]
    from porting.rnn import unpack

    spec = RNNSpec(2, 1, "relu")
    w = unpack(spec, np.float64([1, -2, 0.5, 0.25, 0.25]))
    x = np.zeros((2, 1, 2))
    x[:, 0, 0] = [3, 1]
    x[:, 0, 1] = [1, 1]
    out = forward(w, x, h=0)
    # h1 = relu(3 - 2 + 0 + 0.5) = 1.5 ; h2 = relu(1 - 2 + 0.5*1.5 + 0.5) = 0.25
    assert out.y.ravel().tolist() == [1.5, 0.25]
    # GRU, X=H=1, every matrix 1 and every bias 0 except bRn = 1:
    spec = RNNSpec(1, 1, "gru")
    v = np.zeros(spec.param_length)
    v[:6] = 1.0  # Wr Wz Wn Rr Rz Rn
    v[6 + 5] = 1.0  # biases: bWr bWz bWn bRr bRz bRn
    w = unpack(spec, v)
    h0 = np.full((1, 1, 1), 0.5)
    out = forward(w, np.full((1, 1, 1), 2.0), h=h0)
    r = z = 1 / (1 + np.exp(-2.5))
    n = np.tanh(2.0 + r * (0.5 + 1.0))
    assert out.h.item() == pytest.approx((1 - z) * n + z * 0.5, abs=1e-15)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((3, 2, 2, 2)), "expected \\(X,\\), \\(X, B\\) or \\(X, B, T\\)"),
        (np.zeros((4, 2, 2)), "X = inputSize = 3"),
        (np.zeros((3, 0, 2)), "B, T >= 1"),
        (np.zeros((3, 2, 2), np.float32), "Knet requires one element type"),
        (np.zeros((3, 2, 2), np.int64), "element type int64"),
    ],
)
def test_bad_inputs(x, match):
    w = random_weights(RNNSpec(3, 2, "lstm"), 0, dtype=np.float64)
    with pytest.raises(PortingError, match=match):
        forward(w, x)


def test_bad_states_and_batch_sizes():
    w = random_weights(RNNSpec(3, 2, "lstm", num_layers=2), 0, dtype=np.float64)
    x = np.zeros((3, 4, 2))
    with pytest.raises(PortingError, match=r"expected \(H, B, L or 2L\) = \(2, 4, 2\)"):
        forward(w, x, h=np.zeros((2, 4, 1)))
    with pytest.raises(PortingError, match="initial state c is float32"):
        forward(w, x, c=np.zeros((2, 4, 2), np.float32))
    with pytest.raises(PortingError, match="batchSizes"):
        forward(w, x, batch_sizes=[4, 3])
    with pytest.raises(PortingError, match="expected RNNWeights"):
        forward(np.zeros(10), x)
    # trailing singleton dimensions are optional, as in Knet
    w1 = random_weights(RNNSpec(3, 2, "gru"), 0, dtype=np.float64)
    a = forward(w1, x, h=np.ones((2, 4))).h
    b = forward(w1, x, h=np.ones((2, 4, 1))).h
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rt", ["lstm", "gru"])
def test_saturated_gates_stay_finite(rt):
    import warnings

    rng = np.random.default_rng(9)
    w = random_weights(RNNSpec(3, 4, rt), rng, dtype=np.float32)
    x = (rng.standard_normal((3, 2, 5)) * 1e4).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning leaks out
        out = forward(w, x)
    ty, _, _ = torch_forward(w, x)
    assert np.isfinite(out.y).all()
    np.testing.assert_allclose(out.y, ty, rtol=0, atol=1e-5)
