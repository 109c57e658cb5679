"""The `layernorm` and `groupnorm` kinds against PyTorch float64 oracles written from Flux's
source (docs/flux.md#normalisation-flux), and their Keras ports.

Oracles: `torch.nn.functional.layer_norm` for the `"var"` formula (it computes `(x - mean) /
sqrt(var + eps)` with the biased variance over the trailing dimensions: the arithmetic of
NNlib.normalise that Flux 0.16.11's LayerNorm calls, per Flux's NEWS for PR #2701), and for
`"eps2"` with `eps^2` in its place (Flux 0.15.0-0.16.10 `normalise`: `sqrt(σ² + ε^2)`,
stateless.jl@v0.15.0); `"std"` (Flux <= 0.14: `(x - μ) / (σ + ϵ)`, stateless.jl@v0.14.25)
written out with torch ops. `torch.nn.functional.group_norm` / `instance_norm` for GroupNorm /
InstanceNorm (consecutive channels per group, biased variance, `sqrt(var + eps)`: Flux's
`_norm_layer_forward`, normalise.jl@v0.14.25). Julia `(X..., C, N)` column-major is torch's
`(N, C, ..., X1)` (`x.T`).
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.model import GroupNorm, KnetModel, LayerNorm, forward_knet, to_keras, verify_model

torch = pytest.importorskip("torch", reason="torch is the independent oracle")
F = torch.nn.functional

EPS = 1e-3  # large, so the three formulas differ far beyond rounding


def ln_oracle(x, size, scale, bias, eps, formula):
    """Flux's LayerNorm on a Julia-indexed `x` (`(size..., rest..., N)`), float64."""
    t = torch.tensor(np.asarray(x, np.float64).T)
    k = len(size)
    dims = tuple(range(t.ndim - k, t.ndim))
    if formula == "std":
        mu = t.mean(dim=dims, keepdim=True)
        sd = t.std(dim=dims, keepdim=True, unbiased=False)
        y = (t - mu) / (sd + eps)
        if scale is not None:
            y = y * torch.tensor(scale.T, dtype=torch.float64) + torch.tensor(
                bias.T, dtype=torch.float64
            )
    else:
        e = eps if formula == "var" else eps**2
        w = None if scale is None else torch.tensor(scale.T, dtype=torch.float64)
        b = None if bias is None else torch.tensor(bias.T, dtype=torch.float64)
        y = F.layer_norm(t, tuple(reversed(size)), w, b, e)
    return y.numpy().T


def gn_oracle(x, groups, scale, bias, eps):
    t = torch.tensor(np.asarray(x, np.float64).T)  # (N, C, ..., X1)
    w = None if scale is None else torch.tensor(np.float64(scale))
    b = None if bias is None else torch.tensor(np.float64(bias))
    if groups == t.shape[1]:
        y = F.instance_norm(t, weight=w, bias=b, eps=eps)
    else:
        y = F.group_norm(t, groups, w, b, eps)
    return y.numpy().T


