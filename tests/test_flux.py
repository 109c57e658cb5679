"""Flux models in BSON.jl files: the reader's safety, the layers against a PyTorch float64
oracle written here from Flux/NNlib's definitions, and the six real files as they are.

Oracle (Flux v0.14.7 ``src/layers/conv.jl``, ``basic.jl``, ``normalise.jl``; NNlib's
``conv``/``maxpool``/``meanpool``): ``Conv`` is NNlib's ``conv(x, w; flipped=false)``, a true
convolution (the kernel reversed along every spatial axis); ``CrossCor`` the same with
``flipped=true``; ``MaxPool``/``MeanPool`` of window ``k`` (``meanpool`` divides by
``prod(k)``, padding counted); ``flatten`` is ``reshape(x, :, size(x, end))``, column-major;
``Dense`` is ``σ.(W * x .+ b)``; ``BatchNorm`` at test time ``λ.(γ .* (x .- μ) ./ sqrt.(σ² .+ ϵ)
.+ β)``; ``softmax`` over the first dimension. Nothing here calls porting's own forward.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from golden_paths import golden_dir

from porting.errors import PortingError
from porting.examples import flux as fx

torch = pytest.importorskip("torch", reason="torch is the independent oracle for Flux layers")
F = torch.nn.functional

REAL = golden_dir("real-models")
REAL_DIR = REAL / "real-models" if REAL else None
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- oracle (Flux semantics)


def _nchw(x):  # Julia (X1, X2, C, N) -> torch (N, C, X1, X2)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float64).transpose(3, 2, 0, 1)))


def _julia(t):  # torch (N, C, X1, X2) -> Julia (X1, X2, C, N)
    return t.numpy().transpose(2, 3, 1, 0)


def _kernel(w, flipped):  # Julia (k1, k2, Cin, Cout) -> torch (Cout, Cin, k1, k2)
    k = torch.from_numpy(np.ascontiguousarray(np.asarray(w, np.float64).transpose(3, 2, 0, 1)))
    return k if flipped else torch.flip(k, dims=(2, 3))


ACT = {
    "relu": torch.relu,
    "identity": lambda t: t,
    "tanh": torch.tanh,
    "sigm": torch.sigmoid,
}


def flux_forward(layers, x):
    """`layers`: ("conv", w, b, act, pad(lo1,hi1,lo2,hi2), stride, flipped) | ("maxpool", k) |
    ("meanpool", k, pad) | ("flatten",) | ("dense", w, b, act) | ("softmax",) |
    ("bn", mu, var, gamma, beta, eps, act). `x` Julia (X1, X2, C, N); returns Julia order."""
    t = _nchw(x)
    flat = False
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            _, w, b, act, pad, stride, flipped = layer
            lo1, hi1, lo2, hi2 = pad
            t = F.pad(t, (lo2, hi2, lo1, hi1))  # torch pads the last axis first
            bias = None if b is None else torch.from_numpy(np.asarray(b, np.float64))
            t = ACT[act](F.conv2d(t, _kernel(w, flipped), bias, stride=stride))
        elif kind == "maxpool":
            t = F.max_pool2d(t, layer[1], stride=layer[1])
        elif kind == "meanpool":
            k, pad = layer[1], layer[2]
            t = F.pad(t, (pad, pad, pad, pad))
            t = F.avg_pool2d(t, k, stride=k)  # NNlib meanpool: sum / prod(k), padding counted
        elif kind == "flatten":
            t = t.permute(0, 1, 3, 2).reshape(t.shape[0], -1)  # column-major (X1 fastest)
            flat = True
        elif kind == "dense":
            _, w, b, act = layer
            y = t @ torch.from_numpy(np.asarray(w, np.float64)).T
            if b is not None:
                y = y + torch.from_numpy(np.asarray(b, np.float64))
            t = ACT[act](y)
        elif kind == "softmax":
            t = torch.softmax(t, dim=1)
        elif kind == "bn":
            _, mu, var, gamma, beta, eps, act = layer

            def c(a):
                return torch.from_numpy(np.asarray(a, np.float64)).reshape(1, -1, 1, 1)

            t = ACT[act](c(gamma) * (t - c(mu)) / torch.sqrt(c(var) + eps) + c(beta))
    return t.numpy().T if flat else _julia(t)


def keras_forward(model, x, dtype=np.float32):
    """Run the converted Keras model (spatial='reverse': Keras (N, X2, X1, C))."""
    from porting.model import to_keras

    km = to_keras(model, input_size=tuple(np.shape(x)[:-1]))
    xk = np.asarray(x, dtype).transpose(3, 1, 0, 2)
    y = np.asarray(km(xk))
    return y.T if y.ndim == 2 else y.transpose(2, 1, 3, 0)


def assert_close(got, want, dtype=np.float32, k=1000):
    """Within a float32 budget: k accumulations of eps32 on the output's scale."""
    tol = k * np.finfo(dtype).eps * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= tol, (err, tol)


# ---------------------------------------------------------------- built fixtures


