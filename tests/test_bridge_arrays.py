"""Array marshalling for juliacall, tested without Julia.

`to_julia_layout` decides what juliacall receives (juliacall hands Julia a PyArray with NumPy's
shape and strides, so a Fortran-ordered Julia-indexed array *is* Julia's column-major array);
`from_julia` turns what Julia returns into a Julia-indexed NumPy array without copying.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.bridge.arrays import from_julia, to_julia_layout
from porting.errors import PortingError


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fortran_input_passes_through_without_copy(dtype):
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((5, 4, 3, 2)).astype(dtype))
    out, copied = to_julia_layout(a)
    assert out is a and not copied
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_input_is_copied_once_into_fortran_order_same_values(dtype):
    rng = np.random.default_rng(1)
    a = np.ascontiguousarray(rng.standard_normal((5, 4, 3, 2)).astype(dtype))
    out, copied = to_julia_layout(a)
    assert copied and out.flags.f_contiguous and out.dtype == dtype
    assert out.shape == a.shape and np.array_equal(out, a)  # same Julia indices, same values
    # Julia's column-major memory: element [i,j,k,l] at offset i + 5j + 20k + 60l
    assert np.array_equal(out.ravel(order="K"), a.ravel(order="F"))


def test_strided_and_byteswapped_inputs_are_made_native_fortran():
    rng = np.random.default_rng(2)
    base = np.asfortranarray(rng.standard_normal((10, 8, 3, 2)))
    view = base[::2, 1::2]
    out, copied = to_julia_layout(view)
    assert copied and out.flags.f_contiguous and np.array_equal(out, view)
    swapped = np.asfortranarray(base.astype(">f8"))
    out, copied = to_julia_layout(swapped)
    assert copied and out.dtype == np.float64 and out.dtype.isnative and np.array_equal(out, base)


def test_one_dimensional_and_scalar_arrays_need_no_copy():
    for a in (np.arange(5.0), np.array(3.0)):
        out, copied = to_julia_layout(a)
        assert out is a and not copied


@pytest.mark.parametrize(
    "bad", [np.arange(6).reshape(2, 3), np.ones(3, np.float16), np.ones(2, complex)]
)
def test_non_float_input_names_dtype(bad):
    with pytest.raises(PortingError, match=f"dtype {bad.dtype}.*expected float32 or float64"):
        to_julia_layout(bad, "x")


class FakeJuliaArray:
    """Stands in for juliacall's ArrayValue: exposes a Fortran-ordered buffer."""

    def __init__(self, data: np.ndarray):
        self._data = data

    def __array__(self, dtype=None, copy=None):
        return self._data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_julia_is_zero_copy_and_keeps_dtype(dtype):
    jl = np.asfortranarray(np.arange(24, dtype=dtype).reshape((4, 3, 2), order="F"))
    out = from_julia(FakeJuliaArray(jl), dtype=dtype)
    assert np.shares_memory(out, jl) and out.dtype == dtype
    assert out.shape == (4, 3, 2) and out.flags.f_contiguous
    assert out[1, 2, 1] == 1 + 4 * 2 + 12 * 1  # Julia's [2,3,2] in column-major order


def test_from_julia_through_the_buffer_protocol():
    jl = np.asfortranarray(np.arange(6.0).reshape((2, 3), order="F"))
    out = from_julia(memoryview(jl), dtype=np.float64)
    assert np.shares_memory(out, jl) and out.flags.f_contiguous and out.shape == (2, 3)


def test_from_julia_rejects_a_changed_element_type():
    jl = np.ones((2, 2), np.float64, order="F")
    with pytest.raises(
        PortingError, match="returned float64 for conv4 result but the inputs were float32"
    ):
        from_julia(FakeJuliaArray(jl), dtype=np.float32, name="conv4 result")


def test_from_julia_uses_to_numpy_for_non_dense_values():
    class Lazy:
        def __array__(self, dtype=None, copy=None):
            return np.array([object()])

        def to_numpy(self):
            return np.ones((2, 3), np.float32, order="F")

    out = from_julia(Lazy(), dtype=np.float32)
    assert out.shape == (2, 3) and out.dtype == np.float32


def test_from_julia_rejects_non_arrays():
    class Nothing:
        def __array__(self, dtype=None, copy=None):
            return np.array([object()])

    with pytest.raises(PortingError, match="Julia returned Nothing for result"):
        from_julia(Nothing())


def test_round_trip_through_julia_layout_is_identity():
    rng = np.random.default_rng(3)
    for order in ("C", "F"):
        a = np.array(rng.standard_normal((3, 4, 2, 2)), order=order, dtype=np.float32)
        sent, _ = to_julia_layout(a)
        back = from_julia(FakeJuliaArray(sent), dtype=np.float32)
        assert np.array_equal(back, a) and back.shape == a.shape
