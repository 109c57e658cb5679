"""Hypotheses tested by recomputation from the Knet side's inputs `w` and `x`.

Each hypothesis is a `Spec`: the kernel, input and geometry a TensorFlow side with one
particular mistake would have used. Its prediction is computed in float64 at a sample of output
positions (all of them for small outputs) and scored against `actual` in units of
porting.compare's tolerance. The recomputation is NumPy only (no TensorFlow): the truth it
starts from is Knet's conv4 as porting.knet's reference computes it, converted to TF layout.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from porting import layout
from porting import magnitude as S
from porting._checks import as_float_array, as_scalar
from porting.diagnosis import _score
from porting.diagnosis._engine import Grid, Windows, sample_positions
from porting.diagnosis._formats import quantizers, representable, to_format
from porting.diagnosis._result import Finding, tolerance_array
from porting.errors import PortingError
from porting.geometry import ConvDims, ConvGeometry, check_operands

__all__ = ["ConvContext", "DenseContext", "run_hypotheses", "make_context"]

_FLOP_BUDGET = 3e7  # multiply-adds per candidate kernel: keeps a hypothesis at ~10 ms
_MAX_CHANNELS = 64
_STAGE1 = 48  # positions on which every hypothesis is first tried
_OWN_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23}


@dataclass
class Spec:
    """One hypothesis: what the TensorFlow side computed if it made this mistake."""

    cause: str
    name: str
    text: str  # gerund phrase: "rotating the kernel 180 degrees"
    kernel: np.ndarray  # conv: TF layout (*k, Cin, Cout); dense: (in, out)
    grid: Grid | None = None
    x_key: str = "x"
    swap: bool = False  # output's spatial axes reversed
    post: str | None = None  # result rounded to this format
    base_mag: bool = False  # score with the base kernel's magnitudes (cheap; rechecked later)
    details: dict = field(default_factory=dict)
    prior: float = 1.0  # < 1 for rarer mistakes: decides between equally good explanations


def _precision_specs(k, grid, xget, float64: bool) -> list[Spec]:
    """Lower-precision hypotheses: w and x rounded to TF32/bfloat16/float16 with float32
    accumulation, or the whole computation in float16/bfloat16 (result rounded too); in a
    float64 comparison also float32 inputs."""
    table = [
        (
            "tf32",
            "tf32",
            None,
            "rounding w and x to TF32 (10-bit mantissa) and accumulating in float32",
        ),
        (
            "tf32_truncated",
            "tf32_rz",
            None,
            "truncating w and x to TF32 (10-bit mantissa) and accumulating in float32",
        ),
        (
            "bfloat16_inputs",
            "bfloat16",
            None,
            "rounding w and x to bfloat16 and accumulating in float32",
        ),
        (
            "bfloat16_truncated",
            "bfloat16_rz",
            None,
            "truncating w and x to bfloat16 and accumulating in float32",
        ),
        (
            "float16",
            "float16",
            "float16",
            "computing in float16 (w, x and the result rounded to float16)",
        ),
        (
            "bfloat16",
            "bfloat16",
            "bfloat16",
            "computing in bfloat16 (w, x and the result rounded to bfloat16)",
        ),
    ]
    specs = [
        Spec(
            "precision",
            name,
            text,
            to_format(k, fmt),
            grid,
            x_key=fmt,
            post=post,
            prior=0.99 if fmt.endswith("_rz") else 1.0,
        )
        for name, fmt, post, text in table
    ]
    if not (
        np.array_equal(xget("float16"), xget("tf32"))
        and np.array_equal(to_format(k, "float16"), specs[0].kernel)
    ):
        specs.append(
            Spec(
                "precision",
                "float16_inputs",
                "rounding w and x to float16 and accumulating in float32",
                to_format(k, "float16"),
                grid,
                x_key="float16",
            )
        )
    if float64:
        specs.append(
            Spec(
                "precision",
                "float32_inputs",
                "rounding w and x to float32 (a float32 step in a float64 computation)",
                to_format(k, "float32"),
                grid,
                x_key="float32",
            )
        )
    return specs


# the common mistakes: kernel only, output only, the whole input, per-axis tuples in Julia order
_COMMON_SWAPS = {
    (True, False, False),
    (False, False, True),
    (True, True, True),
    (False, True, False),
}


def _padding_prior(what: str, pads, knet_pads) -> float:
    """'SAME', 'VALID' and symmetric off-by-ones are common; Knet's per-axis padding in the
    other axis order is better told as spatial_transpose (parameters swapped)."""
    if len(pads) > 1 and tuple(pads) == tuple(knet_pads[::-1]):
        return 0.98
    if what != "padding" or all(lo == hi for lo, hi in pads):
        return 1.0
    return 0.99


def _axis_names(nd: int) -> tuple[str, ...]:
    return {1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}[nd]


ACTIVATIONS = {
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)),
    "tanh": np.tanh,
}


def _activation(act):
    if act is None or act in ("identity", "linear"):
        return None
    if callable(act):
        return act
    if act in ACTIVATIONS:
        return ACTIVATIONS[act]
    raise PortingError(
        f"activation={act!r}: expected None, {', '.join(map(repr, ACTIVATIONS))} or an "
        "element-wise NumPy function"
    )


def make_context(w, x, *, bias, padding, stride, dilation, mode, alpha, spatial, activation=None):
    w = as_float_array(w, "w", ndim=(2, 3, 4, 5))
    act = _activation(activation)
    if w.ndim == 2:
        ctx = DenseContext(w, x, bias=bias)
    else:
        ctx = ConvContext(
            w,
            x,
            bias=bias,
            padding=padding,
            stride=stride,
            dilation=dilation,
            mode=mode,
            alpha=alpha,
            spatial=spatial,
        )
    ctx.activation = act
    return ctx


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

    def __init__(self, w, x, *, bias, padding, stride, dilation, mode, alpha, spatial):
        super().__init__()
        x = as_float_array(x, "x", ndim=(3, 4, 5))
        # w and x may differ in dtype here: both are recomputed in float64
        check_operands(w, x, op="conv4", same_dtype=False)
        nd = x.ndim - 2
        geom = ConvGeometry.from_knet(
            nd, padding=padding, stride=stride, dilation=dilation, mode=mode
        )
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
        self.out_shape = self.grid.output_shape(self.x_tf.shape, self.k_tf.shape)
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
        per_axis = []
        for i in range(nd):
            p = g.pads[i][0]
            n = self.x_tf.shape[1 + i]
            s = g.stride[i]
            keff = (k.shape[i] - 1) * g.dilation[i] + 1
            total = max((math.ceil(n / s) - 1) * s + keff - n, 0)
            same = (total // 2, total - total // 2)
            opts = {
                (lo, hi)
                for lo in (p - 1, p, p + 1)
                for hi in (p - 1, p, p + 1)
                if lo >= 0 and hi >= 0
            }
            opts |= {same, (0, 0)}
            per_axis.append(sorted(opts, key=lambda t: (abs(t[0] - p) + abs(t[1] - p), t)))
            per_axis[-1] = [(t, t == same) for t in per_axis[-1]]
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
            out += self._quantization_specs()
        return out

    def _precision_specs(self) -> list[Spec]:
        return _precision_specs(self.k_tf, self.grid, self._x, self.float64)

    def _quantization_specs(self) -> list[Spec]:
        out = []
        for q in quantizers(self.k_tf):
            qk = q.apply(self.k_tf, -1)
            if np.array_equal(qk, self.k_tf):
                continue
            out.append(
                Spec(
                    "quantization",
                    q.name,
                    q.description,
                    qk,
                    self.grid,
                    base_mag=True,
                    details={"quantizer": q.name},
                )
            )
        return out


# ----------------------------------------------------------------------------- dense


class DenseContext(_Context):
    """Knet dense layer `w * mat(x) .+ b`: `w` `(out, in)`, `x` `(X1, ..., C, N)` (or `(in, N)`);
    the TensorFlow side's output is `(N, out)`."""

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
        """Knet feature index (column-major over (X1, ..., C)) of each feature in `order`."""
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
        for q in quantizers(k):
            qk = q.apply(k, -1)
            if not np.array_equal(qk, k):
                out.append(
                    Spec(
                        "quantization",
                        q.name,
                        q.description,
                        qk,
                        base_mag=True,
                        details={"quantizer": q.name},
                    )
                )
        return out


