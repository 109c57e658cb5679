"""Fitting report text to a terminal: long lines wrapped at word boundaries, tables left alone."""

from __future__ import annotations

import shutil
import textwrap

__all__ = ["fit", "width"]

_TABLE = set("│┃━─╇╈┼")


def width(default: int = 80) -> int:
    """The terminal's width (`COLUMNS` first, `default` when not a terminal), at least 40."""
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def fit(text: str, columns: int | None = None) -> str:
    """`text` with every line longer than `columns` wrapped; a continuation is indented four
    spaces past the line's own indent. Table rows (box-drawing characters) are kept whole.

    >>> print(fit("  a long line of words", 14))
      a long line
          of words
    """
    columns = columns or width()
    out = []
    for line in text.splitlines():
        if len(line) <= columns or _TABLE & set(line):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.extend(
            textwrap.wrap(
                line.strip(),
                columns,
                initial_indent=indent,
                subsequent_indent=indent + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            or [line]
        )
    return "\n".join(out)


def printable(text: str) -> str:
    """`text` with every control character (newline, carriage return, ESC, ...) written as
    its Python escape, so that a name taken from a hostile file (an .npz member, an HDF5
    dataset) can neither forge output lines nor drive the terminal.

    >>> printable("a\\nb\\x1b[2J")
    'a\\\\nb\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
