"""Layout converters (`porting.layout`) and the copy behind them (`porting._transpose`).

Every round trip must be bit-exact: the converters only move bytes. `transpose_copy` must equal
`np.ascontiguousarray(a.transpose(perm))` exactly, for any dtype, permutation and memory order,
whichever copy strategy its planner picks; the small-tile settings below make small arrays go
through every strategy.
"""

from __future__ import annotations

import contextlib
import doctest
import itertools
import os
import select
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import porting._transpose as tr
from porting import PortingError
from porting.knet import mat
from porting.layout import (
    activations_from_tf,
    activations_to_tf,
    bias_from_tf,
    bias_to_tf,
    dense_from_tf,
    dense_to_tf,
    kernel_from_tf,
    kernel_to_tf,
)

SPATIALS = ("reverse", "keep")
FLOATS = (np.float32, np.float64)

# Thresholds scaled down so that arrays of a few KB are planned, tiled, staged and threaded.
SMALL_TILES = {
    "_MIN_BYTES": 0,
    "_THREAD_BYTES": 0,
    "_TILE_BYTES": 2048,
    "_CHUNK_BYTES": 8192,
    "_STAGE_BYTES": 8192,
    "_MIN_TILE_ELEMS": 1,
    "_L2_REUSE": 1024,
    "_REPEAT_BYTES": 4096,
}


@contextlib.contextmanager
def small_tiles(**extra):
    """Temporarily plan as if caches were tiny (plans are cached, so the cache is cleared)."""
    values = {**SMALL_TILES, **extra}
    saved = {k: getattr(tr, k) for k in values}
    tr._plan.cache_clear()
    try:
        for k, v in values.items():
            setattr(tr, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(tr, k, v)
        tr._plan.cache_clear()


def assert_same_copy(out: np.ndarray, a: np.ndarray, perm) -> None:
    """`out` is exactly np.ascontiguousarray(a.transpose(perm)), as a fresh array: same dtype,
    shape, C-contiguity and bytes (stricter than array_equal, which fails on NaN)."""
    ref = np.ascontiguousarray(a.transpose(perm))
    assert out.dtype == ref.dtype
    assert out.shape == ref.shape
    assert out.flags.c_contiguous
    assert out.tobytes() == ref.tobytes()  # bitwise: NaN payloads, -0.0, padding bytes
    assert not np.shares_memory(out, a)


def random_bits(rng, shape, dtype) -> np.ndarray:
    """Arbitrary bit patterns (NaNs with payloads, -0.0, subnormals) of the given dtype."""
    dtype = np.dtype(dtype)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def special_floats(rng, shape, dtype) -> np.ndarray:
    """Random values salted with NaN payloads (quiet and signalling), +-0.0 and +-inf."""
    dtype = np.dtype(dtype)
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    if dtype == np.float32:
        bits = np.array([0x7FC00001, 0x7F800001, 0xFFC12345, 0x80000000, 0x7F800000], np.uint32)
    else:
        bits = np.array(
            [0x7FF8000000000001, 0x7FF0000000000001, 0xFFF8123456789ABC, 1 << 63, 0x7FF << 52],
            np.uint64,
        )
    specials = bits.view(dtype)
    where = rng.choice(flat.size, size=min(flat.size, 5 * len(specials)), replace=False)
    flat[where] = np.resize(specials, where.size)
    return a


def as_order(a: np.ndarray, order: str) -> np.ndarray:
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


# --------------------------------------------------------------------------- transpose_copy


@st.composite
def arrays_and_perms(draw):
    nd = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=nd, max_size=nd)))
    if nd >= 2 and draw(st.booleans()):
        shape = (*shape[:-1], draw(st.integers(2, 5)))  # short last axes: the per-index path
    if draw(st.booleans()):
        shape = tuple(n * draw(st.sampled_from([1, 4, 16])) for n in shape)  # cache-sized
    shape = shape if np.prod(shape) <= 40_000 else shape[:-1] + (1,)
    dtype = draw(
        st.sampled_from(["f4", "f8", "i1", "u2", "c8", "c16", "?", ">f4", "<u8", "V3", "f2", "S5"])
    )
    seed = draw(st.integers(0, 2**32 - 1))
    a = random_bits(np.random.default_rng(seed), shape, dtype)
    layout = draw(st.sampled_from(["C", "F", "reversed", "strided"]))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "reversed":
        a = a[..., ::-1]
    elif layout == "strided" and a.shape[0] > 1:
        a = a[::2]
    perm = tuple(draw(st.permutations(range(nd))))
    return a, perm


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=arrays_and_perms(), threads=st.sampled_from([1, 2]))
def test_transpose_copy_equals_numpy_with_small_tiles(case, threads):
    a, perm = case
    with small_tiles():
        out = tr.transpose_copy(a, perm, threads=threads)
    assert_same_copy(out, a, perm)


