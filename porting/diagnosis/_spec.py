"""The hypotheses diagnose tests by recomputation: `Spec` (what a TensorFlow side with one
particular mistake would have used), the precision hypotheses, their priors and the
activations a layer's outputs may include."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from porting._checks import short_repr
from porting.diagnosis._engine import Grid
from porting.diagnosis._formats import quantizers, to_format
from porting.errors import PortingError

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
    accumulation (docs/numerics.md#tf32), or the whole computation in float16/bfloat16 (result
    rounded too); in a float64 comparison also float32 inputs."""
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


def _quantization_specs(k: np.ndarray, grid: Grid | None) -> list[Spec]:
    """Quantized-weight hypotheses: the kernel `k` (output channels last) through each known
    weight quantizer that changes it (`porting.diagnosis._formats.quantizers`)."""
    out = []
    for q in quantizers(k):
        qk = q.apply(k, -1)
        if not np.array_equal(qk, k):
            out.append(
                Spec(
                    "quantization",
                    q.name,
                    q.description,
                    qk,
                    grid,
                    base_mag=True,
                    details={"quantizer": q.name},
                )
            )
    return out


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
        f"activation={short_repr(act)}: expected None, {', '.join(map(repr, ACTIVATIONS))} or an "
        "element-wise NumPy function"
    )
