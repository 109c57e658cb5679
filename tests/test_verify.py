import numpy as np
import pytest

import porting
from porting import PortingError
from porting.examples import seed002
from porting.testing import assert_conv4_ported, assert_ported_close
from porting.verify import verify_conv4


def _wx(shape_w, shape_x, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_w).astype(dtype), rng.standard_normal(shape_x).astype(dtype)


def test_seed002_knet_float64_vs_tf_float32_agrees():
    ex = seed002()
    r = verify_conv4(ex["w"], ex["x"], knet="reference", **ex["kwargs"])
    assert r.ok, str(r)
    assert r.knet_backend == "reference"
    assert r.dtypes == {"knet": "float64", "tf": "float32"}
    assert r.comparison.tolerance.k == 27 and r.comparison.tolerance.precision == "float32"
    assert 0 < r.comparison.max_error_to_tolerance < 1


@pytest.mark.parametrize("spatial", ["reverse", "keep"])
@pytest.mark.parametrize("mode", [0, 1])
def test_verify_agrees_for_correct_ports(spatial, mode):
    w, x = _wx((3, 2, 4, 5), (9, 8, 4, 2))
    r = verify_conv4(
        w,
        x,
        padding=(1, 0),
        stride=(2, 1),
        dilation=(1, 2),
        mode=mode,
        spatial=spatial,
        knet="reference",
    )
    assert r.ok, str(r)
    # Y1 = 1 + (9 + 2 - 3) // 2 = 5; Y2 = 1 + (8 - 3) // 1 = 6
    assert r.shapes["y (Knet)"] == (5, 6, 5, 2)
    assert r.shapes["y (TF)"] == ((2, 5, 6, 5) if spatial == "keep" else (2, 6, 5, 5))


def test_verify_1d_and_3d_float64():
    w, x = _wx((3, 2, 3), (8, 2, 2), np.float64)
    assert verify_conv4(w, x, padding=1, knet="reference").ok
    w, x = _wx((2, 3, 2, 2, 3), (5, 6, 4, 2, 1), np.float64)
    assert verify_conv4(w, x, padding=(1, 0, 1), stride=(1, 2, 1), knet="reference").ok


def test_report_serialises_and_prints():
    w, x = _wx((3, 3, 1, 2), (5, 5, 1, 1))
    r = verify_conv4(w, x, knet="reference")
    d = r.to_dict()
    assert d["ok"] is True and d["knet_backend"] == "reference"
    assert d["versions"]["tensorflow"] and d["shapes"]["w"] == [3, 3, 1, 2]
    text = str(r)
    assert text.startswith("OK: Knet and TensorFlow agree") and "sum of magnitudes" in text


def test_top_level_lazy_attributes():
    assert porting.verify_conv4 is verify_conv4
    # porting.compare / porting.diagnose are plain functions with real signatures
    import inspect

    from porting import comparison, diagnosis

    a = np.float32([1.0, 2.0])
    assert porting.compare is comparison.compare and porting.compare(a, a).ok
    assert porting.diagnose is diagnosis.diagnose
    assert porting.diagnose(a[None, :], a[None, :]).cause == "rounding"
    assert list(inspect.signature(porting.compare).parameters)[:2] == ["expected", "actual"]
    assert "porting.layout" in repr(porting.layout) and "porting.testing" in repr(porting.testing)
    with pytest.raises(AttributeError):
        porting.does_not_exist  # noqa: B018


def test_assert_ported_close_passes_and_fails_with_the_report():
    a = np.float32([1.0, 2.0, 3.0])
    assert assert_ported_close(a, a.copy()).ok
    with pytest.raises(AssertionError, match="ported results differ") as e:
        assert_ported_close(a, a + np.float32([0, 0, 0.5]))
    assert "DIFFER" in str(e.value) and "worst at (2,)" in str(e.value)


def test_assert_conv4_ported_on_report_and_on_arrays():
    w, x = _wx((3, 3, 2, 2), (6, 6, 2, 1))
    report = assert_conv4_ported(w, x, padding=1, knet="reference")
    assert report.ok
    assert assert_ported_close(report) is report


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial="sideways"), "spatial='sideways'"),
        (dict(dtype="int32"), "dtype='int32'"),
        (dict(mode=2), "mode=2"),
        (dict(stride=0), "stride=0"),
        (dict(padding=(1, 2, 3)), "padding=\\(1, 2, 3\\)"),
        (dict(dilation=4), "input size 6 with padding 0 is smaller than the dilated kernel"),
        (dict(alpha=float("nan")), "alpha=nan: expected a finite"),
        (dict(knet="cuda"), "backend='cuda'"),
    ],
)
def test_bad_arguments_raise_porting_error(kwargs, match):
    w, x = _wx((3, 3, 2, 2), (6, 6, 2, 1))
    with pytest.raises(PortingError, match=match):
        verify_conv4(w, x, **kwargs)


def test_bad_arrays_raise_porting_error():
    w, x = _wx((3, 3, 2, 2), (6, 6, 3, 1))
    with pytest.raises(PortingError, match="kernel has 2 input channels but x has 3"):
        verify_conv4(w, x)
    with pytest.raises(PortingError, match="dtype int64"):
        verify_conv4(np.ones((3, 3, 1, 1), dtype=np.int64), np.ones((4, 4, 1, 1)))
    with pytest.raises(PortingError, match="empty"):
        verify_conv4(np.ones((3, 3, 1, 0), np.float32), np.ones((4, 4, 1, 1), np.float32))
    with pytest.raises(PortingError, match="2 dimensions"):
        verify_conv4(np.ones((3, 3), np.float32), np.ones((4, 4, 1, 1), np.float32))
    with pytest.raises(PortingError, match="smaller than"):
        verify_conv4(np.ones((5, 5, 1, 1), np.float32), np.ones((3, 3, 1, 1), np.float32))
