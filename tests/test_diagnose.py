"""porting.diagnose: each cause on a constructed case, the seed reports, correct ports, bad input."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import porting
from porting import PortingError, knet, layout
from porting.diagnosis import CAUSES, Diagnosis, diagnose
from porting.examples import seed002

# ----------------------------------------------------------------------------- helpers


def _conv(w, x, **kw):
    """Knet conv4 (reference backend), converted to TF layout: the expected side."""
    spatial = kw.pop("spatial", "reverse")
    return layout.activations_to_tf(
        np.asarray(knet.conv4(w, x, backend="reference", **kw)), spatial
    )


def _tf_side(x_tf, k_tf, pads, stride=(1, 1), dtype=np.float32):
    """A TensorFlow-like side: cross-correlation of TF-layout arrays with explicit (lo, hi)
    padding, accumulated one kernel offset at a time in `dtype` (not the reference's order)."""
    x_tf, k_tf = x_tf.astype(dtype), k_tf.astype(dtype)
    xp = np.pad(x_tf, [(0, 0), *pads, (0, 0)])
    kh, kw = k_tf.shape[:2]
    ho = (xp.shape[1] - kh) // stride[0] + 1
    wo = (xp.shape[2] - kw) // stride[1] + 1
    out = np.zeros((x_tf.shape[0], ho, wo, k_tf.shape[-1]), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :,
                i : i + (ho - 1) * stride[0] + 1 : stride[0],
                j : j + (wo - 1) * stride[1] + 1 : stride[1],
                :,
            ]
            out += patch @ k_tf[i, j]
    return out


def _case(seed=0, shape=(9, 8), cin=3, cout=4, k=(3, 3), n=2, dtype=np.float32):
    rng = np.random.default_rng(seed)
    w = np.asfortranarray(
        (rng.standard_normal((*k, cin, cout)) / np.sqrt(np.prod(k) * cin)).astype(dtype)
    )
    x = np.asfortranarray(rng.standard_normal((*shape, cin, n)).astype(dtype))
    return w, x


# ----------------------------------------------------------------------------- seeds


def test_seed002_printed_outputs_are_a_kernel_flip():
    ex = seed002()
    w, x = ex["w"], ex["x"]
    expected = _conv(w, x, padding=1, spatial="keep")
    actual = np.asarray(ex["tf_printed"], dtype=np.float32).reshape(1, 5, 5, 1)
    d = diagnose(expected, actual, w=w, x=x, padding=1, mode=0, spatial="keep")
    assert d.cause == "kernel_flip"
    assert d.finding.explains and d.finding.max_error_to_tolerance <= 1
    assert "rotating the kernel 180 degrees" in d.evidence and "float32 bound" in d.evidence
    assert "kernel_to_tf(w, mode=0)" in d.evidence
    # Knet's own printout (6 digits) against the recomputation: what the reporter saw
    assert np.allclose(expected[0, :, :, 0], ex["knet_printed"], rtol=1e-5, atol=1e-3)


def test_a_parsed_geometry_diagnoses_as_its_keywords():
    """`geometry=` (a layer's ConvGeometry, parsed once) is the keywords it was parsed from."""
    from porting.geometry import ConvGeometry

    ex = seed002()
    w, x = ex["w"], ex["x"]
    expected = _conv(w, x, padding=1, spatial="keep")
    actual = np.asarray(ex["tf_printed"], dtype=np.float32).reshape(1, 5, 5, 1)
    g = ConvGeometry.from_knet(2, padding=1)
    d = diagnose(expected, actual, w=w, x=x, geometry=g, spatial="keep")
    assert d.cause == "kernel_flip"
    assert d.evidence == diagnose(expected, actual, w=w, x=x, padding=1, spatial="keep").evidence
    with pytest.raises(PortingError, match="geometry and padding, stride both given"):
        diagnose(expected, actual, w=w, x=x, geometry=g, padding=1, stride=(1, 1))
    with pytest.raises(PortingError, match="geometry is 1-d but x has 2 spatial dimensions"):
        diagnose(expected, actual, w=w, x=x, geometry=ConvGeometry.from_knet(1))
    with pytest.raises(PortingError, match=r"geometry=\{'padding': 1\}: expected a porting"):
        diagnose(expected, actual, w=w, x=x, geometry={"padding": 1})


def test_seed002_outputs_only_suggests_the_flip():
    ex = seed002()
    expected = _conv(ex["w"], ex["x"], padding=1, spatial="keep")
    actual = np.asarray(ex["tf_printed"], dtype=np.float32).reshape(1, 5, 5, 1)
    d = diagnose(expected, actual)
    assert d.cause == "kernel_flip"
    assert "mirrored" in d.evidence and "pass w and x" in d.evidence
    assert d.confidence < 0.7  # a suggestion, not a proof


def _seed000():
    """Seed 000: a Keras-like float32 3x3 'same' conv with bias, against the reporter's
    float64 triple loop on the same float32 weights."""
    rng = np.random.default_rng(0)
    x_tf = rng.uniform(0, 1, (1, 16, 16, 1)).astype(np.float32)
    k_tf = (rng.standard_normal((3, 3, 1, 8)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    keras = _tf_side(x_tf, k_tf, [(1, 1), (1, 1)]) + b
    xp = np.zeros((1, 18, 18, 1))
    xp[0, 1:17, 1:17, :] = x_tf[0]
    mine = np.zeros((1, 16, 16, 8))
    for f in range(8):
        for i in range(16):
            for j in range(16):
                mine[0, i, j, f] = np.sum(k_tf[:, :, 0, f] * xp[0, i : i + 3, j : j + 3, 0]) + b[f]
    # the same computation as Knet sees it (spatial="keep": X1 is the height, mode=1)
    w = layout.kernel_from_tf(k_tf, mode=1, spatial="keep")
    x = layout.activations_from_tf(x_tf, spatial="keep")
    return keras, mine, w, x, layout.bias_from_tf(b)


def test_seed000_float32_differences_are_rounding():
    keras, mine, w, x, b = _seed000()
    assert np.abs(keras - mine).max() > 0  # they do differ, as the reporter saw
    d = diagnose(mine, keras, w=w, x=x, bias=b, padding=1, mode=1, spatial="keep")
    assert d.cause == "rounding" and d.ok
    assert "order of accumulation" in d.evidence and "float32 bound" in d.evidence
    assert d.comparison.max_error_to_tolerance < 1
    # outputs only, told the number of terms
    assert diagnose(mine, keras, k=9).cause == "rounding"


# ----------------------------------------------------------------------------- each cause


def test_kernel_flip_random():
    w, x = _case(1)
    e = _conv(w, x, padding=1)
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), [(1, 1), (1, 1)])
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "kernel_flip" and d.confidence == 1.0
    assert d.alternatives and all(f.score < 0.5 for f in d.alternatives)


def test_spatial_transpose_kernel_and_output():
    w, x = _case(2, shape=(7, 7), k=(3, 2))
    e = _conv(w, x, padding=1)
    # kernel converted with the other spatial convention
    a = _tf_side(
        layout.activations_to_tf(x), layout.kernel_to_tf(w, spatial="keep"), [(1, 1), (1, 1)]
    )
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "spatial_transpose" and "kernel" in d.evidence
    # output with H and W swapped: found from the outputs alone as well
    w, x = _case(3, shape=(9, 6))
    e = _conv(w, x, padding=1)
    a = np.ascontiguousarray(e.swapaxes(1, 2))
    for kw in ({}, {"w": w, "x": x, "padding": 1}):
        d = diagnose(e, a, **kw)
        assert d.cause == "spatial_transpose", kw


def test_padding_shift_same_with_even_kernel():
    w, x = _case(4, shape=(8, 8), k=(4, 4))
    e = _conv(w, x, padding=1)  # Knet: symmetric padding 1 -> 7x7
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w), [(1, 2), (1, 2)])  # TF 'SAME'
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "padding_shift"
    assert "'SAME'" in d.evidence and "(1, 2)" in d.evidence


