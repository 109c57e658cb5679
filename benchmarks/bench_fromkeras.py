"""`porting convert MODEL.keras --to knet -o PREFIX --verify` on ResNet50, against the Keras
workflow of loading the model and two forward passes, side by side in one run.

    python benchmarks/bench_fromkeras.py                # ResNet50 at 224x224, 3 rounds
    python benchmarks/bench_fromkeras.py --size 96      # a smaller input, same layers
    python benchmarks/bench_fromkeras.py --profile 30   # also cProfile the convert (top 30)

The model: `keras.applications.ResNet50(weights=None)` (no download is possible here), every
bias, batchnorm scale, offset and statistic drawn (zeros and ones would hide work that is
skipped for them), saved once as a `.keras` file in a temporary directory.

Contestants, each in a fresh subprocess (so `ru_maxrss` is its own), alternated over the rounds
(so that a busy machine slows both alike), timed from after the imports of keras/TensorFlow
and porting to the end of the work:
- "keras": `keras.models.load_model(MODEL.keras)` and two forward passes `model(x)` on the
  verification's input (batch 2, TensorFlow layout);
- "convert": `porting.cli.main(["convert", MODEL.keras, "--to", "knet", "-o", PREFIX,
  "--verify", "--json"])` in the process (exit 0 asserted: the checks run in full).
Reported: each one's median seconds and its peak RSS (the median over rounds), the ratio
convert / keras (target <= 1.5) and convert's peak RSS minus keras's, against one copy of the
weights (float32, 4 bytes a weight; target <= 1 copy). With --profile, the convert's functions
by cumulative time (one more round). Figures are printed (and written with --json), never
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_model(path: Path, size: int) -> int:
    """ResNet50 (weights=None) with drawn biases and batchnorm parameters, saved to `path`;
    returns its number of weights."""
    import keras
    import numpy as np

    km = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for layer in km.layers:
        new = []
        for w, v in zip(layer.get_weights(), layer.weights, strict=True):
            name = v.path.rsplit("/", 1)[-1]
            if "kernel" in name:
                a = w
            elif "variance" in name:
                a = 0.5 + rng.random(w.shape)
            elif name == "gamma":
                a = 0.75 + 0.5 * rng.random(w.shape)
            else:  # bias, beta, moving_mean
                a = 0.1 * rng.standard_normal(w.shape)
            new.append(np.asarray(a, dtype=w.dtype))
        layer.set_weights(new)
    km.save(path)
    return int(km.count_params())


def child(who: str, model_path: str, prefix: str, profile: int) -> dict:
    # glibc's malloc as the `porting` command sets it (porting._malloc), for every contestant
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _cli_malloc import as_the_command

    as_the_command()
    import keras  # noqa: F401 - imported before the clock starts, by both
    import numpy as np

    from porting import layout
    from porting.cli import main

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    parts: dict = {}
    if who == "keras":
        km = keras.models.load_model(model_path)
        t1 = time.perf_counter()
        shape = (2, *km.inputs[0].shape[1:])
        # the verification's default input: uniform in [-1, 1), Julia layout, then TF layout
        x = np.random.default_rng(0).uniform(-1, 1, shape[1:][::-1][1:] + shape[-1:] + (2,))
        x_tf = layout.activations_to_tf(x.astype(np.float32))
        for _ in range(2):
            np.asarray(km(x_tf))
        parts = {"load_s": t1 - t0, "two_forward_s": time.perf_counter() - t1}
    else:
        argv = ["convert", model_path, "--to", "knet", "-o", prefix, "--verify", "--json"]
        out = io.StringIO()
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            with contextlib.redirect_stdout(out):
                rc = prof.runcall(main, argv)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(profile)
            parts["profile"] = text.getvalue()
        else:
            with contextlib.redirect_stdout(out):
                rc = main(argv)
        assert rc == 0, out.getvalue()[-2000:]
        doc = json.loads(out.getvalue())
        parts.update(doc["verification"]["timings"])
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "who": who,
        "seconds": dt,
        "peak_rss_mb": rss / 1024,
        "rss_after_imports_mb": rss0 / 1024,
        "parts": parts,
    }


def run_child(*args) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", type=int, default=0, metavar="TOP")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.child[2], int(a.child[3]))))
        return 0
    from _bytecode import compile_porting

    compile_porting()  # as an install would (benchmarks/_bytecode.py)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "resnet50.keras"
        n_weights = make_model(model_path, a.size)
        prefix = str(Path(tmp) / "resnet50")
        runs: dict[str, list[dict]] = {"keras": [], "convert": []}
        for _ in range(a.rounds):
            for who in ("keras", "convert"):
                runs[who].append(run_child(who, model_path, prefix, 0))
        prof = run_child("convert", model_path, prefix, a.profile) if a.profile else None
    med = {
        who: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "parts": rs[len(rs) // 2]["parts"],
        }
        for who, rs in runs.items()
    }
    weights_mb = n_weights * 4 / 2**20
    extra_mb = med["convert"]["peak_rss_mb"] - med["keras"]["peak_rss_mb"]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "input": [a.size, a.size, 3],
        "batch": 2,
        "weights": n_weights,
        "weights_mb": weights_mb,
        "median": med,
        "all": runs,
        "time_ratio": med["convert"]["seconds"] / med["keras"]["seconds"],
        "extra_peak_mb": extra_mb,
        "extra_peak_in_weight_copies": extra_mb / weights_mb,
    }
    print(f"ResNet50 {a.size}x{a.size}x3, batch 2, {n_weights:,} weights ({weights_mb:.0f} MB)")
    for who in ("keras", "convert"):
        m = med[who]
        print(f"  {who:8s} {m['seconds']:7.2f} s   peak RSS {m['peak_rss_mb']:7.0f} MB")
    print(f"  time: convert --verify / keras = {results['time_ratio']:.2f} (target <= 1.5)")
    print(
        f"  peak memory: convert - keras = {extra_mb:.0f} MB = "
        f"{results['extra_peak_in_weight_copies']:.2f} copies of the weights (target <= 1)"
    )
    parts = {k: round(v, 3) for k, v in med["convert"]["parts"].items() if isinstance(v, float)}
    print(f"  convert's verification timings: {parts}")
    if prof is not None:
        print(prof["parts"]["profile"])
        results["profile"] = prof["parts"]["profile"]
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
