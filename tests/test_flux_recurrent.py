"""Flux's recurrent layers (the ``Recur``-wrapped cells of Flux 0.11-0.14 and the 0.15+
``RNN``/``LSTM``/``GRU`` layers) read from BSON.jl-encoded files, against a PyTorch float64
oracle written here step by step from Flux's own cell code (Flux v0.14.25 and v0.16.9
``src/layers/recurrent.jl``), not from porting's:

- ``RNNCell``: ``h = σ.(Wi*x .+ Wh*h .+ b)``;
- ``LSTMCell``: ``g = Wi*x + Wh*h + b``, blocks input, forget, cell, output;
  ``c = σ(f) c + σ(i) tanh(cell)``, ``h = σ(o) tanh(c)``;
- ``GRUCell``: blocks r, z, n of ``Wi*x``, ``Wh*h`` and ``b``: ``r = σ(x_r + h_r + b_r)``,
  ``z = σ(x_z + h_z + b_z)``, ``h̃ = tanh(x_n + r .* h_n + b_n)``, ``h = (1 - z) h̃ + z h``;
- ``GRUv3Cell`` (v0.14.25 and v0.16.9): ``r``, ``z`` as GRUCell's from the first two blocks of
  ``Wh*h`` (0.14's ``Wh`` has two blocks, 0.15+'s three, the third unused), then
  ``h̃ = tanh(x_n + Wh_h̃ * (r .* h) + b_n)``: the reset applies BEFORE the matrix;
- the initial state: ``state0`` (0.12-0.14; 0.11's ``Recur.init``), restored by
  ``Flux.reset!``, an ``(H, 1)`` column broadcast over the batch (never the saved ``state``,
  the last batch's); zeros from 0.15 on (``initialstates``); a Dense after (or before) a
  recurrent layer is applied at every step; softmax over features.

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


def flux_cell(kind, wi, wh, b, act=torch.tanh, wh_n=None, state0=None):
    """One step of Flux's cell on (X, B) columns -> (a function (state, x) -> (state, y), H,
    the initial state: `state0` (Flux 0.14's, `(H, 1)` columns broadcast over the batch) or
    None for zeros)."""
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

    def gruv3(h, x):
        gx, gh = Wi @ x, Wh @ h
        blk = [slice(k * H, (k + 1) * H) for k in range(3)]
        r = torch.sigmoid(gx[blk[0]] + gh[blk[0]] + B[blk[0]])
        z = torch.sigmoid(gx[blk[1]] + gh[blk[1]] + B[blk[1]])
        ht = torch.tanh(gx[blk[2]] + t64(wh_n) @ (r * h) + B[blk[2]])
        h = (1 - z) * ht + z * h
        return h, h

    f = {"rnn": rnn, "lstm": lstm, "gru": gru, "gruv3": gruv3}[kind]
    if state0 is None:
        return f, H
    init = tuple(t64(np.reshape(s, (H, 1))) for s in state0)
    return f, H, init if kind == "lstm" else init[0]


def run_sequence(steps, x):
    """`steps`: per-step functions (state, x) -> (state, y) or stateless x -> y, applied as
    Flux applies a Chain at every step after reset!: from each cell's initial state (a third
    item; zeros without it), its `(H, 1)` columns broadcast over the batch as Julia's `.+`
    does. `x` model layout (T, X, B); returns (T, Y, B)."""
    states = [None] * len(steps)
    ys = []
    for t in range(x.shape[0]):
        v = t64(x[t])  # (X, B)
        for k, (f, h, *init) in enumerate(steps):
            if h is None:
                v = f(v)
                continue
            if states[k] is None:
                z = torch.zeros(h, v.shape[1], dtype=torch.float64)
                states[k] = (z, z) if f.__name__ == "lstm" else z
                if init:
                    zs = states[k] if isinstance(states[k], tuple) else (states[k],)
                    got = init[0] if isinstance(init[0], tuple) else (init[0],)
                    full = tuple(a + s for a, s in zip(zs, got, strict=True))  # broadcast
                    states[k] = full if f.__name__ == "lstm" else full[0]
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
    cell = fx.lstm_cell(wi, wh, b, version="0.15")
    msg = _refused(tmp_path, fx.chain(fx.recurrent("LSTM", cell, return_state=True)), "return_st")
    assert "model.1" in msg
    sig = fx.rnn_cell(w(rng, np.float32, 2, 3), w(rng, np.float32, 2, 2), None, "NNlib.σ")
    assert "tanh or relu" in _refused(tmp_path, fx.chain(fx.recur(sig)), "σ = sigm")
    m = fx.chain(fx.recurrent("LSTM", cell), fx.function("Flux.flatten"))
    assert "recurrent" in _refused(tmp_path, m, "Flux.flatten")


def _state0(rng, dtype, h, scale=0.8):
    return rng.uniform(-scale, scale, (h, 1)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "gruv3"])
def test_trained_state0_is_where_every_sequence_starts(tmp_path, kind, dtype):
    """Flux 0.14 ``Recur(cell, state)``: the model starts from ``state0`` (what ``reset!``
    restores), not from the saved ``state`` (here deliberately different)."""
    from porting.flux import load_model

    rng = np.random.default_rng(10)
    X, H = 4, 5
    g = {"lstm": 4, "gru": 3, "rnn": 1, "gruv3": 3}[kind]
    wi, b = w(rng, dtype, g * H, X), w(rng, dtype, g * H)
    wh = w(rng, dtype, (2 if kind == "gruv3" else g) * H, H)
    h0, c0 = _state0(rng, dtype, H), _state0(rng, dtype, H)
    last = fx.array(rng.uniform(-1, 1, (H, 3)).astype(dtype))  # the last batch's state
    wh_n = w(rng, dtype, H, H) if kind == "gruv3" else None
    if kind == "lstm":
        cell = fx.lstm_cell(wi, wh, b, (h0, c0))
        state = fx.tuple_(last, last)
    elif kind == "gru":
        cell = fx.gru_cell(wi, wh, b, h0)
        state = last
    elif kind == "rnn":
        cell = fx.rnn_cell(wi, wh, b, "Base.tanh", h0)
        state = last
    else:
        cell = fx.gruv3_cell(wi, wh, b, wh_n, h0)
        state = last
    fm = load_model(save(tmp_path, fx.chain(fx.recur(cell, state))), input_size=(6, X))
    assert "from its trained state0" in fm.report()
    x = np.random.default_rng(11).uniform(-1.5, 1.5, (6, X, 3))
    s0 = (h0, c0) if kind == "lstm" else (h0,)
    want = run_sequence([flux_cell(kind, wi, wh, b, wh_n=wh_n, state0=s0)], x)
    zero = run_sequence([flux_cell(kind, wi, wh, b, wh_n=wh_n)], x)
    assert np.abs(want - zero).max() > 1e-2  # the initial state shows in the outputs
    assert_close(keras_seq(fm.model, x, dtype), want, dtype)
    from porting.model import forward_knet

    assert_close(forward_knet(fm.model, x.astype(dtype)).outputs[-1], want, dtype)


def test_flux_011_recur_init_is_the_initial_state(tmp_path):
    """Flux 0.11 ``Recur(cell, init, state)``, ``LSTMCell(Wi, Wh, b, h, c)`` with vectors:
    ``reset!`` sets ``state = init``."""
    from porting.flux import load_model

    rng = np.random.default_rng(12)
    X, H = 3, 4
    wi, wh, b = (
        w(rng, np.float32, 4 * H, X),
        w(rng, np.float32, 4 * H, H),
        w(rng, np.float32, 4 * H),
    )
    h0, c0 = _state0(rng, np.float32, H)[:, 0], _state0(rng, np.float32, H)[:, 0]
    cell = fx.struct("Flux.LSTMCell", *(fx.array(a) for a in (wi, wh, b, h0, c0)))
    other = fx.tuple_(fx.array(h0 * 0 + 1), fx.array(c0 * 0 - 1))
    m = fx.chain(fx.struct("Flux.Recur", cell, fx.tuple_(fx.array(h0), fx.array(c0)), other))
    fm = load_model(save(tmp_path, m), input_size=(5, X))
    x = np.random.default_rng(13).uniform(-1, 1, (5, X, 2))
    want = run_sequence([flux_cell("lstm", wi, wh, b, state0=(h0, c0))], x)
    assert_close(keras_seq(fm.model, x), want)


def test_initial_state_keras_is_exact_for_infinite_and_nan_inputs(tmp_path):
    """The Keras initial state (`tanh` of the first step, a zero-kernel `Dense` whose bias is
    the state) is the state itself for ±Inf inputs, and NaN only where Flux's outputs are NaN
    at every step anyway (a NaN in the first step reaches every gate through `Wi * x`)."""
    from porting.flux import load_model

    rng = np.random.default_rng(14)
    X, H = 3, 4
    wi, wh, b = (
        w(rng, np.float64, 4 * H, X),
        w(rng, np.float64, 4 * H, H),
        w(rng, np.float64, 4 * H),
    )
    h0, c0 = _state0(rng, np.float64, H), _state0(rng, np.float64, H)
    m = fx.chain(fx.recur(fx.lstm_cell(wi, wh, b, (h0, c0))))
    fm = load_model(save(tmp_path, m), input_size=(4, X))
    x = np.random.default_rng(15).uniform(-1, 1, (4, X, 3))
    x[0, 0, 0], x[0, 1, 1] = np.inf, -np.inf  # first step, samples 0 and 1
    x[0, :, 2] = [np.nan, 0.5, 0.5]  # sample 2: NaN in the first step
    want = run_sequence([flux_cell("lstm", wi, wh, b, state0=(h0, c0))], x)
    got = keras_seq(fm.model, x, np.float64)
    assert np.isfinite(want[:, :, :2]).all() and np.isnan(want[:, :, 2]).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version", ["0.14", "0.15"])
def test_gruv3_resets_before_the_matrix(tmp_path, version, dtype):
    """``GRUv3`` in both designs; the 0.15+ ``Wh`` has a third block that Flux never reads
    (filled with large values here: it must change nothing)."""
    from porting.flux import load_model

    rng = np.random.default_rng(16)
    X, H, V = 4, 5, 3
    wi, b = w(rng, dtype, 3 * H, X), w(rng, dtype, 3 * H)
    wh, wh_n = w(rng, dtype, 2 * H, H), w(rng, dtype, H, H)
    wo, bo = w(rng, dtype, V, H), w(rng, dtype, V)
    if version == "0.14":
        rec = fx.recur(fx.gruv3_cell(wi, wh, b, wh_n))
    else:
        unused = np.full((H, H), 50, dtype)
        rec = fx.recurrent(
            "GRUv3", fx.gruv3_cell(wi, np.vstack([wh, unused]), b, wh_n, version="0.15")
        )
    fm = load_model(save(tmp_path, fx.chain(rec, fx.dense(wo, bo))), input_size=(7, X))
    assert fm.model.layers[0].spec.reset_after is False
    x = np.random.default_rng(17).uniform(-1.5, 1.5, (7, X, 2))
    want = run_sequence([flux_cell("gruv3", wi, wh, b, wh_n=wh_n), dense_step(wo, bo)], x)
    # the reset-after GRU (Flux's GRUCell) on the same weights is a different function
    gru = run_sequence([flux_cell("gru", wi, np.vstack([wh, wh_n]), b), dense_step(wo, bo)], x)
    assert np.abs(want - gru).max() > 1e-2
    got = keras_seq(fm.model, x, dtype)
    assert_close(got, want, dtype)
    from porting.model import forward_knet, to_keras

    assert_close(forward_knet(fm.model, x.astype(dtype)).outputs[-1], want, dtype)
    km = to_keras(fm.model, input_size=(7, X))
    grus = [la for la in km.layers if type(la).__name__ == "GRU"]
    assert len(grus) == 1 and grus[0].reset_after is False


@pytest.mark.parametrize(
    "cell, match",
    [
        (
            lambda r, d: fx.gruv3_cell(w(r, d, 6, 3), w(r, d, 4, 2), w(r, d, 6), w(r, d, 3, 3)),
            "Wh_h̃",
        ),
        (lambda r, d: fx.gruv3_cell(w(r, d, 6, 3), w(r, d, 5, 2), w(r, d, 6), w(r, d, 2, 2)), "Wh"),
        (
            lambda r, d: fx.gruv3_cell(w(r, d, 6, 3), w(r, d, 4, 2), w(r, d, 5), w(r, d, 2, 2)),
            "bias",
        ),
        (lambda r, d: fx.gruv3_cell(w(r, d, 7, 3), w(r, d, 4, 2), w(r, d, 6), w(r, d, 2, 2)), "Wi"),
        (
            lambda r, d: fx.gruv3_cell(
                w(r, d, 6, 3), w(r, d, 4, 2), w(r, d, 6), w(r, d, 2, 2), np.ones((3, 1), d)
            ),
            "state0",
        ),
        (
            lambda r, d: fx.lstm_cell(
                w(r, d, 8, 3), w(r, d, 8, 2), w(r, d, 8), (np.ones((2, 1), d), np.ones((2, 2), d))
            ),
            "state0",
        ),
        (
            lambda r, d: fx.gru_cell(
                w(r, d, 6, 3), w(r, d, 6, 2), w(r, d, 6), np.array([[np.nan], [0]], d)
            ),
            "non-finite",
        ),
    ],
)
def test_hostile_recurrent_cells_exit_2_and_write_nothing(tmp_path, cell, match):
    from tests.test_flux import _cli

    p = save(tmp_path, fx.chain(fx.recur(cell(np.random.default_rng(18), np.float32))))
    _refused(tmp_path, fx.chain(fx.recur(cell(np.random.default_rng(18), np.float32))), match)
    out = tmp_path / "x.keras"
    r = _cli("convert", p, "--input-size", "4,3", "-o", out, cwd=tmp_path)
    assert r.returncode == 2 and not out.exists(), r.stderr
    assert "Traceback" not in r.stderr and match in r.stderr


# --------------------------------------------------------------------------- golden files


def _golden_tree(path):
    """The file decoded here independently of porting: pymongo's BSON, BSON.jl's backrefs
    resolved, arrays (``{tag: array}``, column-major) as NumPy arrays."""
    import bson

    doc = bson.decode(path.read_bytes())
    refs = doc.get("_backrefs", [])

    def walk(v):
        if isinstance(v, dict):
            if v.get("tag") == "backref":
                return walk(refs[v["ref"] - 1])
            if v.get("tag") == "array" and isinstance(v.get("data"), bytes):
                return np.frombuffer(v["data"], "<f4").reshape(v["size"], order="F")
            return {k: walk(x) for k, x in v.items() if k != "type"}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return {k: walk(v) for k, v in doc.items() if k != "_backrefs"}


def _golden_steps(name):
    """The Flux layers of a golden LSTM file as oracle steps, each LSTM from ``state0``
    (Flux 0.14's cell field; 0.11's ``Recur.init``), and the last batch's saved states."""
    tree = _golden_tree(REAL / "real-models" / name)
    model = tree["model" if "model" in tree else "rl_model"]
    steps, saved = [], []
    for layer in model["data"][0]["data"]:
        d = layer["data"]
        if not (isinstance(d[0], dict) and len(d[0].get("data") or ()) >= 3):  # Flux.Dense
            arrs = [a for a in d if isinstance(a, np.ndarray)]
            steps.append(dense_step(arrs[0], arrs[1]))
            continue
        cell = d[0]["data"]
        wi, wh, b = cell[0], cell[1], cell[2]
        if len(d) == 3:  # Flux 0.11: Recur(cell, init, state)
            h0, c0 = d[1]["data"]
        else:
            h0, c0 = cell[3]["data"]
        steps.append(flux_cell("lstm", wi, wh, b, state0=(h0, c0)))
        saved.append(d[-1]["data"])
    return steps, saved


