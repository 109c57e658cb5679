"""The Julia side of `porting`: discovery, the juliacall backend and the worker process.

(Interim: discovery lands with the bridge issue; until then "auto" resolves to the reference.)
"""

from __future__ import annotations


def resolve_backend(name: str):
    from porting.errors import PortingError
    from porting.knet import _reference
    from porting.knet._backends import Resolved

    if name == "auto":
        return Resolved(_reference.NAME, _reference, "no Julia bridge in this build")
    raise PortingError(f"backend={name!r} needs the Julia bridge, which this build does not have")
