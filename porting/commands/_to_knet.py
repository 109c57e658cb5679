"""`porting convert MODEL.keras --to knet -o PREFIX [--verify]`: the way back, Keras to Knet.

The Keras model becomes the model description (porting.fromkeras.from_keras), written as the
export pair (`PREFIX.npz` + `PREFIX.json`) that `julia/`'s importer reads. `--verify` checks
every original Keras layer against the Knet layers it became, layer by layer, and the two
models' outputs end to end (`verify_model` with the original as `keras_model`; a Keras layer
that is several Knet layers, e.g. an asymmetric "same" padding + conv, is compared at the last,
porting.model.fused). `--round-trip` adds the Keras model rebuilt from the Knet one
(`to_keras`, the way Knet models go to Keras) against the original end to end: the same
products summed in another order at most, so within `64 eps max|y|`, where a wrong padding,
flip or flatten order moves outputs by their own size. That check is of porting's own way from
Knet to Keras, not of the pair Julia reads, and it costs about what the layer-by-layer one
costs (benchmarks/bench_fromkeras.py), so it is asked for. It always runs where Keras layer
names had to be renamed: the layers are then compared with the rebuilt model, and only the
round trip reads the original.
"""

from __future__ import annotations

import gc

import numpy as np

from porting.errors import PortingError

ROUND_TRIP_EPS = 64
# The rebuilt model runs on the input in at most this many slices of samples: a functional
# model's call holds every intermediate activation to its end, so its memory is one slice's
# (ResNet50 at 224x224, batch 2: +124 MB one sample at a time, +281 MB both at once; the peak
# of the whole command, benchmarks/bench_fromkeras.py), at a few calls' overhead.
ROUND_TRIP_SLICES = 8


def check_args(args) -> None:
    if args.to != "knet":
        return
    if not args.model or args.example:
        raise PortingError("--to knet converts a Keras model: give MODEL.keras (not --example)")
    if not str(args.model).endswith(".keras"):
        raise PortingError(f"--to knet: MODEL={args.model!r}: expected a .keras file (Keras 3)")
    given = [o for o in ("savedmodel", "tflite", "onnx") if getattr(args, o, None)]
    if given:
        raise PortingError(f"--to knet writes a Knet export pair; --{given[0]} is for --to keras")
    if not (args.output or args.verify):
        raise PortingError("nothing to do: give -o PREFIX (the Knet export pair) and/or --verify")
    if getattr(args, "round_trip", False) and not args.verify:
        raise PortingError("--round-trip is part of the verification: give --verify too")


def renamed_layers(keras_model, model) -> list[str]:
    """The Keras layer names that `from_keras` had to change (Knet names are letters, digits
    and `_.-`, without `__`): where there are any, the layer-by-layer comparison cannot find
    the original's layers by name."""
    import keras

    knet = {str(layer.name) for layer in model.layers}
    return [
        str(lay.name)
        for lay in keras_model.layers
        if not isinstance(lay, keras.layers.InputLayer)
        and (lay.name not in knet or "__" in lay.name)
    ]


def round_trip(want, rebuilt, x_tf) -> dict:
    """The rebuilt Keras model on `x_tf` (TensorFlow layout) against `want`, the original's
    output on it (the verification's end-to-end run of the original). The rebuilt model runs
    on slices of the samples (`ROUND_TRIP_SLICES`): in inference no sample's output depends on
    another's, and a slice's sums in another order are within the bound."""
    want = np.asarray(want)
    slices = np.array_split(x_tf, max(1, min(len(x_tf), ROUND_TRIP_SLICES)))
    have = np.concatenate([np.asarray(rebuilt(s)) for s in slices])
    eps = float(np.finfo(want.dtype).eps)
    same_shape = have.shape == want.shape
    bound = ROUND_TRIP_EPS * eps * float(np.max(np.abs(want))) if want.size else 0.0
    err = float(np.max(np.abs(want - have))) if want.size and same_shape else 0.0
    if not same_shape:
        err = float("inf")
    return {
        "ok": bool(np.isfinite(err) and err <= bound),
        "max_abs_error": err,
        "bound": bound,
        "rule": f"{ROUND_TRIP_EPS} eps max|y|",
    }


