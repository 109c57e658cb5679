"""The `embed` kind: Knet `w[:, x]` (and Layers21's `Embed`), the first layer of a sequence model.

Knet code embeds integer tokens by indexing (docs/knet.md#embed): `w` of size `(dim, vocab)`, `x` 1-based integers,
`w[:, x]` of size `(dim, size(x)...)`. Keras: `Embedding(vocab, dim)` (0-based, weight
`(vocab, dim)` = `w'`, never `mask_zero`: Knet has no padding index), which gathers the same
numbers: the layer is an exact copy (K = 1, S = |w[:, x]|).

Layouts: a model's arrays are batch last. The model input is
an integer array `(T, B)` (Knet's `x` of size `(B, T)`, permuted; a `(B,)` vector is read as
`(1, B)`: one step, whose `w[:, x]` Knet gives as `(dim, B)`); a sequence between layers is
held as `(T, X, B)`, which is Knet's `(X, B, T)` permuted (`knet_sequence` / `model_sequence`
convert) and TensorFlow's `(B, T, X)` under porting.layout's rule for one spatial dimension.
An index outside `1:vocab` is bad input, named with its position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike, DTypeLike

from porting.errors import PortingError
from porting.model import schema
from porting.model.layer import Example, KerasLayer, Kind, Layer, weight_array
from porting.model.stages import Array, KerasContext, KerasTensor, Stage

if TYPE_CHECKING:
    from porting.model.planning import Step

__all__ = ["Embed", "EmbedStage", "KIND", "check_indices", "knet_sequence", "model_sequence"]


def knet_sequence(a: np.ndarray) -> np.ndarray:
    """A model-layout sequence `(T, X, B)` -> Knet's `(X, B, T)`."""
    return np.asfortranarray(np.asarray(a).transpose(1, 2, 0))


def model_sequence(a: np.ndarray) -> np.ndarray:
    """Knet's `(X, B, T)` -> the model layout `(T, X, B)`."""
    return np.asarray(a).transpose(2, 0, 1)


def check_indices(x: ArrayLike, vocab: int, where: str) -> np.ndarray:
    """`x` as an int64 array of 1-based indices in `1:vocab`, or `PortingError` naming the first
    bad index and its (Julia, 1-based) position."""
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - the user's input
        raise PortingError(f"{where}: the input must be an integer array, got {e}") from None
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise PortingError(
            f"{where}: the input is {a.dtype} {a.shape}; expected integer token indices "
            f"(1-based, 1:{vocab}, as Knet's w[:, x] takes them)"
        )
    if a.ndim not in (1, 2) or a.size == 0:
        raise PortingError(
            f"{where}: the input has shape {a.shape}; expected (T, B): 1-based token indices, "
            "time steps by batch (Knet's (B, T) x permuted, batch last), or (B,): one step"
        )
    bad = (a < 1) | (a > vocab)
    if bad.any():
        pos = np.argwhere(bad.T)[0][::-1]  # first in Julia's column-major order
        value = int(a[tuple(pos)])
        julia = ", ".join(str(int(p) + 1) for p in pos)
        raise PortingError(
            f"{where}: index {value} at x[{julia}] is out of range; expected 1 <= index <= "
            f"{vocab} (the vocabulary size, size(w, 2); Knet indexes from 1)"
        )
    if a.ndim == 1:  # Knet's w[:, x] of a (B,) vector: one step per sequence, (1, B)
        a = a.reshape(1, -1)
    return a.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class EmbedStage(Stage):
    """Knet `w[:, x]` on the model's `(T, B)` indices -> `(T, dim, B)`."""

    w: Any = None
    needs_output = True

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if len(size) != 1:
            raise PortingError(
                f"its input has size {size} per sample; expected (T,): token indices of one "
                "sequence (the model input is (T, B))"
            )
        return (int(size[0]), int(self.w.shape[0]))

    def forward(self, x: Array, backend: str, tags: list[Array]) -> Array:
        idx = check_indices(x, int(self.w.shape[1]), "embed")
        y = self.w[:, idx - 1]  # (dim, T, B): Knet's w[:, x'] permuted
        return np.ascontiguousarray(y.transpose(1, 0, 2))

    def magnitude(self, s: Array, out: Array | None, wd: npt.DTypeLike) -> Array:
        """An exact copy: S = |w[:, x]| (porting.magnitude's rule for a gather)."""
        s_out: Array = np.abs(np.asarray(out, dtype=wd))
        return s_out

    def terms(self, in_size: tuple[int, ...]) -> int | None:
        return 1

    def build(
        self, ctx: KerasContext, t: KerasTensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
    ) -> KerasTensor:
        dim, vocab = (int(n) for n in self.w.shape)
        return ctx.make("Embedding", self.role, input_dim=vocab, output_dim=dim, mask_zero=False)(t)


