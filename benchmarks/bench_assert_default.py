"""The bare `porting.testing.assert_ported_close(expected, actual)`: its margin on correct ports
and its detection of broken ones, over random conv/dense stacks.

Each stack (1-3 convs with kernels 1-5, 1-16 channels, weights scaled 0.01-100, relu / tanh /
identity, optional 2x2 max pool, then a dense layer) is converted by `porting.model.to_keras`
and run by Keras in float32 or Float64. The Knet side is PyTorch float64, written from Knet's
definitions (as in tests/test_testing.py). Broken ports are the same Keras model with one
mistake: the first kernel not rotated (kernel_flip), its H and W swapped (swapped_hw), the
first padding shifted by one (padding_shift, where there is padding), the dense layer's
features in Knet's order after Keras' Flatten (flatten_order).

    python benchmarks/bench_assert_default.py            # 60 stacks per dtype
    python benchmarks/bench_assert_default.py --quick    # 15

Prints, per dtype, the largest error / tolerance over the correct ports (must be < 1: no false
alarm) and, per kind of break, how many broken ports failed the assertion. It reports, it does
not assert.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from porting import PortingError  # noqa: E402
from porting.model import Conv, Dense, KnetModel, to_keras  # noqa: E402
from porting.testing import assert_ported_close  # noqa: E402

BREAKS = ("kernel_flip", "swapped_hw", "padding_shift", "flatten_order")


def stack(rng, dtype):
    size = (int(rng.integers(9, 18)), int(rng.integers(9, 18)), int(rng.integers(1, 6)))
    c, layers = size[2], []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.choice([1, 3, 5]))
        co = int(rng.integers(2, 17))
        w = (rng.standard_normal((k, k, c, co)) * float(rng.choice([0.01, 1, 100]))).astype(dtype)
        layers.append(
            Conv(
                w,
                rng.standard_normal((1, 1, co, 1)).astype(dtype),
                activation=str(rng.choice(["relu", "identity", "tanh"])),
                padding=int(rng.integers(0, 2)) if k > 1 else 0,
                mode=int(rng.integers(0, 2)),
                pool=dict(window=2) if rng.random() < 0.4 else None,
            )
        )
        c = co
    fin = int(np.prod(KnetModel(layers, input_size=size).output_sizes[-1]))
    w = rng.standard_normal((int(rng.integers(3, 40)), fin)).astype(dtype)
    layers.append(Dense(w, rng.standard_normal(w.shape[0]).astype(dtype)))
    return KnetModel(layers, input_size=size), rng.uniform(-1, 1, (*size, 3)).astype(dtype)


def broken(model, what):
    km = to_keras(model)
    conv = model.layers[0]
    if what == "kernel_flip":
        w, b = km.get_layer("conv1").get_weights()
        if np.allclose(w, w[::-1, ::-1]):
            return None
        km.get_layer("conv1").set_weights([w[::-1, ::-1], b])
    elif what == "swapped_hw":
        w, b = km.get_layer("conv1").get_weights()
        if w.shape[0] == 1:
            return None
        km.get_layer("conv1").set_weights([np.transpose(w, (1, 0, 2, 3)), b])
    elif what == "padding_shift":
        if max(conv.geometry.padding) == 0:
            return None
        p = conv.geometry.padding[0]
        km.get_layer("conv1__pad").padding = ((p - 1, p + 1), (p, p))
    elif what == "flatten_order":
        dense = model.layers[-1]
        name = dense.name
        _, b = km.get_layer(name).get_weights()
        km.get_layer(name).set_weights([np.ascontiguousarray(dense.w.T), b])
    return km


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = 15 if args.quick else args.n
    import test_testing as ref  # the PyTorch float64 Knet side

    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(args.seed)
        worst, done = 0.0, 0
        caught = {b: [0, 0] for b in BREAKS}
        missed = []  # how much each undetected break changed the output, of max|expected|
        while done < n:
            try:
                model, x = stack(rng, dtype)
            except PortingError:
                continue  # a geometry the sizes do not allow
            done += 1
            expected = ref.knet_forward(model, x).T
            good = ref.keras_out(to_keras(model), x)
            c = assert_ported_close(expected, good)
            peak = float(np.abs(expected).max()) or 1.0
            worst = max(worst, c.max_error_to_tolerance)
            for b in BREAKS:
                km = broken(model, b)
                if km is None:
                    continue
                caught[b][1] += 1
                bad = ref.keras_out(km, x)
                try:
                    assert_ported_close(expected, bad)
                except AssertionError:
                    caught[b][0] += 1
                else:
                    missed.append(float(np.abs(bad - good).max()) / peak)
        print(f"{np.dtype(dtype)}: {n} correct stacks, worst error / tolerance {worst:.3g}")
        for b, (hit, tot) in caught.items():
            print(f"  {b:14s} failed the assertion in {hit} of {tot} broken ports")
        if missed:
            same = sum(m == 0 for m in missed)
            print(
                f"  undetected: {len(missed)}, of which {same} change no output bit (e.g. a "
                f"relu that zeroes everything); the others change it by at most "
                f"{max(missed):.2g} of max|expected|"
            )


if __name__ == "__main__":
    main()
