"""The cost of the exact Keras side of a bilinear upsampling, measured side by side in one run.

Flux's `Upsample(:bilinear)` (NNlib's `align_corners = true`) has no Keras resize layer, so the
`upsample` kind builds it as per-axis `Permute` + `Dense(use_bias=False)` interpolation matrices
(docs/tensorflow.md#keras-upsampling). This times, on the same input, Keras's forward pass of

- `UpSampling2D(interpolation="bilinear")` (TensorFlow's half-pixel resize: what Keras offers,
  not Flux's arithmetic), and
- the matrices for `align_corners = true` (what porting builds), and
- `UpSampling2D()` nearest, for scale,

and prints each time and the ratio to the resize. It reports, it does not assert.

    python benchmarks/bench_upsample.py            # batch 8, 64 x 64 x 32 -> 128 x 128
    python benchmarks/bench_upsample.py --quick    # batch 2, 32 x 32 x 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from porting.model import KnetModel, Upsample, to_keras  # noqa: E402


def _time(km, x, repeats: int) -> float:
    km(x)  # build and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.asarray(km(x))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    batch, n, c = (2, 32, 16) if args.quick else (8, 64, 32)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, n, n, c)).astype(np.float32)
    cases = {
        "UpSampling2D bilinear (half-pixel)": Upsample("bilinear", scale=2, align_corners=False),
        "Permute + Dense matrices (aligned)": Upsample("bilinear", scale=2),
        "UpSampling2D nearest": Upsample("nearest", scale=2),
    }
    times = {}
    for name, layer in cases.items():
        km = to_keras(KnetModel([layer], input_size=(n, n, c)))
        times[name] = _time(km, x, 5 if args.quick else 10)
    base = times["UpSampling2D bilinear (half-pixel)"]
    print(f"input {x.shape} float32, best of runs:")
    for name, t in times.items():
        print(f"  {name:38s} {t * 1e3:8.2f} ms  {t / base:5.2f}x")


if __name__ == "__main__":
    main()
