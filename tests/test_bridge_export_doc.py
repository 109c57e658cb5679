"""The export schema in julia/README.md documents every key the shipped example file uses.

A reader of the schema must find each key of `porting/examples/lenet.json` described: the
top-level and per-layer keys as rows of the schema tables, the nested ones (a parameter entry's
`key`/`size`/`eltype`, the `conv` and `pool` keywords) in those rows' descriptions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _schema_section() -> str:
    text = (ROOT / "julia" / "README.md").read_text(encoding="utf-8")
    start = text.index("## Export format")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table_keys(section: str) -> set[str]:
    return set(re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.M))


def test_every_key_of_the_shipped_example_is_documented():
    section = _schema_section()
    rows = _table_keys(section)
    doc = json.loads((ROOT / "porting" / "examples" / "lenet.json").read_text())
    missing = [k for k in doc if k not in rows]
    for layer in doc["layers"]:
        missing += [f"layers[].{k}" for k in layer if k not in rows]
        for entry in (layer.get("params") or {}).values():
            missing += [f"params.{k}" for k in entry if f'"{k}"' not in section]
        for group in ("conv", "pool"):
            for k in layer.get(group) or {}:
                if f'"{k}"' not in section:
                    missing.append(f"{group}.{k}")
    assert not sorted(set(missing)), f"undocumented in julia/README.md: {sorted(set(missing))}"


def test_the_check_sees_an_undocumented_key():
    rows = _table_keys(_schema_section())
    assert "input_size" in rows and "layers" in rows
    assert "no_such_key" not in rows
