"""Weight files in, Julia-indexed NumPy arrays out.

``load(path)`` reads the files people move Knet weights in and returns a dict of names to
**Julia-indexed** arrays: shape equals Julia's ``size()`` and element ``[i-1, j-1, ...]`` equals
Julia's ``[i, j, ...]``, whatever the memory order (most come back Fortran-ordered, zero copy).

>>> import numpy as np, tempfile, os
>>> w = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))  # Julia (2,3,4)
>>> d = tempfile.mkdtemp(); p = save_npz(os.path.join(d, "w.npz"), {"conv": {"w": w}})
>>> {k: v.shape for k, v in load(p).items()}
{'conv.w': (2, 3, 4)}

Formats (chosen by the file's magic bytes, else by extension; ``format=`` overrides):

- ``npy``: NPZ.jl ``npzwrite`` (Fortran order, shape = Julia's size) or NumPy. Returned as
  stored: NumPy's logical array already has Julia's shape and indexing. A C-ordered ``.npy``
  written by a NumPy user is taken the same way (its logical shape is taken as Julia's size).
  The single array is named by the file stem.
- ``npz``: NPZ.jl, NumPy or :func:`save_npz`; each member as for ``npy``, names flat.
- ``mat5``: MAT.jl (v5), MATLAB or scipy; ``scipy.io.loadmat`` already gives ``(X1, X2, ...)``.
- ``mat73``: MAT.jl ``matwrite`` (its default) or MATLAB ``-v7.3``: HDF5 behind a 512-byte
  MATLAB header. h5py sees the dims reversed; the ``.T`` view restores Julia's order.
- ``jld2``: JLD2.jl (``JLD2.save``, ``jldsave``, ``@save``): HDF5 behind a 512-byte Julia
  header, dims reversed as for ``mat73``; object references followed.
- ``safetensors``: Python / PyTorch writers; returned as stored (see below).

Decisions, stated once:

- **Nothing is squeezed or padded.** A shape is the one the file records, in Julia order.
  MAT v5 cannot hold a 1-D array (MAT.jl writes a ``Vector`` as an ``n x 1`` matrix), so a
  Julia ``Vector`` of length ``n`` saved to v5 comes back ``(n, 1)``; from MAT v7.3, JLD2 and
  ``.npy`` it comes back ``(n,)``. MAT.jl writes a scalar as a 1-element array: ``(1, 1)`` in
  v5, ``(1,)`` in v7.3. Consumers should accept ``(n,)`` and ``(n, 1)`` biases alike.
- A value the file stores as a scalar (HDF5 scalar dataspace: JLD2 numbers) is a plain Python
  ``int``/``float``/``complex``/``bool``; a string is ``str``.
- MATLAB structs, JLD2 groups, ``Dict``\\ s, ``NamedTuple``\\ s and other Julia structs become
  nested dicts; JLD2 tuples and ``Pair``\\ s become Python tuples; MATLAB cell arrays and JLD2
  arrays of references (``Vector{Any}``, ``Vector{Matrix{Float32}}``) become lists in Julia's
  linear (column-major) order.
- A Julia function stored in a JLD2 struct field (``f=relu``) that h5py *can* read comes back as
  its name (``"NNlib.relu"``); one h5py cannot read raises `PortingError` with export advice.
- **safetensors** files are written from Python (row-major, PyTorch layout). They are returned
  exactly as stored; no axis is reversed, because the file does not say who wrote it. If you
  wrote one from Julia by reversing dims yourself, reverse them back with ``a.T``.
- A plain HDF5 file with neither a MAT 7.3 nor a JLD2 header is refused unless ``format=`` says
  how to read it: nothing in it tells whether its dims are Julia's (reversed) or C order.

Every problem with the file (missing, a directory, truncated, corrupt, unknown format, strings or
objects where numbers were expected) raises `PortingError` naming the path and what was
expected. h5py, scipy and safetensors are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = ["FORMATS", "load", "detect_format", "save_npz", "flatten"]

FORMATS = ("npy", "npz", "mat5", "mat73", "jld2", "safetensors")
_ALIASES = {"mat": "mat", "matlab": "mat", "mat7.3": "mat73", "v7.3": "mat73", "hdf5": "hdf5"}
_EXTENSIONS = {
    ".npy": "npy",
    ".npz": "npz",
    ".mat": "mat",
    ".jld2": "jld2",
    ".safetensors": "safetensors",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
_LABELS = {
    "npy": "a .npy file (NPZ.jl / NumPy)",
    "npz": "a .npz file (NPZ.jl / NumPy)",
    "mat5": "a MAT v5 file",
    "mat73": "a MAT v7.3 (HDF5) file",
    "jld2": "a JLD2 file",
    "safetensors": "a safetensors file",
}
_EXPECTED = "a weight file (.npy, .npz, .mat, .jld2 or .safetensors)"
_NUMERIC_KINDS = "biufc"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_DEPTH = 64

_JLD2_ADVICE = (
    "JLD2 files holding whole Julia structs (for example a layer with a function-typed field "
    "such as f=relu) cannot be read outside Julia. Export plain arrays instead, in Julia: "
    'jldsave("w.jld2"; w1=Array(value(model.layers[1].w)), b1=Array(value(model.layers[1].b)), '
    '...) (or with FileIO: save("w.jld2", Dict("w1" => Array(value(model.layers[1].w)), ...))), '
    'or porting\'s Julia exporter: PortingKnet.export_model("model", model) (julia/ folder; '
    "writes model.npz + model.json), "
    'or NPZ.jl: npzwrite("w.npz", Dict("w1" => Array(value(model.layers[1].w)), ...))'
)


# --------------------------------------------------------------------------------------------
# Public API


def load(path: str | os.PathLike, *, format: str | None = None) -> dict[str, Any]:
    """Read a weight file into ``{name: Julia-indexed array | nested dict | number | ...}``.

    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npy")
    >>> np.save(p, np.asfortranarray(np.zeros((3, 3, 1, 8), np.float32)))  # as NPZ.jl writes
    >>> load(p)["w"].shape
    (3, 3, 1, 8)

    `format` is one of ``"npy", "npz", "mat5", "mat73", "mat"`` (v5 or v7.3 by header),
    ``"jld2"``, ``"safetensors"``; by default the file's magic bytes decide, then its extension.
    A JLD2 or MAT v7.3 array ``w`` of Julia size ``(3, 3, 1, 8)`` comes back with
    ``w.shape == (3, 3, 1, 8)``, Fortran-ordered, and ``w[i-1, j-1, c-1, n-1]`` equal to Julia's
    ``w[i, j, c, n]``. See the module docstring for vectors, scalars and safetensors.

    Raises `PortingError` naming `path` when the file is missing, a directory, truncated or
    corrupt, of an unknown format, or holds non-numeric arrays.
    """
    p = _existing_file(path)
    fmt = detect_format(p, format=format)
    reader = {
        "npy": _load_npy,
        "npz": _load_npz,
        "mat5": _load_mat5,
        "mat73": _load_mat73,
        "jld2": _load_jld2,
        "safetensors": _load_safetensors,
    }[fmt]
    return reader(p)


def detect_format(path: str | os.PathLike, *, format: str | None = None) -> str:
    """Which reader `load` uses for `path`: one of `FORMATS`.

    The file's first bytes win over its extension: an NPZ.jl file named ``w.dat`` is still
    read as ``npz``. A ``format=`` given by the caller wins over both (``"mat"`` still picks
    v5 or v7.3 from the header).
    """
    p = _existing_file(path)
    head = _read_head(p)
    if not head:
        raise PortingError(f"{p} is empty (0 bytes); expected {_EXPECTED}")
    if format is not None:
        if not isinstance(format, str):
            raise PortingError(
                f"format={format!r}: expected one of {', '.join(map(repr, FORMATS))} or None"
            )
        name = format.lower().lstrip(".")
        name = _ALIASES.get(name, name)
        if name == "mat":
            return "mat73" if _is_mat73(head) or _has_hdf5_magic(head) else "mat5"
        if name == "hdf5":
            raise PortingError(
                f"format={format!r} for {p}: a plain HDF5 file does not say whether its dims "
                "are Julia's (reversed) or C order; pass format='jld2' or 'mat73' if Julia "
                "wrote it (HDF5.jl, JLD2, MAT.jl)"
            )
        if name not in FORMATS:
            raise PortingError(
                f"format={format!r}: expected one of {', '.join(map(repr, FORMATS))}, 'mat' or None"
            )
        return name

    sniffed = _sniff(head)
    by_ext = _EXTENSIONS.get(p.suffix.lower())
    if sniffed == "hdf5":
        if by_ext in ("jld2", "mat"):
            return "jld2" if by_ext == "jld2" else "mat73"
        raise PortingError(
            f"{p}: an HDF5 file without a MAT 7.3 or JLD2 header; its dims may be Julia's "
            "(reversed) or C order and nothing in the file says which. If Julia wrote it "
            "(HDF5.jl, MAT.jl, JLD2), pass format='jld2' or format='mat73'"
        )
    if sniffed is not None:
        return sniffed
    if by_ext == "mat":
        return "mat5"  # scipy also reads v4 files, which have no magic text
    if by_ext is not None and by_ext != "hdf5":
        return by_ext  # its reader reports the corruption in the format's own terms
    shown = head[:16]
    raise PortingError(
        f"{p}: unknown format (extension {p.suffix or 'none'!r}, first bytes {shown!r}); "
        f"expected {_EXPECTED}, or pass format= one of {', '.join(FORMATS)}"
    )


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, compress: bool = False) -> Path:
    """Write `arrays` (names to Julia-indexed arrays, nested dicts allowed) to an ``.npz`` file.

    Each member is written Fortran-ordered with Julia's shape, exactly as NPZ.jl's ``npzwrite``
    writes it, so ``npzread`` in Julia gives the same ``size()`` and elements and `load` gives
    back the same Julia-indexed arrays. Nested dicts are flattened with `flatten` (``"a.b"``).
    The file is written atomically: a temporary file in the same directory, then
    ``os.replace``; a failure leaves any previous file untouched and no partial file behind.

    >>> import numpy as np, tempfile, os
    >>> p = save_npz(os.path.join(tempfile.mkdtemp(), "w.npz"), {"w": np.ones((2, 3))})
    >>> load(p)["w"].shape
    (2, 3)
    """
    if not isinstance(arrays, Mapping):
        raise PortingError(f"arrays must be a dict of names to arrays, got {type(arrays).__name__}")
    target = Path(os.fspath(path))
    if target.is_dir():
        raise PortingError(f"{target} is a directory; expected a file path ending in .npz")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise PortingError(f"{target}: directory {parent} does not exist")
    flat = flatten(arrays)
    members: dict[str, np.ndarray] = {}
    for name, value in flat.items():
        a = np.asarray(value)
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise PortingError(
                f"{name!r} holds {a.dtype} data; expected numbers (bool, int, float, complex)"
            )
        # asfortranarray would turn a 0-d array into shape (1,); 0-d and 1-d need no reorder
        members[name] = np.asfortranarray(a) if a.ndim >= 2 else a
    if not members:
        raise PortingError(f"{target}: no numeric arrays to save in {sorted(arrays)!r}")

    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            with zipfile.ZipFile(fh, "w", compression=method, allowZip64=True) as zf:
                for name, a in members.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def flatten(tree: Mapping[str, Any], *, sep: str = ".") -> dict[str, np.ndarray]:
    """Nested dicts (and tuples/lists) of arrays to one flat dict ``{"a.b.c": array}``.

    Tuple and list items are numbered from 1, as Julia numbers them (``"layers.1.w"`` is
    Julia's ``layers[1].w``). Numbers become 0-d arrays; strings and ``None`` (a stored
    activation name, an empty field) are left out, since they are not weights.

    >>> sorted(flatten({"conv": {"w": np.ones((3, 3)), "f": "NNlib.relu"}, "t": (1.0, 2.0)}))
    ['conv.w', 't.1', 't.2']
    """
    if not isinstance(tree, Mapping):
        raise PortingError(f"flatten expects a dict of names to arrays, got {type(tree).__name__}")
    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        elif isinstance(node, (tuple, list)):
            for i, v in enumerate(node, start=1):
                walk(f"{prefix}{sep}{i}" if prefix else str(i), v)
        elif node is None or isinstance(node, (str, bytes)):
            return
        else:
            if prefix in out:
                raise PortingError(f"name {prefix!r} occurs twice after flattening with {sep!r}")
            out[prefix] = np.asarray(node)

    walk("", tree)
    return out


# --------------------------------------------------------------------------------------------
# Paths, magic bytes, errors


def _existing_file(path) -> Path:
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise PortingError(f"path={path!r}: expected a file path (str or os.PathLike)") from None
    if p.is_dir():
        raise PortingError(f"{p} is a directory; expected {_EXPECTED}")
    if not p.exists():
        raise PortingError(f"{p}: no such file; expected {_EXPECTED}")
    if not p.is_file():
        raise PortingError(f"{p} is not a regular file; expected {_EXPECTED}")
    return p


def _read_head(p: Path, n: int = 1100) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError as e:
        raise PortingError(f"{p}: cannot open ({e.strerror or e}); expected {_EXPECTED}") from None


def _has_hdf5_magic(head: bytes) -> bool:
    # HDF5 looks for its signature at 0, 512, 1024, ... (after a user block).
    return any(head[o : o + 8] == _HDF5_MAGIC for o in (0, 512, 1024))


def _is_mat73(head: bytes) -> bool:
    return head.startswith(b"MATLAB 7.3 MAT-file")


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if _is_mat73(head):
        return "mat73"
    if head.startswith(b"HDF5-based Julia Data Format") or head.startswith(
        b"Julia data file (HDF5)"
    ):
        return "jld2"
    if head.startswith(b"MATLAB 5.0 MAT-file") or (
        len(head) >= 128
        and head[126:128] in (b"IM", b"MI")
        and head[124:126] in (b"\x00\x01", b"\x01\x00")
    ):
        return "mat5"
    if _has_hdf5_magic(head):
        return "hdf5"
    if len(head) >= 10 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 2 <= n < 100_000_000:
            return "safetensors"
    return None


def _short(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ") or type(e).__name__
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


def _corrupt(p: Path, fmt: str, e: BaseException) -> PortingError:
    return PortingError(
        f"{p}: cannot read it as {_LABELS[fmt]} ({_short(e)}); the file may be truncated or "
        "corrupt, or not of that format"
    )


def _missing_dependency(package: str, fmt: str) -> PortingError:
    return PortingError(
        f"reading {_LABELS[fmt]} needs the Python package {package!r}; "
        f"install it with `pip install {package}`"
    )


def _numeric(a: np.ndarray, p: Path, name: str) -> np.ndarray:
    if a.dtype.kind not in _NUMERIC_KINDS:
        raise PortingError(
            f"{p}: {name!r} holds {a.dtype} data (shape {a.shape}); expected numbers "
            "(bool, int, float or complex)"
        )
    return a


def _python_scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


# --------------------------------------------------------------------------------------------
# .npy / .npz


def _load_npy(p: Path) -> dict[str, Any]:
    try:
        a = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise PortingError(
                f"{p} holds Python objects (a pickled object array); expected numbers. "
                "Object arrays are never unpickled."
            ) from None
        raise _corrupt(p, "npy", e) from None
    except Exception as e:  # noqa: BLE001 - any failure here means a bad file
        raise _corrupt(p, "npy", e) from None
    if not isinstance(a, np.ndarray):  # e.g. an .npz forced through format="npy"
        close = getattr(a, "close", None)
        if close is not None:
            close()
        raise _corrupt(p, "npy", ValueError(f"np.load returned {type(a).__name__}"))
    return {p.stem: _numeric(a, p, p.stem)}


def _load_npz(p: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, "npz", e) from None
    if not hasattr(z, "files"):
        raise _corrupt(p, "npz", ValueError("not a zip archive of .npy members"))
    with z:
        for name in z.files:
            try:
                a = z[name]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise PortingError(
                        f"{p}: member {name!r} holds Python objects; expected numbers. "
                        "Object arrays are never unpickled."
                    ) from None
                raise _corrupt(p, "npz", e) from None
            except Exception as e:  # noqa: BLE001
                raise PortingError(
                    f"{p}: member {name!r} cannot be read ({_short(e)}); the file may be "
                    "truncated or corrupt"
                ) from None
            out[name] = _numeric(a, p, name)
    return out


# --------------------------------------------------------------------------------------------
# safetensors


def _load_safetensors(p: Path) -> dict[str, Any]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise _missing_dependency("safetensors", "safetensors") from None
    try:
        tensors = load_file(str(p))
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, "safetensors", e) from None
    return {name: _numeric(a, p, name) for name, a in tensors.items()}


# --------------------------------------------------------------------------------------------
# MAT v5 (scipy)


def _load_mat5(p: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:
        raise _missing_dependency("scipy", "mat5") from None
    try:
        raw = scipy.io.loadmat(
            str(p), squeeze_me=False, struct_as_record=False, chars_as_strings=True
        )
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, "mat5", e) from None
    return {k: _mat5_value(v, p, k) for k, v in raw.items() if not k.startswith("__")}


def _mat5_value(v: Any, p: Path, name: str) -> Any:
    from scipy.io.matlab import mat_struct

    try:
        import scipy.sparse as sparse

        if sparse.issparse(v):
            v = v.toarray(order="F")
    except ImportError:  # pragma: no cover - scipy.io implies scipy.sparse
        pass
    if isinstance(v, mat_struct):
        return {f: _mat5_value(getattr(v, f), p, f"{name}.{f}") for f in v._fieldnames}
    if not isinstance(v, np.ndarray):
        raise PortingError(
            f"{p}: {name!r} is a MATLAB {type(v).__name__}, which porting does not read; "
            "expected numeric arrays, structs, cells or strings"
        )
    if v.dtype.kind == "U":
        strings = [str(s) for s in v.ravel(order="F")]
        return strings[0] if len(strings) == 1 else strings
    if v.dtype.kind == "O":
        items = list(v.ravel(order="F"))
        if items and all(isinstance(x, mat_struct) for x in items):
            dicts = [_mat5_value(x, p, name) for x in items]
            return dicts[0] if len(dicts) == 1 else dicts
        return [_mat5_value(x, p, f"{name}[{i}]") for i, x in enumerate(items, start=1)]
    return _numeric(v, p, name)


# --------------------------------------------------------------------------------------------
# HDF5 helpers shared by MAT v7.3 and JLD2


def _h5py(fmt: str):
    try:
        import h5py
    except ImportError:
        raise _missing_dependency("h5py", fmt) from None
    return h5py


def _open_h5(p: Path, fmt: str):
    h5py = _h5py(fmt)
    try:
        return h5py.File(p, "r")
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, fmt, e) from None


def _attr_str(obj, key: str) -> str | None:
    try:
        if key not in obj.attrs:
            return None
        v = obj.attrs[key]
    except Exception:  # noqa: BLE001 - unreadable attribute: treat as absent
        return None
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else b""
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", "replace").rstrip("\x00")
    return str(v)


def _attr_int(obj, key: str) -> int | None:
    try:
        if key not in obj.attrs:
            return None
        return int(np.asarray(obj.attrs[key]).ravel()[0])
    except Exception:  # noqa: BLE001
        return None


def _julia_view(a: np.ndarray) -> Any:
    """h5py's C-order array of reversed dims -> Julia-indexed (Fortran-ordered) view."""
    if a.ndim == 0:
        return _python_scalar(a[()])
    return a.T


