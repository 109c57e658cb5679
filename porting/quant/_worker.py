"""Run QKeras in a fresh interpreter: `python -m porting.quant._worker DIR`.

QKeras 0.9 needs `tf_keras` (Keras 2), selected by TF_USE_LEGACY_KERAS=1 before TensorFlow is
first imported; a process that imported TensorFlow with Keras 3 cannot switch. The parent
(`run`) writes `DIR/request.json` and `DIR/in.npz`, starts this module with the variable set,
and reads back `DIR/out.json` and `DIR/out.npz`: plain JSON and arrays, so the comparison and
diagnosis run in the parent with NumPy only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from porting import settings
from porting.errors import PortingError

PYTHON_ENV = "PORTING_QKERAS_PYTHON"


def _python(python: str | None) -> tuple[str, str]:
    if python is not None:
        source = "python="
        exe = python
    elif (from_env := settings.text(PYTHON_ENV)) is not None:
        source = f"{PYTHON_ENV}="
        exe = from_env
    else:
        return sys.executable, "this interpreter"
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise PortingError(
            f"{source}{exe}: not an executable file; expected a Python interpreter with qkeras installed"
        )
    return exe, f"{source}{exe}"


def run(request: dict, arrays: dict, *, python: str | None = None, timeout: float = 300):
    """Run one request in a fresh interpreter; return `(result dict, arrays dict)`."""
    exe, source = _python(python)
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = package_root + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    with tempfile.TemporaryDirectory(prefix="porting-qkeras-") as tmp:
        d = Path(tmp)
        (d / "request.json").write_text(json.dumps(request))
        np.savez(d / "in.npz", **arrays)
        try:
            proc = subprocess.run(
                [exe, "-m", "porting.quant._worker", str(d)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise PortingError(
                f"the QKeras worker ({source}) did not finish within {timeout:g} s"
            ) from None
        out = d / "out.json"
        if not out.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise RuntimeError(
                f"the QKeras worker ({source}) exited with {proc.returncode} and no answer:\n{tail}"
            )
        result = json.loads(out.read_text())
        if "error" in result:
            raise PortingError(f"{result['error']} (QKeras worker: {source})")
        with np.load(d / "out.npz", allow_pickle=False) as z:
            out_arrays = {k: z[k] for k in z.files}
    return result, out_arrays


# --------------------------------------------------------------------------- worker side


def _load(path: str):
    try:
        from qkeras.utils import load_qmodel
    except ImportError as e:
        from porting.quant._hint import install_hint

        raise _UserError(
            f"cannot import QKeras ({type(e).__name__}: {e}); install it with {install_hint()}"
        ) from None
    try:
        return load_qmodel(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any unreadable model is the user's file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _UserError(
            f"{path}: cannot load as a QKeras model ({type(e).__name__}: {first})"
        ) from None


class _UserError(Exception):
    pass


def _main(d: Path) -> dict:
    req = json.loads((d / "request.json").read_text())
    with np.load(d / "in.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    model = _load(req["model"])
    from porting.quant import _capture

    out_arrays: dict[str, np.ndarray] = {}
    if req["task"] == "weights":
        layers = []
        for layer in model.layers:
            if type(layer).__name__ not in ("QConv2D", "QDense"):
                continue
            w = _capture.weights(layer)
            layers.append(
                {
                    "layer": layer.name,
                    "class": type(layer).__name__,
                    "names": w["names"],
                    "quantizers": w["quantizers"],
                }
            )
            for n in w["names"]:
                out_arrays[f"{layer.name}/float/{n}"] = w["float"][n]
                out_arrays[f"{layer.name}/quantized/{n}"] = w["quantized"][n]
        result = {"layers": layers, "versions": _capture.versions()}
    elif req["task"] == "capture":
        names = [layer.name for layer in model.layers]
        if req["layer"] not in names:
            raise _UserError(f"the model has no layer {req['layer']!r}; its layers are {names}")
        cap = _capture.capture(model.get_layer(req["layer"]), arrays["x"])
        for key in ("x", "y", "y_linear"):
            out_arrays[key] = cap[key]
        for n in cap["names"]:
            out_arrays[f"float/{n}"] = cap["float"][n]
            out_arrays[f"quantized/{n}"] = cap["quantized"][n]
        result = {
            k: cap[k] for k in ("layer", "class", "config", "names", "quantizers", "versions")
        }
    else:
        raise _UserError(f"unknown task {req['task']!r}")
    np.savez(d / "out.npz", **out_arrays)  # type: ignore[arg-type]
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    d = Path(argv[0])
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        result = _main(d)
    except (_UserError, PortingError) as e:
        result = {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the parent with the traceback's tail
        tb = traceback.format_exc().strip().splitlines()[-6:]
        result = {"error": f"QKeras worker failed: {type(e).__name__}: {e}\n" + "\n".join(tb)}
    (d / "out.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
