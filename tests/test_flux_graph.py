"""Flux's branching layers, global/adaptive pools and pre-0.13 DepthwiseConv, read from
BSON.jl-encoded files, against a PyTorch float64 oracle written here from Flux/NNlib's source:

- ``SkipConnection(layers, connection)`` is ``connection(layers(x), x)`` (Flux v0.14.25
  ``src/layers/basic.jl``); ``Parallel(connection, layers)`` is ``connection(map(f -> f(x),
  layers)...)``; ``vcat`` joins along Flux's first dimension (the features of a ``(F, N)``
  matrix); Metalhead's ``cat_channels`` is ``cat(xs...; dims=3)``.
- ``GlobalMaxPool``/``GlobalMeanPool`` pool over the whole spatial size, keeping ``(1, 1, C, N)``;
  ``AdaptiveMaxPool(out)``/``AdaptiveMeanPool(out)`` use ``stride = in ÷ out``,
  ``k = in - (out - 1) * stride``, no padding (Flux v0.14.25 ``src/layers/conv.jl``).
- Flux 0.12's ``DepthwiseConv`` weight is ``(k1, k2, multiplier, Cin)`` and NNlib's output
  channel is ``(c_in - 1) * multiplier + m`` (NNlib v0.9.0 ``src/impl/depthwiseconv_direct.jl``),
  a true (flipped) convolution per input channel.

Nothing here calls porting's own forward; the converted Keras model is run and compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from porting.errors import PortingError
from porting.examples import flux as fx

torch = pytest.importorskip("torch", reason="torch is the independent oracle for Flux layers")
F = torch.nn.functional
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- oracle (Flux semantics)


def t64(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float64)))


def nchw(x):  # Julia (X1, X2, C, N) -> torch (N, C, X1, X2)
    return t64(np.asarray(x).transpose(3, 2, 0, 1))


def julia(t):  # torch (N, C, X1, X2) -> Julia (X1, X2, C, N)
    return t.numpy().transpose(2, 3, 1, 0)


def conv(t, w, b, pad=1, act=None):
    """Flux Conv: NNlib conv, flipped kernel; `w` Julia (k1, k2, Cin, Cout)."""
    k = torch.flip(t64(np.asarray(w).transpose(3, 2, 0, 1)), dims=(2, 3))
    y = F.conv2d(t, k, t64(b), padding=pad)
    return act(y) if act else y


def dense(t, w, b, act=None):  # t (N, F)
    y = t @ t64(w).T + t64(b)
    return act(y) if act else y


def flatten(t):  # Flux.flatten: column-major (X1 fastest) -> (N, F)
    return t.permute(0, 1, 3, 2).reshape(t.shape[0], -1)


def keras_run(model, x, dtype):
    from porting.model import to_keras

    km = to_keras(model, input_size=tuple(np.shape(x)[:-1]))
    xk = np.asarray(x, dtype)
    xk = xk.T if xk.ndim == 2 else xk.transpose(3, 1, 0, 2)
    y = np.asarray(km(xk))
    return y.T if y.ndim == 2 else y.transpose(2, 1, 3, 0)


def assert_close(got, want, dtype, k=1000):
    tol = k * np.finfo(dtype).eps * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= tol, (err, tol)


def weights(rng, dtype, *shape):
    return (rng.standard_normal(shape) / np.sqrt(max(1, np.prod(shape[:-1])))).astype(dtype)


def save(tmp_path, model, name="m.bson"):
    return fx.save(tmp_path / name, {"model": model})


def fconv(w, b, act="Base.identity"):
    return fx.conv(w, b, act, pad=(1, 1, 1, 1))


# ---------------------------------------------------------------- SkipConnection, Parallel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_skip_connection_residual_block(tmp_path, dtype):
    from porting.flux import load_model

    rng = np.random.default_rng(0)
    w0, b0 = weights(rng, dtype, 3, 3, 2, 4), weights(rng, dtype, 4)
    w1, b1 = weights(rng, dtype, 3, 3, 4, 4), weights(rng, dtype, 4)
    w2, b2 = weights(rng, dtype, 3, 3, 4, 4), weights(rng, dtype, 4)
    wd, bd = weights(rng, dtype, 3, 4), weights(rng, dtype, 3)
    model = fx.chain(
        fconv(w0, b0, "NNlib.relu"),
        fx.skip(fx.chain(fconv(w1, b1, "NNlib.relu"), fconv(w2, b2))),
        fx.function("NNlib.relu"),
        fx.global_pool("GlobalMeanPool"),
        fx.function("Flux.flatten"),
        fx.dense(wd, bd),
    )
    fm = load_model(save(tmp_path, model), input_size=(6, 5, 2))
    kinds = [f.layer.kind for f in fm.layers]
    assert kinds == ["conv", "conv", "conv", "add", "activation", "pool", "mat", "dense"]
    assert fm.model["add1"].inputs == ("conv3", "conv1")
    x = np.random.default_rng(1).uniform(-1, 1, (6, 5, 2, 3))
    t = conv(nchw(x), w0, b0, act=torch.relu)
    t = torch.relu(conv(conv(t, w1, b1, act=torch.relu), w2, b2) + t)
    t = t.mean(dim=(2, 3), keepdim=True)  # GlobalMeanPool: (1, 1, C, N)
    want = dense(flatten(t), wd, bd).numpy().T
    assert_close(keras_run(fm.model, x, dtype), want, dtype)


def test_parallel_vcat_of_dense_branches_and_identity(tmp_path):
    from porting.flux import load_model

    rng = np.random.default_rng(2)
    w1, b1 = weights(rng, np.float32, 3, 5), weights(rng, np.float32, 3)
    w2, b2 = weights(rng, np.float32, 2, 5), weights(rng, np.float32, 2)
    wo, bo = weights(rng, np.float32, 4, 10), weights(rng, np.float32, 4)
    model = fx.chain(
        fx.parallel(
            "Base.vcat",
            fx.dense(w1, b1),
            fx.dense(w2, b2, "NNlib.relu"),
            fx.function("Base.identity"),
        ),
        fx.dense(wo, bo, "NNlib.σ"),
    )
    fm = load_model(save(tmp_path, model))
    assert fm.model.input_size == (5,)
    x = np.random.default_rng(3).uniform(-1, 1, (5, 4))
    t = t64(x.T)
    y = torch.cat([dense(t, w1, b1), dense(t, w2, b2, torch.relu), t], dim=1)  # vcat: features
    want = dense(y, wo, bo, torch.sigmoid).numpy().T
    assert_close(keras_run(fm.model, x, np.float32), want, np.float32)


@pytest.mark.parametrize("cat", ["Metalhead.cat_channels", "Metalhead.Layers.cat_channels"])
def test_parallel_add_and_cat_channels_of_conv_branches(tmp_path, cat):
    from porting.flux import load_model

    rng = np.random.default_rng(4)
    wa, ba = weights(rng, np.float32, 3, 3, 2, 3), weights(rng, np.float32, 3)
    wb, bb = weights(rng, np.float32, 3, 3, 2, 3), weights(rng, np.float32, 3)
    wc, bc = weights(rng, np.float32, 3, 3, 3, 2), weights(rng, np.float32, 2)
    wd, bd = weights(rng, np.float32, 3, 3, 3, 4), weights(rng, np.float32, 4)
    model = fx.chain(
        fx.parallel("Base.+", fconv(wa, ba, "NNlib.relu"), fconv(wb, bb)),
        fx.parallel(cat, fconv(wc, bc), fconv(wd, bd, "NNlib.relu")),
    )
    fm = load_model(save(tmp_path, model), input_size=(5, 6, 2))
    assert fm.model.output_sizes[-1] == (5, 6, 6)
    x = np.random.default_rng(5).uniform(-1, 1, (5, 6, 2, 2))
    t = nchw(x)
    t = conv(t, wa, ba, act=torch.relu) + conv(t, wb, bb)
    t = torch.cat([conv(t, wc, bc), conv(t, wd, bd, act=torch.relu)], dim=1)  # dims=3: channels
    assert_close(keras_run(fm.model, x, np.float32), julia(t), np.float32)


def test_nested_skip_inside_second_parallel_branch(tmp_path):
    """Parallel(+, Dense, SkipConnection(Dense, +)): the skip's input is the Parallel's input,
    not the first branch's output."""
    from porting.flux import load_model

    rng = np.random.default_rng(11)
    w1, b1 = weights(rng, np.float32, 4, 4), weights(rng, np.float32, 4)
    w2, b2 = weights(rng, np.float32, 4, 4), weights(rng, np.float32, 4)
    w3, b3 = weights(rng, np.float32, 4, 4), weights(rng, np.float32, 4)
    model = fx.chain(
        fx.dense(w1, b1, "NNlib.relu"),
        fx.parallel("Base.+", fx.dense(w2, b2), fx.skip(fx.dense(w3, b3, "Base.tanh"))),
    )
    fm = load_model(save(tmp_path, model))
    x = np.random.default_rng(12).uniform(-1, 1, (4, 3))
    h = dense(t64(x.T), w1, b1, torch.relu)
    want = (dense(h, w2, b2) + (dense(h, w3, b3, torch.tanh) + h)).numpy().T
    assert_close(keras_run(fm.model, x, np.float32), want, np.float32)


