"""The export schema documented in julia/README.md and the Python reader agree.

Every JSON block of the README's "Export format" section (an export `.json` as
`PortingKnet.export_model` writes it, or one layer object of it) is written to a temporary
directory with an `.npz` holding arrays of the sizes and element types the block gives, then
loaded through `porting.model.load_export`; every block of "Structure files" is read through
`porting.knetfile.structure.from_structure` with a tree holding arrays at the paths it names.
The loaded layers must have the kinds, names, graph inputs, keywords and the very arrays the
JSON gives. A block this reader cannot read yet (an export version newer than
`porting.model.export.VERSION`, a kind not in the layer table, a conv keyword it does not have)
must be refused with a `PortingError` saying exactly that, never read as something else, and is
then reported as an expected failure naming what is missing. An rnn layer that holds a state
array is exported (README) but refused by the converter (a state fixes the batch size); that
refusal must say so.

Also: every layer kind the Julia exporter can write (`_layer("kind", ...)` in
julia/src/export.jl) is documented in the README's kind list.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from porting.errors import PortingError
from porting.io import save_npz
from porting.model import export as mexport
from porting.model import load_export
from porting.model.kinds import KINDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "julia" / "README.md").read_text(encoding="utf-8")
EXPORT_JL = (ROOT / "julia" / "src" / "export.jl").read_text(encoding="utf-8")


def _section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    j = text.index(end, i + len(start))
    return text[i:j]


def _json_blocks(text: str) -> list:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


EXPORT_SECTION = _section(README, "## Export format", "## Structure files")
STRUCTURE_SECTION = _section(README, "## Structure files", "## Tests")
EXPORT_BLOCKS = _json_blocks(EXPORT_SECTION)
STRUCTURE_BLOCKS = _json_blocks(STRUCTURE_SECTION)
_DTYPES = {"Float32": np.float32, "Float64": np.float64}


def _as_doc(block: dict) -> dict:
    """A whole export document; a lone layer object is wrapped in one (version 2 if needed)."""
    if "format" in block:
        return block
    return {"format": "porting-knet-export", "version": 2, "layers": [block]}


def _array(key: str, size, dtype, seed: int) -> np.ndarray:
    """Deterministic values; variances (and anything named var) positive."""
    n = int(np.prod(size)) if size else 1
    a = (np.sin(np.arange(1, n + 1) * (0.7 + 0.01 * seed)) / 2).astype(dtype)
    if key.endswith("var") or key.endswith(".var"):
        a = np.abs(a) + dtype(0.5)
    return np.asfortranarray(a.reshape(tuple(size), order="F"))


def _missing_kinds(doc: dict) -> list[str]:
    return sorted({layer["kind"] for layer in doc["layers"] if layer["kind"] not in KINDS})


def _holds_state_array(doc: dict) -> bool:
    return any(
        layer["kind"] == "rnn" and "array" in (layer["rnn"]["h"], layer["rnn"]["c"])
        for layer in doc["layers"]
    )


def _load(tmp_path: Path, doc: dict, arrays: dict):
    (tmp_path / "m.json").write_text(json.dumps({**doc, "npz": "m.npz"}), encoding="utf-8")
    save_npz(tmp_path / "m.npz", arrays)
    return load_export(tmp_path / "m.json")


def _check_loaded(doc: dict, model, arrays: dict) -> None:
    assert [layer.kind for layer in model.layers] == [d["kind"] for d in doc["layers"]]
    for d, layer in zip(doc["layers"], model.layers, strict=True):
        if "name" in d:
            assert layer.name == d["name"]
        params = layer.params() if hasattr(layer, "params") else {}
        for pname, spec in (d.get("params") or {}).items():
            got = params[pname]
            want = arrays[spec["key"]]
            assert got.dtype == want.dtype, (d["name"], pname)
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{d['name']}.{pname}")
        if d["kind"] == "batchnorm":
            assert layer.eps == d.get("eps", 1e-5)
            assert layer.momentum == d.get("momentum", 0.1)
        if d["kind"] == "reshape":
            assert tuple(layer.size) == tuple(d["size"])
        if d["kind"] == "zeropad":
            want = d["padding"]
            want = tuple(tuple(q) for q in want) if isinstance(want, list) else want
            got = layer.padding
            got = (
                tuple(tuple(q) if isinstance(q, (list, tuple)) else q for q in got)
                if isinstance(got, (list, tuple))
                else got
            )
            assert got == want
        if d["kind"] in ("add", "concat"):
            assert list(layer.inputs) == d["inputs"]
        if d.get("input") is not None:
            assert model.inputs[layer.name] == d["input"]
        if d["kind"] in ("conv", "dense", "deconv", "activation", "add"):
            got_act = getattr(layer, "activation", None) or getattr(layer, "function", None)
            assert got_act == (d.get("activation") or "identity")
        for key in ("max_value", "negative_slope", "threshold"):
            if key in d:
                assert getattr(layer, key) == d[key], (d["name"], key)
        for section in ("conv", "deconv"):
            for k, v in (d.get(section) or {}).items():
                got = getattr(layer, k)
                want = tuple(v) if isinstance(v, list) else v
                assert (got if not isinstance(got, list) else tuple(got)) == want, (d["name"], k)


def test_readme_has_the_examples():
    """The sections exist and hold whole documents of every kind the exporter writes."""
    docs = [_as_doc(b) for b in EXPORT_BLOCKS]
    kinds = {layer["kind"] for doc in docs for layer in doc["layers"]}
    assert {
        "conv",
        "dense",
        "batchnorm",
        "deconv",
        "add",
        "zeropad",
        "embed",
        "reshape",
        "rnn",
    } <= kinds
    assert len(STRUCTURE_BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(EXPORT_BLOCKS)))
def test_export_example_loads(tmp_path, index):
    doc = _as_doc(EXPORT_BLOCKS[index])
    arrays = {}
    for li, layer in enumerate(doc["layers"]):
        for spec in (layer.get("params") or {}).values():
            dtype = _DTYPES[spec["eltype"]]
            arrays[spec["key"]] = _array(spec["key"], spec["size"], dtype, li)
    assert doc["version"] <= mexport.VERSION, "the README documents a version this porting lacks"
    assert not _missing_kinds(doc), "the README documents a kind the layer table lacks"
    try:
        model = _load(tmp_path, doc, arrays)
    except PortingError as e:
        if _holds_state_array(doc) and "state array" in str(e):
            return  # documented: a converted model starts from zero states (README, rnn)
        raise
    _check_loaded(doc, model, arrays)


def _structure_tree(doc: dict) -> tuple[dict, dict]:
    """A JLD2-like tree with an array at every path `doc` names; returns (tree, path -> array)."""
    tree: dict = {}
    by_path: dict[str, np.ndarray] = {}
    last_weight = None
    for li, layer in enumerate(doc["layers"]):
        params = layer.get("params") or {}
        if layer["kind"] in ("conv", "dense", "deconv"):
            last_weight = params["w"].get("size")
        for pname, spec in params.items():
            size = spec.get("size")
            if size is None and layer["kind"] == "batchnorm" and pname in ("mean", "var"):
                c = params["bnparams"]["size"][0] // 2
                assert last_weight is not None, "a batchnorm before any weight layer"
                size = [1] * (len(last_weight) - 2) + [c, 1] if len(last_weight) > 2 else [c, 1]
            assert size is not None, f"the test cannot size {spec['key']}"
            a = _array(pname, size, np.float32, li)
            by_path[spec["key"]] = a
            node = tree
            segs = spec["key"].split("/")
            for seg, nxt in zip(segs, segs[1:] + [None], strict=True):
                if nxt is None:
                    node[seg] = a
                else:
                    node = node.setdefault(seg, {})

    # Julia vectors: numeric segments become 1-based lists
    def listify(node):
        if isinstance(node, dict) and node and all(k.isdigit() for k in node):
            n = max(int(k) for k in node)
            return [listify(node.get(str(i), np.zeros(1, np.float32))) for i in range(1, n + 1)]
        if isinstance(node, dict):
            return {k: listify(v) for k, v in node.items()}
        return node

    return listify(tree), by_path


@pytest.mark.parametrize("index", range(len(STRUCTURE_BLOCKS)))
def test_structure_example_reads(tmp_path, index):
    from porting.knetfile.structure import from_structure

    doc = STRUCTURE_BLOCKS[index]
    tree, by_path = _structure_tree(doc)
    path = tmp_path / "structure.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    rec = from_structure(tree, None, path, "model.jld2")
    assert [layer.kind for layer in rec.layers] == [d["kind"] for d in doc["layers"]]
    for d, layer in zip(doc["layers"], rec.layers, strict=True):
        for pname, spec in (d.get("params") or {}).items():
            np.testing.assert_array_equal(layer.params()[pname], by_path[spec["key"]])
        if d["kind"] == "batchnorm":
            assert layer.eps == d.get("eps", 1e-5) and layer.momentum == d.get("momentum", 0.1)


def test_every_kind_the_exporter_writes_is_documented():
    written = set(re.findall(r'_layer\("([a-z]+)"', EXPORT_JL))
    assert {"conv", "dense", "batchnorm", "deconv", "add", "zeropad", "embed", "reshape"} <= written
    kind_row = next(line for line in README.splitlines() if line.startswith("| `kind` |"))
    documented = set(re.findall(r'`"([a-z]+)"`', kind_row))
    assert written <= documented, f"undocumented kinds: {sorted(written - documented)}"
