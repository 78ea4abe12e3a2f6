"""OpenVINO IR (``.xml`` + ``.bin``): converted from the reference ONNX graph with ``openvino.convert_model``.

The conversion runs in a worker process (ov_worker.py) with OpenVINO's and NNCF's telemetry off. Every IR
carries the inference precision hint it is validated, timed and shipped with in its rt_info; the manifest
records it too, so an app can set the same.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..core.errors import StageError, UsageError
from ..core.results import ExportInfo
from .job import Exported, ExportJob

EXTRA = "pip install 'edgekit[openvino]'"
NO_TELEMETRY = {"CI": "true", "NNCF_CI": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}


def ov_call(op: str, stage: str, log=None, **args) -> dict:
    """Run ``op`` in the OpenVINO worker process; its failure is a StageError naming ``stage``."""
    env = dict(os.environ, **NO_TELEMETRY)
    proc = subprocess.run([sys.executable, "-m", "edgekit.export.ov_worker", json.dumps({"op": op, "args": args})],
                          capture_output=True, text=True, env=env)
    if log is not None and proc.stderr.strip():
        log.write(proc.stderr[-4000:])
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise StageError(stage, f"the OpenVINO worker process failed (exit {proc.returncode}): "
                                f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
    result = json.loads(lines[-1])
    if "missing" in result:
        raise UsageError(f"the openvino format needs the openvino extra ({result['missing']} is not installed): {EXTRA}")
    if "error" in result:
        raise StageError(stage, result["error"])
    return result


def ir_files(path: Path) -> tuple[Path, Path]:
    return path, path.with_suffix(".bin")


def export_openvino(job: ExportJob) -> list[Exported]:
    if job.reference_onnx is None:
        raise StageError("export openvino", "no reference ONNX graph to convert from")
    target = job.folder / f"{job.model.name}.xml"
    made = ov_call("convert", "export openvino", job.log, onnx=str(job.reference_onnx.resolve()),
                   out=str(target.resolve()), hint="f32")
    from ..files.onnx_io import iospec_from_onnx

    info = ExportInfo(f"openvino.convert_model {made['version']}", made_from=job.reference_onnx.name,
                      details={"inference_precision_hint": "f32", "weights": "fp32"},
                      runtime_options={"INFERENCE_PRECISION_HINT": "f32"})
    return [Exported(target, "openvino", "fp32", info, mapping=iospec_from_onnx(job.reference_onnx))]
