"""Run the Knet side and the TensorFlow side on the same data and say whether they agree.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
>>> x = rng.standard_normal((7, 5, 2, 1)).astype(np.float32)
>>> verify_conv4(w, x, padding=1).ok
True
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porting._checks import check_choice, short_repr
from porting.comparison import Comparison, compare
from porting.errors import PortingError
from porting.geometry import ConvOp

__all__ = ["verify_conv4", "VerifyReport", "versions"]


def versions(*, tensorflow: bool = True) -> dict[str, str | None]:
    """Versions of what took part: Python, NumPy, porting, and TensorFlow/Keras if imported."""
    import porting

    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "porting": porting.__version__,
    }
    if tensorflow:
        from porting import tf as ptf

        out.update(ptf.versions())
    return out


@dataclass
class VerifyReport:
    """What `verify_conv4` ran, on what, and whether the two sides agree."""

    op: str
    ok: bool
    comparison: Comparison
    knet_backend: str
    knet_backend_reason: str
    geometry: str
    spatial: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    versions: dict[str, str | None]
    diagnosis: Any = None  # filled in when the sides differ and a diagnosis could be made
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        diag = self.diagnosis
        return {
            "op": self.op,
            "ok": self.ok,
            "comparison": self.comparison.to_dict(),
            "knet_backend": self.knet_backend,
            "knet_backend_reason": self.knet_backend_reason,
            "geometry": self.geometry,
            "spatial": self.spatial,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "dtypes": self.dtypes,
            "versions": self.versions,
            "diagnosis": diag.to_dict() if hasattr(diag, "to_dict") else diag,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        head = (
            "OK: Knet and TensorFlow agree" if self.ok else "MISMATCH: Knet and TensorFlow differ"
        )
        lines = [
            f"{head} ({self.op})",
            f"  Knet side: backend {self.knet_backend!r} ({self.knet_backend_reason}), "
            f"{self.dtypes['knet']}",
            f"  TensorFlow side: {self.dtypes['tf']}, spatial={self.spatial!r} "
            f"({'X1 is the width' if self.spatial == 'reverse' else 'X1 is the height'})",
            f"  geometry: {self.geometry}",
            "  shapes: " + ", ".join(f"{k} {v}" for k, v in self.shapes.items()),
            *("  " + line for line in str(self.comparison).splitlines()),
        ]
        if self.diagnosis is not None:
            lines.append("  diagnosis: " + str(self.diagnosis).replace("\n", "\n  "))
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


def _tf_dtype(dtype: Any, default: np.dtype) -> np.dtype:
    if dtype is None:
        return default
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise PortingError(
            f"dtype={short_repr(dtype)}: expected 'float32', 'float64' or None (the inputs')"
        )
    return dt


def verify_conv4(
    w: Any,
    x: Any,
    *,
    padding: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    mode: Any = 0,
    alpha: Any = 1,
    spatial: str = "reverse",
    dtype: Any = None,
    knet: str = "auto",
    diagnose: bool = True,
) -> VerifyReport:
    """Check that TensorFlow, given the converted arrays, computes what Knet's `conv4` computes.

    `w` `(W1, ..., Cin, Cout)` and `x` `(X1, ..., Cin, N)` are Julia-indexed, as they come out
    of Julia. The Knet side runs `porting.knet.conv4` on `knet=` ("auto", "reference", "julia",
    ...); the TensorFlow side runs `porting.tf.conv` (explicit symmetric padding, never "SAME":
    docs/tensorflow.md#explicit-padding) on `activations_to_tf(x, spatial)` and
    `kernel_to_tf(w, mode, spatial)` in `dtype` (default: the inputs' dtype; e.g. Knet in
    Float64 against TensorFlow in float32). The comparison's tolerance comes from the lower
    precision, K = kernel volume x input channels, and the sum of magnitudes per output
    (`porting.magnitude`; docs/numerics.md#tolerance, #sum-of-magnitudes).

    The arguments are validated once, into a `porting.geometry.ConvOp` that both sides run.
    """
    from porting import knet as pknet
    from porting import layout, magnitude
    from porting import tf as ptf

    check_choice(spatial, "spatial", layout.SPATIAL_CHOICES)
    op = ConvOp.knet(
        w, x, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha
    )
    tf_dtype = _tf_dtype(dtype, op.x.dtype)

    y_knet = pknet.run_conv4(op, backend=knet)
    # Sum of magnitudes per output element, for the tolerance (float64: it only sets a bound).
    mag = magnitude.of_conv(op)
    y_tf = ptf.run_conv4(op.astype(tf_dtype), spatial)
    expected = layout.activations_array_to_tf(np.asarray(y_knet), spatial)
    comparison = compare(
        expected, y_tf, k=op.dims.terms, magnitude=layout.activations_array_to_tf(mag, spatial)
    )
    report = VerifyReport(
        op="conv4",
        ok=comparison.ok,
        comparison=comparison,
        knet_backend=str(getattr(y_knet, "backend", None)),
        knet_backend_reason=str(getattr(y_knet, "backend_reason", None)),
        geometry=repr(op.dims.geometry),
        spatial=spatial,
        shapes={
            "w": tuple(op.w.shape),
            "x": tuple(op.x.shape),
            "y (Knet)": tuple(y_knet.shape),
            "y (TF)": tuple(y_tf.shape),
        },
        dtypes={"knet": str(y_knet.dtype), "tf": str(y_tf.dtype)},
        versions=versions(),
    )
    if not report.ok and diagnose:
        report.diagnosis = _diagnose(expected, y_tf, op, spatial)
    return report


def _diagnose(expected: np.ndarray, actual: np.ndarray, op: ConvOp, spatial: str) -> Any:
    """Name the likely cause of a mismatch (porting.diagnose)."""
    from porting.diagnosis import diagnose

    return diagnose(
        expected,
        actual,
        w=op.w,
        x=op.x,
        padding=op.dims.padding,
        stride=op.dims.stride,
        dilation=op.dims.dilation,
        mode=op.dims.mode,
        alpha=op.alpha,
        spatial=spatial,
    )
