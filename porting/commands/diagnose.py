"""`porting diagnose`: name the cause of a mismatch between two results saved as .npy."""

from __future__ import annotations

import sys

import numpy as np

from porting.commands._common import (
    MAX_K,
    add_conv4_keywords,
    add_spatial,
    load_npy,
    positive_int,
    print_json,
    print_text,
)
from porting.errors import PortingError

NAME = "diagnose"
ORDER = 25
HELP = "explain why two results differ: kernel flip, H/W swap, padding, precision, ..."
DESCRIPTION = (
    "Compare EXPECTED (the Knet side's result) with ACTUAL (the port's) and name the most likely cause of their differences: rounding (no bug), "
    "kernel_flip, spatial_transpose, padding_shift, flatten_order, precision, quantization, "
    "layout or unknown, with numeric evidence and the ranked alternatives. With the Knet side's "
    "inputs (--w, --x, Julia-indexed, as NPZ.jl writes them) and conv4's keywords, each "
    "hypothesis is tested by recomputation; a 2-d --w is a dense layer (out, in). "
    "Each output may be in Julia layout, as Knet holds it ((Y1,Y2,C,N), (out,N)), or in "
    "TensorFlow layout ((N,H,W,C), (N,out)); the layout is told from the shapes (with --w/--x, "
    "from the output size they give) or by --expected-layout/--actual-layout where the shape "
    "cannot tell, and the output says how each file was read. "
    "Exit 0: rounding (no bug); 1: any other cause; 2: bad input; 3: internal error (a bug)."
)


