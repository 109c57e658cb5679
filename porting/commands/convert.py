"""`porting convert`: a Knet model export in, a Keras 3 model out, optionally verified."""

from __future__ import annotations

import contextlib
import sys

from porting._checks import check_fits_memory
from porting.commands._common import (
    add_knet_backend,
    add_spatial,
    int_or_tuple,
    load_npy,
    print_json,
    print_text,
)
from porting.errors import PortingError

NAME = "convert"
ORDER = 10
HELP = "convert a Knet model (export .npz + .json) to Keras 3 (.keras), verified layer by layer"
DESCRIPTION = (
    "Convert a Knet model, exported from Julia with PortingKnet.export_model (<prefix>.npz + "
    "<prefix>.json), to a Keras 3 model saved as .keras (atomically; Keras built-in layers only, "
    "so it loads without porting on any Keras backend) and optionally as a TensorFlow "
    "SavedModel, a TFLite flatbuffer and an ONNX file (--onnx: written through Keras's exporter, then run under onnxruntime and checked end to end against the Knet side; needs pip install 'porting[onnx]'). With --verify, the Knet side (Julia when available, else porting's "
    "NumPy reference) and the Keras model run on the same input and every layer is compared "
    "against its floating-point tolerance. Without MODEL (or with --example lenet) it runs on a "
    "built-in Knet LeNet (--example cnn-bn / resnet / dcgan / vae / layers21: batchnorm, "
    "residual, deconvolution and depthwise models; rnnlm / tagger: embedding and LSTM models, "
    "whose input is (T, B) token indices). MODEL may also be a .jld2 file written by "
    "Knet.save or JLD2 (see the JLD2 options below; porting inspect FILE lists what it holds). "
    "Exit 0: converted (and verified); 1: verification found a "
    "difference (nothing written unless --keep-on-mismatch); 2: bad input."
)


EXAMPLE_CHOICES = (
    "lenet",
    "cnn-bn",
    "resnet",
    "dcgan",
    "vae",
    "layers21",
    "rnnlm",
    "tagger",
    "flux-lenet",
    "flux-resnet",
    "flux-lstm",
)


def add_arguments(p) -> None:
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="export prefix, <prefix>.json or <prefix>.npz"
    )
    p.add_argument(
        "--example",
        choices=EXAMPLE_CHOICES,
        help="use a built-in model: lenet (the default when MODEL is omitted), cnn-bn (Knet's "
        "cifar10 batchnorm CNN, small), resnet (a small CIFAR ResNet), dcgan (Knet's DCGAN "
        "generator, small), vae (Knet's conv VAE decoder, small), layers21 (asymmetric "
        "ZeroPad, depthwise conv), rnnlm (Knet's RNNLM: embedding, LSTM, dense over every "
        "step), tagger (embedding, bidirectional 2-layer LSTM, dense per step), flux-lenet / "
        "flux-resnet (Flux models written as BSON.jl files and read back: a LeNet; residual "
        "blocks with SkipConnection and GlobalMeanPool), flux-lstm (a Flux LSTM classifier "
        "at every step)",
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
    p.add_argument(
        "--onnx",
        metavar="OUT.onnx",
        help="also write an ONNX file (atomically), checked under onnxruntime against the Knet "
        "side end to end (exit 1 if it differs); needs pip install 'porting[onnx]'",
    )
    p.add_argument("--verify", action="store_true", help="compare every layer with the Knet side")
    p.add_argument(
        "--round-trip",
        action="store_true",
        help="with --to knet --verify: also rebuild a Keras model from the Knet one (the way "
        "Knet models go to Keras) and check it against the original end to end (always done "
        "when Keras layer names had to be renamed)",
    )
    p.add_argument(
        "--to",
        choices=("keras", "knet"),
        default="keras",
        help="keras: a Knet model in, Keras out (default); knet: MODEL.keras in, the Knet export "
        "pair PREFIX.npz + PREFIX.json out (-o PREFIX), for julia/'s importer",
    )
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
        "--flux-version",
        metavar="X.Y.Z",
        help="MODEL.bson: the Flux release that saved it (a LayerNorm's epsilon depends on it)",
    )
    p.add_argument(
        "--mode",
        choices=("each", "whole"),
        default="each",
        help="each: every layer fed the Knet input (default); whole: end to end, errors propagate",
    )
    add_spatial(p)
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="Keras model dtype (default: the weights')",
    )
    add_knet_backend(p)
    p.add_argument(
        "--keep-on-mismatch",
        action="store_true",
        help="write the outputs even when verification fails",
    )
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="with --verify: write the verification as one self-contained HTML page",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    from porting.commands._knetfile import add_convert_arguments  # MODEL.jld2: --key, --list, ...

    add_convert_arguments(p)


