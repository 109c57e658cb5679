"""The contract every row of the layer table (`porting.model.kinds.KINDS`) keeps.

Each kind's row carries a small example (`Kind.example`); for every row this builds it, converts
it to Keras, verifies it in both modes, round-trips the export and reloads the saved `.keras`
in a process without porting. These are consistency checks (the port against the Knet side,
the file against the model it was written from, the reloaded Keras model against the one
saved); agreement of each kind's Knet side with Knet is checked elsewhere, against independent
implementations (tests/test_model_*.py). Also: every Keras layer a kind builds is declared in
its row (the verification's fast paths come from those declarations), the public names of
`porting.model` are the table's classes, and the README, `porting.model.convert` and
`porting.model.export` tables say what the rows say.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import porting.model as pm
from porting.model import convert, export, forward_knet, load_export, save_export
from porting.model.kinds import KINDS, kind_of
from porting.model.layer import Kind, Layer

ROOT = Path(__file__).resolve().parents[1]
ROWS = list(KINDS.values())
IDS = [k.name for k in ROWS]


def _example_model(kind: Kind) -> pm.KnetModel:
    assert kind.example is not None, (
        f"kind {kind.name!r}: its row has no example (Kind.example), which the contract test needs"
    )
    layers, size = kind.example()
    assert any(la.kind == kind.name for la in layers), f"{kind.name}: example lacks the kind"
    return pm.KnetModel(layers, input_size=size, name=f"example_{kind.name}")


@pytest.mark.parametrize("kind", ROWS, ids=IDS)
def test_every_row_declares_what_the_rest_is_derived_from(kind):
    assert isinstance(kind.layer, type) and issubclass(kind.layer, Layer)
    assert kind.layer.kind == kind.name
    assert kind.example is not None, f"{kind.name}: no example"
    assert kind.knet and kind.keras and kind.schema, f"{kind.name}: a prose field is empty"
    assert kind.keras_layers, f"{kind.name}: declares no Keras layer"
    assert "|" not in kind.knet + kind.keras  # table cells


def test_a_keras_class_is_declared_alike_by_every_kind_that_builds_it():
    seen: dict[str, tuple] = {}
    for kind in ROWS:
        for kl in kind.keras_layers:
            got = (kl.per_sample, None if kl.direct is None else dict(kl.direct))
            assert seen.setdefault(kl.name, got) == got, f"{kl.name}: declared two ways"


def test_the_verification_fast_call_is_the_declared_one():
    from porting.model import keras_side

    declared = {
        kl.name: dict(kl.direct) for k in ROWS for kl in k.keras_layers if kl.direct is not None
    }
    assert keras_side._direct_calls() == declared
    # BatchNormalization is called for inference; the others take no arguments
    assert declared["BatchNormalization"] == {"training": False}
    assert {"Conv2D", "Dense", "Add", "Flatten", "MaxPooling2D"} <= set(declared)


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras", reason="the contract converts to Keras")


@pytest.mark.parametrize("kind", ROWS, ids=IDS)
def test_every_kind_builds_converts_verifies_and_round_trips(kind, keras, tmp_path):
    model = _example_model(kind)
    km = convert.to_keras(model)

    # every Keras layer built for a Knet layer is declared by that layer's row
    names = {str(la.name): la for la in model.layers}
    for lay in km.layers:
        if type(lay).__name__ == "InputLayer":
            continue
        owner = names[lay.name.split("__")[0]]
        declared = {kl.name for kl in kind_of(owner).keras_layers}
        assert type(lay).__name__ in declared, (
            f"{owner.label} builds a Keras {type(lay).__name__}, which its row's keras_layers "
            f"does not declare ({sorted(declared)})"
        )

    for mode in ("each", "whole"):
        report = pm.verify_model(model, keras_model=km, mode=mode)
        assert report.ok, f"{kind.name} {mode}:\n{report}"
        assert [r.kind for r in report.rows] == [la.kind for la in model.layers]

    save_export(model, tmp_path / "m")
    back = load_export(tmp_path / "m")
    assert back.input_size == model.input_size
    assert [(la.kind, la.name) for la in back.layers] == [(la.kind, la.name) for la in model.layers]
    for a, b in zip(model.layers, back.layers, strict=True):
        pa, pb = a.params(), b.params()
        assert pa.keys() == pb.keys()
        for key in pa:
            assert pa[key].dtype == pb[key].dtype
            np.testing.assert_array_equal(pa[key], pb[key])
        assert KINDS[a.kind].to_json(a) == KINDS[b.kind].to_json(b)
        assert getattr(a, "input_from", None) == getattr(b, "input_from", None)
    x = _input(model)
    for ya, yb in zip(forward_knet(model, x), forward_knet(back, x), strict=True):
        np.testing.assert_array_equal(ya, yb)


def _input(model):
    from porting.model.verify import default_input

    return default_input(model)


def test_every_kinds_saved_keras_file_loads_without_porting(keras, tmp_path):
    expected = {}
    for kind in ROWS:
        model = _example_model(kind)
        km = convert.to_keras(model)
        convert.save_keras(km, tmp_path / f"{kind.name}.keras")
        x = _input(model)
        if x.dtype.kind in "iu":  # token indices, (T, B): Keras takes (B, T), 0-based
            x_tf = np.ascontiguousarray(x.T - 1).astype(np.int32)
        else:
            x_tf = convert.julia_to_tf(x, None, "reverse")
        np.save(tmp_path / f"{kind.name}_x.npy", x_tf)
        expected[kind.name] = np.asarray(km(x_tf))
    script = textwrap.dedent(
        f"""
        import os, sys, numpy as np
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.modules["porting"] = None  # importing porting would fail
        import keras
        d = {str(tmp_path)!r}
        for name in {list(expected)!r}:
            km = keras.saving.load_model(os.path.join(d, name + ".keras"))
            x = np.load(os.path.join(d, name + "_x.npy"))
            np.save(os.path.join(d, name + "_y.npy"), np.asarray(km(x)))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name, y in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}_y.npy"), y, err_msg=name)