@dataclass(eq=False)
class Embed(Layer):
    """Knet `w[:, x]`: `w` of size `(dim, vocab)`, `x` 1-based indices (Layers21's `Embed`
    holds the same `w`). It reads the model's integer input, so it is the first layer."""

    w: np.ndarray
    _: KW_ONLY
    name: str | None = None
    kind = "embed"
    integer_input = True  # the model's input is token indices (porting.model.forward)
    input_dtype = "int32"  # the Keras model's input

    def __post_init__(self) -> None:
        self.w = weight_array(self.w, "w", self.label, (2,))

    @property
    def vocab(self) -> int:
        return int(self.w.shape[1])

    @property
    def dim(self) -> int:
        return int(self.w.shape[0])

    def params(self) -> dict[str, np.ndarray]:
        return {"w": self.w}

    def stages(self) -> list[Stage]:
        return [EmbedStage(w=self.w)]

    def check_follows(self, prev: Layer) -> None:
        raise PortingError(
            f"{self.label} follows {prev.label}; an embedding reads the model's integer "
            "input (token indices), so it must be the first layer"
        )

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        try:
            return EmbedStage(w=self.w).out_size(tuple(size))
        except PortingError as e:
            raise PortingError(f"{self.label}: {e}") from None

    def check_input(self, x: ArrayLike) -> np.ndarray:
        """The model input: `(T, B)` 1-based indices in `1:vocab`."""
        return check_indices(x, self.vocab, f"{self.label}: input")

    def keras_input(self, x_tf: np.ndarray) -> np.ndarray:
        """The Keras model's input for Knet's indices (TensorFlow layout): 0-based, `x - 1`."""
        return x_tf - 1

    def default_input(
        self, size: tuple[int, ...], batch: int = 2, seed: int = 0, dtype: DTypeLike | None = None
    ) -> np.ndarray:
        """Deterministic indices `(size..., batch)` uniform in `1:vocab` (`dtype` unused:
        indices are integers)."""
        rng = np.random.default_rng(seed)
        return np.asfortranarray(rng.integers(1, self.vocab + 1, size=(*size, batch)))

    def describe(self) -> str:
        return f"embed w {self.w.shape} (dim {self.dim}, vocabulary {self.vocab})"


def _weights(layer: Embed, step: Step, spatial: str, dtype: npt.DTypeLike) -> list[np.ndarray]:
    """Keras `Embedding` weight `(vocab, dim)`: row k-1 is Knet's column k."""
    return [np.ascontiguousarray(layer.w.T)]


def _from_json(d: dict[str, Any], where: str, param: Callable[[str], Any]) -> Embed:
    w = schema.weight(param, where, "an embedding needs w (dim, vocab)")
    return Embed(w, name=d.get("name"))


def _example() -> Example:
    w = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    return [Embed(w)], (5,)


KIND = Kind(
    name="embed",
    layer=Embed,
    prefix="embed",
    from_json=_from_json,
    to_json=lambda layer: {},
    weights=_weights,
    knet="`w[:, x]`",
    keras="`Embedding` (fed `x - 1`: 0-based)",
    schema="`w[:, x]`: params.w `(dim, vocab)` (since version 2)",
    keras_layers=(KerasLayer("Embedding"),),
    example=_example,
)
