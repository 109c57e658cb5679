"""What juliacall and juliapkg will do, per installed juliacall version, and the environment
`porting` prepares so that they start the Julia and project that discovery checked.

Pure functions of their inputs: nothing here imports juliacall or juliapkg, runs Julia or
changes `os.environ` (the caller applies what `launch_environment` returns). The rules are
those of the released packages, restated in docs/julia-versions.md#juliacall-env,
#juliapkg-env and #juliapkg-intersection:

- juliacall < 0.9.28 ignores `PYTHON_JULIACALL_EXE` / `PYTHON_JULIACALL_PROJECT` and always asks
  juliapkg (`PYTHON_JULIAPKG_EXE`, `PYTHON_JULIAPKG_PROJECT`, which must be absolute).
- juliacall >= 0.9.28 skips juliapkg when both `PYTHON_JULIACALL_EXE` and
  `PYTHON_JULIACALL_PROJECT` are set (the project must exist), asks juliapkg when neither is,
  and refuses to start when only one is.
- juliapkg re-resolves when `PYTHON_JULIAPKG_EXE` differs from what its `meta.json` recorded,
  and an online re-resolve of a non-shared project deletes its `Manifest.toml`: so
  `PYTHON_JULIAPKG_EXE` is set only when juliapkg would otherwise pick another Julia.
- juliapkg intersects the `"julia"` bound of every `juliapkg.json` on `sys.path`; juliacall's own
  file declares which Julia versions it runs, and that file (not a copy) is the table used here
  wherever juliacall is installed.

>>> JuliaCompat.parse("~1.9, ^1.10.3").contains((1, 9, 4)), JuliaCompat.parse("~1.9, ^1.10.3").contains((1, 10, 0))
(True, False)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

Version = tuple[int, int, int]

# When juliacall started to read PYTHON_JULIACALL_EXE/PROJECT (and to require both together).
PAIR_SINCE: Version = (0, 9, 28)

# juliacall's own `juliapkg.json` "julia" entry, per release line: the fallback used only when
# the installed juliacall's file cannot be read (docs/julia-versions.md#juliacall-julia).
BUILTIN_TABLE: tuple[tuple[Version, Version | None, str], ...] = (
    ((0, 9, 29), None, "^1.10.3"),
    ((0, 9, 26), (0, 9, 29), "~1.9, ^1.10.3"),
    ((0, 9, 25), (0, 9, 26), "1.6.1 - 1.10.0, ^1.10.3"),
)

_PARTIAL = re.compile(r"^(\d+)(?:\.(\d+)(?:\.(\d+))?)?$")


def parse_version(text: str | None) -> Version | None:
    """`"0.9.27"` -> `(0, 9, 27)`; `None` when it does not start with two or three numbers."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def format_version(v: Version | None) -> str:
    return "?" if v is None else ".".join(map(str, v))


def _partial(text: str) -> tuple[Version, int]:
    m = _PARTIAL.match(text.strip())
    if not m:
        raise ValueError(f"not a version: {text!r}")
    parts = [int(g) for g in m.groups() if g is not None]
    n = len(parts)
    parts += [0] * (3 - n)
    return (parts[0], parts[1], parts[2]), n


def _bump(v: Version, index: int) -> Version:
    out = list(v[: index + 1]) + [0] * (2 - index)
    out[index] += 1
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class JuliaCompat:
    """A Julia `[compat]` specifier as juliapkg reads it: comma-separated clauses, each `^x.y.z`
    (or no prefix), `~x.y.z`, `=x.y.z` or `a.b.c - x.y.z`; a union of half-open ranges."""

    text: str
    ranges: tuple[tuple[Version, Version], ...]

    @classmethod
    def parse(cls, text: str) -> JuliaCompat:
        ranges = []
        for clause in (c.strip() for c in text.split(",")):
            if not clause:
                continue
            if " - " in clause:
                lo_text, hi_text = clause.split(" - ", 1)
                lo, _ = _partial(lo_text)
                hi, n = _partial(hi_text)
                ranges.append((lo, _bump(hi, n - 1)))
            elif clause.startswith("="):
                v, _ = _partial(clause[1:])
                ranges.append((v, _bump(v, 2)))
            elif clause.startswith("~"):
                v, n = _partial(clause[1:])
                ranges.append((v, _bump(v, 0 if n == 1 else 1)))
            else:
                v, n = _partial(clause.removeprefix("^"))
                first = next((i for i, x in enumerate(v[:n]) if x != 0), n - 1)
                ranges.append((v, _bump(v, first)))
        if not ranges:
            raise ValueError(f"empty compat specifier {text!r}")
        return cls(text, tuple(ranges))

    def contains(self, v: Version) -> bool:
        return any(lo <= v < hi for lo, hi in self.ranges)

    def describe(self) -> str:
        """`"~1.9, ^1.10.3"` -> `"Julia 1.9.x or >= 1.10.3 (< 2)"`-style plain words."""
        parts = []
        for lo, hi in self.ranges:
            parts.append(f"{format_version(lo)} to below {format_version(hi)}")
        return "Julia " + " or ".join(parts)