def test_padding_shift_valid_changes_the_shape():
    w, x = _case(5)
    e = _conv(w, x, padding=1)
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w), [(0, 0), (0, 0)])
    assert a.shape != e.shape
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "padding_shift" and "VALID" in d.evidence
    assert d.comparison is None
    # outputs only: a smaller output suggests padding
    assert diagnose(e, a).cause == "padding_shift"


def test_padding_shift_border_only_from_outputs():
    w, x = _case(6, shape=(12, 12), k=(3, 3))
    e = _conv(w, x, padding=1)
    a = e.copy()
    a[:, 0, :, :] *= 1.5  # only the first row differs
    d = diagnose(e, a, k=int(np.prod(w.shape[:-1])))
    assert d.cause == "padding_shift" and "border" in d.evidence


def test_flatten_order_dense_after_conv():
    rng = np.random.default_rng(7)
    h = np.asfortranarray(rng.standard_normal((5, 4, 3, 2)).astype(np.float32))  # (X1, X2, C, N)
    wd = (rng.standard_normal((10, 60)) / 8).astype(np.float32)  # Knet dense (out, in)
    e = (wd @ knet.mat(h, backend="reference")).T
    flat = layout.activations_to_tf(h).reshape(2, -1)  # Keras Flatten on NHWC
    a = flat @ wd.T  # the kernel only transposed, rows not permuted
    d = diagnose(e, a, w=wd, x=h)
    assert d.cause == "flatten_order"
    assert "Keras Flatten on NHWC" in d.evidence and "dense_to_tf" in d.evidence
    # the fixed port is fine
    good = flat @ layout.dense_to_tf(wd, input_shape=(5, 4, 3))
    assert diagnose(e, good, w=wd, x=h).cause == "rounding"


