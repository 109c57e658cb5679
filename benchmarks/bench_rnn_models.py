"""Recurrent models: what verification costs next to the forward passes it compares.

    python benchmarks/bench_rnn_models.py            # the shipped rnnlm and tagger, and a larger
                                                      # RNNLM (vocab 10000, embed/hidden 256, T 50)
    python benchmarks/bench_rnn_models.py --quick    # the shipped examples only

For each model: conversion to Keras (`to_keras`), the Knet side's forward (`forward_knet`), the
Keras model's forward, and `verify_model` in both modes (which includes both forwards, the
per-step tolerance carried through the recurrence and the per-step notes). Best of several warm
runs (the first call of a Keras model builds it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from porting.examples.rnn_models import rnnlm, tagger, token_input  # noqa: E402
from porting.model import RNN, Embed, KnetModel, TimeDense, forward_knet  # noqa: E402
from porting.model import convert as mconvert  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402
from porting.rnn import RNNSpec, pack, random_weights  # noqa: E402


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def big_rnnlm(vocab=10000, dim=256, hidden=256, steps=50):
    rng = np.random.default_rng(0)
    spec = RNNSpec(dim, hidden, "lstm")
    f32 = np.float32
    return KnetModel(
        [
            Embed((0.1 * rng.standard_normal((dim, vocab))).astype(f32)),
            RNN(pack(random_weights(spec, 1)), spec),
            TimeDense(
                (0.1 * rng.standard_normal((vocab, hidden))).astype(f32), np.zeros(vocab, f32)
            ),
        ],
        input_size=(steps,),
        name="rnnlm_big",
    )


def measure(model, batch: int, repeats: int) -> dict:
    x = token_input(model, seed=1, batch=batch)
    x_tf = np.ascontiguousarray(x.T - 1).astype(np.int32)
    t0 = time.perf_counter()
    km = mconvert.to_keras(model)
    out = {"to_keras_s": time.perf_counter() - t0}
    out["knet_forward_s"] = _best(lambda: forward_knet(model, x), repeats)
    out["keras_forward_s"] = _best(lambda: km(x_tf, training=False), repeats)
    for mode in ("each", "whole"):
        report = verify_model(model, x, keras_model=km, mode=mode)
        assert report.ok, str(report)
        out[f"verify_{mode}_s"] = _best(
            lambda m=mode: verify_model(model, x, keras_model=km, mode=m), repeats
        )
    out["verify_each_over_forwards"] = out["verify_each_s"] / (
        out["knet_forward_s"] + out["keras_forward_s"]
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args(argv)
    models = [(rnnlm(), 3), (tagger(), 3)]
    if not args.quick:
        models.append((big_rnnlm(), 32))
    results = {}
    for model, batch in models:
        r = measure(model, batch, 3 if args.quick else 5)
        results[model.name] = r
        print(model.name, ", ".join(f"{k} {v:.3g}" for k, v in r.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
