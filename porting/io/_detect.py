"""Which reader `porting.io.load` uses for a file: its magic bytes, else its extension, else
the caller's `format=` (docs/files.md#npz and the sections after it describe each format).
"""

from __future__ import annotations

import os
from pathlib import Path

from porting import files
from porting._checks import short_repr
from porting.errors import PortingError
from porting.io._core import EXPECTED, FORMATS

__all__ = ["detect_format"]

_ALIASES = {"mat": "mat", "matlab": "mat", "mat7.3": "mat73", "v7.3": "mat73", "hdf5": "hdf5"}
_EXTENSIONS = {
    ".npy": "npy",
    ".npz": "npz",
    ".mat": "mat",
    ".jld2": "jld2",
    ".safetensors": "safetensors",
    ".bson": "bson",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | os.PathLike, *, format: str | None = None) -> str:
    """Which reader `load` uses for `path`: one of `FORMATS`.

    The file's first bytes win over its extension: an NPZ.jl file named ``w.dat`` is still
    read as ``npz``. A ``format=`` given by the caller wins over both (``"mat"`` still picks
    v5 or v7.3 from the header).
    """
    p = files.input_file(path, EXPECTED)
    head = _read_head(p)
    if not head:
        raise PortingError(f"{p} is empty (0 bytes); expected {EXPECTED}")
    if format is not None:
        if not isinstance(format, str):
            raise PortingError(
                f"format={short_repr(format)}: expected one of {', '.join(map(repr, FORMATS))} or None"
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
        f"expected {EXPECTED}, or pass format= one of {', '.join(FORMATS)}"
    )


# --------------------------------------------------------------------------------------------
# Magic bytes


def _read_head(p: Path, n: int = 1100) -> bytes:
    try:
        with files.open_input(p) as fh:
            return fh.read(n)
    except OSError as e:
        raise PortingError(f"{p}: cannot open ({e.strerror or e}); expected {EXPECTED}") from None


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
