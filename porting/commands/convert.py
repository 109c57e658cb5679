"""`porting convert`: a Knet model export in, a Keras 3 model out, optionally verified."""

from __future__ import annotations

import contextlib
import sys

from porting.commands._common import int_or_tuple, load_npy, print_json
from porting.errors import PortingError

NAME = "convert"
ORDER = 10
HELP = "convert a Knet model (export .npz + .json) to Keras 3 (.keras), verified layer by layer"
DESCRIPTION = (
    "Convert a Knet model, exported from Julia with PortingKnet.export_model (<prefix>.npz + "
    "<prefix>.json), to a Keras 3 model saved as .keras (atomically; Keras built-in layers only, "
    "so it loads without porting on any Keras backend) and optionally as a TensorFlow "
    "SavedModel and a TFLite flatbuffer. With --verify, the Knet side (Julia when available, else porting's "
    "NumPy reference) and the Keras model run on the same input and every layer is compared "
    "against its floating-point tolerance. Without MODEL (or with --example lenet) it runs on a "
    "built-in Knet LeNet (--example cnn-bn / resnet / dcgan / vae / layers21: batchnorm, residual, deconvolution and depthwise models). Exit 0: converted (and verified); 1: verification found a "
    "difference (nothing written unless --keep-on-mismatch); 2: bad input."
)