def _lenet_oracle(doc):
    conv1, _, conv2, _, _, d1, d2, _ = doc["data"][0]["data"]

    def arr(d):
        return np.frombuffer(d["data"], "<f4").reshape(d["size"], order="F")

    def cv(c):
        return ("conv", arr(c["data"][1]), arr(c["data"][2]), "relu", (0, 0, 0, 0), 1, False)

    return [
        cv(conv1),
        ("maxpool", 2),
        cv(conv2),
        ("maxpool", 2),
        ("flatten",),
        ("dense", arr(d1["data"][0]), arr(d1["data"][1]), "relu"),
        ("dense", arr(d2["data"][0]), arr(d2["data"][1]), "identity"),
        ("softmax",),
    ]


def test_lenet_fixture_matches_flux_oracle(tmp_path):
    from porting.flux import load_model

    p = fx.save_lenet(tmp_path / "lenet.bson", seed=3)
    fm = load_model(p)
    assert "Flux" in fm.report()
    x = np.random.default_rng(1).uniform(-1, 1, (28, 28, 1, 3)).astype(np.float32)
    want = flux_forward(_lenet_oracle(fx.lenet(3)), x)
    assert want.shape == (10, 3)
    assert_close(keras_forward(fm.model, x), want)


def test_crosscor_asymmetric_pad_meanpool_batchnorm(tmp_path):
    from porting.flux import load_model

    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    mu, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    gamma, beta = (
        rng.standard_normal(4).astype(np.float32),
        rng.standard_normal(4).astype(np.float32),
    )
    crosscor = fx.struct(
        "Flux.CrossCor",
        fx.function("Base.identity"),
        fx.array(w),
        fx.array(b),
        fx.tuple_(1, 1),
        fx.tuple_(1, 0, 0, 1),  # lo1, hi1, lo2, hi2: asymmetric
        fx.tuple_(1, 1),
    )
    bn = fx.struct(
        "Flux.BatchNorm",
        fx.function("NNlib.relu"),
        fx.array(beta),
        fx.array(gamma),
        fx.array(mu),
        fx.array(var),
        fx.float32(1e-5),
        fx.float32(0.1),
        True,
        True,
        None,
        4,
    )
    mean = fx.struct("Flux.MeanPool", fx.tuple_(2, 2), fx.tuple_(1, 1, 1, 1), fx.tuple_(2, 2))
    p = fx.save(tmp_path / "m.bson", {"model": fx.chain(crosscor, bn, mean)})
    fm = load_model(p)
    assert [f.layer.kind for f in fm.layers] == [
        "zeropad",
        "conv",
        "batchnorm",
        "activation",
        "pool",
    ]
    x = rng.uniform(-1, 1, (7, 6, 2, 2)).astype(np.float32)
    want = flux_forward(
        [
            ("conv", w, b, "identity", (1, 0, 0, 1), 1, True),
            ("bn", mu, var, gamma, beta, float(np.float32(1e-5)), "relu"),
            ("meanpool", 2, 1),
        ],
        x,
    )
    assert_close(keras_forward(fm.model, x), want)


# ---------------------------------------------------------------- hostile files


def _write_raw(path, doc):
    import bson

    path.write_bytes(bson.encode(doc))
    return path


HOSTILE = {
    "forged tag": {"model": {"tag": "eval", "code": "rm -rf /"}},
    "cycle": {
        "model": {"tag": "backref", "ref": 1},
        "_backrefs": [fx.struct("Flux.Chain", fx.tuple_({"tag": "backref", "ref": 1}))],
    },
    "backref out of range": {"model": {"tag": "backref", "ref": 7}, "_backrefs": []},
    "size bomb": {
        "model": {
            "tag": "array",
            "type": fx.datatype("Core.Float32"),
            "size": [2**20, 2**20],
            "data": b"\0" * 16,
        }
    },
    "data shorter than size": {
        "model": {
            "tag": "array",
            "type": fx.datatype("Core.Float32"),
            "size": [3, 3],
            "data": b"\0" * 32,
        }
    },
    "unknown eltype": {
        "model": {
            "tag": "array",
            "type": fx.datatype("Main.Evil"),
            "size": [2],
            "data": b"\0" * 8,
        }
    },
    "negative size": {
        "model": {"tag": "array", "type": fx.datatype("Core.Float32"), "size": [-1], "data": b""}
    },
}


def _nested(depth):
    d: dict = {"tag": "tuple", "data": [1]}
    for _ in range(depth):
        d = {"tag": "tuple", "data": [d]}
    return d


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bson_is_one_porting_error(tmp_path, case):
    from porting import io

    p = _write_raw(tmp_path / "bad.bson", HOSTILE[case])
    with pytest.raises(PortingError) as e:
        io.load(p)
    assert str(p) in str(e.value)


def test_depth_and_object_limits(tmp_path):
    from porting import io

    p = _write_raw(tmp_path / "deep.bson", {"model": _nested(80)})
    with pytest.raises(PortingError, match="deeper"):
        io.load(p)
    many = _write_raw(tmp_path / "many.bson", {"model": fx.tuple_(*range(5000))})
    with pytest.raises(PortingError, match="object limit"):
        io.load(many, max_objects=1000)
    with pytest.raises(PortingError, match="size limit"):
        io.load(many, max_bytes=100)