def test_flatten_order_from_flattened_features_alone():
    rng = np.random.default_rng(8)
    h = rng.standard_normal((5, 4, 3, 2)).astype(np.float32)
    e = np.ascontiguousarray(knet.mat(h, backend="reference").T)  # Knet's feature order
    a = layout.activations_to_tf(h).reshape(2, -1)  # Keras's
    d = diagnose(e, a)
    assert d.cause == "flatten_order" and "one permutation for every row" in d.evidence


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "tf32"])
def test_precision(fmt):
    import ml_dtypes

    w, x = _case(9)
    x_tf, k_tf = layout.activations_to_tf(x), layout.kernel_to_tf(w)
    if fmt == "tf32":

        def r(v):
            u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
            return (
                ((u + 0xFFF + ((u >> 13) & 1)) & ~np.uint64(0x1FFF))
                .astype(np.uint32)
                .view(np.float32)
            )

        a = _tf_side(r(x_tf), r(k_tf), [(1, 1), (1, 1)])
    else:
        dt = np.float16 if fmt == "float16" else ml_dtypes.bfloat16
        r = lambda v: v.astype(dt).astype(np.float32)  # noqa: E731
        a = r(_tf_side(r(x_tf), r(k_tf), [(1, 1), (1, 1)]))
    e = _conv(w, x, padding=1)
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "precision", d
    assert (fmt.replace("tf32", "TF32")) in d.evidence
    if fmt != "tf32":  # a float16/bfloat16 result is visible from the values alone
        assert diagnose(e, a).cause == "precision"


def test_quantization_qkeras_like_weights():
    w, x = _case(10, cin=4, cout=3)
    wq = np.clip(np.round(w * 8), -8, 7) / 8  # quantized_bits(4, 0)
    e = _conv(w, x, padding=1)
    a = _tf_side(
        layout.activations_to_tf(x), layout.kernel_to_tf(wq.astype(np.float32)), [(1, 1), (1, 1)]
    )
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "quantization"
    assert "2^-3" in d.evidence and "quantizer(weight)" in d.evidence


@pytest.mark.parametrize("how", ["nchw", "julia", "reshape"])
def test_layout(how):
    w, x = _case(11, shape=(7, 6), n=2)
    e = _conv(w, x, padding=1)
    if how == "nchw":
        a = np.ascontiguousarray(np.moveaxis(e, -1, 1))
    elif how == "julia":
        a = layout.activations_from_tf(e)
    else:
        a = np.reshape(layout.activations_from_tf(e), e.shape)
    for kw in ({}, {"w": w, "x": x, "padding": 1}):
        d = diagnose(e, a, **kw)
        assert d.cause == "layout", (how, kw)
    if how == "nchw":
        assert "channels-first" in d.evidence
    if how == "julia":
        assert "Julia-indexed" in d.evidence
    if how == "reshape":
        assert "reshaped" in d.evidence


def test_unknown_when_nothing_explains():
    w, x = _case(12)
    e = _conv(w, x, padding=1)
    a = np.random.default_rng(99).standard_normal(e.shape).astype(np.float32)
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "unknown" and not d.ok
    assert "no tested hypothesis" in d.evidence


