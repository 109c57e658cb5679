"""Port neural networks between Julia's Knet.jl and TensorFlow/Keras, and prove the numbers match.

``import porting`` is light: TensorFlow and juliacall are imported only by the functions that
need them.
"""

from porting.errors import PortingError

# The functions are bound eagerly (NumPy only) so that they, not their modules of the same
# name, are `porting.compare` and `porting.diagnose`; import other names from the modules.
from porting.compare import compare  # noqa: E402  (isort: skip)

__version__ = "0.1.0"
__all__ = ["PortingError", "__version__", "compare", "verify_conv4", "diagnose"]

_LAZY = {
    "verify_conv4": ("porting.verify", "verify_conv4"),
    "diagnose": ("porting.diagnose", "diagnose"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'porting' has no attribute {name!r}")
