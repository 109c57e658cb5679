"""The rules by which julia/ rebuilds the sequence layers of an export (`embed`, `rnn`,
`timedense`), as Python functions, so that they are checked here where no Julia runs
(tests/test_julia_import_rnn.py reads the same constants out of the Julia files with
tree-sitter and checks these functions on known arrays).

- Between layers a sequence is held as `(T, X, B)` (porting.model.kinds.embed); Knet's `RNN`
  reads and writes `(X, B, T)` (`SEQ_TO_KNET`, `KNET_TO_SEQ`), Flux's recurrent layers
  (0.15 and later) `(X, T, B)` (`SEQ_TO_FLUX`, its own inverse). `w[:, x]` of the `(T, B)`
  tokens is `(dim, T, B)`: `EMBED_TO_SEQ` makes it `(T, dim, B)`.
- `PortingKnet.import_model` gives Knet's `RNN` the export's packed `r.w` as it is (the same
  cuDNN order, docs/knet.md#rnn-packing); nothing is cut.
- `PortingKnet.flux_model` cuts it (`knet_slices`, the same index arithmetic as the Julia
  `_rnn_slices`) into each slot's input and recurrent matrices and biases, gates stacked in
  Knet's order, which is Flux's (docs/flux.md#recurrent-flux), and gives Flux's one bias per
  gate the sum of Knet's two (`flux_cell`); a GRU's recurrent bias of the new gate sits inside
  the reset product in Knet and has no place in Flux's `GRUCell`, so it must be zero.
  A bidirectional slot pair runs forward and on the time-reversed sequence, reversed back, and
  the two are stacked along the features, forward first (`flux_sequence`).

Julia permutations are 1-based tuples, as written in the Julia files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from porting.errors import PortingError
from porting.rnn.spec import RNNSpec

__all__ = [
    "SEQ_TO_KNET",
    "KNET_TO_SEQ",
    "SEQ_TO_FLUX",
    "EMBED_TO_SEQ",
    "RNN_GATES",
    "permute",
    "knet_slices",
    "flux_cell",
    "flux_sequence",
    "embed",
    "timedense",
    "flux_timedense",
]

SEQ_TO_KNET = (2, 3, 1)  # (T, X, B) -> Knet's (X, B, T)
KNET_TO_SEQ = (3, 1, 2)  # Knet's (X, B, T) -> (T, X, B)
SEQ_TO_FLUX = (2, 1, 3)  # (T, X, B) <-> Flux's (X, T, B)
EMBED_TO_SEQ = (2, 1, 3)  # w[:, x]: (dim, T, B) -> (T, dim, B)
RNN_GATES = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}  # gates per slot, Knet's = Flux's order


def permute(a: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """Julia's `permutedims(a, perm)` (1-based `perm`)."""
    return np.transpose(a, [p - 1 for p in perm])


def knet_slices(
    spec: RNNSpec, w: np.ndarray
) -> list[tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]]:
    """Knet's packed `r.w` -> per slot (forward and backward alternate) `(W, R, bW, bR)`:
    `W` `(gates*H, in)` (None under skipInput), `R` `(gates*H, H)`, `bW`, `bR` `(gates*H,)`,
    gates stacked in Knet's order. The Julia `_rnn_slices` step for step: every matrix of a
    slot is H rows of `in` stored row after row, so Julia's column-major `reshape(.., in, H)`
    is its transpose (`rnnparam(r, slot, id, 1)`) and `permutedims` of it the matrix itself;
    the biases follow every matrix, slot by slot."""
    h, g = spec.hidden_size, RNN_GATES[spec.rnn_type]
    dirs = 2 if spec.bidirectional else 1
    slots = spec.num_layers * dirs
    v = np.asarray(w).reshape(-1, order="F")
    pos = 0
    mats: list[tuple[np.ndarray | None, np.ndarray]] = []

    def block(start: int, n_in: int) -> np.ndarray:
        cols = v[start : start + h * n_in].reshape((n_in, h), order="F")  # reshape(v[..], in, H)
        return cols.T  # permutedims

    for s in range(slots):
        layer = s // dirs
        n_in = (0 if spec.skip_input else spec.input_size) if layer == 0 else h * dirs
        big_w = (
            None if n_in == 0 else np.vstack([block(pos + k * h * n_in, n_in) for k in range(g)])
        )
        pos += g * h * n_in
        big_r = np.vstack([block(pos + k * h * h, h) for k in range(g)])
        pos += g * h * h
        mats.append((big_w, big_r))
    out = []
    for s in range(slots):
        b_w = v[pos : pos + g * h]
        pos += g * h
        b_r = v[pos : pos + g * h]
        pos += g * h
        out.append((*mats[s], b_w, b_r))
    if pos != v.size:
        raise PortingError(
            f"RNN packed weights have length {v.size}, but {spec} reads {pos} "
            "(docs/knet.md#rnn-packing)"
        )
    return out