def run(args, rich_report) -> int:
    """Convert and (with --verify) check; `rich_report` is convert's table printer (passed in:
    convert imports this module, so this one does not import convert)."""
    from porting import files
    from porting.fromkeras import from_keras
    from porting.model.convert import load_keras
    from porting.model.export import export_paths, stage_export

    outputs = {}
    if args.output:
        json_path, npz_path = export_paths(args.output)
        outputs = {"-o/--output (.json)": json_path, "-o/--output (.npz)": npz_path}
    files.check_distinct({"MODEL": args.model, "--input": args.input}, outputs)
    km = load_keras(args.model, compile=False)  # the layers and weights are what is read
    model = from_keras(km, spatial=args.spatial)
    # the export is written (to temporaries) while the model verifies, and put in place only
    # if it passes: the disk's time overlaps the verification's (benchmarks/bench_fromkeras.py)
    staged = stage_export(model, args.output, background=bool(args.verify)) if args.output else None
    held = [km]  # _checked drops the original once read; this frame must not keep it
    del km
    try:
        return _checked(args, rich_report, held, model, staged)
    except BaseException:
        if staged is not None:
            staged.discard()
        raise


def _checked(args, rich_report, held, model, staged) -> int:
    """`run` once the model is converted (and its export `staged`, when -o was given); `held`
    holds the original Keras model, released here once it is no longer needed."""
    from porting import layout
    from porting.commands._common import load_npy, print_json, print_text
    from porting.model import to_keras
    from porting.model.verify import default_input, verify_model

    km = held.pop()
    in_dtype = km.inputs[0].dtype
    report = None
    trip: dict | None = None
    renamed: list[str] = []
    if args.verify:
        x = load_npy(args.input, "--input") if args.input else default_input(model)
        x_tf = layout.activations_to_tf(x, args.spatial) if x.ndim > 2 else x.T
        to_keras_input = getattr(model.layers[0], "keras_input", None)
        if to_keras_input is not None:  # Knet's 1-based token indices -> Keras's 0-based
            x_tf = to_keras_input(x_tf)
        x_tf = x_tf.astype(in_dtype)
        renamed = renamed_layers(km, model)
        report = verify_model(
            model,
            x,
            keras_model=None if renamed else km,
            mode=args.mode,
            spatial=args.spatial,
            knet=args.knet,
        )
        assert report.outputs is not None  # verify_model always gives them
        # the original's output on x: the verification's end-to-end run of it, or, where the
        # layers were compared with the rebuilt model, the original run here
        want = np.asarray(km(x_tf)) if renamed else report.outputs[1]
        if renamed:
            report.notes.append(
                f"Keras layer names that are not Knet names ({', '.join(map(repr, renamed[:3]))}"
                f"{', ...' if len(renamed) > 3 else ''}) were renamed: the layers are compared "
                "with the Keras model rebuilt from the Knet one, and that one with the original "
                "end to end"
            )
    del km
    if report is not None and (renamed or getattr(args, "round_trip", False)):
        # The original's weights are no longer needed (its output is in `want`): released
        # before the rebuilt Keras model makes another copy (benchmarks/bench_fromkeras.py).
        gc.collect()
        trip = round_trip(want, to_keras(model, spatial=args.spatial), x_tf)
    ok = report is None or (report.ok and (trip is None or trip["ok"]))
    written = {}
    if staged is not None and (ok or args.keep_on_mismatch):
        written = dict(zip(("json", "npz"), staged.commit(), strict=True))
    elif staged is not None:
        staged.discard()
    if args.json:
        print_json(
            {
                "model": str(args.model),
                "to": "knet",
                "layers": len(model.layers),
                "weights": model.n_params,
                "spatial": args.spatial,
                "written": written,
                "verification": None if report is None else report.to_dict(),
                "round_trip": trip,
                "ok": ok,
            }
        )
    else:
        print_text(f"Model: {args.model} (Keras) -> Knet")
        print_text(str(model).split("\n", 1)[1] if "\n" in str(model) else str(model))
        if report is not None:
            print()
            rich_report(report)
        if trip is not None:
            verdict = "ok" if trip["ok"] else "DIFFERS"
            print_text(
                f"Keras rebuilt from the Knet model vs the original: max abs error "
                f"{trip['max_abs_error']:.3g} (bound {trip['rule']} = {trip['bound']:.3g}): {verdict}"
            )
        for what, path in written.items():
            print_text(f"wrote {path} (Knet export {what})")
        if not ok and args.output and not written:
            print("nothing written: verification failed (use --keep-on-mismatch to write anyway)")
    return 0 if ok else 1
