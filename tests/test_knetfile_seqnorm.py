"""porting.knetfile: batchnorm (Knet bnmoments + bnparams), Knet `RNN` structs and embeddings
found in JLD2 trees, written here in the shape `porting.io.load` gives a JLD2 struct (a dict of
fields, functions as type names, Knet's Cint fields as int32).

Expected outputs come from tests/knet_torch.py (PyTorch float64 from Knet's definitions) and a
PyTorch GRU written here; layer kinds and settings are read off Knet's sources
(ops20/batchnorm.jl: `BNMoments(momentum, mean, var, meaninit, varinit)`; ops20/rnn.jl:
`mode` 0 relu / 1 tanh / 2 lstm / 3 gru, `direction` 1 bidirectional, `inputMode` 1 skip input).
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.knetfile.recognise import DEFAULT, FILE, FLAG, Geometry, classify, recognise
from porting.knetfile.report import ASSUMED

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")

import knet_torch as K  # noqa: E402  (tests/ is on sys.path)

from porting.model import forward_knet  # noqa: E402
from porting.model.kinds.embed import knet_sequence  # noqa: E402
from porting.rnn import RNNSpec, pack, random_weights  # noqa: E402

F64 = np.float64
I32 = np.int32


def param(a):
    return {"value": a, "opt": None}


def moments(mean, var, momentum=0.1):
    """Knet's BNMoments as loaded: meaninit/varinit are functions (type names)."""
    return {
        "momentum": momentum,
        "mean": mean,
        "var": var,
        "meaninit": "Base.zeros",
        "varinit": "Base.ones",
    }


def _bn_chain(rng):
    """cifar10 cnn_batchnorm's layers as structs: conv4 -> batchnorm -> relu -> pool, then
    w * x -> batchnorm -> relu, then w * x .+ b."""
    c = 4
    conv = {
        "w": param(rng.standard_normal((3, 3, 2, c))),
        "bn": moments(rng.standard_normal((1, 1, c, 1)), rng.uniform(0.5, 2, (1, 1, c, 1)), 0.2),
        "params": param(rng.standard_normal(2 * c)),
        "f": "Knet.Ops20.relu",
    }
    lin = {
        "w": param(rng.standard_normal((5, 36))),
        "m": moments(rng.standard_normal((5, 1)), rng.uniform(0.5, 2, (5, 1))),
        "p": param(rng.standard_normal(10)),  # bnparams named p: an array, not a dropout
        "f": "Knet.Ops20.relu",
    }
    out = {"w": param(rng.standard_normal((3, 5))), "b": param(rng.standard_normal(3))}
    return {"layers": [conv, lin, out]}


