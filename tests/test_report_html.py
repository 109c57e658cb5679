"""The HTML report (porting.report_html): self-contained, escaped, and drawn in a real browser.

The browser tests open the page in headless Chromium (Debian's `chromium` package; `.ci/run`
installs it) and read its console from Chromium's log: a script error or a resource the page's
Content-Security-Policy blocks (anything not inline) shows there, which two control pages
prove. The screenshot must hold the bar colours (green, per layer) above the histogram's blue.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from porting.report_html import render, write_report  # noqa: E402

GREEN = (0x2E, 0x7D, 0x32)  # a layer within tolerance
RED = (0xC6, 0x28, 0x28)  # a layer outside it
BLUE = (0x15, 0x65, 0xC0)  # the ULP histogram
HOSTILE = '</script><script>alert(1)</script><img src="http://example.invalid/x">\x1b[2J\n$\\frac{'


@pytest.fixture(scope="module")
def report():
    from porting.examples.models import resnet
    from porting.model.verify_data import verify_data

    rng = np.random.default_rng(7)
    x = np.asfortranarray(rng.random((16, 16, 3, 8), dtype=np.float32))
    return verify_data(resnet(), x, batch_size=4, k_worst=2)


def _hostile(report):
    import copy

    r = copy.deepcopy(report)
    r.layers[0].name = HOSTILE
    r.layers[1].kind = HOSTILE
    r.data = HOSTILE
    r.notes = [HOSTILE]
    r.worst_samples[0]["label"] = HOSTILE
    r.error_map = dict(r.error_map, layer=HOSTILE, label=HOSTILE)
    return r


def test_page_is_self_contained_and_escaped(report, tmp_path):
    page = render(_hostile(report), title=HOSTILE)
    assert "<script" not in page and "alert(1)</script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert "\x1b" not in page and "\\x1b[2J\\n" in page  # control characters shown
    # every resource is inline: the only src= values are data: URLs, no link/script tags
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "http://" not in page.replace("http://example.invalid", "")
    order = [
        page.index(k)
        for k in (
            'id="verdict"',
            'id="layer-bars"',
            'id="ulp-histogram"',
            'id="error-map"',
            "<h2>Environment",
        )
    ]
    assert order == sorted(order)
    out = write_report(report, tmp_path / "r.html")
    assert open(out, encoding="utf-8").read().startswith("<!DOCTYPE html>")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


def _open(page, tmp_path, name):
    """Screenshot of `page` and the console lines Chromium logged while loading it."""
    exe = _chromium()
    shot = tmp_path / f"{name}.png"
    proc = subprocess.run(
        [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / ('profile-' + name)}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,3000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return np.asarray(Image.open(shot).convert("RGB")), console


def _rows_with(img, rgb, tol=8):
    hit = np.abs(img.astype(int) - np.array(rgb)).max(axis=2) <= tol
    return np.flatnonzero(hit.sum(axis=1) >= 3), int(hit.sum())


def test_console_detection_works(tmp_path):
    """Control pages: a script error and a blocked network image each reach the console."""
    csp = (
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:">'
    )
    bad_script = tmp_path / "script.html"
    bad_script.write_text(
        "<!DOCTYPE html><html><body><script>undefined_fn()</script></body></html>"
    )
    bad_img = tmp_path / "img.html"
    bad_img.write_text(
        f"<!DOCTYPE html><html><head>{csp}</head><body>"
        '<img src="http://example.invalid/x.png"></body></html>'
    )
    for page in (bad_script, bad_img):
        img, console = _open(page, tmp_path, page.stem)
        assert console, page
        assert _rows_with(img, GREEN)[1] == 0  # and no bars on a page without plots


def test_report_in_chromium(report, tmp_path):
    page = tmp_path / "report.html"
    write_report(_hostile(report), page)
    img, console = _open(page, tmp_path, "report")
    assert console == []  # no script ran, nothing was blocked, no error
    green_rows, n_green = _rows_with(img, GREEN)
    blue_rows, n_blue = _rows_with(img, BLUE)
    assert n_green > 2000 and n_blue > 2000  # bars and histogram drawn, not blank images
    assert green_rows.max() < blue_rows.min()  # the layer bars come first
    assert _rows_with(img, RED)[1] == 0  # every layer of this port is within tolerance