_WHAT = {
    "report": "HTML report",
    "keras": "Keras 3 model",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite flatbuffer",
    "onnx": "ONNX model",
}


def _load_model(args):
    if args.model and args.example:
        raise PortingError("give MODEL or --example, not both")
    if args.model:
        from porting.commands._flux import is_flux_file, is_flux_structure

        if is_flux_file(args.model) or is_flux_structure(args):  # BSON.jl, Flux.state
            from porting.commands._flux import load_for_convert as load_flux

            return load_flux(args)
        if getattr(args, "flux_version", None) is not None:
            raise PortingError(
                f"--flux-version applies to a Flux model saved with BSON.jl (.bson), not to "
                f"{args.model}"
            )
        from porting.commands._knetfile import load_for_convert

        if (found := load_for_convert(args)) is not None:  # a JLD2 file of Knet structs
            return found
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

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 80)
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


def _html_report(model, x, km, args, plan, source) -> str:
    """`--report`: the verification of the one batch `x` as an HTML page (porting.report_html),
    through `verify_data` (one batch of every sample of `x`), so the page is the one
    `porting verify-data --report` writes."""
    from porting.model.verify_data import verify_data
    from porting.report_html import write_report

    data = verify_data(
        model,
        x,
        keras_model=km,
        batch_size=int(x.shape[-1]),
        mode=args.mode,
        spatial=args.spatial,
        knet=args.knet,
        plan=plan,
    )
    return write_report(data, args.report, title=f"convert --verify: {source}")


def _check_distinct(args) -> None:
    """An output that is an input, or outputs that coincide or nest: refused before any work."""
    from porting.files import check_distinct

    inputs = {"--input": args.input}
    if args.model and not args.example:
        from porting.model.export import export_paths

        json_path, npz_path = export_paths(args.model)
        inputs.update({"MODEL (.json)": json_path, "MODEL (.npz)": npz_path})
    check_distinct(
        inputs,
        {
            "-o/--output": args.output,
            "--savedmodel": args.savedmodel,
            "--tflite": args.tflite,
            "--onnx": args.onnx,
            "--report": getattr(args, "report", None),
        },
        directories=("--savedmodel",),
    )


def _check_memory(model, plan, x) -> None:
    """Refuse a verification whose arrays cannot fit in memory, before allocating them: the
    input and every layer's output, Knet side and Keras side, float64 magnitudes alongside."""
    import math

    batch = int(x.shape[-1]) if x is not None else 2
    itemsize = 8  # magnitudes and comparisons run in float64
    sizes = plan.sizes
    elements = math.prod(plan.input_size) + sum(math.prod(s) for s in sizes)
    check_fits_memory(
        f"--input-size {','.join(map(str, plan.input_size))} (batch {batch}, {len(sizes)} layers)",
        4 * elements * batch * itemsize,
    )


