"""A reduced run of benchmarks/bench_diagnose_layers.py: the accuracy targets on fixed seeds.

30 random broken ports per layer-level cause and 30 correct ports per dtype (10 per layer
type), the port's side computed by NumPy in Keras's order of operations (no TensorFlow
import); the full benchmark (200 per cause, Keras layers as the port) is
`python benchmarks/bench_diagnose_layers.py`.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_diagnose_layers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_diagnose_layers", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_targets_on_a_reduced_benchmark(bench, seed):
    res = bench.run(30, seed, engine="numpy")
    acc = bench.accuracy(res["confusion"])
    table = bench.format_table(res["confusion"], res["reproduced"])
    for cause in bench.BROKEN:
        assert sum(res["confusion"][cause].values()) == 30
        assert acc[cause] >= bench.TARGET_ACCURACY, table
    labels = [k for k in res["confusion"] if k.startswith("rounding")]
    assert len(labels) == 6  # 3 layer types x float32, float64
    for label in labels:
        row = res["confusion"][label]
        assert row == {"rounding": 10}, f"false alarm on a correct port\n{table}"


def test_bench_cases_are_genuine(bench):
    """Broken ports really differ from Knet's output; correct float32 ones mostly differ a
    little (real rounding, not a copy of the expected values)."""
    rng = np.random.default_rng(4)
    eng = bench.NumpyEngine()
    for cause in bench.BROKEN:
        for _ in range(5):
            case = bench.make_case(cause, rng, eng)
            a, e = case["args"][-1], case["kw"]["expected"]
            assert a.shape == e.shape
            assert np.max(np.abs(a.astype(np.float64) - e)) > 1e-5 * max(1.0, np.max(np.abs(e)))
    differ = 0
    for _ in range(10):
        case = bench.make_case("rounding", rng, eng, "float32", "batchnorm")
        a, e = case["args"][-1], case["kw"]["expected"]
        differ += bool(np.any(a != e))
    assert differ >= 5
