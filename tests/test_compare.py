import math
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
    exact = {"k": 1, "magnitude": np.abs(a)}  # an element-wise result's own bound
    c = compare(a, b, **exact)
    assert c.ok and c.max_ulp == pytest.approx(1.0)
    b[17] = a[17] * 1.001
    c = compare(a, b, **exact)
    assert not c.ok and c.n_mismatched == 1 and c.worst_index == (17,)
    assert c.max_error_to_tolerance > 100


def test_tolerance_scales_with_sqrt_k_and_magnitude():
    e = np.float32([1.0])
    m = np.float32([100.0])
    eps = np.finfo(np.float32).eps
    # an error of 20 eps * |e| fails with K=1 and S=|e| ...
    a = np.float32([1.0 + 20 * eps])
    assert not compare(e, a, k=1, magnitude=np.abs(e)).ok
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
    assert "K=4096 assumed" in text and "sqrt(K)*max|expected|" in text  # the bare rule
    d = c.to_dict()
    assert d["ok"] is False and d["tolerance"]["k"] == 4096 and "formula" in d["tolerance"]
    assert compare(np.float32([1, 2]), np.float32([1, 3]), k=1).to_dict()["tolerance"]["k"] == 1


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


# ---------------------------------------------------------------- the bare rule, everywhere


def _cancelling_conv4_case():
    """Issue 21's case: a correct Float64 conv4 (w (1, 2, 2, 3), x (6, 8, 2, 2), padding 1,
    mode 1) whose sums cancel at some elements. Knet's side from an independent PyTorch
    float64 cross-correlation (mode 1), in TensorFlow layout (N, X2, X1, C)."""
    torch = pytest.importorskip("torch", reason="PyTorch float64 is the independent Knet side")
    r = np.random.default_rng(0)
    w = r.standard_normal((1, 2, 2, 3))
    x = r.standard_normal((6, 8, 2, 2))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))  # (Cout, Cin, W1, W2)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (N, Cin, X1, X2)
    y = torch.nn.functional.conv2d(xt, wt, padding=1).numpy()  # (N, Cout, Y1, Y2)
    expected = np.ascontiguousarray(y.transpose(0, 3, 2, 1))  # (N, Y2, Y1, Cout): X1 the width
    return w, x, expected


def _ports(w, x):
    """Correct ports of that conv4: porting's NumPy reference and, when installed, TensorFlow."""
    from porting import knet, layout

    yield (
        "reference",
        layout.activations_to_tf(
            np.asarray(knet.conv4(w, x, padding=1, mode=1, backend="reference"))
        ),
    )
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return
    from porting import tf as ptf

    x_tf, w_tf = layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1)
    yield "tensorflow", np.asarray(ptf.conv(x_tf, w_tf, padding=1))


@pytest.mark.filterwarnings("ignore:conv4 padding=1 >= kernel extent")
def test_a_correct_port_with_cancellation_passes_every_bare_entry_point(tmp_path):
    import porting
    from porting.cli import main
    from porting.testing import assert_ported_close

    w, x, expected = _cancelling_conv4_case()
    assert expected.shape == (2, 9, 8, 3)  # 432 elements
    for name, actual in _ports(w, x):
        assert actual.dtype == np.float64 and actual.shape == expected.shape, name
        # not a vacuous check: the sides differ, and the element-wise rule (S = |expected|)
        # calls the correct port different where the sums cancel
        assert np.abs(actual - expected).max() > 0, name
        assert not compare(expected, actual, k=1, magnitude=np.abs(expected)).ok, name
        c = porting.compare(expected, actual)
        assert c.ok, (name, str(c))
        assert c.tolerance.k == 4096 and "sqrt(K)*max|expected|" in c.tolerance.magnitude
        assert assert_ported_close(expected, actual).ok, name
        assert porting.diagnose(expected, actual).cause == "rounding", name
        np.save(tmp_path / "e.npy", expected)
        np.save(tmp_path / "a.npy", actual)
        assert main(["diagnose", str(tmp_path / "e.npy"), str(tmp_path / "a.npy")]) == 0, name
        # the exact bound (K and S from w and x) agrees too
        assert porting.diagnose(expected, actual, w=w, x=x, padding=1, mode=1).cause == "rounding"