@settings(max_examples=60, deadline=None)
@given(case=arrays_and_perms())
def test_transpose_copy_equals_numpy_with_default_settings(case):
    a, perm = case
    assert_same_copy(tr.transpose_copy(a, perm), a, perm)


# Cases chosen so that, with small tiles, every strategy of the planner runs.
PLAN_CASES = [
    ((8, 64, 128), (0, 2, 1), "f4"),  # 2-D transpose per image
    ((8, 30, 30, 32), (0, 3, 2, 1), "f4"),  # 3-axis permutation
    ((8, 32, 30, 30), (0, 3, 2, 1), "f8"),
    ((8, 512, 49), (0, 2, 1), "f4"),  # 2048-byte stride: set conflicts
    ((6, 3, 40, 40), (0, 2, 3, 1), "f4"),  # 3 channels last: one index at a time
    ((4, 3, 40, 40), (0, 3, 2, 1), "f8"),
    ((20, 30, 2), (1, 0, 2), "f4"),  # short shared rows: widened to one uint64
    ((40, 50, 60), (1, 0, 2), "f4"),  # long shared rows
    ((7, 300), (1, 0), "c16"),
    ((60, 70, 3), (2, 1, 0), "u1"),
]


@pytest.mark.parametrize("threads", [1, 2])
def test_every_plan_kind_is_exact(threads):
    rng = np.random.default_rng(0)
    kinds = set()
    with small_tiles():
        for shape, perm, dtype in PLAN_CASES:
            for order in "CF":
                a = as_order(random_bits(rng, shape, dtype), order)
                out = tr.transpose_copy(a, perm, threads=threads)
                assert_same_copy(out, a, perm)
                v = a.transpose(perm)
                s, t = tr._reduce(v.shape, v.strides)
                kinds.add(tr._plan(s, t, a.itemsize).kind)
    assert kinds >= {"rows", "natural", "blocked", "staged"}, kinds
    # The fallback for plans that would need too many small calls.
    with small_tiles(_MIN_TILE_ELEMS=10**9):
        a = random_bits(rng, (8, 64, 128), "f4")
        v = a.transpose(0, 2, 1)
        s, t = tr._reduce(v.shape, v.strides)
        assert tr._plan(s, t, 4).kind == "plain"
        assert_same_copy(tr.transpose_copy(a, (0, 2, 1), threads=threads), a, (0, 2, 1))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("knet_shape", [(56, 56, 64, 12), (224, 224, 3, 16), (14, 14, 512, 24)])
def test_large_activation_with_default_settings_keeps_every_bit(knet_shape, dtype):
    """Arrays over the planning and threading thresholds (a few MB), with NaN payloads."""
    rng = np.random.default_rng(1)
    x = np.asfortranarray(special_floats(rng, knet_shape, dtype))
    assert x.nbytes >= tr._THREAD_BYTES
    for perm in [(3, 1, 0, 2), (3, 0, 1, 2)]:
        assert_same_copy(tr.transpose_copy(x, perm), x, perm)
        assert_same_copy(tr.transpose_copy(x, perm, threads=1), x, perm)
    y = activations_to_tf(x)
    assert activations_from_tf(y).tobytes(order="A") == x.tobytes(order="A")


