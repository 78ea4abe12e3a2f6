"""edgekit's files next to the peers' few-line baselines, in ONE interleaved run per model (1 thread, batch 1).

    python benchmarks/runtimes.py [--rounds 7] [--runs 200] [--round-seconds 2] [--models cnn,encoder] [--quick] [--out DIR]

Two models, each in a user folder, built with ``edgekit.build`` (x86-edge at 1 thread, no pruning):

- cnn: the MobileNetV2-style net of benchmarks/mbv2.py at 224 px (seeded random weights, BatchNorm statistics from
  20 random batches), random seeded images, labels = the fp32 top-1; formats onnx, tflite, openvino, executorch.
- encoder: a MiniLM-sized BertModel (edgekit.examples.families "real": 6 layers, hidden 384, 12 heads, sequence 32,
  mean-pooled), seeded init, random token ids and masks; the same four formats.

Peers, on the bundle's fp32 ONNX file and the same calibration split: ORT fp32, ``quantize_static`` (and
``quantize_dynamic`` for the encoder), NNCF defaults by hand (in edgekit's telemetry-free OpenVINO worker), the fp32 IR
at OpenVINO's default precision, a hand-run PT2E + XNNPACK .pte (cnn). One ``edgekit.measure.compare.interleaved`` run per
model (median p50, speedup over ORT fp32, size, cosine against torch), then the goals, PASS or MISS. ``--quick`` (64
px, 2-layer encoder, 2 rounds) is a smoke test; ``--out DIR`` keeps the files.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROFILE = """name = "runtimes-x86"
extends = "x86-edge"
[target]
threads = 1
[bench]
warmup = 10
runs = {runs}
batch = 1
max_seconds = 3.0
attempt_runs = {attempt}
attempt_max_seconds = 1.0
"""
QUICK_PROFILE = "[quantize]\nrepair_time_box_s = 10.0\n[qat]\nmode = \"off\"\n"
CNN_FACTORY = """

RES = {res}


class Net(MobileNetV2):
    def example_inputs(self):
        return (torch.zeros(1, 3, RES, RES),)


def make_model():
    return Net().eval()