def _bound(want, dtype, n):
    """Float rounding of a normalisation of n elements: (sqrt(n) + 8) eps of the output's
    scale (the mean and variance sums, the division, scale and bias)."""
    e = np.finfo(dtype).eps
    return (np.sqrt(n) + 8) * e * (1 + np.abs(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("formula", ["var", "eps2", "std"])
@pytest.mark.parametrize(
    "size,in_size", [((6,), (6,)), ((5, 4, 3), (5, 4, 3)), ((5,), (5, 4, 3)), ((5, 4), (5, 4, 3))]
)
def test_layernorm_matches_flux_oracle(dtype, formula, size, in_size):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (*in_size, 3)).astype(dtype) * 0.05  # small spread: eps matters
    scale = rng.uniform(0.5, 1.5, size).astype(dtype)
    bias = rng.standard_normal(size).astype(dtype)
    m = KnetModel([LayerNorm(size, scale, bias, eps=EPS, formula=formula)], input_size=in_size)
    y = forward_knet(m, x)[-1]
    assert y.dtype == dtype
    want = ln_oracle(x, size, scale, bias, float(dtype(EPS)), formula)
    n = int(np.prod(size))
    assert (np.abs(y - want) <= _bound(want, dtype, n)).all()
    # the check can fail: the other formulas are far outside that bound
    for other in {"var", "eps2", "std"} - {formula}:
        diff = np.abs(ln_oracle(x, size, scale, bias, float(dtype(EPS)), other) - want)
        assert diff.max() > 100 * _bound(want, dtype, n).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups,affine", [(2, True), (6, False), (6, True), (1, True)])
@pytest.mark.parametrize("in_size", [(5, 4, 6), (7, 6), (3, 2, 2, 6)])
def test_groupnorm_matches_flux_oracle(dtype, groups, affine, in_size):
    rng = np.random.default_rng(2)
    c = in_size[-1]
    x = (rng.uniform(-1, 1, (*in_size, 2)) + 3).astype(dtype)  # a mean far from 0
    g = rng.uniform(0.5, 1.5, c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    m = KnetModel([GroupNorm(c, groups, g, b, eps=EPS)], input_size=in_size, dtype=dtype)
    y = forward_knet(m, x)[-1]
    want = gn_oracle(x, groups, g, b, float(dtype(EPS)))
    n = int(np.prod(in_size[:-1])) * (c // groups)
    assert (np.abs(y - want) <= _bound(want, dtype, n)).all()
    if 1 < groups < c:  # groups of consecutive channels, not interleaved ones
        perm = np.arange(c).reshape(groups, c // groups).T.reshape(-1)
        wrong = gn_oracle(x[..., perm, :], groups, g, b, float(dtype(EPS)))[
            ..., np.argsort(perm), :
        ]
        assert np.abs(wrong - want).max() > 100 * _bound(want, dtype, n).max()


def _keras_out(model, x):
    from porting.model.convert import julia_to_tf, tf_to_julia

    km = to_keras(model)
    return tf_to_julia(np.asarray(km(julia_to_tf(x, None, "reverse"))), None, "reverse")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("formula", ["var", "eps2"])
@pytest.mark.parametrize(
    "size,in_size", [((6,), (6,)), ((5, 4, 3), (5, 4, 3)), ((5,), (5, 4, 3)), ((5, 4), (5, 4, 3))]
)
def test_layernorm_keras_port_matches_oracle_and_verifies(dtype, formula, size, in_size):
    pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (*in_size, 2)).astype(dtype) * 0.05
    scale = rng.uniform(0.5, 1.5, size).astype(dtype)
    bias = rng.standard_normal(size).astype(dtype)
    m = KnetModel([LayerNorm(size, scale, bias, eps=EPS, formula=formula)], input_size=in_size)
    got = _keras_out(m, x) if len(in_size) > 1 else np.asarray(to_keras(m)(x.T)).T
    want = ln_oracle(x, size, scale, bias, float(dtype(EPS)), formula)
    assert (np.abs(got - want) <= _bound(want, dtype, int(np.prod(size)))).all()
    for mode in ("each", "whole"):
        assert verify_model(m, mode=mode).ok


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [2, 6])
@pytest.mark.parametrize("in_size", [(5, 4, 6), (9, 6), (3, 4, 2, 6)])
def test_groupnorm_keras_port_matches_oracle_and_verifies(dtype, groups, in_size):
    pytest.importorskip("keras")
    rng = np.random.default_rng(4)
    x = (rng.uniform(-1, 1, (*in_size, 2)) + 3).astype(dtype)
    g, b = rng.uniform(0.5, 1.5, 6).astype(dtype), rng.standard_normal(6).astype(dtype)
    m = KnetModel([GroupNorm(6, groups, g, b, eps=EPS)], input_size=in_size)
    got = _keras_out(m, x)
    want = gn_oracle(x, groups, g, b, float(dtype(EPS)))
    n = int(np.prod(in_size[:-1])) * 6 // groups
    assert (np.abs(got - want) <= _bound(want, dtype, n)).all()
    assert verify_model(m, mode="each").ok and verify_model(m, mode="whole").ok


def test_the_std_formula_is_refused_for_keras_with_the_reason():
    pytest.importorskip("keras")
    m = KnetModel([LayerNorm((4,), formula="std")], input_size=(4,))
    with pytest.raises(PortingError, match="std \\+ eps.*no Keras built-in equivalent|no Keras"):
        to_keras(m)


def test_verification_catches_a_wrong_epsilon():
    """A port with Keras's default epsilon (1e-3) for Flux's 1e-5 is outside the tolerance."""
    pytest.importorskip("keras")
    rng = np.random.default_rng(5)
    size = (8,)
    scale, bias = rng.uniform(0.5, 1.5, size).astype(np.float32), np.zeros(8, np.float32)
    right = KnetModel([LayerNorm(size, scale, bias, eps=1e-5)], input_size=size)
    wrong = KnetModel([LayerNorm(size, scale, bias, eps=1e-3)], input_size=size)
    x = (rng.uniform(-1, 1, (8, 4)) * 0.05).astype(np.float32)
    report = verify_model(right, keras_model=to_keras(wrong), x=x)
    assert not report.ok


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: LayerNorm((4,), np.ones(3, np.float32), np.ones(3, np.float32)), "expected size"),
        (lambda: LayerNorm((4,), np.ones(4, np.float32), None), "come together"),
        (lambda: LayerNorm((4,), formula="sqrt"), "formula='sqrt'"),
        (lambda: LayerNorm((4,), eps=-1.0), "eps=-1.0"),
        (lambda: LayerNorm((0,)), "size"),
        (lambda: GroupNorm(6, 4), "groups=4 for channels=6"),
        (lambda: GroupNorm(6, 3, np.ones(5, np.float32), np.ones(5, np.float32)), "(6,)"),
        (lambda: GroupNorm(6, 3, eps=float("nan")), "eps"),
    ],
)
def test_bad_fields_are_one_porting_error(make, words):
    with pytest.raises(PortingError) as e:
        make()
    assert words in str(e.value)


