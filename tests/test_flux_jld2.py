"""JLD2 files of ``Flux.state`` and structure files (docs/flux.md#flux-state-jld2,
#structure-files), end to end: read by porting.io's JLD2 reader, loaded into a
`porting.flux.build` structure, converted and verified, and compared with the PyTorch
float64 oracles of test_flux / test_flux_graph (written from Flux/NNlib's definitions, never
from porting's forward). The JLD2 files are written by `porting.examples.flux_state`
following JLD2.jl v0.5.15's encoding (no Julia here; no public Flux.state .jld2 was found in
the code index). The golden U-Net (paul-vdl/ImageGenerationDiffusionModels.jl) is read in
place and wired by docs/structures/simple_unet.py; its oracle is its forward as written in
that repository's src/generate_images.jl."""

from __future__ import annotations

import numpy as np
import pytest
from golden_paths import golden_dir
from test_flux import _cli, _lenet_oracle, flux_forward
from test_flux_graph import assert_close, conv, julia, keras_run, nchw, t64
from test_flux_state import lenet_builder as lenet

from porting.errors import PortingError
from porting.examples import flux as fx
from porting.examples import flux_state as fs
from porting.flux import build as B

torch = pytest.importorskip("torch", reason="torch is the independent oracle for Flux layers")
F = torch.nn.functional
REAL = golden_dir("real-models")
UNET = "paul-vdl_ImageGenerationDiffusionModels.jl__trained_model.bson"
STRUCTURE = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs/structures"


def test_reader_gives_back_the_tree_written():
    """Every leaf kind Flux.state leaves: arrays, Int, Float32, Float64, Bool, nothing, () in
    a NamedTuple and in a Tuple, nested NamedTuples, the field order."""
    import tempfile

    from porting import io

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 4)).astype(np.float32)
    tree = {
        "layers": (
            {"σ": (), "weight": w, "n": 3, "eps": np.float32(1e-5), "m": 0.25, "on": True},
            (),
            {"inner": {"a": None, "b": np.arange(5.0)}, "t": (1, 2, 3)},
        )
    }
    p = fs.save_state(tempfile.mkdtemp() + "/t.jld2", {"model_state": tree, "x": w})
    got = io.load(p)
    assert list(got) == ["model_state", "x"]
    a, empty, c = got["model_state"]["layers"]
    assert list(a) == ["σ", "weight", "n", "eps", "m", "on"]
    assert a["σ"] == () and empty == () and a["n"] == 3 and a["on"] is True
    assert a["eps"] == pytest.approx(1e-5) and a["m"] == 0.25
    np.testing.assert_array_equal(a["weight"], w)  # Julia's size and indexing
    assert a["weight"].shape == (3, 2, 4)
    assert c["inner"]["a"] is None and c["t"] == (1, 2, 3)
    np.testing.assert_array_equal(c["inner"]["b"], np.arange(5.0))
    np.testing.assert_array_equal(got["x"], w)


def test_types_are_committed_as_jld2_does(tmp_path):
    from porting.io._jld2 import type_names

    p = fs.save_lenet_state(tmp_path / "l.jld2")
    assert open(p, "rb").read(29) == b"HDF5-based Julia Data Format,"
    names = set(type_names(tmp_path / "l.jld2").values())
    assert {"Core.DataType", "Tuple", "NTuple", "Core.NamedTuple"} <= names


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lenet_state_file_matches_flux_oracle(tmp_path, dtype):
    doc = fx.lenet(4)
    state = fs.lenet_state(4)
    if dtype is np.float64:
        state = _cast(state, np.float64)
    p = fs.save_state(tmp_path / "lenet_state.jld2", {"model_state": state})
    model = B.load_jld2(p, lenet(), input_size=(28, 28, 1))
    x = np.random.default_rng(1).uniform(-1, 1, (28, 28, 1, 2)).astype(dtype)
    want = flux_forward(_lenet_oracle(doc), x.astype(np.float64))
    got = keras_run(model, x, dtype)
    assert_close(got, want, dtype)
    if dtype is np.float64:  # a float64 model agrees far below float32's budget
        assert float(np.abs(got - want).max()) < 1e-9