"""


STARTED = time.perf_counter()


def log(text: str) -> None:
    print(f"{time.perf_counter() - STARTED:7.1f}s {text}", file=sys.stderr, flush=True)


def write_cnn(folder: Path, res: int) -> tuple[str, Path, Path]:
    """model.py (mbv2.py + a factory at ``res`` px), model.pt (state_dict) and data.npz (x, y = fp32 top-1)."""
    import torch

    (folder / "model.py").write_text((HERE / "mbv2.py").read_text() + CNN_FACTORY.format(res=res))
    spec = importlib.util.spec_from_file_location("user_cnn", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.make_model().train()
    with torch.no_grad():
        for _ in range(20):  # non-trivial BatchNorm statistics (else int8 calibration is degenerate)
            net(torch.randn(8, 3, res, res))
        net.eval()
        x = np.random.default_rng(0).standard_normal((128, 3, res, res)).astype(np.float32)
        y = np.concatenate([net(torch.from_numpy(x[i:i + 16])).argmax(1).numpy() for i in range(0, 128, 16)])
    torch.save(net.state_dict(), folder / "model.pt")
    np.savez(folder / "data.npz", x=x, y=y.astype(np.int64))
    return f"{folder / 'model.py'}:make_model", folder / "model.pt", folder / "data.npz"


def write_encoder(folder: Path, size: str) -> tuple[str, None, Path]:
    from edgekit.examples import families

    families.write_nets(folder, size)
    data = families.write_data(folder, "encoder", size)
    return families.source_for(folder, "encoder"), None, data


def by_own_names(names: list[str], source_names: list[str], inputs: dict) -> dict:
    """``inputs`` (keyed by the source's names) keyed by the file's own names: by name, else by position."""
    if set(names) <= set(inputs):
        return {n: inputs[n] for n in names}
    return {n: inputs[s] for n, s in zip(names, source_names)}


@contextlib.contextmanager
def quiet_root_logger():
    """ONNX Runtime's quantizer logs every tensor it skips on the root logger."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def ort_static(ref: Path, out: Path, calib: dict) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    n = len(next(iter(calib.values())))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{k: v[i:i + 1] for k, v in calib.items()} for i in range(n)])

        def get_next(self):
            return next(self.it, None)

    with quiet_root_logger():
        quantize_static(str(ref), str(out), Reader())
    return out


def ort_dynamic(ref: Path, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    with quiet_root_logger():
        quantize_dynamic(str(ref), str(out), per_channel=True)
    return out


def nncf_defaults(ref: Path, folder: Path, calib: dict, transformer: bool) -> Path:
    """convert_model + nncf.quantize with its defaults, in edgekit's worker process (CI=true, NNCF_CI=1)."""
    from edgekit.export.openvino import ov_call

    np.savez(folder / "calibration.npz", **calib)
    ov_call("convert", "peer convert", onnx=str(ref.resolve()), out=str((folder / "ov_fp32.xml").resolve()), hint="f32")
    out = folder / "nncf_int8.xml"
    ov_call("quantize", "peer nncf", src=str((folder / "ov_fp32.xml").resolve()), out=str(out.resolve()),
            calibration=str((folder / "calibration.npz").resolve()), transformer=transformer, ignored=[], hint="f32")
    return out


def ov_default(ir: Path, out: Path) -> Path:
    """The fp32 IR (fp32 weights) carrying hint bf16: what OpenVINO's CPU plugin runs it at by default here."""
    from edgekit.export.openvino import ov_call

    ov_call("recompress", "peer bf16", src=str(ir.resolve()), out=str(out.resolve()), hint="bf16", fp16=False)
    return out


def pt2e_pte(module, calib: dict, names: list[str], out: Path) -> Path:
    """The hand-run PT2E flow: XNNPACKQuantizer (symmetric per-channel), calibrated, lowered to XNNPACK."""
    import torch

    from edgekit.runtimes.executorch import import_executorch
    import_executorch(lowering=True)  # the same imports, with their start-up chatter kept off the terminal
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    one = lambda i: tuple(torch.from_numpy(calib[n][i:i + 1]) for n in names)  # noqa: E731
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(module, one(0)).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calib[names[0]])):
            prepared(*one(i))
    program = torch.export.export(convert_pt2e(prepared), one(0))
    out.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return out


def source_outputs(module, inputs: dict, names: list[str]) -> np.ndarray:
    import torch

    n = len(inputs[names[0]])
    with torch.no_grad():
        return np.concatenate([module(*(torch.from_numpy(inputs[k][i:i + 16]) for k in names)).numpy()
                               for i in range(0, n, 16)])


def accuracy(row: dict, val: dict, names: list[str], ref_out: np.ndarray, labels) -> None:
    from edgekit.runtimes import open_runner
    from edgekit.runtimes.base import run_batched

    runner = open_runner(row["path"], row["runtime"], threads=1, mapping=row["mapping"])
    outs = run_batched(runner, by_own_names(runner.iospec.input_names, names, val))
    got = np.asarray(list(outs.values())[0], dtype=np.float64).reshape(len(ref_out), -1)
    ref = ref_out.astype(np.float64).reshape(len(ref_out), -1)
    cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    row.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()),
               drop=None if labels is None else float(1.0 - (got.argmax(1) == labels).mean()))
    if row["mapping"] is None:  # a peer's file: fed by its own names (a hand-run .pte: input_0, ...)
        row["own_names"] = list(runner.file_spec.input_names)