@pytest.mark.parametrize(
    "name, X",
    [
        ("jinhongchaogmail_jl__model.bson", 8),
        ("Flourish38_stronghold-nav__rl_recurrent_d_3111.bson", 115),
    ],
)
def test_real_lstm_files_convert_from_state0(tmp_path, name, X):
    """The two golden Flux LSTM files against PyTorch float64 on their own weights, every LSTM
    starting from its trained ``state0``; the CLI converts and verifies them (exit 0)."""
    from porting.flux import load_model
    from tests.test_flux import _cli

    if REAL is None or not (REAL / "real-models" / name).is_file():
        pytest.skip(f"golden real-models/{name} not found")
    path = REAL / "real-models" / name
    steps, saved = _golden_steps(name)
    fm = load_model(path)
    assert fm.model.input_size[1] == X and "sequence length" in fm.report()
    x = np.random.default_rng(19).uniform(-1, 1, (10, X, 3))
    want = run_sequence(steps, x)
    # from zero (or the saved, last batch's, states) the answer differs: the test can fail
    assert all(np.abs(s).max() > 0.1 for pair in saved for s in pair)
    zero = run_sequence([s[:2] for s in steps], x)
    assert np.abs(zero - want).max() > 50 * 1000 * np.finfo(np.float32).eps * np.abs(want).max()
    fm10 = load_model(path, input_size=(10, X))
    got = keras_seq(fm10.model, x)
    assert_close(got, want)
    from porting.model import forward_knet

    assert_close(forward_knet(fm10.model, x.astype(np.float32)).outputs[-1], want)
    out = tmp_path / "out.keras"
    r = _cli("convert", path, "-o", out, "--verify", cwd=tmp_path)
    assert r.returncode == 0 and out.is_file(), r.stdout + r.stderr
    assert "16 steps" in r.stdout


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


