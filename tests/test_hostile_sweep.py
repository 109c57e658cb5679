"""A hostile sweep over every CLI command and the main public functions.

The contract checked for every case: a user error gives exactly one `PortingError` (CLI: exit
2 and one line on stderr naming the value), never another exception or a traceback, never a
hang, never a silently wrong answer, nothing written on failure; exit 3 (internal error) never
comes from input alone. One parametrised test per class of input; every fixture is tiny and
built here.
"""

from __future__ import annotations

import contextlib
import io as pyio
import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import porting
from porting import cli, knet, layout
from porting import io as pio
from porting.errors import PortingError

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 20  # seconds any single call may take before it counts as a hang


class Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float = TIMEOUT):
    def _alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn, *args, **kwargs):
    """('ok', value) or ('error', PortingError); any other exception or a hang fails (an
    AssertionError only from porting.testing, whose answer it is)."""
    try:
        with _deadline():
            return "ok", fn(*args, **kwargs)
    except AssertionError as e:
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        if "porting/testing" not in tb.tb_frame.f_code.co_filename.replace(os.sep, "/"):
            raise
        return "ok", e
    except PortingError as e:
        msg = str(e)
        assert msg.strip(), "a PortingError with an empty message"
        assert "Traceback" not in msg, msg
        return "error", e
    except Hang as e:
        pytest.fail(f"hang: {e}")
    except Exception as e:  # noqa: BLE001 - the contract: nothing but PortingError
        pytest.fail(f"{type(e).__name__} instead of PortingError: {e}"[:500])


def refused(fn, *args, **kwargs) -> str:
    kind, value = outcome(fn, *args, **kwargs)
    assert kind == "error", f"accepted silently, returned {type(value).__name__}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Arrays

W = np.random.default_rng(0).standard_normal((3, 3, 2, 4)).astype(np.float32)
X = np.random.default_rng(1).standard_normal((6, 5, 2, 2)).astype(np.float32)
X4 = np.random.default_rng(2).standard_normal((6, 5, 4, 2)).astype(np.float32)  # deconv4's x
R12 = np.arange(12, dtype=np.float32).reshape(4, 3)  # equal to the _bad_dtype arrays' values


def _bad_dtype(kind: str, shape):
    n = int(np.prod(shape))
    base = np.arange(n).reshape(shape)
    if kind == "int":
        return base.astype(np.int32)
    if kind == "bool":
        return (base % 2).astype(bool)
    if kind == "complex":
        return base.astype(np.complex64)
    if kind == "object":
        return base.astype(object)
    if kind == "str":
        return base.astype(str)
    if kind == "bytes":
        return base.astype("S3")
    if kind == "structured":
        return np.zeros(shape, dtype=[("re", "f4"), ("im", "f4")])
    if kind == "datetime":
        return base.astype("datetime64[s]")
    if kind == "longdouble":
        return base.astype(np.longdouble)
    if kind == "bfloat16":
        ml = pytest.importorskip("ml_dtypes", reason="bfloat16 comes from ml_dtypes")
        return base.astype(ml.bfloat16)
    if kind == "float16":
        return base.astype(np.float16)
    raise AssertionError(kind)


BAD_DTYPES = [
    "int",
    "bool",
    "complex",
    "object",
    "str",
    "bytes",
    "structured",
    "datetime",
    "longdouble",
    "bfloat16",
    "float16",
]

# (name, callable taking one array standing in for the operand under test, that operand's shape)
ARRAY_CALLS = [
    ("conv4.w", lambda a: knet.conv4(a, X, backend="reference"), W.shape),
    ("conv4.x", lambda a: knet.conv4(W, a, backend="reference"), X.shape),
    ("deconv4.w", lambda a: knet.deconv4(a, X[:, :, :, :], backend="reference"), (3, 3, 4, 2)),
    ("pool.x", lambda a: knet.pool(a, backend="reference"), X.shape),
    ("mat.x", lambda a: knet.mat(a, backend="reference"), X.shape),
    ("compare.expected", lambda a: porting.compare(a, R12), (4, 3)),
    ("compare.actual", lambda a: porting.compare(R12, a), (4, 3)),
    (
        "compare.magnitude",
        lambda a: porting.compare(np.ones((4, 3)), np.ones((4, 3)), magnitude=a),
        (4, 3),
    ),
    ("diagnose.expected", lambda a: porting.diagnose(a, R12), (4, 3)),
    ("diagnose.actual", lambda a: porting.diagnose(R12, a), (4, 3)),
    ("activations_to_tf", lambda a: layout.activations_to_tf(a), X.shape),
    ("activations_from_tf", lambda a: layout.activations_from_tf(a), X.shape),
    ("kernel_to_tf", lambda a: layout.kernel_to_tf(a), W.shape),
    ("kernel_from_tf", lambda a: layout.kernel_from_tf(a), W.shape),
    ("bias_to_tf", lambda a: layout.bias_to_tf(a), (1, 1, 4, 1)),
    ("bias_from_tf", lambda a: layout.bias_from_tf(a), (4,)),
    ("dense_to_tf", lambda a: layout.dense_to_tf(a), (3, 4)),
    ("dense_from_tf", lambda a: layout.dense_from_tf(a), (4, 3)),
    (
        "assert_ported_close",
        lambda a: porting.testing.assert_ported_close(a, R12),
        (4, 3),
    ),
    ("compare.both", lambda a: porting.compare(a, a), (4, 3)),
    ("diagnose.both", lambda a: porting.diagnose(a, a), (4, 3)),
    ("rnn.unpack", lambda a: _unpack(a), None),
    ("rnn.forward.x", lambda a: _rnn_forward(a), (3, 2, 4)),
    ("Dense.w", lambda a: porting.model.Dense(a), (3, 4)),
    ("Conv.w", lambda a: porting.model.Conv(a), W.shape),
]
ARRAY_IDS = [c[0] for c in ARRAY_CALLS]

_SPEC = None


def _spec():
    global _SPEC
    if _SPEC is None:
        _SPEC = porting.rnn.RNNSpec(3, 2, "relu")
    return _SPEC


def _unpack(a):
    return porting.rnn.unpack(_spec(), a)


def _rnn_forward(x):
    s = _spec()
    w = porting.rnn.unpack(s, np.linspace(-1, 1, s.param_length).astype(np.float32))
    return porting.rnn.forward(w, x)


def _shape_for(name, shape):
    if shape is None:  # the RNN's packed vector
        return (_spec().param_length,)
    return shape


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("call", ARRAY_CALLS, ids=ARRAY_IDS)
def test_wrong_dtypes_are_refused(call, dtype):
    """A non-float array (or an unsupported float) is one PortingError naming the dtype;
    float16 and bfloat16 may be accepted only where the function documents them (compare,
    diagnose), never converted silently into a wrong answer."""
    name, fn, shape = call
    a = _bad_dtype(dtype, _shape_for(name, shape))
    kind, value = outcome(fn, a)
    lenient = name.startswith(("compare", "diagnose", "assert_ported")) and dtype in (
        "float16",
        "bfloat16",
        "int",
        "longdouble",
    )
    if kind == "ok":
        assert lenient, f"{name} accepted a {a.dtype} array"
    else:
        msg = str(value)
        assert str(a.dtype) in msg or "dtype" in msg or "type" in msg, msg


