"""The package's shape: one import direction per boundary (no import cycles, counting imports
inside functions too, TYPE_CHECKING blocks aside), no module over 700 lines, package
`__init__.py` files that are faces (at most 150 lines: the logic lives in modules named for
their job, the face re-exports it), and no module using a private name (leading underscore) of
another package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "porting"
MAX_LINES = 700
MAX_INIT_LINES = 150


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    mods = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - n.level + 1] + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in n.names]
                targets = [t for t in subs if t in mods] or [base]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_no_module_over_700_lines():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert big == {}, f"modules over {MAX_LINES} lines: {big}"


def test_no_package_init_over_150_lines():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("__init__.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_INIT_LINES
    }
    assert big == {}, f"package faces over {MAX_INIT_LINES} lines (move the logic out): {big}"


def test_the_init_size_check_sees_every_package():
    # the check above reads every package's face: porting itself and each subpackage
    inits = {p.parent.name for p in PACKAGE.rglob("__init__.py")}
    assert {"porting", "io", "quant", "bridge", "testing", "knet", "model"} <= inits


# --------------------------------------------------------------------------- private names

# Package-wide leaf modules: shared internals that any module may import.
SHARED_INTERNALS = {"porting._checks", "porting._text", "porting._transpose"}

# Reach-ins allowed for now, each with its reason ("importer: private name it uses"); empty:
# the test fails on a new reach-in and on an entry here that no longer occurs.
KNOWN: set[str] = set()


def _private_part(dotted: str) -> tuple[str, str] | None:
    """(the module or package holding it, the name up to its first private component)."""
    parts = dotted.split(".")
    for i, c in enumerate(parts):
        if c.startswith("_") and not c.startswith("__"):
            return ".".join(parts[:i]), ".".join(parts[: i + 1])
    return None


def _home(owner: str, mods: dict[str, Path]) -> str:
    """Where a private name of `owner` may be used: its package (a package's own private
    modules and names, or those of a module in a subpackage), or, for a top-level module
    (porting.layout), that module alone."""
    p = mods.get(owner)
    if p is None or p.name == "__init__.py":
        return owner
    parent = owner.rpartition(".")[0]
    return owner if parent == "porting" else parent


def private_reach_ins(root: Path = PACKAGE) -> set[str]:
    """Every `importer: private name` where a module uses a private name (leading underscore)
    of another package: `from porting.x.y import _name`, `import porting.x._mod`, or
    `module._name` on a porting module it imported (anywhere in its body)."""
    mods = _modules(root)
    found: set[str] = set()
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        refs: list[str] = []
        bound: dict[str, str] = {}  # local name -> porting module it stands for
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - n.level + 1] + ([base] if base else []))
                for a in n.names:
                    refs.append(f"{base}.{a.name}")
                    if f"{base}.{a.name}" in mods:
                        bound[a.asname or a.name] = f"{base}.{a.name}"
            elif isinstance(n, ast.Import):
                for a in n.names:
                    refs.append(a.name)
                    if a.asname and a.name in mods:
                        bound[a.asname] = a.name
        for n in ast.walk(tree):
            if (
                isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id in bound
            ):
                refs.append(f"{bound[n.value.id]}.{n.attr}")
        for ref in refs:
            hit = _private_part(ref) if ref.startswith("porting.") else None
            if hit is None or hit[1] in SHARED_INTERNALS:
                continue
            owner, private = hit
            home = _home(owner, mods)
            if home != pkg and home != m:
                found.add(f"{m}: {ref}")
    return found


def test_the_reach_in_finder_finds_planted_ones(tmp_path):
    pkg = tmp_path / "porting"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    for f in ("__init__.py", "a/__init__.py", "b/__init__.py", "_checks.py", "layout.py"):
        (pkg / f).write_text("")
    (pkg / "a" / "_impl.py").write_text("def _helper(): pass\n")
    (pkg / "a" / "mod.py").write_text("from porting.a._impl import _helper\n")  # same package
    (pkg / "b" / "x.py").write_text(
        "from porting.a._impl import thing\n"  # another package's private module
        "from porting.a.mod import _helper\n"  # another package's private name
        "from porting._checks import as_float\n"  # a shared internal: allowed
        "from porting import layout\n"
        "y = layout._to_tf\n"  # a private name by attribute
    )
    (pkg / "c.py").write_text("from porting.layout import _to_tf\n")  # another top-level module
    assert private_reach_ins(pkg) == {
        "porting.b.x: porting.a._impl.thing",
        "porting.b.x: porting.a.mod._helper",
        "porting.b.x: porting.layout._to_tf",
        "porting.c: porting.layout._to_tf",
    }


def test_no_module_uses_a_private_name_of_another_package():
    found = private_reach_ins()
    new = sorted(found - KNOWN)
    assert new == [], (
        f"private names used across packages (give them a public name where they are shared): {new}"
    )
    gone = sorted(KNOWN - found)
    assert gone == [], f"fixed reach-ins still listed in KNOWN (remove them): {gone}"


def test_lower_layers_never_import_the_model():
    """porting.diagnosis, porting.magnitude and porting.activations sit below porting.model
    (which imports them): none of them imports any part of it."""
    graph = import_graph()
    lower = [
        m
        for m in graph
        if m.startswith("porting.diagnosis") or m in ("porting.magnitude", "porting.activations")
    ]
    up = {m: sorted(t for t in graph[m] if t.startswith("porting.model")) for m in lower}
    assert {m: t for m, t in up.items() if t} == {}


def test_knetfile_uses_the_model_face_only():
    """porting.knetfile sits beside porting.model: it builds a model through porting.model's
    public names only."""
    graph = import_graph()
    public = {"porting.model"}  # the package face
    reach = {
        (m, t)
        for m, ts in graph.items()
        if m.startswith("porting.knetfile")
        for t in ts
        if t.startswith("porting.model") and t not in public
    }
    assert not reach, sorted(reach)


def test_source_packages_import_none_of_each_other():
    """knetfile (Knet's files), flux (Flux's) and fromkeras (Keras models) each read into the
    shared model description; none imports another (counting imports inside functions)."""
    graph = import_graph()
    sources = ("porting.knetfile", "porting.flux", "porting.fromkeras")
    found = {src: set() for src in sources}
    for m, targets in graph.items():
        for src in sources:
            if m == src or m.startswith(src + "."):
                found[src] |= {
                    t
                    for t in targets
                    for o in sources
                    if o != src and (t == o or t.startswith(o + "."))
                }
    assert found == {src: set() for src in sources}
    assert all(any(m.startswith(src) for m in graph) for src in sources)  # the walk sees each
