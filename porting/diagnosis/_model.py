"""The layer-level causes for `porting.model.verify_model`'s first divergent layer.

`diagnose_step` routes a divergent batchnorm layer to `diagnose_batchnorm` and a divergent
residual sum (`add`) to `diagnose_residual`, with the layer's Knet inputs and output and the
port's output for those same inputs; other kinds get None (the conv/dense diagnosis applies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from porting.diagnosis._layers import diagnose_batchnorm, diagnose_residual
from porting.diagnosis._result import Diagnosis

__all__ = ["diagnose_step"]


def diagnose_step(
    step,
    x_ins_tf: Sequence[np.ndarray],
    expected_tf: np.ndarray,
    actual_tf: np.ndarray,
    keras_weights: Callable[[], list[np.ndarray]],
) -> Diagnosis | None:
    """A Diagnosis for a batchnorm or add layer (`step` of the model's plan), or None.

    `x_ins_tf`: the layer's Knet inputs, `expected_tf` its Knet output and `actual_tf` the
    port's output computed from those inputs, all in TensorFlow layout; `keras_weights()`
    gives the batchnorm's Knet parameters in Keras's order and feature order (gamma, beta,
    moving mean, moving variance; the last two only for a non-affine one)."""
    kind = step.layer.kind
    if kind == "batchnorm" and len(step.stages) == 1:
        st = step.stages[0]
        ws = keras_weights()
        g, b = (ws[0], ws[1]) if len(ws) == 4 else (None, None)
        mean, var = ws[-2], ws[-1]
        return diagnose_batchnorm(
            x_ins_tf[0],
            actual_tf,
            mean=mean,
            var=var,
            scale=g,
            bias=b,
            eps=float(st.eps),
            expected=expected_tf,
        )
    if kind == "add" and len(x_ins_tf) >= 2:
        act = getattr(step.layer, "activation", "identity")
        if act in ("softmax", "logsoftmax"):
            return None
        return diagnose_residual(list(x_ins_tf), actual_tf, activation=act, expected=expected_tf)
    return None