def add_arguments(p) -> None:
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="export prefix, <prefix>.json or <prefix>.npz"
    )
    p.add_argument(
        "--example",
        choices=("lenet", "cnn-bn", "resnet", "dcgan", "vae", "layers21"),
        help="use a built-in model: lenet (the default when MODEL is omitted), cnn-bn (Knet's "
        "cifar10 batchnorm CNN, small), resnet (a small CIFAR ResNet), dcgan (Knet's DCGAN "
        "generator, small), vae (Knet's conv VAE decoder, small), layers21 (asymmetric "
        "ZeroPad, depthwise conv)",
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.keras", help="write the Keras model here (atomically)"
    )
    p.add_argument(
        "--savedmodel", metavar="DIR", help="also export a TensorFlow SavedModel into DIR"
    )
    p.add_argument(
        "--tflite", metavar="OUT.tflite", help="also write a TFLite flatbuffer (atomically)"
    )
    p.add_argument("--verify", action="store_true", help="compare every layer with the Knet side")
    p.add_argument(
        "--input",
        metavar="X.npy",
        help="input batch, Julia size (X1,X2,C,N) (.npy as NPZ.jl writes it)",
    )
    p.add_argument(
        "--input-size",
        type=int_or_tuple,
        metavar="X1,X2,C",
        help="one sample's Julia size, when the export has none and no --input is given",
    )
    p.add_argument(
        "--mode",
        choices=("each", "whole"),
        default="each",
        help="each: every layer fed the Knet input (default); whole: end to end, errors propagate",
    )
    p.add_argument(
        "--spatial",
        choices=("reverse", "keep"),
        default="reverse",
        help="reverse: X1 is the width (default); keep: X1 is the height",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="Keras model dtype (default: the weights')",
    )
    p.add_argument(
        "--knet",
        default="auto",
        help="Knet backend: auto (default), reference, julia, julia-nnlib, worker",
    )
    p.add_argument(
        "--keep-on-mismatch",
        action="store_true",
        help="write the outputs even when verification fails",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


_WHAT = {
    "keras": "Keras 3 model",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite flatbuffer",
}


def _load_model(args):
    if args.model and args.example:
        raise PortingError("give MODEL or --example, not both")
    if args.model:
        from porting.model import load_export

        return load_export(args.model), None, str(args.model)
    if args.example in (None, "lenet"):
        from porting.examples.lenet import lenet, lenet_input

        return (
            lenet(),
            lenet_input(),
            "built-in example: Knet LeNet (tutorial layers, dense 800->128)",
        )
    from porting.examples.models import EXAMPLES, example_input

    build, what = EXAMPLES[args.example]
    model = build()
    return model, example_input(model), what


def _plan(model, x, args):
    """The input (if any) and the model's plan: computed once here and passed on."""
    from porting.model import plan
    from porting.model.forward import check_input

    input_size = None
    if args.input_size is not None:
        input_size = args.input_size if isinstance(args.input_size, tuple) else (args.input_size,)
    if x is not None:
        x, p = check_input(model, x)
        if input_size is not None and tuple(x.shape[:-1]) != tuple(input_size):
            raise PortingError(
                f"--input-size {input_size} but --input has size {x.shape} (batch last)"
            )
        return x, p
    if input_size is None and model.plan is not None:
        return None, model.plan
    if input_size is None:
        raise PortingError(
            f"{model.source or 'the model'}: the export records no input size; give --input "
            "X.npy or --input-size X1,X2,C"
        )
    return None, plan(model, input_size)  # names the first layer whose weights do not fit


def _rich_report(report) -> None:
    """The verification report as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
    table = Table(show_edge=False, pad_edge=False)
    for col in report.COLUMNS:
        just = "right" if col in ("K", "max abs err", "err / tol") else "left"
        table.add_column(col, justify="center" if col == "ok" else just)  # type: ignore[arg-type]
    for cells in report.table():
        ok = cells[-1] == "yes"
        table.add_row(*cells[:-1], "yes" if ok else "[bold red]NO[/]")
    console.print(report.headline(), markup=False)
    console.print(table)
    for line in report.footer():
        console.print(line, markup=False)


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """A rich progress bar on stderr, yielding the callback verify_model reports to."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("Knet side", total=None)

        def update(description: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=description)

        yield update


def run(args) -> int:
    from porting.model import convert as mconvert

    if not (args.output or args.savedmodel or args.tflite or args.verify):
        raise PortingError(
            "nothing to do: give -o OUT.keras, --savedmodel DIR, --tflite OUT.tflite and/or "
            "--verify"
        )
    # Paths first: a bad target fails before any work, and nothing is written.
    if args.output:
        mconvert.check_keras_path(args.output)
    if args.savedmodel:
        mconvert.check_savedmodel_path(args.savedmodel)
    if args.tflite:
        mconvert.check_tflite_path(args.tflite)

    model, x, source = _load_model(args)
    if args.input:
        x = load_npy(args.input, "--input")
    x, plan = _plan(model, x, args)
    input_size = plan.input_size

    km = mconvert.to_keras(model, spatial=args.spatial, dtype=args.dtype, plan=plan)
    report = None
    if args.verify:
        from porting.model.verify import default_input, verify_model

        if x is None:
            x = default_input(model, input_size)
        with _progress_bar(not args.json and sys.stderr.isatty()) as progress:
            report = verify_model(
                model,
                x,
                keras_model=km,
                mode=args.mode,
                spatial=args.spatial,
                knet=args.knet,
                progress=progress,
                plan=plan,
            )
    write = report is None or report.ok or args.keep_on_mismatch
    written = {}
    if write and args.output:
        written["keras"] = mconvert.save_keras(km, args.output)
    if write and args.savedmodel:
        written["savedmodel"] = mconvert.export_savedmodel(km, args.savedmodel)
    if write and args.tflite:
        written["tflite"] = mconvert.export_tflite(km, args.tflite)

    if args.json:
        print_json(
            {
                "model": source,
                "layers": len(model.layers),
                "weights": model.n_params,
                "input_size": list(input_size),
                "spatial": args.spatial,
                "written": written,
                "verification": report.to_dict() if report is not None else None,
                "ok": report.ok if report is not None else True,
            }
        )
    else:
        print(f"Model: {source}")
        print(str(model).split("\n", 1)[1] if "\n" in str(model) else model)
        if report is not None:
            print()
            sys.stdout.flush()
            _rich_report(report)
            print()
        for what, path in written.items():
            print(f"wrote {path} ({_WHAT[what]})")
        if not write and (args.output or args.savedmodel or args.tflite):
            print("nothing written: verification failed (use --keep-on-mismatch to write anyway)")
    return 0 if report is None or report.ok else 1
