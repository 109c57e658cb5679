"""Knet's geometry keywords as objects: `ConvGeometry` (conv4/deconv4) and `PoolGeometry`
(pool), parsed and validated from Knet's scalar-or-tuple form, with the output-size formulas.
Part of porting.geometry (import from there)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, SupportsIndex, cast

from porting._checks import check_choice, int_tuple, user_stacklevel
from porting.errors import PortingError

# Knet's keyword defaults, in one place (docs/knet.md#conv4, #pool): every signature that
# spells them out is checked against these (tests/test_geometry.py).
CONV_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {"padding": 0, "stride": 1, "dilation": 1, "mode": 0, "alpha": 1}
)
"""conv4 / deconv4: `padding=0, stride=1, dilation=1, mode=0` (true convolution), `alpha=1`."""
POOL_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {"window": 2, "padding": 0, "stride": None, "mode": 0, "alpha": 1}
)
"""pool: `window=2, padding=0, stride=window` (None), `mode=0` (max), `alpha=1`."""


def _fmt(t: tuple[int, ...]) -> str:
    return str(t[0]) if len(set(t)) == 1 else str(t)


def _spatial_to_tf(values: tuple[int, ...], spatial: str) -> tuple[int, ...]:
    """Per-dimension values in TensorFlow's order: porting.layout's one mapping."""
    from porting.layout import spatial_to_tf

    return spatial_to_tf(values, spatial)


# Knet's CPU path computes geometries whose outer outputs see only padding; Knet's GPU path
# (cuDNN) refuses padding >= the pooling window and may refuse it for convolutions
# (docs/knet.md#padding-beyond-kernel). One warning per kind and process.
_warned: set[str] = set()


def _warn_padding_only(kind: str, detail: str) -> None:
    if kind in _warned:
        return
    _warned.add(kind)
    gpu = (
        "Knet's GPU path (cuDNN) refuses padding >= window"
        if kind == "pool"
        else "Knet's GPU path (cuDNN) may refuse it"
    )
    warnings.warn(
        f"{detail}: some outputs see nothing but padding. Knet's CPU path (NNlib) computes "
        f"them ({'-floatmax for max pooling, 0 for mean' if kind == 'pool' else 'zeros'}), "
        f"and so does porting; {gpu}, so a model meant for the GPU should use a smaller "
        "padding. (This warning is shown once.)",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def _sliding_output_size(
    kind: str,
    spatial: tuple[int, ...],
    extents: tuple[int, ...],
    padding: tuple[int, ...],
    stride: tuple[int, ...],
    *,
    names: tuple[str, ...],
    label: str,
    requirement: str,
) -> tuple[int, ...]:
    """NNlib's output size of a window sliding over a padded input, shared by conv4 and pool:
    `Yi = 1 + floor((Xi + 2 p - extent) / s)`; raises if `Xi + 2 p < extent` (`names[i]` says
    what the extent is), warns once when padding >= extent (`label`) (docs/knet.md#conv-size, #pool,
    #padding-beyond-kernel)."""
    op = "conv4" if kind == "conv" else kind
    out = []
    for i, (x, k, p, s) in enumerate(zip(spatial, extents, padding, stride, strict=True)):
        if x + 2 * p < k:
            raise PortingError(
                f"spatial dimension {i + 1}: input size {x} with padding {p} is smaller than "
                f"the {names[i]} {k}; expected {requirement}"
            )
        if p >= k:
            _warn_padding_only(
                kind, f"{op} padding={p} >= {label} {k} in spatial dimension {i + 1}"
            )
        out.append(1 + (x + 2 * p - k) // s)
    return tuple(out)


class _Keywords:
    """What `ConvGeometry` and `PoolGeometry` share: per-dimension integer tuples named in
    `_PER_DIM` (in Knet's keyword order) and a `mode`."""

    _PER_DIM: ClassVar[tuple[str, ...]]

    @property
    def mode(self) -> int:  # a field of PoolGeometry, derived in ConvGeometry
        raise NotImplementedError

    @property
    def nd(self) -> int:
        return len(getattr(self, self._PER_DIM[0]))

    def knet_keywords(self) -> dict[str, int | tuple[int, ...]]:
        """The Knet keywords that build this geometry (scalars where all dimensions agree)."""
        return {
            **{name: _compact(getattr(self, name)) for name in self._PER_DIM},
            "mode": self.mode,
        }

    def _per_dim_to_tf(self, spatial: str) -> dict[str, tuple[int, ...]]:
        """The per-dimension values in TensorFlow's axis order, by keyword."""
        return {name: _spatial_to_tf(getattr(self, name), spatial) for name in self._PER_DIM}


@dataclass(frozen=True)
class ConvGeometry(_Keywords):
    """Geometry of a Knet `conv4`: symmetric padding, stride, dilation, and the flip.

    `crosscorrelation` is True for Knet `mode=1` (what TensorFlow computes) and False for
    `mode=0`, Knet's default, which is true convolution (kernel rotated 180 degrees;
    docs/knet.md#flip, #padding).

    >>> ConvGeometry.from_knet(2, padding=1)
    ConvGeometry(2-d, padding=1, stride=1, dilation=1, mode=0 convolution)
    """

    padding: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    crosscorrelation: bool = False
    _PER_DIM = ("padding", "stride", "dilation")

    @classmethod
    def from_knet(
        cls,
        nd: int,
        *,
        padding: object = 0,
        stride: object = 1,
        dilation: object = 1,
        mode: object = 0,
    ) -> ConvGeometry:
        check_choice(mode, "mode", (0, 1))
        return cls(
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=int_tuple(stride, nd, "stride", minimum=1),
            dilation=int_tuple(dilation, nd, "dilation", minimum=1),
            crosscorrelation=(mode == 1),
        )

    @property
    def mode(self) -> int:
        return 1 if self.crosscorrelation else 0

    def effective_kernel(self, kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial extent of a dilated kernel: `(Wi - 1) * dilation + 1`."""
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, self.dilation, strict=True))

    def output_size(self, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - ((Wi - 1) d + 1)) / s)` (docs/knet.md#conv-size);
        raises if any Yi < 1.

        The only requirement is NNlib's, `Xi + 2 p >= (Wi - 1) d + 1`; padding at least the
        kernel extent is computed (with a one-time warning: cuDNN may refuse it;
        docs/knet.md#padding-beyond-kernel).

        >>> ConvGeometry.from_knet(1, padding=2).output_size((3,), (3,))
        (5,)
        """
        extents = self.effective_kernel(kernel)
        names = tuple(f"{'dilated ' if d > 1 else ''}kernel extent" for d in self.dilation)
        return _sliding_output_size(
            "conv",
            spatial,
            extents,
            self.padding,
            self.stride,
            names=names,
            label="kernel extent",
            requirement="Xi + 2*padding >= (Wi-1)*dilation + 1",
        )

    def transpose_output_size(
        self, spatial: tuple[int, ...], kernel: tuple[int, ...]
    ) -> tuple[int, ...]:
        """Knet `deconv4`: `Yi = (Xi - 1) s + ((Wi - 1) d + 1) - 2 p` (docs/knet.md#deconv4);
        raises if any Yi < 1."""
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.effective_kernel(kernel), self.padding, self.stride, strict=True)
        ):
            y = (x - 1) * s + k - 2 * p
            if y < 1:
                raise PortingError(
                    f"spatial dimension {i + 1}: padding {p} is too large for deconv4 with input "
                    f"size {x}, kernel extent {k} and stride {s} (output size would be {y}); "
                    "expected 2*padding < (Xi-1)*stride + (Wi-1)*dilation + 1"
                )
            out.append(y)
        return tuple(out)

    def to_tf(self, spatial: str) -> ConvGeometry:
        """The same geometry with per-dimension values in TensorFlow's axis order, as
        cross-correlation (the TF kernel is rotated by `porting.layout.kernel_to_tf`)."""
        return ConvGeometry(**self._per_dim_to_tf(spatial), crosscorrelation=True)

    def __repr__(self) -> str:
        kind = "cross-correlation" if self.crosscorrelation else "convolution"
        return (
            f"ConvGeometry({self.nd}-d, padding={_fmt(self.padding)}, stride={_fmt(self.stride)}, "
            f"dilation={_fmt(self.dilation)}, mode={self.mode} {kind})"
        )


def _compact(t: tuple[int, ...]) -> int | tuple[int, ...]:
    return t[0] if len(set(t)) == 1 else t


# Knet's pool modes on the CPU (docs/knet.md#pool): mode 2 runs as mode 1 there.
POOL_MODES = {0: "max", 1: "mean (padding counted)", 2: "mean (CPU runs mode 1)", 3: "max"}


@dataclass(frozen=True)
class PoolGeometry(_Keywords):
    """Geometry of a Knet `pool`: window, symmetric padding, stride (defaults to window), mode.

    >>> PoolGeometry.from_knet(2, window=3, padding=1)
    PoolGeometry(2-d, window=3, padding=1, stride=3, mode=0 max)
    """

    window: tuple[int, ...]
    padding: tuple[int, ...]
    stride: tuple[int, ...]
    mode: int = 0
    _PER_DIM = ("window", "padding", "stride")

    @classmethod
    def from_knet(
        cls,
        nd: int,
        *,
        window: object = 2,
        padding: object = 0,
        stride: object = None,
        mode: object = 0,
    ) -> PoolGeometry:
        check_choice(mode, "mode", tuple(POOL_MODES))
        win = int_tuple(window, nd, "window", minimum=1)
        return cls(
            window=win,
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=win if stride is None else int_tuple(stride, nd, "stride", minimum=1),
            mode=int(cast(SupportsIndex, mode)),  # check_choice let only an integer through
        )

    @property
    def is_max(self) -> bool:
        return self.mode in (0, 3)

    def output_size(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - window) / s)`; raises if any Yi < 1.

        The only requirement is NNlib's, `Xi + 2 p >= window`; padding >= window is computed
        (windows of only padding give -floatmax for max pooling, 0 for mean), with a one-time
        warning that cuDNN refuses it (docs/knet.md#pool, #padding-beyond-kernel).
        """
        return _sliding_output_size(
            "pool",
            spatial,
            self.window,
            self.padding,
            self.stride,
            names=("pooling window",) * self.nd,
            label="window",
            requirement="Xi + 2*padding >= window",
        )

    def to_tf(self, spatial: str) -> PoolGeometry:
        """The same geometry with per-dimension values in TensorFlow's axis order."""
        return PoolGeometry(**self._per_dim_to_tf(spatial), mode=self.mode)

    def __repr__(self) -> str:
        return (
            f"PoolGeometry({self.nd}-d, window={_fmt(self.window)}, padding={_fmt(self.padding)}, "
            f"stride={_fmt(self.stride)}, mode={self.mode} {POOL_MODES[self.mode].split(' (')[0]})"
        )
