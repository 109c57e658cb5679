"""Bytecode for porting's modules before a benchmark's timed children run.

An installed package has its `.pyc` files (pip compiles them at install time), and so do
TensorFlow and Keras here; a checkout run with `PYTHONDONTWRITEBYTECODE=1` (as on the
project's build machines) has none for porting, so every module porting imports lazily inside
a timed section is compiled from source there, about 0.2 s for `convert --to knet --verify`,
which a user never pays. `compile_porting()` writes them once, as an install would (into the
`__pycache__` folders git ignores), so that both contestants load compiled modules.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compile_porting(root: Path | str | None = None) -> None:
    """Compile the `porting` package of `root` (default: this checkout) to bytecode."""
    pkg = Path(root or ROOT) / "porting"
    if not compileall.compile_dir(str(pkg), quiet=1, workers=1):
        raise SystemExit(f"compileall failed for {pkg}")
