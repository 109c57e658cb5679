"""Read and write the Knet model export: `<prefix>.npz` (weights) + `<prefix>.json` (structure).

This is the pair `PortingKnet.export_model(prefix, model)` writes on the Julia side (schema in
julia/README.md). The `.npz` holds each weight as NPZ.jl writes it: Fortran-ordered, shape =
Julia's `size()`. The `.json`:

    {"format": "porting-knet-export", "version": 1,
     "input_size": [28, 28, 1],                       (optional: one sample, batch left out)
     "layers": [
       {"name": "conv1", "kind": "conv",
        "params": {"w": {"key": "conv1.w", "size": [5, 5, 1, 20], "eltype": "Float32"},
                   "b": {"key": "conv1.b", "size": [1, 1, 20, 1], "eltype": "Float32"}},
        "activation": "relu",
        "conv": {"padding": 0, "stride": 1, "dilation": 1, "mode": 0},
        "pool": {"window": 2, "padding": 0, "stride": 2, "mode": 0},
        "dropout": 0.0},
       {"name": "mat1", "kind": "mat"}, ...]}

Kinds (each kind's row in porting.model.kinds.KINDS says its keys, `Kind.schema`,
put into this docstring at import):

<one item per kind: porting.model.kinds.schema_list()>

Any layer may name the layer it reads in "input" (default: the one before it; "input" is the
model's input). Keywords are integers or lists (one per spatial dimension, Julia order). A conv
layer's "order" is "pool-activation" (Knet's tutorial `Conv`, the default) or "activation-pool"
(Knet's `lenet.jl`). Keys the Julia side adds for information (`julia_version`, `julia_type`, ...) are ignored, null values mean "not set",
and `"npz"` names the arrays file when present. "input_size" is porting's own optional addition
(the Julia exporter cannot know it): without it, give the input (`--input`) when converting.
Every problem raises `PortingError` naming the file, the layer and what was expected.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import porting.model.schema as schema
from porting import files
from porting.errors import PortingError
from porting.model.kinds import KINDS, schema_list
from porting.model.planning import check_model
from porting.model.spec import KnetModel

__doc__ = (__doc__ or "").replace(
    "<one item per kind: porting.model.kinds.schema_list()>", schema_list()
)

__all__ = [
    "load_export",
    "save_export",
    "stage_export",
    "StagedExport",
    "export_paths",
    "model_from_doc",
    "FORMAT",
    "VERSION",
]

FORMAT = "porting-knet-export"
# 2: the kinds batchnorm, deconv, reshape, zeropad, rnn, embed, timedense, add, concat and the
# graph keys "inputs" / "input" (a version-1 reader would ignore "input" and silently build a
# chain). Version-1 files (the shipped LeNet, older Julia exports) load unchanged.
VERSION = 2
_MAX_JSON_BYTES = 64 * 2**20  # an export of 1000 layers is under 1 MB
_ELTYPES = {"Float32": np.dtype(np.float32), "Float64": np.dtype(np.float64)}


def export_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """`prefix`, `prefix.json` or `prefix.npz` -> (`prefix.json`, `prefix.npz`)."""
    expected = "a model export: a prefix, <prefix>.json or <prefix>.npz"
    p = files.as_path(path, "model", expected)
    try:
        is_dir = p.is_dir()
    except OSError:
        is_dir = False  # reported by the reader, which names the problem
    if is_dir:
        raise PortingError(f"{p} is a directory; expected {expected}")
    if p.suffix in (".json", ".npz"):
        stem = p.with_suffix("")
    else:
        stem = p
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def _read_json(path: Path) -> dict[str, Any]:
    path = files.input_file(path, "the model export's .json (structure)")
    size = path.stat().st_size
    if size > _MAX_JSON_BYTES:
        raise PortingError(
            f"{path}: {size} bytes; expected the model export's .json (structure), at most "
            f"{_MAX_JSON_BYTES} bytes"
        )
    try:
        with files.open_input(path) as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PortingError(f"{path}: not UTF-8 text ({e}); expected JSON") from None
    except OSError as e:
        raise PortingError(f"{path}: cannot read ({e.strerror or e})") from None
    doc = files.loads_json(text, str(path))
    if not isinstance(doc, dict):
        raise PortingError(
            f"{path}: expected a JSON object with 'format' and 'layers', got {type(doc).__name__}"
        )
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise PortingError(
            f"{path}: format {fmt!r}; expected {FORMAT!r} (written by PortingKnet.export_model)"
        )
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PortingError(f"{path}: version {version!r}; expected an integer >= 1")
    if version > VERSION:
        raise PortingError(
            f"{path}: export version {version} is newer than this porting reads ({VERSION}); "
            "upgrade porting"
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise PortingError(f"{path}: 'layers' must be a non-empty list of layer objects")
    return doc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    path = files.input_file(path, "the model export's .npz (weights)")
    from porting import io

    arrays = io.load(path, format="npz")
    return {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}


def _param(
    spec: Any, what: str, where: str, arrays: dict[str, np.ndarray], npz: str, npz_short: str
) -> np.ndarray | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or "key" not in spec:
        raise PortingError(
            f"{where}: params.{what} = {spec!r}; expected {{'key', 'size', 'eltype'}}"[:300]
        )
    key = schema.text(spec["key"], f"params.{what}.key", where)
    if key not in arrays:
        have = ", ".join(sorted(arrays)[:8]) + (" ..." if len(arrays) > 8 else "")
        raise PortingError(
            f"{where}: {what} is {key!r} in the .json but {npz} has no such array (it has {have})"
        )
    a = arrays[key]
    size = spec.get("size")
    if size is not None:
        if not isinstance(size, list):
            raise PortingError(
                f"{where}: params.{what}.size = {size!r}: expected a list of integers"[:300]
            )
        size = tuple(schema.integer(s, f"params.{what}.size", where) for s in size)
        if tuple(a.shape) != size:
            hint = ""
            if tuple(a.shape) == size[::-1] and len(size) > 1:
                hint = (
                    " (the dims are reversed: the array was written in C order; NPZ.jl writes "
                    "Julia arrays Fortran-ordered with Julia's size)"
                )
            raise PortingError(
                f"{where}: {what} ({key!r}) has shape {tuple(a.shape)} in {npz_short} but the .json "
                f"says Julia size {size}{hint}"
            )
    eltype = spec.get("eltype")
    if eltype is not None:
        want = _ELTYPES.get(eltype) if isinstance(eltype, str) else None
        if want is None:
            raise PortingError(
                f"{where}: params.{what}.eltype {eltype!r}; expected Float32 or Float64"[:300]
            )
        if a.dtype != want:
            raise PortingError(
                f"{where}: {what} ({key!r}) is {a.dtype} in {npz_short} but the .json says {eltype}"
            )
    return a


def _layer_from_json(
    i: int, d: Any, arrays: dict[str, np.ndarray], npz: str, npz_short: str
) -> Any:
    if not isinstance(d, dict):
        raise PortingError(f"layer {i + 1}: expected a JSON object, got {d!r}"[:200])
    name = d.get("name")
    kind = d.get("kind")
    where = f"layer {i + 1}" + (f" ({name!r})" if name else "")
    if name is not None:
        schema.text(name, "name", where)
    if not isinstance(kind, str) or kind not in KINDS:
        raise PortingError(
            f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"[:300]
        )
    params = d.get("params") or {}
    if not isinstance(params, dict):
        raise PortingError(f"{where}: 'params' = {params!r}; expected an object"[:300])
    where = f"{kind} layer {name!r}" if name else f"{kind} layer {i + 1}"
    for key in ("activation", "order"):
        if d.get(key) is not None:
            schema.text(d[key], key, where)

    def param(what: str) -> np.ndarray | None:
        return _param(params.get(what), what, where, arrays, npz, npz_short)

    return KINDS[kind].from_json(d, where, param)


def load_export(path: str | os.PathLike[str]) -> KnetModel:
    """Load a Knet model from its export pair; `path` is the prefix, the .json or the .npz.

    Weights come back Julia-indexed (as `porting.io.load` reads NPZ.jl files) and are checked
    against the sizes and element types the .json records. Values have strict types (an
    integer is an integer, never a boolean, a string or 2.0; numbers are finite); an error
    names the layer and the key.
    """
    json_path, npz_path = export_paths(path)
    doc = _read_json(json_path)
    npz_name = doc.get("npz")
    if npz_name is not None:
        schema.text(npz_name, "npz", str(json_path))
    if isinstance(npz_name, str) and npz_name and Path(os.fspath(path)).suffix != ".npz":
        npz_path = json_path.parent / Path(npz_name).name  # the .json names its arrays file
    if doc.get("input_size") is not None:  # the .json's own errors before the .npz is read
        schema.size(doc["input_size"], "input_size", str(json_path))
    if doc.get("name") is not None:
        schema.text(doc["name"], "name", str(json_path))
    model = model_from_doc(
        doc,
        _read_npz(npz_path),
        where=str(json_path),
        arrays_name=str(npz_path),
        arrays_short=npz_path.name,
        default_name=json_path.stem,
    )
    model.source = str(json_path.with_suffix(""))
    return model


def model_from_doc(
    doc: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    where: str,
    arrays_name: str,
    arrays_short: str | None = None,
    default_name: str = "knet_model",
) -> KnetModel:
    """The model an export document describes (its "layers", "input_size", "name"), with each
    weight's "key" looked up in `arrays`; `where` names the document and `arrays_name` the
    arrays in errors (`arrays_short`: its short name, default `arrays_name`). `load_export` reads both from disk; `porting.knetfile.structure` builds
    them from a JLD2 file."""
    input_size = doc.get("input_size")
    if input_size is not None:
        input_size = schema.size(input_size, "input_size", where)
    name = doc.get("name")
    if name is not None:
        schema.text(name, "name", where)
    short = arrays_name if arrays_short is None else arrays_short
    layers = [
        _layer_from_json(i, d, arrays, arrays_name, short) for i, d in enumerate(doc["layers"])
    ]
    inputs: dict[str, str] = {}
    for i, d in enumerate(doc["layers"]):
        if d.get("input") is not None:
            lwhere = f"layer {i + 1} ({layers[i].name!r})"
            inputs[str(layers[i].name)] = schema.text(d["input"], "input", lwhere)
    if input_size is None:
        input_size = layers[0].fixed_input_size()  # a dense-first model's input is fixed
    return KnetModel(
        layers, input_size=input_size, name=str(name or default_name), inputs=inputs or None
    )


def _layer_to_json(layer: Any, keys: dict[str, np.ndarray]) -> dict[str, Any]:
    d: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "params": {}}
    for pname, arr in layer.params().items():
        key = f"{layer.name}.{pname}"
        keys[key] = arr
        d["params"][pname] = {
            "key": key,
            "size": list(arr.shape),
            "eltype": "Float32" if arr.dtype == np.float32 else "Float64",
        }
    d.update(KINDS[layer.kind].to_json(layer))
    if getattr(layer, "input_from", None) is not None:
        d["input"] = layer.input_from
    if not d["params"]:
        del d["params"]
    return d


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str) -> Iterator[Path]:
    """Yield a temporary path in `target`'s directory (ending in `suffix`); on success it
    replaces `target` under `porting.files.atomic_write`'s rule (fsync, permission bits of the
    replaced file kept, stale temporaries of killed runs swept); on any failure it is removed,
    so `target` is never left half-written.

    The temporary file is not created here (the writer creates it).
    """
    with files.atomic_write(target, suffix=suffix) as tmp:
        yield tmp


def _dumps(doc: dict[str, Any]) -> str:
    """JSON with one layer per line (readable, diff-friendly)."""
    head = {k: v for k, v in doc.items() if k != "layers"}
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append('  "layers": [')
    layers = [f"    {json.dumps(layer)}" for layer in doc["layers"]]
    lines.append(",\n".join(layers))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


class StagedExport:
    """`save_export`'s pair, its `.npz` written (and flushed to disk) under a temporary name
    as soon as `stage_export` makes it, on a background thread when asked: `commit()` puts
    both files in place (the `.npz`, then the `.json`) and returns their paths, `discard()`
    leaves nothing behind. Either waits for the writer, and `commit` raises what it raised."""

    def __init__(
        self,
        json_path: Path,
        npz_path: Path,
        doc: dict[str, Any],
        keys: dict[str, np.ndarray],
        background: bool,
    ) -> None:
        self.json_path, self.npz_path, self._doc = json_path, npz_path, doc
        self._npz = files.StagedFile(npz_path, ".npz")
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._write, args=(keys,), name="porting-export", daemon=True
            )
            self._thread.start()
        else:
            self._write(keys)

    def _write(self, keys: dict[str, np.ndarray]) -> None:
        try:
            with open(self._npz.path, "wb") as f:
                np.savez(f, **{k: np.asfortranarray(v) for k, v in keys.items()})  # type: ignore[arg-type]
            self._npz.sync()  # the disk's wait, on this thread
        except BaseException as e:  # handed to commit(), which raises it
            self._error = e

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def commit(self) -> tuple[str, str]:
        """Put the pair in place; returns (json path, npz path)."""
        try:
            self._wait()
            if self._error is not None:
                raise self._error
        except BaseException:
            self._npz.discard()
            raise
        self._npz.commit()
        with atomic_path(self.json_path, ".json") as tmp:
            tmp.write_text(_dumps(self._doc), encoding="utf-8")
        return str(self.json_path), str(self.npz_path)

    def discard(self) -> None:
        """Write nothing: the `.npz` temporary is removed once its writer is done."""
        self._wait()
        self._npz.discard()


def stage_export(
    model: KnetModel, prefix: str | os.PathLike[str], *, background: bool = False
) -> StagedExport:
    """`save_export` in two steps: the model and both paths are checked and the `.npz` is
    written to a temporary now (on a background thread with `background=True`, so that other
    work runs meanwhile: `convert --to knet --verify` verifies while it writes), and the
    returned `StagedExport` puts the pair in place (`commit`) or removes it (`discard`)."""
    check_model(model)
    json_path, npz_path = export_paths(prefix)
    files.output_file(json_path, suffix=".json", what="export")
    files.output_file(npz_path, suffix=".npz", what="export")
    keys: dict[str, np.ndarray] = {}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": model.name,
        "npz": npz_path.name,
        "layers": [_layer_to_json(layer, keys) for layer in model.layers],
    }
    if model.input_size is not None:
        doc["input_size"] = list(model.input_size)
    return StagedExport(json_path, npz_path, doc, keys, background)


def save_export(model: KnetModel, prefix: str | os.PathLike[str]) -> tuple[str, str]:
    """Write `model` as `<prefix>.npz` (Fortran-ordered arrays, Julia sizes, as NPZ.jl writes
    them) and `<prefix>.json` (schema above); both atomically. Returns the two paths."""
    with files.terminate_as_interrupt(redeliver=True):  # SIGTERM cleans up as Ctrl-C does
        return stage_export(model, prefix).commit()