# ----------------------------------------------------------------------------- scoring


def check_expected(ctx: _Context, e: np.ndarray, a: np.ndarray, tol, limit: int) -> str:
    """Is `expected` what w and x give? Returns "ok", "swapped" (actual is) or "mismatch";
    fits a scale factor (Knet's alpha) when that explains it."""
    pos = ctx.positions(ctx.out_shape, limit)
    chans = ctx.channels(ctx.out_shape[-1])
    ctx.clear()
    base_out = ctx.predict(ctx.base, pos, chans)
    assert base_out is not None  # the base spec always fits its own output shape
    pred, mag = base_out
    ctx.clear()
    tolv = tolerance_array(tol, mag)
    e_s = ctx.take(e, pos, chans)
    r = _score.ratio(e_s, pred, tolv)
    if r.max() <= 1:
        return "ok"
    # Knet's alpha, when not passed: expected = act(c * conv + b) for some c; fit c where the
    # activation is invertible (identity; relu where expected > 0)
    act, bias = ctx.activation, ctx.bias
    ctx.activation, ctx.bias = None, np.zeros_like(bias)
    raw_out = ctx.predict(ctx.base, pos, chans)
    ctx.activation, ctx.bias = act, bias
    ctx.clear()
    assert raw_out is not None
    raw = raw_out[0]
    target = e_s - bias[chans]
    use = np.isfinite(target) & np.isfinite(raw)
    if act is ACTIVATIONS["relu"]:
        use &= e_s > 0
    elif act is not None:
        use &= False
    den = float(np.sum(raw[use] ** 2))
    if den > 0:
        c = float(np.sum(raw[use] * target[use])) / den
        if c != 0 and np.isfinite(c):
            ctx.alpha *= c
            ctx.clear()
            trial = ctx.predict(ctx.base, pos, chans)
            ctx.clear()
            assert trial is not None
            if _score.ratio(e_s, trial[0], tolerance_array(tol, trial[1])).max() <= 1:
                absb = np.abs(ctx.bias)
                ctx.magnitude = (ctx.magnitude - absb) * abs(c) + absb
                ctx.notes.append(
                    f"expected is act({c:.6g} x conv4(w, x) + bias): taken as Knet's alpha "
                    "(pass alpha= to say so)"
                    if (act is not None or np.any(bias))
                    else f"expected is {c:.6g} times conv4(w, x): taken as Knet's alpha (pass alpha= to say so)"
                )
                return "ok"
            ctx.alpha /= c
    if a.shape == e.shape:
        a_s = ctx.take(a, pos, chans)
        if _score.ratio(a_s, pred, tolv).max() <= 1:
            ctx.notes.append(
                "actual, not expected, is what w and x give: the two arrays were passed the other "
                "way round (expected is the Knet side); diagnosing with them swapped"
            )
            return "swapped"
    ctx.notes.append(
        f"expected is not what w and x give with these keywords (errors up to {_score.fmt_ratio(float(r.max()))} "
        "times the float bound): check mode, padding, stride, dilation, alpha, bias and spatial; "
        "the hypotheses below start from the recomputation"
    )
    return "mismatch"