# --------------------------------------------------------------------------- Flux.state


def _cell_state(kind, version, rng, dtype, X, H):
    """`Flux.state` of one recurrent layer (NamedTuples as dicts, functions as ()) and the
    oracle step: Flux 0.14 ``(cell = (...), state = ...)``, 0.15 on ``(cell = (...),)``."""
    g = {"LSTM": 4, "GRU": 3, "GRUv3": 3, "RNN": 1}[kind]
    wi, b = w(rng, dtype, g * H, X), w(rng, dtype, g * H)
    wh = w(rng, dtype, (2 if kind == "GRUv3" else g) * H, H)
    wh_n = w(rng, dtype, H, H) if kind == "GRUv3" else None
    h0, c0 = _state0(rng, dtype, H), _state0(rng, dtype, H)
    old = version == "0.14"
    cell = {"Wi": wi, "Wh": wh}
    if kind == "GRUv3" and not old:  # 0.15+: a third block, never read
        cell["Wh"] = np.vstack([wh, np.full((H, H), 9, dtype)])
    cell["b" if (old or kind in ("GRU", "GRUv3")) else "bias"] = b
    if kind == "GRUv3":
        cell["Wh_h̃"] = wh_n
    if kind == "RNN":
        cell = {"σ": (), **cell}
    if old:
        cell["state0"] = (h0, c0) if kind == "LSTM" else h0
    s0 = ((h0, c0) if kind == "LSTM" else (h0,)) if old else None
    oracle = {"LSTM": "lstm", "GRU": "gru", "GRUv3": "gruv3", "RNN": "rnn"}[kind]
    act = torch.relu if kind == "RNN" else torch.tanh
    step = flux_cell(oracle, wi, wh, b, act, wh_n=wh_n, state0=s0)
    node = {"cell": cell, "state": (np.ones((H, 2), dtype),) * 2} if old else {"cell": cell}
    return node, step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version", ["0.14", "0.15"])