SHAPES = {
    "0-d": lambda: np.float32(1.5).reshape(()),
    "0-size": lambda: np.zeros((0, 3), np.float32),
    "0-size-4d": lambda: np.zeros((3, 3, 0, 2), np.float32),
    "rank1": lambda: np.ones(5, np.float32),
    "rank7": lambda: np.ones((1,) * 7, np.float32),
    "huge-broadcast": lambda: np.broadcast_to(np.float32(1), (1 << 20, 1 << 20, 2, 2)),
    "ragged-list": lambda: [[1.0, 2.0], [3.0]],
    "None": lambda: None,
    "string": lambda: "w.npy",
    "dict": lambda: {"w": 1},
    "scalar-float": lambda: 1.0,
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("call", ARRAY_CALLS, ids=ARRAY_IDS)
def test_wrong_ranks_and_sizes(call, shape):
    """0-d, 0-size, wrong rank, a 2**40-element broadcast view, ragged lists, non-arrays: a
    PortingError or, for the ranks a function supports, an answer; never a crash or a hang."""
    name, fn, _ = call
    a = SHAPES[shape]()
    kind, value = outcome(fn, a)
    # an empty comparison is vacuous but not wrong; a huge broadcast view may be accepted
    # where nothing is allocated (a reshape, a layer holding it): it must never crash
    must_refuse = {"ragged-list", "None", "string", "dict"}
    if not name.startswith(("compare", "assert_ported")):
        must_refuse |= {"0-size", "0-size-4d"}
    if name == "compare.magnitude":
        must_refuse.discard("None")  # the default
    if shape in must_refuse:
        assert kind == "error", f"{name} accepted {shape}"


def _strided(a):
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    v = big[tuple(slice(None, None, 2) for _ in a.shape)]
    v[...] = a
    return v


def _negative(a):
    flipped = np.ascontiguousarray(a[::-1])
    return flipped[::-1]


def _readonly(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def _bigendian(a):
    return a.astype(a.dtype.newbyteorder(">"))


VIEWS = {
    "strided": _strided,
    "negative-stride": _negative,
    "readonly": _readonly,
    "fortran": np.asfortranarray,
    "big-endian": _bigendian,
}

GOOD_CALLS = [
    ("conv4", lambda w, x: knet.conv4(w, x, padding=1, backend="reference")),
    ("deconv4", lambda w, x: knet.deconv4(w, x, stride=2, backend="reference")),
    ("pool", lambda w, x: knet.pool(x, backend="reference")),
    ("mat", lambda w, x: knet.mat(x, backend="reference")),
    ("kernel_to_tf", lambda w, x: layout.kernel_to_tf(w)),
    ("activations_to_tf", lambda w, x: layout.activations_to_tf(x)),
]


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("call", GOOD_CALLS, ids=[c[0] for c in GOOD_CALLS])
def test_views_give_the_same_answer(call, view):
    """Strided, negative-stride, read-only, Fortran-ordered and big-endian arrays holding the
    same values give the same answer as plain C arrays (or a PortingError, never a different
    number)."""
    name, fn = call
    x = X4 if name == "deconv4" else X
    with _deadline():
        want = fn(W, x)
    kind, got = outcome(fn, VIEWS[view](W), VIEWS[view](x))
    if kind == "ok":
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    else:
        assert view == "big-endian" and "big-endian" in str(got), str(got)


def test_nonfinite_values_are_never_called_agreement():
    """NaN or Inf in either side never yields `ok` when the sides differ there, and the JSON
    form stays strict JSON."""
    for e, a in [
        ([np.nan, 1.0], [1.0, 1.0]),
        ([1.0, 1.0], [np.nan, 1.0]),
        ([np.inf, 1.0], [-np.inf, 1.0]),
        ([np.inf, 1.0], [1e30, 1.0]),
        ([1.0, 1.0], [np.inf, 1.0]),
    ]:
        kind, c = outcome(porting.compare, np.float32(e), np.float32(a))
        if kind == "ok":
            assert not c.ok, (e, a)
            text = json.dumps(c.to_dict()) if hasattr(c, "to_dict") else None
            if text is not None:
                json.loads(text, parse_constant=lambda s: pytest.fail(f"bare {s} in JSON"))
    for e in ([np.nan, np.nan], [0.0, 0.0]):
        kind, d = outcome(porting.diagnose, np.float32(e), np.float32(e))
        if kind == "ok":
            assert "float16" not in str(d).lower() and "bfloat16" not in str(d).lower()


BAD_KEYWORDS = {
    "None": None,
    "list-empty": [],
    "string": "1",
    "float": 1.5,
    "float-int": 2.0,
    "True": True,
    "False": False,
    "nan": float("nan"),
    "inf": float("inf"),
    "negative": -1,
    "googol": 10**100,
    "5000-digits": 10**5000,
    "googol-list": [10**100, 1],
    "dict": {"a": 1},
    "array-2d": np.ones((2, 2), int),
    "complex": 1 + 0j,
    "np.bool_": np.bool_(True),
    "np.float64": np.float64(1.0),
    "bytes": b"1",
    "float-list": [2.5, 1],
    "string-list": ["3", "3"],
    "bool-list": [True, 1],
}


def _kw_calls():
    return [
        ("conv4.padding", lambda v: knet.conv4(W, X, padding=v, backend="reference")),
        ("conv4.stride", lambda v: knet.conv4(W, X, stride=v, backend="reference")),
        ("conv4.dilation", lambda v: knet.conv4(W, X, dilation=v, backend="reference")),
        ("conv4.mode", lambda v: knet.conv4(W, X, mode=v, backend="reference")),
        ("conv4.alpha", lambda v: knet.conv4(W, X, alpha=v, backend="reference")),
        ("conv4.backend", lambda v: knet.conv4(W, X, backend=v)),
        ("deconv4.stride", lambda v: knet.deconv4(W, X4, stride=v, backend="reference")),
        ("pool.window", lambda v: knet.pool(X, window=v, backend="reference")),
        ("pool.stride", lambda v: knet.pool(X, stride=v, backend="reference")),
        ("pool.padding", lambda v: knet.pool(X, padding=v, backend="reference")),
        ("pool.mode", lambda v: knet.pool(X, mode=v, backend="reference")),
        ("pool.alpha", lambda v: knet.pool(X, alpha=v, backend="reference")),
        ("mat.dims", lambda v: knet.mat(X, dims=v, backend="reference")),
        ("compare.k", lambda v: porting.compare(np.ones(3), np.ones(3), k=v)),
        ("compare.precision", lambda v: porting.compare(np.ones(3), np.ones(3), precision=v)),
        ("diagnose.k", lambda v: porting.diagnose(np.ones((2, 3)), np.ones((2, 3)), k=v)),
        ("layout.spatial", lambda v: layout.activations_to_tf(X, spatial=v)),
        ("kernel_to_tf.mode", lambda v: layout.kernel_to_tf(W, mode=v)),
        ("bias_from_tf.ndims", lambda v: layout.bias_from_tf(np.ones(4, np.float32), ndims=v)),
        (
            "assert_ported_close.k",
            lambda v: porting.testing.assert_ported_close(np.ones(3), np.ones(3), k=v),
        ),
        ("RNNSpec.hidden", lambda v: porting.rnn.RNNSpec(3, v)),
        ("RNNSpec.layers", lambda v: porting.rnn.RNNSpec(3, 2, num_layers=v)),
        ("RNNSpec.bidirectional", lambda v: porting.rnn.RNNSpec(3, 2, bidirectional=v)),
        ("RNNSpec.dropout", lambda v: porting.rnn.RNNSpec(3, 2, dropout=v)),
        ("Conv.padding", lambda v: porting.model.Conv(W, padding=v)),
        ("Conv.alpha", lambda v: porting.model.Conv(W, alpha=v)),
        ("Dense.dropout", lambda v: porting.model.Dense(np.ones((2, 3), np.float32), dropout=v)),
        (
            "KnetModel.input_size",
            lambda v: porting.model.KnetModel(
                [porting.model.Dense(np.ones((2, 3), np.float32))], v
            ),
        ),
        ("io.load.max_bytes", lambda v: pio.load(_tiny_npy(), max_bytes=v)),
        ("io.load.max_objects", lambda v: pio.load(_tiny_npy(), max_objects=v)),
        ("io.load.format", lambda v: pio.load(_tiny_npy(), format=v)),
        ("io.load.path", lambda v: pio.load(v)),
    ]


_TINY: list[str] = []


def _tiny_npy() -> str:
    if not _TINY:
        import tempfile

        d = tempfile.mkdtemp(prefix="porting-sweep-")
        p = os.path.join(d, "w.npy")
        np.save(p, np.ones((2, 2), np.float32))
        _TINY.append(p)
    return _TINY[0]


# keyword values a function may legitimately accept (then it must answer as the plain value)
ACCEPTABLE = {"float-int", "np.float64", "negative"}
# values that are never a valid geometry/count/flag
NEVER = {
    "None",
    "list-empty",
    "string",
    "True",
    "False",
    "nan",
    "inf",
    "googol",
    "dict",
    "complex",
    "np.bool_",
    "bytes",
    "googol-list",
    "array-2d",
}
NONE_OK = {
    "pool.stride",
    "compare.precision",
    "compare.k",
    "mat.dims",
    "diagnose.k",
    "assert_ported_close.k",
    "KnetModel.input_size",
    "io.load.max_bytes",
    "io.load.max_objects",
    "io.load.format",
}
BOOL_OK = {"RNNSpec.bidirectional", "np.bool_"}


@pytest.mark.parametrize("value", list(BAD_KEYWORDS))
@pytest.mark.parametrize("call", _kw_calls(), ids=[c[0] for c in _kw_calls()])
def test_bogus_keyword_types(call, value):
    """None, lists, strings, floats, bools, NumPy scalars, 10**100, NaN: one PortingError
    naming the value, or (for a value the keyword means) an answer; never a crash, a hang or a
    bool taken as an integer."""
    name, fn = call
    v = BAD_KEYWORDS[value]
    kind, got = outcome(fn, v)
    if kind == "ok":
        if value == "None":
            assert name in NONE_OK, f"{name}=None accepted"
        elif value in ("True", "False", "np.bool_"):
            assert name in BOOL_OK, f"{name}={value} accepted"
        elif value in ("float-list", "string-list", "bool-list"):
            pytest.fail(f"{name}={v!r} accepted")
        elif value in ("float", "nan", "inf", "complex"):
            assert name.endswith(("alpha", "dropout", "precision")) and value == "float", (
                f"{name}={v!r} accepted"
            )
        elif value in ("string", "bytes"):
            # a string is a backend, precision, format, spatial, path or a size ("1GB", "1")
            assert name.endswith(
                ("backend", "precision", "format", "spatial", "max_bytes", "max_objects", "path")
            ), f"{name}={v!r} accepted"
        else:
            big_ok = name.endswith(("alpha", "max_bytes", "max_objects"))  # finite / a bound
            assert value not in ("googol", "5000-digits") or big_ok, f"{name}={value} accepted"
            assert value not in ("googol-list", "dict", "list-empty", "array-2d"), (
                f"{name}={v!r} accepted"
            )
    else:
        msg = str(got)
        assert "\n" not in msg.strip() or len(msg) < 2000


# ---------------------------------------------------------------------------------------------
# Files


def _npy_bytes(a) -> bytes:
    buf = pyio.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _make_file(kind: str, d: Path) -> Path:
    p = d / "w.npy"
    good = _npy_bytes(np.ones((3, 3), np.float32))
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated-npy":
        p.write_bytes(good[:-5])
    elif kind == "header-only":
        p.write_bytes(good[:20])
    elif kind == "huge-header-shape":
        hdr = good.replace(b"(3, 3)", b"(99999999999, 99999999999)".ljust(6))
        p.write_bytes(hdr)
    elif kind == "negative-header-shape":
        p.write_bytes(good.replace(b"(3, 3), ", b"(-3, 3),"))
    elif kind == "object-npy":
        p.write_bytes(_npy_bytes(np.array([{"a": 1}], dtype=object)))
    elif kind == "not-npy-text":
        p.write_bytes(b"hello, this is not an array\n")
    elif kind == "pickle":
        import pickle

        p.write_bytes(pickle.dumps([1, 2, 3]))
    elif kind == "complex-npy":
        p.write_bytes(_npy_bytes(np.ones(3, np.complex64)))
    elif kind == "string-npy":
        p.write_bytes(_npy_bytes(np.array(["a", "b"])))
    elif kind == "structured-npy":
        p.write_bytes(_npy_bytes(np.zeros(3, [("a", "f4"), ("b", "i4")])))
    elif kind == "directory":
        p.mkdir()
    elif kind == "symlink-loop":
        os.symlink(d / "w2.npy", p)
        os.symlink(p, d / "w2.npy")
    elif kind == "dangling-symlink":
        os.symlink(d / "absent.npy", p)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "wrong-extension-npz-is-npy":
        p = d / "w.npz"
        p.write_bytes(good)
    elif kind == "wrong-extension-npy-is-zip":
        np.savez(d / "z.npz", a=np.ones(2, np.float32))
        (d / "z.npz").rename(p)
    elif kind == "npz-traversal":
        p = d / "w.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("../../evil.npy", good)
            z.writestr("/abs/evil.npy", good)
    elif kind == "npz-not-npy-member":
        p = d / "w.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.npy", b"GARBAGE" * 10)
    elif kind == "npz-bomb":
        p = d / "w.npz"
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("a.npy", _npy_bytes(np.zeros(4_000_000, np.float32)))  # 16 MB -> ~16 kB
    elif kind == "npz-truncated":
        p = d / "w.npz"
        np.savez(p, a=np.ones(100, np.float32))
        p.write_bytes(p.read_bytes()[:-40])
    elif kind == "npz-empty-zip":
        p = d / "w.npz"
        with zipfile.ZipFile(p, "w"):
            pass
    elif kind == "npz-duplicate-members":
        p = d / "w.npz"
        with pytest.warns(UserWarning), zipfile.ZipFile(p, "w") as z:
            z.writestr("a.npy", good)
            z.writestr("a.npy", _npy_bytes(np.zeros(2, np.float64)))
    elif kind == "hdf5-garbage":
        p = d / "w.jld2"
        p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    elif kind == "mat-garbage":
        p = d / "w.mat"
        p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 150)
    elif kind == "safetensors-garbage":
        p = d / "w.safetensors"
        p.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    elif kind == "safetensors-bad-json":
        p = d / "w.safetensors"
        head = b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}'
        p.write_bytes(len(head).to_bytes(8, "little") + head + b"\x00" * 4)
    elif kind == "symlink-to-device":
        os.symlink("/dev/zero", p)
    elif kind == "socket":
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(p))
        sock.close()
    elif kind == "long-name":
        p = d / ("w" * 300 + ".npy")
    elif kind == "missing":
        p = d / "absent.npy"
    elif kind == "nul-in-name":
        return Path(str(d / "w") + "\x00.npy")
    elif kind == "unreadable":
        p.write_bytes(good)
        p.chmod(0)
    else:
        raise AssertionError(kind)
    return p