def _refusal(tmp_path, model, match, **kw):
    from porting.flux import load_model

    with pytest.raises(PortingError, match=match) as e:
        load_model(save(tmp_path, model), **kw)
    return str(e.value)


def test_connections_refused_with_reason(tmp_path):
    rng = np.random.default_rng(6)
    w, b = weights(rng, np.float32, 3, 3, 2, 2), weights(rng, np.float32, 2)
    d, db = weights(rng, np.float32, 3, 3), weights(rng, np.float32, 3)
    # vcat of images joins their widths
    msg = _refusal(tmp_path, fx.chain(fx.parallel("Base.vcat", fconv(w, b), fconv(w, b))), "vcat")
    assert "width" in msg and "model.1" in msg
    # cat_channels of (F, N) matrices makes a third dimension
    m = fx.chain(fx.parallel("Metalhead.cat_channels", fx.dense(d, db), fx.dense(d, db)))
    assert "vcat" in _refusal(tmp_path, m, "third dimension")
    # any other named function: never run, named, with the connections that convert
    msg = _refusal(tmp_path, fx.chain(fx.skip(fconv(w, b), "Base.:*")), "connection")
    assert "Base.:*" in msg and "`+`" in msg and "model.1.connection" in msg
    m = fx.chain(fx.skip(fconv(w, b), "Main.mycat"))
    assert "Main.mycat" in _refusal(tmp_path, m, "never run")


