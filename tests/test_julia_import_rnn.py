"""The sequence layers (`embed`, `rnn`, `timedense`) in the Julia readers: julia/src/import.jl
(`import_model`, Knet's `RNN` given the packed `r.w`) and julia/ext/PortingKnetFluxExt.jl
(`flux_model`, Flux 0.15+ recurrent layers and `Embedding`).

No Julia runs here. The Julia files are parsed with tree-sitter; their layout constants must be
those of porting.rnn.julia, whose functions (the rules the Julia code applies, step for step)
are checked on known arrays against porting's own packing (porting.rnn.params.unpack), the
model kinds' forward passes, and Flux's cell arithmetic written here from Flux's source
(FluxML/Flux.jl@v0.16.9 src/layers/recurrent.jl: RNNCell 193-198, LSTMCell 411-418,
GRUCell 614-628; `scan` 1-8 steps along dimension 2) in float64, against Knet's RNN
(porting.rnn.reference, from Knet.jl v1.4.10 src/ops20/rnn.jl).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from porting.errors import PortingError
from porting.model.kinds.embed import EmbedStage, knet_sequence, model_sequence
from porting.model.kinds.rnn import RNNStage, TimeDenseStage
from porting.rnn import julia as jr
from porting.rnn.params import random_weights, unpack
from porting.rnn.spec import RNNSpec

tree_sitter = pytest.importorskip("tree_sitter")
tree_sitter_julia = pytest.importorskip("tree_sitter_julia")

JULIA = Path(__file__).resolve().parents[1] / "julia"
IMPORT = (JULIA / "src" / "import.jl").read_bytes()
FLUX = (JULIA / "ext" / "PortingKnetFluxExt.jl").read_bytes()


def _tree(source: bytes):
    language = tree_sitter.Language(tree_sitter_julia.language())
    try:
        parser = tree_sitter.Parser(language)
    except TypeError:  # older bindings
        parser = tree_sitter.Parser()
        parser.set_language(language)
    return parser.parse(source)


def _nodes(node, kind: str):
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == kind:
            yield n
        stack.extend(reversed(n.children))


def _constants(source: bytes) -> dict:
    """`const NAME = literal` at any level: tuples of numbers or strings and `Dict(k => v)`."""
    out = {}
    for stmt in _nodes(_tree(source).root_node, "const_statement"):
        text = stmt.text.decode()
        m = re.match(r"const\s+([A-Z_]+)\s*=\s*(.*)", text, re.S)
        if not m:
            continue
        name, value = m.group(1), m.group(2).strip()
        if value.startswith("Dict("):
            value = "{" + value[len("Dict(") : -1].replace("=>", ":") + "}"
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue
    return out


def _function(source: bytes, name: str) -> str:
    for fn in _nodes(_tree(source).root_node, "function_definition"):
        text = fn.text.decode()
        if re.match(rf"function\s+{re.escape(name)}\(", text):
            return text
    raise AssertionError(f"no function {name} in the Julia file")


def test_the_julia_files_parse_and_define_the_sequence_layers():
    for source in (IMPORT, FLUX):
        assert not _tree(source).root_node.has_error
    layer_fn = _function(IMPORT, "_layer_fn")
    for kind in ("embed", "rnn", "timedense"):
        assert f'kind == "{kind}"' in layer_fn
        assert f'kind == "{kind}"' in _function(FLUX, "_flux_layers")
    # Knet's RNN constructed and given the packed weights whole (nothing cut on that side)
    knet = _function(IMPORT, "_knet_rnn")
    assert "K.RNN(" in knet and "r.w = K.Param(reshape(" in knet
    # the Flux side cuts r.w with _rnn_slices and builds Flux 0.15+ layers
    assert "_rnn_slices(w, spec)" in _function(FLUX, "_flux_rnn")
    recurrent = _function(FLUX, "_flux_recurrent")
    for ctor in ("Flux.LSTMCell(W, R, bW .+ bR)", "Flux.RNNCell(", "Flux.GRUCell(W, R, vcat("):
        assert ctor in recurrent


def test_the_layout_constants_are_porting_rnn_julia_s():
    for source in (IMPORT,):
        c = _constants(source)
        assert c["SEQ_TO_KNET"] == jr.SEQ_TO_KNET
        assert c["KNET_TO_SEQ"] == jr.KNET_TO_SEQ
        assert c["SEQ_TO_FLUX"] == jr.SEQ_TO_FLUX
        assert c["EMBED_TO_SEQ"] == jr.EMBED_TO_SEQ
        assert c["RNN_GATES"] == jr.RNN_GATES
    # the extension takes them from PortingKnet, not its own copies
    imported = FLUX.split(b"import PortingKnet:", 1)[1].split(b"\n\n", 1)[0]
    for name in (b"_rnn_spec", b"_rnn_output", b"SEQ_TO_FLUX", b"EMBED_TO_SEQ", b"RNN_GATES"):
        assert name in imported
    assert not set(_constants(FLUX)) & {"SEQ_TO_KNET", "SEQ_TO_FLUX", "RNN_GATES"}


def test_the_permutations_are_the_model_layouts():
    a = np.arange(2 * 3 * 4.0).reshape(2, 3, 4)  # (T, X, B)
    np.testing.assert_array_equal(jr.permute(a, jr.SEQ_TO_KNET), knet_sequence(a))
    k = knet_sequence(a)
    np.testing.assert_array_equal(jr.permute(k, jr.KNET_TO_SEQ), model_sequence(k))
    np.testing.assert_array_equal(jr.permute(jr.permute(a, jr.SEQ_TO_KNET), jr.KNET_TO_SEQ), a)
    # Flux's (X, T, B): element [x, t, b] is the model's [t, x, b]; its own inverse
    f = jr.permute(a, jr.SEQ_TO_FLUX)
    assert f.shape == (3, 2, 4) and f[2, 1, 3] == a[1, 2, 3]
    np.testing.assert_array_equal(jr.permute(f, jr.SEQ_TO_FLUX), a)


def test_embed_is_the_kind_s_gather():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 9))
    x = rng.integers(1, 10, (5, 3))  # (T, B), 1-based
    want = EmbedStage(w=w).forward(x, "reference", [])
    np.testing.assert_array_equal(jr.embed(w, x), want)
    # by hand: step t, sample b is column x[t, b] of w (1-based)
    assert np.array_equal(jr.embed(w, x)[2, :, 1], w[:, x[2, 1] - 1])
    # a (B,) vector: one step
    np.testing.assert_array_equal(jr.embed(w, x[0]), jr.embed(w, x[:1]))


def _softmax1(z):
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_timedense_on_both_sides_is_the_kind_s(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    x = rng.standard_normal((5, 4, 2)).astype(dtype)  # (T, H, B)
    want = TimeDenseStage(w=w, b=b).forward(x, "reference", [])
    eps = np.finfo(dtype).eps
    for rule in (jr.timedense, jr.flux_timedense):
        np.testing.assert_allclose(rule(w, b, x), want, rtol=0, atol=8 * eps * 10)
    # by hand: step t of sample b is w * x[t, :, b] + b
    np.testing.assert_allclose(jr.timedense(w, b, x)[4, :, 1], w @ x[4, :, 1] + b, rtol=1e-6)
    # softmax over the features (dims=1 in Knet's and Flux's layouts): each step sums to 1
    y = jr.timedense(w, b, x, _softmax1)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=0, atol=16 * eps)


SPECS = [
    RNNSpec(3, 4, "relu"),
    RNNSpec(3, 4, "tanh", num_layers=2),
    RNNSpec(3, 5, "lstm"),
    RNNSpec(3, 2, "lstm", num_layers=2, bidirectional=True),
    RNNSpec(4, 3, "gru", bidirectional=True),
    RNNSpec(4, 4, "gru", skip_input=True),
    RNNSpec(2, 3, "tanh", num_layers=3, bidirectional=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_knet_slices_cut_the_packed_vector_as_porting_packs_it(spec):
    """On a known vector (w[i] = i), each slot's gate matrices and biases are the blocks
    porting.rnn.params.unpack reads (Knet's rnnparam layout, docs/knet.md#rnn-packing)."""
    w = np.arange(1.0, spec.param_length + 1)
    u = unpack(spec, w)
    slices = jr.knet_slices(spec, w)
    assert len(slices) == spec.slots
    g, h = spec.gates, spec.hidden_size
    for s, (big_w, big_r, b_w, b_r) in enumerate(slices):
        if u.W[s] is None:
            assert big_w is None
        else:
            np.testing.assert_array_equal(big_w, u.W[s].reshape(g * h, -1))
        np.testing.assert_array_equal(big_r, u.R[s].reshape(g * h, h))
        np.testing.assert_array_equal(b_w, u.bW[s].reshape(-1))
        np.testing.assert_array_equal(b_r, u.bR[s].reshape(-1))
        # Knet's rnnparam(r, slot, id, 1) is the matrix transposed: gate k's block of rows
        for k in range(g):
            mat = u.rnnparam(s + 1, g + k + 1, 1)
            np.testing.assert_array_equal(big_r[k * h : (k + 1) * h], mat.T)
    # every value read exactly once
    seen = np.concatenate(
        [a.reshape(-1) for sl in slices for a in sl if a is not None]  # type: ignore[union-attr]
    )
    assert sorted(seen.tolist()) == w.tolist()
    with pytest.raises(PortingError, match="reads"):
        jr.knet_slices(spec, np.arange(spec.param_length + 1.0))


# --- Flux's cells, from FluxML/Flux.jl@v0.16.9 src/layers/recurrent.jl, in float64 ----------


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _flux_layer(rnn_type, wi, wh, bias):
    """Flux's RNN/LSTM/GRU on (in, T, B): `scan` over dimension 2 from zero states."""

    def run(x):
        n_out = wh.shape[1]
        h = np.zeros((n_out, x.shape[2]))
        c = np.zeros_like(h)
        ys = []
        for t in range(x.shape[1]):
            xt = x[:, t, :]
            if rnn_type in ("relu", "tanh"):  # RNNCell: σ.(Wi x .+ Wh h .+ bias)
                pre = wi @ xt + wh @ h + bias[:, None]
                h = np.maximum(pre, 0) if rnn_type == "relu" else np.tanh(pre)
            elif rnn_type == "lstm":  # LSTMCell: g = Wi x .+ Wh h .+ b; input, forget, cell, output
                g = wi @ xt + wh @ h + bias[:, None]
                i, f, cc, o = np.split(g, 4, axis=0)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cc)
                h = _sigmoid(o) * np.tanh(c)
            else:  # GRUCell: chunks of Wi x, Wh h and b; h̃ = tanh(gx3 + r * gh3 + b3)
                gx, gh, bs = (np.split(a, 3, axis=0) for a in (wi @ xt, wh @ h, bias[:, None]))
                r = _sigmoid(gx[0] + gh[0] + bs[0])
                z = _sigmoid(gx[1] + gh[1] + bs[1])
                hh = np.tanh(gx[2] + r * gh[2] + bs[2])
                h = (1 - z) * hh + z * h
            ys.append(h)
        return np.stack(ys, axis=1)

    return run


