"""The code cites the facts it relies on in docs/, by anchor, and nothing outside the repository.

- Every citation `docs/<page>.md#<anchor>` under porting/, julia/, tests/ and benchmarks/ names a
  page that exists and a heading of that page (a following `, #other` in the same citation is
  checked against the same page); a citation of a page without an anchor is refused.
- No file there cites the team's private notes (the domain notes file, the style guide, seeds)
  as a source: a path into the `shared` folder beside the repository is allowed only for the
  golden data that tests read (`shared/golden`).
- docs/README.md's anchor index lists every section heading of every page, and nothing else.

The checkers are plain functions tested on planted text first, so that a checker that stopped
finding anything would fail here rather than pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCANNED = ("porting", "julia", "tests", "benchmarks")
SELF = Path(__file__).resolve()

# Built from pieces so that this file does not contain what it forbids.
_NOTES = "DOMAIN" + r"\.md"
_SHARED = "sha" + "red"

# `docs/knet.md#flip`, optionally followed by `, #pool`, `and #pool-nan` (same page).
CITATION = re.compile(
    r"docs/(?P<page>[A-Za-z0-9_.-]+?\.md)(?:#(?P<anchor>[A-Za-z0-9_-]+))?"
    r"(?P<more>(?:\s*(?:,|and|or)\s*#[A-Za-z0-9_-]+)*)"
)
MORE_ANCHOR = re.compile(r"#([A-Za-z0-9_-]+)")
FORBIDDEN = [
    (re.compile(_NOTES), "cites the domain notes; cite docs/<page>.md#<anchor>"),
    (
        # shared/<a name other than golden>: a path (also /work/shared/...); the folder alone
        # ("put shared/ beside the repository") names no source
        re.compile(rf"(?<![\w.-]){_SHARED}/(?=[\w.-])(?!golden(?![\w-]))"),
        "cites a path in the shared folder (only shared/golden test data may be named)",
    ),
    (
        # Path(...) / "shared" / "<not golden>"  or  os.path.join(..., "shared", "<not golden>")
        re.compile(rf"""["']{_SHARED}["']\s*[/,]\s*["'](?!golden["'])"""),
        "joins a path into the shared folder (only shared/golden test data may be named)",
    ),
]
HEADING = re.compile(r"^(#{2,6})\s+(.+?)\s*$")
INDEX_LINK = re.compile(r"\[([^\]]+)\]\(([A-Za-z0-9_.-]+\.md)#([A-Za-z0-9_-]+)\)")
DOC_LINK = re.compile(r"\]\((?P<page>[A-Za-z0-9_.-]+\.md)?(?:#(?P<anchor>[A-Za-z0-9_-]+))?\)")
_BINARY_SUFFIXES = {".npz", ".npy", ".jld2", ".mat", ".h5", ".hdf5", ".safetensors", ".pyc"}


def headings(text: str) -> list[str]:
    """The section headings (level 2 and deeper) of a docs page, outside code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append(m.group(2))
    return out


def doc_anchors(docs: Path = DOCS) -> dict[str, list[str]]:
    """`{page: [anchor, ...]}` for every page in docs/ except the index."""
    return {
        p.name: headings(p.read_text(encoding="utf-8"))
        for p in sorted(docs.glob("*.md"))
        if p.name != "README.md"
    }


def citation_problems(text: str, anchors: dict[str, list[str]]) -> list[tuple[int, str]]:
    """`(line, why)` for every docs citation in `text` whose page or anchor does not exist."""
    out = []
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        page, anchor = m.group("page"), m.group("anchor")
        cited = f"docs/{page}" + (f"#{anchor}" if anchor else "")
        if page not in anchors:
            out.append((line, f"{cited}: no page docs/{page}"))
            continue
        if anchor is None:
            out.append((line, f"{cited}: cite a section, docs/{page}#<anchor>"))
            continue
        for a in [anchor, *MORE_ANCHOR.findall(m.group("more"))]:
            if a not in anchors[page]:
                out.append((line, f"docs/{page}#{a}: no such section in docs/{page}"))
    return out


def source_problems(text: str) -> list[tuple[int, str]]:
    """`(line, why)` for every citation of the team's notes or of the shared folder."""
    out = []
    for pattern, why in FORBIDDEN:
        for m in pattern.finditer(text):
            out.append((text.count("\n", 0, m.start()) + 1, f"{m.group(0)!r}: {why}"))
    return out


def index_problems(readme: str, anchors: dict[str, list[str]]) -> list[str]:
    """What docs/README.md's anchor index lists wrongly: missing, extra, repeated, mislabelled."""
    _, sep, index = readme.partition("\n## Anchors")
    if not sep:
        return ["docs/README.md has no '## Anchors' section"]
    index = index.split("\n## ", 1)[0]
    listed: list[tuple[str, str]] = []
    out = []
    for text, page, anchor in INDEX_LINK.findall(index):
        if text != anchor:
            out.append(f"[{text}]({page}#{anchor}): link text differs from the anchor")
        listed.append((page, anchor))
    actual = {(page, a) for page, hs in anchors.items() for a in hs}
    for item in sorted(set(listed) - actual):
        out.append(f"{item[0]}#{item[1]} is listed but is not a heading of docs/{item[0]}")
    for item in sorted(actual - set(listed)):
        out.append(f"{item[0]}#{item[1]} is a heading but not listed in the index")
    for item in sorted({x for x in listed if listed.count(x) > 1}):
        out.append(f"{item[0]}#{item[1]} is listed more than once")
    return out