def test_cnn_batchnorm_structs_become_conv_batchnorm_relu_pool():
    rng = np.random.default_rng(0)
    chain = _bn_chain(rng)
    rec = recognise(chain, "model", Geometry())
    kinds = [la.kind for la in rec.layers]
    assert kinds == [
        "conv",
        "batchnorm",
        "activation",
        "pool",
        "dense",
        "batchnorm",
        "activation",
        "dense",
    ]
    bn = {s.name: s for s in rec.reports[1].settings}
    assert bn["momentum"].source == FILE and bn["momentum"].value == 0.2
    assert bn["eps"].source == DEFAULT and bn["eps"].value == 1e-5
    assert rec.reports[1].path == "model/layers/1"
    assert any("model/layers/1/params" in n for n in rec.reports[1].notes)
    assert rec.layers[0].activation == "identity" and rec.layers[0].pool is None
    order = {s.name: s for s in rec.reports[0].settings}["order"]
    assert (order.value, order.source) == ("batchnorm, f, pool", ASSUMED)

    from porting.model import KnetModel

    model = KnetModel(rec.layers, input_size=(8, 8, 2))
    x = rng.standard_normal((8, 8, 2, 3))
    got = forward_knet(model, x, backend="reference")[-1]
    conv, lin, out = chain["layers"]
    y = K.conv4(conv["w"]["value"], x)  # Knet's defaults: padding 0, stride 1, mode 0
    mom = conv["bn"]
    y = K.batchnorm(y, K.bnmoments(mean=mom["mean"], var=mom["var"]), conv["params"]["value"])
    y = K.pool(K.relu(y))
    y = K.mat(y)
    y = lin["w"]["value"] @ y
    mom = lin["m"]
    y = K.relu(K.batchnorm(y, K.bnmoments(mean=mom["mean"], var=mom["var"]), lin["p"]["value"]))
    want = out["w"]["value"] @ y + out["b"]["value"][:, None]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_batchnorm_struct_alone_affine_non_affine_and_its_activation():
    rng = np.random.default_rng(1)
    dense = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4), "f": "Base.identity"}
    mean, var = rng.standard_normal((4, 1)), rng.uniform(0.5, 2, (4, 1))
    bn = {"moments": moments(mean, var), "params": rng.standard_normal(8), "f": "Knet.Ops20.sigm"}
    plain = {"moments": moments(mean, var)}
    rec = recognise({"layers": [dense, bn, plain]}, "", Geometry())
    assert [la.kind for la in rec.layers] == ["dense", "batchnorm", "activation", "batchnorm"]
    assert rec.layers[3].bnparams is None
    assert any("non-affine" in n for n in rec.reports[3].notes)
    from porting.model import KnetModel

    model = KnetModel(rec.layers, input_size=(3,))
    x = rng.standard_normal((3, 5))
    got = forward_knet(model, x, backend="reference")[-1]
    y = dense["w"] @ x + dense["b"][:, None]
    y = K.sigm(K.batchnorm(y, K.bnmoments(mean=mean, var=var), bn["params"]))
    want = K.batchnorm(y, K.bnmoments(mean=mean, var=var))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "layer, words",
    [
        (  # two candidate bnparams
            {
                "moments": moments(np.zeros((2, 1)), np.ones((2, 1))),
                "a": np.ones(4),
                "c": np.ones(4),
            },
            ["expected one bnparams vector of 2C = 4 values", "a (4,)", "c (4,)"],
        ),
        (  # an array of the wrong length
            {"moments": moments(np.zeros((2, 1)), np.ones((2, 1))), "params": np.ones(6)},
            ["2 channels", "params (6,)"],
        ),
        (  # the moments alone, as a layer
            moments(np.zeros((2, 1)), np.ones((2, 1))),
            ["bnmoments struct", "on its own", "--structure"],
        ),
    ],
)
def test_batchnorm_that_cannot_be_read_unambiguously_is_refused(layer, words):
    dense = {"w": np.ones((2, 3)), "b": np.zeros(2)}
    with pytest.raises(PortingError) as e:
        recognise({"layers": [dense, layer]}, "m", Geometry())
    msg = str(e.value)
    assert "m/layers/2" in msg
    for w in words:
        assert w in msg


def layers21_bn(rng, c, **over):
    """Knet Layers21 `mutable struct BatchNorm` after its first call (statistics filled)."""
    d = {
        "dims": None,
        "mean": rng.standard_normal((c, 1)),
        "var": rng.uniform(0.5, 2, (c, 1)),
        "bias": param(rng.standard_normal((c, 1))),
        "scale": param(rng.standard_normal((c, 1))),
        "use_estimates": None,
        "update": 0.1,
        "epsilon": 1e-3,
        "format": 0,
        "mode": 1,
        "savedMean": None,
        "savedVar": None,
        "workspace": None,
        "reserveSpace": None,
        "dx": {"x": None},
        "dscale": {"x": None},
        "dbias": {"x": None},
    }
    d.update(over)
    return d


