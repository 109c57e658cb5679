"""Flux's LayerNorm, GroupNorm and InstanceNorm read from BSON.jl files (written here following
BSON.jl's encoding: porting.examples.flux) and from `Flux.state` trees, against PyTorch float64
oracles written from Flux's source (tests/test_model_norms.py's `ln_oracle`, `gn_oracle`;
running-statistics oracles below from normalise.jl@v0.14.25 `_norm_layer_forward` and
normalise.jl@v0.13.0 for GroupNorm's per-group statistics), float32 and Float64, and the round
trips Flux BSON -> Keras -> Knet -> Keras.

Field orders (struct declarations, normalise.jl and basic.jl): LayerNorm `(λ, diag, ϵ, size,
affine)` (0.12 on), `diag` a `Scale(scale, bias, σ)` (0.13 on) or 0.12's `Diagonal(α, β)`;
InstanceNorm `(λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active, chs)`; GroupNorm
`(G, λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active, chs)`.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_flux import _cli
from test_model_norms import gn_oracle, ln_oracle

from porting.errors import PortingError
from porting.examples import flux as fx
from porting.flux import build as B
from porting.flux import load_model

torch = pytest.importorskip("torch", reason="torch is the independent oracle")

EPS = 1e-3


def layernorm(size, scale, bias, act="Base.identity", eps=EPS, dtype=np.float32):
    return fx.layernorm(size, scale, bias, act, eps)


def groupnorm(c, g, gamma, beta, act="Base.identity", eps=EPS, dtype=np.float32):
    return fx.groupnorm(c, g, gamma, beta, act, eps)


def instancenorm(c, gamma, beta, mu=None, var=None, act="Base.identity", eps=EPS, active=None):
    return fx.instancenorm(c, gamma, beta, mu, var, act, eps, active)


def _keras(model, x):
    from porting.model import to_keras
    from porting.model.convert import julia_to_tf, tf_to_julia

    km = to_keras(model)
    return tf_to_julia(np.asarray(km(julia_to_tf(x, None, "reverse"))), None, "reverse"), km


def _bound(want, dtype, n):
    return (np.sqrt(n) + 8) * np.finfo(dtype).eps * (1 + np.abs(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_groupnorm_and_instancenorm_bson_match_flux_oracle(tmp_path, dtype):
    rng = np.random.default_rng(0)
    c = 6
    g1, b1 = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g2, b2 = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    m = fx.chain(
        instancenorm(c, g2, b2),
        instancenorm(c, None, None),
        groupnorm(c, 3, g1, b1, act="NNlib.relu", dtype=dtype),  # last: relu's zeros have no
    )  # spread for a norm after it to amplify
    p = fx.save(tmp_path / "gn.bson", {"model": m})
    fm = load_model(p, input_size=(5, 4, c))
    assert [f.layer.kind for f in fm.layers] == [
        "groupnorm",
        "groupnorm",
        "groupnorm",
        "activation",
    ]
    x = (rng.uniform(-1, 1, (5, 4, c, 2)) + 2).astype(dtype)
    e32 = float(np.float32(EPS))  # InstanceNorm's ϵ is a Float32 field
    want = gn_oracle(gn_oracle(x, c, g2, b2, e32), c, None, None, e32)
    want = np.maximum(gn_oracle(want, 3, g1, b1, float(dtype(EPS))), 0)
    got, _ = _keras(fm.model, x)
    assert got.dtype == dtype
    assert (np.abs(got - want) <= _bound(want, dtype, 40)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version,formula", [("0.16.11", "var"), ("0.15.2", "eps2")])
def test_layernorm_bson_by_flux_version(tmp_path, dtype, version, formula):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 5)).astype(dtype)
    scale, bias = rng.uniform(0.5, 1.5, 8).astype(dtype), rng.standard_normal(8).astype(dtype)
    m = fx.chain(fx.dense(w, None), layernorm((8,), scale, bias, "NNlib.relu", dtype=dtype))
    p = fx.save(tmp_path / "ln.bson", {"model": m})
    fm = load_model(p, flux_version=version)
    ln = fm.layers[1].layer
    assert (ln.kind, ln.formula) == ("layernorm", formula)
    assert fm.layers[2].layer.kind == "activation"
    x = rng.uniform(-1, 1, (5, 3)).astype(dtype) * 0.02
    h = w.astype(np.float64) @ x.astype(np.float64)
    want = np.maximum(ln_oracle(h, (8,), scale, bias, float(dtype(EPS)), formula), 0)
    from porting.model import to_keras

    got = np.asarray(to_keras(fm.model)(x.T)).T
    assert (np.abs(got - want) <= _bound(want, dtype, 8 + 5)).all()


def test_layernorm_before_0_15_is_read_and_refused_for_keras(tmp_path):
    rng = np.random.default_rng(2)
    scale, bias = np.ones((4, 3), np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    p = fx.save(tmp_path / "ln.bson", {"model": fx.chain(layernorm((4, 3), scale, bias))})
    fm = load_model(p, input_size=(4, 3, 2), flux_version="0.14.22")
    assert fm.layers[0].layer.formula == "std"
    from porting.model import forward_knet, to_keras

    x = rng.uniform(-1, 1, (4, 3, 2, 2)).astype(np.float32) * 0.01
    want = ln_oracle(x, (4, 3), scale, bias, float(np.float32(EPS)), "std")
    y = forward_knet(fm.model, x)[-1]
    assert (np.abs(y - want) <= _bound(want, np.float32, 12)).all()
    with pytest.raises(PortingError, match="no Keras built-in equivalent"):
        to_keras(fm.model)


def test_layernorm_without_a_version_names_the_choice(tmp_path):
    p = fx.save(
        tmp_path / "ln.bson",
        {"model": fx.chain(layernorm((4,), np.ones(4, np.float32), np.zeros(4, np.float32)))},
    )
    with pytest.raises(PortingError) as e:
        load_model(p)
    assert "--flux-version" in str(e.value) and "0.16.11" in str(e.value)
    with pytest.raises(PortingError, match="expected a Flux release"):
        load_model(p, flux_version="latest")


def test_layernorm_v012_diagonal_and_lambda_outside(tmp_path):
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    ln = fx.struct(
        "Flux.LayerNorm",
        fx.function("Base.tanh"),
        fx.struct("Flux.Diagonal", fx.array(a), fx.array(b)),
        fx.float32(EPS),
        fx.tuple_(6),
        True,
    )
    p = fx.save(tmp_path / "ln.bson", {"model": fx.chain(ln)})
    fm = load_model(p, input_size=(6,), flux_version="0.12.10")
    assert [f.layer.kind for f in fm.layers] == ["layernorm", "activation"]
    assert fm.layers[1].layer.function == "tanh"
    ln_layer = fm.layers[0].layer
    np.testing.assert_array_equal(ln_layer.scale, a)  # α is the scale, β the bias
    np.testing.assert_array_equal(ln_layer.bias, b)


def test_running_statistics_become_batchnorm(tmp_path):
    """InstanceNorm(track_stats=true) and Flux 0.12-0.13 GroupNorm(track_stats=true) use the
    running μ, σ² at inference (normalise.jl@v0.13.0 `_norm_layer_forward`; GroupNorm's per
    group, reshaped onto `(C÷G, G)`)."""
    rng = np.random.default_rng(4)
    c, g = 4, 2
    mu, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    gam, bet = (
        rng.uniform(0.5, 1.5, c).astype(np.float32),
        rng.standard_normal(c).astype(np.float32),
    )
    gmu, gvar = rng.standard_normal(g).astype(np.float32), rng.uniform(0.5, 2, g).astype(np.float32)
    gn = fx.struct(
        "Flux.GroupNorm",
        g,
        fx.function("Base.identity"),
        fx.array(bet),
        fx.array(gam),
        fx.array(gmu),
        fx.array(gvar),
        fx.float32(EPS),
        fx.float32(0.1),
        True,
        True,
        None,
        c,
    )
    p = fx.save(tmp_path / "s.bson", {"model": fx.chain(instancenorm(c, gam, bet, mu, var), gn)})
    fm = load_model(p, input_size=(3, 3, c))
    assert [f.layer.kind for f in fm.layers] == ["batchnorm", "batchnorm"]
    x = rng.uniform(-1, 1, (3, 3, c, 2)).astype(np.float32)
    t = torch.tensor(x.T.astype(np.float64))  # (N, C, X2, X1)

    def ch(v):
        return torch.tensor(np.float64(v)).reshape(1, -1, 1, 1)

    e = float(np.float32(EPS))
    t = ch(gam) * (t - ch(mu)) / torch.sqrt(ch(var) + e) + ch(bet)
    t5 = t.reshape(2, g, c // g, 3, 3)  # Julia reshape (X1, X2, C÷G, G, N)
    gm = torch.tensor(np.float64(gmu)).reshape(1, g, 1, 1, 1)
    gv = torch.tensor(np.float64(gvar)).reshape(1, g, 1, 1, 1)
    t = ((t5 - gm) / torch.sqrt(gv + e)).reshape(2, c, 3, 3) * ch(gam) + ch(bet)
    want = t.numpy().T
    got, _ = _keras(fm.model, x)
    assert (np.abs(got - want) <= _bound(want, np.float32, 8)).all()


HOSTILE = {
    "groups do not divide": (
        lambda: groupnorm(6, 4, np.ones(6, np.float32), np.zeros(6, np.float32)),
        "does not divide",
    ),
    "instancenorm fields": (
        lambda: fx.struct("Flux.InstanceNorm", fx.function("Base.identity"), 3),
        "expected 11",
    ),
    "groupnorm gamma size": (
        lambda: groupnorm(6, 3, np.ones(5, np.float32), np.zeros(5, np.float32)),
        "expected (6,)",
    ),
    "scale size": (
        lambda: layernorm((4,), np.ones(3, np.float32), np.zeros(3, np.float32)),
        "expected size (4,)",
    ),
    "active": (
        lambda: instancenorm(4, None, None, active=True),
        "active=true",
    ),
    "layernorm size": (
        lambda: fx.struct(
            "Flux.LayerNorm", fx.function("Base.identity"), None, fx.float32(1e-5), "x", True
        ),
        "expected a tuple of integers",
    ),
    "diag": (
        lambda: fx.struct(
            "Flux.LayerNorm", fx.function("Base.identity"), 7, fx.float32(1e-5), fx.tuple_(3), True
        ),
        "expected Flux's Scale",
    ),
    "eps": (
        lambda: fx.struct(
            "Flux.LayerNorm", fx.function("Base.identity"), None, "e", fx.tuple_(3), True
        ),
        "ϵ",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_norm_fields_are_one_porting_error(tmp_path, case):
    make, words = HOSTILE[case]
    p = fx.save(tmp_path / "bad.bson", {"model": fx.chain(make())})
    with pytest.raises(PortingError) as e:
        load_model(p, input_size=(4, 4, 6), flux_version="0.16.11")
    assert words in str(e.value)


def test_cli_hostile_exit_2_nothing_written_and_a_good_file_verifies(tmp_path):
    bad = fx.save(
        tmp_path / "bad.bson",
        {"model": fx.chain(groupnorm(6, 4, np.ones(6, np.float32), np.zeros(6, np.float32)))},
    )
    r = _cli("convert", bad, "--input-size", "4,4,6", "-o", tmp_path / "o.keras", cwd=tmp_path)
    assert r.returncode == 2 and "does not divide" in r.stderr and "Traceback" not in r.stderr
    ln = fx.save(
        tmp_path / "ln.bson",
        {"model": fx.chain(layernorm((4,), np.ones(4, np.float32), np.zeros(4, np.float32)))},
    )
    r = _cli("convert", ln, "--input-size", "4", "-o", tmp_path / "o.keras", cwd=tmp_path)
    assert r.returncode == 2 and "--flux-version" in r.stderr
    r = _cli(
        "convert",
        ln,
        "--flux-version",
        "0.14.0",
        "--input-size",
        "4",
        "-o",
        tmp_path / "o.keras",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "no Keras built-in equivalent" in r.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["bad.bson", "ln.bson"]
    r = _cli(
        "convert",
        ln,
        "--flux-version",
        "0.16.11",
        "--input-size",
        "4",
        "-o",
        tmp_path / "o.keras",
        "--verify",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "o.keras").is_file()


def test_round_trip_flux_bson_to_keras_to_knet_to_keras(tmp_path):
    from porting.fromkeras import from_keras
    from porting.model import to_keras

    rng = np.random.default_rng(5)
    c = 4
    m = fx.chain(
        fx.conv(
            rng.standard_normal((3, 3, 2, c)).astype(np.float32),
            np.zeros(c, np.float32),
            act="Base.identity",
        ),
        groupnorm(c, 2, rng.uniform(0.5, 1.5, c).astype(np.float32), np.zeros(c, np.float32)),
        layernorm(
            (6, 5, c),
            np.ones((6, 5, c), np.float32),
            rng.standard_normal((6, 5, c)).astype(np.float32),
        ),
        instancenorm(c, None, None),
    )
    p = fx.save(tmp_path / "m.bson", {"model": m})
    fm = load_model(p, input_size=(8, 7, 2), flux_version="0.16.11")
    km = to_keras(fm.model)
    back = from_keras(km)
    assert [la.kind for la in back.layers] == ["conv", "groupnorm", "layernorm", "groupnorm"]
    km2 = to_keras(back)
    x = rng.uniform(-1, 1, (2, 7, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(km2(x)), np.asarray(km(x)))


def test_flux_state_builder_loads_norms_and_names_mismatches():
    rng = np.random.default_rng(6)
    c = 4
    model = B.Chain(
        B.GroupNorm(c, 2, "relu"),
        B.InstanceNorm(c),
        B.flatten,
        B.LayerNorm(3 * 3 * c),
    )
    gam, bet = (
        rng.uniform(0.5, 1.5, c).astype(np.float32),
        rng.standard_normal(c).astype(np.float32),
    )
    s, b = np.ones(36, np.float32), rng.standard_normal(36).astype(np.float32)
    gn = {"G": 2, "λ": (), "β": bet, "γ": gam, "μ": None, "σ²": None, "ϵ": np.float32(1e-5),
          "momentum": np.float32(0.1), "affine": True, "track_stats": False, "active": None,
          "chs": c}  # fmt: skip
    inn = {"λ": (), "β": None, "γ": None, "μ": None, "σ²": None, "ϵ": np.float32(1e-5),
           "momentum": np.float32(0.1), "affine": False, "track_stats": False, "active": None,
           "chs": c}  # fmt: skip
    ln = {"λ": (), "diag": {"scale": s, "bias": b, "σ": ()}, "ϵ": np.float32(1e-5),
          "size": (36,), "affine": True}  # fmt: skip
    state = {"layers": (gn, inn, (), ln)}
    km = B.load_state(model, state, input_size=(3, 3, c), flux_version="0.16.11")
    assert [la.kind for la in km.layers] == [
        "groupnorm",
        "activation",
        "groupnorm",
        "mat",
        "layernorm",
    ]
    x = rng.uniform(-1, 1, (3, 3, c, 2)).astype(np.float32)
    from porting.model import forward_knet

    y = forward_knet(km, x)[-1]
    e = float(np.float32(1e-5))
    h = gn_oracle(gn_oracle(x, 2, gam, bet, e).clip(0), c, None, None, e)
    want = ln_oracle(h.reshape(36, 2, order="F"), (36,), s, b, e, "var")
    assert (np.abs(y - want) <= _bound(want, np.float32, 36)).all()
    bad = dict(ln, diag={"scale": np.ones(35, np.float32), "bias": b, "σ": ()})
    with pytest.raises(PortingError, match="size \\(35,\\) in the state, \\(36,\\) in the model"):
        B.load_state(model, {"layers": (gn, inn, (), bad)}, flux_version="0.16.11")
    with pytest.raises(PortingError, match="missing G"):
        B.load_state(model, {"layers": ({k: v for k, v in gn.items() if k != "G"}, inn, (), ln)})
    with pytest.raises(PortingError, match="G=3"):
        B.GroupNorm(4, 3)


def test_cli_inspect_takes_the_flux_version_and_other_models_refuse_it(tmp_path):
    ln = fx.save(
        tmp_path / "ln.bson",
        {"model": fx.chain(layernorm((4,), np.ones(4, np.float32), np.zeros(4, np.float32)))},
    )
    r = _cli("inspect", ln, cwd=tmp_path)
    assert r.returncode == 0 and "cannot convert" in r.stdout and "--flux-version" in r.stdout
    r = _cli("inspect", ln, "--flux-version", "0.16.11", cwd=tmp_path)
    assert r.returncode == 0 and "Flux model: Flux.Chain: 1 layers" in r.stdout, r.stdout
    r = _cli("inspect", ln, "--key", "model", "--flux-version", "0.15.1", cwd=tmp_path)
    assert r.returncode == 0 and "eps2" in r.stdout, r.stdout
    np.save(tmp_path / "x.npy", np.zeros(3))
    r = _cli("convert", tmp_path / "x.npy", "--flux-version", "0.16.11", "-o", tmp_path / "o.keras",
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "applies to a Flux model" in r.stderr
    assert not (tmp_path / "o.keras").exists()


def test_layernorm_not_affine_with_lambda_is_fix1_broadcast(tmp_path):
    """Flux 0.13 on: `LayerNorm(sz, λ; affine=false)` stores `diag = Base.Fix1(broadcast, λ)`
    (normalise.jl@v0.14.25:194-197), and the λ field is not applied a second time."""
    fix1 = fx.struct("Base.Fix1", fx.function("Base.broadcast"), fx.function("NNlib.relu"))
    ln = fx.struct(
        "Flux.LayerNorm", fx.function("NNlib.relu"), fix1, fx.float32(EPS), fx.tuple_(5), False
    )
    p = fx.save(tmp_path / "ln.bson", {"model": fx.chain(ln)})
    fm = load_model(p, input_size=(5,), flux_version="0.16.11")
    assert [f.layer.kind for f in fm.layers] == ["layernorm", "activation"]
    assert fm.layers[0].layer.scale is None and fm.layers[1].layer.function == "relu"
    x = np.random.default_rng(10).uniform(-1, 1, (5, 3)).astype(np.float32)
    from porting.model import to_keras

    want = np.maximum(ln_oracle(x, (5,), None, None, float(np.float32(EPS)), "var"), 0)
    got = np.asarray(to_keras(fm.model)(x.T)).T
    assert (np.abs(got - want) <= _bound(want, np.float32, 5)).all()


def test_flux_state_instancenorm_with_running_statistics():
    rng = np.random.default_rng(12)
    c = 3
    model = B.Chain(B.InstanceNorm(c, affine=True, track_stats=True))
    mu, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    gam, bet = (
        rng.uniform(0.5, 1.5, c).astype(np.float32),
        rng.standard_normal(c).astype(np.float32),
    )
    node = {"λ": (), "β": bet, "γ": gam, "μ": mu, "σ²": var, "ϵ": np.float32(1e-5),
            "momentum": np.float32(0.1), "affine": True, "track_stats": True, "active": None,
            "chs": c}  # fmt: skip
    km = B.load_state(model, {"layers": (node,)}, input_size=(4, 4, c))
    assert [la.kind for la in km.layers] == ["batchnorm"]
    from porting.model import forward_knet

    x = rng.uniform(-1, 1, (4, 4, c, 2)).astype(np.float32)
    t = torch.tensor(x.T.astype(np.float64))

    def ch(v):
        return torch.tensor(np.float64(v)).reshape(1, -1, 1, 1)

    want = ch(gam) * (t - ch(mu)) / torch.sqrt(ch(var) + float(np.float32(1e-5))) + ch(bet)
    want = want.numpy().T
    y = forward_knet(km, x)[-1]
    assert (np.abs(y - want) <= _bound(want, np.float32, 4)).all()
    with pytest.raises(PortingError, match="track_stats"):
        B.load_state(model, {"layers": (dict(node, track_stats=False),)})
