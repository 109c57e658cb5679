"""Command-line pieces for JLD2 model files: `porting convert FILE.jld2 ...` and
`porting inspect FILE` (the commands call these; they hold no logic of their own)."""

from __future__ import annotations

import os
from pathlib import Path

from porting._text import printable
from porting.errors import PortingError

__all__ = [
    "add_convert_arguments",
    "is_model_file",
    "load_for_convert",
    "list_file",
    "inspect_text",
    "GEOMETRY_FLAGS",
]

GEOMETRY_FLAGS = (
    "conv_padding",
    "conv_stride",
    "conv_dilation",
    "conv_mode",
    "pool_window",
    "pool_stride",
    "pool_padding",
    "pool_mode",
)


def add_convert_arguments(p) -> None:
    """The `porting convert` options for a model saved in a JLD2 file."""
    from porting.commands._common import int_or_tuple

    g = p.add_argument_group(
        "JLD2 model files (Knet.save / JLD2.@save)",
        "MODEL may be a .jld2 file holding Knet model structs (tutorial Chain/Dense/Conv, "
        "NNHelferlein, Knet Layers21; Param, Array or KnetArray weights). What the file does "
        "not store (a tutorial Conv's padding, stride, mode, pool; which steps of an RNN's "
        "output the model reads) comes from these flags, else Knet's defaults; the report says "
        "where each value came from.",
    )
    g.add_argument(
        "--key",
        metavar="PATH",
        help="the model inside the file, e.g. q_networks/1 (items numbered from 1, as in Julia)",
    )
    g.add_argument(
        "--list",
        action="store_true",
        help="list what the file holds (paths usable as --key) and exit",
    )
    g.add_argument(
        "--structure",
        metavar="S.json|S.py",
        help="the model's layers as the export JSON, each weight's key a path in the file "
        "(for files holding only arrays, e.g. predict(w, x) weights); for Flux a Python "
        "file: model = Chain(...) of porting.flux.build for a JLD2 file of Flux.state, or a "
        "user struct's forward written with porting.flux.structure for a BSON.jl file",
    )
    for name in GEOMETRY_FLAGS:
        what, kw = name.split("_")
        help_ = {
            "window": "pool window inside a tutorial Conv (0: no pool)",
            "mode": f"{what} mode (Knet's {'conv4' if what == 'conv' else 'pool'} mode)",
        }.get(kw, f"{what} {kw} (Knet's {'conv4' if what == 'conv' else 'pool'} keyword)")
        g.add_argument(
            f"--{what}-{kw}",
            dest=name,
            type=int_or_tuple,
            metavar="N[,N]",
            help=help_ + ", where the file does not store it",
        )
    g.add_argument(
        "--rnn-output",
        dest="rnn_output",
        choices=("sequence", "last"),
        help="what the model reads from a Knet RNN's y: every step (sequence, the default; a "
        "dense layer after it runs at every step) or y[:, :, end] (last)",
    )


def is_model_file(path) -> bool:
    """Whether `path` names a JLD2 file (rather than an export prefix / .json / .npz)."""
    p = Path(os.fspath(path))
    if p.suffix.lower() == ".jld2":
        return True
    if p.suffix.lower() in (".json", ".npz") or not p.is_file():
        return False
    from porting import io

    try:
        return io.detect_format(p) == "jld2"
    except PortingError:
        return False


def _geometry(args):
    from porting.knetfile.recognise import Geometry

    geometry = Geometry()
    for n in GEOMETRY_FLAGS:
        setattr(geometry, n, getattr(args, n, None))
    geometry.rnn_output = getattr(args, "rnn_output", None)
    return geometry


def _jld2_only_flags(args) -> list[str]:
    used = [
        f"--{n.replace('_', '-')}"
        for n in (*GEOMETRY_FLAGS, "rnn_output")
        if getattr(args, n, None) is not None
    ]
    for flag in ("key", "structure"):
        if getattr(args, flag, None) is not None:
            used.append(f"--{flag}")
    if getattr(args, "list", False):
        used.append("--list")
    return used


