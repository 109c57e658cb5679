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


def run(args) -> int:
    if args.depth < 0:
        raise PortingError(f"--depth {args.depth}: expected 0 or more")
    if args.json:
        print_listing_json(args.file, args.key, depth=args.depth)
        return 0
    from porting.knetfile.cli import inspect_text

    print(inspect_text(args.file, key=args.key, depth=args.depth))
    return 0


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
