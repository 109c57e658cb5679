"""porting.activations: the one table of Knet's activations, checked row by row.

Every row must have an independent PyTorch float64 reference written here (from Knet's
definitions, ops20/activation.jl and Ops21: a new row without one fails
`test_every_row_has_a_reference`), agree with it, and carry an `S` rule under which its own
float32 result passes porting.compare against that reference; its Keras built-in must compute
the same function.
"""

from __future__ import annotations

import numpy as np
import pytest

from porting import activations
from porting.activations import ACTIVATIONS, TABLE, canonical, get
from porting.comparison import compare
from porting.errors import PortingError

torch = pytest.importorskip("torch", reason="the independent reference is written in PyTorch")
F = torch.nn.functional

# Knet's definitions, written with PyTorch (float64); `d` is the Julia dimension (1-based) of a
# (features, N) array, i.e. torch dim d - 1.
REFERENCES = {
    "identity": lambda t, d: t,
    "relu": lambda t, d: torch.clamp(t, min=0),
    "sigm": lambda t, d: torch.sigmoid(t),
    "tanh": lambda t, d: torch.tanh(t),
    "elu": lambda t, d: torch.where(t >= 0, t, torch.expm1(t)),  # Knet's elu: alpha 1
    "selu": lambda t, d: F.selu(t),  # torch's two constants are Knet's λ01, α01
    "gelu": lambda t, d: F.gelu(t),  # exact (erf), Ops21's and NNlib's gelu_erf
    # NNlib's gelu (every release; gelu_tanh from v0.9.28): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
    "gelu_tanh": lambda t, d: F.gelu(t, approximate="tanh"),
    "swish": lambda t, d: t * torch.sigmoid(t),
    "hardsigmoid": lambda t, d: torch.clamp((t + 3) / 6, 0, 1),
    "hardswish": lambda t, d: torch.where(t <= -3, 0 * t, torch.where(t >= 3, t, t * (t + 3) / 6)),
    "softmax": lambda t, d: torch.softmax(t, dim=d - 1),
    "logsoftmax": lambda t, d: torch.log_softmax(t, dim=d - 1),
}


def _x(dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)) * 4
    x[0, :3] = [-3.0, 3.0, 0.0]  # the corners of the piecewise definitions
    return x.astype(dtype)


def test_every_row_has_a_reference():
    assert set(REFERENCES) == set(ACTIVATIONS)
    assert len(ACTIVATIONS) == len(TABLE) == len(set(ACTIVATIONS))


def test_names_and_aliases_resolve_to_their_row():
    for row in TABLE:
        assert get(row.name) is row
        for spelling in (row.name, *row.aliases, f"Knet.{row.name}", row.name.upper()):
            assert canonical(spelling, "layer1") == row.name
    assert canonical(None, "a") == "identity"
    aliases = [a for row in TABLE for a in row.aliases]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(ACTIVATIONS)
    with pytest.raises(PortingError, match=r"dense1: unknown activation 'mish'; expected one of"):
        canonical("mish", "dense1")
    with pytest.raises(PortingError, match=r"activation=3: expected a name"):
        canonical(3, "a1")


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_is_knets_function_and_its_S_rule_covers_its_rounding(name, dtype):
    row = get(name)
    x = _x(dtype)
    dims = 1
    y = row.forward(x, dims)
    assert y.dtype == x.dtype and y.shape == x.shape
    expected = REFERENCES[name](torch.from_numpy(x.astype(np.float64)), dims).numpy()
    s = row.magnitude(np.abs(x).astype(np.float64), y.astype(np.float64), dims)
    assert s.shape == x.shape and np.all(s >= 0)
    c = compare(expected, y, k=1, magnitude=s)
    assert c.ok, (name, c.max_error_to_tolerance)
    if row.nonnegative:
        assert np.all(y >= 0)
    if row.passes_magnitude:
        assert row.magnitude(x, y, dims) is x


def test_only_normalising_rows_read_dims():
    x = _x(np.float64)
    for row in TABLE:
        by_features, by_samples = row.forward(x, 1), row.forward(x.T.copy(), 2).T
        np.testing.assert_array_equal(by_features, by_samples)
        if row.elementwise:
            np.testing.assert_array_equal(row.forward(x, 2), by_features)


def test_intermediate_magnitudes_are_elus_and_selus_exp():
    z = np.float64([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(get("elu").intermediate(z), np.exp([-2.0, 0.0, 0.0]))
    np.testing.assert_array_equal(get("selu").intermediate(z), 1.76 * np.exp([-2.0, 0.0, 0.0]))
    assert not get("relu").intermediate(z).any()


def test_keras_builtins_compute_the_same_function():
    keras = pytest.importorskip("keras", reason="Keras computes the built-in side")
    x = _x(np.float32)
    for row in TABLE:
        k = row.keras
        if k.composite is not None:
            layer = _composite(keras, k.composite)
        elif k.layer == "Activation":
            layer = keras.layers.Activation(k.activation, dtype="float32")
        elif k.axis == "keyword":
            layer = getattr(keras.layers, k.layer)(axis=-1, dtype="float32")
        else:
            layer = getattr(keras.layers, k.layer)(dtype="float32")
        # Keras works on (N, features): the Julia (features, N) array transposed, dims=1 last
        got = np.asarray(layer(x.T.copy())).T
        expected = REFERENCES[row.name](torch.from_numpy(x.astype(np.float64)), 1).numpy()
        s = row.magnitude(np.abs(x).astype(np.float64), got.astype(np.float64), 1)
        assert compare(expected, got, k=1, magnitude=s).ok, row.name


def _composite(keras, name):
    """A Keras model of the built-in layers porting.model.stages composes for `name`."""
    from porting.model.stages import KerasContext, build_gelu_tanh

    assert name == "gelu_tanh"
    ctx = KerasContext(keras, "float32", "reverse")
    ctx.start("act")
    t = keras.Input((7,), dtype="float32")  # x.T: (N, features)
    return keras.Model(t, build_gelu_tanh(ctx, "", t))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_tanh_is_not_the_exact_gelu(dtype):
    """The two gelus differ by up to about 1e-3 near |x| = 2: a mix-up cannot hide inside the
    tolerance, in either element type."""
    x = np.linspace(-5, 5, 201).astype(dtype)
    t = torch.from_numpy(x.astype(np.float64))
    tanh_form, erf_form = get("gelu_tanh").forward(x, 1), get("gelu").forward(x, 1)
    want_tanh = F.gelu(t, approximate="tanh").numpy()
    want_erf = F.gelu(t, approximate="none").numpy()
    eps = float(np.finfo(dtype).eps)
    assert np.abs(tanh_form - want_tanh).max() <= 16 * eps * 5
    assert np.abs(erf_form - want_erf).max() <= 16 * eps * 5
    assert np.abs(want_tanh - want_erf).max() > 1e-4
    assert get("NNlib.gelu_erf").name == "gelu" and get("gelu_sigmoid").name == "gelu_tanh"


def test_activate_refuses_an_unknown_name():
    with pytest.raises(PortingError, match="unknown activation 'sigmoid'"):
        activations.activate("sigmoid", _x())  # activate takes porting's names only