def _complex_from_record(a: np.ndarray, re: str, im: str) -> np.ndarray:
    return a[re] + 1j * a[im]


# --------------------------------------------------------------------------------------------
# MAT v7.3 (HDF5 with a 512-byte MATLAB header; MAT.jl's default)

_MAT_NUMERIC = {
    "double": np.float64,
    "single": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "logical": np.bool_,
}


def _load_mat73(p: Path) -> dict[str, Any]:
    f = _open_h5(p, "mat73")
    try:
        return {
            name: _mat73_value(f[name], p, name, 0) for name in f.keys() if not name.startswith("#")
        }
    except PortingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, "mat73", e) from None
    finally:
        f.close()


def _mat73_value(obj, p: Path, name: str, depth: int) -> Any:
    h5py = _h5py("mat73")
    if depth > _MAX_DEPTH:
        raise PortingError(f"{p}: {name!r} nests deeper than {_MAX_DEPTH} levels")
    cls = _attr_str(obj, "MATLAB_class")
    if isinstance(obj, h5py.Group):
        if "MATLAB_sparse" in obj.attrs:
            return _mat73_sparse(obj, p, name, cls)
        if cls not in (None, "struct"):
            raise PortingError(
                f"{p}: {name!r} is a MATLAB {cls} object, which porting does not read; "
                "expected numeric arrays, structs, cells or strings"
            )
        return {k: _mat73_value(obj[k], p, f"{name}.{k}", depth + 1) for k in _mat73_fields(obj)}
    if _attr_int(obj, "MATLAB_empty"):
        return _mat73_empty(obj, cls)
    try:
        data = obj[()]
    except Exception as e:  # noqa: BLE001
        raise PortingError(f"{p}: {name!r} cannot be read ({_short(e)})") from None
    if cls == "cell" or h5py.check_ref_dtype(obj.dtype) is not None:
        refs = np.asarray(data).ravel(order="C")  # C order of reversed dims = Julia's order
        return [
            None if not r else _mat73_value(obj.file[r], p, f"{name}[{i}]", depth + 1)
            for i, r in enumerate(refs, start=1)
        ]
    if cls == "char":
        return _mat73_char(np.asarray(data))
    if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
        data = _complex_from_record(data, "real", "imag")
    if cls is not None and cls not in _MAT_NUMERIC:
        raise PortingError(
            f"{p}: {name!r} is a MATLAB {cls} value, which porting does not read; expected "
            f"one of {', '.join(_MAT_NUMERIC)}, char, cell or struct"
        )
    if cls == "logical" or _attr_int(obj, "MATLAB_int_decode") == 1:
        data = np.asarray(data).astype(bool)
    _numeric(np.asarray(data), p, name)
    return _julia_view(np.asarray(data))