def run(args) -> int:
    from porting.model import convert as mconvert

    if getattr(args, "list", False):
        from porting.commands._knetfile import list_file

        return list_file(args)

    if args.to == "knet":
        if getattr(args, "flux_version", None) is not None:
            raise PortingError("--flux-version applies to a .bson model, not to --to knet")
        from porting.commands import _to_knet

        _to_knet.check_args(args)
        return _to_knet.run(args, _rich_report)
    if getattr(args, "round_trip", False):
        raise PortingError(
            "--round-trip checks the way back (MODEL.keras --to knet --verify); a Knet model "
            "going to Keras is verified by --verify"
        )
    if not (args.output or args.savedmodel or args.tflite or args.onnx or args.verify):
        raise PortingError(
            "nothing to do: give -o OUT.keras, --savedmodel DIR, --tflite OUT.tflite, "
            "--onnx OUT.onnx and/or --verify"
        )
    if args.report and not args.verify:
        raise PortingError("--report writes the verification: give --verify too")
    _check_distinct(args)
    if args.report:
        from porting import files

        files.output_file(args.report, what="--report")
    # Paths first: a bad target fails before any work, and nothing is written.
    if args.output:
        mconvert.check_keras_path(args.output)
    if args.savedmodel:
        mconvert.check_savedmodel_path(args.savedmodel)
    if args.tflite:
        mconvert.check_tflite_path(args.tflite)
    if args.onnx:
        from porting.model import onnx_out

        onnx_out.check_onnx_path(args.onnx)  # the packages too: a PortingError says what to install

    model, x, source = _load_model(args)
    if args.input:
        x = load_npy(args.input, "--input")
    x, plan = _plan(model, x, args)
    input_size = plan.input_size
    if args.verify:
        _check_memory(model, plan, x)

    km = mconvert.to_keras(model, spatial=args.spatial, dtype=args.dtype, plan=plan)
    report = None
    generated = None
    written = {}
    if args.verify:
        from porting.model.verify import default_input, verify_model

        if x is None:
            x = default_input(model, input_size)
            generated = (
                f"generated (no --input given): uniform in [-1, 1), seed 0, Julia size "
                f"{tuple(x.shape)}; give --input X.npy to verify on your own data"
            )
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
        if generated:
            report.notes.append(f"input {generated}")
        if args.report:
            written["report"] = _html_report(model, x, km, args, plan, source)
    write = report is None or report.ok or args.keep_on_mismatch
    if write and args.output:
        written["keras"] = mconvert.save_keras(km, args.output)
    if write and args.savedmodel:
        written["savedmodel"] = mconvert.export_savedmodel(km, args.savedmodel)
    if write and args.tflite:
        written["tflite"] = mconvert.export_tflite(km, args.tflite)
    onnx_check = None
    if write and args.onnx:
        onnx_path, onnx_check = _write_onnx(model, km, x, plan, args)
        if onnx_path is not None:
            written["onnx"] = onnx_path

    if args.json:
        print_json(
            {
                "model": source,
                "layers": len(model.layers),
                "weights": model.n_params,
                "input_size": list(input_size),
                "spatial": args.spatial,
                "written": written,
                "input": generated or ("--input" if args.input else source),
                "verification": report.to_dict() if report is not None else None,
                "recognised": args.knetfile.to_dict() if getattr(args, "knetfile", None) else None,
                "onnx": onnx_check.to_dict() if onnx_check is not None else None,
                "ok": (report is None or report.ok) and (onnx_check is None or onnx_check.ok),
            }
        )
    else:
        print_text(f"Model: {source}")
        print_text(str(model).split("\n", 1)[1] if "\n" in str(model) else str(model))
        if getattr(args, "knetfile", None) is not None:
            print_text(str(args.knetfile.report()))
        if report is not None:
            print()
            if generated:
                print_text(f"Input: {generated}")
            sys.stdout.flush()
            _rich_report(report)
            print()
        if onnx_check is not None:
            print_text(str(onnx_check))
        for what, path in written.items():
            print_text(f"wrote {path} ({_WHAT[what]})")
        if not write and (args.output or args.savedmodel or args.tflite or args.onnx):
            print("nothing written: verification failed (use --keep-on-mismatch to write anyway)")
        if "onnx" not in written and onnx_check is not None:
            print("ONNX file not kept: it differs from the Knet side (use --keep-on-mismatch)")
    ok = (report is None or report.ok) and (onnx_check is None or onnx_check.ok)
    return 0 if ok else 1


def _write_onnx(model, km, x, plan, args):
    """Write the ONNX file: its temporary runs under onnxruntime on the verification input (or
    the default input) and is compared with the Knet side end to end before it is renamed into
    place; one that differs is not kept (an old file stays as it was) unless --keep-on-mismatch.
    Returns (path or None, the check)."""
    from porting.model import onnx_out

    def check(tmp):
        return onnx_out.verify_onnx(model, tmp, x, spatial=args.spatial, knet=args.knet, plan=plan)

    return onnx_out.export_onnx(km, args.onnx, check=check, keep_on_mismatch=args.keep_on_mismatch)
