"""A bundle opened for serving: the manifest's recommended file for the runtime, checked against its
sha256, one runner (session) per worker on the asked device, warmed up at the smallest and largest batch.

No torch or TensorFlow here: a server loads a bundle, not a model.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..core.iospec import IOSpec

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "litert": "tensorflow_lite"}


@dataclass
class ServedModel:
    name: str
    bundle: Path
    file: Path
    runtime: str
    sha256: str
    precision: str
    iospec: IOSpec  # what clients send and get: the source model's tensors
    runners: list
    device: str
    provider: str
    batchable: bool
    why_unbatched: str = ""
    largest_batch_ms: float = 0.0  # the warm-up's best time at the largest batch, one session
    labels: list | None = None
    preprocessing: dict | None = None
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        """The KServe v2 model metadata, with edgekit's own facts under ``parameters``."""
        from .protocol import datatype

        def tensors(specs):
            return [{"name": t.name, "datatype": datatype(t.dtype),
                     "shape": [d if isinstance(d, int) else -1 for d in t.shape]} for t in specs]
        params = {"file": self.file.name, "sha256": self.sha256, "runtime": self.runtime,
                  "precision": self.precision, "execution_provider": self.provider,
                  "batching": "dynamic" if self.batchable else f"one request at a time ({self.why_unbatched})",
                  "finite_inputs_only": True}
        if self.labels:
            params["labels"] = list(self.labels)
        if self.preprocessing:
            params["preprocessing"] = self.preprocessing
        return {"name": self.name, "versions": ["1"], "platform": PLATFORMS[self.runtime],
                "inputs": tensors(self.iospec.inputs), "outputs": tensors(self.iospec.outputs), "parameters": params}


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{bundle}: no manifest.json; give the bundle folder that `edgekit build` wrote")
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["recommended"]  # noqa: B018 - a bundle manifest has both
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not an edgekit manifest ({exc}); rebuild the bundle") from None
    return manifest


def model_name(manifest: dict, bundle: Path) -> str:
    """The name clients use: the manifest's model name (a string, or a table with a name)."""
    model = manifest.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    return str(name or Path(bundle).name)


def choose_file(manifest: dict, runtime: str, device: str) -> tuple[dict, str]:
    """The manifest entry to serve and its runtime: the recommended file for ``runtime`` (auto: ONNX
    Runtime when the bundle has an ONNX file, else LiteRT; a GPU device needs ONNX Runtime)."""
    recommended = manifest.get("recommended") or {}
    files = {f["file"]: f for f in manifest["files"]}
    if runtime == "auto":
        order = ["onnxruntime"] if device in ("cuda", "tensorrt") else ["onnxruntime", "litert"]
        runtime = next((r for r in order if r in recommended or
                        any(f["runtime"] == r for f in files.values())), order[0])
    if device in ("cuda", "tensorrt") and runtime != "onnxruntime":
        raise UsageError(f"--device {device} serves ONNX files through ONNX Runtime; use --runtime onnxruntime")
    pick = (recommended.get(runtime) or {}).get("file")
    if pick is None:  # no recommendation for this runtime: its fp32 file, else any of its files
        own = [f for f in files.values() if f["runtime"] == runtime]
        if not own:
            have = sorted({f["runtime"] for f in files.values()})
            raise UsageError(f"the bundle has no file for {runtime} (it has {', '.join(have) or 'none'}); "
                             "pick another --runtime or rebuild with that format")
        pick = next((f["file"] for f in own if f["precision"] == "fp32"), own[0]["file"])
    return files[pick], runtime


