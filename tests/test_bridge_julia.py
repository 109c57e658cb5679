"""Knet (or NNlib) through juliacall, against the golden vectors and the NumPy reference.

Every test here needs a working Julia (found by `porting.bridge.plan_auto`, the same discovery
and probe `backend="auto"` uses) and is skipped with the reason otherwise. Install one with
`pip install 'porting[julia]' && porting doctor --install-julia`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from porting import knet
from porting.bridge import plan_auto
from porting.errors import PortingError
from porting.geometry import ConvGeometry

PLAN = plan_auto()
BACKEND = PLAN.backend
pytestmark = [
    pytest.mark.julia,
    pytest.mark.skipif(
        BACKEND not in ("julia", "julia-nnlib"),
        reason=f"no working Julia for the Knet backend: {PLAN.reason}",
    ),
]

GOLDEN = Path(__file__).parent / "golden" / "knet_golden.json"
DTYPES = {"Float32": np.float32, "Float64": np.float64}
ROOT = Path(__file__).resolve().parent.parent


def _cases() -> list[dict]:
    if not GOLDEN.is_file():
        return []
    return json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]


def _array(spec: dict, dtype) -> np.ndarray:
    return np.asarray(spec["data"], dtype=dtype).reshape(spec["size"], order="F")


def _tolerance(case: dict, ins: dict, expected: np.ndarray) -> np.ndarray:
    """The golden file's rule: printed digits, or the accumulation bound K * eps * M."""
    if case["digits"] is not None:
        mag = np.abs(expected)
        exponent = np.floor(np.log10(np.where(mag > 0, mag, 1.0)))
        return 0.5 * 10.0 ** (exponent - case["digits"] + 1) + (case["source_error"] or 0.0)
    eps = np.finfo(DTYPES[case["eltype"]]).eps
    alpha = abs(case["kwargs"].get("alpha", 1))
    x = np.abs(ins["x"].astype(np.float64))
    if case["op"] in ("conv4", "deconv4"):
        w = np.abs(ins["w"].astype(np.float64))
        k, m = w.size, alpha * w.sum() * x.max()
    elif case["op"] == "pool":
        window = case["kwargs"].get("window", 2)
        k = window ** (x.ndim - 2) if isinstance(window, int) else math.prod(window)
        m = alpha * x.max()
    else:
        k, m = 0, 0.0
    return np.full(expected.shape, k * eps * m)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_golden_case_through_julia(case):
    dtype = DTYPES[case["eltype"]]
    ins = {k: _array(v, dtype) for k, v in case["inputs"].items()}
    op = getattr(knet, case["op"])
    args = (ins["w"], ins["x"]) if "w" in ins else (ins["x"],)
    got = op(*args, backend=BACKEND, **case["kwargs"])
    assert got.backend == BACKEND and got.dtype == dtype
    expected = _array(case["expected"], np.float64)
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= _tolerance(case, ins, expected)), (
        f"{case['name']}: max error {err.max():.3g}"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [0, 1])
def test_random_conv4_matches_reference_within_accumulation_bound(dtype, mode):
    rng = np.random.default_rng(0)
    w = np.asfortranarray(rng.standard_normal((3, 3, 4, 5)).astype(dtype))
    x = np.asfortranarray(rng.standard_normal((12, 10, 4, 2)).astype(dtype))
    kw = dict(padding=1, stride=(1, 2), mode=mode)
    got = knet.conv4(w, x, backend=BACKEND, **kw)
    ref = knet.conv4(w.astype(np.float64), x.astype(np.float64), backend="reference", **kw)
    bound = knet.conv4(
        np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), backend="reference", **kw
    )
    k = w.shape[0] * w.shape[1] * w.shape[2]
    assert got.dtype == dtype and got.flags.f_contiguous
    assert np.all(np.abs(got - ref) <= k * np.finfo(dtype).eps * bound + np.finfo(dtype).tiny)


def test_pool_deconv4_mat_match_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 8, 3, 2))
    for mode in (0, 1, 2):
        np.testing.assert_allclose(
            knet.pool(x, window=3, padding=1, stride=2, mode=mode, backend=BACKEND),
            knet.pool(x, window=3, padding=1, stride=2, mode=mode, backend="reference"),
            rtol=1e-13, atol=1e-13,
        )  # fmt: skip
    w = rng.standard_normal((3, 3, 2, 3))
    np.testing.assert_allclose(
        knet.deconv4(w, x, stride=2, padding=1, backend=BACKEND),
        knet.deconv4(w, x, stride=2, padding=1, backend="reference"),
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip
    assert np.array_equal(knet.mat(x, backend=BACKEND), knet.mat(x, backend="reference"))


def test_julia_error_keeps_julias_message():
    from porting.bridge import resolve_backend

    impl = resolve_backend(BACKEND).impl
    w = np.ones((3, 3, 3, 2), np.float32)
    x = np.ones((5, 5, 4, 1), np.float32)  # 3 vs 4 input channels, bypassing Python's check
    with pytest.raises(PortingError) as e:
        impl.conv4(w, x, ConvGeometry.from_knet(2), 1.0)
    assert "DimensionMismatch" in str(e.value) or "channel" in str(e.value).lower()


def test_versions_are_reported():
    from porting.bridge import resolve_backend

    r = resolve_backend(BACKEND)
    versions = r.impl.versions
    assert versions.get("julia") and versions.get("nnlib")
    if BACKEND == "julia":
        assert versions.get("knet") == "1.4.10"
    assert PLAN.discovery.julia.version_text in r.reason


def test_in_process_juliacall_in_a_process_without_tensorflow(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from porting.knet import conv4
        w = np.asfortranarray(np.ones((3, 3, 2, 4), np.float32))
        x = np.asfortranarray(np.ones((6, 5, 2, 1), np.float32))
        y = conv4(w, x, padding=1, backend={BACKEND!r})
        assert y.backend == {BACKEND!r} and y.dtype == np.float32, (y.backend, y.dtype)
        assert float(y[2, 2, 0, 0]) == 18.0
        assert "juliacall" in sys.modules and "tensorflow" not in sys.modules
        print("ok")
        """
    )
    env = dict(os.environ, PORTING_JULIA_WORKER="no", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