def _flux_model(spec, w):
    cells = [_flux_layer(spec.rnn_type, *jr.flux_cell(spec, sl)) for sl in jr.knet_slices(spec, w)]
    if spec.bidirectional:
        return [(cells[i], cells[i + 1]) for i in range(0, len(cells), 2)]
    return cells


FLUX_SPECS = [s for s in SPECS if not s.skip_input]


@pytest.mark.parametrize("output", ["sequence", "last"])
@pytest.mark.parametrize("spec", FLUX_SPECS, ids=str)
def test_flux_layers_compute_what_knet_s_rnn_computes(spec, output):
    rng = np.random.default_rng(3)
    weights = random_weights(spec, rng, dtype=np.float64, scale=0.5)
    if spec.rnn_type == "gru":  # Flux's GRUCell has no recurrent bias of the new gate
        h = spec.hidden_size
        weights = type(weights)(
            spec,
            weights.W,
            weights.R,
            weights.bW,
            tuple(np.concatenate([b[:2], np.zeros((1, h))]) for b in weights.bR),
        )
    from porting.rnn.params import pack

    w = pack(weights)
    x = rng.standard_normal((6, spec.input_size, 2))  # (T, X, B)
    knet = RNNStage(weights=weights, output=output, seen={}).forward(x, "reference", [])
    flux = jr.flux_sequence(_flux_model(spec, w), x, output)
    assert flux.shape == knet.shape
    # the same sums, the biases added in another order: float64 rounding at most
    np.testing.assert_allclose(flux, knet, rtol=0, atol=1e-12)


