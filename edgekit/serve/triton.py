"""A Triton model repository from a bundle: ``<out>/<model>/config.pbtxt`` and ``<out>/<model>/1/model.onnx``.

The config is Triton's ``ModelConfig`` (the onnxruntime backend): the manifest's tensors, ``max_batch_size``,
dynamic batching with a bounded, rejecting queue policy, an instance group, and for GPUs the TensorRT
accelerator at fp16. KServe's Triton runtime serves the same folder unchanged. The same config (as JSON) is
what ``edgekit serve`` answers at ``/v2/models/{name}/config``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..core.errors import UsageError

TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
         "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
         "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
ENUMS = {"data_type", "kind", "timeout_action"}


def config_for(name: str, spec, *, batchable: bool, max_batch: int, max_delay_us: float, queue: int,
               timeout_us: int, instances: int, gpu: bool, platform: str = "onnxruntime_onnx") -> dict:
    """Triton's ModelConfig as a dict of its JSON field names."""
    def tensors(specs):
        out = []
        for t in specs:
            dims = [d if isinstance(d, int) else -1 for d in t.shape]
            entry = {"name": t.name, "data_type": TYPES[t.dtype], "dims": dims[1:] if batchable else dims}
            if not entry["dims"]:  # a tensor that is only its batch axis: Triton needs dims, reshaped away
                entry.update(dims=[1], reshape={"shape": []})
            out.append(entry)
        return out
    config = {"name": name, "platform": platform, "max_batch_size": max_batch if batchable else 0,
              "input": tensors(spec.inputs), "output": tensors(spec.outputs),
              "instance_group": [{"count": instances, "kind": "KIND_GPU" if gpu else "KIND_CPU"}]}
    if batchable:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(max_delay_us),
            "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": int(timeout_us),
                                     "allow_timeout_override": True, "max_queue_size": int(queue)}}
    if gpu:
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}}]}}
    return config


def model_config(model, max_batch: int, max_delay_us: float, queue: int, timeout_us: int, instances: int) -> dict:
    """The config of a served model (``serve.model.ServedModel``)."""
    from .model import PLATFORMS

    return config_for(model.name, model.iospec, batchable=model.batchable, max_batch=max_batch,
                      max_delay_us=max_delay_us, queue=queue, timeout_us=timeout_us, instances=instances,
                      gpu=model.device in ("cuda", "tensorrt"), platform=PLATFORMS[model.runtime])


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """``message`` in protobuf text format (enums bare, strings quoted, map fields as key/value entries)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if key == "parameters" and isinstance(value, dict):  # a map<string, string>
            for k, v in value.items():
                lines.append(f'{pad}parameters {{ key: "{k}" value: "{v}" }}')
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"{pad}{key} {{\n{to_pbtxt(item, indent + 1)}{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(key, v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return str(value) if key in ENUMS else '"' + str(value).replace('"', '\\"') + '"'


def write_repository(bundle: str | Path, out: str | Path, *, max_batch: int = 32, max_delay_ms: float = 2.0,
                     queue: int = 256, timeout_ms: float = 1000.0, instances: int = 1, gpu: bool = False) -> Path:
    """Write the repository for the bundle's recommended ONNX file; the model folder it wrote."""
    from ..core.iospec import IOSpec
    from .model import choose_file, model_name, read_manifest

    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    entry, _ = choose_file(manifest, "onnxruntime", "cpu")
    spec = IOSpec.from_dict(entry["iospec"])
    name = model_name(manifest, bundle)
    folder = out / name
    if folder.exists():
        raise UsageError(f"{folder} exists; remove it or pick another output folder")
    config = config_for(name, spec, batchable=spec.batch_dynamic, max_batch=max_batch,
                        max_delay_us=max_delay_ms * 1000, queue=queue, timeout_us=int(timeout_ms * 1000),
                        instances=instances, gpu=gpu)
    staging = out / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1").mkdir(parents=True)
    shutil.copyfile(bundle / entry["file"], staging / "1" / "model.onnx")
    (staging / "config.pbtxt").write_text(f"# written by edgekit from {bundle.name}/{entry['file']} "
                                          f"(sha256 {entry.get('sha256', '?')})\n" + to_pbtxt(config))
    staging.rename(folder)
    return folder
