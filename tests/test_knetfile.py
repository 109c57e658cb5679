"""porting.knetfile: Knet models recognised in JLD2 trees, with where every value came from.

Two kinds of input: trees written here by hand in the shape `porting.io.load` gives a JLD2
struct (a dict of fields, functions as type names), and the real files of
shared/golden/real-models/ (read from beside the repository, skipped with the reason when
absent). Expected shapes and values come from the files' sources (the users' Julia code) and
from Knet's definitions, never from running the recogniser.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting.errors import PortingError
from porting.knetfile import Geometry, load_model, read, select
from porting.knetfile.arrays import weight
from porting.knetfile.functions import activation
from porting.knetfile.recognise import DEFAULT, FILE, FLAG, classify, recognise

F32 = np.float32


from golden_paths import golden_dir  # noqa: E402  (tests/ is on sys.path)

GOLDEN = golden_dir("real-models")
REAL = (GOLDEN / "real-models") if GOLDEN else None
needs_real = pytest.mark.skipif(
    GOLDEN is None,
    reason="shared/golden/real-models not found (set PORTING_GOLDEN_DIR or put shared/ beside "
    "the repository)",
)
HAMZACO = "hamzaco_Comp-541-Term-Project__model_eh1_eg01.jld2"
LENET = "KnetML_NNHelferlein.jl__test_save_lenet.jld2"
WCNN = "OsmanMutlu_Comp508-final__model.jld2"
DUMMY = "KnetML_NNHelferlein.jl__data_testdata_dummy_mlp.jld2"


def param(a):
    return {"value": a, "opt": None}


def knet_bytes(a: np.ndarray) -> dict:
    """A KnetArray as older Knet.save wrote it (bytes copied from the GPU, dev = -1)."""
    raw = np.frombuffer(np.asfortranarray(a).tobytes(order="F"), dtype=np.uint8).copy()
    return {"ptr": {"ptr": raw, "len": raw.size, "dev": -1, "parent": None}, "dims": a.shape}


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    "name, want",
    [
        ("Knet.Ops20.relu", "relu"),
        ("Knet.Ops20.sigm", "sigm"),
        ("Knet.Ops20.elu", "elu"),
        ("Knet.Ops21.relu", "relu"),
        ("Knet.relu", "relu"),  # Knet 1.3 defined them in module Knet
        ("Base.identity", "identity"),
        ("Base.Math.tanh", "tanh"),
        ("Base.tanh", "tanh"),
        ("NNlib.σ", "sigm"),
        ("NNlib.relu", "relu"),
        (None, "identity"),  # a field holding `nothing`
    ],
)
def test_activation_names(name, want):
    assert activation(name, "layers/1/f") == want


@pytest.mark.parametrize(
    "name, words",
    [
        ("Knet.Ops20.selu", ["Knet.Ops20.selu", "cannot convert it yet", "--structure"]),
        ("Knet.Ops20.softmax", ["Knet.Ops20.softmax", "cannot convert it yet"]),
        ("Main.12#13", ["anonymous function or closure", "--structure"]),
        ("Main.myact", ["unknown activation function 'Main.myact'", "--structure"]),
        ({"scale": 2.0}, ["closure or a callable struct", "scale"]),
        (3.0, ["not a function"]),
    ],
)
def test_unknown_functions_are_named_with_the_fix(name, words):
    with pytest.raises(PortingError) as e:
        activation(name, "layers/2/f")
    assert "layers/2/f" in str(e.value)
    for w in words:
        assert w in str(e.value)


# --------------------------------------------------------------------------- weights


def test_knetarray_bytes_decode_column_major_float32():
    a = np.arange(6, dtype=F32).reshape(2, 3)  # Julia [0 1 2; 3 4 5]: a[2,1] == 3
    w = weight(param(knet_bytes(a)), "m/w")
    assert w.array.dtype == np.float32 and w.array.shape == (2, 3)
    assert w.array[1, 0] == 3.0 and w.array[0, 2] == 2.0
    assert w.stored_as == "Param{KnetArray}" and "4 bytes per element" in w.note


def test_knetarray_float64_and_bad_byte_counts():
    a = np.linspace(-1, 1, 12).reshape(3, 4)
    assert weight(knet_bytes(a), "w").array.dtype == np.float64
    bad = knet_bytes(np.zeros((2, 3), F32))
    bad["dims"] = (2, 2)  # 24 bytes for 4 elements: 6 bytes each
    with pytest.raises(PortingError, match="6 bytes per element"):
        weight(bad, "w")
    nan = knet_bytes(np.array([1.0, np.nan], F32))
    with pytest.raises(PortingError, match="do not decode to finite Float32"):
        weight(nan, "w")


def test_gpu_pointers_without_data_are_refused_with_how_to_resave():
    knet_gpu = {"ptr": {"ptr": None, "len": 24, "dev": 0, "parent": None}, "dims": (2, 3)}
    cuda = {
        "storage": {"buffer": {"ptr": None, "bytesize": 24}, "refcount": {"value": 1}},
        "maxsize": 24,
        "offset": 0,
        "dims": (2, 3),
    }
    for node, kind in ((knet_gpu, "KnetArray"), (cuda, "CuArray")):
        with pytest.raises(PortingError) as e:
            weight(param(node), "net/layers/1/w")
        msg = str(e.value)
        assert f"a {kind} of size (2, 3)" in msg and "net/layers/1/w/value" in msg
        assert "without copying it to the CPU" in msg and "cpucopy" in msg


def test_optimiser_state_is_not_a_model():
    adam = {k: 0.0 for k in ("lr", "beta1", "beta2", "eps", "gclip")}
    adam.update(t=3, fstm=None, scndm=None)
    with pytest.raises(PortingError, match="Knet Adam optimiser state"):
        recognise(adam, "opt", Geometry())
    assert classify(adam)[0] == "optimiser"


# --------------------------------------------------------------------------- recognition


def _tutorial_chain():
    rng = np.random.default_rng(0)
    conv = {
        "w": param(rng.standard_normal((3, 3, 1, 4)).astype(F32)),
        "b": param(np.zeros((1, 1, 4, 1), F32)),
        "f": "Knet.Ops20.relu",
        "p": 0.0,
    }
    dense = {
        "w": param(rng.standard_normal((10, 36)).astype(F32)),
        "b": param(np.zeros(10, F32)),
        "f": "Base.identity",
        "p": 0.5,
    }
    return {"layers": [conv, {"layers": (dense,)}]}  # a nested chain


def test_tutorial_conv_geometry_defaults_and_flags_are_recorded():
    rec = recognise(_tutorial_chain(), "m", Geometry())
    conv, dense = rec.layers
    assert (conv.kind, dense.kind) == ("conv", "dense")
    assert dense.dropout == 0.5 and dense.activation == "identity"
    by = {s.name: s for s in rec.reports[0].settings}
    assert by["activation"].source == FILE and by["activation"].value == "relu"
    assert by["padding"].source == DEFAULT and by["padding"].value == 0
    assert by["pool.window"].value == 2  # Knet's tutorial Conv pools inside its forward
    assert conv.pool is not None and conv.pool.window == 2
    assert rec.reports[1].path == "m/layers/2/layers/1"  # nested chains flattened, 1-based

    rec = recognise(_tutorial_chain(), "m", Geometry(conv_padding=1, pool_window=0))
    by = {s.name: s for s in rec.reports[0].settings}
    assert by["padding"].source == FLAG and rec.layers[0].padding == 1
    assert rec.layers[0].pool is None


def test_nnhelferlein_keywords_read_from_the_file_or_refused_when_contradicted():
    rng = np.random.default_rng(1)
    conv = {
        "w": param(rng.standard_normal((3, 3, 2, 2)).astype(F32)),
        "b": param(np.zeros((1, 1, 2, 1), F32)),
        "actf": "Knet.Ops20.relu",
        "kwargs": {"data": {"padding": 1, "stride": 2}, "itr": ("padding", "stride")},
    }
    rec = recognise({"layers": [conv]}, "", Geometry())
    layer = rec.layers[0]
    assert (layer.padding, layer.stride, layer.mode, layer.pool) == (1, 2, 0, None)
    by = {s.name: s for s in rec.reports[0].settings}
    assert by["padding"].source == FILE and by["stride"].source == FILE
    with pytest.raises(PortingError, match="the file stores padding=1 but --conv-padding 0"):
        recognise({"layers": [conv]}, "", Geometry(conv_padding=0))
    conv["kwargs"] = ["unreadable"]
    rec = recognise({"layers": [conv]}, "", Geometry(conv_stride=3))
    by = {s.name: s for s in rec.reports[0].settings}
    assert by["stride"].source == FLAG and by["padding"].source == DEFAULT
    assert any("could not be read" in n for n in rec.reports[0].notes)


def test_layers21_conv_takes_its_geometry_from_the_struct():
    w = np.ones((3, 3, 1, 2), F32)
    node = {
        "w": param(w),
        "wdims": (3, 3, 1, 2),
        "winit": None,
        "bias": param(np.zeros((1, 1, 2, 1), F32)),
        "bdims": (1, 1, 2, 1),
        "binit": None,
        "padding": 1,
        "stride": 2,
        "dilation": 1,
        "groups": 1,
        "crosscorrelation": True,
        "channelmajor": False,
        "activation": "Knet.Ops21.relu",
        "normalization": None,
        "convDesc": None,
        "alpha": 1,
        "beta": 0,
    }
    layer = recognise(node, "c", Geometry()).layers[0]
    assert (layer.padding, layer.stride, layer.mode, layer.activation) == (1, 2, 1, "relu")


def test_layers21_linear_and_dropout():
    w = np.arange(6, dtype=F32).reshape(2, 3)
    lin = {
        "w": param(w),
        "bias": param(np.ones(2, F32)),
        "winit": None,
        "binit": None,
        "inputsize": 3,
        "outputsize": 2,
        "activation": "Knet.Ops21.sigm",
        "dropout": 0,
    }
    rec = recognise({"layers": [{"p": 0.3}, lin]}, "", Geometry())
    drop, dense = rec.layers
    assert (drop.kind, drop.p) == ("dropout", 0.3)
    assert dense.kind == "dense" and dense.activation == "sigm" and dense.w[1, 0] == 3.0
    assert rec.input_size == (3,)  # dropout keeps the size: the input is w's 3 columns


@pytest.mark.parametrize(
    "node, words",
    [
        (
            {"moments": {"momentum": 0.1, "mean": None, "var": None}, "params": None},
            ["moments/mean is nothing", "never ran on data"],
        ),
        ({"mean": 0, "var": 1, "bias": 0, "scale": 1, "dims": 4}, ["batch normalisation"]),
        ({"w": np.ones((4, 5), F32), "h": 0, "hiddenSize": 4, "numLayers": 1}, ["Knet RNN"]),
        ({"w": param(np.ones((8, 100), F32))}, ["embedding", "(8, 100)"]),
    ],
)
def test_layer_kinds_recognised_but_not_convertible(node, words):
    with pytest.raises(PortingError) as e:
        recognise({"layers": [node]}, "m", Geometry())
    for w in words:
        assert w in str(e.value)
    assert "m/layers/1" in str(e.value)


def test_a_vector_of_layers_is_a_model_and_a_vector_of_chains_is_not():
    dense = {"w": np.ones((2, 3), F32), "b": np.zeros(2, F32), "f": "Knet.Ops20.relu"}
    assert classify([dense, dense | {"w": np.ones((4, 2), F32), "b": np.zeros(4, F32)}])[0] == (
        "model"
    )
    chains = [{"layers": [dense]}, {"layers": [dense]}]
    assert classify(chains)[0] == "value"  # several models: each is listed and chosen by --key
    assert classify(chains[0], "m/1")[0] == "model"


def test_unknown_singleton_layer_and_flat():
    rec = recognise({"layers": ["NNHelferlein.Flat", "Knet.Ops20.relu"]}, "", Geometry())
    assert [la.kind for la in rec.layers] == ["mat", "activation"]
    with pytest.raises(PortingError, match="a layer of type Main.Foo that holds no data"):
        recognise({"layers": ["Main.Foo"]}, "", Geometry())


# --------------------------------------------------------------------------- paths


def test_select_is_one_based_and_says_what_exists():
    tree = {"q": [{"w": 1}, {"w": 2}], "acc": (np.zeros(3),)}
    assert select(tree, "q/2/w", "f.jld2") == 2
    with pytest.raises(PortingError, match=r"numbered 1-2; got 0 \(numbering starts at 1"):
        select(tree, "q/0", "f.jld2")
    with pytest.raises(PortingError, match="has no 'nope' in the file's top level; it has: q, acc"):
        select(tree, "nope", "f.jld2")
    with pytest.raises(PortingError, match="expected a number 1-2"):
        select(tree, "q/first", "f.jld2")
    with pytest.raises(PortingError, match="which has no parts"):
        select(tree, "q/1/w/x", "f.jld2")


# --------------------------------------------------------------------------- real files


@needs_real
def test_hamzaco_lists_five_q_networks_and_the_other_values():
    from porting.knetfile import entries

    tree = read(REAL / HAMZACO)
    got = {e.path: e for e in entries(tree)}
    # Knet.save(file, "q_networks", Q, "accuracies", (...), "ave_imp_loss", (...),
    # "best_model_index", ...) in the user's training.ipynb; Q holds 5 Chains.
    assert {f"q_networks/{i}" for i in range(1, 6)} <= set(got)
    assert all(got[f"q_networks/{i}"].kind == "model" for i in range(1, 6))
    assert got["accuracies/1"].kind == "array" and "(200,)" in got["accuracies/1"].summary
    assert got["best_model_index"].summary == "Int 110"


@needs_real
def test_hamzaco_knetarray_bytes_are_the_weights():
    """q_networks/1 was never trained (no optimiser state): its weights are Knet's xavier
    init, uniform in +-sqrt(6/(fanin+fanout)), and its biases param0 zeros. The decoded
    Float32 values must fill that range, which wrong bytes or a wrong element type would not."""
    fm = load_model(REAL / HAMZACO, "q_networks/1")
    sizes = [(128, 52), (128, 128), (128, 128), (36, 128)]  # Dense(52,128) ... Dense(128,36)
    assert [tuple(la.w.shape) for la in fm.model.layers] == sizes
    for layer, (o, i) in zip(fm.model.layers, sizes, strict=True):
        bound = np.sqrt(6 / (i + o))
        w = layer.w.astype(np.float64)
        assert w.dtype == np.float64 and layer.w.dtype == np.float32
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
        assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound  # uniform's std
        assert np.all(layer.b == 0)
    assert [la.activation for la in fm.model.layers] == ["relu", "relu", "relu", "identity"]
    assert fm.model.input_size == (52,)
    # the trained networks take hand (52) + bidding history (36) features
    assert load_model(REAL / HAMZACO, "q_networks/3").model.input_size == (88,)


@needs_real
def test_hamzaco_needs_a_key_and_refuses_non_models():
    with pytest.raises(PortingError, match="holds 5 models .*choose one with --key"):
        load_model(REAL / HAMZACO)
    with pytest.raises(PortingError, match="accuracies/1 is float64 array"):
        load_model(REAL / HAMZACO, "accuracies/1")
    with pytest.raises(PortingError, match="Knet Rmsprop optimiser state"):
        load_model(REAL / HAMZACO, "q_networks/2/layers/1/w/opt")


@needs_real
def test_nnhelferlein_lenet_structure_and_provenance():
    """NNHelferlein's test/io.jl: Classifier(Conv(5,5,1,20), Pool(), Conv(5,5,20,50), Pool(),
    Flat(), Dense(800,512), Dense(512,10, actf=identity)); Dense's default actf is sigm.
    Conv and Pool were built without keywords, so JLD2 stored their empty kwargs without data."""
    fm = load_model(REAL / LENET)
    m = fm.model
    assert [la.kind for la in m.layers] == ["conv", "pool", "conv", "pool", "mat", "dense", "dense"]
    assert m.layers[0].w.shape == (5, 5, 1, 20) and m.layers[2].w.shape == (5, 5, 20, 50)
    assert m.layers[5].w.shape == (512, 800) and m.layers[6].w.shape == (10, 512)
    assert [m.layers[i].activation for i in (0, 2, 5, 6)] == ["relu", "relu", "sigm", "identity"]
    assert m.layers[0].pool is None and m.layers[1].window == 2
    assert m.sizes((28, 28, 1))[-1] == (10,)
    for r in fm.reports[:4]:
        assert all(s.source == FILE for s in r.settings), r.settings
    assert "loss = Knet.Ops20.nll" in fm.report()


@needs_real
def test_dummy_mlp_from_the_gpu_is_refused_saying_why():
    with pytest.raises(PortingError) as e:
        load_model(REAL / DUMMY)
    msg = str(e.value)
    assert "mlp/layers/1/w/value: a CuArray of size (8, 8) saved from the GPU" in msg
    assert "cpucopy" in msg
    tree = read(REAL / DUMMY)  # the unreadable minibatch beside it does not hide the model
    assert classify(tree["mb"])[0] == "unreadable"
    assert classify(tree["mlp"], "mlp")[0] == "model-refused"


@needs_real
def test_wcnn_needs_a_structure_file():
    with pytest.raises(PortingError, match="list of 8 arrays.*--structure"):
        load_model(REAL / WCNN)


@pytest.mark.parametrize("module", ["functions", "arrays", "tree"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"porting.knetfile.{module}"))
    assert result.attempted > 0 and result.failed == 0
