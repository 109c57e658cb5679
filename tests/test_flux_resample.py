"""Flux's `Upsample` and `PixelShuffle` from BSON files and from `Flux.state` trees.

The BSON documents are written here as BSON.jl v0.3.9 writes them (src/extensions.jl: a struct
is its `type` (a datatype with `params`, the type parameters, a Symbol lowered as `{tag:
symbol}`) and its fields in declaration order; `nothing` is BSON null, src/write.jl): Flux
v0.16.5 src/layers/upsample.jl declares `struct Upsample{mode, S, T}` with fields `scale`,
`size`, and `struct PixelShuffle` with `r`.

Oracle: PyTorch float64, written from Flux's and NNlib's definitions (see
tests/test_model_resample.py for why `F.interpolate(..., align_corners=True)` and
`torch.pixel_shuffle` compute NNlib's `upsample_bilinear` (Flux passes no `align_corners`:
NNlib's default, true) and `pixel_shuffle`): `Conv` is a true convolution (the kernel flipped).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_flux import _cli  # the same subprocess runner

from porting.errors import PortingError
from porting.examples import flux as fx
from porting.model import forward_knet, to_keras, verify_model

torch = pytest.importorskip("torch", reason="torch is the independent oracle")
F = torch.nn.functional


def _torch(x):  # Julia-indexed (X1, X2, C, N) -> torch (N, C, X2, X1)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float64).transpose(3, 2, 1, 0)))


def _julia(t):
    return t.numpy().transpose(3, 2, 1, 0)


def upsample_doc(mode, scale=None, size=None):
    return fx.upsample(mode, scale, size)


def pixelshuffle_doc(r):
    return fx.pixel_shuffle(r)


def _weights(dtype, seed=0):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((3, 3, 2, 8)) / 4).astype(dtype)
    b1 = (rng.standard_normal(8) / 4).astype(dtype)
    w2 = (rng.standard_normal((3, 3, 2, 3)) / 4).astype(dtype)
    b2 = (rng.standard_normal(3) / 4).astype(dtype)
    return w1, b1, w2, b2


def _chain(dtype):
    w1, b1, w2, b2 = _weights(dtype)
    return fx.chain(
        fx.conv(w1, b1, "NNlib.relu", pad=(1, 1, 1, 1)),
        upsample_doc("bilinear", scale=(2, 2)),
        pixelshuffle_doc(2),
        fx.conv(w2, b2, "Base.identity", pad=(1, 1, 1, 1)),
        upsample_doc("nearest", scale=2),
        upsample_doc("bilinear", size=(30, 27)),
    )


def _conv(t, w, b, pad):
    k = torch.from_numpy(np.ascontiguousarray(np.asarray(w, np.float64).transpose(3, 2, 1, 0)))
    k = torch.flip(k, dims=(2, 3))  # Flux's Conv flips the kernel (NNlib conv, flipped=false)
    return F.conv2d(t, k, torch.from_numpy(np.asarray(b, np.float64)), padding=pad)


def oracle(x, dtype):
    w1, b1, w2, b2 = _weights(dtype)
    t = torch.relu(_conv(_torch(x), w1, b1, 1))
    t = F.interpolate(t, size=(2 * t.shape[2], 2 * t.shape[3]), mode="bilinear", align_corners=True)
    t = torch.pixel_shuffle(t, 2)
    t = _conv(t, w2, b2, 1)
    t = F.interpolate(t, size=(2 * t.shape[2], 2 * t.shape[3]), mode="nearest")
    t = F.interpolate(t, size=(27, 30), mode="bilinear", align_corners=True)  # (X2, X1)
    return _julia(t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bson_chain_matches_the_oracle_and_keras(tmp_path, dtype):
    from porting.flux import load_model

    p = fx.save(tmp_path / "m.bson", {"model": _chain(dtype)})
    fm = load_model(p, input_size=(5, 4, 2))
    kinds = [f.layer.kind for f in fm.layers]
    assert kinds == ["conv", "upsample", "pixelshuffle", "conv", "upsample", "upsample"]
    assert "align_corners = true" in fm.layers[1].what
    model = fm.model
    x = np.random.default_rng(4).uniform(-1, 1, (5, 4, 2, 2)).astype(dtype)
    want = oracle(x, dtype)
    got = forward_knet(model, x)[-1]
    assert got.shape == want.shape == (30, 27, 3, 2)
    tol = 64 * np.finfo(dtype).eps * np.abs(want).max()
    assert np.abs(got - want).max() <= tol
    k = np.asarray(to_keras(model)(np.ascontiguousarray(x.transpose(3, 1, 0, 2))))
    assert np.abs(k.transpose(2, 1, 3, 0) - want).max() <= tol
    assert verify_model(model, x).ok


def test_scale_forms_and_refusals_in_bson(tmp_path):
    from porting.flux import load_model

    def kinds(doc, size=(4, 4, 2)):
        p = fx.save(tmp_path / "u.bson", {"model": fx.chain(doc)})
        return load_model(p, input_size=size).model

    m = kinds(upsample_doc("bilinear", scale=1.5))
    assert m.output_sizes[-1] == (6, 6, 2)  # floor(1.5 * 4)
    m = kinds(upsample_doc("trilinear", scale=(2, 1, 3)), (2, 3, 2, 1))
    assert m.output_sizes[-1] == (4, 3, 6, 1)
    # a Float32 scale is a primitive struct of 4 bytes in the file (BSON.jl lower(x) of bits)
    doc = upsample_doc("bilinear", scale=(2, 2))
    doc["data"][0] = fx.tuple_(fx.float32(1.5), 2)
    m = kinds(doc)
    assert m.output_sizes[-1] == (6, 8, 2)
    m = kinds(upsample_doc("nearest", size=(8, 12)))
    assert m.output_sizes[-1] == (8, 12, 2)
    with pytest.raises(PortingError, match="integer scales only"):
        kinds(upsample_doc("nearest", scale=2.0))
    with pytest.raises(PortingError, match="mode :cubic"):
        kinds(upsample_doc("cubic", scale=2))
    with pytest.raises(PortingError, match="expected nothing, a number"):
        kinds(upsample_doc("nearest", scale="2"))
    with pytest.raises(PortingError, match="expected \\(r,\\)"):
        kinds(pixelshuffle_doc(True))
    with pytest.raises(PortingError, match="not divisible"):
        kinds(pixelshuffle_doc(3))


def test_cli_converts_and_verifies_and_hostile_input_exits_2(tmp_path):
    p = fx.save(tmp_path / "m.bson", {"model": _chain(np.float32)})
    out = tmp_path / "m.keras"
    r = _cli("convert", p, "--input-size", "5,4,2", "-o", out, "--verify", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_file() and "Flux" in r.stdout
    for i, doc in enumerate(
        [
            upsample_doc("bicubic", scale=2),
            upsample_doc("bilinear", scale=(2, 2), size=(4, 4)),
            fx.struct("Flux.Upsample", 2, None),  # no mode parameter
            pixelshuffle_doc(-2),
            upsample_doc("bilinear", scale=1e300),
        ]
    ):
        bad = tmp_path / f"bad{i}"
        bad.mkdir()
        src = fx.save(bad / "bad.bson", {"model": fx.chain(doc)})
        r = _cli("convert", src, "--input-size", "4,4,4", "-o", bad / "x.keras", cwd=bad)
        assert r.returncode == 2, (i, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "Upsample" in r.stderr or "PixelShuffle" in r.stderr, r.stderr
        assert sorted(f.name for f in bad.iterdir()) == ["bad.bson"]


def test_flux_state_builder():
    from porting.flux import build

    w1, b1, _, _ = _weights(np.float32)
    model = build.Chain(
        build.Conv((3, 3), (2, 8), "relu", pad=1),
        build.Upsample("bilinear", scale=2),
        build.PixelShuffle(2),
    )
    conv = {
        "σ": (),
        "weight": w1,
        "bias": b1,
        "stride": (1, 1),
        "pad": (1, 1, 1, 1),
        "dilation": (1, 1),
        "groups": 1,
    }
    for shuffle_state in ((), {"r": 2}):  # Flux 0.14: a leaf; 0.15 on: a Functors node
        state = {"layers": (conv, (), shuffle_state)}
        m = build.load_state(model, state, input_size=(5, 4, 2))
        assert [la.kind for la in m.layers] == ["conv", "upsample", "pixelshuffle"]
        assert m.output_sizes[-1] == (20, 16, 2)
        x = np.random.default_rng(5).uniform(-1, 1, (5, 4, 2, 1)).astype(np.float32)
        t = torch.relu(_conv(_torch(x), w1, b1, 1))
        t = torch.pixel_shuffle(
            F.interpolate(t, size=(8, 10), mode="bilinear", align_corners=True), 2
        )
        want = _julia(t)
        assert np.abs(forward_knet(m, x)[-1] - want).max() <= 64 * np.finfo(np.float32).eps
    with pytest.raises(PortingError, match="r"):
        build.load_state(model, {"layers": (conv, (), {"r": 3})}, input_size=(5, 4, 2))
    with pytest.raises(PortingError, match="exactly one"):
        build.Upsample("nearest")
    with pytest.raises(PortingError, match="mode"):
        build.Upsample("area", scale=2)
    with pytest.raises(PortingError, match="positive integer"):
        build.PixelShuffle(0)