FILE_KINDS = [
    "empty",
    "truncated-npy",
    "header-only",
    "huge-header-shape",
    "negative-header-shape",
    "object-npy",
    "not-npy-text",
    "pickle",
    "complex-npy",
    "string-npy",
    "structured-npy",
    "directory",
    "symlink-loop",
    "dangling-symlink",
    "fifo",
    "wrong-extension-npz-is-npy",
    "wrong-extension-npy-is-zip",
    "npz-traversal",
    "npz-not-npy-member",
    "npz-bomb",
    "npz-truncated",
    "npz-empty-zip",
    "npz-duplicate-members",
    "hdf5-garbage",
    "mat-garbage",
    "safetensors-garbage",
    "safetensors-bad-json",
    "symlink-to-device",
    "socket",
    "long-name",
    "missing",
    "nul-in-name",
    "unreadable",
]
MAY_LOAD = {
    "wrong-extension-npz-is-npy",
    "wrong-extension-npy-is-zip",
    "npz-traversal",
    "npz-empty-zip",
    "npz-duplicate-members",
    "complex-npy",
    "unreadable",
}


def _snapshot(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")} if d.exists() else set()


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_hostile_files_through_load(tmp_path, kind):
    """porting.io.load on every kind of broken, hostile or odd file: one PortingError (or a
    correct load of what is really there), within the deadline, nothing written anywhere."""
    d = tmp_path / "in"
    d.mkdir()
    p = _make_file(kind, d)
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    before = _snapshot(tmp_path)
    kind_, value = outcome(pio.load, p, max_bytes=8_000_000)
    assert _snapshot(tmp_path) == before, "load wrote files"
    if kind_ == "ok":
        assert kind in MAY_LOAD, f"{kind} loaded: {value!r}"[:300]
        for v in value.values():
            if isinstance(v, np.ndarray):
                assert v.dtype.kind in "fc", v.dtype  # complex is numeric (MAT, JLD2 hold it)
    else:
        msg = str(value)
        assert "allow_pickle" not in msg, msg
        assert len(msg) < 1000


# ---------------------------------------------------------------------------------------------
# Export JSON


def _export(tmp: Path, mutate) -> Path:
    doc = json.loads((ROOT / "porting/examples/lenet.json").read_text())
    doc = mutate(doc)
    (tmp / "lenet.npz").write_bytes((ROOT / "porting/examples/lenet.npz").read_bytes())
    text = doc if isinstance(doc, str) else json.dumps(doc)
    (tmp / "lenet.json").write_text(text)
    return tmp / "lenet.json"


def _set(path, value):
    def mutate(doc):
        if not path:
            return value
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return doc

    return mutate


def _delete(path):
    def mutate(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
        return doc

    return mutate


JSON_CASES = {
    "top-list": _set((), [1, 2]),
    "top-string": _set((), "x"),
    "top-null": _set((), None),
    "not-json": lambda d: "{not json",
    "deep-nesting": lambda d: "[" * 100000 + "]" * 100000,
    "huge-int": lambda d: '{"format": "porting-knet-export", "version": ' + "9" * 5000 + "}",
    "format-wrong": _set(("format",), "other"),
    "format-list": _set(("format",), ["porting-knet-export"]),
    "version-string": _set(("version",), "1"),
    "version-bool": _set(("version",), True),
    "version-99": _set(("version",), 99),
    "name-list": _set(("name",), ["x"]),
    "npz-list": _set(("npz",), ["lenet.npz"]),
    "npz-traversal": _set(("npz",), "../../../../etc/passwd"),
    "npz-absolute": _set(("npz",), "/etc/passwd"),
    "npz-directory": _set(("npz",), "."),
    "input-size-string": _set(("input_size",), "28,28,1"),
    "input-size-floats": _set(("input_size",), [28.5, 28, 1]),
    "input-size-bools": _set(("input_size",), [True, 28, 1]),
    "input-size-negative": _set(("input_size",), [-28, 28, 1]),
    "input-size-huge": _set(("input_size",), [10**12, 10**12, 1]),
    "input-size-nan": lambda d: json.dumps(d).replace(
        '"input_size": [28, 28, 1]', '"input_size": [NaN, 28, 1]'
    ),
    "layers-missing": _delete(("layers",)),
    "layers-dict": _set(("layers",), {"a": 1}),
    "layers-empty": _set(("layers",), []),
    "layer-int": _set(("layers", 0), 5),
    "layer-kind-missing": _delete(("layers", 0, "kind")),
    "layer-kind-unknown": _set(("layers", 0, "kind"), "transformer"),
    "layer-kind-list": _set(("layers", 0, "kind"), ["conv"]),
    "layer-name-dup": _set(("layers", 1, "name"), "conv1"),
    "layer-name-int": _set(("layers", 1, "name"), 7),
    "params-list": _set(("layers", 0, "params"), [1]),
    "param-key-missing": _set(("layers", 0, "params", "w", "key"), "nope.w"),
    "param-key-int": _set(("layers", 0, "params", "w", "key"), 3),
    "param-size-wrong": _set(("layers", 0, "params", "w", "size"), [5, 5, 1, 21]),
    "param-size-string": _set(("layers", 0, "params", "w", "size"), "5,5,1,20"),
    "param-eltype-wrong": _set(("layers", 0, "params", "w", "eltype"), "Int64"),
    "param-null": _set(("layers", 0, "params", "w"), None),
    "activation-unknown": _set(("layers", 0, "activation"), "gelu-ish"),
    "activation-int": _set(("layers", 0, "activation"), 1),
    "conv-padding-string": _set(("layers", 0, "conv", "padding"), "1"),
    "conv-padding-float": _set(("layers", 0, "conv", "padding"), 1.5),
    "conv-padding-bool": _set(("layers", 0, "conv", "padding"), True),
    "conv-padding-huge": _set(("layers", 0, "conv", "padding"), 10**30),
    "conv-stride-zero": _set(("layers", 0, "conv", "stride"), 0),
    "conv-mode-true": _set(("layers", 0, "conv", "mode"), True),
    "conv-mode-2": _set(("layers", 0, "conv", "mode"), 2),
    "conv-list": _set(("layers", 0, "conv"), [0, 1]),
    "conv-alpha-nan": lambda d: json.dumps(_set(("layers", 0, "conv", "alpha"), 1.0)(d)).replace(
        '"alpha": 1.0', '"alpha": NaN'
    ),
    "conv-alpha-inf": lambda d: json.dumps(_set(("layers", 0, "conv", "alpha"), 1.0)(d)).replace(
        '"alpha": 1.0', '"alpha": Infinity'
    ),
    "conv-alpha-string": _set(("layers", 0, "conv", "alpha"), "2"),
    "pool-window-zero": _set(("layers", 0, "pool", "window"), 0),
    "pool-window-list3": _set(("layers", 0, "pool", "window"), [2, 2, 2]),
    "pool-mode-7": _set(("layers", 0, "pool", "mode"), 7),
    "pool-string": _set(("layers", 0, "pool"), "max"),
    "order-unknown": _set(("layers", 0, "order"), "sideways"),
    "dropout-2": _set(("layers", 0, "dropout"), 2.0),
    "dropout-string": _set(("layers", 0, "dropout"), "0.5"),
    "dropout-nan": lambda d: json.dumps(d).replace('"dropout": 0.0', '"dropout": NaN', 1),
    "dense-w-shape-mismatch": _set(("layers", 2, "params", "w", "key"), "dense2.w"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_export_json_wrong_at_every_level(tmp_path, case):
    """load_export on an export JSON wrong at every level (document, layers, a layer, its
    params, geometry, numbers): one PortingError naming what is wrong, never a model."""
    p = _export(tmp_path, JSON_CASES[case])
    kind, value = outcome(porting.model.load_export, p)
    if kind == "ok" and case not in ("name-list", "layer-name-int"):
        pytest.fail(f"{case}: accepted")
    if kind == "error":
        assert len(str(value)) < 2000


# ---------------------------------------------------------------------------------------------
# The CLI, in process


def run_cli(argv, cwd: Path):
    out, err = pyio.StringIO(), pyio.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline():
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 2
    except Hang:
        pytest.fail(f"porting {' '.join(map(str, argv))}: hang")
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _cli_fixture(d: Path):
    np.save(d / "w.npy", np.asfortranarray(W))
    np.save(d / "x.npy", np.asfortranarray(X))
    np.save(d / "y.npy", np.ones((4, 3, 4, 2), np.float32))
    np.save(d / "yi.npy", np.ones((4, 3, 4, 2), np.int32))
    np.save(d / "yc.npy", np.ones((4, 3, 4, 2), np.complex64))
    np.save(d / "y0.npy", np.ones((0, 3), np.float32))
    np.save(d / "yld.npy", np.ones((4, 3), np.longdouble))
    np.save(d / "ynan.npy", np.full((4, 3), np.nan, np.float32))
    (d / "bad.npy").write_bytes(b"not an array at all")
    (d / "dir.npy").mkdir()
    (d / "bad.json").write_text('{"format": "porting-knet-export", "version": 1, "layers": 3}')


CLI_CASES = {
    # verify-conv
    "vc-int-w": ["verify-conv", "--w", "yi.npy", "--x", "x.npy"],
    "vc-complex-x": ["verify-conv", "--w", "w.npy", "--x", "yc.npy"],
    "vc-missing-x": ["verify-conv", "--w", "w.npy"],
    "vc-bad-file": ["verify-conv", "--w", "bad.npy", "--x", "x.npy"],
    "vc-dir": ["verify-conv", "--w", "dir.npy", "--x", "x.npy"],
    "vc-absent": ["verify-conv", "--w", "nope.npy", "--x", "x.npy"],
    "vc-padding-text": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "one"],
    "vc-padding-neg": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "-1"],
    "vc-padding-huge": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "9" * 5000],
    "vc-padding-3": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "1,1,1"],
    "vc-padding-empty": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", ","],
    "vc-padding-underscore": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "1_0"],
    "vc-padding-arabic-digit": [
        "verify-conv",
        "--w",
        "w.npy",
        "--x",
        "x.npy",
        "--padding",
        "\u0663",
    ],
    "vc-padding-hex": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "0x1"],
    "vc-padding-trailing-comma": [
        "verify-conv",
        "--w",
        "w.npy",
        "--x",
        "x.npy",
        "--padding",
        "1,1,",
    ],
    "dg-k-underscore": ["diagnose", "y.npy", "y.npy", "--k", "1_000"],
    "vc-stride-zero": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--stride", "0"],
    "vc-stride-float": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--stride", "1.5"],
    "vc-dilation-huge": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--dilation", "100000"],
    "vc-alpha-nan": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--alpha", "nan"],
    "vc-alpha-inf": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--alpha", "-inf"],
    "vc-alpha-text": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--alpha", "two"],
    "vc-alpha-huge": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--alpha", "1e400"],
    "vc-knet-bogus": ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--knet", "cuda"],
    "vc-json-bad": ["verify-conv", "--w", "bad.npy", "--x", "x.npy", "--json"],
    "vc-channel-mismatch": ["verify-conv", "--w", "y.npy", "--x", "x.npy"],
    "vc-w-is-json": ["verify-conv", "--w", "bad.json", "--x", "x.npy"],
    "vc-long-name": ["verify-conv", "--w", "w" * 5000 + ".npy", "--x", "x.npy"],
    # diagnose
    "dg-int": ["diagnose", "yi.npy", "y.npy"],
    "dg-complex": ["diagnose", "yc.npy", "y.npy"],
    "dg-empty": ["diagnose", "y0.npy", "y0.npy"],
    "dg-longdouble": ["diagnose", "yld.npy", "yld.npy"],
    "dg-shape-mismatch": ["diagnose", "y.npy", "w.npy"],
    "dg-k-huge": ["diagnose", "y.npy", "y.npy", "--k", "9" * 5000],
    "dg-k-zero": ["diagnose", "y.npy", "y.npy", "--k", "0"],
    "dg-k-neg": ["diagnose", "y.npy", "y.npy", "--k", "-3"],
    "dg-k-float": ["diagnose", "y.npy", "y.npy", "--k", "2.5"],
    "dg-magnitude-shape": ["diagnose", "y.npy", "y.npy", "--magnitude", "w.npy"],
    "dg-magnitude-bad": ["diagnose", "y.npy", "y.npy", "--magnitude", "bad.npy"],
    "dg-w-without-x": ["diagnose", "y.npy", "y.npy", "--w", "w.npy"],
    "dg-w-x-wrong-output": ["diagnose", "y.npy", "y.npy", "--w", "w.npy", "--x", "x.npy"],
    "dg-bias-bad": [
        "diagnose",
        "y.npy",
        "y.npy",
        "--w",
        "w.npy",
        "--x",
        "x.npy",
        "--bias",
        "x.npy",
    ],
    "dg-plot-bad-ext": ["diagnose", "y.npy", "y.npy", "--plot", "out.exe"],
    "dg-plot-is-input": ["diagnose", "y.npy", "ynan.npy", "--plot", "y.npy"],
    "dg-nan-json": ["diagnose", "ynan.npy", "ynan.npy", "--json"],
    "dg-dir": ["diagnose", "dir.npy", "y.npy"],
    "dg-json-bad": ["diagnose", "bad.npy", "y.npy", "--json"],
    # convert (only cases that fail before TensorFlow is needed)
    "cv-bad-json": ["convert", "bad.json", "-o", "out.keras"],
    "cv-absent": ["convert", "nope", "-o", "out.keras"],
    "cv-dir": ["convert", "dir.npy", "-o", "out.keras"],
    "cv-output-is-input": ["convert", "--example", "lenet", "-o", "y.npy", "--input", "y.npy"],
    "cv-output-dir": ["convert", "--example", "lenet", "-o", "dir.npy"],
    "cv-output-ext": ["convert", "--example", "lenet", "-o", "out.txt"],
    "cv-same-outputs": ["convert", "--example", "lenet", "-o", "o.keras", "--tflite", "o.keras"],
    "cv-input-size-text": ["convert", "--example", "lenet", "--input-size", "a,b,c"],
    "cv-input-size-huge": [
        "convert",
        "--example",
        "lenet",
        "--input-size",
        "100000000,100000000,1",
    ],
    "cv-input-size-neg": ["convert", "--example", "lenet", "--input-size", "-28,28,1"],
    "cv-input-int": ["convert", "--example", "lenet", "--verify", "--input", "yi.npy"],
    "cv-input-bad": ["convert", "--example", "lenet", "--verify", "--input", "bad.npy"],
    "cv-key-on-npz": ["convert", "--example", "lenet", "--key", "a/b"],
    "cv-structure-bad": ["convert", "bad.npy", "--structure", "bad.json"],
    "cv-conv-padding-text": ["convert", "bad.npy", "--conv-padding", "x"],
    "cv-json-bad": ["convert", "bad.json", "--json"],
    "cv-list-npy": ["convert", "bad.npy", "--list"],
    # inspect
    "in-bad": ["inspect", "bad.npy"],
    "in-dir": ["inspect", "dir.npy"],
    "in-absent": ["inspect", "nope.jld2"],
    "in-depth-neg": ["inspect", "w.npy", "--depth", "-1"],
    "in-depth-huge": ["inspect", "w.npy", "--depth", "9" * 5000],
    "in-depth-text": ["inspect", "w.npy", "--depth", "deep"],
    "in-key-missing": ["inspect", "w.npy", "--key", "nope/1"],
    "in-key-traversal": ["inspect", "w.npy", "--key", "../../etc"],
    "in-json-bad": ["inspect", "bad.npy", "--json"],
    "in-json-ok": ["inspect", "w.npy", "--json"],
    # doctor
    "dg-dev-zero": ["diagnose", "/dev/zero", "y.npy"],
    "vc-dev-zero": ["verify-conv", "--w", "/dev/zero", "--x", "x.npy"],
    "in-dev-zero": ["inspect", "/dev/zero"],
    "cv-dev-zero": ["convert", "/dev/zero"],
    "cv-input-dev-zero": ["convert", "--example", "lenet", "--verify", "--input", "/dev/zero"],
    "dr-julia-absent": ["doctor", "--no-probe", "--julia", "/nonexistent/julia"],
    "dr-julia-dir": ["doctor", "--no-probe", "--julia", "dir.npy"],
    "dr-julia-not-exe": ["doctor", "--no-probe", "--julia", "bad.npy", "--json"],
}
# may legitimately succeed (exit 0/1)
CLI_MAY_RUN = {
    "dg-shape-mismatch",
    "vc-dilation-huge",
    "dg-nan-json",
    "in-json-ok",
    "dr-julia-absent",
    "dr-julia-dir",
    "dr-julia-not-exe",
    "vc-padding-empty",
    "dg-w-x-wrong-output",
    "vc-alpha-huge",
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input(tmp_path, case):
    """Every command on bad arguments and hostile files: exit 2 and one stderr line (or, for
    a case that is valid, 0/1), never 3, no traceback, strict JSON on stdout under --json,
    nothing written on failure."""
    _cli_fixture(tmp_path)
    argv = CLI_CASES[case]
    before = _snapshot(tmp_path)
    code, out, err = run_cli(argv, tmp_path)
    assert code != 3, err
    assert "Traceback" not in err + out, err
    if case in CLI_MAY_RUN:
        assert code in (0, 1, 2), (code, err)
    else:
        assert code == 2, (code, out[-300:], err)
    if code == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines, "no message"
        assert not lines[-1].startswith("usage:"), err
        if not err.startswith("usage:"):
            assert len(lines) == 1, err
        assert _snapshot(tmp_path) == before, "files written on failure"
    if "--json" in argv and out.strip():
        json.loads(out, parse_constant=lambda s: pytest.fail(f"bare {s} in --json output"))


# ---------------------------------------------------------------------------------------------
# The CLI, as a process: a FIFO and a closed stdout


def _proc(argv, cwd, timeout=60, stdout=subprocess.PIPE):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PORTING_KNET_BACKEND="reference")
    return subprocess.run(
        [sys.executable, "-m", "porting", *argv],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        text=True,
    )


