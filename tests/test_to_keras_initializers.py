"""`to_keras` builds the Keras layers whose every weight it then sets with zeros in place of
their random initialisers (porting.model.stages.KerasContext.placeholder_init: drawing values
only to overwrite them is ResNet50's largest cost in building) and gives the layers their own
initialisers back before anyone sees the model. Checked here against the layers built the plain
way, with their own initialisers from the start: the saved `.keras` configs are identical (the
file Keras writes, byte for byte as JSON), and so are the weights; and the placeholder build
draws no random numbers for those layers."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import porting.model as pm
from porting.model import to_keras
from porting.model.convert import save_keras
from porting.model.kinds import KINDS
from porting.model.stages import KerasContext

FILLED = [k for k in KINDS.values() if k.weights is not None]


def _saved_config(tmp_path, model, dtype, placeholder: bool, monkeypatch, calls: list[int]):
    import keras

    monkeypatch.setattr(KerasContext, "placeholder_init", placeholder)
    drawn = 0
    own_call = keras.initializers.GlorotUniform.__call__

    def counting(self, *args, **kwargs):
        nonlocal drawn
        drawn += 1
        return own_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__", counting)
    km = to_keras(model, dtype=dtype)
    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__", own_call)
    calls.append(drawn)
    path = save_keras(km, tmp_path / f"m_{placeholder}.keras")  # as the CLI saves
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    return config, [w for lay in km.layers for w in lay.get_weights()]


@pytest.mark.parametrize("kind", FILLED, ids=[k.name for k in FILLED])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_placeholder_initialisers_leave_the_saved_config_and_weights_unchanged(
    kind, dtype, tmp_path, monkeypatch
):
    assert kind.example is not None
    layers, size = kind.example()
    model = pm.KnetModel(layers, input_size=size, name=f"example_{kind.name}")
    calls: list[int] = []
    plain, w_plain = _saved_config(tmp_path, model, dtype, False, monkeypatch, calls)
    quick, w_quick = _saved_config(tmp_path, model, dtype, True, monkeypatch, calls)
    assert quick == plain
    assert len(w_quick) == len(w_plain)
    for a, b in zip(w_quick, w_plain, strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    # the layers' own initialisers are in the file (not the placeholder zeros) ...
    text = json.dumps(quick)
    if kind.name in ("conv", "dense", "deconv", "linear", "timedense"):
        assert '"GlorotUniform"' in text
        # ... and were not drawn from in the placeholder build
        assert calls[0] > 0
        assert calls[1] == 0
