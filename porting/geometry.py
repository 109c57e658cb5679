"""Convolution and pooling geometry as small objects (NNlib's `DenseConvDims` / `PoolDims`).

All tuples are in Julia's spatial order `(X1, X2, ...)`. Kernels take these objects instead of
ten keywords; `from_knet` parses Knet's keywords (scalar or per-dimension) and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from porting._checks import check_choice, int_tuple
from porting.errors import PortingError


def _fmt(t: tuple[int, ...]) -> str:
    return str(t[0]) if len(set(t)) == 1 else str(t)


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of a Knet `conv4`: symmetric padding, stride, dilation, and the flip.

    `crosscorrelation` is True for Knet `mode=1` (what TensorFlow computes) and False for
    `mode=0`, Knet's default, which is true convolution (kernel rotated 180 degrees).

    >>> ConvGeometry.from_knet(2, padding=1)
    ConvGeometry(2-d, padding=1, stride=1, dilation=1, mode=0 convolution)
    """

    padding: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    crosscorrelation: bool = False

    @classmethod
    def from_knet(cls, nd: int, *, padding=0, stride=1, dilation=1, mode=0) -> ConvGeometry:
        check_choice(mode, "mode", (0, 1))
        return cls(
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=int_tuple(stride, nd, "stride", minimum=1),
            dilation=int_tuple(dilation, nd, "dilation", minimum=1),
            crosscorrelation=(mode == 1),
        )

    @property
    def nd(self) -> int:
        return len(self.padding)

    @property
    def mode(self) -> int:
        return 1 if self.crosscorrelation else 0

    def effective_kernel(self, kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial extent of a dilated kernel: `(Wi - 1) * dilation + 1`."""
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, self.dilation, strict=True))

    def output_size(self, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - ((Wi - 1) d + 1)) / s)`; raises if any Yi < 1."""
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.effective_kernel(kernel), self.padding, self.stride, strict=True)
        ):
            if x + 2 * p < k:
                raise PortingError(
                    f"spatial dimension {i + 1}: input size {x} with padding {p} is smaller than "
                    f"the {'dilated ' if self.dilation[i] > 1 else ''}kernel extent {k}; "
                    "expected Xi + 2*padding >= (Wi-1)*dilation + 1"
                )
            out.append(1 + (x + 2 * p - k) // s)
        return tuple(out)

    def transpose_output_size(
        self, spatial: tuple[int, ...], kernel: tuple[int, ...]
    ) -> tuple[int, ...]:
        """Knet `deconv4`: `Yi = (Xi - 1) s + ((Wi - 1) d + 1) - 2 p`; raises if any Yi < 1."""
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

    def __repr__(self) -> str:
        kind = "cross-correlation" if self.crosscorrelation else "convolution"
        return (
            f"ConvGeometry({self.nd}-d, padding={_fmt(self.padding)}, stride={_fmt(self.stride)}, "
            f"dilation={_fmt(self.dilation)}, mode={self.mode} {kind})"
        )


POOL_MODES = {0: "max", 1: "mean (padding counted)", 2: "mean (CPU runs mode 1)", 3: "max"}


@dataclass(frozen=True)
class PoolGeometry:
    """Geometry of a Knet `pool`: window, symmetric padding, stride (defaults to window), mode.

    >>> PoolGeometry.from_knet(2, window=3, padding=1)
    PoolGeometry(2-d, window=3, padding=1, stride=3, mode=0 max)
    """

    window: tuple[int, ...]
    padding: tuple[int, ...]
    stride: tuple[int, ...]
    mode: int = 0

    @classmethod
    def from_knet(cls, nd: int, *, window=2, padding=0, stride=None, mode=0) -> PoolGeometry:
        check_choice(mode, "mode", tuple(POOL_MODES))
        win = int_tuple(window, nd, "window", minimum=1)
        return cls(
            window=win,
            padding=int_tuple(padding, nd, "padding", minimum=0),
            stride=win if stride is None else int_tuple(stride, nd, "stride", minimum=1),
            mode=mode,
        )

    @property
    def nd(self) -> int:
        return len(self.window)

    @property
    def is_max(self) -> bool:
        return self.mode in (0, 3)

    def output_size(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Knet's `Yi = 1 + floor((Xi + 2 p - window) / s)`; raises if any Yi < 1."""
        out = []
        for i, (x, k, p, s) in enumerate(
            zip(spatial, self.window, self.padding, self.stride, strict=True)
        ):
            if x + 2 * p < k:
                raise PortingError(
                    f"spatial dimension {i + 1}: input size {x} with padding {p} is smaller than "
                    f"the pooling window {k}; expected Xi + 2*padding >= window"
                )
            out.append(1 + (x + 2 * p - k) // s)
        return tuple(out)

    def __repr__(self) -> str:
        return (
            f"PoolGeometry({self.nd}-d, window={_fmt(self.window)}, padding={_fmt(self.padding)}, "
            f"stride={_fmt(self.stride)}, mode={self.mode} {POOL_MODES[self.mode].split(' (')[0]})"
        )
