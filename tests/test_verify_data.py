"""`porting verify-data` and `porting.model.verify_data`: data sets read batch by batch.

Expected values are derived by hand or with NumPy on the data the tests make, never from the
code under test: an identity classifier whose Keras port has two classes swapped disagrees at
top-1 exactly where a sample's largest feature is one of those two, its worst sample is the one
with the largest |x0 - x1| relative to its peak, and images decode to the pixels written.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("tensorflow")
PIL = pytest.importorskip("PIL.Image")

from porting.cli import main  # noqa: E402
from porting.errors import PortingError  # noqa: E402
from porting.model import KnetModel, save_export  # noqa: E402
from porting.model.datasets import ImageOptions, open_data  # noqa: E402
from porting.model.kinds.dense import Dense  # noqa: E402

RESNET_SIZE = (16, 16, 3)


def _images(rng, n, size=RESNET_SIZE):
    return np.asfortranarray(rng.random((*size, n), dtype=np.float32))


def _json(capsys, argv, code):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == code, out.err
    return json.loads(out.out)


# ------------------------------------------------------------------ shipped examples, files


@pytest.fixture(scope="module")
def resnet_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    x = _images(np.random.default_rng(1), 20)
    np.save(d / "x.npy", x)
    return d, x


def test_resnet_npy_json(resnet_data, capsys, tmp_path):
    d, x = resnet_data
    rep = _json(
        capsys,
        [
            "verify-data",
            "--example",
            "resnet",
            "--data",
            str(d / "x.npy"),
            "--batch-size",
            "8",
            "--worst",
            "3",
            "--json",
            "--report",
            str(tmp_path / "r.html"),
        ],
        0,
    )
    assert rep["ok"] is True and rep["partial"] is False
    assert rep["n_samples"] == rep["n_total"] == 20
    names = [lay["name"] for lay in rep["layers"]]
    assert names[0] == "stem" and names[-1] == "fc" and len(names) == 20
    for lay in rep["layers"]:
        assert lay["worst_error_to_tolerance"] <= 1.0
        assert sum(lay["histogram"]["counts"]) == 3  # batches of 8, 8, 4
        assert 0 <= lay["worst_sample"] < 20
    assert rep["classifier"]["classes"] == 10
    assert rep["classifier"]["top1_agreement"] == 1.0
    assert sum(rep["ulp_histogram"]["counts"]) == 20 * 10  # every output element, once
    assert len(rep["worst_samples"]) == 3
    rels = [w["rel_error"] for w in rep["worst_samples"]]
    assert rels == sorted(rels, reverse=True)
    # a float32 port: errors of a few eps relative to the output's peak, never more
    assert rep["end_to_end"]["max_rel_error"] < 1e-5
    page = (tmp_path / "r.html").read_text()
    assert page.index("OK: every layer") < page.index("layer-bars") < page.index("Environment")


def test_npz_folder_and_nhwc_read_the_same_samples(resnet_data, tmp_path):
    """The same 20 samples as .npy, stored and compressed .npz, a folder of chunks and
    batch-first NHWC give identical batches (checked against the array written)."""
    from porting import layout

    d, x = resnet_data
    np.savez(tmp_path / "a.npz", first=x[..., :7], second=x[..., 7:])
    np.savez_compressed(tmp_path / "c.npz", x=x)
    folder = tmp_path / "chunks"
    folder.mkdir()
    np.save(folder / "00.npy", x[..., :5])
    np.save(folder / "01.npy", x[..., 5:])
    np.save(tmp_path / "nhwc.npy", layout.activations_to_tf(x, "reverse"))
    cases = [
        (tmp_path / "a.npz", "julia"),
        (tmp_path / "c.npz", "julia"),
        (folder, "julia"),
        (tmp_path / "nhwc.npy", "nhwc"),
    ]
    for path, lay in cases:
        src = open_data(path, RESNET_SIZE, np.float32, layout=lay)
        assert src.n == 20
        got = np.concatenate([b for _, b in src.batches(6)], axis=-1)
        np.testing.assert_array_equal(got, x)
    stored = open_data(tmp_path / "a.npz", RESNET_SIZE, np.float32)
    assert all(isinstance(c.array, np.memmap) for c in stored._chunks)  # mapped, not read
    assert "compressed" in open_data(tmp_path / "c.npz", RESNET_SIZE, np.float32).notes[0]
    assert stored.label(8) == f"{tmp_path / 'a.npz'}:second[1]"


@pytest.mark.parametrize("example", ["cnn-bn", "vae", "layers21"])
def test_other_examples_on_generated_npz(example, tmp_path, capsys):
    from porting.examples.models import EXAMPLES

    model = EXAMPLES[example][0]()
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "x.npz", x=rng.uniform(-1, 1, (*model.input_size, 6)).astype(np.float32))
    rep = _json(
        capsys,
        [
            "verify-data",
            "--example",
            example,
            "--data",
            str(tmp_path / "x.npz"),
            "--batch-size",
            "4",
            "--json",
        ],
        0,
    )
    assert rep["ok"] and rep["n_samples"] == 6
    assert (rep["classifier"] is None) == (example == "vae")  # an image out, no classes


# ------------------------------------------------------------------ planted disagreement


def _identity_classifier(n=12):
    return KnetModel([Dense(np.eye(n, dtype=np.float32), name="dense1")], input_size=(n,))


def test_swapped_classes_found_per_sample(tmp_path, capsys):
    """A port with classes 0 and 1 swapped: the figures are derived from the data alone."""
    from porting.model import save_keras, to_keras

    model = _identity_classifier()
    prefix = tmp_path / "ident"
    save_export(model, prefix)
    km = to_keras(model)
    w = km.get_layer("dense1").get_weights()
    w[0] = w[0][:, [1, 0, *range(2, 12)]]
    km.get_layer("dense1").set_weights(w)
    save_keras(km, tmp_path / "swapped.keras")
    rng = np.random.default_rng(3)
    x = np.asfortranarray(rng.standard_normal((12, 50)).astype(np.float32))
    np.save(tmp_path / "x.npy", x)
    rep = _json(
        capsys,
        [
            "verify-data",
            str(prefix),
            str(tmp_path / "swapped.keras"),
            "--data",
            str(tmp_path / "x.npy"),
            "--batch-size",
            "16",
            "--worst",
            "1",
            "--json",
        ],
        1,
    )
    assert rep["ok"] is False and rep["first_divergent"] == "dense1"
    top1 = x.argmax(axis=0)
    want = np.flatnonzero(np.isin(top1, [0, 1])).tolist()
    cls = rep["classifier"]
    assert cls["top1_disagree_samples"] == want and cls["top1_disagree"] == len(want)
    assert cls["top1_agreement"] == pytest.approx(1 - len(want) / 50)
    top5 = np.argsort(-x, axis=0)[:5]
    in5 = np.isin(top5, [0, 1]).sum(axis=0)
    assert cls["top5_agreement"] == pytest.approx(np.mean(in5 != 1))
    rel = np.abs(x[0] - x[1]).astype(np.float64) / np.abs(x).max(axis=0)
    assert rep["worst_samples"][0]["index"] == int(rel.argmax())
    assert rep["worst_samples"][0]["label"] == f"{tmp_path / 'x.npy'}[{int(rel.argmax())}]"
    assert rep["end_to_end"]["max_abs_error"] == pytest.approx(float(np.abs(x[0] - x[1]).max()))
    layer = rep["layers"][0]
    assert layer["batches_over_tolerance"] == 4 and layer["worst_error_to_tolerance"] > 1


def test_interrupt_gives_partial_report():
    from porting.model.verify_data import verify_data

    model = _identity_classifier()
    x = np.asfortranarray(np.random.default_rng(4).standard_normal((12, 40)).astype(np.float32))

    def stop_after_two(done, total):
        if done >= 20:
            raise KeyboardInterrupt

    r = verify_data(model, x, batch_size=10, progress=stop_after_two)
    assert r.partial and r.n_samples == 20 and r.n_total == 40
    assert r.verdict().startswith("PARTIAL") and r.to_dict()["partial"] is True
    assert sum(r.layers[0].histogram) == 2


def test_cli_interrupt_prints_partial_json(tmp_path, capsys, monkeypatch):
    import contextlib

    from porting.commands import verify_data as cmd

    @contextlib.contextmanager
    def bar(enabled):
        def update(done, total):
            raise KeyboardInterrupt

        yield update

    monkeypatch.setattr(cmd, "_progress_bar", bar)
    model = _identity_classifier()
    save_export(model, tmp_path / "m")
    np.save(tmp_path / "x.npy", np.ones((12, 30), np.float32))
    rep = _json(
        capsys,
        [
            "verify-data",
            str(tmp_path / "m"),
            "--data",
            str(tmp_path / "x.npy"),
            "--batch-size",
            "7",
            "--json",
        ],
        130,
    )
    assert rep["partial"] is True and rep["n_samples"] == 7 and rep["n_total"] == 30


# ------------------------------------------------------------------ images


def _write_png(path, pixels):
    PIL.fromarray(pixels).save(path)


def test_image_folder_preprocessing(tmp_path, capsys):
    """Pixels written as PNG come back as (pixel * scale - mean) / std, X1 the width."""
    rng = np.random.default_rng(5)
    pix = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C)
    for i, p in enumerate(pix):
        _write_png(tmp_path / f"img{i}.png", p)
    PIL.fromarray(pix[0]).save(tmp_path / "img3.jpg", quality=95)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    opts = ImageOptions(scale=1 / 255, mean=mean, std=std, channels="bgr")
    src = open_data(tmp_path, RESNET_SIZE, np.float32, images=opts)
    assert src.n == 4 and src.label(3) == "img3.jpg"
    ((_, x),) = list(src.batches(4))
    for n in range(3):
        for c in range(3):
            want = (pix[n, :, :, 2 - c] / 255.0 - mean[c]) / std[c]  # BGR: channel 0 is blue
            np.testing.assert_allclose(x[:, :, c, n], want.T, rtol=1e-6, atol=1e-6)
    rep = _json(
        capsys,
        [
            "verify-data",
            "--example",
            "resnet",
            "--data",
            str(tmp_path),
            "--json",
            "--mean",
            "0.5,0.4,0.3",
            "--std",
            "0.2,0.25,0.5",
        ],
        0,
    )
    assert rep["ok"] and rep["n_samples"] == 4
    assert rep["worst_samples"][0]["label"].startswith("img")


def test_image_resize(tmp_path):
    _write_png(tmp_path / "big.png", np.full((20, 24, 3), 200, np.uint8))
    with pytest.raises(PortingError, match=r"big.png.*20x24.*--resize 16,16"):
        list(open_data(tmp_path, RESNET_SIZE, np.float32).batches(1))
    src = open_data(tmp_path, RESNET_SIZE, np.float32, images=ImageOptions(resize=(16, 16)))
    ((_, x),) = list(src.batches(1))
    np.testing.assert_allclose(x, 200 / 255, rtol=1e-6)  # a flat image stays flat


# ------------------------------------------------------------------ hostile input


def _hostile_cases(tmp_path):
    cases = {}
    np.save(tmp_path / "wrongshape.npy", np.zeros((16, 16, 4, 2), np.float32))
    cases["wrongshape.npy"] = tmp_path / "wrongshape.npy"
    np.save(tmp_path / "batchfirst.npy", np.zeros((2, 16, 16, 3), np.float32))
    cases["give --layout nhwc"] = tmp_path / "batchfirst.npy"
    for name, arr in {
        "complex.npy": np.zeros((16, 16, 3, 2), np.complex64),
        "bool.npy": np.zeros((16, 16, 3, 2), bool),
        "text.npy": np.full((16, 16, 3, 2), "a"),
    }.items():
        np.save(tmp_path / name, arr)
        cases[name] = tmp_path / name
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = tmp_path / "empty"
    notimg = tmp_path / "notimg"
    notimg.mkdir()
    (notimg / "fake.png").write_bytes(b"not a png at all")
    cases["fake.png"] = notimg
    other = tmp_path / "other"
    other.mkdir()
    _write_png(other / "a.png", np.zeros((16, 16, 3), np.uint8))
    (other / "labels.txt").write_text("cat\n")
    cases["labels.txt"] = other
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "wrongshape.npy").read_bytes()[:200])
    cases["trunc.npy"] = tmp_path / "trunc.npy"
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as zf:
        zf.writestr("notes.txt", "hello")
    cases["notes.txt"] = tmp_path / "member.npz"
    (tmp_path / "x.csv").write_text("1,2\n")
    cases["x.csv"] = tmp_path / "x.csv"
    return cases


def test_hostile_data_exit_2_naming_the_file(tmp_path, capsys):
    for needle, path in _hostile_cases(tmp_path).items():
        rc = main(["verify-data", "--example", "resnet", "--data", str(path)])
        err = capsys.readouterr().err
        assert rc == 2, (needle, err)
        assert needle in err or str(path) in err, (needle, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_options(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((16, 16, 3, 2), np.float32))
    d = str(tmp_path / "x.npy")
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        main(["verify-data", "--example", "resnet", "--data", d, "--batch-size", "0"])
    assert e.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
    assert main(["verify-data", "--example", "resnet", "--data", d, "--report", d]) == 2
    assert "--report" in capsys.readouterr().err


def test_convert_verify_report(tmp_path, capsys):
    out = tmp_path / "lenet.html"
    assert main(["convert", "--example", "lenet", "--verify", "--report", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "OK: every layer within its tolerance on" in page and page.count("data:image/png") == 3
    assert "wrote" in capsys.readouterr().out
    assert main(["convert", "--example", "lenet", "--report", str(tmp_path / "x.html")]) == 2
    assert "--verify" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_partial_report_page_says_so():
    from porting.model.verify_data import verify_data
    from porting.report_html import render

    model = _identity_classifier()
    x = np.asfortranarray(np.random.default_rng(6).standard_normal((12, 30)).astype(np.float32))

    def stop(done, total):
        raise KeyboardInterrupt

    page = render(verify_data(model, x, batch_size=10, progress=stop))
    assert 'class="verdict partial"' in page and "PARTIAL (interrupted)" in page
    assert "10 of 30 samples" in page


def test_token_model_on_integer_data(tmp_path, capsys):
    """rnnlm takes (T, B) token indices, 1-based as in Julia: integers pass, floats do not."""
    from porting.examples.models import EXAMPLES

    model = EXAMPLES["rnnlm"][0]()
    (t,) = model.input_size
    vocab = model.layers[0].w.shape[1]
    toks = np.random.default_rng(8).integers(1, vocab + 1, (t, 5)).astype(np.int32)
    np.save(tmp_path / "tok.npy", toks)
    rep = _json(
        capsys,
        ["verify-data", "--example", "rnnlm", "--data", str(tmp_path / "tok.npy"), "--json"],
        0,
    )
    assert rep["ok"] and rep["n_samples"] == 5
    np.save(tmp_path / "f.npy", toks.astype(np.float32))
    assert main(["verify-data", "--example", "rnnlm", "--data", str(tmp_path / "f.npy")]) == 2
    assert "f.npy" in capsys.readouterr().err


def test_report_outputs_are_the_end_to_end_outputs():
    """verify_data reads the per-sample figures from `ModelReport.outputs`: Knet's final output
    and the port's own chain, the very arrays a separate forward pass on each side gives."""
    from porting import layout
    from porting.examples.lenet import lenet, lenet_input
    from porting.model import forward_knet, to_keras, verify_model

    model, x = lenet(), lenet_input()
    km = to_keras(model)
    for mode in ("each", "whole"):
        expected, actual = verify_model(model, x, keras_model=km, mode=mode).outputs
        np.testing.assert_array_equal(expected, forward_knet(model, x).final.T)
        want = np.asarray(km(layout.activations_to_tf(x)))
        # a doubled batch in "each" mode: the same layers, within 64 eps of the output scale
        eps = np.finfo(want.dtype).eps
        np.testing.assert_allclose(actual, want, rtol=0, atol=64 * eps * np.abs(want).max())
