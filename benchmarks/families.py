"""The compatibility table: every model family through every profile, built as a user would (the CLI on a
factory file in its own folder), at realistic sizes; ratios from one run.

    python benchmarks/families.py [--size real|tiny] [--families encoder,kws,...] [--profiles mobile,iot,server]
                                  [--formats onnx,tflite,openvino,executorch] [--no-prune] [--threads N] [--out DIR]

For each (family, profile, format): validated (with the file's drop, the cosine of its deciding output
against the source, its size against the fp32 ONNX file and its speedup over it from interleaved rounds)
or failed with its one-line reason. The keyword spotter and the tabular regressor (scikit-learn's diabetes
data) are trained here first; the other families keep their seeded initial weights, so their figures say how
faithful each file is to its source, not how accurate the source is. Then the goals of the model-family issues, each PASS or MISS:

- BERT-style encoder (6 layers, 384 hidden, sequence 32), mobile at 1 thread: int8 ONNX cosine >= 0.99, the
  top document for a query kept, >= 1.3x faster than its fp32 twin, >= 3.5x smaller;
- recommender: int8 TFLite and int8 ONNX cosine >= 0.99;
- keyword spotter (trained here on synthesized tones; edgekit gets input samples only, and is told its
  logits are a class distribution: ``--output-task output=distribution``), iot: ONNX, int8 TFLite and the
  C array validated, the TFLite-Micro arena within the stm32h743 budget, pruned to >= 0.2, int8 TFLite
  top-1 agreement >= 0.95;
- three-head detector, mobile and iot: every format validated or listed as failed; exit 0 or 1;
- every cell validated or refused in one line; no exit 2 or 3.

The CPU model and flags are printed first: int8 speed depends on them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def cpu_line() -> str:
    from edgekit.measure.bench import cpu_info

    c = cpu_info()
    return f"CPU: {c['model']} ({c['cores']} cores; {', '.join(c['flags'])})"


def train_kws(folder: Path, size: str) -> Path:
    """Weights for the keyword spotter, trained on the tone 'keywords' of write_data (labels: the tone's
    frequency class). edgekit is given the inputs only."""
    import torch

    sys.path.insert(0, str(folder))
    try:
        import nets
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(1)
    n = 1200
    t = np.linspace(0, 1, 49)[None, None, :]
    y = rng.integers(0, 6, n)
    x = (np.sin(2 * np.pi * (y[:, None, None] + 1) * t * np.ones((1, 10, 1))) + 0.3 * rng.standard_normal((n, 10, 49)))
    model = nets.make_kws().train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for epoch in range(15):
        for i in range(0, n, 64):
            loss = torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = folder / "kws.pt"
    torch.save(model.eval().state_dict(), path)
    freq = rng.integers(0, 6, 600)
    samples = np.sin(2 * np.pi * (freq[:, None, None] + 1) * t * np.ones((1, 10, 1))) + 0.3 * rng.standard_normal((600, 10, 49))
    np.savez(folder / "kws.npz", x=samples.astype(np.float32))  # inputs only: no labels
    return path


def train_regressor(folder: Path) -> Path:
    """Weights for the tabular regressor, fitted on scikit-learn's diabetes data (the build validates on
    held-out rows of the same data, with labels)."""
    import torch

    sys.path.insert(0, str(folder))
    try:
        import nets
    finally:
        sys.path.pop(0)
    data = np.load(folder / "regressor.npz")
    x, y = torch.from_numpy(data["x"][:300]), torch.from_numpy(data["y"][:300]).reshape(-1, 1)
    model = nets.make_regressor().train()
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-3)
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = folder / "regressor.pt"
    torch.save(model.eval().state_dict(), path)
    return path


def build(folder: Path, family: str, profile: str, out: Path, extra: list[str]) -> dict:
    from edgekit.examples import families

    args = [sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", families.source_for(folder, family), "--data",
            str(folder / f"{family}.npz"), "--profile", profile, "--out", str(out), "--force", *extra]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    bundles = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")] if out.exists() else []
    report = json.loads((bundles[0] / "report.json").read_text()) if bundles else None
    lines = [x for x in proc.stderr.splitlines() if x.startswith("edgekit: error")]
    return {"code": proc.returncode, "report": report, "seconds": time.perf_counter() - started,
            "error": lines[-1] if lines else (proc.stderr.strip().splitlines() or [""])[-1][:300]}


def rows(family: str, profile: str, result: dict) -> list[tuple]:
    report = result["report"]
    if report is None:
        return [(family, profile, "-", "-", f"exit {result['code']}: {result['error'][:150]}", "-", "-", "-", "-")]
    arts = report["artifacts"]
    base = next((a for a in arts if a["format"] == "onnx" and a["precision"] == "fp32"), None)
    out = []
    for a in arts:
        v = a["validation"]
        o = v.get("outputs", {}).get(v.get("decided_by"), {})
        speed = report.get("speed", {}).get(a["file"], {}).get("vs_onnx_fp32")
        ratio = f"{a['bytes'] / base['bytes']:.2f}" if base and a["format"] != "c_array" else "-"
        figure = ("-" if not v else f"{v['drop']:+.4f}")
        cos = "-" if "cosine" not in o else f"{o['cosine']:.4f}"
        baseline = a["format"] == "onnx" and a["precision"] == "fp32"
        sp = "-" if not speed else (f"{speed['speedup']:.2f}x" if speed["speedup"] >= 0.1 else f"{speed['speedup']:.3f}x") \
            + (" ≈" if speed["verdict"] == "tied" and not baseline else "")
        tflm = a["export"].get("tflm")
        status = "validated" if v else ("TFLM loads, arena %.0f KB" % (tflm["arena_bytes"] / 1024) if tflm and tflm.get("loads")
                                        else f"TFLM: {tflm['error'][:80]}" if tflm else "made")
        out.append((family, profile, a["format"], a["precision"], status, figure, cos, ratio, sp))
    for f in report.get("failed", []):
        out.append((family, profile, f["format"], f["precision"], f"failed: {f['reason'][:140]}", "-", "-", "-", "-"))
    return out


FORMAT_NAMES = {"onnx": "ONNX", "tflite": "TFLite", "c_array": "C array", "openvino": "OpenVINO",
                "executorch": "ExecuTorch"}


def pivot(table: list[tuple]) -> list[str]:
    """The README's table: one row per (family, profile), one column per format that any build made."""
    formats = [f for f in FORMAT_NAMES if any(r[2] == f for r in table)]
    cells: dict[tuple, dict[str, list[str]]] = {}
    for family, profile, fmt, precision, status, drop, cos, ratio, speed in table:
        row = cells.setdefault((family, profile), {})
        if fmt == "-":  # the build itself failed
            row.setdefault(formats[0] if formats else "onnx", []).append(status)
            continue
        if status == "validated":
            text = f"{precision} ✓ drop {drop}, cos {cos}"
            if not (fmt == "onnx" and precision == "fp32") and ratio != "-":
                text += f", {ratio}× size, {speed}"
        elif status.startswith("failed: "):
            text = f"{precision} **failed**: {status[8:]}"
        else:
            text = f"{precision} {status}"
        row.setdefault(fmt, []).append(text)
    out = ["| family | profile | " + " | ".join(FORMAT_NAMES[f] for f in formats) + " |",
           "|---|---|" + "---|" * len(formats)]
    for (family, profile), row in cells.items():
        out.append(f"| {family} | {profile} | " + " | ".join("<br>".join(row.get(f, [])) or "-" for f in formats) + " |")
    return out