def test_what_flux_cannot_hold_is_refused():
    spec = RNNSpec(3, 2, "gru")
    w = np.arange(1.0, spec.param_length + 1)
    with pytest.raises(PortingError, match="recurrent bias of the new gate is nonzero"):
        jr.flux_cell(spec, jr.knet_slices(spec, w)[0])
    skip = RNNSpec(4, 4, "lstm", skip_input=True)
    ws = np.arange(1.0, skip.param_length + 1)
    with pytest.raises(PortingError, match="skipInput"):
        jr.flux_cell(skip, jr.knet_slices(skip, ws)[0])
    # the Julia extension refuses the same two, with the same reasons
    rec = _function(FLUX, "_flux_recurrent")
    assert "skipInput (no input matrix) has no Flux counterpart" in rec
    assert "any(!iszero, bR[2h + 1:end])" in rec


def test_the_bidirectional_flux_layer_reverses_time_as_python_does():
    """FluxRNN reverses along dims=2 of Flux's (X, T, B), stacks forward first with vcat, and
    reads the last step at h[:, end, :]: flux_sequence's axis 1, axis 0 and [:, -1, :]."""
    call = _function(FLUX, "(m::FluxRNN)")
    assert (
        "vcat(_run(l[1], h, s[1]), reverse(_run(l[2], reverse(h; dims=2), s[2]); dims=2))" in call
    )
    assert "m.last ? h[:, end, :] : permutedims(h, SEQ_TO_FLUX)" in call
    knet_side = _function(IMPORT, "_layer_fn")
    assert "last ? y[:, :, end] : permutedims(y, KNET_TO_SEQ)" in knet_side