@dataclass(frozen=True)
class JuliacallRange:
    """Which Julia versions the installed juliacall runs, and where that was read."""

    juliacall: str
    compat: JuliaCompat
    source: str  # the juliapkg.json read, or "porting's built-in table (...)"
    pythoncall: str | None  # the PythonCall version juliacall pins (e.g. "0.9.28"), if known

    def to_dict(self) -> dict:
        return {
            "juliacall": self.juliacall,
            "julia": self.compat.text,
            "meaning": self.compat.describe(),
            "source": self.source,
            "pythoncall": self.pythoncall,
        }


def _installed_juliapkg_json(version: str, dist: str = "juliacall") -> str | None:
    """The `juliapkg.json` inside the installed juliacall, when that is version `version`,
    located through its metadata (the module is not imported)."""
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    if d.version != version:
        return None
    for f in d.files or ():
        if f.name == "juliapkg.json" and f.parent.name == "juliacall":
            path = str(d.locate_file(f))
            return path if os.path.isfile(path) else None
    return None


def juliacall_range(juliacall: str, juliapkg_json: str | None = None) -> JuliacallRange | None:
    """The Julia range juliacall `juliacall` declares: from its own `juliapkg.json` when it can
    be read (the installed one by default), else from the built-in table; None when unknown."""
    path = juliapkg_json if juliapkg_json is not None else _installed_juliapkg_json(juliacall)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fp:
                data = json.load(fp)
            compat = JuliaCompat.parse(str(data["julia"]))
            pin = data.get("packages", {}).get("PythonCall", {}).get("version")
            pythoncall = str(pin).lstrip("=").strip() if isinstance(pin, str) else None
            return JuliacallRange(juliacall, compat, f"juliacall's own {path}", pythoncall)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    v = parse_version(juliacall)
    if v is None:
        return None
    for lo, hi, spec in BUILTIN_TABLE:
        if v >= lo and (hi is None or v < hi):
            return JuliacallRange(
                juliacall,
                JuliaCompat.parse(spec),
                "porting's built-in table (juliacall's juliapkg.json was not found)",
                juliacall,
            )
    return None


def reads_juliacall_pair(juliacall: str | None) -> bool:
    """Whether this juliacall reads PYTHON_JULIACALL_EXE/PROJECT (>= 0.9.28; assumed for an
    unknown or missing juliacall, the current releases' rule)."""
    v = parse_version(juliacall)
    return v is None or v >= PAIR_SINCE


# --------------------------------------------------------------------------- settings


KEYS = {
    "PYTHON_JULIACALL_EXE": "juliacall-exe",
    "PYTHON_JULIACALL_PROJECT": "juliacall-project",
    "PYTHON_JULIAPKG_EXE": "juliapkg-exe",
    "PYTHON_JULIAPKG_PROJECT": "juliapkg-project",
}


def effective_settings(environ: Mapping[str, str], xoptions: Mapping) -> dict[str, str]:
    """The four juliacall/juliapkg settings as those packages read them: `-X key=value` first,
    then the environment variable. Keys are the environment variable names."""
    out: dict[str, str] = {}
    for env, xkey in KEYS.items():
        x = xoptions.get(xkey)
        if isinstance(x, str):
            out[env] = x
        elif environ.get(env) is not None:
            out[env] = environ[env]
    return out


def _executable(value: str) -> str:
    path = shutil.which(value)
    return os.path.abspath(path if path is not None else os.path.expanduser(value))


