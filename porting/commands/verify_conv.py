"""`porting verify-conv`: run Knet's conv4 and TensorFlow on the same arrays and compare."""

from __future__ import annotations

from porting.commands._common import (
    add_conv4_keywords,
    add_knet_backend,
    add_spatial,
    load_npy,
    print_json,
    print_text,
)
from porting.errors import PortingError

NAME = "verify-conv"
ORDER = 20
HELP = "check a conv4 port: Knet's conv4 vs TensorFlow on the same Julia arrays"
DESCRIPTION = (
    "Run Knet's conv4 (Julia when available, else porting's NumPy reference) and TensorFlow on "
    "the same Julia-indexed arrays (.npy, as NPZ.jl writes them) and report whether they agree "
    "within the floating-point bound. Exit 0: agree; 1: differ; 2: bad input; 3: internal error."
)


def add_arguments(p) -> None:
    src = p.add_argument_group("input")
    src.add_argument("--w", metavar="W.npy", help="kernel, Julia size (W1,W2,Cin,Cout)")
    src.add_argument("--x", metavar="X.npy", help="input, Julia size (X1,X2,Cin,N)")
    src.add_argument(
        "--example",
        action="store_true",
        help="reproduce seed report 002 (a Knet conv4 whose TensorFlow port looked mirrored) "
        "and show that porting's port of it agrees",
    )
    add_conv4_keywords(p, defaults=False)  # unset: --example keeps its own
    add_spatial(p, default=None)  # unset: --example keeps its own
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="TensorFlow side's dtype (default: the inputs')",
    )
    add_knet_backend(p)
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
    story = example_story(ex, report.ok) if args.example else None
    if args.json:
        d = report.to_dict()
        if story is not None:
            d["example"] = {"seed": "002", "explanation": story}
        print_json(d)
    else:
        if story is not None:
            print_text(story + "\n")
        print_text(str(report))
    return 0 if report.ok else 1


def example_story(ex: dict, ok: bool) -> str:
    """What `--example` reproduces: the reporter's mismatch, what porting does about it, and
    whether the two sides agree now (`ok`)."""
    knet_first = float(ex["knet_printed"][0][0])
    tf_first = float(ex["tf_printed"][0][0])
    kw = ex["kwargs"]
    verdict = (
        "Below, porting's port of the same call on the same arrays: the two sides now agree "
        "within the float32 bound."
        if ok
        else "Below, porting's port of the same call on the same arrays: the two sides STILL "
        "DIFFER (this should not happen; see the diagnosis)."
    )
    return "\n".join(
        [
            "Example: seed report 002, reproduced.",
            f"  The report: Knet's conv4(w, x; padding={kw['padding']}) in Float64 and "
            'tf.nn.conv2d(x, w, padding="SAME") in float32, on the same 3x3x3 kernel and 5x5x3 '
            f"image, disagreed: Knet's output began {knet_first:g}, TensorFlow's "
            f"{tf_first:.6g}; the outputs looked mirrored.",
            "  The cause: Knet's conv4 defaults to mode=0, true convolution (the kernel rotated "
            "180 degrees); TensorFlow cross-correlates. And Knet pads symmetrically, which "
            '"SAME" matches only for odd kernels at stride 1.',
            "  What porting does: rotates the kernel for mode 0 "
            "(porting.layout.kernel_to_tf(w, mode=0)) and pads explicitly and symmetrically "
            f"(padding={kw['padding']} on each side), with the reporter's axis mapping "
            f"(spatial={kw['spatial']!r}: X1 is the height) and TensorFlow in "
            f"{kw['dtype']}.",
            f"  {verdict}",
        ]
    )
