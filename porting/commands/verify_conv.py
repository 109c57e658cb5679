"""`porting verify-conv`: run Knet's conv4 and TensorFlow on the same arrays and compare."""

from __future__ import annotations

from porting.commands._common import int_or_tuple, load_npy, print_json
from porting.errors import PortingError

NAME = "verify-conv"
ORDER = 20
HELP = "check a conv4 port: Knet's conv4 vs TensorFlow on the same Julia arrays"
DESCRIPTION = (
    "Run Knet's conv4 (Julia when available, else porting's NumPy reference) and TensorFlow on "
    "the same Julia-indexed arrays (.npy, as NPZ.jl writes them) and report whether they agree "
    "within the floating-point bound. Exit 0: agree; 1: differ; 2: bad input."
)


def add_arguments(p) -> None:
    src = p.add_argument_group("input")
    src.add_argument("--w", metavar="W.npy", help="kernel, Julia size (W1,W2,Cin,Cout)")
    src.add_argument("--x", metavar="X.npy", help="input, Julia size (X1,X2,Cin,N)")
    src.add_argument(
        "--example", action="store_true", help="use the built-in example (seed report 002)"
    )
    g = p.add_argument_group(
        "conv4 keywords (scalar or comma-separated per spatial dim, Julia order)"
    )
    g.add_argument("--padding", type=int_or_tuple, default=None, metavar="P")
    g.add_argument("--stride", type=int_or_tuple, default=None, metavar="S")
    g.add_argument("--dilation", type=int_or_tuple, default=None, metavar="D")
    g.add_argument(
        "--mode",
        type=int,
        choices=(0, 1),
        default=None,
        help="0 convolution (Knet default), 1 cross-correlation",
    )
    g.add_argument("--alpha", type=float, default=None)
    p.add_argument(
        "--spatial",
        choices=("reverse", "keep"),
        default=None,
        help="reverse: X1 is the width (default); keep: X1 is the height",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="TensorFlow side's dtype (default: the inputs')",
    )
    p.add_argument(
        "--knet",
        default="auto",
        help="Knet backend: auto (default), reference, julia, julia-nnlib, worker",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    from porting.verify import verify_conv4

    if args.example:
        if args.w or args.x:
            raise PortingError("--example uses built-in arrays; drop --w/--x (or drop --example)")
        from porting.examples import seed002

        ex = seed002()
        w, x, kwargs = ex["w"], ex["x"], dict(ex["kwargs"])
    else:
        if not (args.w and args.x):
            raise PortingError("need both --w W.npy and --x X.npy (or --example)")
        w, x, kwargs = load_npy(args.w, "--w"), load_npy(args.x, "--x"), {}
    for key in ("padding", "stride", "dilation", "mode", "alpha", "spatial", "dtype"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    report = verify_conv4(w, x, knet=args.knet, **kwargs)
    if args.json:
        print_json(report.to_dict())
    else:
        if args.example:
            print(
                "Example: seed report 002 (Knet conv4 padding=1 in Float64 vs tf.nn.conv2d SAME in float32)"
            )
        print(report)
    return 0 if report.ok else 1