def run_model(kind: str, args, root: Path) -> list[tuple[str, bool | None, str]]:
    import edgekit
    from edgekit.core.artifact import file_digest
    from edgekit.measure.compare import interleaved
    from edgekit.examples.families import SIZES
    from edgekit.core.iospec import IOSpec
    from edgekit.runtimes.openvino import has_bf16
    from edgekit.pipeline.stages import sample_for

    folder = root / kind
    folder.mkdir(exist_ok=True)
    res, size = (64, "tiny") if args.quick else (224, "real")
    spec, weights, data = write_cnn(folder, res) if kind == "cnn" else write_encoder(folder, size)
    n_val = 64 if kind == "cnn" else 50
    formats = ("onnx", "tflite", "openvino", "executorch")  # as the new user asks: all four
    profile = folder / "profile.toml"
    profile.write_text(PROFILE.format(runs=20 if args.quick else 100, attempt=10 if args.quick else 50)
                       + (QUICK_PROFILE if args.quick else ""))
    log(f"[{kind}] building {', '.join(formats)} ...")
    bundle = edgekit.build(spec, weights=weights, data=data, profile=profile, formats=formats, out=folder / "out",
                           prune_method="none", calib_samples=64, val_samples=n_val, force=True,
                           progress=lambda s: log(f"[{kind}]   {s}")).bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = edgekit.load_model(spec, weights=weights)
    split = edgekit.prepare(edgekit.read_arrays(data), model.iospec, source=str(data), calib_samples=64,
                            val_samples=n_val)  # the build's own split (same seed)
    names = model.iospec.input_names
    calib, val = split.calibration.inputs, split.validation.inputs
    labels = split.validation.labels if kind == "cnn" else None
    ref_out = source_outputs(model.module, val, names)

    rows = [{"key": f"edgekit {f['format']} {f['precision']}", "path": bundle / f["file"], "runtime": f["runtime"],
             "mapping": IOSpec.from_dict(f["iospec"]), "file": f["file"], "entry": f} for f in manifest["files"]]
    ref = next(r for r in rows if r["key"] == "edgekit onnx fp32")["path"]
    peers = folder / "peers"
    peers.mkdir(exist_ok=True)
    log(f"[{kind}] peers' baselines ...")

    def peer(key, make, runtime):
        try:
            rows.append({"key": key, "path": make(), "runtime": runtime, "mapping": None, "file": None, "entry": None})
        except Exception as exc:  # noqa: BLE001 - a failing peer is said, not fatal
            print(f"{kind}: {key} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")

    peer("ORT quantize_static defaults (QDQ)", lambda: ort_static(ref, peers / "ort_qdq.onnx", calib), "onnxruntime")
    if kind == "encoder":
        peer("ORT quantize_dynamic per-channel", lambda: ort_dynamic(ref, peers / "ort_dynamic.onnx"), "onnxruntime")
    peer("NNCF defaults by hand", lambda: nncf_defaults(ref, peers, calib, kind == "encoder"), "openvino")
    ov_fp32 = next((r["path"] for r in rows if r["key"] == "edgekit openvino fp32"), None)
    if ov_fp32 is not None and has_bf16():
        peer("OpenVINO fp32 IR, default precision (bf16)", lambda: ov_default(ov_fp32, peers / "ov_bf16.xml"),
             "openvino")
    elif ov_fp32 is not None:
        print(f"{kind}: this CPU has no bf16: OpenVINO's default precision is f32 (the edgekit openvino fp32 row)")
    if kind == "cnn":
        peer("hand-run PT2E + XNNPACK", lambda: pt2e_pte(model.module, calib, names, peers / "pt2e_xnnpack.pte"),
             "executorch")

    log(f"[{kind}] accuracy on {n_val} validation samples ...")
    for row in list(rows):
        try:
            accuracy(row, val, names, ref_out, labels)
        except Exception as exc:  # noqa: BLE001 - a file its runtime cannot run is left out, said once
            print(f"{kind}: {row['key']} left out: it does not run: {type(exc).__name__}: {str(exc)[:200]}")
            rows.remove(row)
    one = {k: v[:1] for k, v in val.items()}
    files = [(r["path"], r["runtime"], sample_for(r["mapping"], one) if r["mapping"] is not None
              else by_own_names(r["own_names"], names, one)) for r in rows]
    log(f"[{kind}] timing {len(files)} files interleaved: {args.rounds} rounds x {args.runs} runs ...")
    p50s = interleaved(files, threads=1, rounds=args.rounds, runs=args.runs, round_seconds=args.round_seconds)
    base = next(i for i, r in enumerate(rows) if r["key"] == "edgekit onnx fp32")
    ref_bytes = file_digest(ref)[1]
    for row, rounds in zip(rows, p50s):
        per = [b / o for b, o in zip(p50s[base], rounds)]
        row.update(rounds=rounds, median=float(np.median(rounds)), speedup=float(np.median(p50s[base]) / np.median(rounds)),
                   low=min(per), high=max(per), bytes=file_digest(row["path"])[1])

    title = (f"{kind}: MobileNetV2-style {res} px" if kind == "cnn" else
             f"{kind}: BertModel ({', '.join(f'{k} {SIZES[size][k]}' for k in ('layers', 'hidden', 'heads', 'seq'))})")
    print(f"\n{title}; 1 thread, batch 1; {args.rounds} interleaved rounds; bundle {bundle.name}")
    print(f"{'file':<46} {'runtime':<11} {'p50 ms':>8} {'vs ORT fp32':>11} {'rounds':>13} {'MB':>7} {'size':>6} "
          f"{'cos mean':>9} {'cos min':>9}" + (f" {'top1 drop':>9}" if kind == "cnn" else "") + "  build's drop")
    for r in rows:
        drop = f" {r['drop']:>9.4f}" if kind == "cnn" else ""
        mdrop = r["entry"]["metric_drop"] if r["entry"] else None
        print(f"{r['key'] if r['file'] is None else r['key'] + ' (' + r['file'] + ')':<46.46} {r['runtime']:<11} "
              f"{r['median']:>8.3f} {r['speedup']:>10.2f}x {r['low']:>5.2f}-{r['high']:<5.2f}x "
              f"{r['bytes'] / 2**20:>7.2f} {r['bytes'] / ref_bytes:>5.2f}x {r['cos_mean']:>9.5f} {r['cos_min']:>9.5f}"
              + drop + ("" if mdrop is None else f"  {mdrop:.4f}"))
    for f in manifest["failed"]:
        print(f"  failed: {f['format']} {f['precision']}: {f['stage']}: {f['reason'][:200]}")
    print(f"  recommended: {json.dumps(manifest['recommended'])[:300]}")
    print(f"  fastest: {json.dumps(manifest['fastest'])[:300]}")
    return goals(kind, rows, manifest)