# ----------------------------------------------------------------------------- correct ports


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_correct_ports_are_rounding(seed, dtype):
    rng = np.random.default_rng(100 + seed)
    k = tuple(int(v) for v in rng.integers(1, 6, 2))
    w, x = _case(seed, shape=(11, 10), cin=int(rng.integers(1, 9)), cout=3, k=k, dtype=dtype)
    p = (k[0] - 1) // 2, (k[1] - 1) // 2
    stride = (1, 2) if seed % 2 else (1, 1)
    e = _conv(w, x, padding=p, stride=stride, mode=seed % 2)
    x_tf, k_tf = layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=seed % 2)
    pads = [(q, q) for q in layout.spatial_to_tf(p)]
    a = _tf_side(x_tf, k_tf, pads, stride=layout.spatial_to_tf(stride), dtype=dtype)
    assert a.dtype == dtype and np.abs(a - e).max() > 0  # genuinely different rounding
    d = diagnose(e, a, w=w, x=x, padding=p, stride=stride, mode=seed % 2)
    assert d.cause == "rounding", d
    assert diagnose(e, a).cause == "rounding"  # outputs only: no false alarm either


def test_float64_knet_against_float32_tf_is_rounding():
    ex = seed002()
    w, x = ex["w"], ex["x"]
    e = _conv(w, x, padding=1, spatial="keep")  # Float64, as the reporter's Knet ran
    a = _tf_side(
        layout.activations_to_tf(x, "keep"), layout.kernel_to_tf(w, 0, "keep"), [(1, 1), (1, 1)]
    )
    assert a.dtype == np.float32
    assert diagnose(e, a, w=w, x=x, padding=1, spatial="keep").cause == "rounding"
    # a float32 result stored as float64 is judged at float32 precision
    assert (
        diagnose(e, a.astype(np.float64), w=w, x=x, padding=1, spatial="keep").cause == "rounding"
    )


# ----------------------------------------------------------------------------- the object


def test_diagnosis_object_str_dict_and_plot_data():
    w, x = _case(13)
    e = _conv(w, x, padding=1)
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), [(1, 1), (1, 1)])
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert isinstance(d, Diagnosis) and d.cause in CAUSES
    s = str(d)
    assert s.startswith("kernel_flip (confidence 1.00)") and "alternatives:" in s
    j = json.loads(json.dumps(d.to_dict()))
    assert j["cause"] == "kernel_flip" and j["ok"] is False and j["finding"]["explains"] is True
    assert all({"cause", "score", "evidence"} <= set(alt) for alt in j["alternatives"])
    scores = [alt["score"] for alt in j["alternatives"]]
    assert scores == sorted(scores, reverse=True)
    assert d.error.shape == e.shape and d.tolerance.shape == e.shape
    assert (d.error_to_tolerance > 1).any()
    assert d.error_map().shape == e.shape[1:3]
    counts, edges, n_zero = d.ulp_histogram(bins=20)
    assert counts.sum() + n_zero == e.size and len(edges) == 21


def test_rounding_diagnosis_has_plot_data_and_ulps():
    keras, mine, w, x, b = _seed000()
    d = diagnose(mine, keras, w=w, x=x, bias=b, padding=1, mode=1, spatial="keep")
    r = d.error_to_tolerance
    assert r.max() < 1 and np.isclose(r.max(), d.comparison.max_error_to_tolerance)
    assert d.ulp.max() > 0


def test_porting_diagnose_is_the_diagnosis_function():
    import porting.diagnosis as mod

    w, x = _case(14)
    e = _conv(w, x)
    assert porting.diagnose is mod.diagnose
    assert porting.diagnose(e, e.copy()).cause == "rounding"