def _mat73_fields(g) -> list[str]:
    try:
        raw = g.attrs["MATLAB_fields"] if "MATLAB_fields" in g.attrs else None
    except Exception:  # noqa: BLE001
        raw = None
    names: list[str] = []
    if raw is not None:
        for item in np.asarray(raw, dtype=object).ravel():
            if isinstance(item, np.ndarray):
                names.append(b"".join(bytes(c) for c in item.ravel()).decode("utf-8", "replace"))
            elif isinstance(item, (bytes, np.bytes_)):
                names.append(bytes(item).decode("utf-8", "replace"))
            else:
                names.append(str(item))
    if not names or any(n not in g for n in names):
        names = list(g.keys())
    return names


def _mat73_empty(obj, cls: str | None) -> Any:
    if cls == "char":
        return ""
    dims = np.asarray(obj[()]).ravel(order="C")
    dtype = _MAT_NUMERIC.get(cls or "double", np.float64)
    shape = tuple(int(d) for d in dims) if dims.size else (0, 0)
    return np.zeros(shape, dtype=dtype, order="F")


def _mat73_char(codes: np.ndarray) -> Any:
    j = codes.T if codes.ndim else codes.reshape(1)
    if j.ndim == 1:
        j = j.reshape(1, -1)
    rows = [
        np.asarray(j[r], dtype="<u2").tobytes().decode("utf-16-le", "replace")
        for r in range(j.shape[0])
    ]
    rows = [r.rstrip("\x00") for r in rows]
    return rows[0] if len(rows) == 1 else rows