@pytest.mark.parametrize("threads", [1, 2])
def test_misaligned_and_byteswapped_inputs(threads):
    """Data not aligned to its itemsize (e.g. sliced out of a byte buffer) and non-native byte
    order are copied byte for byte too (the widened-rows path views them as integers)."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=1 + 4 * 6 * 40 * 50 * 2, dtype=np.uint8)
    a = raw[1:].view(np.float32).reshape(6, 40, 50, 2)  # 1 byte off alignment
    b = a.astype(">f4")
    with small_tiles():
        for x in (a, b, np.asfortranarray(b)):
            for perm in [(0, 2, 1, 3), (3, 1, 2, 0), (2, 0, 3, 1)]:
                assert_same_copy(tr.transpose_copy(x, perm, threads=threads), x, perm)


def test_transpose_copy_is_always_a_fresh_copy():
    a = np.arange(24.0).reshape(2, 3, 4)
    for perm in [(0, 1, 2), (2, 1, 0)]:
        out = tr.transpose_copy(a, perm)
        assert_same_copy(out, a, perm)
    out = tr.transpose_copy(a.T, (2, 1, 0))  # the permuted view is already C-contiguous
    assert_same_copy(out, a.T, (2, 1, 0))


def test_transpose_copy_rejects_what_numpy_rejects():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError):
        tr.transpose_copy(a, (0, 0))
    with pytest.raises(ValueError):
        tr.transpose_copy(a, (0, 1, 2))


def test_threads_setting_is_checked(monkeypatch):
    a = np.zeros((4, 5), np.float32)
    with pytest.raises(PortingError, match=r"threads=0"):
        tr.transpose_copy(a, (1, 0), threads=0)
    monkeypatch.setenv("PORTING_THREADS", "many")
    with pytest.raises(PortingError, match=r"PORTING_THREADS='many'"):
        tr.transpose_copy(a, (1, 0))
    monkeypatch.setenv("PORTING_THREADS", "1")
    assert_same_copy(tr.transpose_copy(a, (1, 0)), a, (1, 0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threaded_copy_works_in_a_forked_child():
    """A child forked after the thread pool started must not wait on the parent's threads."""
    rng = np.random.default_rng(2)
    a = random_bits(rng, (8, 64, 128), "f4")
    perm = (0, 2, 1)
    with small_tiles():
        assert_same_copy(tr.transpose_copy(a, perm, threads=2), a, perm)
        assert tr._pool is not None
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork()"
            pid = os.fork()
        if pid == 0:  # child: report, then leave without running pytest's teardown
            try:
                out = tr.transpose_copy(a, perm, threads=2)
                ok = out.tobytes() == np.ascontiguousarray(a.transpose(perm)).tobytes()
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 30)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    answer = os.read(read, 1) if ready else b""
    os.close(read)
    assert answer == b"1", "the forked child hung or copied wrongly"


def test_docstring_examples():
    import porting.layout

    for module in (tr, porting.layout):
        result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__


# --------------------------------------------------------------------------- round trips


def knet_shapes(nd: int) -> tuple[int, ...]:
    """A non-square Knet activation (X1, ..., C, N) with nd spatial dimensions."""
    return (5, 4, 3)[:nd] + (6, 2)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("spatial", SPATIALS)
