import sys

import numpy as np
import pytest

from porting import PortingError
from porting.comparison import compare


def rng():
    return np.random.default_rng(0)


def test_identical_arrays_agree_with_zero_error():
    a = rng().standard_normal((4, 5, 6)).astype(np.float32)
    c = compare(a, a.copy())
    assert c.ok and c.n_mismatched == 0
    assert c.max_abs_error == 0.0 and c.max_ulp == 0.0


def test_one_ulp_is_within_tolerance_but_a_large_error_is_not():
    a = rng().standard_normal(1000).astype(np.float32)
    b = np.nextafter(a, np.float32(np.inf))
    c = compare(a, b)
    assert c.ok and c.max_ulp == pytest.approx(1.0)
    b[17] = a[17] * 1.001
    c = compare(a, b)
    assert not c.ok and c.n_mismatched == 1 and c.worst_index == (17,)
    assert c.max_error_to_tolerance > 100


def test_tolerance_scales_with_sqrt_k_and_magnitude():
    e = np.float32([1.0])
    m = np.float32([100.0])
    eps = np.finfo(np.float32).eps
    # an error of 20 eps * |e| fails with K=1 and S=|e| ...
    a = np.float32([1.0 + 20 * eps])
    assert not compare(e, a).ok
    # ... but passes when the sum of magnitudes was 100 (cancellation) ...
    assert compare(e, a, k=9, magnitude=m).ok
    # ... and the tolerance reported is (sqrt(K)+2)*eps*S
    c = compare(e, a, k=9, magnitude=m)
    assert c.tolerance.factor == pytest.approx(5.0)
    assert c.worst_tolerance == pytest.approx(5 * eps * 100, rel=1e-6)


def test_float64_expected_float32_actual_uses_float32_eps():
    e = rng().standard_normal(10000)
    a = e.astype(np.float32)  # rounding to float32 is within half an ULP
    c = compare(e, a)
    assert c.ok
    assert c.tolerance.precision == "float32"
    assert c.max_ulp <= 0.5 + 1e-9


def test_tf32_precision_loosens_eps():
    c = compare(np.float32([1.0]), np.float32([1.0]), precision="tf32")
    assert c.tolerance.eps == 2.0**-10


def test_correct_float32_conv_sum_is_within_bound_and_tf32_like_is_not():
    r = rng()
    k = 800
    w = r.standard_normal((2000, k))
    x = r.standard_normal(k)
    exact = w @ x
    s = np.abs(w) @ np.abs(x)
    f32 = w.astype(np.float32) @ x.astype(np.float32)
    assert compare(exact, f32, k=k, magnitude=s).ok

    # TF32-like: inputs rounded to a 10-bit mantissa before the float32 sum
    def tf32(a):
        m, ex = np.frexp(a.astype(np.float32))
        return np.ldexp(np.round(m * 2**11) / 2**11, ex).astype(np.float32)

    t = tf32(w) @ tf32(x)
    assert not compare(exact, t, k=k, magnitude=s).ok


def test_nan_and_inf_positions_must_match():
    a = np.float64([1.0, np.nan, np.inf, -np.inf, 2.0])
    assert compare(a, a.copy()).ok
    b = a.copy()
    b[1] = 0.0
    c = compare(a, b)
    assert not c.ok and c.n_nonfinite_mismatched == 1 and c.worst_index == (1,)
    b = a.copy()
    b[2] = -np.inf
    assert not compare(a, b).ok
    b = a.copy()
    b[4] = np.nan
    c = compare(a, b)
    assert not c.ok and c.n_mismatched == 1


def test_shapes_must_match_exactly():
    with pytest.raises(PortingError, match=r"shape \(2, 3\).*shape \(3, 2\)"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(PortingError, match="no broadcasting"):
        compare(np.zeros((2, 3)), np.zeros((1, 3)))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(k=0), "k=0"),
        (dict(k=2.5), "k=2.5"),
        (dict(magnitude=np.zeros(3)), "magnitude has shape"),
        (dict(precision="int8"), "precision='int8'"),
        (dict(k=float("nan")), "k=nan"),
        (dict(k=10**30), "k=<integer of about 30 digits>: expected at most 2\\*\\*53"),
        (dict(k=10**5000), "k=<integer of about 5000 digits>"),
    ],
)
def test_bad_arguments(bad, match):
    with pytest.raises(PortingError, match=match):
        compare(np.zeros((2, 2)), np.zeros((2, 2)), **bad)