def test_dag_shared_node_decoded_once(tmp_path):
    from porting import io

    shared = fx.array(np.arange(6, dtype=np.float32).reshape(2, 3))
    p = _write_raw(
        tmp_path / "dag.bson",
        {
            "a": {"tag": "backref", "ref": 1},
            "b": {"tag": "backref", "ref": 1},
            "_backrefs": [shared],
        },
    )
    d = io.load(p)
    assert d["a"] is d["b"]
    assert d["a"][1, 2] == 5.0  # Julia w[2, 3] of reshape(0:5, 2, 3)' column-major bytes


def test_truncated_and_not_bson(tmp_path):
    from porting import io

    good = fx.encode({"model": fx.lenet()})
    (tmp_path / "t.bson").write_bytes(good[: len(good) // 2])
    with pytest.raises(PortingError, match="truncated or corrupt"):
        io.load(tmp_path / "t.bson")


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "porting", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )


def test_cli_hostile_exit_2_nothing_written(tmp_path):
    p = _write_raw(tmp_path / "bad.bson", HOSTILE["cycle"])
    r = _cli("convert", p, "--input-size", "4", "-o", tmp_path / "out.keras", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cycle" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["bad.bson"]


def test_cli_convert_verify_and_inspect(tmp_path):
    p = fx.save_lenet(tmp_path / "lenet.bson")
    r = _cli("inspect", p, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model  Flux model: Flux.Chain: 8 layers" in r.stdout
    r = _cli(
        "convert",
        p,
        "--input-size",
        "28,28,1",
        "-o",
        tmp_path / "l.keras",
        "--verify",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Flux" in r.stdout and (tmp_path / "l.keras").is_file()


# ---------------------------------------------------------------- the six real files


def _real(name):
    if REAL_DIR is None or not (REAL_DIR / name).is_file():
        pytest.skip(f"golden real-models/{name} not found ({golden_dir.__doc__ or ''})"[:200])
    return REAL_DIR / name


def test_all_six_decode():
    from porting import io

    if REAL_DIR is None:
        pytest.skip("golden real-models folder not found")
    files = sorted(REAL_DIR.glob("*.bson"))
    assert len(files) == 6
    for f in files:
        assert io.load(f)


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("DhairyaLGandhi_JuliaCon2020_dash__model_conv.bson", "Flux.flatten"),
        ("eye-labs_ml-tutorials__mnist_conv.bson", "MaxPool(2, 2)"),
    ],
)
def test_real_cnn_converts_and_matches_flux_oracle(name, pattern):
    from porting.flux import load_model
    from porting.io.bsonjl import JuliaStruct

    fm = load_model(_real(name))
    assert pattern in fm.report()
    chain = load_model.__globals__["read"](_real(name))["model"].data[0]

    def arr(v):  # Tracker-era weights sit in TrackedArray(tracker, data, grad)
        return v.data[1] if isinstance(v, JuliaStruct) else v

    layers = []
    for item in chain:
        short = item.name.rsplit(".", 1)[-1]
        if short == "Conv":
            pad = item.data[4]
            pad = pad * 2 if len(pad) == 2 else pad
            layers.append(("conv", arr(item.data[1]), arr(item.data[2]), "relu", pad, 1, False))
        elif short in ("MaxPool",) or "#5" in short or "#6" in short or "#7" in short:
            layers.append(("maxpool", 2))
        elif short == "Dense":
            layers.append(("dense", arr(item.data[0]), arr(item.data[1]), "identity"))
        elif short == "#softmax":
            layers.append(("softmax",))
        else:  # the reshape(x, :, size(x, 4)) closure
            layers.append(("flatten",))
    x = np.random.default_rng(0).uniform(0, 1, (28, 28, 1, 2)).astype(np.float32)
    assert_close(keras_forward(fm.model, x), flux_forward(layers, x))


@pytest.mark.parametrize(
    "name, words",
    [
        ("Deltadahl_Image-Longitudinal__model.bson", ["CuArray", "cpu(model)"]),
        (
            "paul-vdl_ImageGenerationDiffusionModels.jl__trained_model.bson",
            ["Main.SimpleUNet", "user struct"],
        ),
    ],
)
def test_real_refused_with_reason(name, words, tmp_path):
    from porting.flux import load_model

    with pytest.raises(PortingError) as e:
        load_model(_real(name))
    for w in words:
        assert w in str(e.value)
    r = _cli("convert", _real(name), "--input-size", "8", "-o", tmp_path / "x.keras", cwd=tmp_path)
    assert r.returncode == 2 and not (tmp_path / "x.keras").exists()


def test_source_packages_do_not_import_each_other():
    import ast

    def imported(pkg):
        names = set()
        for f in (ROOT / "porting" / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module)
                elif isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
        return names

    assert not any(n.startswith("porting.knetfile") for n in imported("flux"))
    assert not any(n.startswith("porting.flux") for n in imported("knetfile"))
