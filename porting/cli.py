"""Command-line interface: `porting <command> ...` (also `python -m porting`).

Each command lives in `porting.commands.<module>` and defines `NAME`, `HELP`,
`add_arguments(parser)` and `run(args) -> int`.

Exit codes (the README's table):

- 0: success, or the two sides agree;
- 1: the two sides differ, verification failed, or `diagnose` found a cause; nothing else;
- 2: bad input (a `PortingError`, a missing optional dependency, a file the system refuses,
  an input nested too deeply or too large for memory, printed in one line; or a usage error
  from argparse);
- 3: an internal error, a bug in `porting`: one line saying so and how to report it, the
  traceback only with `PORTING_DEBUG=1`;
- 130: interrupted (Ctrl-C); 143: terminated (SIGTERM), after the same cleanup;
- 141: stdout was closed early (`porting ... --json | head`): nothing more is printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from porting._text import printable
from porting.errors import MissingDependencyError, PortingError

EXIT_OK, EXIT_DIFFER, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED, EXIT_TERMINATED = 130, 141, 143

REPORT_HINT = (
    "please report it (the command line, this message and the output of `porting doctor`) "
    "to the porting maintainers; PORTING_DEBUG=1 prints the traceback"
)


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
        epilog="exit codes: 0 ok/agree, 1 the sides differ (a cause found), 2 bad input, "
        "3 internal error (a bug: please report it), 130 interrupted",
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


def _short(text: str, limit: int = 120) -> str:
    """A file name fit for a one-line message: a long one cut, its length said."""
    return text if len(text) <= limit else f"{text[:60]}... ({len(text)} characters)"


def _debug() -> bool:
    from porting import settings

    try:
        return settings.flag("PORTING_DEBUG", False)
    except PortingError:
        return False


def _silence_stdout() -> None:
    """stdout's reader went away: point stdout at /dev/null so that the interpreter's final
    flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"porting {args.command}"
    if argv is None:  # the `porting` command's own process, not a caller's (porting._malloc)
        try:
            from porting._malloc import keep_freed_memory

            keep_freed_memory()
        except PortingError as e:
            print(f"{name}: error: {printable(str(e))}", file=sys.stderr)
            return EXIT_BAD_INPUT
    import warnings

    def _warning_line(message, category, filename, lineno, line=None) -> str:
        # a warning is for the user of the command: one line, no source location (which for
        # a command is `<frozen runpy>`)
        return f"{name}: warning: {printable(str(message))}\n"

    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        return _run(args, name)
    finally:
        warnings.formatwarning = formatwarning


def _run(args, name: str) -> int:
    from porting.files import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # SIGTERM cleans up as Ctrl-C does
            code = int(args._run(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE_CLOSED
    except (PortingError, MissingDependencyError) as e:
        print(f"{name}: error: {printable(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(
            f"{name}: error: out of memory; the inputs or sizes given need more memory than "
            "this machine has (smaller --input-size or a smaller batch)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except RecursionError:
        print(
            f"{name}: error: an input is nested too deeply to read (e.g. a JSON file of lists "
            "within lists); expected the structure porting writes",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except OSError as e:  # the system refused: permissions, a full disk, a missing folder
        where = f": {_short(str(e.filename))}" if getattr(e, "filename", None) else ""
        print(f"{name}: error: {printable(str(e.strerror or e) + where)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - anything else is a bug in porting, said as such
        if _debug():
            import traceback

            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(
            f"{name}: internal error (a bug in porting, not in your input): "
            f"{type(e).__name__}: {printable(first)}; {REPORT_HINT}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
