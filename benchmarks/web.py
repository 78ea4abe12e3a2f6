"""The web app's runtimes against the native ones, on the example bundle, 1 thread, batch 1.

    python benchmarks/web.py [--bundle out/digits_cnn-iot] [--rounds 5] [--runs 300]

Per file: the page's own benchmark (apps/web, headless Debian chromium through Playwright; onnxruntime-web
for .onnx, LiteRT.js for .tflite, both wasm) and `edgekit bench`'s harness (ONNX Runtime / LiteRT in
Python), interleaved round by round on the same file. Printed: the median over rounds of each p50 and of
the ratio web p50 / native p50. With no --bundle it builds the example for `iot` first.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from edgekit.measure.bench import bench_file, cpu_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}")
    bundle = args.bundle
    if bundle is None:
        work = Path(tempfile.mkdtemp(prefix="web-bench-"))
        subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", "--profile", "iot",
                        "--out", str(work)], check=True, capture_output=True)
        bundle = work / "digits_cnn-iot"
    import json
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = [f for f in manifest["files"] if f["runtime"] in ("onnxruntime", "litert")]
    from playwright.sync_api import sync_playwright

    from test_apps_web import CHROMIUM, serving

    web = {f["file"]: [] for f in files}
    native = {f["file"]: [] for f in files}
    failed = {}
    with serving(bundle) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}?autoload=0")
        page.wait_for_function("window.edgekit && window.edgekit.ready")
        isolated = page.evaluate("crossOriginIsolated")
        for _ in range(args.rounds):
            for f in files:
                if f["file"] in failed:
                    continue
                try:
                    page.evaluate("([rt, f]) => edgekit.open('bundle/', rt, {file: f})", [f["runtime"], f["file"]])
                    page.evaluate("raw => edgekit.runRaw([raw])", [[0.0] * 8] * 8)
                    stats = page.evaluate(f"edgekit.bench({{runs: {args.runs}, warmup: 30}})")
                except Exception as exc:  # a file a browser runtime cannot run is a result, not a crash
                    failed[f["file"]] = str(exc).splitlines()[0][:120]
                    continue
                web[f["file"]].append(stats["p50_ms"])
                native[f["file"]].append(bench_file(bundle / f["file"], runtime=f["runtime"], threads=1, warmup=30,
                                                    runs=args.runs, batch=16, max_seconds=10).p50_ms)
        version = page.evaluate("navigator.userAgent")
        browser.close()
    print(f"browser: {version.split(') ')[-1]}; cross-origin isolated: {isolated}; {args.rounds} rounds x "
          f"{args.runs} runs, 1 thread\n")
    print("| file | runtime in the page | web p50 ms | native p50 ms | web / native |")
    print("|---|---|---|---|---|")
    for f in files:
        name = f["file"]
        rt = "onnxruntime-web" if f["runtime"] == "onnxruntime" else "LiteRT.js"
        if name in failed:
            print(f"| {name} | {rt} | fails: {failed[name]} | | |")
            continue
        ratios = [w / n for w, n in zip(web[name], native[name])]
        print(f"| {name} | {rt} | {statistics.median(web[name]):.3f} | {statistics.median(native[name]):.3f} | "
              f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
