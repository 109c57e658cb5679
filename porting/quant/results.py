"""What verifying a QKeras layer gives: its two weight sets (`QuantizedWeights`) and the
outcome (`QuantReport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = ["QuantizedWeights", "QuantReport"]


@dataclass
class QuantizedWeights:
    """The weights of one QKeras layer: `float` (get_weights(), the shadow weights) and
    `quantized` (what the layer computes with), by weight name ("kernel", "bias"), with the
    quantizer applied to each (None: used as is)."""

    layer: str
    cls: str
    names: list[str]
    float: dict[str, np.ndarray]
    quantized: dict[str, np.ndarray]
    quantizers: dict[str, str | None]

    def __getitem__(self, name: str) -> np.ndarray:
        """The quantized weight `name`: what the layer computes with."""
        if name not in self.quantized:
            raise PortingError(f"layer {self.layer!r} has no weight {name!r}; it has {self.names}")
        return self.quantized[name]

    def changed(self, name: str) -> int:
        """How many entries of weight `name` the quantizer changed."""
        return int(np.sum(self.float[name] != self.quantized[name]))

    def __str__(self) -> str:
        lines = [f"{self.cls} {self.layer!r}:"]
        for n in self.names:
            f, q = self.float[n], self.quantized[n]
            lines.append(
                f"  {n} {tuple(f.shape)}: quantizer {self.quantizers.get(n) or 'none'}; "
                f"{self.changed(n)} of {f.size} entries changed, max |float - quantized| "
                f"{float(np.max(np.abs(f.astype(np.float64) - q))) if f.size else 0.0:.3g}, "
                f"{np.unique(q).size} distinct values"
            )
        return "\n".join(lines)


@dataclass
class QuantReport:
    """Outcome of verifying one QKeras layer against a NumPy reference."""

    ok: bool
    layer: str
    cls: str
    reference: str  # "quantized" or "float": which weights the reference used
    comparison: Any  # porting.compare.Comparison
    weights: QuantizedWeights
    config: dict
    shapes: dict[str, tuple[int, ...]]
    versions: dict[str, str]
    diagnosis: Any = None
    notes: list[str] = field(default_factory=list)
    # arrays for plots: TF layout, the layer's output before its activation and the reference
    expected: np.ndarray | None = field(default=None, repr=False)
    actual: np.ndarray | None = field(default=None, repr=False)
    magnitude: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = self.diagnosis
        return {
            "ok": self.ok,
            "layer": self.layer,
            "class": self.cls,
            "reference": self.reference,
            "comparison": self.comparison.to_dict(),
            "quantizers": self.weights.quantizers,
            "config": self.config,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "versions": self.versions,
            "diagnosis": d.to_dict() if hasattr(d, "to_dict") else d,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        if self.config.get("kind") == "activation":
            which = f"the NumPy form of its quantizer {self.config.get('activation')}"
        elif self.reference == "quantized":
            which = "the quantized weights (quantizer(weight))"
        else:
            which = "the float shadow weights (get_weights())"
        head = "OK" if self.ok else "MISMATCH"
        lines = [
            f"{head}: QKeras {self.cls} {self.layer!r} vs a reference with {which}",
            *("  " + line for line in str(self.weights).splitlines()[1:]),
            *("  " + line for line in str(self.comparison).splitlines()),
        ]
        if self.diagnosis is not None:
            lines.append("  diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)