def _read_meta(project: str) -> dict | None:
    try:
        with open(os.path.join(project, "pyjuliapkg", "meta.json"), encoding="utf-8") as fp:
            data = json.load(fp)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def juliapkg_would_pick(project: str, settings: Mapping[str, str]) -> str | None:
    """The Julia juliapkg reuses without resolving again: the executable its `meta.json`
    recorded, when the recorded `PYTHON_JULIAPKG_EXE` override equals today's (None if none)."""
    meta = _read_meta(project)
    if meta is None:
        return None
    exe = meta.get("executable")
    if not isinstance(exe, str) or not exe:
        return None
    if meta.get("override_executable") != settings.get("PYTHON_JULIAPKG_EXE"):
        return None
    return exe


@dataclass(frozen=True)
class Launch:
    """The environment changes that make juliacall start `julia` with `project`.

    `set` maps variables to values; `unset` lists variables to remove (juliacall settings that
    this juliacall would read inconsistently); `route` is "juliacall-pair" (juliapkg skipped) or
    "juliapkg"; `notes` say why, for reports."""

    julia: str
    project: str
    route: str
    set: dict[str, str]
    unset: tuple[str, ...]
    notes: tuple[str, ...]

    def apply(self, environ) -> dict[str, str | None]:
        """Apply to `environ` (a dict or `os.environ`); returns what changed (None = removed)."""
        changed: dict[str, str | None] = {}
        for key in self.unset:
            if key in environ:
                del environ[key]
                changed[key] = None
        for key, value in self.set.items():
            if environ.get(key) != value:
                environ[key] = value
                changed[key] = value
        return changed


def launch_environment(
    julia: str,
    project: str,
    juliacall: str | None,
    settings: Mapping[str, str],
) -> Launch:
    """What to set so that juliacall `juliacall` starts `julia` (absolute path of the Julia
    discovery chose) on `project` (absolute), given the user's `settings`
    (`effective_settings`), without ever downloading (`PYTHON_JULIAPKG_OFFLINE=yes`)."""
    sets: dict[str, str] = {"PYTHON_JULIAPKG_OFFLINE": "yes"}
    unset: list[str] = []
    notes: list[str] = []
    pair = reads_juliacall_pair(juliacall)
    jc_exe = settings.get("PYTHON_JULIACALL_EXE")
    jc_project = settings.get("PYTHON_JULIACALL_PROJECT")
    if pair and os.path.isdir(project):
        # Both or neither: juliacall >= 0.9.28 refuses one alone. Both -> juliapkg is skipped.
        if jc_exe is None:
            sets["PYTHON_JULIACALL_EXE"] = julia
        if jc_project is None:
            sets["PYTHON_JULIACALL_PROJECT"] = project
        if jc_exe is None or jc_project is None:
            notes.append(
                f"juliacall {juliacall or '(version unknown)'} reads PYTHON_JULIACALL_EXE and "
                "PYTHON_JULIACALL_PROJECT only together: both set, so juliapkg is not consulted"
            )
        return Launch(julia, project, "juliacall-pair", sets, (), tuple(notes))
    # juliapkg route: juliacall < 0.9.28 ignores the PYTHON_JULIACALL_* pair; >= 0.9.28 needs
    # neither of them set (the project does not exist yet, so the pair would be refused).
    for key in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_PROJECT"):
        if key in settings:
            if pair:
                unset.append(key)
            notes.append(
                f"{key} is passed on to juliapkg"
                + (
                    f" (juliacall {juliacall} ignores it)"
                    if not pair
                    else " (the project does not exist, so juliacall could not use the pair)"
                )
            )
    if settings.get("PYTHON_JULIAPKG_PROJECT") is None or not os.path.isabs(
        settings["PYTHON_JULIAPKG_PROJECT"]
    ):
        if settings.get("PYTHON_JULIAPKG_PROJECT") is not None or jc_project is not None:
            sets["PYTHON_JULIAPKG_PROJECT"] = project  # juliapkg wants an absolute path
    user_exe = settings.get("PYTHON_JULIAPKG_EXE")
    if user_exe is not None and _executable(user_exe) == julia:
        pass  # juliapkg already gets this Julia
    elif juliapkg_would_pick(project, settings) == julia and user_exe is None:
        notes.append("juliapkg's meta.json already names this Julia: PYTHON_JULIAPKG_EXE not set")
    else:
        sets["PYTHON_JULIAPKG_EXE"] = julia
    return Launch(julia, project, "juliapkg", sets, tuple(unset), tuple(notes))
