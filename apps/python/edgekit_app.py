#!/usr/bin/env python3
"""Classify inputs with an edgekit bundle on a Linux board (Raspberry Pi OS 64-bit, Jetson, any Linux).

Needs only numpy plus onnxruntime, ai-edge-litert (or tflite-runtime) or openvino; never edgekit. Pillow, when
installed, reads PNG/JPEG; OpenCV, when installed, grabs a camera frame. Everything model-specific comes
from the bundle's manifest.json (apps/README.md documents it): which file suits the installed runtime,
the preprocessing, the layout of each file's inputs, the quantization of integer tensors, the labels.

    python3 edgekit_app.py BUNDLE digit.npy photo.png [--camera] [--json] [--preprocessed]

Exit codes: 0 done, 2 bad input (a missing file, a manifest that fails the schema, no runtime).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bundle_contract import SCHEMA_FILE, AppError, find_schema, image_to_raw, load_manifest, preprocess

RUNTIMES = ("onnxruntime", "litert", "openvino")
INSTALL = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "openvino": "openvino"}


def installed_runtimes() -> list[str]:
    found = []
    for runtime, modules in (("onnxruntime", ("onnxruntime",)), ("litert", ("ai_edge_litert", "tflite_runtime")),
                             ("openvino", ("openvino",))):
        for module in modules:
            try:
                __import__(module)
            except ImportError:
                continue
            found.append(runtime)
            break
    return found


def choose_file(manifest: dict, wanted: str, file_name: str | None) -> dict:
    """The file named, or the one the manifest recommends for the runtime, or that runtime's first file."""
    files = manifest["files"]
    if file_name:
        entry = next((f for f in files if f["file"] == file_name), None)
        if entry is None or entry["runtime"] not in RUNTIMES:
            raise AppError(f"--file {file_name}: not a file of this bundle that onnxruntime, LiteRT or OpenVINO runs "
                           f"(it has {', '.join(f['file'] for f in files)})")
        return entry
    have = installed_runtimes()
    if wanted == "auto":  # the bundle's fastest file for its target when its runtime is here, else by preference
        fastest = manifest.get("fastest") or {}
        order = ([fastest["runtime"]] if fastest.get("runtime") in have else []) + [
            r for r in ("litert", "openvino", "onnxruntime") if r in have and r != fastest.get("runtime")]
    else:
        order = [wanted]
    if wanted != "auto" and wanted not in have:
        raise AppError(f"--runtime {wanted} is not installed; pip install {INSTALL[wanted]}")
    if not order:
        raise AppError("none of onnxruntime, ai-edge-litert or openvino is installed; pip install one of them")
    for runtime in order:
        pick = manifest["recommended"].get(runtime, {}).get("file")
        entry = next((f for f in files if f["file"] == pick), None) or next(
            (f for f in files if f["runtime"] == runtime), None)
        if entry is not None:
            return entry
    raise AppError(f"the bundle has no file for {' or '.join(order)}; it has "
                   f"{', '.join(f['file'] + ' (' + f['runtime'] + ')' for f in files)}")


def read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".pgm", ".ppm"):  # binary netpbm, readable with numpy alone
        data = path.read_bytes()
        fields = data.split(maxsplit=4)
        if fields[0] not in (b"P5", b"P6") or int(fields[3]) > 255:
            raise AppError(f"{path}: only 8-bit binary PGM (P5) or PPM (P6) files are read without Pillow")
        width, height = int(fields[1]), int(fields[2])
        channels = 1 if fields[0] == b"P5" else 3
        pixels = np.frombuffer(data[-width * height * channels:], np.uint8)
        return pixels.reshape(height, width, channels).squeeze()
    try:
        from PIL import Image
    except ImportError:
        raise AppError(f"{path}: reading {path.suffix} images needs Pillow (pip install pillow), or pass .npy/.pgm") from None
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except OSError as exc:
        raise AppError(f"{path}: not an image Pillow can read ({exc})") from None


def camera_frame(index: int) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise AppError("--camera needs OpenCV (pip install opencv-python-headless)") from None
    capture = cv2.VideoCapture(index)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    capture.release()
    if not ok:
        raise AppError(f"--camera: no frame from camera {index}; check that a camera is attached")
    return frame[..., ::-1]  # BGR -> RGB


