"""What a recognised layer records: where each value came from (`Setting`), per layer
(`LayerReport`), the whole model (`Recognised`), and the flags for what the file does not say
(`Geometry`). Shared by `porting.knetfile.recognise` and `porting.knetfile.seqnorm`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from porting.errors import PortingError

__all__ = [
    "Geometry",
    "Setting",
    "LayerReport",
    "Recognised",
    "NotAModel",
    "KNET_CONV_DEFAULTS",
    "KNET_POOL_DEFAULTS",
    "FILE",
    "FLAG",
    "STRUCTURE",
    "DEFAULT",
    "ASSUMED",
]

KNET_CONV_DEFAULTS = {"padding": 0, "stride": 1, "dilation": 1, "mode": 0}
KNET_POOL_DEFAULTS = {"window": 2, "padding": 0, "stride": None, "mode": 0}  # stride = window

FILE = "file"
FLAG = "flag"
STRUCTURE = "structure file"
DEFAULT = "Knet default"
ASSUMED = "Knet tutorial layer"


class NotAModel(PortingError):
    """The selected value is not a Knet model (an array, a number, an optimiser state...)."""


@dataclass
class Geometry:
    """Geometry for what the file does not say, from command-line flags (None: not given).

    Conv values apply to every conv layer whose struct does not store them; pool values to
    every pool whose keywords the file does not hold (a tutorial `Conv`'s built-in pool, an
    NNHelferlein `Pool` whose keywords are unreadable). `pool_window=0` says a tutorial `Conv`
    does not pool.
    """

    conv_padding: Any = None
    conv_stride: Any = None
    conv_dilation: Any = None
    conv_mode: Any = None
    pool_window: Any = None
    pool_stride: Any = None
    pool_padding: Any = None
    pool_mode: Any = None
    rnn_output: Any = None  # "sequence" or "last": what the model reads from a Knet RNN's y

    used: set = field(default_factory=set, repr=False)  # the flags some layer took

    def conv(self, name: str):
        value = getattr(self, f"conv_{name}")
        if value is not None:
            self.used.add(f"conv_{name}")
        return value

    def pool(self, name: str):
        value = getattr(self, f"pool_{name}")
        if value is not None:
            self.used.add(f"pool_{name}")
        return value

    def rnn(self) -> Any:
        if self.rnn_output is not None:
            self.used.add("rnn_output")
        return self.rnn_output

    def given(self) -> dict[str, Any]:
        """The flags given (not None), by field name."""
        return {k: v for k, v in vars(self).items() if k != "used" and v is not None}

    def check_all_used(self, where: str) -> None:
        """Refuse a flag no layer took: it would otherwise be silently ignored."""
        unused = sorted(set(self.given()) - self.used)
        if unused:
            flags = ", ".join(f"--{n.replace('_', '-')} {self.given()[n]}" for n in unused)
            raise PortingError(
                f"{flags} given but no layer of {where} takes it: the file stores that value "
                "itself or the model has no such layer (see porting inspect FILE --key ...)"
            )


@dataclass
class Setting:
    """One value of a layer (a geometry keyword, the activation...) and where it came from."""

    name: str
    value: Any
    source: str  # FILE, FLAG, STRUCTURE, DEFAULT or ASSUMED
    detail: str = ""

    def __str__(self) -> str:
        v = "none" if self.value is None else self.value
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.name}={v} ({self.source}{tail})"


@dataclass
class LayerReport:
    """Where one `porting.model` layer came from in the file."""

    kind: str
    path: str
    what: str
    settings: list[Setting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    name: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "what": self.what,
            "settings": [
                {"name": s.name, "value": s.value, "source": s.source, "detail": s.detail}
                for s in self.settings
            ],
            "notes": list(self.notes),
        }


@dataclass
class Recognised:
    """A model found in the file: its `porting.model` layers and their provenance."""

    layers: list  # porting.model layers
    reports: list[LayerReport]
    what: str
    notes: list[str] = field(default_factory=list)
    input_size: tuple[int, ...] | None = None