@pytest.mark.parametrize(
    "layer,size,words",
    [
        (LayerNorm((5,)), (4,), "first 1 dimension"),
        (LayerNorm((5, 4)), (5, 3, 2), "LayerNorm's size (5, 4)"),
        (GroupNorm(6, 2), (5, 4, 3), "6 channels"),
        (GroupNorm(6, 2), (6,), "spatial"),
    ],
)
def test_wrong_input_sizes_are_refused(layer, size, words):
    with pytest.raises(PortingError) as e:
        _ = KnetModel([layer], input_size=size).output_sizes
    assert words in str(e.value)


# ------------------------------------------------------------------ diagnosis of wrong ports


def _wrong_port_report(layer, in_size, wrong_layer, x):
    """`verify_model` of the right description against a Keras port built from a wrong one
    (the port's numbers are Keras's own LayerNormalization / GroupNormalization)."""
    m = KnetModel([layer], input_size=in_size)
    km = to_keras(KnetModel([wrong_layer], input_size=in_size))
    return verify_model(m, keras_model=km, x=x)


@pytest.mark.parametrize(
    "wrong,cause",
    [
        ({"eps": 1e-3}, "norm_epsilon"),  # Keras's default epsilon
        ({"formula": "eps2"}, "norm_epsilon"),  # a Flux 0.15-0.16.10 LayerNorm's arithmetic
    ],
)
def test_diagnosis_names_a_wrong_layernorm_epsilon(wrong, cause):
    pytest.importorskip("keras")
    rng = np.random.default_rng(7)
    size = (6, 5)
    scale = rng.uniform(0.5, 1.5, size).astype(np.float32)
    bias = rng.standard_normal(size).astype(np.float32)
    eps = 1e-2 if "formula" in wrong else 1e-5  # eps^2 vs eps must show beyond rounding
    right = LayerNorm(size, scale, bias, eps=eps, name="ln")
    bad = LayerNorm(size, scale, bias, **({"eps": eps} | wrong), name="ln")
    x = (rng.uniform(-1, 1, (*size, 3)) * 0.02).astype(np.float32)
    report = _wrong_port_report(right, size, bad, x)
    assert not report.ok
    d = report.diagnosis
    assert d is not None and d.cause == cause, str(d)