def test_layers21_batchnorm_takes_its_epsilon_from_the_struct():
    rng = np.random.default_rng(11)
    dense = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4)}
    bn = layers21_bn(rng, 4)
    rec = recognise({"layers": [dense, bn]}, "", Geometry())
    assert [la.kind for la in rec.layers] == ["dense", "batchnorm"]
    eps = {s.name: s for s in rec.reports[1].settings}["eps"]
    assert (eps.value, eps.source) == (1e-3, FILE)
    from porting.model import KnetModel

    x = rng.standard_normal((3, 5))
    got = forward_knet(KnetModel(rec.layers, input_size=(3,)), x, backend="reference")[-1]
    y = dense["w"] @ x + dense["b"][:, None]
    ref = K.BatchNorm(
        mean=bn["mean"],
        var=bn["var"],
        bias=bn["bias"]["value"],
        scale=bn["scale"]["value"],
        epsilon=1e-3,
    )
    np.testing.assert_allclose(got, ref(y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "over, words",
    [
        ({"dims": (2, 3, 4)}, "dims = (2, 3, 4)"),  # channels first (NHWC)
        ({"use_estimates": False}, "use_estimates = False"),
        ({"mode": 0}, "mode = 0"),
        ({"mean": None}, "never ran on data"),
    ],
)
def test_layers21_batchnorm_it_cannot_convert_is_refused(over, words):
    bn = layers21_bn(np.random.default_rng(12), 4, **over)
    with pytest.raises(PortingError, match="m/layers/2: Knet Layers21 BatchNorm with") as e:
        recognise({"layers": [{"w": np.ones((4, 3)), "b": np.zeros(4)}, bn]}, "m", Geometry())
    assert words in str(e.value)


# --------------------------------------------------------------------------- RNN


def knet_rnn_struct(w, *, mode=3, direction=1, input_mode=0, inputs=5, hidden=4, layers=1):
    """Knet.jl v1.4.10's `mutable struct RNN` fields as `porting.io.load` gives them."""
    return {
        "w": param(w.reshape(1, 1, -1)),
        "h": None,
        "c": None,
        "inputSize": I32(inputs),
        "hiddenSize": I32(hidden),
        "numLayers": I32(layers),
        "dropout": 0.0,
        "seed": np.uint64(0),
        "inputMode": I32(input_mode),
        "direction": I32(direction),
        "mode": I32(mode),
        "algo": I32(0),
        "dataType": "Core.Float64",
        "rnnDesc": None,
        "dropoutDesc": None,
        "dx": None,
        "dhx": None,
        "dcx": None,
    }


def _torch_gru_model(we, rnnw, dw, db, x, last):
    """w[:, x], a bidirectional GRU (cuDNN gate order r, z, n and two biases, as Knet), then
    w * reshape(y, H, :) .+ b at every step, or w * y[:, :, end] .+ b."""
    spec = rnnw.spec
    g, H = spec.gates, spec.hidden_size
    mod = torch.nn.GRU(spec.input_size, H, bidirectional=True).double()
    with torch.no_grad():
        for s in range(2):
            sfx = "l0" + ("_reverse" if s else "")
            getattr(mod, "weight_ih_" + sfx).copy_(torch.from_numpy(rnnw.W[s].reshape(g * H, -1)))
            getattr(mod, "weight_hh_" + sfx).copy_(torch.from_numpy(rnnw.R[s].reshape(g * H, H)))
            getattr(mod, "bias_ih_" + sfx).copy_(torch.from_numpy(rnnw.bW[s].reshape(-1)))
            getattr(mod, "bias_hh_" + sfx).copy_(torch.from_numpy(rnnw.bR[s].reshape(-1)))
        e = torch.from_numpy(K.embed(we, x.T))  # (dim, B, T)
        y, _ = mod(e.permute(2, 1, 0))  # (T, B, 2H)
        W, b = torch.from_numpy(dw), torch.from_numpy(db)
        if last:
            return (W @ y[-1].T + b[:, None]).numpy()
        return (torch.einsum("vy,tby->vbt", W, y) + b[:, None, None]).numpy()


def _rnn_chain(rng):
    spec = RNNSpec(5, 4, "gru", bidirectional=True)
    rnnw = random_weights(spec, rng, dtype=F64)
    we = rng.standard_normal((5, 11))
    dw, db = rng.standard_normal((6, 8)), rng.standard_normal(6)
    chain = {
        "layers": [
            {"w": param(we)},
            knet_rnn_struct(pack(rnnw)),
            {"w": param(dw), "b": param(db), "f": "Base.identity"},
        ]
    }
    return chain, (we, rnnw, dw, db)


@pytest.mark.parametrize("last", [False, True])
def test_embed_rnn_dense_chain(last):
    rng = np.random.default_rng(2)
    chain, (we, rnnw, dw, db) = _rnn_chain(rng)
    geometry = Geometry(rnn_output="last") if last else Geometry()
    rec = recognise(chain, "net", geometry)
    kinds = [la.kind for la in rec.layers]
    assert kinds == ["embed", "rnn", "dense" if last else "timedense"]
    rnn = rec.layers[1]
    # mode 3 is cuDNN's GRU, direction 1 bidirectional (ops20/rnn.jl)
    assert str(rnn.spec) == "GRU(input=5,hidden=4,bidirectional)"
    out = {s.name: s for s in rec.reports[1].settings}["output"]
    assert (out.value, out.source) == (("last", FLAG) if last else ("sequence", DEFAULT))
    assert rec.reports[0].path == "net/layers/1" and "net/layers/2" in rec.reports[0].what
    assert rec.input_size is None  # a sequence model: T is not in the file
    assert geometry.used == ({"rnn_output"} if last else set())

    from porting.model import KnetModel

    model = KnetModel(rec.layers, input_size=(7,))
    x = rng.integers(1, 12, size=(7, 3))  # (T, B) 1-based tokens
    got = forward_knet(model, x, backend="reference")[-1]
    want = _torch_gru_model(we, rnnw, dw, db, x, last)
    got = got if last else knet_sequence(got)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert classify(chain, "net")[0] == "model"


def test_rnn_fields_decode_mode_direction_and_input_mode():
    spec = RNNSpec(4, 4, "tanh", num_layers=2, skip_input=True)
    w = pack(random_weights(spec, np.random.default_rng(4), dtype=F64))
    node = knet_rnn_struct(w, mode=1, direction=0, input_mode=1, inputs=4, hidden=4, layers=2)
    rec = recognise({"layers": [node]}, "", Geometry())
    s = rec.layers[0].spec
    assert (s.rnn_type, s.bidirectional, s.skip_input, s.num_layers) == ("tanh", False, True, 2)
    assert rec.layers[0].output == "sequence"


def test_rnn_state_left_in_the_struct_and_wrong_lengths_are_refused():
    rng = np.random.default_rng(5)
    chain, _ = _rnn_chain(rng)
    chain["layers"][1]["h"] = 0  # h = 0: zero initial state, allowed
    assert recognise(chain, "", Geometry()).layers[1].kind == "rnn"
    chain["layers"][1]["h"] = np.zeros((4, 3, 2))
    with pytest.raises(PortingError, match=r"layers/2/h: the saved RNN holds a state"):
        recognise(chain, "", Geometry())
    chain["layers"][1]["h"] = None
    chain["layers"][1]["w"] = param(np.ones((1, 1, 10)))
    with pytest.raises(PortingError, match=r"layers/2: Knet RNN .*"):
        recognise(chain, "", Geometry())
    with pytest.raises(PortingError, match="--rnn-output 'first'"):
        recognise(_rnn_chain(rng)[0], "", Geometry(rnn_output="first"))


def test_w_only_is_an_embedding_only_first_and_before_an_rnn():
    rng = np.random.default_rng(6)
    chain, _ = _rnn_chain(rng)
    w_only = chain["layers"][0]
    dense = chain["layers"][2]
    for layers in ([dense, w_only, chain["layers"][1]], [w_only, dense], [w_only]):
        with pytest.raises(PortingError, match="the file does not say which"):
            recognise({"layers": layers}, "", Geometry())


def test_listing_summaries_name_the_new_kinds():
    rng = np.random.default_rng(7)
    kind, summary = classify(_rnn_chain(rng)[0], "net")
    assert kind == "model"
    assert "embed (5, 11), rnn GRU(input=5,hidden=4,bidirectional) (sequence)" in summary
    assert "timedense (6, 8)" in summary
    kind, summary = classify(_bn_chain(rng), "m")
    assert kind == "model" and "conv (3, 3, 2, 4), batchnorm 4, activation, pool" in summary


# --------------------------------------------------------------------------- a file, end to end


def _jld2_writer():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "fixtures_io" / "julia_like.py"
    spec = importlib.util.spec_from_file_location("julia_like_fixtures", path)
    assert spec is not None and spec.loader is not None
    jl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jl)
    return jl


