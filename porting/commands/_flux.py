"""Command-line pieces for Flux models in BSON.jl files: `porting convert FILE.bson ...` and
`porting inspect FILE.bson` (the commands call these; they hold no logic of their own)."""

from __future__ import annotations

import os
from pathlib import Path

from porting._text import printable
from porting.errors import PortingError

__all__ = ["is_flux_file", "load_for_convert", "inspect_text", "print_listing_json"]


def is_flux_file(path) -> bool:
    """Whether `path` names a BSON.jl file (by its extension: BSON has no magic bytes)."""
    return Path(os.fspath(path)).suffix.lower() == ".bson"


def load_for_convert(args):
    """`(model, None, source)` for `porting convert FILE.bson`; the recognition is kept on
    `args.knetfile` (the command prints its report and puts it in the JSON)."""
    from porting.flux import load_model

    for flag in ("structure",):
        if getattr(args, flag, None) is not None:
            raise PortingError(f"--{flag} applies to a JLD2 model file, not to {args.model}")
    size = args.input_size
    if size is not None and not isinstance(size, tuple):
        size = (size,)
    fm = load_model(
        args.model, args.key, input_size=size, flux_version=getattr(args, "flux_version", None)
    )
    if fm.model.input_size is None and args.input_size is None and args.input is None:
        raise PortingError(
            f"{fm.source}: Flux files do not record the input size (a conv model's weights do "
            "not fix it); give --input-size X1,X2,C (one sample's Julia size, e.g. 28,28,1 for "
            "MNIST) or --input X.npy"
        )
    args.knetfile = fm
    return fm.model, None, f"{fm.source} (Flux.jl)"


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
