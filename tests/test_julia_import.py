"""The Julia importers of the export pair (julia/src/import.jl: `import_model`, and the Flux
extension julia/ext/PortingKnetFluxExt.jl: `flux_model`) cover what Python writes.

No Julia runs here, so these are checks on the Julia source against the Python side: every
kind, activation and JSON key that `save_export` writes for models `porting.fromkeras`
converts is one the Julia code reads. (julia/test/runtests.jl runs the importers themselves
wherever Julia is installed.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from porting.model import ACTIVATIONS

JULIA = Path(__file__).resolve().parents[1] / "julia"
IMPORT = (JULIA / "src" / "import.jl").read_text()
FLUX = (JULIA / "ext" / "PortingKnetFluxExt.jl").read_text()

KIND_TEST = re.compile(r'kind == "([a-z0-9]+)"')
NAME_TEST = re.compile(r'name == "([a-z0-9_]+)"')
# get(d, "key"...), d["key"], _keywords(d, "conv", ...), _param(d, arrays, "w", ...)
KEY_READ = re.compile(r'(?:get\(\w+, |\w+\[|_keywords\(\w+, |_param\(\w+, \w+, )"([a-z_]+)"')


def _function(source: str, name: str) -> str:
    start = source.index(f"function {name}(")
    end = source.index("\nend\n", start)
    return source[start:end]


def test_the_checkers_find_what_they_look_for():
    planted = (
        'if kind == "conv" || kind == "dense"\n name == "relu"\n get(d, "padding", 0) d["size"]'
    )
    planted += ' _keywords(d, "pool", (;)) _param(d, arrays, "bnparams", where)'
    assert KIND_TEST.findall(planted) == ["conv", "dense"]
    assert NAME_TEST.findall(planted) == ["relu"]
    assert KEY_READ.findall(planted) == ["padding", "size", "pool", "bnparams"]


def test_import_kinds_list_is_what_the_reader_handles():
    listed = set(
        re.findall(r'"([a-z0-9]+)"', IMPORT.split("const IMPORT_KINDS = (", 1)[1].split(")", 1)[0])
    )
    handled = set(KIND_TEST.findall(_function(IMPORT, "_layer_fn")))
    assert listed == handled


def test_every_activation_is_imported():
    handled = set(NAME_TEST.findall(_function(IMPORT, "_activation_fn")))
    assert set(ACTIVATIONS) <= handled


def _exports(tmp_path) -> list[dict]:
    keras = pytest.importorskip("keras")
    from porting.fromkeras import from_keras
    from porting.model import save_export
    from tests.test_fromkeras import MODELS

    docs = []
    for name, build in MODELS.items():
        save_export(from_keras(build()), tmp_path / name)
        docs.append(json.loads((tmp_path / f"{name}.json").read_text()))
    from tests.test_fromkeras_rnn import MODELS as TEXT_MODELS

    for name, build in TEXT_MODELS.items():
        save_export(from_keras(build()), tmp_path / name)
        docs.append(json.loads((tmp_path / f"{name}.json").read_text()))
    app = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=3)
    save_export(from_keras(app), tmp_path / "mobilenet")
    docs.append(json.loads((tmp_path / "mobilenet.json").read_text()))
    return docs


# keys a reader may ignore: identification and what the Python side keeps for information
IGNORED = {"name", "kind", "julia_type", "input_size", "dropout"}
# (an rnn's "rnn" object is read whole, its keys checked by RNN_KEYS: test below)


@pytest.mark.parametrize(
    "reader, source, ignored",
    [
        # import_model's layers are functions for inference: a batchnorm's momentum (training
        # only) has nowhere to go; Flux's BatchNorm keeps it
        ("import_model", IMPORT, {"momentum"}),
        ("flux_model", FLUX, set()),
    ],
)
def test_julia_readers_read_every_kind_and_key_python_writes(tmp_path, reader, source, ignored):
    kinds = set(KIND_TEST.findall(source))
    keys = set(KEY_READ.findall(source)) | set(KEY_READ.findall(IMPORT))  # helpers live there
    keywords = set(re.findall(r"\b([a-z]+)=", source)) | set(re.findall(r"\b([a-z]+)=", IMPORT))
    for doc in _exports(tmp_path):
        for layer in doc["layers"]:
            assert layer["kind"] in kinds, f"{reader}: kind {layer['kind']!r} not handled"
            for key, value in layer.items():
                if key in IGNORED | ignored or value is None:
                    continue
                assert key in keys, (
                    f"{reader}: key {key!r} of a {layer['kind']} layer is never read"
                )
                if key in ("conv", "pool", "deconv") and isinstance(value, dict):
                    # keyword entries become Knet keyword arguments by name
                    missing = set(value) - keywords - {"groups", "alpha"}
                    assert not missing, f"{reader}: {key} keywords {missing} never passed on"


def test_text_models_are_read_by_both_readers(tmp_path):
    """Keras text models (tests/test_fromkeras_rnn.py) export `embed`, `rnn` and `timedense`
    layers: both readers take every one of their kinds, and the `rnn` object's keys are the
    ones import.jl checks (`RNN_KEYS`)."""
    pytest.importorskip("keras")
    from porting.fromkeras import from_keras
    from porting.model import save_export
    from tests.test_fromkeras_rnn import MODELS as TEXT_MODELS

    imported = set(KIND_TEST.findall(_function(IMPORT, "_layer_fn")))
    flux = set(KIND_TEST.findall(_function(FLUX, "_flux_layers")))
    rnn_keys = re.findall(r'"(\w+)"', IMPORT.split("const RNN_KEYS = (", 1)[1].split(")", 1)[0])
    for name, build in TEXT_MODELS.items():
        save_export(from_keras(build()), tmp_path / name)
        layers = json.loads((tmp_path / f"{name}.json").read_text())["layers"]
        kinds = {d["kind"] for d in layers}
        assert {"embed", "rnn"} <= kinds
        assert kinds <= imported and kinds <= flux
        for d in layers:
            if d["kind"] == "rnn":
                assert sorted(d["rnn"]) == sorted(rnn_keys)


@pytest.mark.parametrize("reader, source", [("import_model", IMPORT), ("flux_model", FLUX)])
def test_julia_readers_read_the_rnn_entries_of_flux_models(tmp_path, reader, source):
    """The export of Flux recurrent models (LSTM from a trained state0, GRUv3, Dense at every
    step): every key of those entries is read, the initial-state policy "initial" is taken
    (`_rnn_initial`, shared), and `resetAfter` is looked at (Knet refuses it, Flux builds
    GRUv3)."""
    from porting.examples import flux as fx
    from porting.flux import load_model
    from porting.model import save_export

    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    m = fx.chain(
        fx.recur(fx.lstm_cell(w(12, 2), w(12, 3), w(12), (w(3, 1), w(3, 1)))),
        fx.recur(fx.gruv3_cell(w(9, 3), w(6, 3), w(9), w(3, 3), w(3, 1))),
        fx.dense(w(2, 3), w(2)),
    )
    p = fx.save(tmp_path / "m.bson", {"model": m})
    save_export(load_model(p, input_size=(5, 2)).model, tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    assert [d["kind"] for d in doc["layers"]] == ["rnn", "rnn", "timedense"]
    assert doc["layers"][1]["rnn"]["resetAfter"] is False
    keys = set(KEY_READ.findall(source)) | set(KEY_READ.findall(IMPORT))
    for layer in doc["layers"]:
        assert layer["kind"] in set(KIND_TEST.findall(source)), reader
        for key in layer:
            assert key in keys | IGNORED, f"{reader}: key {key!r} of {layer['kind']} never read"
        assert layer["kind"] != "rnn" or layer["rnn"]["h"] == "initial"
    rnn_initial = _function(IMPORT, "_rnn_initial")
    assert '"initial"' in rnn_initial and '"nothing", "zero"' in rnn_initial
    assert '"resetAfter"' in source
    assert "_rnn_initial(d, arrays" in source and "repeat(h0, 1, B, 1)" in IMPORT
