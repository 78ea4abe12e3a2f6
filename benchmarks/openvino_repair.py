"""Repairing an OpenVINO int8 file that misses the budget: edgekit's one ladder against
``nncf.quantize_with_accuracy_control``, on the same splits, with the same budget, judged by the same gate.

    python benchmarks/openvino_repair.py [--families recommender,fcn] [--size tiny|real] [--budget 0.01]
                                         [--rounds 5] [--out DIR]

For each family (edgekit.examples.families, seeded) a user folder is built for a light x86-edge profile at 1
thread (onnx and openvino, no pruning). Its int8 IR comes from NNCF's defaults and, when that misses the budget,
from the ladder: ONNX Runtime's one-layer sensitivity ranking picks the layers that go into NNCF's
``ignored_scope``, worst first. The same fp32 IR is then given, in a child process with OpenVINO's and NNCF's
telemetry off, to ``nncf.quantize_with_accuracy_control`` with ``max_drop`` = the budget (absolute), the build's
calibration split and its validation split, and a ``validation_fn`` that returns 1 minus edgekit's gated drop
(``edgekit.measure.validate.judge``: every output against the source). Both files are judged again by
``edgekit.measure.validate.validate_file`` and timed in one interleaved run (1 thread, batch 1), with NNCF's defaults
(the ladder's first rung) as the third file. Printed: drop, layers left float, p50, speed against the defaults,
and the seconds each repair took (the ladder's from after its first rung; accuracy control's whole call, which
includes its own first quantization and the fp32 model's validation).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROFILE = """name = "repair-x86"
extends = "x86-edge"
[target]
threads = 1
formats = ["onnx", "openvino"]
[budget]
max_accuracy_drop = {budget}
p90_latency_ms = 1000.0
[bench]
runs = 50
max_seconds = 2.0
"""


def split_for(spec: str, data: Path):
    import edgekit

    arrays = edgekit.read_arrays(data)
    model = edgekit.load_model(spec, sample_inputs=arrays)
    split = edgekit.prepare(arrays, model.iospec, source=str(data))  # the build's own split (no pruning)
    return model, split


def accuracy_control(args: dict) -> dict:
    """In the child: nncf.quantize_with_accuracy_control on the bundle's fp32 IR."""
    import nncf
    import openvino as ov

    from edgekit.export.ov_worker import HINT_KEY
    from edgekit.core.iospec import IOSpec
    from edgekit.pipeline.stages import sample_for
    from edgekit.measure.validate import judge, reference_outputs

    model, split = split_for(args["spec"], Path(args["data"]))
    reference = reference_outputs(model, split)
    mapping = IOSpec.from_dict(args["iospec"])

    def items(inputs: dict) -> list[dict]:
        n = len(next(iter(inputs.values())))
        return [sample_for(mapping, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]

    out_names = {t.name: t.source_name or t.name for t in mapping.outputs}
    calls = []

    def validation_fn(compiled, dataset) -> tuple[float, None]:
        started = time.perf_counter()
        got: dict[str, list] = {}
        for item in dataset:
            result = compiled(item)
            for port, value in result.items():
                name = out_names.get(port.get_any_name(), port.get_any_name())
                got.setdefault(name, []).append(np.asarray(value))
        outputs = {k: np.concatenate(v) for k, v in got.items()}
        drop = judge(outputs, reference, split.validation.labels)[1]
        calls.append({"drop": float(drop), "seconds": time.perf_counter() - started})
        return 1.0 - float(drop), None  # 1 - drop, not -drop: NNCF 3.4 divides by the fp32 metric

    ir = ov.Core().read_model(args["fp32_ir"])
    calibration = items(split.calibration.inputs)
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if args["transformer"] else {}
    started = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        ir, nncf.Dataset(calibration), nncf.Dataset(items(split.validation.inputs)), validation_fn,
        max_drop=args["budget"], drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration), **kwargs)
    seconds = time.perf_counter() - started
    quantized.set_rt_info("f32", HINT_KEY)
    ov.save_model(quantized, args["out"], compress_to_fp16=False)
    return {"seconds": seconds, "validation_calls": calls}


def run_child(args: dict) -> dict:
    from edgekit.export.openvino import NO_TELEMETRY

    env = {**os.environ, **NO_TELEMETRY}  # OpenVINO's and NNCF's usage telemetry off, as in edgekit's worker
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                          env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"accuracy control failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(lines[-1])