def _mat73_sparse(g, p: Path, name: str, cls: str | None) -> np.ndarray:
    m = _attr_int(g, "MATLAB_sparse") or 0
    jc = np.asarray(g["jc"][()]).ravel().astype(np.int64)
    n = len(jc) - 1
    dtype = _MAT_NUMERIC.get(cls or "double", np.float64)
    out: np.ndarray = np.zeros((m, n), dtype=dtype, order="F")
    if "data" in g and "ir" in g:
        data = np.asarray(g["data"][()])
        if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
            data = _complex_from_record(data, "real", "imag")
            out = out.astype(np.complex128)
        data = data.ravel()
        ir = np.asarray(g["ir"][()]).ravel().astype(np.int64)
        for col in range(n):
            s, e = jc[col], jc[col + 1]
            out[ir[s:e], col] = data[s:e]
    return out


# --------------------------------------------------------------------------------------------
# JLD2 (HDF5-compatible; 512-byte Julia header, committed datatypes under /_types)

_DICT_TYPES = ("Base.Dict", "Base.IdDict", "Base.ImmutableDict", "Base.WeakKeyDict")
_TUPLE_TYPES = ("Core.Tuple", "Tuple", "NTuple", "Core.NTuple")


def _load_jld2(p: Path) -> dict[str, Any]:
    f = _open_h5(p, "jld2")
    try:
        return _jld2_group(f, p, "", 0)
    except PortingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _corrupt(p, "jld2", e) from None
    finally:
        f.close()


