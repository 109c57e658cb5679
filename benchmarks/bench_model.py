"""Model porting costs: verification vs the forward passes it compares, and weight conversion
vs memcpy.

    python benchmarks/bench_model.py            # LeNet example + ResNet-18-sized stack at 224x224
    python benchmarks/bench_model.py --quick    # smaller input for the stack, fewer repeats
    python benchmarks/bench_model.py --json out.json

Targets (issue 4):
- `verify_model` costs at most 3x (Knet forward + Keras forward), measured on the shipped
  LeNet and on a plain conv stack with ResNet-18's weight sizes (11.5M weights: the 7x7 stem,
  3x3 convs 64..512 with the same strides, a global mean pool and the 512 -> 1000 dense; no
  residual connections), in both verification modes.
- Converting that stack's weights to Keras layout (`convert_weights`: kernels rotated and
  permuted, dense rows permuted) runs at >= 25% of memcpy bandwidth, memcpy measured here on a
  buffer of the same size (`np.copyto`).

All timings are the best of several warm runs (the first call of a Keras model builds it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from porting import layout  # noqa: E402
from porting.model import Conv, Dense, KnetModel, Pool, forward_knet  # noqa: E402
from porting.model import convert as mconvert  # noqa: E402
from porting.model.verify import verify_model  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def resnet18_sized(size: int = 224, seed: int = 0) -> KnetModel:
    """ResNet-18's conv/dense weight sizes as a plain Knet chain (Julia layout, float32)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def conv(k, cin, cout, **kw):
        s = f32(np.sqrt(2.0 / (k * k * cin)))
        w = np.asfortranarray(rng.standard_normal((k, k, cin, cout), dtype=f32) * s)
        b = np.asfortranarray(rng.standard_normal((1, 1, cout, 1), dtype=f32) * f32(0.01))
        return Conv(w, b, activation="relu", **kw)

    layers = [conv(7, 3, 64, padding=3, stride=2, pool=dict(window=3, stride=2, padding=1))]
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for i in range(4):
            layers.append(conv(3, cin, cout, padding=1, stride=2 if (i == 0 and stage > 0) else 1))
            cin = cout
    final = size // 32
    layers.append(Pool(window=final, mode=1))  # global mean pool
    w = np.asfortranarray(rng.standard_normal((1000, 512), dtype=f32) * f32(0.03))
    layers.append(Dense(w, np.zeros(1000, f32)))
    return KnetModel(layers, input_size=(size, size, 3), name="resnet18_sized")


def bench_verification(name: str, model: KnetModel, x: np.ndarray, repeat: int) -> list[dict]:
    """Per repetition: Knet forward, Keras forward, then verification; the ratio is the median
    over repetitions of verify / (knet + keras) (alternating keeps the machine's load fair)."""
    km = mconvert.to_keras(model, input_size=x.shape[:-1])
    x_tf = layout.activations_to_tf(x)
    km(x_tf)  # build
    forward_knet(model, x)
    rows = []
    for mode in ("each", "whole"):
        verify_model(model, x, keras_model=km, mode=mode)  # warm (probe model, layer calls)
        tk, tt, tv, ratios, ok = [], [], [], [], True
        for _ in range(repeat):
            t = time.perf_counter()
            forward_knet(model, x)
            tk.append(time.perf_counter() - t)
            t = time.perf_counter()
            km(x_tf, training=False)
            tt.append(time.perf_counter() - t)
            t = time.perf_counter()
            ok = verify_model(model, x, keras_model=km, mode=mode).ok and ok
            tv.append(time.perf_counter() - t)
            ratios.append(tv[-1] / (tk[-1] + tt[-1]))
        ratio = float(np.median(ratios))
        rows.append(
            {
                "model": name,
                "mode": mode,
                "ok": ok,
                "weights": model.n_params,
                "input": list(x.shape),
                "knet_forward_s": min(tk),
                "keras_forward_s": min(tt),
                "verify_s": min(tv),
                "ratio_median": ratio,
            }
        )
        print(
            f"  {name:<20} {mode:<6} knet {min(tk) * 1e3:8.1f} ms  keras {min(tt) * 1e3:8.1f} ms  "
            f"verify {min(tv) * 1e3:8.1f} ms  ratio {ratio:5.2f}x (target <= 3x)  "
            f"{'ok' if ok else 'MISMATCH'}",
            flush=True,
        )
    return rows


def bench_weights(model: KnetModel, repeat: int) -> dict:
    """memcpy and the conversion timed alternately (the machine's load hits both alike); the
    median of the per-pair ratios is the figure, with each side's best time shown too."""
    nbytes = sum(p.nbytes for layer in model for p in layer.params().values())
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    mconvert.convert_weights(model)
    t_copy, t_fresh, t_conv, ratios = [], [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(dst, src)
        t_copy.append(time.perf_counter() - t)
        t = time.perf_counter()
        src.copy()
        t_fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        mconvert.convert_weights(model)
        t_conv.append(time.perf_counter() - t)
        ratios.append(t_copy[-1] / t_conv[-1])
    t_layout = best(
        lambda: [
            layout.kernel_to_tf(layer.w, layer.mode) for layer in model if isinstance(layer, Conv)
        ],
        3,
    )
    memcpy, conv = nbytes / min(t_copy) / 1e9, nbytes / min(t_conv) / 1e9
    out = {
        "bytes": nbytes,
        "memcpy_GBps": memcpy,
        "copy_to_fresh_buffer_GBps": nbytes / min(t_fresh) / 1e9,
        "convert_weights_GBps": conv,
        "fraction_of_memcpy_median": float(np.median(ratios)),
        "fraction_of_memcpy_best": memcpy and conv / memcpy,
        "layout_kernel_to_tf_GBps": nbytes / t_layout / 1e9,
    }
    print(
        f"  weights {nbytes / 1e6:.1f} MB: memcpy {memcpy:.1f} GB/s (into a fresh buffer "
        f"{out['copy_to_fresh_buffer_GBps']:.1f}), convert_weights {conv:.2f} GB/s = "
        f"{100 * out['fraction_of_memcpy_median']:.0f}% of memcpy (median of alternating runs; "
        f"target >= 25%); porting.layout.kernel_to_tf alone {out['layout_kernel_to_tf_GBps']:.2f} GB/s",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="112x112 input for the stack, fewer repeats"
    )
    ap.add_argument("--json", metavar="OUT.json", help="also write the numbers here")
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else 7
    size = 112 if args.quick else 224

    import tensorflow as tf

    from porting.examples.lenet import lenet, lenet_input

    print(
        f"porting model benchmarks ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"TensorFlow {tf.__version__}, NumPy {np.__version__})"
    )
    stack = resnet18_sized(size)
    # Weights first: after the verification runs' large allocations, fresh memory can fault in
    # much more slowly on this kind of machine (transparent huge pages), for any copy.
    print(f"weight conversion, ResNet-18-sized set ({stack.n_params / 1e6:.1f}M weights):")
    weights = bench_weights(stack, 5 if args.quick else 11)
    print("verification cost vs the two forward passes it compares:")
    rows = bench_verification("lenet (example)", lenet(), lenet_input(), repeat)
    x = np.asfortranarray(
        np.random.default_rng(1).uniform(-1, 1, (size, size, 3, 1)).astype(np.float32)
    )
    rows += bench_verification(f"resnet18-sized {size}", stack, x, repeat)
    if args.json:
        Path(args.json).write_text(json.dumps({"verification": rows, "weights": weights}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