# ------------------------------------------------------------------ names and prose tables


def test_the_public_layer_names_are_the_tables_classes():
    from porting.model import kinds, spec

    classes = {k.layer.__name__: k.layer for k in ROWS}
    assert sorted(kinds.__all__) == sorted(classes)  # the literal list type checkers read
    for module in (pm, spec):
        for name, cls in classes.items():
            assert getattr(module, name) is cls
            assert name in module.__all__, f"{module.__name__}.__all__ lacks {name}"
    layerish = {
        n
        for n in pm.__all__
        if isinstance(getattr(pm, n), type) and issubclass(getattr(pm, n), Layer)
    }
    assert layerish == set(classes)


def test_the_readme_kind_table_is_the_tables():
    from porting.model.kinds import keras_table

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    start = lines.index("| Knet (porting.model) | Keras 3 |") + 2
    assert lines[start - 1] == "| --- | --- |"
    rows = keras_table().splitlines()
    assert lines[start : start + len(rows)] == rows, (
        "README.md's Knet -> Keras table is not the table's; its kind rows should read:\n"
        + keras_table()
    )
    after = lines[start + len(rows)]  # then the activations, no other kind
    assert not after.startswith(tuple(f"| `{k.layer.__name__}`" for k in ROWS)), after


def test_the_convert_and_export_docstrings_show_the_tables():
    from porting.model.kinds import keras_table, schema_list

    assert keras_table() in (convert.__doc__ or "")
    assert schema_list() in (export.__doc__ or "")
    assert "<one " not in (convert.__doc__ or "") + (export.__doc__ or "")
    assert len(keras_table().splitlines()) == len(ROWS)
    items = re.split(r"\n(?=- )", schema_list())
    got = [" ".join(line.strip() for line in item.splitlines()) for item in items]
    assert got == [f"- {k.name}: {k.schema}" for k in ROWS]
