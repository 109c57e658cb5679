"""Explain a mismatch between a Knet result and its port: `diagnose(expected, actual, ...)`.

The answer is a `Diagnosis` whose `cause` is one of `CAUSES`: `rounding` (no bug: within the
floating-point bound of porting.compare), `kernel_flip`, `spatial_transpose`, `padding_shift`,
`flatten_order`, `precision`, `quantization`, `layout`, or `unknown`, with numeric evidence and
the ranked alternatives (the facts behind the causes: docs/knet.md#flip, docs/layout.md#width-axis,
docs/tensorflow.md#same-padding, docs/layout.md#flatten-order, docs/numerics.md#tf32,
#quantized and #bugs). Layer-level causes (`bn_epsilon`, `bn_scale_bias_swapped`,
`bn_batch_statistics`, `residual_activation_order`, `embedding_off_by_one`; docs/knet.md#batchnorm,
#embed) come from `diagnose_batchnorm`, `diagnose_residual` and `diagnose_embedding`; resampling causes
(`upsample_align_corners`, `upsample_mode`, `pixel_shuffle_order`; docs/flux.md#upsample-flux,
#pixelshuffle-flux) from `diagnose_upsample` and `diagnose_pixel_shuffle`. Nothing here
imports TensorFlow.

`porting.diagnose` is this package's `diagnose` function (the package itself is
`porting.diagnosis`).
"""

from __future__ import annotations

from porting.diagnosis._core import K_ASSUMED, MAX_POSITIONS, diagnose
from porting.diagnosis._layers import diagnose_batchnorm, diagnose_embedding, diagnose_residual
from porting.diagnosis._norms import diagnose_normalisation
from porting.diagnosis._resample import diagnose_pixel_shuffle, diagnose_upsample
from porting.diagnosis._result import CAUSE_MEANING, CAUSES, Diagnosis, Finding

__all__ = [
    "diagnose",
    "diagnose_batchnorm",
    "diagnose_residual",
    "diagnose_embedding",
    "diagnose_upsample",
    "diagnose_pixel_shuffle",
    "diagnose_normalisation",
    "Diagnosis",
    "Finding",
    "CAUSES",
    "CAUSE_MEANING",
    "K_ASSUMED",
    "MAX_POSITIONS",
]