def test_non_float_input_is_rejected():
    with pytest.raises(PortingError, match="dtype int64"):
        compare(np.arange(3), np.arange(3.0))


@pytest.mark.skipif(
    np.dtype(np.longdouble).itemsize <= 8, reason="long double is float64 on this platform"
)
def test_extended_precision_is_refused_clearly():
    e = np.ones(3, dtype=np.longdouble)
    for args in [(e, np.ones(3)), (np.ones(3), e), (e, e)]:
        with pytest.raises(PortingError, match=r"float128 .*extended precision.*astype"):
            compare(*args)
    with pytest.raises(PortingError, match="magnitude has dtype float128"):
        compare(np.ones(3), np.ones(3), magnitude=e)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulps_are_read_in_the_arrays_own_byte_order(dtype):
    """Big-endian, little-endian and mixed inputs give the same ULP distances, counted here by
    hand with nextafter: element i of `actual` is i ULPs above `expected`."""
    e = np.array([1.0, 3.0, 0.75, 1000.0, 2.0**-14], dtype=dtype)
    a = e.copy()
    for i in range(e.size):
        for _ in range(i):
            a[i] = np.nextafter(a[i], np.inf, dtype=dtype)
    native = compare(e, a)
    assert native.max_ulp == e.size - 1
    for be, ba in [(">", ">"), (">", "<"), ("<", ">"), ("<", "<")]:
        c = compare(e.astype(e.dtype.newbyteorder(be)), a.astype(a.dtype.newbyteorder(ba)))
        assert c.max_ulp == e.size - 1, (be, ba, c.max_ulp)
        assert (c.ok, c.n_mismatched, c.max_abs_error, c.worst_index) == (
            native.ok,
            native.n_mismatched,
            native.max_abs_error,
            native.worst_index,
        )


def test_fortran_and_c_ordered_inputs_compare_elementwise():
    a = np.asfortranarray(rng().standard_normal((3, 4, 5)))
    b = np.ascontiguousarray(a)
    b[2, 1, 0] += 1.0
    c = compare(a, b)
    assert not c.ok and c.worst_index == (2, 1, 0)
    assert c.worst_expected == a[2, 1, 0] and c.worst_actual == b[2, 1, 0]


def test_chunk_boundaries_do_not_lose_the_worst_element():
    mod = sys.modules["porting.comparison"]

    n = mod._CHUNK * 3 + 7
    a = rng().standard_normal(n).astype(np.float32)
    b = a.copy()
    b[mod._CHUNK * 2 + 3] += 5.0
    c = compare(a, b)
    assert c.worst_index == (mod._CHUNK * 2 + 3,) and c.n_mismatched == 1


def test_report_text_and_dict():
    c = compare(np.float32([1, 2]), np.float32([1, 3]))
    text = str(c)
    assert "DIFFER" in text and "(sqrt(K)+2)*eps*S" in text
    d = c.to_dict()
    assert d["ok"] is False and d["tolerance"]["k"] == 1 and "formula" in d["tolerance"]


@pytest.mark.parametrize("orders", ["CC", "FC"])
def test_compare_holds_at_most_one_input_sized_buffer(orders):
    # Issue 2: at most one extra input-sized buffer (here: none when the orders match, one
    # copy when they differ). NumPy reports its allocations to tracemalloc.
    import tracemalloc

    shape = (128, 256, 256)  # 32 MB in float32
    r = rng()
    a = r.standard_normal(shape, dtype=np.float32)
    b = np.array(a * np.float32(1 + 1e-7), order=orders[1])
    a = np.array(a, order=orders[0])
    compare(a, b)  # warm up
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    c = compare(a, b)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert c.ok
    # chunk temporaries are a fixed few MB (two threads x one chunk) whatever the input size;
    # a copy only when the memory orders differ
    chunk_allowance = 8 << 20
    limit = (0 if orders == "CC" else a.nbytes) + chunk_allowance
    assert peak <= limit, f"peak extra {peak} bytes for {a.nbytes}-byte inputs"


def test_report_dict_is_strict_json_with_non_finite_figures():
    """NaN on one side only: the dict still dumps with allow_nan=False, the non-finite figures
    as strings."""
    import json

    c = compare(np.float32([0.0, 1.0, 2.0]), np.float32([0.0, np.nan, 2.0]))
    assert not c.ok and c.n_nonfinite_mismatched == 1
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["worst_actual"] == "nan" and d["worst_index"] == [1]
    assert d["shape"] == [3] and d["n_mismatched"] == c.n_mismatched