def _struct(f, jname, fields):
    """An unnamed JLD2 struct: concretely typed bits fields (RNN's `inputSize::Cint`...)
    inline in the compound, every other field a reference (arrays, structs, `nothing`)."""
    import h5py

    members, values = [], []
    for k, v in fields.items():
        if isinstance(v, np.generic):
            members.append((k, v.dtype))
            values.append(v)
        else:
            members.append((k, h5py.ref_dtype))
            if v is None:
                values.append(h5py.Reference())
            elif isinstance(v, h5py.Reference):
                values.append(v)
            else:
                values.append(f.unnamed_array(v))
    committed = f.commit(members, jname, [])
    ds = f.f.create_dataset(None, shape=(), dtype=committed)
    ds[()] = np.array(tuple(values), dtype=committed.dtype)
    f._keep_unnamed(ds.id)
    return h5py.h5r.create(ds.id, b".", h5py.h5r.OBJECT)


def _vector_any(f, refs):
    """A `Vector{Any}` (a Chain's layers): references, julia_type Core.Any."""
    import h5py

    ds = f.f.create_dataset(None, data=np.array(refs, dtype=h5py.ref_dtype))
    t = f._type_value_ds("Core.Any", [])
    ds.attrs.create("julia_type", h5py.h5r.create(t, b".", h5py.h5r.OBJECT), dtype=h5py.ref_dtype)
    f._keep_unnamed(ds.id)
    return h5py.h5r.create(ds.id, b".", h5py.h5r.OBJECT)


