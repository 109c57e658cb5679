"""Knet RNN benchmarks: the reference's speed against Keras, and the RNN diagnosis's accuracy.

    python benchmarks/bench_rnn.py                 # both: ~2 min on 2 cores
    python benchmarks/bench_rnn.py --perf          # LSTM forward, reference vs Keras, side by side
    python benchmarks/bench_rnn.py --diagnose --n 20 --seed 1

Performance: one LSTM layer, (B=32, T=100, X=H=256), float32, on the CPU: the NumPy reference
(`porting.rnn.forward`) against Keras's LSTM (the fastest of an eager call and a compiled
`predict_on_batch`), best of 7 interleaved runs each, in one process. Target: reference within 3x.

Diagnosis: random RNNs (type, layers, direction, sizes; biases drawn nonzero, as trained ones
are: Knet initialises them to zero, where no bias mistake is visible), each ported to Keras
correctly or with one mistake made on the Keras side (weights arranged wrongly, the wrong GRU
variant, the input's axes swapped, final states read for the last step). Keras computes the
observation; `porting.rnn.diagnosis.diagnose` recomputes hypotheses in NumPy. Prints per-cause
top-1 accuracy and the confusion rows; correct ports must all come out as `rounding`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from porting.rnn import RNNSpec, forward, random_weights  # noqa: E402
from porting.rnn.diagnosis import diagnose  # noqa: E402

BROKEN = (
    "gate_order",
    "bias_one_only",
    "bias_twice",
    "gru_bias_merged",
    "gru_reset_before",
    "directions_swapped",
    "transposed",
    "time_major",
    "last_step_final_state",
)
TARGET_ACCURACY = 0.95
KERAS_ORDER = {"relu": (0,), "tanh": (0,), "lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}


def _keras():
    from porting import tf as ptf

    ptf.import_tf()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


# ----------------------------------------------------------------------------- performance


def perf(repeats: int = 7) -> dict:
    keras = _keras()
    B, T, X, H = 32, 100, 256, 256
    rng = np.random.default_rng(0)
    spec = RNNSpec(X, H, "lstm")
    w = random_weights(spec, rng, dtype=np.float32)
    x = rng.standard_normal((X, B, T)).astype(np.float32)
    xk = np.ascontiguousarray(x.transpose(1, 2, 0))
    layer = keras.layers.LSTM(H, return_sequences=True)
    model = keras.Sequential([keras.Input((T, X)), layer])
    kernel = np.concatenate([w.W[0][g].T for g in range(4)], axis=1)
    rec = np.concatenate([w.R[0][g].T for g in range(4)], axis=1)
    layer.set_weights([kernel, rec, (w.bW[0] + w.bR[0]).reshape(-1)])

    runs = {
        "reference": lambda: forward(w, x),
        "keras_eager": lambda: np.asarray(model(xk, training=False)),
        "keras_predict": lambda: model.predict_on_batch(xk),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm up (graph tracing, BLAS threads)
    for _ in range(repeats):  # interleaved, so that a change of load hits every side alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t_ref, t_eager, t_pred = (min(times[k]) for k in runs)
    ref_y = forward(w, x).y
    k_y = np.asarray(model.predict_on_batch(xk)).transpose(2, 0, 1)
    t_keras = min(t_eager, t_pred)
    return {
        "reference_s": t_ref,
        "keras_eager_s": t_eager,
        "keras_predict_s": t_pred,
        "ratio": t_ref / t_keras,
        "max_abs_diff": float(np.abs(ref_y - k_y).max()),
    }


# ----------------------------------------------------------------------------- wrong ports


def _keras_weights(w, mistake):
    """Per slot [kernel, recurrent_kernel, bias] for Keras, arranged with `mistake`."""
    spec = w.spec
    order = KERAS_ORDER[spec.rnn_type]
    H = spec.hidden_size
    out = []
    for s in range(spec.slots):
        W = (
            w.W[s]
            if w.W[s] is not None
            else np.broadcast_to(np.eye(H, dtype=w.dtype), w.R[s].shape)
        )
        R = w.R[s]
        if mistake == "transposed":
            R = R.transpose(0, 2, 1)
            if W.shape[1] == W.shape[2]:
                W = W.transpose(0, 2, 1)
        kernel = np.concatenate([W[g].T for g in order], axis=1)
        recur = np.concatenate([R[g].T for g in order], axis=1)
        bW = np.concatenate([w.bW[s][g] for g in order])
        bR = np.concatenate([w.bR[s][g] for g in order])
        if spec.rnn_type == "gru":
            if mistake == "bias_one_only":
                bR = np.zeros_like(bR)
            elif mistake == "bias_twice":
                bW = bW + bR
            elif mistake == "gru_bias_merged":
                bW, bR = bW + bR, np.zeros_like(bR)
            bias = bW + bR if mistake == "gru_reset_before" else np.stack([bW, bR])
        else:
            if mistake == "bias_one_only":
                bias = bW
            elif mistake == "bias_twice":
                bias = 2 * (bW + bR)
            else:
                bias = bW + bR
        if mistake == "gate_order":
            g = spec.gates
            if spec.rnn_type == "gru":
                perm = [1, 0, 2]  # Knet's r, z, n taken as Keras's z, r, h
            else:
                perm = [0, 1, 3, 2]  # i, f, o, n: output and new memory exchanged

            def blocks(a, p=perm, g=g):
                parts = np.split(a, g, axis=-1)
                return np.concatenate([parts[k] for k in p], axis=-1)

            kernel, recur, bias = blocks(kernel), blocks(recur), blocks(bias)
        out.append([kernel, recur, bias])
    if mistake == "directions_swapped":
        out = [out[s ^ 1] for s in range(spec.slots)]
    return out


def keras_observation(w, x, mistake, last_step):
    """What a Keras port with `mistake` gives for Knet's x, in Knet's layout."""
    keras = _keras()
    spec = w.spec
    dtype = str(w.dtype)
    H = spec.hidden_size
    kw = _keras_weights(w, mistake)

    def cell(back):
        kwargs = {
            "return_sequences": True,
            "return_state": True,
            "go_backwards": back,
            "dtype": dtype,
        }
        if spec.rnn_type in ("relu", "tanh"):
            return keras.layers.SimpleRNN(H, activation=spec.rnn_type, **kwargs)
        if spec.rnn_type == "lstm":
            return keras.layers.LSTM(H, **kwargs)
        return keras.layers.GRU(H, reset_after=mistake != "gru_reset_before", **kwargs)

    inp = keras.Input((None, spec.input_size), dtype=dtype)
    seq = inp
    res = None
    for layer in range(spec.num_layers):
        n_in = spec.input_size if layer == 0 else spec.output_size
        if spec.bidirectional:
            lay = keras.layers.Bidirectional(cell(False), backward_layer=cell(True), dtype=dtype)
            lay.build((None, None, n_in))
            lay.set_weights(kw[2 * layer] + kw[2 * layer + 1])
        else:
            lay = cell(False)
            lay.build((None, None, n_in))
            lay.set_weights(kw[layer])
        res = lay(seq)
        seq = res[0]
    assert res is not None
    per = 2 if spec.rnn_type == "lstm" else 1
    finals = [res[1], res[1 + per]] if spec.bidirectional else [res[1]]
    model = keras.Model(inp, [seq, keras.ops.concatenate(finals, axis=-1)])
    if mistake == "time_major":
        xk = np.ascontiguousarray(x.T)  # (T, B, X): NumPy's reversed axes, read as (B, T, X)
        y, _ = model(xk, training=False)
        y = np.asarray(y).T  # the user's reverse transpose back to "(Y, B, T)"
    else:
        xk = np.ascontiguousarray(x.transpose(1, 2, 0))
        y, fin = model(xk, training=False)
        y = np.asarray(y).transpose(2, 0, 1)
        if mistake == "last_step_final_state":
            return np.asarray(fin).T
    return y[:, :, -1] if last_step else y


def make_case(rng, cause):
    types = ["relu", "tanh", "lstm", "gru"]
    if cause == "gate_order":
        types = ["lstm", "gru"]
    elif cause in ("gru_bias_merged", "gru_reset_before"):
        types = ["gru"]
    elif cause == "bias_twice":
        types = ["relu", "tanh", "lstm", "gru"]
    rt = str(rng.choice(types))
    bi = cause in ("directions_swapped", "last_step_final_state") or bool(rng.integers(0, 2))
    H = int(rng.integers(3, 13))
    X = H if rng.random() < 0.3 else int(rng.integers(2, 11))
    spec = RNNSpec(X, H, rt, num_layers=int(rng.integers(1, 3)), bidirectional=bi)
    dtype = np.float32 if rng.random() < 0.8 else np.float64
    w = random_weights(spec, rng, dtype=dtype)
    B, T = int(rng.integers(1, 5)), int(rng.integers(4, 16))
    x = rng.standard_normal((X, B, T)).astype(dtype)
    last_step = cause == "last_step_final_state" or (cause != "time_major" and rng.random() < 0.25)
    return w, x, last_step


def run(n: int, seed: int, causes=BROKEN + ("correct",)) -> dict:
    rng = np.random.default_rng(seed)
    confusion: dict[str, Counter] = defaultdict(Counter)
    t0 = time.perf_counter()
    for cause in causes:
        for _ in range(n):
            w, x, last_step = make_case(rng, cause)
            obs = keras_observation(w, x, "correct" if cause == "correct" else cause, last_step)
            d = diagnose(w, x, obs)
            confusion[cause][d.cause] += 1
    return {"confusion": confusion, "seconds": time.perf_counter() - t0}


def accuracy(confusion) -> dict[str, float]:
    out = {}
    for truth, row in confusion.items():
        want = "rounding" if truth == "correct" else truth
        out[truth] = row[want] / max(1, sum(row.values()))
    return out


def format_table(confusion, title: str) -> str:
    acc = accuracy(confusion)
    lines = [title]
    for truth, row in confusion.items():
        others = ", ".join(f"{k}: {v}" for k, v in row.most_common())
        lines.append(f"  {truth:<22} accuracy {acc[truth]:6.1%}   [{others}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--perf", action="store_true")
    p.add_argument("--diagnose", action="store_true")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    both = not (a.perf or a.diagnose)
    if a.perf or both:
        r = perf()
        print(
            "LSTM forward (B=32, T=100, X=H=256, float32, CPU): "
            f"reference {r['reference_s'] * 1e3:.1f} ms, Keras {min(r['keras_eager_s'], r['keras_predict_s']) * 1e3:.1f} ms "
            f"(eager {r['keras_eager_s'] * 1e3:.1f}, predict_on_batch {r['keras_predict_s'] * 1e3:.1f}); "
            f"reference/Keras = {r['ratio']:.2f} (target <= 3); max |diff| {r['max_abs_diff']:.2g}"
        )
    if a.diagnose or both:
        res = run(a.n, a.seed)
        print(
            format_table(
                res["confusion"],
                f"diagnosis, {a.n} per cause, seed {a.seed}, {res['seconds']:.0f} s",
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
