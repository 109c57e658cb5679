"""The recomputation contexts: a conv4 or dense layer rebuilt from the Knet side's inputs `w`
and `x`, which predicts each hypothesis (`porting.diagnosis._spec.Spec`) at sampled positions.

Each hypothesis is the kernel, input and geometry a TensorFlow side with one particular mistake
would have used. Its prediction is computed in float64 at a sample of output positions (all of
them for small outputs) and scored against `actual` (porting.diagnosis._hypotheses) in units
of porting.compare's tolerance. The recomputation is NumPy only (no TensorFlow): the truth it
starts from is Knet's conv4 as porting.knet's reference computes it, converted to TF layout.
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from porting import layout
from porting import magnitude as S
from porting._checks import as_float_array, as_scalar, short_repr
from porting.diagnosis._engine import Grid, Windows, sample_positions
from porting.diagnosis._formats import to_format
from porting.diagnosis._spec import (
    _COMMON_SWAPS,
    _FLOP_BUDGET,
    _MAX_CHANNELS,
    Spec,
    _activation,
    _axis_names,
    _padding_prior,
    _precision_specs,
    _quantization_specs,
)
from porting.errors import PortingError
from porting.geometry import CONV_DEFAULTS, ConvDims, ConvGeometry, check_operands

__all__ = ["ConvContext", "DenseContext", "make_context"]


def make_context(w, x, *, bias, spatial, activation=None, **conv_keywords):
    """The recomputation context of a conv (`conv_keywords`: conv4's padding, stride,
    dilation, mode and alpha) or, for a 2-d `w`, a dense layer."""
    w = as_float_array(w, "w", ndim=(2, 3, 4, 5))
    act = _activation(activation)
    ctx: _Context
    if w.ndim == 2:
        ctx = DenseContext(w, x, bias=bias)
    else:
        ctx = ConvContext(w, x, bias=bias, spatial=spatial, **conv_keywords)
    ctx.activation = act
    return ctx


def _conv_geometry(nd: int, geometry, padding, stride, dilation, mode) -> ConvGeometry:
    """`geometry` (already parsed: the keywords must then be Knet's defaults), else the
    `ConvGeometry` of the keywords."""
    if geometry is None:
        return ConvGeometry.from_knet(
            nd, padding=padding, stride=stride, dilation=dilation, mode=mode
        )
    if not isinstance(geometry, ConvGeometry):
        raise PortingError(
            f"geometry={short_repr(geometry)}: expected a porting.geometry.ConvGeometry (or "
            "None, with the keywords padding, stride, dilation, mode)"
        )
    given = {"padding": padding, "stride": stride, "dilation": dilation, "mode": mode}
    changed = [
        k
        for k, v in given.items()
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v != CONV_DEFAULTS[k]
    ]
    if changed:
        raise PortingError(
            f"geometry and {', '.join(changed)} both given; expected the keywords inside the "
            "geometry (ConvGeometry.from_knet) or the keywords alone"
        )
    if geometry.nd != nd:
        raise PortingError(
            f"geometry is {geometry.nd}-d but x has {nd} spatial dimensions; expected the same"
        )
    return geometry


def _bias_tf(bias, n_out: int, what: str) -> np.ndarray:
    if bias is None:
        return np.zeros(n_out)
    b = layout.bias_to_tf(bias).astype(np.float64)
    if b.shape[0] != n_out:
        raise PortingError(f"bias has {b.shape[0]} entries but the {what} has {n_out} outputs")
    return b


class _Context:
    kind = ""
    float64 = False  # the comparison runs at float64 precision (set by run_hypotheses)
    out_shape: tuple[int, ...]
    magnitude: np.ndarray  # full, TF layout
    k: int
    bias: np.ndarray
    alpha: float = 1.0
    base: Spec
    activation = None  # element-wise function applied after the bias (e.g. relu)

    def finish(self, pred: np.ndarray, post: str | None) -> np.ndarray:
        if self.activation is not None:
            pred = np.asarray(self.activation(pred), dtype=np.float64)
        return to_format(pred, post) if post else pred

    def __init__(self):
        self._wins: dict = {}
        self._base_mags: dict = {}
        self.notes: list[str] = []

    def channels(self, n: int) -> np.ndarray:
        if n <= _MAX_CHANNELS:
            return np.arange(n)
        rng = np.random.default_rng(1)
        return np.sort(rng.choice(n, size=_MAX_CHANNELS, replace=False))

    # implemented by ConvContext and DenseContext
    def specs(self, target) -> list[Spec]:
        raise NotImplementedError

    def positions(self, shape, limit: int) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self, spec: Spec, pos: np.ndarray, chans: np.ndarray, cheap: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | None:
        raise NotImplementedError

    def take(self, a: np.ndarray, pos: np.ndarray, chans: np.ndarray) -> np.ndarray:
        vals = a[tuple(pos.T)]  # (P, C)
        return np.asarray(vals[:, chans], dtype=np.float64)

    def clear(self):
        self._wins.clear()
        self._base_mags.clear()


# ----------------------------------------------------------------------------- conv


class ConvContext(_Context):
    """Knet `conv4(w, x; padding, stride, dilation, mode, alpha)`, recomputed in TF layout."""

    kind = "conv"

    def __init__(
        self, w, x, *, bias, padding, stride, dilation, mode, alpha, spatial, geometry=None
    ):
        super().__init__()
        x = as_float_array(x, "x", ndim=(3, 4, 5))
        # w and x may differ in dtype here: both are recomputed in float64
        check_operands(w, x, op="conv4", same_dtype=False)
        nd = x.ndim - 2
        geom = _conv_geometry(nd, geometry, padding, stride, dilation, mode)
        dims = ConvDims.bind(geom, w.shape, x.shape)  # validates the sizes
        self.geom, self.nd, self.spatial = geom, nd, spatial
        self.alpha = as_scalar(alpha, "alpha")
        w64, x64 = w.astype(np.float64), x.astype(np.float64)
        self.x_tf = layout.activations_to_tf(x64, spatial)
        self.k_tf = layout.kernel_to_tf(w64, geom.mode, spatial)
        p = layout.spatial_to_tf(geom.padding, spatial)
        self.grid = Grid(
            tuple((q, q) for q in p),
            layout.spatial_to_tf(geom.stride, spatial),
            layout.spatial_to_tf(geom.dilation, spatial),
        )
        out_shape = self.grid.output_shape(self.x_tf.shape, self.k_tf.shape)
        assert out_shape is not None  # ConvDims.bind has checked the sizes
        self.out_shape = out_shape
        self.k = int(np.prod(w.shape[:-1]))
        self.bias = _bias_tf(bias, w.shape[-1], "kernel")
        mag = layout.activations_to_tf(S.conv4(w64, x64, dims, self.alpha), spatial)
        self.magnitude = S.bias(mag, self.bias, channel_axis=-1)
        self.xs = {"x": self.x_tf}
        self.base = Spec("rounding", "knet", "Knet's conv4", self.k_tf, self.grid)
        self.describe = (
            f"recomputation from w and x: conv4 {geom!r}, spatial={spatial!r}, "
            f"K = {self.k} terms per output"
        )

    def _x(self, key: str) -> np.ndarray:
        if key not in self.xs:
            self.xs[key] = to_format(self.x_tf, key)
        return self.xs[key]

    def shape_of(self, spec: Spec):
        assert spec.grid is not None
        s = spec.grid.output_shape(self._x(spec.x_key).shape, spec.kernel.shape)
        if s is not None and spec.swap:
            s = (s[0], *s[1:-1][::-1], s[-1])
        return s

    def positions(self, shape, limit: int) -> np.ndarray:
        kcols = int(np.prod(self.k_tf.shape[:-1]))
        c = min(shape[-1], _MAX_CHANNELS)
        p = int(np.clip(_FLOP_BUDGET / max(kcols * c, 1), 256, limit))
        return sample_positions(shape, p)

    def predict(self, spec: Spec, pos: np.ndarray, chans: np.ndarray, cheap: bool = False):
        """Prediction and magnitudes `(P, C)` at `pos`, or None if the output shape differs.
        `cheap` (or `spec.base_mag`) reuses the base kernel's magnitudes on the same window."""
        if spec.grid is None or self.shape_of(spec) is None:
            return None
        src = np.concatenate([pos[:, :1], pos[:, 1:][:, ::-1]], axis=1) if spec.swap else pos
        key = (spec.x_key, spec.grid, spec.swap, spec.kernel.shape[:-2])
        win = self._wins.get(key)
        if win is None:
            win = self._wins[key] = Windows(
                self._x(spec.x_key), spec.kernel.shape[:-2], spec.grid, src
            )
        kern = spec.kernel[..., chans]
        pred = self.alpha * win.apply(kern) + self.bias[chans]
        if (spec.base_mag or cheap) and spec.kernel.shape == self.k_tf.shape:
            mag = self._base_mags.get(key)
            if mag is None:
                mag = self._base_mags[key] = S.bias(
                    abs(self.alpha) * win.magnitude(self.k_tf[..., chans]),
                    self.bias[chans],
                    channel_axis=-1,
                )
        else:
            mag = S.bias(abs(self.alpha) * win.magnitude(kern), self.bias[chans], channel_axis=-1)
        return self.finish(pred, spec.post), mag

    # ------------------------------------------------------------------ hypotheses
    def specs(self, target) -> list[Spec]:
        k, g, nd = self.k_tf, self.grid, self.nd
        names = _axis_names(nd)
        sp = tuple(range(nd))
        out: list[Spec] = []

        def add(spec):
            s = self.shape_of(spec)
            if s is not None and s == tuple(target):
                out.append(spec)

        # kernel_flip: the kernel used without (or with an extra) 180-degree rotation
        add(
            Spec(
                "kernel_flip",
                "rotate180",
                "rotating the kernel 180 degrees (the other conv4 mode)",
                np.flip(k, sp),
                g,
            )
        )
        if nd >= 2:
            for ax in range(nd):
                if k.shape[ax] > 1:
                    add(
                        Spec(
                            "kernel_flip",
                            f"mirror_{names[ax]}",
                            f"mirroring the kernel along {names[ax]} only",
                            np.flip(k, ax),
                            g,
                            prior=0.98,
                        )
                    )
        # spatial_transpose: H and W swapped in the kernel, the parameters and/or the output
        if nd >= 2:
            k_s = k.transpose((*sp[::-1], nd, nd + 1))
            g_s = Grid(g.pads[::-1], g.stride[::-1], g.dilation[::-1])
            axes = "H and W" if nd == 2 else "the spatial axes (D and W)"
            texts = {
                (False, False, True): f"swapping the output's {axes}",
                (
                    True,
                    False,
                    False,
                ): f"swapping the kernel's {axes} (kernel converted with the other spatial= choice)",
                (
                    False,
                    True,
                    False,
                ): f"applying the per-axis padding/stride/dilation with {axes} swapped",
                (True, True, False): f"swapping {axes} in the kernel and the per-axis parameters",
                (True, True, True): f"swapping the input's {axes} (image transposed)",
                (True, False, True): f"swapping the input's {axes} and the per-axis parameters",
                (False, True, True): f"swapping the input's {axes} and the kernel's",
            }
            for (ks, ps, os), text in texts.items():
                if ps and g_s == g and (ks or os):
                    continue  # same as the combination without ps
                kernel = k_s if ks else k
                add(
                    Spec(
                        "spatial_transpose",
                        f"swap_{'k' if ks else ''}{'p' if ps else ''}{'o' if os else ''}",
                        text,
                        kernel,
                        g_s if ps else g,
                        swap=os,
                        prior=1.0 if (ks, ps, os) in _COMMON_SWAPS else 0.99,
                    )
                )
        # padding_shift: each axis padded (lo, hi) other than Knet's symmetric (p, p)
        per_axis: list[list[tuple[tuple[int, int], bool]]] = []
        for i in range(nd):
            p = g.pads[i][0]
            n = self.x_tf.shape[1 + i]
            s = g.stride[i]
            keff = (k.shape[i] - 1) * g.dilation[i] + 1
            # TensorFlow's "SAME": the odd cell goes after (docs/tensorflow.md#same-padding)
            total = max((math.ceil(n / s) - 1) * s + keff - n, 0)
            same = (total // 2, total - total // 2)
            opts = {
                (lo, hi)
                for lo in (p - 1, p, p + 1)
                for hi in (p - 1, p, p + 1)
                if lo >= 0 and hi >= 0
            }
            opts |= {same, (0, 0)}
            options = sorted(opts, key=lambda t: (abs(t[0] - p) + abs(t[1] - p), t))
            per_axis.append([(t, t == same) for t in options])
        for combo in itertools.product(*per_axis):
            pads = tuple(t for t, _ in combo)
            if pads == g.pads:
                continue
            grid = Grid(pads, g.stride, g.dilation)
            if grid.output_shape(self.x_tf.shape, k.shape) != tuple(target):
                continue
            if all(is_same for _, is_same in combo) and any(lo != hi for lo, hi in pads):
                what = "TensorFlow 'SAME' padding"
            elif all(t == (0, 0) for t in pads):
                what = "no padding ('VALID')"
            else:
                what = "padding"
            desc = ", ".join(f"{names[i]} {pads[i]}" for i in range(nd))
            knet = ", ".join(f"{names[i]} {g.pads[i]}" for i in range(nd))
            add(
                Spec(
                    "padding_shift",
                    f"pad_{'_'.join(map(str, pads))}",
                    f"{what} (lo, hi) = {desc} instead of Knet's {knet}",
                    k,
                    grid,
                    details={"pads": pads},
                    prior=_padding_prior(what, pads, g.pads),
                )
            )
        if tuple(target) == self.out_shape:
            out += self._precision_specs()
            out += _quantization_specs(self.k_tf, self.grid)
        return out

    def _precision_specs(self) -> list[Spec]:
        return _precision_specs(self.k_tf, self.grid, self._x, self.float64)


# ----------------------------------------------------------------------------- dense


class DenseContext(_Context):
    """Knet dense layer `w * mat(x) .+ b`: `w` `(out, in)`, `x` `(X1, ..., C, N)` (or `(in, N)`);
    the TensorFlow side's output is `(N, out)` (docs/knet.md#dense, #mat)."""

    kind = "dense"

    def __init__(self, w, x, *, bias):
        super().__init__()
        x = as_float_array(x, "x", ndim=(2, 3, 4, 5))
        n_out, n_in = w.shape
        feat = int(np.prod(x.shape[:-1]))
        if feat != n_in:
            raise PortingError(
                f"dense weight has {n_in} inputs (w shape {w.shape}) but x has {feat} features per "
                f"sample (x shape {x.shape}, Julia size (X1, ..., C, N)); expected w of size (out, {feat})"
            )
        self.x = x.astype(np.float64)
        self.nd = x.ndim - 2  # spatial dims before mat (0 for an (in, N) matrix)
        self.kmat = np.ascontiguousarray(w.astype(np.float64).T)  # (in, out), Knet feature order
        self.k = n_in
        self.bias = _bias_tf(bias, n_out, "dense weight")
        n = x.shape[-1]
        self.feats = {"x": np.ascontiguousarray(self.x.reshape(-1, n, order="F").T)}  # mat(x)'ed
        self.out_shape = (n, n_out)
        self.magnitude = S.bias(S.matmul(self.feats["x"], self.kmat), self.bias, channel_axis=-1)
        self.base = Spec("rounding", "knet", "Knet's w * mat(x)", self.kmat)
        self.describe = f"recomputation from w and x: dense w * mat(x), K = {n_in} terms per output"

    def _knet_order(self) -> tuple[int, ...]:
        return tuple(range(self.nd, -1, -1))  # slowest to fastest: C, Xd, ..., X1

    def _feat(self, key: str) -> np.ndarray:
        if key not in self.feats:
            self.feats[key] = to_format(self.feats["x"], key)
        return self.feats[key]

    def shape_of(self, spec: Spec):
        return self.out_shape

    def positions(self, shape, limit: int) -> np.ndarray:
        c = min(shape[-1], _MAX_CHANNELS)
        p = int(np.clip(_FLOP_BUDGET / max(self.k * c, 1), 256, limit))
        return sample_positions(shape, p)

    def predict(self, spec: Spec, pos: np.ndarray, chans: np.ndarray, cheap: bool = False):
        f = self._feat(spec.x_key)[pos[:, 0]]
        kern = spec.kernel[:, chans]
        pred = f @ kern + self.bias[chans]
        if spec.base_mag or cheap:
            mag = self._base_mags.get(spec.x_key)
            if mag is None:
                mag = self._base_mags[spec.x_key] = S.bias(
                    S.matmul(f, self.kmat[:, chans]), self.bias[chans], channel_axis=-1
                )
        else:
            mag = S.bias(S.matmul(f, kern), self.bias[chans], channel_axis=-1)
        return self.finish(pred, spec.post), mag

    def _order_text(self, order, spatial_names) -> str:
        names = [spatial_names[a] if a < self.nd else "C" for a in order]
        return f"({', '.join(names)}) with {names[-1]} fastest"

    def _index(self, order) -> np.ndarray:
        """Knet feature index (column-major over (X1, ..., C)) of each feature in `order`
        (docs/layout.md#flatten-order)."""
        shape = self.x.shape[:-1]
        idx = np.arange(int(np.prod(shape))).reshape(shape, order="F")
        return idx.transpose(order).ravel()

    def _flatten_specs(self) -> list[Spec]:
        """Features flattened in order A (slowest axis first) while the Dense kernel's rows are
        arranged for order B; correct only when A == B. Distinct pairings only."""
        knet = self._knet_order()
        rev = dict(enumerate(_axis_names(self.nd)[::-1]))
        labels = {
            knet: "Knet's mat",
            tuple([*range(self.nd)[::-1], self.nd]): "Keras Flatten on NHWC, spatial='reverse'",
            tuple([*range(self.nd), self.nd]): "Keras Flatten on NHWC, spatial='keep'",
            tuple(
                [self.nd, *range(self.nd)[::-1]]
            ): "a channels-first (NCHW) flatten, spatial='reverse'",
            tuple([self.nd, *range(self.nd)]): "a channels-first (NCHW) flatten, spatial='keep'",
        }
        orders = list(itertools.permutations(range(self.nd + 1)))
        kernel_orders = orders if self.nd <= 2 else [o for o in orders if o in labels]
        seen = {tuple(range(self.k))}
        out = []
        for b in kernel_orders:
            ib = self._index(b)
            for a in orders:
                if a == b:
                    continue
                ia = self._index(a)
                sigma = np.empty(self.k, dtype=np.intp)
                sigma[ib] = ia  # W's Knet feature ib[r] meets x's Knet feature ia[r]
                key = tuple(sigma.tolist())
                if key in seen:
                    continue
                seen.add(key)
                name = "order" + "".join(map(str, a)) + "_rows" + "".join(map(str, b))
                self.feats[name] = np.ascontiguousarray(self.feats["x"][:, sigma])
                ta = self._order_text(a, rev) + (f" ({labels[a]})" if a in labels else "")
                tb = self._order_text(b, rev) + (f" ({labels[b]})" if b in labels else "")
                text = f"flattening the features in order {ta} while the Dense kernel's rows follow {tb}"
                # the most common pairing first: Keras flatten with a kernel only transposed
                out.append(
                    Spec(
                        "flatten_order",
                        f"flatten_{name}",
                        text,
                        self.kmat,
                        x_key=name,
                        details={"features": a, "kernel_rows": b},
                    )
                )
        return out

    def specs(self, target) -> list[Spec]:
        out: list[Spec] = []
        if tuple(target) != self.out_shape:
            return out
        if self.nd >= 1:
            out += self._flatten_specs()
        k = self.kmat
        out += _precision_specs(k, None, self._feat, self.float64)
        out += _quantization_specs(k, None)
        return out


# ----------------------------------------------------------------------------- scoring