def family(name: str, size: str, budget: float, rounds: int, root: Path) -> list[str]:
    import edgekit
    from edgekit.core.artifact import file_digest
    from edgekit.measure.compare import interleaved
    from edgekit.examples import families
    from edgekit.export.openvino import ov_call
    from edgekit.core.iospec import IOSpec
    from edgekit.files.precision import precision_map
    from edgekit.quantize.passes import calibration_npz
    from edgekit.pipeline.stages import sample_for
    from edgekit.measure.validate import reference_outputs, validate_file

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    families.write_nets(folder, size)
    data = families.write_data(folder, name, size)
    spec = families.source_for(folder, name)
    (folder / "profile.toml").write_text(PROFILE.format(budget=budget))
    started = time.perf_counter()
    result = edgekit.build(spec, data=data, profile=folder / "profile.toml", out=folder / "out", prune_method="none",
                           force=True)
    build_s = time.perf_counter() - started
    bundle = result.bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    entry = {f["precision"]: f for f in manifest["files"] if f["format"] == "openvino"}
    art = next((a for a in report["artifacts"] if a["format"] == "openvino" and a["precision"] == "int8"), None)
    if art is None or "fp32" not in entry:
        return [f"{name} ({size}): the build made no int8 IR: "
                + "; ".join(f"{f['format']} {f['precision']}: {f['reason'][:160]}" for f in manifest["failed"])]
    details = art["export"]
    attempts = details["attempts"]
    lines = [f"{name} ({size}): budget {budget}; build {build_s:.0f} s; ladder: {len(attempts)} attempt(s), "
             f"chose '{details['chosen']}'"]
    fp32, ladder_file = bundle / entry["fp32"]["file"], bundle / entry["int8"]["file"]
    ac_path, defaults = folder / "ac_int8.xml", folder / "defaults_int8.xml"
    model, split = split_for(spec, data)
    reference = reference_outputs(model, split)
    mapping = IOSpec.from_dict(entry["fp32"]["iospec"])
    with tempfile.TemporaryDirectory() as tmp:  # NNCF's defaults again: the ladder keeps only the file it ships
        calib = calibration_npz(split.calibration, mapping, Path(tmp) / "c.npz")
        ov_call("quantize", "benchmark", None, src=str(fp32), out=str(defaults), calibration=str(calib),
                transformer=details["model_type"] == "TRANSFORMER", ignored=[], hint="f32")
    try:
        ac = run_child({"spec": spec, "data": str(data), "iospec": entry["fp32"]["iospec"], "fp32_ir": str(fp32),
                        "budget": budget, "out": str(ac_path),
                        "transformer": details["model_type"] == "TRANSFORMER"})
    except RuntimeError as exc:
        return lines + [f"  {exc}"]
    rows = []
    for label, path, secs in (("NNCF defaults (rung 1)", defaults, None),
                              ("edgekit ladder (ignored_scope)", ladder_file, details.get("repair_seconds")),
                              ("quantize_with_accuracy_control", ac_path, ac["seconds"])):
        v = validate_file(path, reference, split, None, runtime="openvino", raise_on_failure=False)
        floats = [op for op, stored in precision_map(path).items() if stored == "fp32"]  # weights left float
        rows.append((label, path, v.drop, floats, secs))
    files = [(fp32, "openvino")] + [(r[1], "openvino") for r in rows]
    one = sample_for(mapping, {k: v[:1] for k, v in split.validation.inputs.items()})
    p50s = interleaved([(p, rt, one) for p, rt in files], threads=1, rounds=rounds, runs=100, round_seconds=1.5)
    base = float(np.median(p50s[0]))
    lines.append(f"  {'file':<32} {'drop':>8} {'within':>6} {'float layers':>12} {'p50 ms':>8} {'vs fp32 IR':>10} "
                 f"{'vs defaults':>11} {'KB':>7} {'repair s':>8}")
    lines.append(f"  {'fp32 IR':<32} {'-':>8} {'-':>6} {'-':>12} {base:>8.3f} {1.0:>9.2f}x {'-':>11} "
                 f"{file_digest(fp32)[1] / 1024:>7.0f} {'-':>8}")
    defaults_p50 = float(np.median(p50s[1]))
    for (label, path, drop, floats, secs), rounds_ in zip(rows, p50s[1:]):
        p50 = float(np.median(rounds_))
        lines.append(f"  {label:<32} {drop:>8.4f} {'yes' if drop <= budget else 'no':>6} {len(floats):>12} "
                     f"{p50:>8.3f} {base / p50:>9.2f}x {defaults_p50 / p50:>10.2f}x "
                     f"{file_digest(path)[1] / 1024:>7.0f} {'-' if secs is None else f'{secs:.0f}':>8}")
    lines.append(f"  accuracy control: {len(ac['validation_calls'])} validation passes; float: "
                 f"{', '.join(rows[2][3][:6]) or 'none'}. ladder float: {', '.join(rows[1][3][:6]) or 'none'}")
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(accuracy_control(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="recommender,fcn")
    ap.add_argument("--size", default="real", choices=["real", "tiny"])
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from edgekit.measure.bench import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}; flags: {', '.join(cpu['flags'])}", flush=True)
    with contextlib.ExitStack() as stack:
        root = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-ovrepair-")))
        for name in args.families.split(","):
            print("\n".join(family(name.strip(), args.size, args.budget, args.rounds, root)), flush=True)


if __name__ == "__main__":
    main()
