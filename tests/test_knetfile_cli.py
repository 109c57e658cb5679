"""`porting convert FILE.jld2` and `porting inspect FILE` on the real files of
shared/golden/real-models/ (read from beside the repository; skipped with the reason when
absent): what converts and verifies, what is refused and with which message, and bad input
(exit 2, nothing written).

The converted Keras models are checked against forwards written here from Knet's definitions
(NumPy / PyTorch float64 on weights read straight from the file's bytes), not against porting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from golden_paths import golden_dir  # noqa: E402  (tests/ is on sys.path)

from porting.cli import main

GOLDEN = golden_dir("real-models")
REAL = (GOLDEN / "real-models") if GOLDEN else Path("absent")
needs_real = pytest.mark.skipif(
    GOLDEN is None,
    reason="shared/golden/real-models not found (set PORTING_GOLDEN_DIR or put shared/ beside "
    "the repository)",
)
HAMZACO = "hamzaco_Comp-541-Term-Project__model_eh1_eg01.jld2"
LENET = "KnetML_NNHelferlein.jl__test_save_lenet.jld2"
WCNN = "OsmanMutlu_Comp508-final__model.jld2"
DUMMY = "KnetML_NNHelferlein.jl__data_testdata_dummy_mlp.jld2"

pytestmark = needs_real

WCNN_STRUCTURE = {
    "format": "porting-knet-export",
    "version": 1,
    "input_size": [28, 28, 1],
    # Lenet.jl: x = pool(relu.(conv4(w[i], x) .+ w[i+1])) twice, relu.(w[5]*mat(x) .+ w[6]),
    # then w[7]*x .+ w[8]
    "layers": [
        {
            "kind": "conv",
            "params": {"w": {"key": "wcnn/1"}, "b": {"key": "wcnn/2"}},
            "activation": "relu",
            "pool": {"window": 2},
            "order": "activation-pool",
        },
        {
            "kind": "conv",
            "params": {"w": {"key": "wcnn/3"}, "b": {"key": "wcnn/4"}},
            "activation": "relu",
            "pool": {"window": 2},
            "order": "activation-pool",
        },
        {
            "kind": "dense",
            "params": {"w": {"key": "wcnn/5"}, "b": {"key": "wcnn/6"}},
            "activation": "relu",
        },
        {"kind": "dense", "params": {"w": {"key": "wcnn/7"}, "b": {"key": "wcnn/8"}}},
    ],
}


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- inspect / --list


def test_inspect_lists_paths_usable_as_keys(capsys):
    code, out, err = run_cli(["inspect", REAL / HAMZACO], capsys)
    assert code == 0, err
    assert "items numbered from 1, as in Julia" in out
    for i in range(1, 6):
        assert f"q_networks/{i}" in out
    assert "accuracies/2" in out and "best_model_index" in out
    code, out2, _ = run_cli(["convert", REAL / HAMZACO, "--list"], capsys)
    assert code == 0 and out2 == out


def test_inspect_key_on_a_model_prints_its_provenance(capsys):
    code, out, err = run_cli(["inspect", REAL / LENET, "--key", "helferlein"], capsys)
    assert code == 0, err
    assert "helferlein/layers/1/kwargs: stored as an empty keyword list" in out
    assert "activation=sigm (file: actf = Knet.Ops20.sigm)" in out


def test_inspect_json_and_refused_files(capsys):
    code, out, err = run_cli(["inspect", REAL / DUMMY, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    kinds = {e["path"]: e["kind"] for e in doc["entries"]}
    assert kinds == {"mb": "unreadable", "mlp": "model-refused"}


@pytest.mark.parametrize(
    "name",
    sorted(
        [p.name for p in (GOLDEN / "jld2").rglob("*.jld2")]
        + [p.name for p in (GOLDEN / "real-models").glob("*.jld2")]
    )
    if GOLDEN
    else [],
)
def test_inspect_every_golden_jld2_file_lists_or_refuses_cleanly(name, tmp_path):
    """In a subprocess: a file that crashed the reader must not take the test run with it."""
    import subprocess
    import sys

    path = next((GOLDEN / "jld2").rglob(name), None) or REAL / name
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), *sys.path]))
    r = subprocess.run(
        [sys.executable, "-m", "porting", "inspect", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode in (0, 2), (r.returncode, r.stderr[-2000:])
    if r.returncode == 0:
        assert "what it holds" in r.stdout
    else:
        assert r.stderr.startswith("porting inspect: error: ") and str(path) in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# --------------------------------------------------------------------------- converts


def _dense_forward(file, key):
    """Knet tutorial Chain of Dense: f.(w * x .+ b), weights decoded here from the saved
    KnetArray bytes (Float32, column-major), computed in float64."""
    from porting import io

    tree = io.load(file)
    net = tree["q_networks"][int(key.split("/")[1]) - 1]
    layers = []
    for layer in net["layers"]:
        arrs = []
        for f in ("w", "b"):
            v = layer[f]["value"]
            a = np.frombuffer(v["ptr"]["ptr"].tobytes(), dtype="<f4")
            arrs.append(a.reshape(tuple(v["dims"]), order="F").astype(np.float64))
        layers.append((*arrs, layer["f"]))

    def forward(x):  # x: (features, N)
        for w, b, f in layers:
            x = w @ x + b[:, None]
            if f == "Knet.Ops20.relu":
                x = np.maximum(x, 0)
            else:
                assert f == "Base.identity"
        return x

    return forward


def test_convert_hamzaco_q_network_verified_and_matches_a_float64_forward(tmp_path, capsys):
    import keras

    out = tmp_path / "q2.keras"
    code, text, err = run_cli(
        ["convert", REAL / HAMZACO, "--key", "q_networks/2", "-o", out, "--verify"], capsys
    )
    assert code == 0, err
    assert "OK: the Keras model computes what the Knet model computes" in text
    assert "activation=relu (file: f = Knet.Ops20.relu)" in text
    assert "It cannot prove that they are what your own Julia forward code computes" in text
    km = keras.models.load_model(out)
    x = np.random.default_rng(0).standard_normal((88, 5)).astype(np.float32)
    got = np.asarray(km(x.T)).T.astype(np.float64)
    want = _dense_forward(REAL / HAMZACO, "q_networks/2")(x.astype(np.float64))
    assert got.shape == (36, 5)
    # float32 through 4 layers of K <= 129 terms: a few hundred ulps of the output scale at most
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))


def lenet_forward(torch, x, P, dense_act):
    """Knet LeNet in PyTorch float64, from Knet's definitions: conv4 (mode 0, true convolution:
    kernel flipped) .+ b, relu, pool (max, window 2), mat (X1 fastest), dense_act.(w*x .+ b),
    then w*x .+ b. x is Julia's (X1, X2, C, N); P the four (w, b) pairs in Julia sizes."""
    F = torch.nn.functional

    def T(a):
        return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)

    def conv(h, w, b):
        wt = T(np.flip(w, (0, 1)).transpose(3, 2, 0, 1))
        return F.conv2d(h, wt) + T(b.reshape(-1))[None, :, None, None]

    h = T(x.transpose(3, 2, 0, 1))  # (N, C, X1, X2)
    h = F.max_pool2d(torch.relu(conv(h, *P[0])), 2)
    h = F.max_pool2d(torch.relu(conv(h, *P[1])), 2)
    h = h.permute(0, 1, 3, 2).reshape(h.shape[0], -1)  # Knet mat: X1 fastest, then X2, C
    h = dense_act(h @ T(P[2][0]).T + T(P[2][1].reshape(-1)))
    return (h @ T(P[3][0]).T + T(P[3][1].reshape(-1))).numpy()