def goals(kind: str, rows: list[dict], manifest: dict) -> list[tuple[str, bool | None, str]]:
    from edgekit.measure.recommend import TIE
    row = {r["key"]: r for r in rows}
    out = []

    def faster(a, b):  # a's speed in units of b's
        return row[b]["median"] / row[a]["median"]

    def check(text, keys, test, figure):
        if not all(k in row for k in keys):
            out.append((text, None, "not measured: " + ", ".join(k for k in keys if k not in row)))
        else:
            out.append((text, bool(test()), figure()))

    if kind == "cnn":
        ov, nn = "edgekit openvino int8", "NNCF defaults by hand"
        same = ov in row and nn in row and all(row[ov]["path"].with_suffix(x).read_bytes() ==
                                                row[nn]["path"].with_suffix(x).read_bytes() for x in (".xml", ".bin"))
        check("cnn: edgekit OpenVINO int8 >= 0.98x NNCF defaults", (ov, nn), lambda: same or faster(ov, nn) >= 0.98,
              lambda: f"{faster(ov, nn):.3f}x" + (" (the same .xml and .bin, byte for byte: noise)" if same else ""))
        check("cnn: edgekit OpenVINO int8 >= 2.7x ORT fp32", (ov,), lambda: row[ov]["speedup"] >= 2.7,
              lambda: f"{row[ov]['speedup']:.2f}x ({row[ov]['low']:.2f}-{row[ov]['high']:.2f})")
        check("cnn: edgekit OpenVINO int8 drop <= NNCF defaults' drop", (ov, nn),
              lambda: row[ov]["drop"] <= row[nn]["drop"], lambda: f"{row[ov]['drop']:.4f} vs {row[nn]['drop']:.4f}")
        check("cnn: edgekit OpenVINO int8 cosine >= 0.999", (ov,), lambda: row[ov]["cos_mean"] >= 0.999,
              lambda: f"{row[ov]['cos_mean']:.5f} (min {row[ov]['cos_min']:.5f})")
        et, pt = "edgekit executorch int8", "hand-run PT2E + XNNPACK"
        check("cnn: edgekit ExecuTorch int8 >= 2.0x ORT fp32", (et,), lambda: row[et]["speedup"] >= 2.0,
              lambda: f"{row[et]['speedup']:.2f}x ({row[et]['low']:.2f}-{row[et]['high']:.2f})")
        check("cnn: edgekit ExecuTorch int8 cosine >= 0.999", (et,), lambda: row[et]["cos_mean"] >= 0.999,
              lambda: f"{row[et]['cos_mean']:.5f} (min {row[et]['cos_min']:.5f})")
        check("cnn: edgekit ExecuTorch int8 >= 0.95x hand-run PT2E", (et, pt), lambda: faster(et, pt) >= 0.95,
              lambda: f"{faster(et, pt):.3f}x")
    else:
        budget = manifest["profile"]["budget"]["max_accuracy_drop"]
        int8 = [r for r in rows if r["entry"] and r["entry"]["precision"] == "int8"
                and r["entry"]["metric_drop"] is not None and r["entry"]["metric_drop"] <= budget]
        best = min(int8, key=lambda r: r["median"]) if int8 else None
        out.append(("encoder: fastest validated edgekit int8 >= 4.5x ORT fp32, cosine >= 0.995",
                    None if best is None else best["speedup"] >= 4.5 and best["cos_mean"] >= 0.995,
                    "no validated int8 file" if best is None else
                    f"{best['key']}: {best['speedup']:.2f}x ({best['low']:.2f}-{best['high']:.2f}), "
                    f"cosine {best['cos_mean']:.5f} (min {best['cos_min']:.5f})"))
    runtimes = manifest["profile"]["target"]["runtimes"]
    failed = {g["file"] for g in manifest["gates"] if g["passed"] is False}
    mine = [r for r in rows if r["entry"] and r["runtime"] in runtimes and r["file"] not in failed]
    said = manifest["fastest"]
    if mine and said:
        top = min(mine, key=lambda r: r["median"])
        theirs = next((r for r in mine if r["file"] == said["file"]), None)
        tail = "" if theirs is None or theirs is top else f"; the pick {theirs['median'] / top['median']:.3f}x"
        out.append((f"{kind}: bundle's fastest = this run's fastest (within {TIE:.0%}) on {', '.join(runtimes)}",
                    theirs is not None and theirs["median"] <= top["median"] * (1 + TIE),
                    f"bundle {said['file']} ({said['p50_ms']} ms in the build); this run {top['file']} "
                    f"{top['median']:.3f} ms{tail}"))
    else:  # no candidate, or no pick
        out.append((f"{kind}: bundle's fastest", None, f"bundle says {said}; {len(mine)} candidates here"))
    f32, bf = "edgekit openvino fp32", "OpenVINO fp32 IR, default precision (bf16)"
    if f32 in row:
        out.append((f"{kind}: OpenVINO fp32 IR at hint f32 / at default precision", "info",
                    f"f32 {row[f32]['median']:.3f} ms ({row[f32]['speedup']:.2f}x ORT fp32)"
                    + (f", bf16 {row[bf]['median']:.3f} ms ({row[bf]['speedup']:.2f}x; cosine {row[bf]['cos_mean']:.5f})"
                       if bf in row else ", no bf16 on this CPU")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--round-seconds", type=float, default=2.0)
    parser.add_argument("--models", default="cnn,encoder")
    parser.add_argument("--quick", action="store_true", help="64 px, tiny encoder, 2 short rounds: a smoke test")
    parser.add_argument("--out", type=Path, help="keep the user folders, bundles and peers' files here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch's pytree, in PT2E
    if args.quick:
        args.rounds, args.runs, args.round_seconds = 2, 20, 0.3
    from edgekit.measure.bench import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}; flags: {', '.join(cpu['flags'])}")
    results = []
    with contextlib.ExitStack() as stack:
        tmp = str(args.out) if args.out else stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-runtimes-"))
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
            if kind not in ("cnn", "encoder"):
                raise SystemExit(f"--models: unknown model {kind!r}; known: cnn, encoder")
            results += run_model(kind, args, Path(tmp))
    print("\ngoals")
    for text, ok, figure in results:
        word = ok if isinstance(ok, str) else "n/a" if ok is None else "PASS" if ok else "MISS"
        print(f"{word:<5} {text:<72} {figure}")


if __name__ == "__main__":
    main()
