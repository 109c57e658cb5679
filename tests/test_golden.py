"""Golden vectors: porting.knet against known-good Knet results from outside sources.

The table is tests/golden/knet_golden.json (also read by julia/test/runtests.jl); its header states
the layout and the tolerance rule implemented by `tolerance` below. Backends come from
PORTING_GOLDEN_BACKENDS (comma-separated, default "reference"), e.g. "reference,julia" where a
Julia bridge is available; backends other than "reference" carry the `julia` marker.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from porting import knet

GOLDEN = Path(__file__).parent / "golden" / "knet_golden.json"
DTYPES: dict[str, type[np.floating]] = {"Float32": np.float32, "Float64": np.float64}
OPS = {
    "conv4": ({"w", "x"}, {"padding", "stride", "dilation", "mode", "alpha"}),
    "deconv4": ({"w", "x"}, {"padding", "stride", "dilation", "mode", "alpha"}),
    "pool": ({"x"}, {"window", "padding", "stride", "mode", "alpha"}),
    "mat": ({"x"}, {"dims"}),
}
CASE_FIELDS = {
    "name",
    "op",
    "eltype",
    "kwargs",
    "inputs",
    "expected",
    "digits",
    "source_error",
    "source",
}


def load_golden() -> dict:
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


DOC = load_golden()
CASES = {c["name"]: c for c in DOC["cases"]}
BACKENDS = [
    b.strip()
    for b in os.environ.get("PORTING_GOLDEN_BACKENDS", "reference").split(",")
    if b.strip()
]


def julia_array(spec: dict, dtype) -> np.ndarray:
    """`{"size", "data"}` (column-major data) -> a Julia-indexed NumPy array."""
    return np.asarray(spec["data"], dtype=dtype).reshape(spec["size"], order="F")


def inputs(case: dict) -> dict[str, np.ndarray]:
    dtype = DTYPES[case["eltype"]]
    return {k: julia_array(v, dtype) for k, v in case["inputs"].items()}


def run(case: dict, backend: str, **override) -> np.ndarray:
    kwargs = {**case["kwargs"], **override}
    a = inputs(case)
    op = getattr(knet, case["op"])
    if case["op"] in ("conv4", "deconv4"):
        return op(a["w"], a["x"], backend=backend, **kwargs)
    return op(a["x"], backend=backend, **kwargs)


def _spatial(value, nd: int) -> list[int]:
    return [value] * nd if isinstance(value, int) else list(value)


def tolerance(case: dict, expected: np.ndarray) -> np.ndarray:
    """Elementwise tolerance: the rule in the golden file's "tolerance" header."""
    if case["digits"] is not None:
        mag = np.abs(expected)
        exponent = np.floor(np.log10(np.where(mag > 0, mag, 1.0)))
        half_unit = 0.5 * 10.0 ** (exponent - case["digits"] + 1)
        return half_unit + (case["source_error"] or 0.0)
    a = inputs(case)
    eps = np.finfo(DTYPES[case["eltype"]]).eps
    alpha = abs(case["kwargs"].get("alpha", 1))
    x = a["x"].astype(np.float64)
    if case["op"] in ("conv4", "deconv4"):
        w = a["w"].astype(np.float64)
        k, m = w.size, alpha * np.abs(w).sum() * np.abs(x).max()
    elif case["op"] == "pool":
        k = math.prod(_spatial(case["kwargs"].get("window", 2), x.ndim - 2))
        m = alpha * np.abs(x).max()
    else:
        k, m = 0, 0.0
    return np.full(expected.shape, k * eps * m)


