"""`porting doctor`: the environment a user needs to know about, and the explicit Julia install.

`porting doctor` prints Python, NumPy, TensorFlow and Keras versions (read from package metadata:
TensorFlow is not imported), juliacall (metadata only: not imported), the Julia executable, its
version and where it was found, Knet and NNlib versions (only when a Julia was found: it is
started once, in a subprocess), which Knet backend `backend="auto"` picks and why, and what to
do to get Knet itself. `--json` prints the same as one JSON object. The exit code is 0 whenever
the toolkit can work, even on the NumPy reference backend; 1 when a required package is missing.

`porting doctor --install-julia` is the only place where `porting` downloads anything. Through
juliapkg (installed with juliacall, `pip install 'porting[julia]'`) it installs Julia 1.9 and
Knet 1.4.10 into juliacall's Julia project, with NNlib, NPZ and JSON as declared in the
`juliapkg.json` shipped inside the `porting` package. It first checks, within 3 seconds, that
julialang-s3.julialang.org and pkg.julialang.org can be reached, and fails fast (exit code 2)
when they cannot.

About that `juliapkg.json`: juliapkg reads the `juliapkg.json` of *every* installed Python
package and intersects their Julia bounds. So the shipped file names only what PortingKnet needs
on any Julia (NNlib, NPZ, JSON) and no Julia bound. Knet 1.4.10 and its Julia 1.9 bound belong to
the explicit install step: `--install-julia` records them in the Julia project's own juliapkg
file (`<project>/pyjuliapkg/juliapkg.json`), which only resolves of that one project read
(docs/julia-versions.md#juliapkg-intersection, #knet-julia).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time

from porting.errors import PortingError

NAME = "doctor"
HELP = "show versions, the Julia found and which Knet backend 'auto' picks; --install-julia installs Knet"
DESCRIPTION = __doc__.split("\n\n")[1] if __doc__ else HELP
ORDER = 90

NETWORK_HOSTS = (("julialang-s3.julialang.org", 443), ("pkg.julialang.org", 443))
NETWORK_TIMEOUT = 3.0
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-macos",
    "tensorflow-intel",
    "tf-nightly",
    "tf-nightly-cpu",
)
# docs/julia-versions.md#juliapkg-intersection
JULIAPKG_JSON_NOTE = (
    "porting ships a juliapkg.json (NNlib, NPZ, JSON; no Julia bound). juliapkg reads the "
    "juliapkg.json of every installed Python package, so juliacall users in this Python "
    "environment resolve these too, on any Julia. Knet 1.4.10 and Julia ~1.9 are recorded only "
    "in the Julia project that --install-julia installs into."
)
TF_HINT = "pip install 'porting[tf-cpu]'"  # the same install hint as every other message
KNET_UUID = "1902f260-5fb4-5aff-8c31-6271790ab950"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.add_argument(
        "--julia",
        metavar="PATH",
        help="the Julia executable to check (wins over PYTHON_JULIACALL_EXE, PYTHON_JULIAPKG_EXE, "
        "juliapkg's environment and PATH)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not start Julia to read the Knet and NNlib versions (faster; less certain)",
    )
    parser.add_argument(
        "--install-julia",
        action="store_true",
        help="download and install Julia 1.9, Knet 1.4.10 and NNlib through juliapkg (needs "
        "juliacall: pip install 'porting[julia]'); fails fast when offline",
    )


# --------------------------------------------------------------------------- the report


def _tensorflow() -> dict | None:
    from porting.bridge.discovery import dist_version

    for dist in TENSORFLOW_DISTRIBUTIONS:
        v = dist_version(dist)
        if v is not None:
            return {"version": v, "distribution": dist}
    return None


def collect(julia: str | None = None, *, probe: bool = True) -> dict:
    """Everything `porting doctor` reports, as plain data (no TensorFlow or juliacall import)."""
    import porting
    from porting.bridge import plan_auto, probe_julia, worker_default
    from porting.bridge.discovery import (
        JULIACALL_PIN,
        dist_version,
        juliacall_supports,
        parse_version,
    )
    from porting.bridge.paths import juliapkg_json

    plan = plan_auto(julia, probe=probe)
    d, p = plan.discovery, plan.probe
    advice = list(plan.advice)
    if p is None and probe and d.julia is not None:
        # "auto" cannot use this Julia (no juliacall, say), but its Knet and NNlib still matter
        p = probe_julia(d)
        if not p.ok:
            advice.append(f"the Julia found does not work yet: {p.problem}")
        elif p.backend != "julia" and d.knet_possible:
            advice.append("then run `porting doctor --install-julia` to install Knet 1.4.10")
    jc = d.juliacall
    in_pin = None
    if jc is not None:
        v = parse_version(jc)
        in_pin = v is not None and (0, 9, 26) <= v < (0, 9, 29)
    tf = _tensorflow()
    numpy_version = dist_version("numpy")
    julia_info = {
        "found": d.julia is not None,
        "executable": d.julia.path if d.julia else None,
        "version": d.julia.version_text if d.julia else None,
        "found_via": d.julia.setting if d.julia else None,
        "project": d.project,
        "project_source": d.project_source,
        "looked": list(d.looked),
        "problems": [c.problem for c in d.candidates if c.problem],
        "knet_possible": d.knet_possible,
    }
    if d.julia is not None and jc is not None:
        supported, text = juliacall_supports(jc, d.julia.version or (0, 0, 0), d.juliacall_range)
        julia_info["juliacall_compatible"] = supported
        julia_info["juliacall_range"] = text
    versions = dict(p.versions) if p is not None else {}
    try:
        worker = worker_default()
        worker_note = None
    except PortingError as e:
        worker, worker_note = True, str(e)
    missing = [] if numpy_version is not None else ["numpy"]
    if missing:
        advice.insert(0, "install the missing required package: pip install numpy")
    if tf is None:
        advice.append(
            f"TensorFlow is optional (Keras conversion and the TensorFlow side of checks): {TF_HINT}"
        )
    if worker_note:
        advice.append(worker_note)
    conv = _conv_kernel()
    if conv.get("problem"):
        advice.append(conv["problem"])
    elif conv["onnxruntime"] is None or conv["onnx"] is None:
        advice.append(
            "the NumPy side's Float32 convolutions run about twice as fast on onnxruntime's "
            "kernels: pip install 'porting[fast]'"
        )
    report = {
        "porting": porting.__version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "numpy": numpy_version,
        "tensorflow": tf,
        "keras": dist_version("keras"),
        "juliacall": {
            "version": jc,
            "pin": JULIACALL_PIN,
            "in_pin": in_pin,
            "juliapkg": dist_version("juliapkg"),
            "problem": d.juliacall_problem,
            # the Julia versions this juliacall accepts, and where that was read
            "julia_range": None if d.juliacall_range is None else d.juliacall_range.to_dict(),
        },
        "julia": julia_info,
        "knet": versions.get("knet") if p is not None else None,
        "nnlib": versions.get("nnlib") if p is not None else None,
        "knet_error": versions.get("knet_error"),
        "probe": None if p is None else p.to_dict(),
        "auto": {
            "backend": plan.backend,
            "reason": plan.reason,
            "runs_in": ("worker process" if worker else "this process (juliacall)")
            if plan.backend != "reference"
            else "this process (NumPy)",
        },
        "conv_kernel": conv,
        "advice": advice,
        "juliapkg_json": str(juliapkg_json()),
        "juliapkg_json_note": JULIAPKG_JSON_NOTE,
        "missing_required": missing,
        "ok": not missing,
    }
    return report


def _conv_kernel() -> dict:
    """Which kernels the reference's Float32 convolutions would use (porting.knet.mlas),
    from the setting and the installed packages' metadata (nothing imported)."""
    from porting.bridge.discovery import dist_version
    from porting.knet import mlas

    info: dict = {"onnxruntime": dist_version("onnxruntime"), "onnx": dist_version("onnx")}
    try:
        info["setting"] = mlas.setting()
    except PortingError as e:
        info["setting"], info["problem"] = None, str(e)
        return info
    usable = info["onnxruntime"] is not None and info["onnx"] is not None
    if info["setting"] == "numpy" or not usable:
        info["uses"] = "numpy"
    else:
        info["uses"] = (
            f"onnxruntime {info['onnxruntime']} for Float32 convolutions"
            + (f" of >= {mlas.MIN_MACS} multiply-adds" if info["setting"] == "auto" else "")
            + "; numpy for the rest"
        )
    return info


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def warn(text: str) -> str:
        return f"[yellow]{escape(text)}[/yellow]"

    def bad(text: str) -> str:
        return f"[red]{escape(text)}[/red]"

    console = Console(highlight=False)
    t = Table(title="porting doctor", show_header=False, title_justify="left")
    t.add_column("item", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    row = lambda item, value: t.add_row(item, value)  # noqa: E731
    py = report["python"]
    row("porting", escape(report["porting"]))
    row("Python", escape(f"{py['version']} ({py['executable']})"))
    row("NumPy", escape(report["numpy"]) if report["numpy"] else bad("missing (required)"))
    tf = report["tensorflow"]
    row(
        "TensorFlow",
        escape(f"{tf['version']} ({tf['distribution']})")
        if tf
        else warn(f"not installed (optional: {TF_HINT})"),
    )
    row("Keras", escape(report["keras"] or "not installed"))
    jc = report["juliacall"]
    if jc["version"] is None:
        row(
            "juliacall",
            escape(f"not installed (optional: pip install 'porting[julia]', juliacall{jc['pin']})"),
        )
    else:
        text = escape(f"{jc['version']}; juliapkg {jc['juliapkg'] or 'missing'}")
        if not jc["in_pin"]:
            text += " " + warn(f"(outside porting[julia]'s pin {jc['pin']})")
        row("juliacall", text)
        rng = jc.get("julia_range")
        if rng:
            row("juliacall runs", escape(f"Julia {rng['julia']!r} (from {rng['source']})"))
    j = report["julia"]
    t.add_section()
    if j["found"]:
        row("Julia", escape(f"{j['version']} at {j['executable']}"))
        row("found via", escape(j["found_via"]))
    else:
        row("Julia", warn("not found"))
    row("looked at", escape("\n".join(j["looked"])))
    row("Julia project", escape(f"{j['project']} ({j['project_source']})"))
    probe = report["probe"]
    if probe is not None:
        row(
            "Knet",
            escape(report["knet"])
            if report["knet"]
            else warn(
                f"not loaded: {report['knet_error']}" if report["knet_error"] else "not loaded"
            ),
        )
        row("NNlib", escape(report["nnlib"]) if report["nnlib"] else warn("not loaded"))
        if probe["problem"]:
            row("probe", bad(probe["problem"]))
    elif j["found"]:
        row("Knet / NNlib", "not checked (--no-probe)")
    t.add_section()
    a = report["auto"]
    name = (
        f"[green]{escape(a['backend'])}[/green]"
        if a["backend"] != "reference"
        else warn(a["backend"])
    )
    row('backend="auto"', f"{name}, {escape(a['runs_in'])}")
    row("why", escape(a["reason"]))
    conv = report["conv_kernel"]
    row(
        "convolutions",
        bad(conv["problem"])
        if conv.get("problem")
        else escape(f"{conv['uses']} (PORTING_CONV_KERNEL={conv['setting']!r})"),
    )
    if report["advice"]:
        row("to do", escape("\n".join(f"- {line}" for line in report["advice"])))
    console.print(t)


# --------------------------------------------------------------------------- installing


def check_network(hosts=NETWORK_HOSTS, timeout: float = NETWORK_TIMEOUT) -> tuple[bool, list[str]]:
    """Open a TLS connection to each host within `timeout` seconds in all (DNS included).

    Returns (all reachable, one line per host). A TLS handshake, not just a TCP connect: a
    proxy or captive portal that accepts every connection is not the Julia servers. Runs in
    threads because name resolution has no timeout of its own.
    """
    import ssl

    results: dict[tuple[str, int], str] = {}
    deadline = time.monotonic() + timeout

    def attempt(host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                ctx = ssl.create_default_context()
                with ctx.wrap_socket(sock, server_hostname=host):
                    results[(host, port)] = "reachable"
        except ssl.SSLError as e:
            results[(host, port)] = f"unreachable (TLS handshake failed: {e.reason or e})"
        except OSError as e:
            results[(host, port)] = f"unreachable ({e.strerror or e})"

    threads = [threading.Thread(target=attempt, args=hp, daemon=True) for hp in hosts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    lines = [
        f"{h}:{port} {results.get((h, port), f'no answer within {timeout:g} s')}"
        for h, port in hosts
    ]
    return all(results.get(hp) == "reachable" for hp in hosts), lines


# Knet and its Julia bound go into the project's own juliapkg file (juliapkg's default target),
# read only by resolves of that project; porting/juliapkg.json (NNlib, NPZ, JSON) is found on
# sys.path. juliapkg.require_julia/add/resolve exist in every juliapkg juliacall 0.9.26+ allows.
_INSTALL_SCRIPT = f"""
import juliapkg
juliapkg.require_julia("~1.9")
juliapkg.add("Knet", "{KNET_UUID}", version="=1.4.10")
juliapkg.resolve()
print("porting: juliapkg resolved Julia", juliapkg.executable(), "and project", juliapkg.project())
"""


def install_environment(
    environ, explicit_julia: str | None, project: str | None, porting_root: str
) -> dict[str, str]:
    """The environment of the `--install-julia` subprocess: online, aimed at the project
    juliacall will use (juliapkg reads only its own, absolute, settings), and with the directory
    holding this `porting` on PYTHONPATH so that juliapkg finds `porting/juliapkg.json` even
    from a source checkout."""
    env = dict(environ)
    env["PYTHON_JULIAPKG_OFFLINE"] = "no"  # this is the one explicit download
    if explicit_julia:
        env.setdefault("PYTHON_JULIAPKG_EXE", explicit_julia)
    if project:  # the project discovery found from the user's setting (juliacall's order)
        env["PYTHON_JULIAPKG_PROJECT"] = os.path.abspath(os.path.expanduser(project))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (porting_root, env.get("PYTHONPATH")) if p)
    return env


def install_julia(julia: str | None = None, *, out=print) -> int:
    """Install Julia 1.9 + Knet 1.4.10 through juliapkg; raises PortingError (exit 2) up front
    when it cannot work (no juliacall, wrong pin, a Julia too new set explicitly, offline)."""
    from porting.bridge import clear_cache, plan_auto
    from porting.bridge.discovery import JULIACALL_PIN, dist_version, parse_version
    from porting.bridge.paths import juliapkg_json

    jc = dist_version("juliacall")
    if jc is None or dist_version("juliapkg") is None:
        raise PortingError(
            "--install-julia installs through juliapkg, which comes with juliacall, and "
            f"juliacall is not installed: pip install 'porting[julia]' (juliacall{JULIACALL_PIN}), "
            "then run `porting doctor --install-julia` again"
        )
    v = parse_version(jc)
    if v is None or not (0, 9, 26) <= v < (0, 9, 29):
        raise PortingError(
            f"juliacall {jc} is installed, but Knet 1.4.10 needs Julia <= 1.9, which only "
            f"juliacall{JULIACALL_PIN} runs (juliacall >= 0.9.29 needs Julia >= 1.10.3): "
            "pip install 'porting[julia]' to get a matching juliacall"
        )
    d = plan_auto(julia, probe=False).discovery
    if (
        d.julia is not None
        and d.julia.explicit
        and d.julia.version
        and d.julia.version[:2] > (1, 9)
    ):
        raise PortingError(
            f"{d.julia.setting} is Julia {d.julia.version_text}, and juliapkg would install Knet "
            "into it, but Knet 1.4.10 installs only on Julia <= 1.9: unset it to let juliapkg "
            "install Julia 1.9, or point it at a Julia 1.9"
        )
    ok, lines = check_network()
    if not ok:
        raise PortingError(
            "cannot reach the Julia servers, so nothing was installed ("
            + "; ".join(lines)
            + "). --install-julia downloads Julia 1.9 (about 150 MB) and Knet's packages; connect "
            "to the network and run it again, or install Julia 1.9 yourself (e.g. `juliaup add "
            "1.9`), set PYTHON_JULIACALL_EXE to it, and add Knet 1.4.10 and NNlib to its "
            "environment. Until then porting uses its NumPy reference backend."
        )
    out(f"porting: {JULIAPKG_JSON_NOTE}")
    out(
        f"porting: installing through juliapkg, as declared in {juliapkg_json()} (this can take many minutes)"
    )
    explicit = d.julia.path if d.julia is not None and d.julia.explicit else None
    project_set = any(
        os.environ.get(k) or sys._xoptions.get(x)
        for k, x in (
            ("PYTHON_JULIACALL_PROJECT", "juliacall-project"),
            ("PYTHON_JULIAPKG_PROJECT", "juliapkg-project"),
        )
    )
    env = install_environment(
        os.environ, explicit, d.project if project_set else None, str(juliapkg_json().parent.parent)
    )
    proc = subprocess.run([sys.executable, "-c", _INSTALL_SCRIPT], env=env)
    if proc.returncode != 0:
        out(
            f"porting: juliapkg failed ({proc.returncode}); its output is above. Fix what it says "
            "and run `porting doctor --install-julia` again"
        )
        return 1
    clear_cache()
    plan = plan_auto(julia, probe=True)
    if plan.backend != "julia":
        out(f"porting: installed, but backend 'auto' still picks {plan.backend!r}: {plan.reason}")
        return 1
    out(f"porting: done; backend 'auto' now picks 'julia': {plan.reason}")
    return 0


# --------------------------------------------------------------------------- entry point


def run(args) -> int:
    if getattr(args, "install_julia", False):
        return install_julia(getattr(args, "julia", None))
    report = collect(getattr(args, "julia", None), probe=not getattr(args, "no_probe", False))
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0 if report["ok"] else 1


def main(argv=None) -> int:
    """`python -m porting.commands.doctor` (the same as `porting doctor`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="porting doctor", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PortingError as e:
        print(f"porting doctor: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
