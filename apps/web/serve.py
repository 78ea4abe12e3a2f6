#!/usr/bin/env python3
"""Serve the web app and one bundle with the headers threaded WebAssembly needs (COOP/COEP).

    python3 apps/web/serve.py BUNDLE [--port 8000] [--host 127.0.0.1]

then open the printed URL. The page is at /, the bundle at /bundle/, the manifest schema at
/manifest.schema.json. Python's standard library only; any static server that sends the same three
headers (Cross-Origin-Opener-Policy, Cross-Origin-Embedder-Policy, Cross-Origin-Resource-Policy) works too.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
SCHEMA = HERE.parent / "manifest.schema.json"
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
         ".onnx": "application/octet-stream", ".tflite": "application/octet-stream"}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, bundle: Path, **kwargs):
        self.bundle = bundle
        super().__init__(*args, directory=str(HERE), **kwargs)

    def translate_path(self, path: str) -> str:
        route = unquote(urlsplit(path).path)
        if route == "/manifest.schema.json":
            return str(SCHEMA)
        if route == "/bundle" or route.startswith("/bundle/"):
            target = (self.bundle / route[len("/bundle/"):]).resolve()
            return str(target) if target.is_relative_to(self.bundle) else str(self.bundle / "..missing")
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt: str, *args) -> None:  # quiet unless something fails
        if args and str(args[1])[:1] in "45":
            super().log_message(fmt, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="an edgekit bundle folder (holds manifest.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args(argv)
    bundle = args.bundle.resolve()
    if not (bundle / "manifest.json").is_file():
        print(f"serve.py: {args.bundle} has no manifest.json; pass an edgekit bundle folder", file=sys.stderr)
        return 2
    if not (HERE / "node_modules" / "onnxruntime-web").is_dir():
        print(f"serve.py: {HERE / 'node_modules'} is missing; run `npm ci` in {HERE} first", file=sys.stderr)
        return 2
    server = http.server.ThreadingHTTPServer((args.host, args.port), functools.partial(Handler, bundle=bundle))
    print(f"serving http://{args.host}:{server.server_address[1]}/?bundle=bundle/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
