"""What `verify_data` accumulates over a data set, batch by batch: per layer the worst error /
tolerance and its histogram (`LayerSummary`), end to end each sample's error (the ULP
histogram, the k worst samples), and for a classifier the top-1 and top-5 agreement.

The summaries have a fixed size: memory does not grow with the number of samples (at most
`MAX_LISTED` disagreeing samples are listed by index; the count is always exact). `Tally.add`
takes the batches in order, so the report is the same however many were checked at once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting.errors import PortingError

__all__ = ["Batch", "LayerSummary", "Tally", "ULP_EDGES", "RATIO_EDGES", "MAX_LISTED"]

MAX_LISTED = 1000  # disagreeing samples listed by index (the count is always exact)
ULP_EDGES = np.array([0.0, 0.5] + [2.0**i + 0.5 for i in range(0, 24)] + [np.inf])
"""End-to-end error histogram bins, in ULPs of the Knet output: 0, 1, 2, (2, 4], ..., > 2^23."""
RATIO_EDGES = np.concatenate([[0.0], 10.0 ** np.arange(-9, 4.01, 0.5), [np.inf]])
"""Per-layer histogram bins of a batch's worst error / tolerance (half-decades, 1e-9..1e4)."""


@dataclass
class LayerSummary:
    """One layer over the whole data set."""

    index: int
    name: str
    kind: str
    worst_ratio: float = 0.0  # worst error / tolerance over every sample
    worst_sample: int | None = None
    worst_abs_error: float = 0.0
    batches_over: int = 0  # batches with some element outside its tolerance
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(len(RATIO_EDGES) - 1, np.int64))

    @property
    def ok(self) -> bool:
        return self.batches_over == 0

    def quantile(self, q: float) -> float:
        """The `q` quantile of the batches' worst error / tolerance, as the upper edge of its
        histogram bin (an upper bound, within half a decade)."""
        total = int(self.histogram.sum())
        if not total:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.histogram), q * total, side="left"))
        return float(min(RATIO_EDGES[i + 1], self.worst_ratio))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "ok": self.ok,
            "worst_error_to_tolerance": self.worst_ratio,
            "worst_sample": self.worst_sample,
            "worst_abs_error": self.worst_abs_error,
            "batches_over_tolerance": self.batches_over,
            "median_error_to_tolerance_at_most": self.quantile(0.5),
            "p99_error_to_tolerance_at_most": self.quantile(0.99),
            "histogram": {"edges": RATIO_EDGES.tolist(), "counts": self.histogram.tolist()},
        }


@dataclass
class Batch:
    """One batch's check: what `Tally` takes, and the notes and versions `verify_data` keeps."""

    lo: int  # index of its first sample
    n: int
    checks: list[tuple[Any, bool]]  # per row: (Comparison, ok)
    expected: np.ndarray  # the final outputs compared, TensorFlow layout
    actual: np.ndarray
    first_bad: str | None
    diagnosis: Any
    notes: list[str]
    versions: dict[str, Any]
    backend: tuple[str, str]
    dtypes: dict[str, str]


