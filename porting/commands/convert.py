"""`porting convert`: a Knet model export in, a Keras 3 model out, optionally verified."""

from __future__ import annotations

import sys

from porting.commands._common import (
    check_fits_memory,
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
    "<prefix>.json), to a Keras 3 model saved as .keras (atomically) and optionally as a "
    "TensorFlow SavedModel. With --verify, the Knet side (Julia when available, else porting's "
    "NumPy reference) and the Keras model run on the same input and every layer is compared "
    "against its floating-point tolerance. Without MODEL (or with --example lenet) it runs on a "
    "built-in Knet LeNet. MODEL may also be a .jld2 file written by Knet.save or JLD2 (see the "
    "JLD2 options below; porting inspect FILE lists what it holds). Exit 0: converted (and verified); 1: verification found a "
    "difference (nothing written unless --keep-on-mismatch); 2: bad input."
)


def add_arguments(p) -> None:
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="export prefix, <prefix>.json or <prefix>.npz"
    )
    p.add_argument(
        "--example", choices=("lenet",), help="use a built-in model (default when MODEL is omitted)"
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.keras", help="write the Keras model here (atomically)"
    )
    p.add_argument(
        "--savedmodel", metavar="DIR", help="also export a TensorFlow SavedModel into DIR"
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
    from porting.knetfile.cli import add_convert_arguments  # MODEL.jld2: --key, --list, ...

    add_convert_arguments(p)


def _load_model(args):
    if args.model and args.example:
        raise PortingError("give MODEL or --example, not both")
    if args.model:
        from porting.knetfile.cli import load_for_convert

        if (found := load_for_convert(args)) is not None:  # a JLD2 file of Knet structs
            return found
        from porting.model import load_export

        return load_export(args.model), None, str(args.model)
    from porting.examples.lenet import lenet, lenet_input

    return lenet(), lenet_input(), "built-in example: Knet LeNet (tutorial layers, dense 800->128)"


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
        {"-o/--output": args.output, "--savedmodel": args.savedmodel},
        directories=("--savedmodel",),
    )


def run(args) -> int:
    if getattr(args, "list", False):
        from porting.knetfile.cli import list_file

        return list_file(args)
    from porting.model import convert as mconvert

    if not (args.output or args.savedmodel or args.verify):
        raise PortingError("nothing to do: give -o OUT.keras, --savedmodel DIR and/or --verify")
    # Paths first: a bad target fails before any work, and nothing is written.
    _check_distinct(args)
    if args.output:
        mconvert.check_keras_path(args.output)
    if args.savedmodel:
        mconvert.check_savedmodel_path(args.savedmodel)

    model, x, source = _load_model(args)
    if args.input:
        x = load_npy(args.input, "--input")
    input_size = None
    if args.input_size is not None:
        input_size = args.input_size if isinstance(args.input_size, tuple) else (args.input_size,)
    if x is not None:
        from porting.model.forward import check_input

        x = check_input(model, x)
        if input_size is not None and tuple(x.shape[:-1]) != tuple(input_size):
            raise PortingError(
                f"--input-size {input_size} but --input has size {x.shape} (batch last)"
            )
        input_size = tuple(x.shape[:-1])
    input_size = input_size or model.input_size
    if input_size is None:
        raise PortingError(
            f"{source}: the export records no input size; give --input X.npy or --input-size X1,X2,C"
        )
    sizes = model.sizes(input_size)  # names the first layer whose weights do not fit
    if args.verify:
        _check_memory(model, input_size, sizes, x)

    km = mconvert.to_keras(model, spatial=args.spatial, input_size=input_size, dtype=args.dtype)
    report = None
    generated = None
    if args.verify:
        from porting.model.verify import default_input, verify_model

        if x is None:
            x = default_input(model, input_size)
            generated = (
                f"generated (no --input given): uniform in [-1, 1), seed 0, Julia size "
                f"{tuple(x.shape)}; give --input X.npy to verify on your own data"
            )
        progress = not args.json and sys.stderr.isatty()
        report = verify_model(
            model,
            x,
            keras_model=km,
            mode=args.mode,
            spatial=args.spatial,
            knet=args.knet,
            progress=progress,
        )
        if generated:
            report.notes.append(f"input {generated}")
    write = report is None or report.ok or args.keep_on_mismatch
    written = {}
    if write and args.output:
        written["keras"] = mconvert.save_keras(km, args.output)
    if write and args.savedmodel:
        written["savedmodel"] = mconvert.export_savedmodel(km, args.savedmodel)

    if args.json:
        print_json(
            {
                "model": source,
                "layers": len(model.layers),
                "weights": model.n_params,
                "input_size": list(input_size),
                "input": generated or ("--input" if args.input else source),
                "spatial": args.spatial,
                "written": written,
                "verification": report.to_dict() if report is not None else None,
                "recognised": args.knetfile.to_dict() if getattr(args, "knetfile", None) else None,
                "ok": report.ok if report is not None else True,
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
            print_text(str(report))
            print()
        for what, path in written.items():
            print_text(
                f"wrote {path} ({'Keras 3 model' if what == 'keras' else 'TensorFlow SavedModel'})"
            )
        if not write and (args.output or args.savedmodel):
            print("nothing written: verification failed (use --keep-on-mismatch to write anyway)")
    return 0 if report is None or report.ok else 1


def _check_memory(model, input_size, sizes, x) -> None:
    """Refuse a verification whose arrays cannot fit in memory, before allocating them: the
    input and every layer's output, Knet side and Keras side, float64 magnitudes alongside."""
    import math

    batch = int(x.shape[-1]) if x is not None else 2
    itemsize = 8  # magnitudes and comparisons run in float64
    elements = math.prod(input_size) + sum(math.prod(s) for s in sizes)
    check_fits_memory(
        f"--input-size {','.join(map(str, input_size))} (batch {batch}, {len(sizes)} layers)",
        4 * elements * batch * itemsize,
    )
