"""Layout conversion bandwidth against this machine's memcpy, measured in the same run.

    python benchmarks/bench_layout.py            # 256 MB float32 activations, five shapes
    python benchmarks/bench_layout.py --quick    # two shapes, fewer repetitions

Bandwidth counts bytes read + bytes written per second, the same way for every row:
- memcpy: `np.copyto(dst, src)` of a contiguous array of the same size (dst allocated once);
- numpy: `np.ascontiguousarray(x.transpose(perm))`, the plain NumPy way to do the conversion;
- porting: `activations_to_tf` on a Knet `(X1, X2, C, N)` Fortran-ordered array (as NPZ.jl
  writes it and juliacall hands it over), and `activations_from_tf` on its TensorFlow
  `(N, H, W, C)` result.

The conversions allocate their result, as users call them; memcpy does not. Repetitions are
interleaved (memcpy, numpy, porting, memcpy, ...) and the best of each is kept, because the
machine may be shared. The target (GitHub issue 2) is porting >= 25% of memcpy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from porting.layout import activations_from_tf, activations_to_tf  # noqa: E402

TARGET = 25.0  # percent of memcpy
SHAPES = [(56, 56, 64), (224, 224, 3), (14, 14, 512), (112, 112, 16), (7, 7, 512)]
QUICK_SHAPES = [(56, 56, 64), (224, 224, 3)]


def _best_interleaved(fns: dict, reps: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _knet_activation(sample: tuple, nbytes: int, seed: int) -> np.ndarray:
    n = max(1, nbytes // (4 * int(np.prod(sample))))
    rng = np.random.default_rng(seed)
    # Filled through a C-order (N, C, X2, X1) buffer: exactly Julia's memory for (X1, X2, C, N).
    buf = rng.standard_normal((n, *sample[::-1]), dtype=np.float32)
    return buf.T  # Fortran-ordered (X1, X2, C, N)


def _tf_perm_to(nd: int, spatial: str) -> list[int]:
    order = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
    return [nd + 1, *order, nd]


def _tf_perm_from(nd: int, spatial: str) -> list[int]:
    # activations_from_tf returns a Fortran-ordered array; its plain-NumPy equivalent is the
    # C-contiguous reversed permutation, transposed.
    order = list(range(nd))[::-1] if spatial == "reverse" else list(range(nd))
    perm = [1 + order.index(j) for j in range(nd)] + [nd + 1, 0]
    return perm[::-1]


def run(shapes, size_mb: int, reps: int, spatials) -> list[dict]:
    nbytes = size_mb << 20
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0)  # fault the pages in once: memcpy measures bandwidth, not page faults
    rows = []
    for i, sample in enumerate(shapes):
        x = _knet_activation(sample, nbytes, seed=i)
        nd = len(sample) - 1
        for spatial in spatials:
            y = activations_to_tf(x, spatial=spatial)
            if not np.array_equal(activations_from_tf(y, spatial=spatial), x):
                raise SystemExit(f"round trip failed for {sample} spatial={spatial}")
            p_to, p_from = _tf_perm_to(nd, spatial), _tf_perm_from(nd, spatial)
            if not np.array_equal(np.ascontiguousarray(x.transpose(p_to)), y):
                raise SystemExit(f"numpy reference disagrees for {sample} spatial={spatial}")
            fns = {
                "memcpy": lambda: np.copyto(dst, src),
                "numpy_to": lambda x=x, p=p_to: np.ascontiguousarray(x.transpose(p)),
                "porting_to": lambda x=x, s=spatial: activations_to_tf(x, spatial=s),
                "numpy_from": lambda y=y, p=p_from: np.ascontiguousarray(y.transpose(p)),
                "porting_from": lambda y=y, s=spatial: activations_from_tf(y, spatial=s),
            }
            best = _best_interleaved(fns, reps)
            mem = 2 * src.nbytes / best["memcpy"] / 1e9
            row = {"shape": x.shape, "spatial": spatial, "memcpy": mem}
            for k in fns:
                if k != "memcpy":
                    gbs = 2 * x.nbytes / best[k] / 1e9
                    row[k] = (gbs, 100 * gbs / mem, best[k] * 1e3)
            rows.append(row)
            del y
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two shapes, 3 repetitions")
    ap.add_argument("--size-mb", type=int, default=256, help="activation size (default 256)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 9, quick 3)")
    ap.add_argument(
        "--spatial",
        choices=["reverse", "keep", "both"],
        default="reverse",
        help="spatial convention (default reverse, the toolkit's default)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="copy threads (sets PORTING_THREADS for this run)"
    )
    args = ap.parse_args(argv)
    if args.threads is not None:
        os.environ["PORTING_THREADS"] = str(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    reps = args.reps or (3 if args.quick else 9)
    spatials = ["reverse", "keep"] if args.spatial == "both" else [args.spatial]
    print(
        f"float32 activations, {args.size_mb} MB each; best of {reps} interleaved runs; "
        f"GB/s = (bytes read + bytes written) / s; {os.cpu_count()} CPUs; numpy {np.__version__}; "
        f"PORTING_THREADS={os.environ.get('PORTING_THREADS', '(unset)')}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = run(shapes, args.size_mb, reps, spatials)
    head = f"{'Knet shape (X1,X2,C,N)':<24}{'spatial':<9}{'memcpy':>8}"
    for k in ("numpy_to", "porting_to", "numpy_from", "porting_from"):
        head += f"{k:>20}"
    print(head)
    worst = float("inf")
    for r in rows:
        line = f"{str(r['shape']):<24}{r['spatial']:<9}{r['memcpy']:>6.1f}  "
        for k in ("numpy_to", "porting_to", "numpy_from", "porting_from"):
            gbs, pct, _ = r[k]
            line += f"{gbs:>10.1f} ({pct:>4.0f}%)  "
        print(line)
        worst = min(worst, r["porting_to"][1], r["porting_from"][1])
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"lowest porting conversion: {worst:.0f}% of memcpy (target {TARGET:.0f}%: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