def run_hypotheses(
    ctx: _Context, e: np.ndarray, a: np.ndarray, tol, prec: str, limit: int
) -> list[Finding]:
    """Score every hypothesis of `ctx` against `actual`; returns one Finding per hypothesis."""
    if a.ndim != len(ctx.out_shape):
        return []
    ctx.float64 = prec == "float64"
    specs = ctx.specs(a.shape)
    if not specs:
        return []
    pos = ctx.positions(a.shape, limit)
    chans = ctx.channels(a.shape[-1])
    # Stage 1: every hypothesis on a few positions, with the base kernel's magnitudes (cheap).
    # Stage 2: those that fit there, the closest others, the best of each cause and every
    # precision hypothesis, on all sampled positions with their own magnitudes.
    if len(pos) > 2 * _STAGE1:
        sub = np.sort(np.random.default_rng(2).choice(len(pos), _STAGE1, replace=False))
        first = _screen(ctx, specs, pos[sub], chans, a, tol)
        order = sorted(range(len(first)), key=lambda i: first[i][1])
        keep = {i for i in order if first[i][2] <= 1}
        keep = set(sorted(keep, key=order.index)[:16]) | set(order[:6])
        causes: set[str] = set()
        for i in order:
            sp = first[i][0]
            if sp.cause == "precision" or sp.cause not in causes:
                keep.add(i)
                causes.add(sp.cause)
        survivors = [first[i][0] for i in sorted(keep)]
        chan_fits = [(sp, cm) for sp, _, _, cm in first]
        final = _evaluate(ctx, survivors, pos, chans, a, tol, prec)
    else:
        final = _evaluate(ctx, specs, pos, chans, a, tol, prec)
        chan_fits = [(sp, cm) for sp, _, cm in final]
    composite = _per_channel_quantizer(chan_fits, chans, a.shape[-1])
    if composite is not None:
        final += _evaluate(ctx, [composite], pos, chans, a, tol, prec)
    ctx.clear()
    return [f for _, f, _ in final]


def _screen(ctx: _Context, specs, pos, chans, a, tol):
    """Cheap first pass: (spec, misfit, max error/tolerance, per-channel misfit) per spec."""
    ctx.clear()
    a_s = ctx.take(a, pos, chans)
    out = []
    for spec in specs:
        res = ctx.predict(spec, pos, chans, cheap=True)
        if res is None:
            continue
        pred, mag = res
        r = _score.ratio(a_s, pred, tolerance_array(tol, mag))
        lr = np.log2(1.0 + np.minimum(r, _score.BIG))
        cm = lr.mean(axis=0) if spec.cause == "quantization" else None
        out.append((spec, float(lr.mean()), float(r.max()), cm))
    ctx.clear()
    return out