def goals(results: dict) -> list[tuple[str, bool, str]]:
    out = []

    def art(key, file):
        r = results.get(key, {}).get("report")
        return next((a for a in r["artifacts"] if a["file"] == file), None) if r else None

    enc = results.get(("encoder", "mobile-1t"))
    if enc and enc["report"]:
        int8, fp32 = art(("encoder", "mobile-1t"), "nets_int8.onnx"), art(("encoder", "mobile-1t"), "nets.onnx")
        if int8 and fp32:
            o = int8["validation"]["outputs"]["embedding"]
            speed = enc["report"]["speed"]["nets_int8.onnx"]["vs_fp32_twin"]
            top = enc["report"].get("encoder_top_document")
            out.append(("encoder int8 ONNX cosine >= 0.99", o["cosine"] >= 0.99, f"{o['cosine']:.4f}"))
            out.append(("encoder int8 ONNX >= 1.3x faster than fp32 at 1 thread", speed["low"] >= 1.3,
                        f"{speed['speedup']:.2f}x (rounds {speed['low']:.2f}-{speed['high']:.2f})"))
            out.append(("encoder int8 ONNX >= 3.5x smaller", fp32["bytes"] / int8["bytes"] >= 3.5,
                        f"{fp32['bytes'] / int8['bytes']:.2f}x"))
            if top is not None:
                out.append(("encoder: the top document for a query is kept", top >= 0.95, f"{top:.3f} of queries"))
    for name in ("nets_int8.onnx", "nets_int8.tflite"):
        a = art(("recommender", "mobile"), name)
        if a:
            c = a["validation"]["outputs"]["click"]["cosine"]
            out.append((f"recommender {name} cosine >= 0.99", c >= 0.99, f"{c:.4f}"))
    kws = results.get(("kws", "iot"))
    if kws and kws["report"]:
        r = kws["report"]
        made = {(a["format"], a["precision"]) for a in r["artifacts"]}
        ok = {("onnx", "fp32"), ("tflite", "int8")} <= made and any(a["format"] == "c_array" for a in r["artifacts"])
        out.append(("kws iot: ONNX, int8 TFLite and the C array made and validated", ok, ", ".join(sorted(map("/".join, made)))))
        c = next((a for a in r["artifacts"] if a["format"] == "c_array"), None)
        arena = (c or {}).get("export", {}).get("tflm", {}).get("arena_bytes")
        out.append(("kws C array arena within stm32h743 (384 KB)", bool(arena) and arena <= 384 * 1024,
                    f"{arena / 1024:.1f} KB" if arena else "no arena"))
        comp = r.get("compression") or {}
        out.append(("kws pruned to >= 0.2 with input samples only", comp.get("applied") and comp["ratio"] >= 0.2
                    and not r["data"]["labels"], f"ratio {comp.get('ratio')}, labels {r['data']['labels']}"))
        t8 = art(("kws", "iot"), "nets_int8.tflite")
        if t8:
            agree = t8["validation"]["outputs"]["output"].get("top1_agreement")  # judged as a distribution
            cos = t8["validation"]["outputs"]["output"]["cosine"]
            out.append(("kws int8 TFLite top-1 agreement >= 0.95", agree is not None and agree >= 0.95,
                        f"{agree} (cosine {cos:.4f})"))
    for profile in ("mobile", "iot"):
        r = results.get(("threehead", profile))
        if r:
            out.append((f"three-head detector {profile}: exit 0 or 1, every format validated or listed",
                        r["code"] in (0, 1) and r["report"] is not None, f"exit {r['code']}"))
    bad = [f"{k[0]}/{k[1]}: exit {v['code']}" for k, v in results.items() if v["code"] not in (0, 1)]
    out.append(("no exit 2 or 3 across the suite", not bad, "; ".join(bad) or "none"))
    return out