def test_diagnose_imports_no_tensorflow():
    code = (
        "import numpy as np, porting\n"
        "from porting import layout, knet\n"
        "w = np.ones((2, 2, 1, 1)); x = np.arange(16.0).reshape(4, 4, 1, 1)\n"
        "e = layout.activations_to_tf(np.asarray(knet.conv4(w, x, backend='reference')))\n"
        "d = porting.diagnose(e, e * 1.5, w=w, x=x)\n"
        "import sys; print(d.cause, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cause, tf_loaded = out.stdout.split()
    assert tf_loaded == "False"


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"expected": "abc"}, "dtype"),
        ({"expected": np.ones((2, 3), dtype=np.int64)}, "dtype int64"),
        ({"actual": np.zeros((0, 3))}, "non-empty"),
        ({"w": np.ones((3, 3, 1, 2))}, "both w and x"),
        ({"spatial": "sideways"}, "spatial"),
        ({"k": 0}, "k=0"),
        ({"magnitude": np.ones((5,))}, "magnitude has shape"),
        ({"bias": np.ones(2)}, "bias and activation are used only"),
        ({"max_positions": 0}, "max_positions"),
        ({"k": 10**5000}, "k=<integer of about 5000 digits>: expected at most 2"),
        ({"expected": np.ones((1, 4, 4, 2), np.longdouble)}, "dtype float128"),
        ({"w": np.ones((3, 3, 2, 2)), "x": np.ones((4, 4, 2, 1)), "alpha": np.inf}, "alpha=inf"),
        (
            {"w": np.ones((3, 3, 2, 2)), "x": np.ones((4, 4, 2, 1)), "padding": 10**5000},
            "padding=<",
        ),
        (
            {"w": np.ones((3, 3, 2, 2)), "x": np.ones((4, 4, 2, 1)), "activation": "x" * 9000},
            "x\\.\\.\\.:",
        ),
    ],
)
def test_bad_input_raises_porting_error(kwargs, match):
    args = {
        "expected": np.ones((1, 4, 4, 2), np.float32),
        "actual": np.ones((1, 4, 4, 2), np.float32),
    }
    args.update(kwargs)
    e, a = args.pop("expected"), args.pop("actual")
    with pytest.raises(PortingError, match=match):
        diagnose(e, a, **args)


def test_bad_context_raises_porting_error():
    w, x = _case(15)
    e = _conv(w, x, padding=1)
    with pytest.raises(PortingError, match="expected has shape"):
        diagnose(layout.activations_from_tf(e), e, w=w, x=x, padding=1)  # Julia layout passed
    with pytest.raises(PortingError, match="input channels"):
        diagnose(e, e, w=w, x=x[:, :, :2, :], padding=1)
    with pytest.raises(PortingError, match="smaller than the dilated kernel extent 17"):
        diagnose(e, e, w=w, x=x, padding=1, dilation=8)
    with pytest.raises(PortingError, match="alpha=nan"):
        diagnose(e, e, w=w, x=x, padding=1, alpha=np.nan)
    with pytest.raises(PortingError, match="mode"):
        diagnose(e, e, w=w, x=x, padding=1, mode=2)
    with pytest.raises(PortingError, match="dense weight has 7 inputs"):
        diagnose(np.ones((2, 3)), np.ones((2, 3)), w=np.ones((3, 7)), x=np.ones((2, 2, 2, 2)))
    with pytest.raises(PortingError, match="bias has 5 entries"):
        diagnose(e, e, w=w, x=x, padding=1, bias=np.ones(5))


def test_swapped_arguments_are_noticed():
    w, x = _case(16)
    e = _conv(w, x, padding=1)
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), [(1, 1), (1, 1)])
    d = diagnose(a, e, w=w, x=x, padding=1)
    assert d.cause == "kernel_flip"
    assert any("other way round" in n for n in d.notes)


def test_alpha_is_inferred_when_not_passed():
    w, x = _case(17)
    e = _conv(w, x, padding=1, alpha=2.5)
    a = 2.5 * _tf_side(
        layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), [(1, 1), (1, 1)]
    )
    d = diagnose(e, a.astype(np.float32), w=w, x=x, padding=1)
    assert d.cause == "kernel_flip"
    assert any("alpha" in n for n in d.notes)


# ----------------------------------------------------------------------------- beyond the vocabulary


def test_bias_or_scale_on_one_side_is_named_but_unknown():
    w, x = _case(18)
    e = _conv(w, x, padding=1)
    good = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w), [(1, 1), (1, 1)])
    b = np.float32([0.5, -0.25, 0.125, 1.0])
    d = diagnose(e, good + b, w=w, x=x, padding=1)
    assert d.cause == "unknown" and "constant per output channel" in d.evidence
    # both sides with the bias, and the recomputation told about it
    assert diagnose(e + b, good + b, w=w, x=x, padding=1, bias=b).cause == "rounding"
    d = diagnose(e + b, good, w=w, x=x, padding=1, bias=b)
    assert d.cause == "unknown" and "constant per output channel (-0.5" in d.evidence
    d = diagnose(e, good * np.float32(0.5), w=w, x=x, padding=1)
    assert d.cause == "unknown" and "0.5 x expected" in d.evidence