def load_for_convert(args):
    """`(model, None, source)` for `porting convert` when MODEL is a JLD2 file, else None (after
    refusing JLD2-only flags given with an export). The recognition report is kept on
    `args.knetfile` for the command to print."""
    if not is_model_file(args.model):
        used = _jld2_only_flags(args)
        if used:
            raise PortingError(
                f"{' '.join(used)} apply to a JLD2 model file; {args.model} is a model export "
                "(.json + .npz), which records its structure itself"
            )
        return None
    from porting.knetfile.load import load_model

    try:
        fm = load_model(args.model, args.key, structure=args.structure, geometry=_geometry(args))
    except PortingError as e:
        from porting.flux.structure import state_hint

        hint = "" if args.structure else state_hint(args.model)
        if hint:
            raise PortingError(f"{e}. {hint}") from None
        raise
    seq = fm.model.layers and fm.model.layers[0].kind in ("embed", "rnn")
    if seq and fm.model.input_size is None and args.input_size is None and args.input is None:
        first = fm.model.layers[0]
        size = "T" if first.kind == "embed" else f"T,{first.spec.input_size}"
        raise PortingError(
            f"{fm.source}: a sequence model; the file does not record the sequence length: give "
            f"--input-size {size} (time steps{'' if first.kind == 'embed' else ', features'} of "
            "one sample, e.g. 20) or --input X.npy"
        )
    if fm.model.input_size is None and args.input_size is None and args.input is None:
        raise PortingError(
            f"{fm.source}: the file does not record the input size (a conv model's weights do "
            "not fix it); give --input-size X1,X2,C (one sample's Julia size, e.g. 28,28,1 for "
            "MNIST) or --input X.npy"
        )
    args.knetfile = fm
    return fm.model, None, fm.source


def list_file(args) -> int:
    """`porting convert FILE --list`: print what the file holds and return 0."""
    if not args.model:
        raise PortingError("--list needs MODEL, the file to list")
    if getattr(args, "json", False):
        print_listing_json(args.model, args.key, depth=8)
        return 0
    print(inspect_text(args.model, key=args.key))
    return 0


def inspect_text(path, key: str | None = None, *, depth: int = 8) -> str:
    """What the file holds, one line per path (usable as ``--key``); with `key` on a model,
    that model's full recognition report."""
    from porting.knetfile.load import entries, load_model
    from porting.knetfile.recognise import classify
    from porting.knetfile.tree import normal_key, read, select

    p = str(os.fspath(path))
    key = normal_key(key)
    tree = read(p)
    node = select(tree, key, p) if key else tree
    lines = [
        f"{printable(p)}: what it holds (paths usable as --key; items numbered from 1, as in Julia)"
        if not key
        else f"{printable(p)} --key {printable(key)}:"
    ]
    if key:
        kind, summary = classify(node)
        if kind == "model":
            report = load_model(p, key).report()
            lines += [printable(line) for line in report.splitlines()]
            return "\n".join(lines)
    found = entries(node, depth=depth)
    prefix = f"{key.strip('/')}/" if key else ""
    width = min(48, max((len(prefix + e.path) + 2 * e.depth for e in found), default=0))
    for e in found:
        label = {
            "model": "Knet model",
            "model-refused": "cannot convert",
            "weights": "arrays",
            "optimiser": "optimiser",
            "gpu": "GPU, no data",
            "unreadable": "unreadable",
        }.get(e.kind)
        shown = printable((prefix + e.path) if e.path else (key or ""))  # names from the file
        left = ("  " * (e.depth + 1) + shown).ljust(width + 2)
        lines.append(f"{left}  {label + ': ' if label else ''}{printable(e.summary)}")
    if not key:
        from porting.flux.structure import state_hint

        hint = state_hint(p)
        if hint:
            lines.append(f"  note: {printable(hint)}")
    return "\n".join(lines)


def print_listing_json(path, key: str | None, *, depth: int) -> None:
    """The listing as JSON: file, key, numbering and one entry per path."""
    from porting.commands._common import print_json
    from porting.knetfile.load import entries
    from porting.knetfile.tree import normal_key, read, select

    key = normal_key(key)
    tree = read(path)
    node = select(tree, key, str(path)) if key else tree
    prefix = f"{key.strip('/')}/" if key else ""
    print_json(
        {
            "file": str(path),
            "key": key,
            "numbering": "1-based, as in Julia",
            "entries": [
                {"path": prefix + e.path if e.path else key, "kind": e.kind, "summary": e.summary}
                for e in entries(node, depth=depth)
            ],
        }
    )
