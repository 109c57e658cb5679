"""Helpers shared by CLI commands: argument parsing and input files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    """Read one Julia-indexed array from a .npy file (NPZ.jl writes them Fortran-ordered)."""
    p = Path(path)
    if not p.exists():
        raise PortingError(f"{name}: {path}: no such file; expected a .npy file")
    if p.is_dir():
        raise PortingError(f"{name}: {path} is a directory; expected a .npy file")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise PortingError(f"{name}: {path}: cannot read as .npy ({e})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        a.close()
        raise PortingError(f"{name}: {path} is an .npz archive; expected a single-array .npy file")
    return a


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