class Tally:
    """The running summaries of `verify_data` (`layers`: one `LayerSummary` per row).

    `label(i)` names sample i (the data source's); `lower` is the precision whose ULPs the
    end-to-end errors are counted in; `classifier` forces (True) or turns off (False) the
    top-1/top-5 figures (default: a final output `(N, classes)` with 2 or more classes);
    the `k_worst` worst samples are kept."""

    def __init__(
        self,
        layers: list[LayerSummary],
        label: Callable[[int], str],
        lower: np.dtype[Any],
        classifier: bool | None,
        k_worst: int,
    ) -> None:
        self.layers, self.label, self.lower = layers, label, lower
        self.classifier, self.k_worst = classifier, k_worst
        self.ulp_histogram = np.zeros(len(ULP_EDGES) - 1, np.int64)
        self.heap: list[tuple[float, int, dict[str, Any]]] = []
        self.end_to_end: dict[str, Any] = {
            "max_abs_error": 0.0,
            "max_ulp": 0.0,
            "max_rel_error": 0.0,
            "worst_sample": None,
            "max_abs_expected": 0.0,
        }
        self.classes: int | None = None
        self.disagree: list[int] = []
        self.n_disagree = self.n_top5 = self.n_top5_checked = 0

    def add(
        self,
        lo: int,
        nb: int,
        checks: list[tuple[Any, bool]],
        expected: np.ndarray,
        actual: np.ndarray,
    ) -> None:
        """The batch of samples `lo` .. `lo + nb - 1`: its rows' `(Comparison, ok)` and the
        final outputs compared (TensorFlow layout)."""
        # ---- per layer
        for s, (c, row_ok) in zip(self.layers, checks, strict=True):
            r = float(c.max_error_to_tolerance)
            s.histogram[
                min(int(np.searchsorted(RATIO_EDGES, r, side="right")) - 1, len(s.histogram) - 1)
            ] += 1
            if not row_ok:
                s.batches_over += 1
            if r > s.worst_ratio or s.worst_sample is None:
                s.worst_ratio = r
                s.worst_sample = lo + int(c.worst_index[0]) if c.worst_index else lo
            s.worst_abs_error = max(s.worst_abs_error, float(c.max_abs_error))

        # ---- end to end, per sample
        if expected.shape != actual.shape:
            raise PortingError(
                f"the Keras model's output has shape {actual.shape}, the Knet model's "
                f"{expected.shape} (TensorFlow layout); not the same model"
            )
        e64 = expected.astype(np.float64).reshape(nb, -1)
        a64 = actual.astype(np.float64).reshape(nb, -1)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            d = np.abs(e64 - a64)
            # NaN on both sides agrees; NaN on one side is an infinite error
            d = np.where(np.isnan(e64) & np.isnan(a64), 0.0, np.where(np.isnan(d), np.inf, d))
            spacing = (
                np.spacing(np.abs(expected.astype(self.lower))).astype(np.float64).reshape(nb, -1)
            )
            ulp = d / spacing
        self.ulp_histogram += np.histogram(
            np.nan_to_num(ulp, nan=np.inf, posinf=np.inf), ULP_EDGES
        )[0]
        per_abs = d.max(axis=1)
        per_ulp = ulp.max(axis=1)
        peak = np.abs(e64).max(axis=1)
        per_rel = np.where(peak > 0, per_abs / np.where(peak > 0, peak, 1.0), per_abs)
        j = int(np.nanargmax(per_rel)) if np.isfinite(per_rel).any() else 0
        if (
            per_rel[j] >= self.end_to_end["max_rel_error"]
            or self.end_to_end["worst_sample"] is None
        ):
            self.end_to_end["worst_sample"] = lo + j
        self.end_to_end["max_abs_error"] = max(
            self.end_to_end["max_abs_error"], float(np.nanmax(per_abs))
        )
        self.end_to_end["max_ulp"] = max(self.end_to_end["max_ulp"], float(np.nanmax(per_ulp)))
        self.end_to_end["max_rel_error"] = max(
            self.end_to_end["max_rel_error"], float(np.nanmax(per_rel))
        )
        self.end_to_end["max_abs_expected"] = max(
            self.end_to_end["max_abs_expected"], float(np.nanmax(peak))
        )

        is_cls = (
            self.classifier
            if self.classifier is not None
            else (expected.ndim == 2 and expected.shape[1] >= 2)
        )
        top1_k = top1_a = None
        if is_cls:
            classes = int(e64.shape[1])
            top1_k, top1_a = e64.argmax(axis=1), a64.argmax(axis=1)
            diff = np.flatnonzero(top1_k != top1_a)
            self.n_disagree += int(diff.size)
            room = MAX_LISTED - len(self.disagree)
            self.disagree.extend(lo + int(ii) for ii in diff[: max(room, 0)])
            if classes > 5:
                t5k = np.sort(np.argpartition(-e64, 5, axis=1)[:, :5], axis=1)
                t5a = np.sort(np.argpartition(-a64, 5, axis=1)[:, :5], axis=1)
                self.n_top5 += int((t5k == t5a).all(axis=1).sum())
                self.n_top5_checked += nb
            self.classes = classes
        for i in range(nb):
            entry = {
                "index": lo + i,
                "label": self.label(lo + i),
                "max_abs_error": float(per_abs[i]),
                "max_ulp": float(per_ulp[i]),
                "rel_error": float(per_rel[i]),
            }
            if top1_k is not None and top1_a is not None:
                entry["top1_knet"], entry["top1_keras"] = int(top1_k[i]), int(top1_a[i])
            key = float(per_rel[i]) if np.isfinite(per_rel[i]) else math.inf
            item = (key, -(lo + i), entry)
            if len(self.heap) < self.k_worst:
                heapq.heappush(self.heap, item)
            elif self.k_worst and item[:2] > self.heap[0][:2]:
                heapq.heapreplace(self.heap, item)

    def classifier_figures(self, done: int) -> dict[str, Any] | None:
        """The report's classifier figures over `done` samples (None: not a classifier)."""
        if self.classes is None:
            return None
        return {
            "classes": self.classes,
            "top1_agreement": (done - self.n_disagree) / done if done else None,
            "top1_disagree": self.n_disagree,
            "top1_disagree_samples": self.disagree,
            "top1_disagree_listed": len(self.disagree),
            "top5_agreement": self.n_top5 / self.n_top5_checked if self.n_top5_checked else None,
            "top5_rule": "the same set of 5 classes on both sides (classes > 5 only)",
        }

    def worst(self) -> list[dict[str, Any]]:
        """The k worst samples, worst first (the earlier sample first among equals)."""
        return [e for _, _, e in sorted(self.heap, key=lambda it: (-it[0], -it[1]))]
