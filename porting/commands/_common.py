"""Helpers shared by CLI commands: argument parsing, input files, output that fits."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from porting.errors import PortingError

MAX_DIM = 2**31 - 1
"""Largest size, padding, stride or dilation accepted on the command line (C int, as the
TensorFlow and Julia kernels index with it)."""

MAX_K = 2**40
"""Largest `--k` (terms summed per element): beyond about 10^12 terms the float32 bound
`(sqrt(K)+2) eps S` exceeds S/8 and says nothing."""


_INT = re.compile(r"\s*[+-]?[0-9]+\s*")


def _int(text: str) -> int:
    """`int(text)` for ASCII decimal digits only: Python's `int` also takes `1_0` (10) and
    other scripts' digits, which on a command line are more likely typos than numbers."""
    if not _INT.fullmatch(text):
        raise ValueError(text)
    return int(text)


def int_or_tuple(text: str):
    """Parse `1` or `1,2` (per spatial dimension, Julia order) for argparse."""
    try:
        parts = [_int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: expected an integer or comma-separated integers (one per spatial "
            "dimension, Julia order), e.g. 1 or 1,2"
        ) from None
    big = [p for p in parts if abs(p) > MAX_DIM]
    if big:
        raise argparse.ArgumentTypeError(
            f"{str(big[0])[:40]}: too large; expected integers of at most {MAX_DIM}"
        )
    return parts[0] if len(parts) == 1 else tuple(parts)


def add_conv4_keywords(p, *, defaults: bool = True) -> None:
    """Knet conv4's keywords as options (`--padding`, `--stride`, `--dilation`, `--mode`,
    `--alpha`) in one group; with `defaults=False` an option not given is None."""
    d: dict[str, object] = {"padding": 0, "stride": 1, "dilation": 1, "mode": 0, "alpha": 1.0}
    if not defaults:
        d = dict.fromkeys(d)
    g = p.add_argument_group(
        "conv4 keywords (scalar or comma-separated per spatial dim, Julia order)"
    )
    g.add_argument("--padding", type=int_or_tuple, default=d["padding"], metavar="P")
    g.add_argument("--stride", type=int_or_tuple, default=d["stride"], metavar="S")
    g.add_argument("--dilation", type=int_or_tuple, default=d["dilation"], metavar="D")
    g.add_argument(
        "--mode",
        type=int,
        choices=(0, 1),
        default=d["mode"],
        help="0 convolution (Knet default), 1 cross-correlation",
    )
    g.add_argument("--alpha", type=float, default=d["alpha"])


def add_spatial(p, *, default: str | None = "reverse") -> None:
    """`--spatial reverse|keep`: how Julia's X1 maps to TensorFlow's axes (`default=None`:
    unset unless given)."""
    p.add_argument(
        "--spatial",
        choices=("reverse", "keep"),
        default=default,
        help="reverse: X1 is the width (default); keep: X1 is the height",
    )


def add_knet_backend(p) -> None:
    """`--knet BACKEND`: which implementation computes the Knet side."""
    p.add_argument(
        "--knet",
        default="auto",
        help="Knet backend: auto (default), reference, julia, julia-nnlib, worker",
    )


def positive_int(maximum: int, what: str):
    """An argparse type: an integer in 1..maximum, the error naming the value and `what`."""

    def parse(text: str) -> int:
        try:
            value = _int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r}: expected a positive integer ({what})"
            ) from None
        if not 1 <= value <= maximum:
            shown = (
                str(value)
                if len(str(value)) <= 40
                else f"{str(value)[:20]}... ({len(str(value))} digits)"
            )
            raise argparse.ArgumentTypeError(
                f"{shown}: expected a positive integer of at most {maximum} ({what})"
            )
        return value

    return parse


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


# --------------------------------------------------------------------------- output


def strict_json(obj):
    """`obj` with NumPy scalars and arrays as plain Python and every non-finite float written
    as a string: "nan", "inf" or "-inf" (JSON has no NaN or Infinity)."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def print_json(obj) -> None:
    """Print `obj` as strict JSON (see `strict_json`)."""
    sys.stdout.write(json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n")


def print_text(text: str) -> None:
    """Print a report fitted to the terminal's width (`COLUMNS` when set); into a pipe or a
    file (no terminal, no `COLUMNS`) lines are left whole, for grep and for other programs."""
    from porting._text import fit

    text = str(text)
    if os.environ.get("COLUMNS") or _isatty():
        text = fit(text)
    sys.stdout.write(text + "\n")


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
