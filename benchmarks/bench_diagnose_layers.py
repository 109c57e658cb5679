"""Accuracy of the layer-level causes of porting.diagnosis on random broken and correct ports.

Each case is one layer: Knet's inference batchnorm, a residual sum `f.(x1 .+ x2)`, or an
embedding `w[:, x]`, with random sizes and weights. The Knet side is computed here in Knet's
order of operations in the case's dtype; the port's side by Keras layers (`--engine keras`,
the default when TensorFlow imports: BatchNormalization with the wrong epsilon, the halves of
bnparams swapped, or called with training=True; Add after/before Activation; Embedding fed
1-based indices) or by NumPy in Keras's order of operations (`--engine numpy`: `inv =
gamma / sqrt(var + eps)`, `x * inv + (beta - mean * inv)`), never by the hypothesis functions.

    python benchmarks/bench_diagnose_layers.py             # 200 per cause
    python benchmarks/bench_diagnose_layers.py --quick     # 30 per cause
    python benchmarks/bench_diagnose_layers.py --engine numpy --n 500 --seed 3

Prints the top-1 accuracy per cause, a confusion table, and the false alarms on correct ports
(float32 and float64, every layer type), which must be 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from porting.diagnosis import (  # noqa: E402
    CAUSES,
    diagnose_batchnorm,
    diagnose_embedding,
    diagnose_residual,
)

BROKEN = (
    "bn_epsilon",
    "bn_scale_bias_swapped",
    "bn_batch_statistics",
    "residual_activation_order",
    "embedding_off_by_one",
)
TARGET_ACCURACY = 0.95
RESIDUAL_ACTS = ("relu", "elu", "tanh", "sigm")
_KERAS_ACT = {"relu": "relu", "elu": "elu", "tanh": "tanh", "sigm": "sigmoid"}


# ----------------------------------------------------------------------------- the port's side


class NumpyEngine:
    """The port computed by NumPy in Keras's order of operations, in the case's dtype."""

    name = "numpy"

    def batchnorm(self, x, gamma, beta, mean, var, eps, training):
        t = x.dtype.type
        if training:
            axes = tuple(range(x.ndim - 1))
            mean = x.mean(axis=axes, dtype=x.dtype)
            var = np.square(x - mean).mean(axis=axes, dtype=x.dtype)
        inv = (t(1) / np.sqrt(var + t(eps))).astype(x.dtype)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv + (beta if beta is not None else t(0))
        return x * inv + shift

    def act(self, name, x):
        t = x.dtype.type
        if name == "relu":
            return np.maximum(x, t(0))
        if name == "elu":
            return np.where(x > 0, x, np.expm1(np.minimum(x, t(0))))
        if name == "tanh":
            return np.tanh(x)
        return (t(1) / (t(1) + np.exp(-x))).astype(x.dtype)

    def residual(self, xs, act, where):
        if where == "after":
            return self.act(act, xs[0] + xs[1])
        if where == "before2":
            return xs[0] + self.act(act, xs[1])
        if where == "before1":
            return self.act(act, xs[0]) + xs[1]
        return self.act(act, xs[0]) + self.act(act, xs[1])

    def embedding(self, table, idx0):
        return table[idx0]


class KerasEngine(NumpyEngine):
    """The port computed by Keras 3 layers (TensorFlow backend)."""

    name = "keras"

    def __init__(self):
        import keras

        self.keras = keras

    def batchnorm(self, x, gamma, beta, mean, var, eps, training):
        k = self.keras
        affine = gamma is not None
        layer = k.layers.BatchNormalization(
            epsilon=eps, center=affine, scale=affine, dtype=str(x.dtype)
        )
        layer.build(x.shape)
        layer.set_weights(([gamma, beta] if affine else []) + [mean, var])
        return np.asarray(layer(x, training=training))

    def act(self, name, x):
        return np.asarray(self.keras.layers.Activation(_KERAS_ACT[name], dtype=str(x.dtype))(x))

    def residual(self, xs, act, where):
        k = self.keras
        dt = str(xs[0].dtype)
        add = k.layers.Add(dtype=dt)
        if where == "after":
            return self.act(act, np.asarray(add(list(xs))))
        a1 = self.act(act, xs[0]) if where in ("before1", "both") else xs[0]
        a2 = self.act(act, xs[1]) if where in ("before2", "both") else xs[1]
        return np.asarray(add([a1, a2]))

    def embedding(self, table, idx0):
        k = self.keras
        layer = k.layers.Embedding(table.shape[0], table.shape[1], dtype=str(table.dtype))
        layer.build(idx0.shape)
        layer.set_weights([table])
        return np.asarray(layer(idx0))


def make_engine(which: str):
    if which in ("auto", "keras"):
        try:
            return KerasEngine()
        except ImportError:
            if which == "keras":
                raise
    return NumpyEngine()


# ----------------------------------------------------------------------------- cases


def _knet_bn(x, mean, var, g, b, eps):
    """Knet's order: g .* (x .- mean) .* ivar .+ b, ivar = 1 ./ sqrt.(var .+ eps), in x's type."""
    t = x.dtype.type
    ivar = t(1) / np.sqrt(var + t(eps))
    y = (x - mean) * ivar
    return y if g is None else g * y + b


def _knet_act(name, x):
    t = x.dtype.type
    if name == "relu":
        return np.maximum(x, t(0))
    if name == "elu":
        return np.where(x >= 0, x, np.exp(np.minimum(x, t(0))) - t(1))
    if name == "tanh":
        return np.tanh(x)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, t(1) / (t(1) + z), z / (t(1) + z)).astype(x.dtype)


def make_case(truth: str, rng, eng, dtype: str = "float32", layer: str | None = None) -> dict:
    """One random case: `truth` a cause of BROKEN, or "rounding" for a correct port of `layer`."""
    dt = np.dtype(dtype)
    if layer is None:
        layer = (
            "batchnorm"
            if truth.startswith("bn_")
            else "residual"
            if truth.startswith("residual")
            else "embedding"
        )
    if layer == "batchnorm":
        c = int(rng.integers(1, 17))
        if rng.random() < 0.3:
            shape = (int(rng.integers(2, 9)), c)  # after a dense layer
        else:
            shape = (int(rng.integers(1, 4)), *map(int, rng.integers(2, 9, 2)), c)
        scale = float(10 ** rng.uniform(-1, 1))
        x = (rng.uniform(-1, 1, shape) * scale + rng.uniform(-0.5, 0.5) * scale).astype(dt)
        mean = (rng.uniform(-0.2, 0.2, c) * scale).astype(dt)
        var = (10 ** rng.uniform(-1.5, 1.5, c) * scale**2 / 3).astype(dt)
        affine = truth == "bn_scale_bias_swapped" or rng.random() < 0.85
        g = rng.uniform(0.3, 2.0, c).astype(dt) if affine else None
        b = rng.uniform(-1, 1, c).astype(dt) if affine else None
        eps, swap, training, how = 1e-5, False, False, "correct"
        if truth == "bn_epsilon":
            eps = float(rng.choice([1e-3, 1e-3, 1e-4, 1e-2]))
            how = f"epsilon={eps:g}"
        elif truth == "bn_scale_bias_swapped":
            swap = True
            if rng.random() < 0.5:
                eps = 1e-3
            how = f"swapped, epsilon={eps:g}"
        elif truth == "bn_batch_statistics":
            training = True
            if rng.random() < 0.5:
                eps = 1e-3
            how = f"training=True, epsilon={eps:g}"
        gg, bb = (b, g) if swap else (g, b)
        actual = eng.batchnorm(x, gg, bb, mean, var, eps, training)
        expected = _knet_bn(x, mean, var, g, b, 1e-5)
        return dict(
            layer=layer,
            how=how,
            args=(x, actual),
            kw=dict(mean=mean, var=var, scale=g, bias=b, expected=expected),
        )
    if layer == "residual":
        shape = (int(rng.integers(1, 4)), *map(int, rng.integers(2, 7, 2)), int(rng.integers(1, 9)))
        xs = [rng.standard_normal(shape).astype(dt) for _ in range(2)]
        act = str(rng.choice(RESIDUAL_ACTS))
        where = "after"
        if truth == "residual_activation_order":
            where = str(rng.choice(["before2", "before2", "before1", "both"]))
        actual = eng.residual(xs, act, where)
        expected = _knet_act(act, xs[0] + xs[1])
        return dict(
            layer=layer,
            how=f"{act} {where} the sum",
            args=(xs, actual),
            kw=dict(activation=act, expected=expected),
        )
    dim, vocab = int(rng.integers(1, 17)), int(rng.integers(3, 60))
    w = rng.standard_normal((dim, vocab)).astype(dt)  # Knet (dim, vocab)
    idx = rng.integers(1, vocab + 1, (int(rng.integers(1, 5)), int(rng.integers(1, 9))))
    if truth == "embedding_off_by_one":
        # a table with a spare row so that Knet's 1-based indices fit, fed them unchanged
        table = np.concatenate([w.T, rng.standard_normal((1, dim)).astype(dt)])
        actual, how = eng.embedding(table, idx), "1-based indices into a 0-based table"
    else:
        actual, how = eng.embedding(np.ascontiguousarray(w.T), idx - 1), "correct"
    expected = np.moveaxis(w[:, idx - 1], 0, -1)
    return dict(layer=layer, how=how, args=(w, idx, actual), kw=dict(expected=expected))


def diagnose_case(case):
    fn = {
        "batchnorm": diagnose_batchnorm,
        "residual": diagnose_residual,
        "embedding": diagnose_embedding,
    }[case["layer"]]
    return fn(*case["args"], **case["kw"])


def run(n: int, seed: int = 0, engine: str = "auto", n_correct: int | None = None, verbose=False):
    eng = make_engine(engine)
    rng = np.random.default_rng(seed)
    n_correct = n if n_correct is None else n_correct
    jobs = [(c, "float32", None, c) for c in BROKEN for _ in range(n)]
    for dt in ("float32", "float64"):
        for layer in ("batchnorm", "residual", "embedding"):
            jobs += [("rounding", dt, layer, f"rounding_{layer}_{dt}")] * max(1, n_correct // 3)
    confusion: dict = defaultdict(Counter)
    reproduced: Counter = Counter()
    misses = []
    t_diag = 0.0
    t0 = time.perf_counter()
    for truth, dt, layer, label in jobs:
        case = make_case(truth, rng, eng, dt, layer)
        t1 = time.perf_counter()
        d = diagnose_case(case)
        t_diag += time.perf_counter() - t1
        confusion[label][d.cause] += 1
        if d.cause == truth and truth != "rounding" and d.finding is not None:
            reproduced[label] += d.finding.explains
        if d.cause != truth:
            misses.append(dict(truth=label, how=case["how"], got=d.cause, evidence=d.evidence))
            if verbose:
                print(f"MISS {label} ({case['how']}) -> {d.cause}: {d.evidence[:160]}")
    return {
        "engine": eng.name,
        "seed": seed,
        "n_per_cause": n,
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "reproduced": dict(reproduced),
        "misses": misses,
        "seconds_total": time.perf_counter() - t0,
        "seconds_per_diagnosis": t_diag / len(jobs),
    }


def accuracy(confusion: dict) -> dict:
    out = {}
    for label, row in confusion.items():
        truth = "rounding" if label.startswith("rounding") else label
        total = sum(row.values())
        out[label] = row.get(truth, 0) / total if total else float("nan")
    return out


def false_alarms(confusion: dict) -> int:
    return sum(
        v
        for k, row in confusion.items()
        if k.startswith("rounding")
        for c, v in row.items()
        if c != "rounding"
    )


def format_table(confusion: dict, reproduced: dict | None = None) -> str:
    labels = [c for c in BROKEN if c in confusion] + sorted(
        k for k in confusion if k.startswith("rounding")
    )
    cols = [c for c in CAUSES if any(c in confusion[r] for r in labels)]
    acc = accuracy(confusion)
    short = {
        c: c.replace("residual_activation_order", "res_act")
        .replace("embedding_off_by_one", "emb_off1")
        .replace("bn_scale_bias_swapped", "bn_swap")
        .replace("bn_batch_statistics", "bn_batch")
        .replace("rounding", "round")
        for c in CAUSES
    }
    w0 = max(len(x) for x in labels) + 2
    wc = max(len(short[c]) for c in cols) + 2
    head = "truth \\ diagnosed".ljust(w0) + "".join(short[c].rjust(wc) for c in cols)
    head += "     n   top-1  reproduced"
    lines = [head, "-" * len(head)]
    for r in labels:
        row = confusion[r]
        tot = sum(row.values())
        line = r.ljust(w0) + "".join(str(row.get(c, 0) or ".").rjust(wc) for c in cols)
        line += f"{tot:6d}  {acc[r]:6.1%}"
        if reproduced is not None and not r.startswith("rounding"):
            line += f"  {reproduced.get(r, 0) / tot:10.1%}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="broken ports per cause (default 200)")
    p.add_argument("--n-correct", type=int, default=None, help="correct ports per dtype")
    p.add_argument("--quick", action="store_true", help="30 per cause")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=("auto", "keras", "numpy"), default="auto")
    p.add_argument("-v", "--verbose", action="store_true", help="print every miss")
    args = p.parse_args(argv)
    n = 30 if args.quick else args.n
    res = run(n, args.seed, args.engine, args.n_correct, args.verbose)
    print(
        f"layer-level diagnosis accuracy: engine={res['engine']}, seed={res['seed']}, {n} broken "
        f"ports per cause; {res['seconds_total']:.0f} s total, "
        f"{1000 * res['seconds_per_diagnosis']:.1f} ms per diagnosis"
    )
    print()
    print(format_table(res["confusion"], res["reproduced"]))
    acc = accuracy(res["confusion"])
    ok = all(acc[c] >= TARGET_ACCURACY for c in BROKEN if c in acc)
    fa = false_alarms(res["confusion"])
    print()
    print(
        f"target: top-1 >= {TARGET_ACCURACY:.0%} per cause: {'met' if ok else 'NOT met'}; "
        f"false alarms on correct ports: {fa} (target 0)"
    )
    for m in res["misses"][:10]:
        print(f"  {m['truth']} ({m['how']}) -> {m['got']}: {m['evidence'][:150]}")
    return 0 if ok and fa == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
