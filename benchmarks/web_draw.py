"""Digits drawn with the mouse on apps/web's pad, in headless Debian chromium, through both runtimes.

    python benchmarks/web_draw.py out/digits_cnn-iot [--shots DIR]

Prints what the page reads for each stroke pattern (0, a plain 7, 2, 4, a crossed 7, 1, 3) with its
probability, as a user drawing them would see it; --shots keeps a screenshot of each.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "0": [[(0.5 + 0.25 * math.sin(t / 20 * 2 * math.pi), 0.5 - 0.33 * math.cos(t / 20 * 2 * math.pi)) for t in range(21)]],
    "7": [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]],
    "2": [[(0.3, 0.3), (0.45, 0.18), (0.65, 0.22), (0.68, 0.38), (0.3, 0.82), (0.72, 0.82)]],
    "4": [[(0.55, 0.15), (0.25, 0.6), (0.75, 0.6)], [(0.6, 0.35), (0.6, 0.88)]],
    "7 (crossed)": [[(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)], [(0.35, 0.5), (0.68, 0.5)]],
    "1": [[(0.52, 0.15), (0.48, 0.85)]],
    "3": [[(0.3, 0.2), (0.65, 0.2), (0.45, 0.48), (0.68, 0.65), (0.6, 0.82), (0.3, 0.82)]],
}


def stroke(page, points) -> None:
    box = page.locator("#pad").bounding_box()
    path = []
    for a, b in zip(points, points[1:]):
        path += [(a[0] + (b[0] - a[0]) * k / 8, a[1] + (b[1] - a[1]) * k / 8) for k in range(8)]
    path.append(points[-1])
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in path]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for p in xy[1:]:
        page.mouse.move(*p)
    page.mouse.up()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--shots", type=Path)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen([sys.executable, str(ROOT / "apps/web/serve.py"), str(args.bundle), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().split()[-1].split("?")[0]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for runtime in ("onnxruntime", "litert"):
                page = browser.new_page(viewport={"width": 1100, "height": 720})
                page.goto(f"{url}?bundle=bundle/&runtime={runtime}")
                page.wait_for_function("document.getElementById('status').textContent.includes('thread')",
                                       timeout=30_000)
                print(page.text_content("#status"))
                for name, strokes in SHAPES.items():
                    page.click("#clear")
                    for points in strokes:
                        stroke(page, points)
                    page.click("#classify")
                    page.wait_for_timeout(300)
                    print(f"  drew {name:12} -> {page.text_content('#label')} {page.text_content('#confidence')}")
                    if args.shots:
                        args.shots.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(args.shots / f"{runtime}-{name.replace(' ', '_')}.png"))
                page.close()
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