# ---------------------------------------------------------------- global / adaptive pools


@pytest.mark.parametrize(
    "kind, out, size",
    [
        ("AdaptiveMaxPool", (3, 2), (7, 6)),  # 7 ÷ 3 = 2: stride 2, k = 7 - 2*2 = 3 (overlap)
        ("AdaptiveMeanPool", (2, 3), (6, 6)),  # divides: k = stride = in / out
        ("AdaptiveMeanPool", (2, 2), (5, 7)),
        ("GlobalMaxPool", None, (5, 4)),
    ],
)
def test_adaptive_and_global_pools(tmp_path, kind, out, size):
    from porting.flux import load_model

    layer = fx.global_pool(kind) if out is None else fx.adaptive_pool(out, kind)
    fm = load_model(save(tmp_path, fx.chain(layer)), input_size=(*size, 3))
    x = np.random.default_rng(7).uniform(-1, 1, (*size, 3, 2))
    t = nchw(x)
    if out is None:
        want = t.amax(dim=(2, 3), keepdim=True)
    else:  # Flux's formula
        stride = tuple(i // o for i, o in zip(size, out, strict=True))
        k = tuple(i - (o - 1) * s for i, o, s in zip(size, out, stride, strict=True))
        pool = F.max_pool2d if kind == "AdaptiveMaxPool" else F.avg_pool2d
        want = pool(t, k, stride=stride)
        assert want.shape[2:] == out
        if all(i % o == 0 for i, o in zip(size, out, strict=True)):  # PyTorch's agrees then
            ada = F.adaptive_max_pool2d if kind == "AdaptiveMaxPool" else F.adaptive_avg_pool2d
            np.testing.assert_allclose(ada(t, out).numpy(), want.numpy(), rtol=1e-12)
    assert_close(keras_run(fm.model, x, np.float32), julia(want), np.float32)


def test_pools_refused_without_or_with_bad_input_size(tmp_path):
    m = fx.chain(fx.global_pool("GlobalMeanPool"))
    assert "--input-size" in _refusal(tmp_path, m, "GlobalMeanPool takes its window")
    m = fx.chain(fx.adaptive_pool((4, 4), "AdaptiveMaxPool"))
    msg = _refusal(tmp_path, m, "cannot be larger", input_size=(3, 8, 2))
    assert "(3, 8)" in msg and "model.1" in msg
    m = fx.chain(fx.adaptive_pool((2, 2, 2), "AdaptiveMaxPool"))
    _refusal(tmp_path, m, "3 output sizes", input_size=(4, 4, 2))


# ---------------------------------------------------------------- DepthwiseConv (Flux 0.12)


def test_depthwise_conv_v012(tmp_path):
    from porting.flux import load_model

    rng = np.random.default_rng(8)
    mult, cin = 2, 3
    w = weights(rng, np.float32, 3, 2, mult, cin)
    b = weights(rng, np.float32, mult * cin)
    m = fx.chain(fx.depthwise_v012(w, b, "NNlib.relu", pad=(1, 0)))
    fm = load_model(save(tmp_path, m), input_size=(6, 5, cin))
    assert "groups=3" in fm.report()
    x = rng.uniform(-1, 1, (6, 5, cin, 2))
    t = F.pad(nchw(x), (0, 0, 1, 1))
    outs = []  # NNlib: output channel (c_in - 1) * mult + m convolves input channel c_in
    for c in range(cin):
        for j in range(mult):
            k = torch.flip(t64(w[:, :, j, c]), dims=(0, 1))[None, None]
            outs.append(F.conv2d(t[:, c : c + 1], k) + float(b[c * mult + j]))
    want = torch.relu(torch.cat(outs, dim=1))
    assert_close(keras_run(fm.model, x, np.float32), julia(want), np.float32)


# ---------------------------------------------------------------- examples and the CLI


from tests.test_flux import _cli  # noqa: E402 - the same subprocess runner


def test_resnet_example_matches_oracle(tmp_path):
    from porting.flux import load_model

    p = fx.save_resnet(tmp_path / "r.bson", seed=1)
    fm = load_model(p, input_size=(16, 16, 3))
    doc = fx.resnet(1)["data"][0]["data"]

    def arr(d):
        return np.frombuffer(d["data"], "<f4").reshape(d["size"], order="F")

    def wb(c):
        return arr(c["data"][1]), arr(c["data"][2])

    x = np.random.default_rng(9).uniform(-1, 1, (16, 16, 3, 2))
    t = conv(nchw(x), *wb(doc[0]), act=torch.relu)
    for blk in doc[1:3]:
        inner = blk["data"][0]["data"][0]["data"][0]["data"][0]["data"]  # Chain(Skip(Chain))
        y = conv(conv(t, *wb(inner[0]), act=torch.relu), *wb(inner[1]))
        t = torch.relu(y + t)
    t = F.max_pool2d(t, 2).mean(dim=(2, 3), keepdim=True)
    d = doc[-1]["data"]
    want = dense(flatten(t), arr(d[0]), arr(d[1])).numpy().T
    assert_close(keras_run(fm.model, x, np.float32), want, np.float32)


@pytest.mark.parametrize("name", ["flux-lenet", "flux-resnet", "flux-lstm"])
def test_cli_flux_examples_convert_and_verify(tmp_path, name):
    r = _cli("convert", "--example", name, "-o", tmp_path / "m.keras", "--verify", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "m.keras").is_file() and "Flux" in r.stdout


def test_cli_refused_connection_exit_2_nothing_written(tmp_path):
    rng = np.random.default_rng(10)
    w, b = weights(rng, np.float32, 3, 3, 2, 2), weights(rng, np.float32, 2)
    p = save(tmp_path, fx.chain(fx.skip(fconv(w, b), "Main.mycat")))
    r = _cli("convert", p, "--input-size", "5,5,2", "-o", tmp_path / "o.keras", cwd=tmp_path)
    assert r.returncode == 2 and "Main.mycat" in r.stderr and "Traceback" not in r.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.bson"]