def scanned_files() -> list[Path]:
    out = []
    for top in SCANNED:
        for p in sorted((ROOT / top).rglob("*")):
            if (
                p.is_file()
                and p.resolve() != SELF
                and p.suffix not in _BINARY_SUFFIXES
                and "__pycache__" not in p.parts
            ):
                data = p.read_bytes()
                if b"\0" not in data[:8192]:
                    out.append(p)
    return out


# ------------------------------------------------------------------------------------------
# The checkers, on planted text


ANCHORS = {"knet.md": ["flip", "pool", "pool-nan"], "files.md": ["npz"]}


def test_citation_checker_finds_planted_errors() -> None:
    text = "\n".join(
        [
            "# true convolution (docs/knet.md#flip)",  # fine
            "# docs/knet.md#pool, #pool-nan and #flip",  # fine, continuation anchors
            "# docs/knet.md#nope",  # 3: no anchor
            "# docs/nope.md#flip",  # 4: no page
            "# docs/knet.md, section Recurrent layers",  # 5: no anchor given
            "# docs/knet.md#pool, #missing",  # 6: bad continuation
        ]
    )
    found = citation_problems(text, ANCHORS)
    assert [line for line, _ in found] == [3, 4, 5, 6], found
    assert "knet.md#missing" in found[-1][1]


def test_source_checker_finds_planted_notes_and_shared_paths() -> None:
    notes = "DOMAIN" + ".md"
    text = "\n".join(
        [
            f"# see {notes}, section Floating point",  # 1
            f"# {_SHARED}/seeds/002: a user report",  # 2
            f'p = Path("/work/{_SHARED}/STYLE.md")',  # 3
            f'p = repo.parent / "{_SHARED}" / "seeds"',  # 4
            f'p = os.path.join(root, "{_SHARED}", "hooks")',  # 5
            f'golden = repo.parent / "{_SHARED}" / "golden"',  # allowed
            f'golden = Path("/work/{_SHARED}/golden")',  # allowed
            f"# data in {_SHARED}/golden/real-models/ beside the repository",  # allowed
            "# the shared memory block is unlinked by the parent",  # allowed
            f"# set PORTING_GOLDEN_DIR or put {_SHARED}/ beside the repository",  # allowed
        ]
    )
    lines = sorted(line for line, _ in source_problems(text))
    assert lines == [1, 2, 3, 4, 5], source_problems(text)


def test_index_checker_finds_planted_errors() -> None:
    readme = (
        "# x\n\n## Anchors\n\n**knet.md**: [flip](knet.md#flip), [pool](knet.md#pool),\n"
        "[pool](knet.md#pool), [gone](knet.md#gone), [npz](files.md#pool-nan)\n\n## Other\n"
        "[pool-nan](knet.md#pool-nan)\n"
    )
    found = index_problems(readme, ANCHORS)
    assert any("files.md#pool-nan is listed" in p for p in found), found
    assert any("knet.md#gone is listed" in p for p in found), found
    assert any("knet.md#pool-nan is a heading but not listed" in p for p in found), found
    assert any("files.md#npz is a heading but not listed" in p for p in found), found
    assert any("knet.md#pool is listed more than once" in p for p in found), found
    assert any("link text differs" in p for p in found), found
    assert index_problems("# x\n", ANCHORS) == ["docs/README.md has no '## Anchors' section"]


def test_headings_skip_code_blocks() -> None:
    assert headings("## a\n```\n## not-a-heading\n```\n### b\n# title\n") == ["a", "b"]


# ------------------------------------------------------------------------------------------
# The repository


def test_docs_pages_exist_and_headings_are_anchors() -> None:
    anchors = doc_anchors()
    assert {"knet.md", "layout.md", "tensorflow.md", "numerics.md", "files.md"} <= set(anchors)
    bad = [
        f"docs/{page}: heading {h!r} is not a stable anchor (lowercase words joined by '-')"
        for page, hs in anchors.items()
        for h in hs
        if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", h)
    ]
    bad += [
        f"docs/{page}: heading {h!r} appears twice"
        for page, hs in anchors.items()
        for h in set(hs)
        if hs.count(h) > 1
    ]
    assert not bad, "\n".join(bad)


def test_readme_index_lists_every_heading_and_nothing_else() -> None:
    problems = index_problems((DOCS / "README.md").read_text(encoding="utf-8"), doc_anchors())
    assert not problems, "docs/README.md anchor index:\n" + "\n".join(problems)


def test_links_between_docs_pages_resolve() -> None:
    anchors = doc_anchors()
    bad = []
    for p in sorted(DOCS.glob("*.md")):
        text = p.read_text(encoding="utf-8")
        for m in DOC_LINK.finditer(text):
            page = m.group("page") or p.name
            anchor = m.group("anchor")
            if page == "README.md" or (m.group("page") is None and anchor is None):
                continue
            line = text.count("\n", 0, m.start()) + 1
            if page not in anchors:
                bad.append(f"docs/{p.name}:{line}: link to missing page {page}")
            elif anchor is not None and anchor not in anchors[page]:
                bad.append(f"docs/{p.name}:{line}: link to missing section {page}#{anchor}")
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = scanned_files()
    # the scan must see the code it is meant to police
    names = {p.relative_to(ROOT).as_posix() for p in found}
    assert "porting/tolerance.py" in names and "julia/src/ops.jl" in names
    assert "tests/test_docs.py" not in names
    return found


def test_code_cites_existing_docs_anchors(files: list[Path]) -> None:
    anchors = doc_anchors()
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {why}"
        for p in files
        for line, why in citation_problems(p.read_text(encoding="utf-8", errors="replace"), anchors)
    ]
    assert not bad, "\n".join(bad)


def test_code_cites_no_notes_outside_the_repository(files: list[Path]) -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {why}"
        for p in files
        for line, why in source_problems(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not bad, "\n".join(bad)
