"""A reduced run of benchmarks/bench_diagnose.py: the accuracy targets on fixed seeds.

20 random broken ports per cause and 20 correct ports per dtype, the TF side computed by NumPy
in a different accumulation order (no TensorFlow import); the full benchmark (200 per cause,
TensorFlow as the TF side) is `python benchmarks/bench_diagnose.py`.
"""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_diagnose.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_diagnose", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_targets_on_a_reduced_benchmark(bench, seed):
    res = bench.run(20, seed, engine="numpy")
    acc = bench.accuracy(res["confusion"])
    table = bench.format_table(res["confusion"], f"seed {seed}")
    for cause in bench.BROKEN:
        assert res["confusion"][cause] and sum(res["confusion"][cause].values()) == 20
        assert acc[cause] >= bench.TARGET_ACCURACY, table
    for label in ("rounding_float32", "rounding_float64"):
        row = res["confusion"][label]
        assert sum(row.values()) == 20
        assert row == {"rounding": 20}, f"false alarm on a correct port\n{table}"


def test_bench_cases_are_genuine(bench):
    """Broken cases really differ beyond the bound; correct ones really differ a little."""
    import numpy as np

    rng = np.random.default_rng(5)
    eng = bench.NumpyEngine()
    for cause in bench.BROKEN:
        case = bench.make_case(cause, rng, eng)
        assert bench._visible(
            case["expected"], case["actual"], case["context"], case["cfg"].get("alpha", 1.0)
        ), cause
    nonzero = 0
    for dt in ("float32", "float64"):
        for _ in range(5):
            case = bench.make_case("rounding", rng, eng, dt)
            assert str(case["actual"].dtype) == dt
            assert not bench._visible(
                case["expected"], case["actual"], case["context"], case["cfg"].get("alpha", 1.0)
            )
            e, a = case["expected"], case["actual"]
            nonzero += e.shape == a.shape and bool(
                np.any(e.astype(np.float64) != a.astype(np.float64))
            )
    assert nonzero >= 5  # rounding differences, not identical computations