def ort_providers(device: str, cache_dir: Path, max_batch: int, spec: IOSpec) -> list:
    """The provider list for ``device`` ('cpu', 'cuda' or 'tensorrt'); TensorRT builds fp16 engines, keeps
    them in the bundle's cache folder, with min/opt/max batch profiles."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return [("CUDAExecutionProvider", {})]
    engines = cache_dir / "tensorrt"
    engines.mkdir(parents=True, exist_ok=True)

    def shapes(batch):
        return ",".join(f"{t.name}:{'x'.join(str(batch if i == 0 else (d if isinstance(d, int) else 1)) for i, d in enumerate(t.shape))}"
                        for t in spec.inputs)
    trt = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
           "trt_timing_cache_enable": True, "trt_timing_cache_path": str(engines)}
    if spec.batch_dynamic:
        trt.update(trt_profile_min_shapes=shapes(1), trt_profile_opt_shapes=shapes(max(1, max_batch // 2)),
                   trt_profile_max_shapes=shapes(max_batch))
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {})]


def open_model(bundle: str | Path, *, runtime: str = "auto", device: str = "auto", workers: int = 1,
               threads: int | None = None, max_batch: int = 32) -> ServedModel:
    from ..runtimes import open_runner
    from ..runtimes.ort import OrtRunner

    bundle = Path(bundle)
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    manifest = read_manifest(bundle)
    notes = []
    if device == "auto":
        device = "cuda" if _gpu_runtime_available(runtime) else "cpu"
        notes.append("GPU found: CUDA path" if device == "cuda" else "no GPU found: CPU path")
    entry, runtime = choose_file(manifest, runtime, device)
    path = bundle / entry["file"]
    if not path.is_file():
        raise UsageError(f"{path}: listed in the manifest but missing; rebuild the bundle")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if entry.get("sha256") and digest != entry["sha256"]:
        raise UsageError(f"{path}: its sha256 differs from the manifest's; the file changed after the build")
    threads = threads if threads is not None else int(((manifest.get("profile") or {}).get("target") or {})
                                                      .get("threads", 1) or 0) or (os.cpu_count() or 1)
    spec = IOSpec.from_dict(entry["iospec"])
    from .protocol import DTYPE_NAMES
    odd = [f"{t.name} ({t.dtype})" for t in (*spec.inputs, *spec.outputs) if t.dtype not in DTYPE_NAMES]
    if odd:
        raise UsageError(f"{path.name}: tensors of types the server does not carry: {', '.join(odd)}; "
                         "serve a file with numeric inputs and outputs")
    runners = []
    for _ in range(max(1, workers)):
        if runtime == "onnxruntime":
            providers = ort_providers(device, bundle / "cache", max_batch, spec)
            runners.append(OrtRunner(path, threads=threads, providers=providers, strict=True))
        else:
            runners.append(open_runner(path, runtime, threads=threads, mapping=spec))
    first = runners[0]
    provider = first.session.get_providers()[0] if runtime == "onnxruntime" else "XNNPACK" + (
        "" if not getattr(first, "notes", ()) else " (off: LiteRT builtin kernels)")
    model = ServedModel(name=model_name(manifest, bundle), bundle=bundle,
                        file=path, runtime=runtime, sha256=digest, precision=entry.get("precision", ""),
                        iospec=first.iospec, runners=runners, device=device, provider=provider, batchable=False,
                        labels=manifest.get("labels"), preprocessing=manifest.get("preprocessing"), notes=notes)
    model.batchable, model.why_unbatched = warm_up(model, max_batch)
    return model


def _gpu_runtime_available(runtime: str) -> bool:
    from ..runtimes.ort import cuda_available

    return runtime in ("auto", "onnxruntime") and cuda_available()


def example_inputs(spec: IOSpec, batch: int) -> dict[str, np.ndarray]:
    """Zeros (ids: zeros are valid) at ``batch``, dynamic non-batch axes at 16."""
    out = {}
    for t in spec.inputs:
        shape = [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) else 16)
                 for i, d in enumerate(t.shape)]
        out[t.name] = np.zeros(shape, dtype=t.dtype)
    return out


def warm_up(model: ServedModel, max_batch: int) -> tuple[bool, str]:
    """Run every session at batch 1 and at ``max_batch`` before the server says ready; whether requests
    can be stacked (a dynamic batch axis that every output follows), and why not."""
    import time

    def timed(runner, feed) -> tuple[dict, float]:
        best, outputs = float("inf"), None
        for _ in range(3):
            start = time.perf_counter()
            outputs = runner.run(feed)
            best = min(best, (time.perf_counter() - start) * 1000)
        return outputs, best
    if not model.iospec.batch_dynamic:
        for runner in model.runners:
            _, model.largest_batch_ms = timed(runner, example_inputs(model.iospec, 1))
        return False, "the file's batch axis is static"
    sizes = sorted({1, max(1, max_batch)})
    for runner in model.runners:
        for batch in sizes:
            outputs, model.largest_batch_ms = timed(runner, example_inputs(model.iospec, batch))
            wrong = [n for n, v in outputs.items() if np.ndim(v) == 0 or np.shape(v)[0] != batch]
            if wrong:
                return False, f"output {wrong[0]} does not follow the batch axis"
    return True, ""
