"""Command-line pieces for Flux models in BSON.jl files: `porting convert FILE.bson ...` and
`porting inspect FILE.bson` (the commands call these; they hold no logic of their own)."""

from __future__ import annotations

import os
from pathlib import Path

from porting._text import printable
from porting.errors import PortingError

__all__ = [
    "is_flux_file",
    "is_flux_structure",
    "load_for_convert",
    "inspect_text",
    "print_listing_json",
]


def is_flux_file(path) -> bool:
    """Whether `path` names a BSON.jl file (by its extension: BSON has no magic bytes)."""
    return Path(os.fspath(path)).suffix.lower() == ".bson"


def is_flux_structure(args) -> bool:
    """Whether ``--structure`` names a Flux structure file (Python: porting.flux.build or
    porting.flux.structure), rather than a Knet export JSON."""
    s = getattr(args, "structure", None)
    return s is not None and Path(os.fspath(s)).suffix.lower() == ".py"


def load_for_convert(args):
    """`(model, None, source)` for `porting convert FILE.bson` and for a file with a Flux
    structure file (``--structure model.py``: a JLD2 file of ``Flux.state``, or a BSON.jl file
    holding a user struct); the recognition is kept on `args.knetfile` (the command prints its
    report and puts it in the JSON)."""
    from porting.commands._knetfile import GEOMETRY_FLAGS
    from porting.flux import load_model

    knet_only = [
        f"--{n.replace('_', '-')}"
        for n in (*GEOMETRY_FLAGS, "rnn_output")
        if getattr(args, n, None) is not None
    ]
    if knet_only:
        raise PortingError(
            f"{' '.join(knet_only)} apply to Knet JLD2 files; a Flux model records its layers' "
            "settings itself (or its structure file gives them)"
        )
    structure = getattr(args, "structure", None)
    if structure is not None and not is_flux_structure(args):
        raise PortingError(
            f"--structure {structure}: for a Flux model the structure file is Python (.py: "
            "porting.flux.build for a Flux.state JLD2 file, porting.flux.structure for a user "
            "struct in a BSON file); an export JSON structure is for Knet JLD2 files"
        )
    size = args.input_size
    if size is not None and not isinstance(size, tuple):
        size = (size,)
    flux_version = getattr(args, "flux_version", None)
    if structure is not None:
        from porting.flux.structure import load_structured, read_structure

        fm = load_structured(
            args.model,
            read_structure(structure),
            args.key,
            input_size=size,
            flux_version=flux_version,
        )
    else:
        fm = load_model(args.model, args.key, input_size=size, flux_version=flux_version)
    if fm.model.input_size is None and args.input_size is None and args.input is None:
        raise PortingError(
            f"{fm.source}: Flux files do not record the input size (a conv model's weights do "
            "not fix it); give --input-size X1,X2,C (one sample's Julia size, e.g. 28,28,1 for "
            "MNIST) or --input X.npy"
        )
    args.knetfile = fm
    return fm.model, None, f"{fm.source} ({fm.kind})"


def inspect_text(path, key: str | None = None, flux_version: str | None = None) -> str:
    from porting.flux import inspect_text as text

    lines = text(path, key, flux_version=flux_version).splitlines()
    return "\n".join(printable(line) for line in lines)


def print_listing_json(path, flux_version: str | None = None) -> None:
    """`porting inspect FILE.bson --json`: one entry per top-level name."""
    from porting.commands._common import print_json
    from porting.flux import entries

    print_json(
        {
            "file": str(path),
            "source": "Flux.jl (BSON.jl file)",
            "entries": [
                {"path": e.path, "kind": e.kind, "summary": e.summary}
                for e in entries(path, flux_version)
            ],
        }
    )
