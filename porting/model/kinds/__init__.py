"""The layer table: every layer kind, defined in one file each, looked up by its name.

A kind's file defines its layer class (whose `stages()` are Knet's computation, in order:
porting.model.stages gives each stage's Knet forward, Keras build and magnitudes) and its row
(`porting.model.layer.Kind`: weight conversion, export schema, the Keras layers it builds, its
diagnosis, its prose and a small example). Everything else is derived from `KINDS`: the public
names (`__all__` here; porting.model.spec and porting.model export them), the verification's
Keras fast paths (porting.model.keras_side), the per-kind diagnosis (porting.model.verify) and
the tables of the README, porting.model.convert and
porting.model.export (checked by tests/test_kinds_contract.py, which also runs every row's
example through build, conversion, verification, the export and a reload without porting).

Adding a kind: its file here, and its lines below (its module and classes, their names in
`__all__`, its row in `KINDS`).
"""

from __future__ import annotations

from porting.errors import PortingError
from porting.model.kinds import (
    activation,
    affine,
    batchnorm,
    conv,
    deconv,
    dense,
    dropout,
    embed,
    groupnorm,
    layernorm,
    linear,
    mat,
    merge,
    pixelshuffle,
    pool,
    reshape,
    rnn,
    upsample,
    zeropad,
)
from porting.model.kinds.activation import Activation
from porting.model.kinds.affine import Affine
from porting.model.kinds.batchnorm import BatchNorm
from porting.model.kinds.conv import Conv
from porting.model.kinds.deconv import Deconv
from porting.model.kinds.dense import Dense
from porting.model.kinds.dropout import Dropout
from porting.model.kinds.embed import Embed
from porting.model.kinds.groupnorm import GroupNorm
from porting.model.kinds.layernorm import LayerNorm
from porting.model.kinds.linear import Linear
from porting.model.kinds.mat import Mat
from porting.model.kinds.merge import Add, Concat, Mul
from porting.model.kinds.pixelshuffle import PixelShuffle
from porting.model.kinds.pool import Pool
from porting.model.kinds.reshape import Reshape
from porting.model.kinds.rnn import RNN, TimeDense
from porting.model.kinds.upsample import Upsample
from porting.model.kinds.zeropad import ZeroPad
from porting.model.layer import Kind, Layer

# The layer classes, exported by porting.model and porting.model.spec (a literal list: the
# form type checkers and IDEs follow through `from porting.model.kinds import *`; the contract
# test checks it is the table's classes).
__all__ = [
    "Activation",
    "Affine",
    "BatchNorm",
    "Conv",
    "Deconv",
    "Dense",
    "Dropout",
    "Embed",
    "GroupNorm",
    "LayerNorm",
    "Linear",
    "Mat",
    "Add",
    "Concat",
    "Mul",
    "Pool",
    "Reshape",
    "RNN",
    "TimeDense",
    "ZeroPad",
    "Upsample",
    "PixelShuffle",
]


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
        merge.KIND_MUL,
        affine.KIND,
        reshape.KIND,
        zeropad.KIND,
        embed.KIND,
        rnn.KIND_RNN,
        rnn.KIND_TIMEDENSE,
        linear.KIND,
        upsample.KIND,
        pixelshuffle.KIND,
        layernorm.KIND,
        groupnorm.KIND,
    )
}


def keras_table() -> str:
    """The rows of the "Knet -> Keras" table, one per kind (`Kind.knet`, `Kind.keras`): the
    README's table and porting.model.convert's docstring show them."""
    return "\n".join(f"| `{k.layer.__name__}`: {k.knet} | {k.keras} |" for k in KINDS.values())


def schema_list() -> str:
    """The export schema's keys, one item per kind (`Kind.schema`; porting.model.export's
    docstring shows them)."""
    import textwrap

    return "\n".join(
        textwrap.fill(f"- {k.name}: {k.schema}", 100, subsequent_indent="  ")
        for k in KINDS.values()
    )


def kind_of(layer: Layer) -> Kind:
    """The table row of `layer`'s kind."""
    try:
        return KINDS[layer.kind]
    except KeyError:
        raise PortingError(
            f"{layer.label}: unknown layer kind {layer.kind!r}; expected one of {', '.join(KINDS)}"
        ) from None
