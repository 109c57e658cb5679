"""The layer table: every layer kind, defined in one file each, looked up by its name.

A kind's file defines its layer class (whose `stages()` are Knet's computation, in order:
porting.model.stages gives each stage's Knet forward, Keras build and magnitudes) and its row
(`porting.model.layer.Kind`: weight conversion and export schema). Adding a kind is one file
here plus its row in `KINDS`.
"""

from __future__ import annotations

from porting.errors import PortingError
from porting.model.kinds import (
    activation,
    batchnorm,
    conv,
    deconv,
    dense,
    dropout,
    embed,
    linear,
    mat,
    merge,
    pool,
    reshape,
    rnn,
    zeropad,
)
from porting.model.layer import Kind, Layer

__all__ = ["KINDS", "kind_of"]

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        conv.KIND,
        dense.KIND,
        pool.KIND,
        mat.KIND,
        dropout.KIND,
        activation.KIND,
        batchnorm.KIND,
        deconv.KIND,
        merge.KIND_ADD,
        merge.KIND_CONCAT,
        reshape.KIND,
        zeropad.KIND,
        embed.KIND,
        rnn.KIND_RNN,
        rnn.KIND_TIMEDENSE,
        linear.KIND,
    )
}


def kind_of(layer: Layer) -> Kind:
    """The table row of `layer`'s kind."""
    try:
        return KINDS[layer.kind]
    except KeyError:
        raise PortingError(
            f"{layer.label}: unknown layer kind {layer.kind!r}; expected one of {', '.join(KINDS)}"
        ) from None
