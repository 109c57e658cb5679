"""`verify_data` throughput and peak memory, against the Knet forward alone and Keras alone.

    python benchmarks/bench_verify_data.py                 # 2,000 samples; memory at 1,000 / 10,000
    python benchmarks/bench_verify_data.py --quick         # 300 samples; memory at 200 / 1,000
    python benchmarks/bench_verify_data.py --resnet50 8    # also 8 224x224 images, ResNet-50-sized
    python benchmarks/bench_verify_data.py --repeat 3 --baseline ../old   # medians, old code too

Data: inputs of the built-in `resnet` example (`porting.examples.models.resnet`, 16x16x3:
the example's own input size, CIFAR-like at half resolution), uniform in [0, 1), float32,
saved as one Julia-indexed `.npy` file that `verify_data` memory-maps. Batches of `--batch`.

Contestants, each in a fresh subprocess (so `ru_maxrss` is its own), timed from after the
imports, the model's conversion and one warm-up batch to the last batch done:
- "verify": `verify_data(model, path, keras_model=km)` (every layer compared, end-to-end figures
  per sample);
- "knet": `forward_knet` on the same batches read from the same map;
- "keras": `keras_model(x, training=False)` on the same batches in TensorFlow layout (an eager
  call per batch);
- "predict": `keras_model.predict_on_batch(x)` on the same batches (the compiled
  `tf.function` that `predict` runs per batch, without its tf.data overhead; traced in the
  warm-up);
- "predict_all": `keras_model.predict(x, batch_size=B)`, Keras's own `predict` on the whole
  set at once (read from the map into TensorFlow's layout, which is timed).
The "knet" forward runs inside `porting.knet.mlas.reusing_weights()`, as verify-data's does.
The ratio reported is verify / (knet + keras), and beside it verify / (knet + predict), the
stricter one since verification's Keras side runs compiled too (porting.model.keras_graph). `--repeat R` runs the contestants R times,
interleaved, and reports the medians (the machine is shared: single runs move by 30%);
`--baseline DIR` adds "verify (baseline)", the same `verify_data` run from the checkout DIR
(e.g. `git archive <commit> | tar -x -C DIR`), interleaved with the others, for before/after
figures from one run. Peak memory is `verify`'s whole `ru_maxrss` at
two data-set sizes (one fresh process each). `--resnet50 N` times `verify_data` on N 224x224x3
images with the ResNet-50-sized model of bench_model_large.py, for the README's estimate.
Figures are printed (and written with --json), never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
# a baseline child runs another checkout's porting (--baseline)
sys.path.insert(0, os.environ.get("BENCH_PORTING_ROOT") or str(ROOT))

import numpy as np  # noqa: E402


def _batches(path, batch):
    from porting.model.datasets import open_data

    src = open_data(path, (16, 16, 3), np.float32)
    return src, src.batches(batch)


def _knet_or_keras(who, it, n, model, km, layout, forward_knet) -> None:
    done = 0
    for _, x in it:
        if done >= n:
            break
        if who == "knet":
            forward_knet(model, x)
        elif who == "predict":
            km.predict_on_batch(layout.activations_to_tf(x))
        else:
            km(layout.activations_to_tf(x), training=False)
        done += x.shape[-1]


def child(who: str, path: str, n: int, batch: int) -> dict:
    # glibc's malloc as the `porting` command sets it (porting._malloc), for every contestant
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _cli_malloc import as_the_command

    as_the_command()
    from porting import layout
    from porting.examples.models import resnet
    from porting.model import forward_knet, to_keras
    from porting.model.verify_data import verify_data

    model = resnet()
    km = to_keras(model)
    warm = np.asfortranarray(np.load(path, mmap_mode="r")[..., :batch])
    forward_knet(model, warm)
    km(layout.activations_to_tf(warm), training=False)
    if who == "predict":
        km.predict_on_batch(layout.activations_to_tf(warm))
    if who == "predict_all":
        km.predict(layout.activations_to_tf(warm), batch_size=batch, verbose=0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if who == "verify":
        r = verify_data(model, path, keras_model=km, batch_size=batch, limit=n)
        assert r.ok and r.n_samples == n, r.verdict()
        parts = {k: r.timings[k] for k in ("verify_s", "read_s")}
    elif who == "predict_all":  # Keras's own `predict` on the whole set, read from the map
        parts = {}
        x_all = layout.activations_to_tf(np.load(path, mmap_mode="r")[..., :n])
        km.predict(x_all, batch_size=batch, verbose=0)
    else:
        parts = {}
        _, it = _batches(path, batch)
        prepared: Any = contextlib.nullcontext()
        if who == "knet":  # with the prepared convolutions verify-data uses (porting.knet.mlas)
            from porting.knet import mlas

            prepared = mlas.reusing_weights()
        with prepared:
            _knet_or_keras(who, it, n, model, km, layout, forward_knet)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "who": who,
        "n": n,
        "seconds": dt,
        "peak_rss_mb": rss / 1024,
        "rss_before_mb": rss0 / 1024,
        "parts": parts,
    }


def child_resnet50(n: int, batch: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_model_large import resnet50_knet

    from porting.model import to_keras
    from porting.model.verify_data import verify_data

    model = resnet50_knet(224)
    km = to_keras(model)
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.random((224, 224, 3, n), dtype=np.float32))
    verify_data(model, x[..., :1], keras_model=km, batch_size=1)  # warm-up
    t0 = time.perf_counter()
    r = verify_data(model, x, keras_model=km, batch_size=batch)
    dt = time.perf_counter() - t0
    return {
        "who": "resnet50",
        "n": n,
        "seconds": dt,
        "per_image_s": dt / n,
        "ok": r.ok,
        "parts": {k: r.timings[k] for k in ("verify_s",)},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(*args, root: str | None = None) -> dict:
    env = dict(os.environ)
    if root:
        env["BENCH_PORTING_ROOT"] = str(Path(root).resolve())
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--mem", default="1000,10000")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resnet50", type=int, default=0, metavar="N")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=1, metavar="R", help="interleaved repetitions")
    p.add_argument("--baseline", metavar="DIR", help="also time verify_data from this checkout")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        if a.child[0] == "resnet50":
            res = child_resnet50(int(a.child[1]), int(a.child[2]))
        else:
            res = child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]))
        print(json.dumps(res))
        return 0
    if a.quick:
        a.n, a.mem = 300, "200,1000"
    from _bytecode import compile_porting

    compile_porting()  # as an install would (benchmarks/_bytecode.py)
    if a.baseline:
        compile_porting(a.baseline)
    mem = [int(m) for m in a.mem.split(",")]
    total = max([a.n, *mem])
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "batch": a.batch}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.npy")
        rng = np.random.default_rng(0)
        np.save(path, np.asfortranarray(rng.random((16, 16, 3, total), dtype=np.float32)))
        who_all = ["knet", "keras", "predict", "predict_all", "verify"]
        who_all += ["baseline"] if a.baseline else []
        reps: list[dict] = []
        for _ in range(max(1, a.repeat)):
            rep = {}
            for who in who_all:
                if who == "baseline":
                    rep[who] = run_child("verify", path, a.n, a.batch, root=a.baseline)
                else:
                    rep[who] = run_child(who, path, a.n, a.batch)
            both = rep["knet"]["seconds"] + rep["keras"]["seconds"]
            both_p = rep["knet"]["seconds"] + rep["predict"]["seconds"]
            rep["ratio"] = rep["verify"]["seconds"] / both
            rep["ratio_predict"] = rep["verify"]["seconds"] / both_p
            both_a = rep["knet"]["seconds"] + rep["predict_all"]["seconds"]
            rep["ratio_predict_all"] = rep["verify"]["seconds"] / both_a
            if a.baseline:
                rep["baseline_ratio"] = rep["baseline"]["seconds"] / both
                rep["baseline_ratio_predict"] = rep["baseline"]["seconds"] / both_p
            print(
                "repetition: "
                + ", ".join(f"{w} {rep[w]['seconds']:.2f} s" for w in who_all)
                + f"; ratio {rep['ratio']:.2f}x, vs predict_on_batch "
                + f"{rep['ratio_predict']:.2f}x, vs predict {rep['ratio_predict_all']:.2f}x"
                + (
                    f" (baseline {rep['baseline_ratio']:.2f}x, "
                    f"{rep['baseline_ratio_predict']:.2f}x)"
                    if a.baseline
                    else ""
                ),
                flush=True,
            )
            reps.append(rep)
        runs = {}
        for who in who_all:
            runs[who] = dict(reps[0][who])
            runs[who]["seconds"] = _median([r[who]["seconds"] for r in reps])
        for who, r in runs.items():
            print(
                f"{who:>8}: {r['n']} samples in {r['seconds']:.2f} s (median of {len(reps)}; "
                f"{r['n'] / r['seconds']:.0f} samples/s), peak {r['peak_rss_mb']:.0f} MB "
                f"{r['parts'] or ''}"
            )
        ratio = _median([r["ratio"] for r in reps])
        ratio_p = _median([r["ratio_predict"] for r in reps])
        print(f"verify / (knet + keras) = {ratio:.2f}x (median of the repetitions' ratios)")
        ratio_a = _median([r["ratio_predict_all"] for r in reps])
        print(f"verify / (knet + predict_on_batch) = {ratio_p:.2f}x")
        print(f"verify / (knet + predict_all: Keras's predict on the whole set) = {ratio_a:.2f}x")
        results.update(
            throughput=runs,
            ratio=ratio,
            ratio_predict=ratio_p,
            ratio_predict_all=ratio_a,
            repetitions=reps,
        )
        if a.baseline:
            base = _median([r["baseline_ratio"] for r in reps])
            base_p = _median([r["baseline_ratio_predict"] for r in reps])
            print(f"baseline verify / (knet + keras) = {base:.2f}x ({a.baseline})")
            print(f"baseline verify / (knet + predict) = {base_p:.2f}x")
            results.update(baseline_ratio=base, baseline_ratio_predict=base_p)
        peaks = [run_child("verify", path, m, a.batch) for m in mem]
        for r in peaks:
            print(
                f"verify {r['n']:>6} samples: peak {r['peak_rss_mb']:.0f} MB "
                f"(after setup {r['rss_before_mb']:.0f} MB), {r['seconds']:.1f} s"
            )
        growth = peaks[-1]["peak_rss_mb"] / peaks[0]["peak_rss_mb"] - 1
        print(f"peak memory at {mem[-1]} vs {mem[0]} samples: {growth:+.1%}")
        results.update(memory=peaks, memory_growth=growth)
    if a.resnet50:
        r = run_child("resnet50", a.resnet50, min(a.resnet50, 4))
        print(
            f"ResNet-50-sized, 224x224: {r['per_image_s']:.2f} s per image "
            f"({r['n']} images, batch {min(a.resnet50, 4)}), {r['parts']}, "
            f"peak {r['peak_rss_mb']:.0f} MB"
        )
        h = r["per_image_s"] * 50_000 / 3600
        print(f"  50,000 images at this rate: {h:.1f} h on this machine")
        results["resnet50"] = r
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