def flux_cell(
    spec: RNNSpec,
    slot: tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray],
    where: str = "rnn",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One slot's `(W, R, bW, bR)` -> Flux's cell fields `(Wi, Wh, bias)`: Flux adds one bias
    where Knet adds two, so `bias = bW + bR`, except the GRU's new gate, whose recurrent bias
    Knet multiplies by the reset gate (`r .* (Rn h + bRn)`) and Flux's `GRUCell` has no place
    for (`r .* (Wh h)_n + b_n`): `b_n = bWn`, and a nonzero `bRn` is refused."""
    big_w, big_r, b_w, b_r = slot
    if big_w is None:
        raise PortingError(
            f"{where}: skipInput (no input matrix) has no Flux counterpart: Flux's cells "
            "always multiply the input by Wi"
        )
    h = big_r.shape[1]
    if spec.rnn_type != "gru":
        return big_w, big_r, b_w + b_r
    b_rn = b_r[2 * h :]
    if np.any(b_rn != 0):
        raise PortingError(
            f"{where}: a GRU whose recurrent bias of the new gate is nonzero (max "
            f"|bRn| {float(np.max(np.abs(b_rn))):.3g}): Knet computes tanh(Wn x + r .* (Rn h "
            "+ bRn) + bWn), Flux's GRUCell tanh(Wi_n x + r .* (Wh_n h) + b_n), with no bias "
            "inside the reset product; use import_model (Knet) for this model"
        )
    return big_w, big_r, np.concatenate([b_w[: 2 * h] + b_r[: 2 * h], b_w[2 * h :]])


def flux_sequence(
    layers: Sequence[Callable[[np.ndarray], np.ndarray] | tuple[Callable[..., np.ndarray], ...]],
    x: np.ndarray,
    output: str,
) -> np.ndarray:
    """The Flux side's `rnn` layer on `x` `(T, X, B)`: each layer a Flux recurrent layer (a
    function of `(in, T, B)`) or, bidirectional, a (forward, backward) pair, the backward one
    run on the time-reversed sequence and reversed back, stacked forward first; the result
    `(T, Y, B)` ("sequence") or the last step's `(Y, B)` ("last", Knet's `y[:, :, end]`)."""
    h = permute(x, SEQ_TO_FLUX)  # (X, T, B)
    for layer in layers:
        if isinstance(layer, tuple):
            fw, bw = layer
            h = np.concatenate([fw(h), bw(h[:, ::-1, :])[:, ::-1, :]], axis=0)
        else:
            h = layer(h)
    return h[:, -1, :] if output == "last" else permute(h, SEQ_TO_FLUX)


def embed(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`embed` as both Julia readers compute it: `(T, B)` 1-based tokens (a `(B,)` vector is
    one step, `(1, B)`) -> `permutedims(w[:, x], EMBED_TO_SEQ)` `(T, dim, B)`."""
    tokens = np.asarray(x)
    if tokens.ndim == 1:
        tokens = tokens.reshape(1, -1)
    return permute(np.asarray(w)[:, tokens - 1], EMBED_TO_SEQ)


def timedense(
    w: np.ndarray,
    b: np.ndarray | None,
    x: np.ndarray,
    activation: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """`timedense` as import_model computes it on `x` `(T, H, B)`: Knet's `(H, B, T)`,
    `w * reshape(y, H, :) .+ b` reshaped to `(V, B, T)`, the activation over its first
    dimension (the features), back to `(T, V, B)`."""
    yk = permute(x, SEQ_TO_KNET)
    hh, bsz, t = yk.shape
    z = w @ yk.reshape((hh, bsz * t), order="F")
    if b is not None:
        z = z + np.asarray(b).reshape(-1)[:, None]
    z = z.reshape((-1, bsz, t), order="F")
    if activation is not None:
        z = activation(z)
    return permute(z, KNET_TO_SEQ)


def flux_timedense(
    w: np.ndarray,
    b: np.ndarray | None,
    x: np.ndarray,
    activation: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """`timedense` as flux_model computes it on `x` `(T, H, B)`: Flux's `(H, T, B)`, a
    `Dense(w, b)` on the first dimension of every step, the activation over the features,
    back to `(T, V, B)`."""
    yf = permute(x, SEQ_TO_FLUX)
    hh, t, bsz = yf.shape
    z = w @ yf.reshape((hh, t * bsz), order="F")
    if b is not None:
        z = z + np.asarray(b).reshape(-1)[:, None]
    z = z.reshape((-1, t, bsz), order="F")
    if activation is not None:
        z = activation(z)
    return permute(z, SEQ_TO_FLUX)