def test_fifo_and_closed_stdout(tmp_path):
    """A FIFO given as --w is refused at once (never opened for reading: that blocks), and
    `--json` into a closed pipe stops quietly with 141, no traceback."""
    _cli_fixture(tmp_path)
    os.mkfifo(tmp_path / "f.npy")
    r = _proc(["verify-conv", "--w", "f.npy", "--x", "x.npy"], tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "f.npy" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for argv in (
        ["inspect", "w.npy", "--json"],
        ["diagnose", "y.npy", "yi.npy", "--json"],  # closed stdout and a bad input at once
        ["doctor", "--no-probe", "--json"],
    ):
        rd, wr = os.pipe()
        os.close(rd)
        try:
            r = _proc(argv, tmp_path, stdout=wr)
        finally:
            os.close(wr)
        assert r.returncode in (141, 0, 2), (argv, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


def test_stat_mode_of_unreadable_file_named(tmp_path):
    """A file the user cannot read is refused with a message naming it."""
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    p = tmp_path / "w.npy"
    np.save(p, np.ones(3, np.float32))
    p.chmod(0)
    try:
        msg = refused(pio.load, p)
        assert "w.npy" in msg
    finally:
        p.chmod(stat.S_IRUSR | stat.S_IWUSR)


# ---------------------------------------------------------------------------------------------
# Environment variables

ENV_VALUES = {
    "text": "lots",
    "negative": "-1",
    "huge": "9" * 5000,
    "nan": "nan",
    "empty": "",
    "nul-like": " 1 2 ",
}
ENV_CALLS = [
    ("PORTING_MAX_LOAD_BYTES", lambda: pio.load(_tiny_npy())),
    ("PORTING_MAX_LOAD_OBJECTS", lambda: pio.load(_tiny_npy())),
    ("PORTING_THREADS", lambda: layout.activations_to_tf(np.ones((64, 64, 8, 8), np.float32))),
    ("PORTING_DEBUG", lambda: pio.load(_tiny_npy())),
]


@pytest.mark.parametrize("value", list(ENV_VALUES))
@pytest.mark.parametrize("call", ENV_CALLS, ids=[c[0] for c in ENV_CALLS])
def test_environment_variables(monkeypatch, call, value):
    """A nonsense setting in the environment is one PortingError quoting the variable (or is
    ignored where it cannot change an answer); never a crash."""
    name, fn = call
    monkeypatch.setenv(name, ENV_VALUES[value])
    kind, got = outcome(fn)
    if kind == "error":
        assert name in str(got), str(got)


@pytest.mark.parametrize("columns", ["-5", "0", "abc", "9" * 5000, "3"])
def test_cli_text_output_with_hostile_columns(tmp_path, monkeypatch, columns):
    """COLUMNS set to nonsense never breaks text output."""
    _cli_fixture(tmp_path)
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = run_cli(["inspect", "w.npy"], tmp_path)
    assert code == 0, err
    assert "w" in out


# ---------------------------------------------------------------------------------------------
# The model API


def _dense():
    return porting.model.Dense(np.ones((2, 3), np.float32))


MODEL_CASES = {
    "layers-none": lambda: porting.model.KnetModel(None),
    "layers-dict": lambda: porting.model.KnetModel({"a": _dense()}),
    "layers-strings": lambda: porting.model.KnetModel(["dense"]),
    "layers-empty": lambda: porting.model.KnetModel([]),
    "name-list": lambda: porting.model.KnetModel([_dense()], name=["x"]),
    "dtype-int": lambda: porting.model.KnetModel([porting.model.Mat()], dtype=np.int32),
    "input-size-0": lambda: porting.model.KnetModel([_dense()], (0,)),
    "input-size-wrong": lambda: porting.model.KnetModel([_dense()], (4,)),
    "inputs-unknown": lambda: porting.model.KnetModel([_dense()], inputs={"dense1": "nope"}),
    "inputs-self": lambda: porting.model.KnetModel([_dense()], inputs={"dense1": "dense1"}),
    "dup-names": lambda: porting.model.KnetModel(
        [porting.model.Dense(np.ones((3, 3), np.float32), name="a")] * 2
    ),
    "conv-pool-string": lambda: porting.model.Conv(W, pool="max"),
    "conv-activation-int": lambda: porting.model.Conv(W, activation=3),
    "conv-activation-unknown": lambda: porting.model.Conv(W, activation="swish-ish"),
    "conv-b-wrong": lambda: porting.model.Conv(W, np.ones(5, np.float32)),
    "conv-b-dtype": lambda: porting.model.Conv(W, np.ones(4, np.float64)),
    "dense-nan-weights-forward": lambda: porting.model.forward_knet(
        porting.model.KnetModel([_dense()], (3,)), np.full((3, 2), np.nan, np.float32)
    ),
    "forward-wrong-x-shape": lambda: porting.model.forward_knet(
        porting.model.KnetModel([_dense()], (3,)), np.ones((4, 2), np.float32)
    ),
    "forward-x-int": lambda: porting.model.forward_knet(
        porting.model.KnetModel([_dense()], (3,)), np.ones((3, 2), np.int64)
    ),
    "forward-x-float64": lambda: porting.model.forward_knet(
        porting.model.KnetModel([_dense()], (3,)), np.ones((3, 2), np.float64)
    ),
    "to-keras-not-model": lambda: porting.model.to_keras("lenet"),
    "to-keras-spatial": lambda: porting.model.to_keras(
        porting.model.KnetModel([_dense()], (3,)), spatial="sideways"
    ),
    "verify-not-model": lambda: porting.model.verify_model(None),
    "verify-mode": lambda: porting.model.verify_model(
        porting.model.KnetModel([_dense()], (3,)), mode="both"
    ),
    "load-export-dir": lambda: porting.model.load_export(ROOT / "porting"),
    "load-export-int": lambda: porting.model.load_export(3),
    "save-export-not-model": lambda: porting.model.save_export("m", "/tmp/x"),
    "rnn-spec-type": lambda: porting.rnn.RNNSpec(3, 2, "transformer"),
    "rnn-spec-skip": lambda: porting.rnn.RNNSpec(3, 2, skip_input=True),
    "rnn-unpack-spec": lambda: porting.rnn.unpack("lstm", np.ones(3, np.float32)),
    "rnn-unpack-length": lambda: porting.rnn.unpack(_spec(), np.ones(3, np.float32)),
    "rnn-forward-dtype": lambda: porting.rnn.forward(
        porting.rnn.unpack(_spec(), np.ones(_spec().param_length, np.float32)),
        np.ones((3, 2), np.float64),
    ),
    "rnn-forward-h-shape": lambda: porting.rnn.forward(
        porting.rnn.unpack(_spec(), np.ones(_spec().param_length, np.float32)),
        np.ones((3, 2), np.float32),
        h=np.ones((5, 5), np.float32),
    ),
    "rnn-forward-x-size": lambda: porting.rnn.forward(
        porting.rnn.unpack(_spec(), np.ones(_spec().param_length, np.float32)),
        np.ones((4, 2), np.float32),
    ),
}
MODEL_MAY_RUN = {"dense-nan-weights-forward", "forward-x-float64"}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_and_rnn_api(case):
    """Model and RNN constructors and runners on wrong structure and values: one
    PortingError, or (NaN input, a float64 batch) an answer that says what it computed."""
    kind, value = outcome(MODEL_CASES[case])
    if case not in MODEL_MAY_RUN:
        assert kind == "error", f"{case}: accepted ({type(value).__name__})"
    elif case == "dense-nan-weights-forward" and kind == "ok":
        out = value.output if hasattr(value, "output") else value
        arr = np.asarray(getattr(out, "y", out), dtype=float) if not isinstance(out, dict) else None
        if arr is not None and arr.size:
            assert np.isnan(arr).all(), "NaN input gave finite outputs"


# ---------------------------------------------------------------------------------------------
# HDF5 / MAT / safetensors / npy headers


def _hdf5_case(kind: str, d: Path) -> Path:
    h5py = pytest.importorskip("h5py", reason="HDF5 fixtures")
    p = d / "w.jld2"
    with h5py.File(p, "w") as f:
        if kind == "external-link":
            with h5py.File(d / "other.h5", "w") as g:
                g["secret"] = np.ones(3)
            f["w"] = h5py.ExternalLink(str(d / "other.h5"), "/secret")
        elif kind == "soft-link-out":
            f["w"] = h5py.SoftLink("/nonexistent/deep")
        elif kind == "huge-unwritten-chunked":
            f.create_dataset("w", shape=(2**40,), dtype="f4", chunks=(1024,), fillvalue=1.0)
        elif kind == "vlen-strings":
            f["w"] = np.array(["a", "b"], dtype=h5py.string_dtype())
        elif kind == "compound":
            f["w"] = np.zeros(3, [("a", "f4"), ("b", "i8")])
        elif kind == "enum":
            f.create_dataset(
                "w", data=np.zeros(3, "i1"), dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1")
            )
        elif kind == "hard-link-cycle":
            g = f.create_group("g")
            g["loop"] = g
        elif kind == "many-hard-links":
            g = f.create_group("g0")
            for i in range(1, 25):  # 2**24 paths through 25 groups
                h = f.create_group(f"g{i}")
                h["a"] = g
                h["b"] = g
                g = h
        elif kind == "empty-dataset":
            f.create_dataset("w", shape=(0, 3), dtype="f4")
        elif kind == "null-dataspace":
            f.create_dataset("w", data=h5py.Empty("f4"))
        elif kind == "int-dataset":
            f["w"] = np.arange(6, dtype=np.int64)
        elif kind == "object-refs":
            f["a"] = np.ones(2)
            f.create_dataset("refs", data=[f["a"].ref] * 3, dtype=h5py.ref_dtype)
        else:
            raise AssertionError(kind)
    return p


HDF5_KINDS = [
    "external-link",
    "soft-link-out",
    "huge-unwritten-chunked",
    "vlen-strings",
    "compound",
    "enum",
    "hard-link-cycle",
    "many-hard-links",
    "empty-dataset",
    "null-dataspace",
    "int-dataset",
    "object-refs",
]


@pytest.mark.parametrize("kind", HDF5_KINDS)
def test_hostile_hdf5(tmp_path, kind):
    """An HDF5 (JLD2 / MAT v7.3) file built to hurt: never follows an external link, never
    allocates a claimed terabyte, never walks 2**24 paths, never hangs; a PortingError or
    what the file really holds."""
    p = _hdf5_case(kind, tmp_path)
    kind_, value = outcome(pio.load, p, max_bytes=8_000_000)
    if kind == "external-link" and kind_ == "ok":
        assert "secret" not in json.dumps(
            pio.flatten(value) if hasattr(pio, "flatten") else {}, default=str
        )
        flat = str(value)
        assert "1." not in flat or "external" in flat.lower(), flat[:300]
    if kind == "huge-unwritten-chunked":
        assert kind_ == "error", "a claimed 4 TiB dataset was read"


def _safetensors(header: bytes | dict, data: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


SAFETENSORS = {
    "offsets-out-of-range": _safetensors(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, b"\0" * 8
    ),
    "offsets-reversed": _safetensors(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8
    ),
    "shape-mismatch": _safetensors(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "shape-huge": _safetensors(
        {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "shape-string": _safetensors(
        {"a": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "shape-float": _safetensors(
        {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "dtype-unknown": _safetensors(
        {"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "header-list": _safetensors(b"[1, 2]"),
    "header-not-utf8": _safetensors(b"\xff\xfe{}"),
    "header-deep": _safetensors(b"[" * 50000 + b"]" * 50000),
    "tensor-not-dict": _safetensors({"a": 5}),
    "overlap": _safetensors(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        b"\0" * 12,
    ),
    "bf16-valid": _safetensors(
        {"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\x80\x3f\x00\x40"
    ),
    "bool": _safetensors(
        {"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x00"
    ),
}


@pytest.mark.parametrize("case", list(SAFETENSORS))
def test_hostile_safetensors(tmp_path, case):
    """Safetensors headers lying about offsets, shapes, dtypes: one PortingError saying what is
    wrong; a valid bfloat16 file is read (converted) or called unsupported, never corrupt."""
    p = tmp_path / "w.safetensors"
    p.write_bytes(SAFETENSORS[case])
    kind, value = outcome(pio.load, p, max_bytes=8_000_000)
    if case == "bf16-valid":
        if kind == "ok":
            np.testing.assert_array_equal(np.asarray(value["a"], np.float64), [1.0, 2.0])
        else:
            assert "corrupt" not in str(value).lower(), str(value)
    elif case != "bool":
        assert kind == "error", f"{case}: accepted"


def _npy_header(descr: str, shape: str, fortran: bool = False, version=(1, 0), body=b"") -> bytes:
    d = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"
    h = d.encode().ljust(118) + b"\n"
    if version == (1, 0):
        return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + body
    return b"\x93NUMPY" + bytes(version) + len(h).to_bytes(4, "little") + h + body


NPY = {
    "big-endian": (_npy_bytes(np.arange(4, dtype=">f4")), True),
    "fortran": (_npy_bytes(np.asfortranarray(np.arange(6, dtype="f4").reshape(2, 3))), True),
    "version-3": (_npy_header("<f4", "(2,)", version=(3, 0), body=b"\0" * 8), True),
    "version-9": (_npy_header("<f4", "(2,)", version=(9, 0), body=b"\0" * 8), False),
    "header-len-huge": (b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{", False),
    "shape-negative": (_npy_header("<f4", "(-2,)", body=b"\0" * 8), False),
    "shape-huge": (_npy_header("<f4", "(4611686018427387904, 4)", body=b"\0" * 8), False),
    "shape-expr": (_npy_header("<f4", "__import__('os').getcwd()", body=b"\0" * 8), False),
    "descr-object": (_npy_header("|O", "(2,)", body=b"\0" * 16), False),
    "descr-bogus": (_npy_header("<q9", "(2,)", body=b"\0" * 16), False),
    "body-short": (_npy_header("<f8", "(100,)", body=b"\0" * 16), False),
    "float128": (_npy_bytes(np.ones(2, np.longdouble)), None),
    "0-d": (_npy_bytes(np.float32(3.0)), True),
}


@pytest.mark.parametrize("case", list(NPY))
def test_hostile_npy_headers(tmp_path, case):
    """.npy headers: big-endian and Fortran order read correctly; lying sizes, object
    dtypes, unknown versions and expressions in the header are one PortingError."""
    data, good = NPY[case]
    p = tmp_path / "w.npy"
    p.write_bytes(data)
    kind, value = outcome(pio.load, p, max_bytes=8_000_000)
    if good is True:
        assert kind == "ok", str(value)
        a = value["w"]
        want = np.load(pyio.BytesIO(data)) if case != "version-3" else np.zeros(2, np.float32)
        np.testing.assert_array_equal(np.asarray(a), want)
    elif good is False:
        assert kind == "error", f"{case}: accepted"
        assert "allow_pickle" not in str(value), str(value)


@pytest.mark.parametrize(
    "argv",
    [["inspect", "--depth", "60"], ["inspect", "--depth", "60", "--json"], ["convert", "--list"]],
)
def test_listing_a_dag_of_hard_links_is_prompt(tmp_path, argv):
    """24 groups each linking the previous one twice: 2**24 paths in a few kB. Listing it
    (inspect, convert --list) names each shared object once and returns promptly."""
    p = _hdf5_case("many-hard-links", tmp_path)
    code, out, err = run_cli([argv[0], str(p), *argv[1:]], tmp_path)
    assert code in (0, 2), err
    assert len(out) < 2_000_000, len(out)
    if code == 0:
        assert "same object" in out or len(out.splitlines()) < 1000


# ---------------------------------------------------------------------------------------------
# Every geometry Knet's CPU computes, against loops written here from Knet's definitions


def _conv_loops(w, x, pad, stride, dil, mode, alpha):
    """Knet conv4 by definition, float64 loops: mode 0 rotates the kernel 180 degrees."""
    (k1, k2, ci, co), (x1, x2, _, n) = w.shape, x.shape
    wk = w[::-1, ::-1] if mode == 0 else w
    xp = np.zeros((x1 + 2 * pad[0], x2 + 2 * pad[1], ci, n))
    xp[pad[0] : pad[0] + x1, pad[1] : pad[1] + x2] = x
    y1 = 1 + (x1 + 2 * pad[0] - ((k1 - 1) * dil[0] + 1)) // stride[0]
    y2 = 1 + (x2 + 2 * pad[1] - ((k2 - 1) * dil[1] + 1)) // stride[1]
    y = np.zeros((y1, y2, co, n))
    for i in range(y1):
        for j in range(y2):
            for a in range(k1):
                for b in range(k2):
                    patch = xp[i * stride[0] + a * dil[0], j * stride[1] + b * dil[1]]  # (ci, n)
                    y[i, j] += wk[a, b].T.astype(np.float64) @ patch
    return alpha * y


def _pool_loops(x, window, pad, stride, mode):
    x1, x2, c, n = x.shape
    y1 = 1 + (x1 + 2 * pad[0] - window[0]) // stride[0]
    y2 = 1 + (x2 + 2 * pad[1] - window[1]) // stride[1]
    y = np.zeros((y1, y2, c, n))
    for i in range(y1):
        for j in range(y2):
            r = [i * stride[0] - pad[0] + a for a in range(window[0])]
            s = [j * stride[1] - pad[1] + b for b in range(window[1])]
            inside = [x[a, b] for a in r for b in s if 0 <= a < x1 and 0 <= b < x2]
            if mode == 0:
                y[i, j] = np.max(inside, axis=0) if inside else -np.finfo(x.dtype).max
            else:
                y[i, j] = np.sum(inside, axis=0) / (window[0] * window[1]) if inside else 0.0
    return y


def _geometries(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pad = tuple(int(v) for v in rng.integers(0, 5, 2))  # often >= the kernel extent
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        xs = tuple(int(v) for v in rng.integers(1, 7, 2))
        if all(xs[i] + 2 * pad[i] >= (k[i] - 1) * dil[i] + 1 for i in range(2)):
            out.append((k, dil, pad, stride, xs, int(rng.integers(0, 2))))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("geom", _geometries(7, 40))
def test_conv4_and_deconv4_every_cpu_geometry(geom):
    """conv4 on random geometries, padding beyond the kernel extent included, equals the
    definition's loops; deconv4 is its adjoint (<conv4(w, a), b> == <a, deconv4(w, b)>)."""
    k, dil, pad, stride, xs, mode = geom
    rng = np.random.default_rng(abs(hash(geom)) % 2**32)
    w = rng.standard_normal((*k, 2, 3))
    x = rng.standard_normal((*xs, 2, 2))
    kind, y = outcome(
        knet.conv4,
        w,
        x,
        padding=pad,
        stride=stride,
        dilation=dil,
        mode=mode,
        alpha=1.5,
        backend="reference",
    )
    assert kind == "ok", f"Knet's CPU computes {geom}; porting refused: {y}"
    np.testing.assert_allclose(
        y, _conv_loops(w, x, pad, stride, dil, mode, 1.5), rtol=1e-12, atol=1e-12
    )
    b = rng.standard_normal(y.shape)
    kind, xt = outcome(
        knet.deconv4,
        w,
        b,
        padding=pad,
        stride=stride,
        dilation=dil,
        mode=mode,
        alpha=1.5,
        backend="reference",
    )
    if kind == "ok":  # deconv4's output is conv4's input size when the stride divides evenly
        if xt.shape == x.shape:
            lhs = float(np.sum(y * b))
            rhs = float(np.sum(x * xt))
            assert abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs)), (lhs, rhs)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("geom", _geometries(11, 30))
def test_pool_every_cpu_geometry(geom):
    """pool (max and mean) on random geometries, padding >= window included (-floatmax /
    zeros there, as NNlib), equals the definition's loops."""
    win, _, pad, stride, xs, mode = geom
    rng = np.random.default_rng(abs(hash(geom)) % 2**32)
    x = rng.standard_normal((*xs, 2, 2))
    if any(xs[i] + 2 * pad[i] < win[i] for i in range(2)):
        refused(
            knet.pool, x, window=win, padding=pad, stride=stride, mode=mode, backend="reference"
        )
        return
    kind, y = outcome(
        knet.pool, x, window=win, padding=pad, stride=stride, mode=mode, backend="reference"
    )
    assert kind == "ok", f"Knet's CPU computes {geom}; porting refused: {y}"
    np.testing.assert_allclose(y, _pool_loops(x, win, pad, stride, mode), rtol=1e-12, atol=0)


FIFO_ARGV = {
    "diagnose-expected": ["diagnose", "f.npy", "y.npy"],
    "diagnose-magnitude": ["diagnose", "y.npy", "y.npy", "--magnitude", "f.npy"],
    "verify-conv-x": ["verify-conv", "--w", "w.npy", "--x", "f.npy"],
    "inspect": ["inspect", "f.npy"],
    "convert-model": ["convert", "f.json"],
    "convert-input": ["convert", "--example", "lenet", "--verify", "--input", "f.npy"],
    "convert-structure": ["convert", "w.npy", "--structure", "f.json"],
    "doctor-julia": ["doctor", "--no-probe", "--julia", "f.npy"],
}


@pytest.mark.parametrize("case", list(FIFO_ARGV))
def test_fifo_given_anywhere_is_refused_at_once(tmp_path, case):
    """A FIFO in any file argument is refused without opening it (opening one blocks until a
    writer comes)."""
    _cli_fixture(tmp_path)
    os.mkfifo(tmp_path / "f.npy")
    os.mkfifo(tmp_path / "f.json")
    code, out, err = run_cli(FIFO_ARGV[case], tmp_path)
    assert code in ((0, 1, 2) if case == "doctor-julia" else (2,)), (code, err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "fill, what",
    [(np.nan, "NaN everywhere"), (0.0, "0 everywhere"), (np.inf, "NaN or Inf everywhere")],
)
def test_diagnose_on_two_empty_sides_says_so(fill, what):
    """Both sides all NaN (or all zero): equal, but nothing was shown to compute; the diagnosis
    says what they hold and names no precision format."""
    e = np.full((3, 4), fill, np.float32)
    kind, d = outcome(porting.diagnose, e, e.copy())
    assert kind == "ok"
    assert f"expected is {what}" in d.evidence and f"actual is {what}" in d.evidence, d.evidence
    assert d.cause != "rounding" and "float32 bound" not in d.evidence, d.evidence


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_compare_ulps_in_the_arrays_own_byte_order(dtype):
    """The ULP distance of two big-endian arrays is that of the same values native."""
    e = np.linspace(0.5, 3, 7).astype(dtype)
    a = np.nextafter(np.nextafter(e, dtype(9)), dtype(9))  # 2 ULP up
    native = porting.compare(e, a).max_ulp
    assert native == 2.0
    for ee, aa in [
        (e.astype(e.dtype.newbyteorder(">")), a.astype(a.dtype.newbyteorder(">"))),
        (e, a.astype(a.dtype.newbyteorder(">"))),
    ]:
        assert porting.compare(ee, aa).max_ulp == native


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "evil.npz"],
        ["inspect", "bad.npz"],
        ["convert", "bad.npz", "--list"],
        ["inspect", "e\x1b[31m\nx.npy"],
        ["diagnose", "e\x1b[31m\nx.npy", "e\x1b[31m\nx.npy"],
    ],
)
def test_names_from_hostile_files_cannot_forge_lines_or_drive_the_terminal(tmp_path, argv):
    """Member names (and file names) holding a newline or an escape sequence are printed
    escaped: an error stays one line, a listing one line per entry, and no ESC byte reaches
    the terminal."""
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as z:
        z.writestr("line1\nFAKE: all good\x1b[2J.npy", _npy_bytes(np.ones(2, np.float32)))
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        z.writestr("x\nFAKE\x1b[2J.npy", b"GARBAGE")
    (tmp_path / "e\x1b[31m\nx.npy").write_bytes(b"junk")
    code, out, err = run_cli(argv, tmp_path)
    assert code in (0, 2), err
    assert "\x1b" not in out + err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert not any(line.startswith("FAKE") for line in out.splitlines()), out


# ---------------------------------------------------------------------------------------------
# MAT v5 and the export's weights


def _mat_case(kind: str, p: Path) -> None:
    sio = pytest.importorskip("scipy.io", reason="MAT fixtures")
    import scipy.sparse

    data = {
        "sparse": {"w": scipy.sparse.random(4, 4, density=0.5, format="csc")},
        "cell": {"w": np.array([[np.ones(2), "text"]], dtype=object)},
        "struct": {"s": {"w": np.ones((2, 2)), "b": np.zeros(2)}},
        "char": {"w": "hello"},
        "int": {"w": np.arange(6, dtype=np.int16).reshape(2, 3)},
        "complex": {"w": np.ones(3) * (1 + 2j)},
        "empty": {"w": np.zeros((0, 3))},
        "big-endian": {"w": np.arange(6, dtype=">f8").reshape(2, 3)},
        "logical": {"w": np.array([True, False])},
    }[kind]
    sio.savemat(p, data)


MAT_KINDS = ["sparse", "cell", "struct", "char", "int", "complex", "empty", "big-endian", "logical"]


@pytest.mark.parametrize("kind", MAT_KINDS)
def test_hostile_mat(tmp_path, kind):
    """MAT v5 sparse matrices, cells, structs, chars, integers, complex, empty and
    big-endian arrays: read as what they are or one PortingError; big-endian values exact."""
    p = tmp_path / "w.mat"
    _mat_case(kind, p)
    k, value = outcome(pio.load, p)
    if kind == "big-endian":
        assert k == "ok", str(value)
        np.testing.assert_array_equal(
            np.asarray(value["w"], np.float64), np.arange(6.0).reshape(2, 3)
        )
    for cmd in (
        ["inspect", "w.mat"],
        ["inspect", "w.mat", "--json"],
        ["diagnose", "w.mat", "w.mat"],
    ):
        code, out, err = run_cli(cmd, tmp_path)
        assert code in (0, 1, 2), err
        assert "Traceback" not in err


def _export_with_arrays(tmp: Path, **override) -> Path:
    arrays = dict(np.load(ROOT / "porting/examples/lenet.npz"))
    for k, v in override.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(tmp / "lenet.npz", **arrays)
    (tmp / "lenet.json").write_text((ROOT / "porting/examples/lenet.json").read_text())
    return tmp / "lenet.json"


NPZ_OVERRIDES = {
    "weight-missing": {"conv1.w": None},
    "weight-float64": {"conv1.w": np.ones((5, 5, 1, 20))},
    "weight-int": {"conv1.w": np.ones((5, 5, 1, 20), np.int32)},
    "weight-complex": {"conv1.w": np.ones((5, 5, 1, 20), np.complex64)},
    "weight-shape": {"conv1.w": np.ones((5, 5, 1, 21), np.float32)},
    "weight-0d": {"conv1.w": np.float32(1)},
    "weight-nan": {"dense2.b": np.full(10, np.nan, np.float32)},
    "bias-shape": {"dense1.b": np.ones(127, np.float32)},
}


@pytest.mark.parametrize("case", list(NPZ_OVERRIDES))
def test_export_weights_that_do_not_match_the_json(tmp_path, case):
    """Weights missing, of another type or size than the .json records: one PortingError
    naming the layer; NaN weights load (a model may hold them) but are never called equal."""
    p = _export_with_arrays(tmp_path, **NPZ_OVERRIDES[case])
    kind, value = outcome(porting.model.load_export, p)
    if case == "weight-nan":
        return
    assert kind == "error", f"{case}: accepted"
    assert "conv1" in str(value) or "dense1" in str(value), str(value)


VERIFY_CONV4 = {
    "w-none": lambda: porting.verify_conv4(None, X),
    "x-int": lambda: porting.verify_conv4(W, X.astype(int)),
    "padding-bool": lambda: porting.verify_conv4(W, X, padding=True),
    "spatial": lambda: porting.verify_conv4(W, X, spatial="up"),
    "dtype": lambda: porting.verify_conv4(W, X, dtype="int8"),
    "knet": lambda: porting.verify_conv4(W, X, knet="cuda"),
    "channels": lambda: porting.verify_conv4(W, X4),
    "nan-alpha": lambda: porting.verify_conv4(W, X, alpha=float("nan")),
}


@pytest.mark.parametrize("case", list(VERIFY_CONV4))
def test_verify_conv4_bad_arguments(case):
    """verify_conv4's arguments are checked before TensorFlow is needed: one PortingError."""
    import inspect as _inspect

    params = _inspect.signature(porting.verify_conv4).parameters
    for kw in ("spatial", "dtype", "knet"):
        if case == kw and kw not in params:
            pytest.skip(f"verify_conv4 has no {kw}=")
    refused(VERIFY_CONV4[case])


_INT_KW_CALLS = [
    c
    for c in _kw_calls()
    if not c[0].endswith(("backend", "path", "format", "spatial", "precision"))
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("call", _INT_KW_CALLS, ids=[c[0] for c in _INT_KW_CALLS])
def test_numpy_integer_scalars_are_integers(call):
    """np.int64(2), np.int32(2) and np.uint8(2) mean what 2 means: the same answer, or the same
    refusal (integer keywords only)."""
    name, fn = call
    kind, want = outcome(fn, 2)
    for v in (np.int64(2), np.int32(2), np.uint8(2)):
        k, got = outcome(fn, v)
        assert k == kind, f"{name}={v!r} ({type(v).__name__}): {k} but 2 gives {kind}: {got}"
        if kind == "ok" and isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("spatial", ["reverse", "keep"])
def test_layout_round_trips_on_any_view(view, mode, spatial):
    """kernel/activation/bias/dense converters and their inverses give back the same values
    from strided, negative-stride, read-only, Fortran and big-endian arrays."""
    v = VIEWS[view]
    np.testing.assert_array_equal(
        layout.kernel_from_tf(
            layout.kernel_to_tf(v(W), mode=mode, spatial=spatial), mode=mode, spatial=spatial
        ),
        W,
    )
    np.testing.assert_array_equal(
        layout.activations_from_tf(
            layout.activations_to_tf(v(X), spatial=spatial), spatial=spatial
        ),
        X,
    )
    b = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)
    np.testing.assert_array_equal(layout.bias_from_tf(layout.bias_to_tf(v(b))), b)
    d = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(layout.dense_from_tf(layout.dense_to_tf(v(d))), d)
    # an independent statement of the kernel rule: mode 0 rotates 180 degrees, then
    # (W1, W2, Cin, Cout) -> (H, W, Cin, Cout) with H = W2 under "reverse"
    k = layout.kernel_to_tf(v(W), mode=mode, spatial=spatial)
    r = W[::-1, ::-1] if mode == 0 else W
    np.testing.assert_array_equal(k, r.transpose(1, 0, 2, 3) if spatial == "reverse" else r)


@pytest.mark.parametrize("ok", ["no", "False", [], [0], None, 0, 1.0])
def test_assert_ported_close_on_a_report_without_a_boolean_verdict(ok):
    """A report-like object whose `ok` is not a boolean is no verdict: refused, never a pass."""
    from types import SimpleNamespace

    refused(porting.testing.assert_ported_close, SimpleNamespace(ok=ok))


def test_compare_magnitudes_that_bound_nothing():
    """A negative sum of magnitudes is refused; an infinite one gives no infinite tolerance
    (the element must match exactly), never a pass for different values."""
    e = np.float32([1, 2, 3])
    refused(porting.compare, e, e, magnitude=-np.abs(e))
    for m in (np.full(3, np.inf, np.float32), np.float32([1, np.inf, 3])):
        assert porting.compare(e, e, magnitude=m).ok
        assert not porting.compare(e, e + np.float32(0.5), magnitude=m).ok


@pytest.mark.parametrize("value", [1.5, 0.5, "1.5", "0.2", "1.2.3", "1e", "--1"])
def test_size_limits_are_whole_bytes(tmp_path, value):
    """A size limit that is a fraction of a byte (or no number) is refused, never truncated
    into another limit."""
    p = tmp_path / "w.npy"
    np.save(p, np.ones(3, np.float32))
    msg = refused(pio.load, p, max_bytes=value)
    assert "max_load_bytes" in msg or "max_bytes" in msg, msg


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_load_partial_is_a_boolean(tmp_path, value):
    p = tmp_path / "w.npy"
    np.save(p, np.ones(3, np.float32))
    msg = refused(pio.load, p, partial=value)
    assert "partial" in msg, msg


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("geom", _geometries(13, 12))
def test_one_and_three_spatial_dimensions_agree_with_two(geom):
    """conv4/pool with 1 or 3 spatial dimensions (padding beyond the kernel included) equal
    the loop-checked 2-d case with the extra dimension of size 1."""
    k, dil, pad, stride, xs, mode = geom
    rng = np.random.default_rng(abs(hash(geom)) % 2**32)
    w2 = rng.standard_normal((k[0], 1, 2, 3))
    x2 = rng.standard_normal((xs[0], 1, 2, 2))
    kw2 = dict(padding=(pad[0], 0), stride=(stride[0], 1), dilation=(dil[0], 1), mode=mode)
    want = knet.conv4(w2, x2, backend="reference", **kw2)
    np.testing.assert_allclose(
        want,
        _conv_loops(w2, x2, kw2["padding"], kw2["stride"], kw2["dilation"], mode, 1.0),
        rtol=1e-12,
        atol=1e-12,
    )
    kind, y1 = outcome(
        knet.conv4,
        w2[:, 0],
        x2[:, 0],
        padding=pad[0],
        stride=stride[0],
        dilation=dil[0],
        mode=mode,
        backend="reference",
    )
    assert kind == "ok", y1
    np.testing.assert_allclose(y1, want[:, 0], rtol=1e-12, atol=1e-12)
    kw3 = dict(padding=(pad[0], 0, 0), stride=(stride[0], 1, 1), dilation=(dil[0], 1, 1), mode=mode)
    kind, y3 = outcome(knet.conv4, w2[:, :, None], x2[:, :, None], backend="reference", **kw3)
    assert kind == "ok", y3
    np.testing.assert_allclose(y3[:, :, 0], want, rtol=1e-12, atol=1e-12)
    if xs[0] + 2 * pad[0] >= k[0]:
        p2 = knet.pool(
            x2, window=(k[0], 1), padding=(pad[0], 0), stride=(stride[0], 1), backend="reference"
        )
        kind, p1 = outcome(
            knet.pool, x2[:, 0], window=k[0], padding=pad[0], stride=stride[0], backend="reference"
        )
        assert kind == "ok", p1
        np.testing.assert_array_equal(p1, p2[:, 0])


def _rnn_entry(**rnn_over):
    n = porting.rnn.RNNSpec(3, 4, "gru").param_length
    rnn = {"inputSize": 3, "hiddenSize": 4, "rnnType": "gru", "numLayers": 1, "bidirectional": False,
           "skipInput": False, "dropout": 0.0, "h": "nothing", "c": "nothing"}  # fmt: skip
    rnn.update(rnn_over)
    entry = {"name": "layer2", "kind": "rnn", "julia_type": "RNN", "rnn": rnn,
             "params": {"w": {"key": "layer2.w", "size": [1, 1, n], "eltype": "Float32"}}}  # fmt: skip
    return entry, {"layer2.w": np.zeros((1, 1, n), np.float32)}


RNN_EXPORT = {
    "hidden-string": {"hiddenSize": "4"},
    "hidden-float": {"hiddenSize": 4.0},
    "hidden-bool": {"hiddenSize": True},
    "hidden-huge": {"hiddenSize": 10**5000},
    "hidden-googol": {"hiddenSize": 10**100},
    "layers-zero": {"numLayers": 0},
    "type-int": {"rnnType": 2},
    "type-unknown": {"rnnType": "transformer"},
    "bidirectional-int": {"bidirectional": 1},
    "bidirectional-string": {"bidirectional": "false"},
    "dropout-nan": {"dropout": float("nan")},
    "dropout-bool": {"dropout": False},
    "dropout-string": {"dropout": "0"},
    "h-unknown": {"h": "random"},
    "h-list": {"h": ["nothing"]},
}


@pytest.mark.parametrize("case", list(RNN_EXPORT))
def test_rnn_export_entry_with_wrong_types(case):
    """An rnn layer object with a wrong type or value at any key: one PortingError naming
    rnn.<key>."""
    entry, arrays = _rnn_entry(**RNN_EXPORT[case])
    msg = refused(porting.rnn.from_export, entry, arrays)
    key = next(iter(RNN_EXPORT[case]))
    assert key in msg, msg


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "pool",
    [
        dict(window=2, padding=1),
        dict(window=2, padding=2, mode=0),
        dict(window=3, padding=3, mode=1),
    ],
)
def test_keras_conversion_of_padding_beyond_kernel_and_window(pool):
    """Two conv layers with padding beyond the kernel extent and pools with padding >= window
    convert to Keras with unique layer names, and the Keras model agrees with the Knet side
    (whose kernels the loops above check) layer by layer."""
    pytest.importorskip("tensorflow", reason="the Keras conversion needs TensorFlow")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 1, 2, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    model = porting.model.KnetModel(
        [
            porting.model.Conv(w, b, padding=2, pool=pool, activation="relu"),
            porting.model.Conv(
                rng.standard_normal((3, 3, 3, 2)).astype(np.float32),
                padding=3,
                pool=dict(window=2, padding=2),
            ),
        ],
        input_size=(5, 4, 2),
    )
    with _deadline(120):
        km = porting.model.to_keras(model)
        names = [layer.name for layer in km.layers]
        assert len(names) == len(set(names)), names
        report = porting.model.verify_model(model, keras_model=km)
    assert report.ok, str(report)


def test_writing_over_what_the_user_has(tmp_path):
    """Replacing an existing .keras keeps its permission bits; a --savedmodel directory holding
    a file an export does not write, or the input itself, is refused before any work, and
    nothing is lost."""
    pytest.importorskip("tensorflow", reason="the conversion needs TensorFlow")
    _cli_fixture(tmp_path)
    out = tmp_path / "o.keras"
    out.write_text("old")
    out.chmod(0o600)
    code, _, err = run_cli(["convert", "--example", "lenet", "-o", "o.keras"], tmp_path)
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert zipfile.is_zipfile(out)
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "mine.txt").write_text("keep")
    before = _snapshot(tmp_path)
    code, _, err = run_cli(["convert", "--example", "lenet", "--savedmodel", "sm"], tmp_path)
    assert code == 2 and "mine.txt" in err, err
    (tmp_path / "m").mkdir()
    for suffix in ("json", "npz"):
        (tmp_path / "m" / f"lenet.{suffix}").write_bytes(
            (ROOT / f"porting/examples/lenet.{suffix}").read_bytes()
        )
    before = _snapshot(tmp_path)
    code, _, err = run_cli(["convert", "m/lenet", "--savedmodel", "m"], tmp_path)
    assert code == 2, err
    code, _, err = run_cli(["convert", "m/lenet", "-o", "m/lenet.json"], tmp_path)
    assert code == 2, err
    assert _snapshot(tmp_path) == before
    assert (tmp_path / "sm" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "shape", ["abc", (2.0, 2, 3), (True, 2, 6), (-2, -2, 3), (10**5000, 1, 1), (12,), {"a": 1}]
)
@pytest.mark.parametrize("fn", ["dense_to_tf", "dense_from_tf"])
def test_dense_input_shapes_are_strict(fn, shape):
    """input_shape is a Julia size of integers >= 1 whose product is the weight's inputs:
    strings, floats, bools, negatives and huge integers are one PortingError naming it."""
    w = np.ones((3, 12), np.float32) if fn == "dense_to_tf" else np.ones((12, 3), np.float32)
    msg = refused(getattr(layout, fn), w, input_shape=shape)
    assert "input_shape" in msg, msg


@pytest.mark.parametrize("values", [None, 3, "ab", {"a": 1}])
def test_spatial_reorder_needs_a_tuple(values):
    refused(layout.spatial_to_tf, values)
    refused(layout.spatial_from_tf, values)


def test_cli_warnings_are_one_line_without_a_source_location(tmp_path):
    """A warning on the command line is one line naming the command, not
    `<frozen runpy>:88: UserWarning:`."""
    _cli_fixture(tmp_path)
    r = _proc(
        ["verify-conv", "--w", "w.npy", "--x", "x.npy", "--padding", "3", "--knet", "reference"],
        tmp_path,
    )
    assert r.returncode in (0, 1), r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "padding" in ln]
    assert lines and all(ln.startswith("porting verify-conv: warning: ") for ln in lines), r.stderr
    assert "runpy" not in r.stderr and "UserWarning" not in r.stderr, r.stderr