def test_activation_is_applied_to_the_recomputation():
    w, x = _case(19)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    e = relu(_conv(w, x, padding=1))
    a = relu(
        _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w, mode=1), [(1, 1), (1, 1)])
    )
    d = diagnose(e, a, w=w, x=x, padding=1, activation="relu")
    assert d.cause == "kernel_flip" and not d.notes
    with pytest.raises(PortingError, match="activation='softplus'"):
        diagnose(e, a, w=w, x=x, padding=1, activation="softplus")


def test_float16_overflow_and_garbage_values():
    w, x = _case(20)
    e = _conv(w, x, padding=1) * np.float32(1e5)
    with np.errstate(over="ignore"):
        a = e.astype(np.float16).astype(np.float32)
    assert np.isinf(a).any()
    d = diagnose(e, a)
    assert d.cause == "precision" and "65504" in d.evidence
    # values no convolution of w and x can produce: uninitialized memory
    e = _conv(w, x, padding=1)
    a = _tf_side(layout.activations_to_tf(x), layout.kernel_to_tf(w), [(1, 1), (1, 1)])
    a[0, 2, 3, 1] = 7.4e35
    d = diagnose(e, a, w=w, x=x, padding=1)
    assert d.cause == "unknown" and any("uninitialized memory" in n for n in d.notes)


@pytest.mark.parametrize("fill, what", [(np.nan, "NaN everywhere"), (0.0, "0 everywhere")])
@pytest.mark.parametrize("side", ["actual", "expected"])
@pytest.mark.parametrize("with_inputs", [False, True])
def test_an_empty_side_is_named_not_a_precision_format(fill, what, side, with_inputs):
    """A side that is all NaN or all zero holds nothing to diagnose: say so (a bare zero array
    is made of bfloat16 numbers, which used to be reported as a precision mistake)."""
    w, x = _case(15)
    good = _conv(w, x, padding=1)
    empty = np.full_like(good, fill)
    e, a = (good, empty) if side == "actual" else (empty, good)
    args = dict(w=w, x=x, padding=1) if with_inputs else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no All-NaN slice warnings leak out
        d = diagnose(e, a, **args)
    assert d.cause == "unknown"
    if with_inputs and side == "expected":
        # the recomputation from w and x matches `a`: the arrays are diagnosed swapped
        assert any("other way round" in n for n in d.notes)
        side = "actual"
    assert f"{side} is {what}" in d.evidence
    assert "precision" not in d.evidence and "bfloat16" not in d.evidence
    assert d.alternatives == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_endian_sides_are_diagnosed_as_the_native_ones(dtype):
    """The byte order of the arrays changes nothing: a float64 result stored big-endian is
    float64 (not a narrower format), and the seed's kernel flip is found the same way."""
    ex = seed002()
    w, x = ex["w"].astype(dtype), ex["x"].astype(dtype)
    expected = _conv(w, x, padding=1, spatial="keep")
    actual = _conv(w, x, padding=1, mode=1, spatial="keep")  # the unrotated kernel
    other = ">" if np.little_endian else "<"
    native = diagnose(expected, actual, w=w, x=x, padding=1, spatial="keep")
    swapped = diagnose(
        expected.astype(expected.dtype.newbyteorder(other)),
        actual.astype(actual.dtype.newbyteorder(other)),
        w=w.astype(w.dtype.newbyteorder(other)),
        x=x.astype(x.dtype.newbyteorder(other)),
        padding=1,
        spatial="keep",
    )
    assert native.cause == swapped.cause == "kernel_flip"
    assert swapped.evidence == native.evidence
    assert f"{np.dtype(dtype)} bound" in swapped.evidence


def test_a_huge_max_positions_means_all_positions():
    w, x = _case(15)
    e = _conv(w, x, padding=1)
    assert diagnose(e, e, w=w, x=x, padding=1, max_positions=10**5000).cause == "rounding"


def test_negative_magnitudes_are_refused_as_compare_refuses_them():
    e = np.float32([[1.0, -2.0, 3.0]])
    for call in (porting.diagnose, porting.compare):
        with pytest.raises(PortingError, match="magnitude has negative values"):
            call(e, e.copy(), magnitude=-np.abs(e))
