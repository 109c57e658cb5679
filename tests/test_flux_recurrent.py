"""Flux's recurrent layers (the ``Recur``-wrapped cells of Flux 0.11-0.14 and the 0.15+
``RNN``/``LSTM``/``GRU`` layers) read from BSON.jl-encoded files, against a PyTorch float64
oracle written here step by step from Flux's own cell code (Flux v0.14.25 and v0.16.9
``src/layers/recurrent.jl``), not from porting's:

- ``RNNCell``: ``h = σ.(Wi*x .+ Wh*h .+ b)``;
- ``LSTMCell``: ``g = Wi*x + Wh*h + b``, blocks input, forget, cell, output;
  ``c = σ(f) c + σ(i) tanh(cell)``, ``h = σ(o) tanh(c)``;
- ``GRUCell``: blocks r, z, n of ``Wi*x``, ``Wh*h`` and ``b``: ``r = σ(x_r + h_r + b_r)``,
  ``z = σ(x_z + h_z + b_z)``, ``h̃ = tanh(x_n + r .* h_n + b_n)``, ``h = (1 - z) h̃ + z h``;
- the initial state: ``state0`` (0.14, restored by ``Flux.reset!``), zeros from 0.15 on; a
  Dense after (or before) a recurrent layer is applied at every step; softmax over features.

The model layout of a sequence is ``(T, X, B)`` (Flux 0.15's ``(X, T, B)`` permuted).
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_paths import golden_dir

from porting.errors import PortingError
from porting.examples import flux as fx

torch = pytest.importorskip("torch", reason="torch is the independent oracle for Flux layers")
REAL = golden_dir("real-models")


def t64(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float64)))


def flux_cell(kind, wi, wh, b, act=torch.tanh):
    """One step of Flux's cell on (X, B) columns -> a function (state, x) -> (state, y)."""
    Wi, Wh = t64(wi), t64(wh)
    B = t64(b)[:, None] if b is not None else torch.zeros(wi.shape[0], 1, dtype=torch.float64)
    H = wh.shape[1]

    def rnn(h, x):
        h = act(Wi @ x + Wh @ h + B)
        return h, h

    def lstm(state, x):
        h, c = state
        g = Wi @ x + Wh @ h + B
        i, f, n, o = (g[k * H : (k + 1) * H] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(n)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h

    def gru(h, x):
        gx, gh = Wi @ x, Wh @ h
        blk = [slice(k * H, (k + 1) * H) for k in range(3)]
        r = torch.sigmoid(gx[blk[0]] + gh[blk[0]] + B[blk[0]])
        z = torch.sigmoid(gx[blk[1]] + gh[blk[1]] + B[blk[1]])
        ht = torch.tanh(gx[blk[2]] + r * gh[blk[2]] + B[blk[2]])
        h = (1 - z) * ht + z * h
        return h, h

    return {"rnn": rnn, "lstm": lstm, "gru": gru}[kind], H


def run_sequence(steps, x):
    """`steps`: per-step functions (state, x) -> (state, y) or stateless x -> y, applied as
    Flux applies a Chain at every step after reset! (zero states). `x` model layout
    (T, X, B); returns (T, Y, B)."""
    states = [None] * len(steps)
    ys = []
    for t in range(x.shape[0]):
        v = t64(x[t])  # (X, B)
        for k, (f, h) in enumerate(steps):
            if h is None:
                v = f(v)
                continue
            if states[k] is None:
                z = torch.zeros(h, v.shape[1], dtype=torch.float64)
                states[k] = (z, z) if f.__name__ == "lstm" else z
            states[k], v = f(states[k], v)
        ys.append(v.numpy())
    return np.stack(ys)


def dense_step(w, b, act=None):
    W, B = t64(w), t64(b)[:, None]
    return (lambda v: act(W @ v + B) if act else W @ v + B), None


def keras_seq(model, x, dtype=np.float32):
    from porting.model import to_keras

    km = to_keras(model, input_size=tuple(np.shape(x)[:-1]))
    y = np.asarray(km(np.asarray(x, dtype).transpose(2, 0, 1)))  # Keras (B, T, X)
    return y.transpose(1, 2, 0)


def assert_close(got, want, dtype=np.float32, k=1000):
    tol = k * np.finfo(dtype).eps * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= tol, (err, tol)


def w(rng, dtype, *shape):
    return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(dtype)


def save(tmp_path, model):
    return fx.save(tmp_path / "r.bson", {"model": model})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version", ["0.14", "0.15"])
def test_dense_lstm_dense_softmax(tmp_path, version, dtype):
    from porting.flux import load_model

    rng = np.random.default_rng(0)
    X, E, H, V = 5, 4, 6, 3
    wd, bd = w(rng, dtype, E, X), w(rng, dtype, E)
    wi, wh, b = w(rng, dtype, 4 * H, E), w(rng, dtype, 4 * H, H), w(rng, dtype, 4 * H)
    wo, bo = w(rng, dtype, V, H), w(rng, dtype, V)
    cell = fx.lstm_cell(wi, wh, b, version=version)
    rec = fx.recur(cell) if version == "0.14" else fx.recurrent("LSTM", cell)
    m = fx.chain(
        fx.dense(wd, bd, "NNlib.relu"),
        rec,
        fx.dense(wo, bo),
        fx.function("NNlib.softmax"),
    )
    fm = load_model(save(tmp_path, m), input_size=(7, X))
    assert [f.layer.kind for f in fm.layers] == ["timedense", "rnn", "timedense"]
    x = np.random.default_rng(1).uniform(-1, 1, (7, X, 3))
    want = run_sequence(
        [
            dense_step(wd, bd, torch.relu),
            flux_cell("lstm", wi, wh, b),
            dense_step(wo, bo, lambda t: torch.softmax(t, dim=0)),
        ],
        x,
    )
    assert_close(keras_seq(fm.model, x, dtype), want, dtype)


@pytest.mark.parametrize("version", ["0.14", "0.15"])
def test_gru_and_rnn_cells(tmp_path, version):
    from porting.flux import load_model

    rng = np.random.default_rng(2)
    X, H1, H2 = 4, 5, 3
    gi, gh, gb = w(rng, np.float32, 3 * H1, X), w(rng, np.float32, 3 * H1, H1), None
    if version == "0.14":
        gb = w(rng, np.float32, 3 * H1)
    ri, rh, rb = w(rng, np.float32, H2, H1), w(rng, np.float32, H2, H2), w(rng, np.float32, H2)
    gru = fx.gru_cell(gi, gh, gb, version=version)
    rnn = fx.rnn_cell(ri, rh, rb, "NNlib.relu", version=version)
    if version == "0.14":
        layers = [fx.recur(gru), fx.recur(rnn)]
    else:
        layers = [fx.recurrent("GRU", gru), fx.recurrent("RNN", rnn)]
    fm = load_model(save(tmp_path, fx.chain(*layers)), input_size=(6, X))
    x = np.random.default_rng(3).uniform(-1, 1, (6, X, 2))
    want = run_sequence([flux_cell("gru", gi, gh, gb), flux_cell("rnn", ri, rh, rb, torch.relu)], x)
    assert_close(keras_seq(fm.model, x), want)


def _refused(tmp_path, model, match):
    from porting.flux import load_model

    with pytest.raises(PortingError, match=match) as e:
        load_model(save(tmp_path, model), input_size=(4, 3))
    return str(e.value)


def test_recurrent_refusals(tmp_path):
    rng = np.random.default_rng(4)
    wi, wh, b = w(rng, np.float32, 8, 3), w(rng, np.float32, 8, 2), w(rng, np.float32, 8)
    h0 = np.full((2, 1), 0.5, np.float32)
    c0 = np.zeros((2, 1), np.float32)
    msg = _refused(tmp_path, fx.chain(fx.recur(fx.lstm_cell(wi, wh, b, (h0, c0)))), "nonzero")
    assert "model.1" in msg and "h0 max |.| = 0.5" in msg and "nonzero (h0 max |.| = 0.5). " in msg
    assert "A zero state0 converts" in msg
    v3 = fx.struct(
        "Flux.GRUv3Cell",
        fx.array(w(rng, np.float32, 6, 3)),
        fx.array(w(rng, np.float32, 4, 2)),
        fx.array(w(rng, np.float32, 6)),
        fx.array(w(rng, np.float32, 2, 2)),
    )
    assert "reset_after=False" in _refused(tmp_path, fx.chain(fx.recurrent("GRUv3", v3)), "GRUv3")
    cell = fx.lstm_cell(wi, wh, b, version="0.15")
    msg = _refused(tmp_path, fx.chain(fx.recurrent("LSTM", cell, return_state=True)), "return_st")
    assert "model.1" in msg
    sig = fx.rnn_cell(w(rng, np.float32, 2, 3), w(rng, np.float32, 2, 2), None, "NNlib.σ")
    assert "tanh or relu" in _refused(tmp_path, fx.chain(fx.recur(sig)), "σ = sigm")
    m = fx.chain(fx.recurrent("LSTM", cell), fx.function("Flux.flatten"))
    assert "recurrent" in _refused(tmp_path, m, "Flux.flatten")


@pytest.mark.parametrize(
    "name, key, h0, c0",
    [
        ("jinhongchaogmail_jl__model.bson", "model.1", "7.35e-05", "0.00021"),
        ("Flourish38_stronghold-nav__rl_recurrent_d_3111.bson", "rl_model.1", "0.869", "1.08"),
    ],
)
def test_real_lstm_files_refused_exactly(name, key, h0, c0):
    from porting.flux import load_model

    if REAL is None or not (REAL / "real-models" / name).is_file():
        pytest.skip(f"golden real-models/{name} not found")
    with pytest.raises(PortingError) as e:
        load_model(REAL / "real-models" / name)
    msg = str(e.value)
    assert msg.startswith(f"{key}: Flux.Recur(Flux.LSTMCell) starts every sequence")
    assert f"h0 max |.| = {h0}, c0 max |.| = {c0}" in msg
    assert "cannot hold an initial state" in msg and "A zero state0 converts" in msg


def test_lstm_example_matches_oracle(tmp_path):
    from porting.flux import load_model

    p = fx.save_lstm(tmp_path / "l.bson", seed=2)
    fm = load_model(p, input_size=(9, 6))
    doc = fx.lstm_classifier(2)["data"][0]["data"]

    def arr(d):
        return np.frombuffer(d["data"], "<f4").reshape(d["size"], order="F")

    cell = doc[0]["data"][0]["data"]
    d = doc[1]["data"]
    x = np.random.default_rng(5).uniform(-1, 1, (9, 6, 2))
    want = run_sequence(
        [
            flux_cell("lstm", arr(cell[0]), arr(cell[1]), arr(cell[2])),
            dense_step(arr(d[0]), arr(d[1]), lambda t: torch.softmax(t, dim=0)),
        ],
        x,
    )
    assert_close(keras_seq(fm.model, x), want)


def test_embedding_lstm_dense(tmp_path):
    """``Embedding`` is ``weight[:, x]`` with 1-based indices (Flux v0.14.25 ``basic.jl``:
    ``NNlib.gather``), ``(dim, steps, batch)`` on a ``(steps, batch)`` index matrix."""
    from porting.flux import load_model
    from porting.model import to_keras

    rng = np.random.default_rng(6)
    V, E, H, Y = 10, 4, 5, 3
    emb = w(rng, np.float32, E, V)
    wi, wh, b = (
        w(rng, np.float32, 4 * H, E),
        w(rng, np.float32, 4 * H, H),
        w(rng, np.float32, 4 * H),
    )
    wo, bo = w(rng, np.float32, Y, H), w(rng, np.float32, Y)
    m = fx.chain(
        fx.struct("Flux.Embedding", fx.array(emb)),
        fx.recurrent("LSTM", fx.lstm_cell(wi, wh, b, version="0.15")),
        fx.dense(wo, bo, "NNlib.tanh"),
    )
    fm = load_model(save(tmp_path, m), input_size=(8,))
    assert [f.layer.kind for f in fm.layers] == ["embed", "rnn", "timedense"]
    idx = np.random.default_rng(7).integers(1, V + 1, (8, 3))  # Julia's 1-based indices
    idx[0, 0], idx[1, 0] = 1, V  # both ends of the vocabulary
    x = emb[:, idx - 1].transpose(1, 0, 2)  # (T, E, B): weight[:, x], 1-based
    want = run_sequence(
        [flux_cell("lstm", wi, wh, b), dense_step(wo, bo, torch.tanh)], x.astype(np.float64)
    )
    km = to_keras(fm.model, input_size=(8,))
    got = np.asarray(km((idx.T - 1).astype(np.int32))).transpose(1, 2, 0)  # Keras: 0-based
    assert_close(got, want)


def test_embedding_not_first_refused(tmp_path):
    rng = np.random.default_rng(8)
    m = fx.chain(
        fx.function("NNlib.relu"), fx.struct("Flux.Embedding", fx.array(w(rng, np.float32, 3, 5)))
    )
    assert "first" in _refused(tmp_path, m, "model.2: a Flux.Embedding")
