"""`porting.compare` on two 256 MB arrays vs one `np.max(np.abs(a - b))` pass.

Target (issue 2): at most 3x the time of the plain pass, with at most one extra input-sized
buffer. Timings are interleaved and the best of several runs is kept; the peak extra memory is
measured with tracemalloc (NumPy reports its allocations there). Reports, never asserts.

    python benchmarks/bench_compare.py [--quick] [--mb 256]
    python benchmarks/bench_compare.py --layers [--chunks 65536,131072]

`--layers`: `compare(e, a, k=, magnitude=)` as a verification calls it once per layer, on
layer-sized float32 outputs (ResNet-50 at batch 2, the resnet example at batch 64) and a
small one (its per-call cost), with each scan chunk size of `--chunks` (porting.comparison's
`_CHUNK`, set for the run), interleaved, best of several: milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from porting.comparison import compare


def peak_extra(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def layers(quick: bool, chunks: list[int]) -> None:
    from porting import comparison

    shapes = [(2, 112, 112, 64), (2, 56, 56, 256), (2, 28, 28, 512), (2, 7, 7, 2048)]
    shapes += [(64, 16, 16, 16), (64, 8, 8, 32), (64, 10)]
    rng = np.random.default_rng(0)
    print(f"compare per layer, ms per call ({os.cpu_count()} CPUs); chunks {chunks}")
    for shape in shapes:
        e = rng.standard_normal(shape).astype(np.float32)
        a = e + np.float32(1e-7) * rng.standard_normal(shape).astype(np.float32)
        m = np.abs(e) * np.float32(3)
        calls = max(3, int(2e7 // e.size)) // (3 if quick else 1) + 1
        best = dict.fromkeys(chunks, float("inf"))
        for _ in range(3 if quick else 5):
            for chunk in chunks:  # interleaved
                comparison._CHUNK = chunk
                t = time.perf_counter()
                for _ in range(calls):
                    compare(e, a, k=576, magnitude=m)
                best[chunk] = min(best[chunk], (time.perf_counter() - t) / calls)
        figures = "  ".join(f"{c}: {1e3 * t:6.3f}" for c, t in best.items())
        print(f"  {str(shape):18s} {e.size:>9,} elements  {figures}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--mb", type=int, default=256, help="size of each input array in MB")
    ap.add_argument("--layers", action="store_true", help="layer-sized calls instead")
    ap.add_argument("--chunks", default="65536,131072", help="with --layers: chunk sizes")
    args = ap.parse_args()
    if args.layers:
        layers(args.quick, [int(c) for c in args.chunks.split(",")])
        return
    reps = 3 if args.quick else 7
    n = args.mb * (1 << 20) // 4
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n, dtype=np.float32)
    b = a + a * np.float32(3e-8)  # within rounding: the common case, the full pass runs
    cases = [("float32 vs float32", a, b), ("float64 expected vs float32", None, b)]
    print(f"compare on {args.mb} MB inputs ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    for name, e, act in cases:
        if e is None:
            e = a.astype(np.float64)  # a Knet Float64 result against a float32 port
        plain, ours = [], []
        for _ in range(reps):
            t = time.perf_counter()
            np.max(np.abs(e - act))
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            c = compare(e, act)
            ours.append(time.perf_counter() - t)
        extra = peak_extra(lambda: compare(e, act))  # noqa: B023
        ratio = min(ours) / min(plain)
        print(
            f"  {name:28s} plain {1e3 * min(plain):7.1f} ms  compare {1e3 * min(ours):7.1f} ms  "
            f"ratio {ratio:4.2f}x (target <= 3x)  peak extra memory {extra / 2**20:6.1f} MB "
            f"(input {e.nbytes / 2**20:.0f} MB; target <= one input)  ok={c.ok}"
        )


if __name__ == "__main__":
    main()