def _cast(v, dtype):
    if isinstance(v, dict):
        return {k: _cast(x, dtype) for k, x in v.items()}
    if isinstance(v, tuple):
        return tuple(_cast(x, dtype) for x in v)
    return v.astype(dtype) if isinstance(v, np.ndarray) else v


def _setup(tmp_path, state=None, structure=fs.LENET_STRUCTURE):
    p = fs.save_state(tmp_path / "lenet_state.jld2", {"model_state": state or fs.lenet_state()})
    (tmp_path / "lenet.py").write_text(structure, encoding="utf-8")
    return p


def test_cli_convert_verify(tmp_path):
    p = _setup(tmp_path)
    r = _cli(
        "convert", p, "--structure", "lenet.py", "--input-size", "28,28,1", "-o", "l.keras",
        "--verify", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "JLD2 file of Flux.state" in r.stdout and "OK" in r.stdout
    assert (tmp_path / "l.keras").is_file()


def _edit(fn):
    s = fs.lenet_state()
    fn(s)
    return s


def _del_bias(s):
    del s["layers"][0]["bias"]


def _wrong_size(s):
    s["layers"][5]["weight"] = np.zeros((120, 255), np.float32)


def _nesting(s):
    s["layers"] = s["layers"][:2] + ({"layers": (s["layers"][2],)},) + s["layers"][3:]


def _array_for_layer(s):
    s["layers"] = (np.zeros(3, np.float32),) + s["layers"][1:]


HOSTILE = {
    "missing field": (_del_bias, ["lenet_state.jld2:model_state.layers[1]", "missing bias"]),
    "wrong size": (
        _wrong_size,
        ["model_state.layers[6].weight", "(120, 255) in the state, (120, 256) in the model"],
    ),
    "wrong nesting": (_nesting, ["model_state.layers[3]", "do not match"]),
    "array for a layer": (_array_for_layer, ["model_state.layers[1]", "ndarray"]),
}


def _assert_refused(r, words, out):
    """A CLI run refused: exit 2, no traceback, every one of `words` said, `out` not written."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_cli_hostile_state_exit_2_naming_the_path(tmp_path, case):
    edit, words = HOSTILE[case]
    p = _setup(tmp_path, _edit(edit))
    r = _cli(
        "convert", p, "--structure", "lenet.py", "--input-size", "28,28,1", "-o", "o.keras",
        cwd=tmp_path,
    )  # fmt: skip
    _assert_refused(r, words, tmp_path / "o.keras")


@pytest.mark.parametrize(
    "structure, args, words",
    [
        ("model = 3\n", (), ["defines no `model`", "int"]),
        ("raise ValueError('oops')\n", (), ["running it failed", "ValueError: oops"]),
        (fs.LENET_STRUCTURE, ("--key", "nope"), ["no entry 'nope'", "'model_state'"]),
        (fs.LENET_STRUCTURE.replace("(1, 6)", "(3, 6)"), (), ["layers[1].weight", "size"]),
        (fs.LENET_STRUCTURE, ("--conv-padding", "1"), ["--conv-padding", "Knet JLD2"]),
    ],
)
def test_cli_bad_structure_exit_2(tmp_path, structure, args, words):
    p = _setup(tmp_path, structure=structure)
    r = _cli(
        "convert", p, "--structure", "lenet.py", "--input-size", "28,28,1", "-o", "o.keras",
        *args, cwd=tmp_path,
    )  # fmt: skip
    _assert_refused(r, words, tmp_path / "o.keras")


def test_structure_for_the_wrong_file_kind(tmp_path):
    from porting.flux.structure import load_structured, read_structure

    (tmp_path / "s.py").write_text(fs.LENET_STRUCTURE, encoding="utf-8")
    bson = fx.save_lenet(tmp_path / "l.bson")
    with pytest.raises(PortingError, match="a BSON.jl file holds its layers itself"):
        load_structured(bson, read_structure(tmp_path / "s.py"))
    with pytest.raises(PortingError, match=r"structure file is Python \(\.py"):
        from porting.commands._flux import load_for_convert

        ns = __import__("argparse").Namespace(
            model=str(bson), structure="s.json", key=None, input_size=None, input=None
        )
        load_for_convert(ns)


# ---------------------------------------------------------------- the golden U-Net


def _unet_file():
    path = REAL / "real-models" / UNET if REAL else None
    if path is None or not path.is_file():
        pytest.skip(f"golden real-models/{UNET} not found")
    return path


def _unet_oracle(model, x):
    """`(m::SimpleUNet)(x_and_emb)` of src/generate_images.jl (commit 8b5719da), from the
    cat(x, tmap; dims=3) on: each Chain's Conv (flipped, pad 1), BatchNorm(relu) at test
    time, MaxPool((2, 2)), ConvTranspose((2, 2), stride 2) (NNlib's ∇conv_data of the flipped
    convolution: PyTorch's transposed convolution with the kernel reversed), the channel join
    of up2's output and down1's, final = Conv((1, 1))."""
    fields = model.data

    def run(chain, t):
        for layer in chain.data[0]:
            kind = layer.name.rsplit(".", 1)[-1]
            if kind == "Conv":
                t = conv(t, layer.data[1], layer.data[2], pad=layer.data[4][0])
            elif kind == "BatchNorm":
                _, beta, gamma, mu, var, eps = layer.data[:6]

                def c(a):
                    return t64(a).reshape(1, -1, 1, 1)

                t = torch.relu(c(gamma) * (t - c(mu)) / torch.sqrt(c(var) + eps) + c(beta))
            elif kind == "MaxPool":
                t = F.max_pool2d(t, 2, stride=2)
            elif kind == "ConvTranspose":
                w = torch.flip(t64(np.asarray(layer.data[1]).transpose(3, 2, 0, 1)), dims=(2, 3))
                t = F.conv_transpose2d(t, w, t64(layer.data[2]), stride=2)
            else:
                raise AssertionError(kind)
        return t

    t = nchw(x)
    h1 = run(fields[0], t)
    h3 = run(fields[2], run(fields[1], h1))
    up = run(fields[4], torch.cat([run(fields[3], h3), h1], dim=1))
    final = fields[5]
    return julia(conv(up, final.data[1], final.data[2], pad=0))


def test_golden_unet_with_its_structure_file_matches_its_forward():
    from porting.flux import read
    from porting.flux.structure import load_structured, read_structure

    path = _unet_file()
    fm = load_structured(path, read_structure(STRUCTURE / "simple_unet.py"), input_size=(8, 8, 129))
    assert fm.key == "model" and len(fm.layers) > 20
    assert "model.up1" in fm.report() and "cat(...; dims=3)" in fm.report()
    x = np.random.default_rng(2).uniform(-1, 1, (8, 8, 129, 2)).astype(np.float32)
    want = _unet_oracle(read(path)["model"], x)
    assert_close(keras_run(fm.model, x, np.float32), want, np.float32)


def test_golden_unet_cli_convert_verify(tmp_path):
    path = _unet_file()
    r = _cli(
        "convert", path, "--structure", STRUCTURE / "simple_unet.py", "--input-size", "8,8,129",
        "-o", "u.keras", "--verify", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "u.keras").is_file()


@pytest.mark.parametrize(
    "edit, size, words",
    [
        (lambda s: s, "9,9,129", ["concat", "(8, 8, 64), (9, 9, 64)"]),
        (
            lambda s: s.replace('"final")', '"final", "extra")'),
            "8,8,129",
            ["6 fields in the file", "names 7"],
        ),
        (
            lambda s: s.replace('Struct("SimpleUNet"', 'Struct("OtherNet"'),
            "8,8,129",
            ["Main.SimpleUNet", "OtherNet"],
        ),
        (
            lambda s: s.replace("model = unet.final(up)", "model = unet.final(unet.up1(up))"),
            "8,8,129",
            ["model.up1: applied twice"],
        ),
        (lambda s: s.replace("dims=3", "dims=1"), "8,8,129", ["dims=1", "only dims=3"]),
    ],
)
def test_golden_unet_bad_structure_exit_2(tmp_path, edit, size, words):
    path = _unet_file()
    text = (STRUCTURE / "simple_unet.py").read_text(encoding="utf-8")
    (tmp_path / "u.py").write_text(edit(text), encoding="utf-8")
    r = _cli(
        "convert", path, "--structure", "u.py", "--input-size", size, "-o", "u.keras",
        cwd=tmp_path,
    )  # fmt: skip
    _assert_refused(r, words, tmp_path / "u.keras")


def test_without_structure_the_file_is_named_as_flux_state(tmp_path):
    p = _setup(tmp_path)
    r = _cli("inspect", p, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "'model_state' looks like Flux.state" in r.stdout and "porting.flux.build" in r.stdout
    r = _cli("convert", p, "--input-size", "28,28,1", "-o", "o.keras", cwd=tmp_path)
    assert r.returncode == 2 and "--structure model.py" in r.stderr
    assert not (tmp_path / "o.keras").exists()


def test_struct_structure_on_a_jld2_file_is_refused(tmp_path):
    p = _setup(tmp_path)
    (tmp_path / "u.py").write_text(
        (STRUCTURE / "simple_unet.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    r = _cli(
        "convert", p, "--structure", "u.py", "--input-size", "28,28,1", "-o", "o.keras",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "wires a user struct in a BSON.jl file" in r.stderr
    assert not (tmp_path / "o.keras").exists()


def test_struct_and_cat_refuse_bad_arguments():
    from porting.flux.structure import Struct, cat

    with pytest.raises(PortingError, match="each once"):
        Struct("S", "a", "a")
    s = Struct("S", "a", "b")
    with pytest.raises(AttributeError, match="no field 'c'"):
        s.c  # noqa: B018
    with pytest.raises(PortingError, match="two or more"):
        cat(s.a(s.input), dims=3)
    with pytest.raises(PortingError, match="expected values of the forward"):
        s.b(3)
    assert repr(s) == "Struct('S', 'a', 'b')"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_and_pool_state_of_flux_016_in_a_jld2_file(tmp_path, dtype):
    """Bool (bitfield), Float32 and nothing fields through the file; Flux 0.16 (Functors 0.5)
    gives a pool's fields too."""
    rng = np.random.default_rng(5)
    mu, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    bn = {
        "λ": (),
        "β": beta.astype(dtype),
        "γ": gamma.astype(dtype),
        "μ": mu.astype(dtype),
        "σ²": var.astype(dtype),
        "ϵ": np.float32(1e-5),
        "momentum": np.float32(0.1),
        "affine": True,
        "track_stats": True,
        "active": None,
        "chs": 3,
    }
    pool = {"k": (2, 2), "pad": (0, 0, 0, 0), "stride": (2, 2)}
    p = fs.save_state(tmp_path / "bn.jld2", {"model_state": {"layers": (bn, pool)}})
    model = B.load_jld2(
        p, B.Chain(B.BatchNorm(3, "relu"), B.MeanPool((2, 2))), input_size=(4, 6, 3)
    )
    x = rng.uniform(-1, 1, (4, 6, 3, 2)).astype(dtype)
    eps = float(np.float32(1e-5))
    want = flux_forward(
        [("bn", mu.astype(dtype), var.astype(dtype), gamma.astype(dtype), beta.astype(dtype),
          eps, "relu"), ("meanpool", 2, 0)],
        x.astype(np.float64),
    )  # fmt: skip
    assert_close(keras_run(model, x, dtype), want, dtype)
