"""Every .jl file under julia/ parses (tree-sitter-julia), so a syntax error fails CI without Julia.

This catches what a parser can: unbalanced blocks, stray tokens, malformed expressions. It does
not catch undefined names, wrong method signatures or type errors; julia/test/runtests.jl does,
wherever Julia is installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tree_sitter = pytest.importorskip(
    "tree_sitter", reason="tree-sitter is not installed (pip install 'porting[dev]')"
)
tree_sitter_julia = pytest.importorskip(
    "tree_sitter_julia", reason="tree-sitter-julia is not installed (pip install 'porting[dev]')"
)

JULIA_DIR = Path(__file__).resolve().parents[1] / "julia"
JL_FILES = sorted(JULIA_DIR.rglob("*.jl"))


def _parser():
    language = tree_sitter.Language(tree_sitter_julia.language())
    try:
        return tree_sitter.Parser(language)  # tree-sitter >= 0.22
    except TypeError:  # older bindings: Parser() then set_language
        parser = tree_sitter.Parser()
        parser.set_language(language)
        return parser


# Julia's reserved words. tree-sitter-julia reads `end` (and `begin`) as an identifier, since
# both are valid inside indexing (`x[end]`), so a stray `end` would otherwise parse cleanly.
RESERVED = frozenset(
    "baremodule begin break catch const continue do else elseif end export finally for function "
    "global if import let local macro module quote return struct try using while".split()
)


def _inside_indexing(node) -> bool:
    while node is not None:
        if node.type == "index_expression":
            return True
        node = node.parent
    return False


def syntax_errors(source: bytes, filename: str = "<snippet>") -> list[str]:
    """`file:line:column: ...` for every ERROR or MISSING node of the parse tree, and every
    reserved word that the grammar accepted as a plain identifier outside indexing."""
    tree = _parser().parse(source)
    problems = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        text = (
            node.text.decode("utf-8", "replace")
            if node.child_count == 0 or node.type == "ERROR"
            else ""
        )
        if node.is_missing or node.type == "ERROR":
            what = f"missing {node.type!r}" if node.is_missing else "syntax error"
        elif node.type == "identifier" and text in RESERVED and not _inside_indexing(node):
            what = f"reserved word {text!r} out of place"
        else:
            stack.extend(node.children)
            continue
        line, column = node.start_point
        snippet = text.splitlines()[0][:60] if text else ""
        problems.append(
            (line + 1, column + 1, f"{filename}:{line + 1}:{column + 1}: {what} near {snippet!r}")
        )
    return [p[2] for p in sorted(problems)]


def test_julia_sources_exist():
    names = {p.relative_to(JULIA_DIR).as_posix() for p in JL_FILES}
    assert {"src/PortingKnet.jl", "test/runtests.jl"} <= names, sorted(names)


@pytest.mark.parametrize("path", JL_FILES, ids=lambda p: p.relative_to(JULIA_DIR).as_posix())
def test_julia_file_parses(path):
    errors = syntax_errors(path.read_bytes(), str(path.relative_to(JULIA_DIR.parent)))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "snippet",
    [
        b"function f(x)\n    y = x + \nend\n",  # dangling operator
        b"function f(x)\n    if x > 0\n        1\nend\n",  # unclosed block
        b"x = [1, 2\n",  # unclosed bracket
        b"function f(x)\n    x\nend\nend\n",  # stray end (the grammar reads it as an identifier)
    ],
)
def test_checker_flags_broken_julia(snippet):
    errors = syntax_errors(snippet, "broken.jl")
    assert errors and all(e.startswith("broken.jl:") for e in errors), errors


def test_checker_accepts_valid_julia():
    ok = b"f(x; k=1) = x .+ k\nconst A = Dict(:a => 1)\nlast(x) = x[end] + x[begin:end-1][end]\n"
    assert syntax_errors(ok) == []
