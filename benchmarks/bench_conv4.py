"""Throughput of the reference `porting.knet.conv4` against `tf.nn.conv2d`, in the same run.

The issue's target (issue 20): Float32 reference conv4 on Julia-indexed inputs, as a Knet user
has them (Fortran-ordered `(W, H, C, N)` data, `(K, K, C, F)` kernel, mode 0 as Knet's default),
at least 0.9x the throughput of `tf.nn.conv2d` on the same numbers already in TensorFlow's layout
(NHWC data, HWIO kernel rotated 180 degrees, explicit symmetric padding keeping the size,
stride 1). Both use every core this process may run on: the reference's threads take its jobs
(image batches x output rows) in turn, each running OpenBLAS on one thread (threadpoolctl);
TensorFlow runs oneDNN's threads.

Timings on a shared machine are noisy, so the contestants are interleaved: each round calls
each one once untimed (so that the other library's threads, still spinning from its last call,
have settled) and then times `--per` calls. The ratio reported is the median over rounds of
each round's ratio (TensorFlow's time / the reference's, each its best of the round's calls),
which a busy neighbour moves far less than either time; the best-of-all-rounds times and their
ratio follow. `--before REV` adds the reference conv4 of git revision REV
(porting/knet/reference.py as committed there) as a third contestant in the same rounds, for
before/after figures measured side by side. The script reports; it does not assert (exit
status 0 whatever the ratio).

    python benchmarks/bench_conv4.py                # 30 rounds: about 10 s idle, minutes loaded
    python benchmarks/bench_conv4.py --quick        # 3 rounds
    python benchmarks/bench_conv4.py --before main  # with main's reference beside this one

The reference's speed is OpenBLAS's (numpy's BLAS). The OpenBLAS in numpy 2.4's wheels does not
recognise AMD Zen 5 and runs its AVX2 ("Haswell") kernels there, about two thirds of what its
AVX-512 kernels give (OpenMathLib/OpenBLAS#6029); the first lines say which kernels ran, and
`OPENBLAS_CORETYPE=SkylakeX` in the environment before Python starts selects the AVX-512 ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

# Runnable from a checkout without installing (as the other benchmarks are).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = [  # (N, H, W, C, K, F)
    (8, 56, 56, 64, 3, 64),
    (32, 28, 28, 32, 5, 64),
    (1, 224, 224, 3, 7, 64),
]
TARGET = 0.9


def _threads() -> str:
    """The reference's threads and the BLAS's own, as threadpoolctl sees them."""
    from porting._transpose import _threads as porting_threads

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"{porting_threads(None)} porting threads; threadpoolctl missing (one thread)"
    blas = [
        f"{d['internal_api']} {d.get('architecture')} x{d['num_threads']}"
        for d in threadpool_info()
        if d["user_api"] == "blas"
    ]
    return f"reference: up to {porting_threads(None)} threads; BLAS: {', '.join(blas)}"


def _blas_core() -> str:
    """OpenBLAS's kernel choice, when numpy's OpenBLAS says (best effort, Linux only)."""
    try:
        import ctypes

        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.split()[-1]})
        for lib in libs:
            handle = ctypes.CDLL(lib)
            for name in (
                "scipy_openblas_get_corename64_",
                "openblas_get_corename64_",
                "openblas_get_corename",
            ):
                fn = getattr(handle, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    return f"OpenBLAS core {fn().decode()} ({os.path.basename(lib)})"
    except Exception:  # noqa: BLE001 - purely informational
        pass
    return "BLAS core unknown"


def _inputs(shape, seed):
    n, h, w, c, k, f = shape
    rng = np.random.default_rng(seed)
    x_nhwc = rng.standard_normal((n, h, w, c), dtype=np.float32)
    w_hwio = rng.standard_normal((k, k, c, f), dtype=np.float32)
    # Knet's view of the same numbers: x (W, H, C, N) Fortran-ordered; with mode 0 (true
    # convolution) the Knet kernel is TF's rotated 180 degrees, (W, H) order: (K, K, C, F)
    # (docs/knet.md#flip, docs/layout.md#width-axis, #kernels).
    x_knet = np.asfortranarray(x_nhwc.transpose(2, 1, 3, 0))
    w_knet = np.asfortranarray(w_hwio[::-1, ::-1].transpose(1, 0, 2, 3))
    return x_nhwc, w_hwio, x_knet, w_knet


def race(fns: dict, rounds: int, per: int) -> dict:
    """Each callable's time in ms per round (its best of `per` calls after an untimed one),
    the callables interleaved round by round."""
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            best = float("inf")
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            times[name].append(best * 1e3)
    return times


def _load_before(rev: str):
    """porting/knet/reference.py as committed at git revision `rev`, as a module of its own."""
    import importlib.util
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(
        ["git", "-C", root, "show", f"{rev}:porting/knet/reference.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = os.path.join(tempfile.mkdtemp(), "reference_before.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("reference_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (a few seconds)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 30, quick 3)")
    ap.add_argument("--per", type=int, default=2, help="timed calls per contestant per round")
    ap.add_argument("--before", metavar="REV", help="also time the reference of git revision REV")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 30)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        print(f"TensorFlow is not importable ({e}); nothing to compare against")
        return 0

    from porting.geometry import ConvGeometry
    from porting.knet import conv4, mlas

    before = _load_before(args.before) if args.before else None
    print(
        f"numpy {np.__version__}, TensorFlow {tf.__version__}, Python {platform.python_version()}"
    )
    print(
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable); {_blas_core()}"
    )
    print(
        _threads()
        + "; OPENBLAS_CORETYPE="
        + repr(os.environ.get("OPENBLAS_CORETYPE"))
        + ", OPENBLAS_L2_SIZE="
        + repr(os.environ.get("OPENBLAS_L2_SIZE"))
    )
    print(
        f"{rounds} interleaved rounds x {args.per} calls; ratio = reference throughput / "
        f"TensorFlow throughput = tf ms / reference ms, the median of the rounds' ratios "
        f"(best: of the best-of-all-rounds times); target >= {TARGET}; {_load()}"
    )
    print(f"reference's Float32 convolutions: {mlas.describe()}")
    if mlas.available():
        print(
            "'numpy': the reference on NumPy's kernel (PORTING_CONV_KERNEL=numpy); 'reused': "
            "inside mlas.reusing_weights(), as verify-data runs it (a prepared session per "
            "kernel, the kernel's bytes hashed each call)"
        )
    if before is not None:
        print(f"'before': porting/knet/reference.py at {args.before}, in the same rounds")
    print()
    head = (
        f"{'(N, H, W, C, K, F)':<26}{'contestant':<11}{'median ms':>10}{'best ms':>9}"
        f"{'ratio':>7}{'best':>6}  result  max rel diff"
    )
    print(head)
    print("-" * len(head))
    for i, shape in enumerate(SHAPES):
        x_nhwc, w_hwio, x_knet, w_knet = _inputs(shape, seed=i)
        p = shape[4] // 2
        xt, wt = tf.constant(x_nhwc), tf.constant(w_hwio)
        pads = [[0, 0], [p, p], [p, p], [0, 0]]

        def run_tf(xt=xt, wt=wt, pads=pads):
            return tf.nn.conv2d(xt, wt, strides=1, padding=pads).numpy()

        def run_ref(w=w_knet, x=x_knet, p=p):
            return conv4(w, x, padding=p, backend="reference")

        def run_numpy(w=w_knet, x=x_knet, p=p):
            with mlas.kernel("numpy"):
                return conv4(w, x, padding=p, backend="reference")

        kept = mlas.WeightSessions()  # this shape's prepared session, kept over the rounds

        def run_reused(w=w_knet, x=x_knet, p=p, kept=kept):
            with mlas.reusing_weights(kept):
                return conv4(w, x, padding=p, backend="reference")

        fns = {"tf": run_tf, "reference": run_ref}
        if mlas.available():
            fns.update(reused=run_reused, numpy=run_numpy)
        if before is not None:
            geom = ConvGeometry.from_knet(2, padding=p)
            fns["before"] = lambda w=w_knet, x=x_knet, g=geom: before.conv4(w, x, g)
        # Same numbers first (so the timing compares like with like): NHWC vs (W, H, F, N).
        tfy = run_tf()
        errs = {}
        for name in fns:
            if name != "tf":
                ref = np.asarray(fns[name]()).transpose(3, 1, 0, 2)
                errs[name] = float(np.max(np.abs(ref - tfy)) / max(np.max(np.abs(tfy)), 1e-30))
        t = race(fns, rounds, args.per)
        tf_ms = np.array(t["tf"])
        print(f"{str(shape):<26}{'tf':<11}{np.median(tf_ms):>10.2f}{tf_ms.min():>9.2f}", flush=True)
        for name in fns:
            if name == "tf":
                continue
            ms = np.array(t[name])
            ratio = float(np.median(tf_ms / ms))
            best = float(tf_ms.min() / ms.min())
            verdict = "pass" if ratio >= TARGET else "FAIL"
            print(
                f"{'':<26}{name:<11}{np.median(ms):>10.2f}{ms.min():>9.2f}{ratio:>7.2f}"
                f"{best:>6.2f}  {verdict:<6}  {errs[name]:.1e}",
                flush=True,
            )
    print(f"\n{_load()} (a busy machine: rerun, or raise --rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
