"""A structure file: the model export's JSON, with weights pointing into the JLD2 file.

A file holding only arrays (the weights of a functional model, `predict(w, x)`) does not say
how they are used. The structure file says it, in the format of the export JSON that
`PortingKnet.export_model` writes (julia/README.md), except that each weight's ``"key"`` is a
path into the JLD2 file (from its top level, or from ``--key`` when given), items numbered
from 1 as in Julia:

    {"format": "porting-knet-export", "version": 1, "input_size": [28, 28, 1],
     "layers": [
       {"kind": "conv", "params": {"w": {"key": "wcnn/1"}, "b": {"key": "wcnn/2"}},
        "activation": "relu", "conv": {"padding": 0, "stride": 1, "mode": 0},
        "pool": {"window": 2}, "order": "activation-pool"},
       {"kind": "conv", "params": {"w": {"key": "wcnn/3"}, "b": {"key": "wcnn/4"}},
        "activation": "relu", "pool": {"window": 2}, "order": "activation-pool"},
       {"kind": "dense", "params": {"w": {"key": "wcnn/5"}, "b": {"key": "wcnn/6"}},
        "activation": "relu"},
       {"kind": "dense", "params": {"w": {"key": "wcnn/7"}, "b": {"key": "wcnn/8"}}}]}

``"size"`` and ``"eltype"`` may be given as in the export and are then checked. A weight may
point at a plain array, a `Param` or a Knet array the file holds. Keywords a layer does not
give take Knet's defaults, and the conversion report says so per layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from porting.errors import PortingError
from porting.knetfile import arrays
from porting.knetfile.recognise import DEFAULT, STRUCTURE, LayerReport, Recognised, Setting
from porting.knetfile.tree import select

__all__ = ["read_structure", "from_structure"]

_FORMAT = "porting-knet-export"
_MAX_BYTES = 16 * 1024 * 1024


def read_structure(path: str | os.PathLike) -> dict:
    """The structure file's JSON object, checked for its format, version and layers."""
    p = Path(os.fspath(path))
    if p.is_dir():
        raise PortingError(f"--structure {p} is a directory; expected a JSON file")
    if not p.is_file():
        raise PortingError(f"--structure {p}: no such file; expected a JSON structure file")
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise PortingError(f"--structure {p}: larger than 16 MiB; expected a small JSON file")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PortingError(f"--structure {p}: cannot read as JSON ({e})") from None
    if not isinstance(doc, dict):
        raise PortingError(
            f"--structure {p}: expected a JSON object with 'format' and 'layers', got "
            f"{type(doc).__name__}"
        )
    version = doc.get("version")
    if doc.get("format") != _FORMAT or isinstance(version, bool) or version not in (1, 2):
        raise PortingError(
            f"--structure {p}: format {doc.get('format')!r} version {doc.get('version')!r}; "
            f'expected "format": "{_FORMAT}", "version": 1 or 2 (the export JSON format)'
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
        raise PortingError(f"--structure {p}: 'layers' must be a non-empty list of objects")
    return doc


def _where(i: int, d: dict) -> str:
    name = d.get("name")
    return f"layer {i}" + (f" ({name!r})" if isinstance(name, str) else "")


def from_structure(
    tree: Any, key: str | None, structure: str | os.PathLike, source: str
) -> Recognised:
    """Build the model the structure file describes from the arrays in `tree` (the file read by
    `porting.knetfile.tree.read`; `key` the ``--key`` the paths are relative to)."""
    doc = read_structure(structure)
    sname = Path(os.fspath(structure)).name
    base = select(tree, key, source) if key else tree
    npz: dict[str, Any] = {}
    layers_json = []
    reports = []
    for i, d in enumerate(doc["layers"], 1):
        where = f"{sname}: {_where(i, d)}"
        d = dict(d)
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise PortingError(f"{where}: 'params' = {params!r}; expected an object")
        new_params: dict[str, Any] = {}
        notes = []
        for pname, spec in params.items():
            if spec is None:
                new_params[pname] = None
                continue
            if not isinstance(spec, dict) or not isinstance(spec.get("key"), str):
                raise PortingError(
                    f'{where}: params.{pname} = {spec!r:.80}; expected {{"key": "path/in/file"}}'
                )
            path = spec["key"]
            try:
                node = select(base, path, source)
            except PortingError as e:
                raise PortingError(
                    f"{where}: params.{pname} names {path!r}, which is not in {source}: "
                    f"{str(e).split(': ', 1)[-1]}"
                ) from None
            full = f"{key.strip('/')}/{path}" if key else path
            w = arrays.weight(node, full)
            npz[full] = w.array
            eltype = {"float32": "Float32", "float64": "Float64"}.get(str(w.array.dtype))
            found = {"size": list(w.array.shape), **({"eltype": eltype} if eltype else {})}
            new_params[pname] = {**found, **spec, "key": full}  # given size/eltype are checked
            notes.append(f"{pname} {tuple(w.array.shape)} from {full} ({w.stored_as})")
        d["params"] = new_params
        layers_json.append(d)
        reports.append(
            LayerReport(
                str(d.get("kind")),
                f"{sname} layer {i}",
                "structure file layer",
                _settings(d),
                notes,
            )
        )
    model_doc = {k: v for k, v in doc.items() if k not in ("layers", "npz")}
    model_doc["layers"] = layers_json
    model = _build(model_doc, npz, sname, source)
    what = f"{len(model.layers)} layers described by {sname}"
    rec = Recognised(list(model.layers), reports, what)
    rec.input_size = model.input_size
    return rec


def _given(d: dict, key: str, default: Any) -> Setting:
    if d.get(key) is not None:
        return Setting(key, d[key], STRUCTURE)
    return Setting(key, default, DEFAULT, "the structure file gives none")


def _conv_settings(d: dict) -> list[Setting]:
    raw = d.get("conv")
    conv: dict = raw if isinstance(raw, dict) else {}
    out = [_given(conv, name, default) for name, default in _CONV_DEFAULTS]
    out.append(_given(d, "pool", None))
    order = d.get("order")
    out.append(Setting("order", order or "pool-activation", STRUCTURE if order else DEFAULT))
    return out


_CONV_DEFAULTS = (("padding", 0), ("stride", 1), ("dilation", 1), ("mode", 0))

# What the conversion report lists for a structure-file layer, by its kind (the activation
# first, for the kinds that have one; other kinds: nothing).
_ACTIVATED = ("conv", "dense", "activation")
_SETTINGS: dict[str, Callable[[dict], list[Setting]]] = {
    "conv": _conv_settings,
    "pool": lambda d: [Setting("pool", d.get("pool") or {}, STRUCTURE)],
}


def _settings(d: dict) -> list[Setting]:
    kind = d.get("kind")
    out = [_given(d, "activation", "identity")] if kind in _ACTIVATED else []
    more = _SETTINGS.get(kind) if isinstance(kind, str) else None
    return out + (more(d) if more is not None else [])


def _build(doc: dict, arrays: dict, sname: str, source: str):
    """The model `doc` describes, its weights `arrays` (by their paths in `source`)."""
    from porting.model import model_from_doc

    if not arrays:
        raise PortingError(f"{sname}: no layer names a weight in {source}")
    try:
        return model_from_doc(doc, arrays, where=sname, arrays_name=source, default_name="model")
    except PortingError as e:
        raise PortingError(f"{sname}: {e}") from None
