"""Built-in recurrent models with deterministic weights in Knet layout:
`porting convert --example rnnlm|tagger --verify`.

- `rnnlm()`: Knet's RNNLM in small: embedding `w[:, x]` (16 x vocabulary 40), an LSTM (hidden
  24), a dense layer over every time step (`w * reshape(y, H, :) .+ b`, 40 outputs).
- `tagger()`: a sequence tagger: embedding (12 x vocabulary 50), a bidirectional 2-layer LSTM
  (hidden 10, 20 outputs per step), a dense layer over every step (7 tags).

The RNN weights are Knet's packed vector `r.w` (`porting.rnn.pack`) of weights drawn like
Knet's initialisation (uniform, scaled by the fan-in) from a seeded generator; the embeddings
and dense weights as `porting.examples.lenet`. Inputs are `(T, B)` token indices (Knet's
`(B, T)` `x` permuted, batch last).

>>> rnnlm().output_sizes, tagger().output_sizes[-1]
([(10, 16), (10, 24), (10, 40)], (10, 7))
"""

from __future__ import annotations

import numpy as np

from porting.examples.lenet import _julia_rand, _xavier

__all__ = ["RNN_EXAMPLES", "rnnlm", "tagger", "token_input"]

F32 = np.float32
STEPS = 10


def _rnn(rng, spec):
    from porting.rnn import pack, unpack

    n = spec.param_length
    scale = F32(1.0 / np.sqrt(spec.hidden_size))
    w = (F32(2) * _julia_rand(rng, (1, 1, n), F32) - F32(1)) * scale
    return pack(unpack(spec, w)).reshape(1, 1, n)


def rnnlm(seed: int = 6):
    """Knet's RNNLM, small: embed -> LSTM -> dense over every step."""
    from porting.model import RNN, Embed, KnetModel, TimeDense
    from porting.rnn import RNNSpec

    rng = np.random.default_rng(seed)
    vocab, dim, hidden = 40, 16, 24
    spec = RNNSpec(dim, hidden, "lstm")
    layers = [
        Embed(_xavier(rng, (dim, vocab), F32), name="embed"),
        RNN(_rnn(rng, spec), spec, name="lstm"),
        TimeDense(
            _xavier(rng, (vocab, hidden), F32),
            F32(0.2) * _julia_rand(rng, (vocab,), F32) - F32(0.1),
            name="out",
        ),
    ]
    return KnetModel(layers, input_size=(STEPS,), name="rnnlm")


def tagger(seed: int = 7):
    """A sequence tagger: embed -> bidirectional 2-layer LSTM -> dense per step."""
    from porting.model import RNN, Embed, KnetModel, TimeDense
    from porting.rnn import RNNSpec

    rng = np.random.default_rng(seed)
    vocab, dim, hidden, tags = 50, 12, 10, 7
    spec = RNNSpec(dim, hidden, "lstm", num_layers=2, bidirectional=True)
    layers = [
        Embed(_xavier(rng, (dim, vocab), F32), name="embed"),
        RNN(_rnn(rng, spec), spec, name="bilstm"),
        TimeDense(
            _xavier(rng, (tags, 2 * hidden), F32),
            F32(0.2) * _julia_rand(rng, (tags,), F32) - F32(0.1),
            name="tags",
        ),
    ]
    return KnetModel(layers, input_size=(STEPS,), name="tagger")


def token_input(model, seed: int = 5, batch: int = 3) -> np.ndarray:
    """Deterministic token indices `(T, B)` in `1:vocab` (Julia's 1-based indices)."""
    return model.layers[0].default_input(model.input_size, batch, seed)


RNN_EXAMPLES = {
    "rnnlm": (rnnlm, "built-in example: Knet's RNNLM (embedding, LSTM, dense over every step)"),
    "tagger": (tagger, "built-in example: a tagger (embedding, bidirectional 2-layer LSTM, dense)"),
}
