"""NNlib's gelus, by the name a Flux file stores (docs/flux.md#gelu-flux): ``gelu`` is the tanh
approximation in every NNlib release (``src/activations.jl`` v0.8.4, v0.9.27; from v0.9.28
``const gelu = gelu_tanh``, so a file names the type ``#gelu_tanh``), ``gelu_sigmoid`` the same
function written with a sigmoid (v0.9.36), ``gelu_erf`` (v0.9.28 on) the exact erf form. The
oracle is PyTorch's float64 gelu, ``approximate="tanh"`` and ``"none"``, which are those two
formulas; the converted Keras model is run (built-in layers only) and saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest
from test_flux import _cli

from porting.examples import flux as fx

torch = pytest.importorskip("torch", reason="torch is the independent oracle")
F = torch.nn.functional

FORMS = {
    "NNlib.gelu": "tanh",
    "NNlib.gelu_tanh": "tanh",
    "NNlib.gelu_sigmoid": "tanh",
    "NNlib.gelu_erf": "none",
}


def _model(dtype, act, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((6, 4)) * 1.5).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    return w, b, fx.chain(fx.dense(w, b, act))


def _oracle(w, b, x, approximate):
    t = torch.from_numpy(x.astype(np.float64)).T  # (N, features)
    y = t @ torch.from_numpy(w.astype(np.float64)).T + torch.from_numpy(b.astype(np.float64))
    return F.gelu(y, approximate=approximate).numpy().T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", sorted(FORMS))
def test_flux_gelu_by_name_matches_torch(tmp_path, act, dtype):
    from porting.flux import load_model
    from porting.model import to_keras

    w, b, chain = _model(dtype, act)
    p = fx.save(tmp_path / "g.bson", {"model": chain})
    fm = load_model(p)
    want_act = "gelu_tanh" if FORMS[act] == "tanh" else "gelu"
    assert fm.model.layers[0].activation == want_act
    x = np.random.default_rng(1).uniform(-3, 3, (4, 5)).astype(dtype)
    km = to_keras(fm.model, input_size=(4,))
    got = np.asarray(km(x.T)).T.astype(np.float64)
    want = _oracle(w, b, x, FORMS[act])
    other = _oracle(w, b, x, "none" if FORMS[act] == "tanh" else "tanh")
    eps = float(np.finfo(dtype).eps)
    scale = max(1.0, float(np.abs(want).max()))
    if dtype is np.float32:
        tol = 16 * eps * scale
    else:  # TensorFlow's float64 erf, and the Rescaling constants of the tanh form (rounded
        # to float32 by TensorFlow), are good to about 1e-9 relative only: warned
        tol = 1e-8 * scale
    assert np.abs(got - want).max() <= tol
    assert np.abs(got - other).max() > 10 * tol  # the other gelu is far outside it


def test_gelu_tanh_keras_file_reloads_without_porting(tmp_path):
    from porting.flux import load_model
    from porting.model import save_keras, to_keras

    w, b, chain = _model(np.float32, "NNlib.gelu")
    fm = load_model(fx.save(tmp_path / "g.bson", {"model": chain}))
    km = to_keras(fm.model, input_size=(4,))
    path = save_keras(km, tmp_path / "g.keras")
    code = (
        "import keras, numpy as np, sys\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "x = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)\n"
        "np.save(sys.argv[2], np.asarray(m(x)))\n"
    )
    import subprocess
    import sys

    out = tmp_path / "y.npy"
    r = subprocess.run(
        [sys.executable, "-c", code, str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    x = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)
    want = _oracle(w, b, x.T, "tanh").T
    assert np.abs(np.load(out) - want).max() <= 64 * np.finfo(np.float32).eps * 4


def test_cli_gelu_converts_and_verifies(tmp_path):
    _, _, chain = _model(np.float32, "NNlib.gelu")
    p = fx.save(tmp_path / "g.bson", {"model": chain})
    r = _cli("convert", p, "-o", "g.keras", "--verify", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gelu_tanh" in r.stdout
