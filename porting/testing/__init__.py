"""Assertions for users' own test suites: is my port right? (pytest-friendly AssertionError)

`assert_model_ported` (a whole model, layer by layer), `assert_layer_ported` (one conv4, dense
or pool layer from its Knet weights), `assert_conv4_ported` and `assert_ported_close` (two
arrays and nothing else, `ASSUMED_K` terms assumed): porting.testing.assertions says what each
derives and assumes. The pytest plugin is `porting.testing.plugin`, hypothesis strategies are
in `porting.testing.strategies`.

>>> import numpy as np
>>> assert_ported_close(np.float32([1, 2]), np.float32([1, 2])).ok
True
"""

from __future__ import annotations

from porting.testing.assertions import (
    ASSUMED_K,
    assert_conv4_ported,
    assert_layer_ported,
    assert_model_ported,
    assert_ported_close,
)

__all__ = [
    "ASSUMED_K",
    "assert_ported_close",
    "assert_conv4_ported",
    "assert_layer_ported",
    "assert_model_ported",
]