# --- the runtime -----------------------------------------------------------------------------------------------
class Session:
    """One bundle file in its runtime: ``run(source_feed) -> {output: float array}`` in source terms."""

    def __init__(self, folder: Path, entry: dict, threads: int):
        self.entry, path = entry, str(folder / entry["file"])
        if not Path(path).is_file():
            raise AppError(f"{path}: the manifest lists it but the file is missing; copy the whole bundle")
        self.ov = None
        if entry["runtime"] == "onnxruntime":
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            self.ort = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        elif entry["runtime"] == "openvino":  # compiled as edgekit validated it: the manifest's precision hint
            import openvino as ov
            self.ort = None
            hint = entry.get("runtime_options", {}).get("INFERENCE_PRECISION_HINT", "f32")
            self.ov = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                            "PERFORMANCE_HINT": "LATENCY",
                                                            "INFERENCE_PRECISION_HINT": hint})
            self.ov_request = self.ov.create_infer_request()
        else:
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                from tflite_runtime.interpreter import Interpreter
            self.ort = None
            self.tfl = Interpreter(model_path=path, num_threads=threads)
            self.tfl.allocate_tensors()

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.entry["iospec"]
        file_feed = {}
        for t in spec["inputs"]:
            x = feed[t.get("source_name", t["name"])]
            if "source_perm" in t:
                x = np.transpose(x, t["source_perm"])
            q = t.get("quantization")
            if q:  # float data into an integer tensor with the file's own scale and zero point
                info = np.iinfo(t["dtype"])
                x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max)
            file_feed[t["name"]] = np.ascontiguousarray(x, dtype=t["dtype"])
        if self.ort is not None:
            values = self.ort.run([t["name"] for t in spec["outputs"]], file_feed)
        elif self.ov is not None:
            result = self.ov_request.infer({t["name"]: file_feed[t["name"]] for t in spec["inputs"]})
            values = [np.array(result[self.ov.output(t["name"])]) for t in spec["outputs"]]
        else:
            details = {d["name"]: d for d in self.tfl.get_input_details()}
            for name, x in file_feed.items():
                d = details.get(name) or (next(iter(details.values())) if len(details) == 1 else None)
                if d is None:  # by name only: TFLite orders signature tensors by name, not as the source does
                    raise AppError(f"{self.entry['file']} has no input '{name}' (it has {', '.join(details)})")
                if tuple(d["shape"]) != x.shape:
                    self.tfl.resize_tensor_input(d["index"], x.shape)
                    self.tfl.allocate_tensors()
                self.tfl.set_tensor(d["index"], x)
            self.tfl.invoke()
            outs = {d["name"]: d for d in self.tfl.get_output_details()}
            if any(t["name"] not in outs for t in spec["outputs"]) and len(outs) > 1:
                raise AppError(f"{self.entry['file']}: outputs {', '.join(outs)} do not match the manifest's names")
            values = [self.tfl.get_tensor((outs.get(t["name"]) or next(iter(outs.values())))["index"])
                      for t in spec["outputs"]]
        result = {}
        for t, v in zip(spec["outputs"], values):
            q = t.get("quantization")
            v = (v.astype(np.float32) - q["zero_point"]) * q["scale"] if q else v
            result[t.get("source_name", t["name"])] = v
        return result


def probabilities(scores: np.ndarray) -> np.ndarray:
    s = scores.astype(np.float64).ravel()
    if s.min() >= 0 and abs(s.sum() - 1) < 1e-3:
        return s  # already probabilities
    e = np.exp(s - s.max())
    return e / e.sum()


