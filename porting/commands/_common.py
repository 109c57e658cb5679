"""Helpers shared by CLI commands: argument parsing and input files."""

from __future__ import annotations

import argparse
import json

import numpy as np

from porting.errors import PortingError


def int_or_tuple(text: str):
    """Parse `1` or `1,2` (per spatial dimension, Julia order) for argparse."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an integer or comma-separated integers (one per spatial "
            "dimension, Julia order), e.g. 1 or 1,2"
        ) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def load_npy(path: str, name: str) -> np.ndarray:
    """Read one Julia-indexed array from a .npy file (NPZ.jl writes them Fortran-ordered).

    Only a regular file is opened (a FIFO or device is refused at once); the header is checked
    against porting.io's size budget before the data is read."""
    from porting import files, io

    p = files.input_file(path, "a .npy file", what=name)
    with files.open_input(p) as fh:
        head = fh.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        raise PortingError(f"{name}: {path} is an .npz archive; expected a single-array .npy file")
    try:
        arrays = io.load(p, format="npy")
    except PortingError as e:
        raise PortingError(f"{name}: {e}") from None
    return next(iter(arrays.values()))


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
