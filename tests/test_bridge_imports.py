"""Nothing in the bridge imports juliacall (or TensorFlow) unless a Julia backend is started.

Each check runs in a fresh interpreter and reads its `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("juliacall", "juliapkg", "tensorflow", "keras")


def run_fresh(code: str, tmp_path, **env) -> list[str]:
    script = tmp_path / "probe_imports.py"
    script.write_text(
        textwrap.dedent(code)
        + "\nimport json, sys\n"
        + f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    environ = dict(os.environ, PYTHONPATH=ROOT, **env)
    for key in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIAPKG_EXE"):
        environ.pop(key, None)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=environ,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bridge_discovery_resolve_worker_and_doctor_import_no_julia(tmp_path):
    loaded = run_fresh(
        """
        import numpy as np
        import porting, porting.bridge, porting.bridge.discovery, porting.bridge.worker
        import porting.bridge.juliacall_backend, porting.bridge.arrays, porting.bridge.paths
        from porting.bridge import discover, plan_auto, resolve_backend
        from porting.commands import doctor
        discover(); plan_auto()
        r = resolve_backend("auto")
        assert r.name == "reference", r
        from porting.knet import conv4
        y = conv4(np.ones((3, 3, 1, 2)), np.ones((5, 5, 1, 1)), backend="worker")
        assert y.shape == (3, 3, 2, 1) and y.backend == "reference"
        doctor.collect(probe=False)
        """,
        tmp_path,
        PATH=str(tmp_path),  # no julia on PATH
    )
    assert loaded == []


def test_julia_backend_request_without_julia_never_imports_juliacall(tmp_path):
    loaded = run_fresh(
        """
        import numpy as np
        from porting.errors import PortingError
        from porting.bridge.juliacall_backend import JuliacallBackend
        from porting.knet import conv4
        for backend in ("julia", "julia-nnlib"):
            try:
                conv4(np.ones((1, 1, 1, 1)), np.ones((2, 2, 1, 1)), backend=backend)
            except PortingError:
                pass
            else:
                raise SystemExit("expected a PortingError")
        try:
            JuliacallBackend().load()
        except PortingError:
            pass
        """,
        tmp_path,
        PATH=str(tmp_path),
    )
    assert loaded == []


def test_worker_does_not_rerun_the_callers_script(tmp_path):
    """The worker is a clean interpreter: a script without a __main__ guard is not re-executed
    in it (as multiprocessing's spawn would), so the user's TensorFlow import stays out of it."""
    marker = tmp_path / "ran.txt"
    loaded = run_fresh(
        f"""
        import os, numpy as np
        with open({str(marker)!r}, "a") as f:
            f.write(str(os.getpid()) + "\\n")
        from porting.bridge.worker import WorkerBackend
        w = WorkerBackend("reference")
        w.mat(np.ones((2, 2)), 1)
        w.close()
        """,
        tmp_path,
    )
    assert loaded == []
    assert len(marker.read_text().split()) == 1
