"""The outcome of `porting.diagnose`: a cause, its evidence, the ranked alternatives, and the
error arrays that plots are drawn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CAUSES", "Finding", "Diagnosis", "tolerance_array"]


def _storage(precision: str) -> np.dtype:
    """The NumPy dtype holding values of `precision` (TF32 and bfloat16 live in float32)."""
    return np.dtype(np.float32) if precision in ("tf32", "bfloat16") else np.dtype(precision)


def tolerance_array(tol, magnitude) -> np.ndarray:
    """Per-element tolerance of a porting.compare `Tolerance`, for magnitudes `magnitude`."""
    return tol.bound(magnitude)


#: The fixed vocabulary of causes, "no bug" first.
CAUSES = (
    "rounding",
    "kernel_flip",
    "spatial_transpose",
    "padding_shift",
    "flatten_order",
    "precision",
    "quantization",
    "layout",
    "bn_epsilon",
    "bn_scale_bias_swapped",
    "bn_batch_statistics",
    "residual_activation_order",
    "embedding_off_by_one",
    "upsample_align_corners",
    "upsample_mode",
    "pixel_shuffle_order",
    "norm_epsilon",
    "norm_groups",
    "unknown",
)

# kernel_flip: docs/knet.md#flip; padding_shift: docs/tensorflow.md#same-padding;
# flatten_order: docs/layout.md#flatten-order; precision: docs/numerics.md#tf32;
# quantization: docs/numerics.md#quantized.
CAUSE_MEANING = {
    "rounding": "differences within the floating-point bound: no bug",
    "kernel_flip": "kernel not rotated (Knet mode=0 is true convolution, TensorFlow cross-correlation)",
    "spatial_transpose": "height and width swapped",
    "padding_shift": "padding off by one or asymmetric ('SAME'-style) on one side",
    "flatten_order": "features flattened in another order before a dense layer",
    "precision": "a lower-precision step (float16, bfloat16, TF32)",
    "quantization": "weights quantized on one side",
    "layout": "an unconverted or wrongly permuted array",
    "bn_epsilon": "batchnorm epsilon differs (Keras's default 1e-3 instead of Knet's 1e-5)",
    "bn_scale_bias_swapped": "batchnorm scale and bias swapped (the packed bnparams vector "
    "[scale; bias] split the wrong way round)",
    "bn_batch_statistics": "batchnorm normalised with the batch's statistics instead of the "
    "running ones (Keras's training mode left on)",
    "residual_activation_order": "a residual sum taken after the activation instead of before "
    "it (or the other way round)",
    "embedding_off_by_one": "embedding indices off by one (Knet's 1-based vs 0-based)",
    "upsample_align_corners": "a linear upsampling with the other corner convention (Flux's "
    "align_corners=true against Keras's half-pixel centres)",
    "upsample_mode": "nearest-neighbour upsampling where linear interpolation was meant, or the "
    "other way round",
    "pixel_shuffle_order": "pixel shuffle channels read in another order (TensorFlow's "
    "depth_to_space instead of NNlib's pixel_shuffle)",
    "norm_epsilon": "a layer/group norm's epsilon differs or enters differently (Keras's "
    "default 1e-3; sqrt(var + eps), sqrt(var + eps^2) or std + eps: which Flux version)",
    "norm_groups": "a group norm's channels grouped another way (interleaved, or another "
    "number of groups)",
    "unknown": "no hypothesis explains the differences",
}


@dataclass
class Finding:
    """One tested hypothesis: how well it explains `actual`.

    `score` is 1 when the hypothesis reproduces `actual` within the floating-point bound, and
    otherwise the fraction of the (log-scaled) error it removes, capped lower for checks that
    look at the outputs only. `explains` is True when it agrees within the bound.
    """

    cause: str
    score: float
    evidence: str
    hypothesis: str  # short machine-readable name, e.g. "pad_(0, 2)_(1, 1)"
    explains: bool = False
    max_error_to_tolerance: float | None = None
    max_ulp: float | None = None
    basis: str = "recomputation"  # or "outputs"
    details: dict[str, Any] = field(default_factory=dict)
    misfit: float = float("inf")  # mean log2(1 + error/tolerance); ranks equal scores

    def to_dict(self) -> dict:
        return {
            "cause": self.cause,
            "score": round(float(self.score), 4),
            "evidence": self.evidence,
            "hypothesis": self.hypothesis,
            "explains": bool(self.explains),
            "max_error_to_tolerance": _num(self.max_error_to_tolerance),
            "max_ulp": _num(self.max_ulp),
            "basis": self.basis,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
        }

    def line(self) -> str:
        return f"{self.score:.2f} {self.cause}: {self.evidence}"


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else str(v)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(i) for i in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@dataclass
class Diagnosis:
    """What `porting.diagnose` concluded.

    - `cause`: one of `CAUSES`; `rounding` means no bug (the differences are within the
      floating-point bound of porting.compare).
    - `evidence`: the concrete, numeric reason; `confidence`: the top score (0-1).
    - `alternatives`: the other causes that were tested, best first (each a `Finding`).
    - `comparison`: porting.compare's report on expected vs actual (None if shapes differ).

    For plots: `error` (actual - expected), `tolerance` (per element), `error_to_tolerance`,
    `ulp` (errors in ULPs of the lower precision), `ulp_histogram()` and `error_map()`.
    """

    cause: str
    confidence: float
    evidence: str
    alternatives: list[Finding]
    basis: str
    comparison: Any = None
    finding: Finding | None = None
    notes: list[str] = field(default_factory=list)
    # arrays for plots (not in to_dict / repr)
    expected: np.ndarray | None = field(default=None, repr=False)
    actual: np.ndarray | None = field(default=None, repr=False)
    magnitude: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the cause is `rounding`: the port is correct."""
        return self.cause == "rounding"

    # ------------------------------------------------------------------ plot data
    @property
    def error(self) -> np.ndarray | None:
        """`actual - expected` in float64 (TF layout), or None when the shapes differ."""
        if self.expected is None or self.actual is None or self.expected.shape != self.actual.shape:
            return None
        return self.actual.astype(np.float64) - self.expected.astype(np.float64)

    @property
    def tolerance(self) -> np.ndarray | None:
        """Per-element tolerance of porting.compare (same shape as expected)."""
        if self.comparison is None or self.magnitude is None:
            return None
        return tolerance_array(self.comparison.tolerance, self.magnitude)

    @property
    def error_to_tolerance(self) -> np.ndarray | None:
        """|actual - expected| / tolerance: below 1 everywhere means rounding."""
        err, tol = self.error, self.tolerance
        if err is None or tol is None:
            return None
        return np.abs(err) / tol

    @property
    def ulp(self) -> np.ndarray | None:
        """|actual - expected| in units in the last place of the lower precision at |expected|."""
        err = self.error
        if err is None or self.expected is None:
            return None
        prec = self.comparison.tolerance.precision if self.comparison is not None else "float64"
        dt = _storage(prec)
        with np.errstate(over="ignore"):
            spacing = np.spacing(np.abs(self.expected).astype(dt)).astype(np.float64)
        return np.abs(err) / spacing

    def ulp_histogram(self, bins: int = 40):
        """`(counts, edges)` of the nonzero errors in ULPs on log-spaced bins, plus the count
        of exact zeros as `counts_zero`: returns `(counts, edges, n_zero)`."""
        u = self.ulp
        if u is None:
            return None
        u = u[np.isfinite(u)].ravel()
        nz = u[u > 0]
        n_zero = int(u.size - nz.size)
        if nz.size == 0:
            return np.zeros(0, dtype=int), np.zeros(1), n_zero
        lo, hi = np.log10(nz.min()), np.log10(nz.max())
        if hi > lo:
            edges = np.logspace(lo, hi, bins + 1)
            edges[0], edges[-1] = nz.min(), nz.max()  # exact ends: no value falls outside
        else:
            edges = np.array([nz.min() * 0.9, nz.max() * 1.1])
        counts, edges = np.histogram(nz, bins=edges)
        return counts, edges, n_zero

    def error_map(self) -> np.ndarray | None:
        """Largest error/tolerance at each spatial position (max over batch and channels), a
        `(H, W)` array for 4-D outputs, `(W,)` for 3-D, `(D, H, W)` for 5-D."""
        r = self.error_to_tolerance
        if r is None or r.ndim < 3:
            return None
        r = np.where(np.isfinite(r), r, np.inf)
        return r.max(axis=(0, r.ndim - 1))

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        return {
            "cause": self.cause,
            "ok": self.ok,
            "confidence": round(float(self.confidence), 4),
            "evidence": self.evidence,
            "meaning": CAUSE_MEANING[self.cause],
            "basis": self.basis,
            "finding": self.finding.to_dict() if self.finding is not None else None,
            "alternatives": [f.to_dict() for f in self.alternatives],
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        lines = [f"{self.cause} (confidence {self.confidence:.2f}): {self.evidence}"]
        lines.append(f"  basis: {self.basis}")
        if self.alternatives:
            lines.append("  alternatives:")
            lines += [f"    {f.line()}" for f in self.alternatives]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