def _per_channel_quantizer(fits_by_spec, chans, n_out: int):
    """Each output channel's best-fitting grid quantizer, combined into one kernel: weights
    quantized with a scale per output channel (QKeras alpha='auto_po2', per-channel grids)."""
    cands = [
        (sp, cm)
        for sp, cm in fits_by_spec
        if cm is not None and sp.name.startswith(("fixed_", "po2_"))
    ]
    if len(cands) < 2 or n_out < 2 or len(chans) != n_out:
        return None
    fits = np.stack([cm for _, cm in cands])  # (quantizers, channels)
    best = fits.argmin(axis=0)
    if len(set(best.tolist())) < 2:
        return None
    kernel = np.empty_like(cands[0][0].kernel)
    for c, i in enumerate(best):
        kernel[..., c] = cands[i][0].kernel[..., c]
    names = [cands[i][0].name for i in best]
    steps = sorted({n.split("_")[1] for n in names if n.startswith("fixed_")})
    text = (
        "weights quantized with a grid chosen per output channel "
        + (f"(steps {', '.join(steps)}), " if steps else "")
        + "as QKeras quantized_bits with alpha='auto_po2' does"
    )
    return Spec(
        "quantization",
        "per_channel_grids",
        text,
        kernel,
        cands[0][0].grid,
        details={"per_channel": names},
        prior=0.99,  # more freedom than a single quantizer
    )


def _evaluate(
    ctx: _Context, specs, pos, chans, a, tol, prec
) -> list[tuple[Spec, Finding, np.ndarray | None]]:
    ctx.clear()  # cached windows belong to other positions
    specs = [replace(sp, base_mag=False) for sp in specs]
    a_s = ctx.take(a, pos, chans)
    if tuple(a.shape) == ctx.out_shape:
        base_out = ctx.predict(ctx.base, pos, chans)
        assert base_out is not None
        p0, m0 = base_out
        r0 = _score.ratio(a_s, p0, tolerance_array(tol, m0))
    else:
        ref = float(np.median(ctx.magnitude)) or 1.0
        r0 = _score.ratio(a_s, np.zeros_like(a_s), tolerance_array(tol, ref))
    base, base_max = _score.misfit(r0), float(r0.max())
    results = []
    for spec in specs:
        out = ctx.predict(spec, pos, chans)
        if out is not None:
            f, r = _assess(spec, out, a_s, tol, prec, base, base_max)
            cm = (
                np.mean(np.log2(1.0 + np.minimum(r, _score.BIG)), axis=0)
                if spec.cause == "quantization"
                else None
            )
            results.append((spec, f, cm))
    ctx.clear()
    return results


def _assess(spec: Spec, out, a_s, tol, prec, base, base_max) -> tuple[Finding, np.ndarray]:
    pred, mag = out
    r = _score.ratio(a_s, pred, tolerance_array(tol, mag))
    mx, m = float(r.max()), _score.misfit(r)
    ulp = _score.max_ulp(a_s, pred, prec)
    advice = _score.ADVICE.get(spec.cause, "")
    explains = mx <= 1
    if explains:
        score = spec.prior
        ev = (
            f"{spec.text} reproduces actual within the {prec} bound (max error {mx:.2g} of the "
            f"tolerance; {_score.ulp_text(a_s, pred, prec)}); {advice}"
        )
    else:
        score = _score.partial_score(m, base) * spec.prior
        ev = (
            f"{spec.text} leaves errors up to {_score.fmt_ratio(mx)} times the {prec} bound "
            f"(without it {_score.fmt_ratio(base_max)} times)"
        )
        if spec.post:
            own = replace(tol, eps=_OWN_EPS[spec.post], precision=spec.post)
            r_own = _score.ratio(a_s, pred, tolerance_array(own, mag))
            frac = representable(a_s, spec.post)
            if r_own.max() <= 1 and frac >= 0.99:
                score = 0.97 * spec.prior
                explains = True
                ev = (
                    f"{spec.text} reproduces actual within the {spec.post} bound (max error "
                    f"{float(r_own.max()):.2g} of the {spec.post} tolerance), and "
                    f"{frac:.0%} of actual's values are {spec.post} numbers; {advice}"
                )
    details = dict(spec.details)
    finding = Finding(
        cause=spec.cause,
        score=score,
        evidence=ev,
        hypothesis=spec.name,
        explains=explains,
        max_error_to_tolerance=mx,
        max_ulp=ulp,
        basis="recomputation",
        details=details,
        misfit=m,
    )
    return finding, r
