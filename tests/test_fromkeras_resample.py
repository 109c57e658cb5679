"""Keras's UpSampling1D/2D/3D -> the `upsample` kind -> Keras again, and the Julia readers.

Independent values: Keras itself (the original model's outputs) and PyTorch float64
`F.interpolate(..., align_corners=False)` for `UpSampling2D(interpolation="bilinear")`: Keras
3.15 keras/src/layers/reshaping/up_sampling2d.py resizes with `ops.image.resize` (TensorFlow's
bilinear resize, half-pixel centres, no antialiasing), whose source index `(i + 1/2) in/out -
1/2`, clamped to the first and last cells, is PyTorch's with `align_corners=False` and NNlib's
`upsample_linear(...; align_corners=false)`.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch", reason="torch is the independent oracle")

from porting import layout  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.fromkeras import from_keras  # noqa: E402
from porting.model import forward_knet, load_export, save_export, to_keras, verify_model  # noqa: E402


def _up2d():
    x = keras.Input((5, 4, 3))
    t = keras.layers.Conv2D(4, 3, name="c1")(x)
    t = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up_bilinear")(t)
    t = keras.layers.UpSampling2D((2, 3), name="up_nearest")(t)
    t = keras.layers.Conv2D(2, 1, name="c2")(t)
    return keras.Model(x, t)


def _up1d():
    x = keras.Input((6, 2))
    t = keras.layers.UpSampling1D(3, name="up1")(x)
    return keras.Model(x, keras.layers.Conv1D(3, 2, name="c")(t))


def _up3d():
    x = keras.Input((3, 2, 4, 2))
    return keras.Model(x, keras.layers.UpSampling3D((2, 1, 3), name="up3")(x))


MODELS = {"up2d": _up2d, "up1d": _up1d, "up3d": _up3d}


def _input(km, seed=0):
    shape = tuple(km.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (2, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_to_knet_and_back(name, tmp_path):
    km = MODELS[name]()
    model = from_keras(km)
    assert "upsample" in [la.kind for la in model.layers]
    x_tf = _input(km)
    x = layout.activations_from_tf(x_tf)
    expected = np.asarray(km(x_tf))
    report = verify_model(model, x)
    assert report.ok, str(report)
    knet = layout.activations_to_tf(forward_knet(model, x)[-1])
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(knet, expected, rtol=0, atol=64 * eps * np.abs(expected).max())
    # the reverse of the reverse: the same Keras layers, so the same numbers
    back = to_keras(model)
    classes = [type(la).__name__ for la in back.layers]
    assert [c for c in classes if c.startswith("UpSampling")] == [
        type(la).__name__ for la in km.layers if type(la).__name__.startswith("UpSampling")
    ]
    np.testing.assert_array_equal(np.asarray(back(x_tf)), expected)
    save_export(model, tmp_path / name)
    again = load_export(tmp_path / name)
    np.testing.assert_array_equal(np.asarray(to_keras(again)(x_tf)), expected)


def test_bilinear_is_half_pixel_as_torch():
    km = _up2d()
    model = from_keras(km)
    up = next(la for la in model.layers if la.name == "up_bilinear")
    assert (up.mode, up.align_corners, up.scale) == ("bilinear", False, (2, 2))
    x_tf = _input(km)
    x = layout.activations_from_tf(x_tf)
    i = [la.name for la in model.layers].index("up_bilinear")
    outs = forward_knet(model, x)
    before = np.asarray(outs[i - 1], np.float64)  # (X1, X2, C, N)
    t = torch.from_numpy(np.ascontiguousarray(before.transpose(3, 2, 1, 0)))
    size = (2 * before.shape[1], 2 * before.shape[0])
    want = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    want = want.numpy().transpose(3, 2, 1, 0)
    assert np.abs(outs[i] - want).max() <= 8 * np.finfo(np.float32).eps * np.abs(want).max()


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos3", "area"])
def test_other_interpolations_are_refused(interpolation):
    x = keras.Input((4, 4, 2))
    km = keras.Model(x, keras.layers.UpSampling2D(2, interpolation=interpolation)(x))
    with pytest.raises(PortingError, match=f"interpolation='{interpolation}'"):
        from_keras(km)


def test_julia_readers_handle_the_resampling_kinds(tmp_path):
    """Every key the export writes for these kinds is read by julia/src/import.jl and the
    Flux extension (the checks of tests/test_julia_import.py, on these kinds)."""
    from porting.model import KnetModel, PixelShuffle, Upsample
    from tests.test_julia_import import FLUX, IGNORED, IMPORT, KEY_READ, KIND_TEST, _function

    model = KnetModel(
        [Upsample("bilinear", scale=(2, 1.5)), Upsample("nearest", size=(8, 6)), PixelShuffle(2)],
        input_size=(2, 2, 4),
    )
    save_export(model, tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    kinds_list = IMPORT.split("const IMPORT_KINDS = (", 1)[1].split(")", 1)[0]
    listed = set(re.findall(r'"([a-z0-9]+)"', kinds_list))
    for source in (_function(IMPORT, "_layer_fn"), FLUX):
        kinds = set(KIND_TEST.findall(source))
        keys = set(KEY_READ.findall(source)) | set(KEY_READ.findall(IMPORT))
        for layer in doc["layers"]:
            assert layer["kind"] in kinds and layer["kind"] in listed
            for key, value in layer.items():
                if key not in IGNORED and value is not None:
                    assert key in keys, f"{layer['kind']}: {key} never read"