def test_diagnosis_names_interleaved_groups_and_accepts_a_right_port():
    pytest.importorskip("keras")
    from porting.diagnosis import diagnose_normalisation

    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (2, 4, 5, 6)).astype(np.float32) + 1  # TF layout (N, H, W, C)
    g, b = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    t = torch.tensor(np.float64(x)).movedim(3, 1)
    perm = np.arange(6).reshape(2, 3).T.reshape(-1)  # channel c in group c mod 3
    wrong = F.group_norm(t[:, perm], 3, torch.tensor(g[perm]), torch.tensor(b[perm]), 1e-5)
    wrong = wrong[:, np.argsort(perm)].movedim(1, 3).numpy().astype(np.float32)
    d = diagnose_normalisation(x, wrong, groups=3, scale=g, bias=b)
    assert d.cause == "norm_groups", str(d)
    right = F.group_norm(t, 3, torch.tensor(g), torch.tensor(b), 1e-5).movedim(1, 3).numpy()
    assert diagnose_normalisation(x, right.astype(np.float32), groups=3, scale=g, bias=b).cause == (
        "rounding"
    )
    with pytest.raises(PortingError, match="does not divide"):
        diagnose_normalisation(x, right, groups=4)


@pytest.mark.parametrize(
    "layer,key,value,words",
    [
        (LayerNorm((4,)), "size", None, 'needs "size"'),
        (LayerNorm((4,)), "size", [4, -1], "size"),
        (LayerNorm((4,)), "formula", "sqrt", "formula='sqrt'"),
        (LayerNorm((4,)), "formula", 3, "formula"),
        (LayerNorm((4,)), "eps", "1e-5", "eps"),
        (GroupNorm(4, 2), "groups", None, 'needs "groups"'),
        (GroupNorm(4, 2), "groups", 3, "groups=3 for channels=4"),
        (GroupNorm(4, 2), "channels", True, "channels"),
    ],
)
def test_hostile_export_json_is_one_porting_error(tmp_path, layer, key, value, words):
    import json

    from porting.model import load_export, save_export

    size = (4,) if layer.kind == "layernorm" else (3, 4)
    save_export(KnetModel([layer], input_size=size), tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["layers"][0][key] = value
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(PortingError) as e:
        load_export(tmp_path / "m")
    assert words in str(e.value)


def test_export_with_a_wrong_scale_size_is_refused(tmp_path):
    from porting.model import load_export, save_export

    rng = np.random.default_rng(9)
    ln = LayerNorm((4,), rng.standard_normal(4), rng.standard_normal(4))
    save_export(KnetModel([ln], input_size=(4,)), tmp_path / "m")
    arrays = dict(np.load(tmp_path / "m.npz"))
    key = next(k for k in arrays if k.endswith("scale"))
    arrays[key] = np.ones(5)
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(PortingError) as e:
        load_export(tmp_path / "m")
    assert "(5,)" in str(e.value) and "(4,)" in str(e.value)


@pytest.mark.parametrize("spatial", ["reverse", "keep"])
@pytest.mark.parametrize("size", [(5,), (5, 4), (5, 4, 3)])
def test_layernorm_verifies_under_both_spatial_conventions(spatial, size):
    pytest.importorskip("keras")
    rng = np.random.default_rng(11)
    scale = rng.uniform(0.5, 1.5, size).astype(np.float32)
    bias = rng.standard_normal(size).astype(np.float32)
    m = KnetModel([LayerNorm(size, scale, bias)], input_size=(5, 4, 3))
    assert verify_model(m, spatial=spatial).ok
