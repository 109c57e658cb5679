"""Worker-process cost: moving a large array to the worker and back, and per-call overhead.

    python benchmarks/bench_worker.py           # 256 MB, 7 repeats, 3000 small calls
    python benchmarks/bench_worker.py --quick   # 64 MB, 3 repeats, 300 small calls

1. A 256 MB float32 array goes to the worker and a 256 MB result comes back (`mat`, which is a
   reshape, so the worker computes nothing). Compared with one `np.copyto` of 256 MB into memory
   already touched (what sending costs at best) plus one into fresh memory (what any new result
   costs at best, page faults included).
2. A small `conv4` (3x3 kernel, 2->4 channels, 8x8 input) in-process vs through the worker: the
   difference is the per-call overhead. A bare round trip (`ping`) is shown too.

The worker hosts the NumPy reference backend, so this measures the plumbing, not Julia.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from porting.bridge.worker import WorkerBackend  # noqa: E402
from porting.geometry import ConvGeometry  # noqa: E402
from porting.knet import reference  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_call(fn, calls: int, batches: int = 5) -> float:
    fn()
    best = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best.append((time.perf_counter() - t0) / calls)
    return statistics.median(best)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MB, fewer repeats")
    args = ap.parse_args(argv)
    mb = 64 if args.quick else 256
    repeats = 3 if args.quick else 7
    calls = 300 if args.quick else 3000

    side = int(np.sqrt(mb * 2**20 // 16))  # (side, side, 4, 1) float32 = mb MB
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.standard_normal((side, side, 4, 1), dtype=np.float32))
    size_mb = x.nbytes / 2**20

    rows: list[tuple[str, str, str]] = []

    def row(label: str, seconds: float, note: str = "") -> None:
        if seconds >= 1e-3:
            value = f"{seconds * 1e3:9.1f} ms"
        else:
            value = f"{seconds * 1e6:9.1f} us"
        rows.append((label, value, note))

    reused = np.empty_like(x, order="F")
    reused.fill(0)  # touch every page once
    t_copy_reused = median_time(lambda: np.copyto(reused, x), repeats)

    def copy_fresh():
        np.copyto(np.empty_like(x, order="F"), x)

    t_copy_fresh = median_time(copy_fresh, repeats)
    row(
        f"np.copyto {size_mb:.0f} MB, memory already touched",
        t_copy_reused,
        "best case for sending",
    )
    row(f"np.copyto {size_mb:.0f} MB, fresh memory", t_copy_fresh, "best case for any new result")

    with WorkerBackend("reference") as wk:
        first = time.perf_counter()
        y = wk.mat(x, 3)
        first = time.perf_counter() - first
        assert np.array_equal(y, reference.mat(x, 3))
        del y
        t_put = median_time(lambda: wk._put(0, x), repeats)
        t_round = median_time(lambda: wk.mat(x, 3), repeats)
        row(f"worker: send {size_mb:.0f} MB (copy into shared memory)", t_put)
        row(
            f"worker: {size_mb:.0f} MB there and {size_mb:.0f} MB back",
            t_round,
            f"{t_round / (t_copy_reused + t_copy_fresh):.2f}x the two copies above",
        )
        row("worker: first call (segments created, pages faulted)", first)

        w = np.asfortranarray(
            np.random.default_rng(1).standard_normal((3, 3, 2, 4), dtype=np.float32)
        )
        xs = np.asfortranarray(
            np.random.default_rng(2).standard_normal((8, 8, 2, 1), dtype=np.float32)
        )
        g = ConvGeometry.from_knet(2, padding=1)
        assert np.array_equal(wk.conv4(w, xs, g, 1.0), reference.conv4(w, xs, g, 1.0))
        t_in = per_call(lambda: reference.conv4(w, xs, g, 1.0), calls)
        t_wk = per_call(lambda: wk.conv4(w, xs, g, 1.0), calls)
        t_ping = per_call(wk.ping, calls)
        row("small conv4, in-process", t_in)
        row(
            "small conv4, through the worker",
            t_wk,
            f"overhead {(t_wk - t_in) * 1e6:.0f} us per call",
        )
        row("bare round trip (ping)", t_ping)

    print(
        f"# bench_worker  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, NumPy {np.__version__}; median of {repeats} repeats, "
        f"{calls} small calls x 5 batches)"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'measurement'.ljust(width)} | {'time':>12} | note |")
    print(f"| {'-' * width} | {'-' * 12:>12} | ---- |")
    for label, value, note in rows:
        print(f"| {label.ljust(width)} | {value:>12} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