def test_activation_round_trips_are_bit_exact(nd, dtype, order, spatial):
    rng = np.random.default_rng(nd)
    x = as_order(special_floats(rng, knet_shapes(nd), dtype), order)
    y = activations_to_tf(x, spatial=spatial)
    assert y.shape[0] == x.shape[-1] and y.shape[-1] == x.shape[-2]
    assert y.flags.c_contiguous and not np.shares_memory(y, x)
    back = activations_from_tf(y, spatial=spatial)
    assert back.flags.f_contiguous and back.dtype == x.dtype and back.shape == x.shape
    assert back.tobytes(order="F") == x.tobytes(order="F")
    # from then to: start on the TensorFlow side
    t = as_order(special_floats(rng, y.shape, dtype), order)
    again = activations_to_tf(activations_from_tf(t, spatial=spatial), spatial=spatial)
    assert again.tobytes() == np.ascontiguousarray(t).tobytes()


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("spatial", SPATIALS)
@pytest.mark.parametrize("mode", [0, 1])
def test_kernel_round_trips_are_bit_exact(nd, dtype, order, spatial, mode):
    rng = np.random.default_rng(10 + nd)
    w = as_order(special_floats(rng, (3, 2, 4)[:nd] + (3, 5), dtype), order)
    k = kernel_to_tf(w, mode=mode, spatial=spatial)
    assert k.flags.c_contiguous and not np.shares_memory(k, w)
    back = kernel_from_tf(k, mode=mode, spatial=spatial)
    assert back.shape == w.shape and back.dtype == w.dtype
    assert back.tobytes(order="F") == w.tobytes(order="F")
    t = as_order(special_floats(rng, k.shape, dtype), order)
    again = kernel_to_tf(kernel_from_tf(t, mode=mode, spatial=spatial), mode=mode, spatial=spatial)
    assert again.tobytes() == np.ascontiguousarray(t).tobytes()


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("spatial", SPATIALS)
def test_kernel_mode0_is_mode1_rotated_180_degrees(nd, spatial):
    rng = np.random.default_rng(20 + nd)
    w = np.asfortranarray(rng.standard_normal((3, 2, 4)[:nd] + (3, 5)).astype(np.float32))
    k0 = kernel_to_tf(w, mode=0, spatial=spatial)
    k1 = kernel_to_tf(w, mode=1, spatial=spatial)
    assert np.array_equal(k0, np.flip(k1, axis=tuple(range(nd))))
    assert k0.flags.c_contiguous
    assert np.array_equal(kernel_from_tf(k0, mode=0, spatial=spatial), w)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
def test_bias_round_trips_are_bit_exact(nd, dtype):
    rng = np.random.default_rng(30 + nd)
    c = 7
    conv = special_floats(rng, (1,) * nd + (c, 1), dtype)
    b = bias_to_tf(conv)
    assert b.shape == (c,) and b.dtype == conv.dtype
    back = bias_from_tf(b, ndims=nd + 2)
    assert back.shape == conv.shape and back.tobytes() == conv.tobytes()
    vec = special_floats(rng, (c,), dtype)
    assert bias_to_tf(bias_from_tf(vec, ndims=nd + 2)).tobytes() == vec.tobytes()
    assert bias_from_tf(bias_to_tf(vec), ndims=1).tobytes() == vec.tobytes()
    column = vec.reshape(c, 1)
    assert bias_to_tf(column).tobytes() == vec.tobytes()


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("spatial", SPATIALS)
def test_dense_round_trips_are_bit_exact(nd, dtype, order, spatial):
    rng = np.random.default_rng(40 + nd)
    sample = knet_shapes(nd)[:-1]  # (X1, ..., C)
    n_in = int(np.prod(sample))
    w = as_order(special_floats(rng, (9, n_in), dtype), order)
    for input_shape in (sample, None):
        k = dense_to_tf(w, input_shape=input_shape, spatial=spatial)
        assert k.shape == (n_in, 9) and k.flags.c_contiguous and not np.shares_memory(k, w)
        back = dense_from_tf(k, input_shape=input_shape, spatial=spatial)
        assert back.shape == w.shape and back.tobytes() == np.ascontiguousarray(w).tobytes()
        t = as_order(special_floats(rng, (n_in, 9), dtype), order)
        again = dense_to_tf(
            dense_from_tf(t, input_shape=input_shape, spatial=spatial),
            input_shape=input_shape,
            spatial=spatial,
        )
        assert again.tobytes() == np.ascontiguousarray(t).tobytes()


# --------------------------------------------------------------------------- what the layouts mean


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("spatial", SPATIALS)
def test_flatten_permutation_matches_knet_dense_after_mat(nd, spatial):
    """Knet `w * mat(x)` == Keras `Flatten()(x_tf) @ kernel`, on a non-square input (H != W)
    with several channels. Small integers keep every sum exact, so equality is exact."""
    rng = np.random.default_rng(50 + nd)
    x = rng.integers(-4, 5, size=knet_shapes(nd)).astype(np.float64)  # (X1, ..., C=6, N=2)
    assert x.shape[-2] > 1 and len(set(x.shape[:nd])) == nd  # multi-channel, non-square
    n = x.shape[-1]
    w = rng.integers(-4, 5, size=(7, int(np.prod(x.shape[:-1])))).astype(np.float64)
    knet = w @ np.asarray(mat(x, backend="reference"))  # (out, N)
    assert np.array_equal(np.asarray(mat(x, backend="reference")), x.reshape(-1, n, order="F"))
    flat = activations_to_tf(x, spatial=spatial).reshape(n, -1)  # Keras Flatten: C fastest
    keras = flat @ dense_to_tf(w, input_shape=x.shape[:-1], spatial=spatial)  # (N, out)
    assert np.array_equal(keras, knet.T)
    # A plain transpose (the most reported porting bug) gives different numbers.
    assert not np.array_equal(flat @ dense_to_tf(w), knet.T)


