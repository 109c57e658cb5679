"""Legacy: `KnetPool`, the custom layer earlier versions of porting wrote into converted models.

`to_keras` no longer uses it (converted models hold Keras built-in layers only, so they load
without porting); it stays registered so that `.keras` files written by those versions still
load through `porting.model.load_keras`. It computed Knet's pooling: max pooling padded with
-Inf, mean pooling counting padding as zeros, and 3-D float64 pooling from strided slices.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import keras
from keras import ops

__all__ = ["KnetPool"]


@keras.saving.register_keras_serializable(package="porting")
class KnetPool(keras.layers.Layer):  # type: ignore[misc]  # Keras is untyped (Any)
    """Knet `pool` on channels-last input: `window`, `strides`, `padding` per spatial axis in
    TensorFlow order; `mode` "max" (padding never wins) or "mean" (padding counts as zeros,
    divides by prod(window))."""

    def __init__(
        self,
        window: Iterable[int],
        strides: Iterable[int],
        padding: Iterable[int],
        mode: str = "max",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.window = tuple(int(v) for v in window)
        self.strides = tuple(int(v) for v in strides)
        self.padding = tuple(int(v) for v in padding)
        if mode not in ("max", "mean"):
            raise ValueError(f"KnetPool mode={mode!r}: expected 'max' or 'mean'")
        self.mode = mode

    def _out(self, n: int | None, i: int) -> int | None:
        return (
            None if n is None else 1 + (n + 2 * self.padding[i] - self.window[i]) // self.strides[i]
        )

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        spatial = input_shape[1:-1]
        return (input_shape[0], *(self._out(n, i) for i, n in enumerate(spatial)), input_shape[-1])

    def call(self, x: Any) -> Any:
        nd = len(self.window)
        if any(self.padding):
            fill = float("-inf") if self.mode == "max" else 0.0
            pads = [[0, 0], *([p, p] for p in self.padding), [0, 0]]
            x = ops.pad(x, pads, constant_values=fill)
        native = nd < 3 or keras.backend.standardize_dtype(x.dtype) != "float64"
        if native:
            if self.mode == "max":
                return ops.max_pool(x, self.window, self.strides, padding="valid")
            return ops.average_pool(x, self.window, self.strides, padding="valid")
        # float64 3-D: one strided slice per window offset (exact for max; a sum for mean)
        out = [
            1 + (int(n) - k) // s
            for n, k, s in zip(x.shape[1:-1], self.window, self.strides, strict=True)
        ]
        acc = None
        for off in itertools.product(*(range(k) for k in self.window)):
            idx = (
                slice(None),
                *(
                    slice(o, o + (y - 1) * s + 1, s)
                    for o, y, s in zip(off, out, self.strides, strict=True)
                ),
                slice(None),
            )
            part = x[idx]
            if acc is None:
                acc = part
            else:
                acc = ops.maximum(acc, part) if self.mode == "max" else acc + part
        if self.mode == "mean" and acc is not None:
            acc = acc / float(_prod(self.window))
        return acc

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            window=self.window, strides=self.strides, padding=self.padding, mode=self.mode
        )
        return config


def _prod(t: Iterable[int]) -> int:
    p = 1
    for v in t:
        p *= v
    return p
