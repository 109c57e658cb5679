"""Modules that can be called as their main function (`porting.compare`, `porting.diagnose`).

`porting.compare(expected, actual)` must call the function, yet `porting.compare` is also the
module (`import porting.compare` rebinds the package attribute to it). Making the module
callable keeps both readings right: `porting.compare(...)` and `porting.compare.Comparison`.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return self.__dict__[self.__dict__["__call_target__"]](*args, **kwargs)


def make_callable(module_name: str, function_name: str) -> None:
    """Let the module `module_name` be called as its function `function_name`."""
    module = sys.modules[module_name]
    setattr(module, "__call_target__", function_name)  # noqa: B010
    module.__class__ = _CallableModule