def test_convert_nnhelferlein_lenet_matches_a_torch_forward(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="the independent conv forward uses PyTorch")
    import keras

    from porting import io

    out = tmp_path / "lenet.keras"
    argv = ["convert", REAL / LENET, "-o", out, "--verify"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--input-size" in err and not out.exists()
    code, text, err = run_cli([*argv, "--input-size", "28,28,1", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(text)
    assert doc["ok"] and doc["recognised"]["key"] == "helferlein"
    kinds = [la["kind"] for la in doc["recognised"]["layers"]]
    assert kinds == ["conv", "pool", "conv", "pool", "mat", "dense", "dense"]

    t = io.load(REAL / LENET)["helferlein"]["layers"]
    P = [(t[i]["w"]["value"], t[i]["b"]["value"]) for i in (0, 2, 5, 6)]
    x = np.random.default_rng(1).standard_normal((28, 28, 1, 3)).astype(np.float32)
    want = lenet_forward(torch, x, P, dense_act=torch.sigmoid)

    km = keras.models.load_model(out)
    got = np.asarray(km(x.transpose(3, 1, 0, 2))).astype(np.float64)  # (N, X2, X1, C)
    assert got.shape == want.shape == (3, 10)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))


def test_convert_in_a_subprocess_as_a_user_runs_it(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), *sys.path]))
    argv = [sys.executable, "-m", "porting", "convert", str(REAL / HAMZACO)]
    r = subprocess.run(
        [*argv, "--key", "q_networks/1", "-o", "q1.keras", "--verify"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote q1.keras" in r.stdout and (tmp_path / "q1.keras").is_file()
    r = subprocess.run(
        [*argv, "--key", "q_networks/9", "-o", "bad.keras"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "holds 5 items, numbered 1-5; got 9" in r.stderr
    assert not (tmp_path / "bad.keras").exists()


def test_convert_wcnn_with_a_structure_file(tmp_path, capsys):
    s = tmp_path / "wcnn.json"
    s.write_text(json.dumps(WCNN_STRUCTURE))
    out = tmp_path / "wcnn.keras"
    code, text, err = run_cli(
        ["convert", REAL / WCNN, "--structure", s, "-o", out, "--verify"], capsys
    )
    assert code == 0, err
    assert out.stat().st_size > 10_000
    assert "w (500, 800) from wcnn/5 (Array)" in text
    assert "padding=0 (Knet default: the structure file gives none)" in text
    assert "OK: the Keras model computes what the Knet model computes" in text
    torch = pytest.importorskip("torch", reason="the independent conv forward uses PyTorch")
    import keras

    from porting import io

    w = io.load(REAL / WCNN)["wcnn"]
    P = [(w[i], w[i + 1]) for i in (0, 2, 4, 6)]
    x = np.random.default_rng(2).standard_normal((28, 28, 1, 2)).astype(np.float32)
    want = lenet_forward(torch, x, P, dense_act=torch.relu)  # Lenet.jl: relu on dense 1
    got = np.asarray(keras.models.load_model(out)(x.transpose(3, 1, 0, 2))).astype(np.float64)
    assert got.shape == want.shape == (2, 62)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))


# --------------------------------------------------------------------------- refused, bad input


@pytest.mark.parametrize(
    "extra, words",
    [
        ([], ["holds 5 models", "--key"]),
        (["--key", "q_networks/6"], ["holds 5 items, numbered 1-5; got 6"]),
        (["--key", "q_networks/0"], ["numbering starts at 1"]),
        (["--key", "q_networks[7]"], ["holds 5 items, numbered 1-5; got 7"]),
        (["--key", "q_network"], ["no 'q_network' in the file's top level", "q_networks"]),
        (["--key", "accuracies/1"], ["accuracies/1 is float64 array (200,), not a Knet model"]),
        (["--key", "best_model_index"], ["best_model_index is Int 110, not a Knet model"]),
        (["--key", "q_networks/1/layers/1/w"], ["is one weight (a Param or a Knet array)"]),
        (["--key", "q_networks/2/layers/1/w/opt"], ["Knet Rmsprop optimiser state"]),
        (["--key", "q_networks/1", "--structure", "nope.json"], ["--structure nope.json: no such"]),
        (["--key", "q_networks/1", "--conv-padding", "1"], ["--conv-padding 1 given but no layer"]),
    ],
)
def test_bad_keys_exit_2_and_write_nothing(extra, words, tmp_path, capsys):
    out = tmp_path / "m.keras"
    code, _, err = run_cli(["convert", REAL / HAMZACO, "-o", out, *extra], capsys)
    assert code == 2
    assert err.startswith("porting convert: error: ")
    for w in words:
        assert w in err
    assert list(tmp_path.iterdir()) == []


def test_structure_naming_a_missing_array_exits_2(tmp_path, capsys):
    doc = json.loads(json.dumps(WCNN_STRUCTURE))
    doc["layers"][3]["params"]["b"]["key"] = "wcnn/9"
    s = tmp_path / "bad.json"
    s.write_text(json.dumps(doc))
    out = tmp_path / "w.keras"
    code, _, err = run_cli(["convert", REAL / WCNN, "--structure", s, "-o", out], capsys)
    assert code == 2
    assert "bad.json: layer 4: params.b names 'wcnn/9'" in err and "numbered 1-8" in err
    assert not out.exists()


def test_structure_with_a_wrong_size_exits_2(tmp_path, capsys):
    doc = json.loads(json.dumps(WCNN_STRUCTURE))
    doc["layers"][2]["params"]["w"]["size"] = [800, 500]
    s = tmp_path / "bad.json"
    s.write_text(json.dumps(doc))
    code, _, err = run_cli(["convert", REAL / WCNN, "--structure", s, "--verify"], capsys)
    assert code == 2
    assert "wcnn/5" in err and "(500, 800)" in err and "porting-structure" not in err


def test_gpu_file_is_refused_with_how_to_resave(tmp_path, capsys):
    out = tmp_path / "m.keras"
    code, _, err = run_cli(["convert", REAL / DUMMY, "-o", out, "--verify"], capsys)
    assert code == 2
    assert "CuArray of size (8, 8) saved from the GPU without copying it to the CPU" in err
    assert "cpucopy" in err and not out.exists()


def test_jld2_flags_with_an_export_are_refused(tmp_path, capsys):
    from porting.model import Dense, KnetModel, save_export

    m = KnetModel([Dense(np.ones((2, 3), np.float32), np.zeros(2, np.float32))], input_size=(3,))
    save_export(m, tmp_path / "m")
    code, _, err = run_cli(["convert", tmp_path / "m", "--verify", "--key", "x"], capsys)
    assert code == 2 and "--key apply to a JLD2 model file" in err


def test_geometry_flags_with_a_structure_file_are_refused(tmp_path, capsys):
    s = tmp_path / "wcnn.json"
    s.write_text(json.dumps(WCNN_STRUCTURE))
    argv = ["convert", REAL / WCNN, "--structure", s, "--verify", "--conv-padding", "1"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "give each layer's geometry in the structure file" in err


def test_structure_file_overrides_what_the_struct_says(tmp_path, capsys):
    """The user's own forward code (hamzaco's model.ipynb) is `(l::Dense)(x) = (l.w * x .+
    l.b)`: it never applies the stored `f = relu`. That is why the report cannot vouch for the
    user's code, and why a structure file may say what the code computes instead. Keys are
    relative to --key and may point at Param{KnetArray} weights."""
    layers = [
        {"kind": "dense", "params": {"w": {"key": f"layers/{i}/w"}, "b": {"key": f"layers/{i}/b"}}}
        for i in range(1, 5)
    ]
    s = tmp_path / "q.json"
    s.write_text(json.dumps({"format": "porting-knet-export", "version": 1, "layers": layers}))
    argv = ["convert", REAL / HAMZACO, "--key", "q_networks/2", "--structure", s, "--verify"]
    code, text, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(text)
    assert doc["ok"] and doc["input_size"] == [88]
    acts = [la["settings"][0] for la in doc["recognised"]["layers"]]
    assert all(a["value"] == "identity" and a["source"] == "Knet default" for a in acts)
    notes = doc["recognised"]["layers"][0]["notes"]
    assert notes == ["w (128, 88) from q_networks/2/layers/1/w (Param{KnetArray})"] + [
        "b (128,) from q_networks/2/layers/1/b (Param{KnetArray})"
    ]


def test_unreadable_entry_is_named(capsys):
    code, out, err = run_cli(["inspect", REAL / DUMMY], capsys)
    assert code == 0, err
    assert "'mb.xtype.var.ub'" in out  # the struct field h5py cannot decode, by name
    code, _, err = run_cli(["convert", REAL / DUMMY, "--key", "mb", "--verify"], capsys)
    assert code == 2 and "mb cannot be read" in err and "'mb.xtype.var.ub'" in err


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", ["cannot read as JSON"]),
        ("[1, 2]", ["expected a JSON object"]),
        ('{"format": "other", "version": 1, "layers": []}', ['expected "format"']),
        ('{"format": "porting-knet-export", "version": 1, "layers": []}', ["non-empty list"]),
        (
            '{"format": "porting-knet-export", "version": 1, "layers": [{"kind": "dense", '
            '"params": {"w": "wcnn/5"}}]}',
            ["params.w = 'wcnn/5'", '{"key": "path/in/file"}'],
        ),
        (
            '{"format": "porting-knet-export", "version": 1, "layers": [{"kind": "dense", '
            '"params": {"w": {"key": "wcnn"}}}]}',
            ["wcnn: expected a weight array, found list"],
        ),
        (
            '{"format": "porting-knet-export", "version": 1, "layers": [{"kind": "lstm", '
            '"params": {"w": {"key": "wcnn/5"}}}]}',
            ["unknown kind 'lstm'"],
        ),
    ],
)
def test_bad_structure_files_exit_2(text, words, tmp_path, capsys):
    s = tmp_path / "s.json"
    s.write_text(text)
    out = tmp_path / "w.keras"
    code, _, err = run_cli(["convert", REAL / WCNN, "--structure", s, "-o", out], capsys)
    assert code == 2, err
    for w in words:
        assert w in err
    assert not out.exists() and "porting-structure-" not in err


def test_inspect_an_npz_export(tmp_path, capsys):
    from porting.io import save_npz

    save_npz(tmp_path / "w.npz", {"conv1": {"w": np.ones((3, 3, 1, 2), np.float32)}})
    code, out, err = run_cli(["inspect", tmp_path / "w.npz"], capsys)
    assert code == 0, err
    assert "conv1.w" in out and "float32 array (3, 3, 1, 2)" in out
