"""What `verify_model` returns: a `ModelReport` of one `LayerRow` per Knet layer (`str()` is a
readable table, `to_dict()` the JSON form).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from porting.comparison import Comparison

__all__ = ["ModelReport", "LayerRow"]


@dataclass
class LayerRow:
    """One Knet layer's comparison."""

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]  # Julia size of the output, batch last
    k: int
    comparison: Comparison

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def max_abs_error(self) -> float:
        return self.comparison.max_abs_error

    @property
    def error_to_tolerance(self) -> float:
        return self.comparison.max_error_to_tolerance

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "k": self.k,
            "ok": self.ok,
            "max_abs_error": c.max_abs_error,
            "max_rel_error": c.max_rel_error,
            "max_ulp": c.max_ulp,
            "error_to_tolerance": c.max_error_to_tolerance,
            "n_mismatched": c.n_mismatched,
            "comparison": c.to_dict(),
        }


@dataclass
class ModelReport:
    """What `verify_model` compared and how each layer fared (`str()` is a readable table)."""

    ok: bool
    mode: str
    spatial: str
    rows: list[LayerRow]
    first_divergent: str | None
    end_to_end: dict[str, Any]
    knet_backend: str
    knet_backend_reason: str
    dtypes: dict[str, str]
    input_shape: tuple[int, ...]
    versions: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    diagnosis: Any = None
    notes: list[str] = field(default_factory=list)
    # The model's final outputs, TensorFlow layout: (Knet's, the port's end to end), for callers
    # that need per-sample figures (porting.model.verify_data); not part of `to_dict`.
    outputs: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        diag = self.diagnosis
        return {
            "ok": self.ok,
            "mode": self.mode,
            "spatial": self.spatial,
            "first_divergent": self.first_divergent,
            "end_to_end": self.end_to_end,
            "knet_backend": self.knet_backend,
            "knet_backend_reason": self.knet_backend_reason,
            "dtypes": self.dtypes,
            "input_shape": list(self.input_shape),
            "layers": [r.to_dict() for r in self.rows],
            "timings": self.timings,
            "diagnosis": diag.to_dict() if hasattr(diag, "to_dict") else diag,
            "notes": self.notes,
            "versions": self.versions,
        }

    def _headline(self) -> str:
        what = (
            "each layer fed the Knet input"
            if self.mode == "each"
            else "whole model, errors propagate"
        )
        if self.ok:
            return f"OK: the Keras model computes what the Knet model computes ({what})"
        return f"MISMATCH: first divergent layer {self.first_divergent!r} ({what})"

    def _footer(self) -> list[str]:
        e = self.end_to_end
        lines = [
            f"end to end: max abs error {e['max_abs_error']:.3g} "
            f"({e['max_rel_error']:.3g} of max |output| {e['max_abs_expected']:.3g}), "
            f"max {e['max_ulp']:.3g} ULP",
            f"Knet side: backend {self.knet_backend!r} ({self.knet_backend_reason}), "
            f"{self.dtypes['knet']}; Keras side: {self.dtypes['keras']}, spatial={self.spatial!r} "
            f"({'X1 is the width' if self.spatial == 'reverse' else 'X1 is the height'}); "
            f"input {self.input_shape}",
            "tolerance per layer: (sqrt(K)+2)*eps*S, S = the layer on |w|, |x| (+|b|)"
            + (
                "; plus the incoming error pushed through the layer's bound"
                if self.mode == "whole"
                else ""
            ),
        ]
        if self.diagnosis is not None:
            lines.append("diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        lines += [f"note: {n}" for n in self.notes]
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return lines

    COLUMNS = ("layer", "kind", "shape (Julia)", "K", "max abs err", "err / tol", "ok")

    def table(self) -> list[tuple[str, ...]]:
        """One row of plain strings per layer, under `COLUMNS` (for any presentation)."""
        return [
            (
                r.name,
                r.kind,
                str(r.shape),
                str(r.k),
                f"{r.max_abs_error:.3g}",
                f"{r.error_to_tolerance:.3g}",
                "yes" if r.ok else "NO",
            )
            for r in self.rows
        ]

    def headline(self) -> str:
        return self._headline()

    def footer(self) -> list[str]:
        return self._footer()

    def __str__(self) -> str:
        """Plain text: the headline, an aligned table, the footer."""
        rows = [self.COLUMNS, *self.table()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.COLUMNS))]
        right = {3, 4, 5}

        def line(r: tuple[str, ...]) -> str:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        out = [self._headline(), line(rows[0]), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in rows[1:]]
        return "\n".join(out + self._footer())
