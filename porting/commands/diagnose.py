"""`porting diagnose`: name the cause of a mismatch between two results saved as .npy."""

from __future__ import annotations

import sys

from porting.commands._common import int_or_tuple, load_npy, print_json
from porting.errors import PortingError

NAME = "diagnose"
ORDER = 25
HELP = "explain why two results differ: kernel flip, H/W swap, padding, precision, ..."
DESCRIPTION = (
    "Compare EXPECTED (the Knet side's result) with ACTUAL (the port's), both in TensorFlow "
    "layout, and name the most likely cause of their differences: rounding (no bug), "
    "kernel_flip, spatial_transpose, padding_shift, flatten_order, precision, quantization, "
    "layout or unknown, with numeric evidence and the ranked alternatives. With the Knet side's "
    "inputs (--w, --x, Julia-indexed, as NPZ.jl writes them) and conv4's keywords, each "
    "hypothesis is tested by recomputation; a 2-d --w is a dense layer (out, in). "
    "Exit 0: rounding (no bug); 1: any other cause; 2: bad input."
)


def add_arguments(p) -> None:
    p.add_argument(
        "expected",
        metavar="EXPECTED.npy",
        help="the Knet side's result, TensorFlow layout (N,H,W,C) or (N,out)",
    )
    p.add_argument("actual", metavar="ACTUAL.npy", help="the port's result, same layout")
    ctx = p.add_argument_group("the Knet side's inputs (optional; enable recomputation)")
    ctx.add_argument(
        "--w",
        metavar="W.npy",
        help="conv kernel, Julia size (W1,W2,Cin,Cout); or dense weight (out,in)",
    )
    ctx.add_argument("--x", metavar="X.npy", help="input, Julia size (X1,X2,Cin,N)")
    ctx.add_argument("--bias", metavar="B.npy", help="Knet bias, if the results include it")
    g = p.add_argument_group(
        "conv4 keywords (scalar or comma-separated per spatial dim, Julia order)"
    )
    g.add_argument("--padding", type=int_or_tuple, default=0, metavar="P")
    g.add_argument("--stride", type=int_or_tuple, default=1, metavar="S")
    g.add_argument("--dilation", type=int_or_tuple, default=1, metavar="D")
    g.add_argument(
        "--mode",
        type=int,
        choices=(0, 1),
        default=0,
        help="0 convolution (Knet default), 1 cross-correlation",
    )
    g.add_argument("--alpha", type=float, default=1.0)
    p.add_argument(
        "--spatial",
        choices=("reverse", "keep"),
        default="reverse",
        help="how the port mapped Julia's X1: reverse = width (default), keep = height",
    )
    o = p.add_argument_group("without --w/--x: the tolerance")
    o.add_argument(
        "--k",
        type=int,
        default=None,
        metavar="K",
        help="terms summed per output (default: assume 256)",
    )
    o.add_argument(
        "--magnitude", metavar="S.npy", help="sum of |w*x| per output, same shape as EXPECTED"
    )
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="write a figure (.png, .svg or .pdf; needs matplotlib): where the errors are and "
        "their histograms in ULPs against the bound (porting.plots.diagnosis_plot)",
    )


_INPUTS = {
    "EXPECTED": "expected",
    "ACTUAL": "actual",
    "--w": "w",
    "--x": "x",
    "--bias": "bias",
    "--magnitude": "magnitude",
}


def run(args) -> int:
    from porting.diagnosis import diagnose

    if (args.w is None) != (args.x is None):
        raise PortingError("give both --w W.npy and --x X.npy (the Knet side's inputs), or neither")
    plot_path = getattr(args, "plot", None)
    if plot_path:
        from porting.plots import check_path

        check_path(plot_path)  # a bad path fails before the work, not after
        from porting.files import check_distinct

        check_distinct({n: getattr(args, a) for n, a in _INPUTS.items()}, {"--plot": plot_path})
    expected = load_npy(args.expected, "EXPECTED")
    actual = load_npy(args.actual, "ACTUAL")
    kwargs = {"spatial": args.spatial}
    if args.w is not None:
        kwargs.update(
            w=load_npy(args.w, "--w"),
            x=load_npy(args.x, "--x"),
            padding=args.padding,
            stride=args.stride,
            dilation=args.dilation,
            mode=args.mode,
            alpha=args.alpha,
        )
        if args.bias is not None:
            kwargs["bias"] = load_npy(args.bias, "--bias")
    else:
        given = [f"--{n}" for n in ("bias",) if getattr(args, n) is not None]
        if given:
            raise PortingError(f"{', '.join(given)} needs --w and --x")
        kwargs["k"] = args.k
        if args.magnitude is not None:
            kwargs["magnitude"] = load_npy(args.magnitude, "--magnitude")
    diag = diagnose(expected, actual, **kwargs)
    if plot_path and diag.error is None:
        # shapes differ (layout, padding): no element-wise errors to draw; the diagnosis stands
        print(
            f"porting diagnose: no plot: expected {getattr(diag.expected, 'shape', None)} and actual "
            f"{getattr(diag.actual, 'shape', None)} differ in shape",
            file=sys.stderr,
        )
        plot_path = None
    if plot_path:
        from porting.plots import diagnosis_plot

        diagnosis_plot(diag, plot_path)
    if args.json:
        d = diag.to_dict()
        if plot_path:
            d["plot"] = str(plot_path)
        print_json(d)
    else:
        print(f"cause: {diag}")
        if plot_path:
            print(f"plot written to {plot_path}")
    return 0 if diag.ok else 1