def classify(manifest: dict, session: Session, sample: np.ndarray, preprocessed: bool) -> dict:
    recipe = manifest["preprocessing"]
    if preprocessed:
        x = sample.astype(np.float32)
    elif recipe is None:
        raise AppError("the manifest has no preprocessing recipe; pass inputs already preprocessed (--preprocessed)")
    else:
        x = preprocess(sample, recipe)
    source_inputs = {t.get("source_name", t["name"]) for t in session.entry["iospec"]["inputs"]}
    name = recipe["input"] if recipe else next(iter(source_inputs))
    if len(source_inputs) != 1 or name not in source_inputs:
        raise AppError(f"this app feeds one input; {session.entry['file']} takes {', '.join(sorted(source_inputs))}")
    x = x if x.ndim == len(session.entry["iospec"]["inputs"][0]["shape"]) else x[None]
    outputs = session.run({name: x})
    first = session.entry["iospec"]["outputs"][0]
    p = probabilities(outputs[first.get("source_name", first["name"])][0])
    labels = manifest["labels"] or [str(i) for i in range(len(p))]
    best = int(p.argmax())
    return {"label": labels[best], "index": best, "probability": float(p[best]),
            "probabilities": [round(float(v), 6) for v in p]}


def samples_of(path: Path, manifest: dict, entry: dict, preprocessed: bool) -> list[tuple[str, np.ndarray]]:
    """[(name, sample)]: an image, or a .npy holding one sample or a stack of them (one more leading axis)."""
    if not path.is_file():
        raise AppError(f"{path}: no such file")
    recipe = manifest["preprocessing"]
    if path.suffix != ".npy":
        if preprocessed or recipe is None or "raw" not in recipe:
            raise AppError(f"{path}: images need a manifest recipe with a 'raw' entry; pass a .npy sample instead")
        return [(str(path), image_to_raw(read_image(path), recipe["raw"]))]
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise AppError(f"{path}: not a plain .npy array ({exc})") from None
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise AppError(f"{path}: needs finite numbers (it holds {array.dtype} with NaN, inf or non-numbers)")
    if preprocessed:
        rank = len(entry["iospec"]["inputs"][0]["shape"]) - 1  # one sample of the source input
    elif recipe is not None and "raw" in recipe:
        rank = 2 if recipe["raw"]["channels"] == 1 else 3
    else:
        raise AppError(f"{path}: the manifest has no 'raw' recipe; pass the model's input with --preprocessed")
    if array.ndim == rank:
        return [(str(path), array)]
    if array.ndim == rank + 1:
        return [(f"{path}[{i}]", a) for i, a in enumerate(array)]
    raise AppError(f"{path}: shape {array.shape} is neither one sample of rank {rank} nor a stack of them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="an edgekit bundle folder (or its manifest.json)")
    parser.add_argument("inputs", nargs="*", type=Path, help=".npy samples (raw, as the recipe's 'raw' says) or images")
    parser.add_argument("--runtime", choices=("auto",) + RUNTIMES, default="auto")
    parser.add_argument("--file", help="run this bundle file instead of the recommended one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--camera", type=int, nargs="?", const=0, default=None, help="classify one frame of camera N")
    parser.add_argument("--preprocessed", action="store_true", help="the .npy inputs are already the model's input")
    parser.add_argument("--json", action="store_true", help="one JSON object per input")
    parser.add_argument("--schema", help=f"the {SCHEMA_FILE} to check the manifest against")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.bundle, find_schema(args.schema))
        entry = choose_file(manifest, args.runtime, args.file)
        session = Session(args.bundle if args.bundle.is_dir() else args.bundle.parent, entry, args.threads)
        jobs = [(p, lambda p=p: samples_of(p, manifest, entry, args.preprocessed)) for p in args.inputs]
        if args.camera is not None:
            if not (manifest["preprocessing"] or {}).get("raw"):
                raise AppError("--camera needs a manifest recipe with a 'raw' entry")
            jobs.append((f"camera:{args.camera}", lambda: [(
                f"camera:{args.camera}", image_to_raw(camera_frame(args.camera), manifest["preprocessing"]["raw"]))]))
        if not jobs:
            raise AppError("nothing to classify: pass .npy or image files, or --camera")
        for name, sample in (one for _, load in jobs for one in load()):
            result = classify(manifest, session, sample, args.preprocessed)
            if args.json:
                print(json.dumps({"input": name, "file": entry["file"], "runtime": entry["runtime"], **result}))
            else:
                print(f"{name}: {result['label']} ({result['probability']:.3f}) [{entry['file']}]")
    except AppError as exc:
        print(f"edgekit_app: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