def check(case: dict, got: np.ndarray) -> tuple[bool, str]:
    """(within tolerance?, description of the worst element)."""
    expected = julia_array(case["expected"], np.float64)
    if tuple(got.shape) != expected.shape:
        return False, f"shape {tuple(got.shape)}, expected {expected.shape}"
    err = np.abs(np.asarray(got, dtype=np.float64) - expected)
    tol = tolerance(case, expected)
    ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1), np.where(err > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    julia_index = tuple(int(i) + 1 for i in worst)
    msg = (
        f"{case['name']}: worst at Julia index {julia_index}: got {float(got[worst])!r}, "
        f"expected {float(expected[worst])!r}, |error| {float(err[worst]):.3g} vs tolerance "
        f"{float(tol[worst]):.3g}"
    )
    return bool(np.all(err <= tol)), msg


def test_golden_file_is_well_formed():
    assert DOC["format"] == "porting-knet-golden" and DOC["version"] == 1
    assert {"exact", "printed"} <= set(DOC["tolerance"])
    assert len(CASES) == len(DOC["cases"]), "case names must be unique"
    for c in DOC["cases"]:
        name = c.get("name")
        assert set(c) == CASE_FIELDS, f"{name}: fields {sorted(c)}"
        assert c["op"] in OPS, f"{name}: op {c['op']!r}"
        want_inputs, allowed_kwargs = OPS[c["op"]]
        assert set(c["inputs"]) == want_inputs, f"{name}: inputs {sorted(c['inputs'])}"
        assert set(c["kwargs"]) <= allowed_kwargs, f"{name}: kwargs {sorted(c['kwargs'])}"
        assert c["eltype"] in DTYPES, f"{name}: eltype {c['eltype']!r}"
        assert c["source"].strip(), f"{name}: no source"
        assert c["digits"] is None or (isinstance(c["digits"], int) and c["digits"] > 0), name
        if c["digits"] is None:
            assert c["source_error"] is None, f"{name}: exact cases have no source_error"
        for spec in (*c["inputs"].values(), c["expected"]):
            assert math.prod(spec["size"]) == len(spec["data"]), f"{name}: size vs data length"
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in spec["data"]), name


@pytest.mark.parametrize(
    "backend",
    [b if b == "reference" else pytest.param(b, marks=pytest.mark.julia) for b in BACKENDS],
)
@pytest.mark.parametrize("name", list(CASES))
def test_case(name, backend):
    case = CASES[name]
    got = run(case, backend)
    assert got.dtype == DTYPES[case["eltype"]], f"{name}: result dtype {got.dtype}"
    ok, msg = check(case, got)
    assert ok, msg


def _kernel_is_rotation_symmetric(w: np.ndarray) -> bool:
    nd = w.ndim - 2
    return bool(np.array_equal(w, np.flip(w, axis=tuple(range(nd)))))


FLIP_CASES = [
    n
    for n, c in CASES.items()
    if c["op"] in ("conv4", "deconv4") and not _kernel_is_rotation_symmetric(inputs(c)["w"])
]


@pytest.mark.parametrize("name", FLIP_CASES)
def test_each_flip_case_rejects_the_other_mode(name):
    """The tolerance is tight enough that a kernel flipped the wrong way fails every such case."""
    case = CASES[name]
    other = 1 - case["kwargs"].get("mode", 0)
    ok, msg = check(case, run(case, "reference", mode=other))
    assert not ok, f"mode={other} also passes: {msg}"


def test_printed_tolerance_is_half_a_unit_of_the_last_digit():
    case = {"digits": 6, "source_error": None}
    tol = tolerance(case, np.array([194.694, 0.368195, -4.38531, 0.798015]))
    np.testing.assert_allclose(tol, [5e-4, 5e-7, 5e-6, 5e-7], rtol=1e-12)


def test_exact_tolerance_is_the_accumulation_bound():
    case = CASES["conv4_ones3x3_on_1to16"]  # K = 9 terms, sum|w| = 9, max|x| = 16
    tol = tolerance(case, julia_array(case["expected"], np.float64))
    np.testing.assert_allclose(tol, 9 * np.finfo(np.float64).eps * 9 * 16, rtol=1e-12)
    mat = CASES["mat_default_3d"]
    assert not tolerance(mat, julia_array(mat["expected"], np.float64)).any()


def test_check_flags_a_one_unit_error_in_an_exact_case():
    case = CASES["conv4_2x2_on_3x3_mode1"]
    got = julia_array(case["expected"], np.float64)
    assert check(case, got)[0]
    got[1, 0, 0, 0] += 1
    ok, msg = check(case, got)
    assert not ok and "Julia index (2, 1, 1, 1)" in msg