def test_reverse_maps_julia_whcn_to_tf_nhwc_elementwise():
    rng = np.random.default_rng(60)
    x = np.asfortranarray(rng.standard_normal((5, 4, 3, 2)))  # Julia (W, H, C, N)
    t = activations_to_tf(x, spatial="reverse")
    assert t.shape == (2, 4, 5, 3)  # (N, H, W, C)
    for n, h, w, c in itertools.product(*(range(s) for s in t.shape)):
        assert t[n, h, w, c] == x[w, h, c, n]
    k = activations_to_tf(x, spatial="keep")
    assert k.shape == (2, 5, 4, 3)
    for n, i, j, c in itertools.product(*(range(s) for s in k.shape)):
        assert k[n, i, j, c] == x[i, j, c, n]
    x3 = rng.standard_normal((4, 3, 2, 3, 2))  # Julia (W, H, D, C, N)
    t3 = activations_to_tf(x3)
    assert t3.shape == (2, 2, 3, 4, 3)  # (N, D, H, W, C)
    for n, d, h, w, c in itertools.product(*(range(s) for s in t3.shape)):
        assert t3[n, d, h, w, c] == x3[w, h, d, c, n]


def test_reverse_maps_julia_kernel_whio_to_tf_hwio_elementwise():
    rng = np.random.default_rng(61)
    w = rng.standard_normal((3, 2, 4, 5))  # Julia (W, H, Cin, Cout)
    k = kernel_to_tf(w, mode=1)
    assert k.shape == (2, 3, 4, 5)
    for h, x, i, o in itertools.product(*(range(s) for s in k.shape)):
        assert k[h, x, i, o] == w[x, h, i, o]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: activations_to_tf(np.zeros((5, 4))), r"2 dimensions \(shape \(5, 4\)\)"),
        (lambda: activations_to_tf(np.zeros((2,) * 6)), r"6 dimensions"),
        (lambda: activations_from_tf(np.zeros((5, 4))), r"shape \(5, 4\)"),
        (lambda: kernel_to_tf(np.zeros((3, 3))), r"shape \(3, 3\)"),
        (lambda: activations_to_tf(np.zeros((5, 4, 3, 2), np.int32)), r"int32"),
        (lambda: kernel_from_tf(np.zeros((3, 3, 2, 2), np.int64)), r"int64"),
        (lambda: dense_to_tf(np.zeros((4, 6), np.int16)), r"int16"),
        (lambda: activations_to_tf(np.zeros((5, 4, 3, 2)), spatial="rev"), r"spatial='rev'"),
        (lambda: activations_from_tf(np.zeros((2, 4, 5, 3)), spatial=1), r"spatial=1"),
        (lambda: kernel_to_tf(np.zeros((3, 3, 2, 2)), spatial="hw"), r"spatial='hw'"),
        (lambda: dense_to_tf(np.zeros((4, 60)), (5, 4, 3), spatial="x"), r"spatial='x'"),
        (lambda: kernel_to_tf(np.zeros((3, 3, 2, 2)), mode=2), r"mode=2"),
        (lambda: bias_to_tf(np.zeros((2, 3, 4, 1))), r"shape \(2, 3, 4, 1\)"),
        (lambda: bias_from_tf(np.zeros((3, 4))), r"shape \(3, 4\)"),
        (lambda: dense_to_tf(np.zeros((10, 60)), input_shape=(5, 4, 4)), r"\(5, 4, 4\).*80.*60"),
        (lambda: dense_from_tf(np.zeros((60, 10)), input_shape=(7, 3)), r"\(7, 3\).*21.*60"),
        (lambda: activations_to_tf(np.zeros((5, 0, 3, 2))), r"empty.*\(5, 0, 3, 2\)"),
    ],
)
def test_bad_input_raises_porting_error_naming_the_value(call, match):
    with pytest.raises(PortingError, match=match):
        call()


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_large_kernels_take_the_tiled_path_and_stay_exact(threads, mode, spatial, monkeypatch):
    monkeypatch.setenv("PORTING_THREADS", str(threads))
    rng = np.random.default_rng(11)
    w = np.asfortranarray(rng.standard_normal((3, 5, 70, 130)).astype(np.float32))
    assert w.nbytes >= tr._KERNEL_MIN_BYTES  # the tiled copy, not NumPy's
    view = w.transpose(([1, 0] if spatial == "reverse" else [0, 1]) + [2, 3])
    want = np.ascontiguousarray(view[::-1, ::-1] if mode == 0 else view)
    got = kernel_to_tf(w, mode, spatial)
    assert got.flags.c_contiguous and got.dtype == w.dtype
    assert np.array_equal(got, want)
    assert np.array_equal(kernel_from_tf(got, mode, spatial), w)


