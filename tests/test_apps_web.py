"""apps/web in a real browser: Debian's chromium, headless, driven by Playwright for Python, against
apps/web/serve.py. `npm ci` in apps/web provides onnxruntime-web and LiteRT.js (README, .ci/run)."""
from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from apps_helpers import WEB, raw_heldout_digits

from edgekit.targets.formats import get_format
from edgekit.pipeline.validate_file import validate_against

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")]
SAMPLES = 120  # validation digits run in the page per file


@contextlib.contextmanager
def serving(bundle: Path):
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail(f"{WEB}/node_modules is missing: run `npm ci` in apps/web (the README's install step)")
    proc = subprocess.Popen([sys.executable, str(WEB / "serve.py"), str(bundle), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().split()[-1].split("?")[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(apps_bundle):
    with serving(apps_bundle) as url:
        yield url


def _page(browser, url, query="autoload=0"):
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}?{query}")
    page.wait_for_function("window.edgekit && window.edgekit.ready", timeout=30_000)
    assert errors == [], errors
    return page


def test_pages_are_cross_origin_isolated(site, browser):
    headers = urllib.request.urlopen(site).headers
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    page = _page(browser, site)
    assert page.evaluate("crossOriginIsolated") is True
    page.close()


@pytest.mark.parametrize("runtime, file", [("onnxruntime", "digits_cnn.onnx"), ("litert", "digits_cnn.tflite"),
                                           ("onnxruntime", "digits_cnn_int8.onnx"),
                                           ("litert", "digits_cnn_int8.tflite")])
def test_browser_outputs_match_the_python_runtimes(apps_bundle, site, browser, tmp_path, runtime, file):
    """The page's recipe on the raw digits, then the file in onnxruntime-web or LiteRT.js, against the same
    file in the Python runtime on edgekit's own preprocessed inputs: fp32 within the format's tolerance,
    int8 by top-1 agreement within the accuracy budget (wasm and x86 integer kernels round differently)."""
    saved = tmp_path / "host.npz"
    validate_against(apps_bundle / file, save_outputs=saved)
    host = np.load(saved)
    index, expected = host["index"][:SAMPLES], host["logits"][:SAMPLES]
    raw, _ = raw_heldout_digits()
    page = _page(browser, site)
    opened = page.evaluate("([rt, f]) => edgekit.open('bundle/', rt, {file: f})", [runtime, file])
    assert opened["file"] == file
    got = np.array([o["logits"] for o in page.evaluate("raws => edgekit.runRaw(raws)", raw[index].tolist())])
    page.close()
    assert got.shape == expected.shape
    precision = "fp32" if file in ("digits_cnn.onnx", "digits_cnn.tflite") else "int8"
    tolerance = get_format("onnx" if file.endswith(".onnx") else "tflite").tolerance_for(precision)
    if tolerance is not None:
        bad = np.abs(got - expected) > tolerance.atol + tolerance.rtol * np.abs(expected)
        assert not bad.any(), f"{file}: {int(bad.sum())} values off, max {np.abs(got - expected).max():.3g}"
    else:
        agreement = (got.argmax(1) == expected.argmax(1)).mean()
        assert agreement >= 0.98, (file, agreement)


def test_the_page_shows_the_label_of_a_known_and_a_drawn_digit(site, browser, tmp_path):
    raw, labels = raw_heldout_digits()
    page = _page(browser, site, query="bundle=bundle/&runtime=litert&file=digits_cnn_int8.tflite")  # autoload
    page.wait_for_function("document.getElementById('status').textContent.includes('LiteRT.js')", timeout=30_000)
    known = 3  # a "6" of the held-out split
    page.evaluate("raw => edgekit.drawRaw(raw)", raw[known].tolist())
    page.click("#classify")
    page.wait_for_function("document.getElementById('label').textContent !== '–'")
    assert page.text_content("#label") == str(labels[known])
    page.screenshot(path=str(tmp_path / "known-digit.png"))
    # a "1" drawn with the mouse: one stroke down the middle of the pad
    page.click("#clear")
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x + 8, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + 8 - step * 0.6, box["y"] + box["height"] * (0.15 + 0.7 * step / 20))
    page.mouse.up()
    page.wait_for_function("document.getElementById('label').textContent === '1'", timeout=10_000)
    page.screenshot(path=str(tmp_path / "drawn-digit.png"))
    assert Path(tmp_path / "drawn-digit.png").stat().st_size > 10_000
    page.close()


def test_in_page_benchmark_reports_the_fields_of_edgekit_bench(site, browser):
    page = _page(browser, site)
    page.evaluate("edgekit.open('bundle/', 'onnxruntime', {file: 'digits_cnn.onnx'})")
    stats = page.evaluate("edgekit.bench({runs: 60, warmup: 10})")
    page.close()
    assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs", "warmup", "threads"} <= set(stats)
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] and stats["runs"] == 60
    assert stats["timer_resolution_ms"] <= 0.02 and stats["threads"] == 1  # isolated: 5 µs (100 µs otherwise)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(schema_version=3), "schema_version 3; this app reads version 4"),
    (lambda m: m["files"][0]["iospec"]["inputs"][0].update(dtype="float99"), "fails manifest.schema.json"),
])
def test_the_page_stops_on_a_bad_manifest(apps_bundle, browser, tmp_path, change, message):
    folder = tmp_path / "invalid-bundle"
    shutil.copytree(apps_bundle, folder)
    manifest = copy.deepcopy(json.loads((folder / "manifest.json").read_text()))
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with serving(folder) as url:
        page = _page(browser, url, query="bundle=bundle/")
        page.wait_for_selector("#error:not([hidden])", timeout=20_000)
        text = page.text_content("#error")
        assert message in text and "rebuild the bundle" in text
        assert page.text_content("#status") == "stopped"
        with pytest.raises(Exception, match="open a bundle first"):
            page.evaluate("edgekit.bench({runs: 5})")
        page.close()


def test_an_int8_io_tflite_file_is_refused_with_the_reason(int8_io_build, browser):
    """LiteRT.js 2.5 has no int8 tensors at its interface: the page says so and names what to open instead."""
    with serving(int8_io_build.bundle) as url:
        page = _page(browser, url)
        with pytest.raises(Exception, match="LiteRT.js takes float32, int32, uint8 tensors"):
            page.evaluate("edgekit.open('bundle/', 'litert', {file: 'digits_cnn_int8.tflite'})")
        assert "float-I/O TFLite file" in page.text_content("#error")
        assert page.evaluate("edgekit.open('bundle/', 'litert', {file: 'digits_cnn.tflite'})")["precision"] == "fp32"
        page.close()