def test_flux_state_recurrent_layers(version, dtype):
    from porting.flux import build as B
    from porting.model import forward_knet

    rng = np.random.default_rng(20)
    X, H = 4, 3
    layers = [("LSTM", X, H), ("GRUv3", H, H), ("GRU", H, H), ("RNN", H, H)]
    nodes, steps, built = [], [], []
    for kind, i, o in layers:
        node, step = _cell_state(kind, version, rng, dtype, i, o)
        nodes.append(node)
        steps.append(step)
        extra = ("relu",) if kind == "RNN" else ()
        built.append(getattr(B, kind)((i, o), *extra, version=version))
    model = B.load_state(B.Chain(*built), {"layers": tuple(nodes)}, input_size=(6, X))
    assert [la.kind for la in model.layers] == ["rnn"] * 4
    x = np.random.default_rng(21).uniform(-1, 1, (6, X, 2))
    want = run_sequence(steps, x)
    assert_close(keras_seq(model, x, dtype), want, dtype)
    assert_close(forward_knet(model, x.astype(dtype)).outputs[-1], want, dtype)


def test_flux_state_recurrent_mismatches_are_named():
    from porting.flux import build as B

    rng = np.random.default_rng(22)
    node, _ = _cell_state("GRUv3", "0.14", rng, np.float32, 4, 3)
    bad = {**node, "cell": {**node["cell"], "Wh_h̃": np.zeros((3, 4), np.float32)}}
    with pytest.raises(PortingError, match=r"layers\[1\]\.cell\.Wh_h̃: size \(3, 4\)"):
        B.load_state(B.Chain(B.GRUv3((4, 3), version="0.14")), {"layers": (bad,)})
    with pytest.raises(PortingError, match="not in the model state0"):  # 0.14 state, 0.15 model
        B.load_state(B.Chain(B.GRUv3((4, 3))), {"layers": ({"cell": node["cell"]},)})
    node, _ = _cell_state("LSTM", "0.14", rng, np.float32, 4, 3)
    bad = {**node, "cell": {**node["cell"], "state0": node["cell"]["state0"][0]}}
    with pytest.raises(PortingError, match=r"state0: ndarray; expected \(h0, c0\)"):
        B.load_state(B.Chain(B.LSTM((4, 3), version="0.14")), {"layers": (bad,)})
    with pytest.raises(PortingError, match="version='0.13'"):
        B.LSTM((4, 3), version="0.13")