def add_arguments(p) -> None:
    p.add_argument(
        "expected",
        metavar="EXPECTED.npy",
        help="the Knet side's result: Julia (Y1,Y2,C,N) / (out,N) or TensorFlow (N,H,W,C) / "
        "(N,out) layout",
    )
    p.add_argument("actual", metavar="ACTUAL.npy", help="the port's result, either layout")
    for side in ("expected", "actual"):
        p.add_argument(
            f"--{side}-layout",
            choices=("auto", "julia", "tf"),
            default="auto",
            help=f"how {side.upper()}.npy is laid out: julia (as Knet/NPZ.jl write it), tf, or "
            "auto (default: told from the shapes; an error where they cannot tell)",
        )
    ctx = p.add_argument_group("the Knet side's inputs (optional; enable recomputation)")
    ctx.add_argument(
        "--w",
        metavar="W.npy",
        help="conv kernel, Julia size (W1,W2,Cin,Cout); or dense weight (out,in)",
    )
    ctx.add_argument("--x", metavar="X.npy", help="input, Julia size (X1,X2,Cin,N)")
    ctx.add_argument("--bias", metavar="B.npy", help="Knet bias, if the results include it")
    add_conv4_keywords(p)
    add_spatial(p)
    o = p.add_argument_group("without --w/--x: the tolerance")
    o.add_argument(
        "--k",
        type=positive_int(MAX_K, "terms summed per output element"),
        default=None,
        metavar="K",
        help="terms summed per output (default: assume 4096, as porting.compare does)",
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


def _julia_to_tf_shape(shape: tuple[int, ...], spatial: str) -> tuple[int, ...]:
    from porting import layout

    if len(shape) == 2:
        return (shape[1], shape[0])
    if len(shape) < 2:
        return shape
    return (shape[-1], *layout.spatial_to_tf(tuple(shape[:-2]), spatial), shape[-2])


def _to_tf(a: np.ndarray, spatial: str) -> np.ndarray:
    from porting import layout

    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    if a.ndim in (3, 4, 5):
        return layout.activations_to_tf(a, spatial)
    raise PortingError(
        f"an array of shape {a.shape} has no Julia-to-TensorFlow layout; expected 2 to 5 dims"
    )


def _knet_output_shape(args, w: np.ndarray, x: np.ndarray) -> tuple[int, ...] | None:
    """The Julia size of the Knet side's output that --w/--x and the keywords give."""
    from porting.geometry import ConvGeometry

    try:
        if w.ndim == 2:
            return (w.shape[0], x.shape[-1])
        geom = ConvGeometry.from_knet(
            x.ndim - 2,
            padding=args.padding,
            stride=args.stride,
            dilation=args.dilation,
            mode=args.mode,
        )
        return (*geom.output_size(x.shape[:-2], w.shape[:-2]), w.shape[-1], x.shape[-1])
    except (PortingError, IndexError, ValueError):
        return None  # diagnose reports the bad geometry itself


def _layouts(args, e: np.ndarray, a: np.ndarray, knet_shape) -> tuple[str, str, str]:
    """The layout of each output ('julia' or 'tf') and why."""
    spatial = args.spatial
    given = {"expected": args.expected_layout, "actual": args.actual_layout}
    arrays = {"expected": e, "actual": a}
    found: dict[str, str] = {}
    why = []
    for side in ("expected", "actual"):
        arr = arrays[side]
        if given[side] != "auto":
            found[side] = given[side]
            why.append(f"{side}: --{side}-layout {given[side]}")
            continue
        if knet_shape is not None:
            as_julia = tuple(arr.shape) == tuple(knet_shape)
            as_tf = tuple(arr.shape) == _julia_to_tf_shape(tuple(knet_shape), spatial)
            if as_julia and as_tf:
                raise PortingError(
                    f"{side.upper()} has shape {arr.shape}, the Knet output's size in Julia and "
                    f"in TensorFlow layout alike; say which with --{side}-layout julia or tf"
                )
            found[side] = "julia" if as_julia else "tf"
            why.append(
                f"{side}: shape {arr.shape} is "
                + (
                    "the Knet output's Julia size"
                    if as_julia
                    else "the Knet output in TensorFlow layout"
                    if as_tf
                    else f"neither the Knet output's Julia size {tuple(knet_shape)} nor its "
                    "TensorFlow layout (read as TensorFlow layout)"
                )
            )
    undecided = [s for s in ("expected", "actual") if s not in found]
    if undecided:
        other = {"expected": "actual", "actual": "expected"}
        for side in undecided:
            mine, theirs = arrays[side], arrays[other[side]]
            theirs_layout = found.get(other[side])
            if theirs_layout is not None:
                theirs_tf = (
                    tuple(theirs.shape)
                    if theirs_layout == "tf"
                    else _julia_to_tf_shape(tuple(theirs.shape), spatial)
                )
                julia = (
                    _julia_to_tf_shape(tuple(mine.shape), spatial) == theirs_tf
                    and tuple(mine.shape) != theirs_tf
                )
                found[side] = "julia" if julia else "tf"
                why.append(f"{side}: from the shape of {other[side]}")
                continue
        if len(undecided) == 2:
            se, sa = tuple(e.shape), tuple(a.shape)
            if se == sa:
                found["expected"] = found["actual"] = "tf"
                why.append(
                    "the same shape: TensorFlow layout assumed for both (the comparison is the "
                    "same either way; say --expected-layout julia --actual-layout julia if both "
                    "are Julia, so that axis-dependent causes are tested on the right axes)"
                )
            elif _julia_to_tf_shape(se, spatial) == sa:
                found["expected"], found["actual"] = "julia", "tf"
                why.append(f"EXPECTED {se} is ACTUAL {sa} in Julia layout")
            elif _julia_to_tf_shape(sa, spatial) == se:
                found["expected"], found["actual"] = "tf", "julia"
                why.append(f"ACTUAL {sa} is EXPECTED {se} in Julia layout")
            else:
                found["expected"] = found["actual"] = "tf"
                why.append("shapes unrelated: both read as TensorFlow layout")
    return found["expected"], found["actual"], "; ".join(why)


def _describe(path: str, arr: np.ndarray, lay: str, spatial: str) -> str:
    if lay == "julia":
        tf_shape = _julia_to_tf_shape(tuple(arr.shape), spatial)
        return (
            f"{path}: Julia layout {tuple(arr.shape)}, compared as TensorFlow {tf_shape} "
            f"(spatial={spatial!r})"
        )
    return f"{path}: TensorFlow layout {tuple(arr.shape)}"


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
    knet_shape = None
    read = []
    if args.w is not None:
        w, x = load_npy(args.w, "--w"), load_npy(args.x, "--x")
        kwargs.update(
            w=w,
            x=x,
            padding=args.padding,
            stride=args.stride,
            dilation=args.dilation,
            mode=args.mode,
            alpha=args.alpha,
        )
        if args.bias is not None:
            kwargs["bias"] = load_npy(args.bias, "--bias")
        knet_shape = _knet_output_shape(args, np.asarray(w), np.asarray(x))
        read.append(f"--w {tuple(np.shape(w))}, --x {tuple(np.shape(x))}: Julia-indexed")
    else:
        given = [f"--{n}" for n in ("bias",) if getattr(args, n) is not None]
        if given:
            raise PortingError(f"{', '.join(given)} needs --w and --x")
        kwargs["k"] = args.k
    e_layout, a_layout, why = _layouts(args, expected, actual, knet_shape)
    shapes = {"expected": list(expected.shape), "actual": list(actual.shape)}
    read = [
        "EXPECTED " + _describe(args.expected, expected, e_layout, args.spatial),
        "ACTUAL " + _describe(args.actual, actual, a_layout, args.spatial),
        *read,
    ]
    if e_layout == "julia":
        expected = _to_tf(expected, args.spatial)
    if a_layout == "julia":
        actual = _to_tf(actual, args.spatial)
    if args.w is None and args.magnitude is not None:
        mag = load_npy(args.magnitude, "--magnitude")
        if mag.shape != expected.shape and e_layout == "julia":
            mag = _to_tf(mag, args.spatial)  # given in EXPECTED's own layout
        kwargs["magnitude"] = mag
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
        d["inputs"] = {
            "expected": {"path": args.expected, "layout": e_layout, "shape": shapes["expected"]},
            "actual": {"path": args.actual, "layout": a_layout, "shape": shapes["actual"]},
            "how": why,
        }
        if plot_path:
            d["plot"] = str(plot_path)
        print_json(d)
    else:
        print_text(f"cause: {diag}")
        print_text("\n".join(["inputs, as read:", *(f"  {r}" for r in read), f"  ({why})"]))
        if plot_path:
            print_text(f"plot written to {plot_path}")
    return 0 if diag.ok else 1
