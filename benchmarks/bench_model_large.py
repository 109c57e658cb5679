"""`porting convert --verify` on large models vs the plain Keras workflow, time and peak memory.

    python benchmarks/bench_model_large.py              # ResNet-50 and VGG-16 sized, 224x224
    python benchmarks/bench_model_large.py --quick      # 64x64 input, narrower VGG, 1 repeat
    python benchmarks/bench_model_large.py --models resnet50 --repeat 5 --json out.json
    python benchmarks/bench_model_large.py --profile resnet50 --mode each   # cProfile, top 30

Target (issue 11): on a ResNet-50-sized model (25.6M weights: bottleneck blocks [3, 4, 6, 3],
widths 64..2048, batchnorm after every conv, projection shortcuts, global mean pool, dense
1000), the porting path costs at most 1.3x the plain Keras workflow, and its peak memory is at
most the Keras workflow's plus one copy of the weights. The same is measured on a VGG-16-sized
chain (138M weights: 13 3x3 convs with relu and 5 max pools, dense 25088-4096-4096-1000).

Contestants, each in a fresh subprocess (so that `ru_maxrss` is its own peak), one batch of
ONE 224x224x3 image, float32:
- "keras": the plain Keras workflow on the same architecture, written as a Keras user writes it
  (ZeroPadding2D + Conv2D without bias + BatchNormalization(epsilon=1e-5), ...): build the
  model, `set_weights`, two forward passes (`model(x, training=False)`), `model.save`.
- "each" / "whole": the porting path as `porting convert --verify [--mode M] -o OUT.keras`
  runs it: `to_keras`, `verify_model(mode=M)`, `save_keras`.
Timed in each: from after the imports and the weights' generation (the same arrays, drawn in
Knet layout for porting and in Keras layout for Keras) to the file written. Peak memory is the
subprocess's whole `ru_maxrss` (imports and weights included on both sides). Repetitions are
interleaved (keras, each, whole, keras, ...) and the figure is the median of the per-repetition
ratios, because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

F32 = np.float32
STAGES50 = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
VGG16 = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


class Weights:
    """Fast deterministic weights: one float32 normal draw, sliced (no per-array generator)."""

    def __init__(self, n: int, seed: int = 0):
        self.pool = np.random.default_rng(seed).standard_normal(n, dtype=F32)
        self.at = 0

    def take(self, shape, scale: float, order: str = "F") -> np.ndarray:
        n = int(np.prod(shape))
        if n > self.pool.size:  # a large dense kernel: the pool repeated
            return np.resize(self.pool, n).reshape(shape, order=order) * F32(scale)
        if self.at + n > self.pool.size:
            self.at = 0
        a = self.pool[self.at : self.at + n].reshape(shape, order=order) * F32(scale)
        self.at += n
        return a

    def bn(self, c: int, keras: bool):
        """(mean, var, scale, bias): running statistics and Knet's packed bnparams halves."""
        mean = self.take((c,), 0.1)
        var = F32(1) + np.abs(self.take((c,), 0.2))
        scale = F32(1) + self.take((c,), 0.1)
        bias = self.take((c,), 0.1)
        if keras:  # BatchNormalization: gamma, beta, moving_mean, moving_variance
            return [scale, bias, mean, var]
        return mean.reshape(1, 1, c, 1), var.reshape(1, 1, c, 1), np.concatenate([scale, bias])


# ------------------------------------------------------------------ architectures (Knet side)


