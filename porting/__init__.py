"""Port neural networks between Julia's Knet.jl and TensorFlow/Keras, and prove the numbers match.

``import porting`` is light: TensorFlow and juliacall are imported only by the functions that
need them.
"""

from porting.errors import PortingError

__version__ = "0.1.0"
__all__ = ["PortingError", "__version__", "compare", "verify_conv4", "diagnose"]

# `compare` and `diagnose` are modules that can be called as their function
# (porting._callable), so `porting.compare(expected, actual)` works however they were imported.
_LAZY = {
    "compare": ("porting.compare", None),
    "diagnose": ("porting.diagnose", None),
    "verify_conv4": ("porting.verify", "verify_conv4"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'porting' has no attribute {name!r}")
