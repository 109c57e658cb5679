"""The built-in Knet LeNet: `porting convert --example lenet`.

The model of Knet's CNN tutorial, built with its tutorial layers:

    Conv(w, b, f) = x -> f.(pool(conv4(w, x) .+ b))        # relu, 2x2 max pool
    Dense(w, b, f; pdrop) = x -> f.(w * mat(dropout(x, pdrop)) .+ b)
    Chain(Conv(5,5,1,20), Conv(5,5,20,50), Dense(800,H,relu; pdrop=0.3), Dense(H,10,identity; pdrop=0.3))

on 28x28x1 inputs, with one change: the hidden dense layer has H = 128 units instead of the
tutorial's 500, so the shipped weights take 0.5 MB (float32) instead of 1.7 MB.

The weights are deterministic: Knet's `xavier_uniform` (uniform in +-sqrt(6 / (fanin +
fanout)), Knet's `param` default), drawn from `np.random.default_rng(SEED)` in Julia's
column-major order. Knet's `param0` would start the biases at zero; here they are small nonzero
values (uniform in +-0.1), as a trained model's are, so that verification checks the bias path.

Shipped next to this module, written by `write_files()`:
`lenet.npz` + `lenet.json` (the export pair, as `PortingKnet.export_model` writes it) and
`lenet_input.npy` (4 images, Julia size (28, 28, 1, 4), Fortran-ordered, values in [0, 1)).

>>> lenet().output_sizes
[(12, 12, 20), (4, 4, 50), (128,), (10,)]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "lenet",
    "lenet_input",
    "lenet_prefix",
    "make_lenet",
    "make_input",
    "write_files",
    "SEED",
    "HIDDEN",
]

SEED = 1
HIDDEN = 128
_HERE = Path(__file__).resolve().parent


def lenet_prefix() -> Path:
    """Prefix of the shipped export pair (`<prefix>.npz`, `<prefix>.json`)."""
    return _HERE / "lenet"


def _julia_rand(rng, size, dtype):
    """`rand(dtype, size...)` filled in Julia's column-major order: Julia-indexed, Fortran."""
    return rng.random(tuple(size)[::-1], dtype=np.float64).astype(dtype).T


def _xavier(rng, size, dtype):
    size = tuple(size)
    if len(size) == 2:
        fanout, fanin = size
    else:
        n = int(np.prod(size))
        fanin, fanout = n // size[-1], n // size[-2]
    s = dtype(np.sqrt(6.0 / (fanin + fanout)))
    return np.asfortranarray(2 * s * _julia_rand(rng, size, dtype) - s)


def make_lenet(seed: int = SEED, hidden: int = HIDDEN, dtype=np.float32):
    """Build the LeNet above (deterministic for a given seed), as a `porting.model.KnetModel`."""
    from porting.model import Conv, Dense, KnetModel

    dt = np.dtype(dtype).type
    rng = np.random.default_rng(seed)

    def bias(size):
        return np.asfortranarray(dt(0.2) * _julia_rand(rng, size, dt) - dt(0.1))

    # Each layer draws its weight, then its bias, in this order (the shipped export's numbers).
    def conv(cin, cout, name):
        w = _xavier(rng, (5, 5, cin, cout), dt)
        return Conv(w, bias((1, 1, cout, 1)), activation="relu", pool=dict(window=2), name=name)

    def dense(nout, nin, activation, name):
        w = _xavier(rng, (nout, nin), dt)
        return Dense(w, bias((nout,)), activation=activation, dropout=0.3, name=name)

    layers = [
        conv(1, 20, "conv1"),
        conv(20, 50, "conv2"),
        dense(hidden, 800, "relu", "dense1"),
        dense(10, hidden, "identity", "dense2"),
    ]
    return KnetModel(layers, input_size=(28, 28, 1), name="lenet")


def make_input(seed: int = SEED, batch: int = 4, dtype=np.float32) -> np.ndarray:
    """The example input: `batch` images, Julia size (28, 28, 1, batch), values in [0, 1)."""
    rng = np.random.default_rng([seed, 1])
    return np.asfortranarray(_julia_rand(rng, (28, 28, 1, batch), np.dtype(dtype).type))


def lenet():
    """The shipped LeNet, loaded from its export pair (`porting.model.load_export`)."""
    from porting.model import load_export

    return load_export(lenet_prefix())


def lenet_input() -> np.ndarray:
    """The shipped example input (Julia size (28, 28, 1, 4), float32)."""
    return np.load(_HERE / "lenet_input.npy")


def write_files(directory=None) -> list[str]:
    """(Re)write `lenet.npz`, `lenet.json` and `lenet_input.npy` into `directory`."""
    from porting.model import save_export

    d = Path(directory) if directory is not None else _HERE
    paths = list(save_export(make_lenet(), d / "lenet"))
    np.save(d / "lenet_input.npy", make_input())
    return [*paths, str(d / "lenet_input.npy")]


if __name__ == "__main__":  # python -m porting.examples.lenet
    for p in write_files():
        print(p, Path(p).stat().st_size, "bytes")
