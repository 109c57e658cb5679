"""`porting verify-data`: a port verified on the user's own data, batch by batch."""

from __future__ import annotations

import argparse
import contextlib
import sys

from porting.commands._common import (
    add_knet_backend,
    add_spatial,
    positive_int,
    print_json,
    print_text,
)
from porting.errors import PortingError

NAME = "verify-data"
ORDER = 15
HELP = "verify a converted model on a data set (.npy/.npz, folders of them, or of images)"
DESCRIPTION = (
    "Run the Knet model SOURCE (an export prefix, a Knet .jld2 file, or --example NAME) and its "
    "port PORT (a .keras file; an .onnx file, run under onnxruntime and checked end to end "
    "only; omitted: converted here) on every sample of --data, a "
    "batch at a time, comparing every layer against its floating-point tolerance. --data is a "
    ".npy or .npz file (memory-mapped) or a folder of them, Julia-indexed with the batch last "
    "(X1,X2,C,N) as NPZ.jl writes it (--layout nhwc for TensorFlow's (N,H,W,C)), or a folder "
    "of PNG/JPEG images (--resize, --scale, --mean, --std, --channels say how pixels become "
    "inputs). Reports per layer the worst error / tolerance and its distribution, the end-to-end "
    "error, top-1/top-5 agreement for classifiers and the worst samples; --report FILE.html "
    "writes it as one self-contained page. Ctrl-C prints the report so far, marked partial "
    "(exit 130). Exit 0: every layer agrees; 1: some layer differs; 2: bad input."
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: expected numbers separated by commas, e.g. 0.485,0.456,0.406"
        ) from None


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected H,W, e.g. 224,224") from None
    return h, w


def add_arguments(p) -> None:
    from porting.commands.convert import EXAMPLE_CHOICES

    p.add_argument("model", nargs="?", metavar="SOURCE", help="export prefix or .jld2 file")
    p.add_argument(
        "port",
        nargs="?",
        metavar="PORT",
        help="the .keras or .onnx file (omitted: converted here); give the --spatial it was "
        "converted with",
    )
    p.add_argument("--example", choices=EXAMPLE_CHOICES, help="a built-in model as SOURCE")
    p.add_argument("--data", required=True, metavar="PATH", help=".npy, .npz, or a folder")
    p.add_argument(
        "--layout",
        choices=("julia", "nhwc"),
        default="julia",
        help="julia: (X1,X2,C,N), batch last (default); nhwc: TensorFlow's (N,H,W,C)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int(1 << 16, "samples per batch"),
        default=32,
        metavar="B",
        help="samples per batch (default 32)",
    )
    p.add_argument(
        "--limit", type=positive_int(1 << 40, "samples"), metavar="N", help="stop after N samples"
    )
    p.add_argument("--worst", type=int, default=10, metavar="K", help="list the K worst samples")
    p.add_argument(
        "--mode",
        choices=("each", "whole"),
        default="each",
        help="each: every layer fed the Knet input (default); whole: errors propagate",
    )
    p.add_argument(
        "--classifier",
        choices=("auto", "yes", "no"),
        default="auto",
        help="top-1/top-5 figures (auto: a final output of 2 or more classes)",
    )
    add_spatial(p, default=None)
    add_knet_backend(p)
    g = p.add_argument_group("images (a folder of PNG/JPEG files)")
    g.add_argument("--resize", type=_size, metavar="H,W", help="resize every image (bilinear)")
    g.add_argument("--scale", type=float, default=1 / 255, help="pixel factor (default 1/255)")
    g.add_argument("--mean", type=_floats, default=(0.0,), metavar="M[,M,M]")
    g.add_argument("--std", type=_floats, default=(1.0,), metavar="S[,S,S]")
    g.add_argument("--channels", choices=("rgb", "bgr"), default="rgb")
    p.add_argument("--report", metavar="FILE.html", help="write the report as one HTML file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    from porting.commands._knetfile import add_convert_arguments

    add_convert_arguments(p)


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """A rich bar on stderr (samples, rate, time left) when stderr is a terminal."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("verifying", total=None, rate="")

        def update(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(
                task,
                completed=done,
                total=total,
                rate=f"{speed:.1f} samples/s" if speed else "",
            )

        yield update


def _load(args):
    from porting.commands import convert as cconvert

    args.input = None
    args.input_size = None
    model, _, source = cconvert._load_model(args)
    return model, source


def run(args) -> int:
    from porting import files
    from porting.model import convert as mconvert
    from porting.model.datasets import ImageOptions
    from porting.model.verify_data import verify_data

    if getattr(args, "list", False):
        from porting.commands._knetfile import list_file

        return list_file(args)
    if args.worst < 0:
        raise PortingError(f"--worst {args.worst}: expected a count of 0 or more")
    if args.report:
        files.output_file(args.report, what="--report")
        inputs = {"--data": args.data, "PORT": args.port}
        files.check_distinct(inputs, {"--report": args.report})
    is_port = str(args.model or "").lower().endswith((".keras", ".onnx"))
    if args.port is None and args.model and is_port and args.example:
        args.model, args.port = None, args.model
    model, source = _load(args)
    if model.input_size is None:
        raise PortingError(f"{source}: the model records no input size; verify-data needs one")
    plan = model.plan
    onnx = None
    km = None
    if args.port and str(args.port).lower().endswith(".onnx"):
        onnx = args.port  # run under onnxruntime (porting.model.onnx_out.OnnxPort)
        spatial = args.spatial or "reverse"
    elif args.port:
        km = mconvert.load_keras(args.port)
        spatial = args.spatial or "reverse"
    else:
        spatial = args.spatial or "reverse"
        km = mconvert.to_keras(model, spatial=spatial, plan=plan)
    images = ImageOptions(
        resize=args.resize, scale=args.scale, mean=args.mean, std=args.std, channels=args.channels
    )
    classifier = {"auto": None, "yes": True, "no": False}[args.classifier]
    with _progress_bar(not args.json and sys.stderr.isatty()) as progress:
        report = verify_data(
            model,
            args.data,
            keras_model=km,
            batch_size=args.batch_size,
            mode=args.mode,
            spatial=spatial,
            knet=args.knet,
            layout=args.layout,
            images=images,
            classifier=classifier,
            k_worst=args.worst,
            progress=progress,
            plan=plan,
            limit=args.limit,
            onnx=onnx,
        )
    written = None
    if args.report:
        from porting.report_html import write_report

        written = write_report(report, args.report, title=f"verify-data: {source}")
    if args.json:
        d = report.to_dict()
        d["model"] = source
        d["port"] = args.port or "converted here"
        d["report"] = written
        print_json(d)
    else:
        print_text(f"Model: {source}; port: {args.port or 'converted here'}")
        print_text(str(report))
        if written:
            print_text(f"wrote {written} (HTML report)")
    if report.partial:
        return 130
    return 0 if report.ok else 1