def _jld2_group(g, p: Path, prefix: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in g.keys():
        if k == "_types" and not prefix:
            continue
        out[k] = _jld2_object(g[k], p, f"{prefix}{k}", depth + 1)
    return out


def _committed_name(tid, attr: bytes = b"julia_type") -> str | None:
    """The Julia type name JLD2 recorded on a committed datatype (e.g. ``"Base.Dict"``).

    Only the ``name`` member is read: h5py cannot convert the ``parameters`` member (a
    variable-length list of object references), so reading the whole attribute would fail.
    """
    from h5py import h5a, h5t

    try:
        if not tid.committed() or not h5a.exists(tid, attr):
            return None
        a = h5a.open(tid, attr)
        atype = a.get_type()
        if atype.get_class() == h5t.STRING:
            v = a.dtype
            buf = np.empty(a.shape, dtype=v)
            a.read(buf)
            s = buf.ravel()[0] if buf.size else b""
        elif atype.get_class() == h5t.COMPOUND and atype.get_member_index(b"name") >= 0:
            import h5py

            buf = np.empty(a.shape, dtype=[("name", h5py.string_dtype())])
            a.read(buf)
            s = buf["name"].ravel()[0] if buf.size else b""
        else:
            return None
    except Exception:  # noqa: BLE001 - a type name is a hint; missing it is not an error
        return None
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    return str(s) or None


def _jld2_unreadable(p: Path, name: str, jtype: str | None, e: BaseException) -> PortingError:
    what = f"Julia type {jtype}" if jtype else "a Julia object"
    return PortingError(
        f"{p}: {name!r} ({what}) cannot be read with h5py ({_short(e)}). {_JLD2_ADVICE}"
    )


def _function_name(jtype: str) -> str:
    module, _, fname = jtype.rpartition(".")
    fname = fname.lstrip("#")
    return f"{module}.{fname}" if module else fname


def _jld2_object(obj, p: Path, name: str, depth: int) -> Any:
    h5py = _h5py("jld2")
    if depth > _MAX_DEPTH:
        raise PortingError(
            f"{p}: {name!r} nests deeper than {_MAX_DEPTH} levels (a self-referencing Julia "
            f"object?). {_JLD2_ADVICE}"
        )
    if isinstance(obj, h5py.Group):
        return _jld2_group(obj, p, name + "/", depth)
    if isinstance(obj, h5py.Datatype):  # a reference to a type (a type parameter)
        return _committed_name(obj.id) or "DataType"
    tid = obj.id.get_type()
    jtype = _committed_name(tid)
    try:
        if obj.shape is None:  # HDF5 null dataspace: a Julia singleton (nothing, a function)
            if jtype in (None, "Core.Nothing") or "dimensions" in obj.attrs:
                return None
            return _function_name(jtype)
        data = obj[()]
    except Exception as e:  # noqa: BLE001
        raise _jld2_unreadable(p, name, jtype, e) from None
    value = _jld2_convert(data, tid, jtype, obj, p, name, depth)
    if jtype in _DICT_TYPES or (jtype and jtype.endswith("Dict") and isinstance(value, list)):
        return _pairs_to_dict(value, p, name, jtype)
    return value


def _jld2_convert(data, tid, jtype, obj, p: Path, name: str, depth: int) -> Any:
    from h5py import h5t

    cls = tid.get_class()
    if isinstance(data, np.void) and data.dtype.names:  # a scalar compound: one record
        return _jld2_record(data, tid, jtype, obj, p, name, depth)
    if isinstance(data, np.ndarray) and data.dtype.names:
        if data.ndim == 0:
            return _jld2_record(data[()], tid, jtype, obj, p, name, depth)
        names = set(data.dtype.names)
        if names == {"re", "im"}:  # Array{Complex{T}}
            return _complex_from_record(data, "re", "im").T
        flat = data.ravel(order="C")  # Julia's linear order
        member_types = _member_type_map(tid, obj) if jtype else {}
        return [
            _jld2_record(r, tid, jtype, obj, p, f"{name}[{i}]", depth, member_types)
            for i, r in enumerate(flat, start=1)
        ]
    if cls == h5t.REFERENCE:
        if isinstance(data, np.ndarray):
            return [
                _jld2_member(r, obj, p, f"{name}[{i}]", depth)
                for i, r in enumerate(data.ravel(order="C"), start=1)
            ]
        return _jld2_member(data, obj, p, name, depth)
    if cls == h5t.STRING or isinstance(data, (bytes, str)):
        if isinstance(data, np.ndarray) and data.ndim > 0:  # Array{String}
            return [_decode(x) for x in data.ravel(order="C")]
        return _decode(data)
    if cls == h5t.BITFIELD or jtype == "Core.Bool":
        data = np.asarray(data).astype(bool)
    if cls == h5t.OPAQUE:
        raise _jld2_unreadable(p, name, jtype, TypeError("opaque Julia bits"))
    a = np.asarray(data)
    if a.dtype.kind == "O":  # variable-length sequences
        return [_jld2_member(x, obj, p, f"{name}[{i}]", depth) for i, x in enumerate(a.ravel(), 1)]
    _numeric(a, p, name)
    if "dimensions" in obj.attrs:  # JLD2's zero-dimensional Array{T,0}
        dims = tuple(int(d) for d in np.asarray(obj.attrs["dimensions"]).ravel())[::-1]
        return a.reshape(dims, order="F") if dims else a.reshape(())
    return _julia_view(a)


def _decode(x) -> str:
    if isinstance(x, np.ndarray):
        x = x[()] if x.ndim == 0 else x.ravel()[0]
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _member_type_map(tid, obj) -> dict[str, str | None]:
    """Every field of a JLD2 struct type, in order, to its Julia type name where JLD2 recorded
    one (``field_names`` / ``field_types`` attributes, written when a field's type is committed
    or has no data at all, like ``f::typeof(relu)``). Empty when JLD2 wrote neither."""
    from h5py import h5a

    out: dict[str, str | None] = {}
    try:
        if not tid.committed() or not h5a.exists(tid, b"field_types"):
            return out
        import h5py

        dt = h5py.Datatype(tid)
        names = [_decode(n) for n in np.asarray(dt.attrs["field_names"]).ravel()]
        refs = np.asarray(dt.attrs["field_types"]).ravel()
        for n, r in zip(names, refs, strict=False):
            target = obj.file[r] if r else None
            out[n] = _committed_name(target.id) if isinstance(target, h5py.Datatype) else None
    except Exception:  # noqa: BLE001 - hints only
        return {}
    return out


def _jld2_record(
    rec, tid, jtype, obj, p: Path, name: str, depth: int, member_types: dict | None = None
) -> Any:
    names = list(rec.dtype.names or ())
    if set(names) == {"re", "im"} or (jtype or "").startswith("Base.Complex"):
        return complex(rec["re"], rec["im"])
    if names == ["name", "parameters"]:  # a Julia DataType value stored inline
        return _decode(rec["name"])
    if member_types is None:
        member_types = _member_type_map(tid, obj) if jtype else {}
    values = {}
    for i, n in enumerate(names):
        try:
            mtid = tid.get_member_type(i)
        except Exception:  # noqa: BLE001
            mtid = None
        values[n] = _jld2_field(rec[n], mtid, member_types.get(n), obj, p, f"{name}.{n}", depth)
    for n, jt in member_types.items():  # fields with no data: singletons such as relu
        if n not in values:
            values[n] = None if jt in (None, "Core.Nothing") else _function_name(jt)
    order = list(member_types) or names
    if jtype in _TUPLE_TYPES or (order and all(n.isdigit() for n in order)):
        return tuple(values[n] for n in sorted(order, key=int))
    if (jtype or "").endswith(".Pair") or order == ["first", "second"]:
        return (values.get("first"), values.get("second"))
    return {n: values[n] for n in order if n in values}


def _jld2_field(v, mtid, jtype, obj, p: Path, name: str, depth: int) -> Any:
    from h5py import h5t

    if isinstance(v, np.void) and v.dtype.names:
        return _jld2_record(v, mtid, jtype, obj, p, name, depth)
    if mtid is not None and mtid.get_class() == h5t.BITFIELD:
        return bool(v)
    if mtid is not None and mtid.get_class() == h5t.OPAQUE:
        return None  # bits of a type h5py cannot interpret; a ghost field
    return _jld2_member(v, obj, p, name, depth)


def _jld2_member(v, obj, p: Path, name: str, depth: int) -> Any:
    import h5py

    if isinstance(v, h5py.Reference):
        if not v:
            return None  # an undefined (#undef) field or a null reference
        try:
            target = obj.file[v]
        except Exception as e:  # noqa: BLE001
            raise _jld2_unreadable(p, name, None, e) from None
        return _jld2_object(target, p, name, depth + 1)
    if isinstance(v, (bytes, np.bytes_, str)):
        return _decode(v)
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "O":
            return [
                _jld2_member(x, obj, p, f"{name}[{i}]", depth) for i, x in enumerate(v.ravel(), 1)
            ]
        return _julia_view(v)
    return _python_scalar(v)


def _pairs_to_dict(value: Any, p: Path, name: str, jtype: str | None) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(x, tuple) and len(x) == 2 for x in value):
        out = {}
        for k, v in value:
            key = k if isinstance(k, (str, int, float, bool, tuple)) or k is None else str(k)
            out[key] = v
        return out
    raise PortingError(
        f"{p}: {name!r} is a {jtype} but its stored pairs could not be decoded "
        f"(got {type(value).__name__}). {_JLD2_ADVICE}"
    )
