"""`porting inspect`: what a model or weight file holds, as a tree of paths usable as --key."""

from __future__ import annotations

from porting.errors import PortingError

NAME = "inspect"
ORDER = 15
HELP = "list what a .jld2 (or other weight) file holds: models, arrays, other values"
DESCRIPTION = (
    "List what a file holds, one line per path, each usable as `porting convert FILE --key "
    "PATH`: Knet models recognised (and why one cannot be converted), arrays, optimiser "
    "states, other values. Items of a Julia Vector or Tuple are numbered from 1, as in Julia "
    "(q_networks/1 is q_networks[1]). With --key on a model, prints where each of its layers, "
    "weights and geometry values comes from. Exit 0: listed; 2: bad input."
)


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help="a .jld2 file (or .npz, .mat, ...)")
    p.add_argument("--key", metavar="PATH", help="show only this part (e.g. q_networks/1)")
    p.add_argument(
        "--depth", type=int, default=8, help="containers opened this many levels (default 8)"
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.add_argument(
        "--flux-version",
        metavar="X.Y.Z",
        help="FILE.bson: the Flux release that saved it (a LayerNorm's epsilon depends on it)",
    )


def run(args) -> int:
    if args.depth < 0:
        raise PortingError(f"--depth {args.depth}: expected 0 or more")
    from porting.commands._flux import is_flux_file

    if is_flux_file(args.file):  # a Flux model saved with BSON.jl
        from porting.commands._flux import inspect_text as flux_text
        from porting.commands._flux import print_listing_json as flux_json

        version = getattr(args, "flux_version", None)
        if args.json:
            flux_json(args.file, flux_version=version)
        else:
            print(flux_text(args.file, key=args.key, flux_version=version))
        return 0
    from porting.commands._knetfile import inspect_text, print_listing_json

    if args.json:
        print_listing_json(args.file, args.key, depth=args.depth)
        return 0
    print(inspect_text(args.file, key=args.key, depth=args.depth))
    return 0