def test_the_bare_rule_is_one_rule():
    """compare, assert_ported_close and diagnose assume the same K and S."""
    import porting.diagnosis
    import porting.testing
    from porting.comparison import ASSUMED_K, assumed_magnitude

    assert porting.testing.ASSUMED_K == porting.diagnosis.K_ASSUMED == ASSUMED_K == 4096
    e = np.float32([[1.0, -3.0], [0.5, 2.0]])
    a = e + np.float32(1e-4)
    bare = compare(e, a)
    explicit = compare(e, a, k=ASSUMED_K, magnitude=assumed_magnitude(e, ASSUMED_K))
    assert bare.max_error_to_tolerance == explicit.max_error_to_tolerance
    assert bare.worst_tolerance == pytest.approx((64 + 2) * np.finfo(np.float32).eps * 64 * 3)
    d = porting.diagnose(e, a)
    assert d.comparison.max_error_to_tolerance == bare.max_error_to_tolerance
    assert porting.testing.assert_ported_close(e, a).max_error_to_tolerance == (
        bare.max_error_to_tolerance
    )
    # k alone: S = sqrt(k) max|expected|; magnitude alone: K = 4096
    assert compare(e, a, k=9).worst_tolerance == pytest.approx(5 * np.finfo(np.float32).eps * 3 * 3)
    assert compare(e, a, magnitude=np.ones_like(e)).tolerance.k == 4096


def test_ulps_false_leaves_out_only_the_ulp_figure():
    rng = np.random.default_rng(11)
    e = rng.standard_normal(200_000).astype(np.float32)
    a = (e * (1 + 1e-7 * rng.standard_normal(e.size))).astype(np.float32)  # ~1 ULP
    a[7], a[9] = np.nan, e[9] * 2  # a NaN mismatch and a real one
    m = np.abs(e).astype(np.float64) + 1.0
    full, quick = compare(e, a, k=9, magnitude=m), compare(e, a, k=9, magnitude=m, ulps=False)
    assert math.isnan(quick.max_ulp) and full.max_ulp > 0
    df, dq = full.to_dict(), quick.to_dict()
    df.pop("max_ulp"), dq.pop("max_ulp")
    assert df == dq and not quick.ok and quick.n_mismatched == 2


@pytest.mark.parametrize("n", [10, 5 * (1 << 17) + 123])  # one chunk; two threads' halves
@pytest.mark.parametrize("where", [0, -1])  # the first chunk, the last
def test_given_magnitudes_are_checked_wherever_the_odd_one_is(n, where):
    """A negative sum of magnitudes is refused; an infinite one bounds nothing, so that element
    must match exactly: the magnitudes are checked chunk by chunk inside the scan, and the
    element found in the first chunk or the last, on either thread."""
    from porting import comparison

    assert n < 4 * comparison._CHUNK or -(-n // (4 * comparison._CHUNK)) == 2
    e = np.linspace(1.0, 2.0, n, dtype=np.float32)
    up = np.nextafter(e, np.float32(3))  # one ULP off everywhere: within 5 eps * |e|
    m = e.copy()
    assert compare(e, up, k=9, magnitude=m).ok
    bad = m.copy()
    bad[where] = -1e-40  # a negative subnormal: its tolerance rounds to the floor
    with pytest.raises(PortingError, match="negative values"):
        compare(e, up, k=9, magnitude=bad)
    inf = m.copy()
    inf[where] = np.inf
    c = compare(e, up, k=9, magnitude=inf)
    assert not c.ok and c.n_mismatched == 1
    assert c.worst_index == (np.arange(n)[where],)
    exact = up.copy()
    exact[where] = e[where]  # matches exactly where S is infinite
    assert compare(e, exact, k=9, magnitude=inf).ok