# --------------------------------------------------------------------------- kernel_copy


@st.composite
def kernel_views(draw):
    """A kernel view as `kernel_to_tf` builds it: Julia `(W..., Cin, Cout)` in either memory
    order, spatial axes permuted and (mode 0) reversed, plus strided and sliced sources."""
    nd = draw(st.integers(1, 3))
    taps = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    cin, cout = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(FLOATS))
    seed = draw(st.integers(0, 2**32 - 1))
    w = as_order(special_floats(np.random.default_rng(seed), (*taps, cin, cout), dtype), "C")
    layout = draw(st.sampled_from(["F", "C", "sliced"]))
    if layout == "F":
        w = np.asfortranarray(w)
    elif layout == "sliced":  # a Fortran kernel cut out of a larger one: gaps between slabs
        w = np.asfortranarray(np.concatenate([w, w[..., :1, :]], axis=-2))[..., :cin, :]
    spatial = draw(st.permutations(range(nd)))
    if draw(st.booleans()):  # mode 0: rotated 180 degrees
        w = w[(slice(None, None, -1),) * nd]
    return w.transpose(*spatial, nd, nd + 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    v=kernel_views(),
    threads=st.sampled_from([1, 2, 3]),
    tile=st.sampled_from([1, 37, 256]),
)
def test_kernel_copy_equals_numpy_with_small_tiles(v, threads, tile):
    """Every tiling (tiny tiles, edge tiles, one tile) and thread count, shared tile queue
    included, gives exactly np.ascontiguousarray(view) as a fresh C-contiguous array."""
    saved = tr._KERNEL_MIN_BYTES, tr._KERNEL_TILE_ELEMS
    tr._KERNEL_MIN_BYTES, tr._KERNEL_TILE_ELEMS = 0, tile
    try:
        got = tr.kernel_copy(v, threads=threads)
    finally:
        tr._KERNEL_MIN_BYTES, tr._KERNEL_TILE_ELEMS = saved
    ref = np.ascontiguousarray(v)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert got.flags.c_contiguous and got.flags.owndata
    assert got.tobytes() == ref.tobytes()
    assert not np.shares_memory(got, v)


@pytest.mark.parametrize("dtype", FLOATS)
def test_kernel_copy_shares_tiles_when_a_helper_never_starts(dtype, monkeypatch):
    """With the copy pool's only thread busy elsewhere, the caller copies every tile itself."""
    rng = np.random.default_rng(3)
    w = np.asfortranarray(special_floats(rng, (3, 3, 96, 128), dtype))
    v = w[::-1, ::-1].transpose(1, 0, 2, 3)
    assert v.nbytes >= tr._KERNEL_MIN_BYTES
    pool = tr._executor(1)
    gate = __import__("threading").Event()
    blockers = [pool.submit(gate.wait, 30) for _ in range(pool._max_workers)]
    try:
        got = tr.kernel_copy(v, threads=2)
    finally:
        gate.set()
        for b in blockers:
            b.result()
    assert got.tobytes() == np.ascontiguousarray(v).tobytes()
