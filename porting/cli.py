"""Command-line interface: `porting <command> ...` (also `python -m porting`).

Each command lives in `porting.commands.<module>` and defines `NAME`, `HELP`,
`add_arguments(parser)` and `run(args) -> int`. Exit codes: 0 success (or the two sides
agree), 1 the two sides differ, 2 bad input (a `PortingError`, printed without traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from porting.errors import MissingDependencyError, PortingError


def _commands():
    import porting.commands as pkg

    mods = [
        importlib.import_module(f"porting.commands.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
    ]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> argparse.ArgumentParser:
    import porting

    parser = argparse.ArgumentParser(
        prog="porting",
        description="Port Knet.jl models to TensorFlow/Keras and prove the numbers match.",
    )
    parser.add_argument("--version", action="version", version=f"porting {porting.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _commands():
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP)
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from porting.files import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # SIGTERM cleans up as Ctrl-C does
            return int(args._run(args))
    except (PortingError, MissingDependencyError) as e:
        print(f"porting {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
