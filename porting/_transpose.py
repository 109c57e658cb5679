"""Axis-permuting copies (the work behind every layout converter)."""

from __future__ import annotations

import numpy as np


def transpose_copy(a: np.ndarray, perm: list[int]) -> np.ndarray:
    """Return a C-contiguous copy of `a.transpose(perm)`."""
    return np.ascontiguousarray(a.transpose(perm))