def top_document(report_dir: Path, folder: Path) -> float | None:
    """For the encoder: the share of queries whose nearest document (cosine) is the same with the int8 ONNX
    file as with the source model, on held-out sentences."""
    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(folder))
    try:
        import nets
    finally:
        sys.path.pop(0)
    data = np.load(folder / "encoder.npz")
    ids, mask = data["input_ids"][-200:], data["attention_mask"][-200:]
    with torch.no_grad():
        ref = nets.make_encoder()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    sess = ort.InferenceSession(str(report_dir / "nets_int8.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def nearest(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        q, d = e[:100], e[100:]
        return (q @ d.T).argmax(axis=1)
    return float(np.mean(nearest(ref) == nearest(got)))


def main() -> int:
    from edgekit.examples import families

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="real", choices=["real", "tiny"])
    ap.add_argument("--families", default=",".join(families.FAMILIES))
    ap.add_argument("--profiles", default="mobile,iot,server")
    ap.add_argument("--out", default=None)
    ap.add_argument("--formats", default=None, help="passed to every build (e.g. onnx,tflite,openvino,executorch)")
    ap.add_argument("--no-prune", action="store_true", help="--prune-method none for every build")
    ap.add_argument("--threads", type=int, default=None, help="--threads N for every build (default: the profile's)")
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="edgekit-families-"))
    folder = work / "zoo"
    families.write_nets(folder, args.size)
    for family in families.FAMILIES:
        families.write_data(folder, family, args.size)
    families.write_keras(folder)
    train_kws(folder, args.size)
    train_regressor(folder)
    results: dict = {}
    table: list[tuple] = []
    wanted = args.families.split(",")
    for family in wanted:
        for profile in args.profiles.split(","):
            extra = {"kws": ["--weights", str(folder / "kws.pt"), "--output-task", "output=distribution"],
                     "regressor": ["--weights", str(folder / "regressor.pt")]}.get(family, [])
            if args.formats:
                wanted_formats = args.formats.split(",")
                if family == "keras":  # ExecuTorch lowers torch programs: a Keras source is refused up front
                    wanted_formats = [f for f in wanted_formats if f != "executorch"]
                extra = extra + ["--formats", ",".join(wanted_formats)]
            if args.no_prune:
                extra = extra + ["--prune-method", "none"]
            if args.threads is not None:
                extra = extra + ["--threads", str(args.threads)]
            result = build(folder, family, profile, work / "out" / f"{family}-{profile}", extra)
            results[(family, profile)] = result
            table += rows(family, profile, result)
            print(f"  built {family} for {profile}: exit {result['code']} in {result['seconds']:.0f} s", flush=True)
    if "encoder" in wanted:  # the speed goal is at 1 thread
        out = work / "out" / "encoder-mobile-1t"
        result = build(folder, "encoder", "mobile", out, ["--threads", "1", "--formats", "onnx"])
        if result["report"] is not None:
            result["report"]["encoder_top_document"] = top_document(Path(result["report"]["bundle"]), folder)
        results[("encoder", "mobile-1t")] = result
        table += rows("encoder", "mobile 1 thread", result)
    head = ("family", "profile", "format", "precision", "status", "drop", "cosine", "size/fp32", "speedup")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in table:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()
    print("\n".join(pivot(table)))
    print()
    print("| goal | result | measured |")
    print("|---|---|---|")
    missed = 0
    for name, ok, figure in goals(results):
        missed += not ok
        print(f"| {name} | {'PASS' if ok else 'MISS'} | {figure} |")
    print(f"\nbundles in {work / 'out'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