def _write_models(path, rng):
    """`Knet.save(path, "rnnlm", Chain(Embed(w), RNN(...), Dense(w, b, identity)), "cnn", ...)`
    laid out as JLD2 writes it (Knet.Ops20.RNN's Cint/Float64/UInt64 fields inline)."""
    jl = _jld2_writer()
    spec = RNNSpec(5, 4, "gru", bidirectional=True)
    rnnw = random_weights(spec, rng, dtype=np.float32)
    we = rng.standard_normal((5, 11)).astype(np.float32)
    dw = rng.standard_normal((6, 8)).astype(np.float32)
    db = rng.standard_normal(6).astype(np.float32)
    c = 3
    cw = rng.standard_normal((3, 3, 1, c)).astype(np.float32)
    mean = rng.standard_normal((1, 1, c, 1)).astype(np.float32)
    var = rng.uniform(0.5, 2, (1, 1, c, 1)).astype(np.float32)
    bnp = rng.standard_normal(2 * c).astype(np.float32)
    ow = rng.standard_normal((2, 27)).astype(np.float32)
    ob = rng.standard_normal(2).astype(np.float32)
    with jl.Jld2Writer(path) as f:

        def p(a):
            return f.struct(None, "AutoGrad.Param", {"value": a, "opt": None})

        identity = f.singleton("Base.identity")
        rnn = _struct(
            f,
            "Knet.Ops20.RNN",
            {
                "w": p(pack(rnnw).reshape(1, 1, -1)),
                "h": None,
                "c": None,
                "inputSize": np.int32(5),
                "hiddenSize": np.int32(4),
                "numLayers": np.int32(1),
                "dropout": np.float64(0.0),
                "seed": np.uint64(0),
                "inputMode": np.int32(0),
                "direction": np.int32(1),
                "mode": np.int32(3),
                "algo": np.int32(0),
                "dataType": f.singleton("Core.Float32"),
                "rnnDesc": None,
                "dropoutDesc": None,
                "dx": None,
                "dhx": None,
                "dcx": None,
            },
        )
        layers = [
            _struct(f, "Main.Embed", {"w": p(we)}),
            rnn,
            _struct(f, "Main.Dense", {"w": p(dw), "b": p(db), "f": identity}),
        ]
        f.struct("rnnlm", "Main.Chain", {"layers": _vector_any(f, layers)})
        moments_ = _struct(
            f,
            "Knet.Ops20.BNMoments",
            {
                "momentum": np.asarray(0.1),  # momentum::AbstractFloat: behind a reference
                "mean": mean,
                "var": var,
                "meaninit": f.singleton("Base.zeros"),
                "varinit": f.singleton("Base.ones"),
            },
        )
        conv = _struct(
            f,
            "Main.ConvBN",
            {"w": p(cw), "m": moments_, "bnp": p(bnp), "f": f.singleton("Knet.Ops20.relu")},
        )
        out = _struct(f, "Main.Dense", {"w": p(ow), "b": p(ob), "f": identity})
        f.struct("cnn", "Main.Chain", {"layers": _vector_any(f, [conv, out])})
    return (we, rnnw, dw, db), (cw, mean, var, bnp, ow, ob)


