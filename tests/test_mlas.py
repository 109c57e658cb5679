"""porting.knet.mlas: the reference's Float32 convolutions on onnxruntime's kernels (MLAS).

The truth is the PyTorch float64 oracle (tests/knet_torch.py, itself checked against NNlib's
golden vectors) and the golden cases of tests/golden/knet_golden.json (Knet's and NNlib's own
answers): every result must lie within `K * eps * S` of the exact value (S = conv4(|w|, |x|),
K the terms per output), the bound any summation order meets (docs/numerics.md#summation-order),
and within the verification's own tolerance. Which path ran is asserted, so a
test cannot pass on NumPy's kernel by falling back silently.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting import PortingError
from porting.knet import conv4, deconv4, mlas

pytest.importorskip("onnxruntime", reason="the kernel under test is onnxruntime's")
pytest.importorskip("onnx", reason="porting.knet.mlas writes its models with onnx.helper")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

import knet_torch as K  # noqa: E402  (tests/ is on sys.path; needs torch)
import test_golden as G  # noqa: E402

F32 = np.float32
EPS = float(np.finfo(F32).eps)

CASES = {  # name: (w size, x size, keywords)
    "2d-same": ((3, 3, 16, 24), (20, 18, 16, 6), dict(padding=1)),
    "2d-7x7-one-image": ((7, 7, 3, 8), (60, 50, 3, 1), dict(padding=3)),
    "2d-stride-dilation": ((3, 3, 8, 16), (33, 31, 8, 4), dict(padding=2, stride=2, dilation=2)),
    "2d-uneven": ((5, 2, 6, 7), (19, 23, 6, 3), dict(padding=(2, 0), stride=(1, 3), mode=1)),
    "1d": ((5, 12, 20), (40, 12, 5), dict(padding=2)),
    "3d-crosscorrelation": ((3, 3, 3, 4, 8), (14, 12, 10, 4, 3), dict(padding=1, mode=1)),
    "alpha": ((3, 3, 8, 8), (16, 16, 8, 2), dict(padding=1, alpha=0.375)),
}


def _draw(case, seed=0):
    wsz, xsz, kw = CASES[case]
    rng = np.random.default_rng(seed)
    w = np.asfortranarray(rng.standard_normal(wsz, dtype=F32))
    x = np.asfortranarray(rng.standard_normal(xsz, dtype=F32))
    return w, x, kw


def _bound(w, x, kw):
    """(exact value, K * eps * S), both float64 from the oracle."""
    exact = K.conv4(w.astype(np.float64), x.astype(np.float64), **kw)
    s = K.conv4(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), **kw)
    terms = int(np.prod(w.shape[:-1]))
    return exact, terms * EPS * abs(kw.get("alpha", 1)) * s


@pytest.fixture(autouse=True)
def _prepare_small_calls(monkeypatch):
    """The cases here are small: let reusing_weights() prepare them all (a test below puts the
    threshold back)."""
    monkeypatch.setattr(mlas, "REUSE_MIN_POSITIONS", 1)


@pytest.fixture
def taken(monkeypatch):
    """The calls that onnxruntime ran (mlas.correlate returned True)."""
    calls: list[bool] = []
    real = mlas.correlate

    def spy(*a, **k):
        ran = real(*a, **k)
        calls.append(ran)
        return ran

    monkeypatch.setattr(mlas, "correlate", spy)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_kernel_is_within_the_bound_of_the_float64_oracle(case, taken):
    w, x, kw = _draw(case)
    with mlas.kernel("onnxruntime"):
        y = conv4(w, x, backend="reference", **kw)
    assert taken == [True], "onnxruntime did not run the convolution"
    exact, bound = _bound(w, x, kw)
    assert y.dtype == F32 and y.shape == exact.shape
    err = np.abs(y.astype(np.float64) - exact)
    assert np.all(err <= bound), f"{case}: worst error/bound {np.max(err / bound):.3g}"
    # and within the tolerance the verification uses ((sqrt(K) + 2) eps S: docs/numerics.md#worst-case)
    terms = int(np.prod(w.shape[:-1]))
    assert np.all(err <= (np.sqrt(terms) + 2) / terms * bound)
    assert y.flags.f_contiguous  # a Julia-ordered result, as the NumPy kernel's


@pytest.mark.parametrize("case", ["2d-same", "2d-stride-dilation", "3d-crosscorrelation"])
def test_prepared_sessions_are_within_the_bound_and_keyed_by_the_kernels_bytes(case, taken):
    w, x, kw = _draw(case)
    kept = mlas.WeightSessions()
    with mlas.kernel("onnxruntime"), mlas.reusing_weights(kept):
        y1 = conv4(w, x, backend="reference", **kw)
        y2 = conv4(w, x, backend="reference", **kw)
    assert taken == [True, True] and len(kept.sessions) == 1
    np.testing.assert_array_equal(y1, y2)
    exact, bound = _bound(w, x, kw)
    assert np.all(np.abs(y1.astype(np.float64) - exact) <= bound)
    # The same array changed in place: a new session, the new kernel's result.
    w[0, ...] *= -2
    with mlas.kernel("onnxruntime"), mlas.reusing_weights(kept):
        y3 = conv4(w, x, backend="reference", **kw)
    assert len(kept.sessions) == 2
    exact3, bound3 = _bound(w, x, kw)
    assert np.all(np.abs(y3.astype(np.float64) - exact3) <= bound3)
    assert not np.allclose(y3, y1)


def test_calls_with_few_output_positions_run_one_off_inside_a_reuse_block(monkeypatch, taken):
    monkeypatch.setattr(mlas, "REUSE_MIN_POSITIONS", 4096)
    w, x, kw = _draw("2d-same")  # 20 x 18 x 6 = 2160 output positions
    with mlas.kernel("onnxruntime"), mlas.reusing_weights() as kept:
        y = conv4(w, x, backend="reference", **kw)
        assert taken == [True] and not kept.sessions
        big = np.asfortranarray(np.tile(x, (1, 1, 1, 2)))  # 4320 positions
        conv4(w, big, backend="reference", **kw)
        assert len(kept.sessions) == 1
    with mlas.kernel("onnxruntime"):
        np.testing.assert_array_equal(y, conv4(w, x, backend="reference", **kw))  # one-off's


def test_reuse_blocks_drop_their_sessions_and_nest():
    w, x, kw = _draw("2d-same")
    with mlas.kernel("onnxruntime"), mlas.reusing_weights() as outer:
        conv4(w, x, backend="reference", **kw)
        with mlas.reusing_weights() as inner:
            assert inner is outer
            conv4(w, x, backend="reference", **kw)
        assert len(outer.sessions) == 1
    assert mlas._reuse.get() is None


@pytest.mark.parametrize("reuse", [False, True], ids=["one-off", "prepared"])
def test_bits_do_not_depend_on_threads_or_on_the_batch(reuse, monkeypatch):
    w, x, kw = _draw("2d-same")

    def run(threads, xs):
        monkeypatch.setenv("PORTING_THREADS", str(threads))
        with mlas.kernel("onnxruntime"), mlas.reusing_weights() if reuse else _null():
            return np.asarray(conv4(w, xs, backend="reference", **kw))

    one, two = run(1, x), run(2, x)
    np.testing.assert_array_equal(one, two)
    part = run(2, np.asfortranarray(x[..., 2:5]))
    np.testing.assert_array_equal(part, two[..., 2:5])


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_the_two_session_kinds_agree_within_the_bound():
    w, x, kw = _draw("2d-7x7-one-image")
    with mlas.kernel("onnxruntime"):
        a = conv4(w, x, backend="reference", **kw)
        with mlas.reusing_weights():
            b = conv4(w, x, backend="reference", **kw)
    with mlas.kernel("numpy"):
        c = conv4(w, x, backend="reference", **kw)
    _, bound = _bound(w, x, kw)
    for other in (b, c):
        assert np.all(np.abs(a.astype(np.float64) - other) <= 2 * bound)


GOLDEN_F32 = [
    n
    for n, c in G.CASES.items()
    if c["op"] in ("conv4", "deconv4") and G.DTYPES[c["eltype"]] == F32
]


@pytest.mark.parametrize("name", GOLDEN_F32)
def test_golden_cases_on_onnxruntime(name, taken):
    case = G.CASES[name]
    with mlas.kernel("onnxruntime"):
        got = G.run(case, "reference")
    ok, msg = G.check(case, got)
    assert ok, msg


def test_golden_cases_reach_onnxruntime(taken):
    with mlas.kernel("onnxruntime"):
        for name in GOLDEN_F32:
            G.run(G.CASES[name], "reference")
    assert GOLDEN_F32 and sum(taken) >= len(GOLDEN_F32) // 2, taken


def test_what_stays_on_numpy(taken, monkeypatch):
    w, x, kw = _draw("alpha")
    conv4(w.astype(np.float64), x.astype(np.float64), backend="reference", **kw)  # no kernel
    conv4(w, x, backend="reference", **kw)  # auto: 0.3M multiply-adds, under MIN_MACS
    with mlas.kernel("numpy"):
        conv4(w, x, backend="reference", **kw)
    monkeypatch.setenv("PORTING_CONV_KERNEL", "numpy")
    conv4(w, x, backend="reference", **kw)
    assert taken == [False, False, False, False]
    # deconv4 whose padding passes (W-1)*dilation is a crop of the conv's input: NumPy's
    wd = np.asfortranarray(np.random.default_rng(1).standard_normal((3, 3, 4, 5), dtype=F32))
    xd = np.asfortranarray(np.random.default_rng(2).standard_normal((9, 9, 5, 2), dtype=F32))
    with mlas.kernel("onnxruntime"):
        got = deconv4(wd, xd, padding=3, backend="reference")
    assert taken[-1] is False
    want = K.deconv4(wd.astype(np.float64), xd.astype(np.float64), padding=3)
    s = K.deconv4(np.abs(wd).astype(np.float64), np.abs(xd).astype(np.float64), padding=3)
    assert np.all(np.abs(got - want) <= 45 * EPS * s)


def test_auto_takes_large_convolutions(taken):
    w, x, kw = _draw("2d-same")
    big = np.asfortranarray(np.tile(x, (1, 1, 1, 2)))
    assert 20 * 18 * big.shape[-1] * w.size >= mlas.MIN_MACS  # outputs x terms each
    y = conv4(w, big, backend="reference", **kw)
    assert taken == [True]
    exact, bound = _bound(w, big, kw)
    assert np.all(np.abs(y.astype(np.float64) - exact) <= bound)


def test_a_bad_setting_is_one_clear_error(monkeypatch):
    w, x, kw = _draw("2d-same")
    monkeypatch.setenv("PORTING_CONV_KERNEL", "fast")
    with pytest.raises(PortingError, match=r"PORTING_CONV_KERNEL='fast': expected one of"):
        conv4(w, x, backend="reference", **kw)
    with pytest.raises(PortingError, match=r"kernel='mkl': expected one of 'auto', 'numpy'"):
        with mlas.kernel("mkl"):
            pass


def test_without_onnxruntime_auto_falls_back_and_onnxruntime_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(mlas, "_ort", False)
    monkeypatch.setattr(mlas, "_ort_error", "ImportError: No module named 'onnxruntime'")
    w, x, kw = _draw("2d-same")
    big = np.asfortranarray(np.tile(x, (1, 1, 1, 40)))
    y = conv4(w, big, backend="reference", **kw)  # auto: NumPy's kernel, the right numbers
    exact, bound = _bound(w, big, kw)
    assert np.all(np.abs(y.astype(np.float64) - exact) <= bound)
    assert "onnxruntime unavailable" in mlas.describe()
    with mlas.kernel("onnxruntime"), pytest.raises(PortingError, match=r"porting\[fast\]"):
        conv4(w, x, backend="reference", **kw)


def test_describe_names_the_kernel(monkeypatch):
    assert mlas.describe().startswith("onnxruntime ")
    monkeypatch.setenv("PORTING_CONV_KERNEL", "numpy")
    assert mlas.describe().startswith("numpy")


def test_an_onnx_file_is_checked_against_numpys_kernel(tmp_path, monkeypatch, taken):
    """The ONNX port runs on onnxruntime's kernels; the Knet side it is checked against must
    not (porting.model.onnx_out.end_to_end), even where onnxruntime is asked for."""
    pytest.importorskip("tf2onnx", reason="the ONNX export needs tf2onnx")
    from porting.examples.lenet import lenet
    from porting.examples.models import example_input
    from porting.model import convert as mconvert
    from porting.model import onnx_out

    model = lenet()
    x = example_input(model, seed=3, batch=3)
    path = onnx_out.export_onnx(mconvert.to_keras(model), tmp_path / "lenet.onnx")
    monkeypatch.setenv("PORTING_CONV_KERNEL", "onnxruntime")
    seen: list[str] = []
    real = mlas.setting

    def spy():
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(mlas, "setting", spy)
    check = onnx_out.verify_onnx(model, path, x)
    assert check.ok
    assert seen and set(seen) == {"numpy"} and not any(taken)


def test_doctor_says_which_kernel_and_names_a_bad_setting(monkeypatch):
    from porting.commands.doctor import collect

    conv = collect(probe=False)["conv_kernel"]
    assert conv["setting"] == "auto" and conv["uses"].startswith("onnxruntime ")
    monkeypatch.setenv("PORTING_CONV_KERNEL", "numpy")
    assert collect(probe=False)["conv_kernel"]["uses"] == "numpy"
    monkeypatch.setenv("PORTING_CONV_KERNEL", "gpu")
    report = collect(probe=False)
    assert "PORTING_CONV_KERNEL='gpu'" in report["conv_kernel"]["problem"]
    assert report["conv_kernel"]["problem"] in report["advice"]


@pytest.mark.parametrize("groups", [2, 8], ids=["groups2", "depthwise"])
def test_a_grouped_conv_stage_is_one_call_within_the_bound_of_ops21s(groups, taken):
    """Ops21's grouped conv (ConvStage with groups; depthwise when groups == Cin) in one
    onnxruntime call, forward and S, against Ops21's grouped conv written in PyTorch."""
    from porting.geometry import ConvGeometry
    from porting.model.stages import ConvStage

    rng = np.random.default_rng(40 + groups)
    cin, cout = 8, 16
    w = rng.standard_normal((3, 3, cin // groups, cout)).astype(F32)
    x = np.asfortranarray(rng.standard_normal((14, 13, cin, 3)).astype(F32))
    geom = ConvGeometry.from_knet(2, padding=1, stride=(1, 2), dilation=(2, 1), mode=0)
    stage = ConvStage(w=w, b=None, geometry=geom, groups=groups)
    tags: list = []
    y = stage.forward(x, "reference", tags)  # "auto": a grouped call always goes
    assert taken == [True] and len(tags) == 1 and tags[0].backend == "reference"
    kw = dict(padding=1, stride=(1, 2), dilation=(2, 1), groups=groups, crosscorrelation=False)
    exact = K.ops21_conv(w.astype(np.float64), x.astype(np.float64), **kw)
    s = K.ops21_conv(np.abs(w).astype(np.float64), np.abs(x).astype(np.float64), **kw)
    terms = 9 * cin // groups
    assert y.dtype == F32 and y.shape == exact.shape
    assert np.all(np.abs(y - exact) <= terms * EPS * s)
    got_s = stage.magnitude(np.abs(x), None, F32)
    assert taken == [True, True]
    np.testing.assert_allclose(got_s, s, rtol=terms * EPS)
    with mlas.kernel("numpy"):  # one conv4 per group: the same numbers within the bound
        y_np = stage.forward(x, "reference", [])
    assert taken[-1] is False and np.all(np.abs(y - y_np) <= 2 * terms * EPS * s)