def test_a_port_that_ignores_state0_is_named(tmp_path):
    """The naive port of a Flux 0.14 LSTM: Keras's LSTM from zero states. Verification
    against the file's model fails at the first step and names the cause."""
    from porting.flux import load_model
    from porting.model import to_keras, verify_model

    rng = np.random.default_rng(23)
    X, H = 3, 4
    wi, wh, b = (
        w(rng, np.float32, 4 * H, X),
        w(rng, np.float32, 4 * H, H),
        w(rng, np.float32, 4 * H),
    )
    h0, c0 = _state0(rng, np.float32, H), _state0(rng, np.float32, H)
    with_state = fx.chain(fx.recur(fx.lstm_cell(wi, wh, b, (h0, c0))))
    without = fx.chain(fx.recur(fx.lstm_cell(wi, wh, b)))
    fm = load_model(save(tmp_path, with_state), input_size=(6, X))
    fx.save(tmp_path / "z.bson", {"model": without})
    naive = to_keras(load_model(tmp_path / "z.bson", input_size=(6, X)).model)
    x = np.random.default_rng(24).uniform(-1, 1, (6, X, 2)).astype(np.float32)
    assert verify_model(fm.model, x).ok
    bad = verify_model(fm.model, x, keras_model=naive, diagnose=False)
    assert not bad.ok
    assert any("RNN diagnosis: initial_state_zero" in n for n in bad.notes), bad.notes