def resnet50_knet(size: int, width: float = 1.0):
    from porting.model import Activation, Add, BatchNorm, Conv, Dense, KnetModel, Pool

    w = Weights(1 << 22)
    layers: list = []
    inputs: dict[str, str] = {}
    n = [0]

    def conv(k, cin, cout, stride=1, padding=0, src=None):
        n[0] += 1
        name = f"c{n[0]}"
        layers.append(
            Conv(
                w.take((k, k, cin, cout), np.sqrt(2.0 / (k * k * cin))),
                stride=stride,
                padding=padding,
                name=name,
            )
        )
        if src is not None:
            inputs[name] = src
        mean, var, params = w.bn(cout, keras=False)
        layers.append(BatchNorm(mean, var, params, name=f"{name}_bn"))
        return f"{name}_bn"

    def relu(src):
        layers.append(Activation("relu", name=f"{src}_relu"))
        return f"{src}_relu"

    c0 = int(64 * width)
    last = relu(conv(7, 3, c0, stride=2, padding=3))
    layers.append(Pool(window=3, stride=2, padding=1, name="pool0"))
    last, cin = "pool0", c0
    for s, (wd, blocks, stride) in enumerate(STAGES50):
        wd = int(wd * width)
        for b in range(blocks):
            st = stride if b == 0 else 1
            a = relu(conv(1, cin, wd, src=last))
            a = relu(conv(3, wd, wd, stride=st, padding=1))
            a = conv(1, wd, 4 * wd)
            short = conv(1, cin, 4 * wd, stride=st, src=last) if b == 0 else last
            name = f"s{s}b{b}"
            layers.append(Add([a, short], activation="relu", name=name))
            last, cin = name, 4 * wd
    layers.append(Pool(window=size // 32, mode=1, name="gap"))
    layers.append(Dense(w.take((1000, cin), 1 / np.sqrt(cin)), np.zeros(1000, F32), name="fc"))
    return KnetModel(layers, input_size=(size, size, 3), name="resnet50_sized", inputs=inputs)


def vgg16_knet(size: int, width: float = 1.0):
    from porting.model import Conv, Dense, KnetModel, Mat

    w = Weights(1 << 22)
    layers: list = []
    cin = 3
    for i, c in enumerate(VGG16):
        if c == "P":
            continue
        c = int(c * width)
        pooled = VGG16[i + 1] == "P" if i + 1 < len(VGG16) else False
        layers.append(
            Conv(
                w.take((3, 3, cin, c), np.sqrt(2.0 / (9 * cin))),
                w.take((1, 1, c, 1), 0.01),
                padding=1,
                activation="relu",
                pool=dict(window=2) if pooled else None,
                name=f"conv{len(layers) + 1}",
            )
        )
        cin = c
    layers.append(Mat(name="flat"))
    f = int(4096 * width)
    feats = cin * (size // 32) ** 2
    for i, (a, b) in enumerate(((feats, f), (f, f), (f, 1000))):
        layers.append(
            Dense(
                w.take((b, a), np.sqrt(2.0 / a)),
                w.take((b,), 0.01),
                activation="relu" if i < 2 else "identity",
                name=f"fc{i + 1}",
            )
        )
    return KnetModel(layers, input_size=(size, size, 3), name="vgg16_sized")


# ------------------------------------------------------------------ the same, plain Keras


def resnet50_keras(size: int, width: float = 1.0):
    import keras
    from keras import layers as L

    w = Weights(1 << 22)
    draws: list = []

    def conv(x, k, cout, stride=1, padding=0):
        cin = x.shape[-1]
        if padding:
            x = L.ZeroPadding2D(padding)(x)
        lay = L.Conv2D(cout, k, strides=stride, use_bias=False)
        draws.append((lay, lambda: [w.take((k, k, cin, cout), np.sqrt(2 / (k * k * cin)), "C")]))
        x = lay(x)
        lay = L.BatchNormalization(epsilon=1e-5, momentum=0.9)
        draws.append((lay, lambda: w.bn(cout, keras=True)))
        x = lay(x)
        return x

    inp = keras.Input((size, size, 3))
    c0 = int(64 * width)
    x = L.ReLU()(conv(inp, 7, c0, 2, 3))
    x = L.MaxPooling2D(3, 2)(L.ZeroPadding2D(1)(x))
    for wd, blocks, stride in STAGES50:
        wd = int(wd * width)
        for b in range(blocks):
            st = stride if b == 0 else 1
            a = L.ReLU()(conv(x, 1, wd))
            a = L.ReLU()(conv(a, 3, wd, st, 1))
            a = conv(a, 1, 4 * wd)
            short = conv(x, 1, 4 * wd, st) if b == 0 else x
            x = L.ReLU()(L.Add()([a, short]))
    x = L.GlobalAveragePooling2D()(x)
    cin = x.shape[-1]
    lay = L.Dense(1000)
    x = lay(x)
    draws.append((lay, lambda: [w.take((cin, 1000), 1 / np.sqrt(cin), "C"), np.zeros(1000, F32)]))
    return keras.Model(inp, x), draws


def vgg16_keras(size: int, width: float = 1.0):
    import keras
    from keras import layers as L

    w = Weights(1 << 22)
    draws: list = []
    inp = keras.Input((size, size, 3))
    x, cin = inp, 3
    for c in VGG16:
        if c == "P":
            x = L.MaxPooling2D(2)(x)
            continue
        c = int(c * width)
        lay = L.Conv2D(c, 3, padding="same", activation="relu")
        x = lay(x)
        draws.append(
            (
                lay,
                lambda cin=cin, c=c: [
                    w.take((3, 3, cin, c), np.sqrt(2.0 / (9 * cin)), "C"),
                    w.take((c,), 0.01),
                ],
            )
        )
        cin = c
    x = L.Flatten()(x)
    f = int(4096 * width)
    feats = cin * (size // 32) ** 2
    for i, (a, b) in enumerate(((feats, f), (f, f), (f, 1000))):
        lay = L.Dense(b, activation="relu" if i < 2 else None)
        x = lay(x)
        draws.append(
            (lay, lambda a=a, b=b: [w.take((a, b), np.sqrt(2.0 / a), "C"), w.take((b,), 0.01)])
        )
    return keras.Model(inp, x), draws


ARCH = {"resnet50": (resnet50_knet, resnet50_keras), "vgg16": (vgg16_knet, vgg16_keras)}


# ------------------------------------------------------------------ one contestant (subprocess)


def child(arch: str, who: str, size: int, width: float, out_dir: str) -> dict:
    import keras  # noqa: F401 - imports are outside the timed part on both sides

    from porting.model import convert as mconvert
    from porting.model.verify import verify_model

    knet_fn, keras_fn = ARCH[arch]
    path = os.path.join(out_dir, f"{arch}_{who}.keras")
    res: dict = {"arch": arch, "who": who}
    if who == "keras":
        x = np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)).astype(F32)
        t = time.perf_counter()
        km, draws = keras_fn(size, width)  # the model built; its weights drawn next, untimed
        t = time.perf_counter() - t
        weights = [(lay, d()) for lay, d in draws]
        t0 = time.perf_counter()
        for lay, ws in weights:  # as km.set_weights does, layer by layer
            lay.set_weights(ws)
        t1 = time.perf_counter()
        km(x, training=False)
        km(x, training=False)
        t2 = time.perf_counter()
        km.save(path)
        res["seconds"] = t + time.perf_counter() - t0
        res["build_s"], res["forwards_s"] = t + t1 - t0, t2 - t1
        res["save_s"] = time.perf_counter() - t2
        res["weights"] = int(sum(a.size for _, ws in weights for a in ws))
    else:
        model = knet_fn(size, width)
        x = np.asfortranarray(
            np.random.default_rng(1).uniform(-1, 1, (size, size, 3, 1)).astype(F32)
        )
        t0 = time.perf_counter()
        km = mconvert.to_keras(model)
        t1 = time.perf_counter()
        rep = verify_model(model, x, keras_model=km, mode=who)
        t2 = time.perf_counter()
        mconvert.save_keras(km, path)
        res["seconds"] = time.perf_counter() - t0
        res["save_s"] = time.perf_counter() - t2
        res["to_keras_s"] = t1 - t0
        res["verify_s"] = t2 - t1
        res["verify_timings"] = rep.timings
        res["ok"] = rep.ok
        res["weights"] = model.n_params
    res["file_MB"] = os.path.getsize(path) / 1e6
    os.remove(path)
    res["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def run_child(arch, who, size, width, out_dir, root=ROOT) -> dict:
    cmd = [sys.executable, __file__, "--child", arch, who, str(size), str(width), out_dir, root]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{arch}/{who} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def profile(arch: str, mode: str, size: int, width: float) -> None:
    import cProfile
    import pstats

    import keras  # noqa: F401

    from porting.model import convert as mconvert
    from porting.model.verify import verify_model

    model = ARCH[arch][0](size, width)
    x = np.asfortranarray(np.random.default_rng(1).uniform(-1, 1, (size, size, 3, 1)).astype(F32))
    with tempfile.TemporaryDirectory() as d:
        pr = cProfile.Profile()
        pr.enable()
        km = mconvert.to_keras(model)
        rep = verify_model(model, x, keras_model=km, mode=mode)
        mconvert.save_keras(km, os.path.join(d, "m.keras"))
        pr.disable()
    print(rep.ok, rep.timings)
    pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        arch, who, size, width, out_dir, root = argv[1:7]
        sys.path.insert(0, root)  # the porting under test (--baseline: another checkout)
        print(json.dumps(child(arch, who.split("@")[0], int(size), float(width), out_dir)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64x64 input, half-width VGG, 1 repeat")
    ap.add_argument("--models", default="resnet50,vgg16", help="comma-separated: resnet50,vgg16")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved repetitions (3)")
    ap.add_argument("--size", type=int, default=None, help="input side (224; --quick 64)")
    ap.add_argument("--json", metavar="OUT.json", help="also write the numbers here")
    ap.add_argument("--profile", metavar="ARCH", help="cProfile the porting path of ARCH")
    ap.add_argument("--mode", default="each", choices=("each", "whole"), help="for --profile")
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the porting path with the `porting` package found in DIR (e.g. an older "
        "commit: git archive REV porting | tar -x -C DIR), interleaved with the others",
    )
    args = ap.parse_args(argv)
    size = args.size or (64 if args.quick else 224)
    width = {"resnet50": 1.0, "vgg16": 0.5 if args.quick else 1.0}
    if args.profile:
        profile(args.profile, args.mode, size, width[args.profile])
        return 0
    repeat = args.repeat or (1 if args.quick else 3)
    print(
        f"porting convert --verify vs plain Keras ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs), input {size}x{size}x3, batch 1, float32, {repeat} interleaved "
        "repetitions, each contestant in a fresh process",
        flush=True,
    )
    results: dict = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for arch in args.models.split(","):
            runs: dict[str, list[dict]] = {"keras": [], "each": [], "whole": []}
            if args.baseline:
                runs.update({"each@baseline": [], "whole@baseline": []})
            for _ in range(repeat):
                for who in runs:
                    root = args.baseline if who.endswith("@baseline") else str(ROOT)
                    runs[who].append(run_child(arch, who, size, width[arch], out_dir, root))
            kt = [r["seconds"] for r in runs["keras"]]
            km = [r["peak_rss_MB"] for r in runs["keras"]]
            wbytes = runs["keras"][0]["weights"] * 4 / 1e6
            print(
                f"{arch}: {runs['each'][0]['weights'] / 1e6:.1f}M weights ({wbytes:.0f} MB); "
                f"keras workflow {np.median(kt):.2f} s (build + set_weights "
                f"{np.median([r['build_s'] for r in runs['keras']]):.2f}, two forwards "
                f"{np.median([r['forwards_s'] for r in runs['keras']]):.2f}, save "
                f"{np.median([r['save_s'] for r in runs['keras']]):.2f}), peak "
                f"{np.median(km):.0f} MB",
                flush=True,
            )
            summary = {"weights_MB": wbytes, "keras_s": kt, "keras_peak_MB": km}
            for mode in [m for m in runs if m != "keras"]:
                pr = runs[mode]
                ratios = [p["seconds"] / k for p, k in zip(pr, kt, strict=True)]
                extra = [p["peak_rss_MB"] - k for p, k in zip(pr, km, strict=True)]
                vt = pr[int(np.argmin([p["seconds"] for p in pr]))]["verify_timings"]
                print(
                    f"  porting --mode {mode:<14} {np.median([p['seconds'] for p in pr]):6.2f} s "
                    f"= {np.median(ratios):.2f}x keras (target <= 1.3x; per repetition "
                    f"{', '.join(f'{r:.2f}' for r in ratios)}); peak "
                    f"{np.median([p['peak_rss_MB'] for p in pr]):.0f} MB = keras "
                    f"{np.median(extra):+.0f} MB ({np.median(extra) / wbytes:.2f} x weights; "
                    f"target <= 1); ok={all(p['ok'] for p in pr)}; to_keras "
                    f"{np.median([p['to_keras_s'] for p in pr]):.2f} s, verify "
                    f"{np.median([p['verify_s'] for p in pr]):.2f} s, save "
                    f"{np.median([p['save_s'] for p in pr]):.2f} s; fastest run's verify timings "
                    + ", ".join(f"{k} {v:.2f}" for k, v in vt.items()),
                    flush=True,
                )
                summary[mode] = {
                    "ratio_median": float(np.median(ratios)),
                    "ratios": ratios,
                    "extra_peak_MB": extra,
                    "runs": pr,
                }
            results[arch] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