def _cli(argv, capsys):
    from porting.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_jld2_file_with_an_rnn_and_a_batchnorm_converts_and_verifies(tmp_path, capsys):
    import keras

    f = tmp_path / "models.jld2"
    (we, rnnw, dw, db), (cw, mean, var, bnp, ow, ob) = _write_models(f, np.random.default_rng(8))

    code, text, err = _cli(["inspect", f], capsys)
    assert code == 0, err
    assert "rnnlm" in text and "embed (5, 11), rnn GRU(input=5,hidden=4,bidirectional)" in text
    assert "cnn" in text and "batchnorm 3" in text

    code, _, err = _cli(["convert", f, "--key", "rnnlm", "-o", tmp_path / "x.keras"], capsys)
    assert code == 2 and "--input-size T" in err and not (tmp_path / "x.keras").exists()

    out = tmp_path / "rnnlm.keras"
    argv = ["convert", f, "--key", "rnnlm", "-o", out, "--verify", "--input-size", "7"]
    code, text, err = _cli(argv, capsys)
    assert code == 0, err
    assert "OK: the Keras model computes what the Knet model computes" in text
    assert "output=sequence (Knet default" in text and "--rnn-output last" in text
    km = keras.models.load_model(out)
    x = np.random.default_rng(9).integers(1, 12, size=(7, 2))  # (T, B), 1-based
    got = np.asarray(km(x.T - 1)).astype(np.float64)  # Keras: (B, T, V), 0-based tokens
    f64 = [a.astype(np.float64) for a in (we, dw, db)]
    rnn64 = type(rnnw)(
        rnnw.spec,
        *[tuple(a.astype(np.float64) for a in getattr(rnnw, n)) for n in "W R bW bR".split()],
    )
    want = _torch_gru_model(f64[0], rnn64, f64[1], f64[2], x, last=False)  # (V, B, T)
    assert got.shape == (2, 7, 6)
    # float32 through an embedding, 7 GRU steps of K = 5 + 4 + 2 terms and a dense of 9 terms
    np.testing.assert_allclose(got.transpose(2, 0, 1), want, rtol=0, atol=1e-4)

    out = tmp_path / "last.keras"
    argv = [*argv[:4], "-o", out, "--verify", "--input-size", "7", "--rnn-output", "last"]
    code, text, err = _cli(argv, capsys)
    assert code == 0, err
    assert "output=last (flag: --rnn-output)" in text
    got = np.asarray(keras.models.load_model(out)(x.T - 1)).astype(np.float64)  # (B, V)
    want = _torch_gru_model(f64[0], rnn64, f64[1], f64[2], x, last=True)  # (V, B)
    np.testing.assert_allclose(got.T, want, rtol=0, atol=1e-4)

    out = tmp_path / "cnn.keras"
    argv = ["convert", f, "--key", "cnn", "-o", out, "--verify", "--input-size", "8,8,1"]
    code, text, err = _cli(argv, capsys)
    assert code == 0, err
    assert "momentum=0.1 (file: m.momentum)" in text and "eps=1e-05 (Knet default" in text
    xi = np.random.default_rng(10).standard_normal((8, 8, 1, 2))
    y = K.conv4(cw.astype(F64), xi)
    y = K.batchnorm(y, K.bnmoments(mean=mean.astype(F64), var=var.astype(F64)), bnp.astype(F64))
    y = K.mat(K.pool(K.relu(y)))
    want = ow.astype(F64) @ y + ob.astype(F64)[:, None]
    got = np.asarray(keras.models.load_model(out)(xi.transpose(3, 1, 0, 2).astype(np.float32)))
    np.testing.assert_allclose(got.T.astype(F64), want, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- structure files


def test_functional_cnn_batchnorm_and_an_rnn_through_a_structure_file(tmp_path):
    """cnn_batchnorm.jl keeps its weights in `w` and its moments in `m` (predict(w, m, x)):
    the structure file names them; an RNN's output "last" is chosen there too."""
    import json

    from porting.knetfile.structure import from_structure
    from porting.model import KnetModel

    rng = np.random.default_rng(13)
    spec = RNNSpec(5, 4, "gru", bidirectional=True)
    rnnw = random_weights(spec, rng, dtype=F64)
    tree = {
        "w": [
            rng.standard_normal((3, 3, 1, 2)),
            rng.standard_normal(4),
            rng.standard_normal((3, 8)),
        ],
        "m": [moments(rng.standard_normal((1, 1, 2, 1)), rng.uniform(0.5, 2, (1, 1, 2, 1)))],
        "r": {"w": param(pack(rnnw).reshape(1, 1, -1)), "inputSize": 5},
    }
    doc = {
        "format": "porting-knet-export",
        "version": 2,
        "input_size": [5, 5, 1],
        "layers": [
            {"kind": "conv", "params": {"w": {"key": "w/1"}}, "conv": {"padding": 1}},
            {
                "kind": "batchnorm",
                "params": {
                    "mean": {"key": "m/1/mean"},
                    "var": {"key": "m/1/var"},
                    "bnparams": {"key": "w/2"},
                },
            },
            {"kind": "activation", "activation": "relu"},
            {"kind": "pool", "pool": {"window": 2}},
            {"kind": "dense", "params": {"w": {"key": "w/3"}}},
        ],
    }
    s = tmp_path / "s.json"
    s.write_text(json.dumps(doc))
    rec = from_structure(tree, None, s, "f.jld2")
    x = rng.standard_normal((5, 5, 1, 2))
    got = forward_knet(KnetModel(rec.layers, input_size=(5, 5, 1)), x, backend="reference")[-1]
    m = tree["m"][0]
    y = K.conv4(tree["w"][0], x, padding=1)
    y = K.relu(K.batchnorm(y, K.bnmoments(mean=m["mean"], var=m["var"]), tree["w"][1]))
    want = tree["w"][2] @ K.mat(K.pool(y))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    doc = {
        "format": "porting-knet-export",
        "version": 2,
        "layers": [
            {
                "kind": "rnn",
                "params": {"w": {"key": "r/w"}},  # size and eltype taken from the file
                "rnn": {**spec.to_knet(), "h": "nothing", "c": "nothing"},
                "output": "last",
            }
        ],
    }
    s.write_text(json.dumps(doc))
    (layer,) = from_structure(tree, None, s, "f.jld2").layers
    assert (layer.kind, layer.output, str(layer.spec)) == (
        "rnn",
        "last",
        "GRU(input=5,hidden=4,bidirectional)",
    )
    doc["layers"][0]["params"]["w"]["eltype"] = "Float32"  # a given eltype is checked
    s.write_text(json.dumps(doc))
    with pytest.raises(PortingError, match="the .json says Float32"):
        from_structure(tree, None, s, "f.jld2")


def test_a_lone_rnn_or_batchnorm_struct_is_listed_as_a_model():
    rng = np.random.default_rng(14)
    spec = RNNSpec(3, 2, "lstm")
    r = knet_rnn_struct(
        pack(random_weights(spec, rng, dtype=F64)), mode=2, direction=0, inputs=3, hidden=2
    )
    assert classify(r, "r") == ("model", "a single layer: rnn LSTM(input=3,hidden=2) (sequence)")
    bn = {"moments": moments(np.zeros((2, 1)), np.ones((2, 1))), "params": np.ones(4)}
    assert classify(bn, "bn") == ("model", "a single layer: batchnorm 2")
    assert classify({"p": 0.5, "q": 1}, "h")[0] == "value"


def test_rnn_output_flag_on_a_model_without_an_rnn_is_refused():
    geometry = Geometry(rnn_output="last")
    recognise(_bn_chain(np.random.default_rng(15)), "m", geometry)
    with pytest.raises(PortingError, match="--rnn-output last given but no layer of m takes it"):
        geometry.check_all_used("m")
