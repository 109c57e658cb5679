"""pytest plugin: record every port check of a session, and report them.

Registered through the `pytest11` entry point (`porting = "porting.testing.plugin"`), so it
loads with pytest wherever `porting` is installed, and does nothing unless used:

- the `port_checks` fixture: the checks (`porting.testing._record.Check`) made by
  `porting.testing.assert_*` during that test, in order, to look at or assert on;
- `--porting-report=FILE`: every check of the session, written at its end as JSON to FILE
  and as a small self-contained HTML page next to it (FILE with `.html`): each check's test,
  verdict, worst error against its tolerance, and the diagnosed cause of a failure.

Under `pytest -q` the assertion messages are shortened to the verdict, the worst element and
the cause. Without the entry point (a checkout not installed), `-p porting.testing.plugin`
loads it.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path

import pytest

from porting._text import printable
from porting.testing import _record

__all__ = ["port_checks", "write_report"]

_STASH = pytest.StashKey[tuple]()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("porting", "porting: checks of ported layers and models")
    group.addoption(
        "--porting-report",
        metavar="FILE",
        default=None,
        help="write every port check of the session to FILE (JSON) and FILE.html",
    )


def pytest_configure(config) -> None:
    _record._STATE["verbosity"] = config.getoption("verbose", 0) or 0
    path = config.getoption("porting_report", None)
    if path:
        target = Path(path)
        if target.is_dir():
            raise pytest.UsageError(f"--porting-report={path}: is a directory; expected a file")
        if not target.parent.exists():
            raise pytest.UsageError(
                f"--porting-report={path}: the folder {str(target.parent)!r} does not exist"
            )
        rec = _record.Recorder()
        rec.__enter__()
        config.stash[_STASH] = (rec, target)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    _record._STATE["test"] = item.nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item) -> None:
    _record._STATE["test"] = None


def pytest_sessionfinish(session, exitstatus) -> None:
    found = session.config.stash.get(_STASH, None)
    if found is None:
        return
    rec, target = found
    rec.__exit__(None, None, None)
    write_report(rec.checks, target)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    found = config.stash.get(_STASH, None)
    if found is None:
        return
    rec, target = found
    failed = sum(not c.ok for c in rec.checks)
    terminalreporter.write_line(
        f"porting: {len(rec.checks)} port checks, {failed} failed; report: {target} "
        f"and {target.with_suffix('.html')}"
    )


@pytest.fixture
def port_checks():
    """The port checks (`porting.testing` assertions) made during this test, in order."""
    with _record.Recorder() as rec:
        yield rec


# --------------------------------------------------------------------------- the report


def _summary(checks) -> dict:
    return {
        "checks": len(checks),
        "passed": sum(c.ok for c in checks),
        "failed": sum(not c.ok for c in checks),
    }


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _visible(v):
    """Every string in `v` (a check's JSON data) with its control characters written as escapes
    (`porting._text.printable`): a test id or label holding ESC, NUL, a carriage return or a
    bidi override shows as `\x1b`, `\x00`, `\r`, `\u202e` in the JSON and the HTML alike."""
    if isinstance(v, str):
        return printable(v)
    if isinstance(v, dict):
        return {_visible(k): _visible(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_visible(x) for x in v]
    return v


def write_report(checks, path) -> tuple[Path, Path]:
    """Write `checks` as JSON to `path` and as HTML to `path` with suffix `.html` (each
    atomically). JSON is strict: non-finite numbers are written as strings ("nan", "inf").
    Control characters in any text (test ids, labels) are written as visible escapes."""
    import porting

    path = Path(path)
    doc = {
        "porting": porting.__version__,
        "summary": _summary(checks),
        "checks": [_visible(c.to_dict()) for c in checks],
    }
    _atomic_write(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    html_path = path.with_suffix(".html") if path.suffix != ".html" else path.with_suffix(".htm")
    _atomic_write(html_path, _html(doc))
    return path, html_path


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def _html(doc: dict) -> str:
    s = doc["summary"]
    rows = []
    for c in doc["checks"]:
        cls = "ok" if c["ok"] else "bad"
        rows.append(
            f'<tr class="{cls}"><td>{html.escape(c["test"] or "")}</td>'
            f"<td>{html.escape(c['kind'])}</td><td>{html.escape(c['label'])}</td>"
            f"<td>{'yes' if c['ok'] else 'NO'}</td>"
            f"<td>{_num(c['max_abs_error'])}</td><td>{_num(c['error_to_tolerance'])}</td>"
            f"<td>{html.escape(c['cause'] or '')}</td>"
            f"<td>{html.escape(c['tolerance'])}</td></tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>porting: port checks</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }}
tr.bad td {{ background: #fde2e2; }}
tr.ok td:nth-child(4) {{ color: #137333; }}
</style></head><body>
<h1>Port checks</h1>
<p>{s["checks"]} checks: {s["passed"]} passed, {s["failed"]} failed
(porting {html.escape(doc["porting"])}). err / tol is the worst error against its
floating-point tolerance: below 1 is within bounds.</p>
<table><thead><tr><th>test</th><th>kind</th><th>what</th><th>ok</th><th>max abs error</th>
<th>err / tol</th><th>cause</th><th>tolerance</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
