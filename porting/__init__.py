"""Port neural networks between Julia's Knet.jl and TensorFlow/Keras, and prove the numbers match.

``import porting`` is light (NumPy only): the functions and submodules below are imported on
first use, and TensorFlow and juliacall only by the functions that need them.

>>> import numpy as np, porting
>>> porting.compare(np.float32([1, 2]), np.float32([1, 2])).ok
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from porting.errors import PortingError

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy attributes below resolve to, for type checkers and IDEs
    from porting import knet, layout, model, rnn, testing
    from porting.comparison import compare
    from porting.diagnosis import diagnose
    from porting.verify import verify_conv4

__all__ = [
    "PortingError",
    "__version__",
    "compare",
    "diagnose",
    "verify_conv4",
    "knet",
    "layout",
    "model",
    "rnn",
    "testing",
]

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "compare": ("porting.comparison", "compare"),
    "diagnose": ("porting.diagnosis", "diagnose"),
    "verify_conv4": ("porting.verify", "verify_conv4"),
    "knet": ("porting.knet", None),
    "layout": ("porting.layout", None),
    "model": ("porting.model", None),
    "rnn": ("porting.rnn", None),
    "testing": ("porting.testing", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'porting' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
